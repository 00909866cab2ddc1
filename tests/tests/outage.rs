//! A long upstream outage: the real `weir` between two real Mosquittos (the local
//! input broker and the upstream one). The upstream is stopped, MQTT readings
//! with device timestamps build a backlog of more than 100,000 outbox rows (panes
//! of many keys and short windows, late readings that revise some windows, spikes
//! that raise alerts), then the upstream comes back. Checked: every window's
//! latest revision and every alert arrive; every backlog alert before any backlog
//! pane; an older revision that was still unsent is never sent; per key, panes
//! arrive in the order they were produced; draining takes at least as long as
//! `max_rate` allows (a lower bound only: a slow machine cannot fail it); and the
//! status counters balance.
//!
//! Size: 25 sensors x 50 metrics x 81 closed windows = 101,250 panes plus 200
//! alerts. Under QEMU (`WEIR_RUNNER` set) the same size is used; the drain rate
//! limit is lowered there only if `OUTAGE_MAX_RATE` says so.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use weir_tests::{
    Broker, Config, Msg, OutboxFile, Publisher, Recorder, Views, Weir, by_reason, counter,
    free_port, now_ms, scratch, toml, wait_for,
};

/// Sensors (MQTT devices), each publishing every metric in one message.
const SENSORS: u32 = 25;
/// Metrics per message (keys per sensor).
const METRICS: u32 = 50;
/// Messages per sensor; message `i` closes window `i - 1` of each of its keys.
const MESSAGES: u32 = 82;
/// Drain rate limit (`[uplink] max_rate`), aggregates per second.
const MAX_RATE: u32 = 2500;
/// `[uplink] max_inflight`: also the token bucket's burst.
const MAX_INFLIGHT: u32 = 64;
/// Metric watched by the threshold detector; a spike every 20 messages.
const ALARM_METRIC: u32 = 0;
const SPIKE_EVERY: u32 = 20;
const SPIKE_AT: u32 = 5;
const DEVICE: &str = "out";

fn metric(m: u32) -> String {
    format!("m{m:02}")
}

fn sensor(s: u32) -> String {
    format!("s{s:02}")
}

fn config(dir: &Path, input: u16, upstream: u16, max_rate: u32) -> PathBuf {
    Config::new(DEVICE, dir)
        .agent(toml! { shutdown_grace = "2s" })
        .engine(
            toml! { max_out_of_orderness = "0s", allowed_lateness = "5s", idle_timeout = "off" },
        )
        .set("outbox", "max_bytes", "256MiB")
        .upstream(upstream)
        .uplink(toml! { status_interval = "1s", max_inflight = MAX_INFLIGHT, max_rate = max_rate })
        .ingest(input, "outage-ingest")
        .multi_topic(
            "in/+/data",
            "{2}",
            "ts",
            &(0..METRICS).map(metric).collect::<Vec<_>>(),
        )
        .detector(toml! {
            name = "spike", kind = "threshold", sensor = "*", metric = metric(ALARM_METRIC),
            high = 1000.0, hysteresis = 1.0, clear_after = "1s", severity = "critical",
        })
        .write()
}

/// One MQTT message of the input, and the panes it makes the engine emit.
struct Input {
    topic: String,
    payload: String,
}

/// A key: (sensor, metric).
type Key = (String, String);

/// A window's latest revision in the model.
#[derive(Clone, Copy)]
struct Latest {
    revision: u64,
    count: u64,
    /// When it was produced, in the key's production order.
    seq: u64,
}

/// A pane as received: (window index, revision, count).
type Got = (u32, u64, u64);

/// What each key must end with upstream: per window, its final revision and count, and
/// the order in which the surviving (latest) revisions were produced.
#[derive(Default)]
struct Expected {
    /// Key -> window index -> its latest revision.
    windows: BTreeMap<Key, BTreeMap<u32, Latest>>,
    /// Late readings, i.e. revisions that superseded an unsent older one.
    late_panes: u64,
    spikes: u64,
}

impl Expected {
    fn panes(&self) -> usize {
        self.windows.values().map(BTreeMap::len).sum()
    }

    /// Per key, the window indices in the order their latest revision was produced.
    fn order(&self) -> HashMap<Key, Vec<u32>> {
        self.windows
            .iter()
            .map(|(k, ws)| {
                let mut v: Vec<(u64, u32)> = ws.iter().map(|(w, r)| (r.seq, *w)).collect();
                v.sort_unstable();
                (k.clone(), v.into_iter().map(|(_, w)| w).collect())
            })
            .collect()
    }
}

/// The whole input in publish order, with its model. Per key the watermark is the
/// newest timestamp (no out-of-orderness), so message `i` of a sensor closes window
/// `i - 1` of each metric: revision 0. After some messages, a late reading for a few
/// metrics lands in window `i - 2` (and sometimes `i - 3`), within the 5 s lateness:
/// revision n + 1, which supersedes the unsent revision n in the outbox.
fn workload(t0: i64) -> (Vec<Input>, Expected) {
    let mut inputs = Vec::new();
    let mut exp = Expected::default();
    let mut seq = 0u64;
    let mut pane = |exp: &mut Expected, s: u32, m: u32, w: u32, late: bool| {
        seq += 1;
        let e = exp
            .windows
            .entry((sensor(s), metric(m)))
            .or_default()
            .entry(w)
            .or_insert(Latest {
                revision: 0,
                count: 1,
                seq: 0,
            });
        if late {
            e.revision += 1;
            e.count += 1;
            exp.late_panes += 1;
        }
        e.seq = seq;
    };
    let late_input = |s: u32, w: u32, metrics: std::ops::Range<u32>| Input {
        topic: format!("in/{}/data", sensor(s)),
        payload: {
            let mut o = serde_json::Map::new();
            o.insert("ts".into(), (t0 + i64::from(w) * 1000 + 700).into());
            for m in metrics {
                o.insert(metric(m), 0.5.into());
            }
            Value::Object(o).to_string()
        },
    };
    for i in 0..MESSAGES {
        for s in 0..SENSORS {
            let mut o = serde_json::Map::new();
            o.insert("ts".into(), (t0 + i64::from(i) * 1000 + 100).into());
            for m in 0..METRICS {
                let spike = m == ALARM_METRIC && i % SPIKE_EVERY == SPIKE_AT;
                let v = if spike {
                    5000.0
                } else {
                    f64::from(i) + f64::from(m) / 100.0
                };
                o.insert(metric(m), v.into());
            }
            if i % SPIKE_EVERY == SPIKE_AT {
                exp.spikes += 1;
            }
            inputs.push(Input {
                topic: format!("in/{}/data", sensor(s)),
                payload: Value::Object(o).to_string(),
            });
            if i >= 1 {
                for m in 0..METRICS {
                    pane(&mut exp, s, m, i - 1, false);
                }
            }
            if i >= 3 && (i + s) % 4 == 0 {
                inputs.push(late_input(s, i - 2, 10..15));
                for m in 10..15 {
                    pane(&mut exp, s, m, i - 2, true);
                }
            }
            if i >= 3 && (i + s) % 8 == 0 {
                inputs.push(late_input(s, i - 3, 10..12));
                for m in 10..12 {
                    pane(&mut exp, s, m, i - 3, true);
                }
            }
        }
    }
    (inputs, exp)
}

/// The newest `online` status message the recorder got.
fn status(recorder: &Recorder) -> Option<Value> {
    recorder.with(|m| m.last_online()).map(|s| s.json)
}

fn sum_by_reason(status: &Value, category: &str) -> u64 {
    by_reason(status, category).values().sum()
}

#[test]
fn after_an_outage_the_backlog_drains_alerts_first_latest_revisions_only_in_order_and_rate_limited()
{
    let max_rate: u32 = std::env::var("OUTAGE_MAX_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MAX_RATE);
    let dir = scratch();
    let input = Broker::start_new(dir.path());
    let mut upstream = Broker::new(dir.path(), free_port());
    upstream.start();
    let filter = format!("weir/{DEVICE}/#");
    let recorder = Recorder::persistent(upstream.port, &filter, "outage-recorder");
    let cfg = config(dir.path(), input.port, upstream.port, max_rate);
    let weir = Weir::start(&cfg, dir.path());
    let db = OutboxFile::new(dir.path().join("state/outbox.db"));
    let publisher = Publisher::connect(input.port);

    // Before the outage: probe until a pane of the "probe" sensor comes through, so
    // both the ingest subscription and the uplink are known to be live.
    let t0 = (now_ms() / 1000 - 3600) * 1000;
    let mut probe = 0i64;
    let live = publisher.publish_until(
        Duration::from_secs(60),
        Duration::from_millis(200),
        |i| {
            probe = i as i64 + 1;
            let ts = t0 - 600_000 + i as i64 * 1000;
            let payload = format!(r#"{{"ts": {ts}, "m01": 1}}"#);
            ("in/probe/data".into(), payload.into_bytes())
        },
        || {
            recorder
                .with(|m| m.iter().any(|m| m.topic.contains("/agg/probe/")))
                .then_some(())
        },
    );
    assert!(live.is_some(), "no probe pane arrived\n{}", weir.log());
    // The last probe closed the window of the one before it (max_out_of_orderness
    // is 0): wait until that pane is delivered and the outbox is empty, so the
    // backlog below is exactly the workload's. (Results reach the outbox at the next
    // checkpoint, so an empty outbox alone could still be followed by a probe pane.)
    let last_closed = t0 - 600_000 + (probe - 2) * 1000;
    let idle = wait_for(Duration::from_secs(30), || {
        let delivered = recorder.with(|m| {
            m.iter().any(|m| {
                m.topic.contains("/agg/probe/")
                    && m.json["window_start"].as_i64() == Some(last_closed)
            })
        });
        if !delivered {
            return None;
        }
        db.class_counts().filter(|r| r.iter().sum::<u64>() == 0)
    });
    assert!(
        idle.is_some(),
        "probe rows not delivered: {:?}",
        db.class_counts()
    );

    // The outage. The recorder's persistent session is saved with the broker's state,
    // so the broker queues for it whatever the agent sends once it is back.
    upstream.stop();
    weir.wait_log("upstream connection lost", Duration::from_secs(30));

    let (inputs, expected) = workload(t0);
    let feed_started = Instant::now();
    publisher.publish_all(inputs.iter().map(|i| (&i.topic, i.payload.clone())));
    let panes = expected.panes() as u64;
    let alerts = 2 * expected.spikes;
    let backlog = wait_for(Duration::from_secs(600), || {
        db.class_counts()
            .filter(|r| r[0] >= alerts && r[1] >= panes)
    });
    let backlog = backlog.unwrap_or_else(|| {
        panic!(
            "backlog did not reach {panes} panes and {alerts} alerts: {:?}\n{}",
            db.class_counts(),
            weir.log()
        )
    });
    eprintln!(
        "outage: {} inputs -> backlog {backlog:?} in {:.1} s",
        inputs.len(),
        feed_started.elapsed().as_secs_f64()
    );
    assert!(
        backlog[0] + backlog[1] + backlog[2] >= 100_000,
        "{backlog:?}"
    );
    // Exactly one row per window: each late revision replaced its unsent predecessor.
    assert_eq!(
        backlog,
        [alerts, panes, 0],
        "rows per class (alert, aggregate, diagnostic)"
    );

    // The upstream comes back.
    let up_at = Instant::now();
    upstream.start();
    let recorder = Recorder::persistent(upstream.port, &filter, "outage-recorder");
    let want = panes as usize + alerts as usize;
    let done = wait_for(Duration::from_secs(900), || {
        (recorder.distinct() >= want).then_some(())
    });
    let drain = up_at.elapsed();
    let msgs = recorder.messages();
    assert!(
        done.is_some(),
        "only {} of {want} distinct messages arrived\n{}",
        recorder.distinct(),
        weir.log()
    );
    eprintln!(
        "outage: drained {want} messages in {:.1} s ({:.0}/s, max_rate {max_rate})",
        drain.as_secs_f64(),
        want as f64 / drain.as_secs_f64()
    );
    check_delivery(&msgs, &expected);

    // Rate limit: every aggregate but the initial burst waits for a token.
    let floor =
        Duration::from_secs_f64((panes - u64::from(MAX_INFLIGHT)) as f64 / f64::from(max_rate));
    assert!(
        drain >= floor,
        "{panes} aggregates drained in {drain:?}, faster than max_rate {max_rate}/s allows ({floor:?})"
    );

    // The outbox empties, and the counters account for every message produced.
    let empty = wait_for(Duration::from_secs(60), || {
        db.class_counts().filter(|r| r.iter().sum::<u64>() == 0)
    });
    assert!(empty.is_some(), "outbox not empty: {:?}", db.class_counts());
    let balanced = wait_for(Duration::from_secs(30), || {
        let status = status(&recorder)?;
        let produced = counter(&status, "produced");
        let gone = counter(&status, "acked")
            + counter(&status, "outbox_superseded")
            + sum_by_reason(&status, "evicted")
            + sum_by_reason(&status, "expired")
            + sum_by_reason(&status, "dropped");
        (produced > 0 && produced == gone).then_some(status)
    });
    let status = balanced.unwrap_or_else(|| {
        panic!(
            "counters do not balance with an empty outbox: {:?}",
            status(&recorder)
        )
    });
    assert_eq!(counter(&status, "outbox_superseded"), expected.late_panes);
    assert_eq!(sum_by_reason(&status, "evicted"), 0);
}

/// Everything arrived, alerts first, latest revisions only, in production order per key.
fn check_delivery(msgs: &[Msg], expected: &Expected) {
    // Duplicates are allowed (at least once); judge the first copy of each message.
    let mut seen = HashSet::new();
    let backlog: Vec<&Value> = msgs
        .iter()
        .filter(|m| !m.topic.ends_with("/status") && !m.topic.contains("/probe/"))
        .map(|m| &m.json)
        .filter(|v| seen.insert(v["msg_id"].as_str().unwrap_or_default().to_string()))
        .collect();
    let kinds: Vec<&str> = backlog
        .iter()
        .map(|v| v["type"].as_str().unwrap_or("?"))
        .collect();
    let last_alert = kinds.iter().rposition(|k| *k == "alert");
    let first_pane = kinds.iter().position(|k| *k == "pane");
    assert!(
        matches!((last_alert, first_pane), (Some(a), Some(p)) if a < p),
        "an aggregate of the backlog arrived before its last alert (last alert at {last_alert:?}, first pane at {first_pane:?})"
    );
    assert!(
        kinds.iter().all(|k| *k == "alert" || *k == "pane"),
        "unexpected types"
    );

    // Alerts: one raised and one cleared per spike, with the same id.
    let mut alert_states: HashMap<String, Vec<String>> = HashMap::new();
    for v in backlog.iter().filter(|v| v["type"] == "alert") {
        alert_states
            .entry(v["id"].as_str().unwrap_or_default().to_string())
            .or_default()
            .push(v["state"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(alert_states.len() as u64, expected.spikes, "raised alerts");
    for (id, states) in &alert_states {
        assert_eq!(states, &["raised", "cleared"], "alert {id}");
    }

    // Panes: per key, exactly the expected windows, each once, at its final revision,
    // in the order those revisions were produced.
    let t0_of = |v: &Value| v["window_start"].as_i64().unwrap_or(0);
    let base = backlog
        .iter()
        .filter(|v| v["type"] == "pane")
        .map(|v| t0_of(v))
        .min()
        .unwrap_or(0);
    let mut got: HashMap<Key, Vec<Got>> = HashMap::new();
    for v in backlog.iter().filter(|v| v["type"] == "pane") {
        let key = (
            v["sensor"].as_str().unwrap_or_default().to_string(),
            v["metric"].as_str().unwrap_or_default().to_string(),
        );
        let w = u32::try_from((t0_of(v) - base) / 1000).unwrap_or(u32::MAX);
        got.entry(key).or_default().push((
            w,
            v["revision"].as_u64().unwrap_or(u64::MAX),
            v["count"].as_u64().unwrap_or(0),
        ));
    }
    let order = expected.order();
    assert_eq!(got.len(), expected.windows.len(), "keys with panes");
    for (key, windows) in &expected.windows {
        let arrived = got
            .get(key)
            .unwrap_or_else(|| panic!("no pane of {key:?} arrived"));
        let arrived_order: Vec<u32> = arrived.iter().map(|a| a.0).collect();
        assert_eq!(
            arrived_order, order[key],
            "{key:?}: panes not in production order (or missing, or an older revision was sent)"
        );
        for (w, rev, count) in arrived {
            let want = windows[w];
            assert_eq!(
                (*rev, *count),
                (want.revision, want.count),
                "{key:?} window {w}: (revision, count)"
            );
        }
    }
}
