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

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use weir_tests::{
    Broker, Config, Msg, OutboxFile, Publisher, Recorder, Weir, by_reason, counter, free_port,
    now_ms, scratch, toml, wait_for,
};

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
    Config::new(DEVICE, dir)
        .agent(toml! { shutdown_grace = "1s" })
        .engine(
            toml! { max_out_of_orderness = "0s", allowed_lateness = "2s", idle_timeout = "off" },
        )
        .set("outbox", "max_bytes", "1MiB")
        .upstream(upstream)
        .uplink(toml! { status_interval = "1s", max_rate = 0 })
        .ingest(input, "budget-ingest")
        .multi_topic(
            "in/+/data",
            "{2}",
            "ts",
            &(0..METRICS).map(metric).collect::<Vec<_>>(),
        )
        .detector(toml! {
            name = "spike", kind = "threshold", sensor = "*", metric = "m00",
            high = 1000.0, hysteresis = 1.0, clear_after = "1s", severity = "critical",
        })
        .write()
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

/// Samples the outbox file's `SUM(bytes)` as often as it can until `stop`: (samples, peak).
fn sample_bytes(db: OutboxFile, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(u32, u64)> {
    std::thread::spawn(move || {
        let (mut samples, mut peak) = (0u32, 0u64);
        while !stop.load(Ordering::Relaxed) {
            if let Some(total) = db.bytes() {
                samples += 1;
                peak = peak.max(total);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        (samples, peak)
    })
}

/// The outbox file, read-only: every row, and SUM(bytes).
fn outbox(db: &OutboxFile) -> Option<(Vec<Stored>, u64)> {
    let rows = db
        .rows()?
        .into_iter()
        .map(|r| Some((r.json["msg_id"].as_str()?.to_string(), r.class, r.bytes)))
        .collect::<Option<Vec<_>>>()?;
    Some((rows, db.bytes()?))
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
    let consumer = Recorder::persistent(upstream.port, &filter, session);
    let weir = Weir::start(&config(dir.path(), input.port, upstream.port), dir.path());
    let db = OutboxFile::new(dir.path().join("state/outbox.db"));
    let publisher = Publisher::connect(input.port);

    // Before the outage: probe until a pane comes through (ingest and uplink live).
    let t0 = (now_ms() / 1000 - 3600) * 1000;
    let live = publisher.publish_until(
        Duration::from_secs(60),
        Duration::from_millis(200),
        |probe| {
            let ts = t0 - 600_000 + probe as i64 * 1000;
            let payload = format!(r#"{{"ts": {ts}, "m01": 1}}"#);
            ("in/probe/data".into(), payload.into_bytes())
        },
        || (!consumer.on("/agg/probe/m01").is_empty()).then_some(()),
    );
    assert!(live.is_some(), "no probe pane arrived\n{}", weir.log());
    upstream.stop();
    weir.wait_log("upstream connection lost", Duration::from_secs(30));

    // Feed everything, sampling the file's byte total while the agent works through it.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_bytes(db.clone(), stop.clone());
    let work = workload(t0);
    publisher.publish_all(work.inputs.iter().map(|(t, p)| (t, p.clone())));
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
    let consumer = Recorder::persistent(upstream.port, &filter, session);
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
