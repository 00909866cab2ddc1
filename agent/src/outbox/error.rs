//! Outbox errors, shaped by what the caller decides: fix the directory, move the file aside,
//! free space, wait for a writable disk, retry, or give up because the outbox thread is gone.

use std::path::{Path, PathBuf};

use rusqlite::ErrorCode;

/// Why an outbox operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The database file cannot be opened or created.
    #[error(
        "cannot open the outbox database {path}: {source}; check that its directory exists and \
         that the directory's permissions let the weir user create and write files there"
    )]
    Open {
        /// The database file.
        path: PathBuf,
        /// What SQLite reported.
        source: rusqlite::Error,
    },
    /// The file is not a SQLite database, or is damaged.
    #[error(
        "the outbox database {path} is corrupt ({detail}). Check it with `weir outbox verify \
         --db {path}`. To start with an empty outbox, stop weir and move the file aside (with \
         its -wal and -shm siblings): a fresh one is created at the next start, and the messages \
         still in the old file are then not delivered (keep the copy to inspect or recover them, \
         e.g. with sqlite3's .recover)"
    )]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What SQLite or the integrity check reported.
        detail: String,
    },
    /// The file was written by a newer Weir whose schema this build does not know.
    #[error(
        "the outbox database {path} has schema version {found}, newer than the {supported} this \
         weir understands; upgrade weir, or move the file aside to start an empty outbox"
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// `user_version` found in the file.
        found: i64,
        /// The newest schema version this build understands.
        supported: i64,
    },
    /// The disk (or SQLite's page limit) is full; nothing of the failed operation was written.
    #[error("the disk holding the outbox database {path} is full; free space or lower max_bytes")]
    DiskFull {
        /// The database file.
        path: PathBuf,
    },
    /// The file or its filesystem is read-only.
    #[error(
        "the outbox database {path} is read-only; check the file's and its directory's \
         permissions and that the filesystem is mounted read-write"
    )]
    ReadOnly {
        /// The database file.
        path: PathBuf,
    },
    /// Any other SQLite failure (busy beyond the timeout, I/O error, ...).
    #[error("outbox database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The outbox thread has stopped; no further commands can run.
    #[error("the outbox thread has stopped")]
    Closed,
}

impl OutboxError {
    /// Maps a SQLite error met while using the database at `path` to what the caller can act on.
    pub(crate) fn from_sqlite(path: &Path, err: rusqlite::Error) -> Self {
        let path = path.to_path_buf();
        match err.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => OutboxError::DiskFull { path },
            Some(ErrorCode::ReadOnly) => OutboxError::ReadOnly { path },
            Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => {
                OutboxError::Corrupt {
                    path,
                    detail: err.to_string(),
                }
            }
            _ => OutboxError::Sqlite(err),
        }
    }

    /// Like [`OutboxError::from_sqlite`], for errors met while opening: failing to open or
    /// create the file at all becomes [`OutboxError::Open`].
    pub(crate) fn from_sqlite_at_open(path: &Path, err: rusqlite::Error) -> Self {
        match err.sqlite_error_code() {
            Some(ErrorCode::CannotOpen) | Some(ErrorCode::PermissionDenied) => OutboxError::Open {
                path: path.to_path_buf(),
                source: err,
            },
            _ => Self::from_sqlite(path, err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite_failure(code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn sqlite_full_maps_to_disk_full() {
        let e = OutboxError::from_sqlite(Path::new("/x.db"), sqlite_failure(13));
        assert!(matches!(e, OutboxError::DiskFull { .. }), "{e:?}");
    }

    #[test]
    fn sqlite_readonly_maps_to_read_only_naming_the_file() {
        let e = OutboxError::from_sqlite(Path::new("/x.db"), sqlite_failure(8));
        assert!(matches!(e, OutboxError::ReadOnly { .. }), "{e:?}");
        assert!(e.to_string().contains("/x.db"));
    }

    #[test]
    fn cantopen_maps_to_open_only_while_opening() {
        let at_open = OutboxError::from_sqlite_at_open(Path::new("/x.db"), sqlite_failure(14));
        assert!(matches!(at_open, OutboxError::Open { .. }), "{at_open:?}");
        let later = OutboxError::from_sqlite(Path::new("/x.db"), sqlite_failure(14));
        assert!(matches!(later, OutboxError::Sqlite(_)), "{later:?}");
    }

    #[test]
    fn busy_stays_a_plain_sqlite_error() {
        let e = OutboxError::from_sqlite(Path::new("/x.db"), sqlite_failure(5));
        assert!(matches!(e, OutboxError::Sqlite(_)), "{e:?}");
    }
}
