//! The publishing side: one MQTT connection (so the broker keeps the stream's
//! order, which the expectations rely on), QoS 1, paced to a rate or as fast as
//! the connection takes them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, EventLoop, MqttOptions, QoS};
use weir_benches::workload::{Expect, GenReading, Kind, Workload};

/// A publishing connection to the broker at `port`.
pub struct Publisher {
    client: AsyncClient,
    /// Messages handed to the connection so far.
    pub sent: Arc<AtomicU64>,
}

impl Publisher {
    /// Connects as `client_id`; the connection is driven by a task of its own.
    pub fn connect(port: u16, client_id: &str) -> Self {
        let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30))
            .set_inflight(1000);
        let (client, ev) = AsyncClient::new(opts, 4096);
        tokio::spawn(drive(ev));
        Self {
            client,
            sent: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Publishes one reading under `prefix` and returns the wall time (ms) it was
    /// handed over.
    pub async fn send(&self, r: &GenReading, prefix: &str) -> anyhow::Result<f64> {
        let at = crate::now_ms_f();
        self.client
            .publish(r.topic(prefix), QoS::AtLeastOnce, false, r.payload())
            .await?;
        self.sent.fetch_add(1, Relaxed);
        Ok(at)
    }

    /// Closes the connection (after what is queued has gone out).
    pub async fn close(self) {
        let _ = self.client.disconnect().await;
    }
}

async fn drive(mut ev: EventLoop) {
    loop {
        if ev.poll().await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// What a publishing phase did.
pub struct Phase {
    /// Readings published.
    pub count: u64,
    /// Wall time of the first and the last publish, ms.
    pub first_ms: f64,
    /// See `first_ms`.
    pub last_ms: f64,
    /// Publish time of each anomaly: (key, ts) -> ms.
    pub anomalies: HashMap<(u32, i64), f64>,
    /// Publish time of the reading that moved each window's key's watermark past
    /// the window's end: (key, window start) -> ms.
    pub closed: HashMap<(u32, i64), f64>,
    /// (wall ms, published so far), every 200 ms.
    pub progress: Vec<(f64, u64)>,
}

/// Publishes `w`'s stream under `prefix` for `duration` at `rate` readings per
/// second (0: as fast as possible), feeding `expect` when given.
pub async fn run(
    p: &Publisher,
    w: &mut Workload,
    mut expect: Option<&mut Expect>,
    prefix: &str,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<Phase> {
    let start = Instant::now();
    let mut ph = Phase {
        count: 0,
        first_ms: crate::now_ms_f(),
        last_ms: 0.0,
        anomalies: HashMap::new(),
        closed: HashMap::new(),
        progress: Vec::new(),
    };
    let mut next_progress = start;
    loop {
        let now = Instant::now();
        let elapsed = now - start;
        if elapsed >= duration {
            break;
        }
        if now >= next_progress {
            ph.progress.push((crate::now_ms_f(), ph.count));
            next_progress += Duration::from_millis(200);
        }
        let due = if rate > 0.0 {
            (elapsed.as_secs_f64() * rate) as u64
        } else {
            ph.count + 256
        };
        while ph.count < due {
            let r = w.next(weir::reading::now_ms());
            let at = p.send(&r, prefix).await?;
            if r.kind == Kind::Anomaly {
                ph.anomalies.insert((r.key, r.ts), at);
            }
            if let Some(e) = expect.as_deref_mut() {
                for start in e.observe(&r) {
                    ph.closed.insert((r.key, start), at);
                }
            }
            ph.count += 1;
            ph.last_ms = at;
        }
        if rate > 0.0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    ph.progress.push((crate::now_ms_f(), ph.count));
    Ok(ph)
}
