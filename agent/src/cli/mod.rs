//! The `weir` command line: the daemon and the technician's tools, one file per
//! subcommand. Each returns an [`ExitCode`] the binary passes on.

pub mod backtest;
mod backtest_eval;
pub mod config;
pub mod decode;
pub mod diag;
pub mod nab;
pub mod outbox;
mod outbox_purge;
mod outbox_rows;
pub mod progress;
pub mod run;
pub mod sensors;
pub mod status;
pub mod tail;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Exit codes (sysexits-style where one fits), so scripts and systemd can tell
/// a bad config from a runtime failure.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// A runtime failure (cannot open the outbox, ...).
    pub const FAILURE: u8 = 1;
    /// Invalid command line (clap's own code).
    pub const USAGE: u8 = 2;
    /// Bad data (EX_DATAERR): the outbox database is corrupt or from a newer Weir (`weir run`,
    /// `weir outbox verify`), or a payload cannot be decoded (`weir decode`).
    pub const DATA: u8 = 65;
    /// The configuration is invalid (EX_CONFIG).
    pub const CONFIG: u8 = 78;
    /// The state directory's filesystem (or the outbox file) is read-only (EX_CANTCREAT):
    /// restarting will not help until someone repairs or remounts it.
    pub const READ_ONLY: u8 = 73;
    /// Try again later (EX_TEMPFAIL): `weir outbox purge` while the daemon runs.
    pub const BUSY: u8 = 75;
}

/// Weir: sensors in, event-time windows and anomaly alerts out over MQTT.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent (what systemd starts).
    Run {
        /// Configuration file.
        #[arg(
            short,
            long,
            default_value = "/etc/weir/weir.toml",
            env = "WEIR_CONFIG"
        )]
        config: PathBuf,
        /// Log filter, e.g. "info" or "weir=debug" (also WEIR_LOG).
        #[arg(long, env = "WEIR_LOG", default_value = "info")]
        log: String,
    },
    /// Is weir running and healthy: uptime, upstream link, backlog per class, watermark lag,
    /// sensor health, raised alerts and every drop by reason. Exit 0 healthy, 1 running but
    /// unhealthy (the reasons are printed), 3 not running (then read-only from the state
    /// database), 4 the daemon cannot be asked (permissions).
    Status {
        /// Configuration file.
        #[arg(
            short,
            long,
            default_value = "/etc/weir/weir.toml",
            env = "WEIR_CONFIG"
        )]
        config: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Unhealthy when the upstream broker has been unreachable longer than this.
        #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
        upstream_down_after: std::time::Duration,
        /// Unhealthy when the local ingest broker has been unreachable longer than this.
        #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
        ingest_down_after: std::time::Duration,
        /// Unhealthy when an unsent outbox row is older than this.
        #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
        backlog_age: std::time::Duration,
    },
    /// Follow the running daemon's live stream: alerts, aggregates (window panes), late
    /// readings, dead letters, readings (all when none is named). JSON lines when piped.
    Tail {
        /// Configuration file.
        #[arg(
            short,
            long,
            default_value = "/etc/weir/weir.toml",
            env = "WEIR_CONFIG"
        )]
        config: PathBuf,
        /// Streams to follow.
        #[arg(value_enum)]
        kinds: Vec<crate::control::tap::Kind>,
        /// Only events of this sensor.
        #[arg(long)]
        sensor: Option<String>,
        /// JSON lines even on a terminal.
        #[arg(long)]
        json: bool,
    },
    /// Print the running daemon's counters and gauges in Prometheus text format.
    Metrics {
        /// Configuration file.
        #[arg(
            short,
            long,
            default_value = "/etc/weir/weir.toml",
            env = "WEIR_CONFIG"
        )]
        config: PathBuf,
    },
    /// Show the running daemon's log filter, or change it without a restart.
    LogLevel {
        /// Configuration file.
        #[arg(
            short,
            long,
            default_value = "/etc/weir/weir.toml",
            env = "WEIR_CONFIG"
        )]
        config: PathBuf,
        /// The new filter: a level (error, warn or warning, info, debug, trace, off),
        /// optionally with module=level pairs, e.g. "info,weir::uplink=debug"; absent:
        /// print the current one.
        filter: Option<String>,
        /// Accept a filter that sets no level for everything else (ERROR lines included
        /// would then be off); without it such a filter is refused.
        #[arg(long)]
        allow_silence: bool,
    },
    /// Check or print configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Replay recorded readings through the engine and detectors of a config, as fast as
    /// possible, and print the panes, late and quarantined readings, alerts and
    /// per-reading anomaly scores the daemon would produce.
    Backtest {
        /// Configuration file whose [engine] and [[detector]] sections run.
        #[arg(short, long)]
        config: PathBuf,
        /// Recorded readings: CSV with a header (sensor, metric, value, ts[, arrival]) or
        /// JSON lines with those fields, in arrival order; "-" for standard input.
        input: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: backtest::Format,
        /// At the end of the input, let the simulated clock run until every key is idle,
        /// so every open window fires (needs [engine] idle_timeout).
        #[arg(long)]
        flush: bool,
        /// Leave out the per-reading score records.
        #[arg(long)]
        no_scores: bool,
        /// Write score records only for readings scoring at least this (0 to 1):
        /// the unusual readings, not every one. Default: every reading.
        #[arg(long, value_name = "SCORE")]
        min_score: Option<f64>,
        /// Score the run against labelled anomaly windows: a JSON file
        /// {"<sensor>": [[start, end], ...], ...} (NAB-style; timestamps as in the input).
        /// Prints per sensor and overall: windows detected and missed, false alarms,
        /// detection delay, and NAB scores (standard, reward_low_FP_rate, reward_low_FN_rate).
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Score against a label column of the input instead (1 = anomalous row): runs of
        /// labelled rows per sensor are the windows; also prints row-level precision,
        /// recall and F1 of the alerts.
        #[arg(long)]
        label_column: Option<String>,
        /// Unit of numeric timestamps: "s" or "ms". Default: below 1e11 is seconds,
        /// above is milliseconds (and the summary says how many were read as seconds).
        #[arg(long, value_enum)]
        ts_unit: Option<backtest::TsUnit>,
    },
    /// Local sensors: list with health, scan an I2C bus, read one.
    Sensors {
        /// Configuration file.
        #[arg(
            short,
            long,
            default_value = "/etc/weir/weir.toml",
            env = "WEIR_CONFIG",
            global = true
        )]
        config: PathBuf,
        /// Machine-readable output.
        #[arg(long, global = true)]
        json: bool,
        /// What to do.
        #[command(subcommand)]
        command: SensorsCommand,
    },
    /// Turn one postcard payload (`[uplink] format = "postcard"`) back into exactly the JSON
    /// the json format publishes; a JSON payload is printed unchanged.
    Decode {
        /// The payload, raw bytes as received (e.g. `mosquitto_sub -N -C 1 -t ... > msg.bin`);
        /// standard input when absent or "-".
        file: Option<PathBuf>,
    },
    /// The outbox database: what is waiting, in what order, export, purge, verify.
    Outbox {
        /// Configuration file naming the outbox ([outbox] path).
        #[arg(
            short,
            long,
            default_value = "/etc/weir/weir.toml",
            env = "WEIR_CONFIG",
            global = true
        )]
        config: PathBuf,
        /// The database file itself (instead of the one the configuration names).
        #[arg(long, global = true)]
        db: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long, global = true)]
        json: bool,
        /// What to do.
        #[command(subcommand)]
        command: OutboxCommand,
    },
    /// Write a diagnostics bundle (tar.gz) for support: version, the configuration with secrets
    /// redacted, status, outbox stats, config check, sensor health, recent logs, the system.
    Diag(DiagArgs),
}

/// `weir outbox ...`
#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// Open the database read-only (safe while weir runs), run SQLite's integrity check, check
    /// the schema version, and print rows and bytes per class and the oldest row. Exit 0 when
    /// sound, 65 when damaged or from a newer weir, 1 when it cannot be opened.
    Verify,
    /// Rows, bytes, oldest and newest per class, the topics with the most rows, the budget in
    /// use and every purge done by hand. Read-only, safe while weir runs.
    Stats {
        /// How many of the busiest topics to list.
        #[arg(long, default_value_t = 10)]
        top: usize,
    },
    /// The next rows in the order the uplink will send them (alerts first, then aggregates, then
    /// diagnostics; oldest first within a class), payloads decoded to JSON. Read-only.
    Peek {
        /// How many rows.
        #[arg(short = 'n', default_value_t = 10)]
        n: usize,
        /// Only this class.
        #[arg(long, value_enum)]
        class: Option<outbox::ClassArg>,
    },
    /// Every row as JSON lines (id, class, topic, created_ms, supersede_key, bytes, decoded
    /// payload), in send order. Read-only, safe while weir runs.
    Export {
        /// Only this class.
        #[arg(long, value_enum)]
        class: Option<outbox::ClassArg>,
        /// Write to this file instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Delete the rows produced longer ago than DURATION (e.g. 2d, 12h), after a confirmation.
    /// Refuses while weir runs (stop it first: it keeps the byte accounting in memory). Each
    /// purge is recorded in the database and shown by `weir outbox stats`. Exit 75 while weir
    /// runs, 2 without --yes when standard input is not a terminal.
    Purge {
        /// Age of the rows to delete, by when they were produced (e.g. 30m, 12h, 2d).
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: std::time::Duration,
        /// Only this class.
        #[arg(long, value_enum)]
        class: Option<outbox::ClassArg>,
        /// Do not ask (for scripts).
        #[arg(long)]
        yes: bool,
    },
}

/// `weir diag`
#[derive(Debug, clap::Args)]
pub struct DiagArgs {
    /// Configuration file.
    #[arg(
        short,
        long,
        default_value = "/etc/weir/weir.toml",
        env = "WEIR_CONFIG"
    )]
    pub config: PathBuf,
    /// The bundle to write (default: weir-diag-<device>-<time>.tar.gz in the current directory).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

/// `weir sensors ...`
#[derive(Debug, Subcommand)]
pub enum SensorsCommand {
    /// The configured sensors and the health the daemon last recorded.
    List,
    /// Probe an I2C bus like i2cdetect and name known chips (default: every configured bus).
    Scan {
        /// The bus device, e.g. /dev/i2c-1.
        #[arg(long)]
        bus: Option<PathBuf>,
    },
    /// Take one reading (GPIO: the level, then each edge up to --count) for a wiring check.
    Read {
        /// The sensor's name in the config.
        name: String,
        /// GPIO: readings to wait for (the level now counts as one).
        #[arg(long, default_value_t = 1)]
        count: usize,
        /// GPIO: give up after this long.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
}

/// `weir config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a configuration file; exit 0 if valid, 78 with the line, key and fix if not.
    Check {
        /// Configuration file.
        #[arg(default_value = "/etc/weir/weir.toml")]
        file: PathBuf,
    },
    /// Print a fully commented example configuration.
    Example,
}
