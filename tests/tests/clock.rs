//! The device's own clock (`docs/time.md`, "Weir's clock"), with the clock
//! under the test's control (`WEIR_TEST_CLOCK`: the system clock plus an
//! offset, and a sync flag), never the machine's:
//! 1. booted in 1970 and not synchronised: MQTT readings with good timestamps
//!    are windowed, not quarantined; local readings are held; status says so;
//! 2. the clock synchronises: the held readings come out corrected, in
//!    windows at the true time;
//! 3. the system clock steps 3 h ahead, then 3 h back, while running: no
//!    window fires early, no reading is late, quarantined or misplaced, no key
//!    goes idle.
//!
//! A second test reloads, kills and stops Weir before any synchronisation: the
//! held readings are part of the checkpointed state, so the reload keeps them,
//! a SIGKILL and a stop lose none of those checkpointed, and the sync at last
//! places them all, corrected; nothing is dead-lettered.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use weir_tests::{
    Broker, Config, Consumer, Msg, Weir, now_ms, scratch, signal, toml, wait_for, weir_command,
};

const WAIT: Duration = Duration::from_secs(30);
const HOUR: i64 = 3_600_000;

fn config(dir: &Path, port: u16, device: &str) -> PathBuf {
    Config::new(device, dir)
        .agent(toml! { runtime_dir = dir.join("run").as_path(), shutdown_grace = "2s" })
        .engine(toml! {
            max_out_of_orderness = "100ms", allowed_lateness = "0s",
            max_future_skew = "1m", idle_timeout = "10m",
        })
        .upstream(port)
        .set("uplink", "status_interval", "500ms")
        .ingest(port, &format!("{device}-ingest"))
        .topic("home/+/+", "{2}", "{3}")
        .sim(toml! {
            name = "local", metric = "temperature", interval = "50ms",
            seed = 3, base = 20.0, noise = 0.1,
        })
        .write()
}

/// The test's clock: the system clock plus `offset_ms`, synchronised or not.
fn set_clock(file: &Path, offset_ms: i64, synced: bool) {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, format!("{offset_ms} {}\n", u8::from(synced)))
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::rename(&tmp, file).unwrap_or_else(|e| panic!("{e}"));
}

fn status_json(cfg: &Path) -> Value {
    let out = weir_command()
        .args(["status", "--json", "--config"])
        .arg(cfg)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// Waits until the daemon's status satisfies `pred`; returns that status.
fn wait_status(cfg: &Path, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    wait_for(WAIT, || {
        last = status_json(cfg);
        pred(&last).then(|| last.clone())
    })
    .unwrap_or_else(|| panic!("timed out waiting for {what}; last status: {last:#}"))
}

fn panes<'a>(msgs: &'a [Msg], device: &str, key: &str) -> Vec<&'a Msg> {
    let topic = format!("weir/{device}/agg/{key}");
    msgs.iter().filter(|m| m.topic == topic).collect()
}

fn starts(ps: &[&Msg]) -> Vec<i64> {
    ps.iter()
        .filter_map(|m| m.json["window_start"].as_i64())
        .collect()
}

#[test]
fn an_unsynchronised_clock_quarantines_nothing_holds_local_readings_until_sync_and_a_step_moves_nothing()
 {
    let dir = scratch();
    let d = dir.path();
    let dev = "clk";
    let broker = Broker::start_new(d);
    let consumer = Consumer::connect(broker.port, &format!("weir/{dev}/#"), None);
    let cfg = config(d, broker.port, dev);
    let clock = d.join("clock");
    let t_start = now_ms();
    // Booted after a power cut with no RTC: the system clock reads 1970-01-01 01:00.
    let boot = HOUR - t_start;
    set_clock(&clock, boot, false);
    let clock_env = clock.display().to_string();
    let mut weir = Weir::start_with(&cfg, d, &[("WEIR_TEST_CLOCK", clock_env.as_str())]);
    let fail = |e: String| panic!("{e}\nweir log:\n{}", weir.log());

    // 1. Not synchronised.
    let st = wait_status(&cfg, "an unsynchronised clock holding readings", |s| {
        s["clock"]["held_readings"].as_u64().unwrap_or(0) > 0
    });
    assert_eq!(st["clock"]["synchronised"], false, "{st:#}");
    assert_eq!(st["clock"]["trusted"], false, "{st:#}");
    assert_eq!(st["clock"]["sync_source"], "test", "{st:#}");
    let human = weir_command()
        .args(["status", "--config"])
        .arg(&cfg)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let human = String::from_utf8_lossy(&human.stdout).into_owned();
    assert!(human.contains("NOT SYNCHRONISED (test)"), "{human}");

    // A device with a good clock: its readings are 55 years "ahead" of ours.
    let t0 = (now_ms() / 1000 - 30) * 1000;
    for (i, dt) in [0, 400, 1000, 1400, 2100].into_iter().enumerate() {
        consumer.publish(
            "home/dev/temp",
            format!(r#"{{"value": {i}, "ts": {}}}"#, t0 + dt),
        );
    }
    let msgs = consumer
        .wait_until("the device's first two windows", WAIT, |m| {
            panes(m, dev, "dev/temp").len() >= 2
        })
        .unwrap_or_else(&fail);
    let dev_panes = panes(&msgs, dev, "dev/temp");
    assert_eq!(starts(&dev_panes), vec![t0, t0 + 1000]);
    assert_eq!(dev_panes[0].json["count"], 2);
    assert!(
        panes(&msgs, dev, "local/temperature").is_empty(),
        "local readings are held, not windowed in 1970"
    );
    let held = status_json(&cfg)["clock"]["held_readings"]
        .as_u64()
        .unwrap_or(0);

    // 2. NTP: the clock is right (and synchronised).
    let synced_at = now_ms();
    set_clock(&clock, 0, true);
    let st = wait_status(&cfg, "the correction", |s| s["clock"]["trusted"] == true);
    assert_eq!(st["clock"]["synchronised"], true, "{st:#}");
    let correction = st["clock"]["correction_ms"].as_i64().unwrap_or(0);
    assert!(
        (correction + boot).abs() < 5_000,
        "correction {correction} should undo the boot offset {boot}"
    );
    let msgs = consumer
        .wait_until("windows of the corrected readings", WAIT, |m| {
            panes(m, dev, "local/temperature").len() >= 3
        })
        .unwrap_or_else(&fail);
    let first_local = starts(&panes(&msgs, dev, "local/temperature"))[0];
    assert!(
        first_local >= t_start - 1000 && first_local < synced_at,
        "the held readings land at the true time before the sync: {first_local} not in [{t_start}, {synced_at})"
    );
    let st = wait_status(&cfg, "the held readings counted as corrected", |s| {
        s["counters"]["clock"]["corrected"].as_u64().unwrap_or(0) >= held
    });
    assert_eq!(st["clock"]["held_readings"], 0, "{st:#}");

    // 3. The system clock steps 3 h ahead, then 3 h back, while synchronised.
    for step in [3 * HOUR, -3 * HOUR] {
        set_clock(&clock, step, true);
        let st = wait_status(&cfg, "the step seen", |s| {
            s["clock"]["system_minus_weir_ms"]
                .as_i64()
                .is_some_and(|o| (o - step).abs() < 5_000)
        });
        assert_eq!(st["clock"]["trusted"], true, "{st:#}");
        // The device goes on sending good timestamps through the step.
        let t = (now_ms() / 1000) * 1000;
        consumer.publish("home/dev/temp", format!(r#"{{"value": 9, "ts": {t}}}"#));
        let local_now = panes(&consumer.messages(), dev, "local/temperature").len();
        consumer
            .wait_until("local windows going on through the step", WAIT, |m| {
                panes(m, dev, "local/temperature").len() >= local_now + 3
            })
            .unwrap_or_else(&fail);
    }
    set_clock(&clock, 0, true);
    let t_end = now_ms();
    let st = wait_status(&cfg, "the clock back in line", |s| {
        s["clock"]["system_minus_weir_ms"] == 0
    });
    assert!(
        st["clock"]["steps_ignored"].as_u64().unwrap_or(0) >= 1,
        "{st:#}"
    );

    let msgs = consumer.messages();
    // Nothing quarantined, late or dead-lettered; no key went idle.
    for suffix in ["/deadletter", "/late"] {
        let bad: Vec<&Msg> = msgs.iter().filter(|m| m.topic.ends_with(suffix)).collect();
        assert!(
            bad.is_empty(),
            "{suffix}: {:?}",
            bad.first().map(|m| &m.json)
        );
    }
    let c = &st["counters"];
    assert_eq!(c["rejected"], serde_json::json!({}), "{c:#}");
    assert!(c["idle"].is_null(), "{c:#}");
    assert_eq!(c["late"], 0, "{c:#}");
    assert_eq!(c["readings"], c["windowed"], "{c:#}");
    // Every local window is at the true time, one per second, none twice.
    let local = starts(&panes(&msgs, dev, "local/temperature"));
    let mut sorted = local.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted, local, "in order, each once");
    assert!(
        local
            .iter()
            .all(|&s| s >= t_start - 1000 && s <= t_end + 1000),
        "a local window outside [{t_start}, {t_end}]: {local:?}"
    );
    // The device's windows: its readings of phase 3 were windowed at their own time.
    let dev_starts = starts(&panes(&msgs, dev, "dev/temp"));
    assert!(
        dev_starts.iter().all(|&s| s >= t0 && s <= t_end),
        "{dev_starts:?}"
    );
    assert!(weir.terminate(Duration::from_secs(10)).is_some());
}

#[test]
fn readings_held_for_the_sync_survive_a_reload_a_sigkill_and_a_stop_and_are_placed_at_sync() {
    let dir = scratch();
    let d = dir.path();
    let dev = "clk2";
    let broker = Broker::start_new(d);
    let consumer = Consumer::connect(broker.port, &format!("weir/{dev}/#"), None);
    let cfg = config(d, broker.port, dev);
    let clock = d.join("clock");
    set_clock(&clock, HOUR - now_ms(), false);
    let clock_env = clock.display().to_string();
    let env = [("WEIR_TEST_CLOCK", clock_env.as_str())];
    let mut weir = Weir::start_with(&cfg, d, &env);
    let st = wait_status(&cfg, "held readings", |s| {
        s["clock"]["held_readings"].as_u64().unwrap_or(0) >= 5
    });
    let before = st["clock"]["held_readings"].as_u64().unwrap_or(0);
    let started = st["pipeline_started_at"].as_i64().unwrap_or(0);
    // A reload hands the held readings to the new pipeline.
    signal(weir.pid().unwrap_or_else(|| unreachable!()), "HUP");
    let st = wait_status(&cfg, "the reloaded pipeline", |s| {
        s["pipeline_started_at"].as_i64().unwrap_or(0) > started
    });
    let after = st["clock"]["held_readings"].as_u64().unwrap_or(0);
    assert!(
        after >= before,
        "held {before} before the reload, {after} after"
    );
    // A crash: what the last checkpoint held comes back (the reload committed
    // `after` of them; local readings since then lose at most one interval).
    weir.kill9();
    let mut weir = Weir::start_with(&cfg, d, &env);
    let st = wait_status(&cfg, "held readings restored after SIGKILL", |s| {
        s["clock"]["held_readings"].as_u64().unwrap_or(0) >= after
    });
    assert_eq!(st["clock"]["synchronised"], false, "{st}");
    // A clean stop keeps them too.
    assert!(weir.terminate(Duration::from_secs(10)).is_some());
    let mut weir = Weir::start_with(&cfg, d, &env);
    let st = wait_status(&cfg, "held readings restored after a stop", |s| {
        s["clock"]["held_readings"].as_u64().unwrap_or(0) > after
    });
    let held = st["clock"]["held_readings"].as_u64().unwrap_or(0);
    // The sync: every held reading is corrected and placed.
    set_clock(&clock, 0, true);
    let st = wait_status(&cfg, "the correction", |s| {
        s["clock"]["held_readings"].as_u64() == Some(0)
            && s["counters"]["clock"]["corrected"].as_u64().unwrap_or(0) >= held
    });
    assert_eq!(st["clock"]["synchronised"], true, "{st}");
    let msgs = consumer
        .wait_until("panes of the corrected readings", WAIT, |m| {
            !panes(m, dev, "local/temperature").is_empty()
        })
        .unwrap_or_else(|e| panic!("{e}\nweir log:\n{}", weir.log()));
    assert!(
        !msgs.iter().any(|m| m.topic.ends_with("/deadletter")),
        "nothing dead-lettered: {:?}",
        msgs.iter()
            .find(|m| m.topic.ends_with("/deadletter"))
            .map(|m| &m.json)
    );
    assert!(weir.terminate(Duration::from_secs(10)).is_some());
}
