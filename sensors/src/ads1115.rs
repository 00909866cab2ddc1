//! TI ADS1115: 16-bit, 4-channel ADC over I2C (addresses 0x48..=0x4B), for
//! analogue sensors (soil moisture, light, current clamps, 4-20 mA loops).
//!
//! Our own driver rather than `ads1x1x` (which is embedded-hal 1.0 and builds
//! with rust 1.85): its type-state API fixes the mode at compile time and its
//! one-shot read is `nb` polling; the agent needs a channel chosen at run time
//! from the config, one blocking call per reading, and the bus error kept for
//! health. It is a few registers.
//!
//! A read is single-shot: write the config (start bit, channel, gain, 860 SPS),
//! wait one conversion, poll the "ready" bit a few times, read the result.

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;

use crate::error::Error;

/// Register pointers.
pub mod reg {
    /// Last conversion result, 16-bit two's complement, big-endian.
    pub const CONVERSION: u8 = 0x00;
    /// Configuration.
    pub const CONFIG: u8 = 0x01;
}

/// The default address (ADDR to GND); 0x49 VDD, 0x4A SDA, 0x4B SCL.
pub const ADDRESS: u8 = 0x48;
/// The config register's value after power-up.
pub const CONFIG_RESET: u16 = 0x8583;
/// Bit 15: write 1 to start a conversion; reads 1 when none is running.
const OS: u16 = 1 << 15;
/// 860 samples per second (DR = 111): a conversion takes about 1.2 ms.
const DR_860: u16 = 0b111 << 5;
/// Single-shot mode.
const MODE_SINGLE: u16 = 1 << 8;
/// Comparator disabled (COMP_QUE = 11), as after reset.
const COMP_OFF: u16 = 0b11;
/// How many times the ready bit is polled before giving up.
const POLLS: u32 = 5;

/// Programmable gain: the full-scale range of the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gain {
    /// ±6.144 V
    Fs6V144,
    /// ±4.096 V
    Fs4V096,
    /// ±2.048 V (the reset value)
    Fs2V048,
    /// ±1.024 V
    Fs1V024,
    /// ±0.512 V
    Fs0V512,
    /// ±0.256 V
    Fs0V256,
}

impl Gain {
    /// The PGA field value.
    fn bits(self) -> u16 {
        (match self {
            Self::Fs6V144 => 0b000,
            Self::Fs4V096 => 0b001,
            Self::Fs2V048 => 0b010,
            Self::Fs1V024 => 0b011,
            Self::Fs0V512 => 0b100,
            Self::Fs0V256 => 0b101,
        }) << 9
    }

    /// Full-scale voltage.
    pub fn full_scale(self) -> f64 {
        match self {
            Self::Fs6V144 => 6.144,
            Self::Fs4V096 => 4.096,
            Self::Fs2V048 => 2.048,
            Self::Fs1V024 => 1.024,
            Self::Fs0V512 => 0.512,
            Self::Fs0V256 => 0.256,
        }
    }

    /// From a full-scale voltage as written in a config file (`4.096`).
    pub fn from_full_scale(v: f64) -> Option<Self> {
        [
            Self::Fs6V144,
            Self::Fs4V096,
            Self::Fs2V048,
            Self::Fs1V024,
            Self::Fs0V512,
            Self::Fs0V256,
        ]
        .into_iter()
        .find(|g| (g.full_scale() - v).abs() < 1e-9)
    }

    /// Decodes the PGA field of a config value.
    pub fn from_config(config: u16) -> Self {
        match (config >> 9) & 0b111 {
            0b000 => Self::Fs6V144,
            0b001 => Self::Fs4V096,
            0b010 => Self::Fs2V048,
            0b011 => Self::Fs1V024,
            0b100 => Self::Fs0V512,
            _ => Self::Fs0V256,
        }
    }
}

/// The config word that starts a single-shot conversion of `channel` (0..=3,
/// against ground) at `gain`.
pub fn start_config(channel: u8, gain: Gain) -> u16 {
    let mux = u16::from(0b100 | (channel & 0b11)) << 12;
    OS | mux | gain.bits() | MODE_SINGLE | DR_860 | COMP_OFF
}

/// The channel (0..=3) a config word selects, when single-ended.
pub fn config_channel(config: u16) -> Option<u8> {
    let mux = (config >> 12) & 0b111;
    (mux & 0b100 != 0).then_some((mux & 0b11) as u8)
}

/// Volts from a conversion result.
pub fn volts(raw: i16, gain: Gain) -> f64 {
    f64::from(raw) * gain.full_scale() / 32768.0
}

/// An ADS1115 on bus `I`, waiting with `D`.
#[derive(Debug)]
pub struct Ads1115<I, D> {
    i2c: I,
    delay: D,
    address: u8,
}

impl<I: I2c, D: DelayNs> Ads1115<I, D> {
    /// Checks that something answers with a readable config register.
    pub fn init(mut i2c: I, delay: D, address: u8) -> Result<Self, (I, Error<I::Error>)> {
        match read_reg(&mut i2c, address, reg::CONFIG) {
            Ok(_) => Ok(Self {
                i2c,
                delay,
                address,
            }),
            Err(e) => Err((i2c, e)),
        }
    }

    /// One single-shot conversion of `channel` (0..=3) in volts; blocks for about 2 ms.
    pub fn read(&mut self, channel: u8, gain: Gain) -> Result<f64, Error<I::Error>> {
        let [hi, lo] = start_config(channel, gain).to_be_bytes();
        self.i2c.write(self.address, &[reg::CONFIG, hi, lo])?;
        for _ in 0..POLLS {
            self.delay.delay_us(1200);
            if read_reg(&mut self.i2c, self.address, reg::CONFIG)? & OS != 0 {
                let raw = read_reg(&mut self.i2c, self.address, reg::CONVERSION)?;
                return Ok(volts(raw as i16, gain));
            }
        }
        Err(Error::NotReady)
    }

    /// Gives the bus and the delay back.
    pub fn release(self) -> (I, D) {
        (self.i2c, self.delay)
    }
}

/// Reads a 16-bit register.
pub fn read_reg<I: I2c>(i2c: &mut I, address: u8, reg: u8) -> Result<u16, Error<I::Error>> {
    let mut b = [0u8; 2];
    i2c.write_read(address, &[reg], &mut b)?;
    Ok(u16::from_be_bytes(b))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use embedded_hal::i2c::ErrorKind;
    use embedded_hal_mock::eh1::delay::NoopDelay;
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction as T};

    use super::*;
    use crate::error::Fault;

    const A: u8 = ADDRESS;

    fn config_read(v: u16) -> T {
        T::write_read(A, vec![reg::CONFIG], v.to_be_bytes().to_vec())
    }

    #[test]
    fn a_read_starts_a_conversion_polls_ready_and_scales_by_the_gain() {
        let cfg = start_config(2, Gain::Fs4V096);
        assert_eq!(cfg, 0b1110_0011_1110_0011);
        let [hi, lo] = cfg.to_be_bytes();
        let mut bus = Mock::new(&[
            config_read(CONFIG_RESET),
            T::write(A, vec![reg::CONFIG, hi, lo]),
            config_read(cfg & !OS), // still converting
            config_read(cfg),       // done
            T::write_read(A, vec![reg::CONVERSION], 16384i16.to_be_bytes().to_vec()),
        ]);
        let mut adc = Ads1115::init(bus.clone(), NoopDelay, A)
            .map_err(|e| e.1)
            .unwrap();
        let v = adc.read(2, Gain::Fs4V096).unwrap();
        assert_eq!(v, 2.048);
        bus.done();
    }

    #[test]
    fn a_conversion_that_never_finishes_is_not_ready() {
        let cfg = start_config(0, Gain::Fs2V048);
        let [hi, lo] = cfg.to_be_bytes();
        let mut script = vec![
            config_read(CONFIG_RESET),
            T::write(A, vec![reg::CONFIG, hi, lo]),
        ];
        script.extend((0..POLLS).map(|_| config_read(cfg & !OS)));
        let mut bus = Mock::new(&script);
        let mut adc = Ads1115::init(bus.clone(), NoopDelay, A)
            .map_err(|e| e.1)
            .unwrap();
        let e = adc.read(0, Gain::Fs2V048).unwrap_err();
        assert_eq!(e, Error::NotReady);
        assert_eq!(e.fault(), Fault::Glitch);
        bus.done();
    }

    #[test]
    fn a_bus_error_while_starting_is_reported_with_its_kind() {
        let [hi, lo] = start_config(1, Gain::Fs2V048).to_be_bytes();
        let mut bus = Mock::new(&[
            config_read(CONFIG_RESET),
            T::write(A, vec![reg::CONFIG, hi, lo]).with_error(ErrorKind::Bus),
        ]);
        let mut adc = Ads1115::init(bus.clone(), NoopDelay, A)
            .map_err(|e| e.1)
            .unwrap();
        assert_eq!(
            adc.read(1, Gain::Fs2V048).unwrap_err(),
            Error::Bus(ErrorKind::Bus)
        );
        bus.done();
    }

    #[test]
    fn negative_results_give_negative_volts_and_gains_round_trip() {
        assert_eq!(volts(-32768, Gain::Fs0V256), -0.256);
        for g in [Gain::Fs6V144, Gain::Fs0V512] {
            assert_eq!(Gain::from_full_scale(g.full_scale()), Some(g));
            assert_eq!(Gain::from_config(start_config(0, g)), g);
        }
        assert_eq!(config_channel(start_config(3, Gain::Fs2V048)), Some(3));
        assert_eq!(Gain::from_full_scale(3.3), None);
    }
}
