//! The figures of a run, as JSON, and the one-line summary.

use serde_json::{Value, json};
use weir_benches::workload::{Expect, Workload};

use crate::Args;
use crate::collect::Upstream;
use crate::procs::Sample;
use crate::publish::Phase;

/// Everything a report is made from.
pub struct Inputs<'a> {
    pub args: &'a Args,
    pub workload: &'a Workload,
    pub expect: &'a Expect,
    pub phase: &'a Phase,
    /// Receive time of the end marker's alert.
    pub end_ms: Option<f64>,
    pub upstream: &'a Upstream,
    pub samples: &'a [Sample],
    /// (published, received, seconds).
    pub baseline: Option<(u64, u64, f64)>,
    pub restarts: u64,
    pub crashed: bool,
    /// Load averages before and after.
    pub load: (String, String),
}

/// p50, p99 and max of `v` (sorted here), in ms.
fn dist(mut v: Vec<f64>) -> Value {
    if v.is_empty() {
        return json!({"n": 0});
    }
    v.sort_by(f64::total_cmp);
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    let r = |x: f64| (x * 100.0).round() / 100.0;
    json!({"n": v.len(), "p50": r(q(0.5)), "p99": r(q(0.99)), "max": r(q(1.0))})
}

fn sum_obj(v: &Value) -> u64 {
    v.as_object()
        .map_or(0, |m| m.values().filter_map(Value::as_u64).sum())
}

/// CPU cores used between the samples nearest `from` and `to` (ms).
fn cores(s: &[Sample], from: f64, to: f64) -> Option<f64> {
    let a = s.iter().find(|x| x.at_ms >= from)?;
    let b = s.iter().rev().find(|x| x.at_ms <= to)?;
    (b.at_ms > a.at_ms).then(|| (b.cpu_s - a.cpu_s) / ((b.at_ms - a.at_ms) / 1000.0))
}

/// The report as JSON.
pub fn build(i: Inputs) -> Value {
    let (a, e, ph, u) = (i.args, i.expect, i.phase, i.upstream);
    let pub_secs = (ph.last_ms - ph.first_ms) / 1000.0;
    let proc_secs = i.end_ms.map(|t| (t - ph.first_ms) / 1000.0);
    let throughput = proc_secs.map(|s| ph.count as f64 / s);
    let ceiling = i.baseline.map(|(p, _, s)| p as f64 / s);
    let drain_ms = i.end_ms.map(|t| t - ph.last_ms);

    // Lag: readings published but not yet received by weir, at each status.
    // (Interpolated between the publisher's 200 ms progress samples.)
    let published_at = |t: f64| {
        let k = ph.progress.partition_point(|p| p.0 <= t);
        match (k.checked_sub(1).map(|k| ph.progress[k]), ph.progress.get(k)) {
            (Some(a), Some(b)) if b.0 > a.0 => {
                a.1 as f64 + (b.1 - a.1) as f64 * (t - a.0) / (b.0 - a.0)
            }
            (Some(a), _) => a.1 as f64,
            (None, _) => 0.0,
        }
    };
    let lags: Vec<(f64, i64)> = u
        .status_history
        .iter()
        .filter(|(t, _)| *t >= ph.first_ms && *t <= ph.last_ms)
        .map(|&(t, m)| (t, published_at(t).round() as i64 - m as i64))
        .collect();
    let lag_max = lags.iter().map(|l| l.1).max().unwrap_or(0);
    let half = lags.len() / 2;
    let mean = |s: &[(f64, i64)]| s.iter().map(|l| l.1 as f64).sum::<f64>() / s.len().max(1) as f64;
    let (lag_first_half, lag_second_half) = (mean(&lags[..half]), mean(&lags[half..]));
    let rate = if a.rate > 0.0 {
        a.rate
    } else {
        throughput.unwrap_or(1.0)
    };
    // Keeps up: the backlog stays under a second's worth and the end marker
    // came back within a second of the last publish.
    let keeps_up = drain_ms.is_some_and(|d| d < 1000.0) && (lag_max as f64) < rate;

    // Per alert: latency, publish time, key, reading ts. The five slowest are
    // reported too, to find in weir's log (its alert line has the time it was
    // raised): what the tail waits for, ingest or delivery.
    let mut alerts: Vec<(f64, f64, u32, i64)> = e
        .alerts
        .iter()
        .filter_map(|k| {
            let (sent, got) = (*ph.anomalies.get(k)?, *u.alerts.get(k)?);
            Some((got - sent, sent, k.0, k.1))
        })
        .collect();
    let alert_lat: Vec<f64> = alerts.iter().map(|a| a.0).collect();
    alerts.sort_by(|a, b| b.0.total_cmp(&a.0));
    let slowest: Vec<Value> = alerts
        .iter()
        .take(5)
        .map(|(lat, sent, key, ts)| json!({"latency_ms": (lat * 100.0).round() / 100.0, "published_ms": (sent * 10.0).round() / 10.0, "key": key, "ts": ts}))
        .collect();
    // Panes received after the last publish are the last windows of each key,
    // fired by idle_timeout (wall clock), not by the watermark: not counted.
    // Each key's first window began before the run did: it is partial, and it
    // fires while weir's upstream connection is still settling (seen: about
    // 0.5 s more, and rev 0 then superseded by a late revision before it went
    // out). It is reported apart, as a warm-up, not in the steady figures.
    // What weir itself adds is measured from the publish of the reading that moved
    // the key's watermark past the window's end (until then no engine may fire it:
    // at K keys and R readings/s a key's next reading comes up to K/R s later).
    let (mut pane_lat, mut first_window_lat, mut weir_lat) = (Vec::new(), Vec::new(), Vec::new());
    for &((k, start), d, recv) in u.pane_recv.iter().filter(|p| p.2 <= ph.last_ms) {
        let skew = i.workload.skew(k);
        let latency = d + skew as f64;
        if ((start - skew) as f64) < ph.first_ms {
            first_window_lat.push(latency);
            continue;
        }
        pane_lat.push(latency);
        if let Some(closed) = ph.closed.get(&(k, start)) {
            weir_lat.push(recv - closed);
        }
    }

    let missing_windows = e
        .windows
        .keys()
        .filter(|k| !u.panes.contains_key(k))
        .count();
    let wrong_count = e
        .windows
        .iter()
        .filter(|(k, c)| u.panes.get(k).is_some_and(|p| p.1 != u64::from(**c)))
        .count();
    let extra_windows = u
        .panes
        .keys()
        .filter(|k| !e.windows.contains_key(k))
        .count();
    let missing_alerts = e
        .alerts
        .iter()
        .filter(|k| !u.alerts.contains_key(k))
        .count();

    let s = &i.samples;
    let at = |f: f64| {
        let t = ph.first_ms + f * (ph.last_ms - ph.first_ms);
        s.iter().find(|x| x.at_ms >= t).map(|x| x.rss_kib)
    };
    let t0 = s.first().map_or(0.0, |x| x.at_ms);

    let status = u
        .status
        .as_ref()
        .map(|(v, _)| v.clone())
        .unwrap_or(Value::Null);
    let c = &status["counters"];
    let g = |k: &str| c[k].as_u64().unwrap_or(0);
    let (rejected, deadletter) = (sum_obj(&c["rejected"]), sum_obj(&c["deadletter"]));
    let received = g("mqtt_messages").saturating_sub(g("ingest_redelivered"));
    let accounted = g("windowed") + g("late") + rejected + deadletter;
    let balanced = c.is_object()
        && received == accounted
        && received == ph.count
        && g("readings") == g("windowed") + g("late") + rejected;
    let as_expected = g("windowed") == e.windowed && g("late") == e.late && rejected == e.rejected;
    let lost = missing_windows + wrong_count + missing_alerts;
    let ok = !i.crashed
        && i.end_ms.is_some()
        && lost == 0
        && u.late == e.late
        && balanced
        && as_expected;

    let r1 = |x: f64| (x * 10.0).round() / 10.0;
    json!({
        "label": a.label,
        "ok": ok,
        "load_average": {"before": i.load.0, "after": i.load.1},
        "params": {
            "rate": a.rate, "keys": a.keys, "duration_s": a.duration, "late": a.late,
            "very_late": a.very_late, "duplicates": a.duplicates, "skewed_keys": a.skewed_keys,
            "anomalies": a.anomalies, "max_keys": a.max_keys, "window_ms": a.window_ms,
            "max_out_of_orderness_ms": a.ooo_ms, "allowed_lateness_ms": a.lateness_ms,
            "idle_timeout_ms": a.idle_timeout_ms, "checkpoint_interval_ms": a.checkpoint_ms,
            "broker_inflight": a.broker_inflight, "seed": a.seed,
            "restart_upstream_every_s": a.restart_upstream_every, "weir": a.weir,
        },
        "baseline": i.baseline.map(|(p, r, s)| json!({
            "published": p, "received": r, "seconds": r1(s * 10.0) / 10.0,
            "rate": ceiling.map(r1),
        })),
        "throughput": {
            "published": ph.count,
            "publish_seconds": r1(pub_secs * 10.0) / 10.0,
            "publish_rate": r1(ph.count as f64 / pub_secs.max(1e-9)),
            "processed_seconds": proc_secs.map(|s| r1(s * 10.0) / 10.0),
            "rate": throughput.map(r1),
            "fraction_of_ceiling": throughput.zip(ceiling).map(|(t, c)| (t / c * 1000.0).round() / 1000.0),
            "drain_ms": drain_ms.map(r1),
            "keeps_up": keeps_up,
            "lag_readings": {"max": lag_max, "mean_first_half": r1(lag_first_half),
                             "mean_second_half": r1(lag_second_half), "samples": lags.len()},
        },
        "latency_ms": {
            "publish_to_alert": dist(alert_lat),
            "window_end_to_on_time_pane": dist(pane_lat),
            "first_window_end_to_on_time_pane": dist(first_window_lat),
            "watermark_passed_to_on_time_pane": dist(weir_lat),
            "slowest_alerts": slowest,
        },
        "loss": {
            "windows_expected": e.windows.len(), "windows_missing": missing_windows,
            "windows_wrong_count": wrong_count, "windows_unexpected": extra_windows,
            "alerts_expected": e.alerts.len(), "alerts_missing": missing_alerts,
            "late_expected": e.late, "late_received": u.late,
            "deadletter_received": u.deadletter, "other_alerts_received": u.other_alerts,
            "upstream_messages": u.messages, "upstream_duplicates": u.duplicates,
            "unparsed": u.unparsed, "upstream_restarts": i.restarts, "weir_crashed": i.crashed,
            // Rows still in weir's outbox when the report was taken: what is missing
            // above was not received by the end of the wait; if it is here, it was
            // not lost but not yet delivered.
            "outbox_pending_at_end": g("outbox_inserted").saturating_sub(
                g("acked") + g("outbox_superseded") + sum_obj(&c["evicted"]) + sum_obj(&c["expired"])),
        },
        "cpu_cores": {
            "publishing": cores(s, ph.first_ms, ph.last_ms).map(|x| (x * 1000.0).round() / 1000.0),
        },
        "rss_kib": {
            "start": at(0.02), "middle": at(0.5), "end": at(0.98),
            "max": s.iter().map(|x| x.rss_kib).max(),
            "peak_vmhwm": s.last().map(|x| x.hwm_kib),
        },
        "balance": {
            "received": received, "windowed": g("windowed"), "late": g("late"),
            "rejected": rejected, "deadlettered": deadletter,
            "ingest_redelivered": g("ingest_redelivered"), "published_by_generator": ph.count,
            "balanced": balanced,
            "expected": {"windowed": e.windowed, "late": e.late, "rejected": e.rejected},
            "as_expected": as_expected,
        },
        "status": status,
        "samples": s.iter().map(|x| json!([r1((x.at_ms - t0) / 100.0) / 10.0, r1(x.cpu_s * 100.0) / 100.0, x.rss_kib])).collect::<Vec<_>>(),
    })
}

/// One line for the terminal.
pub fn summary(r: &Value) -> String {
    let t = &r["throughput"];
    let l = &r["latency_ms"];
    let loss = &r["loss"];
    format!(
        "weir-load{label}: {ok} published={p} rate={rate}/s ceiling={ceil}/s ({frac}) keeps_up={ku} \
         alert p50/p99/max={a50}/{a99}/{amax} ms pane p50/p99/max={p50}/{p99}/{pmax} ms \
         (watermark->pane p50/p99/max={w50}/{w99}/{wmax} ms) \
         cpu={cpu} cores rss start/mid/end/peak={rs}/{rm}/{re}/{rp} KiB \
         missing windows={mw} wrong={wc} alerts={ma} late={lr}/{le} balanced={bal} load={load}",
        label = r["label"]
            .as_str()
            .filter(|l| !l.is_empty())
            .map(|l| format!(" {l}"))
            .unwrap_or_default(),
        ok = if r["ok"] == true { "OK" } else { "FAIL" },
        p = t["published"],
        rate = t["rate"],
        ceil = r["baseline"]["rate"],
        frac = t["fraction_of_ceiling"],
        ku = t["keeps_up"],
        a50 = l["publish_to_alert"]["p50"],
        a99 = l["publish_to_alert"]["p99"],
        amax = l["publish_to_alert"]["max"],
        p50 = l["window_end_to_on_time_pane"]["p50"],
        p99 = l["window_end_to_on_time_pane"]["p99"],
        pmax = l["window_end_to_on_time_pane"]["max"],
        w50 = l["watermark_passed_to_on_time_pane"]["p50"],
        w99 = l["watermark_passed_to_on_time_pane"]["p99"],
        wmax = l["watermark_passed_to_on_time_pane"]["max"],
        cpu = r["cpu_cores"]["publishing"],
        rs = r["rss_kib"]["start"],
        rm = r["rss_kib"]["middle"],
        re = r["rss_kib"]["end"],
        rp = r["rss_kib"]["peak_vmhwm"],
        mw = loss["windows_missing"],
        wc = loss["windows_wrong_count"],
        ma = loss["alerts_missing"],
        lr = loss["late_received"],
        le = loss["late_expected"],
        bal = r["balance"]["balanced"],
        load = r["load_average"]["after"],
    )
}
