//! The engine's state as plain data, for checkpoints: [`Engine::snapshot`] and
//! [`Engine::restore`]. The caller encodes it (postcard); its fields are
//! private so that only the engine gives it meaning.

use serde::{Deserialize, Serialize};

use super::agg::Acc;
use super::key::{KeyState, OpenWindow};
use super::window::Window;
use super::{Engine, EngineConfig, Scope};
use crate::reading::{Key, TimestampMs};

/// Everything an [`Engine`] holds, keys sorted so that equal engines give
/// equal snapshots.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EngineState {
    global_max_ts: Option<TimestampMs>,
    keys: Vec<KeySnapshot>,
}

/// One key's state (windows, watermark, idle flag): a row of an incremental
/// checkpoint. Opaque, like [`EngineState`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeySnapshot {
    sensor: String,
    metric: String,
    max_ts: TimestampMs,
    last_arrival: TimestampMs,
    idle: bool,
    windows: Vec<WindowSnapshot>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct WindowSnapshot {
    start: TimestampMs,
    end: TimestampMs,
    panes: u32,
    dirty: bool,
    due: Option<TimestampMs>,
    acc: Acc,
}

impl EngineState {
    /// Number of keys in the snapshot.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Reassembles a whole state from an incremental checkpoint's parts:
    /// [`Engine::global_max_ts`] and one [`Engine::key_snapshot`] per key.
    pub fn from_parts(global_max_ts: Option<TimestampMs>, mut keys: Vec<KeySnapshot>) -> Self {
        keys.sort_by(|a, b| (&a.sensor, &a.metric).cmp(&(&b.sensor, &b.metric)));
        Self {
            global_max_ts,
            keys,
        }
    }
}

impl KeySnapshot {
    fn of(k: &Key, s: &KeyState) -> Self {
        KeySnapshot {
            sensor: k.sensor.to_string(),
            metric: k.metric.to_string(),
            max_ts: s.max_ts,
            last_arrival: s.last_arrival,
            idle: s.idle,
            windows: s
                .windows
                .iter()
                .map(|w| WindowSnapshot {
                    start: w.win.start,
                    end: w.win.end,
                    panes: w.panes,
                    dirty: w.dirty,
                    due: w.due,
                    acc: w.acc.clone(),
                })
                .collect(),
        }
    }
}

impl Engine {
    /// The engine's whole state (windows, watermarks, held panes, idle flags).
    pub fn snapshot(&self) -> EngineState {
        let keys = self
            .keys
            .iter()
            .map(|(k, s)| KeySnapshot::of(k, s))
            .collect();
        EngineState::from_parts(self.global_max_ts, keys)
    }

    /// One key's state, or `None` when the key holds none (then its checkpoint
    /// row should be deleted).
    pub fn key_snapshot(&self, key: &Key) -> Option<KeySnapshot> {
        self.keys.get(key).map(|s| KeySnapshot::of(key, s))
    }

    /// The global scope's largest accepted timestamp: the part of the state
    /// that belongs to no key.
    pub fn global_max_ts(&self) -> Option<TimestampMs> {
        self.global_max_ts
    }

    /// An engine that continues exactly where the snapshot's engine was:
    /// fed the same inputs afterwards, it gives the same outputs.
    ///
    /// `cfg` should be the configuration the snapshot was taken with. With a
    /// different one the engine still upholds its invariants for the keys it
    /// keeps (keys beyond `max_keys` and windows beyond `max_windows_per_key`
    /// are dropped, oldest windows last), but results may differ from an
    /// uninterrupted run.
    pub fn restore(cfg: EngineConfig, state: EngineState) -> Self {
        let mut e = Engine::new(cfg);
        e.global_max_ts = state.global_max_ts;
        let global = e.cfg.scope == Scope::Global;
        for k in state.keys.into_iter().take(e.cfg.max_keys) {
            let key = Key::new(k.sensor, k.metric);
            let mut st = KeyState::new(&e.cfg, k.max_ts);
            st.last_arrival = k.last_arrival;
            st.idle = k.idle;
            let keep = k.windows.len().min(e.cfg.max_windows_per_key);
            for w in k.windows.into_iter().rev().take(keep).rev() {
                let win = Window {
                    start: w.start,
                    end: w.end,
                };
                if global {
                    e.timers.insert((win.end, key.clone()));
                    let closes = win.end.saturating_add(e.cfg.allowed_lateness_ms);
                    if closes != win.end {
                        e.timers.insert((closes, key.clone()));
                    }
                }
                st.windows.push(OpenWindow {
                    win,
                    panes: w.panes,
                    dirty: w.dirty,
                    due: w.due,
                    acc: w.acc,
                });
            }
            e.open += st.windows.len();
            e.keys.insert(key, st);
        }
        // Unknown: make the next tick look, which is exact and emits only what is due.
        e.next_due = TimestampMs::MIN;
        e
    }
}
