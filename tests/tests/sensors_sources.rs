//! `weir sensors list` and `read` know every source: a `[[sim]]` sensor and an MQTT topic
//! with the sensors the running weir has seen on it; a simulated sensor reads with weir
//! stopped (its generator's first sample) and both read live while it runs.

use std::time::Duration;

use weir_tests::{Broker, Config, Publisher, Weir, cli_cfg, now_ms, scratch, toml, wait_for};

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn sim_and_mqtt_sensors_are_listed_and_read() {
    let dir = scratch();
    let d = dir.path();
    let broker = Broker::start_new(d);
    broker.create_session("ss-ingest", "home/+/+");
    let cfg = Config::new("ss", d)
        .agent(toml! {
            runtime_dir = d.join("run").as_path(), shutdown_grace = "500ms",
            checkpoint_interval = "100ms",
        })
        .upstream(broker.port)
        .ingest(broker.port, "ss-ingest")
        .topic("home/+/+", "{2}", "{3}")
        .sim(toml! { name = "greenhouse", metric = "temperature", interval = "100ms", base = 21.0, noise = 0.0 })
        .write();

    // Stopped: both sources listed; the sim reads its generator, MQTT cannot be read.
    let out = cli_cfg(&["sensors", "list"], &cfg);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines.iter().any(|l| l.starts_with("greenhouse")
            && l.contains(" sim ")
            && l.contains("simulated, every 100ms")
            && l.contains("temperature")),
        "{}",
        out.stdout
    );
    assert!(
        lines.iter().any(|l| l.starts_with("(topic)")
            && l.contains(&format!("home/+/+ on 127.0.0.1:{}", broker.port))),
        "{}",
        out.stdout
    );
    let out = cli_cfg(&["sensors", "read", "greenhouse"], &cfg);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_eq!(
        out.stdout,
        "greenhouse/temperature = 21 (simulated; weir is not running: its generator's first sample)\n"
    );
    let out = cli_cfg(&["sensors", "read", "kitchen"], &cfg);
    assert_eq!(out.code, Some(3), "{}", out.all());

    // Running: a device publishes; it is listed as seen, and both read live.
    let weir = Weir::start(&cfg, d);
    let publisher = Publisher::connect(broker.port);
    let seen = publisher.publish_until(
        WAIT,
        Duration::from_millis(300),
        |i| {
            (
                "home/kitchen/humidity".into(),
                format!(r#"{{"value": {}, "ts": {}}}"#, 40 + i, now_ms()).into_bytes(),
            )
        },
        || {
            let out = cli_cfg(&["sensors", "list"], &cfg);
            out.stdout
                .lines()
                .any(|l| {
                    l.starts_with("kitchen")
                        && l.contains(" mqtt ")
                        && l.contains("humidity")
                        && l.contains("live")
                })
                .then_some(out.stdout)
        },
    );
    assert!(seen.is_some(), "kitchen never listed: {}", weir.log());

    let out = cli_cfg(&["sensors", "read", "greenhouse", "--count", "2"], &cfg);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let read: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(read.len(), 2, "{}", out.stdout);
    assert!(
        read.iter()
            .all(|l| l.starts_with("greenhouse/temperature = 21 at ")),
        "{}",
        out.stdout
    );

    let reader = std::thread::spawn({
        let cfg = cfg.clone();
        move || {
            cli_cfg(
                &["sensors", "read", "kitchen", "--json", "--timeout", "20s"],
                &cfg,
            )
        }
    });
    let done = wait_for(WAIT, || {
        publisher.publish(
            "home/kitchen/humidity",
            format!(r#"{{"value": 55, "ts": {}}}"#, now_ms()),
        );
        std::thread::sleep(Duration::from_millis(200));
        reader.is_finished().then_some(())
    });
    assert!(done.is_some());
    let out = reader.join().unwrap_or_else(|_| panic!("reader panicked"));
    assert_eq!(out.code, Some(0), "{}", out.all());
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap_or_default();
    assert_eq!(v["sensor"], "kitchen", "{}", out.stdout);
    assert_eq!(v["metric"], "humidity", "{}", out.stdout);
    assert_eq!(v["value"], 55.0, "{}", out.stdout);
}
