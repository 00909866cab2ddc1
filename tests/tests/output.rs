//! Output for people (issue 16 item 8): `--version` names the commit and the target, every
//! help text fits 80 columns, a reader that goes away (`| head`) ends a command quietly with
//! exit 0, and `tail --sensor` with a name nothing configured has says so.

use std::process::{Command, Stdio};

use weir_tests::{Config, cli, cli_with, scratch, toml, weir_command};

#[test]
fn version_names_the_commit_and_the_target() {
    let out = cli(["--version"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let v = out.stdout.trim();
    assert!(v.starts_with("weir 0.1.0 ("), "{v}");
    assert!(v.ends_with(')') && v.contains("-linux-"), "{v}");
    // Built from a checkout, the commit is the checkout's (HEAD when the binary was built).
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    if let Some(h) = head.ok().filter(|h| h.status.success()) {
        let log = Command::new("git")
            .args(["log", "--format=%h", "--abbrev=12", "-n", "50"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let commit = v
            .trim_start_matches("weir 0.1.0 (")
            .split(',')
            .next()
            .unwrap_or_default();
        // The binary may predate the newest commit; it is one of the recent ones.
        assert!(
            log.lines().any(|c| c == commit),
            "{v}: not a recent commit (HEAD {})",
            String::from_utf8_lossy(&h.stdout)
        );
    }
}

#[test]
fn every_help_text_fits_80_columns_with_a_short_summary_per_command() {
    let commands: &[&[&str]] = &[
        &[],
        &["run"],
        &["status"],
        &["tail"],
        &["metrics"],
        &["top"],
        &["log-level"],
        &["config"],
        &["config", "check"],
        &["backtest"],
        &["sensors"],
        &["sensors", "read"],
        &["sensors", "scan"],
        &["decode"],
        &["outbox"],
        &["outbox", "purge"],
        &["outbox", "export"],
        &["diag"],
    ];
    for c in commands {
        for flag in ["-h", "--help"] {
            let out = cli_with(c.iter().copied().chain([flag]), |cmd| {
                cmd.env("COLUMNS", "80");
            });
            assert_eq!(out.code, Some(0), "{c:?}: {}", out.all());
            for line in out.stdout.lines() {
                assert!(
                    line.chars().count() <= 80,
                    "weir {} {flag}: a line of {} columns:\n{line}",
                    c.join(" "),
                    line.chars().count()
                );
            }
        }
    }
    // The command list shows one short line per command.
    let out = cli(["--help"]);
    let list: Vec<&str> = out
        .stdout
        .lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    assert!(list.len() >= 12, "{}", out.stdout);
    assert!(list.iter().all(|l| l.len() <= 80), "{}", out.stdout);
}

/// `weir <args>` with standard output a pipe whose reader has already gone.
fn to_a_closed_pipe(args: &[&str]) -> weir_tests::CliOut {
    // The write end of the pipe into `true`, which has exited: nothing will ever read.
    let mut reader = Command::new("true")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("true: {e}"));
    let write_end = reader.stdin.take().unwrap_or_else(|| panic!("no pipe"));
    let _ = reader.wait();
    let out = weir_command()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("weir: {e}"));
    weir_tests::CliOut {
        code: out.status.code(),
        stdout: String::new(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        bytes: Vec::new(),
    }
}

#[test]
fn a_reader_that_goes_away_ends_the_command_quietly_with_success() {
    for args in [
        &["config", "example"][..],
        &["--help"],
        &["config", "--help"],
    ] {
        let out = to_a_closed_pipe(args);
        assert_eq!(out.code, Some(0), "weir {args:?}: {}", out.stderr);
        assert_eq!(out.stderr, "", "weir {args:?}");
    }
}

#[test]
fn tail_of_a_sensor_nothing_configured_names_says_so() {
    let dir = scratch();
    let d = dir.path();
    let base = || {
        Config::new("out", d)
            .agent(toml! { runtime_dir = d.join("run").as_path() })
            .upstream(1)
            .sim(toml! { name = "greenhouse", metric = "t", interval = "1s" })
    };
    let cfg = base().write();
    let out = cli_with(["tail", "--sensor", "nosuch", "--config"], |c| {
        c.arg(&cfg);
    });
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_eq!(
        out.stderr,
        "error: nothing configured matches sensor `nosuch` (configured: greenhouse)\n"
    );
    // With MQTT ingest a sensor can appear later: said, and followed (here weir is down).
    let cfg = base()
        .ingest(1, "out-ingest")
        .topic("home/+/+", "{2}", "{3}")
        .write();
    let out = cli_with(["tail", "--sensor", "nosuch", "--config"], |c| {
        c.arg(&cfg);
    });
    assert!(
        out.stderr.starts_with(
            "note: no configured sensor is named `nosuch` (configured: greenhouse); following"
        ),
        "{}",
        out.stderr
    );
}
