//! The upstream side: a persistent QoS 1 subscriber to everything Weir publishes,
//! recording what arrived and when. Duplicates (at-least-once) are recognised by
//! `msg_id` and counted, never counted twice.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use weir_benches::workload::key_of;

/// What arrived upstream.
#[derive(Default)]
pub struct Upstream {
    /// Per (key, window start): (highest revision, its count).
    pub panes: HashMap<(u32, i64), (u64, u64)>,
    /// Per on-time pane: its window, receive time (ms) minus window end (on the
    /// key's clock), and the receive time.
    pub pane_recv: Vec<((u32, i64), f64, f64)>,
    /// Threshold alerts raised: (key, raised_ts) -> receive time, ms.
    pub alerts: HashMap<(u32, i64), f64>,
    /// Other alerts (z-score raised and cleared, threshold cleared).
    pub other_alerts: u64,
    /// Messages on `late`.
    pub late: u64,
    /// Messages on `deadletter`.
    pub deadletter: u64,
    /// Distinct messages.
    pub messages: u64,
    /// Redelivered copies (same `msg_id`).
    pub duplicates: u64,
    /// Payloads that were not the JSON expected.
    pub unparsed: u64,
    /// The latest status payload and its receive time.
    pub status: Option<(Value, f64)>,
    /// Every status message's (emitted_at, counters.mqtt_messages).
    pub status_history: Vec<(f64, u64)>,
    /// Time of the last distinct non-status message.
    pub last_msg_ms: f64,
    seen: HashSet<u64>,
}

impl Upstream {
    fn record(&mut self, topic: &str, payload: &[u8], now: f64) {
        let Ok(v) = serde_json::from_slice::<Value>(payload) else {
            self.unparsed += 1;
            return;
        };
        if topic.ends_with("/status") {
            if let Some(m) = v["counters"]["mqtt_messages"].as_u64() {
                let at = v["emitted_at"].as_f64().unwrap_or(now);
                self.status_history.push((at, m));
                self.status = Some((v, now));
            }
            return;
        }
        let mut h = DefaultHasher::new();
        v["msg_id"].as_str().unwrap_or_default().hash(&mut h);
        if !self.seen.insert(h.finish()) {
            self.duplicates += 1;
            return;
        }
        self.messages += 1;
        self.last_msg_ms = now;
        let key = v["sensor"].as_str().and_then(key_of);
        match (v["type"].as_str(), key) {
            (Some("pane"), Some(k)) => {
                let (Some(start), Some(rev), Some(count)) = (
                    v["window_start"].as_i64(),
                    v["revision"].as_u64(),
                    v["count"].as_u64(),
                ) else {
                    self.unparsed += 1;
                    return;
                };
                let e = self.panes.entry((k, start)).or_insert((rev, count));
                if rev >= e.0 {
                    *e = (rev, count);
                }
                if rev == 0 {
                    let end = v["window_end"].as_f64().unwrap_or(0.0);
                    self.pane_recv.push(((k, start), now - end, now));
                }
            }
            (Some("alert"), Some(k)) => {
                let raised = v["state"] == "raised" && v["detector"] == "hot";
                match v["raised_ts"].as_i64() {
                    Some(ts) if raised => {
                        self.alerts.insert((k, ts), now);
                    }
                    _ => self.other_alerts += 1,
                }
            }
            (Some("late"), _) => self.late += 1,
            (Some("deadletter"), _) => self.deadletter += 1,
            _ => self.unparsed += 1,
        }
    }
}

/// Subscribes to `filter` on the broker at `port` with a persistent session
/// `client_id` (so a broker restart keeps what was queued for it), reconnecting
/// every 200 ms while the broker is down; returns once subscribed (or after 10 s).
pub async fn start(port: u16, client_id: &str, filter: &str) -> Arc<Mutex<Upstream>> {
    let up = Arc::new(Mutex::new(Upstream::default()));
    let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
    opts.set_clean_session(false)
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut ev) = AsyncClient::new(opts, 1024);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let mut ready_tx = Some(ready_tx);
    let filter = filter.to_string();
    let u = up.clone();
    tokio::spawn(async move {
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.subscribe(filter.clone(), QoS::AtLeastOnce).await;
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(t) = ready_tx.take() {
                        let _ = t.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let now = crate::now_ms_f();
                    u.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .record(&p.topic, &p.payload, now);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    // A broker that never answers shows up later as a run with nothing upstream.
    let _ = tokio::time::timeout(Duration::from_secs(10), ready_rx).await;
    up
}

/// Creates the persistent session `client_id` subscribed to `filter` and leaves,
/// so the broker queues matching messages for it from now on (Weir's ingest
/// session: nothing published before Weir connects is lost).
pub async fn create_session(port: u16, client_id: &str, filter: &str) -> anyhow::Result<()> {
    let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
    opts.set_clean_session(false);
    let (client, mut ev) = AsyncClient::new(opts, 16);
    client.subscribe(filter, QoS::AtLeastOnce).await?;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ev.poll()).await {
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => break,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => anyhow::bail!("creating the session {client_id}: {e}"),
            Err(_) => anyhow::bail!("creating the session {client_id}: timeout"),
        }
    }
    client.disconnect().await?;
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while ev.poll().await.is_ok() {}
    })
    .await;
    Ok(())
}
