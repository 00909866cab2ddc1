//! The `weir` binary's configuration commands and its start-up errors, as a
//! technician sees them: exit codes and messages that name the file, line and key.

use weir_tests::{CliOut, Config, cli, scratch, toml};

fn weir(args: &[&str]) -> CliOut {
    cli(args)
}

#[test]
fn the_printed_example_passes_config_check() {
    let dir = scratch();
    let out = weir(&["config", "example"]);
    assert!(out.code == Some(0));
    let path = dir.path().join("weir.toml");
    std::fs::write(&path, &out.bytes).unwrap_or_else(|e| panic!("{e}"));
    let check = weir(&["config", "check", path.to_str().unwrap_or_default()]);
    assert_eq!(check.code, Some(0), "{}", check.stderr);
    assert!(
        check.stdout.contains("ok (device pi-greenhouse-01"),
        "{}",
        check.stdout
    );
    // The summary counts every kind of source and names what is simulated.
    assert!(
        check
            .stdout
            .contains("1 [[sim]] sensor, 1 I2C (1 simulated)")
            && check.stdout.contains("2 sensors simulated"),
        "{}",
        check.stdout
    );
}

#[test]
fn a_broken_config_exits_78_naming_line_key_and_fix() {
    let dir = scratch();
    let path = dir.path().join("weir.toml");
    std::fs::write(
        &path,
        "[agent]\ndevice = \"d\"\n\n[[sim]]\nname = \"s\"\ninterval = \"fast\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = weir(&["config", "check", path.to_str().unwrap_or_default()]);
    assert_eq!(out.code, Some(78));
    let err = out.stderr;
    assert!(
        err.contains(&format!("{}:6: sim[0].interval:", path.display())),
        "{err}"
    );
    assert!(err.contains("fix:"), "{err}");

    // `weir run` refuses it the same way, before touching anything.
    let run = weir(&["run", "--config", path.to_str().unwrap_or_default()]);
    assert_eq!(run.code, Some(78));
    assert!(run.stderr.contains("sim[0].interval"), "{}", run.stderr);
}

#[test]
fn a_toml_syntax_error_names_its_line() {
    let dir = scratch();
    let path = dir.path().join("weir.toml");
    std::fs::write(&path, "[agent]\ndevice = \"d\"\n[[sim]\nname = \"s\"\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let out = weir(&["config", "check", path.to_str().unwrap_or_default()]);
    assert_eq!(out.code, Some(78));
    assert!(
        out.stderr.contains(&format!("{}:3:", path.display())),
        "{}",
        out.stderr
    );
}

#[test]
fn a_missing_config_file_is_named() {
    let out = weir(&["config", "check", "/nonexistent/weir.toml"]);
    assert_eq!(out.code, Some(78));
    assert!(
        out.stderr.contains("/nonexistent/weir.toml"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_corrupt_outbox_stops_the_start_with_the_file_named() {
    let dir = scratch();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap_or_else(|e| panic!("{e}"));
    let db = state.join("outbox.db");
    std::fs::write(&db, vec![0x5a; 8192]).unwrap_or_else(|e| panic!("{e}"));
    let path = Config::new("d", dir.path())
        .unset("engine.window", "size")
        .uplink(toml! { port = 1 })
        .sim(toml! { name = "s" })
        .write();
    let out = weir(&["run", "--config", path.to_str().unwrap_or_default()]);
    assert_eq!(out.code, Some(65), "EX_DATAERR, not a plain failure");
    let err = out.stderr;
    assert!(err.contains(&db.display().to_string()), "{err}");
    assert!(err.contains("weir outbox verify"), "{err}");
    assert!(err.contains("move the file aside"), "{err}");
    // The file is left as it was, for the technician to inspect or move aside.
    assert_eq!(std::fs::read(&db).unwrap_or_default(), vec![0x5a; 8192]);
}

/// `weir config check` on `text`: exit code, stdout, stderr.
fn check_text(toml: &str) -> (Option<i32>, String, String) {
    let dir = scratch();
    let path = dir.path().join("weir.toml");
    std::fs::write(&path, toml).unwrap_or_else(|e| panic!("{e}"));
    let out = weir(&["config", "check", path.to_str().unwrap_or_default()]);
    (
        out.code,
        out.stdout,
        out.stderr.replace(&path.display().to_string(), "weir.toml"),
    )
}

#[test]
fn config_check_refuses_what_cannot_work_with_the_fix() {
    const SIM: &str = "[[sim]]\nname = \"s\"\n";
    // A URL or a port in host: a lookup error at run time, so refused now.
    let (code, _, err) = check_text(&format!("[uplink]\nhost = \"mqtt://127.0.0.1\"\n{SIM}"));
    assert_eq!(code, Some(78), "{err}");
    assert_eq!(
        err,
        "error: weir.toml:2: uplink.host: \"mqtt://127.0.0.1\" is a URL; host takes a name or an address only\n  fix: write host = \"127.0.0.1\"\n"
    );
    let (code, _, err) = check_text(
        "[ingest]\nhost = \"127.0.0.1:1883\"\n[[ingest.topic]]\nfilter = \"a/+\"\nsensor = \"{2}\"\nmetric = \"m\"\n",
    );
    assert_eq!(code, Some(78), "{err}");
    assert!(
        err.contains("weir.toml:2: ingest.host: \"127.0.0.1:1883\" has a port in it")
            && err.contains("fix: write host = \"127.0.0.1\" and port = 1883"),
        "{err}"
    );
    // An unknown key: did you mean.
    let (code, _, err) = check_text(&format!("[uplink]\nhots = \"b\"\n{SIM}"));
    assert_eq!(code, Some(78));
    assert!(
        err.contains("weir.toml:2: uplink.hots: unknown field `hots`")
            && err.contains("\n  fix: did you mean `host`?\n"),
        "{err}"
    );
    // A type error: the key and a fix.
    let (_, _, err) = check_text(&format!("[uplink]\nport = \"1883\"\n{SIM}"));
    assert!(
        err.contains("weir.toml:2: uplink.port: invalid type")
            && err.contains("fix: write a whole number without quotes"),
        "{err}"
    );
    // A table given twice is named.
    let (_, _, err) = check_text(&format!(
        "[uplink]\nport = 1\n[uplink]\nhost = \"a\"\n{SIM}"
    ));
    assert!(
        err.contains("weir.toml:3: uplink: duplicate key")
            && err.contains("fix: the table [uplink] is defined twice"),
        "{err}"
    );
    // password_env unset in the technician's shell: a warning, and the right advice
    // (LoadCredential= sets no variable: it makes a file for password_file).
    let (code, out, err) = check_text(&format!(
        "[uplink]\nusername = \"u\"\npassword_env = \"WEIR_TEST_SURELY_UNSET_VAR\"\n{SIM}"
    ));
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(": ok"), "{out}");
    assert!(err.starts_with("warning: uplink.password_env: environment variable WEIR_TEST_SURELY_UNSET_VAR is not set in this shell"), "{err}");
    assert!(
        err.contains("password_file = \"/run/credentials/weir.service/"),
        "{err}"
    );
}
