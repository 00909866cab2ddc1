#![allow(clippy::unwrap_used)]

use tempfile::TempDir;

use super::*;
use crate::outbox::{NewMessage, Outbox, OutboxConfig};

fn msg(class: Class, topic: &str, created_ms: i64, key: Option<&str>) -> NewMessage {
    NewMessage {
        class,
        topic: topic.into(),
        payload: vec![b'x'; 6],
        supersede_key: key.map(str::to_string),
        created_ms,
    }
}

/// Rows: aggregates at 100, 200 (keyed), 300; an alert at 400; a diagnostic at 50.
fn filled(dir: &TempDir) -> (Outbox, PathBuf) {
    let path = dir.path().join("outbox.db");
    let mut ob = Outbox::open(&OutboxConfig {
        path: path.clone(),
        max_bytes: 1 << 20,
    })
    .unwrap();
    ob.insert(&[
        msg(Class::Aggregate, "d/agg/a/t", 100, None),
        msg(Class::Aggregate, "d/agg/b/t", 200, Some("w1")),
        msg(Class::Aggregate, "d/agg/a/t", 300, None),
        msg(Class::Alert, "d/alert/a/t", 400, None),
        msg(Class::Diagnostic, "d/late", 50, None),
    ])
    .unwrap();
    (ob, path)
}

fn all_rows(conn: &Connection, path: &Path, class: Option<Class>, page: usize) -> Vec<StoredRow> {
    let (mut out, mut cursor) = (Vec::new(), Cursor::start());
    loop {
        let (rows, next) = rows_after(conn, path, class, cursor, page).unwrap();
        if rows.is_empty() {
            return out;
        }
        out.extend(rows);
        cursor = next;
    }
}

#[test]
fn rows_come_in_send_order_alerts_first_then_by_id_across_pages() {
    let dir = TempDir::new().unwrap();
    let (_ob, path) = filled(&dir);
    let conn = open_read_only(&path).unwrap();
    let ids: Vec<_> = all_rows(&conn, &path, None, 2)
        .iter()
        .map(|r| (r.class, r.id))
        .collect();
    assert_eq!(
        ids,
        [
            (Class::Alert, 4),
            (Class::Aggregate, 1),
            (Class::Aggregate, 2),
            (Class::Aggregate, 3),
            (Class::Diagnostic, 5)
        ]
    );
    let aggs = all_rows(&conn, &path, Some(Class::Aggregate), 10);
    assert_eq!(aggs.len(), 3);
    assert_eq!(aggs[1].supersede_key.as_deref(), Some("w1"));
    assert_eq!(aggs[1].bytes, 9 + 6);
    assert_eq!(count(&conn, &path, Some(Class::Aggregate)).unwrap(), 3);
}

#[test]
fn stats_give_oldest_and_newest_per_class_and_the_busiest_topics_first() {
    let dir = TempDir::new().unwrap();
    let (_ob, path) = filled(&dir);
    let conn = open_read_only(&path).unwrap();
    let s = stats(&conn, &path, 2).unwrap();
    let agg = Class::Aggregate.index();
    assert_eq!(s.classes[agg].rows, 3);
    assert_eq!(s.classes[agg].oldest_created_ms, Some(100));
    assert_eq!(s.newest_ms[agg], Some(300));
    assert_eq!(s.newest_ms[Class::Alert.index()], Some(400));
    assert_eq!(s.top_topics.len(), 2);
    assert_eq!(
        (s.top_topics[0].topic.as_str(), s.top_topics[0].rows),
        ("d/agg/a/t", 2)
    );
    assert_eq!(s.top_topics[0].bytes, 30);
    assert!(s.purges.is_empty());
}

#[test]
fn a_purge_deletes_only_older_rows_of_the_class_and_records_itself() {
    let dir = TempDir::new().unwrap();
    let (ob, path) = filled(&dir);
    drop(ob);
    let mut conn = open_for_purge(&path).unwrap();
    let req = PurgeRequest {
        cutoff_ms: 250,
        class: Some(Class::Aggregate),
        now_ms: 9_000,
        by: "tech",
    };
    assert_eq!(
        purge_preview(&conn, &path, 250, Some(Class::Aggregate))
            .unwrap()
            .total_rows(),
        2
    );
    let mut seen = Vec::new();
    let done = purge(&mut conn, &path, &req, &mut |n| seen.push(n)).unwrap();
    assert_eq!(done.rows, [0, 2, 0]);
    assert_eq!(done.bytes, [0, 30, 0]);
    assert_eq!(seen, [2]);
    // A second purge of everything older than 1000: the alert and the rest.
    let req2 = PurgeRequest {
        cutoff_ms: 1_000,
        class: None,
        ..req
    };
    let done = purge(&mut conn, &path, &req2, &mut |_| {}).unwrap();
    assert_eq!(done.rows, [1, 1, 1]);
    drop(conn);

    let conn = open_read_only(&path).unwrap();
    let s = stats(&conn, &path, 5).unwrap();
    assert!(s.classes.iter().all(|c| c.rows == 0));
    let log: Vec<_> = s
        .purges
        .iter()
        .map(|p| (p.purge, p.class, p.rows, p.cutoff_ms, p.by.as_str()))
        .collect();
    assert_eq!(
        log,
        [
            (1, Class::Aggregate, 2, 250, "tech"),
            (2, Class::Alert, 1, 1_000, "tech"),
            (2, Class::Aggregate, 1, 1_000, "tech"),
            (2, Class::Diagnostic, 1, 1_000, "tech"),
        ]
    );
}

#[test]
fn a_purged_file_still_opens_in_the_daemon_with_the_right_byte_totals() {
    let dir = TempDir::new().unwrap();
    let (ob, path) = filled(&dir);
    drop(ob);
    let mut conn = open_for_purge(&path).unwrap();
    let req = PurgeRequest {
        cutoff_ms: 150,
        class: None,
        now_ms: 1,
        by: "t",
    };
    purge(&mut conn, &path, &req, &mut |_| {}).unwrap();
    drop(conn);
    let ob = Outbox::open(&OutboxConfig {
        path: path.clone(),
        max_bytes: 1 << 20,
    })
    .unwrap();
    // 3 rows left: two of 15 bytes, the alert of 17.
    assert_eq!(ob.total_bytes(), 15 + 15 + 17);
    assert_eq!(ob.stats().unwrap()[Class::Diagnostic.index()].rows, 0);
}

#[test]
fn a_purge_larger_than_one_chunk_reports_progress_per_chunk() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("outbox.db");
    let mut ob = Outbox::open(&OutboxConfig {
        path: path.clone(),
        max_bytes: 1 << 30,
    })
    .unwrap();
    let many: Vec<_> = (0..2_500)
        .map(|i| msg(Class::Diagnostic, "d/late", i, None))
        .collect();
    ob.insert(&many).unwrap();
    drop(ob);
    let mut conn = open_for_purge(&path).unwrap();
    let mut seen = Vec::new();
    let req = PurgeRequest {
        cutoff_ms: 10_000,
        class: None,
        now_ms: 1,
        by: "t",
    };
    let done = purge(&mut conn, &path, &req, &mut |n| seen.push(n)).unwrap();
    assert_eq!(done.rows, [0, 0, 2_500]);
    assert_eq!(seen, [1_000, 2_000, 2_500]);
    let s = stats(&conn, &path, 1).unwrap();
    assert_eq!(s.purges.len(), 1);
    assert_eq!(s.purges[0].rows, 2_500);
}

#[test]
fn opening_for_reading_or_purging_never_creates_a_missing_file() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("nope.db");
    assert!(matches!(
        open_read_only(&path),
        Err(OutboxError::Open { .. })
    ));
    assert!(matches!(
        open_for_purge(&path),
        Err(OutboxError::Open { .. })
    ));
    assert!(!path.exists());
}
