//! The fleet side of the tests: the real `weir-sink` binary as a process ([`Sink`]), and a
//! [`Truth`] recorder that keeps, by `msg_id`, everything Weir published upstream (on a
//! persistent session, so it misses nothing across broker restarts) and re-publishes a copy
//! of every tenth message as a duplicate, as an at-least-once link or a replaying bridge would.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

use crate::{signal, wait_for};

/// Path of the `weir-sink` binary, built once per test process with the same cargo and
/// profile as the tests (as [`crate::weir_bin`] does for `weir`).
pub fn sink_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .unwrap_or_else(|| panic!("odd test path {}", exe.display()));
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "--quiet", "-p", "weir-sink", "--bin", "weir-sink"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd
            .status()
            .unwrap_or_else(|e| panic!("cannot run cargo to build weir-sink: {e}"));
        assert!(status.success(), "building weir-sink failed");
        dir.join("weir-sink")
    })
    .clone()
}

/// A running `weir-sink`.
pub struct Sink {
    child: Option<Child>,
    log: PathBuf,
}

impl Sink {
    /// Starts a sink with MQTT client id `client_id` on the broker at 127.0.0.1:`port`,
    /// writing into `database`, logging to `<dir>/<client_id>-<n>.log`; `extra` are more
    /// command-line arguments.
    pub fn start(port: u16, database: &str, client_id: &str, dir: &Path, extra: &[&str]) -> Self {
        let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
        let log = dir.join(format!("{client_id}-{n}.log"));
        let out = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new(sink_bin())
            .arg("--mqtt")
            .arg(format!("127.0.0.1:{port}"))
            .args(["--client-id", client_id, "--database", database])
            .args(extra)
            .env("WEIR_SINK_LOG", "info")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start weir-sink: {e}"));
        Self {
            child: Some(child),
            log,
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`; panics with the log after `timeout`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        wait_for(timeout, || self.log().contains(needle).then_some(())).unwrap_or_else(|| {
            panic!(
                "no {needle:?} in the sink's log within {timeout:?}:\n{}",
                self.log()
            )
        });
    }

    /// Sends it signal `name` (`STOP`, `CONT`, ...), if it is running.
    pub fn signal(&self, name: &str) {
        if let Some(c) = self.child.as_ref() {
            signal(c.id(), name);
        }
    }

    /// SIGKILL: whatever it had not acknowledged stays with the broker.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits (bounded) for it to exit; `None` if it did not (it is then killed).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let status = wait_for(timeout, || c.try_wait().ok().flatten());
        if status.is_none() {
            let _ = c.kill();
            let _ = c.wait();
        }
        status
    }

    /// SIGTERM and a bounded wait; panics with the log unless it exited with status 0.
    pub fn stop_ok(&mut self, timeout: Duration) {
        if let Some(c) = self.child.as_ref() {
            signal(c.id(), "TERM");
        }
        let status = self.wait_exit(timeout);
        assert!(
            status.is_some_and(|s| s.success()),
            "weir-sink did not exit cleanly on SIGTERM: {status:?}\n{}",
            self.log()
        );
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[derive(Default)]
struct Seen {
    /// First payload (as JSON) per `msg_id`; status messages are not kept.
    by_msg_id: HashMap<String, Value>,
    /// Messages received, duplicates included.
    received: u64,
}

/// Everything Weir published upstream, by `msg_id`, recorded on a persistent session that
/// reconnects across broker restarts; and the duplicator (see the module docs).
pub struct Truth {
    seen: Arc<Mutex<Seen>>,
    duplicating: Arc<AtomicBool>,
    duplicates: Arc<AtomicU64>,
    client: Client,
}

impl Truth {
    /// Subscribes to `filter` as `client_id` (persistent) and re-publishes every
    /// `every`-th distinct message while duplicating is on.
    pub fn start(port: u16, filter: &str, client_id: &str, every: u64) -> Self {
        let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30))
            .set_clean_session(false)
            .set_max_packet_size(4 << 20, 4 << 20);
        let (client, mut connection) = Client::new(opts, 10_000);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let duplicating = Arc::new(AtomicBool::new(true));
        let duplicates = Arc::new(AtomicU64::new(0));
        let (subscribed_tx, subscribed_rx) = std::sync::mpsc::channel();
        std::thread::spawn({
            let (seen, client) = (seen.clone(), client.clone());
            let (duplicating, duplicates) = (duplicating.clone(), duplicates.clone());
            let filter = filter.to_string();
            move || {
                let mut distinct = 0u64;
                for ev in connection.iter() {
                    match ev {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            let _ = client.try_subscribe(&filter, QoS::AtLeastOnce);
                        }
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            let _ = subscribed_tx.send(());
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            let json: Value =
                                serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                            let Some(id) = json["msg_id"].as_str().map(str::to_string) else {
                                continue;
                            };
                            let Ok(mut s) = seen.lock() else { return };
                            s.received += 1;
                            if s.by_msg_id.contains_key(&id) {
                                continue;
                            }
                            s.by_msg_id.insert(id, json);
                            drop(s);
                            distinct += 1;
                            if distinct % every == 0 && duplicating.load(Ordering::SeqCst) {
                                // Never blocks this thread (it drives the connection).
                                if client
                                    .try_publish(
                                        p.topic.clone(),
                                        QoS::AtLeastOnce,
                                        false,
                                        p.payload.to_vec(),
                                    )
                                    .is_ok()
                                {
                                    duplicates.fetch_add(1, Ordering::SeqCst);
                                }
                            }
                        }
                        Ok(_) => {}
                        // The broker is away (restarted by the test): reconnect, same session.
                        Err(_) => std::thread::sleep(Duration::from_millis(100)),
                    }
                }
            }
        });
        subscribed_rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("truth recorder not subscribed on port {port} within 10 s"));
        Self {
            seen,
            duplicating,
            duplicates,
            client,
        }
    }

    /// Stops re-publishing copies.
    pub fn stop_duplicating(&self) {
        self.duplicating.store(false, Ordering::SeqCst);
    }

    /// Copies re-published so far.
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::SeqCst)
    }

    /// Messages received so far, duplicates included.
    pub fn received(&self) -> u64 {
        self.seen.lock().map(|s| s.received).unwrap_or(0)
    }

    /// The distinct messages so far, by `msg_id`.
    pub fn messages(&self) -> HashMap<String, Value> {
        self.seen
            .lock()
            .map(|s| s.by_msg_id.clone())
            .unwrap_or_default()
    }

    /// Disconnects (the session stays on the broker).
    pub fn disconnect(self) {
        let _ = self.client.disconnect();
    }
}
