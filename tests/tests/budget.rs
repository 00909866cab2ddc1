//! The outbox's byte budget at its documented minimum (1 MiB) with the upstream
//! down: the real `weir`, two real Mosquittos (local input, upstream).
//!
//! About 4.5 MB of panes, plus late readings (diagnostics), revisions and alerts,
//! go into a 1 MiB outbox. Checked, from the database file sampled all along and
//! from the status message:
//! - `SUM(bytes)` (topic + payload, what the budget counts) never exceeds 1 MiB;
//! - the documented policy: diagnostics are evicted first, then the oldest
//!   aggregates; every alert is kept;
//! - the counters account for every message: with the upstream down (the status
//!   published at reconnect, before any backlog row is sent)
//!   `produced = acked + superseded + evicted + expired + dropped + pending`,
//!   where `pending` is the rows in the file and `acked` the rows delivered before
//!   the outage; and once the upstream is back, exactly the pending rows are
//!   delivered (`acked` grows by `pending`, the outbox empties).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rumqttc::{Client, MqttOptions, QoS};
use serde_json::Value;
use weir_tests::{Broker, Consumer, Msg, Weir, free_port, now_ms, scratch, wait_for};

const BUDGET: u64 = 1 << 20;
const SENSORS: u32 = 4;
const METRICS: u32 = 25;
/// Messages per sensor; message `i` closes window `i - 1` of each of its keys.
const MESSAGES: u32 = 101;
const DEVICE: &str = "bud";

fn metric(m: u32) -> String {
    format!("m{m:02}")
}

fn config(dir: &Path, input: u16, upstream: u16) -> PathBuf {
    let fields: Vec<String> = (0..METRICS)
        .map(|m| format!("{0} = \"{0}\"", metric(m)))
        .collect();
    let text = format!(
        r#"
[agent]
device = "{DEVICE}"
state_dir = "{state}"
shutdown_grace = "1s"

[engine]
max_out_of_orderness = "0s"
allowed_lateness = "2s"
idle_timeout = "off"
[engine.window]
size = "1s"

[outbox]
max_bytes = "1MiB"

[uplink]
host = "127.0.0.1"
port = {upstream}
reconnect_min = "100ms"
reconnect_max = "1s"
status_interval = "1s"
max_rate = 0

[ingest]
host = "127.0.0.1"
port = {input}
client_id = "budget-ingest"
[[ingest.topic]]
filter = "in/+/data"
sensor = "{{2}}"
format = "multi"
ts_path = "ts"
fields = {{ {fields} }}

[[detector]]
name = "spike"
kind = "threshold"
sensor = "*"
metric = "m00"
high = 1000.0
hysteresis = 1.0
clear_after = "1s"
severity = "critical"
"#,
        state = dir.join("state").display(),
        fields = fields.join(", "),
    );
    let path = dir.join("weir.toml");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path
}

/// The input in publish order, and for each message the pane msg_ids it makes the
/// engine produce (its production group: eviction order is only known up to the
/// order of panes within one message). Also: how many alert transitions, late
/// readings (diagnostics) and revisions (supersessions) it causes.
struct Workload {
    inputs: Vec<(String, String)>,
    groups: Vec<Vec<String>>,
    spikes: u64,
    too_late: u64,
    revisions: u64,
}

fn workload(t0: i64) -> Workload {
    let mut w = Workload {
        inputs: Vec::new(),
        groups: Vec::new(),
        spikes: 0,
        too_late: 0,
        revisions: 0,
    };
    let win = |i: u32| t0 + i64::from(i) * 1000;
    let pane_id = |s: u32, m: u32, i: u32, rev: u32| {
        format!(
            "{DEVICE}/s{s}/{}/{}-{}#r{rev}",
            metric(m),
            win(i),
            win(i + 1)
        )
    };
    let msg = |ts: i64, values: &[(u32, f64)]| {
        let mut o = serde_json::Map::new();
        o.insert("ts".into(), ts.into());
        for (m, v) in values {
            o.insert(metric(*m), (*v).into());
        }
        Value::Object(o).to_string()
    };
    for i in 0..MESSAGES {
        for s in 0..SENSORS {
            let topic = format!("in/s{s}/data");
            let spike = i % 20 == 5;
            w.spikes += u64::from(spike);
            let values: Vec<(u32, f64)> = (0..METRICS)
                .map(|m| {
                    (
                        m,
                        if m == 0 && spike {
                            5000.0
                        } else {
                            f64::from(i)
                        },
                    )
                })
                .collect();
            w.inputs.push((topic.clone(), msg(win(i) + 100, &values)));
            w.groups.push(if i >= 1 {
                (0..METRICS).map(|m| pane_id(s, m, i - 1, 0)).collect()
            } else {
                Vec::new()
            });
            // A revision of window i - 2 (within the 2 s lateness): supersedes revision 0.
            if i >= 2 && (i + s) % 5 == 0 {
                w.inputs
                    .push((topic.clone(), msg(win(i - 2) + 500, &[(7, 0.5), (8, 0.5)])));
                w.groups
                    .push(vec![pane_id(s, 7, i - 2, 1), pane_id(s, 8, i - 2, 1)]);
                w.revisions += 2;
            }
            // Early on, readings far too late for window 0: diagnostics (`late`), which
            // the budget must evict before any aggregate.
            if (10..20).contains(&i) {
                let late: Vec<(u32, f64)> = (10..15).map(|m| (m, 1.0)).collect();
                w.inputs.push((topic, msg(win(0) + 300, &late)));
                w.groups.push(Vec::new());
                w.too_late += late.len() as u64;
            }
        }
    }
    w
}

/// A row of the outbox file: (msg_id, class, bytes).
type Stored = (String, i64, u64);

/// `SUM(bytes)` of the outbox file (what the budget bounds), read-only.
fn outbox_bytes(db: &Path) -> Option<u64> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()?;
    let total = conn
        .query_row("SELECT COALESCE(SUM(bytes), 0) FROM outbox", [], |r| {
            r.get::<_, i64>(0)
        })
        .ok()?;
    u64::try_from(total).ok()
}

/// Samples [`outbox_bytes`] as often as it can until `stop`: (samples, peak).
fn sample_bytes(db: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(u32, u64)> {
    std::thread::spawn(move || {
        let (mut samples, mut peak) = (0u32, 0u64);
        while !stop.load(Ordering::Relaxed) {
            if let Some(total) = outbox_bytes(&db) {
                samples += 1;
                peak = peak.max(total);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        (samples, peak)
    })
}

/// The outbox file, read-only: every row, and SUM(bytes).
fn outbox(db: &Path) -> Option<(Vec<Stored>, u64)> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()?;
    let mut stmt = conn
        .prepare("SELECT payload, class, bytes FROM outbox ORDER BY id")
        .ok()?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .ok()?;
    let mut out = Vec::new();
    for r in rows {
        let (payload, class, bytes) = r.ok()?;
        let v: Value = serde_json::from_slice(&payload).ok()?;
        let id = v["msg_id"].as_str()?.to_string();
        out.push((id, class, u64::try_from(bytes).ok()?));
    }
    let total = conn
        .query_row("SELECT COALESCE(SUM(bytes), 0) FROM outbox", [], |r| {
            r.get::<_, i64>(0)
        })
        .ok()?;
    Some((out, u64::try_from(total).ok()?))
}

fn publisher(port: u16) -> Client {
    let mut opts = MqttOptions::new(
        format!("budget-pub-{}", std::process::id()),
        "127.0.0.1",
        port,
    );
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut connection) = Client::new(opts, 256);
    std::thread::spawn(move || for _ in connection.iter() {});
    client
}

fn counter(status: &Value, name: &str) -> u64 {
    status["counters"][name].as_u64().unwrap_or(0)
}

fn by_reason(status: &Value, category: &str) -> BTreeMap<String, u64> {
    status["counters"][category]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

/// `produced - (acked + superseded + evicted + expired + dropped)`: what the counters
/// say must still be in the outbox.
fn unaccounted(status: &Value) -> i128 {
    let gone = counter(status, "acked")
        + counter(status, "outbox_superseded")
        + ["evicted", "expired", "dropped"]
            .iter()
            .map(|c| by_reason(status, c).values().sum::<u64>())
            .sum::<u64>();
    i128::from(counter(status, "produced")) - i128::from(gone)
}

fn online_after(msgs: &[Msg], since_ms: i64) -> Vec<&Msg> {
    msgs.iter()
        .filter(|m| m.topic.ends_with("/status") && m.json["state"] == "online")
        .filter(|m| m.json["emitted_at"].as_i64().unwrap_or(0) >= since_ms)
        .collect()
}

#[test]
fn a_one_mib_outbox_stays_within_budget_evicts_by_policy_and_accounts_for_every_message() {
    let dir = scratch();
    let input = Broker::start_new(dir.path());
    let mut upstream = Broker::new(dir.path(), free_port());
    upstream.start();
    let session = "budget-recorder";
    let filter = format!("weir/{DEVICE}/#");
    let consumer = Consumer::connect(upstream.port, &filter, Some(session));
    let weir = Weir::start(&config(dir.path(), input.port, upstream.port), dir.path());
    let db = dir.path().join("state/outbox.db");
    let publisher = publisher(input.port);

    // Before the outage: probe until a pane comes through (ingest and uplink live).
    let t0 = (now_ms() / 1000 - 3600) * 1000;
    let mut probe = 0i64;
    let live = wait_for(Duration::from_secs(60), || {
        let ts = t0 - 600_000 + probe * 1000;
        probe += 1;
        publisher
            .publish(
                "in/probe/data",
                QoS::AtLeastOnce,
                false,
                format!(r#"{{"ts": {ts}, "m01": 1}}"#),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        std::thread::sleep(Duration::from_millis(200));
        (!consumer.on("/agg/probe/m01").is_empty()).then_some(())
    });
    assert!(live.is_some(), "no probe pane arrived\n{}", weir.log());
    upstream.stop();
    let noticed = wait_for(Duration::from_secs(30), || {
        weir.log()
            .contains("upstream connection lost")
            .then_some(())
    });
    assert!(
        noticed.is_some(),
        "weir did not notice the outage\n{}",
        weir.log()
    );

    // Feed everything, sampling the file's byte total while the agent works through it.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_bytes(db.clone(), stop.clone());
    let work = workload(t0);
    for (topic, payload) in &work.inputs {
        publisher
            .publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone())
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let last: BTreeSet<&String> = work
        .groups
        .iter()
        .rev()
        .take(SENSORS as usize)
        .flatten()
        .collect();
    let settled = wait_for(Duration::from_secs(300), || {
        let (rows, total) = outbox(&db)?;
        let ids: BTreeSet<&String> = rows.iter().map(|r| &r.0).collect();
        last.iter()
            .all(|id| ids.contains(id))
            .then_some((rows, total))
    });
    let (rows, total) = settled
        .unwrap_or_else(|| panic!("the last panes never reached the outbox\n{}", weir.log()));
    stop.store(true, Ordering::Relaxed);
    let (samples, peak) = sampler
        .join()
        .unwrap_or_else(|_| panic!("sampler panicked"));
    eprintln!(
        "budget: {} rows, {total} bytes after {} inputs; peak {peak} over {samples} samples",
        rows.len(),
        work.inputs.len()
    );
    assert!(
        peak <= BUDGET,
        "the outbox held {peak} bytes at one sample, over the {BUDGET} budget"
    );
    assert!(
        samples >= 20,
        "too few samples ({samples}) to say the budget held"
    );
    assert!(
        total > BUDGET - 2048,
        "the budget was never filled ({total} bytes): the test proves nothing"
    );

    // Policy: every alert kept, no diagnostic left, and the aggregates kept are the
    // newest: none was produced before an evicted one (up to the order of the
    // panes of one input message).
    let class_ids = |c: i64| -> BTreeSet<String> {
        rows.iter()
            .filter(|r| r.1 == c)
            .map(|r| r.0.clone())
            .collect()
    };
    let (alerts, mut panes, diagnostics) = (class_ids(0), class_ids(1), class_ids(2));
    panes.retain(|id| !id.contains("/probe/"));
    assert_eq!(alerts.len() as u64, 2 * work.spikes, "alerts kept");
    assert!(diagnostics.is_empty(), "diagnostics kept: {diagnostics:?}");
    let group_of: HashMap<&str, usize> = work
        .groups
        .iter()
        .enumerate()
        .flat_map(|(g, ids)| ids.iter().map(move |id| (id.as_str(), g)))
        .collect();
    let kept_from = panes
        .iter()
        .map(|id| {
            group_of
                .get(id.as_str())
                .copied()
                .unwrap_or_else(|| panic!("unexpected pane {id}"))
        })
        .min()
        .unwrap_or_else(|| panic!("no pane kept"));
    let older_kept: Vec<&String> = work.groups[..kept_from]
        .iter()
        .flatten()
        .filter(|id| panes.contains(*id))
        .collect();
    assert!(
        older_kept.is_empty(),
        "kept while older than group {kept_from}: {older_kept:?}"
    );
    // After the oldest kept group, a pane is gone only if a revision replaced it.
    let missing_newer: Vec<&String> = work.groups[kept_from + 1..]
        .iter()
        .flatten()
        .filter(|id| !panes.contains(*id))
        .filter(|id| {
            let revised = id.strip_suffix("#r0").map(|base| format!("{base}#r1"));
            !revised.is_some_and(|r| group_of.contains_key(r.as_str()))
        })
        .collect();
    assert!(
        missing_newer.is_empty(),
        "newer panes evicted while an older one was kept: {missing_newer:?}"
    );

    // The upstream comes back. Its first status is built at CONNACK, before any
    // backlog row is sent: its counters are those of the outage.
    let up_ms = now_ms();
    upstream.start();
    let consumer = Consumer::connect(upstream.port, &filter, Some(session));
    let msgs = consumer
        .wait_until(
            "every pending row delivered",
            Duration::from_secs(120),
            |m| {
                let got: BTreeSet<&str> =
                    m.iter().filter_map(|m| m.json["msg_id"].as_str()).collect();
                rows.iter().all(|r| got.contains(r.0.as_str()))
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", weir.log()));
    let at_reconnect = online_after(&msgs, up_ms)
        .first()
        .map(|m| m.json.clone())
        .unwrap_or_else(|| panic!("no status after the reconnect"));
    eprintln!("budget: counters at reconnect {}", at_reconnect["counters"]);
    assert_eq!(
        unaccounted(&at_reconnect),
        rows.len() as i128,
        "produced - (acked + superseded + evicted + expired + dropped) must be the {} rows pending: {}",
        rows.len(),
        at_reconnect["counters"]
    );
    let evicted = by_reason(&at_reconnect, "evicted");
    assert_eq!(evicted.get("alert"), None, "no alert evicted: {evicted:?}");
    assert_eq!(
        evicted.get("diagnostic"),
        Some(&work.too_late),
        "every diagnostic evicted"
    );
    assert!(
        evicted.get("aggregate").is_some_and(|n| *n > 5000),
        "{evicted:?}"
    );
    assert_eq!(counter(&at_reconnect, "outbox_superseded"), work.revisions);
    assert_eq!(counter(&at_reconnect, "late"), work.too_late);

    // Delivered: exactly the pending rows, and nothing of what was evicted.
    let delivered: BTreeSet<&str> = msgs
        .iter()
        .filter(|m| !m.topic.ends_with("/status"))
        .filter_map(|m| m.json["msg_id"].as_str())
        .collect();
    let pending: BTreeSet<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        delivered, pending,
        "delivered after the outage vs pending at its end"
    );
    let empty = wait_for(Duration::from_secs(30), || {
        outbox(&db).filter(|(r, _)| r.is_empty())
    });
    assert!(empty.is_some(), "outbox not empty after the drain");
    let drained = consumer
        .wait_until("a status after the drain", Duration::from_secs(30), |m| {
            online_after(m, up_ms)
                .last()
                .is_some_and(|s| unaccounted(&s.json) == 0)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let last_status = online_after(&drained, up_ms)
        .last()
        .map(|m| m.json.clone())
        .unwrap_or_default();
    assert_eq!(
        counter(&last_status, "acked"),
        counter(&at_reconnect, "acked") + rows.len() as u64,
        "acked grew by exactly the pending rows"
    );
    assert_eq!(
        counter(&last_status, "produced"),
        counter(&at_reconnect, "produced")
    );
}
