//! Upstream payload formats end to end: the same MQTT input through a weir publishing JSON and
//! one publishing postcard, each against its own real Mosquitto; the postcard consumer decodes
//! with the library and gets the JSON run's results. `weir decode` turns a received payload
//! back into JSON, and `weir outbox verify` judges a sound and a corrupted database.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use weir_tests::{
    Broker, Config, Publisher, Recorder, Weir, cli, now_ms, scratch, toml, weir_command,
};

const WAIT: Duration = Duration::from_secs(60);

fn config(dir: &Path, name: &str, port: u16, format: &str) -> PathBuf {
    Config::new("fmt", dir)
        .agent(toml! { state_dir = dir.join(format!("state-{name}")).as_path(), shutdown_grace = "2s" })
        .engine(toml! { max_out_of_orderness = "200ms", allowed_lateness = "1s" })
        .upstream(port)
        .uplink(toml! { status_interval = "1s", format = format })
        .ingest(port, "fmt-ingest")
        .topic("sensors/+/+", "{2}", "{3}")
        .detector(toml! {
            name = "too-hot", kind = "threshold", sensor = "lab", metric = "temp",
            high = 40.0, hysteresis = 1.0, clear_after = "10s", severity = "critical",
        })
        .write_as(&format!("{name}.toml"))
}

/// One weir run: broker, recorder, publisher, process.
struct Run {
    raw: Recorder,
    publisher: Publisher,
    weir: Weir,
    config: PathBuf,
    format: &'static str,
    _broker: Broker,
}

impl Run {
    fn start(dir: &Path, format: &'static str) -> Self {
        let broker = Broker::start_new(dir);
        let raw = Recorder::connect(broker.port, "weir/fmt/#");
        let publisher = Publisher::connect(broker.port);
        let config = config(dir, format, broker.port, format);
        let weir = Weir::start(&config, dir);
        Self {
            raw,
            publisher,
            weir,
            config,
            format,
            _broker: broker,
        }
    }

    /// Every non-status payload as the JSON it stands for (decoded when postcard).
    fn messages(&self) -> Vec<(String, Vec<u8>, Value)> {
        self.raw
            .payloads()
            .into_iter()
            .filter(|(t, _)| !t.ends_with("/status"))
            .map(|(t, p)| {
                let json = if self.format == "postcard" {
                    weir::wire::postcard::to_json(&p)
                        .unwrap_or_else(|e| panic!("{t}: {e}: {p:02x?}"))
                } else {
                    p.clone()
                };
                let v = serde_json::from_slice(&json).unwrap_or_else(|e| panic!("{t}: {e}"));
                (t, p, v)
            })
            .collect()
    }

    /// Publishes a bad payload on a probe topic until its dead letter comes back: the ingest
    /// is subscribed and the uplink connected.
    fn wait_ready(&self) {
        let ready = self.publisher.publish_until(
            WAIT,
            Duration::from_millis(300),
            |_| ("sensors/probe/x".into(), b"probe".to_vec()),
            || {
                self.messages()
                    .iter()
                    .any(|(_, _, v)| v["source"] == "sensors/probe/x")
                    .then_some(())
            },
        );
        assert!(
            ready.is_some(),
            "{} run never echoed the probe; weir log:\n{}",
            self.format,
            self.weir.log()
        );
    }
}

/// The results a consumer keeps: the latest revision of each pane id, every alert by msg_id,
/// late readings and dead letters by content; without `emitted_at` and `received_at` (wall
/// clock) and the diagnostic `msg_id`s (they carry a per-process boot id).
fn results(msgs: &[(String, Vec<u8>, Value)]) -> BTreeMap<String, Value> {
    let mut out: BTreeMap<String, Value> = BTreeMap::new();
    for (topic, _, v) in msgs {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("emitted_at");
        }
        let key = match v["type"].as_str().unwrap_or_default() {
            "pane" => format!("{topic} {}", v["id"]),
            "alert" => format!("{topic} {}", v["msg_id"]),
            "late" | "deadletter" => {
                if let Some(o) = v.as_object_mut() {
                    o.remove("msg_id");
                    o.remove("received_at");
                }
                if v["source"] == "sensors/probe/x" {
                    continue;
                }
                format!("{topic} {v}")
            }
            other => panic!("unexpected type {other}: {v}"),
        };
        let newer = out
            .get(&key)
            .is_none_or(|old| v["revision"].as_u64() >= old["revision"].as_u64());
        if newer {
            out.insert(key, v);
        }
    }
    out
}

/// Window 1 at revision 1 (four readings), window 2, the alert, the late reading and the
/// dead letter have all arrived.
fn complete(r: &BTreeMap<String, Value>, t0: i64) -> bool {
    let w1 = format!("weir/fmt/agg/lab/temp \"fmt/lab/temp/{t0}-{}\"", t0 + 1000);
    let w2 = format!(
        "weir/fmt/agg/lab/temp \"fmt/lab/temp/{}-{}\"",
        t0 + 1000,
        t0 + 2000
    );
    let count = |k: &str| r.values().filter(|v| v["type"] == k).count();
    r.get(&w1).is_some_and(|v| v["count"] == 4)
        && r.contains_key(&w2)
        && count("alert") >= 1
        && count("late") == 1
        && count("deadletter") == 1
}

#[test]
fn a_postcard_run_decodes_to_the_results_of_a_json_run_of_the_same_input() {
    let dir = scratch();
    let runs = [
        Run::start(dir.path(), "json"),
        Run::start(dir.path(), "postcard"),
    ];
    for r in &runs {
        r.wait_ready();
    }
    // Device-stamped input, in the past so neither future nor too old: window 1 gets 10, 20,
    // 50 (raises too-hot) and, after it fired, 40 within the lateness (revision 1); 5 s later
    // the watermark has passed window 1's lateness, so a reading for it is late; then a
    // payload that is not a number.
    let t0 = (now_ms() / 1000 - 30) * 1000;
    let input = [
        (100, "10"),
        (200, "20"),
        (300, "50"),
        (1500, "5"),
        (50, "40"),
        (5000, "7"),
        (120, "1"),
    ];
    for r in &runs {
        for (dt, v) in input {
            let body = format!(r#"{{"value": {v}, "ts": {}}}"#, t0 + dt);
            r.publisher.publish("sensors/lab/temp", body);
        }
        r.publisher.publish("sensors/lab/temp", "warm");
    }
    let same = weir_tests::wait_for(WAIT, || {
        let (a, b) = (results(&runs[0].messages()), results(&runs[1].messages()));
        (complete(&a, t0) && a == b).then_some(a)
    });
    let Some(json_results) = same else {
        panic!(
            "the runs never agreed:\njson:     {:#?}\npostcard: {:#?}\npostcard log:\n{}",
            results(&runs[0].messages()),
            results(&runs[1].messages()),
            runs[1].weir.log()
        );
    };
    let w1 = format!("weir/fmt/agg/lab/temp \"fmt/lab/temp/{t0}-{}\"", t0 + 1000);
    assert_eq!(json_results[&w1]["sum"], 120.0);

    // What the postcard broker carried: binary payloads (version byte 1), a pane a third of
    // its JSON; status stays JSON.
    let (pc, js) = (runs[1].messages(), runs[0].messages());
    for (topic, payload, _) in &pc {
        assert_eq!(payload[0], 1, "{topic}: {payload:02x?}");
    }
    let pane_len = |m: &[(String, Vec<u8>, Value)]| {
        m.iter()
            .find(|(t, _, _)| t.contains("/agg/"))
            .map(|(_, p, _)| p.len())
            .unwrap_or_default()
    };
    assert!(
        pane_len(&pc) * 3 < pane_len(&js),
        "{} vs {}",
        pane_len(&pc),
        pane_len(&js)
    );
    let status: Vec<_> = runs[1]
        .raw
        .payloads()
        .into_iter()
        .filter(|(t, _)| t.ends_with("/status"))
        .collect();
    let (_, s) = status.first().unwrap_or_else(|| panic!("no status"));
    let s: Value = serde_json::from_slice(s).unwrap_or_else(|e| panic!("status not JSON: {e}"));
    assert_eq!(s["state"], "online");

    // `weir decode` on a received payload, from a file and from standard input with the
    // newline mosquitto_sub adds, prints the same JSON the library gives.
    let (_, alert, _) = pc
        .iter()
        .find(|(t, _, _)| t.contains("/alert/"))
        .unwrap_or_else(|| panic!("no alert"));
    let file = dir.path().join("alert.bin");
    std::fs::write(&file, alert).unwrap_or_else(|e| panic!("{e}"));
    let out = cli(["decode".as_ref(), file.as_os_str()]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let want = weir::wire::postcard::to_json(alert).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.bytes, [want.clone(), b"\n".to_vec()].concat());
    let decoded: Value = serde_json::from_slice(&want).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(decoded["type"], "alert");
    assert_eq!(decoded["state"], "raised");

    let mut child = weir_command()
        .args(["decode", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        stdin
            .write_all(&[alert.as_slice(), b"\n"].concat())
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success());
    assert_eq!(out.stdout, [want, b"\n".to_vec()].concat());

    // A cut payload is refused with the reason.
    std::fs::write(&file, &alert[..alert.len() - 3]).unwrap_or_else(|e| panic!("{e}"));
    let out = cli(["decode".as_ref(), file.as_os_str()]);
    assert_eq!(out.code, Some(65));
    assert!(out.stderr.contains("truncated alert"), "{}", out.stderr);

    // `weir outbox verify` through the config of the stopped postcard run: sound.
    let mut runs = runs;
    for r in &mut runs {
        assert!(r.weir.terminate(WAIT).is_some_and(|s| s.success()));
    }
    let out = cli([
        "outbox".as_ref(),
        "verify".as_ref(),
        "--config".as_ref(),
        runs[1].config.as_os_str(),
    ]);
    let text = &out.stdout;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        text.contains(": ok (integrity_check ok, schema version 4"),
        "{text}"
    );
    assert!(text.contains("aggregate"), "{text}");
}

#[test]
fn outbox_verify_passes_a_sound_database_and_fails_one_with_garbage_naming_the_file() {
    let dir = scratch();
    let db = dir.path().join("outbox.db");
    {
        let mut ob = weir::outbox::Outbox::open(&weir::outbox::OutboxConfig {
            path: db.clone(),
            max_bytes: 1 << 30,
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let rows: Vec<_> = (0..2000)
            .map(|i| weir::outbox::NewMessage {
                class: weir::outbox::Class::Aggregate,
                topic: format!("weir/d/agg/s/m{i}"),
                payload: vec![b'x'; 200],
                supersede_key: None,
                created_ms: 1_000 + i,
            })
            .collect();
        ob.insert(&rows).unwrap_or_else(|e| panic!("{e}"));
    }
    let verify = || {
        cli([
            "outbox".as_ref(),
            "verify".as_ref(),
            "--db".as_ref(),
            db.as_os_str(),
        ])
    };
    let out = verify();
    let text = &out.stdout;
    assert_eq!(out.code, Some(0), "{text}");
    assert!(text.contains("aggregate        2000"), "{text}");
    assert!(
        text.contains("oldest row: id 1, aggregate, weir/d/agg/s/m0"),
        "{text}"
    );

    // Garbage over pages in the middle of the file: it still opens, the check finds it.
    let mut bytes = std::fs::read(&db).unwrap_or_else(|e| panic!("{e}"));
    let len = bytes.len();
    assert!(len > 40 * 4096, "{len}");
    for (i, b) in bytes[20 * 4096..24 * 4096].iter_mut().enumerate() {
        *b = (i * 131 + 17) as u8;
    }
    std::fs::write(&db, bytes).unwrap_or_else(|e| panic!("{e}"));
    let out = verify();
    let err = &out.stderr;
    assert_eq!(out.code, Some(65), "{err}");
    assert!(err.contains(&db.display().to_string()), "{err}");
    assert!(
        err.contains("corrupt") && err.contains("integrity_check"),
        "{err}"
    );
}
