//! The `weir` command line: the daemon and the technician's tools, one file per
//! subcommand. Each returns an [`ExitCode`] the binary passes on.

pub mod backtest;
mod backtest_eval;
pub mod config;
pub mod decode;
pub mod diag;
pub mod human;
pub mod nab;
pub mod outbox;
mod outbox_purge;
mod outbox_rows;
pub mod progress;
pub mod run;
pub mod sensors;
mod sensors_live;
pub mod status;
pub mod tail;
pub mod top;

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

/// `weir --version`: the version, the commit and the target it was built for.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("WEIR_COMMIT"),
    ", ",
    env!("WEIR_TARGET"),
    ")"
);

/// The exit code after writing the output failed with `e`: a reader that went away
/// (`weir ... | head`) ends the command quietly with success, as it would end a Unix tool
/// killed by SIGPIPE without a word; any other error (a full disk) is said and fails.
pub fn output_failed(e: &std::io::Error, what: &str, err: &mut impl std::io::Write) -> u8 {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        return exit::OK;
    }
    let _ = writeln!(err, "error: writing {what}: {e}");
    exit::FAILURE
}

/// Weir: sensors in, event-time windows and anomaly alerts out over MQTT.
///
/// One binary is both the daemon (`weir run`, started by systemd) and the field
/// technician's tools. Readings from I2C, GPIO and 1-Wire sensors, simulated sensors and a
/// local MQTT broker go through event-time windows and anomaly detectors; alerts and window
/// results wait in a SQLite outbox until the upstream broker acknowledges them. Exit codes:
/// 0 ok, 1 failure, 2 usage, 3 not running, 4 permission denied, 65 bad data, 73 read-only,
/// 75 busy, 78 bad configuration.
#[derive(Debug, Parser)]
#[command(name = "weir", version = VERSION, propagate_version = true)]
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
        /// Log filter, e.g. "info" or "info,weir=debug" (also WEIR_LOG).
        #[arg(long, env = "WEIR_LOG", default_value = "info")]
        log: String,
    },
    /// Is weir running and healthy (exit 0), and if not, why.
    ///
    /// Uptime, upstream link, backlog per class, watermark lag,
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
    /// Follow the running daemon's live stream of readings and results.
    ///
    /// Alerts, aggregates (window panes), late readings, dead letters, readings (all when
    /// none is named). One line per event for people, JSON lines when piped.
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
    /// Live view of the running daemon: rates, backlog, links, lag.
    ///
    /// Redrawn once a second (--interval). Readings per second in, panes and alerts out, PUBACKs, dead letters and drops; the
    /// backlog and its trend; both links; the worst watermark lag; the health verdict. It
    /// fits 80x24 and is redrawn in place on a terminal; piped, each frame follows the last.
    /// Exit 3 when weir is not running.
    Top {
        /// Configuration file.
        #[arg(
            short,
            long,
            default_value = "/etc/weir/weir.toml",
            env = "WEIR_CONFIG"
        )]
        config: PathBuf,
        /// Time between frames (the rates are over it).
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        interval: std::time::Duration,
        /// Print one frame after one interval, then exit (for scripts).
        #[arg(long)]
        once: bool,
    },
    /// Print the running daemon's counters and gauges for Prometheus.
    ///
    /// In the Prometheus text format. With weir down, `weir_up 0` and what the state
    /// database says, so a node_exporter textfile never keeps a stale `weir_up 1`.
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
    /// Show or change the running daemon's log filter, without a restart.
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
    /// Replay recorded readings through a config's engine and detectors.
    ///
    /// As fast as possible; prints the panes, late and quarantined readings, alerts and
    /// per-reading anomaly scores the daemon would produce, and with labels, scores them.
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
    /// Sensors: list them with their health, scan an I2C bus, read one.
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
    /// Turn one postcard payload back into JSON.
    ///
    /// Postcard is `[uplink] format = "postcard"`; the result is exactly the JSON the json
    /// format publishes. A JSON payload is printed unchanged.
    Decode {
        /// The payload, raw bytes as received (e.g. `mosquitto_sub -N -C 1 -t ... > msg.bin`);
        /// standard input when absent or "-".
        file: Option<PathBuf>,
    },
    /// The outbox database: inspect, export, purge, verify.
    ///
    /// What is waiting and in what order it will be sent, every row as JSON lines, deleting
    /// old rows by hand (recorded), and an integrity check.
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
    /// Write a diagnostics bundle (tar.gz) for support.
    ///
    /// Version, the configuration with secrets redacted, status, outbox stats, config check,
    /// sensor health, recent logs, the system.
    Diag(DiagArgs),
}

/// `weir outbox ...`
#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// Check the database: integrity, schema version, rows per class.
    ///
    /// Opens it read-only (safe while weir runs), runs SQLite's integrity check, checks
    /// the schema version, and prints rows and bytes per class and the oldest row. Exit 0 when
    /// sound, 65 when damaged or from a newer weir, 1 when it cannot be opened.
    Verify,
    /// What is waiting: rows, bytes and ages per class, busiest topics, the budget.
    ///
    /// Rows, bytes, oldest and newest per class, the topics with the most rows, the budget in
    /// use and every purge done by hand. Read-only, safe while weir runs.
    Stats {
        /// How many of the busiest topics to list.
        #[arg(long, default_value_t = 10)]
        top: usize,
    },
    /// The next rows in the order the uplink will send them.
    ///
    /// Alerts first, then aggregates, then diagnostics; oldest first within a class;
    /// payloads decoded to JSON. Read-only.
    Peek {
        /// How many rows.
        #[arg(short = 'n', default_value_t = 10)]
        n: usize,
        /// Only this class.
        #[arg(long, value_enum)]
        class: Option<outbox::ClassArg>,
    },
    /// Every row as JSON lines, in send order.
    ///
    /// Each line: id, class, topic, created_ms, supersede_key, bytes, the decoded
    /// payload. Read-only, safe while weir runs.
    Export {
        /// Only this class.
        #[arg(long, value_enum)]
        class: Option<outbox::ClassArg>,
        /// Write to this file instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Delete the rows older than a given age, after a confirmation.
    ///
    /// Deletes the rows produced longer ago than DURATION (e.g. 2d, 12h).
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
    /// Every sensor with the health the daemon last recorded.
    ///
    /// I2C, GPIO, 1-Wire and simulated sensors, each MQTT topic, and the sensors the running
    /// weir has seen on those topics.
    List,
    /// Probe an I2C bus like i2cdetect and name known chips (default: every configured bus).
    Scan {
        /// The bus device, e.g. /dev/i2c-1.
        #[arg(long)]
        bus: Option<PathBuf>,
    },
    /// Take one reading of a sensor, for a wiring check.
    ///
    /// I2C and 1-Wire: one read through the daemon's own driver. GPIO: the level, then each
    /// edge up to --count. Simulated and MQTT sensors: the next live readings (up to
    /// --count) from the running weir; with weir stopped, a simulated sensor shows its
    /// generator's first sample.
    Read {
        /// The sensor's name in the config.
        name: String,
        /// GPIO, simulated and MQTT sensors: readings to wait for (GPIO: the level now
        /// counts as one).
        #[arg(long, default_value_t = 1)]
        count: usize,
        /// GPIO, simulated and MQTT sensors: give up after this long.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
}

/// `weir config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a configuration file: exit 0 if valid, 78 with the line, key and fix if not.
    Check {
        /// Configuration file.
        #[arg(default_value = "/etc/weir/weir.toml")]
        file: PathBuf,
    },
    /// Print a fully commented example configuration.
    Example,
}
