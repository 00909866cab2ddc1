//! The readings Weir stamped before the system clock's first synchronisation,
//! held until the correction is known (see the module above).
//!
//! Invariants: every held reading is `TsSource::Unsynced`, in the order it
//! was admitted; at most `capacity` are held; a reading leaves only corrected
//! (`TsSource::Corrected`, `ts + correction`) or as the evicted oldest, which
//! the caller must publish (never dropped silently).
//!
//! Durability: the hold is part of the checkpointed state. Each reading gets a
//! sequence number; a checkpoint stores the readings added since the previous
//! one ([`Hold::changes`]) and deletes those below the oldest still held, in the
//! same transaction as the rest of the state. So an MQTT delivery whose reading
//! is held is acknowledged only once the held reading is durable, and a crash
//! or a power cut before the clock synchronises loses nothing: the readings come
//! back at the next start ([`Hold::restore`]). A provisional stamp is only
//! meaningful within one boot of the machine (the monotonic clock it rests on
//! restarts with it), so each stored reading carries the boot's id; one from an
//! earlier boot cannot be corrected and is published as a dead letter instead.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::reading::{Key, Reading, TsSource};

/// What a checkpoint stores of one held reading.
#[derive(Debug, Serialize, Deserialize)]
struct Row {
    boot: u64,
    sensor: String,
    metric: String,
    value: f64,
    ts: i64,
}

/// The id of this boot of the machine (a fingerprint of the kernel's
/// `boot_id`), or 0 when it cannot be read: readings stored under 0 are never
/// taken for this boot's.
pub fn boot_id() -> u64 {
    static BOOT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| crate::checkpoint::fingerprint(s.trim(), &[]))
            .unwrap_or(0)
    })
}

/// What to do with one reading.
#[derive(Debug, PartialEq)]
pub enum Admitted {
    /// Process it now (corrected if it was provisional).
    Ready(Reading),
    /// Held; the oldest held reading had to make room, when given.
    Held {
        /// The reading evicted (the oldest), to publish as a dead letter.
        evicted: Option<Reading>,
    },
}

/// A bounded FIFO of provisional readings.
#[derive(Debug)]
pub struct Hold {
    held: VecDeque<(u64, Reading)>,
    capacity: usize,
    /// The sequence number of the next reading admitted.
    next_seq: u64,
    /// Readings numbered from here on are not in the database yet.
    stored_to: u64,
    /// The database holds no reading numbered below this.
    stored_from: u64,
}

/// What a checkpoint writes of the hold: readings added since the previous
/// one, and the number below which every stored reading is deleted.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HoldChanges {
    /// `(sequence number, encoded reading)`.
    pub added: Vec<(i64, Vec<u8>)>,
    /// Delete every stored reading numbered below this.
    pub delete_below: Option<i64>,
}

/// Where the stored readings stood when a checkpoint was taken, see [`Hold::mark`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldMark {
    stored_to: u64,
    stored_from: u64,
}

/// `r` with the correction applied and marked.
fn corrected(mut r: Reading, correction: i64) -> Reading {
    r.ts = r.ts.saturating_add(correction);
    r.ts_source = TsSource::Corrected;
    r
}

impl Hold {
    /// An empty hold for at most `capacity` readings (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            held: VecDeque::new(),
            capacity: capacity.max(1),
            next_seq: 1,
            stored_to: 1,
            stored_from: 1,
        }
    }

    /// The hold of a stored checkpoint: the readings of this boot (`boot`),
    /// held again in their order; those of another boot are returned apart,
    /// uncorrectable. Rows that do not decode are skipped and counted in the
    /// third value.
    pub fn restore(
        capacity: usize,
        rows: &[(i64, Vec<u8>)],
        boot: u64,
    ) -> (Self, Vec<Reading>, usize) {
        let mut hold = Self::new(capacity);
        let mut other = Vec::new();
        let mut damaged = 0;
        let mut max = 0u64;
        let mut min = u64::MAX;
        for (seq, blob) in rows {
            let seq = *seq as u64;
            max = max.max(seq);
            min = min.min(seq);
            let Ok(row) = postcard::from_bytes::<Row>(blob) else {
                damaged += 1;
                continue;
            };
            let r = Reading {
                key: Key::new(row.sensor.as_str(), row.metric.as_str()),
                value: row.value,
                ts: row.ts,
                ts_source: TsSource::Unsynced,
            };
            if row.boot == boot && boot != 0 {
                hold.held.push_back((seq, r));
            } else {
                other.push(r);
            }
        }
        if max > 0 {
            hold.next_seq = max + 1;
            hold.stored_to = max + 1;
            hold.stored_from = min;
        }
        (hold, other, damaged)
    }

    /// What the next checkpoint must write so that the database holds exactly
    /// the readings held now (see the module documentation).
    pub fn changes(&self, boot: u64) -> HoldChanges {
        let added = self
            .held
            .iter()
            .filter(|(seq, _)| *seq >= self.stored_to)
            .map(|(seq, r)| {
                let row = Row {
                    boot,
                    sensor: r.key.sensor.to_string(),
                    metric: r.key.metric.to_string(),
                    value: r.value,
                    ts: r.ts,
                };
                // Serialising a plain struct into a Vec cannot fail; a row that
                // did would be skipped at restore and counted there.
                (*seq as i64, postcard::to_allocvec(&row).unwrap_or_default())
            })
            .collect();
        let low = self.low();
        HoldChanges {
            added,
            delete_below: (low > self.stored_from).then_some(low as i64),
        }
    }

    /// A checkpoint holding [`Hold::changes`] has committed.
    pub fn committed(&mut self) {
        self.committed_at(self.mark());
    }

    /// Where [`Hold::changes`] stands now: what a checkpoint taken now stores.
    pub fn mark(&self) -> HoldMark {
        HoldMark {
            stored_to: self.next_seq,
            stored_from: self.low(),
        }
    }

    /// A checkpoint holding the changes taken at `mark` has committed; readings held or
    /// released since go with the next one.
    pub fn committed_at(&mut self, mark: HoldMark) {
        self.stored_to = mark.stored_to;
        self.stored_from = mark.stored_from;
    }

    fn low(&self) -> u64 {
        self.held.front().map_or(self.next_seq, |(seq, _)| *seq)
    }

    /// Readings held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// One reading in: a provisional one is held until `correction` is known
    /// (and always goes after those already held), anything else is ready.
    pub fn admit(&mut self, r: Reading, correction: Option<i64>) -> Admitted {
        if r.ts_source != TsSource::Unsynced {
            return Admitted::Ready(r);
        }
        match correction {
            Some(c) if self.held.is_empty() => Admitted::Ready(corrected(r, c)),
            _ => {
                let evicted = if self.held.len() >= self.capacity {
                    self.held.pop_front().map(|(_, r)| r)
                } else {
                    None
                };
                self.held.push_back((self.next_seq, r));
                self.next_seq += 1;
                Admitted::Held { evicted }
            }
        }
    }

    /// The correction is known: every held reading, corrected, oldest first.
    pub fn release(&mut self, correction: i64) -> impl Iterator<Item = Reading> + '_ {
        self.held
            .drain(..)
            .map(move |(_, r)| corrected(r, correction))
    }

    /// Everything held, uncorrected, oldest first (Weir is stopping).
    pub fn give_up(&mut self) -> impl Iterator<Item = Reading> + '_ {
        self.held.drain(..).map(|(_, r)| r)
    }
}
