//! `weir tail [KIND]... [--sensor S]`: the running daemon's live stream. JSON lines when
//! the output is not a terminal (or with `--json`), one readable line per event otherwise.
//! A client too slow for the stream is not waited for: the daemon drops events for it and
//! says how many (`{"missed": n}`, or a `-- missed n events --` line).

use std::io::Write;
use std::path::Path;

use serde_json::Value;

use super::exit;
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
    v.as_i64()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| "-".into())
}

fn f(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    }
}

/// One event line for a human.
pub fn readable(line: &Value) -> String {
    if let Some(n) = line.get("missed") {
        return format!("-- missed {n} events (this client was too slow) --");
    }
    let m = &line["message"];
    match line["kind"].as_str().unwrap_or("") {
        "readings" => format!(
            "{}  reading  {}/{} = {}{}",
            time(&line["ts"]),
            f(&line["sensor"]),
            f(&line["metric"]),
            f(&line["value"]),
            if line["ts_source"] == "arrival" {
                " (arrival time)"
            } else {
                ""
            }
        ),
        "alerts" => format!(
            "{}  alert    {} {} {}/{}: {}",
            time(&m["ts"]),
            f(&m["state"]),
            f(&m["severity"]),
            f(&m["sensor"]),
            f(&m["metric"]),
            f(&m["reason"])
        ),
        "agg" => format!(
            "{}  agg      {}/{} [{} .. {}) rev {} count {} mean {} min {} max {}",
            time(&m["emitted_at"]),
            f(&m["sensor"]),
            f(&m["metric"]),
            time(&m["window_start"]),
            time(&m["window_end"]),
            f(&m["revision"]),
            f(&m["count"]),
            f(&m["mean"]),
            f(&m["min"]),
            f(&m["max"])
        ),
        "late" => format!(
            "{}  late     {}/{} = {} at {}, late by {} ms",
            time(&m["emitted_at"]),
            f(&m["sensor"]),
            f(&m["metric"]),
            f(&m["value"]),
            time(&m["ts"]),
            f(&m["late_by_ms"])
        ),
        "deadletter" => format!(
            "{}  dead     {} {}: {}",
            time(&m["received_at"]),
            f(&m["source"]),
            f(&m["reason"]),
            f(&m["detail"])
        ),
        _ => line.to_string(),
    }
}

/// Follows the stream until the daemon stops or the output closes.
pub fn tail(o: Opts<'_>, out: &mut impl Write, err: &mut impl Write) -> u8 {
    let (_, socket) = super::status::daemon_socket(o.config, err);
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
                    readable(&line)
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

    #[test]
    fn each_kind_reads_as_one_line() {
        let r = json!({"kind": "readings", "sensor": "a", "metric": "t", "value": 21.5, "ts": 0, "ts_source": "event"});
        assert_eq!(
            readable(&r),
            "1970-01-01T00:00:00.000Z  reading  a/t = 21.5"
        );
        let a = json!({"kind": "alerts", "message": {"ts": 1000, "state": "raised", "severity": "warning",
            "sensor": "a", "metric": "t", "reason": "above 30"}});
        assert_eq!(
            readable(&a),
            "1970-01-01T00:00:01.000Z  alert    raised warning a/t: above 30"
        );
        let d = json!({"kind": "deadletter", "message": {"received_at": 0, "source": "home/x/t",
            "reason": "bad_json", "detail": "EOF"}});
        assert_eq!(
            readable(&d),
            "1970-01-01T00:00:00.000Z  dead     home/x/t bad_json: EOF"
        );
        assert_eq!(
            readable(&json!({"missed": 7})),
            "-- missed 7 events (this client was too slow) --"
        );
    }
}
