//! Local sensors end to end: the real `weir` binary runs the real BME280
//! driver against its register-level simulator (`sim = true`) with scripted
//! faults, and the alerts, panes and status arrive at a real broker; the
//! technician's `weir sensors` commands against the same config.

use std::time::Duration;

use weir_tests::{Broker, Config, Recorder, Weir, cli, scratch, toml};

const WAIT: Duration = Duration::from_secs(30);

fn config(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    Config::new("hw", dir)
        .agent(toml! { shutdown_grace = "2s" })
        .engine(toml! { max_out_of_orderness = "100ms" })
        .upstream(port)
        .uplink(toml! { status_interval = "500ms" })
        .array(
            "i2c",
            toml! {
                name = "air", chip = "bme280", interval = "50ms",
                fail_after = 3, max_backoff = "200ms", sim = true,
            },
        )
        // polls 20..40: the chip is gone, then comes back
        .array(
            "i2c.sim_fault",
            toml! { kind = "absent", at = 20, length = 20 },
        )
        // polls 60..90: the temperature register is frozen
        .array(
            "i2c.sim_fault",
            toml! { kind = "stuck", metric = "temperature", at = 60, length = 30 },
        )
        .detector(toml! {
            name = "stuck", kind = "flatline", metric = "temperature",
            stuck_for = "500ms", min_readings = 5,
        })
        .write()
}

#[test]
fn a_vanished_chip_raises_and_clears_sensor_failure_and_a_stuck_one_raises_flatline_upstream() {
    let dir = scratch();
    let broker = Broker::start_new(dir.path());
    let consumer = Recorder::connect(broker.port, "weir/hw/#");
    let cfg = config(dir.path(), broker.port);
    let mut weir = Weir::start(&cfg, dir.path());
    let fail = |e: String| weir.fail(&e);

    let alerts = consumer
        .wait_until("sensor failure raised and cleared", WAIT, |m| {
            let states: Vec<_> = m
                .iter()
                .filter(|m| m.topic == "weir/hw/alert/air/health")
                .map(|m| m.json["state"].as_str().unwrap_or("").to_string())
                .collect();
            states == ["raised", "cleared"]
        })
        .unwrap_or_else(&fail);
    let health: Vec<_> = alerts
        .iter()
        .filter(|m| m.topic == "weir/hw/alert/air/health")
        .collect();
    assert_eq!(health[0].json["kind"], "sensor_failure");
    assert_eq!(health[0].json["severity"], "critical");
    assert_eq!(health[0].json["id"], health[1].json["id"]);
    assert!(
        health[0].json["reason"]
            .as_str()
            .is_some_and(|r| r.contains("absent")),
        "{}",
        health[0].json
    );

    let flat = consumer
        .wait_until("flatline raised and cleared", WAIT, |m| {
            m.iter()
                .filter(|m| m.topic == "weir/hw/alert/air/temperature")
                .filter(|m| m.json["kind"] == "flatline")
                .count()
                == 2
        })
        .unwrap_or_else(&fail);
    let flat: Vec<_> = flat
        .iter()
        .filter(|m| m.topic == "weir/hw/alert/air/temperature")
        .collect();
    assert_eq!(flat[0].json["state"], "raised");
    assert_eq!(flat[1].json["state"], "cleared");
    // Humidity and pressure kept moving: no flatline on them.
    assert!(consumer.on("alert/air/humidity").is_empty());
    assert!(!consumer.on("agg/air/pressure").is_empty());

    // The daemon's status carries sensor health, and `weir sensors list` shows it.
    consumer
        .wait_until("status with healthy sensor", WAIT, |m| {
            m.iter()
                .any(|m| m.topic == "weir/hw/status" && m.json["sensors"]["air"]["health"] == "ok")
        })
        .unwrap_or_else(&fail);
    let c = cfg.to_str().unwrap_or_default();
    let list = cli(["sensors", "list", "--config", c]);
    let text = &list.stdout;
    assert_eq!(list.code, Some(0));
    assert!(text.contains("air") && text.contains(" ok "), "{text}");
    assert!(weir.terminate(Duration::from_secs(10)).is_some());
}

#[test]
fn sensors_scan_and_read_work_against_the_configured_simulated_bus() {
    let dir = scratch();
    let cfg = config(dir.path(), 1);
    let c = cfg.to_str().unwrap_or_default();
    let scan = cli(["sensors", "scan", "--config", c]);
    let text = &scan.stdout;
    assert_eq!(scan.code, Some(0), "{text}");
    assert!(text.contains("0x76  bme280  configured as air"), "{text}");
    let read = cli(["sensors", "read", "air", "--config", c, "--json"]);
    assert_eq!(read.code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&read.stdout).unwrap_or_else(|e| panic!("{e}"));
    let t = v["values"]["temperature"].as_f64().unwrap_or(f64::NAN);
    assert!((t - 21.0).abs() < 0.5, "{v}");
    let missing = cli(["sensors", "read", "nope", "--config", c]);
    assert_eq!(missing.code, Some(2));
    let no_bus = cli(["sensors", "scan", "--bus", "/dev/i2c-nonexistent"]);
    assert_eq!(no_bus.code, Some(1));
}
