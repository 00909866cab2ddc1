//! Multi-metric JSON payloads: one message, many readings, as Tasmota
//! (`tele/<dev>/SENSOR`) and Zigbee2MQTT (`zigbee2mqtt/<friendly name>`) send.
//!
//! Which values become readings:
//! - with `fields` (metric -> field path, e.g. `temperature = "BME280.Temperature"`),
//!   exactly those; a listed field that is missing is skipped (devices omit
//!   what they did not measure), one of the wrong type is dead-lettered on its own;
//! - without, every number and boolean reachable through objects (at most
//!   [`MAX_DEPTH`] levels), named by its path joined with `.`, minus the
//!   top-level keys in `skip`. Strings, arrays and nulls are status, not readings.
//!
//! Booleans are readings 1.0/0.0 (Zigbee2MQTT's `contact`, `occupancy`,
//! `water_leak`), as GPIO states are. The timestamp, if any, comes from
//! `ts_path` and applies to every reading of the message. A message that
//! yields no reading at all is dead-lettered (`no_metrics`), so a device that
//! changed its payload shape does not go silent unnoticed.

use serde_json::Value;

use super::payload::{PayloadError, json_type, parse_timestamp};
use crate::reading::TimestampMs;

/// How deep automatic flattening goes (Tasmota nests two levels: `ENERGY.Today`).
pub const MAX_DEPTH: usize = 3;
/// At most this many readings from one message: a message is bounded work.
pub const MAX_METRICS: usize = 64;

/// How a multi-metric payload is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MultiFormat {
    /// Metric name and field path; empty = every number and boolean.
    pub fields: Vec<(String, Vec<String>)>,
    /// Where the event time is, if the device sends one.
    pub ts_path: Option<Vec<String>>,
    /// Top-level keys never turned into readings in automatic mode.
    pub skip: Vec<String>,
}

impl MultiFormat {
    /// Tasmota's telemetry: `{"Time":"2026-11-21T10:00:00","BME280":{"Temperature":21.3,...},"TempUnit":"C"}`.
    /// `Time` is the device's local time without an offset, so it is not used
    /// as event time: readings get the arrival time.
    pub fn tasmota() -> Self {
        Self {
            fields: Vec::new(),
            ts_path: None,
            skip: vec!["Time".into()],
        }
    }

    /// Zigbee2MQTT device state: `{"temperature":21.5,"humidity":48,"battery":97,"linkquality":120}`;
    /// event time from `last_seen` when the bridge adds it (epoch ms or ISO 8601 with offset).
    pub fn zigbee2mqtt() -> Self {
        Self {
            fields: Vec::new(),
            ts_path: Some(vec!["last_seen".into()]),
            skip: vec!["last_seen".into(), "update".into()],
        }
    }
}

/// Splits a field path `a.b.c` (no escapes: keys with dots are reached by `fields` never).
pub fn path(p: &str) -> Vec<String> {
    p.split('.').map(str::to_string).collect()
}

/// What one message gave: readings by metric (or why one field was refused), and the event time.
/// Automatic mode lists metrics in key order (serde_json's maps are sorted).
#[derive(Debug, PartialEq)]
pub struct Parsed {
    /// `(metric, value or error)`: in `fields` order, or in key order.
    pub values: Vec<(String, Result<f64, PayloadError>)>,
    /// The device's timestamp, when `ts_path` found one.
    pub ts: Option<TimestampMs>,
}

/// Metric names become topic levels: keep `[A-Za-z0-9_.-]`, replace the rest.
fn metric_name(parts: &[&str]) -> String {
    parts
        .join(".")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn number(field: &str, v: &Value) -> Result<f64, PayloadError> {
    match v {
        Value::Number(n) => n
            .as_f64()
            .filter(|x| x.is_finite())
            .ok_or(PayloadError::NonFinite),
        Value::Bool(b) => Ok(if *b { 1.0 } else { 0.0 }),
        other => Err(PayloadError::WrongType {
            field: field.to_string(),
            found: json_type(other),
        }),
    }
}

/// Follows a path; a numeric key also indexes an array (Shelly's `meters.0.power`).
fn get<'v>(root: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(root, |v, k| match v {
        Value::Array(a) => k.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => v.get(k.as_str()),
    })
}

fn flatten<'v>(
    v: &'v Value,
    prefix: &mut Vec<&'v str>,
    out: &mut Vec<(String, Result<f64, PayloadError>)>,
) {
    let Value::Object(map) = v else { return };
    for (k, child) in map {
        if out.len() > MAX_METRICS {
            return;
        }
        prefix.push(k);
        match child {
            Value::Number(_) | Value::Bool(_) => {
                let name = metric_name(prefix);
                let value = number(&name, child);
                out.push((name, value));
            }
            Value::Object(_) if prefix.len() < MAX_DEPTH => flatten(child, prefix, out),
            _ => {}
        }
        prefix.pop();
    }
}

/// Reads one payload (already size-checked and UTF-8 by the caller's rules:
/// this checks them too, in the same order as the single-value parser).
pub fn parse(payload: &[u8], max_bytes: usize, fmt: &MultiFormat) -> Result<Parsed, PayloadError> {
    if payload.len() > max_bytes {
        return Err(PayloadError::TooLarge {
            len: payload.len(),
            limit: max_bytes,
        });
    }
    let text = std::str::from_utf8(payload).map_err(|_| PayloadError::NotUtf8)?;
    if text.trim().is_empty() {
        return Err(PayloadError::Empty);
    }
    let root: Value = serde_json::from_str(text).map_err(|e| {
        // serde_json refuses a whole document for one number beyond f64: that is
        // a non-finite value, as in the single-value format.
        if e.to_string().starts_with("number out of range") {
            PayloadError::NonFinite
        } else {
            PayloadError::BadJson {
                detail: e.to_string(),
            }
        }
    })?;
    if !root.is_object() {
        return Err(PayloadError::WrongType {
            field: "(payload)".into(),
            found: json_type(&root),
        });
    }
    let ts = match fmt.ts_path.as_deref().and_then(|p| get(&root, p)) {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_timestamp(v)?),
    };
    let mut values = Vec::new();
    if fmt.fields.is_empty() {
        let Value::Object(map) = &root else {
            unreachable!("checked above")
        };
        for (k, v) in map {
            if fmt.skip.iter().any(|s| s == k) {
                continue;
            }
            let mut prefix = vec![k.as_str()];
            match v {
                Value::Number(_) | Value::Bool(_) => {
                    let name = metric_name(&prefix);
                    let value = number(&name, v);
                    values.push((name, value));
                }
                Value::Object(_) => flatten(v, &mut prefix, &mut values),
                _ => {}
            }
        }
        // The device's timestamp is when, not what: never a reading of its own.
        if let Some(ts) = &fmt.ts_path {
            let ts_name = metric_name(&ts.iter().map(String::as_str).collect::<Vec<_>>());
            values.retain(|(name, _)| *name != ts_name);
        }
    } else {
        for (metric, p) in &fmt.fields {
            match get(&root, p) {
                None | Some(Value::Null) => {}
                Some(v) => values.push((metric.clone(), number(&p.join("."), v))),
            }
        }
    }
    if values.len() > MAX_METRICS {
        return Err(PayloadError::BadJson {
            detail: format!("more than {MAX_METRICS} numeric fields in one message"),
        });
    }
    if values.is_empty() {
        return Err(PayloadError::MissingValue {
            field: if fmt.fields.is_empty() {
                "(any number)".into()
            } else {
                fmt.fields
                    .iter()
                    .map(|(_, p)| p.join("."))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        });
    }
    Ok(Parsed { values, ts })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const TASMOTA: &str = r#"{"Time":"2026-11-21T10:00:00","BME280":{"Temperature":21.3,"Humidity":45.1,"DewPoint":8.9,"Pressure":1013.2},"PressureUnit":"hPa","TempUnit":"C"}"#;
    const Z2M: &str = r#"{"battery":97,"humidity":48.21,"linkquality":120,"temperature":21.52,"voltage":2995,"contact":false,"update":{"state":"idle"},"last_seen":"2026-11-21T10:00:00.250+01:00"}"#;

    fn metrics(p: &Parsed) -> Vec<(String, f64)> {
        p.values
            .iter()
            .map(|(m, v)| (m.clone(), *v.as_ref().unwrap()))
            .collect()
    }

    #[test]
    fn a_tasmota_sensor_message_gives_every_nested_number_named_by_its_path() {
        let p = parse(TASMOTA.as_bytes(), 4096, &MultiFormat::tasmota()).unwrap();
        assert_eq!(
            metrics(&p),
            [
                ("BME280.DewPoint".to_string(), 8.9),
                ("BME280.Humidity".to_string(), 45.1),
                ("BME280.Pressure".to_string(), 1013.2),
                ("BME280.Temperature".to_string(), 21.3)
            ]
        );
        assert_eq!(
            p.ts, None,
            "Tasmota's local Time has no offset: arrival time"
        );
    }

    #[test]
    fn a_zigbee2mqtt_message_gives_numbers_and_booleans_stamped_by_last_seen() {
        let p = parse(Z2M.as_bytes(), 4096, &MultiFormat::zigbee2mqtt()).unwrap();
        let m = metrics(&p);
        assert!(m.contains(&("temperature".into(), 21.52)));
        assert!(m.contains(&("contact".into(), 0.0)));
        assert!(
            !m.iter()
                .any(|(k, _)| k.starts_with("update") || k == "last_seen")
        );
        assert_eq!(p.ts, Some(1_795_251_600_250));
    }

    #[test]
    fn explicit_field_paths_pick_and_rename_and_a_wrong_type_is_refused_alone() {
        let fmt = MultiFormat {
            fields: vec![
                ("t".into(), path("BME280.Temperature")),
                ("unit".into(), path("TempUnit")),
                ("absent".into(), path("SHT3X.Temperature")),
            ],
            ts_path: None,
            skip: vec![],
        };
        let p = parse(TASMOTA.as_bytes(), 4096, &fmt).unwrap();
        assert_eq!(p.values[0], ("t".into(), Ok(21.3)));
        assert_eq!(p.values[1].1.as_ref().unwrap_err().reason(), "wrong_type");
        assert_eq!(p.values.len(), 2);
    }

    #[test]
    fn without_fields_the_timestamp_at_ts_path_is_not_taken_for_a_reading() {
        let fmt = MultiFormat {
            fields: vec![],
            ts_path: Some(path("meta.ts")),
            skip: vec![],
        };
        let p = parse(
            br#"{"temp":21.5,"meta":{"ts":1795251600,"rssi":-60}}"#,
            4096,
            &fmt,
        )
        .unwrap();
        let mut names: Vec<&str> = p.values.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["meta.rssi", "temp"]);
        assert_eq!(p.ts, Some(1_795_251_600_000));
    }

    #[test]
    fn a_numeric_path_level_indexes_an_array() {
        let fmt = MultiFormat {
            fields: vec![("power".into(), path("meters.0.power"))],
            ts_path: Some(path("unixtime")),
            skip: vec![],
        };
        let p = parse(
            br#"{"meters":[{"power":12.5}],"unixtime":1795251600}"#,
            4096,
            &fmt,
        )
        .unwrap();
        assert_eq!(p.values, [("power".to_string(), Ok(12.5))]);
        assert_eq!(p.ts, Some(1_795_251_600_000));
    }

    #[test]
    fn bad_messages_are_refused_with_their_reason() {
        let f = MultiFormat::zigbee2mqtt();
        let reason = |b: &[u8]| parse(b, 64, &f).unwrap_err().reason();
        assert_eq!(reason(&[b'{'; 65]), "too_large");
        assert_eq!(reason(b"{\"t\":\xff}"), "not_utf8");
        assert_eq!(reason(b"  "), "empty");
        assert_eq!(reason(b"{\"t\":"), "bad_json");
        assert_eq!(reason(b"[1,2]"), "wrong_type");
        assert_eq!(reason(b"21.5"), "wrong_type");
        assert_eq!(reason(b"{\"state\":\"ON\"}"), "missing_value");
        assert_eq!(reason(b"{\"t\":1e999}"), "non_finite");
        assert_eq!(
            reason(b"{\"t\":1,\"last_seen\":\"yesterday\"}"),
            "bad_timestamp"
        );
    }

    #[test]
    fn odd_keys_become_safe_metric_names_and_depth_is_bounded() {
        let p = parse(
            br#"{"ENERGY":{"Power Factor":0.9},"a":{"b":{"c":{"d":1}}}}"#,
            4096,
            &MultiFormat::tasmota(),
        )
        .unwrap();
        assert_eq!(metrics(&p), [("ENERGY.Power_Factor".to_string(), 0.9)]);
    }
}
