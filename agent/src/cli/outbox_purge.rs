//! `weir outbox purge --older-than DURATION`: delete old rows by hand, to make room on a full
//! disk or to give up on a backlog that will never be wanted.
//!
//! Refused while the daemon runs (its control socket answers): the daemon keeps the outbox's
//! byte totals in memory and would keep enforcing the budget against rows that are gone. Not
//! a `--force`: stopping the service for the seconds a purge takes is always possible, a
//! budget gone wrong is not visible until the disk fills. Asks before deleting on a terminal;
//! scripts say `--yes`. What was deleted is recorded in the database (`weir outbox stats`
//! lists it) and sent to the system log (`journalctl -t weir-outbox`).

use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use super::exit;
use super::outbox::{ClassArg, Target, fail, rfc3339};
use super::progress::Progress;
use crate::config::{CONTROL_SOCKET, Config};
use crate::outbox::Class;
use crate::outbox::inspect::{self, PurgeCounts, PurgeRequest};

/// The control socket of the default `[agent] runtime_dir`, tried when no configuration loads.
const DEFAULT_RUNTIME_DIR: &str = "/run/weir";

/// What the command line asked for.
#[derive(Clone, Copy, Debug)]
pub struct PurgeArgs {
    /// Rows produced longer ago than this go.
    pub older_than: Duration,
    /// Only this class.
    pub class: Option<ClassArg>,
    /// No question asked.
    pub yes: bool,
}

/// Whether a daemon answers on the control socket `cfg` names (or the default one).
fn running_daemon(cfg: Option<&Config>) -> Option<PathBuf> {
    let socket = cfg.map_or_else(
        || PathBuf::from(DEFAULT_RUNTIME_DIR).join(CONTROL_SOCKET),
        Config::control_socket,
    );
    UnixStream::connect(&socket).ok().map(|_| socket)
}

/// `weir outbox purge`: exit 0 when done (or nothing to do), 75 while weir runs, 2 when
/// unconfirmed, 1 when declined or on failure, 65 for a damaged file, 78 for a bad config.
pub fn purge(
    t: &Target<'_>,
    args: PurgeArgs,
    input: &mut dyn BufRead,
    out: &mut impl Write,
    err: &mut impl Write,
) -> u8 {
    let (path, cfg) = match t.resolve() {
        Ok(r) => r,
        Err((msg, code)) => {
            let _ = writeln!(err, "error: {msg}");
            return code;
        }
    };
    if let Some(socket) = running_daemon(cfg.as_ref()) {
        let _ = writeln!(
            err,
            "error: weir is running (its control socket {} answers). Stop it first \
             (`systemctl stop weir`), purge, then start it again: the daemon keeps the outbox's \
             byte accounting in memory and would not see the rows go.",
            socket.display()
        );
        return exit::BUSY;
    }
    if cfg.is_none() {
        // Only with `--db`: the socket checked is a guess, and a daemon with another
        // runtime_dir would not be seen. Say which one, so that a "purged" is not read as
        // "weir was not running".
        let _ = writeln!(
            err,
            "note: no configuration loaded from {}, so only the default control socket {}/{} \
             was checked for a running weir (nothing answers); if weir runs with another \
             [agent] runtime_dir, stop it first or name its file with --config",
            t.config.display(),
            DEFAULT_RUNTIME_DIR,
            CONTROL_SOCKET
        );
    }
    let now = crate::reading::now_ms();
    let older = i64::try_from(args.older_than.as_millis()).unwrap_or(i64::MAX);
    let req = PurgeRequest {
        cutoff_ms: now.saturating_sub(older),
        class: args.class.map(ClassArg::class),
        now_ms: now,
        by: &who(),
    };
    let mut conn = match inspect::open_for_purge(&path) {
        Ok(c) => c,
        Err(e) => return fail(&e, err),
    };
    let preview = match inspect::purge_preview(&conn, &path, req.cutoff_ms, req.class) {
        Ok(p) => p,
        Err(e) => return fail(&e, err),
    };
    let before = rfc3339(req.cutoff_ms);
    if preview.total_rows() == 0 {
        if t.json {
            let _ = writeln!(out, "{}", result_json(&preview, req.cutoff_ms));
        } else {
            let _ = writeln!(out, "nothing to purge: no rows produced before {before}");
        }
        return exit::OK;
    }
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            let _ = writeln!(
                err,
                "error: would delete {} rows; standard input is not a terminal to confirm on: \
                 add --yes",
                preview.total_rows()
            );
            return exit::USAGE;
        }
        let _ = write!(
            err,
            "{}: delete these rows, produced before {before}?\n{}[y/N] ",
            path.display(),
            table(&preview)
        );
        let _ = err.flush();
        let mut answer = String::new();
        let _ = input.read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES") {
            let _ = writeln!(err, "nothing deleted");
            return exit::FAILURE;
        }
    }
    let mut bar = Progress::new("purge", preview.total_rows());
    let done = inspect::purge(&mut conn, &path, &req, &mut |n| bar.set(n));
    bar.finish();
    let done = match done {
        Ok(d) => d,
        Err(e) => return fail(&e, err),
    };
    syslog(&format!(
        "purged {} rows ({} bytes) produced before {before} from {} by {}: {}",
        done.total_rows(),
        done.total_bytes(),
        path.display(),
        req.by,
        Class::ALL
            .iter()
            .map(|c| format!("{} {}", c.as_str(), done.rows[c.index()]))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if t.json {
        let _ = writeln!(out, "{}", result_json(&done, req.cutoff_ms));
    } else {
        let _ = write!(
            out,
            "purged {} ({}) produced before {before}:\n{}\
             recorded in {} (see `weir outbox stats`)\n",
            super::human::plural(done.total_rows(), "row", "rows"),
            super::human::bytes(done.total_bytes()),
            table(&done),
            path.display()
        );
    }
    exit::OK
}

fn table(c: &PurgeCounts) -> String {
    let mut s = format!("  {:<11} {:>9} {:>12}\n", "class", "rows", "bytes");
    for cl in Class::ALL {
        s.push_str(&format!(
            "  {:<11} {:>9} {:>12}\n",
            cl.as_str(),
            c.rows[cl.index()],
            super::human::bytes(c.bytes[cl.index()])
        ));
    }
    s
}

fn result_json(c: &PurgeCounts, cutoff_ms: i64) -> serde_json::Value {
    let classes: serde_json::Map<_, _> = Class::ALL
        .iter()
        .map(|cl| {
            let v = json!({"rows": c.rows[cl.index()], "bytes": c.bytes[cl.index()]});
            (cl.as_str().to_string(), v)
        })
        .collect();
    json!({
        "cutoff_ms": cutoff_ms,
        "purged": classes,
        "total": {"rows": c.total_rows(), "bytes": c.total_bytes()},
    })
}

/// Who runs the purge, for the record: the user behind sudo if any.
fn who() -> String {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".to_string())
}

/// One warning line to the system log (journald reads `/dev/log`); nothing when there is none.
fn syslog(msg: &str) {
    // <12>: facility user (1) * 8 + severity warning (4).
    let line = format!("<12>weir-outbox[{}]: {msg}", std::process::id());
    if let Ok(sock) = UnixDatagram::unbound() {
        let _ = sock.send_to(line.as_bytes(), "/dev/log");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_db_and_no_configuration_it_says_which_control_socket_it_checked() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let config = dir.path().join("absent.toml");
        let db = dir.path().join("absent.db");
        let t = Target {
            config: &config,
            db: Some(&db),
            json: false,
        };
        let args = PurgeArgs {
            older_than: Duration::from_secs(1),
            class: None,
            yes: true,
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = purge(&t, args, &mut std::io::empty(), &mut out, &mut err);
        let err = String::from_utf8_lossy(&err);
        if code == exit::BUSY {
            // A weir installed on this machine answers there: the refusal names the socket.
            assert!(err.contains("/run/weir/control.sock"), "{err}");
            return;
        }
        assert!(
            err.starts_with(&format!(
                "note: no configuration loaded from {}, so only the default control socket \
                 /run/weir/control.sock was checked",
                config.display()
            )),
            "{err}"
        );
        // Then the missing file is what fails.
        assert_eq!(code, exit::FAILURE, "{err}");
        assert!(!db.exists());
    }
}
