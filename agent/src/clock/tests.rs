//! The timeline, the sync probes, the hold, and what status says of them.

use super::*;

fn s(mono_ms: i64, wall_ms: i64, synced: bool) -> Sample {
    Sample {
        mono_ms,
        wall_ms,
        synced,
    }
}

const H: i64 = 3_600_000;
const REAL: i64 = 1_780_000_000_000;

#[test]
fn a_synchronised_clock_at_start_is_the_timeline_and_stamps_are_good() {
    let t = Tracker::new(s(0, REAL, true));
    assert_eq!(t.stamp(500), Stamp::trusted(REAL + 500));
    assert_eq!(t.correction(), Some(0));
}

#[test]
fn stamps_before_the_first_sync_are_provisional_and_the_correction_makes_them_exact() {
    // Booted in 1970 + 1 h; the true time is REAL at mono 0.
    let mut t = Tracker::new(s(0, H, false));
    let early = t.stamp(10_000);
    assert!(!early.synced);
    assert_eq!(t.correction(), None);
    // The unsynchronised system clock steps (fake-hwclock, a user): ignored.
    let o = t.observe(s(20_000, 5 * H, false));
    assert_eq!((o.jump, o.trusted, o.now), (0, false, H + 20_000));
    // NTP: at mono 60 s the true time is REAL + 60 s.
    let o = t.observe(s(60_000, REAL + 60_000, true));
    assert!(o.trusted);
    assert_eq!(o.jump, REAL - H);
    assert_eq!(early.ms + t.correction().unwrap_or(0), REAL + 10_000);
    assert_eq!(t.stamp(70_000), Stamp::trusted(REAL + 70_000));
}

#[test]
fn a_step_after_the_sync_is_counted_once_and_not_followed() {
    let mut t = Tracker::new(s(0, REAL, true));
    for (mono, wall) in [(1_000, REAL + 1_000 + 3 * H), (2_000, REAL + 2_000 + 3 * H)] {
        let o = t.observe(s(mono, wall, true));
        assert_eq!((o.jump, o.now), (0, REAL + mono));
    }
    assert_eq!(t.steps, 1);
    assert_eq!(t.wall_minus_timeline, 3 * H);
    let o = t.observe(s(3_000, REAL + 3_000 - 3 * H, true));
    assert_eq!((o.jump, o.now), (0, REAL + 3_000));
    assert_eq!(t.wall_minus_timeline, -3 * H);
    // Back in line, then away again: a second step.
    t.observe(s(4_000, REAL + 4_000, true));
    t.observe(s(5_000, REAL + 5_000 - H, true));
    assert_eq!(t.steps, 2);
    assert_eq!(t.stamp(6_000), Stamp::trusted(REAL + 6_000));
}

#[test]
fn losing_sync_after_the_correction_keeps_the_timeline_trusted() {
    let mut t = Tracker::new(s(0, 0, false));
    t.observe(s(1_000, REAL, true));
    let o = t.observe(s(2_000, REAL + 1_000, false));
    assert!(o.trusted && o.jump == 0);
    assert_eq!(o.now, REAL + 1_000);
    assert_eq!(t.status()["synchronised"], false);
    assert_eq!(t.status()["trusted"], true);
}

#[test]
fn the_test_clock_file_reads_offset_and_sync_state_and_anything_else_as_unsynchronised() {
    assert_eq!(parse_test_clock("-10800000 1\n"), (-10_800_000, true));
    assert_eq!(parse_test_clock("5 0"), (5, false));
    for bad in ["", "x 1", "5", "\n"] {
        assert_eq!(parse_test_clock(bad), (0, false), "{bad:?}");
    }
}

#[test]
fn the_timesyncd_probe_says_unknown_without_its_directory_and_synchronised_with_its_file() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("timesync").join("synchronized");
    let probe = SyncProbe::File(file.clone());
    assert_eq!(probe.read(), (0, None), "no timesyncd");
    std::fs::create_dir(dir.path().join("timesync")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        probe.read(),
        (0, Some(false)),
        "timesyncd, not synchronised yet"
    );
    std::fs::write(&file, "").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(probe.read(), (0, Some(true)));
    assert_eq!((probe.name(true), probe.name(false)), ("timesyncd", "none"));
}

#[test]
fn status_and_metrics_say_an_unsynchronised_clock_is_holding_readings() {
    let t = Tracker::new(s(0, H, false));
    let mut clock = t.status();
    clock["sync_source"] = json!("timesyncd");
    clock["held_readings"] = json!(42);
    let doc = json!({"running": true, "now_ms": 0, "clock": clock});
    let text = crate::control::render::render(&doc);
    assert!(
        text.contains(
            "clock     NOT SYNCHRONISED (timesyncd): nothing is quarantined, 42 readings held"
        ),
        "{text}"
    );
    let prom = crate::control::prom::render(&doc);
    for line in [
        "weir_clock_synchronised 0\n",
        "weir_clock_trusted 0\n",
        "weir_clock_held_readings 42\n",
    ] {
        assert!(prom.contains(line), "{line} in {prom}");
    }
    // Synchronised, then the system clock steps 3 h back: said, not followed.
    let mut t = Tracker::new(s(0, REAL, true));
    t.observe(s(1_000, REAL + 1_000 - 3 * H, true));
    let mut clock = t.status();
    clock["sync_source"] = json!("timesyncd");
    let text = crate::control::render::render(&json!({"running": true, "clock": clock}));
    assert!(
        text.contains("synchronised (timesyncd); the system clock STEPPED -3h"),
        "{text}"
    );
}

#[test]
fn a_provisional_stamp_marks_its_reading_unsynced() {
    let p = Stamp {
        ms: 5,
        synced: false,
    };
    assert_eq!(p.source(TsSource::Event), TsSource::Unsynced);
    assert_eq!(
        Stamp::trusted(5).source(TsSource::Arrival),
        TsSource::Arrival
    );
    assert_eq!(p.minus(3).ms, 2);
}

fn reading(ts: i64, source: TsSource) -> crate::reading::Reading {
    crate::reading::Reading::new(crate::reading::Key::new("s", "m"), 1.0, ts, source)
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_hold_keeps_provisional_readings_in_order_and_releases_them_corrected_and_marked() {
    let mut h = Hold::new(10);
    assert_eq!(
        h.admit(reading(5, TsSource::Event), None),
        Admitted::Ready(reading(5, TsSource::Event)),
        "a device's own timestamp is never held"
    );
    for ts in [1, 2, 3] {
        assert_eq!(
            h.admit(reading(ts, TsSource::Unsynced), None),
            Admitted::Held { evicted: None }
        );
    }
    // The correction is known, but older readings are still held: this one
    // waits behind them, so the order is kept.
    assert!(matches!(
        h.admit(reading(4, TsSource::Unsynced), Some(100)),
        Admitted::Held { evicted: None }
    ));
    let out: Vec<_> = h.release(100).map(|r| (r.ts, r.ts_source)).collect();
    assert_eq!(out, [101, 102, 103, 104].map(|t| (t, TsSource::Corrected)));
    assert!(h.is_empty());
    assert_eq!(
        h.admit(reading(6, TsSource::Unsynced), Some(100)),
        Admitted::Ready(reading(106, TsSource::Corrected))
    );
}

#[test]
fn a_full_hold_evicts_its_oldest_reading_for_the_caller_to_publish() {
    let mut h = Hold::new(2);
    h.admit(reading(1, TsSource::Unsynced), None);
    h.admit(reading(2, TsSource::Unsynced), None);
    assert_eq!(
        h.admit(reading(3, TsSource::Unsynced), None),
        Admitted::Held {
            evicted: Some(reading(1, TsSource::Unsynced))
        }
    );
    assert_eq!(h.len(), 2);
    let left: Vec<i64> = h.give_up().map(|r| r.ts).collect();
    assert_eq!(left, [2, 3]);
}

/// Applies `c` to a stored copy as the outbox would, in one transaction.
fn apply(stored: &mut Vec<(i64, Vec<u8>)>, c: &HoldChanges) {
    if let Some(below) = c.delete_below {
        stored.retain(|(seq, _)| *seq >= below);
    }
    stored.extend(c.added.iter().cloned());
    stored.sort_by_key(|(seq, _)| *seq);
}

#[test]
fn the_stored_hold_follows_the_hold_and_comes_back_in_the_same_boot_only() {
    const BOOT: u64 = 7;
    let mut stored = Vec::new();
    let mut h = Hold::new(3);
    for ts in [1, 2] {
        h.admit(reading(ts, TsSource::Unsynced), None);
    }
    let c = h.changes(BOOT);
    assert_eq!((c.added.len(), c.delete_below), (2, None));
    apply(&mut stored, &c);
    h.committed();
    assert_eq!(
        h.changes(BOOT),
        HoldChanges::default(),
        "nothing new: no write"
    );
    // Two more: the hold is full, the oldest is evicted (and published by the caller).
    h.admit(reading(3, TsSource::Unsynced), None);
    h.admit(reading(4, TsSource::Unsynced), None);
    let c = h.changes(BOOT);
    assert_eq!(c.added.len(), 2);
    assert_eq!(c.delete_below, Some(2), "the evicted reading goes");
    apply(&mut stored, &c);
    h.committed();
    // A restart of this boot holds exactly what the hold held, in order, and
    // goes on numbering after it.
    let (mut back, other, damaged) = Hold::restore(3, &stored, BOOT);
    assert_eq!((other.len(), damaged), (0, 0));
    assert_eq!(back.give_up().map(|r| r.ts).collect::<Vec<_>>(), [2, 3, 4]);
    let (mut back, _, _) = Hold::restore(4, &stored, BOOT);
    back.admit(reading(5, TsSource::Unsynced), None);
    let c = back.changes(BOOT);
    assert_eq!(c.added.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [5]);
    // The release empties the stored hold at the next checkpoint.
    let n = back.release(10).count();
    assert_eq!(n, 4);
    let c = back.changes(BOOT);
    apply(&mut stored, &c);
    back.committed();
    assert!(stored.is_empty(), "{stored:?}");
    // After a reboot the provisional stamps mean nothing: returned apart, uncorrected.
    let mut h = Hold::new(3);
    for ts in [3, 4, 9] {
        h.admit(reading(ts, TsSource::Unsynced), None);
    }
    let mut stored = Vec::new();
    apply(&mut stored, &h.changes(BOOT));
    let (back, other, _) = Hold::restore(3, &stored, BOOT + 1);
    assert!(back.is_empty());
    assert_eq!(other.iter().map(|r| r.ts).collect::<Vec<_>>(), [3, 4, 9]);
    assert!(other.iter().all(|r| r.ts_source == TsSource::Unsynced));
    // A boot id that could not be read (0) is never taken for this boot's.
    let (back, _, _) = Hold::restore(3, &stored, 0);
    assert!(back.is_empty());
}

#[test]
fn readings_held_while_a_commit_is_in_flight_go_with_the_next_one() {
    const BOOT: u64 = 7;
    let mut stored = Vec::new();
    let mut h = Hold::new(8);
    for ts in [1, 2] {
        h.admit(reading(ts, TsSource::Unsynced), None);
    }
    // Taken when the commit starts; it answers after two more readings were held.
    let c = h.changes(BOOT);
    let mark = h.mark();
    apply(&mut stored, &c);
    for ts in [3, 4] {
        h.admit(reading(ts, TsSource::Unsynced), None);
    }
    h.committed_at(mark);
    let c = h.changes(BOOT);
    assert_eq!(c.added.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [3, 4]);
    apply(&mut stored, &c);
    h.committed();
    let (mut back, _, _) = Hold::restore(8, &stored, BOOT);
    assert_eq!(
        back.give_up().map(|r| r.ts).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
}
