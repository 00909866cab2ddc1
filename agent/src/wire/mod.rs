//! The upstream wire contract: topics and payloads, field by field in `docs/wire.md`.
//! Every message carries `v` (schema version), `type`, and a `msg_id` that is the same on every
//! redelivery of that message, so consumers can drop duplicates; panes and alerts also carry an
//! `id` that is stable across revisions (panes) or across raised/cleared (alerts), for upserts.
//!
//! Payloads are JSON by default or postcard (`[uplink] format`, [`Format`]); both encode the
//! same [`Message`] ([`body`]), and [`postcard::to_json`] turns the compact form back into the
//! exact JSON. The retained status and the last will are always JSON, whatever the format: a
//! technician's `mosquitto_sub` must be able to read them, and they are small and infrequent.

pub mod body;
pub(crate) mod json;
pub mod postcard;

use serde_json::json;

pub use body::{Kind, Message};

use crate::detect::Alert;
use crate::engine::{LateReading, Pane};
use crate::outbox::{Class, NewMessage};
use crate::reading::{Reading, TimestampMs, TsSource};

/// Schema version of every JSON payload.
pub const VERSION: u32 = 1;

/// How alerts, panes, late readings and dead letters are encoded (`[uplink] format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// UTF-8 JSON objects (the default).
    #[default]
    Json,
    /// Versioned postcard, about a third of the size, for metered links.
    Postcard,
}

impl Format {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Postcard => "postcard",
        }
    }

    /// The format spelled `s` in the config, if any.
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "json" => Some(Format::Json),
            "postcard" => Some(Format::Postcard),
            _ => None,
        }
    }
}

/// Builds messages for one device under one topic prefix.
#[derive(Clone, Debug)]
pub struct Wire {
    device: String,
    prefix: String,
    /// Distinguishes this process's diagnostic messages from a previous run's.
    boot_id: String,
    seq: u64,
    format: Format,
}

/// A payload that could not become a reading.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetter {
    /// Where it came from (`mqtt` topic, or a sensor name).
    pub source: String,
    /// Stable reason, e.g. `not_a_number`, `too_large`, `future_skew`.
    pub reason: &'static str,
    /// Human detail.
    pub detail: String,
    /// The payload (lossy UTF-8, truncated to 256 bytes).
    pub payload: String,
    /// Arrival time.
    pub received_at: TimestampMs,
}

impl Wire {
    /// `prefix` without a trailing slash, e.g. `weir/pi-01`. Payloads are JSON until
    /// [`Wire::with_format`] says otherwise.
    pub fn new(device: &str, prefix: &str) -> Self {
        Self {
            device: device.to_string(),
            prefix: prefix.to_string(),
            boot_id: format!("{:08x}", fastrand::u32(..)),
            seq: 0,
            format: Format::Json,
        }
    }

    /// As [`Wire::new`], with a fixed boot id (diagnostic message ids are then
    /// the same on every run, as a backtest wants).
    pub fn with_boot_id(device: &str, prefix: &str, boot_id: &str) -> Self {
        Self {
            boot_id: boot_id.to_string(),
            ..Self::new(device, prefix)
        }
    }

    /// Encodes alerts, panes, late readings and dead letters in `format` (status stays JSON).
    pub fn with_format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// The topic prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>/status`: retained health; the last will writes `offline` there.
    pub fn status_topic(&self) -> String {
        format!("{}/status", self.prefix)
    }

    /// Stable id of a window of a key on this device.
    pub fn pane_id(&self, p: &Pane) -> String {
        body::pane_id(&self.device, &p.key.sensor, &p.key.metric, p.start, p.end)
    }

    fn encode(&self, m: &Message<'_>) -> Vec<u8> {
        match self.format {
            Format::Json => m.to_json(),
            Format::Postcard => postcard::encode(m),
        }
    }

    /// A window pane, superseding any unsent older revision of the same window.
    pub fn pane(&self, p: &Pane, now: TimestampMs) -> NewMessage {
        let a = &p.agg;
        let payload = self.encode(&Message::Pane(body::PaneBody {
            device: &self.device,
            sensor: &p.key.sensor,
            metric: &p.key.metric,
            window_start: p.start,
            window_end: p.end,
            revision: p.revision,
            timing: p.timing.into(),
            is_final: p.is_final,
            count: a.count,
            sum: a.sum,
            min: a.min,
            max: a.max,
            mean: a.mean,
            stddev: a.stddev,
            first: a.first,
            last: a.last,
            p50: a.p50,
            p90: a.p90,
            p99: a.p99,
            emitted_at: now,
        }));
        NewMessage {
            class: Class::Aggregate,
            topic: [&*self.prefix, "/agg/", &p.key.sensor, "/", &p.key.metric].concat(),
            payload,
            supersede_key: Some(self.pane_id(p)),
            created_ms: now,
        }
    }

    /// An alert transition (raised or cleared).
    pub fn alert(&self, a: &Alert, now: TimestampMs) -> NewMessage {
        let payload = self.encode(&Message::Alert(body::AlertBody {
            device: &self.device,
            alert_id: &a.id,
            sensor: &a.key.sensor,
            metric: &a.key.metric,
            detector: &a.detector,
            kind: a.kind,
            state: a.state.into(),
            severity: a.severity.into(),
            value: a.value,
            baseline: a.baseline,
            threshold: a.threshold,
            reason: &a.reason,
            ts: a.ts,
            raised_ts: a.raised_ts,
            emitted_at: now,
        }));
        NewMessage {
            class: Class::Alert,
            topic: [&*self.prefix, "/alert/", &a.key.sensor, "/", &a.key.metric].concat(),
            payload,
            supersede_key: None,
            created_ms: now,
        }
    }

    /// A reading too late for every window it belongs to.
    pub fn late(&mut self, l: &LateReading, now: TimestampMs) -> NewMessage {
        let seq = self.next_seq();
        let r = &l.reading;
        let payload = self.encode(&Message::Late(body::LateBody {
            device: &self.device,
            boot_id: &self.boot_id,
            seq,
            sensor: &r.key.sensor,
            metric: &r.key.metric,
            value: r.value,
            ts: r.ts,
            ts_source: r.ts_source.into(),
            watermark: l.watermark,
            late_by_ms: l.late_by_ms,
            emitted_at: now,
        }));
        self.diagnostic("late", payload, now)
    }

    /// A reading refused by the engine (e.g. stamped too far in the future).
    pub fn rejected(&mut self, r: &Reading, reason: &'static str, now: TimestampMs) -> NewMessage {
        let dl = DeadLetter {
            source: format!("{}/{}", r.key.sensor, r.key.metric),
            reason,
            detail: format!(
                "reading {} at ts {} ({}) refused: {reason}",
                r.value,
                r.ts,
                if r.ts_source == TsSource::Arrival {
                    "arrival time"
                } else {
                    "event time"
                }
            ),
            payload: r.value.to_string(),
            received_at: now,
        };
        self.dead_letter(&dl, now)
    }

    /// A payload that could not be parsed.
    pub fn dead_letter(&mut self, d: &DeadLetter, now: TimestampMs) -> NewMessage {
        let seq = self.next_seq();
        let payload = self.encode(&Message::DeadLetter(body::DeadLetterBody {
            device: &self.device,
            boot_id: &self.boot_id,
            seq,
            source: &d.source,
            reason: d.reason,
            detail: &d.detail,
            payload: &d.payload,
            received_at: d.received_at,
            emitted_at: now,
        }));
        self.diagnostic("deadletter", payload, now)
    }

    fn diagnostic(&self, topic: &str, payload: Vec<u8>, now: TimestampMs) -> NewMessage {
        NewMessage {
            class: Class::Diagnostic,
            topic: format!("{}/{topic}", self.prefix),
            payload,
            supersede_key: None,
            created_ms: now,
        }
    }

    /// Numbers diagnostic messages (late and dead letters share the sequence) for their
    /// `msg_id`s, `<device>/late/<boot_id>/<seq>` and `<device>/dl/<boot_id>/<seq>`.
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// The retained status payload (always JSON).
    pub fn status(&self, body: serde_json::Value) -> Vec<u8> {
        let mut v = json!({"v": VERSION, "type": "status", "device": self.device});
        if let (Some(dst), serde_json::Value::Object(src)) = (v.as_object_mut(), body) {
            dst.extend(src);
        }
        body::to_vec(&v)
    }

    /// The last will: what the broker publishes, retained, if Weir vanishes (always JSON).
    pub fn offline(&self) -> Vec<u8> {
        self.status(json!({"state": "offline"}))
    }
}

/// Keeps what goes into a dead letter bounded: lossy UTF-8 of at most `max` bytes.
pub fn excerpt(payload: &[u8], max: usize) -> String {
    let cut = &payload[..payload.len().min(max)];
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if payload.len() > max {
        s.push('…');
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::engine::{Aggregates, Timing};
    use crate::reading::Key;

    fn pane(rev: u32) -> Pane {
        Pane {
            key: Key::new("gh", "temp"),
            start: 60_000,
            end: 120_000,
            agg: Aggregates {
                count: 2,
                sum: 3.0,
                min: 1.0,
                max: 2.0,
                mean: 1.5,
                stddev: 0.5,
                first: 1.0,
                last: 2.0,
                p50: None,
                p90: None,
                p99: None,
            },
            revision: rev,
            timing: if rev == 0 {
                Timing::OnTime
            } else {
                Timing::Late
            },
            is_final: false,
        }
    }

    #[test]
    fn a_pane_message_carries_its_window_aggregates_and_a_stable_id() {
        let w = Wire::new("dev", "weir/dev");
        let m = w.pane(&pane(1), 5);
        assert_eq!(m.topic, "weir/dev/agg/gh/temp");
        assert_eq!(m.class, Class::Aggregate);
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(v["id"], "dev/gh/temp/60000-120000");
        assert_eq!(v["msg_id"], "dev/gh/temp/60000-120000#r1");
        assert_eq!(v["window_start"], 60_000);
        assert_eq!(v["mean"], 1.5);
        assert_eq!(v["count"], 2);
        assert_eq!(v["timing"], "late");
        assert_eq!(v["final"], false);
        assert_eq!(m.supersede_key.as_deref(), Some("dev/gh/temp/60000-120000"));
        assert_eq!(
            w.pane(&pane(0), 5).supersede_key,
            m.supersede_key,
            "revisions share the window id"
        );
    }

    #[test]
    fn diagnostic_messages_get_distinct_ids() {
        let mut w = Wire::new("dev", "weir/dev");
        let d = DeadLetter {
            source: "t".into(),
            reason: "bad_json",
            detail: "x".into(),
            payload: "{".into(),
            received_at: 1,
        };
        let a: serde_json::Value = serde_json::from_slice(&w.dead_letter(&d, 1).payload).unwrap();
        let b: serde_json::Value = serde_json::from_slice(&w.dead_letter(&d, 1).payload).unwrap();
        assert_ne!(a["msg_id"], b["msg_id"]);
        assert_eq!(a["reason"], "bad_json");
    }

    #[test]
    fn the_last_will_says_offline() {
        let w = Wire::new("dev", "weir/dev");
        let v: serde_json::Value = serde_json::from_slice(&w.offline()).unwrap();
        assert_eq!(v["state"], "offline");
        assert_eq!(v["device"], "dev");
    }

    #[test]
    fn an_excerpt_is_bounded_and_marks_truncation() {
        assert_eq!(excerpt(b"abc", 10), "abc");
        assert_eq!(excerpt(b"abcdef", 3), "abc…");
        assert_eq!(excerpt(&[0xff, b'a'], 10), "\u{fffd}a");
    }
}

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod json_tests;
#[cfg(test)]
mod json_writer_tests;
#[cfg(test)]
mod postcard_tests;
