//! `weir status` (human and `--json`), `weir metrics` and the Prometheus endpoint against a
//! running daemon whose upstream broker is down and which dead-lettered malformed payloads;
//! then `weir status` against the stopped daemon (read-only from the state database).

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use weir_tests::snapshot::{assert_snapshot, redact_json, replace};
use weir_tests::{
    Broker, Config, Publisher, Weir, cli_cfg, free_port, now_ms, scratch, toml, wait_for,
};

const WAIT: Duration = Duration::from_secs(30);

/// Every whitespace-separated token that is a duration (`12s`, `450ms`, `3m`) becomes `<t>`,
/// and the number after each word of `after` becomes `<n>`.
fn redact_text(text: &str, after: &[&str]) -> String {
    // The free space differs from run to run: the line stays, its figures go.
    let text = text
        .lines()
        .map(|l| {
            match l
                .strip_prefix("disk      ")
                .and_then(|r| r.split_once(" on "))
            {
                Some((_, path)) => format!("disk      <free> on {path}\n"),
                None => format!("{l}\n"),
            }
        })
        .collect::<String>();
    let text = text.as_str();
    let is_dur = |t: &str| {
        let t = t.trim_end_matches([',', ')']);
        let digits = t.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        let unit = &t[digits.len()..];
        !digits.is_empty()
            && digits.chars().all(|c| c.is_ascii_digit())
            && ["ms", "s", "m", "h", "d"].contains(&unit)
    };
    text.lines()
        .map(|line| {
            let mut out: Vec<String> = Vec::new();
            let mut words = line.split(' ').peekable();
            while let Some(w) = words.next() {
                if after.contains(&w.trim_end_matches(',')) && words.peek().is_some() {
                    out.push(w.to_string());
                    let n = words.next().unwrap_or("");
                    let tail = if n.ends_with(',') { "," } else { "" };
                    out.push(format!("<n>{tail}"));
                } else if is_dur(w) {
                    let tail = w.trim_start_matches(|c: char| c.is_ascii_alphanumeric());
                    out.push(format!("<t>{tail}"));
                } else {
                    out.push(w.to_string());
                }
            }
            out.join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
        // "1m 5s" and "59s" are both one time.
        .replace("<t> <t>", "<t>")
        + "\n"
}

fn status(cfg: &Path, json: bool) -> (Option<i32>, String) {
    let args = ["status", "--upstream-down-after", "1s", "--json"];
    let out = cli_cfg(&args[..if json { 4 } else { 3 }], cfg);
    (out.code, out.all())
}

fn status_json(cfg: &Path) -> Value {
    weir_tests::status_json(cfg, &["--upstream-down-after", "1s"]).1
}

fn scrape(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{e}"));
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("{e}"));
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut text = String::new();
    s.read_to_string(&mut text)
        .unwrap_or_else(|e| panic!("{e}"));
    text
}

/// The fields that differ between runs.
const VOLATILE: &[&str] = &[
    "free_bytes",
    "last_error_ms",
    "total_bytes",
    "now_ms",
    "started_at",
    "pipeline_started_at",
    "uptime_s",
    "pid",
    "down_since_ms",
    "up_since_ms",
    "oldest_ms",
    "oldest_age_ms",
    "watermark_ms",
    "lag_ms",
    "last_checkpoint_ms",
    "detail",
    "checkpoints",
    "uplink_errors",
];

#[test]
fn status_reports_backlog_and_dead_letters_with_the_upstream_down_then_reads_the_database_when_stopped()
 {
    let dir = scratch();
    let d = dir.path();
    let local = Broker::start_new(d);
    // The ingest's persistent session exists before weir: the broker queues for it.
    local.create_session("st-ingest", "home/+/+");
    let upstream = free_port(); // nothing listens: the upstream broker is down
    let metrics = free_port();
    let cfg = Config::new("st", d)
        .agent(toml! {
            runtime_dir = d.join("run").as_path(), shutdown_grace = "500ms",
            checkpoint_interval = "100ms",
        })
        .engine(toml! { max_out_of_orderness = "100ms", allowed_lateness = "0s" })
        .upstream(upstream)
        .uplink(toml! { reconnect_max = "500ms" })
        .ingest(local.port, "st-ingest")
        .topic("home/+/+", "{2}", "{3}")
        .set("metrics", "listen", format!("127.0.0.1:{metrics}"))
        .write();

    // Two windows of a close (its watermark is t0 + 2.9 s); two of a and two of b stay open.
    // Three payloads are malformed.
    let pub_ = Publisher::connect(local.port);
    let t0 = (now_ms() / 10_000 - 6) * 10_000;
    for (sensor, offsets) in [("a", &[0, 1000, 2000, 3000][..]), ("b", &[0, 1000][..])] {
        for (i, off) in offsets.iter().enumerate() {
            let payload = format!("{{\"value\": {}.5, \"ts\": {}}}", 20 + i, t0 + off);
            pub_.publish(&format!("home/{sensor}/t"), payload);
        }
    }
    pub_.publish("home/c/t", "twenty");
    pub_.publish("home/c/t", "warm");
    pub_.publish("home/c/t", "{\"value\": 21.5");
    // A synchronised clock whatever the machine's (the clock line is in the snapshots).
    std::fs::write(d.join("clock"), "0 1").unwrap_or_else(|e| panic!("{e}"));
    let clock = d.join("clock").display().to_string();
    let mut weir = Weir::start_with(&cfg, d, &[("WEIR_TEST_CLOCK", &clock)]);

    let doc = wait_for(WAIT, || {
        let v = status_json(&cfg);
        let done = v["counters"]["readings"] == 6
            && v["counters"]["deadletter"]["not_a_number"] == 2
            && v["outbox"]["classes"]["aggregate"]["rows"] == 2
            && v["outbox"]["classes"]["diagnostic"]["rows"] == 3
            && v["watermarks"].as_array().is_some_and(|w| w.len() == 2)
            && v["health"]["problems"][0]["code"] == "upstream_down";
        done.then_some(v)
    })
    .unwrap_or_else(|| {
        panic!(
            "status never showed the backlog: {}\n{}",
            status_json(&cfg),
            weir.log()
        )
    });
    assert_eq!(doc["upstream"]["connected"], false);

    let port = upstream.to_string();
    let local_port = local.port.to_string();
    let dir_s = d.display().to_string();
    let pid = format!("pid {}", weir.pid().unwrap_or(0));
    let subst = [
        (dir_s.as_str(), "<dir>"),
        (port.as_str(), "<port>"),
        (local_port.as_str(), "<local-port>"),
        (pid.as_str(), "pid <pid>"),
        (env!("CARGO_PKG_VERSION"), "<version>"),
    ];

    let (code, human) = status(&cfg, false);
    assert_eq!(
        code,
        Some(1),
        "running with the upstream down is unhealthy:\n{human}"
    );
    assert_snapshot(
        "status_running_upstream_down",
        &redact_text(&replace(&human, &subst), &["checkpoints", "uplink_errors"]),
    );

    let (code, json) = status(&cfg, true);
    assert_eq!(code, Some(1));
    let mut v: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(v["health"]["problems"][0]["code"], "upstream_down");
    redact_json(&mut v, VOLATILE);
    let text = serde_json::to_string_pretty(&v).unwrap_or_default();
    assert_snapshot("status_running_upstream_down_json", &replace(&text, &subst));

    // The same counters in Prometheus text, from the endpoint and through the socket.
    let http = scrape(metrics);
    assert!(http.starts_with("HTTP/1.1 200 OK\r\n"), "{http}");
    let cli = cli_cfg(&["metrics"], &cfg).stdout;
    for line in [
        "weir_deadletter_total{reason=\"not_a_number\"} 2\n",
        "weir_deadletter_total{reason=\"bad_json\"} 1\n",
        "weir_outbox_rows{class=\"aggregate\"} 2\n",
        "weir_outbox_rows{class=\"diagnostic\"} 3\n",
        "weir_readings_total 6\n",
        "weir_upstream_connected 0\n",
    ] {
        assert!(http.contains(line), "{line} not in\n{http}");
        assert!(cli.contains(line), "{line} not in\n{cli}");
    }

    assert!(
        weir.terminate(WAIT).is_some_and(|s| s.success()),
        "{}",
        weir.log()
    );
    assert!(
        !d.join("run/control.sock").exists(),
        "the socket is removed at exit"
    );
    let db = d.join("state/outbox.db");
    let before = std::fs::read(&db).unwrap_or_default();

    let (code, human) = status(&cfg, false);
    assert_eq!(code, Some(3), "{human}");
    assert_snapshot(
        "status_stopped",
        &redact_text(&replace(&human, &subst), &[]),
    );
    let (code, json) = status(&cfg, true);
    assert_eq!(code, Some(3));
    let mut v: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    redact_json(&mut v, VOLATILE);
    let text = serde_json::to_string_pretty(&v).unwrap_or_default();
    assert_snapshot("status_stopped_json", &replace(&text, &subst));
    assert_eq!(
        std::fs::read(&db).unwrap_or_default(),
        before,
        "status wrote to the outbox"
    );
}
