//! DS18B20 (and other 1-Wire thermometers) through the Linux `w1_therm`
//! driver's sysfs files: `/sys/bus/w1/devices/28-xxxxxxxxxxxx/w1_slave`.
//!
//! The file has two lines: the 9 scratchpad bytes with the driver's CRC
//! verdict, then the bytes again with `t=` in millidegrees:
//! ```text
//! 72 01 4b 46 7f ff 0e 10 57 : crc=57 YES
//! 72 01 4b 46 7f ff 0e 10 57 t=23125
//! ```
//! Reading the file makes the kernel start a conversion (about 750 ms), so a
//! read blocks: call it from a sensor thread.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::Fault;

/// Where the kernel lists 1-Wire devices.
pub const SYSFS_DEVICES: &str = "/sys/bus/w1/devices";

/// The DS18B20's power-on value: read before any conversion ran, it usually
/// means the probe browned out (a parasite-power wiring problem).
pub const POWER_ON_MILLI_C: i32 = 85_000;

/// Why a 1-Wire read failed.
#[derive(Debug)]
pub enum OneWireError {
    /// The device directory or file does not exist (probe unplugged).
    Missing(PathBuf),
    /// Reading the file failed.
    Io(io::Error),
    /// The kernel's CRC check said `NO`.
    Crc,
    /// The file does not look like `w1_slave` output.
    Malformed(String),
    /// 85.000 °C, the power-on reset value.
    PowerOnValue,
}

impl OneWireError {
    /// How the agent should treat it.
    pub fn fault(&self) -> Fault {
        match self {
            Self::Missing(_) => Fault::Absent,
            Self::Io(_) | Self::Crc | Self::PowerOnValue => Fault::Glitch,
            Self::Malformed(_) => Fault::Misconfigured,
        }
    }
}

impl fmt::Display for OneWireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing(p) => write!(
                f,
                "{} does not exist (probe unplugged, or w1-gpio not loaded?)",
                p.display()
            ),
            Self::Io(e) => write!(f, "cannot read the probe: {e}"),
            Self::Crc => f.write_str("the probe's data failed its CRC check"),
            Self::Malformed(s) => write!(f, "unexpected w1_slave content: {s:?}"),
            Self::PowerOnValue => {
                f.write_str("the probe reads its power-on value 85.000 °C (brown-out?)")
            }
        }
    }
}

impl std::error::Error for OneWireError {}

/// Parses `w1_slave` content into degrees Celsius.
pub fn parse_w1_slave(text: &str) -> Result<f64, OneWireError> {
    let malformed = || OneWireError::Malformed(text.chars().take(120).collect());
    let mut lines = text.lines();
    let crc_line = lines.next().ok_or_else(malformed)?;
    let data_line = lines.next().ok_or_else(malformed)?;
    match crc_line.trim_end().rsplit(' ').next() {
        Some("YES") => {}
        Some("NO") => return Err(OneWireError::Crc),
        _ => return Err(malformed()),
    }
    let milli: i32 = data_line
        .rsplit_once("t=")
        .and_then(|(_, t)| t.trim().parse().ok())
        .ok_or_else(malformed)?;
    if milli == POWER_ON_MILLI_C {
        return Err(OneWireError::PowerOnValue);
    }
    Ok(f64::from(milli) / 1000.0)
}

/// The `w1_slave` path of device `id` (e.g. `28-0316a2796bff`) under `base`.
pub fn slave_path(base: &Path, id: &str) -> PathBuf {
    base.join(id).join("w1_slave")
}

/// Reads one temperature; blocks for the conversion.
pub fn read(base: &Path, id: &str) -> Result<f64, OneWireError> {
    let path = slave_path(base, id);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_w1_slave(&text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(OneWireError::Missing(path)),
        Err(e) => Err(OneWireError::Io(e)),
    }
}

/// Thermometer ids present under `base` (family 28 DS18B20, 10 DS18S20, 22 DS1822, 3b, 42).
pub fn list(base: &Path) -> io::Result<Vec<String>> {
    let mut ids: Vec<String> = std::fs::read_dir(base)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| {
            ["28-", "10-", "22-", "3b-", "42-"]
                .iter()
                .any(|p| n.starts_with(p))
        })
        .collect();
    ids.sort();
    Ok(ids)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const GOOD: &str =
        "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n";

    #[test]
    fn a_good_file_gives_degrees_celsius() {
        assert_eq!(parse_w1_slave(GOOD).unwrap(), 23.125);
        let neg = "5e ff 4b 46 7f ff 0c 10 1c : crc=1c YES\n5e ff 4b 46 7f ff 0c 10 1c t=-10125\n";
        assert_eq!(parse_w1_slave(neg).unwrap(), -10.125);
    }

    #[test]
    fn a_crc_failure_the_power_on_value_and_garbage_are_refused_with_their_fault() {
        let bad = GOOD.replace("YES", "NO");
        assert_eq!(parse_w1_slave(&bad).unwrap_err().fault(), Fault::Glitch);
        let por = GOOD.replace("t=23125", "t=85000");
        assert!(matches!(
            parse_w1_slave(&por),
            Err(OneWireError::PowerOnValue)
        ));
        assert_eq!(
            parse_w1_slave("").unwrap_err().fault(),
            Fault::Misconfigured
        );
        assert!(parse_w1_slave("x : crc=00 YES\nno temperature\n").is_err());
    }

    #[test]
    fn a_probe_is_read_from_its_sysfs_directory_and_a_missing_one_is_absent() {
        let dir = tempfile::tempdir().unwrap();
        let id = "28-0316a2796bff";
        std::fs::create_dir(dir.path().join(id)).unwrap();
        std::fs::write(slave_path(dir.path(), id), GOOD).unwrap();
        std::fs::create_dir(dir.path().join("w1_bus_master1")).unwrap();
        assert_eq!(read(dir.path(), id).unwrap(), 23.125);
        assert_eq!(list(dir.path()).unwrap(), [id]);
        let e = read(dir.path(), "28-000000000000").unwrap_err();
        assert_eq!(e.fault(), Fault::Absent);
    }
}
