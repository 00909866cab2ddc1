//! The processes of a load run: private Mosquitto brokers, the `weir` daemon, and
//! a sampler of the daemon's CPU time and resident memory from `/proc`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Sends a signal by name (the crate forbids unsafe, so no libc).
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

/// A Mosquitto with a generated config: unlimited queues (`max_queued_messages 0`),
/// `max_inflight_messages` raised, persistence so that a restart keeps the
/// QoS 1 messages queued for persistent sessions, and `set_tcp_nodelay true` as the
/// README recommends (without it a delivery can wait 40 ms for a delayed ACK).
pub struct Mosquitto {
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Mosquitto {
    /// Writes the config under `dir/<name>` and starts the broker.
    pub fn start(dir: &Path, name: &str, max_inflight: u32) -> Result<Self> {
        let port = free_port()?;
        let dir = dir.join(name);
        std::fs::create_dir_all(dir.join("data"))?;
        let conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
             persistence_location {data}/\nautosave_interval 60\nmax_queued_messages 0\nupgrade_outgoing_qos true\n\
             max_inflight_messages {max_inflight}\nlog_dest file {dir}/mosquitto.log\n\
             log_type error\nlog_type warning\nset_tcp_nodelay true\n",
            data = dir.join("data").display(),
            dir = dir.display(),
        );
        std::fs::write(dir.join("mosquitto.conf"), conf)?;
        // Started as root, mosquitto drops to its own user, which must own its files.
        let _ = Command::new("chown")
            .args(["-R", "mosquitto"])
            .arg(&dir)
            .stderr(Stdio::null())
            .status();
        let mut m = Self {
            port,
            dir,
            child: None,
        };
        m.restart()?;
        Ok(m)
    }

    /// Starts the stopped broker again on its port.
    pub fn restart(&mut self) -> Result<()> {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start mosquitto (scripts/deps.sh installs it)")?;
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > end {
                bail!("mosquitto did not listen on {} within 10 s", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Stops it with SIGTERM (it saves its persistence file) and waits.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), "TERM");
            let _ = c.wait();
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running `weir run`.
pub struct Weir {
    child: Child,
    /// Its log file (stdout and stderr).
    pub log: PathBuf,
}

impl Weir {
    /// Starts `bin run --config config`, logging to `dir/weir.log`.
    pub fn start(bin: &Path, config: &Path, dir: &Path) -> Result<Self> {
        let log = dir.join("weir.log");
        let out = std::fs::File::create(&log)?;
        let child = Command::new(bin)
            .args(["run", "--config"])
            .arg(config)
            // Its default log level (info: a line per alert transition), as deployed.
            .env_remove("WEIR_LOG")
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        Ok(Self { child, log })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has exited.
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        signal(self.child.id(), "TERM");
        let end = Instant::now() + grace;
        while Instant::now() < end {
            if self.exited() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Weir {
    fn drop(&mut self) {
        if !self.exited() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One sample of the daemon's resources.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Wall clock, ms since the epoch.
    pub at_ms: f64,
    /// User + system CPU time so far, seconds.
    pub cpu_s: f64,
    /// Resident memory (VmRSS), KiB.
    pub rss_kib: u64,
    /// Peak resident memory so far (VmHWM), KiB.
    pub hwm_kib: u64,
}

/// Clock ticks per second of `/proc/<pid>/stat` times.
fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Reads one sample of process `pid`.
pub fn sample(pid: u32, tck: f64) -> Option<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some(Sample {
        at_ms: crate::now_ms_f(),
        cpu_s: (utime + stime) / tck,
        rss_kib: kib("VmRSS:")?,
        hwm_kib: kib("VmHWM:")?,
    })
}

/// Samples `pid` every `every` into the returned vector until the process is gone
/// or `stop` is set.
pub fn sampler(
    pid: u32,
    every: Duration,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Arc<Mutex<Vec<Sample>>> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let o = out.clone();
    std::thread::spawn(move || {
        let tck = clk_tck();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            match sample(pid, tck) {
                Some(s) => o.lock().unwrap_or_else(|e| e.into_inner()).push(s),
                None => break,
            }
            std::thread::sleep(every);
        }
    });
    out
}
