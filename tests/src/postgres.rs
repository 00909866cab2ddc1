//! A private PostgreSQL cluster for one test: `initdb` into a scratch directory, `pg_ctl`
//! on a free loopback port, trust authentication for the user `weir`, stopped (immediate)
//! when dropped. The binaries come from Debian's `postgresql` package (scripts/deps.sh
//! installs it); `WEIR_PG_BIN` names another directory holding `initdb`, `pg_ctl`, `psql`.
//!
//! PostgreSQL refuses to run as root: as root the cluster belongs to the `postgres` user the
//! package creates, and its commands run through `runuser`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::free_port;

/// A running PostgreSQL cluster.
pub struct Postgres {
    /// Its port on 127.0.0.1.
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    owner: Option<String>,
}

/// The directory with PostgreSQL's server binaries, if they are installed.
pub fn postgres_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WEIR_PG_BIN") {
        return Some(PathBuf::from(p));
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("initdb").exists() && b.join("pg_ctl").exists())
        .collect();
    // The highest major version.
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Postgres {
    /// Makes and starts a cluster under `<dir>/pg`; `None` when PostgreSQL is not installed
    /// (the caller skips, saying so).
    pub fn start(dir: &Path) -> Option<Self> {
        let bin = postgres_bin()?;
        let root = dir.join("pg");
        let data = root.join("data");
        std::fs::create_dir_all(&root).unwrap_or_else(|e| panic!("{e}"));
        let owner = is_root().then(|| "postgres".to_string());
        if let Some(o) = &owner {
            let st = Command::new("chown")
                .arg(o)
                .arg(&root)
                .status()
                .unwrap_or_else(|e| panic!("chown: {e}"));
            assert!(st.success(), "chown {o} {}", root.display());
        }
        let pg = Self {
            port: free_port(),
            bin,
            data,
            owner,
        };
        let out = pg.run(
            "initdb",
            &[
                "-D",
                &pg.data.display().to_string(),
                "-U",
                "weir",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections=50",
            pg.port,
            root.display()
        );
        let log = root.join("postgres.log").display().to_string();
        let out = pg.run(
            "pg_ctl",
            &[
                "-D",
                &pg.data.display().to_string(),
                "-l",
                &log,
                "-o",
                &opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}{}\nlog: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Some(pg)
    }

    fn run(&self, tool: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(tool);
        let mut cmd = match &self.owner {
            Some(o) => {
                let mut c = Command::new("runuser");
                c.args(["-u", o, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        // runuser keeps the working directory, which the cluster's owner may not enter.
        cmd.args(args)
            .current_dir("/")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()))
    }

    /// The connection string for `weir-sink --database`.
    pub fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=weir dbname=postgres",
            self.port
        )
    }

    /// Runs `sql` with psql; rows of fields split on `|` (NULL as empty).
    pub fn query(&self, sql: &str) -> Vec<Vec<String>> {
        self.try_query(sql)
            .unwrap_or_else(|e| panic!("psql {sql:?}: {e}"))
    }

    /// [`Postgres::query`], with psql's error as an `Err`.
    pub fn try_query(&self, sql: &str) -> Result<Vec<Vec<String>>, String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1"])
            .arg(self.url())
            .args(["-c", sql])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.split('|').map(str::to_string).collect())
            .collect())
    }

    /// A single number from `sql`.
    pub fn count(&self, sql: &str) -> i64 {
        let rows = self.query(sql);
        rows.first()
            .and_then(|r| r.first())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{sql:?} gave {rows:?}, not one number"))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data.display().to_string(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }
}
