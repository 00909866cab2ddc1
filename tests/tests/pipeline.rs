//! The whole pipeline against a real broker: simulated sensors and MQTT
//! readings in, panes, alerts, late readings and dead letters out.

use std::time::Duration;

use serde_json::Value;
use weir_tests::{Broker, Consumer, Msg, Weir, now_ms, scratch};

const WAIT: Duration = Duration::from_secs(30);

fn config(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    let text = format!(
        r#"
[agent]
device = "e2e"
state_dir = "{state}"
shutdown_grace = "3s"

[engine]
max_out_of_orderness = "200ms"
allowed_lateness = "2s"
[engine.window]
size = "1s"

[uplink]
port = {port}
host = "127.0.0.1"
reconnect_min = "100ms"
reconnect_max = "1s"
status_interval = "1s"

[ingest]
host = "127.0.0.1"
port = {port}
client_id = "e2e-ingest"
[[ingest.topic]]
filter = "sensors/+/+"
sensor = "{{2}}"
metric = "{{3}}"

[[sim]]
name = "sim1"
metric = "temperature"
interval = "100ms"
seed = 7
base = 20.0
noise = 0.1
[[sim.anomaly]]
kind = "spike"
at = 20
length = 5
magnitude = 50.0

[[detector]]
name = "too-hot"
kind = "threshold"
sensor = "sim*"
metric = "temperature"
high = 40.0
hysteresis = 1.0
clear_after = "300ms"
severity = "critical"
"#,
        state = dir.join("state").display()
    );
    let path = dir.join("weir.toml");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path
}

fn num(m: &Msg, field: &str) -> f64 {
    m.json[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} missing in {}", m.json))
}

#[test]
fn panes_alerts_late_readings_and_dead_letters_arrive_upstream() {
    let dir = scratch();
    let broker = Broker::start_new(dir.path());
    let consumer = Consumer::connect(broker.port, "weir/e2e/#", None);
    let mut weir = Weir::start(&config(dir.path(), broker.port), dir.path());

    // Wait for the agent's ingest to be subscribed: its status says online.
    consumer
        .wait_until("status online", WAIT, |m| {
            m.iter()
                .any(|m| m.topic == "weir/e2e/status" && m.json["state"] == "online")
        })
        .unwrap_or_else(|e| panic!("{e}\nweir log:\n{}", weir.log()));
    std::thread::sleep(Duration::from_millis(500));

    // Known input for one window of sensors/lab/pressure, stamped by the device,
    // a second past so that it is neither in the future nor too late.
    let t0 = (now_ms() / 1000 - 30) * 1000;
    for (dt, v) in [(100, 10.0), (200, 20.0), (300, 30.0)] {
        consumer.publish(
            "sensors/lab/pressure",
            format!(r#"{{"value": {v}, "ts": {}}}"#, t0 + dt),
        );
    }
    // Next window: moves the watermark to t0+1300 >= end, so [t0, t0+1000) fires.
    consumer.publish(
        "sensors/lab/pressure",
        format!(r#"{{"value": 5, "ts": {}}}"#, t0 + 1500),
    );
    let id = format!("e2e/lab/pressure/{t0}-{}", t0 + 1000);
    let panes = consumer
        .wait_until("the on-time pane", WAIT, |m| {
            m.iter().any(|m| m.json["id"] == id.as_str())
        })
        .unwrap_or_else(|e| panic!("{e}\nweir log:\n{}", weir.log()));
    let pane = panes
        .iter()
        .find(|m| m.json["id"] == id.as_str())
        .cloned()
        .unwrap_or_else(|| unreachable!());
    assert_eq!(pane.topic, "weir/e2e/agg/lab/pressure");
    assert_eq!(pane.json["revision"], 0);
    assert_eq!(pane.json["timing"], "on_time");
    assert_eq!(pane.json["window_start"], t0);
    assert_eq!(pane.json["window_end"], t0 + 1000);
    assert_eq!(pane.json["count"], 3);
    assert_eq!(num(&pane, "sum"), 60.0);
    assert_eq!(num(&pane, "min"), 10.0);
    assert_eq!(num(&pane, "max"), 30.0);
    assert_eq!(num(&pane, "mean"), 20.0);
    assert_eq!(num(&pane, "first"), 10.0);
    assert_eq!(num(&pane, "last"), 30.0);
    assert!(
        (num(&pane, "stddev") - (200.0f64 / 3.0).sqrt()).abs() < 1e-9,
        "{}",
        pane.json
    );

    // A late reading within the allowed lateness re-emits the full result as revision 1.
    consumer.publish(
        "sensors/lab/pressure",
        format!(r#"{{"value": 40, "ts": {}}}"#, t0 + 50),
    );
    let msgs = consumer
        .wait_until("the late pane", WAIT, |m| {
            m.iter()
                .any(|m| m.json["id"] == id.as_str() && m.json["revision"] == 1)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let late = msgs
        .iter()
        .find(|m| m.json["id"] == id.as_str() && m.json["revision"] == 1)
        .cloned()
        .unwrap_or_else(|| unreachable!());
    assert_eq!(late.json["timing"], "late");
    assert_eq!(late.json["count"], 4);
    assert_eq!(num(&late, "sum"), 100.0);
    assert_eq!(num(&late, "max"), 40.0);
    // It was stamped before the others: it becomes `first`; `last` stays 30.
    assert_eq!(
        num(&late, "first"),
        40.0,
        "first is by event time: {}",
        late.json
    );
    assert_eq!(
        num(&late, "last"),
        30.0,
        "last is by event time: {}",
        late.json
    );

    // Past end + lateness: the reading goes to the late topic, with how late it was.
    consumer.publish(
        "sensors/lab/pressure",
        format!(r#"{{"value": 1, "ts": {}}}"#, t0 + 10_000),
    );
    consumer.publish(
        "sensors/lab/pressure",
        format!(r#"{{"value": 99, "ts": {}}}"#, t0 + 600),
    );
    let msgs = consumer
        .wait_until("a late reading", WAIT, |m| {
            m.iter().any(|m| m.topic == "weir/e2e/late")
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let l = msgs
        .iter()
        .find(|m| m.topic == "weir/e2e/late")
        .cloned()
        .unwrap_or_else(|| unreachable!());
    assert_eq!(num(&l, "value"), 99.0);
    assert_eq!(l.json["ts"], t0 + 600);
    // watermark t0+9800, window end + lateness t0+3000.
    assert_eq!(l.json["late_by_ms"], 6800);

    // A malformed payload is dead-lettered, with its reason, and the agent keeps running.
    consumer.publish("sensors/lab/pressure", "twenty-one");
    let msgs = consumer
        .wait_until("a dead letter", WAIT, |m| {
            m.iter().any(|m| m.topic == "weir/e2e/deadletter")
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let dl = msgs
        .iter()
        .find(|m| m.topic == "weir/e2e/deadletter")
        .cloned()
        .unwrap_or_else(|| unreachable!());
    assert_eq!(dl.json["reason"], "not_a_number");
    assert_eq!(dl.json["payload"], "twenty-one");
    assert_eq!(dl.json["source"], "sensors/lab/pressure");
    // Every other kind of bad input is dead-lettered with its own reason, and counted.
    consumer.publish("sensors/lab/pressure", "NaN");
    consumer.publish("sensors/lab/pressure", vec![b'7'; 5000]);
    consumer.publish("sensors/lab/pressure", vec![0xff, 0xfe, b'1']);
    consumer.publish("sensors/lab/pressure", r#"{"value": 1, "ts": 1e20}"#);
    consumer.publish(
        "sensors/lab/pressure",
        format!(r#"{{"value": 1, "ts": {}}}"#, now_ms() + 3_600_000),
    );
    let want = [
        "non_finite",
        "too_large",
        "not_utf8",
        "bad_timestamp",
        "future_skew",
    ];
    let msgs = consumer
        .wait_until("five more dead letters", WAIT, |m| {
            want.iter().all(|r| {
                m.iter()
                    .any(|m| m.topic == "weir/e2e/deadletter" && m.json["reason"] == *r)
            })
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let skewed = msgs
        .iter()
        .find(|m| m.json["reason"] == "future_skew")
        .cloned()
        .unwrap_or_else(|| unreachable!());
    assert_eq!(
        skewed.json["source"], "lab/pressure",
        "quarantine names the key"
    );
    let too_large = msgs
        .iter()
        .find(|m| m.json["reason"] == "too_large")
        .cloned()
        .unwrap_or_else(|| unreachable!());
    assert!(
        too_large.json["payload"]
            .as_str()
            .is_some_and(|p| p.len() < 300),
        "dead letters stay small"
    );
    // A plain number still works after it (arrival time).
    consumer.publish("sensors/lab/humidity", "55.5");

    // The simulated spike (samples 20..25, +50 over 20) raises the threshold alert, and it clears.
    let msgs = consumer
        .wait_until("alert raised and cleared", WAIT, |m| {
            m.iter().any(|m| {
                m.topic == "weir/e2e/alert/sim1/temperature" && m.json["state"] == "cleared"
            })
        })
        .unwrap_or_else(|e| panic!("{e}\nweir log:\n{}", weir.log()));
    let alerts: Vec<&Msg> = msgs
        .iter()
        .filter(|m| m.topic == "weir/e2e/alert/sim1/temperature")
        .collect();
    assert_eq!(alerts[0].json["state"], "raised");
    assert_eq!(alerts[0].json["detector"], "too-hot");
    assert_eq!(alerts[0].json["severity"], "critical");
    assert!(num(alerts[0], "value") > 60.0, "{}", alerts[0].json);
    assert_eq!(alerts[1].json["state"], "cleared");
    assert_eq!(
        alerts[1].json["id"], alerts[0].json["id"],
        "one id for the episode"
    );
    assert_eq!(alerts.len(), 2, "one spike, one episode: {alerts:?}");

    // Simulated windows flow too, with plausible aggregates (10 samples per second).
    let sim_panes = consumer.on("/agg/sim1/temperature");
    assert!(!sim_panes.is_empty());
    assert!(
        sim_panes.iter().all(|p| p.json["count"]
            .as_u64()
            .is_some_and(|c| (1..=12).contains(&c))),
        "{sim_panes:?}"
    );

    // The status message counts every one of them (it is refreshed every second).
    let counted =
        |c: &Value| c["deadletter"]["bad_timestamp"] == 1 && c["rejected"]["future_skew"] == 1;
    let msgs = consumer
        .wait_until("a status counting the bad input", WAIT, |m| {
            m.iter()
                .any(|m| m.topic == "weir/e2e/status" && counted(&m.json["counters"]))
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let counters: &Value = &msgs
        .iter()
        .rev()
        .find(|m| m.topic == "weir/e2e/status" && m.json["state"] == "online")
        .cloned()
        .unwrap_or_else(|| unreachable!())
        .json["counters"];
    assert!(counters["readings"].as_u64().unwrap_or(0) > 0, "{counters}");
    for reason in [
        "not_a_number",
        "non_finite",
        "too_large",
        "not_utf8",
        "bad_timestamp",
    ] {
        assert_eq!(counters["deadletter"][reason], 1, "{counters}");
    }
    assert_eq!(counters["rejected"]["future_skew"], 1, "{counters}");
    assert_eq!(counters["late"], 1, "{counters}");

    // Graceful stop: exit 0 and a retained offline status.
    let status = weir
        .terminate(WAIT)
        .unwrap_or_else(|| panic!("weir did not exit on SIGTERM\n{}", weir.log()));
    assert!(status.success(), "exit status {status:?}\n{}", weir.log());
    let late_consumer = Consumer::connect(broker.port, "weir/e2e/status", None);
    let st = late_consumer
        .wait_until("retained status", WAIT, |m| !m.is_empty())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(st[0].retain);
    assert_eq!(st[0].json["state"], "offline");
}

#[test]
fn the_last_will_marks_the_device_offline_when_the_agent_dies() {
    let dir = scratch();
    let broker = Broker::start_new(dir.path());
    let consumer = Consumer::connect(broker.port, "weir/e2e/status", None);
    let mut weir = Weir::start(&config(dir.path(), broker.port), dir.path());
    consumer
        .wait_until("status online", WAIT, |m| {
            m.iter().any(|m| m.json["state"] == "online")
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", weir.log()));
    weir.kill9();
    // The broker notices the dead connection (socket closed) and publishes the will.
    let msgs = consumer
        .wait_until("the last will", WAIT, |m| {
            m.iter().any(|m| m.json["state"] == "offline")
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let will = msgs
        .iter()
        .find(|m| m.json["state"] == "offline")
        .cloned()
        .unwrap_or_else(|| unreachable!());
    assert_eq!(will.json["device"], "e2e");
    // And it is retained: a consumer arriving later sees the device is down.
    let later = Consumer::connect(broker.port, "weir/e2e/status", None);
    let st = later
        .wait_until("retained status", WAIT, |m| !m.is_empty())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(st[0].retain);
    assert_eq!(st[0].json["state"], "offline");
}
