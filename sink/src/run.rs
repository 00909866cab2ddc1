//! The sink's two tasks: the MQTT event loop, and the writer that batches, commits and only
//! then acknowledges.
//!
//! Invariants:
//! - A message's PUBACK is sent only after the transaction holding its row committed. A sink
//!   killed at any point loses nothing: what it had not acknowledged, the broker redelivers
//!   (to it when it comes back under the same client id, its session being persistent).
//! - A PUBACK is sent only on the connection the message came on. After a reconnect the broker
//!   resends every unacknowledged message under its original packet id; acknowledging the old
//!   copy on the new connection could acknowledge a different message that reuses the id.
//!   So each delivery carries the connection's epoch, and one from an older epoch is written
//!   but not acknowledged (its redelivery is written again, changing nothing, and acknowledged).
//!   rumqttc itself drops PUBACKs still queued when a connection fails (its `clean`), and
//!   the event loop drops the packets rumqttc had read but not yet handed over.
//! - The channel between the tasks holds `batch` deliveries; when it is full the event loop
//!   stops reading the socket and the broker holds the rest. The writer never waits to queue
//!   a PUBACK (the request channel is far larger than what can be unacknowledged), so the two
//!   tasks cannot wait on each other.
//! - A message that cannot be read, or whose row the database refuses, becomes a row in
//!   `rejects` and is acknowledged like the others: it never blocks the rest.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS, SubscribeReasonCode,
};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::decode::{Reject, decode};
use crate::store::{Item, Store, StoreError, Written};

/// How the sink runs (the command line, `weir-sink --help`).
#[derive(Clone, Debug)]
pub struct Options {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// MQTT client id: unique per sink process and the same across its restarts.
    pub client_id: String,
    /// Optional MQTT user name and password.
    pub credentials: Option<(String, String)>,
    /// Topic filters, e.g. `weir/+/#`.
    pub topics: Vec<String>,
    /// Shared-subscription group (`$share/<group>/<filter>`); `None` subscribes plainly.
    pub group: Option<String>,
    /// PostgreSQL connection string (`host=... user=... dbname=...` or a `postgres://` URL).
    pub database: String,
    /// Most messages in one transaction.
    pub batch: usize,
    /// MQTT keep-alive.
    pub keep_alive: Duration,
}

impl Options {
    /// The filters as subscribed.
    pub fn filters(&self) -> Vec<String> {
        self.topics
            .iter()
            .map(|t| match &self.group {
                Some(g) => format!("$share/{g}/{t}"),
                None => t.clone(),
            })
            .collect()
    }
}

struct Delivery {
    publish: Publish,
    epoch: u64,
}

/// Runs until `stop` turns true; then finishes the batch in hand, acknowledges it and
/// disconnects. Returns an error only for what retrying cannot fix (a newer schema).
pub async fn run(opts: Options, mut stop: watch::Receiver<bool>) -> Result<(), crate::Error> {
    let Some(mut store) = connect_store(&opts.database, &mut stop).await? else {
        return Ok(());
    };

    let mut mqtt = MqttOptions::new(&opts.client_id, &opts.host, opts.port);
    mqtt.set_clean_session(false)
        .set_manual_acks(true)
        .set_keep_alive(opts.keep_alive)
        .set_max_packet_size(256 * 1024, 256 * 1024);
    if let Some((u, p)) = &opts.credentials {
        mqtt.set_credentials(u, p);
    }
    // The writer must never wait to queue a PUBACK: the event loop may itself be waiting for
    // room in the deliveries channel, which only the writer empties (a deadlock seen under
    // load after a broker restart with a capacity of 64). Acks queued are at most what the
    // broker has in flight to us plus one batch; this capacity is a limit, not an allocation.
    let (client, eventloop) = AsyncClient::new(mqtt, (opts.batch * 8).max(65_536));
    let (tx, mut rx) = mpsc::channel(opts.batch.max(1));
    let epoch = Arc::new(AtomicU64::new(0));
    let events = tokio::spawn(event_loop(
        eventloop,
        client.clone(),
        opts.filters(),
        tx,
        epoch.clone(),
    ));

    let mut totals = Written::default();
    let mut stale = 0u64;
    let mut last_report = Instant::now();
    let mut batch: Vec<Delivery> = Vec::with_capacity(opts.batch);
    loop {
        let first = tokio::select! {
            d = rx.recv() => d,
            _ = stop.changed() => None,
        };
        let Some(first) = first else { break };
        batch.push(first);
        while batch.len() < opts.batch {
            match rx.try_recv() {
                Ok(d) => batch.push(d),
                Err(_) => break,
            }
        }
        let items: Vec<Item> = batch.iter().map(|d| item(&d.publish)).collect();
        match write(&mut store, &opts.database, &items, &mut stop).await? {
            Some(w) => totals += w,
            // Stopped while the database was away: nothing acknowledged, all redelivered.
            None => break,
        }
        let now_epoch = epoch.load(Ordering::SeqCst);
        for d in batch.drain(..) {
            if d.epoch != now_epoch {
                stale += 1;
                continue;
            }
            if client.ack(&d.publish).await.is_err() {
                // The event loop is gone: nothing more can be acknowledged.
                break;
            }
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            info!(
                applied = totals.applied,
                unchanged = totals.unchanged,
                not_acked_reconnect = stale,
                "rows written"
            );
            last_report = Instant::now();
        }
    }
    info!(
        applied = totals.applied,
        unchanged = totals.unchanged,
        "stopping: last batch committed and acknowledged"
    );
    drop(rx);
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), events).await;
    Ok(())
}

fn item(p: &Publish) -> Item {
    let topic = p.topic.clone();
    match decode(&topic, &p.payload) {
        Ok(r) => Item::Record(r),
        Err(why) => {
            warn!(topic = %topic, reason = why.reason, detail = %why.detail, "message rejected");
            Item::Reject {
                topic,
                payload: p.payload.to_vec(),
                why,
            }
        }
    }
}

/// Writes one batch, retrying with capped exponential backoff and jitter until it commits.
/// `None` if asked to stop meanwhile.
async fn write(
    store: &mut Store,
    database: &str,
    items: &[Item],
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<Written>, crate::Error> {
    let mut backoff = Backoff::new();
    loop {
        if store.is_closed() {
            match connect_store(database, stop).await? {
                Some(s) => *store = s,
                None => return Ok(None),
            }
        }
        match store.write(items).await {
            Ok(w) => return Ok(Some(w)),
            Err(StoreError::Refused(e)) => {
                warn!(error = %e, rows = items.len(), "batch refused; writing its rows one by one");
                return one_by_one(store, items).await.map(Some);
            }
            Err(e) => {
                warn!(error = %e, rows = items.len(), "batch not written; retrying");
                if !backoff.sleep(stop).await {
                    return Ok(None);
                }
            }
        }
    }
}

/// Each row in its own transaction; a row the database refuses becomes a reject.
async fn one_by_one(store: &mut Store, items: &[Item]) -> Result<Written, crate::Error> {
    let mut total = Written::default();
    for it in items {
        match store.write(std::slice::from_ref(it)).await {
            Ok(w) => total += w,
            Err(StoreError::Refused(e)) => {
                let (topic, payload) = match it {
                    Item::Reject { topic, payload, .. } => (topic.clone(), payload.clone()),
                    Item::Record(r) => (format!("({})", r.kind()), format!("{r:?}").into_bytes()),
                };
                error!(topic = %topic, error = %e, "row refused by the database; kept in rejects");
                let rej = Item::Reject {
                    topic,
                    payload,
                    why: Reject {
                        reason: "db_error",
                        detail: e.to_string(),
                    },
                };
                total += store.write(std::slice::from_ref(&rej)).await.map_err(|e| {
                    crate::Error::Store(format!("writing a reject row failed: {e}"))
                })?;
            }
            Err(e) => return Err(crate::Error::Store(e.to_string())),
        }
    }
    Ok(total)
}

async fn connect_store(
    database: &str,
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<Store>, crate::Error> {
    let mut backoff = Backoff::new();
    loop {
        match Store::connect(database).await {
            Ok((s, before)) => {
                info!(
                    schema_version = crate::schema::latest(),
                    was = before,
                    "connected to PostgreSQL"
                );
                return Ok(Some(s));
            }
            Err(crate::Error::Schema(e @ crate::schema::SchemaError::Newer { .. })) => {
                return Err(crate::Error::Schema(e));
            }
            Err(e) => {
                warn!(error = %e, "cannot reach PostgreSQL; retrying");
                if !backoff.sleep(stop).await {
                    return Ok(None);
                }
            }
        }
    }
}

async fn event_loop(
    mut eventloop: EventLoop,
    client: AsyncClient,
    filters: Vec<String>,
    tx: mpsc::Sender<Delivery>,
    epoch: Arc<AtomicU64>,
) {
    let mut backoff = Backoff::new();
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff = Backoff::new();
                info!(session_present = ack.session_present, filters = ?filters, "connected to the broker");
                for f in &filters {
                    if let Err(e) = client.subscribe(f, QoS::AtLeastOnce).await {
                        warn!(filter = %f, error = %e, "subscribe not queued");
                    }
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, SubscribeReasonCode::Failure))
                {
                    error!(filters = ?filters, "the broker refused a subscription");
                } else {
                    info!("subscribed");
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let d = Delivery {
                    publish: p,
                    epoch: epoch.load(Ordering::SeqCst),
                };
                // The writer has stopped: the message stays unacknowledged, for redelivery.
                let _ = tx.send(d).await;
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(e) => {
                epoch.fetch_add(1, Ordering::SeqCst);
                // rumqttc reads up to ten packets at a time and keeps the ones not yet
                // returned across a reconnect: after the next CONNACK they would come out
                // tagged with the new epoch and be acknowledged on the new connection under
                // their old packet ids, acknowledging other messages (seen after a broker
                // restart: messages lost). Drop them; the broker resends them.
                eventloop.state.events.clear();
                if tx.is_closed() {
                    return;
                }
                warn!(error = %e, "broker connection lost; reconnecting");
                backoff.pause().await;
            }
        }
    }
}

/// Capped exponential backoff with full jitter: 100 ms doubling to 10 s.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self {
            next: Duration::from_millis(100),
        }
    }

    fn step(&mut self) -> Duration {
        let d = self.next.mul_f64(0.5 + fastrand::f64() / 2.0);
        self.next = (self.next * 2).min(Duration::from_secs(10));
        d
    }

    async fn pause(&mut self) {
        tokio::time::sleep(self.step()).await;
    }

    /// Sleeps; false if asked to stop meanwhile.
    async fn sleep(&mut self, stop: &mut watch::Receiver<bool>) -> bool {
        let d = self.step();
        tokio::select! {
            _ = tokio::time::sleep(d) => !*stop.borrow(),
            _ = stop.changed() => false,
        }
    }
}
