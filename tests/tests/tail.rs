//! `weir tail` follows the running daemon's readings and alerts, filtered by sensor, and
//! `weir log-level` changes the running daemon's log filter.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use weir_tests::{
    Broker, Config, Publisher, Weir, cli_cfg, now_ms, scratch, toml, wait_for, weir_command,
};

const WAIT: Duration = Duration::from_secs(30);

fn config(d: &Path, port: u16) -> std::path::PathBuf {
    Config::new("tl", d)
        .agent(toml! {
            runtime_dir = d.join("run").as_path(), shutdown_grace = "500ms",
            checkpoint_interval = "100ms",
        })
        .uplink(toml! { host = "127.0.0.1", port = port })
        .ingest(port, "tl-ingest")
        .topic("home/+/+", "{2}", "{3}")
        .detector(
            toml! { name = "hot", kind = "threshold", sensor = "*", metric = "*", high = 100.0 },
        )
        .write()
}

fn sensor_of(line: &Value) -> &str {
    line["sensor"]
        .as_str()
        .or_else(|| line["message"]["sensor"].as_str())
        .unwrap_or("")
}

#[test]
fn tail_follows_readings_and_alerts_of_one_sensor_and_the_log_level_changes_live() {
    let dir = scratch();
    let d = dir.path();
    let broker = Broker::start_new(d);
    broker.create_session("tl-ingest", "home/+/+");
    let cfg = config(d, broker.port);
    // Info only: the debug line of a dead letter must appear only after the change.
    let mut weir = Weir::start_with(&cfg, d, &[("WEIR_LOG", "info")]);
    let publisher = Publisher::connect(broker.port);
    let ready = wait_for(WAIT, || {
        (cli_cfg(&["status"], &cfg).code == Some(0)).then_some(())
    });
    assert!(
        ready.is_some(),
        "weir did not become healthy: {}",
        weir.log()
    );

    let mut tail = weir_command()
        .args(["tail", "readings", "alerts", "--sensor", "a", "--config"])
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let (tx, rx) = mpsc::channel::<Value>();
    let stdout = tail.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let v = serde_json::from_str(&line).unwrap_or(Value::String(line));
            if tx.send(v).is_err() {
                break;
            }
        }
    });

    // Until the tail is subscribed, readings pass unseen: publish until one arrives.
    let mut lines = Vec::new();
    let end = Instant::now() + WAIT;
    let mut ts = now_ms() - 5_000;
    while lines.is_empty() && Instant::now() < end {
        ts += 10;
        publisher.publish("home/b/t", format!("{{\"value\": 1, \"ts\": {ts}}}"));
        publisher.publish("home/a/t", format!("{{\"value\": 1, \"ts\": {ts}}}"));
        if let Ok(v) = rx.recv_timeout(Duration::from_millis(200)) {
            lines.push(v);
        }
    }
    assert!(!lines.is_empty(), "tail printed nothing: {}", weir.log());
    publisher.publish(
        "home/b/t",
        format!("{{\"value\": 150, \"ts\": {}}}", ts + 10),
    );
    publisher.publish(
        "home/a/t",
        format!("{{\"value\": 150, \"ts\": {}}}", ts + 20),
    );
    let end = Instant::now() + WAIT;
    while !lines.iter().any(|l| l["kind"] == "alerts") && Instant::now() < end {
        if let Ok(v) = rx.recv_timeout(Duration::from_millis(200)) {
            lines.push(v);
        }
    }
    let _ = tail.kill();
    let _ = tail.wait();
    let alert = lines
        .iter()
        .find(|l| l["kind"] == "alerts")
        .unwrap_or_else(|| panic!("no alert in the tail: {lines:?}"));
    assert_eq!(alert["message"]["state"], "raised", "{alert}");
    assert_eq!(alert["message"]["sensor"], "a", "{alert}");
    assert!(
        lines
            .iter()
            .any(|l| l["kind"] == "readings" && l["value"] == 150.0),
        "{lines:?}"
    );
    for l in &lines {
        assert_eq!(sensor_of(l), "a", "another sensor's event in the tail: {l}");
        assert!(
            l["kind"] == "readings" || l["kind"] == "alerts",
            "a kind not asked for: {l}"
        );
    }

    // Log level: a dead letter is logged at debug, so not yet...
    publisher.publish("home/c/t", "twenty");
    let counted = wait_for(WAIT, || {
        cli_cfg(&["metrics"], &cfg)
            .stdout
            .contains("weir_deadletter_total{reason=\"not_a_number\"} 1\n")
            .then_some(())
    });
    assert!(counted.is_some(), "{}", weir.log());
    assert!(!weir.log().contains("dead letter"), "{}", weir.log());
    let out = cli_cfg(&["log-level", "info,weir=debug"], &cfg);
    assert_eq!(
        out.stdout,
        "log filter changed from \"info\" to \"info,weir=debug\": \
         DEBUG and up from weir; INFO and up from everything else\n"
    );
    // ...and after the change it is.
    publisher.publish("home/c/t", "warm");
    weir.wait_log("dead letter", WAIT);

    // The level names people type: "warning" is WARN (tracing alone would read it as
    // a module name and turn every line off, ERROR included).
    let log_level = |args: &[&str]| {
        let mut all = vec!["log-level"];
        all.extend_from_slice(args);
        let out = cli_cfg(&all, &cfg);
        (out.code, out.stdout, out.stderr)
    };
    let (code, out, _) = log_level(&["warning"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        out,
        "log filter changed from \"info,weir=debug\" to \"warn\": WARN and up from everything\n"
    );
    // A filter that would silence ERROR is refused and changes nothing...
    let (code, _, err) = log_level(&["weir::uplink=debug"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("ERROR included") && err.contains("fix:"),
        "{err}"
    );
    let (code, _, err) = log_level(&["loud"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("\"loud\" is not a level"), "{err}");
    let (_, out, _) = log_level(&[]);
    assert!(
        out.starts_with("log filter \"warn\": WARN and up from everything (logging to "),
        "{out}"
    );
    // ...unless it says so.
    let (code, out, _) = log_level(&["--allow-silence", "weir=error"]);
    assert_eq!(code, Some(0));
    assert!(
        out.ends_with(": ERROR from weir; nothing from everything else\n"),
        "{out}"
    );
    weir.stop_ok(WAIT);
}
