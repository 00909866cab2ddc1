//! `weir tail [KIND]... [--sensor S]`: the running daemon's live stream. JSON lines when
//! the output is not a terminal (or with `--json`), one readable line per event otherwise.
//! A client too slow for the stream is not waited for: the daemon drops events for it and
//! says how many (`{"missed": n}`, or a `-- missed n events --` line).

use std::io::Write;
use std::path::Path;

use serde_json::Value;

use super::{exit, human};
use crate::control::Request;
use crate::control::client::Client;
use crate::control::tap::Kind;

/// Options of `weir tail`.
#[derive(Clone, Debug)]
pub struct Opts<'a> {
    /// Configuration file (names the socket).
    pub config: &'a Path,
    /// Streams to follow; all when empty.
    pub kinds: Vec<Kind>,
    /// Only this sensor.
    pub sensor: Option<String>,
    /// JSON lines even on a terminal.
    pub json: bool,
}

fn time(v: &Value) -> String {
    v.as_i64().map_or_else(|| "-".into(), human::local_time)
}

fn f(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    }
}

/// Where the units of the values come from: the sensor and metric give the unit, when known.
pub type Units<'a> = &'a dyn Fn(&str, &str) -> Option<&'static str>;

/// A terminal's width: the lines of `weir tail` are broken to fit it.
pub const WIDTH: usize = 80;

/// One event for a human: one line, continued on indented lines when longer than [`WIDTH`].
pub fn readable(line: &Value, units: Units<'_>) -> String {
    one_line(line, units)
        .split('\n')
        .map(|l| human::wrap(l, WIDTH, CONTINUED.trim_start_matches('\n')))
        .collect::<Vec<_>>()
        .join("\n")
}

/// How a line continues.
const CONTINUED: &str = "\n    ";

fn one_line(line: &Value, units: Units<'_>) -> String {
    if let Some(n) = line.get("missed") {
        let n = human::plural(n.as_u64().unwrap_or(0), "event", "events");
        return format!("-- missed {n} (this client was too slow) --");
    }
    let m = &line["message"];
    let key = |v: &Value| format!("{}/{}", f(&v["sensor"]), f(&v["metric"]));
    let value = |v: &Value, field: &str| match v[field].as_f64() {
        Some(x) => human::quantity(
            x,
            units(
                v["sensor"].as_str().unwrap_or(""),
                v["metric"].as_str().unwrap_or(""),
            ),
        ),
        None => f(&v[field]),
    };
    match line["kind"].as_str().unwrap_or("") {
        "readings" => format!(
            "{} reading {} = {}{}",
            time(&line["ts"]),
            key(line),
            value(line, "value"),
            if line["ts_source"] == "arrival" {
                " (arrival time)"
            } else {
                ""
            }
        ),
        "alerts" => format!(
            "{} alert {} {} {}: {}",
            time(&m["ts"]),
            f(&m["state"]),
            f(&m["severity"]),
            key(m),
            f(&m["reason"])
        ),
        "agg" => {
            let (start, end) = (m["window_start"].as_i64(), m["window_end"].as_i64());
            let window = match (start, end) {
                (Some(s), Some(e)) => format!(
                    "{} +{}",
                    time(&m["window_start"]),
                    human::duration_ms(e - s)
                ),
                _ => "-".into(),
            };
            let rev = match m["revision"].as_u64() {
                Some(0) => String::new(),
                Some(r) => format!(" rev {r}"),
                None => " rev -".into(),
            };
            let head = format!(
                "{} agg {} {window}{rev}{}:",
                time(&m["emitted_at"]),
                key(m),
                if m["timing"] == "late" { " late" } else { "" },
            );
            let stats = format!(
                "n {}, mean {}, min {}, max {}",
                f(&m["count"]),
                value(m, "mean"),
                value(m, "min"),
                value(m, "max")
            );
            // The figures stay together on a line of their own when both do not fit.
            let sep = if head.chars().count() + 1 + stats.chars().count() > WIDTH {
                CONTINUED
            } else {
                " "
            };
            format!("{head}{sep}{stats}")
        }
        "late" => format!(
            "{} late {} = {} at {}, late by {}",
            time(&m["emitted_at"]),
            key(m),
            value(m, "value"),
            time(&m["ts"]),
            m["late_by_ms"]
                .as_i64()
                .map_or_else(|| "-".into(), human::duration_ms)
        ),
        "deadletter" => format!(
            "{} dead {} {}: {}",
            time(&m["received_at"]),
            f(&m["source"]),
            f(&m["reason"]),
            f(&m["detail"])
        ),
        _ => line.to_string(),
    }
}

/// Every sensor name the configuration gives (MQTT topics name theirs as they arrive).
fn configured_sensors(cfg: &crate::config::Config) -> Vec<&str> {
    let mut names: Vec<&str> = cfg.sims.iter().map(|s| s.name.as_str()).collect();
    names.extend(cfg.devices.names());
    names.sort_unstable();
    names.dedup();
    names
}

/// Follows the stream until the daemon stops or the output closes.
pub fn tail(o: Opts<'_>, out: &mut impl Write, err: &mut impl Write) -> u8 {
    let (cfg, socket) = super::status::daemon_socket(o.config, err);
    if let (Some(cfg), Some(sensor)) = (&cfg, &o.sensor) {
        let names = configured_sensors(cfg);
        if !names.contains(&sensor.as_str()) {
            let known = if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            };
            if cfg.ingest.is_none() {
                let _ = writeln!(
                    err,
                    "error: nothing configured matches sensor `{sensor}` (configured: {known})"
                );
                return exit::FAILURE;
            }
            let _ = writeln!(
                err,
                "note: no configured sensor is named `{sensor}` (configured: {known}); following \
                 anyway, as MQTT topics name their sensors as they arrive"
            );
        }
    }
    let units =
        |sensor: &str, metric: &str| cfg.as_ref().and_then(|c| human::unit(c, sensor, metric));
    let json = o.json || !std::io::IsTerminal::is_terminal(&std::io::stdout());
    let req = Request::Tail {
        kinds: o.kinds,
        sensor: o.sensor,
    };
    let mut client = match Client::connect(&socket) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return super::status::exit_code(&e);
        }
    };
    if let Err(e) = client.tail(&req) {
        let _ = writeln!(err, "error: {e}");
        return exit::FAILURE;
    }
    loop {
        match client.next_line() {
            Ok(Some(line)) => {
                let text = if json {
                    line.to_string()
                } else {
                    readable(&line, &units)
                };
                // The reader went away (`| head`): done.
                if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
                    return exit::OK;
                }
            }
            Ok(None) => {
                let _ = writeln!(err, "weir stopped; the stream ended");
                return exit::OK;
            }
            Err(e) => {
                let _ = writeln!(err, "error: {e}");
                return exit::FAILURE;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn no_units(_: &str, _: &str) -> Option<&'static str> {
        None
    }

    /// The text with the local rendering of each epoch time replaced by `<tN>`.
    fn at(text: String, times: &[i64]) -> String {
        times.iter().enumerate().fold(text, |t, (i, ms)| {
            t.replace(&human::local_time(*ms), &format!("<t{i}>"))
        })
    }

    #[test]
    fn each_kind_reads_as_one_line() {
        let r = json!({"kind": "readings", "sensor": "a", "metric": "t", "value": 21.5, "ts": 0, "ts_source": "event"});
        assert_eq!(at(readable(&r, &no_units), &[0]), "<t0> reading a/t = 21.5");
        let a = json!({"kind": "alerts", "message": {"ts": 1000, "state": "raised", "severity": "warning",
            "sensor": "a", "metric": "t", "reason": "above 30"}});
        assert_eq!(
            at(readable(&a, &no_units), &[1000]),
            "<t0> alert raised warning a/t: above 30"
        );
        let d = json!({"kind": "deadletter", "message": {"received_at": 0, "source": "home/x/t",
            "reason": "bad_json", "detail": "EOF"}});
        assert_eq!(
            at(readable(&d, &no_units), &[0]),
            "<t0> dead home/x/t bad_json: EOF"
        );
        assert_eq!(
            readable(&json!({"missed": 7}), &no_units),
            "-- missed 7 events (this client was too slow) --"
        );
        assert_eq!(
            readable(&json!({"missed": 1}), &no_units),
            "-- missed 1 event (this client was too slow) --"
        );
    }

    #[test]
    fn a_pane_fits_80_columns_with_units_and_sensible_precision() {
        let celsius = |_: &str, m: &str| (m == "temperature").then_some("°C");
        let p = json!({"kind": "agg", "message": {"emitted_at": 1_767_225_661_000_i64,
            "sensor": "greenhouse-air", "metric": "temperature", "window_start": 1_767_225_600_000_i64,
            "window_end": 1_767_225_660_000_i64, "revision": 0, "timing": "on_time", "count": 60,
            "mean": 20.98765432, "min": 20.5, "max": 21.4567}});
        let text = readable(&p, &celsius);
        assert!(text.lines().all(|l| l.chars().count() <= WIDTH), "{text}");
        assert!(
            text.ends_with(":\n    n 60, mean 20.99 °C, min 20.5 °C, max 21.46 °C"),
            "{text}"
        );
        assert_eq!(
            at(
                text.replace("\n    ", " "),
                &[1_767_225_661_000, 1_767_225_600_000]
            ),
            "<t0> agg greenhouse-air/temperature <t1> +1m 0s: n 60, mean 20.99 °C, min 20.5 °C, max 21.46 °C"
        );
        let l = json!({"kind": "late", "message": {"emitted_at": 200_000, "sensor": "a", "metric": "t",
            "value": 1.0, "ts": 86_000, "late_by_ms": 114_000}});
        assert_eq!(
            at(readable(&l, &no_units), &[200_000, 86_000]),
            "<t0> late a/t = 1 at <t1>, late by 1m 54s"
        );
    }
}
