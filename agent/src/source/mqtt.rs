//! MQTT ingest from the local broker: subscribe to the configured filters, map
//! each topic to a key, parse the payload into a reading or a dead letter.
//!
//! The connection is driven here over a plain TCP stream with rumqttc's packet
//! codec (framing in [`super::mqtt_wire`]), not rumqttc's event loop, because
//! exactly-once ingest needs what that loop does not allow: QoS 2 with the
//! PUBREC and the PUBCOMP each sent only after a checkpoint has committed (its
//! loop answers PUBREL with PUBCOMP at once, and drops the connection on a PUBREL
//! it did not see the PUBLISH of, which is every PUBREL resent after a restart),
//! and a payload above the size limit dead-lettered instead of dropping the
//! connection (which makes the broker resend it forever). `docs/ingest.md` has the
//! argument; `checkpoint::Seen` the bookkeeping.
//!
//! Each message goes to the engine as one [`Input::Delivery`] carrying its
//! [`Ack`], and each PUBREL as an [`Input::Release`]; the engine sends the
//! acknowledgements through this task once the checkpoint holding their effect
//! has committed. Until then the broker keeps the message in our persistent
//! session and resends it after a crash or a reconnect.
//!
//! Backpressure: while the engine's channel is full this task stops reading the
//! socket (the broker holds the messages), but still writes acknowledgements and
//! keep-alive pings, so a long stall never costs the connection.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::{
    ConnectReturnCode, Packet, PubAck, PubComp, PubRec, QoS, Subscribe, SubscribeFilter,
    SubscribeReasonCode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::link::IngestLink;
use super::mqtt_wire::{EXCERPT, Frame, Framer, Oversized};
use super::payload::{self, ParsedValue};
use super::{Delivery, Input};
use crate::checkpoint::{DeliveryMeta, fingerprint};
use crate::clock::Stamp;
use crate::config::IngestConfig;
use crate::metrics::Counters;
use crate::reading::{Key, Reading, TsSource};
use crate::uplink::backoff::Backoff;
use crate::wire::{DeadLetter, excerpt};

/// Largest packet decoded whole; a PUBLISH above it is streamed past and
/// dead-lettered as `too_large` (see [`super::mqtt_wire`]), so this only bounds
/// memory: `max_payload_bytes` must stay below it (checked by `config check`).
pub const MAX_PACKET: usize = 1024 * 1024;

/// The largest `max_payload_bytes` that can work: a packet of [`MAX_PACKET`]
/// bytes less the largest fixed header (5), topic (2 + 65,535) and packet id (2).
pub const MAX_PAYLOAD_LIMIT: usize = MAX_PACKET - 5 - 2 - 65_535 - 2;

/// Keep-alive: a PINGREQ goes out when nothing was written for half of it, and
/// the connection counts as lost when a PINGREQ gets no answer within it.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// How long the broker has to accept the TCP connection and answer CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the engine owes the broker for one message (or one PUBREL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckKind {
    /// QoS 1: PUBACK.
    PubAck,
    /// QoS 2, first half: PUBREC (the message is counted).
    PubRec,
    /// QoS 2, second half: PUBCOMP (the packet id is released).
    PubComp,
}

/// The acknowledgement owed for one delivery or release.
#[derive(Clone, Debug)]
pub struct Ack {
    tx: mpsc::UnboundedSender<(AckKind, u16)>,
    kind: AckKind,
    pkid: u16,
}

impl PartialEq for Ack {
    fn eq(&self, other: &Self) -> bool {
        (self.kind, self.pkid) == (other.kind, other.pkid)
    }
}

impl Ack {
    /// An acknowledgement that goes to `tx` (the ingest task's queue).
    pub fn new(tx: mpsc::UnboundedSender<(AckKind, u16)>, kind: AckKind, pkid: u16) -> Self {
        Self { tx, kind, pkid }
    }

    /// The packet id the broker gave the message.
    pub fn pkid(&self) -> u16 {
        self.pkid
    }

    /// Which acknowledgement.
    pub fn kind(&self) -> AckKind {
        self.kind
    }

    /// Queues the acknowledgement (never waits). If the connection is gone, the
    /// broker resends the message (or the PUBREL) on the next one, and it is
    /// acknowledged then.
    pub fn send(&self) {
        if self.tx.send((self.kind, self.pkid)).is_err() {
            tracing::debug!(
                pkid = self.pkid,
                "ingest stopped; acknowledgement not sent, the broker will resend"
            );
        }
    }
}

/// A message that could not become a reading, with a bounded excerpt of it.
fn dead_letter(
    topic: &str,
    payload: &[u8],
    now: i64,
    reason: &'static str,
    detail: String,
) -> Input {
    Input::DeadLetter(DeadLetter {
        source: topic.to_string(),
        reason,
        detail,
        payload: excerpt(payload, 256),
        received_at: now,
    })
}

/// What a received message becomes; `arrived` stamps a payload without a timestamp.
pub fn to_input(cfg: &IngestConfig, topic: &str, payload: &[u8], arrived: Stamp) -> Input {
    let now = arrived.ms;
    let dead =
        |reason: &'static str, detail: String| dead_letter(topic, payload, now, reason, detail);
    let Some((sensor, metric)) = cfg.topics.iter().find_map(|m| m.map(topic)) else {
        return dead(
            "unmapped_topic",
            format!("no [[ingest.topic]] maps topic {topic:?} to a sensor and metric"),
        );
    };
    match payload::parse(payload, &cfg.format) {
        Ok(ParsedValue { value, ts }) => {
            let (ts, source) = ts.map_or((now, arrived.source(TsSource::Arrival)), |t| {
                (t, TsSource::Event)
            });
            match Reading::new(Key::new(sensor, metric), value, ts, source) {
                Ok(r) => Input::Reading(r),
                Err(e) => dead("non_finite", e.to_string()),
            }
        }
        Err(e) => dead(e.reason(), e.to_string()),
    }
}

/// What a received message becomes, when its subscription may be multi-metric
/// (`format = "tasmota"`, `"zigbee2mqtt"` or `"multi"`): one input per metric,
/// a dead letter per refused field, or one dead letter for the whole message.
pub fn to_inputs(
    cfg: &IngestConfig,
    topic: &str,
    payload: &[u8],
    arrived: Stamp,
    out: &mut Vec<Input>,
) {
    let now = arrived.ms;
    let found = cfg
        .topics
        .iter()
        .zip(&cfg.multi)
        .find_map(|(m, f)| m.map(topic).map(|(sensor, _)| (sensor, f)));
    let Some((sensor, Some(fmt))) = found else {
        out.push(to_input(cfg, topic, payload, arrived));
        return;
    };
    let dead =
        |reason: &'static str, detail: String| dead_letter(topic, payload, now, reason, detail);
    match super::multi::parse(payload, cfg.format.max_bytes, fmt) {
        Ok(parsed) => {
            let (ts, source) = parsed
                .ts
                .map_or((now, arrived.source(TsSource::Arrival)), |t| {
                    (t, TsSource::Event)
                });
            for (metric, value) in parsed.values {
                out.push(match value {
                    Ok(v) => match Reading::new(Key::new(sensor.as_str(), metric), v, ts, source) {
                        Ok(r) => Input::Reading(r),
                        Err(e) => dead("non_finite", e.to_string()),
                    },
                    Err(e) => dead(e.reason(), format!("{metric}: {e}")),
                });
            }
        }
        Err(e) => out.push(dead(e.reason(), e.to_string())),
    }
}

/// A message above the size limit: a dead letter with what was kept of it.
fn oversized_input(cfg: &IngestConfig, o: &Oversized, now: i64) -> Input {
    let mut e = excerpt(&o.head, EXCERPT);
    if o.payload_len > o.head.len() {
        e.push_str("...");
    }
    Input::DeadLetter(DeadLetter {
        source: o.topic.clone(),
        reason: "too_large",
        detail: format!(
            "payload of {} bytes is above the {}-byte limit (max_payload_bytes); the rest was discarded",
            o.payload_len, cfg.format.max_bytes
        ),
        payload: e,
        received_at: now,
    })
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the broker closed the connection")]
    Closed,
    #[error("no answer to CONNECT within {0:?}")]
    ConnectTimeout(Duration),
    #[error("the broker refused the connection: {0:?}")]
    Refused(ConnectReturnCode),
    #[error("the broker's first packet was not CONNACK: {0:?}")]
    NotConnAck(Box<Packet>),
    #[error("{0}")]
    Frame(#[from] super::mqtt_wire::FrameError),
    #[error("cannot encode a packet: {0}")]
    Encode(rumqttc::Error),
    #[error("no answer to a keep-alive ping within {0:?}")]
    PingTimeout(Duration),
}

/// The engine's channel is gone or `stop` was cancelled: the task ends.
struct Stopped;

/// One connection: its stream and the bookkeeping of what we wrote and read.
struct Conn {
    stream: TcpStream,
    framer: Framer,
    out: BytesMut,
    last_write: tokio::time::Instant,
    ping_sent: Option<tokio::time::Instant>,
    warned_qos1: bool,
}

impl Conn {
    async fn send(&mut self, p: &Packet) -> Result<(), SessionError> {
        self.out.clear();
        p.write(&mut self.out, usize::MAX)
            .map_err(SessionError::Encode)?;
        self.stream.write_all(&self.out).await?;
        self.last_write = tokio::time::Instant::now();
        Ok(())
    }

    async fn ack(&mut self, (kind, pkid): (AckKind, u16)) -> Result<(), SessionError> {
        let p = match kind {
            AckKind::PubAck => Packet::PubAck(PubAck::new(pkid)),
            AckKind::PubRec => Packet::PubRec(PubRec::new(pkid)),
            AckKind::PubComp => Packet::PubComp(PubComp::new(pkid)),
        };
        self.send(&p).await
    }

    /// Sends a PINGREQ when due; an error when the last one went unanswered.
    async fn keep_alive(&mut self, reading: bool) -> Result<(), SessionError> {
        let now = tokio::time::Instant::now();
        if let Some(sent) = self.ping_sent {
            // Only while we read: a full engine channel is not the broker's silence.
            if reading && now.duration_since(sent) > KEEP_ALIVE {
                return Err(SessionError::PingTimeout(KEEP_ALIVE));
            }
        }
        if now.duration_since(self.last_write) >= KEEP_ALIVE / 2 {
            self.send(&Packet::PingReq).await?;
            self.ping_sent.get_or_insert(now);
        }
        Ok(())
    }

    /// Has the kernel acknowledge what arrived at once (`TCP_QUICKACK`) instead of
    /// delaying the ACK by up to 40 ms. Weir answers deliveries only after a
    /// checkpoint, so for long stretches it sends the broker nothing an ACK could
    /// ride on, and a broker with Nagle's algorithm on (Mosquitto's default, without
    /// `set_tcp_nodelay true`) holds its next small write until that ACK: readings,
    /// alerts among them, waited 40 ms. Linux leaves quick-ACK mode again by itself,
    /// so it is asked for after every read. A failure only costs latency.
    fn ack_at_once(&self) {
        let _ = socket2::SockRef::from(&self.stream).set_tcp_quickack(true);
    }
}

/// Opens a connection: CONNECT with a persistent session, CONNACK, SUBSCRIBE at QoS 2.
async fn connect(cfg: &IngestConfig) -> Result<Conn, SessionError> {
    let stream = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((cfg.host.as_str(), cfg.port)),
    )
    .await
    .map_err(|_| SessionError::ConnectTimeout(CONNECT_TIMEOUT))?
    .map_err(SessionError::Connect)?;
    stream.set_nodelay(true)?;
    let mut conn = Conn {
        stream,
        framer: Framer::new(MAX_PACKET),
        out: BytesMut::with_capacity(256),
        last_write: tokio::time::Instant::now(),
        ping_sent: None,
        warned_qos1: false,
    };
    let mut c = rumqttc::Connect::new(cfg.client_id.clone());
    c.keep_alive = KEEP_ALIVE.as_secs() as u16;
    // A persistent session: the broker queues readings while Weir is down, and
    // keeps those not yet acknowledged.
    c.clean_session = false;
    conn.send(&Packet::Connect(c)).await?;
    let first = tokio::time::timeout(CONNECT_TIMEOUT, async {
        loop {
            if let Some(f) = conn.framer.next_frame()? {
                return Ok::<_, SessionError>(f);
            }
            if conn.stream.read_buf(conn.framer.buffer()).await? == 0 {
                return Err(SessionError::Closed);
            }
        }
    })
    .await
    .map_err(|_| SessionError::ConnectTimeout(CONNECT_TIMEOUT))??;
    match first {
        Frame::Packet(Packet::ConnAck(a)) if a.code == ConnectReturnCode::Success => {
            if !a.session_present {
                tracing::info!(client_id = %cfg.client_id, "the local broker has no session for weir (first start, or the broker lost it): readings published while weir was away were not kept");
            }
        }
        Frame::Packet(Packet::ConnAck(a)) => return Err(SessionError::Refused(a.code)),
        other => return Err(SessionError::NotConnAck(Box::new(packet_of(other)))),
    }
    // Subscribing on every connect also covers a broker that lost the session.
    let filters = cfg
        .topics
        .iter()
        .map(|t| SubscribeFilter::new(t.filter().to_string(), QoS::ExactlyOnce));
    let mut sub = Subscribe::new_many(filters);
    sub.pkid = 1;
    conn.send(&Packet::Subscribe(sub)).await?;
    Ok(conn)
}

fn packet_of(f: Frame) -> Packet {
    match f {
        Frame::Packet(p) => p,
        Frame::Oversized(o) => Packet::Publish(rumqttc::Publish::new(o.topic, o.qos, Vec::new())),
    }
}

/// What one frame from the broker becomes: an input for the engine, if any.
fn on_frame(
    cfg: &IngestConfig,
    conn: &mut Conn,
    frame: Frame,
    acks: &mpsc::UnboundedSender<(AckKind, u16)>,
    counters: &Counters,
) -> Option<Input> {
    let arrived = crate::clock::stamp();
    let now = arrived.ms;
    let (topic, qos, pkid, dup, retain, fp, inputs) = match frame {
        Frame::Packet(Packet::Publish(p)) => {
            let mut inputs = Vec::new();
            to_inputs(cfg, &p.topic, &p.payload, arrived, &mut inputs);
            let fp = fingerprint(&p.topic, &p.payload);
            (p.topic, p.qos, p.pkid, p.dup, p.retain, fp, inputs)
        }
        Frame::Oversized(o) => {
            // The fingerprint covers what was kept; with the size it tells
            // retained copies apart well enough for a message that is refused anyway.
            let mut fp = fingerprint(&o.topic, &o.head);
            fp ^= o.payload_len as u64;
            let input = oversized_input(cfg, &o, now);
            (o.topic, o.qos, o.pkid, o.dup, o.retain, fp, vec![input])
        }
        Frame::Packet(Packet::PubRel(r)) => {
            return Some(Input::Release(Ack::new(
                acks.clone(),
                AckKind::PubComp,
                r.pkid,
            )));
        }
        Frame::Packet(Packet::SubAck(a)) => {
            for (code, t) in a.return_codes.iter().zip(&cfg.topics) {
                match code {
                    SubscribeReasonCode::Success(QoS::ExactlyOnce) => {}
                    SubscribeReasonCode::Success(q) => {
                        tracing::warn!(filter = t.filter(), granted = ?q, "the local broker granted less than QoS 2: readings are not protected against loss or double counting across a crash")
                    }
                    SubscribeReasonCode::Failure => tracing::error!(
                        filter = t.filter(),
                        "the local broker refused the subscription (check its ACL): no readings from it"
                    ),
                }
            }
            return None;
        }
        Frame::Packet(Packet::PingResp) => {
            conn.ping_sent = None;
            return None;
        }
        Frame::Packet(other) => {
            tracing::debug!(packet = ?other, "ingest: packet ignored");
            return None;
        }
    };
    Counters::add(&counters.mqtt_messages, 1);
    let kind = match qos {
        QoS::AtMostOnce => None,
        QoS::AtLeastOnce => {
            if !conn.warned_qos1 {
                conn.warned_qos1 = true;
                tracing::warn!(topic = %topic, "the local broker delivers QoS 1: exactly-once ingest needs QoS 2 (mosquitto: upgrade_outgoing_qos true, see the README's broker requirements); a crash may now lose or double-count a reading");
            }
            Some(AckKind::PubAck)
        }
        QoS::ExactlyOnce => Some(AckKind::PubRec),
    };
    let meta = DeliveryMeta {
        qos: qos as u8,
        pkid,
        dup,
        retain,
        topic: fingerprint(&topic, &[]),
        fingerprint: fp,
    };
    Some(Input::Delivery(Delivery {
        inputs,
        meta,
        ack: kind.map(|k| Ack::new(acks.clone(), k, pkid)),
    }))
}

/// The acknowledgements the engine queues for the connection: the sending half
/// goes into every [`Ack`], the ingest task drains the other.
struct AckQueue {
    tx: mpsc::UnboundedSender<(AckKind, u16)>,
    rx: mpsc::UnboundedReceiver<(AckKind, u16)>,
}

/// One connection, until it fails (`Err`) or the task is to end (`Ok(Stopped)`).
async fn session(
    cfg: &IngestConfig,
    tx: &mpsc::Sender<Input>,
    counters: &Counters,
    link: &IngestLink,
    stop: &CancellationToken,
    queue: &mut AckQueue,
    backoff: &mut Backoff,
) -> Result<Stopped, SessionError> {
    let AckQueue {
        tx: acks,
        rx: ack_rx,
    } = queue;
    let mut conn = tokio::select! {
        _ = stop.cancelled() => return Ok(Stopped),
        c = connect(cfg) => c?,
    };
    backoff.reset();
    link.up();
    tracing::info!(host = %cfg.host, port = cfg.port, "ingest connected");
    // Acknowledgements queued for the previous connection: the broker resends
    // what they covered, and those are acknowledged again.
    while ack_rx.try_recv().is_ok() {}
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Decode what is buffered before reading more.
        if let Some(frame) = conn.framer.next_frame()? {
            if let Some(input) = on_frame(cfg, &mut conn, frame, acks, counters) {
                let permit = loop {
                    tokio::select! {
                        p = tx.reserve() => break p,
                        _ = stop.cancelled() => return Ok(Stopped),
                        Some(a) = ack_rx.recv() => conn.ack(a).await?,
                        _ = ticker.tick() => conn.keep_alive(false).await?,
                    }
                };
                match permit {
                    Ok(p) => p.send(input),
                    Err(_) => return Ok(Stopped),
                }
            }
            continue;
        }
        tokio::select! {
            _ = stop.cancelled() => {
                // Nothing owed is lost by leaving now: what was not acknowledged comes again.
                let _ = conn.send(&Packet::Disconnect).await;
                return Ok(Stopped);
            }
            n = conn.stream.read_buf(conn.framer.buffer()) => {
                if n? == 0 {
                    return Err(SessionError::Closed);
                }
                conn.ack_at_once();
            }
            Some(a) = ack_rx.recv() => conn.ack(a).await?,
            _ = ticker.tick() => conn.keep_alive(true).await?,
        }
    }
}

/// Runs until `stop` is cancelled (or the engine's channel closes), reconnecting
/// with capped exponential backoff and jitter.
pub async fn run(
    cfg: IngestConfig,
    tx: mpsc::Sender<Input>,
    counters: Arc<Counters>,
    link: Arc<IngestLink>,
    stop: CancellationToken,
) {
    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    let mut queue = AckQueue {
        tx: ack_tx,
        rx: ack_rx,
    };
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        let ended = session(&cfg, &tx, &counters, &link, &stop, &mut queue, &mut backoff).await;
        match ended {
            Ok(Stopped) => break,
            Err(e) => {
                link.down(&e);
                let delay = backoff.next_delay(fastrand::f64());
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "ingest connection lost");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}
