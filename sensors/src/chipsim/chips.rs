//! The simulated chips. Each turns samples of [`SimSensor`]s into the raw
//! register values the real chip would hold, so the driver's decoding and
//! compensation run for real and give the sample back (to within the chip's
//! resolution).

use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource};

use super::{Registers, SimChip};
use crate::ads1115;
use crate::bme280::{self, Calibration, Raw};
use crate::sht3x;
use crate::sim::{SimSensor, SimSpec};

/// Takes the next sample; a dropout keeps the previous value, as a chip's
/// data register does when no new conversion has landed.
fn next(sensor: &mut SimSensor, last: &mut f64) -> f64 {
    if let Some(v) = sensor.next_sample() {
        *last = v;
    }
    *last
}

/// The raw value in `0..=max` whose image under the monotonic `f` is closest to
/// `target` (bisection; `increasing` says which way `f` goes).
fn invert(max: u32, increasing: bool, target: f64, f: impl Fn(u32) -> f64) -> u32 {
    let (mut lo, mut hi) = (0u32, max);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let below = if increasing {
            f(mid) < target
        } else {
            f(mid) > target
        };
        if below { lo = mid + 1 } else { hi = mid }
    }
    // lo is the first raw at or past the target: the one before may be closer.
    if lo > 0 && (f(lo - 1) - target).abs() <= (f(lo) - target).abs() {
        lo - 1
    } else {
        lo
    }
}

/// A BME280: chip id, calibration and data registers; values in °C, %RH and hPa.
#[derive(Debug)]
pub struct Bme280Sim {
    regs: Registers,
    calibration: Calibration,
    sensors: [SimSensor; 3],
    last: [f64; 3],
}

impl Bme280Sim {
    /// A chip with [`Calibration::EXAMPLE`] whose temperature, humidity and
    /// pressure follow the three specs; the first sample is already measured.
    pub fn new(temperature: SimSpec, humidity: SimSpec, pressure: SimSpec) -> Self {
        let calibration = Calibration::EXAMPLE;
        let (a, b) = calibration.to_registers();
        let mut regs = Registers::default();
        regs.preset(bme280::reg::ID, &[bme280::CHIP_ID]);
        regs.preset(bme280::reg::CALIB_00, &a);
        regs.preset(bme280::reg::CALIB_26, &b);
        let last = [temperature.base, humidity.base, pressure.base];
        let mut chip = Self {
            regs,
            calibration,
            sensors: [
                SimSensor::new(temperature),
                SimSensor::new(humidity),
                SimSensor::new(pressure),
            ],
            last,
        };
        chip.advance();
        chip
    }

    /// The raw registers that compensate to the given values with this chip's calibration.
    pub fn encode(c: &Calibration, temperature: f64, humidity: f64, pressure_hpa: f64) -> Raw {
        const MAX20: u32 = (1 << 20) - 1;
        let adc_t = invert(MAX20, true, temperature, |r| {
            bme280::compensate_temperature(c, r).0
        });
        let (_, t_fine) = bme280::compensate_temperature(c, adc_t);
        let adc_p = invert(MAX20, false, pressure_hpa * 100.0, |r| {
            bme280::compensate_pressure(c, r, t_fine)
        });
        let adc_h = invert(u32::from(u16::MAX), true, humidity, |r| {
            bme280::compensate_humidity(c, r as u16, t_fine)
        });
        Raw {
            pressure: adc_p,
            temperature: adc_t,
            humidity: adc_h as u16,
        }
    }
}

impl SimChip for Bme280Sim {
    fn write(&mut self, bytes: &[u8]) -> Result<(), ErrorKind> {
        self.regs.write(bytes);
        Ok(())
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<(), ErrorKind> {
        self.regs.read(buf);
        Ok(())
    }

    fn advance(&mut self) {
        let [t, h, p] = &mut self.sensors;
        let [lt, lh, lp] = &mut self.last;
        let raw = Self::encode(&self.calibration, next(t, lt), next(h, lh), next(p, lp));
        self.regs.preset(bme280::reg::DATA, &raw.to_registers());
    }
}

/// An SHT3x: answers the single-shot measurement and status commands.
#[derive(Debug)]
pub struct Sht3xSim {
    sensors: [SimSensor; 2],
    last: [f64; 2],
    /// What the next read returns; empty when nothing was asked.
    out: heapless::Vec<u8, 6>,
}

impl Sht3xSim {
    /// A chip whose temperature (°C) and humidity (%RH) follow the specs.
    pub fn new(temperature: SimSpec, humidity: SimSpec) -> Self {
        let last = [temperature.base, humidity.base];
        let mut chip = Self {
            sensors: [SimSensor::new(temperature), SimSensor::new(humidity)],
            last,
            out: heapless::Vec::new(),
        };
        chip.advance();
        chip
    }

    fn respond(&mut self, words: &[u16]) {
        self.out.clear();
        for &w in words {
            // Capacity 6 holds the two words of a measurement.
            let _ = self.out.extend_from_slice(&sht3x::encode_word(w));
        }
    }
}

impl SimChip for Sht3xSim {
    fn write(&mut self, bytes: &[u8]) -> Result<(), ErrorKind> {
        match bytes {
            b if b == sht3x::cmd::MEASURE_HIGH => {
                let t = ((self.last[0] + 45.0) / 175.0 * 65535.0)
                    .round()
                    .clamp(0.0, 65535.0);
                let h = (self.last[1] / 100.0 * 65535.0).round().clamp(0.0, 65535.0);
                self.respond(&[t as u16, h as u16]);
            }
            b if b == sht3x::cmd::READ_STATUS => self.respond(&[0x8010]),
            b if b == sht3x::cmd::SOFT_RESET => self.out.clear(),
            // The real chip NACKs a command it does not know.
            _ => return Err(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Data)),
        }
        Ok(())
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<(), ErrorKind> {
        // Nothing to send: the real chip NACKs the read header.
        if self.out.len() < buf.len() {
            return Err(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address));
        }
        buf.copy_from_slice(&self.out[..buf.len()]);
        self.out.clear();
        Ok(())
    }

    fn advance(&mut self) {
        let [t, h] = &mut self.sensors;
        let [lt, lh] = &mut self.last;
        next(t, lt);
        next(h, lh);
    }
}

/// An ADS1115 whose four inputs follow four specs (volts); conversions finish at once.
#[derive(Debug)]
pub struct Ads1115Sim {
    sensors: [SimSensor; 4],
    last: [f64; 4],
    config: u16,
    conversion: i16,
    pointer: u8,
}

impl Ads1115Sim {
    /// Inputs AIN0..AIN3, in volts.
    pub fn new(inputs: [SimSpec; 4]) -> Self {
        let last = [
            inputs[0].base,
            inputs[1].base,
            inputs[2].base,
            inputs[3].base,
        ];
        let mut chip = Self {
            sensors: inputs.map(SimSensor::new),
            last,
            config: ads1115::CONFIG_RESET,
            conversion: 0,
            pointer: 0,
        };
        chip.advance();
        chip
    }
}

impl SimChip for Ads1115Sim {
    fn write(&mut self, bytes: &[u8]) -> Result<(), ErrorKind> {
        match *bytes {
            [p] => self.pointer = p & 0b11,
            [p, hi, lo] => {
                self.pointer = p & 0b11;
                if self.pointer == ads1115::reg::CONFIG {
                    let cfg = u16::from_be_bytes([hi, lo]);
                    self.config = cfg;
                    if cfg & 0x8000 != 0 {
                        if let Some(ch) = ads1115::config_channel(cfg) {
                            let fs = ads1115::Gain::from_config(cfg).full_scale();
                            let v = self.last[usize::from(ch)];
                            self.conversion =
                                (v / fs * 32768.0).round().clamp(-32768.0, 32767.0) as i16;
                        }
                    }
                }
            }
            _ => return Err(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Data)),
        }
        Ok(())
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<(), ErrorKind> {
        let v = match self.pointer {
            ads1115::reg::CONVERSION => self.conversion as u16,
            // Conversions are instant: the OS bit always reads "idle".
            ads1115::reg::CONFIG => self.config | 0x8000,
            _ => 0,
        };
        for (b, v) in buf.iter_mut().zip(v.to_be_bytes().iter().cycle()) {
            *b = *v;
        }
        Ok(())
    }

    fn advance(&mut self) {
        for (s, l) in self.sensors.iter_mut().zip(self.last.iter_mut()) {
            next(s, l);
        }
    }
}
