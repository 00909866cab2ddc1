//! The detectors' state as plain data, for checkpoints: [`Detectors::snapshot`]
//! and [`Detectors::restore`]. The caller encodes it (postcard).

use serde::{Deserialize, Serialize};

use super::{Alert, AlertState, DetectorSpec, Detectors, KeyStates, fresh_states};
use crate::reading::{Key, TimestampMs};

/// Everything [`Detectors`] hold, keys sorted so that equal detectors give
/// equal snapshots.
#[derive(Debug, Serialize, Deserialize)]
pub struct DetectorsState {
    rejected: u64,
    keys: Vec<(String, String, KeyStates)>,
}

/// One key's detector states: a row of an incremental checkpoint. Opaque.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DetectorKeyState(String, String, KeyStates);

impl DetectorsState {
    /// Number of keys in the snapshot.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Reassembles a whole state from an incremental checkpoint's parts:
    /// [`Detectors::rejected_keys`] and one [`Detectors::key_snapshot`] per key.
    pub fn from_parts(rejected: u64, keys: Vec<DetectorKeyState>) -> Self {
        let mut keys: Vec<(String, String, KeyStates)> =
            keys.into_iter().map(|k| (k.0, k.1, k.2)).collect();
        keys.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        Self { rejected, keys }
    }
}

impl KeyStates {
    /// The kind and spec index of every slot, in slot order: what a restore
    /// must match (the same kind of detector at the same place in the config).
    fn slots(&self) -> Vec<(u8, usize)> {
        let t = self.threshold.iter().map(|s| (0, s.0));
        let z = self.zscore.iter().map(|s| (1, s.0));
        let q = self.silence.iter().map(|s| (2, s.0));
        let f = self.flatline.iter().map(|s| (3, s.0));
        let o = self.online.iter().map(|s| (4 + s.1.code(), s.0));
        t.chain(z).chain(q).chain(f).chain(o).collect()
    }
}

/// Copies of a key's open episodes, their kind names set, for [`Detectors::end_orphaned`].
fn ended(states: &KeyStates) -> impl Iterator<Item = Alert> + '_ {
    states.open().map(|(kind, a)| Alert { kind, ..a.clone() })
}

impl Detectors {
    /// Every key's detector states (baselines, open episodes).
    pub fn snapshot(&self) -> DetectorsState {
        let mut keys: Vec<(String, String, KeyStates)> = self
            .keys
            .iter()
            .map(|(k, s)| (k.sensor.to_string(), k.metric.to_string(), s.clone()))
            .collect();
        keys.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        DetectorsState {
            rejected: self.rejected,
            keys,
        }
    }

    /// One key's detector states, or `None` when the key holds none.
    pub fn key_snapshot(&self, key: &Key) -> Option<DetectorKeyState> {
        self.keys
            .get(key)
            .map(|s| DetectorKeyState(key.sensor.to_string(), key.metric.to_string(), s.clone()))
    }

    /// The keys whose states may have changed since the last call, for an
    /// incremental checkpoint.
    pub fn take_dirty(&mut self) -> Vec<Key> {
        let keys = std::mem::take(&mut self.dirty);
        for k in &keys {
            if let Some(s) = self.keys.get_mut(k) {
                s.dirty = false;
            }
        }
        keys
    }

    /// Detectors that continue exactly where the snapshot's were. A key whose
    /// stored states no longer line up with `specs` (the detectors changed
    /// between runs) starts afresh; keys beyond `max_keys` are dropped. The open
    /// episodes either loses are kept to be ended ([`Detectors::end_orphaned`]),
    /// so that no consumer is left with an alert raised for ever.
    pub fn restore(specs: Vec<DetectorSpec>, max_keys: usize, state: DetectorsState) -> Self {
        let mut d = Detectors::new(specs, max_keys);
        d.rejected = state.rejected;
        for (n, (sensor, metric, mut states)) in state.keys.into_iter().enumerate() {
            if n >= max_keys {
                d.orphaned.extend(ended(&states));
                continue;
            }
            let key = Key::new(sensor, metric);
            let fresh = fresh_states(&d.specs, &key);
            if states.slots() != fresh.slots() {
                d.orphaned
                    .extend(ended(&std::mem::replace(&mut states, fresh)));
            }
            // Alert kinds are static names: take them from the specs again.
            let specs = &d.specs;
            let kind = |i: usize| specs.get(i).map_or("", |s| s.kind.name());
            for (i, st) in &mut states.threshold {
                if let Some(a) = st.active_mut() {
                    a.kind = kind(*i);
                }
            }
            for (i, st) in &mut states.zscore {
                if let Some(a) = st.active_mut() {
                    a.kind = kind(*i);
                }
            }
            for (i, st) in &mut states.silence {
                if let Some(a) = st.active_mut() {
                    a.kind = kind(*i);
                }
            }
            for (i, st) in &mut states.flatline {
                if let Some(a) = st.active_mut() {
                    a.kind = kind(*i);
                }
            }
            for (i, st) in &mut states.online {
                if let Some(s) = specs.get(*i) {
                    st.recommission_if_changed(&s.kind);
                }
                if let Some(a) = st.active_mut() {
                    a.kind = kind(*i);
                }
            }
            d.keys.insert(key, states);
        }
        d
    }

    /// Ends the open episodes a restore could not keep, at wall-clock `now`:
    /// a `cleared` alert each, with the episode's id, pushed to `out`. Once.
    pub fn end_orphaned(&mut self, now: TimestampMs, out: &mut Vec<Alert>) {
        for mut a in self.orphaned.drain(..) {
            a.reason = format!(
                "ended when weir restarted: the detectors configured for {} changed (or the key is over max_keys), so this episode can no longer be judged; raised for: {}",
                a.key, a.reason
            );
            a.state = AlertState::Cleared;
            // Event time never goes back within an episode.
            a.ts = now.max(a.ts);
            out.push(a);
        }
    }
}
