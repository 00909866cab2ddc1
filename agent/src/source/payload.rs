//! What an MQTT reading payload may be, and how it becomes a value and an
//! optional event time.
//!
//! Accepted, after trimming surrounding whitespace:
//! - a plain number: `21.5`, `-3`, `1e3`, `+0.5` (Rust's float syntax, a superset
//!   of JSON's);
//! - a JSON object with a numeric value field and an optional timestamp field:
//!   `{"value": 21.5}`, `{"value": 21.5, "ts": 1732183200250}`; other fields are
//!   skipped without being built (Zigbee2MQTT and Shelly send many).
//!
//! Strict on purpose: a value sent as a JSON string (`{"value": "21.5"}`) is a
//! `wrong_type`, not a number. Tasmota, Zigbee2MQTT and Shelly send JSON
//! numbers; a device that quotes them is misconfigured, and guessing would also
//! accept `"21,5"` one day and misread it the next. `NaN`, `inf` and `Infinity`,
//! in any case, and numbers that overflow (`1e999`) are `non_finite`, never
//! `not_a_number`, so the dead-letter counters tell a broken sensor from a
//! broken format. A `null` value counts as missing (Zigbee2MQTT publishes
//! `null` for a value it does not know); a `null` timestamp as no timestamp.
//! A field given twice is `bad_json` rather than "last one wins".
//!
//! The size limit is checked before anything else, then UTF-8, so an oversized
//! or binary payload costs nothing to refuse.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

use crate::reading::TimestampMs;

/// Default [`PayloadFormat::max_bytes`]: a reading is a few dozen bytes; the
/// chattiest devices (Zigbee2MQTT with every attribute) stay well under 4 KiB.
pub const DEFAULT_MAX_BYTES: usize = 4096;

/// Timestamps below this magnitude are epoch seconds, at or above it epoch
/// milliseconds. 10^11 s is the year 5138, no device's clock; 10^11 ms is
/// 1973-03-03, before any device that sends data today. So the only misread
/// values are millisecond timestamps from 1970–1973, which no real device sends.
pub const SECONDS_BELOW: i64 = 100_000_000_000;

/// The latest accepted timestamp, 9999-12-31T23:59:59.999Z: the end of what
/// RFC 3339 can write. Anything later (e.g. microseconds or nanoseconds since
/// the epoch sent by mistake) is refused rather than misread.
pub const MAX_TIMESTAMP_MS: TimestampMs = 253_402_300_799_999;

/// How much of an unparseable payload an error keeps, in characters.
const EXCERPT_CHARS: usize = 64;

/// A payload's meaning: the value, and the device's timestamp if it sent one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ParsedValue {
    /// The measured value; always finite.
    pub value: f64,
    /// Event time from the payload, `None` when it carried none (the caller then
    /// uses the arrival time and marks the reading so).
    pub ts: Option<TimestampMs>,
}

/// Why a payload is not a reading. Each is dead-lettered and counted by
/// [`PayloadError::reason`]; none is worth retrying.
#[derive(thiserror::Error, Debug, Clone, PartialEq)]
pub enum PayloadError {
    /// The payload exceeds [`PayloadFormat::max_bytes`].
    #[error("payload of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Payload size in bytes.
        len: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The payload is not UTF-8 text.
    #[error("payload is not valid UTF-8")]
    NotUtf8,
    /// The payload is empty or only whitespace.
    #[error("payload is empty")]
    Empty,
    /// Not a number and not a JSON object.
    #[error("payload {text:?} is neither a number nor a JSON object like {{\"value\": 21.5}}")]
    NotANumber {
        /// The trimmed payload, cut to 64 characters.
        text: String,
    },
    /// It starts like a JSON object but is not valid JSON.
    #[error("payload is not valid JSON: {detail}")]
    BadJson {
        /// The parser's message, with line and column.
        detail: String,
    },
    /// The JSON object has no value field, or it is `null`.
    #[error("JSON payload has no `{field}` field (or it is null)")]
    MissingValue {
        /// The configured value field.
        field: String,
    },
    /// The value field is not a JSON number.
    #[error("field `{field}` is a {found}, expected a number like 21.5")]
    WrongType {
        /// The configured value field.
        field: String,
        /// The JSON type found: `string`, `bool`, `array` or `object`.
        found: &'static str,
    },
    /// NaN, an infinity, or a number too large for an `f64`.
    #[error("value is not a finite number (NaN, infinity or out of range)")]
    NonFinite,
    /// The timestamp field is present but unusable.
    #[error("bad timestamp: {detail}")]
    BadTimestamp {
        /// What is wrong with it.
        detail: String,
    },
}

impl PayloadError {
    /// A stable, snake_case reason for counters and the dead-letter topic.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too_large",
            Self::NotUtf8 => "not_utf8",
            Self::Empty => "empty",
            Self::NotANumber { .. } => "not_a_number",
            Self::BadJson { .. } => "bad_json",
            Self::MissingValue { .. } => "missing_value",
            Self::WrongType { .. } => "wrong_type",
            Self::NonFinite => "non_finite",
            Self::BadTimestamp { .. } => "bad_timestamp",
        }
    }
}

/// How payloads of one subscription are read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayloadFormat {
    /// Larger payloads are refused unread.
    pub max_bytes: usize,
    /// The JSON field holding the value (top level), default `value`.
    pub value_field: String,
    /// The JSON field holding the timestamp (top level), default `ts`. Should differ
    /// from `value_field`; if equal, the field is read as the value only.
    pub ts_field: String,
}

impl Default for PayloadFormat {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_BYTES,
            value_field: "value".to_owned(),
            ts_field: "ts".to_owned(),
        }
    }
}

/// Reads one payload; see the module documentation for what is accepted.
pub fn parse(payload: &[u8], fmt: &PayloadFormat) -> Result<ParsedValue, PayloadError> {
    if payload.len() > fmt.max_bytes {
        return Err(PayloadError::TooLarge {
            len: payload.len(),
            limit: fmt.max_bytes,
        });
    }
    let text = std::str::from_utf8(payload).map_err(|_| PayloadError::NotUtf8)?;
    let text = text.trim();
    if text.is_empty() {
        return Err(PayloadError::Empty);
    }
    if text.starts_with('{') {
        return parse_object(text, fmt);
    }
    match text.parse::<f64>() {
        Ok(value) if value.is_finite() => Ok(ParsedValue { value, ts: None }),
        Ok(_) => Err(PayloadError::NonFinite),
        Err(_) => Err(PayloadError::NotANumber {
            text: excerpt(text),
        }),
    }
}

/// Reads a timestamp: an integer or float of epoch seconds (|x| < 10^11, see
/// [`SECONDS_BELOW`]) or milliseconds, or an RFC 3339 string with an offset
/// (`2026-11-21T10:00:00.250+01:00`, `...Z`). Fractions of a millisecond are
/// rounded for numbers and truncated for strings. Strings of digits are refused:
/// a number must be sent as a number. Accepts 1970-01-01T00:00:00Z (a device whose
/// clock is unset is the lateness rules' business, not a parse error) up to
/// [`MAX_TIMESTAMP_MS`]; earlier or later is `bad_timestamp`.
pub fn parse_timestamp(v: &Value) -> Result<TimestampMs, PayloadError> {
    let ms = match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                // |i| < 10^11 here, so the product cannot overflow.
                if i.unsigned_abs() < SECONDS_BELOW.unsigned_abs() {
                    i * 1000
                } else {
                    i
                }
            } else if n.is_u64() {
                return Err(out_of_range(format_args!("{n}")));
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                let ms = if f.abs() < SECONDS_BELOW as f64 {
                    f * 1000.0
                } else {
                    f
                }
                .round();
                // Checked as a float: `as i64` would saturate silently.
                if !(0.0..=MAX_TIMESTAMP_MS as f64).contains(&ms) {
                    return Err(out_of_range(format_args!("{n}")));
                }
                ms as i64
            }
        }
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map_err(|e| PayloadError::BadTimestamp {
                detail: format!(
                    "{:?} is not an RFC 3339 date-time with offset like \
                     2026-11-21T10:00:00.250+01:00 ({e})",
                    excerpt(s)
                ),
            })?
            .timestamp_millis(),
        other => {
            return Err(PayloadError::BadTimestamp {
                detail: format!(
                    "expected epoch seconds or milliseconds, or an RFC 3339 string; found {}",
                    json_type(other)
                ),
            });
        }
    };
    if (0..=MAX_TIMESTAMP_MS).contains(&ms) {
        Ok(ms)
    } else {
        Err(out_of_range(format_args!("{v}")))
    }
}

fn out_of_range(shown: fmt::Arguments<'_>) -> PayloadError {
    PayloadError::BadTimestamp {
        detail: format!("{shown} is outside 1970-01-01T00:00:00Z ..= 9999-12-31T23:59:59.999Z"),
    }
}

fn excerpt(text: &str) -> String {
    text.chars().take(EXCERPT_CHARS).collect()
}

/// The JSON type of a value, as named in dead-letter reasons.
pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn parse_object(text: &str, fmt: &PayloadFormat) -> Result<ParsedValue, PayloadError> {
    // Which of our fields the parser was inside when it failed: serde_json refuses
    // a whole document for one overflowing number, and only this tells whether that
    // number was the value (non_finite), the timestamp, or a field we ignore.
    let inside = Cell::new(Inside::Neither);
    let mut de = serde_json::Deserializer::from_str(text);
    let fields = Fields {
        value_field: &fmt.value_field,
        ts_field: &fmt.ts_field,
        inside: &inside,
    }
    .deserialize(&mut de)
    .and_then(|found| de.end().map(|()| found));
    let found = fields.map_err(|e| {
        let overflow = e.classify() == serde_json::error::Category::Syntax
            && e.to_string().starts_with("number out of range");
        match inside.get() {
            Inside::Value if overflow => PayloadError::NonFinite,
            Inside::Ts if overflow => PayloadError::BadTimestamp {
                detail: format!("the timestamp does not fit in a number: {e}"),
            },
            _ => PayloadError::BadJson {
                detail: e.to_string(),
            },
        }
    })?;
    let value = match found.value {
        None | Some(Value::Null) => {
            return Err(PayloadError::MissingValue {
                field: fmt.value_field.clone(),
            });
        }
        // Always finite without serde_json's arbitrary_precision; checked anyway.
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|v| v.is_finite())
            .ok_or(PayloadError::NonFinite)?,
        Some(other) => {
            return Err(PayloadError::WrongType {
                field: fmt.value_field.clone(),
                found: json_type(&other),
            });
        }
    };
    let ts = match found.ts {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_timestamp(&v)?),
    };
    Ok(ParsedValue { value, ts })
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Inside {
    Neither,
    Value,
    Ts,
}

/// The two fields we want out of a top-level JSON object.
#[derive(Default)]
struct Found {
    value: Option<Value>,
    ts: Option<Value>,
}

/// Streams a JSON object, keeping the value and timestamp fields and skipping the
/// rest without building them.
struct Fields<'a> {
    value_field: &'a str,
    ts_field: &'a str,
    inside: &'a Cell<Inside>,
}

impl<'de> DeserializeSeed<'de> for Fields<'_> {
    type Value = Found;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Found, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Fields<'_> {
    type Value = Found;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Found, A::Error> {
        let mut found = Found::default();
        let key = KeySeed {
            value_field: self.value_field,
            ts_field: self.ts_field,
        };
        while let Some(which) = map.next_key_seed(key)? {
            let (slot, name) = match which {
                Inside::Value => (&mut found.value, self.value_field),
                Inside::Ts => (&mut found.ts, self.ts_field),
                Inside::Neither => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if slot.is_some() {
                return Err(de::Error::custom(format_args!("duplicate field `{name}`")));
            }
            self.inside.set(which);
            *slot = Some(map.next_value::<Value>()?);
            self.inside.set(Inside::Neither);
        }
        Ok(found)
    }
}

/// Classifies a key without allocating it.
#[derive(Clone, Copy)]
struct KeySeed<'a> {
    value_field: &'a str,
    ts_field: &'a str,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Inside;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Inside, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Inside;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Inside, E> {
        Ok(if key == self.value_field {
            Inside::Value
        } else if key == self.ts_field {
            Inside::Ts
        } else {
            Inside::Neither
        })
    }
}

#[cfg(test)]
#[path = "payload_tests.rs"]
mod tests;
