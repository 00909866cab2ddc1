//! `weir top --once` against a real daemon delivering to a real Mosquitto: one frame
//! within 80x24 whose rates come from the daemon's counters; exit 3 with weir down.

use std::time::Duration;

use weir_tests::{Broker, Config, Weir, cli_cfg, scratch, toml, wait_for};

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn top_once_shows_one_frame_of_live_rates_within_80_by_24() {
    let dir = scratch();
    let d = dir.path();
    let broker = Broker::start_new(d);
    let cfg = Config::new("top", d)
        .agent(toml! { runtime_dir = d.join("run").as_path(), shutdown_grace = "500ms" })
        .upstream(broker.port)
        .sim(toml! { name = "greenhouse", metric = "temperature", interval = "50ms" })
        .write();

    // Down: said, exit 3, like `weir status`.
    let out = cli_cfg(&["top", "--once"], &cfg);
    assert_eq!(out.code, Some(3), "{}", out.all());
    assert!(out.stderr.contains("not running"), "{}", out.stderr);

    let mut weir = Weir::start(&cfg, d);
    // Healthy and delivering: a PUBACK arrived.
    let ready = wait_for(WAIT, || {
        (cli_cfg(&["status"], &cfg).code == Some(0)).then_some(())
    });
    assert!(
        ready.is_some(),
        "weir did not become healthy: {}",
        weir.log()
    );

    let out = cli_cfg(&["top", "--once", "--interval", "500ms"], &cfg);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let text = out.stdout;
    assert!(text.lines().count() <= 24, "{text}");
    assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
    assert!(text.starts_with("weir top: top, weir 0.1.0 up "), "{text}");
    assert!(text.contains("\nhealth    healthy\n"), "{text}");
    // The sim sensor reads 20 times a second: the rate between the two documents is
    // positive (its exact value depends on the machine's timing, so it is not asserted).
    let readings = text
        .lines()
        .find(|l| l.starts_with("  readings in"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|r| r.parse::<f64>().ok());
    assert!(readings.is_some_and(|r| r > 0.0), "{text}");
    assert!(
        text.contains(&format!("\nupstream  127.0.0.1:{} up ", broker.port)),
        "{text}"
    );
    assert!(text.contains("\ningest    not configured\n"), "{text}");
    assert!(
        text.contains("\nlag       worst greenhouse/temperature "),
        "{text}"
    );
    weir.stop_ok(WAIT);
}
