//! Fixed messages of every kind, shared by the JSON and postcard tests: the
//! golden bytes in those tests are what these produce.

use crate::detect::{Alert, AlertState, Severity};
use crate::engine::{Aggregates, LateReading, Pane, Timing};
use crate::reading::{Key, Reading, TsSource};

use super::DeadLetter;

/// A late revision of a one-minute window, with or without quantiles.
pub(crate) fn pane(quantiles: bool) -> Pane {
    Pane {
        key: Key::new("gh", "temp"),
        start: 60_000,
        end: 120_000,
        agg: Aggregates {
            count: 3,
            sum: 63.5,
            min: 20.25,
            max: 22.0,
            mean: 21.166666666666668,
            stddev: 0.7168604389202189,
            first: 21.25,
            last: 20.25,
            p50: quantiles.then_some(21.25),
            p90: quantiles.then_some(22.0),
            p99: quantiles.then_some(22.0),
        },
        revision: 1,
        timing: Timing::Late,
        is_final: false,
    }
}

/// A raised z-score alert (with a baseline) or a cleared threshold alert (without).
pub(crate) fn alert(raised: bool) -> Alert {
    Alert {
        id: "gh/temp/too-hot/90000".into(),
        detector: "too-hot".into(),
        kind: if raised { "zscore" } else { "threshold" },
        key: Key::new("gh", "temp"),
        state: if raised {
            AlertState::Raised
        } else {
            AlertState::Cleared
        },
        severity: Severity::Critical,
        value: 41.5,
        baseline: raised.then_some(20.125),
        threshold: 35.0,
        reason: "value 41.5 above high 35".into(),
        ts: 95_000,
        raised_ts: 90_000,
    }
}

/// A reading that missed its window by 1.5 s.
pub(crate) fn late() -> LateReading {
    LateReading {
        reading: Reading {
            key: Key::new("gh", "temp"),
            value: -3.5,
            ts: 10_000,
            ts_source: TsSource::Arrival,
        },
        watermark: 200_000,
        late_by_ms: 1_500,
    }
}

/// A payload that was not a number.
pub(crate) fn dead_letter() -> DeadLetter {
    DeadLetter {
        source: "sensors/gh/temp".into(),
        reason: "not_a_number",
        detail: "\"warm\" is not a number".into(),
        payload: "warm".into(),
        received_at: 123_456,
    }
}
