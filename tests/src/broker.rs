//! Mosquitto brokers for the tests: a private config and data directory each, on a free
//! loopback port, with the settings the README requires of a local broker (persistence, so
//! queued messages for an offline persistent session survive a restart;
//! `max_queued_messages 0`, so a stopped Weir loses nothing queued for it; and
//! `upgrade_outgoing_qos true`, so Weir's QoS 2 subscription gets QoS 2 deliveries).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, signal, wait_for};

/// A Mosquitto process with a private config and data directory.
pub struct Broker {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its mutual-TLS port, when started with [`Broker::with_tls`].
    pub tls_port: Option<u16>,
    dir: PathBuf,
    child: Option<Child>,
}

/// Certificates made for one test with the `openssl` command line.
pub struct Certs {
    /// The CA that signed the server and client certificates.
    pub ca: PathBuf,
    /// Server certificate (SAN 127.0.0.1 and localhost) and key.
    pub server: (PathBuf, PathBuf),
    /// Client certificate and key.
    pub client: (PathBuf, PathBuf),
    /// A CA that signed nothing here: trusting it must fail.
    pub other_ca: PathBuf,
}

impl Certs {
    /// Generates everything in `dir` (RSA 2048, valid two days).
    pub fn generate(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .unwrap_or_else(|e| panic!("openssl: {e}"));
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        for ca in ["ca", "other-ca"] {
            let (subj, key, crt) = (
                format!("/CN={ca}"),
                format!("{ca}.key"),
                format!("{ca}.crt"),
            );
            run(&[
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", &subj,
                "-keyout", &key, "-out", &crt,
            ]);
        }
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n")
            .unwrap_or_else(|e| panic!("{e}"));
        for who in ["server", "client"] {
            let (subj, key, csr) = (
                format!("/CN={who}"),
                format!("{who}.key"),
                format!("{who}.csr"),
            );
            let (ext, crt) = (format!("{who}.ext"), format!("{who}.crt"));
            run(&[
                "req", "-newkey", "rsa:2048", "-nodes", "-subj", &subj, "-keyout", &key, "-out",
                &csr,
            ]);
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &crt,
            ]);
        }
        // Readable by mosquitto after it drops root.
        let _ = Command::new("chmod")
            .arg("-R")
            .arg("a+rX")
            .arg(dir)
            .status();
        Self {
            ca: dir.join("ca.crt"),
            server: (dir.join("server.crt"), dir.join("server.key")),
            client: (dir.join("client.crt"), dir.join("client.key")),
            other_ca: dir.join("other-ca.crt"),
        }
    }
}

impl Broker {
    /// A broker (not yet started) that keeps its state in `dir`, with persistence
    /// so queued QoS 1 messages for offline persistent sessions survive a restart.
    pub fn new(dir: &Path, port: u16) -> Self {
        let dir = dir.join(format!("mosquitto-{port}"));
        std::fs::create_dir_all(dir.join("data")).unwrap_or_else(|e| panic!("{e}"));
        let conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {data}/\n\
             autosave_interval 1\nmax_queued_messages 0\nupgrade_outgoing_qos true\nlog_dest file {dir}/mosquitto.log\nlog_type error\nlog_type warning\nlog_type notice\n",
            data = dir.join("data").display(),
            dir = dir.display(),
        );
        std::fs::write(dir.join("mosquitto.conf"), conf).unwrap_or_else(|e| panic!("{e}"));
        // Started as root, mosquitto drops to the `mosquitto` user: it must own its files.
        let _ = Command::new("chown")
            .args(["-R", "mosquitto"])
            .arg(&dir)
            .status();
        Self {
            port,
            tls_port: None,
            dir,
            child: None,
        }
    }

    /// A broker with a plain listener and a second one that requires mutual TLS
    /// with `certs` (per-listener settings off: both share one topic space).
    pub fn with_tls(dir: &Path, certs: &Certs) -> Self {
        let mut b = Self::new(dir, free_port());
        let tls_port = free_port();
        b.configure(&format!(
            "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true",
            certs.ca.display(),
            certs.server.0.display(),
            certs.server.1.display()
        ));
        b.tls_port = Some(tls_port);
        b
    }

    /// Appends `lines` to the broker's `mosquitto.conf` (e.g. `message_size_limit 2048`),
    /// effective at the next [`Broker::start`].
    pub fn configure(&mut self, lines: &str) -> &mut Self {
        let conf = self.dir.join("mosquitto.conf");
        let mut text = std::fs::read_to_string(&conf).unwrap_or_else(|e| panic!("{e}"));
        text.push('\n');
        text.push_str(lines);
        text.push('\n');
        std::fs::write(&conf, text).unwrap_or_else(|e| panic!("{e}"));
        self
    }

    /// Starts a broker on a free port.
    pub fn start_new(dir: &Path) -> Self {
        let mut b = Self::new(dir, free_port());
        b.start();
        b
    }

    /// Starts the process and waits until it accepts connections.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start mosquitto (is it installed? scripts/test installs it): {e}")
            });
        self.child = Some(child);
        let up = wait_for(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()
        });
        assert!(
            up.is_some(),
            "mosquitto did not listen on {} within 10 s; log: {}",
            self.port,
            self.log()
        );
    }

    /// Stops it gracefully (SIGTERM: it saves its persistence file).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), "TERM");
            let _ = c.wait();
        }
    }

    /// Creates the persistent session `client_id` subscribed to `filter` (QoS 1) and
    /// disconnects: from here on the broker queues for it whatever matches, as a
    /// deployment's broker does for Weir's ingest or an upstream consumer.
    pub fn create_session(&self, client_id: &str, filter: &str) {
        crate::Recorder::persistent(self.port, filter, client_id).disconnect();
    }

    /// The broker's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
