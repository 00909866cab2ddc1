//! `weir backtest` over a recorded file gives the panes, alerts, late and
//! quarantined readings that the live daemon publishes when the same readings
//! arrive over MQTT in the same order.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;
use weir_tests::{
    Broker, Config, Msg, Publisher, Recorder, Views, Weir, cli, now_ms, scratch, toml,
};

const WAIT: Duration = Duration::from_secs(60);

fn config(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    Config::new("bt", dir)
        .agent(toml! { shutdown_grace = "2s" })
        // The daemon's wall clock is now, the backtest's is the recording's: only
        // settings that do not depend on it may differ in effect, so idleness is off.
        .engine(toml! {
            max_out_of_orderness = "1s", allowed_lateness = "3s", max_future_skew = "1h",
            idle_timeout = "off", quantiles = true,
        })
        .set("engine.window", "size", "2s")
        .upstream(port)
        .uplink(toml! { status_interval = "1s" })
        .ingest(port, "bt-ingest")
        .topic("sensors/+/+", "{2}", "{3}")
        .detector(toml! { name = "hot", kind = "threshold", high = 40.0, hysteresis = 1.0 })
        .detector(
            toml! { name = "z", kind = "zscore", warmup = 3, threshold = 3.0, min_stddev = 0.05 },
        )
        .write()
}

/// 600 readings of three sensors, two hours old: jitter within D, some late
/// within L, some too late, duplicates, a spike, and one stamped a year ahead.
fn recording() -> Vec<(String, f64, i64)> {
    let t0 = (now_ms() / 1000 - 7200) * 1000;
    let mut x: u64 = 42;
    let mut rnd = |n: u64| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) % n
    };
    let mut out = Vec::new();
    for i in 0..600i64 {
        let sensor = format!("s{}", i % 3);
        let mut ts = t0 + (i / 3) * 200 - rnd(800) as i64;
        match rnd(40) {
            0 => ts -= 2_500, // late within the allowed lateness, or just past it
            1 => ts -= 9_000, // too late
            _ => {}
        }
        let mut value = 20.0 + rnd(100) as f64 / 100.0;
        if i == 301 {
            value = 55.0;
        }
        if (330..345).contains(&i) && i % 3 == 1 {
            value = 26.0; // a level shift for the z-score
        }
        out.push((sensor.clone(), value, ts));
        if rnd(50) == 0 {
            out.push((sensor, value, ts)); // a duplicate delivery
        }
    }
    out.insert(400, ("s2".into(), 21.0, now_ms() + 365 * 24 * 3_600_000));
    out
}

/// What a record means, without the fields that legitimately differ between a
/// run and a replay (`emitted_at`; diagnostics' `msg_id` and arrival times).
fn normalized(v: &Value) -> (String, Value) {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("emitted_at");
        match o.get("type").and_then(Value::as_str) {
            Some("late") => {
                o.remove("msg_id");
            }
            Some("deadletter") => {
                for f in ["msg_id", "received_at", "detail"] {
                    o.remove(f);
                }
            }
            _ => {}
        }
    }
    let key = match v["type"].as_str() {
        Some("pane") | Some("alert") => v["msg_id"].as_str().unwrap_or("").to_string(),
        _ => v.to_string(),
    };
    (key, v)
}

#[test]
fn backtest_gives_what_the_daemon_publishes_for_the_same_readings() {
    let dir = scratch();
    let broker = Broker::start_new(dir.path());
    let cfg = config(dir.path(), broker.port);
    let readings = recording();

    // The recording as a CSV file, in arrival order.
    let csv = dir.path().join("recording.csv");
    let mut text = String::from("sensor,metric,value,ts\n");
    for (s, v, ts) in &readings {
        text.push_str(&format!("{s},temp,{v},{ts}\n"));
    }
    std::fs::write(&csv, text).unwrap_or_else(|e| panic!("{e}"));
    let bt = cli([
        "backtest".as_ref(),
        "--no-scores".as_ref(),
        "--config".as_ref(),
        cfg.as_os_str(),
        csv.as_os_str(),
    ]);
    assert_eq!(bt.code, Some(0), "{}", bt.stderr);
    let expected: Vec<Value> = bt
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let count = |t: &str| expected.iter().filter(|v| v["type"] == t).count();
    assert!(count("pane") > 50, "{}", count("pane"));
    assert!(
        expected
            .iter()
            .any(|v| v["type"] == "pane" && v["revision"] == 1)
    );
    assert!(count("alert") >= 2, "threshold and z-score alerts");
    assert!(count("late") > 3);
    assert_eq!(count("deadletter"), 1, "the reading from next year");

    // The same readings, live.
    let consumer = Recorder::connect(broker.port, "weir/bt/#");
    let mut weir = Weir::start(&cfg, dir.path());
    consumer
        .wait_until("status online", WAIT, |m| m.last_online().is_some())
        .unwrap_or_else(|e| weir.fail(&e));
    std::thread::sleep(Duration::from_millis(500));
    Publisher::connect(broker.port).publish_all(readings.iter().map(|(s, v, ts)| {
        (
            format!("sensors/{s}/temp"),
            format!(r#"{{"value": {v}, "ts": {ts}}}"#),
        )
    }));

    // Panes may skip revisions live (an unsent revision is replaced by a newer
    // one): compare the highest revision of every window, and everything else
    // message for message.
    let summarize = |records: Vec<Value>| {
        let mut panes: BTreeMap<String, Value> = BTreeMap::new();
        let mut rest: BTreeSet<String> = BTreeSet::new();
        for v in records {
            if v["type"] == "status" {
                continue;
            }
            if v["type"] == "pane" {
                let id = v["id"].as_str().unwrap_or("").to_string();
                let newer = panes
                    .get(&id)
                    .is_none_or(|p| p["revision"].as_u64() < v["revision"].as_u64());
                if newer {
                    panes.insert(id, normalized(&v).1);
                }
            } else {
                rest.insert(normalized(&v).1.to_string());
            }
        }
        (panes, rest)
    };
    let want = summarize(expected);
    let live = |m: &[Msg]| summarize(m.iter().map(|m| m.json.clone()).collect());
    let got = consumer.wait_until("everything the backtest predicts", WAIT, |m| {
        live(m) == want
    });
    if got.is_err() {
        let (panes, rest) = live(&consumer.messages());
        let missing: Vec<_> = want.1.difference(&rest).take(3).collect();
        let extra: Vec<_> = rest.difference(&want.1).take(3).collect();
        let differing: Vec<_> = want
            .0
            .iter()
            .filter(|(id, v)| panes.get(*id) != Some(v))
            .take(3)
            .map(|(id, v)| (v.clone(), panes.get(id).cloned()))
            .collect();
        panic!(
            "live output differs from the backtest\nmissing: {missing:#?}\nextra: {extra:#?}\npanes (want, got): {differing:#?}\nweir log:\n{}",
            weir.log()
        );
    }
    // Nothing more trickles in afterwards.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        live(&consumer.messages()) == want,
        "extra messages after the match"
    );
    weir.terminate(Duration::from_secs(10));
}
