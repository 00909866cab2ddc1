//! Sensor health, pure: each poll's outcome in, the sensor's state and its
//! sensor-failure alert out.
//!
//! - `ok`: the last poll gave values.
//! - `degraded`: the last poll failed, but fewer than `fail_after` in a row
//!   (a glitch, or a chip that just went away).
//! - `failed`: `fail_after` polls in a row failed, or the chip is the wrong
//!   one (misconfigured: retrying cannot fix it). Entering `failed` raises
//!   one sensor-failure alert; the next successful poll clears it with the
//!   same id.
//!
//! Invariants of [`HealthTracker`]: `raised` is `Some` exactly while the
//! state is `Failed`; `failures` counts the failed polls since the last good
//! one; `last_raised_ts` never decreases, so episode ids never repeat.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::detect::{Alert, AlertState, Severity};
use crate::reading::{Key, TimestampMs};
use weir_sensors::Fault;

/// The detector name of sensor-failure alerts (part of their ids).
pub const DETECTOR: &str = "sensor-failure";
/// The alert kind on the wire.
pub const KIND: &str = "sensor_failure";
/// The metric part of a sensor-failure alert's key: the alert is about the
/// sensor, not one of its metrics.
pub const METRIC: &str = "health";

/// A sensor's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Not polled yet.
    Unknown,
    /// The last poll gave values.
    Ok,
    /// Recent polls failed; not yet `failed`.
    Degraded,
    /// Down: the sensor-failure alert is raised.
    Failed,
}

impl Health {
    /// Stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Ok => "ok",
            Self::Degraded => "degraded",
            Self::Failed => "failed",
        }
    }
}

/// A failed poll: what it means and what happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadError {
    /// Absent, glitch or misconfigured.
    pub fault: Fault,
    /// For humans: the driver's message.
    pub detail: String,
}

/// One sensor's health over its polls.
#[derive(Debug)]
pub struct HealthTracker {
    sensor: Arc<str>,
    fail_after: u32,
    state: Health,
    failures: u32,
    raised: Option<Alert>,
    last_raised_ts: Option<TimestampMs>,
}

impl HealthTracker {
    /// A sensor not polled yet; `fail_after` >= 1 failed polls make it `failed`.
    pub fn new(sensor: &str, fail_after: u32) -> Self {
        Self {
            sensor: sensor.into(),
            fail_after: fail_after.max(1),
            state: Health::Unknown,
            failures: 0,
            raised: None,
            last_raised_ts: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> Health {
        self.state
    }

    /// Failed polls since the last good one.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A poll at `ts` gave values; returns the clear of a raised alert.
    pub fn success(&mut self, ts: TimestampMs) -> Option<Alert> {
        let failures = std::mem::take(&mut self.failures);
        self.state = Health::Ok;
        let mut a = self.raised.take()?;
        a.state = AlertState::Cleared;
        a.reason = format!(
            "sensor {} reads again after {failures} failed poll(s)",
            self.sensor
        );
        a.value = 0.0;
        a.ts = ts;
        Some(a)
    }

    /// A poll at `ts` failed; returns the alert when this failure makes the sensor `failed`.
    pub fn failure(&mut self, e: &ReadError, ts: TimestampMs) -> Option<Alert> {
        self.failures = self.failures.saturating_add(1);
        if self.state == Health::Failed {
            return None;
        }
        if self.failures < self.fail_after && e.fault != Fault::Misconfigured {
            self.state = Health::Degraded;
            return None;
        }
        self.state = Health::Failed;
        let raised_ts = match self.last_raised_ts {
            Some(prev) if ts <= prev => prev.saturating_add(1),
            _ => ts,
        };
        self.last_raised_ts = Some(raised_ts);
        let key = Key::new(self.sensor.clone(), METRIC);
        let a = Alert {
            id: format!("{}/{METRIC}/{DETECTOR}/{raised_ts}", self.sensor),
            detector: DETECTOR.into(),
            kind: KIND,
            key,
            state: AlertState::Raised,
            severity: Severity::Critical,
            value: f64::from(self.failures),
            baseline: None,
            threshold: f64::from(self.fail_after),
            reason: format!(
                "sensor {} failed: {} poll(s) in a row, last {} ({})",
                self.sensor,
                self.failures,
                e.fault.as_str(),
                e.detail
            ),
            ts,
            raised_ts,
        };
        self.raised = Some(a.clone());
        Some(a)
    }
}

/// What `weir sensors list` and the status message show about one sensor.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SensorStatus {
    /// `i2c`, `gpio` or `onewire`.
    pub source: String,
    /// The state.
    pub health: Health,
    /// Failed polls since the last good one.
    pub failures: u32,
    /// Wall time of the last good poll.
    pub last_ok_ms: Option<TimestampMs>,
    /// The last failure's message.
    pub last_error: Option<String>,
}

/// The health of every local sensor, shared by the sensor threads (writers),
/// the status message and the `sensors.json` file `weir sensors list` reads.
#[derive(Debug, Default)]
pub struct SensorBoard {
    sensors: Mutex<BTreeMap<String, SensorStatus>>,
    file: Option<PathBuf>,
}

impl SensorBoard {
    /// A board that rewrites `file` (if any) whenever a sensor's health changes.
    pub fn new(file: Option<PathBuf>) -> Self {
        Self {
            sensors: Mutex::default(),
            file,
        }
    }

    /// Adds a sensor in state `unknown`.
    pub fn register(&self, name: &str, source: &str) {
        self.lock().insert(
            name.into(),
            SensorStatus {
                source: source.into(),
                health: Health::Unknown,
                failures: 0,
                last_ok_ms: None,
                last_error: None,
            },
        );
        self.persist();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, SensorStatus>> {
        self.sensors.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a poll's outcome.
    pub fn record(
        &self,
        name: &str,
        health: Health,
        failures: u32,
        ok_at: Option<TimestampMs>,
        error: Option<&str>,
    ) {
        let changed = {
            let mut map = self.lock();
            let Some(s) = map.get_mut(name) else { return };
            let changed = s.health != health;
            s.health = health;
            s.failures = failures;
            if ok_at.is_some() {
                s.last_ok_ms = ok_at;
            }
            if let Some(e) = error {
                s.last_error = Some(e.to_string());
            }
            changed
        };
        if changed {
            self.persist();
        }
    }

    /// The sensor is no longer read at all (its thread could not start or stopped before
    /// shutdown): `failed`, with `why` as its last error. Its last state would otherwise
    /// stay on show while nothing reads it.
    pub fn unread(&self, name: &str, why: &str) {
        {
            let mut map = self.lock();
            let Some(s) = map.get_mut(name) else { return };
            s.health = Health::Failed;
            s.last_error = Some(why.to_string());
        }
        self.persist();
    }

    /// Every sensor as JSON: `{name: {source, health, failures, last_ok_ms, last_error}}`.
    pub fn snapshot(&self) -> Value {
        json!(*self.lock())
    }

    /// Writes the file (write to a temporary, then rename: readers never see half a file).
    fn persist(&self) {
        let Some(path) = &self.file else { return };
        let text = self.snapshot().to_string();
        let tmp = path.with_extension("json.tmp");
        if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path)) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write sensor health file");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn absent() -> ReadError {
        ReadError {
            fault: Fault::Absent,
            detail: "NACK".into(),
        }
    }

    #[test]
    fn failures_degrade_then_fail_with_one_alert_and_a_good_poll_clears_it_with_the_same_id() {
        let mut h = HealthTracker::new("air", 3);
        assert_eq!(h.success(1), None);
        assert_eq!(h.state(), Health::Ok);
        assert_eq!(h.failure(&absent(), 2), None);
        assert_eq!(h.state(), Health::Degraded);
        assert_eq!(h.failure(&absent(), 3), None);
        let raised = h.failure(&absent(), 4).unwrap();
        assert_eq!(h.state(), Health::Failed);
        assert_eq!(raised.state, AlertState::Raised);
        assert_eq!(raised.id, "air/health/sensor-failure/4");
        assert_eq!(raised.kind, "sensor_failure");
        assert!(raised.reason.contains("absent"), "{}", raised.reason);
        assert_eq!(h.failure(&absent(), 5), None, "raised once per episode");
        let cleared = h.success(6).unwrap();
        assert_eq!(
            (cleared.state, cleared.id.as_str(), cleared.ts),
            (AlertState::Cleared, raised.id.as_str(), 6)
        );
        assert_eq!((h.state(), h.failures()), (Health::Ok, 0));
        assert_eq!(h.success(7), None);
    }

    #[test]
    fn a_wrong_chip_fails_at_once() {
        let mut h = HealthTracker::new("air", 3);
        let e = ReadError {
            fault: Fault::Misconfigured,
            detail: "bmp280".into(),
        };
        assert!(h.failure(&e, 1).is_some());
        assert_eq!(h.state(), Health::Failed);
    }

    #[test]
    fn a_second_episode_at_the_same_time_gets_a_new_id() {
        let mut h = HealthTracker::new("air", 1);
        let a = h.failure(&absent(), 10).unwrap();
        h.success(10);
        let b = h.failure(&absent(), 10).unwrap();
        assert_ne!(a.id, b.id);
    }

    #[test]
    fn the_board_writes_its_file_when_a_health_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sensors.json");
        let board = SensorBoard::new(Some(path.clone()));
        board.register("air", "i2c");
        board.record("air", Health::Failed, 3, None, Some("gone"));
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["air"]["health"], "failed");
        assert_eq!(v["air"]["last_error"], "gone");
    }
}
