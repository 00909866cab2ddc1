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
    };
    assert!(restore(&stored, engine_cfg(false), specs(), 4).is_err());
}

#[test]
fn only_a_dup_flagged_redelivery_with_the_same_id_and_bytes_counts_as_already_counted() {
    let mut seen = Seen::default();
    let f = fingerprint("t/1", b"21.5");
    seen.record(7, f);
    assert!(seen.already_counted(true, 7, f));
    assert!(
        !seen.already_counted(false, 7, f),
        "a first delivery is never a repeat"
    );
    assert!(!seen.already_counted(true, 8, f), "another packet id");
    assert!(
        !seen.already_counted(true, 7, fingerprint("t/1", b"21.6")),
        "other bytes"
    );
    assert_ne!(
        fingerprint("t/1", b"2"),
        fingerprint("t/12", b""),
        "topic and payload are separated"
    );
}

#[test]
fn a_delivery_stays_recognised_until_the_broker_reuses_its_packet_id_also_across_a_restart() {
    let dir = TempDir::new().unwrap();
    let mut db = outbox(&dir);
    let mut e = Engine::new(engine_cfg(false));
    let mut d = Detectors::new(Vec::new(), 4);
    let mut seen = Seen::default();
    let f = fingerprint("t", b"1");
    seen.record(1, f);
    db.commit(&[], Some(&take(&mut e, &mut d, &seen, 1)))
        .unwrap();
    seen.committed();
    // Many checkpoints later, with other deliveries in between, its PUBACK may
    // still be unwritten (ingest held by backpressure): it is still recognised.
    for pkid in 2..50u16 {
        seen.record(pkid, fingerprint("t", &pkid.to_be_bytes()));
        db.commit(&[], Some(&take(&mut e, &mut d, &seen, 2)))
            .unwrap();
        seen.committed();
    }
    assert!(seen.already_counted(true, 1, f));
    // Each checkpoint stored only what changed; the file holds them all.
    let stored = db.load_checkpoint().unwrap().unwrap();
    assert_eq!(stored.seen.len(), 49);
    let (_, _, restored) = restore(&stored, engine_cfg(false), Vec::new(), 4).unwrap();
    assert!(restored.already_counted(true, 1, f), "after a restart too");
    // The broker reuses id 1 only after our PUBACK arrived: the new delivery replaces it.
    let g = fingerprint("t", b"new");
    seen.record(1, g);
    assert!(!seen.already_counted(true, 1, f));
    assert!(seen.already_counted(true, 1, g));
    db.commit(&[], Some(&take(&mut e, &mut d, &seen, 3)))
        .unwrap();
    let stored = db.load_checkpoint().unwrap().unwrap();
    let (_, _, restored) = restore(&stored, engine_cfg(false), Vec::new(), 4).unwrap();
    assert!(!restored.already_counted(true, 1, f));
    assert!(restored.already_counted(true, 1, g));
}
