//! What the engine emits: window panes, late readings and rejections.

use crate::reading::{Key, Reading, TimestampMs};

/// Whether a pane is the window's first firing or an update after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Timing {
    /// Revision 0: fired when the watermark reached the window's end.
    OnTime,
    /// Revision n+1: a reading arrived within the allowed lateness and updated it.
    Late,
}

/// The aggregates of one window. Always the full result (accumulating), never a delta.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Aggregates {
    /// Number of readings.
    pub count: u64,
    /// Sum of values; infinite (with the sign of the sum) only when the sum
    /// lies beyond the largest double, about 1.8e308: JSON writes that as
    /// `null`. Every other aggregate is always finite.
    pub sum: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Population standard deviation (Welford's algorithm: numerically stable).
    pub stddev: f64,
    /// Value of the reading with the smallest event time (ties: the first to arrive).
    pub first: f64,
    /// Value of the reading with the largest event time (ties: the last to arrive).
    pub last: f64,
    /// Median estimate from the window's quantile sketch (`[engine] quantiles = true`;
    /// otherwise absent). Relative error bound: see the `sketch` module and `docs/time.md`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50: Option<f64>,
    /// 90th percentile estimate, as `p50`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p90: Option<f64>,
    /// 99th percentile estimate, as `p50`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99: Option<f64>,
}

/// One firing of one window of one key.
#[derive(Clone, Debug, PartialEq)]
pub struct Pane {
    /// `(sensor, metric)`.
    pub key: Key,
    /// Window start, inclusive.
    pub start: TimestampMs,
    /// Window end, exclusive.
    pub end: TimestampMs,
    /// The full result so far.
    pub agg: Aggregates,
    /// 0 for the on-time pane, n+1 for each late update.
    pub revision: u32,
    /// On time or late.
    pub timing: Timing,
    /// False when later revisions may still follow (the watermark has not yet
    /// passed `end + allowed_lateness`).
    pub is_final: bool,
}

/// A reading that arrived after every window it belongs to was closed for good.
#[derive(Clone, Debug, PartialEq)]
pub struct LateReading {
    /// The reading itself, unchanged.
    pub reading: Reading,
    /// The key's watermark when it arrived.
    pub watermark: TimestampMs,
    /// How far past the last moment it could have been accepted, in ms:
    /// `watermark - (window_end + allowed_lateness)`; zero means "just missed it".
    pub late_by_ms: i64,
}

/// Why the engine refused a reading without windowing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// A new key beyond `max_keys`.
    KeyLimit,
    /// A new window beyond `max_windows_per_key` for this key.
    WindowLimit,
    /// Stamped more than `max_future_skew` ahead of the wall clock (quarantine).
    FutureSkew,
    /// Stamped more than `max_backfill` behind the wall clock.
    TooOld,
    /// A value beyond ±[`MAX_ABS_VALUE`](super::MAX_ABS_VALUE): refused so that
    /// every aggregate of every window stays a finite number.
    OutOfRange,
}

impl RejectReason {
    /// Stable, lowercase name used in counters and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::KeyLimit => "key_limit",
            Self::WindowLimit => "window_limit",
            Self::FutureSkew => "future_skew",
            Self::TooOld => "too_old",
            Self::OutOfRange => "out_of_range",
        }
    }
}

/// A key that received no reading for `idle_timeout` of wall-clock time: its
/// windows were closed (fired) by the wall clock. Said once per silence; the
/// key's next reading ends the silence.
#[derive(Clone, Debug, PartialEq)]
pub struct Idle {
    /// The silent key.
    pub key: Key,
    /// Event time of its latest reading.
    pub last_ts: TimestampMs,
    /// Wall-clock time its latest reading arrived.
    pub last_arrival: TimestampMs,
    /// `last_arrival + idle_timeout`: the wall-clock moment the silence counted.
    /// Deterministic, whenever the engine happened to notice it.
    pub deadline: TimestampMs,
}

/// Everything the engine can say about one input.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// A window fired (on time) or re-fired (late).
    Pane(Pane),
    /// A reading too late for all its windows.
    Late(LateReading),
    /// A reading refused, with the reason.
    Rejected {
        /// The refused reading.
        reading: Reading,
        /// Why.
        reason: RejectReason,
    },
    /// A key went silent (see [`Idle`]); any panes it caused come before it.
    Idle(Idle),
}
