//! MQTT ingest from the local broker: subscribe to the configured filters, map
//! each topic to a key, parse the payload into a reading or a dead letter.
//!
//! Sending into the engine's channel awaits room, and while it waits this task
//! does not poll the connection: the broker holds the messages (backpressure).
//!
//! Acknowledgements are manual: each message goes to the engine as one
//! [`Input::Delivery`] carrying its [`Ack`], which the engine sends only after
//! the checkpoint holding the message's effect has committed. Until then the
//! broker keeps the message in our persistent session and resends it after a
//! crash or a reconnect (see `checkpoint::Seen` for the resends of messages
//! whose acknowledgement was lost).

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::payload::{self, ParsedValue};
use super::{Delivery, Input};
use crate::checkpoint::fingerprint;
use crate::clock::Stamp;
use crate::config::IngestConfig;
use crate::metrics::Counters;
use crate::reading::{Key, Reading, TsSource};
use crate::uplink::backoff::Backoff;
use crate::wire::{DeadLetter, excerpt};

/// rumqttc drops the whole connection on a packet above its limit, so ours sits
/// far above `max_payload_bytes`: oversized payloads up to here are dead-lettered
/// with a reason. Beyond it, the broker's own `message_size_limit` should refuse them.
const MAX_PACKET: usize = 1024 * 1024;

/// Room for every acknowledgement we can owe: the broker never has more than
/// 65,535 unacknowledged messages (packet ids) with us, so queueing an ack
/// never waits, even while this task is held by a full engine channel.
const REQUEST_CAPACITY: usize = 65_536 + 64;

/// The acknowledgement owed for one delivery (QoS 1 or 2).
#[derive(Clone, Debug)]
pub struct Ack {
    client: AsyncClient,
    pkid: u16,
    qos: QoS,
    dup: bool,
}

impl PartialEq for Ack {
    fn eq(&self, other: &Self) -> bool {
        (self.pkid, self.qos, self.dup) == (other.pkid, other.qos, other.dup)
    }
}

impl Ack {
    /// The packet id the broker gave the message.
    pub fn pkid(&self) -> u16 {
        self.pkid
    }

    /// True if the broker flagged the message as a resend.
    pub fn dup(&self) -> bool {
        self.dup
    }

    /// Queues the acknowledgement (never waits). If the connection is gone, the
    /// broker resends the message on the next one, flagged DUP.
    pub fn send(&self) {
        let mut p = Publish::new("", self.qos, Vec::<u8>::new());
        p.pkid = self.pkid;
        if let Err(e) = self.client.try_ack(&p) {
            tracing::debug!(pkid = self.pkid, error = %e, "ingest acknowledgement not queued; the broker will resend");
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

/// Runs until `stop` is cancelled, reconnecting with backoff.
pub async fn run(
    cfg: IngestConfig,
    tx: mpsc::Sender<Input>,
    counters: Arc<Counters>,
    stop: CancellationToken,
) {
    let mut opts = MqttOptions::new(cfg.client_id.clone(), cfg.host.clone(), cfg.port);
    opts.set_keep_alive(Duration::from_secs(30))
        // A persistent session: the broker queues readings while Weir is down,
        // and keeps those not yet acknowledged.
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(MAX_PACKET, MAX_PACKET);
    let (client, mut event_loop) = AsyncClient::new(opts, REQUEST_CAPACITY);
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        let ev = tokio::select! {
            _ = stop.cancelled() => break,
            ev = event_loop.poll() => ev,
        };
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff.reset();
                tracing::info!(host = %cfg.host, port = cfg.port, "ingest connected");
                // Subscribing on every connect also covers a broker that lost the session.
                for t in &cfg.topics {
                    if let Err(e) = client.try_subscribe(t.filter(), QoS::AtLeastOnce) {
                        tracing::error!(filter = t.filter(), error = %e, "cannot subscribe");
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                Counters::add(&counters.mqtt_messages, 1);
                let mut inputs = Vec::new();
                to_inputs(
                    &cfg,
                    &p.topic,
                    &p.payload,
                    crate::clock::stamp(),
                    &mut inputs,
                );
                let ack = (p.qos != QoS::AtMostOnce).then(|| Ack {
                    client: client.clone(),
                    pkid: p.pkid,
                    qos: p.qos,
                    dup: p.dup,
                });
                let delivery = Delivery {
                    inputs,
                    fingerprint: fingerprint(&p.topic, &p.payload),
                    ack,
                };
                if tx.send(Input::Delivery(delivery)).await.is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => {
                let delay = backoff.next_delay(fastrand::f64());
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "ingest connection lost");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    let _ = client.try_disconnect();
    // Let the DISCONNECT go out.
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while event_loop.poll().await.is_ok() {}
    })
    .await;
}
