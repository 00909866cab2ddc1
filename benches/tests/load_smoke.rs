//! The load generator end to end, small: its own brokers, the debug `weir`, a few
//! seconds of a disordered stream with anomalies. Asserts what it checks (no
//! window, alert or late reading lost; counters balanced and as the model
//! expects), never a timing.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `weir` binary of this profile (`WEIR_BIN` overrides), built once here:
/// `cargo test` builds binaries only for their own package's tests.
fn weir_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("WEIR_BIN") {
        return PathBuf::from(p);
    }
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_weir-load"));
    let dir = exe.parent().unwrap();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--quiet", "-p", "weir", "--bin", "weir"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    assert!(cmd.status().unwrap().success(), "building weir failed");
    dir.join("weir")
}

fn run(dir: &Path, args: &[&str]) -> (bool, serde_json::Value, String) {
    let out = dir.join("report.json");
    let o = Command::new(env!("CARGO_BIN_EXE_weir-load"))
        .arg("--weir")
        .arg(weir_bin())
        .arg("--out")
        .arg(&out)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let report = std::fs::read_to_string(&out)
        .map(|s| serde_json::from_str(&s).unwrap())
        .unwrap_or_else(|e| panic!("no report ({e}); output:\n{text}"));
    (o.status.success(), report, text)
}

#[test]
fn a_short_disordered_run_loses_nothing_and_the_counters_balance() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, r, text) = run(
        dir.path(),
        &[
            "--rate",
            "500",
            "--keys",
            "20",
            "--duration",
            "3",
            "--baseline",
            "0.5",
            "--late",
            "0.05",
            "--very-late",
            "0.02",
            "--duplicates",
            "0.02",
            "--skewed-keys",
            "0.2",
            "--anomalies",
            "0.01",
            "--max-keys",
            "16",
            "--idle-timeout-ms",
            "1000",
            "--drain-timeout",
            "30",
            "--label",
            "smoke",
        ],
    );
    assert!(ok, "weir-load failed:\n{text}");
    assert_eq!(r["ok"], true, "{text}");
    let (loss, bal) = (&r["loss"], &r["balance"]);
    // The run exercised what it claims to check.
    assert!(loss["late_expected"].as_u64().unwrap() > 0, "{text}");
    assert!(loss["alerts_expected"].as_u64().unwrap() > 0, "{text}");
    assert!(
        bal["rejected"].as_u64().unwrap() > 0,
        "keys 16..20 exceed max_keys: {text}"
    );
    for k in ["windows_missing", "windows_wrong_count", "alerts_missing"] {
        assert_eq!(loss[k], 0, "{k}: {text}");
    }
    assert_eq!(loss["late_received"], loss["late_expected"], "{text}");
    assert_eq!(bal["balanced"], true, "{text}");
    assert_eq!(bal["received"], bal["published_by_generator"], "{text}");
    assert!(r["baseline"]["rate"].as_f64().unwrap() > 0.0, "{text}");
    assert!(r["rss_kib"]["peak_vmhwm"].as_u64().unwrap() > 0, "{text}");
}
