//! Opening the outbox for reading only, as the technician's tools do (`weir outbox
//! verify/stats/peek/export`, `weir status` with the daemon down), possibly as a
//! member of the `weir` group: allowed to read the state directory (0750) and the
//! database (0640), not to write either.
//!
//! SQLite's rules for a WAL database opened read-only (<https://sqlite.org/wal.html>,
//! "Read-Only Databases"): a reader needs the `-shm` file, and creates it when it is
//! absent, which needs write access to the directory. So:
//! - the normal read-only open is tried first (root, the weir user, or a group member
//!   while the `-wal` and `-shm` files exist and are readable);
//! - when that fails for want of write access and there is no `-wal` file (weir
//!   stopped cleanly: its last connection checkpointed everything into the database
//!   and deleted the log), the file alone is the whole database, and it is opened with
//!   `immutable=1`, which needs neither `-shm` nor locks. A running weir always has its
//!   `-wal` file, so this never reads under a live writer;
//! - otherwise the error names the permission that is missing, never a read-only
//!   filesystem or a failing SD card.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::OutboxError;

/// Opens the existing database at `path` for reading (module docs). Never creates it.
pub(crate) fn open(path: &Path) -> Result<Connection, OutboxError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let first = Connection::open_with_flags(path, flags).and_then(probe);
    let err = match first {
        Ok(c) => return Ok(c),
        Err(e) => e,
    };
    let denied = matches!(
        err.sqlite_error_code(),
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied)
    );
    if !denied {
        return Err(OutboxError::from_sqlite_at_open(path, err));
    }
    if let Err(e) = std::fs::File::open(path) {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            return Err(permission(
                path,
                format!("this user may not read {}", path.display()),
            ));
        }
        return Err(OutboxError::from_sqlite_at_open(path, err));
    }
    let wal = sibling(path, "-wal");
    if !wal.exists() {
        let uri = format!("file:{}?immutable=1", uri_path(path));
        return Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)
            .and_then(probe)
            .map_err(|e| OutboxError::from_sqlite_at_open(path, e));
    }
    let shm = sibling(path, "-shm");
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Err(permission(
        path,
        format!(
            "its write-ahead log {} holds committed rows, and reading them needs write access \
             to {} (or to {}, to create it), which this user lacks",
            wal.display(),
            shm.display(),
            dir.display()
        ),
    ))
}

/// A read that makes SQLite open the WAL index: the error, if any, shows now.
fn probe(c: Connection) -> rusqlite::Result<Connection> {
    c.busy_timeout(Duration::from_secs(5))?;
    c.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
        r.get::<_, i64>(0)
    })?;
    Ok(c)
}

fn permission(path: &Path, detail: String) -> OutboxError {
    OutboxError::Permission {
        path: path.to_path_buf(),
        detail,
    }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// `path` for a `file:` URI: `%`, `?` and `#` percent-encoded (RFC 3986, as SQLite reads it).
fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3f"),
            '#' => out.push_str("%23"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_paths_escape_what_sqlite_would_read_as_query_or_fragment() {
        assert_eq!(
            uri_path(Path::new("/var/lib/weir/outbox.db")),
            "/var/lib/weir/outbox.db"
        );
        assert_eq!(uri_path(Path::new("/a%b?c#d")), "/a%25b%3fc%23d");
    }
}
