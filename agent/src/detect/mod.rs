//! Detectors and the alert lifecycle.
//!
//! [`Detectors`] holds, per key, one small state per detector that applies to
//! it: thresholds judge every reading ([`Detectors::on_reading`]), z-scores
//! judge on-time window panes ([`Detectors::on_pane`]), silence detectors
//! judge the engine's idle reports ([`Detectors::on_idle`]) and readings. Each (detector, key)
//! lives through episodes: one [`AlertState::Raised`] alert, then one
//! [`AlertState::Cleared`] alert with the same id, then perhaps a new episode
//! with a new id. Everything is pure: event time comes from the readings and
//! panes, never from the wall clock.
//!
//! Invariants of [`Detectors`]:
//! - `keys.len() <= max_keys`. A key is admitted on its first reading or pane
//!   while there is room, and never evicted. Inputs of keys that were not
//!   admitted are counted in `rejected`, not stored.
//! - Each admitted key holds exactly one state per spec whose sensor and metric
//!   globs match it, decided once at admission (no glob matching per input).
//!   A key that matches no spec is still admitted, with no states, so the
//!   "matches nothing" decision is not repeated for every reading.
//! - Every state is O(1) in size: no history, no growth with input.
//! - `specs` never changes after construction, so slot indices stay valid.

mod alert;
mod flatline;
mod glob;
mod online;
mod reference;
mod seasonal;
mod silence;
mod spec;
mod state;
mod stats;
mod threshold;
mod zscore;

#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

use crate::engine::{Idle, Pane};
use crate::reading::{Key, KeyMap, Reading};

pub use alert::{Alert, AlertState};
pub use glob::Glob;
pub use spec::{DetectError, DetectorKind, DetectorSpec, Severity, validate_specs};
pub use state::{DetectorKeyState, DetectorsState};

use flatline::FlatlineState;
use online::OnlineState;
use silence::SilenceState;
use threshold::ThresholdState;
use zscore::ZScoreState;

/// The states of every detector that applies to one key, by spec index.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct KeyStates {
    threshold: Vec<(usize, ThresholdState)>,
    zscore: Vec<(usize, ZScoreState)>,
    silence: Vec<(usize, SilenceState)>,
    flatline: Vec<(usize, FlatlineState)>,
    online: Vec<(usize, OnlineState)>,
    /// In `Detectors::dirty` already (not stored: a restored key is clean).
    #[serde(skip)]
    dirty: bool,
}

impl KeyStates {
    /// The raised alert of every open episode, with its detector's kind name (a stored
    /// alert has none: see `alert::boxed`).
    fn open(&self) -> impl Iterator<Item = (&'static str, &Alert)> + '_ {
        let t = self
            .threshold
            .iter()
            .filter_map(|(_, s)| Some(("threshold", s.active()?)));
        let z = self
            .zscore
            .iter()
            .filter_map(|(_, s)| Some(("zscore", s.active()?)));
        let q = self
            .silence
            .iter()
            .filter_map(|(_, s)| Some(("silence", s.active()?)));
        let f = self
            .flatline
            .iter()
            .filter_map(|(_, s)| Some(("flatline", s.active()?)));
        let o = self
            .online
            .iter()
            .filter_map(|(_, s)| Some((s.kind_name(), s.active()?)));
        t.chain(z).chain(q).chain(f).chain(o)
    }
}

/// All detectors for all keys.
#[derive(Debug)]
pub struct Detectors {
    specs: Vec<DetectorSpec>,
    keys: KeyMap<KeyStates>,
    max_keys: usize,
    rejected: u64,
    any_threshold: bool,
    any_zscore: bool,
    any_silence: bool,
    any_flatline: bool,
    any_online: bool,
    // Keys whose states may have changed since the last `take_dirty`, each
    // once: a flag in the key's states says whether it is listed, so the hot
    // path hashes the key once, not twice.
    dirty: Vec<Key>,
    /// Open episodes whose state a restore could not keep (the detectors changed
    /// between runs, or the key is beyond `max_keys`): each still owes consumers
    /// its `cleared` (see [`Detectors::end_orphaned`]).
    orphaned: Vec<Alert>,
}

impl Detectors {
    /// Builds the detectors. `specs` should have passed [`validate_specs`] (the
    /// config layer does); an invalid spec is not refused here, but its alerts
    /// are then meaningless. At most `max_keys` keys get state.
    pub fn new(specs: Vec<DetectorSpec>, max_keys: usize) -> Self {
        let any_threshold = specs
            .iter()
            .any(|s| matches!(s.kind, DetectorKind::Threshold { .. }));
        let any_zscore = specs
            .iter()
            .any(|s| matches!(s.kind, DetectorKind::ZScore { .. }));
        let any_silence = specs.iter().any(|s| s.kind == DetectorKind::Silence);
        let any_flatline = specs
            .iter()
            .any(|s| matches!(s.kind, DetectorKind::Flatline { .. }));
        let any_online = specs.iter().any(|s| OnlineState::new(&s.kind).is_some());
        Self {
            specs,
            keys: KeyMap::default(),
            max_keys,
            rejected: 0,
            any_threshold,
            any_zscore,
            any_silence,
            any_flatline,
            any_online,
            dirty: Vec::new(),
            orphaned: Vec::new(),
        }
    }

    /// Runs every threshold detector of the reading's key, pushing any
    /// transitions to `out`. On the hot path: no allocation unless an alert
    /// fires or the key is new.
    pub fn on_reading(&mut self, r: &Reading, out: &mut Vec<Alert>) {
        self.on_reading_scored(r, out);
    }

    /// [`Detectors::on_reading`], returning the score the reading got from the key's
    /// per-reading statistical detectors (level shift, rate, spread, seasonal, auto),
    /// which judge a reading as they learn it: the highest, with its detector; `None`
    /// for a key without such detectors. One lookup of the key for both.
    pub fn on_reading_scored(&mut self, r: &Reading, out: &mut Vec<Alert>) -> Option<(f64, &str)> {
        // Without a threshold, silence or flatline spec, readings have nothing
        // to say: do not even spend a key slot on them.
        if !(self.any_threshold || self.any_silence || self.any_flatline || self.any_online) {
            return None;
        }
        let mut best: Option<(f64, usize)> = None;
        self.with_states(&r.key, |specs, states| {
            for (i, st) in &mut states.threshold {
                st.observe(&specs[*i], r, out);
            }
            for (_, st) in &mut states.silence {
                st.on_reading(r, out);
            }
            for (i, st) in &mut states.flatline {
                st.observe(&specs[*i], r, out);
            }
            for (i, st) in &mut states.online {
                st.observe(&specs[*i], r, out);
                let s = st.score();
                if !best.is_some_and(|(b, _)| b >= s) {
                    best = Some((s, *i));
                }
            }
        });
        best.map(|(s, i)| (s, self.specs[i].name.as_str()))
    }

    /// The engine reported a key silent: every silence detector of the key
    /// raises (once per silence).
    pub fn on_idle(&mut self, idle: &Idle, out: &mut Vec<Alert>) {
        if !self.any_silence {
            return;
        }
        self.with_states(&idle.key, |specs, states| {
            for (i, st) in &mut states.silence {
                st.on_idle(&specs[*i], idle, out);
            }
        });
    }

    /// How anomalous the reading looks to the key's detectors, before it is
    /// judged: the highest score in [0, 1] and the detector giving it (see
    /// each detector's `score`). `None` for a key without state or without a
    /// scoring detector (silence detectors do not score readings). Read-only.
    pub fn score(&self, r: &Reading) -> Option<(f64, &str)> {
        if !(self.any_threshold || self.any_zscore) {
            return None;
        }
        let states = self.keys.get(&r.key)?;
        let t = states
            .threshold
            .iter()
            .map(|(i, _)| (ThresholdState::score(&self.specs[*i], r.value), *i));
        let z = states
            .zscore
            .iter()
            .map(|(i, st)| (st.score(&self.specs[*i], r.value), *i));
        t.chain(z)
            .fold(None, |best: Option<(f64, usize)>, (s, i)| match best {
                Some((b, _)) if b >= s => best,
                _ => Some((s, i)),
            })
            .map(|(s, i)| (s, self.specs[i].name.as_str()))
    }

    /// Runs every z-score detector of the pane's key, pushing any transitions
    /// to `out`. Late revisions (revision > 0) are ignored.
    pub fn on_pane(&mut self, p: &Pane, out: &mut Vec<Alert>) {
        if !self.any_zscore {
            return;
        }
        self.with_states(&p.key, |specs, states| {
            for (i, st) in &mut states.zscore {
                st.observe(&specs[*i], p, out);
            }
        });
    }

    /// Runs `f` on the key's detector states, admitting the key on first sight
    /// (or doing nothing when it is beyond `max_keys`). One hash lookup for a
    /// known key: the hot path.
    fn with_states(&mut self, key: &Key, f: impl FnOnce(&[DetectorSpec], &mut KeyStates)) {
        if let Some(states) = self.keys.get_mut(key) {
            if !states.dirty {
                states.dirty = true;
                self.dirty.push(key.clone());
            }
            return f(&self.specs, states);
        }
        if let Some(states) = admit(
            &self.specs,
            &mut self.keys,
            self.max_keys,
            &mut self.rejected,
            key,
        ) {
            states.dirty = true;
            self.dirty.push(key.clone());
            f(&self.specs, states);
        }
    }

    /// The raised alert of every open episode, in no particular order.
    pub fn active_alerts(&self) -> impl Iterator<Item = &Alert> + '_ {
        self.keys
            .values()
            .flat_map(|states| states.open().map(|(_, a)| a))
    }

    /// Bytes held by the per-reading statistical detectors' states (level
    /// shift, rate, spread, seasonal, auto) over all keys, open alerts apart:
    /// the per-key memory `docs/detection.md` states.
    pub fn statistical_state_bytes(&self) -> usize {
        self.keys
            .values()
            .flat_map(|s| s.online.iter().map(|(_, st)| st.bytes()))
            .sum()
    }

    /// Keys holding detector state (including keys no detector applies to).
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Inputs (readings and panes) not judged because their key was new while
    /// `max_keys` keys were already held. A rejected key counts once per input:
    /// counting distinct keys would need a set that grows with the input.
    pub fn rejected_keys(&self) -> u64 {
        self.rejected
    }
}

/// Gives a new key its states, or counts it as rejected when full. A free
/// function over the fields so that the caller can keep reading `specs` while
/// holding the new key's states.
fn admit<'a>(
    specs: &[DetectorSpec],
    keys: &'a mut KeyMap<KeyStates>,
    max_keys: usize,
    rejected: &mut u64,
    key: &Key,
) -> Option<&'a mut KeyStates> {
    if keys.len() >= max_keys {
        *rejected = rejected.saturating_add(1);
        return None;
    }
    Some(
        keys.entry(key.clone())
            .or_insert_with(|| fresh_states(specs, key)),
    )
}

/// The states of a newly admitted key: one per spec whose globs match it.
fn fresh_states(specs: &[DetectorSpec], key: &Key) -> KeyStates {
    let mut states = KeyStates::default();
    for (i, spec) in specs.iter().enumerate() {
        if !(spec.sensor.matches(&key.sensor) && spec.metric.matches(&key.metric)) {
            continue;
        }
        match spec.kind {
            DetectorKind::Threshold { .. } => states.threshold.push((i, ThresholdState::default())),
            DetectorKind::ZScore { .. } => states.zscore.push((i, ZScoreState::default())),
            DetectorKind::Silence => states.silence.push((i, SilenceState::default())),
            DetectorKind::Flatline { .. } => states.flatline.push((i, FlatlineState::default())),
            ref kind => {
                if let Some(st) = OnlineState::new(kind) {
                    states.online.push((i, st));
                }
            }
        }
    }
    states
}
