//! The CLI's side of the control socket: blocking (the CLI has no runtime), one
//! connection per request.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::Request;

/// How long a one-shot request may take (a status waits up to 2 s for each of the
/// engine and the outbox).
const TIMEOUT: Duration = Duration::from_secs(10);

/// Why the daemon could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket: the daemon is not running (with this config).
    #[error("weir is not running (nothing answers on {0})")]
    NotRunning(PathBuf),
    /// The socket exists but this user may not use it.
    #[error(
        "permission denied on {0}: run as root or as a member of the weir group (sudo usermod -aG weir $USER, then log in again)"
    )]
    Permission(PathBuf),
    /// The connection failed midway.
    #[error("control socket {path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The daemon refused the request or answered something unexpected.
    #[error("{0}")]
    Refused(String),
}

/// A connection that carries one request.
#[derive(Debug)]
pub struct Client {
    path: PathBuf,
    reader: BufReader<UnixStream>,
}

impl Client {
    /// Connects to the daemon's socket.
    pub fn connect(path: &Path) -> Result<Self, ClientError> {
        use std::io::ErrorKind::*;
        let stream = UnixStream::connect(path).map_err(|e| match e.kind() {
            NotFound | ConnectionRefused => ClientError::NotRunning(path.to_path_buf()),
            PermissionDenied => ClientError::Permission(path.to_path_buf()),
            _ => ClientError::Io {
                path: path.to_path_buf(),
                source: e,
            },
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            reader: BufReader::new(stream),
        })
    }

    fn io(&self, source: std::io::Error) -> ClientError {
        ClientError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn send(&mut self, req: &Request) -> Result<(), ClientError> {
        let mut line =
            serde_json::to_string(req).map_err(|e| ClientError::Refused(e.to_string()))?;
        line.push('\n');
        let s = self.reader.get_mut();
        s.write_all(line.as_bytes()).map_err(|e| self.io(e))
    }

    /// Reads one response line; `None` at the end of the stream.
    pub fn next_line(&mut self) -> Result<Option<Value>, ClientError> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).map_err(|e| self.io(e))?;
        if n == 0 {
            return Ok(None);
        }
        serde_json::from_str(&line)
            .map(Some)
            .map_err(|e| ClientError::Refused(format!("unreadable answer from the daemon: {e}")))
    }

    fn checked(v: Option<Value>) -> Result<Value, ClientError> {
        let v = v.ok_or_else(|| ClientError::Refused("the daemon closed the connection".into()))?;
        if v["ok"] == true {
            Ok(v)
        } else {
            Err(ClientError::Refused(
                v["error"].as_str().unwrap_or("request refused").to_string(),
            ))
        }
    }

    /// Sends `req` and returns its single response (`{"ok": true, ...}`).
    pub fn request(mut self, req: &Request) -> Result<Value, ClientError> {
        self.reader
            .get_ref()
            .set_read_timeout(Some(TIMEOUT))
            .map_err(|e| self.io(e))?;
        self.send(req)?;
        let line = self.next_line()?;
        Self::checked(line)
    }

    /// Gives up a read after `d` (`None`: wait for ever); a read that gives up fails with
    /// an I/O error of kind `WouldBlock` or `TimedOut`.
    pub fn set_read_timeout(&self, d: Option<Duration>) -> Result<(), ClientError> {
        self.reader
            .get_ref()
            .set_read_timeout(d)
            .map_err(|e| self.io(e))
    }

    /// Starts a tail: after this, [`Client::next_line`] returns the events until the
    /// daemon stops.
    pub fn tail(&mut self, req: &Request) -> Result<(), ClientError> {
        self.send(req)?;
        let line = self.next_line()?;
        Self::checked(line).map(drop)
    }
}
