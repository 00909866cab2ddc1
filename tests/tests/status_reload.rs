//! `weir status` after a reload (SIGHUP) with the upstream broker gone: the new pipeline
//! has had no PUBACK of its own, and status still names the last one and the last
//! error's age instead of "last PUBACK never".

use std::time::Duration;

use serde_json::Value;
use weir_tests::{Broker, Config, Weir, cli_cfg, scratch, signal, toml, wait_for};

const WAIT: Duration = Duration::from_secs(30);

fn status(cfg: &std::path::Path) -> Value {
    let out = cli_cfg(&["status", "--json"], cfg);
    serde_json::from_str(&out.stdout).unwrap_or(Value::Null)
}

#[test]
fn the_last_puback_survives_a_reload_and_the_last_error_has_an_age() {
    let dir = scratch();
    let d = dir.path();
    let mut broker = Broker::start_new(d);
    let cfg = Config::new("rl", d)
        .agent(toml! { runtime_dir = d.join("run").as_path(), shutdown_grace = "500ms" })
        .upstream(broker.port)
        .sim(toml! { name = "s", metric = "t", interval = "50ms" })
        .write();
    let weir = Weir::start(&cfg, d);
    let puback = wait_for(WAIT, || status(&cfg)["upstream"]["last_puback_ms"].as_i64())
        .unwrap_or_else(|| weir.fail("no PUBACK"));
    let first = status(&cfg);
    assert!(first["upstream"]["up_since_ms"].is_i64(), "{first:#}");

    broker.stop();
    // The loss is recorded with its time.
    let lost = wait_for(WAIT, || {
        let s = status(&cfg);
        s["upstream"]["last_error_ms"].as_i64().map(|_| s)
    })
    .unwrap_or_else(|| weir.fail("no upstream error recorded"));
    let before = lost["pipeline_started_at"].clone();
    let last_puback = lost["upstream"]["last_puback_ms"].as_i64().unwrap_or(0);
    assert!(last_puback >= puback, "{lost:#}");

    signal(weir.pid().unwrap_or_else(|| weir.fail("no pid")), "HUP");
    let after = wait_for(WAIT, || {
        let s = status(&cfg);
        (s["pipeline_started_at"] != before && s["pipeline"] == "running").then_some(s)
    })
    .unwrap_or_else(|| weir.fail("no reload"));
    // No broker: the new pipeline cannot have had a PUBACK of its own.
    assert_eq!(
        after["upstream"]["last_puback_ms"].as_i64(),
        Some(last_puback),
        "{after:#}"
    );
    assert!(after["upstream"]["last_error_ms"].is_i64(), "{after:#}");
    let human = cli_cfg(&["status"], &cfg).stdout;
    assert!(!human.contains("last PUBACK never"), "{human}");
    assert!(human.contains("          last error "), "{human}");
    assert!(human.contains(" ago: "), "{human}");
}
