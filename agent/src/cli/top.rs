//! `weir top`: a live view of the running daemon, redrawn every interval, like `vector top`.
//! It asks the control socket for the status document each interval and shows the rates
//! between two documents (readings in, panes and alerts out, PUBACKs, dead letters, late
//! readings, drops), the backlog and its trend, both links, the worst watermark lag and
//! the health verdict, within 80 columns and 24 lines.
//!
//! On a terminal the screen is redrawn in place; otherwise (a pipe, a file) each frame is
//! printed after the previous one, and `--once` prints a single frame after one interval
//! and exits, for scripts and tests. The rates come from counter deltas over the time
//! between the two documents' `now_ms`, never from an assumed interval.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::{exit, human};
use crate::control::Request;
use crate::control::client::Client;
use crate::control::health::{Limits, annotate};

/// Options of `weir top`.
#[derive(Clone, Debug)]
pub struct Opts<'a> {
    /// Configuration file (names the socket).
    pub config: &'a Path,
    /// Time between two frames.
    pub interval: Duration,
    /// One frame, then exit.
    pub once: bool,
}

/// The widest line and the most lines of a frame.
pub const SIZE: (usize, usize) = (80, 24);

fn counter(doc: &Value, name: &str) -> f64 {
    match &doc["counters"][name] {
        Value::Object(by) => by.values().filter_map(Value::as_f64).sum(),
        v => v.as_f64().unwrap_or(0.0),
    }
}

fn backlog(doc: &Value) -> (u64, u64) {
    doc["outbox"]["classes"]
        .as_object()
        .into_iter()
        .flatten()
        .fold((0, 0), |(r, b), (_, c)| {
            (
                r + c["rows"].as_u64().unwrap_or(0),
                b + c["bytes"].as_u64().unwrap_or(0),
            )
        })
}

fn rate(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

fn link(v: &Value, now: i64) -> String {
    if !v.is_object() {
        return "not configured".into();
    }
    let address = v["address"].as_str().unwrap_or("-");
    if v["connected"] == true {
        match v["up_since_ms"].as_i64() {
            Some(t) => format!("{address} up {}", human::duration_ms(now - t)),
            None => format!("{address} connected"),
        }
    } else {
        match v["down_since_ms"].as_i64() {
            Some(t) => format!("{address} DOWN {}", human::duration_ms(now - t)),
            None => format!("{address} DOWN"),
        }
    }
}

/// One frame from the previous and the current status documents (health already
/// annotated on `cur`). Pure: the rates are per second of the documents' own clocks.
pub fn frame(prev: &Value, cur: &Value) -> String {
    let now = cur["now_ms"].as_i64().unwrap_or(0);
    let secs = (now - prev["now_ms"].as_i64().unwrap_or(now)) as f64 / 1000.0;
    let per_s = |names: &[&str]| {
        let d: f64 = names
            .iter()
            .map(|n| counter(cur, n) - counter(prev, n))
            .sum();
        if secs > 0.0 { d.max(0.0) / secs } else { 0.0 }
    };
    let total = |names: &[&str]| names.iter().map(|n| counter(cur, n)).sum::<f64>();
    let mut o = Vec::new();
    o.push(format!(
        "weir top: {}, weir {} up {}, every {}",
        cur["device"].as_str().unwrap_or("-"),
        cur["version"].as_str().unwrap_or("-"),
        human::duration_ms(cur["uptime_s"].as_i64().unwrap_or(0) * 1000),
        human::duration_ms((secs * 1000.0) as i64)
    ));
    let problems = cur["health"]["problems"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    o.push(match problems.len() {
        0 => "health    healthy".to_string(),
        n => format!(
            "health    UNHEALTHY: {} (weir status tells why)",
            problems
                .iter()
                .take(3)
                .map(|p| p["code"].as_str().unwrap_or("?"))
                .collect::<Vec<_>>()
                .join(", ")
                + if n > 3 { ", ..." } else { "" }
        ),
    });
    o.push(String::new());
    o.push(format!(
        "{:<28}{:>12}{:>16}",
        "", "per second", "since start"
    ));
    for (label, names) in [
        ("readings in", &["readings"][..]),
        ("panes out", &["panes_on_time", "panes_late"]),
        ("alerts out", &["alerts_raised", "alerts_cleared"]),
        ("PUBACKs (delivered)", &["acked"]),
        ("late readings", &["late"]),
        ("dead letters", &["deadletter"]),
        ("rejected and dropped", &["rejected", "dropped"]),
        ("evicted and expired", &["evicted", "expired"]),
    ] {
        o.push(format!(
            "  {label:<26}{:>12}{:>16}",
            rate(per_s(names)),
            // Counters are whole numbers (and an empty family's f64 sum is -0).
            total(names).max(0.0) as u64
        ));
    }
    o.push(String::new());
    let (rows, bytes) = backlog(cur);
    let (prev_rows, _) = backlog(prev);
    let trend = if secs > 0.0 {
        (rows as f64 - prev_rows as f64) / secs
    } else {
        0.0
    };
    let word = match trend {
        t if t > 0.0 => "growing",
        t if t < 0.0 => "shrinking",
        _ => "steady",
    };
    o.push(format!(
        "backlog   {}, {}: {word} ({}{} rows/s)",
        human::plural(rows, "row", "rows"),
        human::bytes(bytes),
        if trend > 0.0 { "+" } else { "" },
        rate(trend)
    ));
    let classes = crate::outbox::Class::ALL
        .iter()
        .map(|c| {
            let v = &cur["outbox"]["classes"][c.as_str()];
            format!("{} {}", c.as_str(), v["rows"].as_u64().unwrap_or(0))
        })
        .collect::<Vec<_>>()
        .join(", ");
    o.push(format!("          {classes}"));
    o.push(format!("upstream  {}", link(&cur["upstream"], now)));
    o.push(format!("ingest    {}", link(&cur["ingest"], now)));
    let w = cur["watermarks"].as_array().cloned().unwrap_or_default();
    o.push(match w.first() {
        Some(k) => format!(
            "lag       worst {}/{} {} (of {})",
            k["sensor"].as_str().unwrap_or("-"),
            k["metric"].as_str().unwrap_or("-"),
            human::duration_ms(k["lag_ms"].as_i64().unwrap_or(0)),
            human::plural(w.len() as u64, "key", "keys")
        ),
        None => "lag       no keys yet".into(),
    });
    o.push(format!(
        "engine    {}, {}",
        human::plural(cur["engine"]["keys"].as_u64().unwrap_or(0), "key", "keys"),
        human::plural(
            cur["engine"]["open_windows"].as_u64().unwrap_or(0),
            "open window",
            "open windows"
        )
    ));
    o.into_iter()
        .map(|l| {
            // A long sensor name or address is cut, never wrapped: the frame keeps its shape.
            let l: String = l.chars().take(SIZE.0).collect();
            l.trim_end().to_string() + "\n"
        })
        .collect()
}

fn sample(socket: &Path) -> Result<Value, crate::control::client::ClientError> {
    let mut v = Client::connect(socket)?.request(&Request::Status)?;
    let mut doc = v["status"].take();
    annotate(&mut doc, &Limits::default());
    Ok(doc)
}

/// Shows frames until the output closes or the daemon stops; with `once`, one frame.
pub fn top(o: Opts<'_>, out: &mut impl Write, err: &mut impl Write) -> u8 {
    let (_, socket) = super::status::daemon_socket(o.config, err);
    let terminal = !o.once && std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut prev = match sample(&socket) {
        Ok(d) => d,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return super::status::exit_code(&e);
        }
    };
    loop {
        std::thread::sleep(o.interval);
        let cur = match sample(&socket) {
            Ok(d) => d,
            Err(e) => {
                let _ = writeln!(err, "error: {e}");
                return super::status::exit_code(&e);
            }
        };
        let text = frame(&prev, &cur);
        // On a terminal: home the cursor and clear, so the frame is redrawn in place.
        let written = if terminal {
            write!(out, "\x1b[H\x1b[2J{text}")
        } else if o.once {
            write!(out, "{text}")
        } else {
            writeln!(out, "{text}")
        };
        if let Err(e) = written.and_then(|()| out.flush()) {
            return super::output_failed(&e, "the view", err);
        }
        if o.once {
            return exit::OK;
        }
        prev = cur;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(now: i64, readings: u64, acked: u64, rows: u64) -> Value {
        json!({
            "device": "pi-01", "version": "0.1.0", "uptime_s": 3600, "now_ms": now,
            "counters": {"readings": readings, "panes_on_time": readings / 10, "panes_late": 0,
                "alerts_raised": 1, "alerts_cleared": 0, "acked": acked, "late": 0,
                "deadletter": {"bad_json": 2}, "rejected": {}, "dropped": {}, "evicted": {}, "expired": {}},
            "outbox": {"classes": {"alert": {"rows": 0, "bytes": 0},
                "aggregate": {"rows": rows, "bytes": rows * 400}, "diagnostic": {"rows": 1, "bytes": 200}}},
            "upstream": {"address": "mqtt.example:8883", "connected": false, "down_since_ms": now - 250_000},
            "ingest": {"address": "localhost:1883", "connected": true, "up_since_ms": now - 3_000_000},
            "watermarks": [{"sensor": "greenhouse", "metric": "temperature", "lag_ms": 6000},
                {"sensor": "door", "metric": "open", "lag_ms": 10}],
            "engine": {"keys": 2, "open_windows": 1},
            "health": {"problems": [{"code": "upstream_down"}]},
        })
    }

    #[test]
    fn a_frame_shows_rates_between_two_documents_within_80_by_24() {
        let text = frame(
            &doc(1_000_000, 1000, 500, 240),
            &doc(1_002_000, 1100, 500, 250),
        );
        assert_eq!(
            text,
            "weir top: pi-01, weir 0.1.0 up 1h 0m, every 2s
health    UNHEALTHY: upstream_down (weir status tells why)

                              per second     since start
  readings in                       50.0            1100
  panes out                          5.0             110
  alerts out                         0.0               1
  PUBACKs (delivered)                0.0             500
  late readings                      0.0               0
  dead letters                       0.0               2
  rejected and dropped               0.0               0
  evicted and expired                0.0               0

backlog   251 rows, 98 KiB: growing (+5.0 rows/s)
          alert 0, aggregate 250, diagnostic 1
upstream  mqtt.example:8883 DOWN 4m 10s
ingest    localhost:1883 up 50m 0s
lag       worst greenhouse/temperature 6s (of 2 keys)
engine    2 keys, 1 open window
"
        );
        assert!(text.lines().count() <= SIZE.1);
        assert!(text.lines().all(|l| l.chars().count() <= SIZE.0));
    }

    #[test]
    fn long_names_are_cut_to_the_width_and_an_empty_daemon_says_so() {
        let mut d = doc(0, 0, 0, 0);
        d["upstream"]["address"] = json!("x".repeat(200));
        d["watermarks"] = json!([]);
        let text = frame(&d, &d);
        assert!(text.lines().all(|l| l.chars().count() <= SIZE.0), "{text}");
        assert!(text.contains("lag       no keys yet\n"), "{text}");
        assert!(
            text.contains("backlog   1 row, 200 B: steady (0.0 rows/s)\n"),
            "{text}"
        );
    }
}
