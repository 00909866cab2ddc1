use std::collections::BTreeMap;

use serde_json::Value;

use super::*;
use crate::detect::{DetectorKind, Glob, Severity};
use crate::engine::{Aggregates, Timing};

fn cfg() -> HaConfig {
    HaConfig {
        discovery_prefix: "homeassistant".into(),
        state: StateValue::Mean,
        units: BTreeMap::new(),
    }
}

fn spec(name: &str, sensor: &str) -> DetectorSpec {
    DetectorSpec {
        name: name.into(),
        sensor: Glob::new(sensor),
        metric: Glob::new("*"),
        severity: Severity::Warning,
        kind: DetectorKind::Silence,
    }
}

fn ha(detectors: Vec<DetectorSpec>, store: Option<&Path>) -> HomeAssistant {
    HomeAssistant::new(cfg(), "pi-01", "weir/pi-01", detectors, store)
}

fn pane(sensor: &str, metric: &str, mean: f64, end: TimestampMs, revision: u32) -> Pane {
    Pane {
        key: Key::new(sensor, metric),
        start: end - 1000,
        end,
        agg: Aggregates {
            count: 2,
            sum: mean * 2.0,
            min: mean - 1.0,
            max: mean + 1.0,
            mean,
            stddev: 1.0,
            first: mean - 1.0,
            last: mean + 1.0,
            p50: None,
            p90: None,
            p99: None,
        },
        revision,
        timing: if revision == 0 {
            Timing::OnTime
        } else {
            Timing::Late
        },
        is_final: false,
    }
}

fn alert(sensor: &str, detector: &str, state: AlertState) -> Alert {
    Alert {
        id: format!("pi-01/{sensor}/temperature/{detector}/5000"),
        detector: detector.into(),
        kind: "threshold",
        key: Key::new(sensor, "temperature"),
        state,
        severity: Severity::Critical,
        value: 41.5,
        baseline: None,
        threshold: 35.0,
        reason: "value 41.5 above high 35".into(),
        ts: 6000,
        raised_ts: 5000,
    }
}

fn json(m: &NewMessage) -> Value {
    serde_json::from_slice(&m.payload).unwrap_or(Value::Null)
}

fn find<'a>(msgs: &'a [NewMessage], part: &str) -> Vec<&'a NewMessage> {
    msgs.iter().filter(|m| m.topic.contains(part)).collect()
}

#[test]
fn a_new_key_is_announced_once_with_its_unit_device_class_device_and_availability() {
    let mut h = ha(vec![], None);
    let mut msgs = Vec::new();
    h.pane(
        &pane("air", "temperature", 21.5, 60_000, 0),
        [].into_iter(),
        1,
        &mut msgs,
    );
    h.pane(
        &pane("air", "temperature", 22.5, 120_000, 0),
        [].into_iter(),
        2,
        &mut msgs,
    );
    let configs = find(&msgs, "/config");
    assert_eq!(configs.len(), 1, "announced once: {msgs:?}");
    let c = configs[0];
    assert!(
        c.topic
            .starts_with("homeassistant/sensor/weir_pi-01/air_temperature_"),
        "{}",
        c.topic
    );
    assert_eq!(c.class, Class::Alert);
    let v = json(c);
    assert_eq!(v["unit_of_measurement"], "°C");
    assert_eq!(v["device_class"], "temperature");
    assert_eq!(v["state_topic"], "weir/pi-01/ha/air/temperature");
    assert_eq!(v["value_template"], "{{ value_json.mean }}");
    assert_eq!(v["unique_id"], "weir_pi-01_air/temperature");
    assert_eq!(v["device"]["identifiers"][0], "weir_pi-01");
    assert_eq!(v["availability"][0]["topic"], "weir/pi-01/status");
    let states = find(&msgs, "weir/pi-01/ha/air/temperature");
    assert_eq!(states.len(), 2);
    assert_eq!(json(states[1])["mean"], 22.5);
    assert_eq!(json(states[1])["last"], 23.5);
    assert_eq!(
        states[1].supersede_key.as_deref(),
        Some("ha:weir/pi-01/ha/air/temperature"),
        "a newer state replaces an unsent older one"
    );
}

#[test]
fn a_late_revision_of_an_older_window_does_not_replace_the_newest_state() {
    let mut h = ha(vec![], None);
    let mut msgs = Vec::new();
    h.pane(
        &pane("air", "temperature", 21.0, 120_000, 0),
        [].into_iter(),
        1,
        &mut msgs,
    );
    msgs.clear();
    h.pane(
        &pane("air", "temperature", 30.0, 60_000, 1),
        [].into_iter(),
        2,
        &mut msgs,
    );
    assert!(msgs.is_empty(), "{msgs:?}");
    h.pane(
        &pane("air", "temperature", 25.0, 120_000, 1),
        [].into_iter(),
        3,
        &mut msgs,
    );
    assert_eq!(
        json(&msgs[0])["mean"],
        25.0,
        "a later revision of the newest window does"
    );
}

#[test]
fn each_matching_detector_is_a_binary_sensor_off_until_its_alert_is_raised() {
    let mut h = ha(vec![spec("hot", "air"), spec("cold", "soil")], None);
    let mut msgs = Vec::new();
    h.pane(
        &pane("air", "temperature", 21.0, 60_000, 0),
        [].into_iter(),
        1,
        &mut msgs,
    );
    let binary = find(&msgs, "homeassistant/binary_sensor/");
    assert_eq!(
        binary.len(),
        1,
        "only the detector of this sensor: {msgs:?}"
    );
    let v = json(binary[0]);
    assert_eq!(v["device_class"], "problem");
    assert_eq!(v["state_topic"], "weir/pi-01/ha/air/temperature/hot");
    let off = find(&msgs, "weir/pi-01/ha/air/temperature/hot");
    assert_eq!(json(off[0])["state"], "OFF");

    msgs.clear();
    h.alert(&alert("air", "hot", AlertState::Raised), 2, &mut msgs);
    assert_eq!(msgs.len(), 1, "already announced: {msgs:?}");
    let on = json(&msgs[0]);
    assert_eq!(on["state"], "ON");
    assert_eq!(on["reason"], "value 41.5 above high 35");
    assert_eq!(on["since"], 5000);
    assert_eq!(msgs[0].class, Class::Alert);

    msgs.clear();
    h.alert(&alert("air", "hot", AlertState::Cleared), 3, &mut msgs);
    assert_eq!(json(&msgs[0])["state"], "OFF");
}

#[test]
fn an_alert_still_raised_across_a_restart_is_announced_on() {
    let mut h = ha(vec![spec("hot", "air")], None);
    let raised = alert("air", "hot", AlertState::Raised);
    let mut msgs = Vec::new();
    let p = pane("air", "temperature", 21.0, 60_000, 0);
    h.pane(&p, [&raised].into_iter(), 1, &mut msgs);
    let state = find(&msgs, "weir/pi-01/ha/air/temperature/hot");
    assert_eq!(json(state[0])["state"], "ON");
}

#[test]
fn an_alert_of_an_unannounced_detector_announces_it_first() {
    let mut h = ha(vec![], None);
    let mut msgs = Vec::new();
    h.alert(
        &alert("air", "sensor-failure", AlertState::Raised),
        1,
        &mut msgs,
    );
    assert_eq!(msgs.len(), 2);
    assert!(
        msgs[0]
            .topic
            .starts_with("homeassistant/binary_sensor/weir_pi-01/air_temperature_sensor-failure_")
    );
    assert_eq!(json(&msgs[1])["state"], "ON");
}

#[test]
fn the_device_has_backlog_and_link_diagnostics_read_from_the_status_topic() {
    let mut h = ha(vec![], None);
    let mut msgs = Vec::new();
    h.start(|_| true, 1, &mut msgs);
    assert_eq!(msgs.len(), 2);
    let backlog = json(&msgs[0]);
    assert_eq!(backlog["entity_category"], "diagnostic");
    assert_eq!(backlog["state_topic"], "weir/pi-01/status");
    assert_eq!(backlog["value_template"], "{{ value_json.backlog }}");
    let link = json(&msgs[1]);
    assert_eq!(link["device_class"], "connectivity");
    assert!(
        link.get("availability").is_none(),
        "the link is off, not unavailable"
    );
}

#[test]
fn a_sensor_or_detector_no_longer_configured_gets_an_empty_retained_config_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = ha(vec![spec("hot", "*")], Some(dir.path()));
    let mut msgs = Vec::new();
    h.start(|_| true, 1, &mut msgs);
    for s in ["air", "soil"] {
        h.pane(
            &pane(s, "temperature", 21.0, 60_000, 0),
            [].into_iter(),
            1,
            &mut msgs,
        );
    }
    let announced: Vec<String> = find(&msgs, "/config")
        .iter()
        .map(|m| m.topic.clone())
        .collect();
    assert_eq!(
        announced.len(),
        6,
        "2 diagnostics, 2 sensors, 2 binary sensors"
    );
    h.committed();

    // Restart without `soil` and without the detector.
    let mut h = ha(vec![], Some(dir.path()));
    let mut msgs = Vec::new();
    h.start(|s| s == "air", 2, &mut msgs);
    let empty: Vec<&NewMessage> = msgs.iter().filter(|m| m.payload.is_empty()).collect();
    let mut withdrawn: Vec<&str> = empty.iter().map(|m| m.topic.as_str()).collect();
    withdrawn.sort();
    let mut expected: Vec<&str> = (announced.iter())
        .filter(|t| t.contains("soil") || t.contains("_hot_"))
        .map(String::as_str)
        .collect();
    expected.sort();
    assert_eq!(withdrawn, expected);
    assert!(
        empty
            .iter()
            .all(|m| m.supersede_key == Some(format!("ha:{}", m.topic)))
    );
    h.committed();

    // Withdrawn for good: the next start does not withdraw them again.
    let mut h = ha(vec![], Some(dir.path()));
    let mut msgs = Vec::new();
    h.start(|s| s == "air", 3, &mut msgs);
    assert!(msgs.iter().all(|m| !m.payload.is_empty()), "{msgs:?}");
}

/// Results may go out from the outbox's memory before any checkpoint (and a SIGKILL may
/// come before one): an entity is remembered before its config leaves, so a start after
/// a crash still withdraws it.
#[test]
fn an_entity_is_remembered_before_its_config_goes_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = ha(vec![], Some(dir.path()));
    let mut msgs = Vec::new();
    h.pane(
        &pane("soil", "temperature", 21.0, 60_000, 0),
        [].into_iter(),
        1,
        &mut msgs,
    );
    assert!(
        msgs.iter()
            .any(|m| m.topic.ends_with("/config") && !m.payload.is_empty())
    );
    // What the pipeline does before the messages leave.
    h.before_send();
    // No commit, no clean stop: the restart without the sensor withdraws its entity.
    let mut h = ha(vec![], Some(dir.path()));
    let mut msgs = Vec::new();
    h.start(|_| false, 2, &mut msgs);
    assert!(
        msgs.iter()
            .any(|m| m.topic.ends_with("/config") && m.payload.is_empty()),
        "{msgs:?}"
    );
}

#[test]
fn an_unreadable_store_is_reported_and_withdraws_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(STORE_FILE), b"{not json").expect("write");
    let mut h = ha(vec![], Some(dir.path()));
    let mut msgs = Vec::new();
    h.start(|_| false, 1, &mut msgs);
    assert_eq!(msgs.len(), 2, "only the diagnostics: {msgs:?}");
}

#[test]
fn object_ids_use_allowed_characters_and_stay_distinct() {
    let mut h = ha(vec![], None);
    let mut msgs = Vec::new();
    h.pane(
        &pane("a.b", "c", 1.0, 1000, 0),
        [].into_iter(),
        1,
        &mut msgs,
    );
    h.pane(
        &pane("a_b", "c", 1.0, 1000, 0),
        [].into_iter(),
        1,
        &mut msgs,
    );
    let topics: Vec<&str> = find(&msgs, "/config")
        .iter()
        .map(|m| m.topic.as_str())
        .collect();
    assert_eq!(topics.len(), 2);
    assert_ne!(topics[0], topics[1]);
    for t in topics {
        let object = t.split('/').nth(3).unwrap_or("");
        assert!(
            object
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            "{t}"
        );
    }
}

#[test]
fn units_come_from_the_metric_name_unless_configured() {
    let none = BTreeMap::new();
    assert_eq!(
        unit_of("humidity", &none),
        (Some("%".into()), Some("humidity"))
    );
    assert_eq!(
        unit_of("pressure", &none),
        (Some("hPa".into()), Some("pressure"))
    );
    assert_eq!(
        unit_of("voltage", &none),
        (Some("V".into()), Some("voltage"))
    );
    assert_eq!(
        unit_of("current", &none),
        (Some("A".into()), Some("current"))
    );
    assert_eq!(unit_of("level", &none), (None, None));
    let mv = BTreeMap::from([("voltage".to_string(), "mV".to_string())]);
    assert_eq!(
        unit_of("voltage", &mv),
        (Some("mV".into()), Some("voltage"))
    );
}

#[test]
fn state_last_reads_the_latest_reading() {
    let mut h = HomeAssistant::new(
        HaConfig {
            state: StateValue::Last,
            ..cfg()
        },
        "pi-01",
        "weir/pi-01",
        vec![],
        None,
    );
    let mut msgs = Vec::new();
    h.pane(
        &pane("air", "temperature", 21.0, 1000, 0),
        [].into_iter(),
        1,
        &mut msgs,
    );
    assert_eq!(json(&msgs[0])["value_template"], "{{ value_json.last }}");
    assert_eq!(
        h.retained_prefixes(),
        ["homeassistant/".to_string(), "weir/pi-01/ha/".to_string()]
    );
}
