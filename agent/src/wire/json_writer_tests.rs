//! The hand-written JSON (`super::json`) against serde_json's own output for the same message,
//! on strings and floats chosen to be awkward: if serde_json ever formats a float or escapes a
//! character differently, or the writer drifts, these fail.

#![allow(clippy::unwrap_used)]

use serde::Serialize;
use serde_json::json;

use super::VERSION;
use super::body::{
    AlertBody, DeadLetterBody, LateBody, Message, PaneBody, Severity, State, Timing, TsSource,
};
use crate::reading::TimestampMs;

/// The pane's JSON as serde_json wrote it before the writer existed (Weir 0.1's field order).
#[derive(Serialize)]
struct PaneJson<'a> {
    v: u32,
    #[serde(rename = "type")]
    kind: &'static str,
    id: String,
    msg_id: String,
    device: &'a str,
    sensor: &'a str,
    metric: &'a str,
    window_start: TimestampMs,
    window_end: TimestampMs,
    revision: u32,
    timing: &'static str,
    #[serde(rename = "final")]
    is_final: bool,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    mean: f64,
    stddev: f64,
    first: f64,
    last: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    p50: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p90: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p99: Option<f64>,
    emitted_at: TimestampMs,
}

/// serde_json's bytes for `m`: a derived struct for panes, `json!` maps (sorted keys) for the
/// rest, exactly the encoder this writer replaced.
fn serde_reference(m: &Message<'_>) -> Vec<u8> {
    match m {
        Message::Pane(p) => {
            let id = format!(
                "{}/{}/{}/{}-{}",
                p.device, p.sensor, p.metric, p.window_start, p.window_end
            );
            serde_json::to_vec(&PaneJson {
                v: VERSION,
                kind: "pane",
                msg_id: format!("{id}#r{}", p.revision),
                id,
                device: p.device,
                sensor: p.sensor,
                metric: p.metric,
                window_start: p.window_start,
                window_end: p.window_end,
                revision: p.revision,
                timing: if p.timing == Timing::OnTime {
                    "on_time"
                } else {
                    "late"
                },
                is_final: p.is_final,
                count: p.count,
                sum: p.sum,
                min: p.min,
                max: p.max,
                mean: p.mean,
                stddev: p.stddev,
                first: p.first,
                last: p.last,
                p50: p.p50,
                p90: p.p90,
                p99: p.p99,
                emitted_at: p.emitted_at,
            })
            .unwrap()
        }
        Message::Alert(a) => {
            let id = format!("{}/{}", a.device, a.alert_id);
            let state = if a.state == State::Raised {
                "raised"
            } else {
                "cleared"
            };
            serde_json::to_vec(&json!({
                "v": VERSION,
                "type": "alert",
                "msg_id": format!("{id}#{state}"),
                "id": id,
                "device": a.device,
                "sensor": a.sensor,
                "metric": a.metric,
                "detector": a.detector,
                "kind": a.kind,
                "state": state,
                "severity": "warning",
                "value": a.value,
                "baseline": a.baseline,
                "threshold": a.threshold,
                "reason": a.reason,
                "ts": a.ts,
                "raised_ts": a.raised_ts,
                "emitted_at": a.emitted_at,
            }))
            .unwrap()
        }
        Message::Late(l) => serde_json::to_vec(&json!({
            "v": VERSION,
            "type": "late",
            "msg_id": format!("{}/late/{}/{}", l.device, l.boot_id, l.seq),
            "device": l.device,
            "sensor": l.sensor,
            "metric": l.metric,
            "value": l.value,
            "ts": l.ts,
            "ts_source": "corrected",
            "watermark": l.watermark,
            "late_by_ms": l.late_by_ms,
            "emitted_at": l.emitted_at,
        }))
        .unwrap(),
        Message::DeadLetter(d) => serde_json::to_vec(&json!({
            "v": VERSION,
            "type": "deadletter",
            "msg_id": format!("{}/dl/{}/{}", d.device, d.boot_id, d.seq),
            "device": d.device,
            "source": d.source,
            "reason": d.reason,
            "detail": d.detail,
            "payload": d.payload,
            "received_at": d.received_at,
            "emitted_at": d.emitted_at,
        }))
        .unwrap(),
    }
}

const STRINGS: &[&str] = &[
    "",
    "plain",
    "quote \" in",
    "back\\slash",
    "\\\"",
    "ctl \u{0} \u{1} \u{8} \t \n \u{b} \u{c} \r \u{1b} \u{1f} \u{7f}",
    "unicode é 温度 🌡 \u{2028} \u{feff}",
    "/slash/ is not escaped",
];

const FLOATS: &[f64] = &[
    0.0,
    -0.0,
    0.1,
    1.0,
    -3.5,
    1e300,
    -1e-300,
    1e15,
    1e16,
    1e21,
    1.5e-7,
    f64::MIN_POSITIVE,
    5e-324,
    f64::MAX,
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    21.166666666666668,
];

fn assert_same(m: &Message<'_>) {
    let ours = m.to_json();
    let theirs = serde_reference(m);
    assert_eq!(
        String::from_utf8_lossy(&ours),
        String::from_utf8_lossy(&theirs),
        "{m:?}"
    );
}

#[test]
fn the_written_json_is_serde_jsons_byte_for_byte_on_awkward_strings_and_floats() {
    for (i, s) in STRINGS.iter().enumerate() {
        for (j, &f) in FLOATS.iter().enumerate() {
            let g = FLOATS[(j + i + 1) % FLOATS.len()];
            let q = (j % 2 == 0).then_some(g);
            assert_same(&Message::Pane(PaneBody {
                device: s,
                sensor: STRINGS[(i + 1) % STRINGS.len()],
                metric: s,
                window_start: -60_000 + j as i64,
                window_end: i64::MAX - i as i64,
                revision: u32::MAX - j as u32,
                timing: if j % 2 == 0 {
                    Timing::OnTime
                } else {
                    Timing::Late
                },
                is_final: i % 2 == 0,
                count: u64::MAX - j as u64,
                sum: f,
                min: g,
                max: -f,
                mean: f / 3.0,
                stddev: g * 0.1,
                first: f,
                last: g,
                p50: q,
                p90: (j % 3 == 0).then_some(f),
                p99: q,
                emitted_at: i64::MIN + j as i64,
            }));
            assert_same(&Message::Alert(AlertBody {
                device: s,
                alert_id: STRINGS[(i + 2) % STRINGS.len()],
                sensor: s,
                metric: s,
                detector: s,
                kind: s,
                state: if j % 2 == 0 {
                    State::Raised
                } else {
                    State::Cleared
                },
                severity: Severity::Warning,
                value: f,
                baseline: q,
                threshold: g,
                reason: s,
                ts: j as i64,
                raised_ts: -(i as i64),
                emitted_at: 0,
            }));
            assert_same(&Message::Late(LateBody {
                device: s,
                boot_id: STRINGS[(i + 3) % STRINGS.len()],
                seq: j as u64,
                sensor: s,
                metric: s,
                value: f,
                ts: -1,
                ts_source: TsSource::Corrected,
                watermark: i64::MAX,
                late_by_ms: i64::MIN,
                emitted_at: 7,
            }));
            assert_same(&Message::DeadLetter(DeadLetterBody {
                device: s,
                boot_id: s,
                seq: u64::MAX,
                source: s,
                reason: STRINGS[(i + 4) % STRINGS.len()],
                detail: s,
                payload: s,
                received_at: j as i64,
                emitted_at: i as i64,
            }));
        }
    }
}

#[test]
fn a_string_is_plain_exactly_when_no_byte_needs_escaping() {
    for len in 1..=17 {
        for at in 0..len {
            for byte in 0..=0xFFu8 {
                let mut b = vec![b'a'; len];
                b[at] = byte;
                let naive = b.iter().all(|&c| c >= 0x20 && c != b'"' && c != b'\\');
                assert_eq!(super::json::plain(&b), naive, "{len} {at} {byte:#x}");
            }
        }
    }
}
