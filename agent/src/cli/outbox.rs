//! `weir outbox verify|stats`: is the data safe, and what is waiting? `peek` and `export` are
//! in `outbox_rows.rs`, `purge` in `outbox_purge.rs`, all on the same [`Target`].
//!
//! The database is opened read-only ([`crate::outbox::verify`], [`crate::outbox::inspect`]), so
//! it is safe to run while the daemon writes, and a wrong path never creates an empty database.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;

pub use super::outbox_purge::{PurgeArgs, purge};
pub use super::outbox_rows::{export, peek, row_json};

use super::{exit, human};
use crate::config::Config;
use crate::outbox::inspect::{self, Stats};
use crate::outbox::verify::{Report, inspect};
use crate::outbox::{Class, OutboxError};

/// `--class` on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ClassArg {
    /// Detector alerts.
    Alert,
    /// Window panes.
    Aggregate,
    /// Late readings and dead letters.
    Diagnostic,
}

impl ClassArg {
    /// The outbox class.
    pub fn class(self) -> Class {
        match self {
            ClassArg::Alert => Class::Alert,
            ClassArg::Aggregate => Class::Aggregate,
            ClassArg::Diagnostic => Class::Diagnostic,
        }
    }
}

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
    /// The database file; on failure the message is written to `err` and the exit code returned.
    pub(super) fn path(&self, err: &mut impl Write) -> Result<PathBuf, u8> {
        self.resolve().map(|(p, _)| p).map_err(|(msg, code)| {
            let _ = writeln!(err, "error: {msg}");
            code
        })
    }

    /// The database file and, when it loads, the configuration (with `--db`, a configuration
    /// that does not load is no error: the file is named).
    pub(super) fn resolve(&self) -> Result<(PathBuf, Option<Config>), (String, u8)> {
        if let Some(db) = self.db {
            return Ok((db.to_path_buf(), Config::load(self.config).ok()));
        }
        Config::load(self.config)
            .map(|c| (c.outbox.path.clone(), Some(c)))
            .map_err(|e| (format!("{e} (or name the file with --db)"), exit::CONFIG))
    }
}

/// Prints an outbox error; its exit code ([`code`]).
pub(super) fn fail(e: &OutboxError, err: &mut impl Write) -> u8 {
    let _ = writeln!(err, "error: {e}");
    code(e)
}

/// Exit 65 when the file is damaged or newer, 4 when this user may not read it (as
/// `weir status` when the socket refuses), 1 otherwise.
fn code(e: &OutboxError) -> u8 {
    match e {
        OutboxError::Corrupt { .. } | OutboxError::NewerSchema { .. } => exit::DATA,
        OutboxError::Permission { .. } => super::status::UNKNOWN,
        _ => exit::FAILURE,
    }
}

/// `weir outbox stats`: exit 0, 65 when the file is damaged or newer, 1 when it cannot be read,
/// 78 when the configuration is invalid.
pub fn stats(t: &Target<'_>, top: usize, out: &mut impl Write, err: &mut impl Write) -> u8 {
    let (path, cfg) = match t.resolve() {
        Ok(r) => r,
        Err((msg, code)) => {
            let _ = writeln!(err, "error: {msg}");
            return code;
        }
    };
    // The budget is the configured one only when the configuration names this very file.
    let budget = cfg
        .filter(|c| c.outbox.path == path)
        .map(|c| c.outbox.max_bytes);
    let s = match inspect::open_read_only(&path).and_then(|c| inspect::stats(&c, &path, top)) {
        Ok(s) => s,
        Err(e) => return fail(&e, err),
    };
    let now = crate::reading::now_ms();
    let text = if t.json {
        stats_json(&s, budget, now).to_string()
    } else {
        stats_human(&s, budget, now)
    };
    let _ = writeln!(out, "{text}");
    exit::OK
}

fn stats_json(s: &Stats, budget: Option<u64>, now: i64) -> serde_json::Value {
    let age = |ms: Option<i64>| ms.map(|m| now.saturating_sub(m).max(0) / 1000);
    let classes: serde_json::Map<_, _> = Class::ALL
        .iter()
        .map(|c| {
            let st = &s.classes[c.index()];
            let newest = s.newest_ms[c.index()];
            let v = json!({
                "rows": st.rows, "bytes": st.bytes,
                "oldest_created_ms": st.oldest_created_ms, "oldest_age_s": age(st.oldest_created_ms),
                "newest_created_ms": newest, "newest_age_s": age(newest),
            });
            (c.as_str().to_string(), v)
        })
        .collect();
    let (rows, bytes) = totals(s);
    json!({
        "path": s.path,
        "classes": classes,
        "total": {"rows": rows, "bytes": bytes},
        "budget": budget.map(|b| json!({"max_bytes": b, "used_bytes": bytes, "used_percent": percent(bytes, b)})),
        "top_topics": s.top_topics.iter().map(|t| json!({
            "topic": t.topic, "class": t.class.as_str(), "rows": t.rows, "bytes": t.bytes,
        })).collect::<Vec<_>>(),
        "purges": s.purges.iter().map(|p| json!({
            "purge": p.purge, "class": p.class.as_str(), "at_ms": p.at_ms,
            "cutoff_ms": p.cutoff_ms, "rows": p.rows, "bytes": p.bytes, "by": p.by,
        })).collect::<Vec<_>>(),
    })
}

fn totals(s: &Stats) -> (u64, u64) {
    s.classes
        .iter()
        .fold((0, 0), |(r, b), c| (r + c.rows, b + c.bytes))
}

fn percent(part: u64, whole: u64) -> u64 {
    part.saturating_mul(100).checked_div(whole).unwrap_or(0)
}

fn stats_human(s: &Stats, budget: Option<u64>, now: i64) -> String {
    let (rows, bytes) = totals(s);
    let mut o = format!(
        "{}: {}, {} waiting",
        s.path.display(),
        human::plural(rows, "row", "rows"),
        human::bytes(bytes)
    );
    match budget {
        Some(b) => o.push_str(&format!(
            "; {} budget, {}% used\n",
            human::bytes(b),
            percent(bytes, b)
        )),
        None => o.push_str(" (budget unknown: no configuration names this file)\n"),
    }
    o.push_str(&format!(
        "{:<11} {:>7} {:>9}  {:<18}  newest\n",
        "class", "rows", "bytes", "oldest"
    ));
    for c in Class::ALL {
        let st = &s.classes[c.index()];
        // Ages here (the lines stay within 80 columns); `peek` and `--json` give the times.
        let show = |ms: Option<i64>| {
            ms.map_or("-".to_string(), |ms| {
                format!("{} ago", human::duration_ms(now.saturating_sub(ms)))
            })
        };
        o.push_str(&format!(
            "{:<11} {:>7} {:>9}  {:<18}  {}\n",
            c.as_str(),
            st.rows,
            human::bytes(st.bytes),
            show(st.oldest_created_ms),
            show(s.newest_ms[c.index()])
        ));
    }
    if s.top_topics.is_empty() {
        o.push_str("top topics: none (the outbox is empty)\n");
    } else {
        o.push_str(&format!(
            "top topics by rows:\n{:>7} {:>9}  {:<11} topic\n",
            "rows", "bytes", "class"
        ));
        for t in &s.top_topics {
            o.push_str(&format!(
                "{:>7} {:>9}  {:<11} {}\n",
                t.rows,
                human::bytes(t.bytes),
                t.class.as_str(),
                t.topic
            ));
        }
    }
    if s.purges.is_empty() {
        o.push_str("purged by hand: never");
    } else {
        o.push_str("purged by hand (weir outbox purge):");
        for p in &s.purges {
            o.push_str(&format!(
                "\n  #{} {} by {}: {} {} {}, {} produced before {}",
                p.purge,
                rfc3339(p.at_ms),
                p.by,
                p.rows,
                p.class.as_str(),
                if p.rows == 1 { "row" } else { "rows" },
                human::bytes(p.bytes),
                rfc3339(p.cutoff_ms)
            ));
        }
    }
    o
}

/// `2026-01-02T03:04:05Z`, in the local time zone.
pub(super) fn rfc3339(ms: i64) -> String {
    human::local_time(ms)
}

/// `weir outbox verify`: exit 0 when sound, 65 when corrupt or from a newer Weir, 1 when the
/// file cannot be opened, 78 when the configuration is invalid.
pub fn verify(t: &Target<'_>, out: &mut impl Write, err: &mut impl Write) -> u8 {
    let path = match t.path(err) {
        Ok(p) => p,
        Err(code) => return code,
    };
    // integrity_check reports no progress of its own: on a terminal at least say what it is
    // reading, since a large file on an SD card takes a while.
    let note = std::io::IsTerminal::is_terminal(&std::io::stderr());
    if note {
        let mib = std::fs::metadata(&path).map_or(0, |m| m.len()) / (1 << 20);
        let _ = write!(
            err,
            "checking every page of {} ({mib} MiB)...",
            path.display()
        );
        let _ = err.flush();
    }
    let result = inspect(&path);
    if note {
        let _ = write!(err, "\r\x1b[2K");
    }
    match result {
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
            let code = code(&e);
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
        "{}: ok (integrity_check ok, schema version {}; file {}, WAL {})\n",
        r.path.display(),
        r.schema_version,
        human::bytes(r.file_bytes.0),
        human::bytes(r.file_bytes.1)
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
            human::bytes(st.bytes)
        ));
    }
    s.push_str(&format!(
        "{:<11} {rows:>9} {:>12}\n",
        "total",
        human::bytes(bytes)
    ));
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

/// `2026-01-02T03:04:05Z (3m 20s ago)`, in the local time zone.
pub(super) fn when(ms: i64, now: i64) -> String {
    format!(
        "{} ({} ago)",
        human::local_time(ms),
        human::duration_ms(now.saturating_sub(ms))
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
            text.contains(&format!(
                "aggregate           2        300 B  {} (3m 20s ago)",
                human::local_time(1000)
            )),
            "{text}"
        );
        assert!(
            text.contains("alert               0          0 B  -"),
            "{text}"
        );
        assert!(
            text.contains("total               2        300 B"),
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
