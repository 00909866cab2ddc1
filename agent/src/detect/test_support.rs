//! Builders shared by the detector tests.

#![allow(clippy::unwrap_used)]

use super::{Alert, DetectorKind, DetectorSpec, Detectors, Glob, Severity};
use crate::engine::{Aggregates, Pane, Timing};
use crate::reading::{Key, Reading, TimestampMs, TsSource};

pub(super) fn reading(sensor: &str, metric: &str, value: f64, ts: TimestampMs) -> Reading {
    Reading::new(Key::new(sensor, metric), value, ts, TsSource::Event).unwrap()
}

pub(super) fn pane(sensor: &str, metric: &str, mean: f64, end: TimestampMs, revision: u32) -> Pane {
    Pane {
        key: Key::new(sensor, metric),
        start: end - 1000,
        end,
        agg: Aggregates {
            count: 10,
            sum: mean * 10.0,
            min: mean,
            max: mean,
            mean,
            stddev: 0.0,
            first: mean,
            last: mean,
            p50: None,
            p90: None,
            p99: None,
        },
        revision,
        timing: if revision == 0 {
            Timing::OnTime
        } else {
            Timing::Late
        },
        is_final: false,
    }
}

pub(super) fn threshold_spec(
    name: &str,
    high: Option<f64>,
    low: Option<f64>,
    hysteresis: f64,
    clear_after_ms: i64,
) -> DetectorSpec {
    DetectorSpec {
        name: name.into(),
        sensor: Glob::new("*"),
        metric: Glob::new("*"),
        severity: Severity::Warning,
        kind: DetectorKind::Threshold {
            high,
            low,
            hysteresis,
            clear_after_ms,
        },
    }
}

pub(super) fn zscore_spec(warmup: u32, clear_after: u32) -> DetectorSpec {
    DetectorSpec {
        name: "spike".into(),
        sensor: Glob::new("*"),
        metric: Glob::new("*"),
        severity: Severity::Critical,
        kind: DetectorKind::ZScore {
            alpha: 0.2,
            threshold: 3.0,
            hysteresis: 1.0,
            warmup,
            clear_after,
            min_stddev: 0.1,
        },
    }
}

/// "too-hot": above 35 raises, back to <= 34 clears at once.
pub(super) fn too_hot(clear_after_ms: i64) -> Detectors {
    Detectors::new(
        vec![threshold_spec(
            "too-hot",
            Some(35.0),
            None,
            1.0,
            clear_after_ms,
        )],
        100,
    )
}

pub(super) fn feed(d: &mut Detectors, readings: &[(f64, TimestampMs)]) -> Vec<Alert> {
    let mut out = Vec::new();
    for &(v, ts) in readings {
        d.on_reading(&reading("greenhouse", "temperature", v, ts), &mut out);
    }
    out
}

pub(super) fn feed_panes(d: &mut Detectors, means: &[f64], first_end: TimestampMs) -> Vec<Alert> {
    let mut out = Vec::new();
    for (i, &m) in means.iter().enumerate() {
        d.on_pane(
            &pane(
                "greenhouse",
                "temperature",
                m,
                first_end + 1000 * i as i64,
                0,
            ),
            &mut out,
        );
    }
    out
}

/// Ten windows around 10 with a little noise: a baseline of mean ~10, stddev ~0.5.
pub(super) const CALM: [f64; 10] = [10.0, 10.5, 9.5, 10.2, 9.8, 10.4, 9.6, 10.1, 9.9, 10.0];

pub(super) fn silence_spec(name: &str) -> DetectorSpec {
    DetectorSpec {
        name: name.into(),
        sensor: Glob::new("*"),
        metric: Glob::new("*"),
        severity: Severity::Warning,
        kind: DetectorKind::Silence,
    }
}

/// Deterministic noise, roughly normal with stddev 1 (sum of 12 uniforms - 6).
pub(super) struct Noise(pub(super) u64);
impl Noise {
    pub(super) fn next(&mut self) -> f64 {
        let mut s = 0.0;
        for _ in 0..12 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            s += (self.0 >> 11) as f64 / (1u64 << 53) as f64;
        }
        s - 6.0
    }
}
