//! The upstream side: a recorder that subscribes to what Weir publishes and keeps every
//! message (topic, raw payload, parsed JSON, retain flag) in arrival order, and typed views
//! of the wire messages of docs/wire.md (panes, alerts, late readings, dead letters,
//! status) over any slice of messages.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{Client, Connection, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

use crate::{Result, summary, unique_id, wait_for};

/// A message received upstream.
#[derive(Clone, Debug)]
pub struct Msg {
    /// Topic.
    pub topic: String,
    /// Payload as JSON (Null when it is not JSON; decoded first when the recorder
    /// decodes postcard).
    pub json: Value,
    /// Retained flag as delivered.
    pub retain: bool,
}

#[derive(Default)]
struct Seen {
    msgs: Vec<Msg>,
    payloads: Vec<Vec<u8>>,
    ids: HashSet<String>,
}

/// An MQTT subscriber recording every message on its filter.
pub struct Recorder {
    client: Client,
    seen: Arc<Mutex<Seen>>,
}

impl Recorder {
    /// Subscribes to `filter` (QoS 1) on a clean session.
    pub fn connect(port: u16, filter: &str) -> Self {
        Self::open(port, filter, None, false)
    }

    /// Subscribes on the persistent session `client_id`: the broker queues for it while
    /// it is away, and a later `persistent` with the same id gets the queue.
    pub fn persistent(port: u16, filter: &str, client_id: &str) -> Self {
        Self::open(port, filter, Some(client_id), false)
    }

    /// Like [`Recorder::connect`] for a weir with `[uplink] format = "postcard"`: each
    /// binary payload is decoded with the library to the JSON it stands for (the raw bytes
    /// stay in [`Recorder::payloads`]); status and anything not postcard is read as JSON.
    pub fn connect_postcard(port: u16, filter: &str) -> Self {
        Self::open(port, filter, None, true)
    }

    /// [`Recorder::connect`] or [`Recorder::persistent`] by `session`.
    pub fn open(port: u16, filter: &str, session: Option<&str>, postcard: bool) -> Self {
        let id = session.map_or_else(|| format!("test-rec-{}", unique_id()), str::to_string);
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30))
            .set_clean_session(session.is_none())
            .set_max_packet_size(4 << 20, 4 << 20);
        let (client, connection) = Client::new(opts, 64);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (subscribed_tx, subscribed_rx) = std::sync::mpsc::channel();
        std::thread::spawn({
            let seen = seen.clone();
            move || record(connection, seen, subscribed_tx, postcard)
        });
        client
            .subscribe(filter, QoS::AtLeastOnce)
            .unwrap_or_else(|e| panic!("{e}"));
        subscribed_rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("recorder not subscribed on port {port} within 10 s"));
        Self { client, seen }
    }

    /// Runs `f` on everything received so far, without copying it.
    pub fn with<T>(&self, f: impl FnOnce(&[Msg]) -> T) -> T {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        f(&seen.msgs)
    }

    /// Everything received so far.
    pub fn messages(&self) -> Vec<Msg> {
        self.with(<[Msg]>::to_vec)
    }

    /// Every raw payload received so far, with its topic, in arrival order.
    pub fn payloads(&self) -> Vec<(String, Vec<u8>)> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.msgs
            .iter()
            .map(|m| m.topic.clone())
            .zip(seen.payloads.iter().cloned())
            .collect()
    }

    /// How many distinct `msg_id`s arrived (duplicates of at-least-once delivery aside).
    pub fn distinct(&self) -> usize {
        self.seen.lock().map(|s| s.ids.len()).unwrap_or(0)
    }

    /// Received messages whose topic ends with `suffix`.
    pub fn on(&self, suffix: &str) -> Vec<Msg> {
        self.with(|m| {
            m.iter()
                .filter(|m| m.topic.ends_with(suffix))
                .cloned()
                .collect()
        })
    }

    /// Waits until `pred` holds for the received messages; the error says what arrived.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[Msg]) -> bool,
    ) -> Result<Vec<Msg>> {
        wait_for(timeout, || self.with(|m| pred(m).then(|| m.to_vec()))).ok_or_else(|| {
            format!(
                "timed out after {timeout:?} waiting for {what}; received: {}",
                self.with(summary)
            )
        })
    }

    /// Waits until `f` gives `Some` for the received messages.
    pub fn wait_map<T>(
        &self,
        what: &str,
        timeout: Duration,
        f: impl Fn(&[Msg]) -> Option<T>,
    ) -> Result<T> {
        wait_for(timeout, || self.with(&f)).ok_or_else(|| {
            format!(
                "timed out after {timeout:?} waiting for {what}; received: {}",
                self.with(summary)
            )
        })
    }

    /// Publishes a payload (QoS 1) on the recorder's own connection, without waiting for
    /// the PUBACK (a [`crate::Publisher`] waits).
    pub fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.into())
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Disconnects cleanly.
    pub fn disconnect(self) {
        let _ = self.client.disconnect();
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn record(
    mut connection: Connection,
    seen: Arc<Mutex<Seen>>,
    subscribed: std::sync::mpsc::Sender<()>,
    postcard: bool,
) {
    for ev in connection.iter() {
        match ev {
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                let _ = subscribed.send(());
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let decoded = if postcard && !p.topic.ends_with("/status") {
                    weir::wire::postcard::to_json(&p.payload).ok()
                } else {
                    None
                };
                let bytes = decoded.as_deref().unwrap_or(&p.payload);
                let json = serde_json::from_slice(bytes).unwrap_or(Value::Null);
                if let Ok(mut s) = seen.lock() {
                    if let Some(id) = json["msg_id"].as_str() {
                        if !s.ids.contains(id) {
                            s.ids.insert(id.to_string());
                        }
                    }
                    s.msgs.push(Msg {
                        topic: p.topic.clone(),
                        json,
                        retain: p.retain,
                    });
                    s.payloads.push(p.payload.to_vec());
                }
            }
            Ok(_) => {}
            // Disconnected on purpose, or the broker went away: stop recording.
            Err(_) => break,
        }
    }
}

/// A pane (`<prefix>/agg/<sensor>/<metric>`).
#[derive(Clone, Debug)]
pub struct Pane {
    /// Topic it came on.
    pub topic: String,
    /// `<device>/<sensor>/<metric>/<start>-<end>`.
    pub id: String,
    /// The key.
    pub sensor: String,
    /// The key.
    pub metric: String,
    /// Window start (event time, ms).
    pub window_start: i64,
    /// Window end.
    pub window_end: i64,
    /// 0 on time, n + 1 per late update.
    pub revision: u64,
    /// Readings in the window.
    pub count: u64,
    /// The whole message.
    pub json: Value,
}

impl Pane {
    /// A numeric field (`sum`, `mean`, `first`...); panics naming it when absent.
    pub fn num(&self, field: &str) -> f64 {
        self.json[field]
            .as_f64()
            .unwrap_or_else(|| panic!("{field} missing in {}", self.json))
    }
}

/// An alert transition (`<prefix>/alert/<sensor>/<metric>`).
#[derive(Clone, Debug)]
pub struct Alert {
    /// Topic it came on.
    pub topic: String,
    /// One id per episode.
    pub id: String,
    /// `raised` or `cleared`.
    pub state: String,
    /// `threshold`, `zscore`, `silence`, `flatline`, `sensor_failure`.
    pub kind: String,
    /// The whole message.
    pub json: Value,
}

/// A dead letter (`<prefix>/deadletter`).
#[derive(Clone, Debug)]
pub struct DeadLetter {
    /// Stable reason (`not_a_number`, `too_large`...).
    pub reason: String,
    /// The MQTT topic, or `<sensor>/<metric>` for a refused reading.
    pub source: String,
    /// The whole message.
    pub json: Value,
}

/// A status message (`<prefix>/status`).
#[derive(Clone, Debug)]
pub struct Status {
    /// `online` or `offline`.
    pub state: String,
    /// Whether it was delivered as retained.
    pub retain: bool,
    /// The whole message.
    pub json: Value,
}

impl Status {
    /// A counter by dotted path (`acked`, `deadletter.not_a_number`); 0 when absent.
    pub fn counter(&self, path: &str) -> u64 {
        counter(&self.json, path)
    }

    /// The counters of one category (`evicted`, `dropped`...) by reason.
    pub fn by_reason(&self, category: &str) -> BTreeMap<String, u64> {
        by_reason(&self.json, category)
    }
}

/// A counter of a status document (the status message or `weir status --json`) by dotted
/// path under `counters`; 0 when absent.
pub fn counter(status: &Value, path: &str) -> u64 {
    path.split('.')
        .fold(&status["counters"], |v, p| &v[p])
        .as_u64()
        .unwrap_or(0)
}

/// The counters of one category of a status document, by reason.
pub fn by_reason(status: &Value, category: &str) -> BTreeMap<String, u64> {
    status["counters"][category]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

/// Typed views of received messages, by the `type` field of docs/wire.md.
pub trait Views {
    /// Every pane, in arrival order.
    fn panes(&self) -> Vec<Pane>;
    /// The pane with this id and revision, if it arrived.
    fn pane(&self, id: &str, revision: u64) -> Option<Pane> {
        self.panes()
            .into_iter()
            .find(|p| p.id == id && p.revision == revision)
    }
    /// Every alert transition on `topic` (all of them when `None`), in arrival order.
    fn alerts(&self, topic: Option<&str>) -> Vec<Alert>;
    /// Every late reading, in arrival order.
    fn lates(&self) -> Vec<Value>;
    /// Every dead letter, in arrival order.
    fn dead_letters(&self) -> Vec<DeadLetter>;
    /// Every status message, in arrival order.
    fn statuses(&self) -> Vec<Status>;
    /// The newest `online` status.
    fn last_online(&self) -> Option<Status> {
        self.statuses()
            .into_iter()
            .rev()
            .find(|s| s.state == "online")
    }
}

fn str_of(v: &Value, f: &str) -> String {
    v[f].as_str().unwrap_or_default().to_string()
}

impl Views for [Msg] {
    fn panes(&self) -> Vec<Pane> {
        self.iter()
            .filter(|m| m.json["type"] == "pane")
            .map(|m| Pane {
                topic: m.topic.clone(),
                id: str_of(&m.json, "id"),
                sensor: str_of(&m.json, "sensor"),
                metric: str_of(&m.json, "metric"),
                window_start: m.json["window_start"].as_i64().unwrap_or(i64::MIN),
                window_end: m.json["window_end"].as_i64().unwrap_or(i64::MIN),
                revision: m.json["revision"].as_u64().unwrap_or(u64::MAX),
                count: m.json["count"].as_u64().unwrap_or(0),
                json: m.json.clone(),
            })
            .collect()
    }

    fn alerts(&self, topic: Option<&str>) -> Vec<Alert> {
        self.iter()
            .filter(|m| m.json["type"] == "alert" && topic.is_none_or(|t| m.topic == t))
            .map(|m| Alert {
                topic: m.topic.clone(),
                id: str_of(&m.json, "id"),
                state: str_of(&m.json, "state"),
                kind: str_of(&m.json, "kind"),
                json: m.json.clone(),
            })
            .collect()
    }

    fn lates(&self) -> Vec<Value> {
        self.iter()
            .filter(|m| m.json["type"] == "late")
            .map(|m| m.json.clone())
            .collect()
    }

    fn dead_letters(&self) -> Vec<DeadLetter> {
        self.iter()
            .filter(|m| m.json["type"] == "deadletter")
            .map(|m| DeadLetter {
                reason: str_of(&m.json, "reason"),
                source: str_of(&m.json, "source"),
                json: m.json.clone(),
            })
            .collect()
    }

    fn statuses(&self) -> Vec<Status> {
        self.iter()
            .filter(|m| m.topic.ends_with("/status"))
            .map(|m| Status {
                state: str_of(&m.json, "state"),
                retain: m.retain,
                json: m.json.clone(),
            })
            .collect()
    }
}
