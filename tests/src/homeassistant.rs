//! A real Home Assistant core for the discovery test: the venv `scripts/homeassistant.sh`
//! installs (`WEIR_HA_VENV`, default `/opt/weir-ha`), started with `--skip-pip` on a
//! private config directory whose MQTT config entry points at the test broker, reached
//! through its REST API with a token from its own onboarding flow.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::{free_port, signal, wait_for};

/// Where the install script puts the venv: `WEIR_HA_VENV`, else `/opt/weir-ha` (as
/// root) or `~/.cache/weir-ha`, whichever has one.
pub fn venv() -> PathBuf {
    if let Some(v) = std::env::var_os("WEIR_HA_VENV") {
        return PathBuf::from(v);
    }
    let user = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/weir-ha"));
    let system = PathBuf::from("/opt/weir-ha");
    match user {
        Some(u) if !system.exists() && u.exists() => u,
        _ => system,
    }
}

/// A running Home Assistant; stopped on drop.
pub struct HomeAssistant {
    child: Child,
    port: u16,
    token: String,
    log: PathBuf,
}

/// One HTTP/1.1 request on its own connection (`Connection: close`); `(status, body)`,
/// the body read to its `Content-Length`.
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut resp = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        if let Some(split) = resp.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&resp[..split]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if len.is_some_and(|n| resp.len() >= split + 4 + n) {
                break;
            }
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => resp.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
    let split = resp.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&resp[..split]).to_string();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, resp[split + 4..].to_vec()))
}

impl HomeAssistant {
    /// `None` when the venv is absent (the caller skips, saying so).
    pub fn start(dir: &Path, broker_port: u16) -> Option<Self> {
        let hass = venv().join("bin/hass");
        if !hass.exists() {
            return None;
        }
        let config = dir.join("ha");
        let storage = config.join(".storage");
        std::fs::create_dir_all(&storage).unwrap_or_else(|e| panic!("{e}"));
        let port = free_port();
        // No default_config (its discovery integrations would want the network); the
        // location is fixed so nothing is looked up.
        let yaml = format!(
            "homeassistant:\n  name: weir-test\n  latitude: 52.0\n  longitude: 4.0\n  elevation: 0\n  \
             unit_system: metric\n  time_zone: UTC\n  country: NL\n  currency: EUR\n\
             http:\n  server_host: 127.0.0.1\n  server_port: {port}\n\
             api:\nlogger:\n  default: warning\n  logs:\n    homeassistant.components.mqtt: debug\n"
        );
        std::fs::write(config.join("configuration.yaml"), yaml).unwrap_or_else(|e| panic!("{e}"));
        // Since 2022.3 the broker is a config entry, not YAML: written as HA stores it.
        let entries = json!({
            "version": 1, "minor_version": 1, "key": "core.config_entries",
            "data": { "entries": [{
                "entry_id": "weirtestmqtt0000000000000000000", "version": 1, "minor_version": 1,
                "domain": "mqtt", "title": "test broker",
                "data": { "broker": "127.0.0.1", "port": broker_port, "discovery": true,
                          "discovery_prefix": "homeassistant" },
                "options": {}, "pref_disable_new_entities": false, "pref_disable_polling": false,
                "source": "user", "unique_id": null, "disabled_by": null,
            }]},
        });
        std::fs::write(storage.join("core.config_entries"), entries.to_string())
            .unwrap_or_else(|e| panic!("{e}"));
        let log = dir.join("ha.log");
        let out = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}"));
        let err = out.try_clone().unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new(&hass)
            .args(["--skip-pip", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", hass.display()));
        let mut ha = Self {
            child,
            port,
            token: String::new(),
            log,
        };
        ha.token = ha.onboard();
        Some(ha)
    }

    /// Creates the owner through the onboarding API and trades the auth code for an
    /// access token, as the frontend does on a new installation.
    fn onboard(&mut self) -> String {
        let client = format!("http://127.0.0.1:{}/", self.port);
        let user = json!({ "client_id": client, "name": "Weir Test", "username": "weir",
                           "password": "weir-test-password", "language": "en" });
        let code = wait_for(Duration::from_secs(240), || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("Home Assistant exited ({status}):\n{}", self.log());
            }
            let (st, body) = http(
                self.port,
                "POST",
                "/api/onboarding/users",
                &[("Content-Type", "application/json")],
                user.to_string().as_bytes(),
            )?;
            if st != 200 {
                return None;
            }
            let v: Value = serde_json::from_slice(&body).ok()?;
            v["auth_code"].as_str().map(str::to_string)
        })
        .unwrap_or_else(|| {
            panic!(
                "Home Assistant's onboarding API did not answer:\n{}",
                self.log()
            )
        });
        let form = format!("grant_type=authorization_code&code={code}&client_id={client}");
        let (st, body) = http(
            self.port,
            "POST",
            "/auth/token",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            form.as_bytes(),
        )
        .unwrap_or_else(|| panic!("no answer from /auth/token"));
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        match (st, v["access_token"].as_str()) {
            (200, Some(t)) => t.to_string(),
            _ => panic!("/auth/token: {st} {}", String::from_utf8_lossy(&body)),
        }
    }

    /// GET with the token: `(status, JSON)`.
    pub fn get(&self, path: &str) -> Option<(u16, Value)> {
        let auth = format!("Bearer {}", self.token);
        let (st, body) = http(self.port, "GET", path, &[("Authorization", &auth)], b"")?;
        Some((st, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }

    /// Every entity's state (`/api/states`).
    pub fn states(&self) -> Vec<Value> {
        match self.get("/api/states") {
            Some((200, Value::Array(v))) => v,
            _ => Vec::new(),
        }
    }

    /// The entity whose friendly name is `name`, if Home Assistant has it.
    pub fn entity(&self, name: &str) -> Option<Value> {
        self.states()
            .into_iter()
            .find(|s| s["attributes"]["friendly_name"] == name)
    }

    /// Waits until `pred` holds for the entity named `name`; panics with what was seen.
    pub fn wait_entity(
        &self,
        name: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_for(timeout, || self.entity(name).filter(|e| pred(e))).unwrap_or_else(|| {
            let names: Vec<Value> = self.states().iter().map(|s| json!([s["entity_id"], s["state"], s["attributes"]["friendly_name"]])).collect();
            panic!("entity {name:?} never as expected; now: {:?}\nall: {names:?}\nHome Assistant log:\n{}", self.entity(name), self.log())
        })
    }

    /// Home Assistant's output so far.
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(60).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for HomeAssistant {
    fn drop(&mut self) {
        signal(self.child.id(), "TERM");
        let stopped = wait_for(Duration::from_secs(20), || {
            self.child.try_wait().ok().flatten()
        });
        if stopped.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
