//! Nothing committed to the outbox is lost across SIGKILL and an upstream outage.

use std::collections::BTreeSet;
use std::time::Duration;

use weir_tests::{Broker, Config, OutboxFile, Recorder, Weir, free_port, scratch, toml, wait_for};

fn config(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    Config::new("dur", dir)
        .engine(toml! { max_out_of_orderness = "0s", allowed_lateness = "0s" })
        .set("engine.window", "size", "200ms")
        .upstream(port)
        .uplink(toml! { reconnect_max = "500ms" })
        .sim(toml! { name = "a", interval = "20ms", base = 1.0, noise = 0.5 })
        .sim(toml! { name = "b", interval = "30ms", base = 100.0 })
        .write()
}

/// Pane message ids waiting in the outbox file (read-only, as a technician would).
fn outbox_pane_ids(outbox: &OutboxFile) -> BTreeSet<String> {
    outbox
        .msg_ids("pane")
        .unwrap_or_else(|| panic!("cannot read {}", outbox.path().display()))
}

#[test]
fn every_pane_committed_before_a_sigkill_arrives_after_restart_and_reconnect() {
    let dir = scratch();
    let mut broker = Broker::new(dir.path(), free_port());
    // Register the consumer's persistent session, then take the broker down:
    // from here on the broker queues for the consumer whatever reaches it.
    broker.start();
    broker.create_session("durable-consumer", "weir/dur/agg/#");
    broker.stop();

    let cfg = config(dir.path(), broker.port);
    let mut weir = Weir::start(&cfg, dir.path());
    let db = OutboxFile::new(dir.path().join("state/outbox.db"));
    // Upstream is down: results pile up in the outbox.
    let enough = wait_for(Duration::from_secs(30), || {
        db.msg_ids("pane")
            .is_some_and(|ids| ids.len() >= 20)
            .then_some(())
    });
    assert!(enough.is_some(), "no backlog formed\n{}", weir.log());
    weir.kill9();
    let before_kill = outbox_pane_ids(&db);

    // Restart while the broker is still down, then bring the broker back.
    let mut weir = Weir::start(&cfg, dir.path());
    std::thread::sleep(Duration::from_millis(500));
    broker.start();
    let consumer = Recorder::persistent(broker.port, "weir/dur/agg/#", "durable-consumer");
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
        db.msg_ids("pane")
            .is_some_and(|ids| ids.is_disjoint(&before_kill))
            .then_some(())
    });
    assert!(drained.is_some(), "acknowledged rows were not deleted");
    weir.stop_ok(Duration::from_secs(30));
}

#[test]
fn a_sigterm_while_upstream_is_down_exits_cleanly_and_keeps_the_backlog() {
    let dir = scratch();
    let mut broker = Broker::new(dir.path(), free_port());
    broker.start();
    broker.create_session("graceful-consumer", "weir/dur/agg/#");
    broker.stop();

    let cfg = config(dir.path(), broker.port);
    let mut weir = Weir::start(&cfg, dir.path());
    let db = OutboxFile::new(dir.path().join("state/outbox.db"));
    let formed = wait_for(Duration::from_secs(30), || {
        db.msg_ids("pane")
            .is_some_and(|ids| ids.len() >= 10)
            .then_some(())
    });
    assert!(formed.is_some(), "no backlog formed\n{}", weir.log());
    let before = outbox_pane_ids(&db);
    // Shutdown tries to deliver for `shutdown_grace` (5 s by default), then exits.
    weir.stop_ok(Duration::from_secs(60));
    let after = outbox_pane_ids(&db);
    assert!(
        before.is_subset(&after),
        "rows vanished at shutdown: {:?}",
        before.difference(&after).collect::<Vec<_>>()
    );

    broker.start();
    let consumer = Recorder::persistent(broker.port, "weir/dur/agg/#", "graceful-consumer");
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
