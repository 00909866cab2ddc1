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

use super::VERSION;
use super::json::{self, Obj};
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

/// `<device>/<sensor>/<metric>/<window_start>-<window_end>`.
pub fn pane_id(device: &str, sensor: &str, metric: &str, start: i64, end: i64) -> String {
    // Not `format!`: this runs for every pane (its supersede key), and the formatting
    // machinery cost more than the copying.
    let (mut a, mut b) = (itoa::Buffer::new(), itoa::Buffer::new());
    [
        device,
        "/",
        sensor,
        "/",
        metric,
        "/",
        a.format(start),
        "-",
        b.format(end),
    ]
    .concat()
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
        let mut out = Vec::with_capacity(512);
        self.write_json(&mut out);
        out
    }

    /// Appends the JSON payload to `out`. Written by hand (`super::json`), byte for byte what
    /// serde_json wrote before: panes in Weir 0.1's field order, the other kinds with their keys
    /// sorted (they were `json!` maps, which serde_json orders by key).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Message::Pane(p) => {
                let mut o = Obj::open(out);
                o.int("v", VERSION);
                o.str("type", "pane");
                o.raw_str("id", |out| pane_id_into(out, p));
                o.raw_str("msg_id", |out| {
                    pane_id_into(out, p);
                    out.extend_from_slice(b"#r");
                    json::int(out, p.revision);
                });
                o.str("device", p.device);
                o.str("sensor", p.sensor);
                o.str("metric", p.metric);
                o.int("window_start", p.window_start);
                o.int("window_end", p.window_end);
                o.int("revision", p.revision);
                o.str("timing", p.timing.as_str());
                o.bool("final", p.is_final);
                o.int("count", p.count);
                o.f64("sum", p.sum);
                o.f64("min", p.min);
                o.f64("max", p.max);
                o.f64("mean", p.mean);
                o.f64("stddev", p.stddev);
                o.f64("first", p.first);
                o.f64("last", p.last);
                for (k, v) in [("p50", p.p50), ("p90", p.p90), ("p99", p.p99)] {
                    if let Some(v) = v {
                        o.f64(k, v);
                    }
                }
                o.int("emitted_at", p.emitted_at);
                o.close();
            }
            Message::Alert(a) => {
                let state = a.state.as_str();
                let mut o = Obj::open(out);
                o.opt_f64("baseline", a.baseline);
                o.str("detector", a.detector);
                o.str("device", a.device);
                o.int("emitted_at", a.emitted_at);
                o.str_parts("id", &[a.device, "/", a.alert_id]);
                o.str("kind", a.kind);
                o.str("metric", a.metric);
                o.str_parts("msg_id", &[a.device, "/", a.alert_id, "#", state]);
                o.int("raised_ts", a.raised_ts);
                o.str("reason", a.reason);
                o.str("sensor", a.sensor);
                o.str("severity", a.severity.as_str());
                o.str("state", state);
                o.f64("threshold", a.threshold);
                o.int("ts", a.ts);
                o.str("type", "alert");
                o.int("v", VERSION);
                o.f64("value", a.value);
                o.close();
            }
            Message::Late(l) => {
                let mut o = Obj::open(out);
                o.str("device", l.device);
                o.int("emitted_at", l.emitted_at);
                o.int("late_by_ms", l.late_by_ms);
                o.str("metric", l.metric);
                o.raw_str("msg_id", |out| {
                    seq_msg_id_into(out, l.device, "late", l.boot_id, l.seq)
                });
                o.str("sensor", l.sensor);
                o.int("ts", l.ts);
                o.str("ts_source", l.ts_source.as_str());
                o.str("type", "late");
                o.int("v", VERSION);
                o.f64("value", l.value);
                o.int("watermark", l.watermark);
                o.close();
            }
            Message::DeadLetter(d) => {
                let mut o = Obj::open(out);
                o.str("detail", d.detail);
                o.str("device", d.device);
                o.int("emitted_at", d.emitted_at);
                o.raw_str("msg_id", |out| {
                    seq_msg_id_into(out, d.device, "dl", d.boot_id, d.seq)
                });
                o.str("payload", d.payload);
                o.str("reason", d.reason);
                o.int("received_at", d.received_at);
                o.str("source", d.source);
                o.str("type", "deadletter");
                o.int("v", VERSION);
                o.close();
            }
        }
    }
}

/// `<device>/<kind>/<boot_id>/<seq>`, escaped, without quotes: the msg_id of the messages
/// numbered per boot (late readings, dead letters).
fn seq_msg_id_into(out: &mut Vec<u8>, device: &str, kind: &str, boot_id: &str, seq: u64) {
    for part in [device, "/", kind, "/", boot_id, "/"] {
        json::escape_into(out, part);
    }
    json::int(out, seq);
}

/// The pane id, escaped, without quotes.
fn pane_id_into(out: &mut Vec<u8>, p: &PaneBody<'_>) {
    for (part, sep) in [(p.device, b'/'), (p.sensor, b'/'), (p.metric, b'/')] {
        json::escape_into(out, part);
        out.push(sep);
    }
    json::int(out, p.window_start);
    out.push(b'-');
    json::int(out, p.window_end);
}

/// Serialising our own plain structs cannot fail (no maps with non-string keys, no
/// non-finite floats: serde_json writes those as null).
pub(super) fn to_vec<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}
