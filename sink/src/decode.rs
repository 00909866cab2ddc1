//! From one MQTT message to one database record, or a reject with a reason: pure, no I/O.
//!
//! JSON payloads (`{` first) are read as `docs/wire.md` lays them out; anything else is tried
//! as a postcard payload through Weir's own decoder, which gives back exactly the JSON the
//! `json` format would have sent, so both formats go through one reader. Status is always
//! JSON. A payload that is not a message of schema version 1 of a known `type`, with every
//! field the type needs, is a [`Reject`]: it goes to the `rejects` table and never stops the
//! messages around it.

use serde::Deserialize;
use serde_json::Value;

/// The schema version this sink reads (`v`).
pub const WIRE_VERSION: u64 = 1;

/// A message the sink writes.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// A window pane: upserted by `id`, highest `revision` wins.
    Pane(Pane),
    /// An alert transition: `raised` and `cleared` fill one row per `id`.
    Alert(Alert),
    /// A reading too late for every window.
    Late(Late),
    /// A payload or reading the device refused.
    DeadLetter(DeadLetter),
    /// A device's retained status (or its last will).
    Status(Status),
}

/// A window pane (`docs/wire.md`, `pane`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[allow(missing_docs)] // the fields are the wire's, documented in docs/wire.md
pub struct Pane {
    pub id: String,
    pub msg_id: String,
    pub device: String,
    pub sensor: String,
    pub metric: String,
    pub window_start: i64,
    pub window_end: i64,
    pub revision: u32,
    pub timing: String,
    #[serde(rename = "final")]
    pub is_final: bool,
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub stddev: f64,
    pub first: f64,
    pub last: f64,
    #[serde(default)]
    pub p50: Option<f64>,
    #[serde(default)]
    pub p90: Option<f64>,
    #[serde(default)]
    pub p99: Option<f64>,
    pub emitted_at: i64,
}

/// Whether an alert message raises or clears its episode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// The episode starts.
    Raised,
    /// The episode ends.
    Cleared,
}

/// An alert transition (`docs/wire.md`, `alert`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[allow(missing_docs)] // the fields are the wire's, documented in docs/wire.md
pub struct Alert {
    pub id: String,
    pub msg_id: String,
    pub device: String,
    pub sensor: String,
    pub metric: String,
    pub detector: String,
    pub kind: String,
    pub state: AlertState,
    pub severity: String,
    pub value: f64,
    pub baseline: Option<f64>,
    pub threshold: f64,
    pub reason: String,
    pub ts: i64,
    pub raised_ts: i64,
    pub emitted_at: i64,
}

/// A late reading (`docs/wire.md`, `late`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[allow(missing_docs)] // the fields are the wire's, documented in docs/wire.md
pub struct Late {
    pub msg_id: String,
    pub device: String,
    pub sensor: String,
    pub metric: String,
    pub value: f64,
    pub ts: i64,
    pub ts_source: String,
    pub watermark: i64,
    pub late_by_ms: i64,
    pub emitted_at: i64,
}

/// A dead letter (`docs/wire.md`, `deadletter`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[allow(missing_docs)] // the fields are the wire's, documented in docs/wire.md
pub struct DeadLetter {
    pub msg_id: String,
    pub device: String,
    pub source: String,
    pub reason: String,
    pub detail: String,
    pub payload: String,
    pub received_at: i64,
    pub emitted_at: i64,
}

/// A device's status: the few fields a dashboard filters on, and the whole message.
#[derive(Clone, Debug, PartialEq)]
pub struct Status {
    /// The device.
    pub device: String,
    /// `online` or `offline`.
    pub state: String,
    /// Weir's version, when online.
    pub version: Option<String>,
    /// When this run of Weir started (ms), when online.
    pub started_at: Option<i64>,
    /// The whole status message as JSON text (stored as `jsonb`).
    pub json: String,
}

/// Why a message was not written as a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reject {
    /// Stable reason: `bad_json`, `bad_postcard`, `unknown_version`, `unknown_type`,
    /// `bad_fields`, or (from the store) `db_error`.
    pub reason: &'static str,
    /// A sentence for the operator.
    pub detail: String,
}

impl Reject {
    fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

impl Record {
    /// The wire's `type` of this record.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Pane(_) => "pane",
            Record::Alert(_) => "alert",
            Record::Late(_) => "late",
            Record::DeadLetter(_) => "deadletter",
            Record::Status(_) => "status",
        }
    }
}

/// Reads one message. `topic` only goes into reject details.
pub fn decode(topic: &str, payload: &[u8]) -> Result<Record, Reject> {
    let json;
    let text = match payload.first() {
        None => return Err(Reject::new("bad_json", format!("empty payload on {topic}"))),
        Some(b'{') => payload,
        Some(_) => {
            json = weir::wire::postcard::to_json(payload).map_err(|e| {
                Reject::new(
                    "bad_postcard",
                    format!("{topic}: not JSON and not a Weir postcard payload: {e}"),
                )
            })?;
            &json[..]
        }
    };
    let value: Value = serde_json::from_slice(text)
        .map_err(|e| Reject::new("bad_json", format!("{topic}: not valid JSON: {e}")))?;
    let Some(obj) = value.as_object() else {
        return Err(Reject::new(
            "bad_json",
            format!("{topic}: JSON but not an object"),
        ));
    };
    match obj.get("v").and_then(Value::as_u64) {
        Some(WIRE_VERSION) => {}
        Some(v) => {
            return Err(Reject::new(
                "unknown_version",
                format!("{topic}: schema version {v}; this sink reads version {WIRE_VERSION}"),
            ));
        }
        None => {
            return Err(Reject::new(
                "unknown_version",
                format!("{topic}: no integer `v` (schema version)"),
            ));
        }
    }
    let kind = obj.get("type").and_then(Value::as_str).unwrap_or_default();
    let fields = |e: serde_json::Error| {
        Reject::new(
            "bad_fields",
            format!("{topic}: a `{kind}` message with a missing or mistyped field: {e}"),
        )
    };
    match kind {
        "pane" => Pane::deserialize(&value).map(Record::Pane).map_err(fields),
        "alert" => Alert::deserialize(&value)
            .map(Record::Alert)
            .map_err(fields),
        "late" => Late::deserialize(&value).map(Record::Late).map_err(fields),
        "deadletter" => DeadLetter::deserialize(&value)
            .map(Record::DeadLetter)
            .map_err(fields),
        "status" => status(obj, text).map_err(fields),
        "" => Err(Reject::new(
            "unknown_type",
            format!("{topic}: no string `type`"),
        )),
        other => Err(Reject::new(
            "unknown_type",
            format!(
                "{topic}: unknown message type `{other}` (known: pane, alert, late, deadletter, status)"
            ),
        )),
    }
}

fn status(obj: &serde_json::Map<String, Value>, text: &[u8]) -> Result<Record, serde_json::Error> {
    #[derive(Deserialize)]
    struct Head {
        device: String,
        state: String,
        #[serde(default)]
        version: Option<String>,
        #[serde(default)]
        started_at: Option<i64>,
    }
    let head = Head::deserialize(Value::Object(obj.clone()))?;
    Ok(Record::Status(Status {
        device: head.device,
        state: head.state,
        version: head.version,
        started_at: head.started_at,
        json: String::from_utf8_lossy(text).into_owned(),
    }))
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
