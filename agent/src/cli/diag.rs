//! `weir diag [-o FILE]`: one tar.gz a technician can mail to support, answering "what is
//! this device, how is it configured, what does it say about itself, what did it log".
//!
//! Everything that asks the daemon or the outbox runs this very binary
//! (`std::env::current_exe()`) with the public subcommands (`status --json`, `outbox stats
//! --json`, `config check`, `sensors list --json`), so the bundle holds exactly what a
//! technician would see, and diag depends on no daemon internals. A section that fails (no
//! daemon, no journal, a subcommand this build lacks) is recorded with its error and exit code
//! in the bundle; it never aborts the bundle. `MANIFEST.txt` lists every file and how it was got.
//!
//! Secrets: the configuration is copied with the value of every key that names a secret
//! (`password`, `secret`, `token`, `psk`, `passphrase`; not `password_file` and `password_env`,
//! which are a path and a variable name) replaced by `[redacted]`. Password files are never
//! read. Those values, and the value of the variable `password_env` names, are also scrubbed
//! from every other file of the bundle (a config error may quote its line). Usernames stay: an
//! "not authorised" from the broker is often the wrong user, and a user name is not a secret.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{DiagArgs, exit};
use crate::config::Config;

/// A subcommand or `journalctl` that takes longer than this is killed and recorded as such.
const SECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Keys whose values are secrets (matched case-insensitively as part of the key name).
const SECRET_WORDS: [&str; 5] = ["password", "secret", "token", "psk", "passphrase"];

/// Files of the bundle, in order, and the manifest lines saying how each was got.
#[derive(Default)]
struct Bundle {
    files: Vec<(String, Vec<u8>)>,
    manifest: Vec<String>,
}

impl Bundle {
    fn add(&mut self, name: &str, data: Vec<u8>, how: String) {
        self.manifest.push(format!("{name}: {how}"));
        self.files.push((name.to_string(), data));
    }

    /// Runs `weir <args>` (this binary) or another program and records its output.
    fn command(&mut self, name: &str, program: &Path, args: &[&str]) {
        let shown = format!(
            "{} {}",
            program.file_name().map_or_else(
                || program.display().to_string(),
                |n| n.to_string_lossy().into_owned()
            ),
            args.join(" ")
        );
        match run(program, args, SECTION_TIMEOUT) {
            Ok((code, stdout, stderr)) => {
                let status = code.map_or("killed after the timeout".to_string(), |c| {
                    format!("exit {c}")
                });
                let mut how = format!("`{shown}`: {status}");
                if !stderr.is_empty() {
                    let err_name = format!("{name}.stderr");
                    how.push_str(&format!(", standard error in {err_name}"));
                    self.files.push((err_name, stderr));
                }
                self.add(name, stdout, how);
            }
            Err(e) => self.add(name, Vec::new(), format!("`{shown}`: could not run: {e}")),
        }
    }
}

/// Runs `program args`, capturing both outputs (read on threads, so a chatty program never
/// blocks on a full pipe); `None` as the code when it was killed at `timeout`.
fn run(
    program: &Path,
    args: &[&str],
    timeout: Duration,
) -> std::io::Result<(Option<i32>, Vec<u8>, Vec<u8>)> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let drain = |p: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = p {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let start = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status.code().unwrap_or(-1));
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok((
        code,
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    ))
}

/// `weir diag`: exit 0 when the bundle is written (whatever its sections say), 1 when it
/// cannot be.
pub fn diag(args: &DiagArgs, out: &mut impl Write, err: &mut impl Write) -> u8 {
    let now = SystemTime::now();
    let cfg = Config::load(&args.config).ok();
    let stamp = humantime::format_rfc3339_seconds(now)
        .to_string()
        .replace(':', "-");
    let device = cfg.as_ref().map_or("unknown", |c| c.device.as_str());
    let base = format!("weir-diag-{device}-{stamp}");
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{base}.tar.gz")));

    let (bundle, secrets) = collect(&args.config, cfg.as_ref());
    let scrubbed: Vec<(String, Vec<u8>)> = bundle
        .files
        .into_iter()
        .map(|(n, d)| (n, scrub(&d, &secrets)))
        .chain(std::iter::once((
            "MANIFEST.txt".to_string(),
            scrub(manifest_text(&bundle.manifest).as_bytes(), &secrets),
        )))
        .collect();
    let mtime = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    match write_tar_gz(&output, &base, &scrubbed, mtime) {
        Ok(bytes) => {
            let _ = writeln!(
                out,
                "wrote {} ({bytes} bytes, {} files). The values of configuration keys naming \
                 a password, secret, token, psk or passphrase (commented-out ones too) are \
                 redacted, and so is each such value wherever else it appears; it still holds \
                 the configuration and logs: look through it, and share it with support only",
                output.display(),
                scrubbed.len()
            );
            exit::OK
        }
        Err(e) => {
            let _ = writeln!(err, "error: cannot write {}: {e}", output.display());
            exit::FAILURE
        }
    }
}

fn manifest_text(lines: &[String]) -> String {
    let mut s = format!(
        "weir diag bundle, weir {}\nEach file and how it was got:\n",
        env!("CARGO_PKG_VERSION")
    );
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
    s
}

/// Every section, and the secret values to scrub from all of them.
fn collect(config: &Path, cfg: Option<&Config>) -> (Bundle, Vec<String>) {
    let mut b = Bundle::default();
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("weir"));
    let c = config.to_string_lossy().into_owned();
    b.add(
        "version.txt",
        format!(
            "weir {}\nos {} arch {}\nexecutable {}\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::env::consts::ARCH,
            exe.display()
        )
        .into_bytes(),
        "this binary's version and target".into(),
    );
    let mut secrets = Vec::new();
    match std::fs::read_to_string(config) {
        Ok(text) => {
            let (redacted, found) = redact(&text);
            secrets = found;
            b.add(
                "config.toml",
                redacted.into_bytes(),
                format!("{c} with secret values redacted"),
            );
        }
        Err(e) => b.add("config.toml", Vec::new(), format!("cannot read {c}: {e}")),
    }
    b.command("config-check.txt", &exe, &["config", "check", &c]);
    b.command("status.json", &exe, &["status", "--json", "--config", &c]);
    b.command(
        "outbox-stats.json",
        &exe,
        &["outbox", "stats", "--json", "--config", &c],
    );
    b.command(
        "sensors.json",
        &exe,
        &["sensors", "list", "--json", "--config", &c],
    );
    match cfg {
        Some(cfg) => {
            let health = crate::source::devices::health_file(&cfg.state_dir);
            match std::fs::read(&health) {
                Ok(d) => b.add(
                    "sensor-health.json",
                    d,
                    format!("copy of {}", health.display()),
                ),
                Err(e) => b.add(
                    "sensor-health.json",
                    Vec::new(),
                    format!("cannot read {}: {e}", health.display()),
                ),
            }
            b.add(
                "disk.txt",
                disk_text(&cfg.state_dir).into_bytes(),
                format!("statvfs of the state directory {}", cfg.state_dir.display()),
            );
        }
        None => {
            let why = "skipped: the configuration does not load (see config-check.txt)";
            b.add("sensor-health.json", Vec::new(), why.into());
            b.add("disk.txt", Vec::new(), why.into());
        }
    }
    b.command(
        "journal.txt",
        Path::new("journalctl"),
        &["-u", "weir", "-n", "2000", "--no-pager"],
    );
    b.command("uname.txt", Path::new("uname"), &["-a"]);
    match std::fs::read("/etc/os-release") {
        Ok(d) => b.add("os-release.txt", d, "copy of /etc/os-release".into()),
        Err(e) => b.add(
            "os-release.txt",
            Vec::new(),
            format!("cannot read /etc/os-release: {e}"),
        ),
    }
    (b, secrets)
}

fn disk_text(dir: &Path) -> String {
    match rustix::fs::statvfs(dir) {
        Ok(s) => {
            let free = s.f_bavail.saturating_mul(s.f_frsize);
            let total = s.f_blocks.saturating_mul(s.f_frsize);
            format!(
                "{}: {} KiB free of {} KiB\n",
                dir.display(),
                free / 1024,
                total / 1024
            )
        }
        Err(e) => format!("{}: statvfs failed: {e}\n", dir.display()),
    }
}

/// Whether a TOML key names a secret (`password_file` and `password_env` do not: a path and a
/// variable name).
fn is_secret_key(key: &str) -> bool {
    let k = key.trim().trim_matches(['"', '\'']).to_ascii_lowercase();
    let k = k.rsplit('.').next().unwrap_or(&k).trim().to_string();
    !k.ends_with("_file") && !k.ends_with("_env") && SECRET_WORDS.iter().any(|w| k.contains(w))
}

/// The configuration text with every secret value replaced by `"[redacted]"`, line by line so
/// that a file that is not valid TOML (the one a technician most needs help with) is redacted
/// too, and line numbers stay those of the original. Also returns the secret values found, and
/// the values of the variables `password_env` names, for [`scrub`].
fn redact(text: &str) -> (String, Vec<String>) {
    let mut secrets = Vec::new();
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        out.push_str(&redact_line(line, &mut secrets));
    }
    (out, secrets)
}

/// Redacts each `key = value` of one line whose key is a secret, including keys inside an
/// inline table (`credentials = { password = "x" }`).
///
/// Comments are redacted too: a commented-out `# password = "old"` is as secret as a
/// live one. The text after a `#` is read as if it were uncommented.
fn redact_line(line: &str, secrets: &mut Vec<String>) -> String {
    if line.trim_start().starts_with('#') {
        let body = line.trim_start_matches(|c: char| c == '#' || c.is_whitespace());
        let prefix = &line[..line.len() - body.len()];
        return format!("{prefix}{}", redact_line(body, secrets));
    }
    let mut out = String::new();
    let mut rest = line;
    // Each round: the text up to an '=', the key before it, the value after it.
    while let Some(eq) = find_unquoted(rest, '=') {
        let (head, tail) = rest.split_at(eq);
        let key_start = head.rfind(['{', ',', '\n']).map_or(0, |i| i + 1);
        let key = &head[key_start..];
        out.push_str(head);
        out.push('=');
        let after = &tail[1..];
        let ws = after.len() - after.trim_start().len();
        out.push_str(&after[..ws]);
        let value_text = &after[ws..];
        let vlen = value_len(value_text);
        let value = &value_text[..vlen];
        if key.trim().ends_with("password_env") {
            let var = value.trim_matches(['"', '\'']);
            if let Ok(v) = std::env::var(var) {
                secrets.push(v);
            }
        }
        if is_secret_key(key) {
            let bare = value.trim_matches(['"', '\'']);
            if !bare.is_empty() {
                secrets.push(bare.to_string());
            }
            out.push_str("\"[redacted]\"");
        } else {
            out.push_str(value);
        }
        rest = &value_text[vlen..];
    }
    // A comment after the last value (find_unquoted stops at it).
    match comment_start(rest) {
        Some(h) => {
            out.push_str(&rest[..h]);
            out.push_str(&redact_line(&rest[h..], secrets));
        }
        None => out.push_str(rest),
    }
    out
}

/// Byte offset of a `#` outside quotes.
fn comment_start(s: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    for (i, ch) in s.char_indices() {
        match quote {
            Some(q) if ch == q => quote = None,
            Some(_) => {}
            None if ch == '"' || ch == '\'' => quote = Some(ch),
            None if ch == '#' => return Some(i),
            None => {}
        }
    }
    None
}

/// Byte offset of the first `c` outside quotes.
fn find_unquoted(s: &str, c: char) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, ch) in s.char_indices() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if ch == '\\' && q == '"' {
                    escaped = true;
                } else if ch == q {
                    quote = None;
                }
            }
            None if ch == '"' || ch == '\'' => quote = Some(ch),
            None if ch == '#' => return None,
            None if ch == c => return Some(i),
            None => {}
        }
    }
    None
}

/// Length of the value at the start of `s`: a quoted string (to its closing quote), the
/// opening bracket of an inline table or array, or up to the next `,`, `}`, `#` or end of line.
fn value_len(s: &str) -> usize {
    let mut chars = s.char_indices();
    match chars.next() {
        // An inline table or array: only its bracket, so its own keys are looked at next.
        Some((_, '{' | '[')) => 1,
        Some((_, q)) if q == '"' || q == '\'' => {
            let mut escaped = false;
            for (i, ch) in chars {
                if escaped {
                    escaped = false;
                } else if ch == '\\' && q == '"' {
                    escaped = true;
                } else if ch == q {
                    return i + 1;
                }
            }
            // Unterminated: the rest of the line, without its newline.
            s.trim_end_matches(['\n', '\r']).len()
        }
        _ => s.find([',', '}', '#', '\n', '\r']).unwrap_or(s.len()),
    }
}

/// `data` with every secret (of 4 characters or more: shorter ones would mangle unrelated
/// text) replaced by `[redacted]`.
fn scrub(data: &[u8], secrets: &[String]) -> Vec<u8> {
    let mut d = data.to_vec();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        let needle = s.as_bytes();
        let mut out = Vec::with_capacity(d.len());
        let mut i = 0;
        while i < d.len() {
            if d[i..].starts_with(needle) {
                out.extend_from_slice(b"[redacted]");
                i += needle.len();
            } else {
                out.push(d[i]);
                i += 1;
            }
        }
        d = out;
    }
    d
}

/// Writes the files under `base/` into a gzip'd tar at `path` (mode 0600: it holds the
/// configuration); returns its size.
fn write_tar_gz(
    path: &Path,
    base: &str,
    files: &[(String, Vec<u8>)],
    mtime: u64,
) -> std::io::Result<u64> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        h.set_mtime(mtime);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        tar.append_data(&mut h, format!("{base}/{name}"), data.as_slice())?;
    }
    let gz = tar.into_inner()?;
    gz.finish()?.sync_all()?;
    Ok(std::fs::metadata(path)?.len())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn secret_values_are_redacted_and_paths_names_and_users_kept() {
        let text = "[uplink]\nusername = \"pi\"\npassword_file = \"/etc/weir/pw\"\n\
                    password = \"hunter2, yes\" # inline\ncreds = { token = 'abc123', user = \"u\" }\n\
                    # password = \"in a comment\"\n";
        let (out, secrets) = redact(text);
        assert_eq!(
            out,
            "[uplink]\nusername = \"pi\"\npassword_file = \"/etc/weir/pw\"\n\
             password = \"[redacted]\" # inline\ncreds = { token = \"[redacted]\", user = \"u\" }\n\
             # password = \"[redacted]\"\n"
        );
        assert_eq!(secrets, ["hunter2, yes", "abc123", "in a comment"]);
    }

    #[test]
    fn secrets_in_comments_are_redacted_too() {
        let text = "#password = \"old-one\"\n  ## token='tk-old'\nport = 1 # was: psk = \"k3y!\"\n\
                    # see the manual = kept\nhost = \"a#b\" # password = 'x1234'\n";
        let (out, secrets) = redact(text);
        assert_eq!(
            out,
            "#password = \"[redacted]\"\n  ## token=\"[redacted]\"\nport = 1 # was: psk = \"[redacted]\"\n\
             # see the manual = kept\nhost = \"a#b\" # password = \"[redacted]\"\n"
        );
        assert_eq!(secrets, ["old-one", "tk-old", "k3y!", "x1234"]);
    }

    #[test]
    fn an_unterminated_secret_is_redacted_to_the_end_of_its_line() {
        let (out, secrets) = redact("password = \"oops\nport = 1\n");
        assert_eq!(out, "password = \"[redacted]\"\nport = 1\n");
        assert_eq!(secrets, ["oops"]);
    }

    #[test]
    fn scrubbing_replaces_every_occurrence_of_a_secret() {
        let out = scrub(
            b"line 4: password = \"s3cret\" (s3cret)",
            &["s3cret".into()],
        );
        assert_eq!(out, b"line 4: password = \"[redacted]\" ([redacted])");
    }

    #[test]
    fn the_bundle_lists_each_file_under_its_directory() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("b.tar.gz");
        let files = vec![("a.txt".to_string(), b"hello".to_vec())];
        write_tar_gz(&path, "weir-diag-x", &files, 0).unwrap();
        let gz = flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap());
        let mut ar = tar::Archive::new(gz);
        let names: Vec<_> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["weir-diag-x/a.txt"]);
    }

    #[test]
    fn a_section_that_cannot_run_is_recorded_not_fatal() {
        let mut b = Bundle::default();
        b.command("x.txt", Path::new("/nonexistent/program"), &["a"]);
        assert_eq!(b.files.len(), 1);
        // Natively the spawn fails (ENOENT); under qemu-user (CI's ARM runs) the
        // emulator starts and exits 127, the shell's "command not found".
        let m = &b.manifest[0];
        assert!(
            m.contains("could not run") || m.contains("exit 127"),
            "{:?}",
            b.manifest
        );
    }
}
