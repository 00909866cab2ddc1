//! The README's examples, run against the real `weir`: each test reads what the README
//! shows (a command and its output, a list of names, a table of exit codes) from README.md
//! itself and checks that the tool does exactly that, so the two cannot drift apart
//! unnoticed. What other tests already pin down byte for byte (the `weir status` snapshot,
//! the `weir top` frame, the outbox tools' output) is not repeated here.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use weir_tests::readme::{Readme, codes};
use weir_tests::{
    Broker, CliOut, Config, Weir, cli, cli_cfg, cli_with, free_port, scratch, toml, unpack_bundle,
    wait_for, weir_command,
};

const WAIT: Duration = Duration::from_secs(30);

/// `weir <args>` run in `dir` (so that a relative `weir.toml` is the one there).
fn weir_in(dir: &Path, args: &[&str]) -> CliOut {
    cli_with(args, |c| {
        c.current_dir(dir);
    })
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// The exit code a README list gives for `meaning`: in "**0** healthy, **1** running but
/// unhealthy, ...", `meaning` "healthy" is 0.
fn code_for(list: &str, meaning: &str) -> i32 {
    list.replace("**", "")
        .split([',', ';', ':'])
        .find_map(|item| {
            let (n, what) = item.trim().split_once(' ')?;
            (what.trim().trim_end_matches('.') == meaning)
                .then(|| n.parse().ok())
                .flatten()
        })
        .unwrap_or_else(|| panic!("no exit code for {meaning:?} in the README's {list:?}"))
}

#[test]
fn config_check_prints_the_readmes_errors_and_summary() {
    let readme = Readme::load();
    let dir = scratch();
    let d = dir.path();
    let cfg = d.join("weir.toml");

    // "Errors name the line, the key and the fix": the block is the command and its output.
    let block = readme
        .section("### Configuration")
        .block("$ weir config check weir.toml");
    let (command, shown) = block.split_once('\n').unwrap_or_default();
    write(
        &cfg,
        "[agent]\ndevice = \"pi-01\"\n\n[engine.window]\nsize = \"0s\"\n",
    );
    let args: Vec<&str> = command.split_whitespace().skip(2).collect();
    let out = weir_in(d, &args);
    assert_eq!(out.code, Some(78), "{}", out.all());
    assert_eq!(
        out.stderr, shown,
        "README.md's example is not what {command} prints"
    );

    // The example in "Is the new config valid?", quoted inline: the error and its fix line.
    let check = readme.section("Is the new config valid?");
    let error = check.code("weir.toml:6: uplink.reconnect_max");
    let fix = check.code("fix: write a number");
    write(
        &cfg,
        "[agent]\ndevice = \"pi-01\"\n\n[uplink]\nhost = \"broker.example\"\nreconnect_max = \"soon\"\n",
    );
    let out = weir_in(d, &["config", "check", "weir.toml"]);
    assert_eq!(out.code, Some(78), "{}", out.all());
    assert_eq!(out.stderr, format!("error: {error}\n  {fix}\n"));

    // Its summary: every kind of source counted, and whether anything is simulated.
    let sources = check.code("sources: ");
    let simulated = check.code("nothing simulated");
    write(
        &cfg,
        "[agent]\ndevice = \"pi-01\"\n\n[[i2c]]\nname = \"air\"\nchip = \"bme280\"\nbus = \"/dev/i2c-1\"\n\n\
         [ingest]\nhost = \"localhost\"\n[[ingest.topic]]\nfilter = \"home/+/+\"\nsensor = \"{2}\"\nmetric = \"{3}\"\n",
    );
    let out = weir_in(d, &["config", "check", "weir.toml"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.stdout
            .contains(&format!("\n  {sources}\n  {simulated}\n")),
        "README.md says `{sources}` / `{simulated}`; config check printed:\n{}",
        out.stdout
    );

    // "2 bad command line", from the list of exit codes.
    let codes = readme
        .section("## Running it")
        .between("Exit codes:", "invalid configuration");
    let out = cli(["no-such-command"]);
    assert_eq!(out.code, Some(code_for(&codes, "bad command line")));
}

#[test]
fn status_and_metrics_match_the_readme_up_unhealthy_and_down() {
    let readme = Readme::load();
    let section = readme.section("Is it running and healthy?");
    let exit = section.between("Exit code:", " So ");
    let dir = scratch();
    let d = dir.path();
    let mut broker = Broker::start_new(d);
    broker.create_session("rd-ingest", "home/+/+");
    let cfg = Config::new("rd", d)
        .agent(toml! {
            shutdown_grace = "500ms",
            checkpoint_interval = "100ms",
        })
        .upstream(broker.port)
        .ingest(broker.port, "rd-ingest")
        .topic("home/+/+", "{2}", "{3}")
        .sim(toml! { name = "greenhouse", metric = "temperature", interval = "100ms" })
        .write();
    let status = |extra: &[&str]| {
        let mut args = vec!["status"];
        args.extend_from_slice(extra);
        cli_cfg(&args, &cfg)
    };

    let out = status(&[]);
    assert_eq!(
        out.code,
        Some(code_for(&exit, "not running")),
        "{}",
        out.all()
    );

    // A synchronised clock whatever the machine's, as in the README's example (without a
    // known sync state there is no `weir_clock_synchronised`).
    let clock = d.join("clock");
    write(&clock, "0 1");
    let clock = clock.display().to_string();
    let mut weir = Weir::start_with(&cfg, d, &[("WEIR_TEST_CLOCK", &clock)]);
    let healthy = code_for(&exit, "healthy");
    let out = wait_for(WAIT, || {
        Some(status(&[])).filter(|o| o.code == Some(healthy))
    })
    .unwrap_or_else(|| weir.fail("weir status never said healthy"));

    // The layout: the README's example has the same sections, in the same order, with the
    // same table headers (its figures are an example's). Some sections come with the first
    // pane: asked until the layout is whole.
    let example = section.block("$ weir status");
    let shown = labels(&example);
    let out = wait_for(WAIT, || {
        Some(status(&[])).filter(|o| o.code == Some(healthy) && labels(&o.stdout) == shown)
    })
    .unwrap_or(out);
    let printed = labels(&out.stdout);
    if let Some(i) = (0..shown.len().max(printed.len())).find(|&i| shown.get(i) != printed.get(i)) {
        // The README line of the first section that differs (or of the example).
        let start = readme.line_of(&example).unwrap_or(0);
        let line = shown
            .get(i)
            .and_then(|l| example.lines().position(|e| e.starts_with(l.as_str())))
            .unwrap_or(0);
        let at = format!("README.md:{}", start + line);
        panic!(
            "{at}: the `weir status` example's section {} is `{}`, weir status prints `{}`\n\
             README sections {shown:?}\nweir status     {printed:?}\n{}",
            i + 1,
            shown.get(i).map_or("(none)", String::as_str),
            printed.get(i).map_or("(none)", String::as_str),
            out.stdout
        );
    }
    for header in example.lines().filter(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        w == ["class", "rows", "bytes", "oldest", "unsent"] || w == ["key", "lag"]
    }) {
        let words: Vec<&str> = header.split_whitespace().collect();
        assert!(
            out.stdout
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == words),
            "no {header:?} header in\n{}",
            out.stdout
        );
    }

    // Every metric the README names is there while weir runs (a sample it quotes, such as
    // `weir_up 0`, is checked with the daemon down, below).
    // Some come only after the first checkpoint or pane: asked until all are there.
    let prom = readme.section("Monitoring: Prometheus");
    let names: Vec<String> = prom
        .codes()
        .into_iter()
        .filter(|c| c.starts_with("weir_") || c.starts_with("process_"))
        .filter(|c| !c.contains(' '))
        // Local hardware only, as the README says; CI has none (prom.rs's tests render it).
        .filter(|c| c != "weir_sensor_up{sensor}")
        .collect();
    let mut out = cli_cfg(&["metrics"], &cfg);
    let end = Instant::now() + WAIT;
    while !names.iter().all(|n| has_metric(&out.stdout, n)) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
        out = cli_cfg(&["metrics"], &cfg);
    }
    assert_eq!(out.code, Some(0), "{}", out.all());
    for name in &names {
        assert_has_metric(&out.stdout, name);
    }
    assert!(out.stdout.contains("\nweir_up 1\n"), "{}", out.stdout);

    // `weir outbox purge` refuses while the daemon runs: the code from the README's table.
    let purge = outbox_table(&readme)
        .into_iter()
        .find(|(cmd, _)| cmd.starts_with("weir outbox purge"))
        .unwrap_or_else(|| panic!("no purge row in the README's outbox table"));
    let out = cli_cfg(&["outbox", "purge", "--older-than", "2d", "--yes"], &cfg);
    assert_eq!(
        out.code,
        Some(code_for(&purge.1, "while weir runs")),
        "{}",
        out.all()
    );

    // The upstream goes: unhealthy, with the README's advice for it.
    broker.stop();
    let unhealthy = code_for(&exit, "running but unhealthy");
    let out = wait_for(WAIT, || {
        Some(status(&["--upstream-down-after", "1s"])).filter(|o| o.code == Some(unhealthy))
    })
    .unwrap_or_else(|| weir.fail("weir status never said unhealthy with the upstream down"));
    let shown = advice(&example, "upstream_down");
    let printed = advice(&out.stdout, "upstream_down");
    assert!(shown.is_some(), "no advice in {example}");
    assert_eq!(shown, printed, "README.md's advice is not weir status's");

    // Down: not running; `weir metrics` still prints, exit 0, `weir_up 0` and what the
    // state database says, each name the README lists.
    weir.stop_ok(WAIT);
    let out = status(&[]);
    assert_eq!(
        out.code,
        Some(code_for(&exit, "not running")),
        "{}",
        out.all()
    );
    let down = prom.between("With the daemon down", "so the textfile");
    assert!(down.contains("still prints, exit 0"), "{down}");
    let out = cli_cfg(&["metrics"], &cfg);
    assert_eq!(out.code, Some(0), "{}", out.all());
    for c in codes(&down).into_iter().filter(|c| c.starts_with("weir_")) {
        if c.contains(' ') {
            assert!(
                out.stdout.contains(&format!("{c}\n")),
                "no {c:?} in\n{}",
                out.stdout
            );
        } else {
            assert_has_metric(&out.stdout, &c);
        }
    }

    // A mistake in the file with the daemon down.
    write(&cfg, "[agent\n");
    let out = status(&[]);
    assert_eq!(
        out.code,
        Some(code_for(&exit, "bad config and the daemon down")),
        "{}",
        out.all()
    );
}

/// The advice (`-> ...`, with its continuation lines) under problem `code` in `weir status`
/// text, on one line.
fn advice(text: &str, code: &str) -> Option<String> {
    let mut lines = text
        .lines()
        .skip_while(|l| !l.starts_with(&format!("  ! {code}:")));
    lines.next()?;
    let mut words = Vec::new();
    for l in lines {
        let t = l.trim_start();
        if t.starts_with("-> ") || (!words.is_empty() && l.starts_with("       ")) {
            words.extend(t.split_whitespace());
        } else if !words.is_empty() || !l.starts_with("    ") {
            break;
        }
    }
    (!words.is_empty()).then(|| words.join(" "))
}

/// The section labels of `weir status` text, in order: the words before the value.
fn labels(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with(' '))
        .filter(|l| !l.starts_with("$ ") && !l.starts_with("weir "))
        .map(|l| {
            let end = ["  ", ",", ":", " ("]
                .iter()
                .filter_map(|sep| l.find(sep))
                .min()
                .unwrap_or(l.len());
            l[..end].to_string()
        })
        .collect()
}

/// `name` as the README writes it: `weir_x`, `weir_x{class}` (labelled by class),
/// `weir_x{reason="bad_json"}` (that very series), `weir_outbox_*` (a prefix).
fn assert_has_metric(text: &str, name: &str) {
    assert!(
        has_metric(text, name),
        "README.md names `{name}`; weir metrics has no such series:\n{text}"
    );
}

/// Whether `text` has the series `name` (as [`assert_has_metric`] reads it).
fn has_metric(text: &str, name: &str) -> bool {
    let (base, labels) = match name.split_once('{') {
        Some((b, l)) => (b, Some(l.trim_end_matches('}'))),
        None => (name, None),
    };
    let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    match (base.strip_suffix('*'), labels) {
        (Some(prefix), _) => samples.iter().any(|l| l.starts_with(prefix)),
        (None, Some(l)) if l.contains('=') => samples
            .iter()
            .any(|s| s.starts_with(&format!("{base}{{{l}}} "))),
        (None, Some(l)) => samples
            .iter()
            .any(|s| s.starts_with(&format!("{base}{{{l}=\""))),
        (None, None) => samples
            .iter()
            .any(|s| s.starts_with(&format!("{base} ")) || s.starts_with(&format!("{base}{{"))),
    }
}

/// The README's outbox table: each command (its first words, options left out) with its
/// exit column.
fn outbox_table(readme: &Readme) -> Vec<(String, String)> {
    readme
        .section("Is the data safe, and what is waiting?")
        .table_rows()
        .into_iter()
        .skip(1)
        .map(|row| {
            let cmd = codes(&row[0]).first().cloned().unwrap_or_default();
            let cmd = cmd.split(" [").next().unwrap_or_default().to_string();
            (cmd, row.last().cloned().unwrap_or_default())
        })
        .collect()
}

#[test]
fn the_outbox_tools_exit_as_the_readmes_table_says() {
    let readme = Readme::load();
    let dir = scratch();
    let d = dir.path();
    let sound = d.join("sound.db");
    {
        let mut ob = weir::outbox::Outbox::open(&weir::outbox::OutboxConfig {
            path: sound.clone(),
            max_bytes: 1 << 20,
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let row = weir::outbox::NewMessage {
            class: weir::outbox::Class::Aggregate,
            topic: "weir/d/agg/s/m".into(),
            payload: b"{}".to_vec(),
            supersede_key: None,
            created_ms: 1_000,
        };
        ob.insert(&[row]).unwrap_or_else(|e| panic!("{e}"));
    }
    let garbage = d.join("garbage.db");
    write(&garbage, &"not SQLite. ".repeat(2000));
    // A file a newer weir wrote: a schema version this one does not know.
    let newer = d.join("newer.db");
    std::fs::copy(&sound, &newer).unwrap_or_else(|e| panic!("{e}"));
    rusqlite::Connection::open(&newer)
        .and_then(|c| c.pragma_update(None, "user_version", 99))
        .unwrap_or_else(|e| panic!("{e}"));
    let missing = d.join("missing.db");
    let config = Config::new("ob", d).upstream(1).sim(toml! { name = "s" });
    let outbox = config.outbox_db();
    let cfg = config.write();

    let table = outbox_table(&readme);
    assert!(table.len() >= 5, "{table:?}");
    for (cmd, exit) in &table {
        let words: Vec<&str> = cmd.split_whitespace().skip(1).collect();
        let run = |db: &Path| {
            let out = cli_with(&words, |c| {
                c.arg("--db").arg(db);
            });
            (out.code.unwrap_or(-1), out.all())
        };
        if words.contains(&"purge") {
            // Through a config naming its own control socket (with `--db` alone purge can only
            // ask the system's, and says so); 75 while weir runs is checked with a running
            // weir (the status test).
            std::fs::create_dir_all(config.state_dir()).unwrap_or_else(|e| panic!("{e}"));
            std::fs::copy(&sound, &outbox).unwrap_or_else(|e| panic!("{e}"));
            let out = cli_cfg(&words, &cfg);
            let unconfirmed = code_for(exit, "without `--yes` and no terminal");
            assert_eq!(out.code, Some(unconfirmed), "{}", out.all());
            let mut yes = words.clone();
            yes.push("--yes");
            let out = cli_cfg(&yes, &cfg);
            assert!(exit.starts_with("0;"), "{exit}");
            assert_eq!(out.code, Some(0), "{}", out.all());
            continue;
        }
        // "0 sound, 65 damaged or from a newer weir, 1 unreadable", or just "0, 65, 1".
        let numbers: Vec<i32> = exit
            .split(',')
            .filter_map(|i| i.split_whitespace().next()?.parse().ok())
            .collect();
        assert_eq!(numbers, [0, 65, 1], "{cmd}: {exit}");
        for (db, want) in [(&sound, 0), (&garbage, 65), (&newer, 65), (&missing, 1)] {
            let (code, text) = run(db);
            assert_eq!(code, want, "{cmd} --db {}: {text}", db.display());
        }
        assert!(!missing.exists(), "{cmd} created the database");
    }
}

#[test]
fn decode_prints_the_readmes_json_pane_unchanged_and_refuses_garbage() {
    let readme = Readme::load();
    let upstream = readme.section("## Upstream messages");
    let pane = upstream.block("\"type\":\"pane\"");
    let decode = |input: &[u8]| {
        let mut child = weir_command()
            .arg("decode")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input).unwrap_or_else(|e| panic!("{e}"));
        }
        child.wait_with_output().unwrap_or_else(|e| panic!("{e}"))
    };
    let out = decode(pane.as_bytes());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), pane);

    let said = readme.section("A payload from upstream").prose();
    assert!(
        said.contains("Exit 65 when the bytes are not a Weir payload"),
        "{said}"
    );
    let out = decode(b"\x00\xffnot a payload");
    assert_eq!(out.status.code(), Some(65));
}

#[test]
fn a_diag_bundle_holds_the_files_the_readme_lists_and_no_secret_it_names() {
    let readme = Readme::load();
    let section = readme.section("A bundle for support");
    let prose = section.prose();
    let dir = scratch();
    let d = dir.path();
    // Kinds of secret the README says are redacted: "keys naming a password, secret, ...".
    let kinds = section.between("keys naming a ", ", in comments too");
    let kinds: Vec<&str> = kinds["keys naming a ".len()..]
        .split([',', ' '])
        .filter(|w| !w.is_empty() && *w != "or")
        .collect();
    assert!(kinds.contains(&"password") && kinds.len() >= 4, "{kinds:?}");
    let secret = |k: &str| format!("{k}-value-Xq7");
    let in_file = "from-the-password-file-Zk4";
    let password_file = d.join("password");
    write(&password_file, in_file);
    let mut text = Config::new("pi-01", d)
        .sim(toml! { name = "greenhouse" })
        .uplink(toml! {
            host = "broker.example", username = "pi-01-user",
            password_file = password_file.as_path(),
            // The psk's value where no key names it: redacted there too.
            client_id = secret(kinds[kinds.len() - 2]),
        })
        .text();
    for k in &kinds {
        text.push_str(&format!("# old_{k} = \"{}\"\n", secret(k)));
    }
    let cfg = d.join("weir.toml");
    write(&cfg, &text);
    let check = cli_with(["config", "check"], |c| {
        c.arg(&cfg);
    });
    assert_eq!(check.code, Some(0), "{}", check.all());

    let out = cli_with(["diag", "--config"], |c| {
        c.arg(&cfg).current_dir(d);
    });
    assert_eq!(out.code, Some(0), "{}", out.all());
    // `weir-diag-<device>-<time>.tar.gz` (mode 0600) in the working directory.
    let name = section.code("weir-diag-<device>-<time>.tar.gz");
    assert!(prose.contains(&format!("`{name}` (mode 0600)")), "{prose}");
    let prefix = name.split('<').next().unwrap_or_default();
    let bundle = std::fs::read_dir(d)
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
        .find(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with(&format!("{prefix}pi-01-")) && n.ends_with(".tar.gz")
        })
        .unwrap_or_else(|| panic!("no {name} in {}: {}", d.display(), out.all()))
        .path();
    let mode = std::fs::metadata(&bundle)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0);
    assert_eq!(mode, 0o600, "{}", bundle.display());

    let root = unpack_bundle(&bundle, &d.join("x"))
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("an empty bundle"))
        .path();
    let files: BTreeSet<String> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".stderr"))
        .collect();
    let listed: BTreeSet<String> = section
        .codes()
        .into_iter()
        .filter(|c| !c.contains('<') && !c.contains(' '))
        .filter(|c| [".txt", ".json", ".toml"].iter().any(|e| c.ends_with(e)))
        .collect();
    assert_eq!(
        files, listed,
        "the bundle's files and README.md's list differ"
    );

    for f in &files {
        let text = std::fs::read_to_string(root.join(f)).unwrap_or_default();
        for k in &kinds {
            assert!(!text.contains(&secret(k)), "{f} holds the {k}:\n{text}");
        }
        assert!(
            !text.contains(in_file),
            "{f} holds the password file's contents"
        );
    }
    let config = std::fs::read_to_string(root.join("config.toml")).unwrap_or_default();
    assert!(prose.contains("usernames are kept"), "{prose}");
    assert!(config.contains("username = \"pi-01-user\""), "{config}");
}

#[test]
fn log_level_and_tail_do_what_the_readme_shows() {
    let readme = Readme::load();
    let dir = scratch();
    let d = dir.path();
    let cfg = Config::new("rl", d)
        .agent(toml! { shutdown_grace = "500ms" })
        .upstream(free_port())
        .sim(toml! { name = "greenhouse", metric = "temperature", interval = "50ms" })
        .write();
    // The level the README's first example finds.
    let mut weir = Weir::start_with(&cfg, d, &[("WEIR_LOG", "info")]);
    let up = wait_for(WAIT, || {
        matches!(cli_cfg(&["status"], &cfg).code, Some(0 | 1)).then_some(())
    });
    if up.is_none() {
        weir.fail("weir status never reached the daemon");
    }
    let log_level = |args: &[&str]| {
        let mut all = vec!["log-level"];
        all.extend_from_slice(args);
        cli_cfg(&all, &cfg)
    };

    // Each example in order: the command, and after `#` what it prints (here weir logs to
    // standard error, not to the journal) or what it means.
    let section = readme.section("Logs and the log level");
    let block = section.block("$ weir log-level");
    let mut first: Option<String> = None;
    for line in block.lines().filter(|l| l.starts_with("$ weir log-level")) {
        let (command, comment) = line.split_once('#').unwrap_or((line, ""));
        let (command, comment) = (command.trim(), comment.trim());
        let args: Vec<&str> = command.split_whitespace().skip(3).collect();
        let out = log_level(&args);
        assert_eq!(out.code, Some(0), "{command}: {}", out.all());
        let printed = out.stdout.trim_end();
        // The filter and what it means: `log filter "info": INFO and up from everything ...`
        // or `log filter changed from "a" to "b": ...`.
        let meaning = printed.rsplit_once("\": ").map_or("", |(_, m)| m);
        if comment.starts_with("log filter") {
            assert_eq!(
                printed,
                comment.replace("(logging to journald)", "(logging to stderr)"),
                "{command}"
            );
            // What the filter means, without where the lines go (said only by the query).
            let meaning = meaning.split(" (logging to").next().unwrap_or_default();
            first.get_or_insert(meaning.to_string());
        } else if comment == "back" {
            let want = first.clone().unwrap_or_default();
            assert!(
                printed.ends_with(&format!(": {want}")),
                "{command} is back to `{want}`? {printed}"
            );
        } else {
            let said = comment.split(" (").next().unwrap_or_default();
            assert!(
                meaning.starts_with(said),
                "{command}: {comment} but {printed}"
            );
            // "("warning" and "warn" both work)": both set the same filter.
            for word in codes(&comment.replace('"', "`")) {
                let out = log_level(&[&word]);
                assert!(
                    out.stdout
                        .trim_end()
                        .ends_with(printed.rsplit(" to ").next().unwrap_or("")),
                    "{word}: {}",
                    out.all()
                );
            }
        }
    }

    // Every level the README lists is accepted; a filter that leaves the rest off is
    // refused with the fix, unless it starts with `off` or says `--allow-silence`.
    let levels = section.between("Levels:", ";");
    let levels = codes(&levels);
    assert!(levels.len() >= 6, "{levels:?}");
    for l in &levels {
        let out = log_level(&[l]);
        assert_eq!(out.code, Some(0), "{l}: {}", out.all());
    }
    let rules = section.between("A filter that sets no level", "The change lasts");
    let alone = codes(&rules)
        .into_iter()
        .find(|c| c.contains('='))
        .unwrap_or_else(|| panic!("{rules}"));
    let out = log_level(&[&alone]);
    assert_eq!(out.code, Some(2), "{alone}: {}", out.all());
    assert!(out.stderr.contains("fix:"), "{}", out.stderr);
    let out = log_level(&[&format!("off,{alone}")]);
    assert_eq!(out.code, Some(0), "off,{alone}: {}", out.all());
    let out = log_level(&["--allow-silence", &alone]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    // `--log`/`WEIR_LOG` take the same filters: the README's examples silence nothing.
    let examples = readme
        .section("## Running it")
        .between("the level is `--log`", ")");
    for f in codes(&examples)
        .iter()
        .filter(|c| !c.starts_with('-') && *c != "WEIR_LOG")
    {
        let out = log_level(&[f]);
        assert_eq!(
            out.code,
            Some(0),
            "the README's example {f:?}: {}",
            out.all()
        );
    }
    let out = log_level(&["info"]);
    assert_eq!(out.code, Some(0), "{}", out.all());

    // `weir tail`: the streams the README names are the tool's, and piped it prints JSON
    // lines (panes and readings flow from the simulated sensor).
    let tail = readme.section("Live data: `weir tail`");
    let usage = tail.code("weir tail [");
    let named: BTreeSet<String> = usage
        .split(['[', ']'])
        .nth(1)
        .unwrap_or_default()
        .split('|')
        .map(str::to_string)
        .collect();
    let help = cli(["tail", "--help"]).stdout;
    let possible: BTreeSet<String> = help
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- ")?.split(':').next())
        .map(str::to_string)
        .collect();
    assert_eq!(
        named, possible,
        "README.md's streams and `weir tail --help` differ"
    );
    assert!(tail.prose().contains("JSON lines when piped"));
    let mut child = weir_command()
        .args(["tail", "agg", "readings", "--config"])
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut kinds = BTreeSet::new();
    let end = Instant::now() + WAIT;
    while kinds.len() < 2 && Instant::now() < end {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("piped, not a JSON line ({e}): {line}"));
            let kind = v["kind"].as_str().unwrap_or_default().to_string();
            assert!(kind == "agg" || kind == "readings", "not asked for: {line}");
            kinds.insert(kind);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(kinds.len(), 2, "tail printed {kinds:?}: {}", weir.log());
    weir.stop_ok(WAIT);
}

/// What `weir tail` prints when it skipped events: the README's words, as `weir tail`'s own
/// unit test pins them (making a client too slow on purpose is no end-to-end test).
#[test]
fn the_readmes_missed_events_line_is_the_one_tail_prints() {
    let readme = Readme::load();
    let shown = readme
        .section("Live data: `weir tail`")
        .code("-- missed N events");
    let source = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/src/cli/tail.rs"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let printed = shown.replace("N events", "7 events");
    assert!(
        source.contains(&format!("\"{printed}\"")),
        "README.md shows `{shown}`; weir tail's unit test expects another line \
         (agent/src/cli/tail.rs)"
    );
}

/// The README's table of unhealthy states is the list of problems `weir status` can report.
#[test]
fn the_readmes_unhealthy_states_are_the_ones_weir_reports() {
    let readme = Readme::load();
    let table: BTreeSet<String> = readme
        .section("Is it running and healthy?")
        .table_rows()
        .into_iter()
        .skip(1)
        .filter_map(|r| codes(&r[0]).first().cloned())
        .collect();
    let source = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/src/control/health.rs"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let reported: BTreeSet<String> = source
        .split("code: \"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .map(str::to_string)
        .collect();
    assert_eq!(table, reported);
}
