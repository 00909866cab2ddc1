//! The event-time core (pure: no I/O, no clock; "now" is passed in).
//!
//! Semantics are those of Flink event-time windows at parallelism 1, with one
//! watermark per key (`max ts seen - max_out_of_orderness`) so that a device
//! replaying old data lands in its true windows. See [`Engine::push`] for the
//! exact rules.
//!
//! Invariants, true between calls to [`Engine::push`], for every key `k` with
//! watermark `wm = max_ts(k) - D`:
//! - a key has state only if at least one reading of it passed the future-skew
//!   and key-limit guards, so every key in the map has a watermark, and at most
//!   `max_keys` keys have state;
//! - the key's windows are sorted by end, distinct, at most `max_windows_per_key`;
//! - every window with `end <= wm` has fired (its on-time pane was emitted), and
//!   none with `end > wm` has;
//! - no window with `end + L <= wm` is kept: it can no longer change;
//! - `open` equals the total number of windows over all keys.

mod agg;
mod config;
mod pane;

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

pub use config::{EngineConfig, EngineConfigError, Window, WindowSpec, Windows};
pub use pane::{Aggregates, LateReading, Output, Pane, RejectReason, Timing};

use crate::reading::{Key, Reading, TimestampMs};
use agg::Acc;

/// The event-time windowing engine: readings in, panes, late readings and
/// rejections out. Pure and single-threaded; the caller owns the clock.
#[derive(Debug)]
pub struct Engine {
    cfg: EngineConfig,
    keys: HashMap<Key, KeyState>,
    open: usize,
}

/// Per-key state, kept small: 10,000 keys is an ordinary load.
#[derive(Debug)]
struct KeyState {
    max_ts: TimestampMs,
    // Usually one or two windows; a sorted Vec beats a tree at that size, and
    // keeps its capacity as windows come and go, so the steady state does not allocate.
    windows: Vec<OpenWindow>,
}

#[derive(Debug)]
struct OpenWindow {
    win: Window,
    // Panes emitted so far: 0 before the on-time firing, so the next late pane's
    // revision is this value.
    panes: u32,
    acc: Acc,
}

impl Engine {
    /// An engine with no keys.
    ///
    /// `cfg` should have passed [`EngineConfig::validate`]; an invalid config is
    /// clamped to the nearest valid one (see [`Engine::config`]) rather than
    /// panicking later on a zero window size.
    pub fn new(cfg: EngineConfig) -> Self {
        Self {
            cfg: cfg.clamped(),
            keys: HashMap::new(),
            open: 0,
        }
    }

    /// Feeds one reading; appends every resulting output to `out` (in causal order).
    /// `now_ms` is the wall clock, used only for the future-skew guard.
    ///
    /// In order, for a reading `r` of key `k` whose window is `w`:
    /// 1. `r.ts > now_ms + max_future_skew` → `Rejected{FutureSkew}`; nothing changes.
    /// 2. `k` is new and `max_keys` keys exist → `Rejected{KeyLimit}`; nothing changes.
    /// 3. `r.ts` raises `k`'s watermark `wm`: every window of `k` with `end <= wm`
    ///    that has not fired fires (revision 0, on time, in order of end), and
    ///    windows with `end + L <= wm` are dropped.
    /// 4. `wm >= w.end + L` → `Late` (`late_by_ms = wm - (w.end + L)`).
    /// 5. Otherwise `r` is added to `w`, creating it; if `max_windows_per_key`
    ///    windows are already open → `Rejected{WindowLimit}`. If `w` had fired
    ///    (revision n), a late pane with revision n+1 follows at once; if `w` is
    ///    new but `w.end <= wm` already (a late reading within L for a window that
    ///    had no readings), it fires at once as its revision 0.
    ///
    /// This is the contract's order (late check, add, then advance) rearranged,
    /// with the same outputs: a reading that raises the watermark is never late
    /// nor in a fired window (its window ends after it, the watermark is at most
    /// it), and one that does not raise it fires nothing. Advancing first lets the
    /// window limit count only windows still open after this reading, and a
    /// reading refused by that limit still counts for the watermark, so a key
    /// whose limit is too small for D recovers instead of stalling forever.
    pub fn push(&mut self, reading: Reading, now_ms: TimestampMs, out: &mut Vec<Output>) {
        if reading.ts > now_ms.saturating_add(self.cfg.max_future_skew_ms) {
            out.push(Output::Rejected {
                reading,
                reason: RejectReason::FutureSkew,
            });
            return;
        }
        // Look up by reference first: the common path never clones the key.
        if let Some(state) = self.keys.get_mut(&reading.key) {
            state.push(&self.cfg, &mut self.open, reading, out);
            return;
        }
        if self.keys.len() >= self.cfg.max_keys {
            out.push(Output::Rejected {
                reading,
                reason: RejectReason::KeyLimit,
            });
            return;
        }
        let state = self.keys.entry(reading.key.clone()).or_insert(KeyState {
            max_ts: reading.ts,
            windows: Vec::new(),
        });
        state.push(&self.cfg, &mut self.open, reading, out);
    }

    /// Number of keys holding state (never more than `max_keys`).
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Number of open windows, summed over all keys.
    pub fn open_windows(&self) -> usize {
        self.open
    }

    /// The key's watermark, or `None` if the key has no state (no reading of it
    /// was accepted).
    pub fn watermark(&self, key: &Key) -> Option<TimestampMs> {
        self.keys.get(key).map(|s| s.watermark(&self.cfg))
    }

    /// Every key's watermark, in no particular order.
    pub fn watermarks(&self) -> impl Iterator<Item = (&Key, TimestampMs)> + '_ {
        self.keys.iter().map(|(k, s)| (k, s.watermark(&self.cfg)))
    }

    /// The configuration in force (clamped to valid values, see [`Engine::new`]).
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }
}

impl KeyState {
    fn watermark(&self, cfg: &EngineConfig) -> TimestampMs {
        self.max_ts.saturating_sub(cfg.max_out_of_orderness_ms)
    }

    fn push(
        &mut self,
        cfg: &EngineConfig,
        open: &mut usize,
        reading: Reading,
        out: &mut Vec<Output>,
    ) {
        if reading.ts > self.max_ts {
            self.max_ts = reading.ts;
            self.advance(cfg, open, &reading.key, out);
        }
        let wm = self.watermark(cfg);
        let lateness = cfg.allowed_lateness_ms;

        let mut accepted = false;
        let mut refused = false;
        let mut latest_closed: Option<TimestampMs> = None;
        for win in cfg.window.assign(reading.ts) {
            let closes = win.end.saturating_add(lateness);
            if wm >= closes {
                latest_closed = Some(closes);
                continue;
            }
            let idx = match self.find(win) {
                Ok(i) => {
                    self.windows[i].acc.add(reading.value, reading.ts);
                    i
                }
                Err(i) => {
                    if self.windows.len() >= cfg.max_windows_per_key {
                        refused = true;
                        continue;
                    }
                    self.windows.insert(
                        i,
                        OpenWindow {
                            win,
                            panes: 0,
                            acc: Acc::new(reading.value, reading.ts),
                        },
                    );
                    *open += 1;
                    i
                }
            };
            accepted = true;
            let w = &mut self.windows[idx];
            if w.panes > 0 {
                out.push(w.pane(&reading.key, Timing::Late, false));
                w.panes = w.panes.saturating_add(1);
            } else if win.end <= wm {
                out.push(w.pane(&reading.key, Timing::OnTime, false));
                w.panes = 1;
            }
        }

        // A reading that went into any window is accounted for by that window's
        // panes; only one that went into none is reported, once.
        if accepted {
            return;
        }
        if refused {
            out.push(Output::Rejected {
                reading,
                reason: RejectReason::WindowLimit,
            });
        } else if let Some(closes) = latest_closed {
            out.push(Output::Late(LateReading {
                late_by_ms: wm.saturating_sub(closes),
                watermark: wm,
                reading,
            }));
        }
    }

    /// Fires every unfired window the watermark has passed, then drops every
    /// window past its allowed lateness.
    fn advance(&mut self, cfg: &EngineConfig, open: &mut usize, key: &Key, out: &mut Vec<Output>) {
        let wm = self.watermark(cfg);
        let lateness = cfg.allowed_lateness_ms;
        for w in &mut self.windows {
            if w.win.end > wm {
                break;
            }
            if w.panes == 0 {
                // Final when the watermark jumped past end + L in one step: the
                // window is dropped below and no late pane can follow. With
                // L = 0 this is every on-time pane.
                let is_final = wm >= w.win.end.saturating_add(lateness);
                out.push(w.pane(key, Timing::OnTime, is_final));
                w.panes = 1;
            }
        }
        // Sorted by end, so the windows past their lateness are a prefix.
        let closed = self
            .windows
            .iter()
            .take_while(|w| w.win.end.saturating_add(lateness) <= wm)
            .count();
        self.windows.drain(..closed);
        *open -= closed;
    }

    fn find(&self, win: Window) -> Result<usize, usize> {
        // Most readings land in the newest window.
        if let Some(last) = self.windows.last() {
            if last.win == win {
                return Ok(self.windows.len() - 1);
            }
        }
        self.windows
            .binary_search_by(|w| (w.win.end, w.win.start).cmp(&(win.end, win.start)))
    }
}

impl OpenWindow {
    fn pane(&self, key: &Key, timing: Timing, is_final: bool) -> Output {
        Output::Pane(Pane {
            key: key.clone(),
            start: self.win.start,
            end: self.win.end,
            agg: self.acc.aggregates(),
            revision: self.panes,
            timing,
            is_final,
        })
    }
}
