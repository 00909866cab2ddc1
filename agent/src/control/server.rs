//! The control socket: one task accepting connections, one task per connection; each
//! connection carries one request line and its response line(s) (`docs/control.md`).
//!
//! The socket file is created with mode 0660 (owner and group: the `weir` user and the
//! technicians in its group) inside the runtime directory (0750 under systemd). A socket
//! file left by a killed daemon is removed at start; one a live daemon answers on is not
//! (a second `weir run` with the same config is refused). The file is removed at exit.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use super::hub::Hub;
use super::tap::about_sensor;
use super::{MAX_REQUEST, Request, error_response, parse_request};

/// How long a client has to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the control socket cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Another daemon answers on the socket.
    #[error("another weir answers on {0} (give each instance its own [agent] runtime_dir)")]
    InUse(PathBuf),
    /// The directory or socket cannot be created.
    #[error("cannot create the control socket {path}: {source} (check [agent] runtime_dir)")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The bound socket; removes its file when dropped.
#[derive(Debug)]
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl ControlSocket {
    /// Binds `path` (see the module docs for a stale file and for permissions).
    pub fn bind(path: &Path) -> Result<Self, ServerError> {
        let io = |source| ServerError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        if std::fs::symlink_metadata(path).is_ok() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ServerError::InUse(path.to_path_buf()));
            }
            std::fs::remove_file(path).map_err(io)?;
        }
        let listener = UnixListener::bind(path).map_err(io)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io)?;
        Ok(Self {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Serves requests until `stop`; the socket file goes when this returns.
    pub async fn serve(self, hub: Arc<Hub>, stop: CancellationToken) {
        loop {
            let stream = tokio::select! {
                _ = stop.cancelled() => return,
                r = self.listener.accept() => match r {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "control socket accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let (hub, stop) = (hub.clone(), stop.clone());
            tokio::spawn(async move {
                if let Err(e) = connection(stream, &hub, &stop).await {
                    tracing::debug!(error = %e, "control connection ended");
                }
            });
        }
    }
}

async fn write_line(w: &mut (impl AsyncWriteExt + Unpin), v: &Value) -> std::io::Result<()> {
    let mut line = v.to_string();
    line.push('\n');
    w.write_all(line.as_bytes()).await
}

async fn connection(
    stream: UnixStream,
    hub: &Hub,
    stop: &CancellationToken,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read.take(MAX_REQUEST as u64 + 1));
    let mut line = String::new();
    match tokio::time::timeout(REQUEST_TIMEOUT, read.read_line(&mut line)).await {
        Ok(r) => r?,
        Err(_) => return write_line(&mut write, &error_response("no request within 5 s")).await,
    };
    let request = match parse_request(&line) {
        Ok(r) => r,
        Err(e) => return write_line(&mut write, &error_response(&e.to_string())).await,
    };
    tracing::debug!(?request, "control request");
    match request {
        Request::Status => {
            let status = hub.status().await;
            write_line(&mut write, &json!({"ok": true, "status": status})).await
        }
        Request::Metrics => {
            let text = super::prom::render(&hub.status().await) + &super::prom::process_text();
            write_line(&mut write, &json!({"ok": true, "text": text})).await
        }
        Request::LogLevel { filter: None } => {
            let v = json!({"ok": true, "filter": hub.log.current(), "target": hub.log.target});
            write_line(&mut write, &v).await
        }
        Request::LogLevel { filter: Some(f) } => match hub.log.set(&f) {
            Ok(old) => {
                tracing::info!(old = %old, new = %f, "log filter changed");
                write_line(&mut write, &json!({"ok": true, "old": old, "new": f})).await
            }
            Err(e) => write_line(&mut write, &error_response(&e)).await,
        },
        Request::Tail { kinds, sensor } => {
            let mut sub = hub.tap.subscribe();
            write_line(&mut write, &json!({"ok": true})).await?;
            let mut buf = [0u8; 64];
            let mut reader = read.into_inner();
            loop {
                use tokio::sync::broadcast::error::RecvError;
                let event = tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    // The client hung up (or sent something: the protocol has no more requests).
                    _ = reader.read(&mut buf) => return Ok(()),
                    e = sub.rx.recv() => e,
                };
                let line = match event {
                    Ok(e) => {
                        if !kinds.is_empty() && !kinds.contains(&e.kind()) {
                            continue;
                        }
                        let v = e.to_json();
                        if sensor.as_deref().is_some_and(|s| !about_sensor(&v, s)) {
                            continue;
                        }
                        v
                    }
                    Err(RecvError::Lagged(n)) => json!({"missed": n}),
                    Err(RecvError::Closed) => return Ok(()),
                };
                write_line(&mut write, &line).await?;
            }
        }
    }
}
