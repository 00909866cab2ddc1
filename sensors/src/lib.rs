//! Sensors for Weir: drivers generic over `embedded-hal` 1.0 for the chips a
//! Raspberry Pi integrator wires up (BME280, SHT3x, ADS1115), GPIO edge logic
//! (debounce, pulse rates), the DS18B20 over 1-Wire sysfs, deterministic value
//! simulators, and register-level chip simulators.
//!
//! The core is `no_std` (drivers, GPIO logic, value simulators); `std` adds
//! the 1-Wire reader, `sim` the chip simulators (they implement
//! `embedded_hal::i2c::I2c`, so the real drivers run against them in CI), and
//! `linux` the backends for `/dev/i2c-N` and the GPIO character device.
#![cfg_attr(not(any(feature = "std", test)), no_std)]

pub mod ads1115;
pub mod bme280;
pub mod error;
pub mod gpio;
pub mod scan;
pub mod sht3x;
pub mod sim;

#[cfg(feature = "sim")]
pub mod chipsim;
#[cfg(feature = "linux")]
pub mod linux;
#[cfg(feature = "std")]
pub mod onewire;

pub use error::{Error, Fault};
