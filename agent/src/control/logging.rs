//! Logging for `weir run`: to journald when systemd runs it (with each event's fields as
//! journal fields), to standard error otherwise; the filter replaceable at run time
//! (`weir log-level`) through tracing-subscriber's reload layer.
//!
//! systemd sets `JOURNAL_STREAM=<device>:<inode>` for a service whose standard error goes
//! to the journal; as systemd.exec(5) advises, it only counts when it matches standard
//! error itself (a child that inherited the variable but writes elsewhere does not).

use std::sync::Mutex;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// Changes the log filter of the running process.
pub struct LogControl {
    handle: Option<reload::Handle<EnvFilter, Registry>>,
    current: Mutex<String>,
    /// Where logs go: `journald` or `stderr`.
    pub target: &'static str,
}

impl std::fmt::Debug for LogControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogControl")
            .field("current", &self.current())
            .field("target", &self.target)
            .finish()
    }
}

impl LogControl {
    /// A control for a process whose logging was set up elsewhere (tests): changes
    /// nothing but remembers the filter.
    pub fn detached(filter: &str) -> Self {
        Self {
            handle: None,
            current: Mutex::new(filter.into()),
            target: "stderr",
        }
    }

    /// The filter in force.
    pub fn current(&self) -> String {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the filter; returns the old one. An invalid filter changes nothing.
    pub fn set(&self, filter: &str) -> Result<String, String> {
        let new =
            EnvFilter::try_new(filter).map_err(|e| format!("invalid filter {filter:?}: {e}"))?;
        if let Some(h) = &self.handle {
            h.reload(new).map_err(|e| e.to_string())?;
        }
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        Ok(std::mem::replace(&mut *cur, filter.into()))
    }
}

/// Whether `journal_stream` (the value of `JOURNAL_STREAM`) names the file whose
/// device and inode are `stderr`.
pub fn is_journal_stream(journal_stream: Option<&str>, stderr: Option<(u64, u64)>) -> bool {
    let (Some(v), Some((dev, ino))) = (journal_stream, stderr) else {
        return false;
    };
    let mut parts = v.trim().splitn(2, ':');
    let d = parts.next().and_then(|d| d.parse::<u64>().ok());
    let i = parts.next().and_then(|i| i.parse::<u64>().ok());
    d == Some(dev) && i == Some(ino)
}

/// Device and inode of standard error.
fn stderr_id() -> Option<(u64, u64)> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Installs the global subscriber with `filter` (falling back to `info` when invalid).
pub fn init(filter: &str) -> LogControl {
    let (filter, text) = match EnvFilter::try_new(filter) {
        Ok(f) => (f, filter.to_string()),
        Err(_) => (EnvFilter::new("info"), "info".to_string()),
    };
    let (layer, handle) = reload::Layer::new(filter);
    let journal = is_journal_stream(std::env::var("JOURNAL_STREAM").ok().as_deref(), stderr_id())
        .then(tracing_journald::layer)
        .and_then(Result::ok);
    let target = if journal.is_some() {
        "journald"
    } else {
        "stderr"
    };
    let fmt = journal.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
    });
    let _ = tracing_subscriber::registry()
        .with(layer)
        .with(journal)
        .with(fmt)
        .try_init();
    LogControl {
        handle: Some(handle),
        current: Mutex::new(text),
        target,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_is_used_only_when_journal_stream_names_stderr() {
        assert!(is_journal_stream(Some("8:1234"), Some((8, 1234))));
        assert!(!is_journal_stream(Some("8:1234"), Some((8, 99))));
        assert!(!is_journal_stream(Some("garbage"), Some((8, 1234))));
        assert!(!is_journal_stream(None, Some((8, 1234))));
        assert!(!is_journal_stream(Some("8:1234"), None));
    }

    #[test]
    fn setting_a_filter_returns_the_old_one_and_an_invalid_one_changes_nothing() {
        let c = LogControl::detached("info");
        assert_eq!(c.set("weir=debug"), Ok("info".to_string()));
        assert_eq!(c.current(), "weir=debug");
        assert!(c.set("weir=loud").is_err());
        assert_eq!(c.current(), "weir=debug");
    }
}
