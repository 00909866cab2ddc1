//! A full disk under the outbox: detected, reported, and no result lost. The
//! state directory sits on a 2 MiB tmpfs (this test mounts one, so it runs as
//! root, as CI does); the upstream is down, so results pile up until the disk
//! is full and ingest pauses; when the upstream returns and the backlog drains,
//! every window of the known input arrives with the right count.
//!
//! The ingest session is created in the local broker before weir starts. An
//! earlier draft published as soon as weir was started, before its first
//! SUBSCRIBE reached the broker: a new MQTT session receives nothing published
//! before it subscribes, so the first windows of every key were never seen (a
//! run counted 9,766 of 10,020 readings: windows 0-5 of every key and window 6
//! of seven keys missing, exactly 254 readings). That is MQTT, not weir; a
//! deployment creates the session once, as here.

mod mounts;

use std::collections::BTreeMap;
use std::time::Duration;

use weir_tests::{Broker, Config, Msg, Publisher, Recorder, Views, Weir, free_port, scratch, toml};

use mounts::Mount;

const KEYS: i64 = 20;
const WINDOWS: i64 = 250;

fn statuses(msgs: &[Msg]) -> Vec<serde_json::Value> {
    msgs.statuses()
        .into_iter()
        .filter(|s| s.state == "online")
        .map(|s| s.json)
        .collect()
}

#[test]
fn a_full_disk_pauses_ingest_is_reported_and_loses_nothing() {
    let dir = scratch();
    let state = dir.path().join("state");
    let _fs = Mount::tmpfs(&state, "2m", false);
    let local = Broker::start_new(dir.path());
    // The ingest's persistent session exists before weir: the broker queues for it.
    local.create_session("disk-ingest", "dev/+/+");
    let mut upstream = Broker::new(dir.path(), free_port());
    upstream.start();
    upstream.create_session("disk-consumer", "weir/disk/#");
    upstream.stop();

    let cfg = Config::new("disk", dir.path())
        .engine(toml! { max_out_of_orderness = "0s", allowed_lateness = "0s", max_keys = 100 })
        .upstream(upstream.port)
        .uplink(toml! { reconnect_max = "500ms", status_interval = "1s", max_rate = 0 })
        .ingest(local.port, "disk-ingest")
        .topic("dev/+/+", "{2}", "{3}")
        .write();
    let weir = Weir::start(&cfg, dir.path());

    // Two readings in each of WINDOWS one-second windows for KEYS keys, from an
    // hour ago, then one reading per key whose watermark (D = 0) closes the last
    // window; the window of that closing reading stays open and is not expected.
    let t0 = (weir_tests::now_ms() / 1000 - 3600) * 1000;
    let publisher = Publisher::connect(local.port);
    publisher.publish_all((0..=WINDOWS).flat_map(|w| {
        (0..KEYS).flat_map(move |k| {
            let n = if w == WINDOWS { 1 } else { 2 };
            (0..n).map(move |i| {
                let ts = t0 + w * 1000 + 100 + i * 400;
                (
                    format!("dev/k{k}/v"),
                    format!(r#"{{"value": {}, "ts": {ts}}}"#, w + i),
                )
            })
        })
    }));

    // The disk fills: one ERROR line a technician can act on, naming the file
    // and the free space; weir keeps running.
    let db = state.join("outbox.db").display().to_string();
    let full = weir.log_line(Duration::from_secs(60), |l| {
        l.contains("ERROR") && l.contains("cannot write results to the outbox")
    });
    let Some(line) = full else {
        panic!("the full disk was not reported:\n{}", weir.log())
    };
    assert!(
        line.contains(&db) && line.contains("is full (") && line.contains("KiB free"),
        "the ERROR line names the database and the free space: {line}"
    );

    upstream.start();
    let consumer = Recorder::persistent(upstream.port, "weir/disk/#", "disk-consumer");
    let expected = KEYS * WINDOWS;
    let windows = |m: &[Msg]| -> BTreeMap<String, u64> {
        m.iter()
            .filter(|m| m.topic.starts_with("weir/disk/agg/"))
            .filter_map(|m| {
                Some((
                    m.json["id"].as_str()?.to_string(),
                    m.json["count"].as_u64()?,
                ))
            })
            .collect()
    };
    let arrived = consumer.wait_until("every window", Duration::from_secs(240), |m| {
        windows(m).len() as i64 >= expected
    });
    let msgs = arrived.unwrap_or_else(|e| {
        let got = windows(&consumer.messages());
        let missing: Vec<String> = (0..KEYS)
            .flat_map(|k| (0..WINDOWS).map(move |w| (k, w)))
            .filter(|(k, w)| {
                let s = t0 + w * 1000;
                !got.contains_key(&format!("disk/k{k}/v/{s}-{}", s + 1000))
            })
            .map(|(k, w)| format!("k{k}/w{w}"))
            .collect();
        panic!(
            "{}\nmissing: {missing:?}\nweir log:\n{}",
            &e[..e.len().min(300)],
            weir.log()
        )
    });
    let counts = windows(&msgs);
    assert_eq!(
        counts.len() as i64,
        expected,
        "exactly the windows of the input"
    );
    assert!(
        counts.values().all(|&c| c == 2),
        "every window has both its readings: {counts:?}"
    );

    // The status message: blocked (and why) when the link came back, then not.
    // The first status is published at the upstream CONNACK, before any row of
    // the backlog is acknowledged, so nothing could have been freed yet.
    let first = statuses(&msgs).first().cloned();
    let Some(first) = first else {
        panic!("no status message upstream")
    };
    assert_eq!(first["outbox_blocked"], true, "{first}");
    assert_eq!(first["outbox_blocked_reason"], "disk_full", "{first}");
    let recovered = consumer.wait_until("a status after recovery", Duration::from_secs(30), |m| {
        statuses(m).last().is_some_and(|s| {
            s["outbox_blocked"] == false
                && s["counters"]["mqtt_messages"] == KEYS * (2 * WINDOWS + 1)
        })
    });
    let msgs = recovered.unwrap_or_else(|e| panic!("{e}\nweir log:\n{}", weir.log()));
    let last = statuses(&msgs).last().cloned().unwrap_or_default();
    assert!(last["outbox_blocked_reason"].is_null(), "{last}");
    for nothing in ["dropped", "evicted", "expired"] {
        assert_eq!(
            last["counters"][nothing],
            serde_json::json!({}),
            "{nothing}: {last}"
        );
    }
    assert!(
        weir.log().contains("outbox writable again"),
        "recovery is reported:\n{}",
        weir.log()
    );
    drop(publisher);
}
