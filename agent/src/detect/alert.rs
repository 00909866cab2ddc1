//! Alerts: what a detector says when a condition starts and when it ends.

use crate::reading::{Key, TimestampMs};

use super::spec::{DetectorSpec, Severity};

/// Which end of an episode an alert marks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The condition started.
    Raised,
    /// The condition stayed normal long enough to end the episode.
    Cleared,
}

impl AlertState {
    /// Stable, lowercase name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Raised => "raised",
            Self::Cleared => "cleared",
        }
    }
}

/// One transition of one episode of one detector on one key.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    /// Stable for the whole lifecycle: "{sensor}/{metric}/{detector name}/{raised_ts}".
    /// The raised and the cleared message of one episode carry the same id.
    pub id: String,
    /// Spec name.
    pub detector: String,
    /// `"threshold"` or `"zscore"`.
    pub kind: &'static str,
    /// The key the episode is about.
    pub key: Key,
    /// Raised or cleared.
    pub state: AlertState,
    /// From the spec.
    pub severity: Severity,
    /// The reading / pane mean that caused this transition.
    pub value: f64,
    /// Exponentially weighted mean for zscore (the one `value` was judged against);
    /// `None` for threshold.
    pub baseline: Option<f64>,
    /// The limit crossed when the episode was raised (high or low, or the z threshold);
    /// a cleared alert repeats it.
    pub threshold: f64,
    /// For humans, e.g. "value 41.3 above high 35 (hysteresis 1)".
    pub reason: String,
    /// Event time of the transition (reading ts / window end).
    pub ts: TimestampMs,
    /// Event time the episode was raised (see [`next_raised_ts`] for the one exception).
    pub raised_ts: TimestampMs,
}

/// The id every message of an episode carries.
pub(super) fn alert_id(key: &Key, detector: &str, raised_ts: TimestampMs) -> String {
    format!("{}/{}/{}/{}", key.sensor, key.metric, detector, raised_ts)
}

/// The `raised_ts` of a new episode raised at event time `ts`.
///
/// Ids must differ between episodes, or consumers that deduplicate by id would
/// drop a real alert. Two episodes of one (detector, key) can start at the same
/// event time (equal timestamps, or an out-of-order reading older than the last
/// raise), so `raised_ts` is kept strictly increasing per (detector, key): at
/// worst it is moved 1 ms past the previous episode's. `Alert::ts` always stays
/// the true event time.
pub(super) fn next_raised_ts(ts: TimestampMs, previous: Option<TimestampMs>) -> TimestampMs {
    match previous {
        Some(prev) if ts <= prev => prev.saturating_add(1),
        _ => ts,
    }
}

/// What differs between detectors when an episode starts.
pub(super) struct Raise {
    /// The value behind the transition.
    pub value: f64,
    /// The baseline it was judged against, if the detector has one.
    pub baseline: Option<f64>,
    /// The limit crossed.
    pub threshold: f64,
    /// A sentence for humans.
    pub reason: String,
}

/// Starts an episode of `spec` for `key` at event time `ts`: the raised alert,
/// with its id, and `last_raised` advanced (see [`next_raised_ts`]).
pub(super) fn raise(
    spec: &DetectorSpec,
    key: &Key,
    ts: TimestampMs,
    last_raised: &mut Option<TimestampMs>,
    r: Raise,
) -> Alert {
    let raised_ts = next_raised_ts(ts, *last_raised);
    *last_raised = Some(raised_ts);
    Alert {
        id: alert_id(key, &spec.name, raised_ts),
        detector: spec.name.clone(),
        kind: spec.kind.name(),
        key: key.clone(),
        state: AlertState::Raised,
        severity: spec.severity,
        value: r.value,
        baseline: r.baseline,
        threshold: r.threshold,
        reason: r.reason,
        ts,
        raised_ts,
    }
}

/// Ends an episode: turns the stored raised alert into its cleared message.
pub(super) fn clear(
    mut raised: Alert,
    value: f64,
    baseline: Option<f64>,
    reason: String,
    ts: TimestampMs,
) -> Alert {
    raised.state = AlertState::Cleared;
    raised.value = value;
    raised.baseline = baseline;
    raised.reason = reason;
    raised.ts = ts;
    raised
}

/// Serde for a detector's stored alert (checkpoints). `kind` is a static name
/// that cannot be deserialized; it is written empty and the restoring
/// [`super::Detectors::restore`] sets it from the spec.
pub(super) mod boxed {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{Alert, AlertState, Severity};
    use crate::reading::{Key, TimestampMs};

    #[derive(Serialize, Deserialize)]
    struct Stored {
        id: String,
        detector: String,
        sensor: String,
        metric: String,
        state: AlertState,
        severity: Severity,
        value: f64,
        baseline: Option<f64>,
        threshold: f64,
        reason: String,
        ts: TimestampMs,
        raised_ts: TimestampMs,
    }

    pub fn serialize<S: Serializer>(a: &Option<Box<Alert>>, s: S) -> Result<S::Ok, S::Error> {
        a.as_deref()
            .map(|a| Stored {
                id: a.id.clone(),
                detector: a.detector.clone(),
                sensor: a.key.sensor.to_string(),
                metric: a.key.metric.to_string(),
                state: a.state,
                severity: a.severity,
                value: a.value,
                baseline: a.baseline,
                threshold: a.threshold,
                reason: a.reason.clone(),
                ts: a.ts,
                raised_ts: a.raised_ts,
            })
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<Alert>>, D::Error> {
        let stored = Option::<Stored>::deserialize(d)?;
        Ok(stored.map(|a| {
            Box::new(Alert {
                id: a.id,
                detector: a.detector,
                kind: "",
                key: Key::new(a.sensor, a.metric),
                state: a.state,
                severity: a.severity,
                value: a.value,
                baseline: a.baseline,
                threshold: a.threshold,
                reason: a.reason,
                ts: a.ts,
                raised_ts: a.raised_ts,
            })
        }))
    }
}

/// A number as a person reads it in a reason: four significant digits (all of the
/// integer part), no trailing zeros, scientific notation beyond 1e15 or below 1e-6:
/// `36.24050421450998` is "36.24", `0.000123456` "0.0001235", `1234567.8` "1234568".
/// The alert's `value`, `baseline` and `threshold` fields keep the exact numbers.
pub(super) fn num(x: f64) -> String {
    fn trim(s: &str) -> &str {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.')
        } else {
            s
        }
    }
    if !x.is_finite() || x == 0.0 {
        return if x == 0.0 { "0".into() } else { x.to_string() };
    }
    let mag = x.abs().log10().floor();
    if !(-6.0..15.0).contains(&mag) {
        let s = format!("{x:.3e}");
        return match s.split_once('e') {
            Some((m, e)) => format!("{}e{e}", trim(m)),
            None => s,
        };
    }
    // mag is in [-6, 15) here, so the cast is exact.
    let decimals = (3.0 - mag).max(0.0) as usize;
    let s = format!("{x:.decimals$}");
    match trim(&s) {
        "-0" => "0".into(),
        t => t.to_owned(),
    }
}

/// "1 window", "2 windows": the CLI's own wording helper.
pub(super) use crate::cli::human::plural;

#[cfg(test)]
mod num_tests {
    use super::{num, plural};

    #[test]
    fn reasons_show_four_significant_digits_and_no_noise() {
        assert_eq!(num(36.24050421450998), "36.24");
        assert_eq!(num(20.5), "20.5");
        assert_eq!(num(21.0), "21");
        assert_eq!(num(-3.25159), "-3.252");
        assert_eq!(num(0.000123456), "0.0001235");
        assert_eq!(num(1234567.8), "1234568");
        assert_eq!(num(1e288), "1e288");
        assert_eq!(num(-2.5e-9), "-2.5e-9");
        assert_eq!(num(0.0), "0");
        assert_eq!(num(-0.00001), "-0.00001");
        assert_eq!(num(f64::NAN), "NaN");
        assert_eq!(plural(1, "window", "windows"), "1 window");
        assert_eq!(plural(3, "window", "windows"), "3 windows");
    }
}
