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
    #[error(
        "the disk holding the outbox database {path} is full ({}); free space on that \
         filesystem, or lower [outbox] max_bytes so the outbox evicts before the disk fills",
        free_text(*.free_bytes)
    )]
    DiskFull {
        /// The database file.
        path: PathBuf,
        /// What the filesystem had free for us when the write was refused, if known.
        free_bytes: Option<u64>,
    },
    /// The file or its filesystem is read-only.
    #[error(
        "the outbox database {path} cannot be written: the file or its filesystem is \
         read-only. If the filesystem was remounted read-only after errors (ext4 \
         errors=remount-ro on a failing SD card; see `dmesg`), stop weir, repair it with fsck \
         or replace the card, and mount it read-write; otherwise make the file and its \
         directory writable by the weir user"
    )]
    ReadOnly {
        /// The database file.
        path: PathBuf,
    },
    /// This user may not read the database as it stands (a read-only tool run by a member
    /// of the weir group, say): a matter of file permissions, not of the disk.
    #[error(
        "cannot read the outbox database {path}: {detail}. This is a file permission matter, \
         not a disk fault: run the command as root or as the weir user (sudo -u weir weir ...), \
         or start weir and ask it (weir status)"
    )]
    Permission {
        /// The database file.
        path: PathBuf,
        /// Which permission is missing.
        detail: String,
    },
    /// Any other SQLite failure (busy beyond the timeout, I/O error, ...).
    #[error("outbox database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The outbox thread has stopped; no further commands can run.
    #[error("the outbox thread has stopped")]
    Closed,
    /// A committed checkpoint could not be made durable (the WAL's fsync failed): what it
    /// covers is not acknowledged.
    #[error("cannot make {path} durable: {detail}")]
    Sync {
        /// The database file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
}

/// What the filesystem under the database says when asked directly, because SQLite does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FsState {
    /// Creating a file beside the database failed with EROFS.
    pub read_only: bool,
    /// Bytes available to us on that filesystem, if the OS says.
    pub free_bytes: Option<u64>,
}

impl FsState {
    /// Asks the filesystem holding `db`. Only called after a failure: the probe creates and
    /// removes an empty file, which costs a metadata write on a healthy disk.
    pub(crate) fn probe(db: &Path) -> Self {
        // A file of its own, never the database: closing any descriptor of the database would
        // drop SQLite's POSIX locks on it.
        let mut probe = db.as_os_str().to_owned();
        probe.push("-probe");
        let read_only = match std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&probe)
        {
            Ok(_) => {
                let _ = std::fs::remove_file(&probe);
                false
            }
            Err(e) => e.kind() == std::io::ErrorKind::ReadOnlyFilesystem,
        };
        Self {
            read_only,
            free_bytes: free_bytes(db),
        }
    }
}

/// Bytes available to us on the filesystem holding the file `db`, if the OS says.
pub(crate) fn free_bytes(db: &Path) -> Option<u64> {
    let dir = db
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    rustix::fs::statvfs(dir)
        .ok()
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
}

fn free_text(free: Option<u64>) -> String {
    match free {
        Some(b) => format!("{} KiB free", b / 1024),
        None => "free space unknown".to_owned(),
    }
}

impl OutboxError {
    /// Maps a SQLite error met while using the database at `path` to what the caller can act on.
    pub(crate) fn from_sqlite(path: &Path, err: rusqlite::Error) -> Self {
        Self::classify(path, err, || FsState::probe(path))
    }

    /// Like [`OutboxError::from_sqlite`], for errors met while opening: failing to open or
    /// create the file at all becomes [`OutboxError::Open`], unless the filesystem is
    /// read-only.
    pub(crate) fn from_sqlite_at_open(path: &Path, err: rusqlite::Error) -> Self {
        Self::classify_at_open(path, err, || FsState::probe(path))
    }

    /// [`OutboxError::from_sqlite`] with the filesystem question answered by `fs`, asked only
    /// when SQLite's code leaves it open.
    ///
    /// A filesystem remounted read-only under a running process (ext4 `errors=remount-ro`)
    /// does not reach SQLite as SQLITE_READONLY: the write to the WAL fails with EROFS, which
    /// SQLite reports as SQLITE_IOERR (`disk I/O error`), and creating a file fails with
    /// SQLITE_CANTOPEN. SQLite keeps the errno to itself (only an unsafe FFI call returns it),
    /// so those two codes ask the filesystem. A full disk can also surface as SQLITE_IOERR
    /// (ENOSPC on an fsync); that stays [`OutboxError::Sqlite`], and the caller holds the
    /// batch for any error anyway.
    ///
    /// A value of the wrong type in a column (a REAL where the schema and this module only
    /// ever write integers, a BLOB topic, text that is not UTF-8) cannot be written by Weir:
    /// the file was damaged or edited, so it is [`OutboxError::Corrupt`] (exit 65 at start,
    /// `outbox_damaged` at run time), not a passing failure.
    pub(crate) fn classify(path: &Path, err: rusqlite::Error, fs: impl Fn() -> FsState) -> Self {
        let path = path.to_path_buf();
        if matches!(
            err,
            rusqlite::Error::InvalidColumnType(..)
                | rusqlite::Error::FromSqlConversionFailure(..)
                | rusqlite::Error::IntegralValueOutOfRange(..)
                | rusqlite::Error::Utf8Error(..)
        ) {
            return OutboxError::Corrupt {
                path,
                detail: format!("a value of the wrong type: {err}"),
            };
        }
        match err.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => OutboxError::DiskFull {
                free_bytes: fs().free_bytes,
                path,
            },
            Some(ErrorCode::ReadOnly) => OutboxError::ReadOnly { path },
            Some(ErrorCode::SystemIoFailure) | Some(ErrorCode::CannotOpen) if fs().read_only => {
                OutboxError::ReadOnly { path }
            }
            Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => {
                OutboxError::Corrupt {
                    path,
                    detail: err.to_string(),
                }
            }
            _ => OutboxError::Sqlite(err),
        }
    }

    pub(crate) fn classify_at_open(
        path: &Path,
        err: rusqlite::Error,
        fs: impl Fn() -> FsState,
    ) -> Self {
        match err.sqlite_error_code() {
            Some(ErrorCode::CannotOpen) | Some(ErrorCode::PermissionDenied) => {
                if fs().read_only {
                    OutboxError::ReadOnly {
                        path: path.to_path_buf(),
                    }
                } else {
                    OutboxError::Open {
                        path: path.to_path_buf(),
                        source: err,
                    }
                }
            }
            _ => Self::classify(path, err, fs),
        }
    }

    /// Why writing is blocked, for the status message: `disk_full`, `read_only`, `damaged`
    /// or `error`.
    pub fn blocked_reason(&self) -> &'static str {
        match self {
            OutboxError::DiskFull { .. } => "disk_full",
            OutboxError::ReadOnly { .. } => "read_only",
            OutboxError::Corrupt { .. } => "damaged",
            _ => "error",
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sqlite_failure(code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    const WRITABLE: FsState = FsState {
        read_only: false,
        free_bytes: Some(120 * 1024),
    };
    const READ_ONLY: FsState = FsState {
        read_only: true,
        free_bytes: Some(0),
    };

    fn not_asked() -> FsState {
        panic!("the filesystem was probed although SQLite's code was enough")
    }

    #[test]
    fn sqlite_full_maps_to_disk_full_naming_the_file_and_the_free_space() {
        let e = OutboxError::classify(Path::new("/x.db"), sqlite_failure(13), || WRITABLE);
        assert!(
            matches!(
                e,
                OutboxError::DiskFull {
                    free_bytes: Some(122_880),
                    ..
                }
            ),
            "{e:?}"
        );
        let text = e.to_string();
        assert!(
            text.contains("/x.db") && text.contains("120 KiB free"),
            "{text}"
        );
        assert_eq!(e.blocked_reason(), "disk_full");
    }

    #[test]
    fn sqlite_readonly_maps_to_read_only_naming_the_file_and_what_to_do() {
        let e = OutboxError::classify(Path::new("/x.db"), sqlite_failure(8), not_asked);
        assert!(matches!(e, OutboxError::ReadOnly { .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("/x.db") && text.contains("fsck"), "{text}");
        assert_eq!(e.blocked_reason(), "read_only");
    }

    #[test]
    fn an_io_error_on_a_read_only_filesystem_is_read_only() {
        // SQLITE_IOERR_WRITE and SQLITE_IOERR_FSYNC: what a WAL append and a checkpoint get
        // once ext4 has remounted itself read-only.
        for code in [778, 1034] {
            let e = OutboxError::classify(Path::new("/x.db"), sqlite_failure(code), || READ_ONLY);
            assert!(matches!(e, OutboxError::ReadOnly { .. }), "{code}: {e:?}");
        }
    }

    #[test]
    fn a_value_of_the_wrong_type_is_damage_not_a_passing_failure() {
        let real =
            rusqlite::Error::InvalidColumnType(1, "SUM(bytes)".into(), rusqlite::types::Type::Real);
        let e = OutboxError::classify(Path::new("/x.db"), real, not_asked);
        assert!(matches!(e, OutboxError::Corrupt { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains("/x.db") && text.contains("SUM(bytes)") && text.contains("verify"),
            "{text}"
        );
        assert_eq!(e.blocked_reason(), "damaged");
    }

    #[test]
    fn an_io_error_on_a_writable_filesystem_stays_a_plain_sqlite_error() {
        let e = OutboxError::classify(Path::new("/x.db"), sqlite_failure(778), || WRITABLE);
        assert!(matches!(e, OutboxError::Sqlite(_)), "{e:?}");
        assert_eq!(e.blocked_reason(), "error");
    }

    #[test]
    fn cantopen_on_a_read_only_filesystem_is_read_only_at_open_and_later() {
        let at_open =
            OutboxError::classify_at_open(Path::new("/x.db"), sqlite_failure(14), || READ_ONLY);
        assert!(
            matches!(at_open, OutboxError::ReadOnly { .. }),
            "{at_open:?}"
        );
        let later = OutboxError::classify(Path::new("/x.db"), sqlite_failure(14), || READ_ONLY);
        assert!(matches!(later, OutboxError::ReadOnly { .. }), "{later:?}");
    }

    #[test]
    fn cantopen_maps_to_open_only_while_opening() {
        let at_open =
            OutboxError::classify_at_open(Path::new("/x.db"), sqlite_failure(14), || WRITABLE);
        assert!(matches!(at_open, OutboxError::Open { .. }), "{at_open:?}");
        let later = OutboxError::classify(Path::new("/x.db"), sqlite_failure(14), || WRITABLE);
        assert!(matches!(later, OutboxError::Sqlite(_)), "{later:?}");
    }

    #[test]
    fn busy_stays_a_plain_sqlite_error_without_probing() {
        let e = OutboxError::classify(Path::new("/x.db"), sqlite_failure(5), not_asked);
        assert!(matches!(e, OutboxError::Sqlite(_)), "{e:?}");
    }

    #[test]
    fn the_probe_of_a_writable_directory_says_writable_and_leaves_nothing_behind() {
        let dir = tempfile::TempDir::new().unwrap();
        let db = dir.path().join("outbox.db");
        let fs = FsState::probe(&db);
        assert!(!fs.read_only);
        assert!(fs.free_bytes.is_some());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
