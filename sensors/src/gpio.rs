//! GPIO input logic, pure: debouncing edge events into state changes, and
//! counting debounced pulses into a rate. Time is a parameter (nanoseconds of
//! a monotonic clock, as the kernel stamps GPIO events), so the Linux backend
//! only moves events and the logic is tested without hardware.

/// A debounced level change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    /// The new level (`true` = active/high).
    pub level: bool,
    /// When the line first reached it (the edge's timestamp), ns.
    pub ts_ns: u64,
}

/// Accepts a level only once it has held for `debounce_ns` without a further
/// edge: a contact that bounces for a few ms produces one change, stamped at
/// its first edge.
///
/// Invariants:
/// - `pending` is `Some((level, since))` only while `level != stable`;
/// - a change is reported at most once, and reported levels alternate.
#[derive(Clone, Debug)]
pub struct Debouncer {
    debounce_ns: u64,
    stable: Option<bool>,
    pending: Option<(bool, u64)>,
}

impl Debouncer {
    /// `initial` is the line's level when watching started, if known.
    pub fn new(debounce_ns: u64, initial: Option<bool>) -> Self {
        Self {
            debounce_ns,
            stable: initial,
            pending: None,
        }
    }

    /// The accepted level.
    pub fn level(&self) -> Option<bool> {
        self.stable
    }

    /// A raw edge: the line is at `level` since `ts_ns`. Returns a change when
    /// the edge proves that the pending level had held long enough.
    pub fn edge(&mut self, level: bool, ts_ns: u64) -> Option<Change> {
        let committed = self.poll(ts_ns);
        if self.stable == Some(level) {
            // Bounced back before the debounce time: nothing happened.
            self.pending = None;
        } else if self.pending.is_none_or(|(l, _)| l != level) {
            self.pending = Some((level, ts_ns));
        }
        if self.debounce_ns == 0 {
            return committed.or_else(|| self.poll(ts_ns));
        }
        committed
    }

    /// Time has passed: commits the pending level if it held for the debounce time.
    pub fn poll(&mut self, now_ns: u64) -> Option<Change> {
        let (level, since) = self.pending?;
        if now_ns.saturating_sub(since) < self.debounce_ns {
            return None;
        }
        self.pending = None;
        self.stable = Some(level);
        Some(Change {
            level,
            ts_ns: since,
        })
    }

    /// When [`Debouncer::poll`] may next commit, if a level is pending.
    pub fn deadline(&self) -> Option<u64> {
        self.pending
            .map(|(_, since)| since.saturating_add(self.debounce_ns))
    }
}

/// Counts pulses into a rate per fixed interval: pulses × `scale` per second
/// (e.g. `scale` = litres per pulse gives litres per second).
///
/// Invariants: `window_start` advances by exactly `interval_ns`; every
/// pulse is counted in exactly one interval; an interval without pulses
/// reports 0 (a still anemometer is a reading, not silence).
#[derive(Clone, Debug)]
pub struct PulseRate {
    interval_ns: u64,
    scale: f64,
    window_start: u64,
    count: u64,
}

/// One interval's rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// The end of the interval, ns.
    pub end_ns: u64,
    /// Pulses in the interval.
    pub pulses: u64,
    /// `pulses × scale / interval in seconds`.
    pub per_second: f64,
}

impl PulseRate {
    /// Intervals of `interval_ns` (must be > 0) starting at `start_ns`.
    pub fn new(interval_ns: u64, scale: f64, start_ns: u64) -> Self {
        Self {
            interval_ns: interval_ns.max(1),
            scale,
            window_start: start_ns,
            count: 0,
        }
    }

    /// A pulse at `ts_ns`. Call [`PulseRate::poll`] first with `ts_ns` so that
    /// a pulse after the interval's end counts in the next interval.
    pub fn pulse(&mut self, _ts_ns: u64) {
        self.count += 1;
    }

    /// The next finished interval at `now_ns`, if any; call until `None`.
    pub fn poll(&mut self, now_ns: u64) -> Option<Rate> {
        let end = self.window_start.saturating_add(self.interval_ns);
        if now_ns < end {
            return None;
        }
        let pulses = core::mem::take(&mut self.count);
        self.window_start = end;
        Some(Rate {
            end_ns: end,
            pulses,
            per_second: pulses as f64 * self.scale * 1e9 / self.interval_ns as f64,
        })
    }

    /// The end of the current interval.
    pub fn deadline(&self) -> u64 {
        self.window_start.saturating_add(self.interval_ns)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_bouncing_contact_gives_one_change_stamped_at_its_first_edge() {
        let mut d = Debouncer::new(10 * MS, Some(false));
        assert_eq!(d.edge(true, 100 * MS), None);
        assert_eq!(d.edge(false, 101 * MS), None);
        assert_eq!(d.edge(true, 103 * MS), None);
        assert_eq!(d.poll(112 * MS), None);
        assert_eq!(
            d.poll(113 * MS),
            Some(Change {
                level: true,
                ts_ns: 103 * MS
            })
        );
        assert_eq!(d.poll(200 * MS), None);
        assert_eq!(d.level(), Some(true));
    }

    #[test]
    fn a_glitch_shorter_than_the_debounce_time_is_ignored() {
        let mut d = Debouncer::new(10 * MS, Some(false));
        assert_eq!(d.edge(true, 100 * MS), None);
        assert_eq!(d.edge(false, 105 * MS), None);
        assert_eq!(d.poll(1000 * MS), None);
        assert_eq!(d.level(), Some(false));
    }

    #[test]
    fn an_edge_after_a_held_level_commits_that_level_first() {
        let mut d = Debouncer::new(10 * MS, Some(false));
        d.edge(true, 100 * MS);
        let c = d.edge(false, 150 * MS);
        assert_eq!(
            c,
            Some(Change {
                level: true,
                ts_ns: 100 * MS
            })
        );
        assert_eq!(d.deadline(), Some(160 * MS));
    }

    #[test]
    fn without_debounce_every_edge_is_a_change() {
        let mut d = Debouncer::new(0, None);
        assert_eq!(d.edge(true, 1).map(|c| c.level), Some(true));
        assert_eq!(d.edge(false, 2).map(|c| c.level), Some(false));
        assert_eq!(d.edge(false, 3), None);
    }

    #[test]
    fn pulses_become_a_rate_per_interval_and_an_idle_interval_reads_zero() {
        let s = 1_000 * MS;
        let mut r = PulseRate::new(10 * s, 0.5, 0);
        for i in 0..20 {
            let ts = i * s / 2;
            assert_eq!(r.poll(ts), None);
            r.pulse(ts);
        }
        let first = r.poll(10 * s).unwrap();
        assert_eq!((first.end_ns, first.pulses), (10 * s, 20));
        assert_eq!(first.per_second, 1.0);
        assert_eq!(r.poll(10 * s), None);
        let idle = r.poll(25 * s).unwrap();
        assert_eq!(
            (idle.end_ns, idle.pulses, idle.per_second),
            (20 * s, 0, 0.0)
        );
        assert_eq!(r.poll(25 * s), None);
        assert_eq!(r.deadline(), 30 * s);
    }
}
