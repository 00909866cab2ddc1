//! Delivery upstream: outbox rows out over MQTT QoS 1, each row deleted only
//! when the broker's PUBACK for that very row arrives.
//!
//! One task owns the connection's bookkeeping ([`inflight::Inflight`]) and is
//! the only publisher, so the ordered `Outgoing::Publish(pkid)` events can be
//! paired with rows. The rumqttc event loop runs in a task of its own and
//! forwards its events through a channel, so slow SQLite calls here never stall
//! the connection's keep-alive. Each connection gets a fresh client and event
//! loop with a clean session: rumqttc would otherwise replay the previous
//! session's unacknowledged publishes itself, out of our sight. Rows in flight
//! at a disconnect are simply pending again (at least once; every message has
//! an id for consumers to drop duplicates).

pub mod backoff;
pub mod inflight;
pub mod ratelimit;
pub mod tls;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, LastWill, MqttOptions,
    Outgoing, Packet, QoS, TlsConfiguration, Transport,
};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::UplinkConfig;
use crate::metrics::Counters;
use crate::outbox::{Class, OutboxError, OutboxHandle};
use crate::reading::now_ms;
use backoff::Backoff;
use inflight::{Inflight, Tag};
use ratelimit::RateLimit;

/// Largest packet we send or accept upstream. Our own payloads are far smaller
/// (dead letters are truncated); this only keeps rumqttc's 10 KiB default from
/// refusing a big pane of a future version.
const MAX_PACKET: usize = 256 * 1024;

/// The state of the upstream link, for status and the CLI.
#[derive(Debug, Default)]
pub struct LinkStatus {
    /// Connected and CONNACKed.
    pub connected: AtomicBool,
    /// Wall-clock ms of the last PUBACK, 0 if none yet.
    pub last_puback_ms: AtomicI64,
    /// Wall-clock ms when the last connection ended, 0 if none has yet (`weir status`
    /// tells how long the link has been down).
    pub lost_ms: AtomicI64,
    /// The last connection error, if any.
    pub last_error: Mutex<Option<String>>,
    /// Wall-clock ms of the last connection error, 0 if none.
    pub last_error_ms: AtomicI64,
    /// Wall-clock ms when the current connection came up (CONNACK), 0 if none has yet.
    pub connected_ms: AtomicI64,
    /// Why rows cannot be read from the outbox for delivery (a damaged file), while
    /// that lasts: `weir status` reports `outbox_damaged`.
    pub outbox_error: Mutex<Option<String>>,
}

impl LinkStatus {
    /// Takes over what an earlier pipeline's link learnt that stays true across a reload:
    /// the last PUBACK and the last error (a reload reconnects, it does not forget them).
    pub fn carry_over(&self, earlier: &LinkStatus) {
        self.last_puback_ms
            .fetch_max(earlier.last_puback_ms.load(Relaxed), Relaxed);
        if self.last_error_ms.load(Relaxed) == 0 {
            let e = earlier
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
            self.last_error_ms
                .store(earlier.last_error_ms.load(Relaxed), Relaxed);
        }
    }

    /// Records that rows cannot be read; true when this starts an episode (logged once).
    fn outbox_unreadable(&self, e: &OutboxError) -> bool {
        let mut slot = self.outbox_error.lock().unwrap_or_else(|p| p.into_inner());
        slot.replace(e.to_string()).is_none()
    }

    /// Records that rows were read; true when this ends an episode.
    fn outbox_readable(&self) -> bool {
        let mut slot = self.outbox_error.lock().unwrap_or_else(|p| p.into_inner());
        slot.take().is_some()
    }
}

/// Builds the retained `online` status payload when it is due.
pub type StatusFn = Box<dyn Fn() -> Vec<u8> + Send + Sync>;

/// The uplink task's inputs.
pub struct Uplink {
    /// Broker and timing settings.
    pub cfg: UplinkConfig,
    /// `<prefix>/status`.
    pub status_topic: String,
    /// The last will and the clean-shutdown status.
    pub offline_payload: Vec<u8>,
    /// Builds the online status.
    pub status: StatusFn,
    /// Where rows come from and are deleted.
    pub outbox: OutboxHandle,
    /// Counters.
    pub counters: Arc<Counters>,
    /// Link state, shared with status.
    pub link: Arc<LinkStatus>,
    /// Signalled by the engine after each outbox insert.
    pub new_rows: Arc<Notify>,
    /// Signalled here after rows are deleted: an insert held on a full disk
    /// may succeed now.
    pub space_freed: Arc<Notify>,
    /// Rows whose topic starts with one of these are published retained (Home
    /// Assistant's discovery configs and entity states); every other row is not.
    pub retained: Vec<String>,
}

enum End {
    /// The drain finished (or its grace ran out) on a live connection.
    Drained,
    /// The connection failed; reconnect after a backoff.
    Lost(String),
    /// The outbox is gone: nothing more can be delivered.
    OutboxClosed(String),
}

impl Uplink {
    /// Delivers until `drain` is cancelled and then either the outbox is empty or
    /// `grace` has passed. Unacknowledged rows stay in the outbox for next time.
    pub async fn run(self, drain: CancellationToken, grace: Duration) {
        let mut backoff = Backoff::new(self.cfg.reconnect_min, self.cfg.reconnect_max);
        let burst = u32::from(self.cfg.max_inflight);
        let mut limit = RateLimit::new(self.cfg.max_rate, burst, Instant::now().into_std());
        let mut deadline: Option<Instant> = None;
        loop {
            if deadline.is_none() && drain.is_cancelled() {
                deadline = Some(Instant::now() + grace);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                tracing::warn!(
                    "shutdown grace over while the upstream broker is unreachable; the backlog stays in the outbox"
                );
                break;
            }
            let (client, mut events, event_loop) = self.connect();
            let end = self
                .session(
                    &client,
                    &mut events,
                    &drain,
                    (&mut deadline, grace),
                    &mut backoff,
                    &mut limit,
                )
                .await;
            if self.link.connected.swap(false, Relaxed) {
                self.link.lost_ms.store(now_ms(), Relaxed);
            }
            match end {
                End::Drained => {
                    self.say_goodbye(&client, &mut events).await;
                    event_loop.abort();
                    break;
                }
                End::OutboxClosed(e) => {
                    tracing::error!(error = %e, "outbox unavailable; uplink stops");
                    event_loop.abort();
                    break;
                }
                End::Lost(e) => {
                    event_loop.abort();
                    Counters::add(&self.counters.uplink_errors, 1);
                    let delay = backoff.next_delay(fastrand::f64());
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "upstream connection lost");
                    *self
                        .link
                        .last_error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = Some(e);
                    self.link.last_error_ms.store(now_ms(), Relaxed);
                    let wake = Instant::now() + delay;
                    let wake = deadline.map_or(wake, |d| wake.min(d));
                    tokio::select! {
                        _ = tokio::time::sleep_until(wake) => {}
                        _ = drain.cancelled(), if deadline.is_none() => {}
                    }
                }
            }
        }
    }

    fn connect(
        &self,
    ) -> (
        AsyncClient,
        mpsc::Receiver<Result<Event, rumqttc::ConnectionError>>,
        tokio::task::JoinHandle<()>,
    ) {
        let c = &self.cfg;
        let mut opts = MqttOptions::new(c.client_id.clone(), c.host.clone(), c.port);
        opts.set_keep_alive(c.keep_alive.max(Duration::from_secs(1)))
            .set_clean_session(true)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET)
            // One more than ours: the status message may be in flight beside the rows.
            .set_inflight(c.max_inflight.saturating_add(1))
            .set_last_will(LastWill::new(
                self.status_topic.clone(),
                self.offline_payload.clone(),
                QoS::AtLeastOnce,
                true,
            ));
        if let Some(tls) = &c.tls {
            opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                tls.config.clone(),
            )));
        }
        if let Some(cred) = &c.credentials {
            opts.set_credentials(cred.username.clone(), cred.password.expose());
        }
        let capacity = usize::from(c.max_inflight) + 8;
        let (client, mut event_loop) = AsyncClient::new(opts, capacity);
        // An alert goes out as soon as it is written: with Nagle's algorithm (rumqttc's
        // default) a small write waits for the acknowledgement of the one before,
        // which a delayed ACK can hold for 40 ms.
        let mut net = event_loop.network_options();
        net.set_tcp_nodelay(true);
        event_loop.set_network_options(net);
        let (tx, rx) = mpsc::channel(1024);
        let task = tokio::spawn(forward_events(event_loop, tx));
        (client, rx, task)
    }

    async fn session(
        &self,
        client: &AsyncClient,
        events: &mut mpsc::Receiver<Result<Event, rumqttc::ConnectionError>>,
        drain: &CancellationToken,
        (deadline, grace): (&mut Option<Instant>, Duration),
        backoff: &mut Backoff,
        limit: &mut RateLimit,
    ) -> End {
        let mut inflight = Inflight::new();
        let mut connected = false;
        let mut want_rows = true;
        // Rows the broker acknowledged, to delete; they stay here while the outbox
        // refuses the deletion (full disk), excluded from what is sent.
        let mut acks: Vec<i64> = Vec::new();
        let mut delete_retry: Option<Instant> = None;
        let mut status_tick = tokio::time::interval(self.cfg.status_interval);
        status_tick.reset();
        let max = usize::from(self.cfg.max_inflight);
        // Set while the drain rate limit holds back non-alert rows.
        let mut throttled_until: Option<Instant> = None;
        // Set while the outbox cannot be read (a damaged file): try again then.
        let mut read_retry: Option<Instant> = None;
        let mut read_backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        loop {
            if connected
                && want_rows
                && throttled_until.is_none()
                && read_retry.is_none()
                && inflight.rows().len() < max
            {
                let room = max - inflight.rows().len();
                // Delivered rows not yet deleted (the disk refused) must not go out again.
                let mut exclude = inflight.rows().clone();
                exclude.extend(acks.iter().copied());
                let rows = match self.outbox.pending(exclude, room).await {
                    Ok(rows) => {
                        if self.link.outbox_readable() {
                            read_backoff.reset();
                            tracing::warn!("outbox readable again; delivery resumes");
                        }
                        rows
                    }
                    Err(OutboxError::Closed) => {
                        return End::OutboxClosed("outbox thread gone".into());
                    }
                    Err(e) => {
                        // Not a reason to stop silently: `weir status` reports `outbox_damaged`
                        // (naming the file) for as long as it lasts, and the uplink keeps
                        // trying, since an I/O error may pass.
                        let delay = read_backoff.next_delay(fastrand::f64());
                        if self.link.outbox_unreadable(&e) {
                            tracing::error!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot read rows to deliver from the outbox; nothing goes upstream until it is repaired");
                        }
                        read_retry = Some(Instant::now() + delay);
                        Vec::new()
                    }
                };
                want_rows = rows.len() == room;
                let now = Instant::now().into_std();
                for row in rows {
                    // Rows come in priority order: once one must wait for a token, the rest
                    // wait too (they stay pending and are fetched again).
                    if row.class != Class::Alert && !limit.try_take(now) {
                        want_rows = true;
                        throttled_until = Some(Instant::from_std(limit.next_token_at(now)));
                        break;
                    }
                    let retain = self
                        .retained
                        .iter()
                        .any(|p| row.topic.starts_with(p.as_str()));
                    if let Err(e) =
                        client.try_publish(row.topic, QoS::AtLeastOnce, retain, row.payload)
                    {
                        return End::Lost(format!("publish refused by the client: {e}"));
                    }
                    inflight.sent(Tag::Row(row.id));
                    Counters::add(&self.counters.published, 1);
                }
            }
            if drain.is_cancelled() {
                if deadline.is_none() {
                    *deadline = Some(Instant::now() + grace);
                }
                if connected && !want_rows && inflight.rows().is_empty() {
                    return End::Drained;
                }
            }
            let until = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                ev = events.recv() => {
                    let Some(ev) = ev else { return End::Lost("event loop ended".into()) };
                    if let Err(end) = self.handle(ev, client, &mut inflight, &mut connected, &mut want_rows, &mut acks, backoff) {
                        return end;
                    }
                    // Take whatever else is ready so acknowledgements go to SQLite in one transaction.
                    while let Ok(ev) = events.try_recv() {
                        if let Err(end) = self.handle(ev, client, &mut inflight, &mut connected, &mut want_rows, &mut acks, backoff) {
                            return end;
                        }
                    }
                    if !acks.is_empty() && delete_retry.is_none() {
                        self.link.last_puback_ms.store(now_ms(), Relaxed);
                        match self.delete_acked(&mut acks).await {
                            Ok(retry) => delete_retry = retry,
                            Err(end) => return end,
                        }
                        want_rows = true;
                    }
                }
                _ = tokio::time::sleep_until(delete_retry.unwrap_or_else(Instant::now)), if delete_retry.is_some() => {
                    match self.delete_acked(&mut acks).await {
                        Ok(retry) => delete_retry = retry,
                        Err(end) => return end,
                    }
                    want_rows = true;
                }
                _ = self.new_rows.notified() => want_rows = true,
                _ = tokio::time::sleep_until(read_retry.unwrap_or_else(Instant::now)), if read_retry.is_some() => {
                    read_retry = None;
                    want_rows = true;
                }
                _ = tokio::time::sleep_until(throttled_until.unwrap_or_else(Instant::now)), if throttled_until.is_some() => {
                    throttled_until = None;
                }
                _ = status_tick.tick(), if connected => self.publish_status(client, &mut inflight),
                _ = drain.cancelled(), if !drain.is_cancelled() => want_rows = true,
                _ = tokio::time::sleep_until(until), if deadline.is_some() => {
                    return if connected { End::Drained } else { End::Lost("shutdown grace over".into()) };
                }
            }
        }
    }

    /// Deletes acknowledged rows. On success `acks` is emptied; if the outbox
    /// refuses (full disk), they stay, and the time to try again is returned. A
    /// crash meanwhile only means they are sent again: a duplicate, never a loss.
    async fn delete_acked(&self, acks: &mut Vec<i64>) -> Result<Option<Instant>, End> {
        match self.outbox.ack(acks.clone()).await {
            Ok(deleted) => {
                Counters::add(&self.counters.acked, deleted as u64);
                if deleted > 0 {
                    self.space_freed.notify_one();
                }
                acks.clear();
                Ok(None)
            }
            Err(OutboxError::Closed) => Err(End::OutboxClosed("outbox thread gone".into())),
            Err(e) => {
                tracing::error!(error = %e, rows = acks.len(), "cannot delete acknowledged rows; retrying in a second");
                Ok(Some(Instant::now() + Duration::from_secs(1)))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn handle(
        &self,
        ev: Result<Event, rumqttc::ConnectionError>,
        client: &AsyncClient,
        inflight: &mut Inflight,
        connected: &mut bool,
        want_rows: &mut bool,
        acks: &mut Vec<i64>,
        backoff: &mut Backoff,
    ) -> Result<(), End> {
        match ev {
            Err(e) => Err(End::Lost(self.explain(&e))),
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                if ack.code != ConnectReturnCode::Success {
                    return Err(End::Lost(format!(
                        "broker refused the connection: {:?}",
                        ack.code
                    )));
                }
                *connected = true;
                *want_rows = true;
                backoff.reset();
                self.link.connected_ms.store(now_ms(), Relaxed);
                self.link.connected.store(true, Relaxed);
                Counters::add(&self.counters.uplink_connects, 1);
                tracing::info!(host = %self.cfg.host, port = self.cfg.port, "connected upstream");
                self.publish_status(client, inflight);
                Ok(())
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => inflight
                .on_outgoing_publish(pkid)
                .map_err(|e| End::Lost(format!("delivery bookkeeping: {e}"))),
            Ok(Event::Incoming(Packet::PubAck(p))) => {
                if let Some(row) = inflight.on_puback(p.pkid) {
                    acks.push(row);
                }
                Ok(())
            }
            Ok(_) => Ok(()),
        }
    }

    /// A connection error as a technician needs it: TLS failures name the CA file
    /// the server was checked against.
    fn explain(&self, e: &ConnectionError) -> String {
        match (e, &self.cfg.tls) {
            (ConnectionError::Tls(t), Some(tls)) => format!(
                "TLS with {}:{} failed: {t} (the server is verified against {}{})",
                self.cfg.host,
                self.cfg.port,
                tls.ca_file.display(),
                if tls.client_auth {
                    "; a client certificate is presented"
                } else {
                    ""
                }
            ),
            (ConnectionError::ConnectionRefused(code), _) => {
                format!(
                    "the broker refused the connection: {code:?} (check username/password and ACLs)"
                )
            }
            _ => e.to_string(),
        }
    }

    fn publish_status(&self, client: &AsyncClient, inflight: &mut Inflight) {
        let payload = (self.status)();
        match client.try_publish(self.status_topic.clone(), QoS::AtLeastOnce, true, payload) {
            Ok(()) => inflight.sent(Tag::Untracked),
            // The request channel has room for every row in flight plus a few; a
            // full channel means the link is stuck, and the next tick tries again.
            Err(e) => tracing::debug!(error = %e, "status not published"),
        }
    }

    /// Clean shutdown: replace the retained status with `offline` ourselves (a
    /// clean DISCONNECT suppresses the last will), then disconnect.
    async fn say_goodbye(
        &self,
        client: &AsyncClient,
        events: &mut mpsc::Receiver<Result<Event, rumqttc::ConnectionError>>,
    ) {
        let ok = client
            .try_publish(
                self.status_topic.clone(),
                QoS::AtLeastOnce,
                true,
                self.offline_payload.clone(),
            )
            .is_ok();
        let wait = async {
            while let Some(Ok(ev)) = events.recv().await {
                if ok && matches!(ev, Event::Incoming(Packet::PubAck(_))) {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), wait).await;
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Some(Ok(_)) = events.recv().await {}
        })
        .await;
    }
}

async fn forward_events(
    mut event_loop: EventLoop,
    tx: mpsc::Sender<Result<Event, rumqttc::ConnectionError>>,
) {
    loop {
        let ev = event_loop.poll().await;
        let failed = ev.is_err();
        if tx.send(ev).await.is_err() || failed {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reloaded_link_keeps_the_last_puback_and_error_of_the_one_before() {
        let earlier = LinkStatus::default();
        earlier.last_puback_ms.store(5_000, Relaxed);
        earlier.last_error_ms.store(4_000, Relaxed);
        *earlier.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some("refused".into());
        let new = LinkStatus::default();
        new.carry_over(&earlier);
        assert_eq!(new.last_puback_ms.load(Relaxed), 5_000);
        assert_eq!(new.last_error_ms.load(Relaxed), 4_000);
        assert_eq!(
            new.last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_deref(),
            Some("refused")
        );
        // What the new link learnt itself is not overwritten.
        let newer = LinkStatus::default();
        newer.last_puback_ms.store(9_000, Relaxed);
        newer.last_error_ms.store(8_000, Relaxed);
        *newer.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some("reset".into());
        newer.carry_over(&earlier);
        assert_eq!(newer.last_puback_ms.load(Relaxed), 9_000);
        assert_eq!(
            newer
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_deref(),
            Some("reset")
        );
    }
}
