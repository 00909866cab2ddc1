//! Checkpoints of the processing state, and the ingest deliveries they cover.
//!
//! A checkpoint is incremental: the state that belongs to no key (the global
//! watermark, the detectors' rejection count), the state of every key that
//! changed since the previous one (the engine and the detectors each track
//! their dirty keys), and the ingest deliveries recorded since then ([`Seen`]). [`crate::outbox::Outbox::commit`]
//! writes it in the same transaction as the messages that state produced, so
//! the database always holds a state and exactly the results of that state.
//!
//! Every blob starts with [`FORMAT`]; the rest is postcard. A checkpoint of
//! another format is not restored: the agent starts with empty state and says so.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::detect::{DetectorKeyState, DetectorSpec, Detectors, DetectorsState};
use crate::engine::{Engine, EngineConfig, EngineState, KeySnapshot};
use crate::outbox::{Checkpoint, StoredCheckpoint};
use crate::reading::{Key, TimestampMs};

/// Version of the checkpoint encoding. Bump it when a snapshot type changes shape.
pub const FORMAT: u8 = 2;

/// Why a stored checkpoint cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Written by a build with another encoding.
    #[error("checkpoint format {found} is not the {FORMAT} this weir reads")]
    Format {
        /// The format byte found.
        found: u8,
    },
    /// The bytes do not decode.
    #[error("checkpoint does not decode: {0}")]
    Decode(#[from] postcard::Error),
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Meta {
    engine_global_max_ts: Option<TimestampMs>,
    detectors_rejected: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct KeyRow {
    engine: Option<KeySnapshot>,
    detectors: Option<DetectorKeyState>,
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT];
    // Serializing plain structs into a Vec cannot fail; an empty body would be
    // refused at restore, never silently misread.
    if let Ok(body) = postcard::to_allocvec(value) {
        out.extend_from_slice(&body);
    }
    out
}

fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, CheckpointError> {
    match bytes.split_first() {
        Some((&FORMAT, body)) => Ok(postcard::from_bytes(body)?),
        Some((&found, _)) => Err(CheckpointError::Format { found }),
        None => Err(CheckpointError::Decode(
            postcard::Error::DeserializeUnexpectedEnd,
        )),
    }
}

/// The checkpoint of everything that changed since the last call: the keys the
/// engine and the detectors marked dirty, and the deliveries in `seen`.
pub fn take(
    engine: &mut Engine,
    detectors: &mut Detectors,
    seen: &Seen,
    now: TimestampMs,
) -> Checkpoint {
    let mut dirty: HashSet<Key> = engine.take_dirty().into_iter().collect();
    dirty.extend(detectors.take_dirty());
    let keys = dirty
        .into_iter()
        .map(|k| {
            let row = KeyRow {
                engine: engine.key_snapshot(&k),
                detectors: detectors.key_snapshot(&k),
            };
            let state = (row.engine.is_some() || row.detectors.is_some()).then(|| encode(&row));
            (k.sensor.to_string(), k.metric.to_string(), state)
        })
        .collect();
    let meta = Meta {
        engine_global_max_ts: engine.global_max_ts(),
        detectors_rejected: detectors.rejected_keys(),
    };
    Checkpoint {
        taken_ms: now,
        meta: encode(&meta),
        keys,
        seen: seen.changes(),
        held: seen.held_changed(),
        topics: seen.topics_changed(),
        hold: Vec::new(),
        hold_delete_below: None,
    }
}

/// The engine, detectors and delivery record of a stored checkpoint, built with
/// the current configuration (see [`Engine::restore`] and [`Detectors::restore`]
/// for what a changed configuration does to old state).
pub fn restore(
    stored: &StoredCheckpoint,
    engine_cfg: EngineConfig,
    specs: Vec<DetectorSpec>,
    max_keys: usize,
) -> Result<(Engine, Detectors, Seen), CheckpointError> {
    let meta: Meta = decode(&stored.meta)?;
    let mut engine_keys = Vec::new();
    let mut detector_keys = Vec::new();
    for (_, _, state) in &stored.keys {
        let row: KeyRow = decode(state)?;
        engine_keys.extend(row.engine);
        detector_keys.extend(row.detectors);
    }
    let engine = Engine::restore(
        engine_cfg,
        EngineState::from_parts(meta.engine_global_max_ts, engine_keys),
    );
    let detectors = Detectors::restore(
        specs,
        max_keys,
        DetectorsState::from_parts(meta.detectors_rejected, detector_keys),
    );
    let seen = Seen::from_entries(max_keys, stored.seen.clone(), &stored.held, &stored.topics);
    Ok((engine, detectors, seen))
}

/// A content fingerprint of one MQTT message (FNV-1a over topic and payload):
/// stable across processes, unlike the standard library's hasher.
pub fn fingerprint(topic: &str, payload: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in topic
        .as_bytes()
        .iter()
        .chain([0xffu8].iter())
        .chain(payload)
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// What the engine knows of one MQTT delivery, to tell a new message from one
/// whose effect is already in the state (see [`Seen`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeliveryMeta {
    /// 0, 1 or 2.
    pub qos: u8,
    /// The broker's packet id (0 for QoS 0).
    pub pkid: u16,
    /// The DUP flag.
    pub dup: bool,
    /// The RETAIN flag: set only on a message sent because we subscribed, never
    /// on one that matched an established subscription (MQTT 3.1.1, 3.3.1.3).
    pub retain: bool,
    /// [`fingerprint`] of the topic alone.
    pub topic: u64,
    /// [`fingerprint`] of topic and payload.
    pub fingerprint: u64,
}

/// What to do with a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Count it.
    New,
    /// A resend of a message whose effect is in the state: acknowledge only.
    Repeat,
    /// A retained message sent again because we subscribed again, already
    /// counted: acknowledge only.
    RetainedRepeat,
}

/// The ingest deliveries whose effect is in the state. `docs/ingest.md` has the
/// whole argument; in short:
///
/// - **QoS 2** (what Weir subscribes with, and what a broker set as the README
///   says delivers): `held` is the set of packet ids whose message is counted and
///   whose PUBREL has not been recorded. The engine sends PUBREC only after the
///   checkpoint holding the message's effect and its id in `held` commits, and
///   PUBCOMP only after the checkpoint that removed the id commits. The broker
///   reuses an id only after our PUBCOMP (MQTT 3.1.1, 4.3.3), so a PUBLISH whose
///   id is in `held` can only be a resend of the counted message, and one whose
///   id is not can only be a message never counted: exact, whatever the bytes,
///   however often ids are reused.
/// - **QoS 1** (a broker that delivers below our subscription's QoS): the
///   receiver cannot know whether its PUBACK arrived, so no record is exact. The
///   fingerprint of the last delivery per packet id recognises a resend flagged
///   DUP with the same bytes; after a packet-id wrap an identical message can be
///   mistaken for it. Weir warns when it receives QoS 1.
/// - **Retained messages** come again at every SUBSCRIBE. `topics` keeps, per
///   topic, the fingerprint of the last message counted on it (at most
///   `topic_cap` topics); a retained delivery equal to it is the copy of what
///   was counted, not a new reading.
///
/// Checkpoints store the QoS 1 entries changed since the previous one, and `held` and
/// `topics` each whole when it changed since the last committed checkpoint: each carries a
/// generation, bumped at every change, and the generation its last committed checkpoint was
/// taken at ([`SeenMark`]). A checkpoint taken at generation g holds the record as of g, so
/// once it commits the record is stored up to g; changes after g, made while it was in
/// flight, leave the generation above and go (whole) with the next checkpoint.
#[derive(Debug, Default)]
pub struct Seen {
    last: HashMap<u16, u64>,
    changed: HashMap<u16, u64>,
    held: HashSet<u16>,
    topics: HashMap<u64, u64>,
    topic_cap: usize,
    /// Generations of `held` and `topics` now.
    now: SeenMark,
    /// Generations of `held` and `topics` in the last committed checkpoint.
    stored: SeenMark,
}

/// Generations of [`Seen`]'s whole records, as of a checkpoint taken (see [`Seen::mark`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeenMark {
    held: u64,
    topics: u64,
}

impl Seen {
    /// An empty record that keeps the last message of at most `topic_cap` topics.
    pub fn new(topic_cap: usize) -> Self {
        Self {
            topic_cap,
            ..Self::default()
        }
    }

    fn from_entries(
        topic_cap: usize,
        entries: Vec<(u16, u64)>,
        held: &[u16],
        topics: &[(u64, u64)],
    ) -> Self {
        let mut s = Self::new(topic_cap);
        s.last = entries.into_iter().collect();
        s.held = held.iter().copied().collect();
        s.topics = topics.iter().copied().collect();
        s
    }

    /// Decides what `m` is and records it (see [`Seen`]).
    pub fn admit(&mut self, m: &DeliveryMeta) -> Verdict {
        let repeat = match m.qos {
            2 => !self.hold(m.pkid),
            1 => {
                let repeat = m.dup && self.last.get(&m.pkid) == Some(&m.fingerprint);
                self.last.insert(m.pkid, m.fingerprint);
                self.changed.insert(m.pkid, m.fingerprint);
                repeat
            }
            _ => false,
        };
        if repeat {
            return Verdict::Repeat;
        }
        if m.retain && self.topics.get(&m.topic) == Some(&m.fingerprint) {
            return Verdict::RetainedRepeat;
        }
        if (self.topics.len() < self.topic_cap || self.topics.contains_key(&m.topic))
            && self.topics.insert(m.topic, m.fingerprint) != Some(m.fingerprint)
        {
            self.now.topics += 1;
        }
        Verdict::New
    }

    /// Adds a QoS 2 packet id to `held`; false if it was there already.
    fn hold(&mut self, pkid: u16) -> bool {
        let new = self.held.insert(pkid);
        if new {
            self.now.held += 1;
        }
        new
    }

    /// The broker released a QoS 2 packet id (PUBREL): the PUBCOMP may go once
    /// a checkpoint holding this removal has committed.
    pub fn release(&mut self, pkid: u16) {
        if self.held.remove(&pkid) {
            self.now.held += 1;
        }
    }

    /// How many QoS 2 messages are counted and not yet released.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The generations of the whole records now: take it with the checkpoint, to give to
    /// [`Seen::committed_entries`] when that checkpoint commits.
    pub fn mark(&self) -> SeenMark {
        self.now
    }

    /// A checkpoint taken now has committed.
    pub fn committed(&mut self) {
        self.changed.clear();
        self.stored = self.now;
    }

    /// A checkpoint holding these QoS 1 entries (its `seen`, as taken) and the whole records
    /// as of `mark` has committed, possibly after more deliveries: an entry changed since, and
    /// a record changed since, stays for the next checkpoint.
    pub fn committed_entries(&mut self, seen: &[(u16, u64)], mark: SeenMark) {
        for (pkid, fingerprint) in seen {
            if self.changed.get(pkid) == Some(fingerprint) {
                self.changed.remove(pkid);
            }
        }
        // Commits land in the order they were taken; `max` keeps that true regardless.
        self.stored.held = self.stored.held.max(mark.held);
        self.stored.topics = self.stored.topics.max(mark.topics);
    }

    /// The QoS 1 entries recorded since the last commit, to store with a checkpoint.
    fn changes(&self) -> Vec<(u16, u64)> {
        let mut v: Vec<(u16, u64)> = self.changed.iter().map(|(k, f)| (*k, *f)).collect();
        v.sort_unstable();
        v
    }

    /// Every QoS 2 packet id held, ascending, if the set changed since the last committed
    /// checkpoint.
    fn held_changed(&self) -> Option<Vec<u16>> {
        (self.now.held != self.stored.held).then(|| {
            let mut v: Vec<u16> = self.held.iter().copied().collect();
            v.sort_unstable();
            v
        })
    }

    /// Every topic record, ascending by topic, if any changed since the last committed
    /// checkpoint.
    fn topics_changed(&self) -> Option<Vec<(u64, u64)>> {
        (self.now.topics != self.stored.topics).then(|| {
            let mut v: Vec<(u64, u64)> = self.topics.iter().map(|(t, f)| (*t, *f)).collect();
            v.sort_unstable();
            v
        })
    }
}

#[cfg(test)]
#[path = "checkpoint_tests.rs"]
mod tests;
