//! One harness for the end-to-end tests, against real processes: Mosquitto brokers on
//! free loopback ports ([`Broker`]), a `weir.toml` builder with test defaults
//! ([`Config`]), the real `weir` binary as a daemon or a one-shot command ([`Weir`],
//! [`cli`]), a publisher that waits for each PUBACK ([`Publisher`]), an upstream recorder
//! with typed views of the wire messages ([`Recorder`], [`Views`]), and the state a
//! technician inspects ([`OutboxFile`], [`status_json`]). Every wait is bounded and fails
//! with what it saw.
//!
//! A test reads as its scenario:
//! ```no_run
//! use std::time::Duration;
//! use weir_tests::*;
//! let dir = scratch();
//! let broker = Broker::start_new(dir.path());
//! let upstream = Recorder::connect(broker.port, "weir/e2e/#");
//! let cfg = Config::new("e2e", dir.path())
//!     .upstream(broker.port)
//!     .ingest(broker.port, "e2e-ingest")
//!     .topic("sensors/+/+", "{2}", "{3}")
//!     .write();
//! let weir = Weir::start(&cfg, dir.path());
//! Publisher::connect(broker.port).publish("sensors/lab/t", "21.5");
//! upstream.wait_until("a pane", Duration::from_secs(30), |m| !m.panes().is_empty()).unwrap();
//! ```
//!
//! Under QEMU the same tests drive an ARM build: `WEIR_BIN` names the binary and
//! `WEIR_RUNNER` the emulator command ([`weir_command`]).

pub mod broker;
pub mod config;
pub mod homeassistant;
pub mod postgres;
pub mod process;
pub mod publisher;
pub mod readme;
pub mod recorder;
pub mod sink;
pub mod snapshot;
pub mod state;

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use broker::{Broker, Certs};
pub use config::{Config, Toml};
pub use process::{CliOut, Weir, cli, cli_cfg, cli_with, weir_bin, weir_command};
pub use publisher::Publisher;
pub use recorder::{Alert, DeadLetter, Msg, Pane, Recorder, Status, Views, by_reason, counter};
pub use state::{OutboxFile, Row, status_json};

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

/// Sends a signal by name with kill(1) (the crate forbids unsafe, so no libc).
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

/// An id unique within this test process (MQTT client ids of clean sessions).
pub(crate) fn unique_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// An MQTT consumer recording every message on its filter, which can also publish: the
/// first harness's name for a [`Recorder`], kept for the tests written against it.
pub struct Consumer(Recorder);

impl Consumer {
    /// Connects and subscribes to `filter` (QoS 1). With a `session` name the
    /// session is persistent: the broker queues messages while it is away.
    pub fn connect(port: u16, filter: &str, session: Option<&str>) -> Self {
        Self(Recorder::open(port, filter, session, false))
    }

    /// Disconnects cleanly.
    pub fn disconnect(self) {
        self.0.disconnect();
    }
}

impl std::ops::Deref for Consumer {
    type Target = Recorder;
    fn deref(&self) -> &Recorder {
        &self.0
    }
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

/// Unpacks a `weir diag` bundle into `into` with the system's tar and returns
/// its top-level entries (one directory, `weir-diag-<device>-<time>`).
pub fn unpack_bundle(bundle: &std::path::Path, into: &std::path::Path) -> Vec<std::fs::DirEntry> {
    std::fs::create_dir_all(into).unwrap_or_else(|e| panic!("{e}"));
    let st = Command::new("tar")
        .arg("xzf")
        .arg(bundle)
        .arg("-C")
        .arg(into)
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(st.success(), "tar could not unpack {}", bundle.display());
    std::fs::read_dir(into)
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
        .collect()
}

/// A scratch directory that survives for inspection when `WEIR_KEEP_TMP` is set.
pub fn scratch() -> tempfile::TempDir {
    let keep = std::env::var_os("WEIR_KEEP_TMP").is_some();
    let d = tempfile::Builder::new()
        .prefix("weir-e2e-")
        .disable_cleanup(keep)
        .tempdir()
        .unwrap_or_else(|e| panic!("{e}"));
    if keep {
        eprintln!("scratch directory kept: {}", d.path().display());
    }
    // mosquitto drops root for the `mosquitto` user and must reach its own subfolder.
    let _ = Command::new("chmod").arg("755").arg(d.path()).status();
    d
}
