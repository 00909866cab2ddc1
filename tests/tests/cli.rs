//! The `weir` binary's configuration commands and its start-up errors, as a
//! technician sees them: exit codes and messages that name the file, line and key.

use std::process::Output;

use weir_tests::{scratch, weir_command};

fn weir(args: &[&str]) -> Output {
    weir_command()
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn the_printed_example_passes_config_check() {
    let dir = scratch();
    let out = weir(&["config", "example"]);
    assert!(out.status.success());
    let path = dir.path().join("weir.toml");
    std::fs::write(&path, &out.stdout).unwrap_or_else(|e| panic!("{e}"));
    let check = weir(&["config", "check", path.to_str().unwrap_or_default()]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stderr));
    assert!(
        text(&check.stdout).contains("ok (device pi-greenhouse-01"),
        "{}",
        text(&check.stdout)
    );
    // The summary counts every kind of source and names what is simulated.
    assert!(
        text(&check.stdout).contains("1 [[sim]] sensor, 1 I2C (1 simulated)")
            && text(&check.stdout).contains("2 sensors simulated"),
        "{}",
        text(&check.stdout)
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
    assert_eq!(out.status.code(), Some(78));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("{}:6: sim[0].interval:", path.display())),
        "{err}"
    );
    assert!(err.contains("fix:"), "{err}");

    // `weir run` refuses it the same way, before touching anything.
    let run = weir(&["run", "--config", path.to_str().unwrap_or_default()]);
    assert_eq!(run.status.code(), Some(78));
    assert!(
        text(&run.stderr).contains("sim[0].interval"),
        "{}",
        text(&run.stderr)
    );
}

#[test]
fn a_toml_syntax_error_names_its_line() {
    let dir = scratch();
    let path = dir.path().join("weir.toml");
    std::fs::write(&path, "[agent]\ndevice = \"d\"\n[[sim]\nname = \"s\"\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let out = weir(&["config", "check", path.to_str().unwrap_or_default()]);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        text(&out.stderr).contains(&format!("{}:3:", path.display())),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_missing_config_file_is_named() {
    let out = weir(&["config", "check", "/nonexistent/weir.toml"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        text(&out.stderr).contains("/nonexistent/weir.toml"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_corrupt_outbox_stops_the_start_with_the_file_named() {
    let dir = scratch();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap_or_else(|e| panic!("{e}"));
    let db = state.join("outbox.db");
    std::fs::write(&db, vec![0x5a; 8192]).unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("weir.toml");
    let cfg = format!(
        "[agent]\ndevice = \"d\"\nstate_dir = \"{}\"\n[uplink]\nport = 1\n[[sim]]\nname = \"s\"\n",
        state.display()
    );
    std::fs::write(&path, cfg).unwrap_or_else(|e| panic!("{e}"));
    let out = weir(&["run", "--config", path.to_str().unwrap_or_default()]);
    assert_eq!(
        out.status.code(),
        Some(65),
        "EX_DATAERR, not a plain failure"
    );
    let err = text(&out.stderr);
    assert!(err.contains(&db.display().to_string()), "{err}");
    assert!(err.contains("weir outbox verify"), "{err}");
    assert!(err.contains("move the file aside"), "{err}");
    // The file is left as it was, for the technician to inspect or move aside.
    assert_eq!(std::fs::read(&db).unwrap_or_default(), vec![0x5a; 8192]);
}
