//! `weir status`, `weir metrics` and `weir log-level`: questions to the running daemon
//! through its control socket. `status` falls back to the state database, read-only, when
//! the daemon is down.
//!
//! Exit codes of `weir status` (LSB init-script conventions, so it can be a health check):
//! 0 running and healthy, 1 running but unhealthy (see [`crate::control::health`]),
//! 3 not running, 4 unknown (the socket cannot be used, e.g. permission denied), 78 the
//! configuration cannot be read and the daemon is down. A configuration file with a
//! mistake is a warning while the daemon runs ([`daemon_socket`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use super::exit;
use crate::config::Config;
use crate::control::client::{Client, ClientError};
use crate::control::health::{Limits, annotate};
use crate::control::logging::Filter;
use crate::control::{Request, offline, render};
use crate::reading::now_ms;

/// `weir status` exit code: running but unhealthy.
pub const UNHEALTHY: u8 = 1;
/// `weir status` exit code: not running (LSB 3).
pub const NOT_RUNNING: u8 = 3;
/// `weir status` exit code: unknown (LSB 4): the daemon could not be asked.
pub const UNKNOWN: u8 = 4;

/// Options of `weir status`.
#[derive(Clone, Copy, Debug)]
pub struct Opts<'a> {
    /// The configuration file (names the socket and the state directory).
    pub config: &'a Path,
    /// Print the JSON document instead of the table.
    pub json: bool,
    /// Thresholds of the unhealthy states.
    pub limits: Limits,
}

/// The configuration, if it loads, and the control socket to ask.
///
/// A file with a mistake must not lock the technician out: the daemon keeps running
/// on the config it read at its last start or reload, exactly while someone edits
/// and checks. So a broken file is reported as a warning and the daemon is still
/// asked, at the socket the file names when it can be read as TOML
/// (`[agent] runtime_dir`), else at the default.
pub fn daemon_socket(config: &Path, err: &mut impl Write) -> (Option<Config>, PathBuf) {
    match Config::load(config) {
        Ok(c) => {
            let socket = c.control_socket();
            (Some(c), socket)
        }
        Err(e) => {
            let runtime_dir = std::fs::read_to_string(config)
                .ok()
                .and_then(|t| t.parse::<toml::Table>().ok())
                .and_then(|t| {
                    t.get("agent")?
                        .get("runtime_dir")?
                        .as_str()
                        .map(PathBuf::from)
                })
                .unwrap_or_else(|| PathBuf::from(DEFAULT_RUNTIME_DIR));
            let socket = runtime_dir.join(crate::config::CONTROL_SOCKET);
            let _ = writeln!(
                err,
                "warning: {e}\n  the running daemon keeps the config it last loaded; asking it at {}",
                socket.display()
            );
            (None, socket)
        }
    }
}

/// `[agent] runtime_dir` when the file does not say.
const DEFAULT_RUNTIME_DIR: &str = "/run/weir";

fn print(doc: &serde_json::Value, json: bool, out: &mut impl Write) {
    let text = if json {
        let mut t = serde_json::to_string_pretty(doc).unwrap_or_default();
        t.push('\n');
        t
    } else {
        render::render(doc)
    };
    let _ = out.write_all(text.as_bytes());
}

/// Runs `weir status`; returns its exit code (module docs).
pub fn status(o: Opts<'_>, out: &mut impl Write, err: &mut impl Write) -> u8 {
    let (cfg, socket) = daemon_socket(o.config, err);
    let answer = Client::connect(&socket).and_then(|c| c.request(&Request::Status));
    match answer {
        Ok(mut v) => {
            let mut doc = v["status"].take();
            if let Some(cfg) = &cfg {
                doc["disk"] = disk(&cfg.state_dir);
            }
            let healthy = annotate(&mut doc, &o.limits);
            print(&doc, o.json, out);
            if healthy { exit::OK } else { UNHEALTHY }
        }
        Err(ClientError::NotRunning(_)) => {
            // Down, and the file names no state directory we can trust: nothing to read.
            let Some(cfg) = cfg else {
                let _ = writeln!(
                    err,
                    "error: the daemon is not running and the configuration cannot be loaded (above)"
                );
                return exit::CONFIG;
            };
            let mut doc = offline::status(&cfg, o.config, now_ms());
            doc["disk"] = disk(&cfg.state_dir);
            annotate(&mut doc, &o.limits);
            print(&doc, o.json, out);
            NOT_RUNNING
        }
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            UNKNOWN
        }
    }
}

/// Free space on the state directory's filesystem, as this process sees it (the same
/// machine as the daemon): `{path, free_bytes, total_bytes}`, or `{path, error}`.
fn disk(state_dir: &Path) -> serde_json::Value {
    match rustix::fs::statvfs(state_dir) {
        Ok(s) => serde_json::json!({
            "path": state_dir.display().to_string(),
            "free_bytes": s.f_bavail.saturating_mul(s.f_frsize),
            "total_bytes": s.f_blocks.saturating_mul(s.f_frsize),
        }),
        Err(e) => serde_json::json!({
            "path": state_dir.display().to_string(),
            "error": std::io::Error::from(e).to_string(),
        }),
    }
}

/// The exit code for a failure to ask the daemon: 3 not running, 4 not allowed (as
/// `weir status`), 1 anything else.
pub fn exit_code(e: &ClientError) -> u8 {
    match e {
        ClientError::NotRunning(_) => NOT_RUNNING,
        ClientError::Permission(_) => UNKNOWN,
        _ => exit::FAILURE,
    }
}

/// Sends one request and returns the answer, or prints the error and returns the exit code.
fn ask(config: &Path, req: &Request, err: &mut impl Write) -> Result<serde_json::Value, u8> {
    let (_, socket) = daemon_socket(config, err);
    Client::connect(&socket)
        .and_then(|c| c.request(req))
        .map_err(|e| {
            let _ = writeln!(err, "error: {e}");
            exit_code(&e)
        })
}

/// `weir metrics`: the Prometheus text of the running daemon. With the daemon down it
/// still prints, exit 0, so that a textfile collector's `weir metrics > f && mv` never
/// keeps a stale `weir_up 1`: `weir_up 0` and what the state database says (backlog per
/// class, watermarks, last checkpoint), with a note on standard error.
pub fn metrics(config: &Path, out: &mut impl Write, err: &mut impl Write) -> u8 {
    let (cfg, socket) = daemon_socket(config, err);
    match Client::connect(&socket).and_then(|c| c.request(&Request::Metrics)) {
        Ok(v) => {
            let _ = out.write_all(v["text"].as_str().unwrap_or("").as_bytes());
            exit::OK
        }
        Err(ClientError::NotRunning(_)) => {
            let doc = match &cfg {
                Some(cfg) => offline::status(cfg, config, now_ms()),
                None => serde_json::json!({"version": env!("CARGO_PKG_VERSION")}),
            };
            let _ = out.write_all(crate::control::prom::render(&doc).as_bytes());
            let _ = writeln!(
                err,
                "note: weir is not running (nothing at {}): weir_up 0{}",
                socket.display(),
                if cfg.is_some() {
                    ", the rest from the state database"
                } else {
                    ""
                }
            );
            exit::OK
        }
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            exit_code(&e)
        }
    }
}

/// `weir log-level [FILTER]`: prints the filter in force and what it means, or checks
/// the new one ([`Filter::parse`]: level names as people type them; a filter that would
/// silence ERROR is refused, exit 2, unless it says `off` or `allow_silence`), replaces
/// it, and prints the old and the new one with its meaning.
pub fn log_level(
    config: &Path,
    filter: Option<&str>,
    allow_silence: bool,
    out: &mut impl Write,
    err: &mut impl Write,
) -> u8 {
    let new = match filter.map(|f| Filter::parse(f, allow_silence)).transpose() {
        Ok(f) => f,
        Err(e) => {
            let _ = writeln!(err, "error: log filter refused, nothing changed: {e}");
            return exit::USAGE;
        }
    };
    let req = Request::LogLevel {
        filter: new.as_ref().map(|f| f.text.clone()),
    };
    let meaning = |f: &str| {
        Filter::parse(f, true)
            .map(|f| f.meaning)
            .unwrap_or_default()
    };
    match ask(config, &req, err) {
        Ok(v) => {
            let _ = match &new {
                Some(f) => writeln!(
                    out,
                    "log filter changed from {:?} to {:?}: {}",
                    v["old"].as_str().unwrap_or(""),
                    v["new"].as_str().unwrap_or(&f.text),
                    f.meaning
                ),
                None => {
                    let cur = v["filter"].as_str().unwrap_or("");
                    writeln!(
                        out,
                        "log filter {cur:?}: {} (logging to {})",
                        meaning(cur),
                        v["target"].as_str().unwrap_or("")
                    )
                }
            };
            exit::OK
        }
        Err(code) => code,
    }
}
