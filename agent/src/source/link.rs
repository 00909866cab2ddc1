//! The ingest link's health: connected or not, since when, the last error, how
//! often it came back. The MQTT ingest client writes it with one call where a
//! connection comes up ([`IngestLink::up`], at CONNACK) and one where it is lost
//! ([`IngestLink::down`]); `weir status` (text, `--json`, exit code), the metrics
//! and the engine task read it. The engine counts the silence of MQTT keys from
//! [`LinkState::up_since_ms`]: while the link is down Weir cannot hear those
//! sensors, so their silence is not theirs.
//!
//! Invariants of [`LinkState`]: `since_ms` is when the link entered its current
//! state (for a link never up: when the pipeline started); it changes only on a
//! transition, so repeated failures while down keep the start of the outage;
//! `connects` counts CONNACKs and never decreases.

use std::sync::Mutex;

use serde_json::{Value, json};

use crate::reading::{TimestampMs, now_ms};

/// A snapshot of the link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkState {
    /// Connected and CONNACKed.
    pub up: bool,
    /// Wall-clock ms when it entered its current state.
    pub since_ms: TimestampMs,
    /// The last connection error, kept after it comes back.
    pub last_error: Option<String>,
    /// Connections made (CONNACKs) since the pipeline started.
    pub connects: u64,
    /// Connection attempts that failed or connections that were lost.
    pub failures: u64,
}

impl LinkState {
    /// When the current connection came up; `None` while down.
    pub fn up_since_ms(&self) -> Option<TimestampMs> {
        self.up.then_some(self.since_ms)
    }

    /// Connections after the first one.
    pub fn reconnects(&self) -> u64 {
        self.connects.saturating_sub(1)
    }
}

/// The ingest link, shared by the ingest client (writer) and its readers.
#[derive(Debug)]
pub struct IngestLink {
    /// `host:port` of the local broker.
    pub address: String,
    state: Mutex<LinkState>,
}

impl IngestLink {
    /// A link to `address` not connected yet, down since `now`.
    pub fn new(address: String, now: TimestampMs) -> Self {
        Self {
            address,
            state: Mutex::new(LinkState {
                up: false,
                since_ms: now,
                last_error: None,
                connects: 0,
                failures: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LinkState> {
        // A poisoned lock only means a writer panicked mid-update of plain fields.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection came up (CONNACK).
    pub fn up(&self) {
        self.up_at(now_ms());
    }

    /// The connection failed or was lost.
    pub fn down(&self, error: &dyn std::fmt::Display) {
        self.down_at(error.to_string(), now_ms());
    }

    /// [`IngestLink::up`] at `now`.
    pub fn up_at(&self, now: TimestampMs) {
        let mut s = self.lock();
        s.up = true;
        s.since_ms = now;
        s.connects += 1;
    }

    /// [`IngestLink::down`] at `now`.
    pub fn down_at(&self, error: String, now: TimestampMs) {
        let mut s = self.lock();
        if s.up {
            s.up = false;
            s.since_ms = now;
        }
        s.failures += 1;
        s.last_error = Some(error);
    }

    /// The current state.
    pub fn state(&self) -> LinkState {
        self.lock().clone()
    }

    /// The `ingest` section of the status document (`docs/control.md`).
    pub fn json(&self) -> Value {
        let s = self.state();
        json!({
            "address": self.address,
            "connected": s.up,
            "up_since_ms": s.up_since_ms(),
            "down_since_ms": (!s.up).then_some(s.since_ms),
            "last_error": s.last_error,
            "connects": s.connects,
            "reconnects": s.reconnects(),
            "failures": s.failures,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_never_up_is_down_since_the_start() {
        let l = IngestLink::new("h:1".into(), 100);
        let v = l.json();
        assert_eq!(
            (v["connected"].clone(), v["down_since_ms"].clone()),
            (json!(false), json!(100))
        );
        assert_eq!(v["up_since_ms"], Value::Null);
        assert_eq!(v["reconnects"], 0);
    }

    #[test]
    fn an_outage_keeps_its_start_across_failed_attempts_and_counts_the_reconnect() {
        let l = IngestLink::new("h:1".into(), 0);
        l.up_at(10);
        assert_eq!(l.state().up_since_ms(), Some(10));
        l.down_at("refused".into(), 50);
        l.down_at("refused again".into(), 80);
        let s = l.state();
        assert_eq!((s.up, s.since_ms, s.failures), (false, 50, 2));
        assert_eq!(s.last_error.as_deref(), Some("refused again"));
        l.up_at(200);
        let s = l.state();
        assert_eq!((s.up_since_ms(), s.reconnects()), (Some(200), 1));
        assert_eq!(
            s.last_error.as_deref(),
            Some("refused again"),
            "the last error stays for the technician"
        );
    }
}
