//! `weir diag` and the offline checks it bundles, as a technician sees them: `config check` of
//! a broken file (the error names the line and the key), `sensors list` with the health the
//! daemon recorded, and the bundle itself: every section present, listed in MANIFEST.txt, and a
//! password written into the config by mistake nowhere in it.

use std::path::Path;

use weir_tests::snapshot::assert_snapshot;
use weir_tests::{Config, cli_with, scratch, toml, unpack_bundle};

const PASSWORD: &str = "Tr0ub4dor&3-not-for-support";
/// The one before it, left in a comment.
const OLD_PASSWORD: &str = "correct-horse-old-one";

/// `weir <args>` run in `dir`: (exit code, stdout, stderr) with `dir` replaced by `<dir>`.
fn weir(args: &[&str], dir: &Path) -> (i32, String, String) {
    let o = cli_with(args, |c| {
        c.current_dir(dir);
    })
    .replace(&dir.display().to_string(), "<dir>");
    (o.code.unwrap_or(-1), o.stdout, o.stderr)
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn config_check_of_a_broken_file_names_the_line_and_the_key() {
    let dir = scratch();
    let cfg = dir.path().join("weir.toml");
    write(
        &cfg,
        "[agent]\ndevice = \"pi-01\"\n\n[uplink]\nhost = \"broker.example\"\nreconnect_max = \"soon\"\n",
    );
    let (code, out, err) = weir(&["config", "check", &cfg.display().to_string()], dir.path());
    assert_eq!(code, 78, "{out}{err}");
    assert_snapshot("config_check_broken", &err);
}

#[test]
fn sensors_list_shows_each_configured_sensor_with_the_recorded_health() {
    let dir = scratch();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap_or_else(|e| panic!("{e}"));
    let cfg = Config::new("pi-01", dir.path())
        .unset("engine.window", "size")
        .array(
            "i2c",
            toml! { name = "air", chip = "bme280", bus = "/dev/i2c-1" },
        )
        .array(
            "gpio",
            toml! { name = "door", chip = "/dev/gpiochip0", line = 17, metric = "open" },
        )
        .write();
    // The file `weir run` keeps up to date (written here in its format: no I2C in CI).
    write(
        &state.join("sensors.json"),
        r#"{"air": {"health": "failing", "last_error": "i2c /dev/i2c-1 0x76: no ACK (is the sensor wired?)"}, "door": {"health": "ok"}}"#,
    );
    let c = cfg.display().to_string();
    let (code, out, err) = weir(&["sensors", "list", "--config", &c], dir.path());
    assert_eq!(code, 0, "{err}");
    assert_snapshot("sensors_list", &out);
    let (code, out, err) = weir(&["sensors", "list", "--json", "--config", &c], dir.path());
    assert_eq!(code, 0, "{err}");
    assert_snapshot("sensors_list_json", &out);
}

#[test]
fn a_diag_bundle_lists_every_section_and_holds_no_password() {
    let dir = scratch();
    // A password pasted into the config (a mistake `config check` reports): the bundle must
    // still not carry it, neither in the config copy nor in the quoted error.
    let cfg = Config::new("pi-01", dir.path())
        .unset("engine.window", "size")
        .agent(toml! { runtime_dir = dir.path().join("run").as_path() })
        .uplink(toml! { host = "broker.example", username = "pi-01", password = PASSWORD })
        .write();
    // The one before it, commented out: redacted too.
    let mut text = std::fs::read_to_string(&cfg).unwrap_or_else(|e| panic!("{e}"));
    text.push_str(&format!("# password = \"{OLD_PASSWORD}\"\n"));
    write(&cfg, &text);
    let bundle = dir.path().join("bundle.tar.gz");
    let (code, out, err) = weir(
        &[
            "diag",
            "--config",
            &cfg.display().to_string(),
            "-o",
            &bundle.display().to_string(),
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("wrote <dir>/bundle.tar.gz ("), "{out}");
    // It says what it did, not more: no "holds no passwords" it cannot know.
    assert!(
        out.contains("(commented-out ones too) are redacted") && !out.contains("no passwords"),
        "{out}"
    );
    let top = unpack_bundle(&bundle, &dir.path().join("x"));
    assert_eq!(top.len(), 1);
    let root = top[0].path();
    assert!(
        top[0]
            .file_name()
            .to_string_lossy()
            .starts_with("weir-diag-unknown-"),
        "{root:?}"
    );
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for n in &names {
        let data = std::fs::read(root.join(n)).unwrap_or_else(|e| panic!("{e}"));
        let text = String::from_utf8_lossy(&data);
        assert!(!text.contains(PASSWORD), "{n} holds the password:\n{text}");
        assert!(
            !text.contains(OLD_PASSWORD),
            "{n} holds the commented-out password:\n{text}"
        );
    }
    let manifest =
        std::fs::read_to_string(root.join("MANIFEST.txt")).unwrap_or_else(|e| panic!("{e}"));
    // Standard-error files come and go with what the machine has (journald, a daemon).
    let listed: Vec<&String> = names.iter().filter(|n| !n.ends_with(".stderr")).collect();
    for n in listed.iter().filter(|n| n.as_str() != "MANIFEST.txt") {
        assert!(
            manifest.contains(&format!("\n{n}: ")),
            "{n} not in:\n{manifest}"
        );
    }
    let listed: String = listed.iter().map(|n| format!("{n}\n")).collect();
    assert_snapshot("diag_files", &listed);
    let config =
        std::fs::read_to_string(root.join("config.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        config.contains("password = \"[redacted]\"") && config.contains("username = \"pi-01\""),
        "{config}"
    );
    // diag runs its own binary for these sections. Under qemu-user (CI's ARM runs,
    // WEIR_RUNNER set) an emulated process cannot exec another ARM binary unless
    // binfmt_misc is registered, which CI's machine is not: the section is then
    // recorded as exit 127 (the bundle is still written, as the snapshot shows).
    if std::env::var_os("WEIR_RUNNER").is_some() {
        assert!(
            manifest.contains("config-check.txt: `weir config check"),
            "{manifest}"
        );
        return;
    }
    let check = std::fs::read_to_string(root.join("config-check.txt.stderr"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(check.contains("password"), "{check}");
}
