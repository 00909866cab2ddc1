//! MQTT ingest from the local broker: subscribe to the configured filters, map
//! each topic to a key, parse the payload into a reading or a dead letter.
//!
//! Sending into the engine's channel awaits room, and while it waits this task
//! does not poll the connection: the broker holds the messages (backpressure).

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Input;
use super::payload::{self, ParsedValue};
use crate::config::IngestConfig;
use crate::metrics::Counters;
use crate::reading::{Key, Reading, TsSource, now_ms};
use crate::uplink::backoff::Backoff;
use crate::wire::{DeadLetter, excerpt};

/// rumqttc drops the whole connection on a packet above its limit, so ours sits
/// far above `max_payload_bytes`: oversized payloads up to here are dead-lettered
/// with a reason. Beyond it, the broker's own `message_size_limit` should refuse them.
const MAX_PACKET: usize = 1024 * 1024;

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

/// What a received message becomes.
pub fn to_input(cfg: &IngestConfig, topic: &str, payload: &[u8], now: i64) -> Input {
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
            let (ts, source) = ts.map_or((now, TsSource::Arrival), |t| (t, TsSource::Event));
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
pub fn to_inputs(cfg: &IngestConfig, topic: &str, payload: &[u8], now: i64, out: &mut Vec<Input>) {
    let found = cfg
        .topics
        .iter()
        .zip(&cfg.multi)
        .find_map(|(m, f)| m.map(topic).map(|(sensor, _)| (sensor, f)));
    let Some((sensor, Some(fmt))) = found else {
        out.push(to_input(cfg, topic, payload, now));
        return;
    };
    let dead =
        |reason: &'static str, detail: String| dead_letter(topic, payload, now, reason, detail);
    match super::multi::parse(payload, cfg.format.max_bytes, fmt) {
        Ok(parsed) => {
            let (ts, source) = parsed
                .ts
                .map_or((now, TsSource::Arrival), |t| (t, TsSource::Event));
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
        // A persistent session: the broker queues readings while Weir is down.
        .set_clean_session(false)
        .set_max_packet_size(MAX_PACKET, MAX_PACKET);
    let (client, mut event_loop) = AsyncClient::new(opts, 64);
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
                to_inputs(&cfg, &p.topic, &p.payload, now_ms(), &mut inputs);
                let mut closed = false;
                for input in inputs {
                    closed = tx.send(input).await.is_err();
                    if closed {
                        break;
                    }
                }
                if closed {
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
