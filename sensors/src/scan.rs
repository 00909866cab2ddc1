//! Probing an I2C bus like `i2cdetect`, and naming the known chips found by
//! their identity registers.

use embedded_hal::i2c::I2c;

use crate::error::{Fault, classify};
use crate::{ads1115, bme280, sht3x};

/// A chip recognised at an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chip {
    /// Bosch BME280 (id 0x60).
    Bme280,
    /// Bosch BMP280 (id 0x58): no humidity.
    Bmp280,
    /// Bosch BME680 (id 0x61).
    Bme680,
    /// Sensirion SHT3x (status register with a valid CRC).
    Sht3x,
    /// TI ADS1115 or ADS1015 (config register readable at 0x48..=0x4B).
    Ads1x15,
}

impl Chip {
    /// The name used in config files and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bme280 => "bme280",
            Self::Bmp280 => "bmp280",
            Self::Bme680 => "bme680",
            Self::Sht3x => "sht3x",
            Self::Ads1x15 => "ads1115",
        }
    }
}

/// The first and last address probed, as `i2cdetect` does (the rest are reserved).
pub const FIRST: u8 = 0x03;
/// See [`FIRST`].
pub const LAST: u8 = 0x77;

/// Whether something acknowledges `address`. Like `i2cdetect`'s default, a
/// one-byte read where a write could change an EEPROM (0x30..=0x37,
/// 0x50..=0x5F) and an empty write elsewhere (a read there could hold the bus
/// on some chips). Only an address NACK means "nobody": any other error is
/// a device that exists but disliked the probe.
pub fn probe<I: I2c>(i2c: &mut I, address: u8) -> bool {
    let r = if matches!(address, 0x30..=0x37 | 0x50..=0x5F) {
        i2c.read(address, &mut [0u8])
    } else {
        i2c.write(address, &[])
    };
    match r {
        Ok(()) => true,
        Err(e) => classify(embedded_hal::i2c::Error::kind(&e)) != Fault::Absent,
    }
}

/// Names the chip at an address that answered, from its id registers.
pub fn identify<I: I2c>(i2c: &mut I, address: u8) -> Option<Chip> {
    match address {
        bme280::ADDRESS | bme280::ADDRESS_ALT => {
            let mut id = [0u8];
            i2c.write_read(address, &[bme280::reg::ID], &mut id).ok()?;
            match id[0] {
                bme280::CHIP_ID => Some(Chip::Bme280),
                bme280::BMP280_CHIP_ID => Some(Chip::Bmp280),
                0x61 => Some(Chip::Bme680),
                _ => None,
            }
        }
        sht3x::ADDRESS | sht3x::ADDRESS_ALT => {
            sht3x::status(i2c, address).ok().map(|_| Chip::Sht3x)
        }
        0x48..=0x4B => ads1115::read_reg(i2c, address, ads1115::reg::CONFIG)
            .ok()
            .map(|_| Chip::Ads1x15),
        _ => None,
    }
}

/// Probes every address from [`FIRST`] to [`LAST`], calling `found` for each
/// one that answers, with the chip if it is a known one.
pub fn scan<I: I2c>(i2c: &mut I, mut found: impl FnMut(u8, Option<Chip>)) {
    for address in FIRST..=LAST {
        if probe(i2c, address) {
            let chip = identify(i2c, address);
            found(address, chip);
        }
    }
}
