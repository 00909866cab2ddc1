//! The readings Weir stamped before the system clock's first synchronisation,
//! held until the correction is known (see the module above).
//!
//! Invariants: every held reading is `TsSource::Unsynced`, in the order it
//! was admitted; at most `capacity` are held; a reading leaves only corrected
//! (`TsSource::Corrected`, `ts + correction`) or as the evicted oldest, which
//! the caller must publish (never dropped silently).

use std::collections::VecDeque;

use crate::reading::{Reading, TsSource};

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
    held: VecDeque<Reading>,
    capacity: usize,
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
        }
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
                    self.held.pop_front()
                } else {
                    None
                };
                self.held.push_back(r);
                Admitted::Held { evicted }
            }
        }
    }

    /// The correction is known: every held reading, corrected, oldest first.
    pub fn release(&mut self, correction: i64) -> impl Iterator<Item = Reading> + '_ {
        self.held.drain(..).map(move |r| corrected(r, correction))
    }

    /// Everything held, uncorrected, oldest first (Weir is stopping).
    pub fn give_up(&mut self) -> impl Iterator<Item = Reading> + '_ {
        self.held.drain(..)
    }
}
