//! Raw config -> checked [`Config`], with defaults. An error is the key path, the
//! problem and the fix; `mod.rs` adds the file and line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{RawClearAfter, RawConfig, RawDetector, RawSize};
use super::span::Seg::{self, Index, Key};
use super::{Config, IngestConfig, SimSource, UplinkConfig, WhenFull};
use crate::detect::{DetectError, DetectorKind, DetectorSpec, Glob, Severity};
use crate::engine::{EngineConfig, EngineConfigError, Scope, WindowSpec};
use crate::outbox::OutboxConfig;
use crate::source::payload::PayloadFormat;
use crate::source::topic::TopicMap;
use crate::uplink::tls::{self, Credentials, Secret, TlsError, TlsSettings};
use crate::wire::Format;
use weir_sensors::sim::{Anomaly, AnomalyKind, SimSpec};

#[path = "devices.rs"]
pub(super) mod devices;

/// Key path, problem, fix.
pub type Error = (Vec<Seg>, String, String);
type Result<T> = std::result::Result<T, Error>;

fn err<T>(path: &[Seg], problem: impl Into<String>, fix: impl Into<String>) -> Result<T> {
    Err((path.to_vec(), problem.into(), fix.into()))
}

fn with(path: &[Seg], seg: Seg) -> Vec<Seg> {
    let mut p = path.to_vec();
    p.push(seg);
    p
}

/// A duration such as `"10s"`, `"500ms"`, `"1m 30s"`.
fn duration(path: &[Seg], value: Option<&str>, default: &str) -> Result<Duration> {
    let text = value.unwrap_or(default);
    humantime::parse_duration(text).or_else(|e| {
        // The parser's own words ("expected number at 0") point at a byte offset, which
        // tells a technician nothing the fix line does not; a unit it does not know, or a
        // number too large, is worth naming.
        let why = match e {
            humantime::DurationError::UnknownUnit { unit, .. } => {
                format!(" (no unit \"{unit}\")")
            }
            humantime::DurationError::NumberOverflow => " (too large)".to_string(),
            _ => String::new(),
        };
        err(
            path,
            format!("\"{text}\" is not a duration{why}"),
            "write a number with a unit, e.g. \"500ms\", \"10s\", \"5m\", \"1h\"",
        )
    })
}

fn millis(path: &[Seg], value: Option<&str>, default: &str) -> Result<i64> {
    let d = duration(path, value, default)?;
    i64::try_from(d.as_millis())
        .or_else(|_| err(path, "duration is too long", "use at most a few years"))
}

/// A byte size: an integer, or a string with a unit (`"64MiB"`, `"512 KiB"`, `"1GB"`).
fn size(path: &[Seg], value: Option<&RawSize>, default: u64) -> Result<u64> {
    let text = match value {
        None => return Ok(default),
        Some(RawSize::Bytes(b)) => return Ok(*b),
        Some(RawSize::Text(t)) => t.trim(),
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        _ => 0,
    };
    match digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
    {
        Some(n) if factor > 0 => Ok(n),
        _ => err(
            path,
            format!("\"{text}\" is not a size"),
            "write bytes as an integer, or a number with a unit: \"512KiB\", \"64MiB\", \"1GiB\"",
        ),
    }
}

/// Names end up in topics and ids: keep them to characters that are safe in both.
fn name(path: &[Seg], value: Option<&str>, what: &str) -> Result<String> {
    let Some(v) = value else {
        return err(
            path,
            format!("{what} is missing"),
            format!("add {} = \"...\"", last_key(path)),
        );
    };
    if v.is_empty()
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return err(
            path,
            format!("\"{v}\" is not a valid {what}"),
            "use letters, digits, '-', '_' and '.' only (it becomes an MQTT topic level)",
        );
    }
    Ok(v.to_string())
}

fn last_key(path: &[Seg]) -> &'static str {
    path.iter()
        .rev()
        .find_map(|s| match s {
            Key(k) => Some(*k),
            Index(_) => None,
        })
        .unwrap_or("key")
}

fn positive(path: &[Seg], d: Duration, what: &str) -> Result<Duration> {
    if d.is_zero() {
        return err(
            path,
            format!("{what} must be greater than zero"),
            "e.g. \"1s\"",
        );
    }
    Ok(d)
}

fn hostname() -> String {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let clean: String = h
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .collect();
    if clean.is_empty() {
        "weir".into()
    } else {
        clean
    }
}

pub fn validate(raw: RawConfig) -> Result<Config> {
    let a = &[Key("agent")];
    let device = match raw.agent.device.as_deref() {
        Some(d) => name(&with(a, Key("device")), Some(d), "device name")?,
        None => hostname(),
    };
    let state_dir = PathBuf::from(raw.agent.state_dir.as_deref().unwrap_or("/var/lib/weir"));
    let runtime_dir = PathBuf::from(raw.agent.runtime_dir.as_deref().unwrap_or("/run/weir"));
    let channel_capacity = raw.agent.channel_capacity.unwrap_or(4096);
    if channel_capacity == 0 {
        return err(
            &with(a, Key("channel_capacity")),
            "must be at least 1",
            "e.g. 4096",
        );
    }
    let shutdown_grace = duration(
        &with(a, Key("shutdown_grace")),
        raw.agent.shutdown_grace.as_deref(),
        "5s",
    )?;
    let checkpoint_interval = duration(
        &with(a, Key("checkpoint_interval")),
        raw.agent.checkpoint_interval.as_deref(),
        "15s",
    )?;
    if checkpoint_interval.is_zero() || checkpoint_interval > std::time::Duration::from_secs(3600) {
        return err(
            &with(a, Key("checkpoint_interval")),
            "must be more than 0 and at most 1h",
            "e.g. \"1s\" (shorter: results sooner, more SD-card writes)",
        );
    }

    let engine = engine(&raw)?;
    let detectors = detectors(&raw, &engine)?;

    let o = &[Key("outbox")];
    let max_bytes = size(
        &with(o, Key("max_bytes")),
        raw.outbox.max_bytes.as_ref(),
        64 << 20,
    )?;
    if max_bytes < 1 << 20 {
        return err(
            &with(o, Key("max_bytes")),
            format!("{max_bytes} bytes is below the 1 MiB minimum"),
            "use at least \"1MiB\"",
        );
    }
    let outbox = OutboxConfig {
        path: raw
            .outbox
            .path
            .as_deref()
            .map_or_else(|| state_dir.join("outbox.db"), PathBuf::from),
        max_bytes,
    };

    let outbox_ttl = {
        let t = raw.outbox.ttl.as_ref();
        let ttl =
            |key: &'static str, v: Option<&String>, default: &str| -> Result<Option<Duration>> {
                let text = v.map_or(default, String::as_str);
                if text == "never" {
                    return Ok(None);
                }
                let path = [Key("outbox"), Key("ttl"), Key(key)];
                positive(&path, duration(&path, Some(text), default)?, key).map(Some)
            };
        [
            ttl("alert", t.and_then(|t| t.alert.as_ref()), "never")?,
            ttl("aggregate", t.and_then(|t| t.aggregate.as_ref()), "7d")?,
            ttl("diagnostic", t.and_then(|t| t.diagnostic.as_ref()), "1d")?,
        ]
    };
    let uplink = uplink(&raw, &device)?;
    let ingest = ingest(&raw, &device)?;
    let sims = sims(&raw)?;
    let devices = devices::validate(&raw)?;
    if sims.is_empty() && ingest.is_none() && devices.is_empty() {
        return err(
            &[Key("sim")],
            "no sources: there is no [[sim]], [[i2c]], [[gpio]] or [[onewire]] sensor and no [ingest] section",
            "add an [ingest] section with [[ingest.topic]] entries, or a sensor section",
        );
    }

    let metrics_listen = match raw.metrics.listen.as_deref() {
        None => None,
        Some(text) => Some(text.parse().or_else(|e| {
            err(
                &[Key("metrics"), Key("listen")],
                format!("\"{text}\" is not an address and port ({e})"),
                "write e.g. \"127.0.0.1:9464\" (localhost only) or remove the key to turn the endpoint off",
            )
        })?),
    };

    let homeassistant = homeassistant(&raw, &uplink.topic_prefix)?;
    Ok(Config {
        device,
        state_dir,
        runtime_dir,
        channel_capacity,
        shutdown_grace,
        checkpoint_interval,
        engine,
        detectors,
        outbox,
        outbox_ttl,
        uplink,
        ingest,
        sims,
        devices,
        metrics_listen,
        homeassistant,
    })
}

fn homeassistant(
    raw: &RawConfig,
    topic_prefix: &str,
) -> Result<Option<crate::homeassistant::HaConfig>> {
    use crate::homeassistant::{HaConfig, StateValue};
    let Some(h) = &raw.homeassistant else {
        return Ok(None);
    };
    let s = &[Key("homeassistant")];
    let prefix = h.discovery_prefix.as_deref().unwrap_or("homeassistant");
    if prefix.is_empty()
        || prefix.starts_with('/')
        || prefix.ends_with('/')
        || prefix.contains(['+', '#', '\0'])
    {
        return err(
            &with(s, Key("discovery_prefix")),
            format!(
                "\"{prefix}\" is not a topic prefix (empty, a leading or trailing '/', or a wildcard)"
            ),
            "use Home Assistant's discovery prefix, \"homeassistant\" unless you changed it in its MQTT integration",
        );
    }
    // Everything under the discovery prefix is published retained.
    if topic_prefix == prefix || topic_prefix.starts_with(&format!("{prefix}/")) {
        return err(
            &with(s, Key("discovery_prefix")),
            format!(
                "\"{prefix}\" contains [uplink] topic_prefix \"{topic_prefix}\": panes and alerts would be published retained as discovery messages"
            ),
            "keep Weir's topics out of Home Assistant's discovery prefix, e.g. topic_prefix = \"weir/{device}\"",
        );
    }
    let state = match h.state.as_deref().unwrap_or("mean") {
        "mean" => StateValue::Mean,
        "last" => StateValue::Last,
        other => {
            return err(
                &with(s, Key("state")),
                format!("\"{other}\" is not a state"),
                "use \"mean\" (the newest window's mean) or \"last\" (its latest reading)",
            );
        }
    };
    if let Some((metric, _)) = h.units.iter().find(|(_, u)| u.trim().is_empty()) {
        return err(
            &[Key("homeassistant"), Key("units")],
            format!("the unit of metric \"{metric}\" is empty"),
            "write the unit Home Assistant should show, e.g. voltage = \"mV\", or remove the entry",
        );
    }
    Ok(Some(HaConfig {
        discovery_prefix: prefix.to_string(),
        state,
        units: h.units.clone(),
    }))
}

fn engine(raw: &RawConfig) -> Result<EngineConfig> {
    let e = &[Key("engine")];
    let w = with(e, Key("window"));
    let win = raw.engine.window.as_ref();
    let field =
        |f: fn(&super::raw::RawWindow) -> &Option<String>| win.and_then(|w| f(w).as_deref());
    let kind = win.and_then(|w| w.kind.as_deref()).unwrap_or("tumbling");
    // Keys that mean nothing for the chosen kind are errors, not silently ignored.
    let unused: &[(&'static str, Option<&str>)] = match kind {
        "tumbling" => &[
            ("slide", field(|w| &w.slide)),
            ("gap", field(|w| &w.gap)),
            ("max_length", field(|w| &w.max_length)),
        ],
        "hopping" => &[
            ("gap", field(|w| &w.gap)),
            ("max_length", field(|w| &w.max_length)),
        ],
        "session" => &[("size", field(|w| &w.size)), ("slide", field(|w| &w.slide))],
        _ => {
            return err(
                &with(&w, Key("kind")),
                format!("window kind \"{kind}\" is not supported"),
                "use kind = \"tumbling\", \"hopping\" or \"session\"",
            );
        }
    };
    if let Some((name, _)) = unused.iter().find(|(_, v)| v.is_some()) {
        let fix = match kind {
            "tumbling" => "remove it: tumbling windows have a size and an offset only",
            "hopping" => "remove it: hopping windows have a size, a slide and an offset",
            _ => "remove it: session windows have a gap, a max_length and an offset",
        };
        return err(
            &with(&w, Key(name)),
            format!("`{name}` does not apply to {kind} windows"),
            fix,
        );
    }
    let ms = |name: &'static str, default: &str| {
        millis(
            &with(&w, Key(name)),
            match name {
                "size" => field(|w| &w.size),
                "slide" => field(|w| &w.slide),
                "gap" => field(|w| &w.gap),
                "max_length" => field(|w| &w.max_length),
                _ => field(|w| &w.offset),
            },
            default,
        )
    };
    let offset_ms = ms("offset", "0s")?;
    let window = match kind {
        "tumbling" => WindowSpec::Tumbling {
            size_ms: ms("size", "60s")?,
            offset_ms,
        },
        "hopping" => {
            if field(|w| &w.slide).is_none() {
                return err(
                    &with(&w, Key("slide")),
                    "a hopping window needs a slide",
                    "add slide = \"15s\" (how far each window starts after the previous one)",
                );
            }
            WindowSpec::Hopping {
                size_ms: ms("size", "60s")?,
                slide_ms: ms("slide", "15s")?,
                offset_ms,
            }
        }
        _ => WindowSpec::Session {
            gap_ms: ms("gap", "30s")?,
            max_length_ms: ms("max_length", "1h")?,
            offset_ms,
        },
    };
    let scope = match raw.engine.scope.as_deref().unwrap_or("per_key") {
        "per_key" => Scope::PerKey,
        "global" => Scope::Global,
        s => {
            return err(
                &with(e, Key("scope")),
                format!("unknown watermark scope \"{s}\""),
                "use scope = \"per_key\" (each sensor's own clock) or \"global\" (one clock, as Flink)",
            );
        }
    };
    let opt = |name: &'static str, v: &Option<String>| -> Result<Option<i64>> {
        match v.as_deref() {
            None | Some("off") => Ok(None),
            Some(text) => millis(&with(e, Key(name)), Some(text), "0s").map(Some),
        }
    };
    let cfg = EngineConfig {
        window,
        scope,
        max_out_of_orderness_ms: millis(
            &with(e, Key("max_out_of_orderness")),
            raw.engine.max_out_of_orderness.as_deref(),
            "5s",
        )?,
        allowed_lateness_ms: millis(
            &with(e, Key("allowed_lateness")),
            raw.engine.allowed_lateness.as_deref(),
            "30s",
        )?,
        max_future_skew_ms: millis(
            &with(e, Key("max_future_skew")),
            raw.engine.max_future_skew.as_deref(),
            "5m",
        )?,
        max_backfill_ms: opt("max_backfill", &raw.engine.max_backfill)?,
        idle_timeout_ms: match raw.engine.idle_timeout.as_deref() {
            None => Some(300_000),
            Some(_) => opt("idle_timeout", &raw.engine.idle_timeout)?,
        },
        late_fire_delay_ms: millis(
            &with(e, Key("late_fire_delay")),
            raw.engine.late_fire_delay.as_deref(),
            "0s",
        )?,
        quantiles: raw.engine.quantiles.unwrap_or(false),
        max_keys: raw.engine.max_keys.unwrap_or(10_000),
        max_windows_per_key: raw.engine.max_windows_per_key.unwrap_or(64),
    };
    if let Err(problem) = cfg.validate() {
        let (key, fix) = match &problem {
            EngineConfigError::NonPositiveWindowSize { setting, .. } => {
                (with(&w, Key(setting)), "use a duration such as \"60s\"")
            }
            EngineConfigError::OffsetOutOfRange { .. } => (
                with(&w, Key("offset")),
                "use an offset smaller than that, e.g. \"0s\"",
            ),
            EngineConfigError::SlideLargerThanSize { .. } => (
                with(&w, Key("slide")),
                "use a slide no larger than the size (equal to it is a tumbling window)",
            ),
            EngineConfigError::TooManyWindows { .. } => (
                with(&w, Key("slide")),
                "use a larger slide, or raise [engine] max_windows_per_key to at least size / slide",
            ),
            EngineConfigError::NegativeDuration { setting, .. } => {
                (with(e, Key(setting)), "use a duration of 0 or more")
            }
            EngineConfigError::NonPositiveDuration { setting, .. } => (
                with(e, Key(setting)),
                "use a positive duration, or \"off\" to disable it",
            ),
            EngineConfigError::ZeroLimit { setting } => (with(e, Key(setting)), "use at least 1"),
        };
        return err(&key, problem.to_string(), fix);
    }
    Ok(cfg)
}

const KINDS: &str = "use \"auto\" (no tuning), \"threshold\", \"zscore\", \"level_shift\", \"rate\", \"spread\", \"seasonal\", \"reference\", \"flatline\" or \"silence\"";

/// The per-reading statistical detectors' kinds, with their defaults.
fn online_kind(k: &str, d: &RawDetector, clear_after: Option<u32>) -> DetectorKind {
    match k {
        "level_shift" => DetectorKind::LevelShift {
            threshold: d.threshold.unwrap_or(8.0),
            drift: d.drift.unwrap_or(0.5),
            clear_after: clear_after.unwrap_or(30),
        },
        "rate" => DetectorKind::Rate {
            threshold: d.threshold.unwrap_or(6.0),
            clear_after: clear_after.unwrap_or(10),
        },
        "spread" => DetectorKind::Spread {
            threshold: d.threshold.unwrap_or(4.0),
            clear_after: clear_after.unwrap_or(30),
        },
        "seasonal" => DetectorKind::Seasonal {
            threshold: d.threshold.unwrap_or(4.0),
            slots_per_day: d.slots_per_day.unwrap_or(24),
            weekly: d.weekly.unwrap_or(false),
            min_samples: d.min_samples.unwrap_or(3),
            clear_after: clear_after.unwrap_or(10),
        },
        "reference" => DetectorKind::Reference {
            commission: d.commission.unwrap_or(300),
            threshold: d.threshold.unwrap_or(6.0),
            sustain: d.sustain.unwrap_or(3),
            clear_after: clear_after.unwrap_or(10),
        },
        _ => DetectorKind::Auto {
            threshold: d.threshold.unwrap_or(0.5),
            sustain: d.sustain.unwrap_or(3),
            clear_after: clear_after.unwrap_or(30),
        },
    }
}

fn detectors(raw: &RawConfig, engine: &EngineConfig) -> Result<Vec<DetectorSpec>> {
    let mut out: Vec<DetectorSpec> = Vec::new();
    for (i, d) in raw.detector.iter().enumerate() {
        let p = vec![Key("detector"), Index(i)];
        let name = name(&with(&p, Key("name")), d.name.as_deref(), "detector name")?;
        if out.iter().any(|o| o.name == name) {
            return err(
                &with(&p, Key("name")),
                format!("detector name \"{name}\" is used twice"),
                "give each detector its own name",
            );
        }
        let severity = match d.severity.as_deref().unwrap_or("warning") {
            "info" => Severity::Info,
            "warning" => Severity::Warning,
            "critical" => Severity::Critical,
            s => {
                return err(
                    &with(&p, Key("severity")),
                    format!("unknown severity \"{s}\""),
                    "use \"info\", \"warning\" or \"critical\"",
                );
            }
        };
        let clear_path = with(&p, Key("clear_after"));
        let kind = match d.kind.as_deref() {
            Some("threshold") => {
                let clear_after_ms = match &d.clear_after {
                    None => 0,
                    Some(RawClearAfter::Duration(s)) => millis(&clear_path, Some(s), "0s")?,
                    Some(RawClearAfter::Windows(_)) => {
                        return err(
                            &clear_path,
                            "a threshold clears after a duration, not a count",
                            "write e.g. clear_after = \"10s\"",
                        );
                    }
                };
                DetectorKind::Threshold {
                    high: d.high,
                    low: d.low,
                    hysteresis: d.hysteresis.unwrap_or(0.0),
                    clear_after_ms,
                }
            }
            Some("zscore") => {
                let clear_after = match &d.clear_after {
                    None => 2,
                    Some(RawClearAfter::Windows(n)) => *n,
                    Some(RawClearAfter::Duration(_)) => {
                        return err(
                            &clear_path,
                            "a z-score detector clears after a number of windows",
                            "write e.g. clear_after = 2",
                        );
                    }
                };
                DetectorKind::ZScore {
                    alpha: d.alpha.unwrap_or(0.1),
                    threshold: d.threshold.unwrap_or(3.0),
                    hysteresis: d.hysteresis.unwrap_or(0.5),
                    warmup: d.warmup.unwrap_or(5),
                    clear_after,
                    min_stddev: d.min_stddev.unwrap_or(1e-9),
                }
            }
            Some("silence") => {
                if engine.idle_timeout_ms.is_none() {
                    return err(
                        &with(&p, Key("kind")),
                        "a silence detector needs the engine to notice silent keys, but [engine] idle_timeout is off",
                        "set [engine] idle_timeout = \"5m\" (how long without readings counts as silence)",
                    );
                }
                DetectorKind::Silence
            }
            Some("flatline") => DetectorKind::Flatline {
                tolerance: d.tolerance.unwrap_or(0.0),
                min_duration_ms: millis(&with(&p, Key("stuck_for")), d.stuck_for.as_deref(), "5m")?,
                min_readings: d.min_readings.unwrap_or(3),
            },
            Some(k @ ("level_shift" | "rate" | "spread" | "seasonal" | "auto" | "reference")) => {
                let clear_after = match &d.clear_after {
                    None => None,
                    Some(RawClearAfter::Windows(n)) => Some(*n),
                    Some(RawClearAfter::Duration(_)) => {
                        return err(
                            &clear_path,
                            "this detector clears after a number of normal readings",
                            "write e.g. clear_after = 30",
                        );
                    }
                };
                online_kind(k, d, clear_after)
            }
            Some(k) => {
                return err(
                    &with(&p, Key("kind")),
                    format!("unknown detector kind \"{k}\""),
                    KINDS,
                );
            }
            None => {
                return err(&with(&p, Key("kind")), "detector kind is missing", KINDS);
            }
        };
        let spec = DetectorSpec {
            name,
            sensor: Glob::new(d.sensor.as_deref().unwrap_or("*")),
            metric: Glob::new(d.metric.as_deref().unwrap_or("*")),
            severity,
            kind,
        };
        if let Err(e) = spec.validate() {
            let key = match &e {
                DetectError::NotFinite { field, .. } => field,
                DetectError::NoLimit(_) => "high",
                DetectError::LowNotBelowHigh { .. } => "low",
                DetectError::Hysteresis { .. } => "hysteresis",
                DetectError::NegativeClearAfter { .. } => "clear_after",
                DetectError::Alpha { .. } => "alpha",
                DetectError::ZThreshold { .. } => "threshold",
                DetectError::MinStddev { .. } => "min_stddev",
                DetectError::OutOfRange { field, .. } => field,
                DetectError::Negative { field, .. } => field,
                DetectError::BadName(_) | DetectError::DuplicateName(_) => "name",
            };
            return err(
                &with(&p, Key(key)),
                e.to_string(),
                "see the [[detector]] section of `weir config example`",
            );
        }
        out.push(spec);
    }
    Ok(out)
}

fn uplink(raw: &RawConfig, device: &str) -> Result<UplinkConfig> {
    let u = &[Key("uplink")];
    let r = raw.uplink.as_ref();
    let get = |f: fn(&super::raw::RawUplink) -> Option<&String>| r.and_then(f).map(String::as_str);
    let topic_prefix = get(|r| r.topic_prefix.as_ref())
        .unwrap_or("weir/{device}")
        .replace("{device}", device);
    let topic_prefix = topic_prefix.trim_end_matches('/').to_string();
    if topic_prefix.is_empty() || topic_prefix.contains(['+', '#']) {
        return err(
            &with(u, Key("topic_prefix")),
            format!("\"{topic_prefix}\" cannot prefix a topic"),
            "use levels without + or #, e.g. \"weir/{device}\"",
        );
    }
    let reconnect_min = positive(
        &with(u, Key("reconnect_min")),
        duration(
            &with(u, Key("reconnect_min")),
            get(|r| r.reconnect_min.as_ref()),
            "500ms",
        )?,
        "reconnect_min",
    )?;
    let reconnect_max = duration(
        &with(u, Key("reconnect_max")),
        get(|r| r.reconnect_max.as_ref()),
        "60s",
    )?;
    if reconnect_max < reconnect_min {
        return err(
            &with(u, Key("reconnect_max")),
            "reconnect_max is smaller than reconnect_min",
            "make reconnect_max at least reconnect_min",
        );
    }
    let max_inflight = r.and_then(|r| r.max_inflight).unwrap_or(64);
    if max_inflight == 0 {
        return err(
            &with(u, Key("max_inflight")),
            "must be at least 1",
            "e.g. 64",
        );
    }
    let format = match get(|r| r.format.as_ref()) {
        None => Format::Json,
        Some(s) => match Format::parse(s) {
            Some(f) => f,
            None => {
                return err(
                    &with(u, Key("format")),
                    format!("unknown payload format \"{s}\""),
                    "use format = \"json\" (the default, readable) or \"postcard\" (compact, see docs/wire.md)",
                );
            }
        },
    };
    if let Some((problem, fix)) =
        get(|r| r.host.as_ref()).and_then(|h| super::hint::bad_host(h, "uplink"))
    {
        return err(&with(u, Key("host")), problem, fix);
    }
    let tls = uplink_tls(r)?;
    let credentials = uplink_credentials(r)?;
    Ok(UplinkConfig {
        password_env_unset: r
            .and_then(|r| r.password_env.clone())
            .filter(|v| std::env::var_os(v).is_none()),
        format,
        tls,
        credentials,
        host: get(|r| r.host.as_ref()).unwrap_or("localhost").to_string(),
        port: r.and_then(|r| r.port).unwrap_or(1883),
        client_id: get(|r| r.client_id.as_ref())
            .unwrap_or("weir-{device}")
            .replace("{device}", device),
        topic_prefix,
        keep_alive: duration(
            &with(u, Key("keep_alive")),
            get(|r| r.keep_alive.as_ref()),
            "30s",
        )?,
        reconnect_min,
        reconnect_max,
        status_interval: positive(
            &with(u, Key("status_interval")),
            duration(
                &with(u, Key("status_interval")),
                get(|r| r.status_interval.as_ref()),
                "30s",
            )?,
            "status_interval",
        )?,
        max_inflight,
        max_rate: r.and_then(|r| r.max_rate).unwrap_or(1000),
    })
}

fn uplink_tls(r: Option<&super::raw::RawUplink>) -> Result<Option<TlsSettings>> {
    let Some(t) = r.and_then(|r| r.tls.as_ref()) else {
        return Ok(None);
    };
    let p = [Key("uplink"), Key("tls")];
    let Some(ca) = t.ca_file.as_deref() else {
        return err(
            &p,
            "TLS needs the CA file that signed the broker's certificate",
            "add ca_file = \"/etc/weir/upstream-ca.crt\"",
        );
    };
    let client = match (t.cert_file.as_deref(), t.key_file.as_deref()) {
        (Some(c), Some(k)) => Some((Path::new(c), Path::new(k))),
        (None, None) => None,
        (Some(_), None) => {
            return err(
                &with(&p, Key("key_file")),
                "cert_file is set without key_file",
                "add key_file, or remove cert_file",
            );
        }
        (None, Some(_)) => {
            return err(
                &with(&p, Key("cert_file")),
                "key_file is set without cert_file",
                "add cert_file, or remove key_file",
            );
        }
    };
    tls::load(Path::new(ca), client).map(Some).or_else(|e| {
        let key = match &e {
            TlsError::Read { path, .. } | TlsError::NoPem { path, .. }
                if Some(path.as_path()) == client.map(|c| c.0) =>
            {
                "cert_file"
            }
            TlsError::Read { path, .. } | TlsError::NoPem { path, .. }
                if Some(path.as_path()) == client.map(|c| c.1) =>
            {
                "key_file"
            }
            TlsError::Rustls(_) if client.is_some() => "key_file",
            _ => "ca_file",
        };
        err(
            &with(&p, Key(key)),
            e.to_string(),
            "point it at a readable PEM file",
        )
    })
}

fn uplink_credentials(r: Option<&super::raw::RawUplink>) -> Result<Option<Credentials>> {
    let Some(r) = r else { return Ok(None) };
    let p = [Key("uplink")];
    let password = match (r.password_file.as_deref(), r.password_env.as_deref()) {
        (Some(_), Some(_)) => {
            return err(
                &with(&p, Key("password_env")),
                "both password_file and password_env are set",
                "keep one of them",
            );
        }
        (Some(f), None) => match std::fs::read_to_string(f) {
            // One trailing newline is how editors and `echo` end a file, not part of the password.
            Ok(s) => Some(Secret::new(s.strip_suffix('\n').unwrap_or(&s).to_string())),
            Err(e) => {
                return err(
                    &with(&p, Key("password_file")),
                    format!("cannot read {f}: {e}"),
                    "make the file readable by the weir user (mode 0640)",
                );
            }
        },
        // Unset: recorded in UplinkConfig::password_env_unset; Config::parse refuses it,
        // `weir config check` (a technician's shell lacks the service's environment) warns.
        (None, Some(v)) => Some(Secret::new(std::env::var(v).unwrap_or_default())),
        (None, None) => None,
    };
    match (r.username.clone(), password) {
        (Some(username), Some(password)) => Ok(Some(Credentials { username, password })),
        (Some(username), None) => Ok(Some(Credentials {
            username,
            password: Secret::new(String::new()),
        })),
        (None, Some(_)) => err(
            &with(&p, Key("username")),
            "a password is configured without a username",
            "add username = \"...\"",
        ),
        (None, None) => Ok(None),
    }
}

fn ingest(raw: &RawConfig, device: &str) -> Result<Option<IngestConfig>> {
    let Some(r) = raw.ingest.as_ref() else {
        return Ok(None);
    };
    let p = &[Key("ingest")];
    if r.topic.is_empty() {
        return err(
            &with(p, Key("topic")),
            "[ingest] has no topics",
            "add [[ingest.topic]] with filter, sensor and metric",
        );
    }
    let mut topics = Vec::new();
    let mut multi = Vec::new();
    for (i, t) in r.topic.iter().enumerate() {
        let tp = vec![Key("ingest"), Key("topic"), Index(i)];
        let Some(filter) = t.filter.as_deref() else {
            return err(
                &with(&tp, Key("filter")),
                "filter is missing",
                "add filter = \"sensors/+/+\"",
            );
        };
        let map = TopicMap::new(
            filter,
            t.sensor.as_deref().unwrap_or("{1}"),
            t.metric.as_deref().unwrap_or("{-1}"),
        )
        .or_else(|e| {
            err(
                &with(&tp, Key("filter")),
                e.to_string(),
                "see the [ingest] section of `weir config example`",
            )
        })?;
        topics.push(map);
        multi.push(devices::multi_format(&tp, t)?);
    }
    let max_bytes = r.max_payload_bytes.unwrap_or(4096);
    if max_bytes == 0 {
        return err(
            &with(p, Key("max_payload_bytes")),
            "must be at least 1",
            "e.g. 4096",
        );
    }
    if max_bytes > crate::source::mqtt::MAX_PAYLOAD_LIMIT {
        return err(
            &with(p, Key("max_payload_bytes")),
            format!(
                "{max_bytes} cannot work: weir reads MQTT packets of at most {} bytes whole, so a payload up to {} bytes is the most it can accept (larger ones are dead-lettered as too_large)",
                crate::source::mqtt::MAX_PACKET,
                crate::source::mqtt::MAX_PAYLOAD_LIMIT
            ),
            format!(
                "set it to at most {} (a reading is a few dozen bytes; 4096 is the default)",
                crate::source::mqtt::MAX_PAYLOAD_LIMIT
            ),
        );
    }
    let broker_max_inflight = r.broker_max_inflight.unwrap_or(20);
    if broker_max_inflight == 0 {
        return err(
            &with(p, Key("broker_max_inflight")),
            "must be at least 1",
            "set it to the broker's max_inflight_messages (mosquitto's default is 20)",
        );
    }
    if let Some((problem, fix)) = r
        .host
        .as_deref()
        .and_then(|h| super::hint::bad_host(h, "ingest"))
    {
        return err(&with(p, Key("host")), problem, fix);
    }
    Ok(Some(IngestConfig {
        host: r.host.clone().unwrap_or_else(|| "localhost".into()),
        broker_max_inflight,
        port: r.port.unwrap_or(1883),
        client_id: r
            .client_id
            .as_deref()
            .unwrap_or("weir-{device}-ingest")
            .replace("{device}", device),
        format: PayloadFormat {
            max_bytes,
            value_field: r.value_field.clone().unwrap_or_else(|| "value".into()),
            ts_field: r.ts_field.clone().unwrap_or_else(|| "ts".into()),
        },
        topics,
        multi,
    }))
}

fn sims(raw: &RawConfig) -> Result<Vec<SimSource>> {
    let mut out: Vec<SimSource> = Vec::new();
    for (i, s) in raw.sim.iter().enumerate() {
        let p = vec![Key("sim"), Index(i)];
        let name = name(&with(&p, Key("name")), s.name.as_deref(), "sensor name")?;
        let metric = name_or(&with(&p, Key("metric")), s.metric.as_deref(), "value")?;
        if out.iter().any(|o| o.name == name && o.metric == metric) {
            return err(
                &with(&p, Key("name")),
                format!("{name}/{metric} is simulated twice"),
                "give each [[sim]] its own name or metric",
            );
        }
        let interval = positive(
            &with(&p, Key("interval")),
            duration(&with(&p, Key("interval")), s.interval.as_deref(), "1s")?,
            "interval",
        )?;
        let period = duration(&with(&p, Key("period")), s.period.as_deref(), "1h")?;
        let samples_per =
            |d: Duration| (d.as_secs_f64() / interval.as_secs_f64()).round().max(1.0) as u64;
        let mut anomalies = heapless::Vec::new();
        for (j, a) in s.anomaly.iter().enumerate() {
            let ap = vec![Key("sim"), Index(i), Key("anomaly"), Index(j)];
            let magnitude = |what: &str| {
                a.magnitude.map_or_else(
                    || {
                        err(
                            &with(&ap, Key("magnitude")),
                            format!("a {what} needs a magnitude"),
                            "add magnitude = 10.0",
                        )
                    },
                    Ok,
                )
            };
            let kind = match a.kind.as_deref() {
                Some("spike") => AnomalyKind::Spike {
                    magnitude: magnitude("spike")?,
                },
                Some("step") => AnomalyKind::Step {
                    delta: magnitude("step")?,
                },
                Some("stuck") => AnomalyKind::Stuck,
                Some("dropout") => AnomalyKind::Dropout,
                other => {
                    return err(
                        &with(&ap, Key("kind")),
                        format!("unknown anomaly kind {other:?}"),
                        "use \"spike\", \"step\", \"stuck\" or \"dropout\"",
                    );
                }
            };
            let Some(at) = a.at else {
                return err(
                    &with(&ap, Key("at")),
                    "anomaly start is missing",
                    "add at = <sample number>, counted from 0",
                );
            };
            let anomaly = Anomaly {
                kind,
                start_sample: at,
                len_samples: a.length.unwrap_or(1),
            };
            if anomalies.push(anomaly).is_err() {
                return err(
                    &ap,
                    "more than 16 anomalies on one sensor",
                    "keep at most 16 [[sim.anomaly]] per sensor",
                );
            }
        }
        let spec = SimSpec {
            seed: s.seed.unwrap_or(i as u64 + 1),
            base: s.base.unwrap_or(0.0),
            noise_stddev: s.noise.unwrap_or(0.0),
            drift_per_sample: s.drift_per_hour.unwrap_or(0.0) * interval.as_secs_f64() / 3600.0,
            amplitude: s.amplitude.unwrap_or(0.0),
            period_samples: samples_per(period),
            anomalies,
        };
        if let Err(e) = weir_sensors::sim::validate(&spec) {
            return err(
                &p,
                e.to_string(),
                "values must be finite numbers and noise >= 0",
            );
        }
        let when_full = match s.when_full.as_deref().unwrap_or("block") {
            "block" => WhenFull::Block,
            "drop_newest" => WhenFull::DropNewest,
            o => {
                return err(
                    &with(&p, Key("when_full")),
                    format!("unknown policy \"{o}\""),
                    "use \"block\" or \"drop_newest\"",
                );
            }
        };
        out.push(SimSource {
            name,
            metric,
            interval,
            spec,
            when_full,
        });
    }
    Ok(out)
}

fn name_or(path: &[Seg], value: Option<&str>, default: &str) -> Result<String> {
    name(path, Some(value.unwrap_or(default)), "metric name")
}
