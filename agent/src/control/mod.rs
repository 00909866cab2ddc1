//! The daemon's control interface: a Unix socket at [`crate::config::Config::control_socket`]
//! serving status, metrics, the live tail and the log level to the `weir` CLI
//! (protocol in `docs/control.md`), and the optional Prometheus HTTP endpoint.
//!
//! - [`hub`]: what outlives a SIGHUP reload (process start, log level, tail tap) and the
//!   running pipeline's live state, from which the status document is built.
//! - [`server`] / [`http`]: the socket and HTTP tasks; [`client`]: the CLI's side.
//! - Pure parts: [`health`] (is it healthy, and why not), [`render`] (the human table),
//!   [`prom`] (Prometheus text), [`offline`] (status from the state database when the
//!   daemon is down), and the request parsing here.

pub mod client;
pub mod health;
pub mod http;
pub mod hub;
pub mod logging;
pub mod offline;
pub mod prom;
pub mod render;
pub mod server;
pub mod tap;

use serde::{Deserialize, Serialize};

/// The longest request line the server reads; longer ones are refused.
pub const MAX_REQUEST: usize = 4096;

/// One request: a single JSON line such as `{"cmd":"status"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The status document (one response line).
    Status,
    /// The status counters and gauges in Prometheus text format (one response line).
    Metrics,
    /// The live stream: an `{"ok":true}` line, then one line per event until the
    /// client hangs up.
    Tail {
        /// Which streams; all when empty.
        #[serde(default)]
        kinds: Vec<tap::Kind>,
        /// Only events of this sensor.
        #[serde(default)]
        sensor: Option<String>,
    },
    /// Reads the log filter, or replaces it when `filter` is given.
    LogLevel {
        /// The new filter, e.g. `"info,weir=debug"`.
        #[serde(default)]
        filter: Option<String>,
    },
}

/// Why a request line was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    /// Longer than [`MAX_REQUEST`].
    #[error("request longer than {MAX_REQUEST} bytes")]
    TooLong,
    /// Not one of the requests of `docs/control.md`.
    #[error("bad request: {0}")]
    Bad(String),
}

/// Parses one request line (without or with its newline).
pub fn parse_request(line: &str) -> Result<Request, RequestError> {
    if line.len() > MAX_REQUEST {
        return Err(RequestError::TooLong);
    }
    serde_json::from_str(line.trim()).map_err(|e| RequestError::Bad(e.to_string()))
}

/// An error response line: `{"ok":false,"error":...}`.
pub fn error_response(message: &str) -> serde_json::Value {
    serde_json::json!({"ok": false, "error": message})
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn each_request_parses_from_its_documented_line() {
        assert_eq!(parse_request(r#"{"cmd":"status"}"#), Ok(Request::Status));
        assert_eq!(
            parse_request("{\"cmd\":\"metrics\"}\n"),
            Ok(Request::Metrics)
        );
        assert_eq!(
            parse_request(r#"{"cmd":"tail","kinds":["alerts","readings"],"sensor":"a"}"#),
            Ok(Request::Tail {
                kinds: vec![tap::Kind::Alerts, tap::Kind::Readings],
                sensor: Some("a".into())
            })
        );
        assert_eq!(
            parse_request(r#"{"cmd":"tail"}"#),
            Ok(Request::Tail {
                kinds: vec![],
                sensor: None
            })
        );
        assert_eq!(
            parse_request(r#"{"cmd":"log_level","filter":"debug"}"#),
            Ok(Request::LogLevel {
                filter: Some("debug".into())
            })
        );
    }

    #[test]
    fn unknown_commands_fields_and_kinds_are_refused() {
        for bad in [
            r#"{"cmd":"reboot"}"#,
            r#"{"cmd":"log_level","level":"debug"}"#,
            r#"{"cmd":"tail","kinds":["everything"]}"#,
            "status",
            "",
        ] {
            assert!(
                matches!(parse_request(bad), Err(RequestError::Bad(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_overlong_line_is_refused_before_parsing() {
        let line = format!(r#"{{"cmd":"status","pad":"{}"}}"#, "x".repeat(MAX_REQUEST));
        assert_eq!(parse_request(&line), Err(RequestError::TooLong));
    }

    #[test]
    fn requests_round_trip_through_their_json() {
        let r = Request::LogLevel { filter: None };
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(line, r#"{"cmd":"log_level","filter":null}"#);
        assert_eq!(parse_request(&line), Ok(r));
    }
}
