//! What a driver call can fail with, classified so that the caller can decide:
//! a chip that does not answer its address is *absent* (wiring, power, wrong
//! address: retrying at once will not help), anything else on the bus is a
//! *glitch* (noise, a collision, a bad CRC: retry), and a chip that answers
//! with the wrong identity is *misconfigured* (an operator must act).

use core::fmt;

use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource};

/// An error of a driver generic over the bus error `E`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error<E> {
    /// The bus transaction failed; see [`Error::fault`] for what it means.
    Bus(E),
    /// The data's checksum does not match (Sensirion CRC-8).
    Crc,
    /// The chip at the address is not the one configured.
    WrongChip {
        /// What the driver expected, e.g. `"bme280"`.
        expected: &'static str,
        /// The id register's value.
        found: u8,
    },
    /// The chip has no measurement yet (a BME280 data register still at its
    /// reset value, an ADS1115 conversion that did not finish).
    NotReady,
}

/// How a caller should treat an [`Error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Nothing answers at the address: unplugged, unpowered, or a wrong address.
    Absent,
    /// A transient problem; the next attempt may well succeed.
    Glitch,
    /// Something answers, but not the configured chip.
    Misconfigured,
}

impl Fault {
    /// Stable lowercase name for logs and the status message.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Absent => "absent",
            Self::Glitch => "glitch",
            Self::Misconfigured => "misconfigured",
        }
    }
}

/// Classifies an embedded-hal I2C error kind. A NACK of unknown source counts
/// as absent: on Linux most adapters cannot say which byte was refused, and a
/// missing chip is by far the commonest cause.
pub fn classify(kind: ErrorKind) -> Fault {
    match kind {
        ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address | NoAcknowledgeSource::Unknown) => {
            Fault::Absent
        }
        _ => Fault::Glitch,
    }
}

impl<E: embedded_hal::i2c::Error> Error<E> {
    /// What the error means for the caller.
    pub fn fault(&self) -> Fault {
        match self {
            Self::Bus(e) => classify(e.kind()),
            Self::Crc | Self::NotReady => Fault::Glitch,
            Self::WrongChip { .. } => Fault::Misconfigured,
        }
    }
}

impl<E> From<E> for Error<E> {
    fn from(e: E) -> Self {
        Self::Bus(e)
    }
}

// Hand-written rather than `thiserror`: this crate's core is no_std.
impl<E: fmt::Debug> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bus(e) => write!(f, "I2C bus error: {e:?}"),
            Self::Crc => f.write_str("checksum mismatch in the data read from the chip"),
            Self::WrongChip { expected, found } => write!(
                f,
                "the chip at this address is not a {expected} (id register reads {found:#04x})"
            ),
            Self::NotReady => f.write_str("the chip has no measurement ready yet"),
        }
    }
}

impl<E: fmt::Debug> core::error::Error for Error<E> {}

/// Sensirion's CRC-8 (polynomial 0x31, init 0xFF), used by the SHT3x.
pub(crate) fn crc8(data: &[u8]) -> u8 {
    let mut crc: u8 = 0xFF;
    for &b in data {
        crc ^= b;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 {
                (crc << 1) ^ 0x31
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sensirion_crc_of_beef_is_0x92() {
        // The example in the SHT3x datasheet, section 4.12.
        assert_eq!(crc8(&[0xBE, 0xEF]), 0x92);
    }

    #[test]
    fn an_address_nack_is_absent_and_a_bus_error_is_a_glitch() {
        assert_eq!(
            classify(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address)),
            Fault::Absent
        );
        assert_eq!(
            classify(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Data)),
            Fault::Glitch
        );
        assert_eq!(classify(ErrorKind::Bus), Fault::Glitch);
        assert_eq!(classify(ErrorKind::ArbitrationLoss), Fault::Glitch);
    }
}
