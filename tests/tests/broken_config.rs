//! A configuration file with a mistake does not lock the technician out of the running
//! daemon: `status`, `metrics`, `log-level` and `tail` still reach it (warning about the
//! file). And `weir metrics` with the daemon down prints `weir_up 0` and what the state
//! database says, exit 0, so a node_exporter textfile never keeps a stale `weir_up 1`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use weir_tests::{Weir, free_port, scratch, wait_for, weir_command};

const WAIT: Duration = Duration::from_secs(30);

fn weir(cfg: &Path, args: &[&str]) -> Output {
    weir_command()
        .args(args)
        .arg("--config")
        .arg(cfg)
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Parses `text` with the Prometheus project's own Python parser (Debian's
/// python3-prometheus-client, installed by scripts/deps.sh) and checks what a
/// scraper relies on: every family has HELP, the evicted and expired counters are
/// labelled by class with every class present, the by-reason counters present with their
/// known reasons from the start, the outbox budget, the process metrics are there while
/// the daemon runs, and the MQTT counters say their direction.
fn check_exposition(text: &str) {
    const PY: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
fams = {f.name: f for f in text_string_to_metric_families(sys.stdin.read())}
for f in fams.values():
    assert f.documentation.strip(), f"{f.name} has no HELP"
up = fams["weir_up"].samples[0].value
for name in ("weir_evicted", "weir_expired"):
    if name in fams:
        classes = sorted(s.labels["class"] for s in fams[name].samples)
        assert classes == ["aggregate", "alert", "diagnostic"], (name, classes)
assert fams["weir_outbox_max_bytes"].samples[0].value > 0, "weir_outbox_max_bytes"
for name, reason in (("weir_deadletter", "bad_json"), ("weir_rejected", "future_skew"), ("weir_dropped", "sim_channel_full")):
    if name in fams:
        reasons = [s.labels["reason"] for s in fams[name].samples]
        assert reason in reasons, (name, reasons)
    else:
        assert up == 0, f"{name} missing while running"
if up == 1:
    for name in ("process_start_time_seconds", "process_resident_memory_bytes", "process_cpu_seconds", "weir_ingest_messages_received", "weir_upstream_messages_sent"):
        assert name in fams, f"{name} missing: {sorted(fams)}"
    assert fams["process_resident_memory_bytes"].samples[0].value > 1e6
print(len(fams))
"#;
    let python = "/usr/bin/python3";
    let mut child = std::process::Command::new(python)
        .args(["-c", PY])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{python}: {e} (scripts/deps.sh installs python3-prometheus-client)")
        });
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        stdin
            .write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "the Prometheus parser refused the text:\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_broken_config_still_reaches_the_daemon_and_metrics_say_down_when_it_is() {
    let dir = scratch();
    let d = dir.path();
    let cfg = d.join("weir.toml");
    let good = format!(
        r#"
[agent]
device = "bc"
state_dir = "{dir}/state"
runtime_dir = "{dir}/run"
shutdown_grace = "500ms"
checkpoint_interval = "100ms"
[engine.window]
size = "1s"
[uplink]
host = "127.0.0.1"
port = {upstream}
[[sim]]
name = "s"
interval = "50ms"
"#,
        dir = d.display(),
        upstream = free_port(), // nothing listens: results stay in the outbox
    );
    std::fs::write(&cfg, &good).unwrap_or_else(|e| panic!("{e}"));
    let mut daemon = Weir::start(&cfg, d);
    let panes = wait_for(WAIT, || {
        let out = weir(&cfg, &["metrics"]);
        let t = text(&out.stdout);
        let rows = t.contains("weir_outbox_rows{class=\"aggregate\"} ")
            && !t.contains("weir_outbox_rows{class=\"aggregate\"} 0\n");
        (t.contains("weir_up 1\n") && rows).then_some(())
    });
    assert!(panes.is_some(), "{}", daemon.log());

    // The technician edits the file and makes a mistake; the daemon runs on.
    std::fs::write(&cfg, good.replace("size = \"1s\"", "size = \"soon\""))
        .unwrap_or_else(|e| panic!("{e}"));
    let out = weir(&cfg, &["status"]);
    // Running: 0 healthy (the upstream has not been down long enough to count) or 1.
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{:?} {}",
        out.status,
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("bc"), "{}", text(&out.stdout));
    let warn = text(&out.stderr);
    assert!(
        warn.starts_with("warning: ") && warn.contains("engine.window.size"),
        "{warn}"
    );
    assert!(
        warn.contains("the running daemon keeps the config it last loaded"),
        "{warn}"
    );
    let out = weir(&cfg, &["metrics"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("weir_up 1\n"));
    check_exposition(&text(&out.stdout));
    let out = weir(&cfg, &["log-level", "debug"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("log filter changed"),
        "{}",
        text(&out.stdout)
    );
    let mut tail = weir_command()
        .args(["tail", "--json", "--config"])
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let first = tail.stdout.take().map(|s| {
        let mut line = String::new();
        let _ = BufReader::new(s).read_line(&mut line);
        line
    });
    let _ = tail.kill();
    let _ = tail.wait();
    assert!(
        first.as_deref().is_some_and(|l| l.starts_with('{')),
        "tail printed {first:?}"
    );

    // A file that is not even TOML: the socket is the default one, which this test's
    // daemon does not use: the file's mistake and the absent daemon are both said.
    std::fs::write(&cfg, "[agent\n").unwrap_or_else(|e| panic!("{e}"));
    let out = weir(&cfg, &["status"]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("asking it at /run/weir/control.sock"),
        "{}",
        text(&out.stderr)
    );

    // Daemon down: weir_up 0 and the backlog from the state database, exit 0.
    std::fs::write(&cfg, &good).unwrap_or_else(|e| panic!("{e}"));
    assert!(daemon.terminate(WAIT).is_some(), "{}", daemon.log());
    let out = weir(&cfg, &["metrics"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let t = text(&out.stdout);
    assert!(t.contains("weir_up 0\n"), "{t}");
    check_exposition(&t);
    assert!(t.contains("weir_outbox_rows{class=\"aggregate\"} "), "{t}");
    assert!(
        !t.contains("weir_outbox_rows{class=\"aggregate\"} 0\n"),
        "{t}"
    );
    assert!(t.contains("weir_last_checkpoint_timestamp_seconds "), "{t}");
    assert!(
        text(&out.stderr).contains("weir is not running"),
        "{}",
        text(&out.stderr)
    );
}
