//! `weir config check` and `weir config example`.

use std::io::Write;
use std::path::Path;

use super::exit;
use crate::config::{Config, EXAMPLE};

/// Checks `file`; prints a summary on success, the error (file:line: key: problem,
/// and the fix) on failure.
pub fn check(file: &Path, out: &mut impl Write, err: &mut impl Write) -> u8 {
    match Config::load_for_check(file) {
        Ok(c) => {
            if let Some(v) = &c.uplink.password_env_unset {
                let _ = writeln!(
                    err,
                    "warning: uplink.password_env: environment variable {v} is not set in this \
                     shell; weir run needs it in the service's environment\n  fix: {}",
                    crate::config::PASSWORD_ENV_FIX
                );
            }
            let _ = writeln!(
                out,
                "{}: ok (device {}, upstream {}:{}, {})\n  sources: {}\n  {}",
                file.display(),
                c.device,
                c.uplink.host,
                c.uplink.port,
                plural(c.detectors.len(), "detector"),
                sources(&c),
                simulated(&c)
            );
            for w in c.warnings() {
                let _ = writeln!(err, "warning: {w}");
            }
            exit::OK
        }
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            exit::CONFIG
        }
    }
}

/// Every kind of source, counted: a technician checking a packaged config sees at
/// once what would run.
fn sources(c: &Config) -> String {
    let i2c = &c.devices.i2c;
    let i2c_sim = i2c.iter().filter(|s| s.sim.is_some()).count();
    let i2c_text = if i2c_sim > 0 {
        format!("{} I2C ({i2c_sim} simulated)", i2c.len())
    } else {
        format!("{} I2C", i2c.len())
    };
    format!(
        "{}, {i2c_text}, {} GPIO, {} 1-Wire, {}",
        plural(c.sims.len(), "[[sim]] sensor"),
        c.devices.gpio.len(),
        c.devices.onewire.len(),
        plural(
            c.ingest.as_ref().map_or(0, |i| i.topics.len()),
            "ingest topic"
        ),
    )
}

/// One line saying whether anything simulated would publish under this device's name.
fn simulated(c: &Config) -> String {
    let sims = c.sims.len() + c.devices.i2c.iter().filter(|s| s.sim.is_some()).count();
    if sims == 0 {
        "nothing simulated".to_owned()
    } else {
        format!(
            "{} simulated: not real readings, published as device {}",
            plural(sims, "sensor"),
            c.device
        )
    }
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// Prints the commented example.
pub fn example(out: &mut impl Write, err: &mut impl Write) -> u8 {
    match out.write_all(EXAMPLE.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => exit::OK,
        Err(e) => super::output_failed(&e, "the example", err),
    }
}
