//! Home Assistant MQTT discovery against a real Home Assistant core (the venv that
//! `scripts/homeassistant.sh` installs; skipped, saying so, when it is absent): Weir's
//! sensors become entities with units and device classes, a raised alert turns its
//! binary sensor on with the reason as an attribute, SIGKILL makes them unavailable (the
//! last will), and a sensor removed from the config loses its entity at the next start.

use std::time::Duration;

use serde_json::Value;
use weir_tests::homeassistant::{HomeAssistant, venv};
use weir_tests::{Broker, Config, Weir, scratch, toml};

const WAIT: Duration = Duration::from_secs(90);

fn config(dir: &std::path::Path, port: u16, with_soil: bool) -> Config {
    let mut c = Config::new("ha-e2e", dir)
        .upstream(port)
        .set("homeassistant", "state", "mean")
        .sim(toml! { name = "air", metric = "temperature", interval = "200ms", base = 30.0, noise = 0.0 })
        .detector(toml! { name = "hot", kind = "threshold", sensor = "air", metric = "temperature", high = 25.0 });
    if with_soil {
        c = c.sim(toml! { name = "soil", metric = "humidity", interval = "200ms", base = 40.0, noise = 0.0 });
    }
    c
}

fn num(e: &Value) -> Option<f64> {
    e["state"].as_str()?.parse().ok()
}

#[test]
fn weir_devices_sensors_and_alerts_appear_in_home_assistant() {
    let t0 = std::time::Instant::now();
    let phase = |what: &str| eprintln!("{:>7.1?} {what}", t0.elapsed());
    let dir = scratch();
    let broker = Broker::start_new(dir.path());
    let Some(ha) = HomeAssistant::start(dir.path(), broker.port) else {
        eprintln!(
            "SKIPPED: no Home Assistant venv at {} (install it with scripts/homeassistant.sh, or scripts/deps.sh test)",
            venv().display()
        );
        return;
    };
    phase("Home Assistant started");
    let cfg = config(dir.path(), broker.port, true).write();
    let mut weir = Weir::start(&cfg, dir.path());

    let air = ha.wait_entity("ha-e2e air temperature", WAIT, |e| num(e) == Some(30.0));
    assert_eq!(air["attributes"]["unit_of_measurement"], "°C", "{air}");
    assert_eq!(air["attributes"]["device_class"], "temperature", "{air}");
    assert_eq!(
        air["attributes"]["last"], 30.0,
        "the state payload's fields are attributes: {air}"
    );
    let soil = ha.wait_entity("ha-e2e soil humidity", WAIT, |e| num(e) == Some(40.0));
    assert_eq!(soil["attributes"]["unit_of_measurement"], "%", "{soil}");
    assert_eq!(soil["attributes"]["device_class"], "humidity", "{soil}");
    let hot = ha.wait_entity("ha-e2e air temperature hot", WAIT, |e| e["state"] == "on");
    assert_eq!(hot["attributes"]["device_class"], "problem", "{hot}");
    let reason = hot["attributes"]["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("25"),
        "the alert's reason is an attribute: {hot}"
    );
    ha.wait_entity("ha-e2e upstream link", WAIT, |e| e["state"] == "on");
    ha.wait_entity("ha-e2e outbox backlog", WAIT, |e| num(e).is_some());

    phase("entities seen");
    // SIGKILL: the broker publishes the last will, Home Assistant marks the entities.
    weir.kill9();
    for name in [
        "ha-e2e air temperature",
        "ha-e2e soil humidity",
        "ha-e2e air temperature hot",
    ] {
        ha.wait_entity(name, WAIT, |e| e["state"] == "unavailable");
    }
    ha.wait_entity("ha-e2e upstream link", WAIT, |e| e["state"] == "off");

    phase("unavailable after SIGKILL");
    // Without `soil`: its entity goes; `air` is back.
    let cfg = config(dir.path(), broker.port, false).write();
    let mut weir = Weir::start(&cfg, dir.path());
    ha.wait_entity("ha-e2e air temperature", WAIT, |e| num(e) == Some(30.0));
    let gone = weir_tests::wait_for(WAIT, || {
        ha.entity("ha-e2e soil humidity").is_none().then_some(())
    });
    assert!(
        gone.is_some(),
        "the removed sensor's entity is still there: {:?}\n{}",
        ha.entity("ha-e2e soil humidity"),
        ha.log()
    );
    phase("removed sensor gone");
    weir.stop_ok(Duration::from_secs(20));
    ha.wait_entity("ha-e2e air temperature", WAIT, |e| {
        e["state"] == "unavailable"
    });
}
