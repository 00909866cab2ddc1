//! `weir config check` and `weir config example`.

use std::io::Write;
use std::path::Path;

use super::exit;
use crate::config::{Config, EXAMPLE};

/// Checks `file`; prints a summary on success, the error (file:line: key: problem,
/// and the fix) on failure.
pub fn check(file: &Path, out: &mut impl Write, err: &mut impl Write) -> u8 {
    match Config::load(file) {
        Ok(c) => {
            let _ = writeln!(
                out,
                "{}: ok (device {}, {} simulated sensor(s), {} ingest topic(s), {} detector(s), upstream {}:{})",
                file.display(),
                c.device,
                c.sims.len(),
                c.ingest.as_ref().map_or(0, |i| i.topics.len()),
                c.detectors.len(),
                c.uplink.host,
                c.uplink.port
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

/// Prints the commented example.
pub fn example(out: &mut impl Write) -> u8 {
    match out.write_all(EXAMPLE.as_bytes()) {
        Ok(()) => exit::OK,
        // A closed pipe (`weir config example | head`) is not an error worth a message.
        Err(_) => exit::FAILURE,
    }
}
