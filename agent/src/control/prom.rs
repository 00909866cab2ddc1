//! The status document in Prometheus text exposition format (version 0.0.4): every counter
//! as `weir_<name>_total` with a HELP text saying what it counts (the direction in the
//! names of messages crossing a link: `weir_ingest_messages_received_total`,
//! `weir_upstream_messages_sent_total`), by-reason counters as one family with a
//! `reason` label, `evicted` and `expired` with a `class` label present with 0 for every
//! class from the start; gauges without a suffix; the daemon adds the `process_*` metrics.
//! Per-key watermarks are summarised by the worst lag (`weir status --json` lists them all:
//! one series per key would not stay bounded for a scraper).

use std::fmt::Write;

use serde_json::Value;

/// Escapes a label value (backslash, double quote, newline).
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A metric name from a counter name: lowercase letters, digits and `_`.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            let l: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = write!(self.0, "{{{}}}", l.join(","));
        }
        let _ = writeln!(self.0, " {v}");
    }

    fn gauge(&mut self, name: &str, help: &str, v: f64) {
        self.family(name, "gauge", help);
        self.sample(name, &[], v);
    }
}

/// Plain counters: the status document's name, the metric's name (with the direction
/// where messages cross a link), and what it counts.
const COUNTERS: [(&str, &str, &str); 16] = [
    (
        "readings",
        "weir_readings_total",
        "Readings handed to the engine, from every source.",
    ),
    (
        "mqtt_messages",
        "weir_ingest_messages_received_total",
        "MQTT messages received from the local broker on the ingest topics.",
    ),
    (
        "ingest_redelivered",
        "weir_ingest_messages_redelivered_total",
        "Ingest messages the local broker sent again whose effect was already saved (acknowledged, not counted twice).",
    ),
    (
        "windowed",
        "weir_windowed_total",
        "Readings added to at least one window.",
    ),
    (
        "late",
        "weir_late_total",
        "Readings too late for all their windows (published on the late topic).",
    ),
    (
        "panes_on_time",
        "weir_panes_on_time_total",
        "On-time window results (revision 0).",
    ),
    (
        "panes_late",
        "weir_panes_late_total",
        "Late window results (revision 1 and up).",
    ),
    (
        "alerts_raised",
        "weir_alerts_raised_total",
        "Alerts raised.",
    ),
    (
        "alerts_cleared",
        "weir_alerts_cleared_total",
        "Alerts cleared.",
    ),
    (
        "produced",
        "weir_produced_total",
        "Messages produced for the outbox: panes, alerts, late readings, dead letters.",
    ),
    (
        "outbox_inserted",
        "weir_outbox_inserted_total",
        "Rows written to the outbox.",
    ),
    (
        "outbox_superseded",
        "weir_outbox_superseded_total",
        "Unsent outbox rows replaced by a newer revision of the same window.",
    ),
    (
        "published",
        "weir_upstream_messages_sent_total",
        "Messages published to the upstream broker (QoS 1).",
    ),
    (
        "acked",
        "weir_upstream_messages_acked_total",
        "Outbox rows deleted on the upstream broker's PUBACK.",
    ),
    (
        "uplink_connects",
        "weir_upstream_connects_total",
        "Successful connections to the upstream broker.",
    ),
    (
        "uplink_errors",
        "weir_upstream_errors_total",
        "Upstream connection failures and drops.",
    ),
];

/// Counters by reason or class: the status document's name, the label, its values
/// known from the start (present with 0 so that rate() and alerts see the series
/// before the first event), and what it counts.
const BY: [(&str, &str, &[&str], &str); 5] = [
    (
        "deadletter",
        "reason",
        &[
            "bad_json",
            "bad_timestamp",
            "clock_unsynced",
            "empty",
            "missing_value",
            "non_finite",
            "not_a_number",
            "not_utf8",
            "too_large",
            "unmapped_topic",
            "wrong_type",
        ],
        "Ingest payloads that could not be read, by reason (published on the deadletter topic).",
    ),
    (
        "rejected",
        "reason",
        &[
            "future_skew",
            "key_limit",
            "out_of_range",
            "too_old",
            "window_limit",
        ],
        "Readings refused, by reason (e.g. future_skew: quarantined).",
    ),
    (
        "dropped",
        "reason",
        &[
            "outbox_error_aggregate",
            "outbox_error_alert",
            "outbox_error_diagnostic",
            "sensor_channel_full",
            "sim_channel_full",
        ],
        "Readings or messages dropped for any other reason.",
    ),
    (
        "evicted",
        "class",
        &["alert", "aggregate", "diagnostic"],
        "Outbox rows evicted by the byte budget before delivery, by class.",
    ),
    (
        "expired",
        "class",
        &["alert", "aggregate", "diagnostic"],
        "Outbox rows expired by their class's TTL before delivery, by class.",
    ),
];

fn counters_text(o: &mut Out, counters: &serde_json::Map<String, Value>) {
    for (key, name, help) in COUNTERS {
        if let Some(v) = counters.get(key) {
            o.family(
                name,
                "counter",
                &format!("{help} Since the pipeline started."),
            );
            o.sample(name, &[], num(v));
        }
    }
    for (key, label, known, help) in BY {
        let Some(by) = counters.get(key) else {
            continue;
        };
        let name = format!("weir_{key}_total");
        o.family(&name, "counter", help);
        let mut values: std::collections::BTreeMap<&str, f64> =
            known.iter().map(|k| (*k, 0.0)).collect();
        if let Some(by) = by.as_object() {
            for (k, n) in by {
                values.insert(k.as_str(), num(n));
            }
        }
        for (k, n) in values {
            o.sample(&name, &[(label, k)], n);
        }
    }
    // Counters this table does not know yet: still exported, under their own name.
    let known = |k: &str| COUNTERS.iter().any(|c| c.0 == k) || BY.iter().any(|b| b.0 == k);
    for (k, v) in counters.iter().filter(|(k, _)| !known(k)) {
        let name = format!("weir_{}_total", sanitize(k));
        match v {
            Value::Object(by) => {
                o.family(&name, "counter", &format!("{k} by reason."));
                for (reason, n) in by {
                    o.sample(&name, &[("reason", reason)], num(n));
                }
            }
            n => {
                o.family(
                    &name,
                    "counter",
                    &format!("{k} since the pipeline started."),
                );
                o.sample(&name, &[], num(n));
            }
        }
    }
}

/// The standard `process_*` metrics of the calling process, from /proc/self (Linux):
/// start time, resident memory, CPU seconds. Appended by the daemon only: `weir
/// metrics` with the daemon down is another process.
pub fn process_text() -> String {
    let mut o = Out(String::new());
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, r)| r.split_whitespace().collect());
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    // USER_HZ: /proc reports times in 1/100 s on every Linux architecture (the kernel
    // converts from its own HZ for this ABI).
    let ticks = 100.0;
    if let (Some(utime), Some(stime)) = (field(14), field(15)) {
        o.family(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
        );
        o.sample("process_cpu_seconds_total", &[], (utime + stime) / ticks);
    }
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|t| {
        t.lines().find_map(|l| {
            l.strip_prefix("btime ")
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
    });
    if let (Some(start), Some(boot)) = (field(22), boot) {
        o.gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            boot + start / ticks,
        );
    }
    let rss_kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
        });
    if let Some(kib) = rss_kib {
        o.gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            kib * 1024.0,
        );
    }
    o.0
}

fn num(v: &Value) -> f64 {
    v.as_f64()
        .or_else(|| v.as_bool().map(|b| f64::from(u8::from(b))))
        .unwrap_or(0.0)
}

/// The text for one status document.
pub fn render(doc: &Value) -> String {
    let mut o = Out(String::new());
    o.gauge(
        "weir_up",
        "1 while the daemon runs a pipeline.",
        f64::from(u8::from(doc["pipeline"] == "running")),
    );
    o.family("weir_build_info", "gauge", "Version of the running weir.");
    o.sample(
        "weir_build_info",
        &[("version", doc["version"].as_str().unwrap_or(""))],
        1.0,
    );
    o.gauge(
        "weir_uptime_seconds",
        "Seconds since weir run started.",
        num(&doc["uptime_s"]),
    );
    let clock = &doc["clock"];
    if clock.is_object() {
        if clock["synchronised"].is_boolean() {
            o.gauge(
                "weir_clock_synchronised",
                "1 while the system clock is synchronised (absent: unknown).",
                num(&clock["synchronised"]),
            );
        }
        o.gauge(
            "weir_clock_trusted",
            "1 once the clock was synchronised since start (or its state is unknown): readings are stamped and quarantined by it.",
            num(&clock["trusted"]),
        );
        o.gauge(
            "weir_clock_held_readings",
            "Readings stamped before the first synchronisation, held for their correction.",
            num(&clock["held_readings"]),
        );
        o.gauge(
            "weir_clock_system_minus_weir_seconds",
            "How far the system clock stepped away from Weir's timeline since it synchronised.",
            num(&clock["system_minus_weir_ms"]) / 1000.0,
        );
    }
    let up = &doc["upstream"];
    if up.is_object() {
        o.gauge(
            "weir_upstream_connected",
            "1 while connected to the upstream broker.",
            num(&up["connected"]),
        );
        o.gauge(
            "weir_upstream_last_puback_timestamp_seconds",
            "Wall time of the last PUBACK from the upstream broker (0: none yet).",
            num(&up["last_puback_ms"]) / 1000.0,
        );
    }
    let ingest = &doc["ingest"];
    if ingest.is_object() {
        o.gauge(
            "weir_ingest_connected",
            "1 while connected to the local (ingest) broker.",
            num(&ingest["connected"]),
        );
        o.family(
            "weir_ingest_reconnects_total",
            "counter",
            "Connections to the local broker after the first one.",
        );
        o.sample(
            "weir_ingest_reconnects_total",
            &[],
            num(&ingest["reconnects"]),
        );
    }
    let outbox = &doc["outbox"];
    if let Some(classes) = outbox["classes"].as_object() {
        for (name, help, field, scale) in [
            (
                "weir_outbox_rows",
                "Rows waiting in the outbox, by class.",
                "rows",
                1.0,
            ),
            (
                "weir_outbox_bytes",
                "Bytes (topic + payload) waiting in the outbox, by class.",
                "bytes",
                1.0,
            ),
            (
                "weir_outbox_oldest_age_seconds",
                "Age of the oldest unsent row, by class (0: empty).",
                "oldest_age_ms",
                1000.0,
            ),
        ] {
            o.family(name, "gauge", help);
            for (class, s) in classes {
                o.sample(name, &[("class", class)], num(&s[field]) / scale);
            }
        }
    }
    if let Some(max) = outbox["max_bytes"].as_f64() {
        o.gauge(
            "weir_outbox_max_bytes",
            "The outbox's byte budget ([outbox] max_bytes); weir_outbox_bytes sum up to it.",
            max,
        );
    }
    if outbox.is_object() {
        o.gauge(
            "weir_outbox_blocked",
            "1 while results cannot be written to the outbox (disk full, read-only).",
            num(&outbox["blocked"]),
        );
        o.gauge(
            "weir_outbox_damaged",
            "1 while rows cannot be read from the outbox for delivery (a damaged file).",
            f64::from(u8::from(outbox["damaged"].is_string())),
        );
    }
    let engine = &doc["engine"];
    if let Some(ms) = engine["last_checkpoint_ms"].as_f64() {
        o.gauge(
            "weir_last_checkpoint_timestamp_seconds",
            "Wall time of the last committed checkpoint (state and results saved together).",
            ms / 1000.0,
        );
    }
    if engine.get("keys").is_some() {
        o.gauge(
            "weir_keys",
            "Keys (sensor, metric) with state.",
            num(&engine["keys"]),
        );
        o.gauge(
            "weir_open_windows",
            "Open windows over all keys.",
            num(&engine["open_windows"]),
        );
        o.gauge(
            "weir_alerts_active",
            "Alerts currently raised.",
            num(&engine["active_alerts"]),
        );
    }
    if let Some(w) = doc["watermarks"].as_array() {
        let worst = w.first().map_or(0.0, |w| num(&w["lag_ms"]) / 1000.0);
        o.gauge(
            "weir_watermark_lag_max_seconds",
            "Largest lag of a key's watermark behind the wall clock.",
            worst,
        );
    }
    if let Some(sensors) = doc["sensors"].as_object() {
        if !sensors.is_empty() {
            o.family(
                "weir_sensor_up",
                "gauge",
                "1 when the local sensor's last poll gave values.",
            );
            for (name, s) in sensors {
                o.sample(
                    "weir_sensor_up",
                    &[("sensor", name)],
                    f64::from(u8::from(s["health"] == "ok")),
                );
            }
            o.family(
                "weir_sensor_failures",
                "gauge",
                "Failed polls since the sensor's last good one.",
            );
            for (name, s) in sensors {
                o.sample(
                    "weir_sensor_failures",
                    &[("sensor", name)],
                    num(&s["failures"]),
                );
            }
        }
    }
    if let Some(counters) = doc["counters"].as_object() {
        counters_text(&mut o, counters);
    }
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counters_get_total_and_reasons_become_labels() {
        let doc = json!({
            "pipeline": "running", "version": "0.1.0", "uptime_s": 5,
            "counters": {"readings": 7, "deadletter": {"bad_json": 2, "not_a_number": 1}, "evicted": {}},
        });
        let text = render(&doc);
        assert!(
            text.contains("# TYPE weir_readings_total counter\nweir_readings_total 7\n"),
            "{text}"
        );
        assert!(
            text.contains("weir_deadletter_total{reason=\"bad_json\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("weir_deadletter_total{reason=\"not_a_number\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE weir_evicted_total counter\n"),
            "{text}"
        );
        assert!(text.contains("weir_up 1\n"), "{text}");
        assert!(
            text.contains("weir_build_info{version=\"0.1.0\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn reason_families_are_present_with_every_known_reason_from_the_start() {
        let doc = json!({"counters": {"deadletter": {"something_new": 1}, "rejected": {}, "dropped": {}},
            "outbox": {"max_bytes": 67_108_864, "blocked": false}});
        let text = render(&doc);
        for (family, reason) in [
            ("deadletter", "bad_json"),
            ("deadletter", "unmapped_topic"),
            ("rejected", "future_skew"),
            ("rejected", "key_limit"),
            ("dropped", "sim_channel_full"),
        ] {
            assert!(
                text.contains(&format!("weir_{family}_total{{reason=\"{reason}\"}} 0\n")),
                "{family} {reason}: {text}"
            );
        }
        // A reason this table does not know yet is still exported.
        assert!(
            text.contains("weir_deadletter_total{reason=\"something_new\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE weir_outbox_max_bytes gauge\nweir_outbox_max_bytes 67108864\n"),
            "{text}"
        );
    }

    #[test]
    fn evictions_are_labelled_by_class_with_every_class_from_the_start() {
        let doc = json!({"counters": {"evicted": {"aggregate": 3}, "expired": {}, "mqtt_messages": 2, "published": 1}});
        let text = render(&doc);
        for class in ["alert", "diagnostic"] {
            assert!(
                text.contains(&format!("weir_evicted_total{{class=\"{class}\"}} 0\n")),
                "{text}"
            );
            assert!(
                text.contains(&format!("weir_expired_total{{class=\"{class}\"}} 0\n")),
                "{text}"
            );
        }
        assert!(
            text.contains("weir_evicted_total{class=\"aggregate\"} 3\n"),
            "{text}"
        );
        assert!(!text.contains("reason=\"aggregate\""), "{text}");
        assert!(
            text.contains("weir_ingest_messages_received_total 2\n"),
            "{text}"
        );
        assert!(
            text.contains("weir_upstream_messages_sent_total 1\n"),
            "{text}"
        );
    }

    #[test]
    fn the_process_metrics_describe_this_process() {
        let text = process_text();
        assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
        assert!(text.contains("\nprocess_cpu_seconds_total "), "{text}");
        assert!(text.contains("\nprocess_start_time_seconds "), "{text}");
    }

    #[test]
    fn backlog_is_a_gauge_per_class_and_ages_are_seconds() {
        let doc = json!({"outbox": {"blocked": false, "classes": {
            "alert": {"rows": 0, "bytes": 0, "oldest_age_ms": null},
            "aggregate": {"rows": 3, "bytes": 120, "oldest_age_ms": 1500},
        }}});
        let text = render(&doc);
        assert!(
            text.contains("weir_outbox_rows{class=\"aggregate\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("weir_outbox_oldest_age_seconds{class=\"aggregate\"} 1.5\n"),
            "{text}"
        );
        assert!(
            text.contains("weir_outbox_oldest_age_seconds{class=\"alert\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("weir_outbox_blocked 0\n"), "{text}");
        assert!(text.contains("weir_up 0\n"), "{text}");
    }

    #[test]
    fn label_values_are_escaped_and_names_sanitized() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let doc = json!({"counters": {"odd-name": 1}, "sensors": {"x\"y": {"health": "ok", "failures": 0}}});
        let text = render(&doc);
        assert!(text.contains("weir_odd_name_total 1\n"), "{text}");
        assert!(
            text.contains("weir_sensor_up{sensor=\"x\\\"y\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn every_sample_line_belongs_to_a_declared_family() {
        let doc = json!({"pipeline": "running", "version": "v", "uptime_s": 1,
            "upstream": {"connected": true, "last_puback_ms": 2000},
            "engine": {"keys": 1, "open_windows": 2, "active_alerts": 0},
            "watermarks": [{"lag_ms": 3000}],
            "counters": {"late": 1, "rejected": {"future_skew": 4}}});
        let text = render(&doc);
        let mut declared = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.insert(rest.split(' ').next().unwrap_or("").to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap_or("");
                assert!(declared.contains(name), "{line} in\n{text}");
            }
        }
        assert!(
            text.contains("weir_watermark_lag_max_seconds 3\n"),
            "{text}"
        );
        assert!(
            text.contains("weir_upstream_last_puback_timestamp_seconds 2\n"),
            "{text}"
        );
    }
}
