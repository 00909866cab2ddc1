//! Register-level simulators of the I2C chips, behind the `sim` feature: a
//! [`SimBus`] implements `embedded_hal::i2c::I2c`, so the real drivers run
//! their real transactions against it in CI and in `sim = true` sensors.
//!
//! Simulated time is counted in *ticks*: whoever polls calls [`SimBus::tick`]
//! once per poll, every chip then takes its next sample (values from
//! [`crate::sim::SimSensor`]: noise, drift, spikes, a stuck value), and the
//! scripted bus faults are keyed on the tick too, so a scenario reads "from
//! poll 20, for 10 polls, the chip is gone" whatever the transactions per read.
//!
//! Invariants of [`SimBus`]:
//! - `tick` only grows; a fault covers the ticks `[start, start + len)`;
//! - at most one device per address (attaching again replaces it);
//! - a transaction either fails before touching any chip state (NACK, bus
//!   error) or runs every operation against the chip, in order.

mod chips;

use std::sync::{Arc, Mutex};

use embedded_hal::i2c::{ErrorKind, ErrorType, I2c, NoAcknowledgeSource, Operation};

pub use chips::{Ads1115Sim, Bme280Sim, Sht3xSim};

/// A simulated chip: what it does with the bytes of a transaction.
pub trait SimChip: Send {
    /// A write operation (the first byte is usually a register pointer or command).
    fn write(&mut self, bytes: &[u8]) -> Result<(), ErrorKind>;
    /// A read operation.
    fn read(&mut self, buf: &mut [u8]) -> Result<(), ErrorKind>;
    /// One tick of simulated time has passed: take the next sample.
    fn advance(&mut self);
}

/// What goes wrong on the bus during a [`BusFault`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// The chip does not acknowledge its address: unplugged, or browned out.
    /// A long one is a device that disappears and, when it ends, comes back.
    Absent,
    /// A data byte is not acknowledged (a glitch mid-transfer).
    DataNack,
    /// A bus error (noise, a stuck line that recovered).
    BusError,
}

impl FaultKind {
    fn error(self) -> ErrorKind {
        match self {
            Self::Absent => ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address),
            Self::DataNack => ErrorKind::NoAcknowledge(NoAcknowledgeSource::Data),
            Self::BusError => ErrorKind::Bus,
        }
    }
}

/// A scripted fault over the ticks `[start, start + len)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BusFault {
    /// What happens.
    pub kind: FaultKind,
    /// First affected tick (from 0).
    pub start: u64,
    /// Number of affected ticks; `u64::MAX` for "from then on".
    pub len: u64,
}

impl BusFault {
    fn covers(&self, tick: u64) -> bool {
        tick >= self.start && tick - self.start < self.len
    }
}

struct Device {
    address: u8,
    chip: Box<dyn SimChip>,
    faults: Vec<BusFault>,
}

#[derive(Default)]
struct State {
    tick: u64,
    devices: Vec<Device>,
    transactions: u64,
}

/// A simulated I2C bus. Cloning gives another handle to the same bus (the
/// driver owns one, the poller keeps one to tick it).
#[derive(Clone, Default)]
pub struct SimBus {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for SimBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("SimBus")
            .field("tick", &s.tick)
            .field(
                "addresses",
                &s.devices.iter().map(|d| d.address).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl SimBus {
    /// An empty bus at tick 0.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic in another holder leaves plain data behind: keep simulating.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts `chip` at `address` with its scripted faults.
    pub fn attach(&self, address: u8, chip: impl SimChip + 'static, faults: Vec<BusFault>) {
        let mut s = self.lock();
        s.devices.retain(|d| d.address != address);
        s.devices.push(Device {
            address,
            chip: Box::new(chip),
            faults,
        });
    }

    /// Advances simulated time by one tick: every chip takes its next sample.
    pub fn tick(&self) {
        let mut s = self.lock();
        s.tick += 1;
        for d in &mut s.devices {
            d.chip.advance();
        }
    }

    /// The current tick.
    pub fn now(&self) -> u64 {
        self.lock().tick
    }

    /// Transactions attempted so far (failed ones included).
    pub fn transactions(&self) -> u64 {
        self.lock().transactions
    }
}

impl ErrorType for SimBus {
    type Error = ErrorKind;
}

impl I2c for SimBus {
    fn transaction(&mut self, address: u8, ops: &mut [Operation<'_>]) -> Result<(), ErrorKind> {
        let mut s = self.lock();
        s.transactions += 1;
        let tick = s.tick;
        let Some(dev) = s.devices.iter_mut().find(|d| d.address == address) else {
            return Err(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address));
        };
        if let Some(f) = dev.faults.iter().find(|f| f.covers(tick)) {
            return Err(f.kind.error());
        }
        for op in ops {
            match op {
                Operation::Write(bytes) => dev.chip.write(bytes)?,
                Operation::Read(buf) => dev.chip.read(buf)?,
            }
        }
        Ok(())
    }
}

/// A 256-byte register file with an auto-incrementing pointer, as most sensors
/// (and the kernel's i2c-stub) behave: a write sets the pointer from its first
/// byte and stores the rest at pointer++, a read returns bytes from pointer++.
#[derive(Clone, Debug)]
pub struct Registers {
    /// The registers.
    pub regs: [u8; 256],
    /// The register pointer.
    pub pointer: u8,
}

impl Default for Registers {
    fn default() -> Self {
        Self {
            regs: [0; 256],
            pointer: 0,
        }
    }
}

impl Registers {
    /// Applies a write; returns the registers written (pointer, count).
    pub fn write(&mut self, bytes: &[u8]) -> (u8, usize) {
        let Some((&first, rest)) = bytes.split_first() else {
            return (self.pointer, 0);
        };
        self.pointer = first;
        for &b in rest {
            self.regs[usize::from(self.pointer)] = b;
            self.pointer = self.pointer.wrapping_add(1);
        }
        (first, rest.len())
    }

    /// Applies a read.
    pub fn read(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.regs[usize::from(self.pointer)];
            self.pointer = self.pointer.wrapping_add(1);
        }
    }

    /// Stores `bytes` from `at` without moving the pointer.
    pub fn preset(&mut self, at: u8, bytes: &[u8]) {
        for (i, &b) in bytes.iter().enumerate() {
            self.regs[usize::from(at.wrapping_add(i as u8))] = b;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
