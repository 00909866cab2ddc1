//! The event-time core (pure: no I/O, no clock; "now" is passed in).
//!
//! Semantics are those of Flink event-time windows at parallelism 1 (see
//! `docs/time.md` for the exact correspondence and a worked example), with one
//! watermark per key by default (`max ts of the key - D`) so that a device
//! replaying old data lands in its true windows, or one over all keys
//! (`scope = "global"`). See [`Engine::push`] for the exact rules.
//!
//! Invariants, true between calls, where `wm(k)` is key `k`'s watermark (its own
//! `max_ts - D`, or the global one) and L the allowed lateness:
//! - a key has state only if at least one reading of it passed the clock and
//!   key-limit guards, and at most `max_keys` keys have state;
//! - a key's windows are sorted by end, distinct, at most `max_windows_per_key`;
//!   session windows of one key never touch or overlap within one `max_length` cell;
//! - no window with `end + L <= wm(k)` is kept: it can no longer change;
//! - a window with `end <= wm(k)` has no content missing from its latest pane
//!   (`dirty` is false) unless a late pane is held for `late_fire_delay`
//!   (`due` is set); every held pane is emitted at `due` or when the window closes;
//! - global scope: every kept window has a timer at its end and at `end + L`
//!   (stale timers of merged sessions are harmless: firing is idempotent);
//! - `next_due` is at most the earliest pending `due` and idle deadline;
//! - `open` equals the total number of windows over all keys.

mod agg;
mod config;
mod key;
mod pane;
mod sketch;
mod state;
mod window;

#[cfg(test)]
mod clock_tests;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod session_tests;
#[cfg(test)]
mod snapshot_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod time_tests;

use std::collections::BTreeSet;

pub use config::{EngineConfig, EngineConfigError, Scope, WindowSpec};
pub use pane::{Aggregates, Idle, LateReading, Output, Pane, RejectReason, Timing};
pub use sketch::{ALPHA0 as QUANTILE_ALPHA, MAX_BINS as QUANTILE_MAX_BINS};
pub use state::{EngineState, KeySnapshot};
pub use window::{Window, Windows};

use crate::reading::{Key, KeyMap, Reading, TimestampMs};
use key::{Ctx, KeyState};

/// The largest magnitude a reading may have: with it, the sum of any window
/// (at most 2^64 readings) stays below the largest double (2^64 * 1e288 is
/// about 1.8e307), so every aggregate is a finite number. A reading beyond it
/// is refused as [`RejectReason::OutOfRange`], counted and published; no
/// physical sensor reads 1e288.
pub const MAX_ABS_VALUE: f64 = 1e288;

/// The event-time windowing engine: readings in, panes, late readings and
/// rejections out. Pure and single-threaded; the caller owns the clock.
#[derive(Debug)]
pub struct Engine {
    cfg: EngineConfig,
    keys: KeyMap<KeyState>,
    open: usize,
    // Global scope: the largest accepted timestamp, and (time, key) timers at
    // which a key's windows may fire or close. Unused with per-key scope.
    global_max_ts: Option<TimestampMs>,
    timers: BTreeSet<(TimestampMs, Key)>,
    // No pending late pane or idle deadline is earlier than this: `tick` is O(1) until then.
    next_due: TimestampMs,
    // Keys whose state may have changed since the last `take_dirty`: what an
    // incremental checkpoint must write. A superset is harmless, a miss is not.
    // Each key once: its state's `listed` flag says whether it is here, so a
    // reading of a listed key costs no hash lookup for this.
    dirty: Vec<Key>,
    // Whether `now` is a synchronised time the clock guards may judge by.
    clock_trusted: bool,
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
            keys: KeyMap::default(),
            open: 0,
            global_max_ts: None,
            timers: BTreeSet::new(),
            next_due: TimestampMs::MAX,
            dirty: Vec::new(),
            clock_trusted: true,
        }
    }

    /// Whether the `now` passed in is synchronised time (default true). While
    /// it is not, the clock guards (`max_future_skew`, `max_backfill`) are off:
    /// an unsynchronised clock never quarantines a reading (see `crate::clock`).
    pub fn set_clock_trusted(&mut self, trusted: bool) {
        self.clock_trusted = trusted;
    }

    /// The clock `now` is read from moved by `delta` ms without time passing
    /// (Weir's timeline took the synchronised time): every timer held on it
    /// (idle deadlines, held late panes) moves with it, so none fires or is
    /// postponed by the correction.
    pub fn shift_clock(&mut self, delta: i64) {
        if delta == 0 {
            return;
        }
        for (k, st) in &mut self.keys {
            st.shift_clock(delta);
            st.mark_dirty(&mut self.dirty, k);
        }
        if self.next_due != TimestampMs::MAX {
            self.next_due = self.next_due.saturating_add(delta);
        }
    }

    /// The state was restored from a checkpoint taken on another run's
    /// clock, which may be years from this one (a Pi that booted with a 1970
    /// clock): silence is counted from `now`, the first moment this run could
    /// hear anything, and held late panes are due now at the latest.
    pub fn restart_clock(&mut self, now: TimestampMs) {
        // Not marked dirty: every start redoes this, so a checkpoint need not
        // hold it (and the first checkpoint stays small with many keys).
        for st in self.keys.values_mut() {
            st.restart_clock(now);
        }
        // Let the next tick look: it is exact and emits only what is due.
        self.next_due = TimestampMs::MIN;
    }

    /// Feeds one reading that arrived at wall-clock `now_ms`; appends every
    /// resulting output to `out` (in causal order).
    ///
    /// In order, for a reading `r` of key `k`, with `wm` the watermark of its
    /// scope (`k`'s own, or the global one):
    /// 1. `r.ts > now_ms + max_future_skew` → `Rejected{FutureSkew}`;
    ///    `r.ts < now_ms - max_backfill` → `Rejected{TooOld}`; nothing changes.
    ///    Skipped while the clock is not trusted ([`Engine::set_clock_trusted`]).
    /// 2. `k` is new and `max_keys` keys exist → `Rejected{KeyLimit}`; nothing changes.
    /// 3. Sessions: if `r`'s proto-session touches sessions of `k`, they merge
    ///    into one session holding `r` (before the watermark moves).
    /// 4. `r.ts` raises `wm`: every window (of `k`, or with global scope of any
    ///    key, in order of end) with `end <= wm` fires, and windows with
    ///    `end + L <= wm` are dropped (a held late pane is emitted first).
    /// 5. For each window `w` of `r` (sessions: the merged session of step 3,
    ///    or else the proto-session): `wm >= w.end + L` → skipped as too late;
    ///    otherwise `r` is added, creating `w` if needed (beyond
    ///    `max_windows_per_key` → `Rejected{WindowLimit}`). If `w.end <= wm`
    ///    (the window had fired, or fires only now), it fires at once: its
    ///    on-time pane if it never fired, else a late pane with the next
    ///    revision, held for `late_fire_delay` if that is set.
    /// 6. A reading skipped by all its windows → `Late` (`late_by_ms = wm -
    ///    (latest window end + L)`).
    ///
    /// This is Flink's order (late check, add, then the watermark advances)
    /// rearranged, with the same outputs: a reading that raises the watermark
    /// is never late nor in a fired window (its windows end after it, the
    /// watermark is at most it), and one that does not raise it fires nothing.
    /// Only a session that ends exactly at `r.ts` (D = 0) could fire before
    /// `r` extends it, which is why sessions merge first (step 3). Advancing
    /// before adding to a new window lets the window limit count only windows
    /// still open after this reading (a merge never adds one), and a reading
    /// refused by that limit still counts for the watermark, so a key whose
    /// limit is too small for D recovers instead of stalling forever.
    pub fn push(&mut self, reading: Reading, now_ms: TimestampMs, out: &mut Vec<Output>) {
        self.push_ref(&reading, now_ms, out);
    }

    /// [`Engine::push`] of a reading the caller keeps: the reading is cloned only
    /// into an output that carries it (late, rejected), not on the common path,
    /// where a clone was two atomic reference-count updates and two more at its drop.
    pub fn push_ref(&mut self, reading: &Reading, now_ms: TimestampMs, out: &mut Vec<Output>) {
        let cfg = &self.cfg;
        let guard = self.clock_trusted;
        let reject = if reading.value.abs() > MAX_ABS_VALUE {
            Some(RejectReason::OutOfRange)
        } else if guard && reading.ts > now_ms.saturating_add(cfg.max_future_skew_ms) {
            Some(RejectReason::FutureSkew)
        } else if guard
            && cfg
                .max_backfill_ms
                .is_some_and(|b| reading.ts < now_ms.saturating_sub(b))
        {
            Some(RejectReason::TooOld)
        } else {
            None
        };
        if let Some(reason) = reject {
            out.push(Output::Rejected {
                reading: reading.clone(),
                reason,
            });
            return;
        }
        let global = cfg.scope == Scope::Global;
        let session = matches!(cfg.window, WindowSpec::Session { .. });
        let mut ctx = Ctx {
            cfg: &self.cfg,
            open: &mut self.open,
            timers: &mut self.timers,
            next_due: &mut self.next_due,
            now: now_ms,
            out,
        };
        // One hash lookup finds the key's state and settles the key limit
        // (step 2); with per-key scope it is the only one. Nothing changes
        // before the key is known to be admitted.
        let joined = match self.keys.get_mut(&reading.key) {
            Some(state) => {
                admitted(&mut ctx, state, &mut self.dirty, &reading.key);
                // Step 3 for sessions: join before the watermark moves.
                let joined = if session {
                    state.join_session(reading, &mut ctx)
                } else {
                    None
                };
                if !global {
                    state.accept(reading, None, joined, &mut ctx);
                    return;
                }
                joined
            }
            None => {
                if self.keys.len() >= ctx.cfg.max_keys {
                    ctx.out.push(Output::Rejected {
                        reading: reading.clone(),
                        reason: RejectReason::KeyLimit,
                    });
                    return;
                }
                let state = self
                    .keys
                    .entry(reading.key.clone())
                    .or_insert_with(|| KeyState::new(ctx.cfg, reading.ts));
                admitted(&mut ctx, state, &mut self.dirty, &reading.key);
                if !global {
                    state.accept(reading, None, None, &mut ctx);
                    return;
                }
                // A new key has no session to join.
                None
            }
        };
        // Global scope: the watermark may fire other keys' windows first.
        if self.global_max_ts.is_none_or(|m| reading.ts > m) {
            self.global_max_ts = Some(reading.ts);
            self.fire_timers(now_ms, out);
        }
        let mut ctx = Ctx {
            cfg: &self.cfg,
            open: &mut self.open,
            timers: &mut self.timers,
            next_due: &mut self.next_due,
            now: now_ms,
            out,
        };
        // Panics only if a key lost its state, which never happens: keys are
        // never removed from `keys`.
        #[allow(clippy::expect_used)]
        let state = self
            .keys
            .get_mut(&reading.key)
            .expect("the key was admitted above and keys are never removed");
        state.accept(reading, self.global_max_ts, joined, &mut ctx);
    }

    /// Lets wall-clock time pass to `now_ms`: emits late panes held by
    /// `late_fire_delay` whose time has come, and closes the windows of keys
    /// idle for `idle_timeout` (their unfired content fires, then
    /// [`Output::Idle`]). Cheap when nothing is due. The daemon calls it on a
    /// timer and before each input; what it emits depends only on `now_ms` and
    /// the inputs, not on how often it is called. Outputs are ordered by due
    /// time, then key.
    pub fn tick(&mut self, now_ms: TimestampMs, out: &mut Vec<Output>) {
        if now_ms < self.next_due {
            return;
        }
        let mut due: Vec<(TimestampMs, Key)> = Vec::new();
        let mut next = TimestampMs::MAX;
        for (k, st) in &self.keys {
            let mut first = st
                .windows
                .iter()
                .filter_map(|w| w.due)
                .min()
                .unwrap_or(TimestampMs::MAX);
            if let (Some(idle), false) = (self.cfg.idle_timeout_ms, st.idle) {
                first = first.min(st.last_arrival.saturating_add(idle));
            }
            if first <= now_ms {
                due.push((first, k.clone()));
            }
        }
        due.sort();
        let mut ctx = Ctx {
            cfg: &self.cfg,
            open: &mut self.open,
            timers: &mut self.timers,
            next_due: &mut next,
            now: now_ms,
            out,
        };
        for (_, k) in &due {
            if let Some(st) = self.keys.get_mut(k) {
                st.on_tick(k, &mut ctx);
                st.mark_dirty(&mut self.dirty, k);
            }
        }
        // Recompute the bound exactly over what is still pending.
        for st in self.keys.values() {
            for d in st.windows.iter().filter_map(|w| w.due) {
                next = next.min(d);
            }
            if let (Some(idle), false) = (self.cfg.idle_timeout_ms, st.idle) {
                next = next.min(st.last_arrival.saturating_add(idle));
            }
        }
        self.next_due = next;
    }

    /// Global scope: fires and closes, in timer order, every window whose
    /// timer the new watermark has reached.
    fn fire_timers(&mut self, now_ms: TimestampMs, out: &mut Vec<Output>) {
        let Some(max) = self.global_max_ts else {
            return;
        };
        let wm = max.saturating_sub(self.cfg.max_out_of_orderness_ms);
        let mut ctx = Ctx {
            cfg: &self.cfg,
            open: &mut self.open,
            timers: &mut self.timers,
            next_due: &mut self.next_due,
            now: now_ms,
            out,
        };
        while ctx.timers.first().is_some_and(|(t, _)| *t <= wm) {
            let Some((t, k)) = ctx.timers.pop_first() else {
                break;
            };
            if let Some(st) = self.keys.get_mut(&k) {
                st.advance(&k, t, wm, &mut ctx);
                st.mark_dirty(&mut self.dirty, &k);
            }
        }
    }

    /// Weir could hear the keys `which` selects only from wall-clock `from` on
    /// (its own start, or their source's (re)connection): their silence counts
    /// from then, never across Weir's own downtime. A key's idle deadline
    /// becomes at least `from + idle_timeout`; a key already reported idle stays
    /// so (its silence began before). Only moves deadlines later, so `next_due`
    /// stays a valid lower bound; the keys are not marked dirty: a checkpoint
    /// that misses the new value restores the older one, and the restart applies
    /// its own `from` anyway.
    pub fn hear_from(&mut self, from: TimestampMs, which: impl Fn(&Key) -> bool) {
        for (k, st) in &mut self.keys {
            if !st.idle && st.last_arrival < from && which(k) {
                st.last_arrival = from;
            }
        }
    }

    /// Number of keys holding state (never more than `max_keys`).
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Number of open windows, summed over all keys.
    pub fn open_windows(&self) -> usize {
        self.open
    }

    /// The watermark that applies to the key (its own, or the global one), or
    /// `None` if the key has no state (no reading of it was accepted).
    pub fn watermark(&self, key: &Key) -> Option<TimestampMs> {
        self.keys.get(key).map(|s| self.wm_of(s))
    }

    /// Every key's watermark, in no particular order.
    pub fn watermarks(&self) -> impl Iterator<Item = (&Key, TimestampMs)> + '_ {
        self.keys.iter().map(|(k, s)| (k, self.wm_of(s)))
    }

    fn wm_of(&self, s: &KeyState) -> TimestampMs {
        let max = match self.global_max_ts {
            Some(m) if self.cfg.scope == Scope::Global => m,
            _ => s.max_ts,
        };
        max.saturating_sub(self.cfg.max_out_of_orderness_ms)
    }

    /// The keys whose state may have changed since the last call (in no
    /// particular order), for an incremental checkpoint: write
    /// [`Engine::key_snapshot`] of each, and [`Engine::global_max_ts`].
    pub fn take_dirty(&mut self) -> Vec<Key> {
        let keys = std::mem::take(&mut self.dirty);
        for k in &keys {
            if let Some(st) = self.keys.get_mut(k) {
                st.listed = false;
            }
        }
        keys
    }

    /// The configuration in force (clamped to valid values, see [`Engine::new`]).
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }
}

/// What every admitted reading does to its key, before steps 3 to 6: the key
/// may have changed (for the next checkpoint), and its idle deadline moves.
fn admitted(ctx: &mut Ctx, state: &mut KeyState, dirty: &mut Vec<Key>, key: &Key) {
    if let Some(idle) = ctx.cfg.idle_timeout_ms {
        *ctx.next_due = (*ctx.next_due).min(ctx.now.saturating_add(idle));
    }
    state.mark_dirty(dirty, key);
}
