//! The live tail's tap on the engine task: readings in, messages out, broadcast to
//! whoever runs `weir tail`.
//!
//! Invariants:
//! - With no subscriber the engine's whole cost is one relaxed atomic load per step
//!   ([`Tap::is_active`]): nothing is cloned, encoded or sent.
//! - Sending never waits: the broadcast ring holds [`CAPACITY`] events; a subscriber that
//!   falls further behind loses the oldest ones and is told how many (`Lagged`), so a
//!   slow terminal can never slow the pipeline.
//! - `subscribers` counts live [`Subscription`]s exactly (incremented on creation,
//!   decremented on drop).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::outbox::{Class, NewMessage};
use crate::reading::Reading;

/// Events kept for a lagging subscriber before the oldest are dropped for it.
pub const CAPACITY: usize = 1024;

/// What `weir tail` can follow.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Alerts raised and cleared.
    Alerts,
    /// Window panes (aggregates), on time and late.
    Agg,
    /// Readings too late for their windows.
    Late,
    /// Payloads that could not be parsed, and readings the engine refused.
    Deadletter,
    /// Every reading the engine receives.
    Readings,
}

impl Kind {
    /// Stable lowercase name (as in requests and in event lines).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alerts => "alerts",
            Self::Agg => "agg",
            Self::Late => "late",
            Self::Deadletter => "deadletter",
            Self::Readings => "readings",
        }
    }

    /// The stream a produced message belongs to (other diagnostics: none).
    pub fn of_message(m: &NewMessage) -> Option<Kind> {
        match m.class {
            Class::Alert => Some(Self::Alerts),
            Class::Aggregate => Some(Self::Agg),
            Class::Diagnostic if m.topic.ends_with("/late") => Some(Self::Late),
            Class::Diagnostic if m.topic.ends_with("/deadletter") => Some(Self::Deadletter),
            Class::Diagnostic => None,
        }
    }
}

/// One tapped event, shared by all subscribers.
#[derive(Clone, Debug)]
pub enum Event {
    /// A message the engine produced, as it will be published.
    Message {
        /// Its stream.
        kind: Kind,
        /// Its MQTT topic.
        topic: String,
        /// Its payload (JSON or postcard, as configured).
        payload: Vec<u8>,
    },
    /// A reading handed to the engine.
    Reading(Reading),
}

impl Event {
    /// The stream it belongs to.
    pub fn kind(&self) -> Kind {
        match self {
            Self::Message { kind, .. } => *kind,
            Self::Reading(_) => Kind::Readings,
        }
    }

    /// The event line a tail client receives: `{"kind", "topic", "message"}` or the reading.
    pub fn to_json(&self) -> Value {
        match self {
            Self::Message {
                kind,
                topic,
                payload,
            } => {
                let message = crate::cli::decode::payload_to_json(payload)
                    .ok()
                    .and_then(|j| serde_json::from_slice::<Value>(&j).ok())
                    .unwrap_or_else(|| json!(crate::wire::excerpt(payload, 200)));
                json!({"kind": kind.as_str(), "topic": topic, "message": message})
            }
            Self::Reading(r) => json!({
                "kind": "readings",
                "sensor": &*r.key.sensor,
                "metric": &*r.key.metric,
                "value": r.value,
                "ts": r.ts,
                "ts_source": format!("{:?}", r.ts_source).to_lowercase(),
            }),
        }
    }
}

/// Whether an event line (see [`Event::to_json`]) is about `sensor`: its `sensor`
/// field, or for dead letters a `source` naming it (`sensor/metric` of a refused
/// reading, or an ingest topic with the sensor as one of its levels).
pub fn about_sensor(line: &Value, sensor: &str) -> bool {
    let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let msg = line.get("message").unwrap_or(line);
    if let Some(s) = field(line, "sensor").or_else(|| field(msg, "sensor")) {
        return s == sensor;
    }
    field(msg, "source").is_some_and(|src| src.split('/').any(|level| level == sensor))
}

/// The broadcast point. Cheap to hold; see the module invariants.
#[derive(Debug)]
pub struct Tap {
    subscribers: Arc<AtomicUsize>,
    tx: broadcast::Sender<Arc<Event>>,
}

impl Default for Tap {
    fn default() -> Self {
        Self {
            subscribers: Arc::default(),
            tx: broadcast::Sender::new(CAPACITY),
        }
    }
}

impl Tap {
    /// Whether anyone is tailing: the engine checks this before building any event.
    #[inline]
    pub fn is_active(&self) -> bool {
        self.subscribers.load(Relaxed) > 0
    }

    /// Broadcasts `event`; never waits (see the invariants).
    pub fn send(&self, event: Event) {
        // An error only means the last subscriber left meanwhile.
        let _ = self.tx.send(Arc::new(event));
    }

    /// Broadcasts the messages of `msgs` that belong to a tail stream.
    pub fn messages(&self, msgs: &[NewMessage]) {
        for m in msgs {
            if let Some(kind) = Kind::of_message(m) {
                self.send(Event::Message {
                    kind,
                    topic: m.topic.clone(),
                    payload: m.payload.clone(),
                });
            }
        }
    }

    /// A new subscriber; counted until dropped.
    pub fn subscribe(&self) -> Subscription {
        self.subscribers.fetch_add(1, Relaxed);
        Subscription {
            rx: self.tx.subscribe(),
            count: self.subscribers.clone(),
        }
    }
}

/// One tail client's receiving end.
#[derive(Debug)]
pub struct Subscription {
    /// The events; `Lagged(n)` when `n` were dropped for this subscriber.
    pub rx: broadcast::Receiver<Arc<Event>>,
    count: Arc<AtomicUsize>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::reading::{Key, TsSource};

    fn reading(sensor: &str) -> Event {
        Event::Reading(Reading {
            key: Key::new(sensor, "t"),
            value: 1.5,
            ts: 1000,
            ts_source: TsSource::Event,
        })
    }

    #[test]
    fn the_tap_is_inactive_until_someone_subscribes_and_again_after_they_leave() {
        let tap = Tap::default();
        assert!(!tap.is_active());
        let sub = tap.subscribe();
        assert!(tap.is_active());
        drop(sub);
        assert!(!tap.is_active());
    }

    #[test]
    fn a_subscriber_that_falls_behind_is_told_how_many_it_missed() {
        let tap = Tap::default();
        let mut sub = tap.subscribe();
        for _ in 0..CAPACITY + 5 {
            tap.send(reading("a"));
        }
        match sub.rx.try_recv() {
            Err(broadcast::error::TryRecvError::Lagged(n)) => assert_eq!(n, 5),
            other => panic!("{other:?}"),
        }
        assert!(sub.rx.try_recv().is_ok());
    }

    #[test]
    fn messages_are_sorted_into_streams_by_class_and_topic() {
        let m = |class, topic: &str| NewMessage {
            class,
            topic: topic.into(),
            payload: b"{}".to_vec(),
            supersede_key: None,
            created_ms: 0,
        };
        assert_eq!(
            Kind::of_message(&m(Class::Alert, "w/d/alert/a/t")),
            Some(Kind::Alerts)
        );
        assert_eq!(
            Kind::of_message(&m(Class::Aggregate, "w/d/agg/a/t")),
            Some(Kind::Agg)
        );
        assert_eq!(
            Kind::of_message(&m(Class::Diagnostic, "w/d/late")),
            Some(Kind::Late)
        );
        assert_eq!(
            Kind::of_message(&m(Class::Diagnostic, "w/d/deadletter")),
            Some(Kind::Deadletter)
        );
    }

    #[test]
    fn a_sensor_filter_matches_the_sensor_field_or_a_dead_letters_source() {
        let r = reading("greenhouse").to_json();
        assert!(about_sensor(&r, "greenhouse"));
        assert!(!about_sensor(&r, "green"));
        let dl = json!({"kind": "deadletter", "message": {"source": "home/greenhouse/t"}});
        assert!(about_sensor(&dl, "greenhouse"));
        assert!(!about_sensor(&dl, "kitchen"));
        let pane = json!({"kind": "agg", "message": {"sensor": "kitchen"}});
        assert!(about_sensor(&pane, "kitchen"));
    }

    #[test]
    fn a_message_event_carries_its_decoded_payload() {
        let e = Event::Message {
            kind: Kind::Alerts,
            topic: "w/d/alert/a/t".into(),
            payload: br#"{"sensor":"a","state":"raised"}"#.to_vec(),
        };
        let v = e.to_json();
        assert_eq!(v["kind"], "alerts");
        assert_eq!(v["message"]["state"], "raised");
    }
}
