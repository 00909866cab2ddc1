//! The read-only tools run by a member of the `weir` group who is not root: may read
//! the state directory (0750) and the database (0640), not write them. With weir
//! stopped cleanly they work (the database opened `immutable`, SQLite's rule for a WAL
//! file without a `-wal`); when a `-wal` is left that they cannot use, the missing
//! permission is named, never a failing SD card. A command the daemon's socket refuses
//! exits 4, whichever it is.
//!
//! Needs root to create the user and group (CI runs as root); elsewhere the test says
//! so and passes without checking.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use weir_tests::{Weir, free_port, scratch, wait_for, weir_command};

const USER: &str = "weir-test-tech";
const GROUP: &str = "weir-test-ro";

fn run(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The group and a user in it (idempotent); false when that cannot be done here.
fn member() -> bool {
    if !run("id", &["-u", USER]) {
        let _ = run("groupadd", &["-f", GROUP]);
        let _ = run(
            "useradd",
            &["-M", "-N", "-G", GROUP, "-s", "/usr/sbin/nologin", USER],
        );
    }
    run("id", &["-u", USER]) && run("setpriv", &["--version"])
}

/// `weir <args> --config <cfg>` as the group member.
fn as_member(cfg: &Path, args: &[&str]) -> Output {
    let mut c = Command::new("setpriv");
    c.args(["--reuid", USER, "--regid", GROUP, "--init-groups", "--"]);
    let w = weir_command();
    c.arg(w.get_program()).args(w.get_args());
    c.args(args).arg("--config").arg(cfg);
    c.output().unwrap_or_else(|e| panic!("{e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// As systemd leaves it: directory 0750 and files 0640, group readable only.
fn group_readable(dir: &Path, state: &Path) {
    for (p, mode) in [(dir, "0755"), (state, "0750")] {
        assert!(run("chmod", &[mode, &p.display().to_string()]));
    }
    assert!(run("chgrp", &["-R", GROUP, &state.display().to_string()]));
    for f in std::fs::read_dir(state).unwrap_or_else(|e| panic!("{e}")) {
        let f = f.unwrap_or_else(|e| panic!("{e}")).path();
        assert!(run("chmod", &["0640", &f.display().to_string()]));
    }
}

#[test]
fn a_weir_group_member_reads_the_stopped_outbox_or_is_told_which_permission_is_missing() {
    if !member() {
        eprintln!("SKIPPED: cannot create a non-root user here (needs root, useradd, setpriv)");
        return;
    }
    let dir = scratch();
    let d = dir.path();
    let state = d.join("state");
    let cfg = d.join("weir.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[agent]
device = "gm"
state_dir = "{dir}/state"
runtime_dir = "{dir}/run"
shutdown_grace = "200ms"
checkpoint_interval = "100ms"
[engine.window]
size = "1s"
[uplink]
host = "127.0.0.1"
port = {up}
[[sim]]
name = "s"
interval = "50ms"
"#,
            dir = d.display(),
            up = free_port(),
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let start = |d: &Path| {
        let mut w = Weir::start(&cfg, d);
        let rows = wait_for(Duration::from_secs(30), || {
            let out = weir_command()
                .args(["outbox", "stats", "--json", "--config"])
                .arg(&cfg)
                .output()
                .ok()?;
            let t = text(&out.stdout);
            (out.status.success()
                && t.contains("\"used_bytes\":")
                && !t.contains("\"used_bytes\":0,"))
            .then_some(())
        });
        assert!(rows.is_some(), "{}", w.log());
        let _ = w.is_running();
        w
    };

    // Stopped cleanly: no -wal, no -shm; the member may not create -shm.
    let mut w = start(d);
    assert!(
        w.terminate(Duration::from_secs(20)).is_some(),
        "{}",
        w.log()
    );
    assert!(!state.join("outbox.db-wal").exists());
    group_readable(d, &state);
    for args in [&["outbox", "verify"][..], &["outbox", "stats"], &["status"]] {
        let out = as_member(&cfg, args);
        let (o, e) = (text(&out.stdout), text(&out.stderr));
        assert!(
            !e.contains("SD card") && !o.contains("SD card"),
            "{args:?}: {o}{e}"
        );
        assert!(!o.contains("readonly database"), "{args:?}: {o}{e}");
        let want = if args == ["status"] { 3 } else { 0 };
        assert_eq!(out.status.code(), Some(want), "{args:?}: {o}{e}");
    }
    let out = as_member(&cfg, &["outbox", "verify"]);
    assert!(text(&out.stdout).contains(": ok"), "{}", text(&out.stdout));

    // Killed: its -wal is left; without -shm and a writable directory the member
    // cannot read the log, and is told that permission, exit 4.
    let mut w = start(d);
    // Running, its socket 0660 and this user outside its group: every command that
    // asks the daemon exits 4 with the same advice, as status does.
    for args in [&["status"][..], &["metrics"], &["log-level"], &["tail"]] {
        let out = as_member(&cfg, args);
        let e = text(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{args:?}: {e}");
        assert!(e.contains("permission denied on"), "{args:?}: {e}");
    }
    w.kill9();
    let _ = std::fs::remove_file(state.join("outbox.db-shm"));
    assert!(state.join("outbox.db-wal").exists());
    group_readable(d, &state);
    let out = as_member(&cfg, &["outbox", "verify"]);
    let e = text(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{e}");
    assert!(
        e.contains("file permission matter, not a disk fault"),
        "{e}"
    );
    assert!(e.contains("outbox.db-shm") && !e.contains("SD card"), "{e}");
}
