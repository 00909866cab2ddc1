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
