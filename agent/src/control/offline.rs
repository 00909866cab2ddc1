//! `weir status` when the daemon is down: what the state directory says, read-only.
//!
//! The outbox database is opened with `SQLITE_OPEN_READ_ONLY` and without
//! `SQLITE_OPEN_CREATE`: a missing file is reported, never created, and nothing is
//! written to it. The backlog comes from the outbox table, the per-key watermarks and the
//! last checkpoint's time from the checkpoint tables, sensor health from the health file
//! the daemon keeps beside it. Fields the daemon alone knows (the link, counters, raised
//! alerts) are absent.

use std::path::Path;
use std::time::Duration;

use rusqlite::OptionalExtension;
use serde_json::{Value, json};

use super::hub::{classes_json, watermarks_json};
use crate::config::Config;
use crate::outbox::{Class, ClassStats, StoredCheckpoint};
use crate::reading::TimestampMs;

/// The status document of a stopped daemon.
pub fn status(cfg: &Config, config_path: &Path, now: TimestampMs) -> Value {
    let mut doc = json!({
        "running": false,
        "source": "state_database",
        "version": env!("CARGO_PKG_VERSION"),
        "config": config_path.display().to_string(),
        "socket": cfg.control_socket().display().to_string(),
        "device": cfg.device,
        "now_ms": now,
        "outbox": {"path": cfg.outbox.path.display().to_string(), "max_bytes": cfg.outbox.max_bytes},
    });
    match read_db(&cfg.outbox.path, cfg) {
        Ok(db) => {
            doc["outbox"]["classes"] = classes_json(&db.classes, now);
            doc["engine"] = json!({"last_checkpoint_ms": db.taken_ms});
            match db.watermarks {
                Ok(w) => doc["watermarks"] = watermarks_json(w, now),
                Err(e) => doc["engine"]["error"] = json!(e),
            }
        }
        Err(e) => doc["outbox"]["error"] = json!(e),
    }
    let health = crate::source::devices::health_file(&cfg.state_dir);
    if let Ok(text) = std::fs::read_to_string(&health) {
        if let Ok(v) = serde_json::from_str::<Value>(&text) {
            doc["sensors"] = v;
        }
    }
    doc
}

struct Db {
    classes: [ClassStats; 3],
    taken_ms: Option<TimestampMs>,
    watermarks: Result<Vec<(crate::reading::Key, TimestampMs)>, String>,
}

fn read_db(path: &Path, cfg: &Config) -> Result<Db, String> {
    if !path.exists() {
        return Err(format!(
            "no database at {} (weir has not run with this configuration)",
            path.display()
        ));
    }
    let e = |e: rusqlite::Error| format!("{}: {e}", path.display());
    let conn = crate::outbox::read_only::open(path).map_err(|e| e.to_string())?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(e)?;
    let mut classes: [ClassStats; 3] = Default::default();
    let mut stmt = conn
        .prepare("SELECT class, count(*), coalesce(sum(bytes), 0), min(created_ms) FROM outbox GROUP BY class")
        .map_err(e)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Option<i64>>(3)?,
            ))
        })
        .map_err(e)?;
    for row in rows {
        let (class, rows, bytes, oldest) = row.map_err(e)?;
        if let Some(c) = Class::from_db(class) {
            classes[c.index()] = ClassStats {
                rows: rows.max(0) as u64,
                bytes: bytes.max(0) as u64,
                oldest_created_ms: oldest,
            };
        }
    }
    let meta: Option<(i64, Vec<u8>)> = conn
        .query_row(
            "SELECT taken_ms, meta FROM checkpoint_meta WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(e)?;
    let Some((taken_ms, meta)) = meta else {
        return Ok(Db {
            classes,
            taken_ms: None,
            watermarks: Ok(Vec::new()),
        });
    };
    let mut stmt = conn
        .prepare("SELECT sensor, metric, state FROM checkpoint_key ORDER BY sensor, metric")
        .map_err(e)?;
    let keys = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map_err(e)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(e)?;
    let stored = StoredCheckpoint {
        taken_ms,
        meta,
        keys,
        seen: Vec::new(),
        held: Vec::new(),
        topics: Vec::new(),
        hold: Vec::new(),
    };
    // The watermarks are the engine's: restore it as `weir run` would (detectors are not needed).
    let watermarks =
        crate::checkpoint::restore(&stored, cfg.engine.clone(), Vec::new(), cfg.engine.max_keys)
            .map(|(engine, _, _)| engine.watermarks().map(|(k, w)| (k.clone(), w)).collect())
            .map_err(|e| format!("the last checkpoint cannot be read: {e}"));
    Ok(Db {
        classes,
        taken_ms: Some(taken_ms),
        watermarks,
    })
}
