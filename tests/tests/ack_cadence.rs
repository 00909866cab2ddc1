//! MQTT readings are acknowledged to the local broker at the checkpoint interval (or when
//! half the broker's inflight window is owed), not within a second of arriving: every
//! checkpoint is an fsync and some 40 KB written to the SD card (`docs/storage.md`, wear).
//! The broker holds what Weir has not acknowledged, so waiting loses nothing; the readings
//! are all counted.

use std::time::Duration;

use weir_tests::{Broker, Config, Publisher, Recorder, Views, Weir, free_port, scratch, toml};

#[test]
fn a_trickle_of_mqtt_readings_waits_for_the_interval_instead_of_a_checkpoint_a_second() {
    let dir = scratch();
    let d = dir.path();
    let mut broker = Broker::new(d, free_port());
    broker.configure("max_inflight_messages 1000");
    broker.start();
    let up = Recorder::connect(broker.port, "weir/cad/#");
    let cfg = Config::new("cad", d)
        .agent(toml! { checkpoint_interval = "20s", shutdown_grace = "2s" })
        .engine(toml! { max_out_of_orderness = "0s", allowed_lateness = "0s" })
        .upstream(broker.port)
        .uplink(toml! { status_interval = "250ms" })
        .ingest(broker.port, "cad-ingest")
        .set("ingest", "broker_max_inflight", 1000)
        .topic("home/+/+", "{2}", "{3}")
        .write();
    let mut weir = Weir::start(&cfg, d);
    weir.wait_log("ingest connected", Duration::from_secs(60));
    let publisher = Publisher::connect(broker.port);
    let online = |up: &Recorder| up.with(|m| m.last_online()).map(|s| s.json);
    let first = weir_tests::wait_for(Duration::from_secs(30), || online(&up))
        .unwrap_or_else(|| weir.fail("no status upstream"));
    let before = weir_tests::counter(&first, "checkpoints");
    // 24 readings over 6 s: with a checkpoint within 1 s of the oldest owed
    // acknowledgement that was 6 or more checkpoints; at a 20 s interval it is at most one
    // (the interval's tick may fall in the 6 s), whatever the machine's speed.
    for i in 0..24 {
        publisher.publish("home/s1/temp", format!("{}", 20 + i % 3));
        std::thread::sleep(Duration::from_millis(250));
    }
    let counted = weir_tests::wait_for(Duration::from_secs(30), || {
        online(&up).filter(|s| weir_tests::counter(s, "readings") >= 24)
    })
    .unwrap_or_else(|| weir.fail("the 24 readings were not all counted"));
    let during = weir_tests::counter(&counted, "checkpoints") - before;
    assert!(
        during <= 1,
        "{during} checkpoints for 24 MQTT readings in about 6 s at a 20 s interval (counters {})",
        counted["counters"]
    );
    assert_eq!(
        weir_tests::counter(&counted, "readings"),
        24,
        "{}",
        counted["counters"]
    );
    assert!(weir.terminate(Duration::from_secs(10)).is_some());
}
