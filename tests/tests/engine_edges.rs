//! Edges of the engine seen from upstream, with the real binary and a real
//! broker: session windows whose readings are exactly one gap apart with
//! `max_out_of_orderness = 0`, and aggregates of readings at the ends of the
//! double range.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use weir_tests::{Broker, Config, Consumer, Msg, Weir, now_ms, scratch, toml};

const WAIT: Duration = Duration::from_secs(30);

/// A config whose MQTT ingest maps `sensors/<sensor>/<metric>`; `engine` sets
/// the `[engine]` and `[engine.window]` keys of the scenario.
fn config(dir: &Path, port: u16, engine: impl FnOnce(Config) -> Config) -> PathBuf {
    engine(
        Config::new("edge", dir)
            .set("agent", "shutdown_grace", "3s")
            .upstream(port)
            .set("uplink", "status_interval", "1s")
            .ingest(port, "edge-ingest")
            .topic("sensors/+/+", "{2}", "{3}"),
    )
    .write()
}

/// Starts a broker, a consumer of everything Weir publishes, and Weir; waits
/// until Weir is online.
fn start(dir: &Path, engine: impl FnOnce(Config) -> Config) -> (Broker, Consumer, Weir) {
    let broker = Broker::start_new(dir);
    let consumer = Consumer::connect(broker.port, "weir/edge/#", None);
    let weir = Weir::start(&config(dir, broker.port, engine), dir);
    consumer
        .wait_until("status online", WAIT, |m| {
            m.iter()
                .any(|m| m.topic == "weir/edge/status" && m.json["state"] == "online")
        })
        .unwrap_or_else(|e| panic!("{e}\nweir log:\n{}", weir.log()));
    // The agent's ingest subscription follows its status.
    std::thread::sleep(Duration::from_millis(500));
    (broker, consumer, weir)
}

fn publish(consumer: &Consumer, sensor: &str, value: &str, ts: i64) {
    consumer.publish(
        &format!("sensors/{sensor}/v"),
        format!(r#"{{"value": {value}, "ts": {ts}}}"#),
    );
}

/// Every pane received for `sensor`.
fn panes_of(msgs: &[Msg], sensor: &str) -> Vec<Value> {
    msgs.iter()
        .filter(|m| m.topic == format!("weir/edge/agg/{sensor}/v"))
        .map(|m| m.json.clone())
        .collect()
}

/// Waits for the pane with `id` and returns it.
fn wait_pane(consumer: &Consumer, weir: &Weir, id: &str) -> Value {
    let msgs = consumer
        .wait_until(id, WAIT, |m| m.iter().any(|m| m.json["id"] == id))
        .unwrap_or_else(|e| panic!("{e}\nweir log:\n{}", weir.log()));
    msgs.iter()
        .find(|m| m.json["id"] == id)
        .map(|m| m.json.clone())
        .unwrap_or_else(|| unreachable!())
}

fn num(pane: &Value, field: &str) -> f64 {
    pane[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is not a number in {pane}"))
}

#[test]
fn readings_one_gap_apart_with_no_out_of_orderness_make_one_session_in_either_order() {
    let dir = scratch();
    let (_broker, consumer, weir) = start(dir.path(), |c| {
        c.engine(toml! { max_out_of_orderness = "0ms", allowed_lateness = "0ms" })
            .table(
                "engine.window",
                toml! { kind = "session", gap = "500ms", max_length = "1h" },
            )
            .unset("engine.window", "size")
    });
    // Whole seconds a while ago, within the clock guards. Sessions are cut at
    // whole hours (max_length): with a whole-second t0 no cut falls inside
    // [t0, t0 + 1000).
    let t0 = (now_ms() / 1000 - 30) * 1000;
    // Sensor `up` gets ts 0 then 500; sensor `down` 500 then 0.
    publish(&consumer, "up", "1", t0);
    publish(&consumer, "up", "2", t0 + 500);
    publish(&consumer, "down", "2", t0 + 500);
    publish(&consumer, "down", "1", t0);
    // Far enough on to fire both sessions.
    publish(&consumer, "up", "0", t0 + 3_000);
    publish(&consumer, "down", "0", t0 + 3_000);

    for sensor in ["up", "down"] {
        let id = format!("edge/{sensor}/v/{t0}-{}", t0 + 1000);
        let pane = wait_pane(&consumer, &weir, &id);
        assert_eq!(pane["count"], 2, "{pane}");
        assert_eq!(num(&pane, "sum"), 3.0, "{pane}");
        assert_eq!(pane["revision"], 0, "{pane}");
        assert_eq!(pane["timing"], "on_time", "{pane}");
        assert_eq!(pane["final"], true, "{pane}");
        let all = panes_of(&consumer.messages(), sensor);
        assert_eq!(
            all.len(),
            1,
            "{sensor}: one session, no pane of a split or premature one: {all:?}"
        );
    }
}

#[test]
fn readings_at_the_ends_of_the_double_range_give_finite_right_aggregates() {
    let dir = scratch();
    let (_broker, consumer, weir) = start(dir.path(), |c| {
        c.engine(toml! { max_out_of_orderness = "0ms" })
    });
    let t0 = (now_ms() / 1000 - 30) * 1000;
    // 1e288 is the largest magnitude a reading may have (MAX_ABS_VALUE):
    // squares of its deviations, and sums of 1e288 and more, overflow a double.
    let windows: [(&str, &[&str]); 4] = [
        ("twice", &["1e288", "1e288"]),
        ("opposite", &["1e288", "-1e288"]),
        ("back", &["1e288", "1e288", "-1e288", "4"]),
        // Beyond the bound: refused and published, the window keeps the rest.
        ("huge", &["1e308", "1e308", "2"]),
    ];
    for (sensor, values) in windows {
        for (i, v) in values.iter().enumerate() {
            publish(&consumer, sensor, v, t0 + 100 * i as i64);
        }
        publish(&consumer, sensor, "0", t0 + 1_500);
    }
    let pane = |sensor: &str| {
        wait_pane(
            &consumer,
            &weir,
            &format!("edge/{sensor}/v/{t0}-{}", t0 + 1000),
        )
    };

    let p = pane("twice");
    assert_eq!(p["count"], 2, "{p}");
    assert_eq!(num(&p, "sum"), 2e288, "{p}");
    assert_eq!(num(&p, "mean"), 1e288, "{p}");
    assert_eq!(num(&p, "stddev"), 0.0, "{p}");
    assert_eq!((num(&p, "min"), num(&p, "max")), (1e288, 1e288), "{p}");

    // Deviations of 1e288 square beyond every double; the stddev does not.
    let p = pane("opposite");
    assert_eq!(num(&p, "sum"), 0.0, "{p}");
    assert_eq!(num(&p, "mean"), 0.0, "{p}");
    assert_eq!(num(&p, "stddev"), 1e288, "{p}");

    let p = pane("back");
    assert_eq!(p["count"], 4, "{p}");
    assert_eq!(num(&p, "sum"), 1e288, "{p}");
    assert_eq!(num(&p, "mean"), 2.5e287, "{p}");
    // Population stddev of (1, 1, -1, 0) x 1e288, up to a few roundings.
    let want = (0.6875f64).sqrt() * 1e288;
    let sd = num(&p, "stddev");
    assert!(
        (sd / want - 1.0).abs() < 1e-12,
        "stddev {sd} vs {want}: {p}"
    );

    let p = pane("huge");
    assert_eq!((p["count"].as_i64(), num(&p, "sum")), (Some(1), 2.0), "{p}");
    let refused: Vec<Msg> = consumer
        .messages()
        .into_iter()
        .filter(|m| m.topic == "weir/edge/deadletter" && m.json["reason"] == "out_of_range")
        .collect();
    assert_eq!(
        refused.len(),
        2,
        "both 1e308 readings refused and published: {refused:?}"
    );
    assert!(
        refused.iter().all(|m| m.json["source"] == "huge/v"),
        "{refused:?}"
    );
}
