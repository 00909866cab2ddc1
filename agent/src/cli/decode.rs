//! `weir decode [FILE]`: one postcard payload back into the JSON the json format publishes.
//!
//! For a technician with `mosquitto_sub` on a metered link's far end:
//! `mosquitto_sub -N -C 1 -t 'weir/pi-01/agg/#' | weir decode`. Without `-N`, mosquitto_sub
//! ends the payload with a newline; one trailing newline after a complete message is accepted
//! for that reason (the decoder itself stays strict). A JSON payload (rows written before a
//! switch to postcard) is printed unchanged after checking that it parses.

use std::io::{Read, Write};
use std::path::Path;

use super::exit;
use crate::wire::postcard::{self, DecodeError};

/// Larger input is not one of our payloads (the uplink's packet limit is far below this).
const MAX_INPUT: u64 = 16 << 20;

/// Reads `file` (standard input when `None` or `-`), prints the JSON and a newline; exit 0, or
/// 65 with the reason when the bytes are not a payload, 1 when they cannot be read.
pub fn decode(file: Option<&Path>, out: &mut impl Write, err: &mut impl Write) -> u8 {
    let stdin = file.is_none_or(|f| f == Path::new("-"));
    let name = match file {
        Some(f) if !stdin => f.display().to_string(),
        _ => "standard input".to_string(),
    };
    let mut bytes = Vec::new();
    let read = if stdin {
        std::io::stdin().take(MAX_INPUT).read_to_end(&mut bytes)
    } else {
        std::fs::File::open(file.unwrap_or(Path::new("-")))
            .and_then(|f| f.take(MAX_INPUT).read_to_end(&mut bytes))
    };
    if let Err(e) = read {
        let _ = writeln!(err, "error: cannot read {name}: {e}");
        return exit::FAILURE;
    }
    match payload_to_json(&bytes) {
        Ok(json) => {
            let written = out.write_all(&json).and_then(|()| out.write_all(b"\n"));
            if written.is_ok() {
                exit::OK
            } else {
                exit::FAILURE
            }
        }
        Err(e) => {
            let _ = writeln!(err, "error: {name}: {e}");
            exit::DATA
        }
    }
}

/// The JSON for one payload as received (see the module docs for the newline and JSON cases).
pub fn payload_to_json(bytes: &[u8]) -> Result<Vec<u8>, String> {
    match postcard::to_json(bytes) {
        Ok(json) => Ok(json),
        Err(DecodeError::TrailingBytes { extra: 1, .. }) if bytes.ends_with(b"\n") => {
            postcard::to_json(&bytes[..bytes.len() - 1]).map_err(|e| e.to_string())
        }
        Err(DecodeError::Json) => {
            let text = bytes.trim_ascii_end();
            match serde_json::from_slice::<serde::de::IgnoredAny>(text) {
                Ok(_) => Ok(text.to_vec()),
                Err(e) => Err(format!("starts with '{{' but is not valid JSON: {e}")),
            }
        }
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::wire::{Format, Wire};

    fn pane_payloads() -> (Vec<u8>, Vec<u8>) {
        let w = Wire::with_boot_id("d", "weir/d", "b");
        let p = crate::wire::fixtures::pane(true);
        (
            w.clone().with_format(Format::Postcard).pane(&p, 9).payload,
            w.pane(&p, 9).payload,
        )
    }

    #[test]
    fn a_postcard_file_prints_its_json_and_a_newline() {
        let (pc, json) = pane_payloads();
        let dir = tempfile::TempDir::new().unwrap();
        let file = dir.path().join("msg.bin");
        std::fs::write(&file, &pc).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(decode(Some(&file), &mut out, &mut err), exit::OK);
        assert_eq!(out, [json, b"\n".to_vec()].concat());
        assert!(err.is_empty());
    }

    #[test]
    fn one_trailing_newline_is_forgiven_but_not_two() {
        let (mut pc, json) = pane_payloads();
        pc.push(b'\n');
        assert_eq!(payload_to_json(&pc).unwrap(), json);
        pc.push(b'\n');
        assert!(
            payload_to_json(&pc)
                .unwrap_err()
                .contains("2 byte(s) after")
        );
    }

    #[test]
    fn json_passes_through_and_broken_json_is_an_error() {
        let (_, json) = pane_payloads();
        let mut with_nl = json.clone();
        with_nl.push(b'\n');
        assert_eq!(payload_to_json(&with_nl).unwrap(), json);
        assert!(
            payload_to_json(b"{\"v\":")
                .unwrap_err()
                .contains("not valid JSON")
        );
    }

    #[test]
    fn a_truncated_file_is_a_data_error_naming_the_file() {
        let (pc, _) = pane_payloads();
        let dir = tempfile::TempDir::new().unwrap();
        let file = dir.path().join("cut.bin");
        std::fs::write(&file, &pc[..pc.len() / 2]).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(decode(Some(&file), &mut out, &mut err), exit::DATA);
        let err = String::from_utf8(err).unwrap();
        assert!(
            err.contains("cut.bin") && err.contains("truncated pane"),
            "{err}"
        );
        assert!(out.is_empty());
    }

    #[test]
    fn a_missing_file_is_a_failure_naming_it() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = decode(Some(Path::new("/nonexistent/x.bin")), &mut out, &mut err);
        assert_eq!(code, exit::FAILURE);
        assert!(
            String::from_utf8(err)
                .unwrap()
                .contains("/nonexistent/x.bin")
        );
    }
}
