//! Ingest edge cases an outside tester found, each against a real Mosquitto
//! and the real `weir`:
//! - a payload far above the size limit is dead-lettered as `too_large` and
//!   acknowledged, and the readings after it still arrive (weir 0.1 dropped the
//!   connection on it, and the broker resent it at every reconnect, forever);
//! - a retained reading is counted once, not again at every start (each
//!   SUBSCRIBE brings it again).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use weir_tests::{Broker, Config, Consumer, Weir, now_ms, scratch, toml};

const WAIT: Duration = Duration::from_secs(60);

fn config(dir: &Path, port: u16, device: &str) -> PathBuf {
    Config::new(device, dir)
        .upstream(port)
        .ingest(port, &format!("{device}-ingest"))
        .topic("dev/+", "{2}", "v")
        .set("agent", "shutdown_grace", "2s")
        .engine(
            toml! { max_out_of_orderness = "0s", allowed_lateness = "2h", max_future_skew = "1h" },
        )
        .set("ingest", "max_payload_bytes", 512)
        .write()
}

/// Publishes with the Mosquitto client (no packet-size limit of its own), QoS 1.
fn mosquitto_pub(port: u16, topic: &str, args: &[&str]) {
    let st = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            topic,
        ])
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("mosquitto_pub: {e}"));
    assert!(st.success(), "mosquitto_pub {args:?}: {st}");
}

#[test]
fn a_payload_of_several_mebibytes_is_dead_lettered_and_ingest_goes_on() {
    let dir = scratch();
    let broker = Broker::start_new(dir.path());
    let consumer = Consumer::connect(broker.port, "weir/big/#", None);
    let mut weir = Weir::start(&config(dir.path(), broker.port, "big"), dir.path());
    weir.wait_log("ingest connected", WAIT);
    std::thread::sleep(Duration::from_millis(300));

    let big = dir.path().join("big.bin");
    std::fs::write(&big, vec![b'7'; 3 << 20]).unwrap_or_else(|e| panic!("{e}"));
    mosquitto_pub(broker.port, "dev/huge", &["-f", &big.display().to_string()]);
    let ts = now_ms() / 1000 * 1000 - 10_000;
    for (i, v) in [4, 6].iter().enumerate() {
        let payload = format!(r#"{{"value": {v}, "ts": {}}}"#, ts + i as i64 * 100);
        mosquitto_pub(broker.port, "dev/after", &["-m", &payload]);
    }
    // The next window's reading moves the watermark past the first window.
    let payload = format!(r#"{{"value": 0, "ts": {}}}"#, ts + 5_000);
    mosquitto_pub(broker.port, "dev/after", &["-m", &payload]);

    let msgs = consumer
        .wait_until("the dead letter and the pane after it", WAIT, |m| {
            m.iter().any(|m| m.topic == "weir/big/deadletter")
                && m.iter().any(|m| m.topic == "weir/big/agg/after/v")
        })
        .unwrap_or_else(|e| panic!("{e}\nweir log:\n{}", weir.log()));
    let d = msgs
        .iter()
        .find(|m| m.topic == "weir/big/deadletter")
        .unwrap_or_else(|| unreachable!());
    assert_eq!(d.json["reason"], "too_large", "{}", d.json);
    assert_eq!(d.json["source"], "dev/huge");
    assert!(
        d.json["detail"]
            .as_str()
            .is_some_and(|s| s.contains(&(3u64 << 20).to_string())),
        "the detail gives the size: {}",
        d.json
    );
    let pane = msgs
        .iter()
        .find(|m| m.topic == "weir/big/agg/after/v")
        .unwrap_or_else(|| unreachable!());
    assert_eq!(
        (pane.json["count"].as_i64(), pane.json["sum"].as_f64()),
        (Some(2), Some(10.0))
    );
    // Acknowledged: after a restart it does not come again.
    assert!(weir.terminate(Duration::from_secs(10)).is_some());
    let log_before = weir.log();
    assert_eq!(
        log_before.matches("ingest connected").count(),
        1,
        "one connection, no reconnect loop:\n{log_before}"
    );
    let mut weir = Weir::start(&config(dir.path(), broker.port, "big"), dir.path());
    weir.wait_log("ingest connected", WAIT);
    std::thread::sleep(Duration::from_secs(2));
    let dead = consumer
        .messages()
        .iter()
        .filter(|m| m.topic == "weir/big/deadletter")
        .map(|m| m.json["msg_id"].to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    assert_eq!(dead, 1, "the oversized message was not delivered again");
    assert!(weir.terminate(Duration::from_secs(10)).is_some());
}

#[test]
fn a_retained_reading_is_counted_once_across_four_starts() {
    let dir = scratch();
    let broker = Broker::start_new(dir.path());
    let consumer = Consumer::connect(broker.port, "weir/ret/#", None);
    let cfg = config(dir.path(), broker.port, "ret");
    // Stamped an hour ago, retained, before weir ever ran.
    let ts = (now_ms() - 3_600_000) / 1000 * 1000;
    let payload = format!(r#"{{"value": 5, "ts": {ts}}}"#);
    mosquitto_pub(broker.port, "dev/door", &["-r", "-m", &payload]);
    for start in 0..4 {
        let mut weir = Weir::start(&cfg, dir.path());
        weir.wait_log("ingest connected", WAIT);
        // Let the retained copy arrive and be checkpointed.
        std::thread::sleep(Duration::from_secs(2));
        if start == 3 {
            // A later reading moves the watermark past the retained reading's window.
            let p = format!(r#"{{"value": 1, "ts": {}}}"#, ts + 10_000);
            mosquitto_pub(broker.port, "dev/door", &["-m", &p]);
            consumer
                .wait_until("the retained reading's pane", WAIT, |m| {
                    m.iter()
                        .any(|m| m.topic == "weir/ret/agg/door/v" && m.json["window_start"] == ts)
                })
                .unwrap_or_else(|e| panic!("{e}\nweir log:\n{}", weir.log()));
        }
        assert!(weir.terminate(Duration::from_secs(10)).is_some());
    }
    let panes: Vec<_> = consumer
        .messages()
        .into_iter()
        .filter(|m| m.topic == "weir/ret/agg/door/v" && m.json["window_start"] == ts)
        .collect();
    let last = panes
        .iter()
        .max_by_key(|m| m.json["revision"].as_i64())
        .unwrap_or_else(|| unreachable!());
    assert_eq!(
        (last.json["count"].as_i64(), last.json["sum"].as_f64()),
        (Some(1), Some(5.0)),
        "the retained reading counted once: {}",
        last.json
    );
}
