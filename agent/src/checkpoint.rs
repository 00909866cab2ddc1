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
    Ok((engine, detectors, Seen::from_entries(stored.seen.clone())))
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

/// The ingest deliveries whose effect is in the state: for each packet id, the
/// fingerprint of the last delivery that came with it.
///
/// Why: a delivery is acknowledged to the local broker only after the checkpoint
/// holding its effect commits, but that PUBACK can still be lost (a crash or a
/// dropped connection before the ingest task wrote it, which can be several
/// checkpoints later while backpressure holds that task). The broker then sends
/// the message again, flagged DUP, with the same packet id (MQTT 3.1.1, 4.4).
/// Such a resend whose packet id and content match the entry here is already
/// counted: it is acknowledged again and not processed again.
///
/// An entry stays until the broker reuses its packet id, which it does only
/// after receiving our PUBACK, so no lost PUBACK can outlive its entry. A match
/// needs the same id and the same bytes; readings with timestamps never collide
/// that way. Bounded by the packet-id space (65,535 entries); checkpoints store
/// only the entries changed since the previous one.
#[derive(Debug, Default)]
pub struct Seen {
    last: HashMap<u16, u64>,
    changed: HashMap<u16, u64>,
}

impl Seen {
    fn from_entries(entries: Vec<(u16, u64)>) -> Self {
        Self {
            last: entries.into_iter().collect(),
            changed: HashMap::new(),
        }
    }

    /// True if this redelivery's effect is already in the state.
    pub fn already_counted(&self, dup: bool, pkid: u16, fingerprint: u64) -> bool {
        dup && self.last.get(&pkid) == Some(&fingerprint)
    }

    /// Records a delivery whose effect is now in the state (also a redelivery
    /// found [`Seen::already_counted`]).
    pub fn record(&mut self, pkid: u16, fingerprint: u64) {
        self.last.insert(pkid, fingerprint);
        self.changed.insert(pkid, fingerprint);
    }

    /// A checkpoint holding [`Seen::changes`] has committed.
    pub fn committed(&mut self) {
        self.changed.clear();
    }

    /// The entries recorded since the last commit, to store with a checkpoint.
    fn changes(&self) -> Vec<(u16, u64)> {
        let mut v: Vec<(u16, u64)> = self.changed.iter().map(|(k, f)| (*k, *f)).collect();
        v.sort_unstable();
        v
    }
}

#[cfg(test)]
#[path = "checkpoint_tests.rs"]
mod tests;
