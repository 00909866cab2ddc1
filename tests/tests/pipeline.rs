//! The whole pipeline against a real broker: simulated sensors and MQTT
//! readings in, panes, alerts, late readings and dead letters out.

use std::time::Duration;

use serde_json::Value;
use weir_tests::{Broker, Config, Publisher, Recorder, Views, Weir, now_ms, scratch, toml};

const WAIT: Duration = Duration::from_secs(30);

fn config(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    Config::new("e2e", dir)
        .agent(toml! { shutdown_grace = "3s" })
        .engine(toml! { max_out_of_orderness = "200ms", allowed_lateness = "2s" })
        .upstream(port)
        .uplink(toml! { status_interval = "1s" })
        .ingest(port, "e2e-ingest")
        .topic("sensors/+/+", "{2}", "{3}")
        .sim(toml! {
            name = "sim1", metric = "temperature", interval = "100ms",
            seed = 7, base = 20.0, noise = 0.1,
        })
        .array(
            "sim.anomaly",
            toml! { kind = "spike", at = 20, length = 5, magnitude = 50.0 },
        )
        .detector(toml! {
            name = "too-hot", kind = "threshold", sensor = "sim*", metric = "temperature",
            high = 40.0, hysteresis = 1.0, clear_after = "300ms", severity = "critical",
        })
        .write()
}

#[test]
fn panes_alerts_late_readings_and_dead_letters_arrive_upstream() {
    let dir = scratch();
    let broker = Broker::start_new(dir.path());
    let upstream = Recorder::connect(broker.port, "weir/e2e/#");
    let input = Publisher::connect(broker.port);
    let mut weir = Weir::start(&config(dir.path(), broker.port), dir.path());

    // Wait for the agent's ingest to be subscribed: its status says online.
    upstream
        .wait_until("status online", WAIT, |m| m.last_online().is_some())
        .unwrap_or_else(|e| weir.fail(&e));
    std::thread::sleep(Duration::from_millis(500));

    // Known input for one window of sensors/lab/pressure, stamped by the device,
    // a second past so that it is neither in the future nor too late.
    let t0 = (now_ms() / 1000 - 30) * 1000;
    let reading = |v: f64, ts: i64| format!(r#"{{"value": {v}, "ts": {ts}}}"#);
    for (dt, v) in [(100, 10.0), (200, 20.0), (300, 30.0)] {
        input.publish("sensors/lab/pressure", reading(v, t0 + dt));
    }
    // Next window: moves the watermark to t0+1300 >= end, so [t0, t0+1000) fires.
    input.publish("sensors/lab/pressure", reading(5.0, t0 + 1500));
    let id = format!("e2e/lab/pressure/{t0}-{}", t0 + 1000);
    let pane = upstream
        .wait_map("the on-time pane", WAIT, |m| {
            m.panes().into_iter().find(|p| p.id == id)
        })
        .unwrap_or_else(|e| weir.fail(&e));
    assert_eq!(pane.topic, "weir/e2e/agg/lab/pressure");
    assert_eq!(pane.json["revision"], 0);
    assert_eq!(pane.json["timing"], "on_time");
    assert_eq!(pane.json["window_start"], t0);
    assert_eq!(pane.json["window_end"], t0 + 1000);
    assert_eq!(pane.json["count"], 3);
    assert_eq!(pane.num("sum"), 60.0);
    assert_eq!(pane.num("min"), 10.0);
    assert_eq!(pane.num("max"), 30.0);
    assert_eq!(pane.num("mean"), 20.0);
    assert_eq!(pane.num("first"), 10.0);
    assert_eq!(pane.num("last"), 30.0);
    assert!(
        (pane.num("stddev") - (200.0f64 / 3.0).sqrt()).abs() < 1e-9,
        "{}",
        pane.json
    );

    // A late reading within the allowed lateness re-emits the full result as revision 1.
    input.publish("sensors/lab/pressure", reading(40.0, t0 + 50));
    let late = upstream
        .wait_map("the late pane", WAIT, |m| m.pane(&id, 1))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(late.json["timing"], "late");
    assert_eq!(late.json["count"], 4);
    assert_eq!(late.num("sum"), 100.0);
    assert_eq!(late.num("max"), 40.0);
    // It was stamped before the others: it becomes `first`; `last` stays 30.
    assert_eq!(
        late.num("first"),
        40.0,
        "first is by event time: {}",
        late.json
    );
    assert_eq!(
        late.num("last"),
        30.0,
        "last is by event time: {}",
        late.json
    );

    // Past end + lateness: the reading goes to the late topic, with how late it was.
    input.publish("sensors/lab/pressure", reading(1.0, t0 + 10_000));
    input.publish("sensors/lab/pressure", reading(99.0, t0 + 600));
    let l = upstream
        .wait_map("a late reading", WAIT, |m| m.lates().into_iter().next())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(l["value"].as_f64(), Some(99.0), "{l}");
    assert_eq!(l["ts"], t0 + 600);
    // watermark t0+9800, window end + lateness t0+3000.
    assert_eq!(l["late_by_ms"], 6800);

    // A malformed payload is dead-lettered, with its reason, and the agent keeps running.
    input.publish("sensors/lab/pressure", "twenty-one");
    let dl = upstream
        .wait_map("a dead letter", WAIT, |m| {
            m.dead_letters().into_iter().next()
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(dl.reason, "not_a_number");
    assert_eq!(dl.json["payload"], "twenty-one");
    assert_eq!(dl.source, "sensors/lab/pressure");
    // Every other kind of bad input is dead-lettered with its own reason, and counted.
    input.publish("sensors/lab/pressure", "NaN");
    input.publish("sensors/lab/pressure", vec![b'7'; 5000]);
    input.publish("sensors/lab/pressure", vec![0xff, 0xfe, b'1']);
    input.publish("sensors/lab/pressure", r#"{"value": 1, "ts": 1e20}"#);
    input.publish("sensors/lab/pressure", reading(1.0, now_ms() + 3_600_000));
    let want = [
        "non_finite",
        "too_large",
        "not_utf8",
        "bad_timestamp",
        "future_skew",
    ];
    let dead = upstream
        .wait_map("five more dead letters", WAIT, |m| {
            let d = m.dead_letters();
            want.iter()
                .all(|r| d.iter().any(|d| d.reason == *r))
                .then_some(d)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let by = |reason: &str| {
        dead.iter()
            .find(|d| d.reason == reason)
            .unwrap_or_else(|| unreachable!())
    };
    assert_eq!(
        by("future_skew").source,
        "lab/pressure",
        "quarantine names the key"
    );
    assert!(
        by("too_large").json["payload"]
            .as_str()
            .is_some_and(|p| p.len() < 300),
        "dead letters stay small"
    );
    // A plain number still works after it (arrival time).
    input.publish("sensors/lab/humidity", "55.5");

    // The simulated spike (samples 20..25, +50 over 20) raises the threshold alert, and it clears.
    let topic = Some("weir/e2e/alert/sim1/temperature");
    let alerts = upstream
        .wait_map("alert raised and cleared", WAIT, |m| {
            let a = m.alerts(topic);
            a.iter().any(|a| a.state == "cleared").then_some(a)
        })
        .unwrap_or_else(|e| weir.fail(&e));
    assert_eq!(alerts[0].state, "raised");
    assert_eq!(alerts[0].json["detector"], "too-hot");
    assert_eq!(alerts[0].json["severity"], "critical");
    assert!(
        alerts[0].json["value"].as_f64().is_some_and(|v| v > 60.0),
        "{}",
        alerts[0].json
    );
    assert_eq!(alerts[1].state, "cleared");
    assert_eq!(alerts[1].id, alerts[0].id, "one id for the episode");
    assert_eq!(alerts.len(), 2, "one spike, one episode: {alerts:?}");

    // Simulated windows flow too, with plausible aggregates (10 samples per second).
    let sim_panes = upstream.on("/agg/sim1/temperature");
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
    let msgs = upstream
        .wait_until("a status counting the bad input", WAIT, |m| {
            m.statuses().iter().any(|s| counted(&s.json["counters"]))
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let last = msgs.last_online().unwrap_or_else(|| unreachable!());
    let counters = &last.json["counters"];
    assert!(last.counter("readings") > 0, "{counters}");
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
    weir.stop_ok(WAIT);
    let later = Recorder::connect(broker.port, "weir/e2e/status");
    let st = later
        .wait_map("retained status", WAIT, |m| m.statuses().into_iter().next())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(st.retain);
    assert_eq!(st.state, "offline");
}

#[test]
fn the_last_will_marks_the_device_offline_when_the_agent_dies() {
    let dir = scratch();
    let broker = Broker::start_new(dir.path());
    let upstream = Recorder::connect(broker.port, "weir/e2e/status");
    let mut weir = Weir::start(&config(dir.path(), broker.port), dir.path());
    upstream
        .wait_until("status online", WAIT, |m| m.last_online().is_some())
        .unwrap_or_else(|e| weir.fail(&e));
    weir.kill9();
    // The broker notices the dead connection (socket closed) and publishes the will.
    let will = upstream
        .wait_map("the last will", WAIT, |m| {
            m.statuses().into_iter().find(|s| s.state == "offline")
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(will.json["device"], "e2e");
    // And it is retained: a consumer arriving later sees the device is down.
    let later = Recorder::connect(broker.port, "weir/e2e/status");
    let st = later
        .wait_map("retained status", WAIT, |m| m.statuses().into_iter().next())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(st.retain);
    assert_eq!(st.state, "offline");
}

/// An episode open when weir stops, whose detector is gone from the config at the
/// next start, is ended with a `cleared` (same id, the reason saying why) instead of
/// staying raised for ever for the consumers (a Home Assistant problem sensor, say).
#[test]
fn an_open_alert_whose_detector_was_removed_is_cleared_at_the_next_start() {
    let dir = scratch();
    let broker = Broker::start_new(dir.path());
    let upstream = Recorder::connect(broker.port, "weir/swap/#");
    let input = Publisher::connect(broker.port);
    let base = || {
        Config::new("swap", dir.path())
            .agent(toml! { shutdown_grace = "3s" })
            .upstream(broker.port)
            .uplink(toml! { status_interval = "1s" })
            .ingest(broker.port, "swap-ingest")
            .topic("sensors/+/+", "{2}", "{3}")
    };
    let before = base()
        .detector(toml! {
            name = "too-hot", kind = "threshold", sensor = "boiler", metric = "temperature",
            high = 40.0, hysteresis = 1.0,
        })
        .write();
    let mut weir = Weir::start(&before, dir.path());
    upstream
        .wait_until("status online", WAIT, |m| m.last_online().is_some())
        .unwrap_or_else(|e| weir.fail(&e));
    std::thread::sleep(Duration::from_millis(500));
    let reading = format!(r#"{{"value": 55.0, "ts": {}}}"#, now_ms() - 1000);
    input.publish("sensors/boiler/temperature", reading);
    let raised = upstream
        .wait_map("the alert raised", WAIT, |m| {
            m.alerts(None).into_iter().find(|a| a.state == "raised")
        })
        .unwrap_or_else(|e| weir.fail(&e));
    weir.stop_ok(WAIT);

    // Same sensors, another detector: the threshold's episode cannot go on.
    let after = base()
        .detector(
            toml! { name = "unusual", kind = "zscore", sensor = "boiler", metric = "temperature" },
        )
        .write();
    let mut weir = Weir::start(&after, dir.path());
    let cleared = upstream
        .wait_map("the orphaned episode cleared", WAIT, |m| {
            m.alerts(None)
                .into_iter()
                .find(|a| a.state == "cleared" && a.id == raised.id)
        })
        .unwrap_or_else(|e| weir.fail(&e));
    assert_eq!(cleared.kind, "threshold", "{}", cleared.json);
    assert_eq!(cleared.json["detector"], "too-hot");
    assert!(
        cleared.json["reason"]
            .as_str()
            .is_some_and(|r| r.contains("detectors configured for boiler/temperature changed")),
        "{}",
        cleared.json
    );
    assert_eq!(
        upstream.with(|m| m.alerts(None).len()),
        2,
        "one raised, one cleared"
    );
    weir.stop_ok(WAIT);
}
