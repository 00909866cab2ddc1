//! `[[i2c]]`, `[[gpio]]` and `[[onewire]]`: sensors wired to this device.
//! Raw serde types and their validation, beside `validate.rs` (a child of it,
//! to share its helpers) so that the sections of the other sources stay apart.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use weir_sensors::ads1115::Gain;
use weir_sensors::chipsim::{BusFault, FaultKind};
use weir_sensors::linux::Edges;
use weir_sensors::sim::{Anomaly, AnomalyKind, SimSpec};

use super::super::WhenFull;
use super::{Result, Seg, duration, err, name, positive, with};
use crate::config::raw::{RawConfig, RawTopic};
use crate::config::{
    AdcChannel, ChipKind, ChipSimConfig, DeviceSources, GpioInput, GpioMode, I2cSensor,
    OneWireProbe, PollPolicy,
};
use crate::source::multi::{self, MultiFormat};
use Seg::{Index, Key};

// ---------------------------------------------------------------- raw

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawI2c {
    pub name: Option<String>,
    pub chip: Option<String>,
    pub bus: Option<String>,
    pub address: Option<u8>,
    pub interval: Option<String>,
    pub when_full: Option<String>,
    pub retries: Option<u32>,
    pub fail_after: Option<u32>,
    pub max_backoff: Option<String>,
    pub gain: Option<f64>,
    #[serde(default)]
    pub channel: Vec<RawChannel>,
    pub sim: Option<bool>,
    pub sim_seed: Option<u64>,
    #[serde(default)]
    pub sim_base: BTreeMap<String, f64>,
    #[serde(default)]
    pub sim_noise: BTreeMap<String, f64>,
    #[serde(default)]
    pub sim_drift_per_poll: BTreeMap<String, f64>,
    #[serde(default)]
    pub sim_fault: Vec<RawSimFault>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChannel {
    pub input: Option<u8>,
    pub metric: Option<String>,
    pub scale: Option<f64>,
    pub offset: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSimFault {
    pub kind: Option<String>,
    pub at: Option<u64>,
    pub length: Option<u64>,
    pub magnitude: Option<f64>,
    pub metric: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGpio {
    pub name: Option<String>,
    pub metric: Option<String>,
    pub chip: Option<String>,
    pub line: Option<u32>,
    pub mode: Option<String>,
    pub edge: Option<String>,
    pub debounce: Option<String>,
    pub active_low: Option<bool>,
    pub interval: Option<String>,
    pub scale: Option<f64>,
    pub when_full: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOneWire {
    pub name: Option<String>,
    pub metric: Option<String>,
    pub id: Option<String>,
    pub base: Option<String>,
    pub interval: Option<String>,
    pub when_full: Option<String>,
    pub retries: Option<u32>,
    pub fail_after: Option<u32>,
    pub max_backoff: Option<String>,
}

// ---------------------------------------------------------------- validation

fn when_full(path: &[Seg], v: Option<&str>) -> Result<WhenFull> {
    match v.unwrap_or("block") {
        "block" => Ok(WhenFull::Block),
        "drop_newest" => Ok(WhenFull::DropNewest),
        o => err(
            path,
            format!("unknown policy \"{o}\""),
            "use \"block\" or \"drop_newest\"",
        ),
    }
}

#[allow(clippy::too_many_arguments)]
fn poll_policy(
    p: &[Seg],
    interval: Option<&str>,
    default_interval: &str,
    wf: Option<&str>,
    retries: Option<u32>,
    fail_after: Option<u32>,
    max_backoff: Option<&str>,
) -> Result<PollPolicy> {
    let ip = with(p, Key("interval"));
    let interval = positive(&ip, duration(&ip, interval, default_interval)?, "interval")?;
    let bp = with(p, Key("max_backoff"));
    let max_backoff = duration(&bp, max_backoff, "60s")?.max(interval);
    let fail_after = fail_after.unwrap_or(3);
    if fail_after == 0 {
        return err(&with(p, Key("fail_after")), "must be at least 1", "e.g. 3");
    }
    Ok(PollPolicy {
        interval,
        when_full: when_full(&with(p, Key("when_full")), wf)?,
        retries: retries.unwrap_or(2).min(10),
        fail_after,
        max_backoff,
    })
}

fn unique(seen: &mut Vec<String>, path: &[Seg], n: &str) -> Result<()> {
    if seen.iter().any(|s| s == n) {
        return err(
            path,
            format!("sensor name \"{n}\" is used twice"),
            "give each [[i2c]], [[gpio]] and [[onewire]] sensor its own name",
        );
    }
    seen.push(n.to_string());
    Ok(())
}

pub fn validate(raw: &RawConfig) -> Result<DeviceSources> {
    let mut seen = Vec::new();
    let mut out = DeviceSources::default();
    for (i, r) in raw.i2c.iter().enumerate() {
        let p = vec![Key("i2c"), Index(i)];
        let s = i2c(&p, r)?;
        unique(&mut seen, &with(&p, Key("name")), &s.name)?;
        if out
            .i2c
            .iter()
            .any(|o| o.bus == s.bus && o.address == s.address)
        {
            return err(
                &with(&p, Key("address")),
                format!("two sensors at address {:#04x} on {}", s.address, s.bus),
                "each chip on a bus has its own address (e.g. 0x76 and 0x77 for two BME280s)",
            );
        }
        out.i2c.push(s);
    }
    for (i, r) in raw.gpio.iter().enumerate() {
        let p = vec![Key("gpio"), Index(i)];
        let g = gpio(&p, r)?;
        unique(&mut seen, &with(&p, Key("name")), &g.name)?;
        out.gpio.push(g);
    }
    for (i, r) in raw.onewire.iter().enumerate() {
        let p = vec![Key("onewire"), Index(i)];
        let n = name(&with(&p, Key("name")), r.name.as_deref(), "sensor name")?;
        unique(&mut seen, &with(&p, Key("name")), &n)?;
        let Some(id) = r.id.clone() else {
            return err(
                &with(&p, Key("id")),
                "the probe id is missing",
                "add id = \"28-...\" (see ls /sys/bus/w1/devices)",
            );
        };
        if id.is_empty() || id.contains('/') {
            return err(
                &with(&p, Key("id")),
                format!("\"{id}\" is not a 1-Wire id"),
                "e.g. id = \"28-0316a2796bff\"",
            );
        }
        out.onewire.push(OneWireProbe {
            metric: name(
                &with(&p, Key("metric")),
                Some(r.metric.as_deref().unwrap_or("temperature")),
                "metric name",
            )?,
            name: n,
            id,
            base: PathBuf::from(
                r.base
                    .as_deref()
                    .unwrap_or(weir_sensors::onewire::SYSFS_DEVICES),
            ),
            poll: poll_policy(
                &p,
                r.interval.as_deref(),
                "30s",
                r.when_full.as_deref(),
                r.retries,
                r.fail_after,
                r.max_backoff.as_deref(),
            )?,
        });
    }
    Ok(out)
}

fn i2c(p: &[Seg], r: &RawI2c) -> Result<I2cSensor> {
    let n = name(&with(p, Key("name")), r.name.as_deref(), "sensor name")?;
    let cp = with(p, Key("chip"));
    let (chip, default_addr) = match r.chip.as_deref() {
        Some("bme280") => (ChipKind::Bme280, weir_sensors::bme280::ADDRESS),
        Some("sht3x") => (ChipKind::Sht3x, weir_sensors::sht3x::ADDRESS),
        Some("ads1115") => (ads1115(p, r)?, weir_sensors::ads1115::ADDRESS),
        Some(o) => {
            return err(
                &cp,
                format!("unknown chip \"{o}\""),
                "use \"bme280\", \"sht3x\" or \"ads1115\"",
            );
        }
        None => {
            return err(
                &cp,
                "chip is missing",
                "add chip = \"bme280\", \"sht3x\" or \"ads1115\"",
            );
        }
    };
    if !matches!(chip, ChipKind::Ads1115 { .. }) && (!r.channel.is_empty() || r.gain.is_some()) {
        return err(
            &with(p, Key("channel")),
            "only an ads1115 has channels and a gain",
            "remove them",
        );
    }
    let address = r.address.unwrap_or(default_addr);
    if !(0x03..=0x77).contains(&address) {
        return err(
            &with(p, Key("address")),
            format!("{address:#04x} is not a 7-bit device address"),
            "use 0x03..0x77, e.g. 0x76",
        );
    }
    let poll = poll_policy(
        p,
        r.interval.as_deref(),
        "10s",
        r.when_full.as_deref(),
        r.retries,
        r.fail_after,
        r.max_backoff.as_deref(),
    )?;
    let sim = if r.sim.unwrap_or(false) {
        Some(chip_sim(p, r, &chip)?)
    } else {
        if !r.sim_fault.is_empty() || !r.sim_base.is_empty() {
            return err(
                &with(p, Key("sim")),
                "sim_* keys need sim = true",
                "add sim = true, or remove them",
            );
        }
        None
    };
    Ok(I2cSensor {
        name: n,
        chip,
        bus: r.bus.clone().unwrap_or_else(|| "/dev/i2c-1".into()),
        address,
        poll,
        sim,
    })
}

fn ads1115(p: &[Seg], r: &RawI2c) -> Result<ChipKind> {
    let gain = match r.gain {
        None => Gain::Fs4V096,
        Some(v) => Gain::from_full_scale(v).map_or_else(
            || {
                err(
                    &with(p, Key("gain")),
                    format!("{v} V is not a range of the ADS1115"),
                    "use 6.144, 4.096, 2.048, 1.024, 0.512 or 0.256",
                )
            },
            Ok,
        )?,
    };
    let mut channels: Vec<AdcChannel> = Vec::new();
    for (j, c) in r.channel.iter().enumerate() {
        let cp = [p, &[Key("channel"), Index(j)]].concat();
        let input = c.input.unwrap_or(j as u8);
        if input > 3 || channels.iter().any(|o| o.input == input) {
            return err(
                &with(&cp, Key("input")),
                format!("input {input} is out of range or used twice"),
                "use each of 0, 1, 2, 3 at most once",
            );
        }
        let default = format!("ain{input}");
        channels.push(AdcChannel {
            input,
            metric: name(
                &with(&cp, Key("metric")),
                Some(c.metric.as_deref().unwrap_or(&default)),
                "metric name",
            )?,
            scale: c.scale.unwrap_or(1.0),
            offset: c.offset.unwrap_or(0.0),
        });
        if !(c.scale.unwrap_or(1.0).is_finite() && c.offset.unwrap_or(0.0).is_finite()) {
            return err(
                &cp,
                "scale and offset must be finite numbers",
                "e.g. scale = 100.0",
            );
        }
    }
    if channels.is_empty() {
        channels = (0..4)
            .map(|input| AdcChannel {
                input,
                metric: format!("ain{input}"),
                scale: 1.0,
                offset: 0.0,
            })
            .collect();
    }
    Ok(ChipKind::Ads1115 { gain, channels })
}

/// Defaults: a comfortable room, a calm weather day, inputs at 1 V.
fn chip_sim(p: &[Seg], r: &RawI2c, chip: &ChipKind) -> Result<ChipSimConfig> {
    let inputs: Vec<(String, f64, f64)> = match chip {
        ChipKind::Bme280 => vec![
            ("temperature".into(), 21.0, 0.05),
            ("humidity".into(), 45.0, 0.2),
            ("pressure".into(), 1013.25, 0.02),
        ],
        ChipKind::Sht3x => vec![
            ("temperature".into(), 21.0, 0.05),
            ("humidity".into(), 45.0, 0.2),
        ],
        ChipKind::Ads1115 { channels, .. } => (0..4u8)
            .map(|i| {
                let m = channels
                    .iter()
                    .find(|c| c.input == i)
                    .map_or_else(|| format!("ain{i}"), |c| c.metric.clone());
                (m, 1.0, 0.001)
            })
            .collect(),
    };
    for (table, map) in [
        ("sim_base", &r.sim_base),
        ("sim_noise", &r.sim_noise),
        ("sim_drift_per_poll", &r.sim_drift_per_poll),
    ] {
        if let Some(k) = map.keys().find(|k| !inputs.iter().any(|(m, _, _)| m == *k)) {
            return err(
                &with(p, Key(table)),
                format!("\"{k}\" is not a metric of this chip"),
                format!(
                    "use one of: {}",
                    inputs
                        .iter()
                        .map(|i| i.0.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
    }
    let seed = r.sim_seed.unwrap_or(1);
    let mut specs: Vec<SimSpec> = inputs
        .iter()
        .enumerate()
        .map(|(i, (m, base, noise))| SimSpec {
            seed: seed.wrapping_mul(31).wrapping_add(i as u64),
            base: r.sim_base.get(m).copied().unwrap_or(*base),
            noise_stddev: r.sim_noise.get(m).copied().unwrap_or(*noise),
            drift_per_sample: r.sim_drift_per_poll.get(m).copied().unwrap_or(0.0),
            ..SimSpec::default()
        })
        .collect();
    let mut faults = Vec::new();
    for (j, f) in r.sim_fault.iter().enumerate() {
        let fp = [p, &[Key("sim_fault"), Index(j)]].concat();
        let Some(at) = f.at else {
            return err(
                &with(&fp, Key("at")),
                "the fault's start is missing",
                "add at = <poll number>, counted from 0",
            );
        };
        let len = f.length.unwrap_or(1);
        if len == 0 {
            return err(
                &with(&fp, Key("length")),
                "length 0 never applies",
                "use a length of at least 1 poll",
            );
        }
        let bus = |kind| BusFault {
            kind,
            start: at,
            len,
        };
        let value = match f.kind.as_deref() {
            Some("absent") => {
                faults.push(bus(FaultKind::Absent));
                None
            }
            Some("bus_error") => {
                faults.push(bus(FaultKind::BusError));
                None
            }
            Some("data_nack") => {
                faults.push(bus(FaultKind::DataNack));
                None
            }
            Some("stuck") => Some(AnomalyKind::Stuck),
            Some("spike") => Some(AnomalyKind::Spike {
                magnitude: f.magnitude.map_or_else(
                    || {
                        err(
                            &with(&fp, Key("magnitude")),
                            "a spike needs a magnitude",
                            "add magnitude = 10.0",
                        )
                    },
                    Ok,
                )?,
            }),
            o => {
                return err(
                    &with(&fp, Key("kind")),
                    format!("unknown fault {o:?}"),
                    "use \"absent\", \"bus_error\", \"data_nack\", \"stuck\" or \"spike\"",
                );
            }
        };
        if let Some(kind) = value {
            let anomaly = Anomaly {
                kind,
                start_sample: at,
                len_samples: len,
            };
            for (spec, (m, _, _)) in specs.iter_mut().zip(&inputs) {
                if f.metric.as_deref().is_none_or(|w| w == m)
                    && spec.anomalies.push(anomaly).is_err()
                {
                    return err(
                        &fp,
                        "too many value faults on one metric",
                        "keep at most 16",
                    );
                }
            }
        }
    }
    for spec in &specs {
        if let Err(e) = weir_sensors::sim::validate(spec) {
            return err(
                &with(p, Key("sim_base")),
                e.to_string(),
                "values must be finite and noise >= 0",
            );
        }
    }
    Ok(ChipSimConfig { specs, faults })
}

fn gpio(p: &[Seg], r: &RawGpio) -> Result<GpioInput> {
    let n = name(&with(p, Key("name")), r.name.as_deref(), "sensor name")?;
    let Some(line) = r.line else {
        return err(
            &with(p, Key("line")),
            "the line is missing",
            "add line = 17 (the offset on the chip)",
        );
    };
    let mode = match r.mode.as_deref().unwrap_or("state") {
        "state" => GpioMode::State,
        "counter" => {
            let ip = with(p, Key("interval"));
            let scale = r.scale.unwrap_or(1.0);
            if !scale.is_finite() {
                return err(
                    &with(p, Key("scale")),
                    "scale must be a finite number",
                    "e.g. scale = 2.4",
                );
            }
            GpioMode::Counter {
                interval: positive(
                    &ip,
                    duration(&ip, r.interval.as_deref(), "10s")?,
                    "interval",
                )?,
                scale,
            }
        }
        o => {
            return err(
                &with(p, Key("mode")),
                format!("unknown mode \"{o}\""),
                "use \"state\" or \"counter\"",
            );
        }
    };
    let default_edge = if mode == GpioMode::State {
        "both"
    } else {
        "rising"
    };
    let edges = match r.edge.as_deref().unwrap_or(default_edge) {
        "rising" => Edges::Rising,
        "falling" => Edges::Falling,
        "both" => Edges::Both,
        o => {
            return err(
                &with(p, Key("edge")),
                format!("unknown edge \"{o}\""),
                "use \"rising\", \"falling\" or \"both\"",
            );
        }
    };
    let default_metric = if mode == GpioMode::State {
        "state"
    } else {
        "rate"
    };
    Ok(GpioInput {
        metric: name(
            &with(p, Key("metric")),
            Some(r.metric.as_deref().unwrap_or(default_metric)),
            "metric name",
        )?,
        name: n,
        chip: r.chip.clone().unwrap_or_else(|| "gpiochip0".into()),
        line,
        mode,
        edges,
        debounce: duration(&with(p, Key("debounce")), r.debounce.as_deref(), "5ms")?,
        active_low: r.active_low.unwrap_or(false),
        when_full: when_full(&with(p, Key("when_full")), r.when_full.as_deref())?,
    })
}

/// `format`, `fields` and `ts_path` of an `[[ingest.topic]]`.
pub fn multi_format(p: &[Seg], t: &RawTopic) -> Result<Option<MultiFormat>> {
    let mut fmt = match t.format.as_deref().unwrap_or("value") {
        "value" => {
            if !t.fields.is_empty() || t.ts_path.is_some() {
                return err(
                    &with(p, Key("fields")),
                    "fields and ts_path apply to multi-metric payloads",
                    "add format = \"multi\" (or \"tasmota\", \"zigbee2mqtt\")",
                );
            }
            return Ok(None);
        }
        "multi" => MultiFormat {
            fields: Vec::new(),
            ts_path: None,
            skip: Vec::new(),
        },
        "tasmota" => MultiFormat::tasmota(),
        "zigbee2mqtt" => MultiFormat::zigbee2mqtt(),
        o => {
            return err(
                &with(p, Key("format")),
                format!("unknown format \"{o}\""),
                "use \"value\", \"multi\", \"tasmota\" or \"zigbee2mqtt\"",
            );
        }
    };
    if t.metric.is_some() {
        return err(
            &with(p, Key("metric")),
            "a multi-metric payload names its metrics itself",
            "remove metric; use fields = { temperature = \"BME280.Temperature\" } to pick and rename",
        );
    }
    for (m, path) in &t.fields {
        name(&with(p, Key("fields")), Some(m), "metric name")?;
        if path.is_empty() || path.split('.').any(str::is_empty) {
            return err(
                &with(p, Key("fields")),
                format!("\"{path}\" is not a field path"),
                "write keys joined by dots, e.g. \"BME280.Temperature\"",
            );
        }
        fmt.fields.push((m.clone(), multi::path(path)));
    }
    if let Some(ts) = &t.ts_path {
        fmt.ts_path = Some(multi::path(ts));
    }
    Ok(Some(fmt))
}
