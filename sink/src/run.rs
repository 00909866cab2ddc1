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
//! - With a shared subscription, a second client, the guard (`<client-id>-guard`, a plain
//!   subscription on its own persistent session), feeds the same channel and the same writer;
//!   [`crate::guard::Gate`] decides, as each of its messages arrives, whether it is written or
//!   only acknowledged. Each delivery names the client that acknowledges it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS, SubscribeFilter,
    SubscribeReasonCode,
};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::decode::{Reject, decode};
use crate::guard::{self, Gate};
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
    /// With a group: run the guard session (`<client-id>-guard`) that covers the messages a
    /// broker restart hides from the group (docs/fleet.md). Ignored without a group.
    pub guard: bool,
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

/// Which of the sink's two MQTT clients a message came on (and is acknowledged on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// The client with the shared subscription.
    Main = 0,
    /// The guard: a plain subscription on its own persistent session.
    Guard = 1,
}

struct Delivery {
    publish: Publish,
    role: Role,
    /// The connection it came on (see the invariants).
    epoch: u64,
    /// Written, or only acknowledged (the guard's copy of what the group holds; a mark).
    write: bool,
}

/// One MQTT client: the handle that acknowledges, and its connection's epoch.
#[derive(Clone)]
struct Conn {
    client: AsyncClient,
    epoch: Arc<AtomicU64>,
}

impl Conn {
    fn new(opts: &Options, client_id: &str) -> (Self, EventLoop) {
        let mut mqtt = MqttOptions::new(client_id, &opts.host, opts.port);
        mqtt.set_clean_session(false)
            .set_manual_acks(true)
            .set_keep_alive(opts.keep_alive)
            .set_max_packet_size(256 * 1024, 256 * 1024);
        if let Some((u, p)) = &opts.credentials {
            mqtt.set_credentials(u, p);
        }
        // The writer must never wait to queue a PUBACK: the event loop may itself be waiting
        // for room in the deliveries channel, which only the writer empties (a deadlock seen
        // under load after a broker restart with a capacity of 64). Acks queued are at most
        // what the broker has in flight to us plus one batch; this capacity is a limit, not
        // an allocation.
        let (client, eventloop) = AsyncClient::new(mqtt, (opts.batch * 8).max(65_536));
        let conn = Self {
            client,
            epoch: Arc::new(AtomicU64::new(0)),
        };
        (conn, eventloop)
    }
}

/// What the guard's and the main client's event loops share.
#[derive(Clone)]
struct Guarded {
    gate: Arc<Mutex<Gate>>,
    /// The main client: marks go out on its connection.
    main: AsyncClient,
    /// This sink's mark topic.
    mark_topic: String,
}

/// Runs until `stop` turns true; then finishes the batch in hand, acknowledges it and
/// disconnects. Returns an error only for what retrying cannot fix (a newer schema).
pub async fn run(opts: Options, mut stop: watch::Receiver<bool>) -> Result<(), crate::Error> {
    let Some(mut store) = connect_store(&opts.database, &mut stop).await? else {
        return Ok(());
    };

    let (main, main_events) = Conn::new(&opts, &opts.client_id);
    let (tx, mut rx) = mpsc::channel(opts.batch.max(1));
    let guarded = (opts.guard && opts.group.is_some()).then(|| Guarded {
        gate: Arc::new(Mutex::new(Gate::default())),
        main: main.client.clone(),
        mark_topic: guard::mark_topic(&opts.client_id),
    });
    let mut conns = vec![main.clone()];
    let mut tasks = vec![tokio::spawn(event_loop(
        main_events,
        Role::Main,
        main.clone(),
        opts.filters(),
        tx.clone(),
        guarded.clone(),
    ))];
    if let Some(g) = &guarded {
        let (conn, events) = Conn::new(&opts, &format!("{}-guard", opts.client_id));
        let mut filters = opts.topics.clone();
        filters.push(g.mark_topic.clone());
        conns.push(conn.clone());
        tasks.push(tokio::spawn(event_loop(
            events,
            Role::Guard,
            conn,
            filters,
            tx,
            guarded.clone(),
        )));
        info!(client_id = %format!("{}-guard", opts.client_id), "guard session on");
    } else {
        drop(tx);
    }

    let mut totals = Written::default();
    let mut stale = 0u64;
    let mut guard_written = 0u64;
    let mut guard_skipped = 0u64;
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
        let items: Vec<Item> = batch
            .iter()
            .filter(|d| d.write)
            .map(|d| item(&d.publish))
            .collect();
        for d in batch.iter().filter(|d| d.role == Role::Guard) {
            *if d.write {
                &mut guard_written
            } else {
                &mut guard_skipped
            } += 1;
        }
        if !items.is_empty() {
            match write(&mut store, &opts.database, &items, &mut stop).await? {
                Some(w) => totals += w,
                // Stopped while the database was away: nothing acknowledged, all redelivered.
                None => break,
            }
        }
        for d in batch.drain(..) {
            let conn = &conns[d.role as usize];
            if d.epoch != conn.epoch.load(Ordering::SeqCst) {
                stale += 1;
                continue;
            }
            // An error: that event loop is gone, nothing more can be acknowledged on it.
            let _ = conn.client.ack(&d.publish).await;
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            info!(
                applied = totals.applied,
                unchanged = totals.unchanged,
                not_acked_reconnect = stale,
                guard_written,
                guard_skipped,
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
    for c in &conns {
        let _ = c.client.disconnect().await;
    }
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
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

/// Drives one client: subscribes on every CONNACK (a persistent session's subscriptions may
/// not have survived a broker restart: shared ones never do), feeds the writer, and tells the
/// gate about subscriptions, marks and lost connections.
async fn event_loop(
    mut eventloop: EventLoop,
    role: Role,
    conn: Conn,
    filters: Vec<String>,
    tx: mpsc::Sender<Delivery>,
    guarded: Option<Guarded>,
) {
    let mut backoff = Backoff::new();
    // For the logs: whether the guard was writing when it last received something.
    let mut guard_writing = true;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff = Backoff::new();
                info!(?role, session_present = ack.session_present, filters = ?filters, "connected to the broker");
                // One SUBSCRIBE for all filters: one SUBACK says they all exist.
                let subs = filters
                    .iter()
                    .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                if let Err(e) = conn.client.subscribe_many(subs).await {
                    warn!(?role, error = %e, "subscribe not queued");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, SubscribeReasonCode::Failure))
                {
                    error!(?role, filters = ?filters, "the broker refused a subscription");
                    continue;
                }
                info!(?role, "subscribed");
                if let Some(g) = &guarded {
                    let nonce = fastrand::u64(..);
                    let issued = g.gate.lock().ok().and_then(|mut gate| match role {
                        Role::Main => gate.main_subscribed(nonce),
                        Role::Guard => gate.guard_subscribed(nonce),
                    });
                    if let Some(n) = issued {
                        let (topic, payload) = (g.mark_topic.clone(), guard::mark_payload(n));
                        if let Err(e) = g
                            .main
                            .publish(topic, QoS::AtLeastOnce, false, payload)
                            .await
                        {
                            warn!(error = %e, "guard mark not queued");
                        }
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let write = match (&guarded, role) {
                    // Marks are never written; the guard's own may stop its writing.
                    _ if guard::is_mark(&p.topic) => {
                        if let (Some(g), Role::Guard) = (&guarded, role) {
                            let matched = p.topic == g.mark_topic
                                && guard::parse_mark(&p.payload).is_some_and(|n| {
                                    g.gate.lock().is_ok_and(|mut gate| gate.mark_received(n))
                                });
                            if matched && guard_writing {
                                guard_writing = false;
                                info!("guard: its mark came back; acknowledging without writing");
                            }
                        }
                        false
                    }
                    (Some(g), Role::Guard) => {
                        let writes = g.gate.lock().map_or(true, |gate| gate.guard_writes());
                        if writes && !guard_writing {
                            guard_writing = true;
                            info!("guard: writing (the group may be missing messages)");
                        }
                        writes
                    }
                    _ => true,
                };
                let d = Delivery {
                    publish: p,
                    role,
                    epoch: conn.epoch.load(Ordering::SeqCst),
                    write,
                };
                // The writer has stopped: the message stays unacknowledged, for redelivery.
                let _ = tx.send(d).await;
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(e) => {
                conn.epoch.fetch_add(1, Ordering::SeqCst);
                if let Some(Ok(mut gate)) = guarded.as_ref().map(|g| g.gate.lock()) {
                    match role {
                        Role::Main => gate.main_lost(),
                        Role::Guard => gate.guard_lost(),
                    }
                }
                // rumqttc reads up to ten packets at a time and keeps the ones not yet
                // returned across a reconnect: after the next CONNACK they would come out
                // tagged with the new epoch and be acknowledged on the new connection under
                // their old packet ids, acknowledging other messages (seen after a broker
                // restart: messages lost). Drop them; the broker resends them.
                eventloop.state.events.clear();
                if tx.is_closed() {
                    return;
                }
                warn!(?role, error = %e, "broker connection lost; reconnecting");
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
