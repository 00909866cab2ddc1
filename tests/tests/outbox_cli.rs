//! The technician's offline tools against an outbox a real weir wrote with its upstream broker
//! down: `weir outbox stats|peek|export|verify|purge` (human and `--json`) and `weir decode` of a
//! stored postcard payload, each output checked against its snapshot. One weir run feeds every
//! check, to keep the test a few seconds long (it also runs under QEMU).
//!
//! Values that differ between runs are normalised before the comparison: the rows' production
//! times are set to fixed values in the stopped database (a plain UPDATE, as a test fixture),
//! payload fields stamped by the wall clock or the boot (`emitted_at`, `received_at`,
//! `boot_id`, `msg_id`) are redacted, and ages ("(3s ago)") and the purge's cut-off time are
//! masked. Rows, classes, topics, ids, keys, bytes and the decoded payloads are exact.
//!
//! "The daemon is running" is the control socket answering. This branch's daemon does not serve
//! one yet (issue 8's daemon side does), so the refusal is tested with a `UnixListener` bound
//! by the test at the configured socket path, the way `weir run` will.

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use weir_tests::snapshot::{assert_snapshot, redact_json};
use weir_tests::{
    Broker, CliOut, Config, OutboxFile, Publisher, Weir, cli, cli_cfg, free_port, scratch, toml,
    wait_for,
};

/// 2026-01-01T00:00:00Z: every reading's event time is fixed, so panes and alerts are too.
const T0: i64 = 1_767_225_600_000;
/// Fields stamped by the wall clock or by the boot.
const VOLATILE: [&str; 4] = ["emitted_at", "received_at", "boot_id", "msg_id"];

fn weir(args: &[&str], cfg: &Path) -> CliOut {
    cli_cfg(args, cfg)
}

/// `(exit code, stdout, stderr)` with the scratch directory replaced by `<dir>`.
fn text(o: &CliOut, dir: &Path) -> (i32, String, String) {
    let o = o.clone().replace(&dir.display().to_string(), "<dir>");
    (o.code.unwrap_or(-1), o.stdout, o.stderr)
}

/// Replaces what follows each `marker` up to `end` (exclusive) with `with`.
fn mask(text: &str, marker: &str, end: char, with: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(marker) {
        out.push_str(&rest[..i + marker.len()]);
        rest = &rest[i + marker.len()..];
        let j = rest.find(end).unwrap_or(rest.len());
        out.push_str(with);
        rest = &rest[j..];
    }
    out.push_str(rest);
    out
}

/// Every line that is a JSON value gets its volatile fields redacted; other lines stay.
fn redact_lines(text: &str, extra: &[&str]) -> String {
    let keys: Vec<&str> = VOLATILE.iter().chain(extra).copied().collect();
    text.lines()
        .map(|l| {
            let trimmed = l.trim_start();
            match serde_json::from_str::<Value>(trimmed) {
                Ok(mut v) if trimmed.starts_with('{') => {
                    redact_json(&mut v, &keys);
                    format!("{}{v}", &l[..l.len() - trimmed.len()])
                }
                _ => l.to_string(),
            }
        })
        .map(|l| l + "\n")
        .collect()
}

fn ages(text: &str) -> String {
    mask(text, "Z (", ')', "<age>")
        .lines()
        .map(|l| {
            // `stats` shows the oldest and newest rows' ages after the bytes column.
            let l = match l.find(" B  ") {
                Some(i) if l.ends_with(" ago") => format!("{}<ages>", &l[..i + 4]),
                _ => l.to_string(),
            };
            l.trim_end().to_string() + "\n"
        })
        .collect()
}

#[test]
fn the_outbox_tools_show_stats_rows_exports_and_purges_of_a_real_backlog() {
    let dir = scratch();
    let d = dir.path();
    let local = Broker::start_new(d);
    local.create_session("cli-ingest", "sensors/+/+");
    let cfg = Config::new("cli", d)
        .agent(toml! {
            runtime_dir = d.join("run").as_path(), checkpoint_interval = "200ms",
            shutdown_grace = "1s",
        })
        .engine(toml! { max_out_of_orderness = "0s", allowed_lateness = "0s" })
        .upstream(free_port())
        .uplink(toml! { format = "postcard" })
        .ingest(local.port, "cli-ingest")
        .topic("sensors/+/+", "{2}", "{3}")
        .detector(toml! {
            name = "too-hot", kind = "threshold", sensor = "lab", metric = "temp",
            high = 40.0, hysteresis = 1.0, clear_after = "10s", severity = "critical",
        });
    let db = cfg.outbox_db();
    let cfg = cfg.write();
    let mut daemon = Weir::start(&cfg, d);
    let publisher = Publisher::connect(local.port);
    // Two windows close (two panes), 45 raises the alert, the last reading is too late, and
    // one payload is not a reading (a dead letter).
    for (dt, v) in [
        (100, 20.0),
        (600, 21.0),
        (1_100, 45.0),
        (2_100, 22.0),
        (50, 19.0),
    ] {
        publisher.publish(
            "sensors/lab/temp",
            format!(r#"{{"value": {v}, "ts": {}}}"#, T0 + dt),
        );
    }
    publisher.publish("sensors/lab/temp", "not a reading");
    let outbox = OutboxFile::new(&db);
    let got = wait_for(Duration::from_secs(60), || {
        outbox.class_counts().filter(|c| c == &[1, 2, 2])
    });
    assert!(
        got.is_some(),
        "the backlog never reached 1 alert, 2 panes, 2 diagnostics: {:?}\n{}",
        outbox.class_counts(),
        daemon.log()
    );
    daemon.terminate(Duration::from_secs(20));
    {
        let c = rusqlite::Connection::open(&db).unwrap_or_else(|e| panic!("{e}"));
        c.execute(
            "UPDATE outbox SET created_ms = ?1 + 60000 + id * 1000",
            [T0],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }

    let o = weir(&["outbox", "stats"], &cfg);
    let (code, out, _) = text(&o, d);
    assert_eq!(code, 0);
    assert_snapshot("outbox_stats", &ages(&out));
    let (code, out, _) = text(&weir(&["outbox", "stats", "--json"], &cfg), d);
    assert_eq!(code, 0);
    assert_snapshot(
        "outbox_stats_json",
        &redact_lines(&out, &["oldest_age_s", "newest_age_s"]),
    );

    let (code, out, _) = text(&weir(&["outbox", "peek", "-n", "3"], &cfg), d);
    assert_eq!(code, 0);
    assert_snapshot("outbox_peek", &ages(&redact_lines(&out, &[])));
    let o = weir(&["outbox", "peek", "--json", "--class", "diagnostic"], &cfg);
    let (code, out, _) = text(&o, d);
    assert_eq!(code, 0);
    assert_snapshot("outbox_peek_json", &redact_lines(&out, &[]));

    let (code, out, _) = text(&weir(&["outbox", "export"], &cfg), d);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 5, "{out}");
    assert_snapshot("outbox_export", &redact_lines(&out, &[]));

    let (code, out, _) = text(&weir(&["outbox", "verify"], &cfg), d);
    assert_eq!(code, 0);
    let out = mask(
        &out,
        "(integrity_check ok, schema version 4; ",
        ')',
        "<sizes>",
    );
    assert_snapshot("outbox_verify", &ages(&out));
    let (code, out, _) = text(&weir(&["outbox", "verify", "--json"], &cfg), d);
    assert_eq!(code, 0);
    assert_snapshot(
        "outbox_verify_json",
        &redact_lines(&out, &["file_bytes", "wal_bytes"]),
    );

    // `weir decode` of the stored alert, raw postcard bytes as the uplink would publish them.
    let alert: Vec<u8> = rusqlite::Connection::open(&db)
        .and_then(|c| {
            c.query_row("SELECT payload FROM outbox WHERE class = 0", [], |r| {
                r.get(0)
            })
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let bin = d.join("alert.bin");
    std::fs::write(&bin, &alert).unwrap_or_else(|e| panic!("{e}"));
    let (code, out, _) = text(&cli(["decode".as_ref(), bin.as_os_str()]), d);
    assert_eq!(code, 0);
    assert_snapshot("decode_alert", &redact_lines(&out, &[]));

    // Purge: refused while the control socket answers (a listener the test binds, see above).
    std::fs::create_dir_all(d.join("run")).unwrap_or_else(|e| panic!("{e}"));
    let listener = UnixListener::bind(d.join("run/control.sock")).unwrap_or_else(|e| panic!("{e}"));
    let purge = ["outbox", "purge", "--older-than", "1s", "--yes"];
    let (code, _, err) = text(&weir(&purge, &cfg), d);
    assert_eq!(code, 75, "{err}");
    assert_snapshot("outbox_purge_refused_while_running", &err);
    // A socket file nobody listens on (a killed daemon) is not a running daemon; without
    // --yes and without a terminal to ask on, nothing happens.
    drop(listener);
    let (code, _, err) = text(&weir(&purge[..4], &cfg), d);
    assert_eq!(code, 2, "{err}");
    assert_eq!(outbox.class_counts(), Some([1, 2, 2]));
    let o = weir(
        &[
            "outbox",
            "purge",
            "--older-than",
            "1s",
            "--class",
            "diagnostic",
            "--yes",
        ],
        &cfg,
    );
    let (code, out, _) = text(&o, d);
    assert_eq!(code, 0);
    assert_snapshot(
        "outbox_purge",
        &mask(&out, "produced before ", 'Z', "<cutoff>"),
    );
    let (code, out, _) = text(
        &weir(
            &["outbox", "purge", "--json", "--older-than", "1s", "--yes"],
            &cfg,
        ),
        d,
    );
    assert_eq!(code, 0);
    assert_snapshot("outbox_purge_json", &redact_lines(&out, &["cutoff_ms"]));
    assert_eq!(outbox.class_counts(), Some([0, 0, 0]));
    // What was lost and why, afterwards.
    let (code, out, _) = text(&weir(&["outbox", "stats"], &cfg), d);
    assert_eq!(code, 0);
    let out = mask(&out, "Z by ", ':', "<user>");
    let out = mask(&out, "produced before ", '\n', "<cutoff>");
    let out = mask(&out, "  #1 ", ' ', "<at>");
    let out = mask(&out, "  #2 ", ' ', "<at>");
    assert_snapshot("outbox_stats_after_purge", &ages(&out));
}
