//! Harness for end-to-end tests against real processes: a Mosquitto broker on a
//! free loopback port, the real `weir` binary, and an MQTT consumer that records
//! what arrives upstream. Every wait is bounded and fails with what it saw.

pub mod snapshot;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{Client, Connection, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

/// Result type of the harness: failures carry a message for the test output.
pub type Result<T> = std::result::Result<T, String>;

/// A free TCP port on 127.0.0.1 (bound, then released for the child to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// Wall clock in ms since the epoch.
pub fn now_ms() -> i64 {
    weir::reading::now_ms()
}

/// Polls `f` every 50 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A Mosquitto process with a private config and data directory.
pub struct Broker {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its mutual-TLS port, when started with [`Broker::with_tls`].
    pub tls_port: Option<u16>,
    dir: PathBuf,
    child: Option<Child>,
}

/// Certificates made for one test with the `openssl` command line.
pub struct Certs {
    /// The CA that signed the server and client certificates.
    pub ca: PathBuf,
    /// Server certificate (SAN 127.0.0.1 and localhost) and key.
    pub server: (PathBuf, PathBuf),
    /// Client certificate and key.
    pub client: (PathBuf, PathBuf),
    /// A CA that signed nothing here: trusting it must fail.
    pub other_ca: PathBuf,
}

impl Certs {
    /// Generates everything in `dir` (RSA 2048, valid two days).
    pub fn generate(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .unwrap_or_else(|e| panic!("openssl: {e}"));
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        for ca in ["ca", "other-ca"] {
            run(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN={ca}"),
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.crt"),
            ]);
        }
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n")
            .unwrap_or_else(|e| panic!("{e}"));
        for who in ["server", "client"] {
            run(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={who}"),
                "-keyout",
                &format!("{who}.key"),
                "-out",
                &format!("{who}.csr"),
            ]);
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{who}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{who}.ext"),
                "-out",
                &format!("{who}.crt"),
            ]);
        }
        // Readable by mosquitto after it drops root.
        let _ = Command::new("chmod")
            .arg("-R")
            .arg("a+rX")
            .arg(dir)
            .status();
        Self {
            ca: dir.join("ca.crt"),
            server: (dir.join("server.crt"), dir.join("server.key")),
            client: (dir.join("client.crt"), dir.join("client.key")),
            other_ca: dir.join("other-ca.crt"),
        }
    }
}

impl Broker {
    /// A broker (not yet started) that keeps its state in `dir`, with persistence
    /// so queued QoS 1 messages for offline persistent sessions survive a restart.
    pub fn new(dir: &Path, port: u16) -> Self {
        Self::with_conf(dir, port, "")
    }

    /// [`Broker::new`] with more `mosquitto.conf` lines (each ending in a newline).
    pub fn with_conf(dir: &Path, port: u16, extra: &str) -> Self {
        let dir = dir.join(format!("mosquitto-{port}"));
        std::fs::create_dir_all(dir.join("data")).unwrap_or_else(|e| panic!("{e}"));
        let conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {data}/\n\
             autosave_interval 1\nmax_queued_messages 0\nupgrade_outgoing_qos true\n{extra}log_dest file {dir}/mosquitto.log\nlog_type error\nlog_type warning\nlog_type notice\n",
            data = dir.join("data").display(),
            dir = dir.display(),
        );
        std::fs::write(dir.join("mosquitto.conf"), conf).unwrap_or_else(|e| panic!("{e}"));
        // Started as root, mosquitto drops to the `mosquitto` user: it must own its files.
        let _ = Command::new("chown")
            .args(["-R", "mosquitto"])
            .arg(&dir)
            .status();
        Self {
            port,
            tls_port: None,
            dir,
            child: None,
        }
    }

    /// A broker with a plain listener and a second one that requires mutual TLS
    /// with `certs` (per-listener settings off: both share one topic space).
    pub fn with_tls(dir: &Path, certs: &Certs) -> Self {
        let mut b = Self::new(dir, free_port());
        let tls_port = free_port();
        let extra = format!(
            "\nlistener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
            certs.ca.display(),
            certs.server.0.display(),
            certs.server.1.display()
        );
        let conf = b.dir.join("mosquitto.conf");
        let mut text = std::fs::read_to_string(&conf).unwrap_or_else(|e| panic!("{e}"));
        text.push_str(&extra);
        std::fs::write(&conf, text).unwrap_or_else(|e| panic!("{e}"));
        b.tls_port = Some(tls_port);
        b
    }

    /// Starts a broker on a free port.
    pub fn start_new(dir: &Path) -> Self {
        let mut b = Self::new(dir, free_port());
        b.start();
        b
    }

    /// Starts the process and waits until it accepts connections.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start mosquitto (is it installed? scripts/test installs it): {e}")
            });
        self.child = Some(child);
        let up = wait_for(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()
        });
        assert!(
            up.is_some(),
            "mosquitto did not listen on {} within 10 s; log: {}",
            self.port,
            self.log()
        );
    }

    /// Stops it gracefully (SIGTERM: it saves its persistence file).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), "TERM");
            let _ = c.wait();
        }
    }

    /// The broker's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sends a signal by name with kill(1) (the crate forbids unsafe, so no libc).
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

/// Path of the `weir` binary under test (`WEIR_BIN` overrides).
///
/// `cargo test` builds binaries only for the tests of their own package, so the
/// first call builds `weir` with the same cargo and profile, once per test
/// process: the tests never run against a stale or missing binary.
pub fn weir_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("WEIR_BIN") {
            return PathBuf::from(p);
        }
        // Test executables live in target/<profile>/deps; binaries one level up.
        let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .unwrap_or_else(|| panic!("odd test path {}", exe.display()));
        let release = dir.file_name().is_some_and(|n| n == "release");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "--quiet", "-p", "weir", "--bin", "weir"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if release {
            cmd.arg("--release");
        }
        let status = cmd
            .status()
            .unwrap_or_else(|e| panic!("cannot run cargo to build weir: {e}"));
        assert!(status.success(), "building weir failed");
        let bin = dir.join("weir");
        assert!(bin.exists(), "{} is missing after the build", bin.display());
        bin
    })
    .clone()
}

/// A command running the `weir` under test: [`weir_bin`], through `WEIR_RUNNER`
/// when set (e.g. `qemu-aarch64-static -L /usr/aarch64-linux-gnu` with `WEIR_BIN`
/// an ARM build: the end-to-end tests then drive the ARM binary under QEMU).
pub fn weir_command() -> Command {
    let runner = std::env::var("WEIR_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(prog) => {
            let mut c = Command::new(prog);
            c.args(words).arg(weir_bin());
            c
        }
        None => Command::new(weir_bin()),
    }
}

/// A running `weir run`.
pub struct Weir {
    child: Option<Child>,
    log: PathBuf,
}

impl Weir {
    /// Starts `weir run --config <config>`, logging to `<dir>/weir-<n>.log`.
    pub fn start(config: &Path, dir: &Path) -> Self {
        Self::start_with(config, dir, &[])
    }

    /// [`Weir::start`] with extra environment variables (e.g. `NOTIFY_SOCKET`).
    pub fn start_with(config: &Path, dir: &Path, env: &[(&str, &str)]) -> Self {
        let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
        let log = dir.join(format!("weir-{n}.log"));
        let out = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}"));
        let child = weir_command()
            .args(["run", "--config"])
            .arg(config)
            .env("WEIR_LOG", "info,weir=debug")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start weir: {e}"));
        Self {
            child: Some(child),
            log,
        }
    }

    /// Its process id (of QEMU when `WEIR_RUNNER` is set; QEMU passes signals on).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits (bounded) for it to exit on its own; kills it if it does not.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        let status = wait_for(timeout, || c.try_wait().ok().flatten());
        if status.is_none() {
            let _ = c.kill();
            let _ = c.wait();
        }
        status
    }

    /// SIGTERM, then waits (bounded) for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        signal(c.id(), "TERM");
        let status = wait_for(timeout, || c.try_wait().ok().flatten());
        if status.is_none() {
            let _ = c.kill();
            let _ = c.wait();
        }
        status
    }
}

impl Drop for Weir {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A message received upstream.
#[derive(Clone, Debug)]
pub struct Msg {
    /// Topic.
    pub topic: String,
    /// Payload as JSON (Null when it is not JSON).
    pub json: Value,
    /// Retained flag as delivered.
    pub retain: bool,
}

/// An MQTT consumer recording every message on its filters.
pub struct Consumer {
    client: Client,
    seen: Arc<Mutex<Vec<Msg>>>,
}

impl Consumer {
    /// Connects and subscribes to `filter` (QoS 1). With a `session` name the
    /// session is persistent: the broker queues messages while it is away.
    pub fn connect(port: u16, filter: &str, session: Option<&str>) -> Self {
        let id = session.map_or_else(
            || format!("test-consumer-{}", fastrand_id()),
            str::to_string,
        );
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5))
            .set_clean_session(session.is_none())
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, connection) = Client::new(opts, 64);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (subscribed_tx, subscribed_rx) = std::sync::mpsc::channel();
        std::thread::spawn({
            let seen = seen.clone();
            move || record(connection, seen, subscribed_tx)
        });
        client
            .subscribe(filter, QoS::AtLeastOnce)
            .unwrap_or_else(|e| panic!("{e}"));
        subscribed_rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("consumer not subscribed on port {port} within 10 s"));
        Self { client, seen }
    }

    /// Everything received so far.
    pub fn messages(&self) -> Vec<Msg> {
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Received messages whose topic ends with `suffix`.
    pub fn on(&self, suffix: &str) -> Vec<Msg> {
        self.messages()
            .into_iter()
            .filter(|m| m.topic.ends_with(suffix))
            .collect()
    }

    /// Waits until `pred` holds for the received messages.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[Msg]) -> bool,
    ) -> Result<Vec<Msg>> {
        wait_for(timeout, || {
            let m = self.messages();
            pred(&m).then_some(m)
        })
        .ok_or_else(|| {
            format!(
                "timed out after {timeout:?} waiting for {what}; received: {}",
                summary(&self.messages())
            )
        })
    }

    /// Publishes a payload (QoS 1).
    pub fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.into())
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Disconnects cleanly.
    pub fn disconnect(self) {
        let _ = self.client.disconnect();
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn record(
    mut connection: Connection,
    seen: Arc<Mutex<Vec<Msg>>>,
    subscribed: std::sync::mpsc::Sender<()>,
) {
    for ev in connection.iter() {
        match ev {
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                let _ = subscribed.send(());
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let json = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                if let Ok(mut v) = seen.lock() {
                    v.push(Msg {
                        topic: p.topic.clone(),
                        json,
                        retain: p.retain,
                    });
                }
            }
            Ok(_) => {}
            // Disconnected on purpose, or the broker went away: stop recording.
            Err(_) => break,
        }
    }
}

fn fastrand_id() -> String {
    format!("{}-{}", std::process::id(), now_ms() % 1_000_000)
}

/// Compact description of messages for failure output.
pub fn summary(msgs: &[Msg]) -> String {
    let mut by_topic: HashMap<&str, usize> = HashMap::new();
    for m in msgs {
        *by_topic.entry(&m.topic).or_default() += 1;
    }
    let mut v: Vec<_> = by_topic.into_iter().collect();
    v.sort();
    format!("{v:?}")
}

/// A scratch directory that survives for inspection when `WEIR_KEEP_TMP` is set.
pub fn scratch() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("weir-e2e-")
        .tempdir()
        .unwrap_or_else(|e| panic!("{e}"));
    // mosquitto drops root for the `mosquitto` user and must reach its own subfolder.
    let _ = Command::new("chmod").arg("755").arg(d.path()).status();
    d
}
