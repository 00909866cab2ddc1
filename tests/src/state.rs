//! Weir's state as a technician would inspect it: the SQLite outbox file, opened
//! read-only next to the running daemon, and `weir status --json`.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};
use serde_json::Value;

use crate::process::cli;

/// One row of the outbox table.
#[derive(Clone, Debug)]
pub struct Row {
    /// Row id (insertion order).
    pub id: i64,
    /// 0 alert, 1 aggregate, 2 diagnostic.
    pub class: i64,
    /// Upstream topic.
    pub topic: String,
    /// The payload as stored.
    pub payload: Vec<u8>,
    /// The payload as JSON (Null when it is not, e.g. postcard).
    pub json: Value,
    /// What the byte budget counts (topic + payload).
    pub bytes: u64,
    /// When it was produced (ms since the epoch).
    pub created_ms: i64,
}

/// The outbox database of a weir, read-only. Every query gives `None` while the file or
/// its schema does not exist yet (the file exists a moment before its table does, a gap
/// QEMU makes wide enough to hit) or the database is busy.
#[derive(Clone, Debug)]
pub struct OutboxFile {
    path: PathBuf,
}

impl OutboxFile {
    /// The database at `path` (usually `<state_dir>/outbox.db`).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open(&self) -> Option<Connection> {
        if !self.path.exists() {
            return None;
        }
        let c = Connection::open_with_flags(&self.path, OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
        c.prepare("SELECT 1 FROM outbox LIMIT 1").ok()?;
        Some(c)
    }

    /// Every row, in id order.
    pub fn rows(&self) -> Option<Vec<Row>> {
        let c = self.open()?;
        let mut stmt = c
            .prepare("SELECT id, class, topic, payload, bytes, created_ms FROM outbox ORDER BY id")
            .ok()?;
        let rows = stmt
            .query_map([], |r| {
                let payload: Vec<u8> = r.get(3)?;
                Ok(Row {
                    id: r.get(0)?,
                    class: r.get(1)?,
                    topic: r.get(2)?,
                    json: serde_json::from_slice(&payload).unwrap_or(Value::Null),
                    payload,
                    bytes: u64::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
                    created_ms: r.get(5)?,
                })
            })
            .ok()?;
        rows.collect::<Result<Vec<_>, _>>().ok()
    }

    /// `SUM(bytes)`: what the byte budget bounds.
    pub fn bytes(&self) -> Option<u64> {
        let c = self.open()?;
        let total: i64 = c
            .query_row("SELECT COALESCE(SUM(bytes), 0) FROM outbox", [], |r| {
                r.get(0)
            })
            .ok()?;
        u64::try_from(total).ok()
    }

    /// Rows per class: [alert, aggregate, diagnostic].
    pub fn class_counts(&self) -> Option<[u64; 3]> {
        let c = self.open()?;
        let mut stmt = c
            .prepare("SELECT class, COUNT(*) FROM outbox GROUP BY class")
            .ok()?;
        let mut out = [0u64; 3];
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
            .ok()?;
        for r in rows {
            let (class, n) = r.ok()?;
            *out.get_mut(usize::try_from(class).ok()?)? = u64::try_from(n).ok()?;
        }
        Some(out)
    }

    /// The `msg_id`s of the stored JSON payloads of `type` (`pane`, `alert`...).
    pub fn msg_ids(&self, kind: &str) -> Option<BTreeSet<String>> {
        Some(
            self.rows()?
                .into_iter()
                .filter(|r| r.json["type"] == kind)
                .filter_map(|r| r.json["msg_id"].as_str().map(str::to_string))
                .collect(),
        )
    }
}

/// `weir status [args] --config <cfg> --json`: the exit code and the document (Null when
/// the output is not JSON).
pub fn status_json(cfg: &Path, args: &[&str]) -> (Option<i32>, Value) {
    let mut all: Vec<&OsStr> = vec![OsStr::new("status")];
    all.extend(args.iter().map(OsStr::new));
    all.extend([
        OsStr::new("--json"),
        OsStr::new("--config"),
        cfg.as_os_str(),
    ]);
    let out = cli(all);
    (
        out.code,
        serde_json::from_str(&out.stdout).unwrap_or(Value::Null),
    )
}
