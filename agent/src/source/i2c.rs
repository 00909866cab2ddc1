//! I2C sensors as polled sources: the real drivers over `/dev/i2c-N`, or over
//! the register-level simulator for `sim = true` (the same driver code runs).

use std::collections::BTreeMap;
use std::path::Path;

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;
use weir_sensors::ads1115::Ads1115;
use weir_sensors::bme280::Bme280;
use weir_sensors::chipsim::{Ads1115Sim, Bme280Sim, Sht3xSim, SimBus};
use weir_sensors::linux::LinuxI2c;
use weir_sensors::sht3x::Sht3x;
use weir_sensors::{Error, Fault};

use super::health::ReadError;
use super::poll::{Polled, PolledSensor};
use crate::config::{ChipKind, ChipSimConfig, I2cSensor};

/// A delay that sleeps the sensor thread (the SHT3x and ADS1115 conversions).
#[derive(Clone, Copy, Debug, Default)]
pub struct SleepDelay;

impl DelayNs for SleepDelay {
    fn delay_ns(&mut self, ns: u32) {
        std::thread::sleep(std::time::Duration::from_nanos(u64::from(ns)));
    }
}

/// A delay that returns at once: simulated chips convert instantly.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoDelay;

impl DelayNs for NoDelay {
    fn delay_ns(&mut self, _ns: u32) {}
}

enum Driver<I, D> {
    Bme(Bme280<I>),
    Sht(Sht3x<I, D>),
    Ads(Ads1115<I, D>),
}

type Opener<I> = Box<dyn FnMut() -> Result<I, ReadError> + Send>;

/// A configured chip on a bus `I`. The driver is built on the first poll and
/// rebuilt after the chip went absent or was refused: a chip that lost power
/// comes back in its reset state and needs its setup again.
pub struct ChipSensor<I, D> {
    cfg: I2cSensor,
    metrics: Vec<String>,
    open: Opener<I>,
    delay: D,
    driver: Option<Driver<I, D>>,
    sim: Option<SimBus>,
}

fn read_error<E: embedded_hal::i2c::Error>(e: &Error<E>) -> ReadError {
    ReadError {
        fault: e.fault(),
        detail: e.to_string(),
    }
}

impl<I, D> ChipSensor<I, D>
where
    I: I2c + Send,
    I::Error: std::fmt::Debug,
    D: DelayNs + Clone + Send,
{
    fn init(&mut self) -> Result<Driver<I, D>, ReadError> {
        let bus = (self.open)()?;
        let a = self.cfg.address;
        let d = self.delay.clone();
        match self.cfg.chip {
            ChipKind::Bme280 => Bme280::init(bus, a).map(Driver::Bme),
            ChipKind::Sht3x => Sht3x::init(bus, d, a).map(Driver::Sht),
            ChipKind::Ads1115 { .. } => Ads1115::init(bus, d, a).map(Driver::Ads),
        }
        .map_err(|(_, e)| read_error(&e))
    }

    fn measure(&mut self) -> Result<Vec<f64>, ReadError> {
        let driver = match self.driver.take() {
            Some(d) => d,
            None => self.init()?,
        };
        let driver = self.driver.insert(driver);
        let result = match (driver, &self.cfg.chip) {
            (Driver::Bme(d), _) => d
                .read()
                .map(|m| vec![m.temperature, m.humidity, m.pressure])
                .map_err(|e| read_error(&e)),
            (Driver::Sht(d), _) => d
                .read()
                .map(|m| vec![m.temperature, m.humidity])
                .map_err(|e| read_error(&e)),
            (Driver::Ads(d), ChipKind::Ads1115 { gain, channels }) => channels
                .iter()
                .map(|c| {
                    d.read(c.input, *gain)
                        .map(|v| v * c.scale + c.offset)
                        .map_err(|e| read_error(&e))
                })
                .collect(),
            (Driver::Ads(_), _) => Err(ReadError {
                fault: Fault::Misconfigured,
                detail: "driver and chip disagree".into(),
            }),
        };
        if let Err(e) = &result {
            if e.fault != Fault::Glitch {
                self.driver = None;
            }
        }
        result
    }
}

impl<I, D> Polled for ChipSensor<I, D>
where
    I: I2c + Send,
    I::Error: std::fmt::Debug,
    D: DelayNs + Clone + Send,
{
    fn read(&mut self) -> Result<Vec<f64>, ReadError> {
        self.measure()
    }

    fn metrics(&self) -> &[String] {
        &self.metrics
    }

    fn end_poll(&mut self) {
        if let Some(bus) = &self.sim {
            bus.tick();
        }
    }
}

/// Puts the simulated chip of `s` on `bus`.
pub fn attach_sim(bus: &SimBus, s: &I2cSensor, sim: &ChipSimConfig) {
    let spec = |i: usize| sim.specs.get(i).cloned().unwrap_or_default();
    match s.chip {
        ChipKind::Bme280 => bus.attach(
            s.address,
            Bme280Sim::new(spec(0), spec(1), spec(2)),
            sim.faults.clone(),
        ),
        ChipKind::Sht3x => bus.attach(
            s.address,
            Sht3xSim::new(spec(0), spec(1)),
            sim.faults.clone(),
        ),
        ChipKind::Ads1115 { .. } => bus.attach(
            s.address,
            Ads1115Sim::new([spec(0), spec(1), spec(2), spec(3)]),
            sim.faults.clone(),
        ),
    }
}

/// The reader of one configured sensor: over its own simulated bus when
/// `sim = true`, else over `/dev/i2c-N` (opened on the first poll, so a
/// missing bus is a failing sensor, not a daemon that will not start).
pub fn sensor(s: &I2cSensor) -> Box<dyn Polled> {
    let metrics = s.chip.metrics();
    match &s.sim {
        Some(sim) => {
            let bus = SimBus::new();
            attach_sim(&bus, s, sim);
            let handle = bus.clone();
            Box::new(ChipSensor {
                cfg: s.clone(),
                metrics,
                open: Box::new(move || Ok(handle.clone())),
                delay: NoDelay,
                driver: None,
                sim: Some(bus),
            })
        }
        None => {
            let path = s.bus.clone();
            Box::new(ChipSensor {
                cfg: s.clone(),
                metrics,
                open: Box::new(move || {
                    LinuxI2c::open(Path::new(&path)).map_err(|e| ReadError {
                        fault: Fault::Absent,
                        detail: e.to_string(),
                    })
                }),
                delay: SleepDelay,
                driver: None,
                sim: None,
            })
        }
    }
}

/// The configured sensors grouped by bus, as the threads run them.
pub fn by_bus(sensors: &[I2cSensor]) -> BTreeMap<String, Vec<PolledSensor>> {
    let mut buses: BTreeMap<String, Vec<PolledSensor>> = BTreeMap::new();
    for s in sensors {
        // A simulated chip has its own simulated bus: it should not wait for real ones.
        let bus = if s.sim.is_some() {
            format!("sim:{}", s.name)
        } else {
            s.bus.clone()
        };
        buses.entry(bus).or_default().push(PolledSensor {
            name: s.name.clone(),
            sensor: sensor(s),
            policy: s.poll.clone(),
        });
    }
    buses
}
