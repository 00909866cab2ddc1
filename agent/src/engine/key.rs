//! One key's windows: adding a reading, firing, closing, holding late panes,
//! going idle. The invariants are those listed in the engine's module docs.

use std::collections::BTreeSet;

use super::agg::Acc;
use super::config::{EngineConfig, Scope, WindowSpec};
use super::pane::{Idle, LateReading, Output, Pane, RejectReason, Timing};
use super::window::Window;
use crate::reading::{Key, Reading, TimestampMs};

/// What every key operation needs besides the key itself.
pub(super) struct Ctx<'a> {
    pub cfg: &'a EngineConfig,
    pub open: &'a mut usize,
    pub timers: &'a mut BTreeSet<(TimestampMs, Key)>,
    pub next_due: &'a mut TimestampMs,
    pub now: TimestampMs,
    pub out: &'a mut Vec<Output>,
}

/// Per-key state, kept small: 10,000 keys is an ordinary load.
#[derive(Debug)]
pub(super) struct KeyState {
    pub max_ts: TimestampMs,
    /// Wall-clock time of the latest accepted reading.
    pub last_arrival: TimestampMs,
    /// Reported idle since its latest reading.
    pub idle: bool,
    // Usually one or two windows; a sorted Vec beats a tree at that size, and
    // keeps its capacity as windows come and go, so the steady state does not allocate.
    pub windows: Vec<OpenWindow>,
    /// In the engine's dirty list already (cleared by `take_dirty`; not in
    /// snapshots: a restored key is clean).
    pub listed: bool,
}

#[derive(Debug)]
pub(super) struct OpenWindow {
    pub win: Window,
    /// Panes emitted so far: the next pane's revision.
    pub panes: u32,
    /// Holds readings that no pane has shown yet.
    pub dirty: bool,
    /// A late pane held by `late_fire_delay` until this wall-clock time.
    pub due: Option<TimestampMs>,
    pub acc: Acc,
}

impl KeyState {
    pub(super) fn new(cfg: &EngineConfig, ts: TimestampMs) -> Self {
        // Room for the windows one reading opens plus one still waiting to
        // fire: the steady state then never reallocates.
        let per_reading = usize::try_from(cfg.window.windows_per_reading()).unwrap_or(1);
        Self {
            max_ts: ts,
            last_arrival: TimestampMs::MIN,
            idle: false,
            windows: Vec::with_capacity((per_reading + 1).min(cfg.max_windows_per_key)),
            listed: false,
        }
    }

    /// Lists `key` (whose state this is) in the engine's `dirty` list unless
    /// it is there already: the incremental checkpoint must write it.
    pub(super) fn mark_dirty(&mut self, dirty: &mut Vec<Key>, key: &Key) {
        if !self.listed {
            self.listed = true;
            dirty.push(key.clone());
        }
    }

    /// See [`super::Engine::restart_clock`].
    pub(super) fn restart_clock(&mut self, now: TimestampMs) {
        if self.last_arrival != TimestampMs::MIN {
            self.last_arrival = now;
        }
        for w in &mut self.windows {
            w.due = w.due.map(|d| d.min(now));
        }
    }

    /// See [`super::Engine::shift_clock`].
    pub(super) fn shift_clock(&mut self, delta: i64) {
        if self.last_arrival != TimestampMs::MIN {
            self.last_arrival = self.last_arrival.saturating_add(delta);
        }
        for w in &mut self.windows {
            w.due = w.due.map(|d| d.saturating_add(delta));
        }
    }

    /// Steps 4 to 6 of [`super::Engine::push`] for an admitted reading.
    /// `global_max` is the global scope's max timestamp, already including
    /// this reading (and its timers already fired); `None` with per-key scope.
    /// `joined`: the session [`KeyState::join_session`] merged the reading
    /// into before the watermark moved, if any.
    pub(super) fn accept(
        &mut self,
        reading: &Reading,
        global_max: Option<TimestampMs>,
        joined: Option<Window>,
        ctx: &mut Ctx,
    ) {
        let d = ctx.cfg.max_out_of_orderness_ms;
        if global_max.is_none() && reading.ts > self.max_ts {
            self.max_ts = reading.ts;
            let wm = self.max_ts.saturating_sub(d);
            self.advance(&reading.key, wm, wm, ctx);
        }
        self.max_ts = self.max_ts.max(reading.ts);
        let wm = global_max.unwrap_or(self.max_ts).saturating_sub(d);
        self.last_arrival = ctx.now;
        self.idle = false;
        if let Some(win) = joined {
            // The joined session ends after the reading, so the watermark
            // move above left it in place; it fires now only if the reading
            // is behind the watermark (a late pane).
            if let Ok(i) = self.find(win) {
                self.touched(i, &reading.key, wm, ctx);
            }
        } else if matches!(ctx.cfg.window, WindowSpec::Session { .. }) {
            self.open_session(reading, wm, ctx);
        } else {
            self.add(reading, wm, ctx);
        }
    }

    /// Fires every window with `end <= limit` that holds unshown readings,
    /// then drops every window with `end + L <= limit`, emitting any pane it
    /// still held. `wm >= limit` decides finality.
    pub(super) fn advance(
        &mut self,
        key: &Key,
        limit: TimestampMs,
        wm: TimestampMs,
        ctx: &mut Ctx,
    ) {
        let lateness = ctx.cfg.allowed_lateness_ms;
        for w in &mut self.windows {
            if w.win.end > limit {
                break;
            }
            if w.dirty && w.due.is_none() {
                // Final when the watermark is past end + L already: the window
                // is dropped below and nothing can follow. With L = 0 this is
                // every on-time pane.
                let is_final = wm >= w.win.end.saturating_add(lateness);
                w.emit(key, is_final, ctx.out);
            }
        }
        // Sorted by end, so the windows past their lateness are a prefix.
        let closed = self
            .windows
            .iter()
            .take_while(|w| w.win.end.saturating_add(lateness) <= limit)
            .count();
        for w in &mut self.windows[..closed] {
            if w.dirty {
                // A held late pane: the final result must go out.
                w.emit(key, true, ctx.out);
            }
        }
        self.windows.drain(..closed);
        *ctx.open -= closed;
    }

    /// Tumbling and hopping windows.
    fn add(&mut self, reading: &Reading, wm: TimestampMs, ctx: &mut Ctx) {
        let lateness = ctx.cfg.allowed_lateness_ms;
        let mut accepted = false;
        let mut refused = false;
        let mut latest_closed: Option<TimestampMs> = None;
        for win in ctx.cfg.window.assign(reading.ts) {
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
                    if self.windows.len() >= ctx.cfg.max_windows_per_key {
                        refused = true;
                        continue;
                    }
                    let acc = Acc::new(reading.value, reading.ts, ctx.cfg.quantiles);
                    self.insert(i, win, acc, 0, None, &reading.key, ctx);
                    i
                }
            };
            accepted = true;
            self.touched(idx, &reading.key, wm, ctx);
        }
        self.report(reading, wm, accepted, refused, latest_closed, ctx.out);
    }

    /// Sessions, step 3 (before the watermark moves): the reading's
    /// proto-session merges with every session of the same cell that it
    /// touches or overlaps (as Flink's `TimeWindow.intersects`: `a.start <=
    /// b.end && a.end >= b.start`), and the reading is added to the merged
    /// session, which is returned; `None` (nothing changed) when it touches none.
    ///
    /// Flink adds an element before its watermark moves. For tumbling and
    /// hopping windows the order makes no difference, but a session ending
    /// exactly at the reading's ts (D = 0) would otherwise fire, or close with
    /// L = 0, before the reading could extend it: the result would depend on
    /// arrival order. A kept session has `end + L > wm`, and the merged one
    /// ends after the reading, so joining one is never late.
    pub(super) fn join_session(&mut self, reading: &Reading, ctx: &mut Ctx) -> Option<Window> {
        let proto = ctx.cfg.window.assign(reading.ts).next()?;
        let cell = ctx.cfg.window.session_cell(proto.start);
        let touches = |w: &Window| {
            w.start <= proto.end
                && w.end >= proto.start
                && ctx.cfg.window.session_cell(w.start) == cell
        };
        let hits: Vec<usize> = (0..self.windows.len())
            .filter(|&i| touches(&self.windows[i].win))
            .collect();
        let mut merged = proto;
        let mut panes = 0;
        let mut due: Option<TimestampMs> = None;
        let mut acc: Option<Acc> = None;
        for &i in hits.iter().rev() {
            let w = self.windows.remove(i);
            merged.start = merged.start.min(w.win.start);
            merged.end = merged.end.max(w.win.end);
            panes = panes.max(w.panes);
            due = match (due, w.due) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match &mut acc {
                Some(a) => a.merge(&w.acc),
                None => acc = Some(w.acc),
            }
        }
        // `None` exactly when nothing was removed.
        let mut acc = acc?;
        *ctx.open -= hits.len();
        acc.add(reading.value, reading.ts);
        let i = self.find(merged).unwrap_or_else(|i| i);
        self.insert(i, merged, acc, panes, due, &reading.key, ctx);
        Some(merged)
    }

    /// Sessions, step 5 for a reading that joined no session: its
    /// proto-session becomes a session of its own, unless it is too late or
    /// the window limit refuses it.
    fn open_session(&mut self, reading: &Reading, wm: TimestampMs, ctx: &mut Ctx) {
        let Some(proto) = ctx.cfg.window.assign(reading.ts).next() else {
            return;
        };
        let closes = proto.end.saturating_add(ctx.cfg.allowed_lateness_ms);
        if wm >= closes {
            return self.report(reading, wm, false, false, Some(closes), ctx.out);
        }
        if self.windows.len() >= ctx.cfg.max_windows_per_key {
            return self.report(reading, wm, false, true, None, ctx.out);
        }
        let acc = Acc::new(reading.value, reading.ts, ctx.cfg.quantiles);
        let i = self.find(proto).unwrap_or_else(|i| i);
        self.insert(i, proto, acc, 0, None, &reading.key, ctx);
        self.touched(i, &reading.key, wm, ctx);
    }

    #[allow(clippy::too_many_arguments)]
    fn insert(
        &mut self,
        i: usize,
        win: Window,
        acc: Acc,
        panes: u32,
        due: Option<TimestampMs>,
        key: &Key,
        ctx: &mut Ctx,
    ) {
        self.windows.insert(
            i,
            OpenWindow {
                win,
                panes,
                dirty: true,
                due,
                acc,
            },
        );
        *ctx.open += 1;
        if ctx.cfg.scope == Scope::Global {
            ctx.timers.insert((win.end, key.clone()));
            let closes = win.end.saturating_add(ctx.cfg.allowed_lateness_ms);
            if closes != win.end {
                ctx.timers.insert((closes, key.clone()));
            }
        }
    }

    /// Window `idx` just took a reading: it fires at once if the watermark has
    /// passed its end (late panes may be held for `late_fire_delay`).
    fn touched(&mut self, idx: usize, key: &Key, wm: TimestampMs, ctx: &mut Ctx) {
        let w = &mut self.windows[idx];
        w.dirty = true;
        if w.win.end > wm {
            return;
        }
        let delay = ctx.cfg.late_fire_delay_ms;
        if w.panes > 0 && delay > 0 {
            if w.due.is_none() {
                let due = ctx.now.saturating_add(delay);
                w.due = Some(due);
                *ctx.next_due = (*ctx.next_due).min(due);
            }
            return;
        }
        w.emit(key, false, ctx.out);
    }

    /// A reading that went into any window is accounted for by that window's
    /// panes; one refused by the window limit (even for only some of its
    /// hopping windows) is reported as rejected; one that went into none is
    /// reported late, once.
    fn report(
        &self,
        reading: &Reading,
        wm: TimestampMs,
        accepted: bool,
        refused: bool,
        latest_closed: Option<TimestampMs>,
        out: &mut Vec<Output>,
    ) {
        if refused {
            out.push(Output::Rejected {
                reading: reading.clone(),
                reason: RejectReason::WindowLimit,
            });
        } else if let (false, Some(closes)) = (accepted, latest_closed) {
            out.push(Output::Late(LateReading {
                late_by_ms: wm.saturating_sub(closes),
                watermark: wm,
                reading: reading.clone(),
            }));
        }
    }

    /// Wall-clock time reached `ctx.now`: held late panes that are due go out,
    /// and a key silent for `idle_timeout` fires everything it holds and is
    /// reported idle (once per silence).
    pub(super) fn on_tick(&mut self, key: &Key, ctx: &mut Ctx) {
        for w in &mut self.windows {
            if w.due.is_some_and(|d| d <= ctx.now) {
                w.emit(key, false, ctx.out);
            }
        }
        let Some(idle) = ctx.cfg.idle_timeout_ms else {
            return;
        };
        let deadline = self.last_arrival.saturating_add(idle);
        if self.idle || deadline > ctx.now {
            return;
        }
        for w in &mut self.windows {
            if w.dirty {
                w.emit(key, false, ctx.out);
            }
        }
        self.idle = true;
        ctx.out.push(Output::Idle(Idle {
            key: key.clone(),
            last_ts: self.max_ts,
            last_arrival: self.last_arrival,
            deadline,
        }));
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
    /// Emits the window's full result as its next revision.
    fn emit(&mut self, key: &Key, is_final: bool, out: &mut Vec<Output>) {
        out.push(Output::Pane(Pane {
            key: key.clone(),
            start: self.win.start,
            end: self.win.end,
            agg: self.acc.aggregates(),
            revision: self.panes,
            timing: if self.panes == 0 {
                Timing::OnTime
            } else {
                Timing::Late
            },
            is_final,
        }));
        self.panes = self.panes.saturating_add(1);
        self.dirty = false;
        self.due = None;
    }
}
