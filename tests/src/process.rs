//! The `weir` under test: where its binary is, the command that runs it (natively or
//! through `WEIR_RUNNER`, e.g. QEMU), a running daemon, and one-shot CLI runs.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::{signal, wait_for};

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
    let mut c = match words.next() {
        Some(prog) => {
            let mut c = Command::new(prog);
            c.args(words).arg(weir_bin());
            c
        }
        None => Command::new(weir_bin()),
    };
    // Times for people are shown in the local zone: UTC, so snapshots do not depend on
    // the machine's zone.
    c.env("TZ", "UTC");
    c
}

/// What one run of a `weir` command gave.
#[derive(Clone, Debug)]
pub struct CliOut {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output, lossy UTF-8.
    pub stdout: String,
    /// Standard error, lossy UTF-8.
    pub stderr: String,
    /// Standard output as bytes.
    pub bytes: Vec<u8>,
}

impl CliOut {
    /// Standard output then standard error.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// The same with every `from` in both texts replaced by `to` (e.g. a scratch path).
    pub fn replace(mut self, from: &str, to: &str) -> Self {
        self.stdout = self.stdout.replace(from, to);
        self.stderr = self.stderr.replace(from, to);
        self
    }
}

/// Runs `weir <args>` to completion with standard input closed.
pub fn cli<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>) -> CliOut {
    cli_with(args, |_| {})
}

/// `weir <args> --config <cfg>`, the usual shape of a technician's command.
pub fn cli_cfg(args: &[&str], cfg: &Path) -> CliOut {
    cli_with(args, |c| {
        c.arg("--config").arg(cfg);
    })
}

/// [`cli`] after `setup` adjusted the command (working directory, environment...).
pub fn cli_with<S: AsRef<OsStr>>(
    args: impl IntoIterator<Item = S>,
    setup: impl FnOnce(&mut Command),
) -> CliOut {
    let mut cmd = weir_command();
    cmd.args(args).stdin(Stdio::null());
    setup(&mut cmd);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run weir: {e}"));
    CliOut {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        bytes: out.stdout,
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

    /// Waits until the log contains `needle`; panics with the log after `timeout`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        wait_for(timeout, || self.log().contains(needle).then_some(())).unwrap_or_else(|| {
            panic!(
                "no {needle:?} in the log within {timeout:?}:\n{}",
                self.log()
            )
        });
    }

    /// The first log line for which `pred` holds, waiting up to `timeout`.
    pub fn log_line(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        wait_for(timeout, || {
            self.log().lines().find(|l| pred(l)).map(str::to_string)
        })
    }

    /// Panics with `what` and the log so far: the failure message of a test.
    pub fn fail(&self, what: &str) -> ! {
        panic!("{what}\nweir log:\n{}", self.log())
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
        let c = self.child.as_ref()?;
        signal(c.id(), "TERM");
        self.wait_exit(timeout)
    }

    /// [`Weir::terminate`], and panics with the log unless it exited with status 0.
    pub fn stop_ok(&mut self, timeout: Duration) {
        let status = self.terminate(timeout);
        assert!(
            status.is_some_and(|s| s.success()),
            "weir did not exit cleanly on SIGTERM: {status:?}\n{}",
            self.log()
        );
    }
}

impl Drop for Weir {
    fn drop(&mut self) {
        self.kill9();
    }
}
