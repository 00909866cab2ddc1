//! Nothing committed to the outbox is lost across SIGKILL and an upstream outage.

use std::collections::BTreeSet;
use std::time::Duration;

use weir_tests::{Broker, Consumer, Weir, scratch, wait_for};

fn config(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    let text = format!(
        r#"
[agent]
device = "dur"
state_dir = "{state}"

[engine]
max_out_of_orderness = "0s"
allowed_lateness = "0s"
[engine.window]
size = "200ms"

[uplink]
host = "127.0.0.1"
port = {port}
reconnect_min = "100ms"
reconnect_max = "500ms"

[[sim]]
name = "a"
interval = "20ms"
base = 1.0
noise = 0.5

[[sim]]
name = "b"
interval = "30ms"
base = 100.0
"#,
        state = dir.join("state").display()
    );
    let path = dir.join("weir.toml");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path
}

/// Pane message ids waiting in the outbox file (read-only, as a technician would).
fn outbox_pane_ids(db: &std::path::Path) -> BTreeSet<String> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap_or_else(|e| panic!("open {}: {e}", db.display()));
    let mut stmt = conn
        .prepare("SELECT payload FROM outbox")
        .unwrap_or_else(|e| panic!("{e}"));
    let rows = stmt
        .query_map([], |r| r.get::<_, Vec<u8>>(0))
        .unwrap_or_else(|e| panic!("{e}"));
    rows.filter_map(|p| p.ok())
        .filter_map(|p| serde_json::from_slice::<serde_json::Value>(&p).ok())
        .filter(|v| v["type"] == "pane")
        .filter_map(|v| v["msg_id"].as_str().map(str::to_string))
        .collect()
}

/// [`outbox_pane_ids`] once the agent has created the outbox's table: the file
/// exists a moment before its schema does (a gap QEMU makes wide enough to hit).
fn outbox_pane_ids_when_ready(db: &std::path::Path) -> Option<BTreeSet<String>> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()?;
    conn.prepare("SELECT 1 FROM outbox LIMIT 1").ok()?;
    Some(outbox_pane_ids(db))
}

#[test]
fn every_pane_committed_before_a_sigkill_arrives_after_restart_and_reconnect() {
    let dir = scratch();
    let mut broker = Broker::new(dir.path(), weir_tests::free_port());
    // Register the consumer's persistent session, then take the broker down:
    // from here on the broker queues for the consumer whatever reaches it.
    broker.start();
    Consumer::connect(broker.port, "weir/dur/agg/#", Some("durable-consumer")).disconnect();
    broker.stop();

    let cfg = config(dir.path(), broker.port);
    let mut weir = Weir::start(&cfg, dir.path());
    let db = dir.path().join("state/outbox.db");
    // Upstream is down: results pile up in the outbox.
    let enough = wait_for(Duration::from_secs(30), || {
        (db.exists() && outbox_pane_ids_when_ready(&db).is_some_and(|ids| ids.len() >= 20))
            .then_some(())
    });
    assert!(enough.is_some(), "no backlog formed\n{}", weir.log());
    weir.kill9();
    let before_kill = outbox_pane_ids(&db);

    // Restart while the broker is still down, then bring the broker back.
    let mut weir = Weir::start(&cfg, dir.path());
    std::thread::sleep(Duration::from_millis(500));
    broker.start();
    let consumer = Consumer::connect(broker.port, "weir/dur/agg/#", Some("durable-consumer"));
    let msgs = consumer
        .wait_until(
            "every pane from before the kill",
            Duration::from_secs(60),
            |m| {
                let got: BTreeSet<&str> =
                    m.iter().filter_map(|m| m.json["msg_id"].as_str()).collect();
                before_kill.iter().all(|id| got.contains(id.as_str()))
            },
        )
        .unwrap_or_else(|e| panic!("{e}\nmissing after restart; weir log:\n{}", weir.log()));

    // Duplicates are allowed, but a redelivered message is the same message.
    for id in &before_kill {
        let copies: Vec<_> = msgs
            .iter()
            .filter(|m| m.json["msg_id"] == id.as_str())
            .collect();
        assert!(
            copies.windows(2).all(|w| w[0].json == w[1].json),
            "copies of {id} differ: {copies:?}"
        );
    }
    // And the outbox drains: rows are deleted once acknowledged.
    let drained = wait_for(Duration::from_secs(30), || {
        outbox_pane_ids(&db).is_disjoint(&before_kill).then_some(())
    });
    assert!(drained.is_some(), "acknowledged rows were not deleted");
    let status = weir.terminate(Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "{}", weir.log());
}

#[test]
fn a_sigterm_while_upstream_is_down_exits_cleanly_and_keeps_the_backlog() {
    let dir = scratch();
    let mut broker = Broker::new(dir.path(), weir_tests::free_port());
    broker.start();
    Consumer::connect(broker.port, "weir/dur/agg/#", Some("graceful-consumer")).disconnect();
    broker.stop();

    let cfg = config(dir.path(), broker.port);
    let mut weir = Weir::start(&cfg, dir.path());
    let db = dir.path().join("state/outbox.db");
    let formed = wait_for(Duration::from_secs(30), || {
        (db.exists() && outbox_pane_ids_when_ready(&db).is_some_and(|ids| ids.len() >= 10))
            .then_some(())
    });
    assert!(formed.is_some(), "no backlog formed\n{}", weir.log());
    let before = outbox_pane_ids(&db);
    // Shutdown tries to deliver for `shutdown_grace` (5 s by default), then exits.
    let status = weir.terminate(Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.success()),
        "{:?}\n{}",
        status,
        weir.log()
    );
    let after = outbox_pane_ids(&db);
    assert!(
        before.is_subset(&after),
        "rows vanished at shutdown: {:?}",
        before.difference(&after).collect::<Vec<_>>()
    );

    broker.start();
    let consumer = Consumer::connect(broker.port, "weir/dur/agg/#", Some("graceful-consumer"));
    let _weir = Weir::start(&cfg, dir.path());
    consumer
        .wait_until(
            "the backlog kept at shutdown",
            Duration::from_secs(60),
            |m| {
                let got: BTreeSet<&str> =
                    m.iter().filter_map(|m| m.json["msg_id"].as_str()).collect();
                after.iter().all(|id| got.contains(id.as_str()))
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
}
