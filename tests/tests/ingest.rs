//! MQTT ingest formats against a real Mosquitto: captured-style payloads of
//! Tasmota, Zigbee2MQTT and plain publishers become readings (seen upstream as
//! window panes), and every bad input of docs/ingest.md is dead-lettered with
//! its reason.

use std::time::Duration;

use weir_tests::{Broker, Config, Msg, Publisher, Recorder, Toml, Weir, now_ms, scratch, toml};

const WAIT: Duration = Duration::from_secs(30);

fn config(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    let topic = |filter: &str, format: &str| {
        toml! { filter = filter, sensor = "{2}", format = format }.to_vec()
    };
    let mut shelly = topic("shelly/+/status", "multi");
    shelly.extend_from_slice(toml! {
        fields = Toml::raw(r#"{ power = "meters.0.power", temperature = "tmp.tC" }"#),
        ts_path = "unixtime",
    });
    Config::new("ing", dir)
        .agent(toml! { shutdown_grace = "2s" })
        .engine(toml! {
            max_out_of_orderness = "100ms", allowed_lateness = "0s", max_future_skew = "1h",
        })
        .upstream(port)
        .uplink(toml! { status_interval = "500ms" })
        .ingest(port, "ing-ingest")
        .set("ingest", "max_payload_bytes", 512)
        .array("ingest.topic", &topic("tele/+/SENSOR", "tasmota"))
        .array("ingest.topic", &topic("zigbee2mqtt/+", "zigbee2mqtt"))
        .array("ingest.topic", &shelly)
        .topic("home/+/+", "{2}", "{3}")
        .write()
}

/// Every bad input tried (the table in docs/ingest.md): topic, payload, reason.
fn bad_inputs() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    vec![
        ("home/bad1/t", vec![b'1'; 600], "too_large"),
        ("home/bad2/t", b"21.\xff".to_vec(), "not_utf8"),
        ("home/bad3/t", b"   ".to_vec(), "empty"),
        ("home/bad4/t", b"twenty".to_vec(), "not_a_number"),
        ("home/bad5/t", b"{\"value\": 21.5".to_vec(), "bad_json"),
        ("home/bad6/t", b"{\"temp\": 21.5}".to_vec(), "missing_value"),
        (
            "home/bad7/t",
            b"{\"value\": \"21.5\"}".to_vec(),
            "wrong_type",
        ),
        ("home/bad8/t", b"NaN".to_vec(), "non_finite"),
        ("home/bad9/t", b"-inf".to_vec(), "non_finite"),
        ("home/bad10/t", b"{\"value\": 1e999}".to_vec(), "non_finite"),
        (
            "home/bad11/t",
            b"{\"value\": 1, \"ts\": \"yesterday\"}".to_vec(),
            "bad_timestamp",
        ),
        (
            "home/bad12/t",
            b"{\"value\": 1, \"ts\": 99999999999999999}".to_vec(),
            "bad_timestamp",
        ),
        (
            "home/bad13/t",
            b"{\"value\": 1, \"value\": 2}".to_vec(),
            "bad_json",
        ),
        (
            "tele/bad14/SENSOR",
            b"{\"Time\":\"2026-11-21T10:00:00\",\"BME280\":{\"Temperature\":21.3".to_vec(),
            "bad_json",
        ),
        (
            "tele/bad15/SENSOR",
            b"{\"Time\":\"2026-11-21T10:00:00\",\"TempUnit\":\"C\"}".to_vec(),
            "missing_value",
        ),
        ("tele/bad16/SENSOR", b"[21.3]".to_vec(), "wrong_type"),
        (
            "zigbee2mqtt/bad17",
            b"{\"temperature\":21.5,\"last_seen\":\"2026-11-21 10:00\"}".to_vec(),
            "bad_timestamp",
        ),
        (
            "zigbee2mqtt/bad18",
            b"{\"temperature\":1e400}".to_vec(),
            "non_finite",
        ),
        ("zigbee2mqtt/bad19", b"\xfe\xff{}".to_vec(), "not_utf8"),
        (
            "shelly/bad20/status",
            b"{\"meters\":[{\"power\":\"12W\"}],\"unixtime\":1795251600}".to_vec(),
            "wrong_type",
        ),
        ("home//t", b"21.5".to_vec(), "unmapped_topic"),
    ]
}

fn pane_of<'a>(msgs: &'a [Msg], sensor: &str, metric: &str) -> Option<&'a Msg> {
    let topic = format!("weir/ing/agg/{sensor}/{metric}");
    msgs.iter().find(|m| m.topic == topic)
}

#[test]
fn tasmota_zigbee2mqtt_shelly_and_plain_payloads_become_readings_and_bad_ones_dead_letters() {
    let dir = scratch();
    let broker = Broker::start_new(dir.path());
    let consumer = Recorder::connect(broker.port, "weir/ing/#");
    let input = Publisher::connect(broker.port);
    let mut weir = Weir::start(&config(dir.path(), broker.port), dir.path());
    let fail = |e: String| weir.fail(&e);
    consumer
        .wait_until("status online", WAIT, |m| {
            m.iter().any(|m| m.topic == "weir/ing/status")
        })
        .unwrap_or_else(&fail);
    std::thread::sleep(Duration::from_millis(500));
    let t0 = (now_ms() / 1000 - 20) * 1000;
    for dt in [0, 2000] {
        let ts = t0 + dt;
        input.publish(
            "zigbee2mqtt/hall_sensor",
            format!(r#"{{"battery":97,"humidity":48.2,"linkquality":120,"temperature":21.5,"contact":true,"last_seen":{ts}}}"#),
        );
        input.publish(
            "shelly/plug-1/status",
            format!(
                r#"{{"meters":[{{"power":12.5,"is_valid":true}}],"tmp":{{"tC":31.0}},"unixtime":{}}}"#,
                ts / 1000
            ),
        );
        input.publish(
            "home/kitchen/temperature",
            format!(r#"{{"value": 19.5, "ts": {ts}}}"#),
        );
    }
    // Tasmota's Time is local time without an offset: readings get the arrival time.
    input.publish(
        "tele/plug-2/SENSOR",
        r#"{"Time":"2026-11-21T10:00:00","ENERGY":{"Total":1.5,"Power":42},"TempUnit":"C"}"#,
    );
    std::thread::sleep(Duration::from_millis(1500));
    input.publish(
        "tele/plug-2/SENSOR",
        r#"{"Time":"2026-11-21T10:00:02","ENERGY":{"Total":1.6,"Power":40},"TempUnit":"C"}"#,
    );
    for (topic, payload, _) in bad_inputs() {
        input.publish(topic, payload);
    }

    let wanted = [
        ("hall_sensor", "temperature", 21.5),
        ("hall_sensor", "contact", 1.0),
        ("hall_sensor", "battery", 97.0),
        ("plug-1", "power", 12.5),
        ("plug-1", "temperature", 31.0),
        ("kitchen", "temperature", 19.5),
        ("plug-2", "ENERGY.Power", 42.0),
    ];
    let msgs = consumer
        .wait_until("a pane per metric", WAIT, |m| {
            wanted.iter().all(|(s, k, _)| pane_of(m, s, k).is_some())
        })
        .unwrap_or_else(&fail);
    for (s, k, v) in wanted {
        let p = pane_of(&msgs, s, k).unwrap_or_else(|| unreachable!());
        assert_eq!(p.json["first"].as_f64(), Some(v), "{s}/{k}: {}", p.json);
    }
    // Device timestamps were used where the format has them.
    let z = pane_of(&msgs, "hall_sensor", "temperature").unwrap_or_else(|| unreachable!());
    assert_eq!(z.json["window_start"], t0);
    assert!(pane_of(&msgs, "plug-2", "Time").is_none());
    assert!(pane_of(&msgs, "plug-2", "TempUnit").is_none());

    let expected = bad_inputs();
    let msgs = consumer
        .wait_until("every dead letter", WAIT, |m| {
            m.iter()
                .filter(|m| m.topic == "weir/ing/deadletter")
                .count()
                >= expected.len()
        })
        .unwrap_or_else(&fail);
    for (topic, _, reason) in &expected {
        let d = msgs
            .iter()
            .find(|m| m.topic == "weir/ing/deadletter" && m.json["source"] == *topic)
            .unwrap_or_else(|| panic!("no dead letter for {topic}"));
        assert_eq!(d.json["reason"], *reason, "{topic}: {}", d.json);
    }
    let status = consumer
        .wait_until("counted dead letters", WAIT, |m| {
            m.iter().any(|m| {
                m.topic == "weir/ing/status"
                    && m.json["counters"]["deadletter"]["non_finite"].as_u64() == Some(4)
            })
        })
        .unwrap_or_else(&fail);
    assert!(!status.is_empty());
    assert!(weir.terminate(Duration::from_secs(10)).is_some());
}
