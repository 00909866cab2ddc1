//! `weir outbox verify`: a read-only look at an outbox file, safe while the daemon runs.
//!
//! The file is opened without `SQLITE_OPEN_CREATE` and read-only, so a wrong path is an error
//! rather than a new empty database, and nothing is written to the database itself (SQLite may
//! still create the `-shm` index beside it, as every reader of a WAL database does). The full
//! `PRAGMA integrity_check` runs here, not at daemon start (see [`super::Outbox::verify`] for
//! what it costs on an SD card).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

use super::{Class, ClassStats, OutboxError, SCHEMA_VERSION};

/// Problems listed at most by [`inspect`] (SQLite stops at 100 by default).
const MAX_PROBLEMS: usize = 20;

/// What an intact outbox file holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The database file.
    pub path: PathBuf,
    /// `PRAGMA user_version`.
    pub schema_version: i64,
    /// Backlog per class, indexed by [`Class::index`].
    pub classes: [ClassStats; 3],
    /// The row produced first (smallest `created_ms`, then smallest id), if any.
    pub oldest: Option<OldestRow>,
    /// Size of the database file and of its WAL (0 when there is none), in bytes.
    pub file_bytes: (u64, u64),
}

/// The oldest unsent row.
#[derive(Clone, Debug, PartialEq)]
pub struct OldestRow {
    /// Row id.
    pub id: i64,
    /// Its class.
    pub class: Class,
    /// Its topic.
    pub topic: String,
    /// When it was produced, ms since the Unix epoch.
    pub created_ms: i64,
}

/// Opens `path` read-only, runs the integrity check, checks the schema version and reads the
/// backlog. A damaged file is [`OutboxError::Corrupt`] (with SQLite's findings), a file from a
/// newer Weir [`OutboxError::NewerSchema`], a file that is not a Weir outbox (a SQLite database
/// without the schema) also `Corrupt`; a missing or unreadable file [`OutboxError::Open`].
pub fn inspect(path: &Path) -> Result<Report, OutboxError> {
    let at_open = |e| OutboxError::from_sqlite_at_open(path, e);
    let err = |e| OutboxError::from_sqlite(path, e);
    // Without this check SQLite reports a missing file as "unable to open database file".
    if let Err(e) = std::fs::metadata(path) {
        return Err(OutboxError::Open {
            path: path.to_path_buf(),
            source: rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some(e.to_string()),
            ),
        });
    }
    let conn = super::read_only::open(path)?;
    // The daemon may be committing; wait for it rather than fail.
    conn.busy_timeout(Duration::from_secs(5)).map_err(at_open)?;
    let schema_version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(err)?;
    // Some damage stops the check itself with SQLITE_CORRUPT instead of a list of findings.
    let checked = |e: rusqlite::Error| match err(e) {
        OutboxError::Corrupt { path, detail } => OutboxError::Corrupt {
            path,
            detail: format!("integrity_check: {detail}"),
        },
        other => other,
    };
    let problems: Vec<String> = {
        let mut stmt = conn.prepare("PRAGMA integrity_check").map_err(checked)?;
        stmt.query_map([], |r| r.get::<_, String>(0))
            .map_err(checked)?
            .take(MAX_PROBLEMS)
            .collect::<Result<_, _>>()
            .map_err(checked)?
    };
    if problems != ["ok"] {
        return Err(OutboxError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("integrity_check: {}", problems.join("; ")),
        });
    }
    if schema_version > SCHEMA_VERSION {
        return Err(OutboxError::NewerSchema {
            path: path.to_path_buf(),
            found: schema_version,
            supported: SCHEMA_VERSION,
        });
    }
    let has_table: bool = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'outbox'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(err)?
        > 0;
    if schema_version < 1 || !has_table {
        return Err(OutboxError::Corrupt {
            path: path.to_path_buf(),
            detail: format!(
                "a SQLite database but not a Weir outbox (schema version {schema_version}, \
                 outbox table {})",
                if has_table { "present" } else { "missing" }
            ),
        });
    }
    let classes = class_stats(&conn, path)?;
    let oldest = conn
        .query_row(
            "SELECT id, class, topic, created_ms FROM outbox ORDER BY created_ms, id LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get::<_, i64>(1)?, r.get(2)?, r.get(3)?)),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(err(e)),
        })?
        .map(|(id, class, topic, created_ms)| {
            Ok::<_, OutboxError>(OldestRow {
                id,
                class: known_class(class, path)?,
                topic,
                created_ms,
            })
        })
        .transpose()?;
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    Ok(Report {
        path: path.to_path_buf(),
        schema_version,
        classes,
        oldest,
        file_bytes: (size(path), size(Path::new(&wal))),
    })
}

/// Rows, bytes and the oldest `created_ms` per class.
fn class_stats(conn: &Connection, path: &Path) -> Result<[ClassStats; 3], OutboxError> {
    let err = |e| OutboxError::from_sqlite(path, e);
    let mut out: [ClassStats; 3] = Default::default();
    let mut stmt = conn
        .prepare("SELECT class, COUNT(*), SUM(bytes), MIN(created_ms) FROM outbox GROUP BY class")
        .map_err(err)?;
    let mut rows = stmt.query([]).map_err(err)?;
    while let Some(r) = rows.next().map_err(err)? {
        let class = known_class(r.get(0).map_err(err)?, path)?;
        let count: i64 = r.get(1).map_err(err)?;
        let bytes: Option<i64> = r.get(2).map_err(err)?;
        out[class.index()] = ClassStats {
            rows: count.unsigned_abs(),
            bytes: bytes.unwrap_or(0).unsigned_abs(),
            oldest_created_ms: r.get(3).map_err(err)?,
        };
    }
    Ok(out)
}

fn known_class(v: i64, path: &Path) -> Result<Class, OutboxError> {
    Class::from_db(v).ok_or_else(|| OutboxError::Corrupt {
        path: path.to_path_buf(),
        detail: format!("row with unknown class {v}"),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tempfile::TempDir;

    use super::*;
    use crate::outbox::{NewMessage, Outbox, OutboxConfig};

    fn msg(class: Class, created_ms: i64) -> NewMessage {
        NewMessage {
            class,
            topic: "t/x".into(),
            payload: vec![7; 10],
            supersede_key: None,
            created_ms,
        }
    }

    fn filled(dir: &TempDir) -> (Outbox, PathBuf) {
        let path = dir.path().join("outbox.db");
        let mut ob = Outbox::open(&OutboxConfig {
            path: path.clone(),
            max_bytes: 1 << 20,
        })
        .unwrap();
        ob.insert(&[
            msg(Class::Aggregate, 500),
            msg(Class::Alert, 700),
            msg(Class::Aggregate, 300),
        ])
        .unwrap();
        (ob, path)
    }

    #[test]
    fn a_sound_outbox_reports_its_backlog_per_class_and_its_oldest_row_even_while_open() {
        let dir = TempDir::new().unwrap();
        let (ob, path) = filled(&dir);
        let r = inspect(&path).unwrap();
        assert_eq!(r.schema_version, SCHEMA_VERSION);
        assert_eq!(r.classes[Class::Aggregate.index()].rows, 2);
        assert_eq!(r.classes[Class::Aggregate.index()].bytes, 26);
        assert_eq!(r.classes[Class::Alert.index()].rows, 1);
        assert_eq!(r.classes[Class::Diagnostic.index()].rows, 0);
        let oldest = r.oldest.unwrap();
        assert_eq!(
            (oldest.id, oldest.class, oldest.created_ms),
            (3, Class::Aggregate, 300)
        );
        drop(ob);
        assert_eq!(
            inspect(&path).unwrap().classes[Class::Alert.index()].rows,
            1
        );
    }

    #[test]
    fn inspecting_never_creates_a_missing_database() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("nope.db");
        let e = inspect(&path).unwrap_err();
        assert!(matches!(e, OutboxError::Open { .. }), "{e:?}");
        assert!(e.to_string().contains("nope.db"), "{e}");
        assert!(!path.exists());
    }

    #[test]
    fn garbage_in_the_middle_of_the_file_fails_the_integrity_check_naming_the_file() {
        let dir = TempDir::new().unwrap();
        let (mut ob, path) = filled(&dir);
        let many: Vec<_> = (0..400).map(|i| msg(Class::Aggregate, i)).collect();
        ob.insert(&many).unwrap();
        drop(ob);
        let mut bytes = std::fs::read(&path).unwrap();
        assert!(bytes.len() > 4 * 4096, "{}", bytes.len());
        // Page 3 onwards: past the header and the schema, so the file still opens.
        for (i, b) in bytes[2 * 4096..3 * 4096].iter_mut().enumerate() {
            *b = (i * 31 + 7) as u8;
        }
        std::fs::write(&path, bytes).unwrap();
        let e = inspect(&path).unwrap_err();
        assert!(matches!(e, OutboxError::Corrupt { .. }), "{e:?}");
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    }

    #[test]
    fn a_sqlite_file_without_the_outbox_schema_is_not_an_outbox() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("other.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        let e = inspect(&path).unwrap_err();
        assert!(e.to_string().contains("not a Weir outbox"), "{e}");
    }

    #[test]
    fn a_newer_schema_is_reported_as_such() {
        let dir = TempDir::new().unwrap();
        let (ob, path) = filled(&dir);
        ob.conn.pragma_update(None, "user_version", 99).unwrap();
        drop(ob);
        let e = inspect(&path).unwrap_err();
        assert!(
            matches!(e, OutboxError::NewerSchema { found: 99, .. }),
            "{e:?}"
        );
    }
}
