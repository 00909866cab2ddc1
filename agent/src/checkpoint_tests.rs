//! Incremental checkpoints against the whole state: whatever the inputs and
//! wherever the checkpoints fall, the database holds exactly the live state,
//! and a processor restored from it continues as if never stopped.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use proptest::prelude::*;
use tempfile::TempDir;

use super::*;
use crate::detect::{DetectorKind, Glob, Severity};
use crate::engine::{Scope, WindowSpec};
use crate::metrics::Counters;
use crate::outbox::{NewMessage, Outbox, OutboxConfig};
use crate::process::Processor;
use crate::reading::{Reading, TsSource};
use crate::source::Input;
use crate::wire::Wire;

fn engine_cfg(global: bool) -> EngineConfig {
    EngineConfig {
        window: WindowSpec::Tumbling {
            size_ms: 10,
            offset_ms: 0,
        },
        scope: if global { Scope::Global } else { Scope::PerKey },
        max_out_of_orderness_ms: 3,
        allowed_lateness_ms: 8,
        max_future_skew_ms: 1_000,
        max_backfill_ms: None,
        idle_timeout_ms: Some(40),
        late_fire_delay_ms: 0,
        quantiles: true,
        max_keys: 4,
        max_windows_per_key: 4,
    }
}

fn specs() -> Vec<DetectorSpec> {
    vec![
        DetectorSpec {
            name: "hot".into(),
            sensor: Glob::new("*"),
            metric: Glob::new("*"),
            severity: Severity::Warning,
            kind: DetectorKind::Threshold {
                high: Some(50.0),
                low: None,
                hysteresis: 2.0,
                clear_after_ms: 5,
            },
        },
        DetectorSpec {
            name: "spike".into(),
            sensor: Glob::new("*"),
            metric: Glob::new("*"),
            severity: Severity::Critical,
            kind: DetectorKind::ZScore {
                alpha: 0.3,
                threshold: 2.0,
                hysteresis: 0.5,
                warmup: 2,
                clear_after: 1,
                min_stddev: 0.1,
            },
        },
    ]
}

fn processor(engine: Engine, detectors: Detectors) -> Processor {
    let wire = Wire::with_boot_id("dev", "weir/dev", "boot");
    Processor::new(engine, detectors, wire, Arc::new(Counters::default()))
}

fn outbox(dir: &TempDir) -> Outbox {
    Outbox::open(&OutboxConfig {
        path: dir.path().join("outbox.db"),
        max_bytes: 1 << 30,
    })
    .unwrap()
}

fn detectors_bytes(d: &Detectors) -> Vec<u8> {
    postcard::to_allocvec(&d.snapshot()).unwrap()
}

/// (key index, event-time offset from arrival, value, checkpoint after it?)
fn inputs() -> impl Strategy<Value = Vec<(u8, i64, f64, bool)>> {
    prop::collection::vec(
        (
            0u8..6,
            -20i64..5,
            prop_oneof![0.0..40.0, 45.0..60.0],
            any::<bool>(),
        ),
        1..80,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn the_stored_checkpoint_always_equals_the_live_state_and_restores_to_the_same_outputs(
        global in any::<bool>(),
        steps in inputs(),
        cut in 0usize..80,
    ) {
        let cut = cut % steps.len();
        let dir = TempDir::new().unwrap();
        let mut db = outbox(&dir);
        let mut live = processor(Engine::new(engine_cfg(global)), Detectors::new(specs(), 4));
        let mut twin: Option<Processor> = None;
        let seen = Seen::default();
        let (mut a, mut b): (Vec<NewMessage>, Vec<NewMessage>) = (Vec::new(), Vec::new());
        for (i, (k, skew, v, checkpoint)) in steps.iter().enumerate() {
            let now = 1_000 + 3 * i as i64;
            let r = Reading::new(Key::new(format!("s{k}"), "m"), *v, now + skew, TsSource::Event)
                .unwrap();
            live.input(Input::Reading(r.clone()), now, &mut a);
            if let Some(t) = twin.as_mut() {
                t.input(Input::Reading(r), now, &mut b);
            }
            if *checkpoint || i == cut {
                let cp = take(&mut live.engine, &mut live.detectors, &seen, now);
                db.commit(&[], Some(&cp)).unwrap();
                let stored = db.load_checkpoint().unwrap().unwrap();
                let (e, d, _) = restore(&stored, engine_cfg(global), specs(), 4).unwrap();
                prop_assert_eq!(e.snapshot(), live.engine.snapshot(), "engine after step {}", i);
                prop_assert_eq!(detectors_bytes(&d), detectors_bytes(&live.detectors));
                if i == cut {
                    twin = Some(processor(e, d));
                    a.clear();
                }
            }
        }
        // Diagnostics carry a per-process sequence number in their id; the rest must be equal.
        let results = |m: &[NewMessage]| -> Vec<String> {
            m.iter()
                .map(|m| match m.class {
                    crate::outbox::Class::Diagnostic => m.topic.clone(),
                    _ => String::from_utf8_lossy(&m.payload).into_owned(),
                })
                .collect()
        };
        prop_assert_eq!(results(&a), results(&b), "outputs after the restore");
    }
}

#[test]
fn a_key_that_lost_all_state_has_its_row_deleted() {
    let dir = TempDir::new().unwrap();
    let mut db = outbox(&dir);
    let mut cfg = engine_cfg(false);
    cfg.allowed_lateness_ms = 0;
    let mut p = processor(Engine::new(cfg.clone()), Detectors::new(Vec::new(), 4));
    let mut out = Vec::new();
    let r =
        |ts| Input::Reading(Reading::new(Key::new("s", "m"), 1.0, ts, TsSource::Event).unwrap());
    p.input(r(5), 100, &mut out);
    let cp = take(&mut p.engine, &mut p.detectors, &Seen::default(), 100);
    db.commit(&[], Some(&cp)).unwrap();
    assert_eq!(db.load_checkpoint().unwrap().unwrap().keys.len(), 1);
    // Nothing dirty: an empty key list, the row stays.
    let cp = take(&mut p.engine, &mut p.detectors, &Seen::default(), 101);
    assert!(cp.keys.is_empty());
    db.commit(&[], Some(&cp)).unwrap();
    assert_eq!(db.load_checkpoint().unwrap().unwrap().keys.len(), 1);
    let stored = db.load_checkpoint().unwrap().unwrap();
    let (e, _, _) = restore(&stored, cfg, Vec::new(), 4).unwrap();
    assert_eq!(e.snapshot(), p.engine.snapshot());
}

#[test]
fn a_checkpoint_of_another_format_is_refused_not_misread() {
    let stored = StoredCheckpoint {
        taken_ms: 1,
        meta: vec![FORMAT + 1, 0, 0, 0],
        keys: Vec::new(),
        seen: Vec::new(),
        held: Vec::new(),
        topics: Vec::new(),
        hold: Vec::new(),
    };
    let err = restore(&stored, engine_cfg(false), specs(), 4)
        .err()
        .unwrap();
    assert!(
        matches!(err, CheckpointError::Format { found } if found == FORMAT + 1),
        "{err}"
    );
    let stored = StoredCheckpoint {
        taken_ms: 1,
        meta: vec![FORMAT, 1],
        keys: Vec::new(),
        seen: Vec::new(),
        held: Vec::new(),
        topics: Vec::new(),
        hold: Vec::new(),
    };
    assert!(restore(&stored, engine_cfg(false), specs(), 4).is_err());
}

fn meta(qos: u8, pkid: u16, dup: bool, retain: bool, topic: &str, payload: &[u8]) -> DeliveryMeta {
    DeliveryMeta {
        qos,
        pkid,
        dup,
        retain,
        topic: fingerprint(topic, &[]),
        fingerprint: fingerprint(topic, payload),
    }
}

/// Commits what `seen` changed and restores it as a restart would.
fn commit_and_restore(db: &mut Outbox, seen: &mut Seen) -> Seen {
    let mut e = Engine::new(engine_cfg(false));
    let mut d = Detectors::new(Vec::new(), 4);
    db.commit(&[], Some(&take(&mut e, &mut d, seen, 1)))
        .unwrap();
    seen.committed();
    let stored = db.load_checkpoint().unwrap().unwrap();
    restore(&stored, engine_cfg(false), Vec::new(), 4)
        .unwrap()
        .2
}

#[test]
fn a_qos2_packet_id_is_a_repeat_exactly_while_it_is_held_whatever_the_bytes() {
    let mut seen = Seen::new(4);
    let one = meta(2, 7, false, false, "door", b"1");
    assert_eq!(seen.admit(&one), Verdict::New);
    // Resent before PUBREL, DUP or not, same or other bytes: the same message.
    assert_eq!(
        seen.admit(&DeliveryMeta { dup: true, ..one }),
        Verdict::Repeat
    );
    assert_eq!(seen.held(), 1);
    // PUBREL: the id is free; the broker's next message with it is new, even
    // with the same bytes (the door sends `1` again after a packet-id wrap).
    seen.release(7);
    assert_eq!(seen.held(), 0);
    assert_eq!(seen.admit(&DeliveryMeta { dup: true, ..one }), Verdict::New);
    assert_eq!(seen.admit(&one), Verdict::Repeat);
}

#[test]
fn identical_plain_payloads_past_a_packet_id_wrap_are_each_counted_once_across_restarts() {
    let dir = TempDir::new().unwrap();
    let mut db = outbox(&dir);
    let mut seen = Seen::new(4);
    let m = |dup| meta(2, 1, dup, false, "t", b"1");
    // Message A with id 1: counted, committed (PUBREC goes now), then released
    // and the release committed (PUBCOMP goes now).
    assert_eq!(seen.admit(&m(false)), Verdict::New);
    seen = commit_and_restore(&mut db, &mut seen);
    assert_eq!(
        seen.admit(&m(true)),
        Verdict::Repeat,
        "A resent after a restart: PUBREC was lost"
    );
    seen.release(1);
    seen = commit_and_restore(&mut db, &mut seen);
    // 65,535 messages later the broker gives id 1 to message B, same bytes. It
    // is processed, the process dies before the next checkpoint, and B comes
    // again flagged DUP: it is new (the old code called it a repeat and lost it).
    assert_eq!(seen.admit(&m(false)), Verdict::New);
    let stored = db.load_checkpoint().unwrap().unwrap();
    let mut restarted = restore(&stored, engine_cfg(false), Vec::new(), 4)
        .unwrap()
        .2;
    assert_eq!(restarted.admit(&m(true)), Verdict::New);
    // Committed this time: its next resend is a repeat, also after a restart.
    let mut again = commit_and_restore(&mut db, &mut restarted);
    assert_eq!(again.admit(&m(true)), Verdict::Repeat);
}

#[test]
fn a_pubrel_recorded_but_not_committed_keeps_the_id_held_after_a_restart() {
    let dir = TempDir::new().unwrap();
    let mut db = outbox(&dir);
    let mut seen = Seen::new(4);
    assert_eq!(
        seen.admit(&meta(2, 9, false, false, "t", b"x")),
        Verdict::New
    );
    let restored = commit_and_restore(&mut db, &mut seen);
    // PUBREL arrives; the process dies before the removal commits, so no PUBCOMP
    // went out: the broker resends the PUBREL, never a new message with id 9.
    seen.release(9);
    assert_eq!(restored.held(), 1);
}

#[test]
fn a_qos1_resend_is_recognised_by_its_dup_flag_id_and_bytes() {
    let mut seen = Seen::new(4);
    let f = meta(1, 7, false, false, "t/1", b"21.5");
    assert_eq!(seen.admit(&f), Verdict::New);
    assert_eq!(
        seen.admit(&DeliveryMeta { dup: true, ..f }),
        Verdict::Repeat
    );
    assert_eq!(
        seen.admit(&f),
        Verdict::New,
        "a first delivery is never a repeat"
    );
    assert_eq!(
        seen.admit(&meta(1, 8, true, false, "t/2", b"21.5")),
        Verdict::New,
        "another packet id"
    );
    assert_ne!(
        fingerprint("t/1", b"2"),
        fingerprint("t/12", b""),
        "topic and payload are separated"
    );
}

#[test]
fn a_retained_copy_of_the_last_message_counted_on_its_topic_is_not_counted_again() {
    let dir = TempDir::new().unwrap();
    let mut db = outbox(&dir);
    let mut seen = Seen::new(4);
    // Never counted: a reading.
    assert_eq!(
        seen.admit(&meta(2, 1, false, true, "t", b"5")),
        Verdict::New
    );
    seen.release(1);
    // Every later start subscribes again and gets the same retained copy.
    for pkid in 2..6 {
        seen = commit_and_restore(&mut db, &mut seen);
        assert_eq!(
            seen.admit(&meta(2, pkid, false, true, "t", b"5")),
            Verdict::RetainedRepeat
        );
        seen.release(pkid);
    }
    // Counted live (RETAIN 0 on an established subscription), then the retained copy.
    assert_eq!(
        seen.admit(&meta(2, 10, false, false, "u", b"7")),
        Verdict::New
    );
    assert_eq!(
        seen.admit(&meta(2, 11, false, true, "u", b"7")),
        Verdict::RetainedRepeat
    );
    // A retained message that differs from the last one counted is new.
    assert_eq!(
        seen.admit(&meta(2, 12, false, true, "u", b"8")),
        Verdict::New
    );
    // Past the cap, topics are not tracked: their retained copies count again.
    let mut small = Seen::new(1);
    assert_eq!(
        small.admit(&meta(0, 0, false, true, "a", b"1")),
        Verdict::New
    );
    assert_eq!(
        small.admit(&meta(0, 0, false, true, "b", b"1")),
        Verdict::New
    );
    assert_eq!(
        small.admit(&meta(0, 0, false, true, "b", b"1")),
        Verdict::New
    );
    assert_eq!(
        small.admit(&meta(0, 0, false, true, "a", b"1")),
        Verdict::RetainedRepeat
    );
}

#[test]
fn deliveries_recorded_while_a_commit_is_in_flight_go_with_the_next_checkpoint() {
    let mut seen = Seen::new(4);
    seen.admit(&meta(1, 7, false, false, "t/1", b"1"));
    seen.admit(&meta(2, 9, false, false, "t/2", b"2"));
    // Taken when the commit starts.
    let (written, mark) = (seen.changes(), seen.mark());
    assert_eq!(seen.held_changed(), Some(vec![9]));
    // Meanwhile: packet id 7 reused for another message, 9 released, 8 new.
    seen.admit(&meta(1, 7, false, false, "t/1", b"3"));
    seen.release(9);
    seen.admit(&meta(1, 8, false, false, "t/3", b"4"));
    seen.committed_entries(&written, mark);
    let next: Vec<u16> = seen.changes().iter().map(|(pkid, _)| *pkid).collect();
    assert_eq!(
        next,
        [7, 8],
        "the newer records of 7 and 8 are still to be written"
    );
    assert_eq!(
        seen.held_changed(),
        Some(Vec::new()),
        "the release of 9 is still to be written"
    );
    assert_eq!(
        seen.topics_changed().map(|t| t.len()),
        Some(3),
        "the newer topic records go, whole"
    );
    // Nothing changed meanwhile: the commit settles everything it held.
    let (written, mark) = (seen.changes(), seen.mark());
    seen.committed_entries(&written, mark);
    assert!(seen.changes().is_empty());
    assert_eq!((seen.held_changed(), seen.topics_changed()), (None, None));
}

#[test]
fn a_commit_in_flight_stores_the_held_set_as_taken_and_the_next_one_the_newer_set() {
    let dir = TempDir::new().unwrap();
    let mut db = outbox(&dir);
    let (mut e, mut d) = (
        Engine::new(engine_cfg(false)),
        Detectors::new(Vec::new(), 4),
    );
    let mut seen = Seen::new(4);
    for pkid in [3, 1, 2] {
        seen.admit(&meta(2, pkid, false, false, "t/1", &[pkid as u8]));
    }
    // The checkpoint is taken; while its commit is in flight, 2 is released and 5 arrives.
    let cp = take(&mut e, &mut d, &seen, 1);
    let mark = seen.mark();
    seen.release(2);
    seen.admit(&meta(2, 5, false, false, "t/2", b"5"));
    db.commit(&[], Some(&cp)).unwrap();
    seen.committed_entries(&cp.seen, mark);
    let stored = db.load_checkpoint().unwrap().unwrap();
    assert_eq!(stored.held, [1, 2, 3], "the set as it was when taken");
    assert_eq!(stored.topics.len(), 1);
    // A crash now: 2 is still held (its PUBCOMP was never sent), 5 was never counted.
    let back = restore(&stored, engine_cfg(false), Vec::new(), 4)
        .unwrap()
        .2;
    assert_eq!(back.held(), 3);
    // The next checkpoint writes the newer set whole.
    let cp = take(&mut e, &mut d, &seen, 2);
    assert_eq!(cp.held, Some(vec![1, 3, 5]));
    db.commit(&[], Some(&cp)).unwrap();
    seen.committed_entries(&cp.seen, seen.mark());
    let stored = db.load_checkpoint().unwrap().unwrap();
    assert_eq!(stored.held, [1, 3, 5]);
    assert_eq!(stored.topics.len(), 2);
    // Nothing changed: nothing of the record is written again.
    let cp = take(&mut e, &mut d, &seen, 3);
    assert_eq!((cp.held, cp.topics), (None, None));
}
