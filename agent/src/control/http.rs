//! The Prometheus endpoint (`[metrics] listen`): a minimal HTTP/1.1 server answering
//! `GET /metrics` with the text of [`super::prom::render`] and closing the connection.
//! Nothing else is served; there is no authentication, so bind it to localhost (or a
//! firewalled management address). Off unless configured.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::hub::Hub;

/// Largest request head read; a scraper's is a few hundred bytes.
const MAX_HEAD: usize = 8192;

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /metrics` (query string ignored).
    Metrics,
    /// Another path: 404.
    NotFound,
    /// Another method: 405.
    MethodNotAllowed,
    /// Not HTTP: 400.
    Bad,
}

/// Routes a request by its first line.
pub fn route(head: &str) -> Route {
    let mut words = head.lines().next().unwrap_or("").split_whitespace();
    let (Some(method), Some(target), Some(version)) = (words.next(), words.next(), words.next())
    else {
        return Route::Bad;
    };
    if !version.starts_with("HTTP/1.") {
        return Route::Bad;
    }
    if method != "GET" {
        return Route::MethodNotAllowed;
    }
    match target.split('?').next() {
        Some("/metrics") => Route::Metrics,
        _ => Route::NotFound,
    }
}

/// The whole response for `status` and `body`.
pub fn response(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Serves until `stop`.
pub async fn serve(listener: TcpListener, hub: Arc<Hub>, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics endpoint accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let hub = hub.clone();
        tokio::spawn(async move {
            let r = tokio::time::timeout(Duration::from_secs(10), handle(stream, &hub)).await;
            if let Ok(Err(e)) = r {
                tracing::debug!(error = %e, "metrics request failed");
            }
        });
    }
}

async fn handle(mut stream: TcpStream, hub: &Hub) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let text = match route(&head) {
        Route::Metrics => response(
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            &(super::prom::render(&hub.status().await) + &super::prom::process_text()),
        ),
        Route::NotFound => response("404 Not Found", "text/plain", "try /metrics\n"),
        Route::MethodNotAllowed => response("405 Method Not Allowed", "text/plain", "GET only\n"),
        Route::Bad => response("400 Bad Request", "text/plain", "not HTTP/1.x\n"),
    };
    stream.write_all(text.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_metrics_is_served() {
        assert_eq!(
            route("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics
        );
        assert_eq!(route("GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Route::Metrics);
        assert_eq!(route("GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(
            route("POST /metrics HTTP/1.1\r\n\r\n"),
            Route::MethodNotAllowed
        );
        assert_eq!(route("hello"), Route::Bad);
        assert_eq!(route(""), Route::Bad);
    }

    #[test]
    fn a_response_carries_its_length_and_closes() {
        let r = response("200 OK", "text/plain", "abc");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("Content-Length: 3\r\n"), "{r}");
        assert!(r.ends_with("Connection: close\r\n\r\nabc"), "{r}");
    }
}
