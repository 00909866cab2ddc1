//! Linux backends: an I2C bus from `/dev/i2c-N` whose errors keep their
//! meaning, a blocking delay, and GPIO edge events from the GPIO character
//! device (`/dev/gpiochipN`), stamped by the kernel.

use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

use embedded_hal::i2c::{ErrorKind, ErrorType, I2c, NoAcknowledgeSource, Operation};
use gpio_cdev::{Chip, EventRequestFlags, EventType, LineEventHandle, LineRequestFlags};
use i2cdev::linux::LinuxI2CError;

pub use gpio_cdev::Error as GpioError;
pub use linux_embedded_hal::Delay;

/// An I2C bus device, `/dev/i2c-N`.
pub struct LinuxI2c {
    inner: linux_embedded_hal::I2cdev,
}

impl std::fmt::Debug for LinuxI2c {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinuxI2c")
    }
}

/// An I2C error with the errno behind it.
#[derive(Debug)]
pub struct LinuxI2cError {
    errno: Option<i32>,
    message: String,
}

impl std::fmt::Display for LinuxI2cError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LinuxI2cError {}

impl embedded_hal::i2c::Error for LinuxI2cError {
    /// Like linux-embedded-hal's mapping, plus EREMOTEIO and ETIMEDOUT: the
    /// Raspberry Pi's adapter (i2c-bcm2835) reports a NACK as EREMOTEIO, which
    /// linux-embedded-hal files under "other", so a missing chip would look
    /// like a glitch.
    fn kind(&self) -> ErrorKind {
        const EIO: i32 = 5;
        const ENXIO: i32 = 6;
        const EAGAIN: i32 = 11;
        const EBUSY: i32 = 16;
        const ENODEV: i32 = 19;
        const EINVAL: i32 = 22;
        const ETIMEDOUT: i32 = 110;
        const EREMOTEIO: i32 = 121;
        match self.errno {
            Some(ENXIO) => ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address),
            Some(EREMOTEIO) => ErrorKind::NoAcknowledge(NoAcknowledgeSource::Unknown),
            Some(ENODEV) => ErrorKind::NoAcknowledge(NoAcknowledgeSource::Data),
            Some(EAGAIN) => ErrorKind::ArbitrationLoss,
            Some(EIO | EBUSY | EINVAL | ETIMEDOUT) => ErrorKind::Bus,
            _ => ErrorKind::Other,
        }
    }
}

fn errno_of(e: &LinuxI2CError) -> Option<i32> {
    match e {
        LinuxI2CError::Errno(n) => Some(*n),
        LinuxI2CError::Io(e) => e.raw_os_error(),
    }
}

impl LinuxI2c {
    /// Opens a bus device. Fails when it does not exist or is not readable.
    pub fn open(path: &Path) -> Result<Self, LinuxI2cError> {
        linux_embedded_hal::I2cdev::new(path)
            .map(|inner| Self { inner })
            .map_err(|e| LinuxI2cError {
                errno: errno_of(&e),
                message: format!("cannot open {}: {e}", path.display()),
            })
    }
}

impl ErrorType for LinuxI2c {
    type Error = LinuxI2cError;
}

impl I2c for LinuxI2c {
    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), Self::Error> {
        self.inner
            .transaction(address, operations)
            .map_err(|e| LinuxI2cError {
                errno: errno_of(e.inner()),
                message: e.to_string(),
            })
    }
}

/// Which edges a [`EdgeWatcher`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edges {
    /// Low to high.
    Rising,
    /// High to low.
    Falling,
    /// Both.
    Both,
}

/// Finds a GPIO chip by path (`/dev/gpiochip0`), name (`gpiochip0`) or label
/// (`pinctrl-bcm2711`, `gpio-sim.0-node0`): labels are stable across boots
/// and kernels where numbers are not.
pub fn find_chip(spec: &str) -> Result<Chip, gpio_cdev::Error> {
    if spec.starts_with('/') {
        return Chip::new(spec);
    }
    let mut last_err = None;
    for chip in gpio_cdev::chips()? {
        match chip {
            Ok(c) if c.name() == spec || c.label() == spec => return Ok(c),
            Ok(_) => {}
            Err(e) => last_err = Some(e),
        }
    }
    match last_err {
        Some(e) => Err(e),
        None => Chip::new(format!("/dev/{spec}")),
    }
}

/// Edge events of one GPIO line, as requested from the kernel.
#[derive(Debug)]
pub struct EdgeWatcher {
    handle: LineEventHandle,
}

/// One edge: the level after it, and the kernel's CLOCK_MONOTONIC timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edge {
    /// `true` after a rising edge.
    pub level: bool,
    /// Kernel timestamp, ns of CLOCK_MONOTONIC (kernel >= 5.7).
    pub ts_ns: u64,
}

impl EdgeWatcher {
    /// Requests edge events on `line` of `chip`, as consumer `consumer`.
    pub fn open(
        chip: &str,
        line: u32,
        edges: Edges,
        active_low: bool,
        consumer: &str,
    ) -> Result<Self, gpio_cdev::Error> {
        let mut chip = find_chip(chip)?;
        let mut flags = LineRequestFlags::INPUT;
        if active_low {
            flags |= LineRequestFlags::ACTIVE_LOW;
        }
        let ev = match edges {
            Edges::Rising => EventRequestFlags::RISING_EDGE,
            Edges::Falling => EventRequestFlags::FALLING_EDGE,
            Edges::Both => EventRequestFlags::BOTH_EDGES,
        };
        let handle = chip.get_line(line)?.events(flags, ev, consumer)?;
        Ok(Self { handle })
    }

    /// The line's current level.
    pub fn level(&self) -> Result<bool, gpio_cdev::Error> {
        Ok(self.handle.get_value()? != 0)
    }

    /// The next edge, or `None` after `timeout` without one (so the caller
    /// can check for shutdown and run its timers).
    pub fn wait(&mut self, timeout: Duration) -> Result<Option<Edge>, gpio_cdev::Error> {
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        let ready = {
            let fd = self.handle.as_fd();
            let mut fds = [nix::poll::PollFd::new(&fd, nix::poll::PollFlags::POLLIN)];
            nix::poll::poll(&mut fds, ms).map_err(std::io::Error::from)?
        };
        if ready == 0 {
            return Ok(None);
        }
        let e = self.handle.get_event()?;
        Ok(Some(Edge {
            level: e.event_type() == EventType::RisingEdge,
            ts_ns: e.timestamp(),
        }))
    }
}

/// Now on CLOCK_MONOTONIC, in ns: the clock GPIO event timestamps use.
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| {
            u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000
                + u64::try_from(t.tv_nsec()).unwrap_or(0)
        })
        .unwrap_or(0)
}
