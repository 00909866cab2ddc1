//! systemd supervision end to end: `weir run` with `NOTIFY_SOCKET` pointing at a
//! datagram socket the test owns, as systemd would for `Type=notify` with
//! `WatchdogSec=`; and SIGHUP reloads.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weir_tests::{Broker, Config, Recorder, Weir, scratch, signal, toml, wait_for};

const WAIT: Duration = Duration::from_secs(30);

fn config(path: &Path, state: &Path, port: u16, device: &str) {
    let text = Config::new(device, state.parent().unwrap_or(state))
        .agent(toml! { state_dir = state, shutdown_grace = "1s" })
        .upstream(port)
        .uplink(toml! { status_interval = "1s" })
        .sim(toml! { name = "sim1", metric = "temperature", interval = "100ms" })
        .text();
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{e}"));
}

/// One notification as received, and whether the state database existed then.
#[derive(Clone, Debug)]
struct Note {
    text: String,
    db_existed: bool,
}

impl Note {
    fn has(&self, line: &str) -> bool {
        self.text.lines().any(|l| l == line)
    }
}

/// The socket systemd would own, recording every datagram in order.
struct NotifySocket {
    path: PathBuf,
    notes: Arc<Mutex<Vec<Note>>>,
}

impl NotifySocket {
    fn bind(dir: &Path, db: PathBuf) -> Self {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("{e}"));
        let notes = Arc::new(Mutex::new(Vec::new()));
        let rec = notes.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                let note = Note {
                    text: String::from_utf8_lossy(&buf[..n]).into_owned(),
                    db_existed: db.exists(),
                };
                if let Ok(mut v) = rec.lock() {
                    v.push(note);
                }
            }
        });
        Self { path, notes }
    }

    fn env(&self) -> String {
        self.path.display().to_string()
    }

    fn notes(&self) -> Vec<Note> {
        self.notes.lock().map(|v| v.clone()).unwrap_or_default()
    }

    fn count(&self, line: &str) -> usize {
        self.notes().iter().filter(|n| n.has(line)).count()
    }

    fn wait_count(&self, line: &str, n: usize, weir: &Weir) -> Vec<Note> {
        wait_for(WAIT, || (self.count(line) >= n).then(|| self.notes())).unwrap_or_else(|| {
            panic!(
                "timed out waiting for {n} x {line}; got {:?}\nweir log:\n{}",
                self.notes(),
                weir.log()
            )
        })
    }
}

#[test]
fn ready_comes_once_the_outbox_exists_then_watchdog_pings_then_stopping_on_sigterm() {
    let dir = scratch();
    let broker = Broker::start_new(dir.path());
    let (cfg, state) = (dir.path().join("weir.toml"), dir.path().join("state"));
    config(&cfg, &state, broker.port, "sd");
    let db = state.join("outbox.db");
    let sock = NotifySocket::bind(dir.path(), db.clone());
    assert!(!db.exists());
    let env = sock.env();
    let mut weir = Weir::start_with(
        &cfg,
        dir.path(),
        &[("NOTIFY_SOCKET", &env), ("WATCHDOG_USEC", "400000")],
    );

    let notes = sock.wait_count("READY=1", 1, &weir);
    let ready = notes.iter().find(|n| n.has("READY=1")).cloned();
    assert!(
        ready.is_some_and(|n| n.db_existed),
        "READY=1 before {} existed: {notes:?}",
        db.display()
    );
    // WATCHDOG_USEC is 400 ms: the daemon says it pings every 200 ms (half), and does.
    weir.wait_log("watchdog_ping=Some(200ms)", WAIT);
    let notes = sock.wait_count("WATCHDOG=1", 3, &weir);
    let first_ready = notes.iter().position(|n| n.has("READY=1"));
    let first_ping = notes.iter().position(|n| n.has("WATCHDOG=1"));
    assert!(first_ready < first_ping, "a ping before READY: {notes:?}");

    let pid = weir.pid().unwrap_or_else(|| unreachable!());
    signal(pid, "TERM");
    let notes = sock.wait_count("STOPPING=1", 1, &weir);
    let stopping = notes.iter().position(|n| n.has("STOPPING=1"));
    assert!(stopping > first_ready, "{notes:?}");
    let status = weir.wait_exit(WAIT);
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        weir.log()
    );
    assert_eq!(sock.count("READY=1"), 1, "{:?}", sock.notes());
}

#[test]
fn when_the_engine_task_hangs_the_watchdog_pings_stop() {
    let dir = scratch();
    let broker = Broker::start_new(dir.path());
    let (cfg, state) = (dir.path().join("weir.toml"), dir.path().join("state"));
    config(&cfg, &state, broker.port, "sd-hang");
    let sock = NotifySocket::bind(dir.path(), state.join("outbox.db"));
    let env = sock.env();
    let mut weir = Weir::start_with(
        &cfg,
        dir.path(),
        &[
            ("NOTIFY_SOCKET", &env),
            ("WATCHDOG_USEC", "200000"),
            ("WEIR_TEST_HANG_ENGINE_AFTER", "1500ms"),
        ],
    );
    sock.wait_count("WATCHDOG=1", 2, &weir);
    weir.wait_log("the engine task hangs now", WAIT);
    // Pings come only from the engine task, which logged the hang after its last
    // ping was sent; let the receiving thread catch up with the socket, then watch
    // for many ping intervals (100 ms): none may come.
    std::thread::sleep(Duration::from_millis(500));
    let before = sock.count("WATCHDOG=1");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        sock.count("WATCHDOG=1"),
        before,
        "pings after the hang: {:?}",
        sock.notes()
    );
    assert!(weir.is_running(), "hung, not dead:\n{}", weir.log());
}

#[test]
fn sighup_reloads_a_valid_config_in_process_and_refuses_an_invalid_one() {
    let dir = scratch();
    let broker = Broker::start_new(dir.path());
    let consumer = Recorder::connect(broker.port, "weir/+/status");
    let (cfg, state) = (dir.path().join("weir.toml"), dir.path().join("state"));
    config(&cfg, &state, broker.port, "sd-before");
    let sock = NotifySocket::bind(dir.path(), state.join("outbox.db"));
    let env = sock.env();
    let mut weir = Weir::start_with(&cfg, dir.path(), &[("NOTIFY_SOCKET", &env)]);
    sock.wait_count("READY=1", 1, &weir);
    let pid = weir.pid().unwrap_or_else(|| unreachable!());

    // An invalid file: refused, the running pipeline stays.
    std::fs::write(&cfg, "[engine.window]\nsize = \"0s\"\n").unwrap_or_else(|e| panic!("{e}"));
    signal(pid, "HUP");
    weir.wait_log("reload refused", WAIT);
    assert!(weir.log().contains("engine.window.size"), "{}", weir.log());
    assert!(weir.is_running());
    assert_eq!(sock.count("RELOADING=1"), 0, "{:?}", sock.notes());

    // A valid one: RELOADING, the pipeline restarts with it, READY again.
    config(&cfg, &state, broker.port, "sd-after");
    signal(pid, "HUP");
    let notes = sock.wait_count("READY=1", 2, &weir);
    let reloading = notes.iter().position(|n| n.has("RELOADING=1"));
    let second_ready = notes.iter().rposition(|n| n.has("READY=1"));
    assert!(reloading.is_some() && reloading < second_ready, "{notes:?}");
    consumer
        .wait_until("the new device's status", WAIT, |m| {
            m.iter()
                .any(|m| m.topic == "weir/sd-after/status" && m.json["state"] == "online")
        })
        .unwrap_or_else(|e| panic!("{e}\nweir log:\n{}", weir.log()));
    assert!(weir.is_running(), "the reload must not exit the process");
    weir.stop_ok(WAIT);
}
