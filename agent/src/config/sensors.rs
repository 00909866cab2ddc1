//! Checked configuration of the sensors wired to this device: what
//! `validate/devices.rs` turns `[[i2c]]`, `[[gpio]]` and `[[onewire]]` into.

use std::path::PathBuf;
use std::time::Duration;

use weir_sensors::ads1115::Gain;
use weir_sensors::chipsim::BusFault;
use weir_sensors::linux::Edges;
use weir_sensors::sim::SimSpec;

use super::WhenFull;

/// Every locally wired sensor.
#[derive(Debug, Default)]
pub struct DeviceSources {
    /// I2C chips, in file order.
    pub i2c: Vec<I2cSensor>,
    /// GPIO inputs.
    pub gpio: Vec<GpioInput>,
    /// 1-Wire thermometers.
    pub onewire: Vec<OneWireProbe>,
}

impl DeviceSources {
    /// No sensor at all.
    pub fn is_empty(&self) -> bool {
        self.i2c.is_empty() && self.gpio.is_empty() && self.onewire.is_empty()
    }

    /// Every sensor name, for uniqueness checks and the CLI.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        let i = self.i2c.iter().map(|s| s.name.as_str());
        let g = self.gpio.iter().map(|s| s.name.as_str());
        let o = self.onewire.iter().map(|s| s.name.as_str());
        i.chain(g).chain(o)
    }
}

/// How a polled sensor is read, retried and judged.
#[derive(Clone, Debug, PartialEq)]
pub struct PollPolicy {
    /// Time between polls.
    pub interval: Duration,
    /// What to do when the engine's channel is full.
    pub when_full: WhenFull,
    /// Immediate retries of a poll after a glitch (a bus error, a bad CRC).
    pub retries: u32,
    /// Consecutive failed polls that make the sensor `failed` (and raise the alert).
    pub fail_after: u32,
    /// A failed sensor is re-tried with exponential backoff from `interval` up to this.
    pub max_backoff: Duration,
}

/// Which chip, and what it measures.
#[derive(Clone, Debug, PartialEq)]
pub enum ChipKind {
    /// temperature (°C), humidity (%RH), pressure (hPa).
    Bme280,
    /// temperature (°C), humidity (%RH).
    Sht3x,
    /// Up to four single-ended inputs, each `volts × scale + offset`.
    Ads1115 {
        /// Full-scale range.
        gain: Gain,
        /// The inputs read, each its own metric.
        channels: Vec<AdcChannel>,
    },
}

impl ChipKind {
    /// The config name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Bme280 => "bme280",
            Self::Sht3x => "sht3x",
            Self::Ads1115 { .. } => "ads1115",
        }
    }

    /// The metrics a read gives, in order.
    pub fn metrics(&self) -> Vec<String> {
        match self {
            Self::Bme280 => vec!["temperature".into(), "humidity".into(), "pressure".into()],
            Self::Sht3x => vec!["temperature".into(), "humidity".into()],
            Self::Ads1115 { channels, .. } => channels.iter().map(|c| c.metric.clone()).collect(),
        }
    }
}

/// One ADS1115 input.
#[derive(Clone, Debug, PartialEq)]
pub struct AdcChannel {
    /// AIN0..AIN3.
    pub input: u8,
    /// Its metric name.
    pub metric: String,
    /// Multiplies the volts.
    pub scale: f64,
    /// Added after scaling.
    pub offset: f64,
}

/// An I2C sensor.
#[derive(Clone, Debug)]
pub struct I2cSensor {
    /// Sensor name (the key's sensor part).
    pub name: String,
    /// The chip and its metrics.
    pub chip: ChipKind,
    /// `/dev/i2c-N`; sensors on one bus share its thread.
    pub bus: String,
    /// 7-bit address.
    pub address: u8,
    /// Polling, retries, health.
    pub poll: PollPolicy,
    /// `Some` when the real driver runs against the register-level simulator.
    pub sim: Option<ChipSimConfig>,
}

/// What the simulated chip of a `sim = true` sensor does.
#[derive(Clone, Debug, PartialEq)]
pub struct ChipSimConfig {
    /// The value generator of each physical input, in the chip's order
    /// (BME280: temperature, humidity, pressure; ADS1115: AIN0..AIN3, volts).
    pub specs: Vec<SimSpec>,
    /// Scripted bus faults, in polls.
    pub faults: Vec<BusFault>,
}

/// How a GPIO input becomes readings.
#[derive(Clone, Debug, PartialEq)]
pub enum GpioMode {
    /// Each debounced change is a reading: 1.0 active, 0.0 inactive.
    State,
    /// Debounced pulses counted per interval: a reading of pulses × scale per second.
    Counter {
        /// The counting interval.
        interval: Duration,
        /// Units per pulse.
        scale: f64,
    },
}

/// A GPIO input line.
#[derive(Clone, Debug)]
pub struct GpioInput {
    /// Sensor name.
    pub name: String,
    /// Metric name.
    pub metric: String,
    /// Chip path, name or label.
    pub chip: String,
    /// Line offset on the chip.
    pub line: u32,
    /// State or counter.
    pub mode: GpioMode,
    /// Which edges count.
    pub edges: Edges,
    /// A level must hold this long to count.
    pub debounce: Duration,
    /// Invert the line.
    pub active_low: bool,
    /// When the engine's channel is full.
    pub when_full: WhenFull,
}

/// A 1-Wire thermometer.
#[derive(Clone, Debug)]
pub struct OneWireProbe {
    /// Sensor name.
    pub name: String,
    /// Metric name.
    pub metric: String,
    /// The device id, e.g. `28-0316a2796bff`.
    pub id: String,
    /// The sysfs devices directory.
    pub base: PathBuf,
    /// Polling, retries, health.
    pub poll: PollPolicy,
}
