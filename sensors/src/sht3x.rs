//! Sensirion SHT3x (SHT30/31/35): temperature and relative humidity over I2C
//! (address 0x44, or 0x45 with ADDR high).
//!
//! Our own driver: the `sht3x` crate on crates.io is written for embedded-hal
//! 0.2. The chip has no registers, only 16-bit commands; every 16-bit word it
//! sends is followed by a CRC-8 that we check.
//!
//! A read is a single-shot measurement without clock stretching (command
//! 0x2400): the command, a wait of [`MEASUREMENT_MS`] on the delay the driver
//! was built with, then 6 bytes. Single shot rather than periodic mode because
//! in periodic mode a fetch before the first result is NACKed, which would be
//! indistinguishable from an unplugged chip; without clock stretching because
//! several Linux I2C adapters (the Raspberry Pi's among them) mishandle it.

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;

use crate::error::{Error, crc8};

/// Commands (datasheet table 9 onwards).
pub mod cmd {
    /// Single shot, high repeatability, no clock stretching.
    pub const MEASURE_HIGH: [u8; 2] = [0x24, 0x00];
    /// Read the status register (answers 2 bytes + CRC).
    pub const READ_STATUS: [u8; 2] = [0xF3, 0x2D];
    /// Soft reset.
    pub const SOFT_RESET: [u8; 2] = [0x30, 0xA2];
}

/// The default address (ADDR to ground).
pub const ADDRESS: u8 = 0x44;
/// The alternative address (ADDR to VDD).
pub const ADDRESS_ALT: u8 = 0x45;
/// Longest high-repeatability measurement (datasheet table 4: 15 ms), plus margin.
pub const MEASUREMENT_MS: u32 = 16;

/// One measurement.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Measurement {
    /// Degrees Celsius.
    pub temperature: f64,
    /// Percent relative humidity.
    pub humidity: f64,
}

/// Temperature in °C from the raw word (datasheet section 4.13).
pub fn temperature(raw: u16) -> f64 {
    -45.0 + 175.0 * f64::from(raw) / 65535.0
}

/// Relative humidity in % from the raw word.
pub fn humidity(raw: u16) -> f64 {
    100.0 * f64::from(raw) / 65535.0
}

/// Checks the CRC of a word and returns it.
fn word<E>(b: &[u8]) -> Result<u16, Error<E>> {
    match b {
        [hi, lo, crc] if crc8(&[*hi, *lo]) == *crc => Ok(u16::from_be_bytes([*hi, *lo])),
        _ => Err(Error::Crc),
    }
}

/// Encodes a word with its CRC, as the chip sends it (for simulators and tests).
pub fn encode_word(w: u16) -> [u8; 3] {
    let [hi, lo] = w.to_be_bytes();
    [hi, lo, crc8(&[hi, lo])]
}

/// An SHT3x on bus `I`, waiting with `D`.
#[derive(Debug)]
pub struct Sht3x<I, D> {
    i2c: I,
    delay: D,
    address: u8,
}

impl<I: I2c, D: DelayNs> Sht3x<I, D> {
    /// Reads the status register to check that an SHT3x answers (its CRC must
    /// match). Gives the bus back on failure.
    pub fn init(mut i2c: I, delay: D, address: u8) -> Result<Self, (I, Error<I::Error>)> {
        match status(&mut i2c, address) {
            Ok(_) => Ok(Self {
                i2c,
                delay,
                address,
            }),
            Err(e) => Err((i2c, e)),
        }
    }

    /// One single-shot measurement; blocks for [`MEASUREMENT_MS`].
    pub fn read(&mut self) -> Result<Measurement, Error<I::Error>> {
        self.i2c.write(self.address, &cmd::MEASURE_HIGH)?;
        self.delay.delay_ms(MEASUREMENT_MS);
        let mut b = [0u8; 6];
        self.i2c.read(self.address, &mut b)?;
        Ok(Measurement {
            temperature: temperature(word(&b[0..3])?),
            humidity: humidity(word(&b[3..6])?),
        })
    }

    /// Gives the bus and the delay back.
    pub fn release(self) -> (I, D) {
        (self.i2c, self.delay)
    }
}

/// Reads the status register; a valid CRC is how `weir sensors scan` recognises an SHT3x.
pub fn status<I: I2c>(i2c: &mut I, address: u8) -> Result<u16, Error<I::Error>> {
    let mut b = [0u8; 3];
    i2c.write_read(address, &cmd::READ_STATUS, &mut b)?;
    word(&b)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource};
    use embedded_hal_mock::eh1::delay::NoopDelay;
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction as T};

    use super::*;
    use crate::error::Fault;

    const A: u8 = ADDRESS;

    fn status_ok() -> T {
        T::write_read(A, cmd::READ_STATUS.to_vec(), encode_word(0x8010).to_vec())
    }

    fn sample(t: u16, h: u16) -> Vec<u8> {
        let mut v = encode_word(t).to_vec();
        v.extend_from_slice(&encode_word(h));
        v
    }

    #[test]
    fn a_measurement_is_a_command_a_wait_and_six_bytes_with_checked_crcs() {
        let mut bus = Mock::new(&[
            status_ok(),
            T::write(A, cmd::MEASURE_HIGH.to_vec()),
            T::read(A, sample(0x6666, 0x8000)),
        ]);
        let mut dev = Sht3x::init(bus.clone(), NoopDelay, A)
            .map_err(|e| e.1)
            .unwrap();
        let m = dev.read().unwrap();
        // 0x6666 = 26214: -45 + 175 * 26214 / 65535 = 24.999...
        assert!((m.temperature - 25.0).abs() < 0.01, "{}", m.temperature);
        assert!((m.humidity - 50.0).abs() < 0.01, "{}", m.humidity);
        bus.done();
    }

    #[test]
    fn a_corrupted_byte_is_a_crc_error_and_a_glitch() {
        let mut bad = sample(0x6666, 0x8000);
        bad[4] ^= 0x01;
        let mut bus = Mock::new(&[
            status_ok(),
            T::write(A, cmd::MEASURE_HIGH.to_vec()),
            T::read(A, bad),
        ]);
        let mut dev = Sht3x::init(bus.clone(), NoopDelay, A)
            .map_err(|e| e.1)
            .unwrap();
        let e = dev.read().unwrap_err();
        assert_eq!(e, Error::Crc);
        assert_eq!(e.fault(), Fault::Glitch);
        bus.done();
    }

    #[test]
    fn a_missing_chip_is_absent_at_init() {
        let mut bus = Mock::new(&[
            status_ok().with_error(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address))
        ]);
        let (_, e) = Sht3x::init(bus.clone(), NoopDelay, A).err().unwrap();
        assert_eq!(e.fault(), Fault::Absent);
        bus.done();
    }

    #[test]
    fn a_bus_error_on_the_read_is_a_glitch() {
        let mut bus = Mock::new(&[
            status_ok(),
            T::write(A, cmd::MEASURE_HIGH.to_vec()),
            T::read(A, sample(1, 1)).with_error(ErrorKind::ArbitrationLoss),
        ]);
        let mut dev = Sht3x::init(bus.clone(), NoopDelay, A)
            .map_err(|e| e.1)
            .unwrap();
        assert_eq!(dev.read().unwrap_err().fault(), Fault::Glitch);
        bus.done();
    }

    #[test]
    fn conversions_cover_the_datasheet_range() {
        assert_eq!(temperature(0), -45.0);
        assert_eq!(temperature(u16::MAX), 130.0);
        assert_eq!(humidity(u16::MAX), 100.0);
    }
}
