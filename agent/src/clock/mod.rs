//! Weir's own clock: when the system clock can be trusted, and the time every
//! reading Weir stamps itself and every timer is measured on.
//!
//! A Raspberry Pi has no real-time clock: it boots with the time saved at the
//! last shutdown (fake-hwclock) or 1970, and NTP corrects it minutes later, or
//! never on an isolated site. So Weir keeps one *timeline*: the monotonic clock
//! plus an offset. Invariants:
//! - the timeline never steps, except once, at the first synchronisation of
//!   the system clock since start (the *correction*), by `wall - timeline`;
//!   whoever holds times on it (the engine's idle and late-pane timers) shifts
//!   them by the same amount (see [`Observed::jump`]), so no timer fires, or
//!   is postponed, because of it;
//! - before that synchronisation a stamp is *provisional* ([`Stamp::synced`]
//!   is false): the pipeline holds the reading, then adds the correction
//!   (exact: both are on the monotonic clock) and marks it
//!   [`TsSource::Corrected`];
//! - after it, the timeline is the system clock as it was at synchronisation,
//!   carried on by the monotonic clock: a later step of the system clock
//!   (someone's `date -s`, a bad time server) is reported, not followed.
//!
//! The pure part is [`Tracker`]; [`Clock`] reads the clocks and the sync state
//! ([`SyncProbe`]) and is shared by every source (one per process, [`global`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

mod hold;
pub use hold::{Admitted, Hold, HoldChanges, HoldMark, boot_id};

use crate::reading::{TimestampMs, TsSource};

/// The environment variable naming a clock file that replaces the system
/// clock and its sync state, for end-to-end tests: one line `OFFSET SYNCED`,
/// the system clock plus `OFFSET` ms is the wall clock, `SYNCED` is 1 or 0.
/// A missing or unreadable file reads as "not synchronised, offset 0".
pub const TEST_CLOCK_ENV: &str = "WEIR_TEST_CLOCK";

/// The file systemd-timesyncd creates at its first synchronisation after boot
/// (`/run` is a tmpfs: it is gone after a power cut).
pub const TIMESYNCD_SYNCHRONIZED: &str = "/run/systemd/timesync/synchronized";

/// A system-clock step smaller than this after the correction is ignored
/// (NTP's slewing keeps the two clocks together; this is only jitter).
pub const STEP_TOLERANCE_MS: i64 = 1_000;

/// Readings stamped before the system clock's first synchronisation that the
/// pipeline holds for the correction ([`Hold`]; about 100 bytes each: ~10 MB).
/// When full, the oldest is dead-lettered (`clock_unsynced`): published with
/// its value and counted, never silently dropped.
pub const MAX_HELD: usize = 100_000;

/// How often the sync state is probed at most (a file's existence).
const PROBE_EVERY: Duration = Duration::from_millis(200);

/// One look at the clocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Monotonic milliseconds (since any fixed origin).
    pub mono_ms: i64,
    /// The system clock, ms since the Unix epoch.
    pub wall_ms: TimestampMs,
    /// Whether the system clock is synchronised now.
    pub synced: bool,
}

/// A time Weir stamped a reading with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// On the timeline.
    pub ms: TimestampMs,
    /// False before the first synchronisation: `ms` is provisional.
    pub synced: bool,
}

impl Stamp {
    /// A stamp from a clock known to be right (simulated clocks, tests).
    pub fn trusted(ms: TimestampMs) -> Self {
        Self { ms, synced: true }
    }

    /// `source` when the stamp is good; [`TsSource::Unsynced`] when it is provisional.
    pub fn source(self, source: TsSource) -> TsSource {
        if self.synced {
            source
        } else {
            TsSource::Unsynced
        }
    }

    /// The same clock `ms` earlier (an event the kernel timestamped before now).
    pub fn minus(self, ms: i64) -> Self {
        Self {
            ms: self.ms.saturating_sub(ms),
            ..self
        }
    }
}

/// What the timeline did at one [`Tracker::observe`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The timeline now.
    pub now: TimestampMs,
    /// Whether the timeline is the synchronised time (it may quarantine).
    pub trusted: bool,
    /// How far the timeline moved beyond the monotonic clock (the correction,
    /// once); timers held on it move by as much.
    pub jump: i64,
}

/// The pure timeline: see the module's invariants.
#[derive(Clone, Debug, PartialEq)]
pub struct Tracker {
    /// `timeline - mono` before the correction: the system clock at start.
    provisional: i64,
    /// `timeline - mono` since the correction.
    offset: Option<i64>,
    /// Whether the latest sample said synchronised.
    synced_now: bool,
    /// System clock minus timeline at the latest sample.
    wall_minus_timeline: i64,
    /// Steps of the system clock beyond the tolerance seen since the correction.
    steps: u64,
}

impl Tracker {
    /// A timeline that starts at `first.wall_ms`, then observes `first`.
    pub fn new(first: Sample) -> Self {
        let mut t = Self {
            provisional: first.wall_ms.saturating_sub(first.mono_ms),
            offset: None,
            synced_now: false,
            wall_minus_timeline: 0,
            steps: 0,
        };
        t.observe(first);
        t
    }

    fn timeline_offset(&self) -> i64 {
        self.offset.unwrap_or(self.provisional)
    }

    /// The timeline at monotonic time `mono_ms`.
    pub fn now(&self, mono_ms: i64) -> TimestampMs {
        mono_ms.saturating_add(self.timeline_offset())
    }

    /// A reading's stamp at monotonic time `mono_ms`.
    pub fn stamp(&self, mono_ms: i64) -> Stamp {
        Stamp {
            ms: self.now(mono_ms),
            synced: self.offset.is_some(),
        }
    }

    /// What a provisional stamp needs added: `None` until the correction.
    pub fn correction(&self) -> Option<i64> {
        self.offset.map(|o| o.saturating_sub(self.provisional))
    }

    /// Takes in one sample: the first synchronised one is the correction.
    pub fn observe(&mut self, s: Sample) -> Observed {
        self.synced_now = s.synced;
        let want = s.wall_ms.saturating_sub(s.mono_ms);
        let before = self.timeline_offset();
        let mut jump = 0;
        match self.offset {
            None if s.synced => {
                self.offset = Some(want);
                jump = want.saturating_sub(before);
            }
            Some(o) => {
                let off = want.saturating_sub(o);
                let was_off = self.wall_minus_timeline.abs() > STEP_TOLERANCE_MS;
                if off.abs() > STEP_TOLERANCE_MS && !was_off {
                    self.steps += 1;
                }
            }
            None => {}
        }
        self.wall_minus_timeline = want.saturating_sub(self.timeline_offset());
        Observed {
            now: self.now(s.mono_ms),
            trusted: self.offset.is_some(),
            jump,
        }
    }

    /// Status fields: see `docs/time.md`.
    fn status(&self) -> Value {
        json!({
            "synchronised": self.synced_now,
            "trusted": self.offset.is_some(),
            "correction_ms": self.correction(),
            // Within the tolerance it is jitter: 0, so that it means "no step".
            "system_minus_weir_ms": if self.wall_minus_timeline.abs() > STEP_TOLERANCE_MS {
                self.wall_minus_timeline
            } else {
                0
            },
            "steps_ignored": self.steps,
        })
    }
}

/// Where the sync state comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncProbe {
    /// The file exists once the system clock has been synchronised
    /// (systemd-timesyncd's [`TIMESYNCD_SYNCHRONIZED`]). When its directory
    /// does not exist either, no timesyncd runs: the state is unknown, and the
    /// system clock is trusted (as it was before Weir checked).
    File(PathBuf),
    /// The test clock file ([`TEST_CLOCK_ENV`]): offset and sync state.
    Test(PathBuf),
}

impl SyncProbe {
    /// The probe for this process: the test clock when [`TEST_CLOCK_ENV`] is set.
    pub fn from_env() -> Self {
        match std::env::var_os(TEST_CLOCK_ENV) {
            Some(p) if !p.is_empty() => SyncProbe::Test(PathBuf::from(p)),
            _ => SyncProbe::File(PathBuf::from(TIMESYNCD_SYNCHRONIZED)),
        }
    }

    /// `(offset to add to the system clock, synchronised)`; `None`: unknown.
    fn read(&self) -> (i64, Option<bool>) {
        match self {
            SyncProbe::File(p) if p.exists() => (0, Some(true)),
            SyncProbe::File(p) => (0, p.parent().filter(|d| d.is_dir()).map(|_| false)),
            SyncProbe::Test(p) => {
                let (offset, synced) = read_test_clock(p);
                (offset, Some(synced))
            }
        }
    }

    /// What the status calls the source of the sync state.
    fn name(&self, known: bool) -> &'static str {
        match self {
            SyncProbe::Test(_) => "test",
            SyncProbe::File(_) if known => "timesyncd",
            SyncProbe::File(_) => "none",
        }
    }
}

/// Parses a test clock file; anything unreadable is "offset 0, not synchronised".
pub fn parse_test_clock(text: &str) -> (i64, bool) {
    let mut words = text.split_whitespace();
    let offset = words.next().and_then(|w| w.parse().ok());
    let synced = words.next().map(|w| w == "1");
    match (offset, synced) {
        (Some(o), Some(s)) => (o, s),
        _ => (0, false),
    }
}

fn read_test_clock(p: &Path) -> (i64, bool) {
    std::fs::read_to_string(p).map_or((0, false), |t| parse_test_clock(&t))
}

fn system_ms() -> TimestampMs {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The process's clock: the [`Tracker`] fed from the real clocks.
#[derive(Debug)]
pub struct Clock {
    probe: SyncProbe,
    origin: Instant,
    inner: Mutex<Inner>,
    /// Readings the pipeline holds for the correction (a gauge for status).
    pub held: AtomicU64,
    /// The hold of a pipeline that stopped for a reload, for the next one.
    parked: Mutex<Option<Hold>>,
}

#[derive(Debug)]
struct Inner {
    tracker: Tracker,
    probed_at: Option<Instant>,
    probed: (i64, Option<bool>),
}

impl Clock {
    /// A clock probing `probe`, observed once now.
    pub fn new(probe: SyncProbe) -> Self {
        let origin = Instant::now();
        let probed = probe.read();
        let first = Sample {
            mono_ms: 0,
            wall_ms: system_ms().saturating_add(probed.0),
            synced: probed.1.unwrap_or(true),
        };
        Self {
            probe,
            origin,
            inner: Mutex::new(Inner {
                tracker: Tracker::new(first),
                probed_at: Some(origin),
                probed,
            }),
            held: AtomicU64::new(0),
            parked: Mutex::new(None),
        }
    }

    /// The hold parked by the pipeline a reload stopped (same timeline, same
    /// correction), if any.
    pub fn take_parked(&self) -> Option<Hold> {
        self.parked.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Keeps a stopping pipeline's hold for the next one (a reload).
    pub fn park(&self, hold: Hold) {
        *self.parked.lock().unwrap_or_else(|e| e.into_inner()) = Some(hold);
    }

    fn mono_ms(&self) -> i64 {
        i64::try_from(self.origin.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The timeline now (no probe: cheap).
    pub fn now_ms(&self) -> TimestampMs {
        let mono = self.mono_ms();
        self.lock().tracker.now(mono)
    }

    /// A stamp for a reading taken now (no probe: cheap).
    pub fn stamp(&self) -> Stamp {
        let mono = self.mono_ms();
        self.lock().tracker.stamp(mono)
    }

    /// See [`Tracker::correction`].
    pub fn correction(&self) -> Option<i64> {
        self.lock().tracker.correction()
    }

    /// Reads the system clock and (at most every 200 ms) the sync state, and
    /// feeds them to the tracker. The engine task calls it before it uses the time.
    pub fn observe(&self) -> Observed {
        let mono = self.mono_ms();
        let wall = system_ms();
        let now = Instant::now();
        let mut g = self.lock();
        if g.probed_at
            .is_none_or(|t| now.duration_since(t) >= PROBE_EVERY)
        {
            g.probed = self.probe.read();
            g.probed_at = Some(now);
        }
        let (offset, synced) = g.probed;
        let before = g.tracker.clone();
        let o = g.tracker.observe(Sample {
            mono_ms: mono,
            wall_ms: wall.saturating_add(offset),
            synced: synced.unwrap_or(true),
        });
        let after = &g.tracker;
        if o.jump != 0 {
            tracing::warn!(
                correction_ms = o.jump,
                "system clock synchronised: readings stamped before now are corrected by this much"
            );
        } else if after.steps > before.steps {
            tracing::warn!(
                system_minus_weir_ms = after.wall_minus_timeline,
                "the system clock stepped while synchronised; Weir keeps the time it synchronised to (restart to take the new one)"
            );
        } else if before.synced_now != after.synced_now {
            tracing::info!(
                synchronised = after.synced_now,
                "system clock sync state changed"
            );
        }
        o
    }

    /// The `clock` section of the status document.
    pub fn status(&self) -> Value {
        let g = self.lock();
        let mut v = g.tracker.status();
        let known = g.probed.1.is_some();
        if !known {
            v["synchronised"] = Value::Null;
        }
        v["sync_source"] = json!(self.probe.name(known));
        v["held_readings"] = json!(self.held.load(Relaxed));
        v
    }
}

/// The process's clock, created at first use from [`SyncProbe::from_env`].
pub fn global() -> &'static Clock {
    static CLOCK: OnceLock<Clock> = OnceLock::new();
    CLOCK.get_or_init(|| {
        let probe = SyncProbe::from_env();
        if let SyncProbe::Test(p) = &probe {
            tracing::warn!(file = %p.display(), "the clock is under test control ({TEST_CLOCK_ENV})");
        }
        Clock::new(probe)
    })
}

/// A stamp for a reading Weir takes now (see [`Clock::stamp`]).
pub fn stamp() -> Stamp {
    global().stamp()
}

#[cfg(test)]
mod tests;
