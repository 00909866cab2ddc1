//! Bosch BME280: temperature, relative humidity and pressure over I2C
//! (address 0x76, or 0x77 with SDO high).
//!
//! Our own driver rather than the `bme280` crate: that crate waits in its
//! measure call with a delay it is handed and reports every bus error the same
//! way; ours runs the chip in normal mode (it measures on its own every 125 ms,
//! so a read is one burst transaction and never sleeps) and keeps the bus error
//! so that the agent can tell a missing chip from a glitch.
//!
//! The compensation is the datasheet's double-precision formula (BST-BME280-DS002,
//! section 8.1), applied to a burst read of all data registers so that the
//! three raw values come from the same measurement (the chip shadows them
//! during a burst).

use embedded_hal::i2c::I2c;

use crate::error::Error;

/// Register map (datasheet section 5.3).
pub mod reg {
    /// Chip id; reads [`super::CHIP_ID`].
    pub const ID: u8 = 0xD0;
    /// Soft reset: write 0xB6.
    pub const RESET: u8 = 0xE0;
    /// First calibration block, 0x88..=0xA1 (26 bytes: T1..P9, a reserved byte, H1).
    pub const CALIB_00: u8 = 0x88;
    /// Second calibration block, 0xE1..=0xE7 (H2..H6).
    pub const CALIB_26: u8 = 0xE1;
    /// Humidity oversampling (takes effect on the next write of [`CTRL_MEAS`]).
    pub const CTRL_HUM: u8 = 0xF2;
    /// Status: bit 3 measuring, bit 0 NVM copying.
    pub const STATUS: u8 = 0xF3;
    /// Temperature and pressure oversampling, mode.
    pub const CTRL_MEAS: u8 = 0xF4;
    /// Standby time, IIR filter.
    pub const CONFIG: u8 = 0xF5;
    /// First data register: press_msb; the burst 0xF7..=0xFE holds all three values.
    pub const DATA: u8 = 0xF7;
}

/// The value of [`reg::ID`] on a BME280.
pub const CHIP_ID: u8 = 0x60;
/// The value of [`reg::ID`] on a BMP280 (no humidity): a common mix-up.
pub const BMP280_CHIP_ID: u8 = 0x58;
/// The default address (SDO to ground).
pub const ADDRESS: u8 = 0x76;
/// The alternative address (SDO to VDDIO).
pub const ADDRESS_ALT: u8 = 0x77;

/// Oversampling x1 for humidity.
pub const CTRL_HUM_VALUE: u8 = 0b001;
/// Standby 125 ms (t_sb = 010), filter off.
pub const CONFIG_VALUE: u8 = 0b010 << 5;
/// Temperature x1, pressure x1, normal mode (continuous measurement).
pub const CTRL_MEAS_VALUE: u8 = (0b001 << 5) | (0b001 << 2) | 0b11;

/// A raw data register value meaning "not measured" (the reset value, or a skipped channel).
const SKIPPED_20BIT: u32 = 0x80000;

/// The trimming parameters burnt into each chip at the factory.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[allow(missing_docs)]
pub struct Calibration {
    pub t1: u16,
    pub t2: i16,
    pub t3: i16,
    pub p1: u16,
    pub p2: i16,
    pub p3: i16,
    pub p4: i16,
    pub p5: i16,
    pub p6: i16,
    pub p7: i16,
    pub p8: i16,
    pub p9: i16,
    pub h1: u8,
    pub h2: i16,
    pub h3: u8,
    pub h4: i16,
    pub h5: i16,
    pub h6: i8,
}

impl Calibration {
    /// Decodes the two calibration blocks (26 bytes from 0x88, 7 bytes from 0xE1).
    pub fn from_registers(a: &[u8; 26], b: &[u8; 7]) -> Self {
        let u = |i: usize| u16::from_le_bytes([a[i], a[i + 1]]);
        let s = |i: usize| i16::from_le_bytes([a[i], a[i + 1]]);
        Self {
            t1: u(0),
            t2: s(2),
            t3: s(4),
            p1: u(6),
            p2: s(8),
            p3: s(10),
            p4: s(12),
            p5: s(14),
            p6: s(16),
            p7: s(18),
            p8: s(20),
            p9: s(22),
            h1: a[25],
            h2: i16::from_le_bytes([b[0], b[1]]),
            h3: b[2],
            // 12-bit signed values split across nibbles: E4[7:0]:E5[3:0] and E6[7:0]:E5[7:4].
            h4: (i16::from(b[3] as i8) << 4) | i16::from(b[4] & 0x0F),
            h5: (i16::from(b[5] as i8) << 4) | i16::from(b[4] >> 4),
            h6: b[6] as i8,
        }
    }

    /// The inverse of [`Calibration::from_registers`] (for simulators and tests).
    pub fn to_registers(&self) -> ([u8; 26], [u8; 7]) {
        let mut a = [0u8; 26];
        let words: [[u8; 2]; 12] = [
            self.t1.to_le_bytes(),
            self.t2.to_le_bytes(),
            self.t3.to_le_bytes(),
            self.p1.to_le_bytes(),
            self.p2.to_le_bytes(),
            self.p3.to_le_bytes(),
            self.p4.to_le_bytes(),
            self.p5.to_le_bytes(),
            self.p6.to_le_bytes(),
            self.p7.to_le_bytes(),
            self.p8.to_le_bytes(),
            self.p9.to_le_bytes(),
        ];
        for (i, w) in words.iter().enumerate() {
            a[2 * i] = w[0];
            a[2 * i + 1] = w[1];
        }
        a[25] = self.h1;
        let h2 = self.h2.to_le_bytes();
        let b = [
            h2[0],
            h2[1],
            self.h3,
            (self.h4 >> 4) as u8,
            ((self.h5 & 0x0F) << 4) as u8 | (self.h4 & 0x0F) as u8,
            (self.h5 >> 4) as u8,
            self.h6 as u8,
        ];
        (a, b)
    }

    /// A real chip's calibration (the values in Bosch's reference example, plus
    /// typical humidity trimming): what the simulators and tests use.
    pub const EXAMPLE: Self = Self {
        t1: 27504,
        t2: 26435,
        t3: -1000,
        p1: 36477,
        p2: -10685,
        p3: 3024,
        p4: 2855,
        p5: 140,
        p6: -7,
        p7: 15500,
        p8: -14600,
        p9: 6000,
        h1: 75,
        h2: 362,
        h3: 0,
        h4: 313,
        h5: 50,
        h6: 30,
    };
}

/// Uncompensated ADC values from one burst read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Raw {
    /// 20-bit pressure.
    pub pressure: u32,
    /// 20-bit temperature.
    pub temperature: u32,
    /// 16-bit humidity.
    pub humidity: u16,
}

impl Raw {
    /// Decodes the 8 data registers from 0xF7.
    pub fn from_registers(d: &[u8; 8]) -> Self {
        let b20 =
            |m: u8, l: u8, x: u8| (u32::from(m) << 12) | (u32::from(l) << 4) | u32::from(x >> 4);
        Self {
            pressure: b20(d[0], d[1], d[2]),
            temperature: b20(d[3], d[4], d[5]),
            humidity: u16::from_be_bytes([d[6], d[7]]),
        }
    }

    /// The inverse of [`Raw::from_registers`].
    pub fn to_registers(&self) -> [u8; 8] {
        let p = self.pressure;
        let t = self.temperature;
        let h = self.humidity.to_be_bytes();
        [
            (p >> 12) as u8,
            (p >> 4) as u8,
            ((p & 0xF) << 4) as u8,
            (t >> 12) as u8,
            (t >> 4) as u8,
            ((t & 0xF) << 4) as u8,
            h[0],
            h[1],
        ]
    }
}

/// One compensated measurement.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Measurement {
    /// Degrees Celsius.
    pub temperature: f64,
    /// Percent relative humidity, 0..=100.
    pub humidity: f64,
    /// Hectopascals.
    pub pressure: f64,
}

/// Temperature in °C and `t_fine` (which the other two compensations need).
pub fn compensate_temperature(c: &Calibration, adc_t: u32) -> (f64, f64) {
    let adc = f64::from(adc_t);
    let t1 = f64::from(c.t1);
    let var1 = (adc / 16384.0 - t1 / 1024.0) * f64::from(c.t2);
    let d = adc / 131072.0 - t1 / 8192.0;
    let var2 = d * d * f64::from(c.t3);
    let t_fine = var1 + var2;
    (t_fine / 5120.0, t_fine)
}

/// Pressure in Pa; 0 when the calibration would divide by zero.
pub fn compensate_pressure(c: &Calibration, adc_p: u32, t_fine: f64) -> f64 {
    let mut var1 = t_fine / 2.0 - 64000.0;
    let mut var2 = var1 * var1 * f64::from(c.p6) / 32768.0;
    var2 += var1 * f64::from(c.p5) * 2.0;
    var2 = var2 / 4.0 + f64::from(c.p4) * 65536.0;
    var1 = (f64::from(c.p3) * var1 * var1 / 524288.0 + f64::from(c.p2) * var1) / 524288.0;
    var1 = (1.0 + var1 / 32768.0) * f64::from(c.p1);
    if var1 == 0.0 {
        return 0.0;
    }
    let mut p = 1048576.0 - f64::from(adc_p);
    p = (p - var2 / 4096.0) * 6250.0 / var1;
    let var1 = f64::from(c.p9) * p * p / 2147483648.0;
    let var2 = p * f64::from(c.p8) / 32768.0;
    p + (var1 + var2 + f64::from(c.p7)) / 16.0
}

/// Relative humidity in %, clamped to 0..=100 as the datasheet does.
pub fn compensate_humidity(c: &Calibration, adc_h: u16, t_fine: f64) -> f64 {
    let mut h = t_fine - 76800.0;
    h = (f64::from(adc_h) - (f64::from(c.h4) * 64.0 + f64::from(c.h5) / 16384.0 * h))
        * (f64::from(c.h2) / 65536.0
            * (1.0 + f64::from(c.h6) / 67108864.0 * h * (1.0 + f64::from(c.h3) / 67108864.0 * h)));
    h *= 1.0 - f64::from(c.h1) * h / 524288.0;
    h.clamp(0.0, 100.0)
}

/// Compensates one burst of raw values.
pub fn compensate(c: &Calibration, raw: Raw) -> Measurement {
    let (temperature, t_fine) = compensate_temperature(c, raw.temperature);
    Measurement {
        temperature,
        humidity: compensate_humidity(c, raw.humidity, t_fine),
        pressure: compensate_pressure(c, raw.pressure, t_fine) / 100.0,
    }
}

/// A BME280 on bus `I`. Invariant: `calibration` is the chip's own, read by
/// [`Bme280::init`]; a driver is only handed out after it succeeded.
#[derive(Debug)]
pub struct Bme280<I> {
    i2c: I,
    address: u8,
    calibration: Calibration,
}

impl<I: I2c> Bme280<I> {
    /// Checks the chip id, reads the calibration and starts normal mode
    /// (a measurement every 125 ms). Gives the bus back on failure.
    pub fn init(mut i2c: I, address: u8) -> Result<Self, (I, Error<I::Error>)> {
        match Self::setup(&mut i2c, address) {
            Ok(calibration) => Ok(Self {
                i2c,
                address,
                calibration,
            }),
            Err(e) => Err((i2c, e)),
        }
    }

    fn setup(i2c: &mut I, address: u8) -> Result<Calibration, Error<I::Error>> {
        let mut id = [0u8];
        i2c.write_read(address, &[reg::ID], &mut id)?;
        if id[0] != CHIP_ID {
            return Err(Error::WrongChip {
                expected: "bme280",
                found: id[0],
            });
        }
        let mut a = [0u8; 26];
        let mut b = [0u8; 7];
        i2c.write_read(address, &[reg::CALIB_00], &mut a)?;
        i2c.write_read(address, &[reg::CALIB_26], &mut b)?;
        // Writes to config are ignored in normal mode, so config goes before
        // ctrl_meas; ctrl_hum only takes effect on the following ctrl_meas write.
        i2c.write(address, &[reg::CTRL_HUM, CTRL_HUM_VALUE])?;
        i2c.write(address, &[reg::CONFIG, CONFIG_VALUE])?;
        i2c.write(address, &[reg::CTRL_MEAS, CTRL_MEAS_VALUE])?;
        Ok(Calibration::from_registers(&a, &b))
    }

    /// The latest measurement: one burst read of 8 bytes.
    pub fn read(&mut self) -> Result<Measurement, Error<I::Error>> {
        let mut d = [0u8; 8];
        self.i2c.write_read(self.address, &[reg::DATA], &mut d)?;
        let raw = Raw::from_registers(&d);
        // Right after power-up the data registers hold their reset value.
        if raw.temperature == SKIPPED_20BIT {
            return Err(Error::NotReady);
        }
        Ok(compensate(&self.calibration, raw))
    }

    /// The calibration read from the chip.
    pub fn calibration(&self) -> &Calibration {
        &self.calibration
    }

    /// Gives the bus back.
    pub fn release(self) -> I {
        self.i2c
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "bme280_tests.rs"]
mod tests;
