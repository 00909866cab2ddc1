//! Health end to end (issue 13, items 6 to 8): what `weir status` (text, `--json`,
//! exit code) and `weir metrics` say when the outbox is damaged, the local broker
//! is down or the disk is full; that systemd's watchdog keeps being fed while
//! results are held; and that a restart after a long stop blames no sensor for
//! Weir's own downtime.
//!
//! The full-disk test mounts a tmpfs and so runs as root, as CI does.

mod mounts;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use weir_tests::{
    Broker, Config, Consumer, Msg, Weir, free_port, now_ms, scratch, toml, wait_for, weir_command,
};

const WAIT: Duration = Duration::from_secs(30);

/// A config in `dir`: device `h`, 1 s windows, checkpoints every 100 ms, the
/// upstream broker at `up`; `extra` adds the scenario's sources and settings.
fn config(dir: &Path, state: &Path, up: u16, extra: impl FnOnce(Config) -> Config) -> PathBuf {
    extra(
        Config::new("h", dir)
            .agent(toml! {
                state_dir = state, runtime_dir = dir.join("run").as_path(),
                shutdown_grace = "500ms", checkpoint_interval = "100ms",
            })
            .engine(toml! { max_out_of_orderness = "0s", allowed_lateness = "0s" })
            .upstream(up)
            .uplink(toml! { reconnect_max = "500ms", status_interval = "1s" }),
    )
    .write()
}

/// MQTT ingest of `dev/<sensor>/<metric>` from the broker at `port`.
fn ingest(port: u16, client_id: &str) -> impl FnOnce(Config) -> Config {
    move |c| c.ingest(port, client_id).topic("dev/+/+", "{2}", "{3}")
}

/// One simulated sensor `s`, reading every 100 ms.
fn sim(c: Config) -> Config {
    c.sim(toml! { name = "s", metric = "t", interval = "100ms" })
}

/// `weir status --json` with `args`: the exit code and the document.
fn status(cfg: &Path, args: &[&str]) -> (Option<i32>, Value) {
    let out = weir_command()
        .args(["status", "--json", "--config"])
        .arg(cfg)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let doc = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code(), doc)
}

fn problems(doc: &Value) -> Vec<String> {
    doc["health"]["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["code"].as_str().map(str::to_string))
        .collect()
}

fn metrics(cfg: &Path) -> String {
    let out = weir_command()
        .args(["metrics", "--config"])
        .arg(cfg)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs weir with the upstream down until the outbox holds a few aggregate rows, then
/// stops it: an outbox file with rows, for the damage tests.
fn outbox_with_rows(dir: &Path, state: &Path) -> PathBuf {
    let cfg = config(dir, state, free_port(), sim);
    let mut weir = Weir::start(&cfg, dir);
    let filled = wait_for(WAIT, || {
        let (_, doc) = status(&cfg, &[]);
        (doc["outbox"]["classes"]["aggregate"]["rows"].as_u64() >= Some(3)).then_some(())
    });
    assert!(filled.is_some(), "no rows in the outbox:\n{}", weir.log());
    assert!(
        weir.terminate(WAIT).is_some_and(|s| s.success()),
        "{}",
        weir.log()
    );
    state.join("outbox.db")
}

fn damage(db: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(db).unwrap_or_else(|e| panic!("{e}"));
    let n = conn
        .execute(sql, [])
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    assert_eq!(n, 1, "{sql} changed {n} rows");
}

#[test]
fn a_damaged_outbox_found_at_start_exits_65_naming_the_file() {
    let dir = scratch();
    let d = dir.path();
    let state = d.join("state");
    let db = outbox_with_rows(d, &state);
    // A REAL where Weir only ever writes integers: the byte sums at open cannot be read.
    damage(
        &db,
        "UPDATE outbox SET bytes = bytes + 0.5 WHERE id = (SELECT min(id) FROM outbox)",
    );
    let cfg = config(d, &state, free_port(), sim);
    let out = weir_command()
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "exit 65 (bad data):\n{log}");
    let db = db.display().to_string();
    assert!(
        log.contains(&db) && log.contains("corrupt") && log.contains("weir outbox verify"),
        "the error names the file and what to do:\n{log}"
    );
}

#[test]
fn a_row_the_uplink_cannot_read_makes_status_unhealthy_naming_the_outbox() {
    let dir = scratch();
    let d = dir.path();
    let state = d.join("state");
    let db = outbox_with_rows(d, &state);
    // A BLOB topic: the file opens, the counts and sums read, but the row cannot be sent.
    damage(
        &db,
        "UPDATE outbox SET topic = CAST(topic AS BLOB) WHERE id = (SELECT min(id) FROM outbox)",
    );
    let upstream = Broker::start_new(d);
    let cfg = config(d, &state, upstream.port, sim);
    let weir = Weir::start(&cfg, d);
    let seen = wait_for(WAIT, || {
        let (code, doc) = status(&cfg, &[]);
        (doc["upstream"]["connected"] == true && problems(&doc).contains(&"outbox_damaged".into()))
            .then_some((code, doc))
    });
    let Some((code, doc)) = seen else {
        panic!(
            "status never said the outbox is damaged: {}\n{}",
            status(&cfg, &[]).1,
            weir.log()
        )
    };
    assert_eq!(code, Some(1), "unhealthy: {doc}");
    let detail = doc["health"]["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["code"] == "outbox_damaged")
        .and_then(|p| p["detail"].as_str())
        .unwrap_or_default()
        .to_string();
    assert!(
        detail.contains(&db.display().to_string()) && detail.contains("wrong type"),
        "the problem names the file and the damage: {detail}"
    );
    assert!(
        metrics(&cfg).contains("weir_outbox_damaged 1\n"),
        "{}",
        metrics(&cfg)
    );
    assert!(
        !weir.log().contains("uplink stops"),
        "the uplink keeps trying:\n{}",
        weir.log()
    );
}

#[test]
fn the_local_broker_down_is_unhealthy_in_status_json_and_metrics_and_recovers() {
    let dir = scratch();
    let d = dir.path();
    let mut local = Broker::new(d, free_port());
    local.start();
    let upstream = Broker::start_new(d);
    let cfg = config(
        d,
        &d.join("state"),
        upstream.port,
        ingest(local.port, "health-ingest"),
    );
    let weir = Weir::start(&cfg, d);
    let args = ["--ingest-down-after", "1s"];
    let up = wait_for(WAIT, || {
        let (code, doc) = status(&cfg, &args);
        (code == Some(0) && doc["ingest"]["connected"] == true).then_some(doc)
    });
    let Some(up) = up else {
        panic!(
            "never healthy with the ingest link up: {}\n{}",
            status(&cfg, &args).1,
            weir.log()
        )
    };
    assert_eq!(up["ingest"]["address"], format!("127.0.0.1:{}", local.port));
    assert!(metrics(&cfg).contains("weir_ingest_connected 1\n"));

    local.stop();
    let down = wait_for(WAIT, || {
        let (code, doc) = status(&cfg, &args);
        (code == Some(1) && problems(&doc) == ["ingest_down"]).then_some(doc)
    });
    let Some(down) = down else {
        panic!(
            "the broker's outage never made status unhealthy: {}\n{}",
            status(&cfg, &args).1,
            weir.log()
        )
    };
    assert_eq!(down["ingest"]["connected"], false);
    assert!(down["ingest"]["down_since_ms"].is_i64(), "{down}");
    assert!(down["ingest"]["last_error"].is_string(), "{down}");
    assert!(
        metrics(&cfg).contains("weir_ingest_connected 0\n"),
        "{}",
        metrics(&cfg)
    );
    let human = weir_command()
        .args(["status", "--ingest-down-after", "1s", "--config"])
        .arg(&cfg)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let human = String::from_utf8_lossy(&human.stdout).into_owned();
    assert!(
        human.contains("! ingest_down: the local broker 127.0.0.1:")
            && human.contains(&format!("ingest    127.0.0.1:{} DOWN for", local.port)),
        "{human}"
    );

    local.start();
    let back = wait_for(WAIT, || {
        let (code, doc) = status(&cfg, &args);
        (code == Some(0) && doc["ingest"]["connected"] == true).then_some(doc)
    });
    let Some(back) = back else {
        panic!(
            "never healthy again: {}\n{}",
            status(&cfg, &args).1,
            weir.log()
        )
    };
    assert!(back["ingest"]["reconnects"].as_u64() >= Some(1), "{back}");
    assert!(
        metrics(&cfg).contains("weir_ingest_reconnects_total 1\n"),
        "{}",
        metrics(&cfg)
    );
}

/// The socket systemd would own for `Type=notify`: counts `WATCHDOG=1` datagrams.
struct NotifySocket {
    path: PathBuf,
    pings: Arc<AtomicUsize>,
    other: Arc<Mutex<Vec<String>>>,
}

impl NotifySocket {
    fn bind(dir: &Path) -> Self {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("{e}"));
        let pings = Arc::new(AtomicUsize::new(0));
        let other = Arc::new(Mutex::new(Vec::new()));
        let (p, o) = (pings.clone(), other.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if text == "WATCHDOG=1" {
                    p.fetch_add(1, Relaxed);
                } else if let Ok(mut v) = o.lock() {
                    v.push(text);
                }
            }
        });
        Self { path, pings, other }
    }

    fn ready(&self) -> bool {
        self.other
            .lock()
            .is_ok_and(|v| v.iter().any(|t| t.lines().any(|l| l == "READY=1")))
    }
}

#[test]
fn a_full_disk_holds_results_without_a_stalled_engine_and_the_watchdog_stays_fed() {
    let dir = scratch();
    let d = dir.path();
    let state = d.join("state");
    let _fs = mounts::Mount::tmpfs(&state, "2m", false);
    // The upstream is down: rows pile up and nothing frees space.
    let cfg = config(d, &state, free_port(), sim);
    let notify = NotifySocket::bind(d);
    // WatchdogSec=1s: systemd wants a ping at least every second, weir sends one every 500 ms.
    const WATCHDOG_USEC: u64 = 1_000_000;
    let weir = Weir::start_with(
        &cfg,
        d,
        &[
            ("NOTIFY_SOCKET", notify.path.to_str().unwrap_or_default()),
            ("WATCHDOG_USEC", &WATCHDOG_USEC.to_string()),
        ],
    );
    assert!(
        wait_for(WAIT, || notify.ready().then_some(())).is_some(),
        "no READY:\n{}",
        weir.log()
    );
    // Fill the filesystem to 300 KiB free: below the outbox's 512 KiB insert floor.
    let out = std::process::Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(&state)
        .output()
        .unwrap_or_else(|e| panic!("df: {e}"));
    let avail: u64 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("df: {}", String::from_utf8_lossy(&out.stdout)));
    let filler = avail.saturating_sub(300 * 1024);
    std::fs::write(
        state.join("filler"),
        vec![0u8; usize::try_from(filler).unwrap_or(0)],
    )
    .unwrap_or_else(|e| panic!("{e}"));

    let blocked = wait_for(WAIT, || {
        let (code, doc) = status(&cfg, &[]);
        (doc["outbox"]["blocked"] == true).then_some((code, doc))
    });
    let Some((code, doc)) = blocked else {
        panic!(
            "the outbox never blocked: {}\n{}",
            status(&cfg, &[]).1,
            weir.log()
        )
    };
    assert_eq!(code, Some(1), "{doc}");
    assert_eq!(doc["outbox"]["blocked_reason"], "disk_full", "{doc}");

    // Let the commit retry's backoff reach its longest delay (5 s) before counting.
    std::thread::sleep(Duration::from_secs(8));
    // The test's own window: status asked again and again, every answer from a
    // held (not stalled) engine; then the pings that came meanwhile.
    let before = notify.pings.load(Relaxed);
    let start = Instant::now();
    let mut answers = Vec::new();
    while start.elapsed() < Duration::from_secs(8) {
        answers.push(status(&cfg, &[]).1);
        std::thread::sleep(Duration::from_millis(200));
    }
    let window = start.elapsed();
    let pings = notify.pings.load(Relaxed) - before;
    // A gap of a whole WATCHDOG_USEC is a kill: at least one ping per period of the window.
    let periods = (window.as_micros() / u128::from(WATCHDOG_USEC)) as usize;
    eprintln!("{pings} WATCHDOG=1 in {window:?} of held results (WATCHDOG_USEC {WATCHDOG_USEC})");
    assert!(
        pings >= periods,
        "{pings} WATCHDOG=1 in {window:?} of held results, fewer than one per WatchdogSec ({periods})"
    );
    for doc in &answers {
        assert_eq!(doc["outbox"]["blocked"], true, "still blocked: {doc}");
        assert_eq!(
            problems(doc),
            ["outbox_blocked"],
            "held, not stalled: {doc}\n{}",
            weir.log()
        );
        assert_eq!(doc["engine"]["responding"], true, "{doc}");
    }
}

fn silence_alerts(msgs: &[Msg]) -> Vec<(String, String, i64)> {
    msgs.iter()
        .filter(|m| m.topic.starts_with("weir/h/alert/") && m.json["kind"] == "silence")
        .map(|m| {
            (
                m.json["sensor"].as_str().unwrap_or("").to_string(),
                m.json["state"].as_str().unwrap_or("").to_string(),
                m.json["ts"].as_i64().unwrap_or(0),
            )
        })
        .collect()
}

#[test]
fn a_restart_after_a_stop_longer_than_idle_timeout_blames_no_sensor_for_the_downtime() {
    const IDLE_MS: i64 = 5_000;
    let dir = scratch();
    let d = dir.path();
    let local = Broker::start_new(d);
    // The ingest's persistent session exists before weir: the broker queues for it.
    Consumer::connect(local.port, "dev/+/+", Some("silence-ingest")).disconnect();
    let upstream = Broker::start_new(d);
    let consumer = Consumer::connect(upstream.port, "weir/h/#", None);
    let cfg = config(d, &d.join("state"), upstream.port, |c| {
        ingest(local.port, "silence-ingest")(c)
            .set("engine", "idle_timeout", format!("{IDLE_MS}ms"))
            .detector(
                toml! { name = "sensor-silent", kind = "silence", sensor = "*", metric = "*" },
            )
    });
    let publisher = Consumer::connect(local.port, "unused/#", None);

    // Both sensors report, their readings are checkpointed, weir stops.
    let mut weir = Weir::start(&cfg, d);
    publisher.publish("dev/a/t", "21.5");
    publisher.publish("dev/b/t", "21.5");
    let counted = wait_for(WAIT, || {
        let (_, doc) = status(&cfg, &[]);
        (doc["counters"]["readings"] == 2).then_some(())
    });
    assert!(counted.is_some(), "readings not counted:\n{}", weir.log());
    assert!(weir.terminate(WAIT).is_some_and(|s| s.success()));
    assert!(
        silence_alerts(&consumer.messages()).is_empty(),
        "the first run lasted longer than idle_timeout: this test needs it shorter"
    );

    // Weir is down longer than idle_timeout; sensor b reports while it is down
    // (the broker keeps the reading for weir's session), sensor a stays quiet.
    std::thread::sleep(Duration::from_millis(IDLE_MS as u64 + 1_000));
    publisher.publish("dev/b/t", "22.5");
    let restart_ms = now_ms();
    let weir = Weir::start(&cfg, d);
    let msgs = consumer
        .wait_until("the silence of a", WAIT, |m| {
            silence_alerts(m).iter().any(|(s, _, _)| s == "a")
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", weir.log()));
    // Each silence counts from when weir could hear the sensor again: the restart at the
    // earliest. Before, both were raised at start (their silence spanning weir's own
    // downtime) and b's was cleared by its queued reading moments later.
    for (sensor, state, ts) in silence_alerts(&msgs) {
        assert_eq!(state, "raised", "{sensor}: {:?}", silence_alerts(&msgs));
        assert!(
            ts >= restart_ms + IDLE_MS,
            "{sensor}'s silence raised at {ts}, within idle_timeout of the restart at {restart_ms}: {:?}",
            silence_alerts(&msgs)
        );
    }
}
