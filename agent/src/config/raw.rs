//! The configuration file as written: serde types that mirror the TOML one to one.
//! Durations and sizes stay strings here; `super::validate` turns them into a
//! checked [`super::Config`] and names the key and line of anything wrong.

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub agent: RawAgent,
    #[serde(default)]
    pub engine: RawEngine,
    #[serde(default)]
    pub outbox: RawOutbox,
    pub uplink: Option<RawUplink>,
    pub ingest: Option<RawIngest>,
    #[serde(default)]
    pub sim: Vec<RawSim>,
    #[serde(default)]
    pub detector: Vec<RawDetector>,
    #[serde(default)]
    pub i2c: Vec<super::validate::devices::RawI2c>,
    #[serde(default)]
    pub gpio: Vec<super::validate::devices::RawGpio>,
    #[serde(default)]
    pub onewire: Vec<super::validate::devices::RawOneWire>,
    #[serde(default)]
    pub metrics: RawMetrics,
    pub homeassistant: Option<RawHomeAssistant>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHomeAssistant {
    pub discovery_prefix: Option<String>,
    pub state: Option<String>,
    #[serde(default)]
    pub units: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgent {
    pub device: Option<String>,
    pub state_dir: Option<String>,
    pub runtime_dir: Option<String>,
    pub channel_capacity: Option<usize>,
    pub shutdown_grace: Option<String>,
    pub checkpoint_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEngine {
    pub window: Option<RawWindow>,
    pub scope: Option<String>,
    pub max_out_of_orderness: Option<String>,
    pub allowed_lateness: Option<String>,
    pub max_future_skew: Option<String>,
    pub max_backfill: Option<String>,
    pub idle_timeout: Option<String>,
    pub late_fire_delay: Option<String>,
    pub quantiles: Option<bool>,
    pub max_keys: Option<usize>,
    pub max_windows_per_key: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWindow {
    pub kind: Option<String>,
    pub size: Option<String>,
    pub slide: Option<String>,
    pub gap: Option<String>,
    pub max_length: Option<String>,
    pub offset: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutbox {
    pub path: Option<String>,
    pub max_bytes: Option<RawSize>,
    pub ttl: Option<RawTtl>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTtl {
    pub alert: Option<String>,
    pub aggregate: Option<String>,
    pub diagnostic: Option<String>,
}

/// A byte size: a plain integer or a string such as `"64MiB"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawSize {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUplink {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub client_id: Option<String>,
    pub topic_prefix: Option<String>,
    pub keep_alive: Option<String>,
    pub reconnect_min: Option<String>,
    pub reconnect_max: Option<String>,
    pub status_interval: Option<String>,
    pub max_inflight: Option<u16>,
    pub max_rate: Option<u32>,
    pub format: Option<String>,
    pub username: Option<String>,
    pub password_file: Option<String>,
    pub password_env: Option<String>,
    pub tls: Option<RawTls>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIngest {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub client_id: Option<String>,
    pub max_payload_bytes: Option<usize>,
    pub broker_max_inflight: Option<usize>,
    pub value_field: Option<String>,
    pub ts_field: Option<String>,
    #[serde(default)]
    pub topic: Vec<RawTopic>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTopic {
    pub filter: Option<String>,
    pub sensor: Option<String>,
    pub metric: Option<String>,
    pub format: Option<String>,
    #[serde(default)]
    pub fields: std::collections::BTreeMap<String, String>,
    pub ts_path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSim {
    pub name: Option<String>,
    pub metric: Option<String>,
    pub interval: Option<String>,
    pub seed: Option<u64>,
    pub base: Option<f64>,
    pub noise: Option<f64>,
    pub drift_per_hour: Option<f64>,
    pub amplitude: Option<f64>,
    pub period: Option<String>,
    pub when_full: Option<String>,
    #[serde(default)]
    pub anomaly: Vec<RawAnomaly>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAnomaly {
    pub kind: Option<String>,
    pub at: Option<u64>,
    pub length: Option<u64>,
    pub magnitude: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDetector {
    pub name: Option<String>,
    pub kind: Option<String>,
    pub sensor: Option<String>,
    pub metric: Option<String>,
    pub severity: Option<String>,
    // threshold
    pub high: Option<f64>,
    pub low: Option<f64>,
    pub hysteresis: Option<f64>,
    pub clear_after: Option<RawClearAfter>,
    // zscore
    pub alpha: Option<f64>,
    pub threshold: Option<f64>,
    pub warmup: Option<u32>,
    pub min_stddev: Option<f64>,
    // flatline
    pub tolerance: Option<f64>,
    pub stuck_for: Option<String>,
    pub min_readings: Option<u32>,
    // level_shift, seasonal, auto
    pub drift: Option<f64>,
    pub slots_per_day: Option<u32>,
    pub weekly: Option<bool>,
    pub min_samples: Option<u32>,
    pub sustain: Option<u32>,
    // reference
    pub commission: Option<u32>,
}

/// `clear_after` is a duration for per-reading detectors (`"5s"`) and a number of
/// windows for per-window ones (`3`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawClearAfter {
    Windows(u32),
    Duration(String),
}
