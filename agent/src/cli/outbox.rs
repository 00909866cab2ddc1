//! `weir outbox verify`: is the data safe? Later `stats`, `peek`, `export` and `purge` join it
//! here, on the same [`Target`].
//!
//! The database is opened read-only ([`crate::outbox::verify`]), so it is safe to run while
//! the daemon writes, and a wrong path never creates an empty database.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use serde_json::json;

use super::exit;
use crate::config::Config;
use crate::outbox::verify::{Report, inspect};
use crate::outbox::{Class, OutboxError};

/// Which outbox, and how to print.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// Configuration naming the outbox (`[outbox] path`), read when `db` is `None`.
    pub config: &'a Path,
    /// The database file, overriding the configuration.
    pub db: Option<&'a Path>,
    /// `--json`.
    pub json: bool,
}

impl Target<'_> {
    /// The database file; on failure the message and exit code.
    fn path(&self) -> Result<PathBuf, (String, u8)> {
        if let Some(db) = self.db {
            return Ok(db.to_path_buf());
        }
        Config::load(self.config)
            .map(|c| c.outbox.path)
            .map_err(|e| (format!("{e} (or name the file with --db)"), exit::CONFIG))
    }
}

/// `weir outbox verify`: exit 0 when sound, 65 when corrupt or from a newer Weir, 1 when the
/// file cannot be opened, 78 when the configuration is invalid.
pub fn verify(t: &Target<'_>, out: &mut impl Write, err: &mut impl Write) -> u8 {
    let path = match t.path() {
        Ok(p) => p,
        Err((msg, code)) => {
            let _ = writeln!(err, "error: {msg}");
            return code;
        }
    };
    match inspect(&path) {
        Ok(r) => {
            let text = if t.json {
                json_report(&r).to_string()
            } else {
                human(&r, crate::reading::now_ms())
            };
            let _ = writeln!(out, "{text}");
            exit::OK
        }
        Err(e) => {
            let code = match e {
                OutboxError::Corrupt { .. } | OutboxError::NewerSchema { .. } => exit::DATA,
                _ => exit::FAILURE,
            };
            if t.json {
                let verdict = if code == exit::DATA {
                    "damaged"
                } else {
                    "unreadable"
                };
                let v = json!({"path": path, "status": verdict, "error": e.to_string()});
                let _ = writeln!(out, "{v}");
            }
            let _ = writeln!(err, "error: {e}");
            code
        }
    }
}

fn json_report(r: &Report) -> serde_json::Value {
    let classes: serde_json::Map<_, _> = Class::ALL
        .iter()
        .map(|c| {
            let s = &r.classes[c.index()];
            let v =
                json!({"rows": s.rows, "bytes": s.bytes, "oldest_created_ms": s.oldest_created_ms});
            (c.as_str().to_string(), v)
        })
        .collect();
    json!({
        "path": r.path,
        "status": "ok",
        "schema_version": r.schema_version,
        "classes": classes,
        "oldest": r.oldest.as_ref().map(|o| json!({
            "id": o.id, "class": o.class.as_str(), "topic": o.topic, "created_ms": o.created_ms,
        })),
        "file_bytes": r.file_bytes.0,
        "wal_bytes": r.file_bytes.1,
    })
}

/// The report as a table; `now` (ms) gives ages.
fn human(r: &Report, now: i64) -> String {
    let mut s = format!(
        "{}: ok (integrity_check ok, schema version {}; file {} bytes, WAL {} bytes)\n",
        r.path.display(),
        r.schema_version,
        r.file_bytes.0,
        r.file_bytes.1
    );
    s.push_str(&format!(
        "{:<11} {:>9} {:>12}  oldest\n",
        "class", "rows", "bytes"
    ));
    let (mut rows, mut bytes) = (0, 0);
    for c in Class::ALL {
        let st = &r.classes[c.index()];
        rows += st.rows;
        bytes += st.bytes;
        let oldest = st
            .oldest_created_ms
            .map_or("-".to_string(), |ms| when(ms, now));
        s.push_str(&format!(
            "{:<11} {:>9} {:>12}  {oldest}\n",
            c.as_str(),
            st.rows,
            st.bytes
        ));
    }
    s.push_str(&format!("{:<11} {rows:>9} {bytes:>12}\n", "total"));
    match &r.oldest {
        Some(o) => s.push_str(&format!(
            "oldest row: id {}, {}, {}, produced {}",
            o.id,
            o.class.as_str(),
            o.topic,
            when(o.created_ms, now)
        )),
        None => s.push_str("oldest row: none (the outbox is empty)"),
    }
    s
}

/// `2026-01-02T03:04:05Z (3m 20s ago)`.
fn when(ms: i64, now: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(ms.max(0).unsigned_abs());
    let age = Duration::from_secs(now.saturating_sub(ms).max(0).unsigned_abs() / 1000);
    format!(
        "{} ({} ago)",
        humantime::format_rfc3339_seconds(at),
        humantime::format_duration(age)
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::outbox::verify::OldestRow;
    use crate::outbox::{ClassStats, NewMessage, Outbox, OutboxConfig};

    #[test]
    fn the_table_shows_rows_bytes_and_age_per_class_and_the_oldest_row() {
        let mut classes: [ClassStats; 3] = Default::default();
        classes[1] = ClassStats {
            rows: 2,
            bytes: 300,
            oldest_created_ms: Some(1_000),
        };
        let r = Report {
            path: "/var/lib/weir/outbox.db".into(),
            schema_version: 1,
            classes,
            oldest: Some(OldestRow {
                id: 7,
                class: Class::Aggregate,
                topic: "weir/d/agg/a/b".into(),
                created_ms: 1_000,
            }),
            file_bytes: (4096, 0),
        };
        let text = human(&r, 201_000);
        assert!(text.starts_with("/var/lib/weir/outbox.db: ok"), "{text}");
        assert!(
            text.contains("aggregate           2          300  1970-01-01T00:00:01Z (3m 20s ago)"),
            "{text}"
        );
        assert!(
            text.contains("alert               0            0  -"),
            "{text}"
        );
        assert!(
            text.contains("total               2          300"),
            "{text}"
        );
        assert!(
            text.contains("oldest row: id 7, aggregate, weir/d/agg/a/b"),
            "{text}"
        );
    }

    #[test]
    fn a_sound_db_given_by_path_exits_zero_and_garbage_exits_65_naming_the_file() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("outbox.db");
        let mut ob = Outbox::open(&OutboxConfig {
            path: path.clone(),
            max_bytes: 1 << 20,
        })
        .unwrap();
        ob.insert(&[NewMessage {
            class: Class::Alert,
            topic: "t".into(),
            payload: b"x".to_vec(),
            supersede_key: None,
            created_ms: 5,
        }])
        .unwrap();
        drop(ob);
        let t = Target {
            config: Path::new("/nonexistent.toml"),
            db: Some(&path),
            json: true,
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(verify(&t, &mut out, &mut err), exit::OK);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["status"], "ok");
        assert_eq!(v["classes"]["alert"]["rows"], 1);

        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(verify(&t, &mut out, &mut err), exit::DATA);
        let err = String::from_utf8(err).unwrap();
        assert!(
            err.contains(&path.display().to_string()) && err.contains("corrupt"),
            "{err}"
        );
    }

    #[test]
    fn without_db_an_invalid_config_is_a_config_error() {
        let t = Target {
            config: Path::new("/nonexistent/weir.toml"),
            db: None,
            json: false,
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(verify(&t, &mut out, &mut err), exit::CONFIG);
        assert!(String::from_utf8(err).unwrap().contains("--db"));
    }
}
