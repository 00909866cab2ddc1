//! The configuration the .deb installs as /etc/weir/weir.toml
//! (packaging/weir-toml.sh): valid, and nothing simulated runs with it, so a fresh
//! Pi never publishes made-up readings under its real name.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use weir_tests::{Weir, free_port, scratch, wait_for, weir_bin, weir_command};

fn packaged_config(dir: &Path) -> String {
    // The script runs `weir` itself: under WEIR_RUNNER (QEMU) through a wrapper.
    let runner = std::env::var("WEIR_RUNNER").unwrap_or_default();
    let bin = if runner.is_empty() {
        weir_bin()
    } else {
        let w = dir.join("weir-wrapper");
        std::fs::write(
            &w,
            format!("#!/bin/sh\nexec {runner} {} \"$@\"\n", weir_bin().display()),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let _ = Command::new("chmod").arg("+x").arg(&w).status();
        w
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/weir-toml.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(bin)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_packaged_config_checks_ok_and_runs_nothing_simulated() {
    let dir = scratch();
    let text = packaged_config(dir.path());
    let cfg = dir.path().join("weir.toml");
    std::fs::write(&cfg, &text).unwrap_or_else(|e| panic!("{e}"));

    let check = weir_command()
        .args(["config", "check"])
        .arg(&cfg)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let summary = String::from_utf8_lossy(&check.stdout).into_owned();
    assert_eq!(check.status.code(), Some(0), "{summary}");
    assert!(
        summary.contains("sources: 0 [[sim]] sensors, 0 I2C, 0 GPIO, 0 1-Wire, 1 ingest topic"),
        "{summary}"
    );
    assert!(summary.contains("\n  nothing simulated\n"), "{summary}");

    // Run it, with the state and socket in the scratch directory and both brokers
    // on ports nobody listens on: no reading may come from anywhere.
    let state = dir.path().join("state");
    let run = dir.path().join("run");
    let local = text
        .replace(
            "state_dir = \"/var/lib/weir\"",
            &format!("state_dir = {:?}", state),
        )
        .replace(
            "runtime_dir = \"/run/weir\"",
            &format!("runtime_dir = {:?}", run),
        )
        .replace("port = 1883", &format!("port = {}", free_port()));
    assert_ne!(
        local, text,
        "the packaged config no longer names its directories"
    );
    let cfg = dir.path().join("local.toml");
    std::fs::write(&cfg, &local).unwrap_or_else(|e| panic!("{e}"));
    let mut weir = Weir::start(&cfg, dir.path());
    let status = || -> Option<Value> {
        let out = weir_command()
            .args(["status", "--json", "--config"])
            .arg(&cfg)
            .output()
            .ok()?;
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        // Three seconds up: a simulated sensor (1 s interval) would have produced.
        (v["source"] == "daemon" && v["uptime_s"].as_u64()? >= 3).then_some(v)
    };
    let v = wait_for(Duration::from_secs(30), status)
        .unwrap_or_else(|| panic!("weir never ran for 3 s:\n{}", weir.log()));
    assert_eq!(v["counters"]["readings"], 0, "{v}");
    assert_eq!(v["sensors"], serde_json::json!({}), "{v}");
    assert!(!weir.log().contains("sim"), "{}", weir.log());
    weir.terminate(Duration::from_secs(10));
}
