//! The reference sink (`weir-sink`, docs/fleet.md) against a real fleet: four `weir` daemons
//! under load through one real Mosquitto, two sinks sharing one subscription, a private
//! PostgreSQL cluster. One sink is SIGKILLed, and the broker restarted mid-run while both
//! sinks are frozen (SIGSTOP), and a tenth of
//! the messages are published again as duplicates; the tables must then equal what a
//! deduplicating subscriber recorded: every window once at its highest revision, every alert
//! once with both times, every late reading and dead letter once, bad messages in `rejects`.
//!
//! The sinks share `$share/weir-sink/weir/+/#`, which Mosquitto 2.0 does not persist: after
//! the broker restart the group has no members until a sink resubscribes, and only the sinks'
//! guard sessions (docs/fleet.md) hold what the devices publish meanwhile (the sinks are
//! frozen then, so that this gap is certain, not a race between reconnect delays). With
//! `WEIR_SINK_NO_GUARD=1` in the environment (the sinks inherit it) the guards are off and
//! this test fails with panes missing: that is the loss the guard closes.
//!
//! Skips, saying so, only when PostgreSQL's server binaries are not installed
//! (`scripts/deps.sh test` installs Debian's `postgresql`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use weir_tests::postgres::Postgres;
use weir_tests::sink::{Sink, Truth};
use weir_tests::*;

const DEVICES: [&str; 4] = ["fleet-a", "fleet-b", "fleet-c", "fleet-d"];

/// Both sinks in one shared-subscription group, with their guard sessions (the default).
const SINK_ARGS: &[&str] = &["--batch", "200", "--group", "weir-sink"];

fn postgres_or_skip(dir: &Path) -> Option<Postgres> {
    let pg = Postgres::start(dir);
    if pg.is_none() {
        eprintln!(
            "SKIPPED: PostgreSQL's server binaries (initdb, pg_ctl under /usr/lib/postgresql/*/bin) \
             are not installed; `scripts/deps.sh test` installs Debian's postgresql"
        );
    }
    pg
}

fn device_config(dev: &str, dir: &Path, port: u16) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
    Config::new(dev, dir)
        .upstream(port)
        .uplink(toml! { status_interval = "1s" })
        .ingest(port, &format!("{dev}-ingest"))
        .topic(&format!("in/{dev}/+/+"), "{3}", "{4}")
        .engine(toml! { max_out_of_orderness = "200ms", allowed_lateness = "2s" })
        .set("engine.window", "size", "100ms")
        .sim(toml! { name = "hall", metric = "temperature", interval = "10ms", seed = 7, base = 21.0, noise = 0.2 })
        .detector(toml! {
            name = "too-hot", kind = "threshold", sensor = "probe", metric = "v",
            severity = "critical", high = 30.0, hysteresis = 1.0, clear_after = "300ms"
        })
        .write()
}

/// One tick of readings for every device (50 ms apart): a level that goes above the
/// threshold for 5 ticks in every 40 (an alert raised, then cleared), a reading 700 ms
/// late every 7th tick (a late revision of a closed window), 10 s late every 25th (too
/// late: the late topic), and a non-number every 60th (a dead letter).
fn feed(publisher: &Publisher, ticks: std::ops::Range<u64>) {
    for i in ticks {
        let now = now_ms();
        let mut batch = Vec::new();
        for dev in DEVICES {
            let topic = format!("in/{dev}/probe/v");
            let v = if (10..15).contains(&(i % 40)) {
                50.0
            } else {
                20.0
            };
            batch.push((topic.clone(), format!(r#"{{"value":{v},"ts":{now}}}"#)));
            if i % 7 == 3 {
                batch.push((
                    topic.clone(),
                    format!(r#"{{"value":21.5,"ts":{}}}"#, now - 700),
                ));
            }
            if i % 25 == 5 {
                batch.push((
                    topic.clone(),
                    format!(r#"{{"value":19.0,"ts":{}}}"#, now - 10_000),
                ));
            }
            if i % 60 == 7 {
                batch.push((topic, "warm".to_string()));
            }
        }
        publisher.publish_all(batch);
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ms(field: &str) -> String {
    format!("(extract(epoch from {field}) * 1000)::bigint")
}

/// Differences between the tables and the truth; empty when they agree.
fn compare(pg: &Postgres, truth: &[Value]) -> Vec<String> {
    let mut diffs = Vec::new();
    fn of<'a>(truth: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> {
        truth.iter().filter(move |m| m["type"] == kind)
    }

    // Panes: the highest revision per id, with its aggregates.
    let mut want: BTreeMap<String, (i64, i64, f64)> = BTreeMap::new();
    for p in of(truth, "pane") {
        let id = p["id"].as_str().unwrap_or_default().to_string();
        let row = (
            p["revision"].as_i64().unwrap_or(-1),
            p["count"].as_i64().unwrap_or(-1),
            p["sum"].as_f64().unwrap_or(f64::NAN),
        );
        let e = want.entry(id).or_insert(row);
        if row.0 > e.0 {
            *e = row;
        }
    }
    let got: BTreeMap<String, (i64, i64, f64)> = pg
        .query("SELECT id, revision, count, sum FROM panes")
        .into_iter()
        .map(|r| {
            let n = |i: usize| r[i].parse::<i64>().unwrap_or(-2);
            (r[0].clone(), (n(1), n(2), r[3].parse().unwrap_or(f64::NAN)))
        })
        .collect();
    if want != got {
        let missing: Vec<_> = want
            .keys()
            .filter(|k| !got.contains_key(*k))
            .take(5)
            .collect();
        let extra: Vec<_> = got
            .keys()
            .filter(|k| !want.contains_key(*k))
            .take(5)
            .collect();
        let wrong: Vec<_> = want
            .iter()
            .filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
            .take(5)
            .map(|(k, v)| format!("{k}: want {v:?} got {:?}", got[k]))
            .collect();
        diffs.push(format!(
            "panes: {} in truth, {} in the table; missing {missing:?}; extra {extra:?}; wrong {wrong:?}",
            want.len(),
            got.len()
        ));
    }

    // Alerts: one row per id, raised and cleared times as published.
    let mut want: BTreeMap<String, (Option<i64>, Option<i64>)> = BTreeMap::new();
    for a in of(truth, "alert") {
        let e = want
            .entry(a["id"].as_str().unwrap_or_default().to_string())
            .or_default();
        match a["state"].as_str() {
            Some("raised") => e.0 = a["raised_ts"].as_i64(),
            _ => e.1 = a["ts"].as_i64(),
        }
    }
    let got: BTreeMap<String, (Option<i64>, Option<i64>)> = pg
        .query(&format!(
            "SELECT id, CASE WHEN raised_reason IS NULL THEN NULL ELSE {} END, {} FROM alerts",
            ms("raised_at"),
            ms("cleared_at")
        ))
        .into_iter()
        .map(|r| (r[0].clone(), (r[1].parse().ok(), r[2].parse().ok())))
        .collect();
    if want != got {
        diffs.push(format!("alerts: truth {want:?}\ntable {got:?}"));
    }

    // Late readings and dead letters: once per msg_id.
    for (kind, table) in [("late", "late_readings"), ("deadletter", "dead_letters")] {
        let want: BTreeSet<String> = of(truth, kind)
            .filter_map(|m| m["msg_id"].as_str().map(str::to_string))
            .collect();
        let got: BTreeSet<String> = pg
            .query(&format!("SELECT msg_id FROM {table}"))
            .into_iter()
            .map(|r| r[0].clone())
            .collect();
        if want != got {
            diffs.push(format!("{table}: truth {want:?}\ntable {got:?}"));
        }
    }
    diffs
}

#[test]
fn a_fleet_lands_in_postgres_once_at_final_revisions_through_a_sink_kill_a_broker_restart_and_duplicates()
 {
    let started = Instant::now();
    let dir = scratch();
    let Some(pg) = postgres_or_skip(dir.path()) else {
        return;
    };
    let mut broker = Broker::new(dir.path(), free_port());
    broker.start();
    let port = broker.port;
    let truth = Truth::start(port, "weir/+/#", "truth", 10);

    let sinks_dir = dir.path().join("sinks");
    std::fs::create_dir_all(&sinks_dir).unwrap_or_else(|e| panic!("{e}"));
    let url = pg.url();
    let mut sink_a = Sink::start(port, &url, "sink-a", &sinks_dir, SINK_ARGS);
    let mut sink_b = Sink::start(port, &url, "sink-b", &sinks_dir, SINK_ARGS);
    sink_a.wait_log("subscribed", Duration::from_secs(60));
    sink_b.wait_log("subscribed", Duration::from_secs(60));

    let mut weirs: Vec<Weir> = DEVICES
        .iter()
        .map(|dev| {
            let d = dir.path().join(dev);
            let cfg = device_config(dev, &d, port);
            Weir::start(&cfg, &d)
        })
        .collect();
    for w in &weirs {
        w.wait_log("ingest connected", Duration::from_secs(60));
    }
    let publisher = Publisher::connect(port);
    feed(&publisher, 0..80);

    // Bad messages among the good ones: two malformed, one unknown type (twice).
    let bad: [(&str, &[u8]); 4] = [
        ("weir/fleet-a/agg/x/y", b"{not json"),
        (
            "weir/fleet-b/agg/x/y",
            br#"{"v":1,"type":"gauge","msg_id":"g1"}"#,
        ),
        (
            "weir/fleet-b/agg/x/y",
            br#"{"v":1,"type":"gauge","msg_id":"g1"}"#,
        ),
        (
            "weir/fleet-c/alert/x/y",
            br#"{"v":1,"type":"alert","id":"only-an-id"}"#,
        ),
    ];
    publisher.publish_all(bad.iter().map(|(t, p)| (*t, p.to_vec())));

    sink_b.kill9();
    feed(&publisher, 80..120);
    let mut sink_b = Sink::start(port, &url, "sink-b", &sinks_dir, SINK_ARGS);
    feed(&publisher, 120..160);

    // The broker restarts while both sinks are frozen (SIGSTOP: hosts slow to come back),
    // so the devices reconnect and publish their backlog and new results while the shared
    // group has no member (Mosquitto 2.0 did not persist it): only the guards' plain
    // subscriptions hold those messages. The publisher is idle across the restart itself (its
    // clean session would drop what is in flight); the devices keep publishing.
    sink_a.signal("STOP");
    sink_b.signal("STOP");
    broker.stop();
    std::thread::sleep(Duration::from_secs(1));
    broker.start();
    feed(&publisher, 160..200);
    sink_a.signal("CONT");
    sink_b.signal("CONT");
    sink_a.wait_log("broker connection lost", Duration::from_secs(60));
    feed(&publisher, 200..240);

    truth.stop_duplicating();
    for w in &mut weirs {
        w.stop_ok(Duration::from_secs(30));
    }
    let fed = started.elapsed();

    // Everything in the broker's hands reaches both the recorder and the sinks; wait
    // (bounded) until the tables agree with the truth, then check once more.
    let mut last = Vec::new();
    let settled = wait_for(Duration::from_secs(120), || {
        std::thread::sleep(Duration::from_millis(500));
        let t: Vec<Value> = truth.messages().into_values().collect();
        last = compare(&pg, &t);
        last.is_empty().then_some(t)
    });
    let Some(t) = settled else {
        panic!(
            "the tables never equalled the truth:\n{}\nsink-a:\n{}\nsink-b:\n{}",
            last.join("\n"),
            sink_a.log(),
            sink_b.log()
        );
    };

    // The run was what it claims to be.
    let count = |kind: &str| t.iter().filter(|m| m["type"] == kind).count();
    let revised = t
        .iter()
        .filter(|m| m["type"] == "pane" && m["revision"].as_i64() >= Some(1))
        .count();
    let cleared = pg.count(
        "SELECT count(*) FROM alerts WHERE cleared_at IS NOT NULL AND raised_reason IS NOT NULL",
    );
    let distinct = t.len() as u64;
    eprintln!(
        "fed for {fed:?}; {distinct} distinct messages ({} panes, {revised} late revisions, {} alert \
         transitions, {} late, {} dead letters), {} received by the recorder, {} duplicates \
         published; {cleared} alerts with both times; total {:?}",
        count("pane"),
        count("alert"),
        count("late"),
        count("deadletter"),
        truth.received(),
        truth.duplicates(),
        started.elapsed()
    );
    assert!(
        count("pane") >= 1000,
        "too little load: {} panes",
        count("pane")
    );
    assert!(revised >= 20, "too few late revisions: {revised}");
    assert!(cleared >= 4, "too few alerts raised and cleared: {cleared}");
    assert!(count("late") >= 4 && count("deadletter") >= 4);
    // Every tenth distinct message (statuses aside, which carry no msg_id) was duplicated.
    assert!(
        truth.duplicates() * 10 + 40 >= distinct,
        "only {} duplicates for {distinct} messages",
        truth.duplicates()
    );
    for dev in DEVICES {
        assert_eq!(
            pg.count(&format!(
                "SELECT count(*) FROM device_status WHERE device = '{dev}'"
            )),
            1,
            "no status row for {dev}"
        );
    }

    // Rejects: one row per distinct bad payload, arrivals counted (at least once each: a
    // redelivery or a guard writing counts one again); the log says why.
    let rejects = pg.query("SELECT topic, reason, seen FROM rejects ORDER BY topic, reason");
    let summary: Vec<(String, String)> = rejects
        .iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect();
    assert_eq!(
        summary,
        [
            ("weir/fleet-a/agg/x/y".into(), "bad_json".into()),
            ("weir/fleet-b/agg/x/y".into(), "unknown_type".into()),
            ("weir/fleet-c/alert/x/y".into(), "bad_fields".into()),
        ],
        "rejects: {rejects:?}"
    );
    let seen: Vec<i64> = rejects.iter().map(|r| r[2].parse().unwrap_or(0)).collect();
    assert!(
        seen[0] >= 1 && seen[1] >= 2 && seen[2] >= 1,
        "rejects: {rejects:?}"
    );
    let logs = format!("{}{}", sink_a.log(), sink_b.log());
    assert!(
        logs.contains("message rejected") && logs.contains("unknown message type `gauge`"),
        "no clear log line for the rejects:\n{logs}"
    );
    // The run shared one subscription, and the guards covered the restart: each went back to
    // writing when its connection was lost and stopped when its sink's mark came back.
    assert!(
        logs.contains(r#""$share/weir-sink/weir/+/#""#),
        "the sinks did not subscribe to the shared group:\n{logs}"
    );
    if std::env::var_os("WEIR_SINK_NO_GUARD").is_none() {
        for needle in [
            "guard: its mark came back",
            "guard: writing (the group may be missing messages)",
        ] {
            assert!(
                logs.contains(needle),
                "no {needle:?} in the sinks' logs:\n{logs}"
            );
        }
    }

    sink_a.stop_ok(Duration::from_secs(30));
    sink_b.stop_ok(Duration::from_secs(30));
    truth.disconnect();
    publisher.disconnect();
}

#[test]
fn a_database_migrated_by_a_newer_sink_is_refused_by_name() {
    let dir = scratch();
    let Some(pg) = postgres_or_skip(dir.path()) else {
        return;
    };
    let broker = Broker::start_new(dir.path());
    let url = pg.url();
    // A first sink creates the schema at its version.
    let mut first = Sink::start(broker.port, &url, "s1", dir.path(), &[]);
    first.wait_log("connected to PostgreSQL", Duration::from_secs(60));
    first.stop_ok(Duration::from_secs(30));
    assert_eq!(pg.count("SELECT max(version) FROM schema_version"), 1);
    assert_eq!(pg.count("SELECT count(*) FROM panes"), 0);

    pg.query("INSERT INTO schema_version (version) VALUES (99)");
    let mut second = Sink::start(broker.port, &url, "s2", dir.path(), &[]);
    let status = second.wait_exit(Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.code() == Some(1)),
        "exit {status:?}:\n{}",
        second.log()
    );
    assert!(
        second
            .log()
            .contains("schema is version 99, newer than this sink's 1: upgrade weir-sink"),
        "{}",
        second.log()
    );
}
