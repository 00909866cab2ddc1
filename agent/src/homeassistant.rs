//! Home Assistant MQTT discovery (`[homeassistant]`, off unless configured).
//!
//! Beside the panes and alerts, Weir publishes, through the outbox like every other
//! message (so they wait out an outage, and a newer one supersedes an unsent older one):
//! - a retained discovery config per entity under
//!   `<discovery_prefix>/<component>/<node>/<object>/config`: a `sensor` per sensor/metric
//!   key, a `binary_sensor` per key and detector, and two diagnostic entities of the
//!   device (the outbox backlog and the upstream link), all of one HA device;
//! - a retained, compact JSON state per entity under `<topic_prefix>/ha/...`, which is
//!   what the entities read.
//!
//! Availability is Weir's retained status topic (`online`, `offline` by the last will).
//!
//! # Invariants
//! - A key's sensor entity (and the binary sensors of the detectors that apply to it) is
//!   announced the first time this process emits a pane for it; a detector's binary sensor
//!   at the latest with its first alert. Re-announcing after a restart is harmless (the same
//!   retained config) and repairs a config lost before it was committed.
//! - `announced` lists every config topic announced and not since withdrawn, and
//!   `homeassistant.json` in the state directory never lists less: a new entity is written
//!   to the file before its config goes out (results may be delivered from memory before
//!   any checkpoint, so waiting for a commit could leave an entity no later start knows to
//!   withdraw); a withdrawn one leaves the file only after the checkpoint that holds or
//!   follows its empty config ([`HomeAssistant::committed`]). A crash in between at worst
//!   withdraws an entity whose config never went out (an empty retained message: nothing
//!   happens) or withdraws one again.
//! - At start, an announced entity whose sensor is no longer configured, or whose detector
//!   is gone, gets an empty retained config: Home Assistant deletes it.
//! - A sensor's state is the newest window's: a late revision of an older window does not
//!   replace it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::detect::{Alert, AlertState, DetectorSpec};
use crate::engine::Pane;
use crate::outbox::{Class, NewMessage};
use crate::reading::{Key, TimestampMs};

/// The file in the state directory that remembers what was announced.
pub const STORE_FILE: &str = "homeassistant.json";

/// The checked `[homeassistant]` section.
#[derive(Clone, Debug, PartialEq)]
pub struct HaConfig {
    /// Home Assistant's discovery prefix (its MQTT integration's setting).
    pub discovery_prefix: String,
    /// Which aggregate of the newest window is a sensor's state.
    pub state: StateValue,
    /// Unit per metric name, over the built-in table ([`unit_of`]).
    pub units: BTreeMap<String, String>,
}

/// `state = "mean"` or `"last"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateValue {
    /// The window's mean.
    Mean,
    /// The window's latest reading.
    Last,
}

impl StateValue {
    /// The config spelling, also the field of the state payload.
    pub fn as_str(self) -> &'static str {
        match self {
            StateValue::Mean => "mean",
            StateValue::Last => "last",
        }
    }
}

/// The unit Home Assistant shows for a metric, and its device class, for the metric
/// names Weir's drivers and common devices use; `overrides` (metric -> unit) win.
pub fn unit_of(
    metric: &str,
    overrides: &BTreeMap<String, String>,
) -> (Option<String>, Option<&'static str>) {
    let unit = overrides.get(metric).cloned().or_else(|| {
        let u = match metric {
            "temperature" | "temp" => "°C",
            "humidity" | "battery" => "%",
            "pressure" => "hPa",
            "voltage" => "V",
            "current" => "A",
            _ => return None,
        };
        Some(u.to_string())
    });
    let class = unit.as_deref().and_then(|u| match u {
        "°C" | "°F" | "K" => Some("temperature"),
        "hPa" | "Pa" | "kPa" | "bar" | "mbar" => Some("pressure"),
        "V" | "mV" => Some("voltage"),
        "A" | "mA" => Some("current"),
        "%" if metric.contains("humid") => Some("humidity"),
        "%" if metric.contains("battery") => Some("battery"),
        _ => None,
    });
    (unit, class)
}

/// One announced entity, as remembered in the store file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Entity {
    /// Empty for the device's own diagnostic entities (never withdrawn).
    sensor: String,
    /// The detector of a binary sensor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    detector: Option<String>,
}

/// Discovery and state messages for one Weir device.
#[derive(Debug)]
pub struct HomeAssistant {
    cfg: HaConfig,
    device: String,
    version: String,
    /// `<topic_prefix>/status`.
    status_topic: String,
    /// `<topic_prefix>/ha`.
    state_base: String,
    detectors: Vec<DetectorSpec>,
    /// Config topic -> what it announced; see the module invariants.
    announced: BTreeMap<String, Entity>,
    /// Changed since the store file was written.
    dirty: bool,
    /// Announced since the store file was written: it must be written before those
    /// configs leave ([`HomeAssistant::before_send`]).
    unsaved_new: bool,
    /// Keys announced by this process.
    seen: HashSet<Key>,
    /// Binary sensors announced by this process: (key, detector).
    seen_detectors: HashSet<(Key, String)>,
    /// Per key, the end of the newest window whose state was published.
    newest: HashMap<Key, TimestampMs>,
    store: Option<PathBuf>,
}

/// Discovery node and object ids allow `[a-zA-Z0-9_-]` only.
fn id_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// FNV-1a: object ids stay unique even where [`id_part`] maps two names to one.
fn short_hash(parts: &[&str]) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for p in parts {
        for b in p.bytes().chain([0]) {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
    }
    format!("{h:08x}")
}

impl HomeAssistant {
    /// `topic_prefix` is the uplink's (`weir/<device>`); `store` the state directory, or
    /// `None` to remember nothing across runs (tests).
    pub fn new(
        cfg: HaConfig,
        device: &str,
        topic_prefix: &str,
        detectors: Vec<DetectorSpec>,
        store: Option<&Path>,
    ) -> Self {
        Self {
            cfg,
            device: device.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            status_topic: format!("{topic_prefix}/status"),
            state_base: format!("{topic_prefix}/ha"),
            detectors,
            announced: BTreeMap::new(),
            dirty: false,
            unsaved_new: false,
            seen: HashSet::new(),
            seen_detectors: HashSet::new(),
            newest: HashMap::new(),
            store: store.map(|d| d.join(STORE_FILE)),
        }
    }

    /// Topics published retained: discovery configs and entity states.
    pub fn retained_prefixes(&self) -> Vec<String> {
        vec![
            format!("{}/", self.cfg.discovery_prefix),
            format!("{}/", self.state_base),
        ]
    }

    /// At start: reads what earlier runs announced, withdraws the entities whose sensor
    /// `configured` no longer names (or whose detector is gone), and announces the
    /// device's diagnostic entities.
    pub fn start(
        &mut self,
        configured: impl Fn(&str) -> bool,
        now: TimestampMs,
        msgs: &mut Vec<NewMessage>,
    ) {
        if let Some(path) = &self.store {
            match std::fs::read(path) {
                Ok(bytes) => match serde_json::from_slice(&bytes) {
                    Ok(map) => self.announced = map,
                    Err(e) => tracing::warn!(path = %path.display(), error = %e,
                        "Home Assistant store unreadable; entities announced before cannot be withdrawn"),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(path = %path.display(), error = %e,
                    "cannot read the Home Assistant store; entities announced before cannot be withdrawn"),
            }
        }
        let gone: Vec<String> = self
            .announced
            .iter()
            .filter(|(_, e)| {
                let detector_gone = e.detector.as_deref().is_some_and(|d| {
                    d != "sensor-failure" && !self.detectors.iter().any(|s| s.name == d)
                });
                !e.sensor.is_empty() && (!configured(&e.sensor) || detector_gone)
            })
            .map(|(t, _)| t.clone())
            .collect();
        for topic in gone {
            tracing::info!(topic = %topic, "Home Assistant entity withdrawn: its sensor or detector is no longer configured");
            self.announced.remove(&topic);
            self.dirty = true;
            msgs.push(message(Class::Alert, topic, Vec::new(), now));
        }
        self.announce_diagnostics(now, msgs);
    }

    /// After a pane: announces its key if new (with the binary sensors of the detectors
    /// that apply to it, on for those of `active` alerts, off otherwise: the detectors'
    /// state survives a restart, so must theirs), then publishes its state if the window
    /// is the key's newest.
    pub fn pane<'a>(
        &mut self,
        p: &Pane,
        active: impl Iterator<Item = &'a Alert>,
        now: TimestampMs,
        msgs: &mut Vec<NewMessage>,
    ) {
        if self.seen.insert(p.key.clone()) {
            self.announce_sensor(&p.key, now, msgs);
            let names: Vec<String> = (self.detectors.iter())
                .filter(|d| d.sensor.matches(&p.key.sensor) && d.metric.matches(&p.key.metric))
                .map(|d| d.name.clone())
                .collect();
            let active: Vec<&Alert> = active.filter(|a| a.key == p.key).collect();
            for name in names {
                if self.announce_detector(&p.key, &name, now, msgs) {
                    let a = active.iter().find(|a| a.detector == name).copied();
                    msgs.push(self.alert_state(a, &p.key, &name, now));
                }
            }
        }
        let newest = self.newest.entry(p.key.clone()).or_insert(p.end);
        if p.end < *newest {
            return;
        }
        *newest = p.end;
        let a = &p.agg;
        let state = json!({
            "mean": a.mean, "last": a.last, "min": a.min, "max": a.max,
            "count": a.count, "window_end": p.end,
        });
        let topic = self.sensor_state_topic(&p.key);
        msgs.push(message(
            Class::Aggregate,
            topic,
            state.to_string().into_bytes(),
            now,
        ));
    }

    /// After an alert: its binary sensor turns on (raised) or off (cleared).
    pub fn alert(&mut self, a: &Alert, now: TimestampMs, msgs: &mut Vec<NewMessage>) {
        self.announce_detector(&a.key, &a.detector, now, msgs);
        msgs.push(self.alert_state(Some(a), &a.key, &a.detector, now));
    }

    /// The outbox committed every message handed out so far: the store file may now say so.
    pub fn committed(&mut self) {
        if self.dirty {
            self.save();
        }
    }

    /// The messages handed out so far are about to leave: new entities go into the store
    /// file first (see the module invariants).
    pub fn before_send(&mut self) {
        if self.unsaved_new {
            self.save();
        }
    }

    /// Writes the store file (kept dirty when that fails: tried again later).
    fn save(&mut self) {
        let Some(path) = &self.store else {
            self.dirty = false;
            return;
        };
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(&self.announced).unwrap_or_default();
        match std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path)) {
            Ok(()) => (self.dirty, self.unsaved_new) = (false, false),
            // Kept dirty: tried again after the next commit. Meanwhile a restart may not
            // withdraw an entity announced since (the file is older than the outbox).
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot write the Home Assistant store")
            }
        }
    }

    fn sensor_state_topic(&self, k: &Key) -> String {
        format!("{}/{}/{}", self.state_base, k.sensor, k.metric)
    }

    fn detector_state_topic(&self, k: &Key, detector: &str) -> String {
        format!("{}/{}/{}/{detector}", self.state_base, k.sensor, k.metric)
    }

    fn config_topic(&self, component: &str, parts: &[&str]) -> String {
        let names: Vec<String> = parts.iter().map(|p| id_part(p)).collect();
        format!(
            "{}/{component}/weir_{}/{}_{}/config",
            self.cfg.discovery_prefix,
            id_part(&self.device),
            names.join("_"),
            short_hash(parts)
        )
    }

    fn device_json(&self) -> Value {
        json!({
            "identifiers": [format!("weir_{}", self.device)],
            "name": self.device,
            "manufacturer": "Weir",
            "model": "weir agent",
            "sw_version": self.version,
        })
    }

    /// Unavailable while Weir's retained status says `offline` (a clean stop or the
    /// last will).
    fn availability(&self) -> Value {
        json!([{ "topic": self.status_topic, "value_template": "{{ value_json.state }}" }])
    }

    fn unique_id(&self, parts: &[&str]) -> String {
        format!("weir_{}_{}", self.device, parts.join("/"))
    }

    fn announce(
        &mut self,
        topic: String,
        entity: Entity,
        config: Value,
        now: TimestampMs,
    ) -> NewMessage {
        if self.announced.insert(topic.clone(), entity.clone()) != Some(entity) {
            // Written before the config leaves (see the module invariants), once per
            // batch of messages rather than once per entity.
            self.dirty = true;
            self.unsaved_new = true;
        }
        message(Class::Alert, topic, config.to_string().into_bytes(), now)
    }

    fn announce_sensor(&mut self, k: &Key, now: TimestampMs, msgs: &mut Vec<NewMessage>) {
        let parts = [&*k.sensor, &*k.metric];
        let (unit, class) = unit_of(&k.metric, &self.cfg.units);
        let state_topic = self.sensor_state_topic(k);
        let mut c = json!({
            "name": format!("{} {}", k.sensor, k.metric),
            "unique_id": self.unique_id(&parts),
            "state_topic": state_topic,
            "value_template": format!("{{{{ value_json.{} }}}}", self.cfg.state.as_str()),
            "json_attributes_topic": state_topic,
            "state_class": "measurement",
            "availability": self.availability(),
            "device": self.device_json(),
        });
        if let Some(u) = unit {
            c["unit_of_measurement"] = u.into();
        }
        if let Some(d) = class {
            c["device_class"] = d.into();
        }
        let topic = self.config_topic("sensor", &parts);
        let entity = Entity {
            sensor: k.sensor.to_string(),
            detector: None,
        };
        msgs.push(self.announce(topic, entity, c, now));
    }

    fn announce_detector(
        &mut self,
        k: &Key,
        detector: &str,
        now: TimestampMs,
        msgs: &mut Vec<NewMessage>,
    ) -> bool {
        if !self
            .seen_detectors
            .insert((k.clone(), detector.to_string()))
        {
            return false;
        }
        let parts = [&*k.sensor, &*k.metric, detector];
        let state_topic = self.detector_state_topic(k, detector);
        let c = json!({
            "name": format!("{} {} {detector}", k.sensor, k.metric),
            "unique_id": self.unique_id(&parts),
            "state_topic": state_topic,
            "value_template": "{{ value_json.state }}",
            "json_attributes_topic": state_topic,
            "device_class": "problem",
            "availability": self.availability(),
            "device": self.device_json(),
        });
        let topic = self.config_topic("binary_sensor", &parts);
        let entity = Entity {
            sensor: k.sensor.to_string(),
            detector: Some(detector.to_string()),
        };
        msgs.push(self.announce(topic, entity, c, now));
        true
    }

    fn alert_state(
        &self,
        a: Option<&Alert>,
        k: &Key,
        detector: &str,
        now: TimestampMs,
    ) -> NewMessage {
        let state = match a {
            Some(a) if a.state == AlertState::Raised => json!({
                "state": "ON", "reason": a.reason, "severity": a.severity.as_str(),
                "kind": a.kind, "value": a.value, "since": a.raised_ts, "alert_id": a.id,
            }),
            Some(a) => json!({
                "state": "OFF", "reason": a.reason, "severity": a.severity.as_str(),
                "kind": a.kind, "value": a.value, "since": a.ts, "alert_id": a.id,
            }),
            None => json!({ "state": "OFF" }),
        };
        let topic = self.detector_state_topic(k, detector);
        message(Class::Alert, topic, state.to_string().into_bytes(), now)
    }

    fn announce_diagnostics(&mut self, now: TimestampMs, msgs: &mut Vec<NewMessage>) {
        let entity = Entity {
            sensor: String::new(),
            detector: None,
        };
        let backlog = json!({
            "name": "outbox backlog",
            "unique_id": self.unique_id(&["backlog"]),
            "state_topic": self.status_topic,
            "value_template": "{{ value_json.backlog }}",
            "unit_of_measurement": "messages",
            "state_class": "measurement",
            "entity_category": "diagnostic",
            "availability": self.availability(),
            "device": self.device_json(),
        });
        let topic = self.config_topic("sensor", &["backlog"]);
        msgs.push(self.announce(topic, entity.clone(), backlog, now));
        // No availability: it is the link itself, off when Weir's status is `offline`.
        let link = json!({
            "name": "upstream link",
            "unique_id": self.unique_id(&["link"]),
            "state_topic": self.status_topic,
            "value_template": "{{ 'ON' if value_json.state == 'online' else 'OFF' }}",
            "device_class": "connectivity",
            "entity_category": "diagnostic",
            "device": self.device_json(),
        });
        let topic = self.config_topic("binary_sensor", &["link"]);
        msgs.push(self.announce(topic, entity, link, now));
    }
}

fn message(class: Class, topic: String, payload: Vec<u8>, now: TimestampMs) -> NewMessage {
    NewMessage {
        class,
        supersede_key: Some(format!("ha:{topic}")),
        topic,
        payload,
        created_ms: now,
    }
}

#[cfg(test)]
#[path = "homeassistant_tests.rs"]
mod tests;
