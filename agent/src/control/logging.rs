//! Logging for `weir run`: to journald when systemd runs it (with each event's fields as
//! journal fields), to standard error otherwise; the filter replaceable at run time
//! (`weir log-level`) through tracing-subscriber's reload layer.
//!
//! systemd sets `JOURNAL_STREAM=<device>:<inode>` for a service whose standard error goes
//! to the journal; as systemd.exec(5) advises, it only counts when it matches standard
//! error itself (a child that inherited the variable but writes elsewhere does not).

use std::sync::Mutex;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Registry, reload};

/// Changes the log filter of the running process.
pub struct LogControl {
    handle: Option<reload::Handle<Targets, Registry>>,
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
    /// Level names are normalised first ([`Filter::parse`]: `warning` is `warn`); the
    /// refusal of a filter that silences ERROR is the CLI's, which has the flag.
    pub fn set(&self, filter: &str) -> Result<String, String> {
        let filter = Filter::parse(filter, true)?.text;
        let filter = filter.as_str();
        let new: Targets = filter
            .parse()
            .map_err(|e| format!("invalid filter {filter:?}: {e}"))?;
        if let Some(h) = &self.handle {
            h.reload(new).map_err(|e| e.to_string())?;
        }
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        Ok(std::mem::replace(&mut *cur, filter.into()))
    }
}

/// A log filter as people type it, checked and normalised.
///
/// tracing's syntax reads a bare word that is not a level as a *target* name, and a
/// filter with no bare level turns everything else off: `warning` would silence every
/// line, ERROR included. So: a bare word must be a level (`error`, `warn` or
/// `warning`, `info`, `debug`, `trace`, `off`, any case), a target is written
/// `target=level`, and a filter that leaves ERROR off anywhere is refused unless it
/// says `off` (or the caller allows it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    /// The filter for tracing-subscriber's `Targets`, level names normalised.
    pub text: String,
    /// What it means, in words: which levels from where.
    pub meaning: String,
}

const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

fn level(word: &str) -> Option<&'static str> {
    let w = word.trim().to_ascii_lowercase();
    let w = if w == "warning" { "warn".to_owned() } else { w };
    LEVELS.iter().copied().find(|l| *l == w)
}

fn levels_from(level: &str) -> String {
    match level {
        "off" => "nothing".to_owned(),
        "error" => "ERROR".to_owned(),
        "trace" => "everything (TRACE and up)".to_owned(),
        l => format!("{} and up", l.to_ascii_uppercase()),
    }
}

impl Filter {
    /// Parses `input`; `allow_silence` accepts a filter that turns ERROR off without
    /// saying `off` (the CLI's `--allow-silence`).
    pub fn parse(input: &str, allow_silence: bool) -> Result<Self, String> {
        let mut global: Option<&'static str> = None;
        let mut parts = Vec::new();
        let mut targets = Vec::new();
        for d in input.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            match d.rsplit_once('=') {
                Some((target, lvl)) => {
                    let target = target.trim();
                    let l = level(lvl).ok_or_else(|| {
                        format!(
                            "{lvl:?} in {d:?} is not a level\n  fix: use one of error, warn (or warning), info, debug, trace, off"
                        )
                    })?;
                    if target.is_empty() {
                        return Err(format!(
                            "{d:?} names no target\n  fix: write target=level, e.g. weir::uplink=debug"
                        ));
                    }
                    parts.push(format!("{target}={l}"));
                    targets.push((target.to_owned(), l));
                }
                None => {
                    let l = level(d).ok_or_else(|| {
                        format!(
                            "{d:?} is not a level (tracing would read it as a module name and turn every other line off, errors included)\n  fix: use one of error, warn (or warning), info, debug, trace, off; for one module write module=level, e.g. \"info,weir::uplink=debug\""
                        )
                    })?;
                    if global.is_some() {
                        return Err(format!(
                            "{input:?} gives two levels for everything\n  fix: keep one, e.g. \"{l}\""
                        ));
                    }
                    global = Some(l);
                    parts.push(l.to_owned());
                }
            }
        }
        if parts.is_empty() {
            return Err("an empty filter turns every line off\n  fix: give a level, e.g. \"info\"; \"off\" to silence the log on purpose".to_owned());
        }
        if global.is_none() && !allow_silence {
            return Err(format!(
                "{input:?} sets no level for everything else, so every other line, ERROR included, would be off\n  fix: start with a level, e.g. \"warn,{input}\"; or \"off,{input}\" (or --allow-silence) to silence the rest on purpose"
            ));
        }
        let mut meaning: Vec<String> = targets
            .iter()
            .map(|(t, l)| format!("{} from {t}", levels_from(l)))
            .collect();
        let rest = if targets.is_empty() {
            "everything"
        } else {
            "everything else"
        };
        meaning.push(format!(
            "{} from {rest}",
            levels_from(global.unwrap_or("off"))
        ));
        Ok(Self {
            text: parts.join(","),
            meaning: meaning.join("; "),
        })
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

/// The filter a daemon starts with for `input` (`--log` / `WEIR_LOG`), and a
/// warning to log when it is not `input` as typed. As `weir log-level` does,
/// level names are normalised (`warning` is WARN, not a module); a filter that
/// sets no level for everything else keeps ERROR on for the rest (`weir=debug`
/// starts as `error,weir=debug`) unless it says `off,` itself; one that cannot
/// be read falls back to `info`. A daemon must start either way.
pub fn startup_filter(input: &str) -> (String, Option<String>) {
    if let Ok(f) = Filter::parse(input, false) {
        return (f.text, None);
    }
    match Filter::parse(input, true) {
        Ok(f) => {
            let text = format!("error,{}", f.text);
            let why = format!(
                "log filter {input:?} sets no level for everything else, which would turn ERROR off there: using {text:?} (write \"off,{input}\" to silence the rest on purpose)"
            );
            (text, Some(why))
        }
        Err(e) => (
            "info".to_owned(),
            Some(format!(
                "log filter {input:?} not used, \"info\" instead: {e}"
            )),
        ),
    }
}

/// Installs the global subscriber with `filter` (see [`startup_filter`]).
pub fn init(filter: &str) -> LogControl {
    let (normalised, warning) = startup_filter(filter);
    let filter = normalised.as_str();
    let (filter, text) = match filter.parse::<Targets>() {
        Ok(f) => (f, filter.to_string()),
        Err(_) => (
            Targets::new().with_default(tracing::Level::INFO),
            "info".to_string(),
        ),
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
            .with_ansi(colour(
                std::io::IsTerminal::is_terminal(&std::io::stderr()),
                std::env::var_os("NO_COLOR").as_deref(),
            ))
    });
    let _ = tracing_subscriber::registry()
        .with(layer)
        .with(journal)
        .with(fmt)
        .try_init();
    if let Some(w) = warning {
        tracing::warn!("{w}");
    }
    LogControl {
        handle: Some(handle),
        current: Mutex::new(text),
        target,
    }
}

/// Colours only on a terminal, and never when `NO_COLOR` is set to anything but the empty
/// string (<https://no-color.org>).
fn colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_startup_filter_never_turns_error_off_unless_it_says_off() {
        assert_eq!(
            startup_filter("info,weir=debug"),
            ("info,weir=debug".into(), None)
        );
        assert_eq!(startup_filter("warning"), ("warn".into(), None));
        let (text, why) = startup_filter("weir=debug,rumqttc=warn");
        assert_eq!(text, "error,weir=debug,rumqttc=warn");
        assert!(why.is_some_and(|w| w.contains("would turn ERROR off")));
        assert_eq!(
            startup_filter("off,weir=debug"),
            ("off,weir=debug".into(), None)
        );
        let (text, why) = startup_filter("loud");
        assert_eq!(text, "info");
        assert!(why.is_some_and(|w| w.contains("\"loud\" is not a level")));
    }

    #[test]
    fn colours_need_a_terminal_and_no_no_color() {
        use std::ffi::OsStr;
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
    }

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
        assert_eq!(c.set("WARNING"), Ok("weir=debug".to_string()));
        assert_eq!(c.current(), "warn");
    }

    #[test]
    fn the_level_names_people_type_are_accepted_and_normalised() {
        for (typed, text) in [
            ("warning", "warn"),
            ("warn", "warn"),
            ("Error", "error"),
            ("info", "info"),
            ("debug", "debug"),
            ("trace", "trace"),
            ("off", "off"),
            ("info,weir::uplink=warning", "info,weir::uplink=warn"),
        ] {
            assert_eq!(
                Filter::parse(typed, false).map(|f| f.text),
                Ok(text.into()),
                "{typed}"
            );
        }
    }

    #[test]
    fn a_filter_that_would_silence_errors_is_refused_unless_it_says_so() {
        // tracing reads a bare non-level word as a target: everything else off.
        let e = Filter::parse("loud", false).err().unwrap_or_default();
        assert!(e.contains("not a level") && e.contains("fix:"), "{e}");
        let e = Filter::parse("weir=debug", false).err().unwrap_or_default();
        assert!(
            e.contains("ERROR included") && e.contains("\"warn,weir=debug\""),
            "{e}"
        );
        assert!(Filter::parse("", false).is_err());
        assert!(Filter::parse("weir=debug", true).is_ok());
        assert!(Filter::parse("off,weir=debug", false).is_ok());
        assert!(Filter::parse("off", false).is_ok());
        assert!(Filter::parse("info,weir=loud", false).is_err());
    }

    #[test]
    fn every_accepted_filter_is_valid_for_tracing_and_keeps_errors_unless_off() {
        for f in ["warning", "error", "info,weir::uplink=debug", "off"] {
            let p = Filter::parse(f, false).unwrap_or_else(|e| panic!("{e}"));
            assert!(p.text.parse::<Targets>().is_ok(), "{}", p.text);
        }
        let f = Filter::parse("warning", false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.meaning, "WARN and up from everything");
        let f = Filter::parse("info,weir::uplink=debug", false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            f.meaning,
            "DEBUG and up from weir::uplink; INFO and up from everything else"
        );
        let f = Filter::parse("off", false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.meaning, "nothing from everything");
    }
}
