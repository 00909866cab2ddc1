#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::path::PathBuf;

use rusqlite::OpenFlags;
use tempfile::TempDir;

use super::store::{CLASS_BYTES_SQL, EVICT_SCAN_SQL, PENDING_SQL};
use super::*;

fn config(dir: &TempDir, max_bytes: u64) -> OutboxConfig {
    OutboxConfig {
        path: dir.path().join("outbox.db"),
        max_bytes,
    }
}

fn open(dir: &TempDir, max_bytes: u64) -> Outbox {
    Outbox::open(&config(dir, max_bytes)).unwrap()
}

/// A message costing exactly `bytes` (topic "t" + payload).
fn msg(class: Class, bytes: usize, key: Option<&str>, created_ms: i64) -> NewMessage {
    NewMessage {
        class,
        topic: "t".to_owned(),
        payload: vec![b'x'; bytes - 1],
        supersede_key: key.map(str::to_owned),
        created_ms,
    }
}

fn all(outbox: &Outbox) -> Vec<Row> {
    outbox.pending(&HashSet::new(), usize::MAX).unwrap()
}

fn ids(rows: &[Row]) -> Vec<i64> {
    rows.iter().map(|r| r.id).collect()
}

fn classes(rows: &[Row]) -> Vec<Class> {
    rows.iter().map(|r| r.class).collect()
}

use Class::{Aggregate as Agg, Alert, Diagnostic as Diag};

#[test]
fn pending_returns_alerts_then_aggregates_then_diagnostics_oldest_first() {
    let dir = TempDir::new().unwrap();
    let mut ob = open(&dir, 1 << 20);
    let r = ob
        .insert(&[
            msg(Diag, 10, None, 1),
            msg(Agg, 10, None, 2),
            msg(Alert, 10, None, 3),
            msg(Agg, 10, None, 4),
            msg(Alert, 10, None, 5),
        ])
        .unwrap();
    assert_eq!(r.ids, vec![1, 2, 3, 4, 5]);
    let rows = all(&ob);
    assert_eq!(ids(&rows), vec![3, 5, 2, 4, 1]);
    assert_eq!(classes(&rows), vec![Alert, Alert, Agg, Agg, Diag]);
    assert_eq!(rows[0].created_ms, 3);
    assert_eq!(rows[0].topic, "t");
    assert_eq!(rows[0].payload.len(), 9);
}

#[test]
fn pending_skips_excluded_ids_and_still_fills_the_limit() {
    let dir = TempDir::new().unwrap();
    let mut ob = open(&dir, 1 << 20);
    ob.insert(&(0..6).map(|i| msg(Agg, 10, None, i)).collect::<Vec<_>>())
        .unwrap();
    let exclude: HashSet<i64> = [1, 2, 4].into_iter().collect();
    assert_eq!(ids(&ob.pending(&exclude, 2).unwrap()), vec![3, 5]);
    assert_eq!(ids(&ob.pending(&exclude, 10).unwrap()), vec![3, 5, 6]);
    assert!(ob.pending(&HashSet::new(), 0).unwrap().is_empty());
}

#[test]
fn ack_deletes_the_rows_and_counts_only_those_that_existed() {
    let dir = TempDir::new().unwrap();
    let mut ob = open(&dir, 1 << 20);
    ob.insert(&(0..4).map(|i| msg(Alert, 10, None, i)).collect::<Vec<_>>())
        .unwrap();
    assert_eq!(ob.ack(&[2, 3, 99]).unwrap(), 2);
    assert_eq!(ids(&all(&ob)), vec![1, 4]);
    assert_eq!(ob.total_bytes(), 20);
}

#[test]
fn acking_the_same_ids_again_deletes_nothing() {
    let dir = TempDir::new().unwrap();
    let mut ob = open(&dir, 1 << 20);
    ob.insert(&[msg(Alert, 10, None, 0), msg(Alert, 10, None, 1)])
        .unwrap();
    assert_eq!(ob.ack(&[1]).unwrap(), 1);
    assert_eq!(ob.ack(&[1]).unwrap(), 0);
    assert_eq!(ob.ack(&[1, 1]).unwrap(), 0);
    assert_eq!(ob.ack(&[]).unwrap(), 0);
    assert_eq!(ids(&all(&ob)), vec![2]);
    assert_eq!(ob.total_bytes(), 10);
}

#[test]
fn a_message_supersedes_older_rows_with_its_key_and_no_others() {
    let dir = TempDir::new().unwrap();
    let mut ob = open(&dir, 1 << 20);
    ob.insert(&[
        msg(Agg, 10, Some("w1"), 0),
        msg(Agg, 10, Some("w2"), 1),
        msg(Agg, 10, None, 2),
        msg(Agg, 10, Some("w1"), 3),
    ])
    .unwrap();
    // Rows 1 and 4 both carry w1: within one batch the later one wins too.
    assert_eq!(ids(&all(&ob)), vec![2, 3, 4]);
    let r = ob.insert(&[msg(Agg, 20, Some("w2"), 4)]).unwrap();
    assert_eq!(r.superseded, 1);
    assert_eq!(r.ids, vec![5]);
    assert_eq!(ids(&all(&ob)), vec![3, 4, 5]);
    assert_eq!(ob.total_bytes(), 40);
}

#[test]
fn a_row_superseded_within_its_own_batch_is_not_reported_as_stored() {
    let dir = TempDir::new().unwrap();
    let mut ob = open(&dir, 1 << 20);
    let r = ob
        .insert(&[msg(Agg, 10, Some("w"), 0), msg(Agg, 10, Some("w"), 1)])
        .unwrap();
    assert_eq!(r.ids, vec![2]);
    assert_eq!(r.superseded, 1);
}

#[test]
fn rows_survive_closing_and_reopening_the_file() {
    let dir = TempDir::new().unwrap();
    {
        let mut ob = open(&dir, 1 << 20);
        ob.insert(&[msg(Alert, 10, None, 7), msg(Diag, 30, Some("k"), 8)])
            .unwrap();
    }
    let mut ob = open(&dir, 1 << 20);
    let rows = all(&ob);
    assert_eq!(ids(&rows), vec![1, 2]);
    assert_eq!(rows[1].created_ms, 8);
    assert_eq!(ob.total_bytes(), 40);
    // The key index survived as well.
    assert_eq!(
        ob.insert(&[msg(Diag, 5, Some("k"), 9)]).unwrap().superseded,
        1
    );
}

#[test]
fn committed_rows_survive_a_connection_that_never_closed() {
    let dir = TempDir::new().unwrap();
    let mut first = open(&dir, 1 << 20);
    first.insert(&[msg(Alert, 10, None, 0)]).unwrap();
    // Like kill -9: no close, no WAL checkpoint; the commit lives only in the WAL.
    std::mem::forget(first);
    let ob = open(&dir, 1 << 20);
    assert_eq!(ids(&all(&ob)), vec![1]);
}

#[test]
fn ids_are_never_reused_after_the_newest_row_is_acked_or_reopened() {
    let dir = TempDir::new().unwrap();
    {
        let mut ob = open(&dir, 1 << 20);
        ob.insert(&[msg(Alert, 10, None, 0), msg(Alert, 10, None, 1)])
            .unwrap();
        ob.ack(&[1, 2]).unwrap();
    }
    let mut ob = open(&dir, 1 << 20);
    assert_eq!(ob.insert(&[msg(Alert, 10, None, 2)]).unwrap().ids, vec![3]);
}

#[test]
fn eviction_takes_the_oldest_diagnostics_then_aggregates_then_alerts() {
    let dir = TempDir::new().unwrap();
    let mut ob = open(&dir, 100);
    ob.insert(&[
        msg(Alert, 20, None, 0), // 1
        msg(Diag, 20, None, 1),  // 2
        msg(Agg, 20, None, 2),   // 3
        msg(Diag, 20, None, 3),  // 4
        msg(Agg, 20, None, 4),   // 5
    ])
    .unwrap();
    assert_eq!(ob.total_bytes(), 100);
    // Needs 50 bytes: both diagnostics (40), then the oldest aggregate.
    let r = ob.insert(&[msg(Alert, 50, None, 5)]).unwrap();
    assert_eq!(r.evicted, [0, 1, 2]);
    assert_eq!(r.ids, vec![6]);
    assert_eq!(ids(&all(&ob)), vec![1, 6, 5]);
    assert_eq!(ob.total_bytes(), 90);
    // Needs 70: the last aggregate, then the oldest alert, then the next one.
    let r = ob.insert(&[msg(Alert, 80, None, 6)]).unwrap();
    assert_eq!(r.evicted, [2, 1, 0]);
    assert_eq!(ids(&all(&ob)), vec![7]);
    assert_eq!(ob.total_bytes(), 80);
}

#[test]
fn a_batch_row_is_evicted_only_after_every_older_row_of_its_class() {
    let dir = TempDir::new().unwrap();
    let mut ob = open(&dir, 50);
    ob.insert(&[msg(Diag, 20, None, 0), msg(Diag, 20, None, 1)])
        .unwrap();
    let batch: Vec<_> = (0..4).map(|i| msg(Diag, 20, None, 10 + i)).collect();
    let r = ob.insert(&batch).unwrap();
    // Two old rows go first, then the batch's own oldest ones.
    assert_eq!(r.evicted, [0, 0, 4]);
    assert_eq!(r.ids, vec![5, 6]);
    assert_eq!(ids(&all(&ob)), vec![5, 6]);
    assert_eq!(ob.total_bytes(), 40);
}

#[test]
fn a_diagnostic_never_evicts_an_alert_and_is_dropped_instead() {
    let dir = TempDir::new().unwrap();
    let mut ob = open(&dir, 100);
    ob.insert(&[msg(Alert, 60, None, 0), msg(Diag, 30, Some("d"), 1)])
        .unwrap();
    let r = ob.insert(&[msg(Diag, 50, Some("d"), 2)]).unwrap();
    assert_eq!(r.ids, Vec::<i64>::new());
    assert_eq!(r.evicted, [0, 0, 1]);
    // Dropped whole: it did not delete its older revision either.
    assert_eq!(r.superseded, 0);
    assert_eq!(ids(&all(&ob)), vec![1, 2]);
    // A diagnostic that fits once older diagnostics go is stored.
    let r = ob.insert(&[msg(Diag, 40, None, 3)]).unwrap();
    assert_eq!(r.evicted, [0, 0, 1]);
    // The dropped message took no id.
    assert_eq!(ids(&all(&ob)), vec![1, 3]);
}

#[test]
fn a_message_bigger_than_the_whole_budget_is_dropped_and_counted() {
    let dir = TempDir::new().unwrap();
    let mut ob = open(&dir, 100);
    ob.insert(&[msg(Agg, 50, Some("w"), 0)]).unwrap();
    let r = ob
        .insert(&[msg(Alert, 101, None, 1), msg(Agg, 101, Some("w"), 2)])
        .unwrap();
    assert_eq!(r.ids, Vec::<i64>::new());
    assert_eq!(r.evicted, [1, 1, 0]);
    assert_eq!(r.superseded, 0);
    assert_eq!(ids(&all(&ob)), vec![1]);
    // Exactly the budget fits.
    let r = ob.insert(&[msg(Alert, 100, None, 3)]).unwrap();
    assert_eq!(r.evicted, [0, 1, 0]);
    assert_eq!(ob.total_bytes(), 100);
}

#[test]
fn total_bytes_is_rebuilt_from_the_file_and_a_smaller_budget_trims_on_next_insert() {
    let dir = TempDir::new().unwrap();
    {
        let mut ob = open(&dir, 1000);
        ob.insert(&(0..5).map(|i| msg(Diag, 100, None, i)).collect::<Vec<_>>())
            .unwrap();
    }
    let mut ob = open(&dir, 250);
    assert_eq!(ob.total_bytes(), 500);
    let r = ob.insert(&[msg(Alert, 50, None, 9)]).unwrap();
    assert_eq!(r.evicted, [0, 0, 3]);
    assert_eq!(ob.total_bytes(), 250);
}

#[test]
fn stats_count_rows_bytes_and_the_oldest_creation_time_per_class() {
    let dir = TempDir::new().unwrap();
    let mut ob = open(&dir, 1 << 20);
    assert_eq!(ob.stats().unwrap(), <[ClassStats; 3]>::default());
    ob.insert(&[
        msg(Agg, 10, None, 500),
        msg(Agg, 30, None, 400),
        msg(Diag, 5, None, 900),
    ])
    .unwrap();
    let s = ob.stats().unwrap();
    assert_eq!(s[Alert.index()], ClassStats::default());
    assert_eq!(
        s[Agg.index()],
        ClassStats {
            rows: 2,
            bytes: 40,
            oldest_created_ms: Some(400)
        }
    );
    assert_eq!(
        s[Diag.index()],
        ClassStats {
            rows: 1,
            bytes: 5,
            oldest_created_ms: Some(900)
        }
    );
}

#[test]
fn a_file_of_garbage_bytes_is_corrupt_and_the_error_names_the_file() {
    let dir = TempDir::new().unwrap();
    let cfg = config(&dir, 1000);
    let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 31 + 7) as u8).collect();
    std::fs::write(&cfg.path, garbage).unwrap();
    let err = Outbox::open(&cfg).err().unwrap();
    assert!(matches!(err, OutboxError::Corrupt { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&cfg.path.display().to_string()), "{text}");
    assert!(text.contains("move the file aside"), "{text}");
}

#[test]
fn a_file_that_can_only_be_opened_read_only_is_refused_as_read_only() {
    // Root ignores file modes, so ask SQLite for the read-only open it falls back to when the
    // OS refuses write access.
    let dir = TempDir::new().unwrap();
    let cfg = config(&dir, 1000);
    drop(Outbox::open(&cfg).unwrap());
    let err = Outbox::open_with_flags(&cfg, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .err()
        .unwrap();
    assert!(matches!(err, OutboxError::ReadOnly { .. }), "{err:?}");
    assert!(err.to_string().contains("outbox.db"));
}

#[cfg(target_os = "linux")]
#[test]
fn a_directory_nobody_may_write_gives_open_naming_the_file() {
    // /proc refuses new files even to root.
    let path = PathBuf::from("/proc/weir-outbox-test.db");
    let err = Outbox::open(&OutboxConfig {
        path: path.clone(),
        max_bytes: 1000,
    })
    .err()
    .unwrap();
    assert!(matches!(err, OutboxError::Open { .. }), "{err:?}");
    assert!(err.to_string().contains("/proc/weir-outbox-test.db"));
}

#[test]
fn a_missing_directory_gives_open() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("no-such-dir").join("outbox.db");
    let err = Outbox::open(&OutboxConfig {
        path,
        max_bytes: 1000,
    })
    .err()
    .unwrap();
    assert!(matches!(err, OutboxError::Open { .. }), "{err:?}");
    assert!(err.to_string().contains("permissions"));
}

#[test]
fn a_newer_schema_version_is_refused() {
    let dir = TempDir::new().unwrap();
    let cfg = config(&dir, 1000);
    {
        let ob = Outbox::open(&cfg).unwrap();
        ob.conn
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    let err = Outbox::open(&cfg).err().unwrap();
    assert!(
        matches!(
            err,
            OutboxError::NewerSchema {
                found: 5,
                supported: 4,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn the_file_is_in_wal_mode_with_normal_sync_and_the_schema_version() {
    let dir = TempDir::new().unwrap();
    let ob = open(&dir, 1000);
    let q = |p: &str| -> String {
        ob.conn
            .query_row(&format!("PRAGMA {p}"), [], |r| {
                r.get::<_, rusqlite::types::Value>(0)
            })
            .map(|v| format!("{v:?}"))
            .unwrap()
    };
    assert_eq!(q("journal_mode"), r#"Text("wal")"#);
    assert_eq!(q("synchronous"), "Integer(1)");
    assert_eq!(q("user_version"), "Integer(4)");
    assert!(ob.verify().is_ok());
}

#[test]
fn a_version_1_file_keeps_its_rows_and_gains_the_checkpoint_tables() {
    let dir = TempDir::new().unwrap();
    let cfg = config(&dir, 1 << 20);
    {
        let mut ob = Outbox::open(&cfg).unwrap();
        ob.insert(&[msg(Class::Alert, 10, None, 1)]).unwrap();
        // What weir 0.1 left behind: the outbox table alone, at version 1.
        ob.conn
            .execute_batch(
                "DROP TABLE checkpoint_meta; DROP TABLE checkpoint_key; PRAGMA user_version = 1;",
            )
            .unwrap();
    }
    let mut ob = Outbox::open(&cfg).unwrap();
    assert_eq!(ob.stats().unwrap()[0].rows, 1);
    assert_eq!(ob.load_checkpoint().unwrap(), None);
    let cp = Checkpoint {
        taken_ms: 5,
        meta: vec![1, 2],
        keys: vec![("s".into(), "m".into(), Some(vec![3]))],
        seen: vec![(7, u64::MAX)],
        held: Some(vec![7, 8]),
        topics: Some(vec![(3, u64::MAX), (u64::MAX - 4, 1 << 63)]),
        hold: vec![(3, vec![1]), (4, vec![2])],
        hold_delete_below: None,
    };
    ob.commit(&[], Some(&cp)).unwrap();
    let stored = ob.load_checkpoint().unwrap().unwrap();
    assert_eq!(
        stored.seen,
        [(7, u64::MAX)],
        "a fingerprint round-trips bit for bit"
    );
    assert_eq!(stored.held, [7, 8]);
    assert_eq!(stored.topics, [(3, u64::MAX), (u64::MAX - 4, 1 << 63)]);
    assert_eq!(stored.hold, [(3, vec![1]), (4, vec![2])]);
    // A record is replaced whole, or kept when `None`; held readings below a number go.
    let cp2 = Checkpoint {
        held: Some(vec![8]),
        topics: None,
        hold: vec![(5, vec![3])],
        hold_delete_below: Some(4),
        ..cp.clone()
    };
    ob.commit(&[], Some(&cp2)).unwrap();
    let stored = ob.load_checkpoint().unwrap().unwrap();
    assert_eq!(stored.held, [8]);
    assert_eq!(stored.topics, [(3, u64::MAX), (u64::MAX - 4, 1 << 63)]);
    assert_eq!(stored.hold, [(4, vec![2]), (5, vec![3])]);
    assert_eq!(
        (stored.taken_ms, stored.meta, stored.keys),
        (5, vec![1, 2], vec![("s".into(), "m".into(), vec![3])])
    );
}

#[test]
fn a_failed_commit_writes_neither_the_rows_nor_the_checkpoint() {
    let dir = TempDir::new().unwrap();
    let mut ob = open(&dir, 1 << 20);
    let cp = Checkpoint {
        taken_ms: 5,
        meta: vec![1],
        keys: vec![("s".into(), "m".into(), Some(vec![3]))],
        seen: vec![(7, u64::MAX)],
        held: None,
        topics: None,
        hold: Vec::new(),
        hold_delete_below: None,
    };
    // A trigger makes the checkpoint write fail after the rows were inserted.
    ob.conn
        .execute_batch("CREATE TRIGGER no_cp BEFORE INSERT ON checkpoint_meta BEGIN SELECT RAISE(ABORT, 'refused'); END;")
        .unwrap();
    assert!(
        ob.commit(&[msg(Class::Aggregate, 10, None, 1)], Some(&cp))
            .is_err()
    );
    assert_eq!(
        ob.stats().unwrap()[1].rows,
        0,
        "the rows rolled back with the checkpoint"
    );
    assert_eq!(ob.total_bytes(), 0);
    assert_eq!(ob.load_checkpoint().unwrap(), None);
}

#[test]
fn a_full_disk_fails_the_insert_with_disk_full_and_keeps_the_rows() {
    let dir = TempDir::new().unwrap();
    let mut ob = open(&dir, 1 << 20);
    ob.insert(&[msg(Alert, 100, None, 0), msg(Agg, 100, None, 1)])
        .unwrap();
    let pages: i64 = ob
        .conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    // SQLite's page limit stands in for a full filesystem: both fail with SQLITE_FULL.
    ob.conn
        .pragma_update(None, "max_page_count", pages)
        .unwrap();
    let err = ob
        .insert(&[msg(Agg, 10, None, 2), msg(Diag, 64 * 1024, None, 3)])
        .err()
        .unwrap();
    assert!(matches!(err, OutboxError::DiskFull { .. }), "{err:?}");
    assert_eq!(ids(&all(&ob)), vec![1, 2]);
    assert_eq!(ob.total_bytes(), 200);
    ob.conn
        .pragma_update(None, "max_page_count", 1 << 20)
        .unwrap();
    let r = ob.insert(&[msg(Diag, 64 * 1024, None, 3)]).unwrap();
    assert_eq!(r.ids.len(), 1);
    assert_eq!(ob.total_bytes(), 200 + 64 * 1024);
}

fn plan(ob: &Outbox, sql: &str) -> String {
    let mut stmt = ob
        .conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .unwrap();
    let details: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    details.join(" | ")
}

#[test]
fn pending_walks_the_class_id_index_without_sorting() {
    let dir = TempDir::new().unwrap();
    let ob = open(&dir, 1000);
    let p = plan(&ob, PENDING_SQL);
    assert!(p.contains("USING INDEX outbox_class_id"), "{p}");
    assert!(!p.contains("TEMP B-TREE"), "{p}");
}

#[test]
fn supersede_lookups_use_the_key_index() {
    let dir = TempDir::new().unwrap();
    let ob = open(&dir, 1000);
    let p = plan(
        &ob,
        "SELECT id, class, bytes FROM outbox WHERE supersede_key = 'k'",
    );
    assert!(p.contains("USING INDEX outbox_supersede_key"), "{p}");
}

#[test]
fn eviction_scans_and_byte_sums_read_only_the_covering_index() {
    let dir = TempDir::new().unwrap();
    let ob = open(&dir, 1000);
    for sql in [
        EVICT_SCAN_SQL.replace("?1", "2"),
        CLASS_BYTES_SQL.to_owned(),
    ] {
        let p = plan(&ob, &sql);
        assert!(
            p.contains("USING COVERING INDEX outbox_class_id"),
            "{sql}: {p}"
        );
        assert!(!p.contains("TEMP B-TREE"), "{sql}: {p}");
    }
}

#[cfg(unix)]
#[test]
fn a_write_protected_file_or_directory_is_refused_where_permissions_apply() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new().unwrap();
    let cfg = config(&dir, 1000);
    drop(Outbox::open(&cfg).unwrap());
    std::fs::set_permissions(&cfg.path, std::fs::Permissions::from_mode(0o444)).unwrap();
    let privileged = std::fs::OpenOptions::new()
        .write(true)
        .open(&cfg.path)
        .is_ok();
    if privileged {
        // Root (as in CI containers) writes anyway: covered by the read-only-flag and /proc
        // tests above instead.
        return;
    }
    let err = Outbox::open(&cfg).err().unwrap();
    assert!(matches!(err, OutboxError::ReadOnly { .. }), "{err:?}");
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    let err = Outbox::open(&OutboxConfig {
        path: locked.join("outbox.db"),
        max_bytes: 1000,
    })
    .err()
    .unwrap();
    assert!(matches!(err, OutboxError::Open { .. }), "{err:?}");
}

#[test]
fn rows_older_than_their_class_cutoff_expire_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = Outbox::open(&OutboxConfig {
        path: dir.path().join("o.db"),
        max_bytes: 1 << 20,
    })
    .unwrap();
    let msg = |class, created_ms| NewMessage {
        class,
        topic: "t".into(),
        payload: vec![0; 10],
        supersede_key: None,
        created_ms,
    };
    ob.insert(&[
        msg(Class::Alert, 100),
        msg(Class::Aggregate, 100),
        msg(Class::Aggregate, 300),
        msg(Class::Diagnostic, 100),
    ])
    .unwrap();
    let before = ob.total_bytes();
    // Alerts never expire here; aggregates older than 200; diagnostics older than 50 (none).
    let expired = ob.expire([None, Some(200), Some(50)]).unwrap();
    assert_eq!(expired, [0, 1, 0]);
    assert_eq!(
        ob.total_bytes(),
        before - 11,
        "byte accounting follows the deletion"
    );
    let left: Vec<(Class, i64)> = ob
        .pending(&HashSet::new(), 10)
        .unwrap()
        .iter()
        .map(|r| (r.class, r.created_ms))
        .collect();
    assert_eq!(
        left,
        vec![
            (Class::Alert, 100),
            (Class::Aggregate, 300),
            (Class::Diagnostic, 100)
        ]
    );
    assert_eq!(ob.expire([None, None, None]).unwrap(), [0, 0, 0]);
}

/// Rows in the file itself, whatever memory says.
fn stored_ids(ob: &Outbox) -> Vec<i64> {
    let mut stmt = ob
        .conn
        .prepare("SELECT id FROM outbox ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// What a killed process leaves: the database and its WAL as they are now.
fn crash_copy(ob: &Outbox, dir: &TempDir) -> OutboxConfig {
    let to = dir.path().join("crashed.db");
    std::fs::copy(ob.path(), &to).unwrap();
    let wal = format!("{}-wal", ob.path().display());
    if std::path::Path::new(&wal).exists() {
        std::fs::copy(&wal, format!("{}-wal", to.display())).unwrap();
    }
    OutboxConfig {
        path: to,
        max_bytes: 1 << 20,
    }
}

#[test]
fn a_staged_row_is_pending_at_once_and_if_acknowledged_before_the_next_write_never_reaches_the_file()
 {
    let dir = TempDir::new().unwrap();
    let mut ob = open(&dir, 1 << 20);
    ob.insert(&[msg(Agg, 10, None, 1)]).unwrap();
    let before = ob.commits;
    let r = ob
        .stage(vec![msg(Alert, 10, None, 2), msg(Agg, 10, None, 3)])
        .unwrap();
    assert_eq!(r.ids, vec![2, 3]);
    assert_eq!(r.staged, (2, 20));
    // Pending in priority order with the stored row, nothing written.
    assert_eq!(ids(&all(&ob)), vec![2, 1, 3]);
    assert_eq!(stored_ids(&ob), vec![1]);
    assert_eq!(ob.ack(&[2]).unwrap(), 1);
    assert_eq!(ob.ack(&[2]).unwrap(), 0);
    assert_eq!(ids(&all(&ob)), vec![1, 3]);
    ob.commit(&[], Some(&Checkpoint::default())).unwrap();
    assert_eq!(ob.commits - before, 1);
    assert_eq!(stored_ids(&ob), vec![1, 3]);
    assert_eq!(ob.staged_rows(), 0);
}

#[test]
fn a_staged_row_is_written_by_the_next_commit_under_the_id_it_was_delivered_with_and_ids_go_on_after_a_reopen()
 {
    let dir = TempDir::new().unwrap();
    let mut ob = open(&dir, 1 << 20);
    ob.stage(vec![msg(Agg, 10, None, 1), msg(Agg, 10, None, 2)])
        .unwrap();
    ob.ack(&[1]).unwrap();
    let r = ob.commit(&[msg(Agg, 10, None, 3)], None).unwrap();
    assert_eq!(r.ids, vec![2, 3]);
    drop(ob);
    let mut ob = open(&dir, 1 << 20);
    assert_eq!(ids(&all(&ob)), vec![2, 3]);
    assert_eq!(ob.stage(vec![msg(Agg, 10, None, 4)]).unwrap().ids, vec![4]);
}

#[test]
fn an_acknowledged_row_is_not_pending_and_comes_back_after_a_crash_before_its_deletion_is_written()
{
    let dir = TempDir::new().unwrap();
    let mut ob = open(&dir, 1 << 20);
    ob.insert(&[msg(Agg, 10, None, 1), msg(Agg, 10, None, 2)])
        .unwrap();
    assert_eq!(ob.ack(&[1]).unwrap(), 1);
    assert_eq!(ids(&all(&ob)), vec![2]);
    assert_eq!(ob.total_bytes(), 10);
    assert_eq!(ob.stats().unwrap()[Agg.index()].rows, 1);
    // Killed now: the deletion was never written, so the row is sent again (a duplicate).
    let crashed = Outbox::open(&crash_copy(&ob, &dir)).unwrap();
    assert_eq!(ids(&all(&crashed)), vec![1, 2]);
    drop(crashed);
    // The next write carries the deletion.
    ob.commit(&[], Some(&Checkpoint::default())).unwrap();
    assert_eq!(stored_ids(&ob), vec![2]);
    let crashed = Outbox::open(&crash_copy(&ob, &dir)).unwrap();
    assert_eq!(ids(&all(&crashed)), vec![2]);
}

#[test]
fn acknowledged_rows_are_deleted_on_their_own_once_too_many_wait() {
    let dir = TempDir::new().unwrap();
    let mut ob = open(&dir, 1 << 30);
    let n = super::memory::MAX_DELIVERED as i64;
    ob.insert(&(0..n).map(|i| msg(Agg, 10, None, i)).collect::<Vec<_>>())
        .unwrap();
    let before = ob.commits;
    let ids: Vec<i64> = (1..n).collect();
    ob.ack(&ids).unwrap();
    assert_eq!(ob.commits, before, "below the bound nothing is written");
    ob.ack(&[n]).unwrap();
    assert_eq!(ob.commits - before, 1);
    assert!(stored_ids(&ob).is_empty());
}

#[test]
fn a_staged_revision_supersedes_the_older_stored_and_staged_ones_at_once() {
    let dir = TempDir::new().unwrap();
    let mut ob = open(&dir, 1 << 20);
    ob.insert(&[msg(Agg, 10, Some("w"), 1)]).unwrap();
    let r = ob.stage(vec![msg(Agg, 11, Some("w"), 2)]).unwrap();
    assert_eq!((r.ids.clone(), r.superseded), (vec![2], 1));
    let r = ob.stage(vec![msg(Agg, 12, Some("w"), 3)]).unwrap();
    assert_eq!((r.ids.clone(), r.superseded), (vec![3], 1));
    assert_eq!(ids(&all(&ob)), vec![3]);
    assert_eq!(ob.total_bytes(), 0, "the stored revision no longer counts");
    ob.commit(&[], Some(&Checkpoint::default())).unwrap();
    assert_eq!(stored_ids(&ob), vec![3]);
    assert_eq!(ob.total_bytes(), 12);
}

#[test]
fn stats_count_staged_rows_and_leave_out_the_acknowledged_ones() {
    let dir = TempDir::new().unwrap();
    let mut ob = open(&dir, 1 << 20);
    ob.insert(&[msg(Alert, 10, None, 5), msg(Agg, 10, None, 6)])
        .unwrap();
    ob.stage(vec![msg(Agg, 20, None, 3)]).unwrap();
    ob.ack(&[1]).unwrap();
    let s = ob.stats().unwrap();
    assert_eq!(s[Alert.index()], ClassStats::default());
    assert_eq!(
        s[Agg.index()],
        ClassStats {
            rows: 2,
            bytes: 30,
            oldest_created_ms: Some(3)
        }
    );
}

#[test]
fn a_commit_writes_the_rows_staged_before_its_first_attempt_and_leaves_later_ones_staged() {
    let dir = TempDir::new().unwrap();
    let mut ob = open(&dir, 1 << 20);
    ob.stage(vec![msg(Agg, 10, None, 1), msg(Agg, 10, None, 2)])
        .unwrap();
    // The batch's first attempt: rows below this go with it, even when retried later.
    let below = ob.next_id();
    ob.stage(vec![msg(Agg, 10, None, 3)]).unwrap();
    ob.commit_staged_below(&[], Some(&Checkpoint::default()), below)
        .unwrap();
    assert_eq!(stored_ids(&ob), vec![1, 2]);
    assert_eq!(ob.staged_rows(), 1, "staged after the state was taken");
    assert_eq!(ids(&all(&ob)), vec![1, 2, 3]);
    ob.commit(&[], Some(&Checkpoint::default())).unwrap();
    assert_eq!(stored_ids(&ob), vec![1, 2, 3]);
    assert_eq!(ob.staged_rows(), 0);
}

#[test]
fn a_version_3_file_has_its_ingest_rows_folded_into_blobs_at_open() {
    let dir = TempDir::new().unwrap();
    let cfg = config(&dir, 1 << 20);
    let cp = Checkpoint {
        taken_ms: 5,
        meta: vec![1, 2],
        keys: vec![("s".into(), "m".into(), Some(vec![3]))],
        seen: vec![(7, 9)],
        hold: vec![(3, vec![1])],
        ..Checkpoint::default()
    };
    {
        let mut ob = Outbox::open(&cfg).unwrap();
        ob.commit(&[msg(Class::Alert, 10, None, 1)], Some(&cp))
            .unwrap();
        // What version 3 left behind: QoS 2 ids (space 1) and topics (space 2) as rows,
        // ids from a u16 and values from a u64 stored bit for bit.
        ob.conn
            .execute_batch(
                "DROP TABLE checkpoint_blob;
                 CREATE TABLE checkpoint_ingest (
                     space INTEGER NOT NULL, id INTEGER NOT NULL, value INTEGER NOT NULL,
                     PRIMARY KEY (space, id)) WITHOUT ROWID;
                 INSERT INTO checkpoint_ingest VALUES
                     (1, 65535, 0), (1, 2, 0), (1, 40000, 0), (2, -5, -9223372036854775808),
                     (2, 7, 3);
                 PRAGMA user_version = 3;",
            )
            .unwrap();
    }
    let ob = Outbox::open(&cfg).unwrap();
    let stored = ob.load_checkpoint().unwrap().unwrap();
    assert_eq!(stored.held, [2, 40000, 65535]);
    assert_eq!(stored.topics, [(7, 3), ((-5i64) as u64, 1 << 63)]);
    assert_eq!(
        (stored.taken_ms, stored.seen, stored.hold),
        (5, vec![(7, 9)], vec![(3, vec![1])])
    );
    assert_eq!(ob.stats().unwrap()[0].rows, 1);
    let tables: i64 = ob
        .conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name = 'checkpoint_ingest'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0, "the old table is gone with the migration");
    let version: i64 = ob
        .conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
}

#[test]
fn the_held_ids_and_topics_round_trip_through_their_blobs() {
    let dir = TempDir::new().unwrap();
    let mut ob = open(&dir, 1 << 20);
    // A short list, the largest list, and sets stored as a bitmap (4,096 ids and all of them).
    let sets: [Vec<u16>; 5] = [
        vec![],
        vec![0, 1, 65535],
        (0..4095).map(|i| i * 16).collect(),
        (0..4096).map(|i| i * 16 + 1).collect(),
        (0..=u16::MAX).collect(),
    ];
    for held in sets {
        let topics: Vec<(u64, u64)> = held
            .iter()
            .take(300)
            .map(|&i| (u64::from(i) << 48, u64::MAX - u64::from(i)))
            .collect();
        let cp = Checkpoint {
            taken_ms: 1,
            meta: vec![1],
            held: Some(held.clone()),
            topics: Some(topics.clone()),
            ..Checkpoint::default()
        };
        ob.commit(&[], Some(&cp)).unwrap();
        let stored = ob.load_checkpoint().unwrap().unwrap();
        assert_eq!(stored.held, held);
        assert_eq!(stored.topics, topics);
    }
    let size: i64 = ob
        .conn
        .query_row("SELECT max(length(data)) FROM checkpoint_blob", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(size, 1 + 65536 / 8, "a full set is a bitmap");
}

#[test]
fn a_blob_that_does_not_decode_is_reported_as_corrupt() {
    let dir = TempDir::new().unwrap();
    let mut ob = open(&dir, 1 << 20);
    let cp = Checkpoint {
        meta: vec![1],
        held: Some(vec![1]),
        ..Checkpoint::default()
    };
    ob.commit(&[], Some(&cp)).unwrap();
    ob.conn
        .execute_batch("UPDATE checkpoint_blob SET data = x'0102'")
        .unwrap();
    let err = ob.load_checkpoint().err().unwrap();
    assert!(matches!(err, OutboxError::Corrupt { .. }), "{err:?}");
}
