//! `weir-dist <dir>`: writes the `weir(1)` man page and the bash, zsh and fish
//! completions into `<dir>`, generated from the very clap definition the binary
//! parses, so they cannot drift from it. Run on the build host by
//! `packaging/deb.sh`; the result is the same for every target architecture.
//!
//! A separate host tool rather than a hidden `weir` subcommand: the generators
//! stay out of the binary shipped to the Pi.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;
use weir::cli::Cli;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: weir-dist <output-dir>");
        return ExitCode::from(2);
    };
    match write_all(Path::new(&dir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir-dist: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write_all(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let cmd = Cli::command();

    // weir.1 and one page per subcommand (weir-run.1, weir-config-check.1, ...),
    // then what clap cannot know appended to the main page.
    clap_mangen::generate_to(cmd.clone(), dir)?;
    let mut main = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("weir.1"))?;
    main.write_all(FILES_SECTION.as_bytes())?;

    for (shell, file) in [
        (Shell::Bash, "weir.bash"),
        (Shell::Zsh, "_weir"),
        (Shell::Fish, "weir.fish"),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), "weir", &mut out);
        std::fs::write(dir.join(file), out)?;
    }
    Ok(())
}

const FILES_SECTION: &str = r#".SH FILES
.TP
/etc/weir/weir.toml
The configuration (a dpkg conffile). \fBweir config example\fR prints every key with its default; \fBweir config check\fR validates a file before \fBsystemctl reload weir\fR.
.TP
/var/lib/weir/outbox.db
The durable outbox (SQLite, WAL). Removed only by \fBapt purge weir\fR. \fBweir outbox verify\fR checks it, \fBweir outbox stats\fR, \fBpeek\fR and \fBexport\fR show what waits (read-only, safe while weir runs); \fBweir outbox purge\fR deletes old rows while weir is stopped and records it in the file.
.TP
/run/weir
The runtime directory (control socket).
.SH SIGNALS
SIGTERM and SIGINT stop cleanly: sources stop, results are committed, the backlog is delivered for \fBshutdown_grace\fR. SIGHUP reloads the configuration in process if it is valid, and otherwise keeps running and logs why.
.SH EXIT STATUS
0 success, 1 runtime failure, 2 bad command line (or \fBweir outbox purge\fR without \fB--yes\fR and no terminal to ask on), 65 bad data (a corrupt outbox database or one from a newer weir: see \fBweir outbox verify\fR; a payload \fBweir decode\fR cannot read), 73 read-only state directory, 75 try again later (\fBweir outbox purge\fR while weir runs), 78 invalid configuration.
.SH SEE ALSO
\fBsystemctl\fR(1), \fBjournalctl\fR(1), \fBsystemd.service\fR(5)
"#;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_pages_and_completions_cover_the_technician_commands() {
        let dir = tempfile::TempDir::new().unwrap();
        write_all(dir.path()).unwrap();
        for page in [
            "weir.1",
            "weir-outbox-stats.1",
            "weir-outbox-peek.1",
            "weir-outbox-export.1",
            "weir-outbox-purge.1",
            "weir-outbox-verify.1",
            "weir-diag.1",
            "weir-decode.1",
        ] {
            assert!(dir.path().join(page).exists(), "{page} missing");
        }
        let purge = std::fs::read_to_string(dir.path().join("weir-outbox-purge.1")).unwrap();
        assert!(purge.contains("older\\-than"), "{purge}");
        let bash = std::fs::read_to_string(dir.path().join("weir.bash")).unwrap();
        for word in ["stats", "peek", "export", "purge", "--older-than", "diag"] {
            assert!(bash.contains(word), "{word} not in the bash completion");
        }
        let zsh = std::fs::read_to_string(dir.path().join("_weir")).unwrap();
        assert!(zsh.contains("purge") && zsh.contains("diag"));
        let fish = std::fs::read_to_string(dir.path().join("weir.fish")).unwrap();
        assert!(fish.contains("purge") && fish.contains("diag"));
    }
}
