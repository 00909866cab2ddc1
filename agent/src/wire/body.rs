//! What each upstream message says, apart from how it is encoded.
//!
//! A [`Message`] is built once from the engine's and detectors' values, then encoded as JSON
//! ([`Message::to_json`]) or postcard ([`super::postcard`]). Decoding postcard gives the same
//! [`Message`] back, and its JSON is then byte for byte what the `json` format would have
//! published: there is one JSON writer, so the two cannot drift apart.
//!
//! Fields that JSON spells out but that follow from others (`v`, `type`, the pane's `id` and
//! `msg_id`, the alert's `msg_id`, the diagnostic `msg_id`s) are derived here, so postcard does
//! not carry them. The field order of each body struct IS the postcard layout (`docs/wire.md`):
//! never reorder, insert or remove a field without a new schema version. The enums below are the
//! wire's own, not the engine's, so that reordering an internal enum cannot change the wire.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::VERSION;
use crate::reading::TimestampMs;

/// Message kinds; the value is the postcard kind byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A window pane (`.../agg/<sensor>/<metric>`).
    Pane = 0,
    /// An alert transition (`.../alert/<sensor>/<metric>`).
    Alert = 1,
    /// A reading too late for every window (`.../late`).
    Late = 2,
    /// A payload or reading refused (`.../deadletter`).
    DeadLetter = 3,
    /// Reserved for the status message, which is always JSON (see `docs/wire.md`).
    Status = 4,
}

impl Kind {
    /// The kind with postcard kind byte `b`, if any.
    pub fn from_byte(b: u8) -> Option<Kind> {
        [
            Kind::Pane,
            Kind::Alert,
            Kind::Late,
            Kind::DeadLetter,
            Kind::Status,
        ]
        .into_iter()
        .find(|k| *k as u8 == b)
    }

    /// The JSON `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pane => "pane",
            Kind::Alert => "alert",
            Kind::Late => "late",
            Kind::DeadLetter => "deadletter",
            Kind::Status => "status",
        }
    }
}

/// A pane's timing on the wire (postcard discriminants 0, 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Timing {
    /// `on_time`.
    OnTime,
    /// `late`.
    Late,
}

/// An alert's state on the wire (postcard discriminants 0, 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    /// `raised`.
    Raised,
    /// `cleared`.
    Cleared,
}

/// An alert's severity on the wire (postcard discriminants 0, 1, 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Severity {
    /// `info`.
    Info,
    /// `warning`.
    Warning,
    /// `critical`.
    Critical,
}

/// Where a late reading's timestamp came from (postcard discriminants 0, 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TsSource {
    /// `event`.
    Event,
    /// `arrival`.
    Arrival,
    /// `corrected`.
    Corrected,
    /// `unsynced`.
    Unsynced,
}

impl Timing {
    fn as_str(self) -> &'static str {
        match self {
            Timing::OnTime => "on_time",
            Timing::Late => "late",
        }
    }
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Raised => "raised",
            State::Cleared => "cleared",
        }
    }
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl TsSource {
    fn as_str(self) -> &'static str {
        match self {
            TsSource::Event => "event",
            TsSource::Arrival => "arrival",
            TsSource::Corrected => "corrected",
            TsSource::Unsynced => "unsynced",
        }
    }
}

impl From<crate::engine::Timing> for Timing {
    fn from(t: crate::engine::Timing) -> Self {
        match t {
            crate::engine::Timing::OnTime => Timing::OnTime,
            crate::engine::Timing::Late => Timing::Late,
        }
    }
}

impl From<crate::detect::AlertState> for State {
    fn from(s: crate::detect::AlertState) -> Self {
        match s {
            crate::detect::AlertState::Raised => State::Raised,
            crate::detect::AlertState::Cleared => State::Cleared,
        }
    }
}

impl From<crate::detect::Severity> for Severity {
    fn from(s: crate::detect::Severity) -> Self {
        match s {
            crate::detect::Severity::Info => Severity::Info,
            crate::detect::Severity::Warning => Severity::Warning,
            crate::detect::Severity::Critical => Severity::Critical,
        }
    }
}

impl From<crate::reading::TsSource> for TsSource {
    fn from(s: crate::reading::TsSource) -> Self {
        match s {
            crate::reading::TsSource::Event => TsSource::Event,
            crate::reading::TsSource::Arrival => TsSource::Arrival,
            crate::reading::TsSource::Corrected => TsSource::Corrected,
            crate::reading::TsSource::Unsynced => TsSource::Unsynced,
        }
    }
}

/// A window pane.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // the fields are the JSON fields of the same name, in docs/wire.md
pub struct PaneBody<'a> {
    pub device: &'a str,
    pub sensor: &'a str,
    pub metric: &'a str,
    pub window_start: TimestampMs,
    pub window_end: TimestampMs,
    pub revision: u32,
    pub timing: Timing,
    pub is_final: bool,
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub stddev: f64,
    pub first: f64,
    pub last: f64,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub emitted_at: TimestampMs,
}

/// An alert transition. `alert_id` is the id without the device (`<sensor>/<metric>/
/// <detector>/<raised_ts>`); the JSON `id` is `<device>/<alert_id>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // the fields are the JSON fields of the same name, in docs/wire.md
pub struct AlertBody<'a> {
    pub device: &'a str,
    pub alert_id: &'a str,
    pub sensor: &'a str,
    pub metric: &'a str,
    pub detector: &'a str,
    pub kind: &'a str,
    pub state: State,
    pub severity: Severity,
    pub value: f64,
    pub baseline: Option<f64>,
    pub threshold: f64,
    pub reason: &'a str,
    pub ts: TimestampMs,
    pub raised_ts: TimestampMs,
    pub emitted_at: TimestampMs,
}

/// A late reading. `boot_id` and `seq` make its `msg_id`: `<device>/late/<boot_id>/<seq>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // the fields are the JSON fields of the same name, in docs/wire.md
pub struct LateBody<'a> {
    pub device: &'a str,
    pub boot_id: &'a str,
    pub seq: u64,
    pub sensor: &'a str,
    pub metric: &'a str,
    pub value: f64,
    pub ts: TimestampMs,
    pub ts_source: TsSource,
    pub watermark: TimestampMs,
    pub late_by_ms: i64,
    pub emitted_at: TimestampMs,
}

/// A dead letter. `boot_id` and `seq` make its `msg_id`: `<device>/dl/<boot_id>/<seq>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // the fields are the JSON fields of the same name, in docs/wire.md
pub struct DeadLetterBody<'a> {
    pub device: &'a str,
    pub boot_id: &'a str,
    pub seq: u64,
    pub source: &'a str,
    pub reason: &'a str,
    pub detail: &'a str,
    pub payload: &'a str,
    pub received_at: TimestampMs,
    pub emitted_at: TimestampMs,
}

/// One upstream message of any kind but status.
#[derive(Clone, Debug, PartialEq)]
pub enum Message<'a> {
    /// A window pane.
    Pane(PaneBody<'a>),
    /// An alert transition.
    Alert(AlertBody<'a>),
    /// A late reading.
    Late(LateBody<'a>),
    /// A dead letter.
    DeadLetter(DeadLetterBody<'a>),
}

/// The pane's JSON, in Weir 0.1's field order.
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

/// `<device>/<sensor>/<metric>/<window_start>-<window_end>`.
pub fn pane_id(device: &str, sensor: &str, metric: &str, start: i64, end: i64) -> String {
    format!("{device}/{sensor}/{metric}/{start}-{end}")
}

impl Message<'_> {
    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            Message::Pane(_) => Kind::Pane,
            Message::Alert(_) => Kind::Alert,
            Message::Late(_) => Kind::Late,
            Message::DeadLetter(_) => Kind::DeadLetter,
        }
    }

    /// The JSON payload the `json` format publishes (`docs/wire.md`).
    pub fn to_json(&self) -> Vec<u8> {
        match self {
            Message::Pane(p) => {
                let id = pane_id(p.device, p.sensor, p.metric, p.window_start, p.window_end);
                to_vec(&PaneJson {
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
                    timing: p.timing.as_str(),
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
            }
            // serde_json's map is ordered by key: these objects come out sorted, as in 0.1.
            Message::Alert(a) => {
                let id = format!("{}/{}", a.device, a.alert_id);
                let state = a.state.as_str();
                to_vec(&json!({
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
                    "severity": a.severity.as_str(),
                    "value": a.value,
                    "baseline": a.baseline,
                    "threshold": a.threshold,
                    "reason": a.reason,
                    "ts": a.ts,
                    "raised_ts": a.raised_ts,
                    "emitted_at": a.emitted_at,
                }))
            }
            Message::Late(l) => to_vec(&json!({
                "v": VERSION,
                "type": "late",
                "msg_id": format!("{}/late/{}/{}", l.device, l.boot_id, l.seq),
                "device": l.device,
                "sensor": l.sensor,
                "metric": l.metric,
                "value": l.value,
                "ts": l.ts,
                "ts_source": l.ts_source.as_str(),
                "watermark": l.watermark,
                "late_by_ms": l.late_by_ms,
                "emitted_at": l.emitted_at,
            })),
            Message::DeadLetter(d) => to_vec(&json!({
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
            })),
        }
    }
}

/// Serialising our own plain structs cannot fail (no maps with non-string keys, no
/// non-finite floats: serde_json writes those as null).
pub(super) fn to_vec<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}
