//! Is the daemon healthy? Pure: the status document and the limits in, the problems out
//! (each with what to do). `weir status` exits 1 when there is any.
//!
//! Unhealthy states:
//! - `not_running`: the daemon does not answer (the document comes from the state database).
//! - `upstream_down`: not connected to the upstream broker for longer than
//!   `--upstream-down-after` (default 2 min): results wait in the outbox.
//! - `ingest_down`: not connected to the local (ingest) broker for longer than
//!   `--ingest-down-after` (default 1 min): MQTT sensors are not heard; the broker keeps
//!   their readings for Weir's persistent session.
//! - `outbox_blocked`: results cannot be written (disk full, read-only filesystem, I/O
//!   error); ingest is paused and local sensors apply their `when_full` policy.
//! - `outbox_unreadable`: the outbox did not answer the status request.
//! - `outbox_damaged`: the uplink cannot read rows to deliver (a damaged file): nothing goes
//!   upstream until the file is repaired or moved aside.
//! - `engine_stalled`: the engine task did not answer within 2 s.
//! - `sensor_failed`: a local sensor is in state `failed`.
//! - `backlog_old`: the oldest unsent row of a class is older than `--backlog-age` (default
//!   15 min): the link is too slow or was down, and TTLs may start to expire rows.

use std::time::Duration;

use serde_json::{Value, json};

/// Thresholds of the time-based states.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Upstream down longer than this is unhealthy.
    pub upstream_down: Duration,
    /// The ingest link down longer than this is unhealthy.
    pub ingest_down: Duration,
    /// An unsent row older than this is unhealthy.
    pub backlog_age: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            upstream_down: Duration::from_secs(120),
            ingest_down: Duration::from_secs(60),
            backlog_age: Duration::from_secs(15 * 60),
        }
    }
}

/// One unhealthy state.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Problem {
    /// Stable name (see the module docs).
    pub code: &'static str,
    /// What is wrong, with the figures.
    pub detail: String,
    /// What to do about it.
    pub action: &'static str,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A duration for humans: `450ms`, `12s`, `3m 20s`, `5h 2m`, `2d 3h`.
pub fn human_ms(ms: i64) -> String {
    let ms = ms.max(0);
    let s = ms / 1000;
    match s {
        _ if ms < 1000 => format!("{ms}ms"),
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// The problems of `doc` (a status document, live or from the state database).
pub fn evaluate(doc: &Value, limits: &Limits) -> Vec<Problem> {
    let now = doc["now_ms"].as_i64().unwrap_or(0);
    let mut out = Vec::new();
    if doc["running"] == false {
        out.push(Problem {
            code: "not_running",
            detail: format!(
                "weir is not running (nothing answers on {})",
                doc["socket"].as_str().unwrap_or("its control socket")
            ),
            action: "start it (systemctl start weir); journalctl -u weir -b tells why it stopped",
        });
    }
    let up = &doc["upstream"];
    if let Some(since) = up["down_since_ms"].as_i64() {
        let down = now - since;
        if down > ms(limits.upstream_down) {
            let err = up["last_error"].as_str().unwrap_or("no error recorded");
            out.push(Problem {
                code: "upstream_down",
                detail: format!(
                    "the upstream broker {} has been unreachable for {} (last error: {err})",
                    up["address"].as_str().unwrap_or("?"),
                    human_ms(down)
                ),
                action: "check the network and the broker's address, port, credentials and certificates ([uplink]); nothing is lost meanwhile, results wait in the outbox",
            });
        }
    }
    let ingest = &doc["ingest"];
    if let Some(since) = ingest["down_since_ms"].as_i64() {
        let down = now - since;
        if down > ms(limits.ingest_down) {
            let err = ingest["last_error"].as_str().unwrap_or("no error recorded");
            out.push(Problem {
                code: "ingest_down",
                detail: format!(
                    "the local broker {} has been unreachable for {} (last error: {err}); MQTT sensors are not heard",
                    ingest["address"].as_str().unwrap_or("?"),
                    human_ms(down)
                ),
                action: "check the local broker (systemctl status mosquitto) and [ingest] host, port and credentials; the broker keeps readings for weir's persistent session meanwhile",
            });
        }
    }
    let clock = &doc["clock"];
    if clock.is_object() && clock["trusted"] == false {
        out.push(Problem {
            code: "clock_unsynchronised",
            detail: format!(
                "the system clock is not synchronised ({}); readings without a timestamp of their own are held until it is",
                clock["sync_source"].as_str().unwrap_or("source unknown")
            ),
            action: "check time synchronisation: timedatectl status, systemctl status systemd-timesyncd (or chrony); nothing is lost, the held readings are stamped when the clock is set",
        });
    }
    let disk = &doc["disk"];
    // A full disk that already blocks the outbox is said once, by outbox_blocked.
    let budget = doc["outbox"]["max_bytes"]
        .as_u64()
        .filter(|_| doc["outbox"]["blocked_reason"] != "disk_full");
    if let (Some(free), Some(budget)) = (disk["free_bytes"].as_u64(), budget) {
        let waiting: u64 = doc["outbox"]["classes"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(_, c)| c["bytes"].as_u64())
            .sum();
        // The outbox may still grow to its budget: the disk must hold the rest of it.
        if free < budget.saturating_sub(waiting) {
            out.push(Problem {
                code: "disk_low",
                detail: format!(
                    "{} free on {}, less than the outbox may still need ({} budget, {} used)",
                    crate::cli::human::bytes(free),
                    disk["path"].as_str().unwrap_or("the state directory"),
                    crate::cli::human::bytes(budget),
                    crate::cli::human::bytes(waiting)
                ),
                action: "free space on that filesystem (df -h, du -sh /var/log/journal) or lower [outbox] max_bytes; when it is full weir pauses ingest rather than lose results",
            });
        }
    }
    let outbox = &doc["outbox"];
    if outbox["blocked"] == true {
        let reason = outbox["blocked_reason"].as_str().unwrap_or("error");
        out.push(Problem {
            code: "outbox_blocked",
            detail: format!("results cannot be written to the outbox ({reason}); ingest is paused"),
            action: match reason {
                "disk_full" => "free space on the state directory's filesystem (df -h /var/lib/weir); weir resumes by itself",
                "read_only" => "the filesystem turned read-only (SD card error): stop weir, run fsck, replace the card if it recurs",
                "damaged" => "the outbox file is damaged: stop weir and run weir outbox verify; to start with an empty outbox move the file (and its -wal and -shm siblings) aside, keeping the copy",
                _ => "read the journal (journalctl -u weir) for the outbox error",
            },
        });
    }
    if let Some(e) = outbox["error"].as_str() {
        out.push(Problem {
            code: "outbox_unreadable",
            detail: format!("the outbox did not answer: {e}"),
            action: "run weir outbox verify; read the journal (journalctl -u weir)",
        });
    }
    if let Some(e) = outbox["damaged"].as_str() {
        out.push(Problem {
            code: "outbox_damaged",
            detail: format!(
                "nothing can be delivered: the outbox {} cannot be read ({e})",
                outbox["path"].as_str().unwrap_or("database")
            ),
            action: "stop weir and run weir outbox verify; to start with an empty outbox move the file (and its -wal and -shm siblings) aside, keeping the copy",
        });
    }
    if doc["engine"]["responding"] == false {
        out.push(Problem {
            code: "engine_stalled",
            detail: "the engine did not answer within 2 s".into(),
            action: "if it persists, systemd's watchdog restarts weir; otherwise restart it (systemctl restart weir) and report the journal",
        });
    }
    if let Some(sensors) = doc["sensors"].as_object() {
        for (name, s) in sensors {
            if s["health"] == "failed" {
                out.push(Problem {
                    code: "sensor_failed",
                    detail: format!(
                        "sensor {name} failed {} polls in a row (last error: {})",
                        s["failures"],
                        s["last_error"].as_str().unwrap_or("-")
                    ),
                    action: "check its wiring and address with weir sensors scan and weir sensors read <name>",
                });
            }
        }
    }
    if let Some(classes) = outbox["classes"].as_object() {
        for (class, c) in classes {
            let age = c["oldest_age_ms"].as_i64().unwrap_or(0);
            if age > ms(limits.backlog_age) {
                out.push(Problem {
                    code: "backlog_old",
                    detail: format!(
                        "the oldest unsent {class} row is {} old ({} rows waiting)",
                        human_ms(age),
                        c["rows"]
                    ),
                    action: "the link is down or too slow for the data: check upstream_down above, [uplink] max_rate, and the TTLs in [outbox.ttl]",
                });
            }
        }
    }
    out
}

/// Adds `"health": {"healthy", "problems"}` to `doc`.
pub fn annotate(doc: &mut Value, limits: &Limits) -> bool {
    let problems = evaluate(doc, limits);
    let healthy = problems.is_empty();
    doc["health"] = json!({"healthy": healthy, "problems": problems});
    healthy
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(doc: &Value) -> Vec<&'static str> {
        evaluate(doc, &Limits::default())
            .into_iter()
            .map(|p| p.code)
            .collect()
    }

    #[test]
    fn a_connected_daemon_with_a_fresh_backlog_is_healthy() {
        let doc = json!({"now_ms": 1_000_000, "upstream": {"connected": true, "down_since_ms": null},
            "outbox": {"blocked": false, "classes": {"aggregate": {"rows": 5, "oldest_age_ms": 1000}}},
            "engine": {"responding": true}, "sensors": {"air": {"health": "ok"}}});
        assert!(codes(&doc).is_empty());
    }

    #[test]
    fn the_upstream_is_down_only_after_the_limit() {
        let doc = |since: i64| json!({"now_ms": 1_000_000, "upstream": {"down_since_ms": since, "address": "h:1"}});
        assert!(codes(&doc(1_000_000 - 120_000)).is_empty());
        assert_eq!(codes(&doc(1_000_000 - 120_001)), ["upstream_down"]);
        let p = &evaluate(&doc(0), &Limits::default())[0];
        assert!(
            p.detail.contains("h:1") && p.detail.contains("16m 40s"),
            "{}",
            p.detail
        );
    }

    #[test]
    fn a_disk_that_cannot_hold_the_rest_of_the_budget_is_low() {
        let doc = |free: u64| {
            json!({"disk": {"path": "/var/lib/weir", "free_bytes": free, "total_bytes": 1u64 << 30},
                "outbox": {"max_bytes": 64u64 << 20, "classes": {"aggregate": {"bytes": 4u64 << 20}}}})
        };
        assert!(codes(&doc(60 << 20)).is_empty());
        let mut full = doc(0);
        full["outbox"]["blocked"] = json!(true);
        full["outbox"]["blocked_reason"] = json!("disk_full");
        assert_eq!(codes(&full), ["outbox_blocked"]);
        let p = evaluate(&doc((60 << 20) - 1), &Limits::default());
        assert_eq!(p[0].code, "disk_low");
        assert!(
            p[0].detail.contains("/var/lib/weir")
                && p[0].detail.contains("64 MiB budget, 4 MiB used"),
            "{}",
            p[0].detail
        );
    }

    #[test]
    fn an_unsynchronised_clock_is_a_problem_a_trusted_one_is_not() {
        let doc =
            |trusted: bool| json!({"clock": {"trusted": trusted, "sync_source": "timesyncd"}});
        assert!(codes(&doc(true)).is_empty());
        let p = evaluate(&doc(false), &Limits::default());
        assert_eq!(p[0].code, "clock_unsynchronised");
        assert!(p[0].detail.contains("timesyncd"), "{}", p[0].detail);
    }

    #[test]
    fn a_blocked_outbox_says_why_and_what_to_do() {
        let doc = json!({"outbox": {"blocked": true, "blocked_reason": "disk_full"}});
        let p = evaluate(&doc, &Limits::default());
        assert_eq!(p[0].code, "outbox_blocked");
        assert!(p[0].detail.contains("disk_full"));
        assert!(p[0].action.contains("free space"));
    }

    #[test]
    fn a_failed_sensor_a_stalled_engine_and_an_old_backlog_are_each_reported() {
        let doc = json!({"now_ms": 0, "engine": {"responding": false},
            "sensors": {"air": {"health": "failed", "failures": 3, "last_error": "NACK"}, "door": {"health": "degraded"}},
            "outbox": {"classes": {"alert": {"rows": 1, "oldest_age_ms": 900_001}, "aggregate": {"rows": 1, "oldest_age_ms": 900_000}}}});
        assert_eq!(
            codes(&doc),
            ["engine_stalled", "sensor_failed", "backlog_old"]
        );
    }

    #[test]
    fn the_ingest_link_is_down_only_after_its_limit_and_says_why() {
        let doc = |since: i64| {
            json!({"now_ms": 1_000_000, "ingest": {"connected": false, "down_since_ms": since,
                "address": "localhost:1883", "last_error": "Connection refused"}})
        };
        assert!(codes(&doc(1_000_000 - 60_000)).is_empty());
        let p = evaluate(&doc(1_000_000 - 60_001), &Limits::default());
        assert_eq!(p[0].code, "ingest_down");
        assert!(
            p[0].detail.contains("localhost:1883") && p[0].detail.contains("Connection refused"),
            "{}",
            p[0].detail
        );
        let up = json!({"now_ms": 1_000_000, "ingest": {"connected": true, "down_since_ms": null}});
        assert!(codes(&up).is_empty());
    }

    #[test]
    fn a_damaged_outbox_names_the_file_even_with_everything_else_fine() {
        let doc = json!({"now_ms": 0, "upstream": {"connected": true, "down_since_ms": null},
            "outbox": {"path": "/var/lib/weir/outbox.db", "blocked": false, "damaged": "corrupt row",
                "classes": {}}, "engine": {"responding": true}});
        let p = evaluate(&doc, &Limits::default());
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].code, "outbox_damaged");
        assert!(
            p[0].detail.contains("/var/lib/weir/outbox.db") && p[0].detail.contains("corrupt row"),
            "{}",
            p[0].detail
        );
    }

    #[test]
    fn a_stopped_daemon_is_never_healthy() {
        let doc = json!({"running": false, "socket": "/run/weir/control.sock"});
        let p = evaluate(&doc, &Limits::default());
        assert_eq!(p[0].code, "not_running");
        assert!(p[0].detail.contains("/run/weir/control.sock"));
    }

    #[test]
    fn annotate_records_the_verdict_in_the_document() {
        let mut doc = json!({"outbox": {"error": "gone"}});
        assert!(!annotate(&mut doc, &Limits::default()));
        assert_eq!(doc["health"]["healthy"], false);
        assert_eq!(doc["health"]["problems"][0]["code"], "outbox_unreadable");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_ms(450), "450ms");
        assert_eq!(human_ms(12_000), "12s");
        assert_eq!(human_ms(200_000), "3m 20s");
        assert_eq!(human_ms(18_120_000), "5h 2m");
        assert_eq!(human_ms(183_600_000), "2d 3h");
        assert_eq!(human_ms(-5), "0ms");
    }
}
