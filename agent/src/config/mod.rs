//! Configuration: the TOML file (`raw`), checked into a [`Config`] whose every
//! field is valid, or a [`ConfigError`] naming the file, line, key and the fix.
//!
//! Every key is optional except where the product cannot guess (a detector's
//! kind); defaults are what a Raspberry Pi on an SD card wants. The fully
//! commented example (`weir config example`) is `example.toml` beside this file,
//! and a test checks that it validates.

mod hint;
mod raw;
mod sensors;
mod span;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::detect::DetectorSpec;
use crate::engine::EngineConfig;
use crate::outbox::OutboxConfig;
use crate::source::payload::PayloadFormat;
use crate::source::topic::TopicMap;
use weir_sensors::sim::SimSpec;

pub use sensors::{
    AdcChannel, ChipKind, ChipSimConfig, DeviceSources, GpioInput, GpioMode, I2cSensor,
    OneWireProbe, PollPolicy,
};
pub use span::Seg;

/// The fully commented example configuration.
pub const EXAMPLE: &str = include_str!("example.toml");

/// The control socket's file name in [`Config::runtime_dir`].
pub const CONTROL_SOCKET: &str = "control.sock";

/// A checked configuration.
#[derive(Debug)]
pub struct Config {
    /// Device name: part of every topic and message id.
    pub device: String,
    /// Where the outbox lives.
    pub state_dir: PathBuf,
    /// Where the control socket lives (systemd's RuntimeDirectory=).
    pub runtime_dir: PathBuf,
    /// Capacity of the channel from sources to the engine (readings).
    pub channel_capacity: usize,
    /// How long shutdown may keep trying to deliver the backlog.
    pub shutdown_grace: Duration,
    /// How often the state and the results it produced are committed together.
    pub checkpoint_interval: Duration,
    /// Windows and watermarks.
    pub engine: EngineConfig,
    /// Detectors, in file order.
    pub detectors: Vec<DetectorSpec>,
    /// The durable queue.
    pub outbox: OutboxConfig,
    /// Age after which an unsent message expires, per class (`None`: never).
    pub outbox_ttl: [Option<Duration>; 3],
    /// Upstream broker.
    pub uplink: UplinkConfig,
    /// Local broker ingest, if configured.
    pub ingest: Option<IngestConfig>,
    /// Simulated sensors.
    pub sims: Vec<SimSource>,
    /// Sensors wired to this device: `[[i2c]]`, `[[gpio]]`, `[[onewire]]`.
    pub devices: DeviceSources,
    /// `[metrics] listen`: where the Prometheus endpoint listens; off when `None`.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `[homeassistant]`: MQTT discovery; off when `None`.
    pub homeassistant: Option<crate::homeassistant::HaConfig>,
}

/// Where and how results go upstream.
#[derive(Clone, Debug)]
pub struct UplinkConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// MQTT client id (fixed per device).
    pub client_id: String,
    /// Topic prefix, `{device}` already substituted; no trailing slash.
    pub topic_prefix: String,
    /// MQTT keep-alive.
    pub keep_alive: Duration,
    /// First reconnect delay.
    pub reconnect_min: Duration,
    /// Cap of the reconnect delay.
    pub reconnect_max: Duration,
    /// How often the retained status message is refreshed.
    pub status_interval: Duration,
    /// Publishes awaiting PUBACK at most.
    pub max_inflight: u16,
    /// Aggregates and diagnostics published per second at most (0: no limit).
    pub max_rate: u32,
    /// TLS, when `[uplink.tls]` is configured.
    pub tls: Option<crate::uplink::tls::TlsSettings>,
    /// Username and password, when configured.
    pub credentials: Option<crate::uplink::tls::Credentials>,
    /// The variable `password_env` names, when this process's environment lacks it.
    pub password_env_unset: Option<String>,
    /// Payload encoding of alerts, panes, late readings and dead letters (status is JSON).
    pub format: crate::wire::Format,
}

/// The local broker that devices publish readings to.
#[derive(Clone, Debug)]
pub struct IngestConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// MQTT client id (fixed, so the broker keeps the session).
    pub client_id: String,
    /// How many unacknowledged messages the broker sends before it waits for
    /// acknowledgements: reaching it makes the engine checkpoint early.
    pub broker_max_inflight: usize,
    /// Payload limits and field names.
    pub format: PayloadFormat,
    /// Subscriptions, tried in order; the first filter that matches maps the topic.
    pub topics: Vec<TopicMap>,
    /// Per subscription (same order as `topics`): `Some` when its payloads are
    /// multi-metric objects (Tasmota, Zigbee2MQTT), `None` for one value per message.
    pub multi: Vec<Option<crate::source::multi::MultiFormat>>,
}

/// What a simulated sensor does when the pipeline cannot take a reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenFull {
    /// Wait for room: the sensor's clock slips, nothing is dropped.
    Block,
    /// Drop the new reading and count it.
    DropNewest,
}

/// One simulated sensor.
#[derive(Debug)]
pub struct SimSource {
    /// Sensor name.
    pub name: String,
    /// Metric name.
    pub metric: String,
    /// Time between samples.
    pub interval: Duration,
    /// The generator's parameters.
    pub spec: SimSpec,
    /// Policy when the engine's channel is full.
    pub when_full: WhenFull,
}

/// What is wrong with a configuration, and where.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a value of the wrong type.
    #[error("{}", .0)]
    Syntax(SyntaxError),
    /// A value that parses but is not allowed.
    #[error("{}", .0)]
    Invalid(Invalid),
}

/// How to give the service the variable `password_env` names. `LoadCredential=` sets
/// no variable: it makes a file, which `password_file` reads.
pub const PASSWORD_ENV_FIX: &str = "set it for the service: systemctl edit weir, then \
    [Service] Environment=NAME=... or EnvironmentFile=/etc/weir/env (mode 0600); or use \
    LoadCredential=mqtt-password:/etc/weir/mqtt-password with \
    password_file = \"/run/credentials/weir.service/mqtt-password\" instead";

/// A parse error with its position.
#[derive(Debug)]
pub struct SyntaxError {
    /// The file, when read from one.
    pub path: Option<PathBuf>,
    /// 1-based line.
    pub line: Option<usize>,
    /// The key at the error, as written (`uplink.port`), when the text parsed as TOML
    /// and a value had the wrong type or an unknown name.
    pub key: Option<String>,
    /// The parser's message.
    pub message: String,
    /// What to write instead ([`hint::fix`]).
    pub fix: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_location(f, self.path.as_deref(), self.line)?;
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        write!(f, "{}\n  fix: {}", self.message.trim_end(), self.fix)
    }
}

/// A rule broken by a value.
#[derive(Debug)]
pub struct Invalid {
    /// The file, when read from one.
    pub path: Option<PathBuf>,
    /// 1-based line of the key (or of its table when the key is missing).
    pub line: Option<usize>,
    /// The key, as written: `detector[1].high`.
    pub key: String,
    /// What is wrong.
    pub problem: String,
    /// What to write instead.
    pub fix: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_location(f, self.path.as_deref(), self.line)?;
        write!(f, "{}: {}\n  fix: {}", self.key, self.problem, self.fix)
    }
}

fn write_location(
    f: &mut fmt::Formatter<'_>,
    path: Option<&Path>,
    line: Option<usize>,
) -> fmt::Result {
    match (path, line) {
        (Some(p), Some(l)) => write!(f, "{}:{l}: ", p.display()),
        (Some(p), None) => write!(f, "{}: ", p.display()),
        (None, Some(l)) => write!(f, "line {l}: "),
        (None, None) => Ok(()),
    }
}

impl Config {
    /// Settings that are valid but probably not meant: each a sentence with
    /// the fix. `weir config check` prints them.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let Some(idle) = self.engine.idle_timeout_ms else {
            return out;
        };
        let sims = self.sims.iter().map(|s| (&s.name, s.interval));
        let i2c = self.devices.i2c.iter().map(|s| (&s.name, s.poll.interval));
        let w1 = self
            .devices
            .onewire
            .iter()
            .map(|s| (&s.name, s.poll.interval));
        for (name, interval) in sims.chain(i2c).chain(w1) {
            let ms = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX);
            if ms > idle {
                out.push(format!(
                    "[engine] idle_timeout ({idle} ms) is shorter than sensor `{name}`'s sampling interval ({ms} ms): \
                     its windows would fire after their first reading and it would be reported silent between readings; \
                     set idle_timeout above {ms} ms"
                ));
            }
        }
        out
    }

    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, Some(path))
    }

    /// The running daemon's control socket: `weir status`, `weir tail` and the other
    /// technician commands talk to the daemon through it.
    pub fn control_socket(&self) -> PathBuf {
        self.runtime_dir.join(CONTROL_SOCKET)
    }

    /// [`Config::load`] for `weir config check`: an unset `password_env` variable is
    /// left in [`UplinkConfig::password_env_unset`] for a warning (the technician's
    /// shell does not have the service's environment).
    pub fn load_for_check(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse_lenient(&text, Some(path))
    }

    /// Checks config text; `path` is only used in error messages. A `password_env`
    /// naming an unset variable is an error here: weir could not log in.
    pub fn parse(text: &str, path: Option<&Path>) -> Result<Self, ConfigError> {
        let c = Self::parse_lenient(text, path)?;
        if let Some(v) = &c.uplink.password_env_unset {
            let segs = [span::Seg::Key("uplink"), span::Seg::Key("password_env")];
            return Err(ConfigError::Invalid(Invalid {
                path: path.map(Path::to_path_buf),
                line: span::line_of(text, &segs),
                key: span::render(&segs),
                problem: format!("environment variable {v} is not set"),
                fix: PASSWORD_ENV_FIX.to_owned(),
            }));
        }
        Ok(c)
    }

    fn parse_lenient(text: &str, path: Option<&Path>) -> Result<Self, ConfigError> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| span::line_at(text, s.start));
            let line_text = line.and_then(|l| text.lines().nth(l.saturating_sub(1)));
            let mut key = e.span().and_then(|s| span::key_at(text, s.start));
            // A table given twice: name it (the parser's message does not).
            if key.is_none() && e.message().contains("duplicate key") {
                key = line_text
                    .map(str::trim)
                    .filter(|l| l.starts_with('['))
                    .map(|l| l.trim_matches(['[', ']']).to_owned());
            }
            ConfigError::Syntax(SyntaxError {
                path: path.map(Path::to_path_buf),
                line,
                key,
                fix: hint::fix(e.message(), line_text),
                message: e.message().to_string(),
            })
        })?;
        validate::validate(raw).map_err(|(segs, problem, fix)| {
            ConfigError::Invalid(Invalid {
                path: path.map(Path::to_path_buf),
                line: span::line_of(text, &segs),
                key: span::render(&segs),
                problem,
                fix,
            })
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
