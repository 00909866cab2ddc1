//! The human `weir status` table, from a status document annotated with its health
//! ([`super::health::annotate`]). Pure; times are relative to the document's `now_ms`.

use std::fmt::Write;

use serde_json::Value;

use super::health::human_ms;
use crate::cli::human::wrap;

/// The widest line, where text can be broken.
const WIDTH: usize = 80;

/// Rows of the watermark table shown; the rest are counted.
pub const TOP_KEYS: usize = 10;

fn ago(now: i64, t: &Value) -> String {
    match t.as_i64() {
        Some(t) => format!("{} ago", human_ms(now - t)),
        None => "never".into(),
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    }
}

/// `1 key`, `2 keys`, `- keys` when unknown.
fn count(v: &Value, one: &str, many: &str) -> String {
    match v.as_u64() {
        Some(1) => format!("1 {one}"),
        _ => format!("{} {many}", s(v)),
    }
}

/// Left-aligned columns, two spaces apart, each line indented by two.
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut l = String::new();
        for (c, w) in cells.iter().zip(&width) {
            let _ = write!(l, "  {c:<w$}");
        }
        l.trim_end().to_string()
    };
    let _ = writeln!(
        out,
        "{}",
        line(header.iter().map(|h| h.to_string()).collect())
    );
    for r in rows {
        let _ = writeln!(out, "{}", line(r.clone()));
    }
}

/// The system clock's state, in words (`docs/time.md`).
fn clock_line(c: &Value) -> String {
    let src = s(&c["sync_source"]);
    let mut l = match (&c["synchronised"], c["trusted"] == true) {
        (Value::Null, _) => format!("sync state unknown ({src}); the system clock is trusted"),
        (Value::Bool(true), _) => format!("synchronised ({src})"),
        (_, true) => {
            format!("not synchronised now ({src}); Weir keeps the time of its last synchronisation")
        }
        (_, false) => format!(
            "NOT SYNCHRONISED ({src}): nothing is quarantined, {} readings held for the correction",
            s(&c["held_readings"])
        ),
    };
    let off = c["system_minus_weir_ms"].as_i64().unwrap_or(0);
    if c["trusted"] == true && off.abs() > crate::clock::STEP_TOLERANCE_MS {
        let _ = write!(
            l,
            "; the system clock STEPPED {}{} since (not followed; restart to take it)",
            if off > 0 { "+" } else { "-" },
            human_ms(off.abs())
        );
    }
    l
}

/// The whole table.
pub fn render(doc: &Value) -> String {
    let now = doc["now_ms"].as_i64().unwrap_or(0);
    let mut o = String::new();
    let running = doc["running"] == true;
    if running {
        let _ = writeln!(
            o,
            "weir {} running (pid {}), up {}{}",
            s(&doc["version"]),
            s(&doc["pid"]),
            human_ms(doc["uptime_s"].as_i64().unwrap_or(0) * 1000),
            match doc["pipeline"].as_str() {
                Some("reloading") => ", reloading its configuration",
                Some("stopping") => ", STOPPING (delivering what it can)",
                _ => "",
            }
        );
    } else {
        let _ = writeln!(
            o,
            "weir is NOT RUNNING (nothing answers on {}); read-only from the state database:",
            s(&doc["socket"])
        );
    }
    let _ = writeln!(o, "config    {}", s(&doc["config"]));
    if let Some(d) = doc["device"].as_str() {
        let _ = writeln!(o, "device    {d}");
    }
    let health = &doc["health"];
    let problems = health["problems"].as_array().cloned().unwrap_or_default();
    let verdict = match (running, problems.is_empty()) {
        (false, _) => "NOT RUNNING",
        (true, true) => "healthy",
        (true, false) => "UNHEALTHY",
    };
    let _ = writeln!(o, "health    {verdict}");
    // Within 80 columns: the problem and its fix are sentences, broken at spaces.
    for p in &problems {
        let problem = format!("  ! {}: {}", s(&p["code"]), s(&p["detail"]));
        let _ = writeln!(o, "{}", wrap(&problem, WIDTH, "    "));
        let action = format!("    -> {}", s(&p["action"]));
        let _ = writeln!(o, "{}", wrap(&action, WIDTH, "       "));
    }
    let clock = &doc["clock"];
    if clock.is_object() {
        let line = format!("clock     {}", clock_line(clock));
        let _ = writeln!(o, "{}", wrap(&line, WIDTH, "          "));
    }
    let up = &doc["upstream"];
    if up.is_object() {
        let state = if up["connected"] == true {
            match up["up_since_ms"].as_i64() {
                // As the ingest line: how long; the time itself is `up_since_ms` in --json.
                Some(t) => format!("connected for {}", human_ms(now - t)),
                None => "connected".to_string(),
            }
        } else {
            format!(
                "DOWN for {}",
                human_ms(now - up["down_since_ms"].as_i64().unwrap_or(now))
            )
        };
        let _ = writeln!(
            o,
            "upstream  {} {state}, last PUBACK {}",
            s(&up["address"]),
            ago(now, &up["last_puback_ms"])
        );
        if let Some(e) = up["last_error"].as_str() {
            let when = up["last_error_ms"]
                .as_i64()
                .map(|t| format!(" {} ago", human_ms(now - t)))
                .unwrap_or_default();
            let line = format!("          last error{when}: {e}");
            let _ = writeln!(o, "{}", wrap(&line, WIDTH, "            "));
        }
    }
    let ingest = &doc["ingest"];
    if ingest.is_object() {
        let state = if ingest["connected"] == true {
            format!(
                "connected for {}",
                human_ms(now - ingest["up_since_ms"].as_i64().unwrap_or(now))
            )
        } else {
            format!(
                "DOWN for {}",
                human_ms(now - ingest["down_since_ms"].as_i64().unwrap_or(now))
            )
        };
        let _ = writeln!(
            o,
            "ingest    {} {state}, {} reconnects",
            s(&ingest["address"]),
            s(&ingest["reconnects"])
        );
        if let Some(e) = ingest["last_error"].as_str() {
            let line = format!("          last error: {e}");
            let _ = writeln!(o, "{}", wrap(&line, WIDTH, "            "));
        }
    }
    let outbox = &doc["outbox"];
    let blocked = if outbox["blocked"] == true {
        format!(", BLOCKED ({})", s(&outbox["blocked_reason"]))
    } else {
        String::new()
    };
    let _ = writeln!(o, "outbox    {}{blocked}", s(&outbox["path"]));
    if let Some(e) = outbox["error"].as_str() {
        let _ = writeln!(o, "          error: {e}");
    }
    if let Some(e) = outbox["damaged"].as_str() {
        let _ = writeln!(o, "          DAMAGED, nothing is delivered: {e}");
    }
    if let Some(classes) = outbox["classes"].as_object() {
        // In drain-priority order, not the map's alphabetical one.
        let rows: Vec<Vec<String>> = crate::outbox::Class::ALL
            .iter()
            .filter_map(|class| Some((class.as_str(), classes.get(class.as_str())?)))
            .map(|(name, c)| {
                vec![
                    name.to_string(),
                    s(&c["rows"]),
                    c["bytes"]
                        .as_u64()
                        .map_or("-".into(), crate::cli::human::bytes),
                    c["oldest_age_ms"].as_i64().map_or("-".into(), human_ms),
                ]
            })
            .collect();
        table(&mut o, &["class", "rows", "bytes", "oldest unsent"], &rows);
    }
    let disk = &doc["disk"];
    if let (Some(free), Some(total)) = (disk["free_bytes"].as_u64(), disk["total_bytes"].as_u64()) {
        let _ = writeln!(
            o,
            "disk      {} free of {} ({}%) on {}",
            crate::cli::human::bytes(free),
            crate::cli::human::bytes(total),
            free.saturating_mul(100).checked_div(total).unwrap_or(0),
            s(&disk["path"])
        );
    } else if let Some(e) = disk["error"].as_str() {
        let _ = writeln!(
            o,
            "disk      cannot tell the free space of {}: {e}",
            s(&disk["path"])
        );
    }
    let engine = &doc["engine"];
    if engine.is_object() {
        let mut line = String::from("engine    ");
        if running {
            let _ = write!(
                line,
                "{}, {}, ",
                count(&engine["keys"], "key", "keys"),
                count(&engine["open_windows"], "open window", "open windows")
            );
        }
        let _ = write!(
            line,
            "last checkpoint {}",
            ago(now, &engine["last_checkpoint_ms"])
        );
        if engine["responding"] == false {
            line.push_str(" (NOT RESPONDING)");
        }
        let _ = writeln!(o, "{line}");
    }
    if let Some(w) = doc["watermarks"].as_array() {
        let shown = w.len().min(TOP_KEYS);
        let _ = writeln!(
            o,
            "watermark lag, worst first ({})",
            count(&Value::from(w.len()), "key", "keys")
        );
        let rows: Vec<Vec<String>> = w[..shown]
            .iter()
            .map(|k| {
                vec![
                    format!("{}/{}", s(&k["sensor"]), s(&k["metric"])),
                    human_ms(k["lag_ms"].as_i64().unwrap_or(0)),
                ]
            })
            .collect();
        if !rows.is_empty() {
            table(&mut o, &["key", "lag"], &rows);
        }
        if w.len() > shown {
            let _ = writeln!(
                o,
                "  ... and {} more (weir status --json lists all)",
                w.len() - shown
            );
        }
    }
    if let Some(sensors) = doc["sensors"].as_object() {
        if !sensors.is_empty() {
            let _ = writeln!(o, "sensors");
            let rows: Vec<Vec<String>> = sensors
                .iter()
                .map(|(name, x)| {
                    vec![
                        name.clone(),
                        s(&x["source"]),
                        s(&x["health"]),
                        s(&x["failures"]),
                        ago(now, &x["last_ok_ms"]),
                        s(&x["last_error"]),
                    ]
                })
                .collect();
            table(
                &mut o,
                &[
                    "name",
                    "source",
                    "health",
                    "failures",
                    "last ok",
                    "last error",
                ],
                &rows,
            );
        }
    }
    if let Some(alerts) = doc["alerts"].as_array() {
        let _ = writeln!(o, "alerts raised: {}", alerts.len());
        let rows: Vec<Vec<String>> = alerts
            .iter()
            .map(|a| vec![s(&a["id"]), s(&a["severity"]), s(&a["reason"])])
            .collect();
        if !rows.is_empty() {
            table(&mut o, &["id", "severity", "reason"], &rows);
        }
    }
    if let Some(c) = doc["counters"].as_object() {
        let _ = writeln!(o, "counters (since the pipeline started)");
        let plain: Vec<String> = c
            .iter()
            .filter(|(_, v)| !v.is_object())
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        for chunk in plain.chunks(4) {
            let _ = writeln!(o, "  {}", chunk.join(", "));
        }
        for (k, v) in c.iter().filter(|(_, v)| v.is_object()) {
            let by: Vec<String> = v
                .as_object()
                .into_iter()
                .flatten()
                .map(|(r, n)| format!("{r} {n}"))
                .collect();
            let text = if by.is_empty() {
                "none".to_string()
            } else {
                by.join(", ")
            };
            let _ = writeln!(o, "  {k}: {text}");
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({
            "running": true, "version": "0.1.0", "pid": 42, "uptime_s": 75, "now_ms": 100_000,
            "pipeline": "running", "config": "/etc/weir/weir.toml", "device": "pi",
            "upstream": {"address": "h:1883", "connected": false, "down_since_ms": 40_000,
                "last_puback_ms": null, "last_error": "connection refused", "last_error_ms": 70_000},
            "outbox": {"path": "/var/lib/weir/outbox.db", "blocked": false, "classes": {
                "alert": {"rows": 0, "bytes": 0, "oldest_age_ms": null},
                "aggregate": {"rows": 3, "bytes": 456, "oldest_age_ms": 5000}}},
            "engine": {"responding": true, "keys": 2, "open_windows": 2, "last_checkpoint_ms": 99_000},
            "watermarks": (0..12).map(|i| json!({"sensor": format!("s{i}"), "metric": "t", "lag_ms": 1000 * (12 - i)})).collect::<Vec<_>>(),
            "alerts": [],
            "sensors": {},
            "counters": {"readings": 10, "late": 0, "deadletter": {"bad_json": 2}, "evicted": {}},
            "health": {"healthy": false, "problems": [{"code": "upstream_down", "detail": "d", "action": "a"}]},
        })
    }

    #[test]
    fn the_table_shows_the_verdict_the_link_the_backlog_and_counters() {
        let text = render(&doc());
        assert!(
            text.starts_with("weir 0.1.0 running (pid 42), up 1m 15s\n"),
            "{text}"
        );
        assert!(
            text.contains("health    UNHEALTHY\n  ! upstream_down: d\n    -> a\n"),
            "{text}"
        );
        let mut long = doc();
        long["health"]["problems"][0]["detail"] = json!("word ".repeat(30).trim_end());
        let text = render(&long);
        assert!(text.lines().all(|l| l.chars().count() <= WIDTH), "{text}");
        assert!(text.contains("\n  ! upstream_down: word word"), "{text}");
        assert!(text.contains("\n    word word"), "{text}");
        assert!(
            text.contains("upstream  h:1883 DOWN for 1m 0s, last PUBACK never\n"),
            "{text}"
        );
        assert!(
            text.contains("\n          last error 30s ago: connection refused\n"),
            "{text}"
        );
        let mut up = doc();
        up["upstream"] = json!({"address": "h:1883", "connected": true, "up_since_ms": 10_000,
            "last_puback_ms": 99_000});
        assert!(
            render(&up).contains("upstream  h:1883 connected for 1m 30s, last PUBACK 1s ago\n"),
            "{}",
            render(&up)
        );
        assert!(
            text.contains("  class      rows  bytes  oldest unsent\n  alert      0     0 B    -\n  aggregate  3     456 B  5s\n"),
            "{text}"
        );
        assert!(
            text.contains("  deadletter: bad_json 2\n  evicted: none\n"),
            "{text}"
        );
    }

    #[test]
    fn the_watermark_table_shows_the_worst_ten_and_counts_the_rest() {
        let text = render(&doc());
        assert!(
            text.contains("watermark lag, worst first (12 keys)\n"),
            "{text}"
        );
        assert_eq!(count(&serde_json::json!(1), "key", "keys"), "1 key");
        assert_eq!(count(&serde_json::json!(0), "key", "keys"), "0 keys");
        assert!(
            text.contains("engine    2 keys, 2 open windows, "),
            "{text}"
        );
        assert!(text.contains("  key   lag\n  s0/t  12s\n"), "{text}");
        assert!(text.contains("  s9/t  3s\n"), "{text}");
        assert!(!text.contains("s10/t"), "{text}");
        assert!(text.contains("  ... and 2 more"), "{text}");
    }

    #[test]
    fn a_stopped_daemon_is_said_first_and_plainly() {
        let mut d = doc();
        d["running"] = json!(false);
        d["socket"] = json!("/run/weir/control.sock");
        let text = render(&d);
        assert!(
            text.starts_with("weir is NOT RUNNING (nothing answers on /run/weir/control.sock)"),
            "{text}"
        );
        assert!(text.contains("health    NOT RUNNING\n"), "{text}");
    }
}
