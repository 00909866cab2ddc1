//! A read-only state directory, at start-up and under the running daemon.
//!
//! These tests mount filesystems and so need root, as CI has; a refused mount
//! fails the test with the reason rather than skipping it.
//!
//! At run time the filesystem goes read-only the way it does in the field: ext4
//! mounted `errors=remount-ro` (Raspberry Pi OS's SD card) meets an error and the
//! kernel remounts it read-only under weir. `trigger_fs_error` in sysfs raises
//! such an error. `mount -o remount,ro` cannot stand in for it: the kernel refuses
//! it (EBUSY) while any file there is open for writing, as the database is. And
//! the kernel never makes an emergency read-only ext4 writable again while it is
//! mounted (`remount,rw` succeeds but writes still fail with EROFS): recovery is
//! stop, unmount, fsck, mount, start, which is what the second half does.

mod mounts;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use weir_tests::{
    Broker, Config, Msg, Publisher, Recorder, Views, Weir, cli_cfg, free_port, now_ms, scratch,
    toml,
};

use mounts::{Mount, run};

/// `weir run` in `state`, to a broker port nobody listens on: the outbox is
/// opened before any connection is tried.
fn minimal_config(dir: &Path, state: &Path) -> std::path::PathBuf {
    Config::new("ro", dir)
        .agent(toml! { state_dir = state })
        .unset("engine.window", "size")
        .uplink(toml! { host = "127.0.0.1", port = free_port() })
        .table("ingest", toml! { host = "127.0.0.1", port = free_port() })
        .topic("dev/+/+", "{2}", "{3}")
        .write()
}

fn run_weir_until_exit(cfg: &Path) -> (Option<i32>, String) {
    let out = cli_cfg(&["run"], cfg);
    (out.code, out.stderr)
}

#[test]
fn a_read_only_state_directory_at_start_is_a_clear_error_with_its_own_exit_code() {
    let dir = scratch();
    let state = dir.path().join("state");

    // An empty read-only directory: the database cannot even be created.
    let fs = Mount::tmpfs(&state, "1m", true);
    let cfg = minimal_config(dir.path(), &state);
    let (code, log) = run_weir_until_exit(&cfg);
    let db = state.join("outbox.db").display().to_string();
    assert_eq!(code, Some(73), "exit code 73 (read-only):\n{log}");
    assert!(
        log.contains("ERROR") && log.contains(&db) && log.contains("read-only"),
        "the error names the file and says read-only:\n{log}"
    );
    assert!(log.contains("fsck"), "and what to do:\n{log}");

    // An existing database on a filesystem remounted read-only while weir was stopped.
    drop(fs);
    let _fs = Mount::tmpfs(&state, "1m", false);
    rusqlite::Connection::open(state.join("outbox.db"))
        .and_then(|c| c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x);"))
        .unwrap_or_else(|e| panic!("{e}"));
    run("mount", &["-o", "remount,ro", &state.display().to_string()]);
    let (code, log) = run_weir_until_exit(&cfg);
    assert_eq!(code, Some(73), "exit code 73 (read-only):\n{log}");
    assert!(
        log.contains(&db) && log.contains("read-only"),
        "the error names the file and says read-only:\n{log}"
    );
}

const KEYS: i64 = 5;
/// Windows closed by the first phase's readings (its last window stays open).
const BEFORE: i64 = 10;
/// Windows closed by the second phase's readings, published once the disk is read-only.
const AFTER: i64 = 20;

fn windows(m: &[Msg]) -> BTreeMap<String, u64> {
    m.panes().into_iter().map(|p| (p.id, p.count)).collect()
}

fn last_status(m: &[Msg]) -> Option<serde_json::Value> {
    m.last_online().map(|s| s.json)
}

/// Publishes two readings in each window of `from..to` for every key.
fn publish(p: &Publisher, t0: i64, from: i64, to: i64) {
    p.publish_all((from..to).flat_map(|w| {
        (0..KEYS).flat_map(move |k| {
            (0..2).map(move |i| {
                let ts = t0 + w * 1000 + 100 + i * 400;
                (
                    format!("dev/k{k}/v"),
                    format!(r#"{{"value": {w}, "ts": {ts}}}"#),
                )
            })
        })
    }));
}

#[test]
fn a_filesystem_remounted_read_only_under_weir_is_reported_holds_results_and_loses_nothing_silently()
 {
    let dir = scratch();
    let state = dir.path().join("state");
    let image = dir.path().join("sd.img");
    let fs = Mount::ext4(&image, 16, &state);
    let out = Command::new("findmnt")
        .args(["-no", "SOURCE"])
        .arg(fs.path())
        .output()
        .unwrap_or_else(|e| panic!("findmnt: {e}"));
    let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let trigger = Path::new("/sys/fs/ext4")
        .join(Path::new(&dev).file_name().unwrap_or_default())
        .join("trigger_fs_error");
    assert!(
        trigger.exists(),
        "{} is missing: this kernel cannot raise an ext4 error on demand",
        trigger.display()
    );

    let local = Broker::start_new(dir.path());
    local.create_session("ro-ingest", "dev/+/+");
    let upstream = Broker::start_new(dir.path());
    let consumer = Recorder::persistent(upstream.port, "weir/ro/#", "ro-consumer");
    let cfg = Config::new("ro", dir.path())
        .agent(toml! { state_dir = state.as_path() })
        .engine(toml! { max_out_of_orderness = "0s", allowed_lateness = "0s" })
        .uplink(toml! { host = "127.0.0.1", port = upstream.port, status_interval = "1s" })
        .ingest(local.port, "ro-ingest")
        .topic("dev/+/+", "{2}", "{3}")
        .write();
    let mut weir = Weir::start(&cfg, dir.path());
    let t0 = (now_ms() / 1000 - 3600) * 1000;
    let publisher = Publisher::connect(local.port);

    // Before: windows 0..BEFORE close and arrive.
    publish(&publisher, t0, 0, BEFORE + 1);
    consumer
        .wait_until("the windows before", Duration::from_secs(60), |m| {
            windows(m).len() as i64 >= KEYS * BEFORE
        })
        .unwrap_or_else(|e| panic!("{e}\nweir log:\n{}", weir.log()));

    // The card fails: ext4 remounts itself read-only under weir.
    std::fs::write(&trigger, "weir readonly test").unwrap_or_else(|e| panic!("{e}"));
    publish(&publisher, t0, BEFORE + 1, BEFORE + AFTER + 1);

    let db = state.join("outbox.db").display().to_string();
    let line = weir
        .log_line(Duration::from_secs(60), |l| {
            l.contains("ERROR") && l.contains("cannot write results to the outbox")
        })
        .unwrap_or_else(|| panic!("the read-only disk was not reported:\n{}", weir.log()));
    assert!(
        line.contains(&db) && line.contains("read-only") && line.contains("fsck"),
        "the ERROR line names the database, says read-only and what to do: {line}"
    );
    let blocked = consumer
        .wait_until("a blocked status", Duration::from_secs(30), |m| {
            last_status(m).is_some_and(|s| s["outbox_blocked"] == true)
        })
        .unwrap_or_else(|e| panic!("{e}\nweir log:\n{}", weir.log()));
    let status = last_status(&blocked).unwrap_or_default();
    assert_eq!(status["outbox_blocked_reason"], "read_only", "{status}");
    assert_eq!(
        status["counters"]["dropped"],
        serde_json::json!({}),
        "{status}"
    );
    assert!(weir.is_running(), "weir keeps running:\n{}", weir.log());
    // Results go upstream from the outbox's memory as soon as they are produced
    // (docs/storage.md, "Wear"): a window produced after the disk failed may arrive
    // before weir learns it cannot store it. That loses nothing: its readings are
    // not acknowledged to the local broker until a checkpoint holds them, so after
    // the recovery below they come again and the window is produced again under the
    // same id (a duplicate a consumer drops by msg_id). What must not happen is a
    // window arriving incomplete.
    let early = windows(&consumer.messages());
    let incomplete: Vec<(&String, &u64)> = early.iter().filter(|(_, c)| **c != 2).collect();
    assert!(
        incomplete.is_empty(),
        "windows that arrived while read-only are complete: {incomplete:?}"
    );

    // Recovery, as on a device: stop weir, unmount, fsck, mount, start again.
    let exit = weir.terminate(Duration::from_secs(60));
    assert!(
        exit.is_some_and(|s| s.success()),
        "{exit:?}\n{}",
        weir.log()
    );
    let first_log = weir.log();
    drop(fs);
    let fsck = Command::new("e2fsck")
        .args(["-f", "-y"])
        .arg(&image)
        .status()
        .unwrap_or_else(|e| panic!("e2fsck: {e}"));
    // 0: clean, 1: errors corrected.
    assert!(
        matches!(fsck.code(), Some(0 | 1)),
        "e2fsck could not repair the image: {fsck:?}"
    );
    let _fs = Mount::ext4_existing(&image, &state);
    let weir = Weir::start(&cfg, dir.path());

    // Every window arrives: results weir held in memory at the shutdown were
    // given up (ERROR, counted), but the readings behind them were never
    // acknowledged to the local broker, which sends them again.
    let given_up: u64 = first_log
        .lines()
        .filter(|l| l.contains("giving up on held results"))
        .filter_map(|l| {
            l.split("messages=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    let expected = KEYS * (BEFORE + AFTER);
    let arrived = consumer.wait_until("every window", Duration::from_secs(90), |m| {
        windows(m).len() as i64 >= expected
    });
    let msgs = arrived.unwrap_or_else(|e| {
        panic!(
            "{e}\ngiven up at shutdown: {given_up}\nfirst run:\n{first_log}\nsecond run:\n{}",
            weir.log()
        )
    });
    let counts = windows(&msgs);
    eprintln!(
        "read-only: {} of {expected} windows arrived, {given_up} results given up at shutdown",
        counts.len()
    );
    assert!(
        counts.values().all(|&c| c == 2),
        "every window that arrived has both its readings: {counts:?}"
    );
    // Giving up is never silent: said at ERROR, with what happens to the readings.
    if given_up > 0 {
        assert!(
            first_log.contains("ERROR") && first_log.contains("redelivered"),
            "{first_log}"
        );
    }
    drop(publisher);
}
