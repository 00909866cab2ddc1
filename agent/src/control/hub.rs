//! What the control interface knows about the daemon, and the status document built from it.
//!
//! Invariants:
//! - The [`Hub`] lives as long as `weir run` (across SIGHUP reloads): the process start,
//!   the log control and the tail tap never change. The running pipeline [`Hub::attach`]es
//!   its live state at start and [`Hub::detach`]es it when it stops, so between a reload's
//!   two pipelines a status request answers `"pipeline": "reloading"` (or `"stopping"`
//!   while the process shuts down and delivers what it can).
//! - Building a status never blocks the pipeline: the engine is asked through a channel of
//!   one and the outbox through its command queue, each with a timeout; an answer that does
//!   not come is reported as missing (`"responding": false`), not waited for.
//! - The hub's lock is held only to clone the live handles, never across an await.

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::logging::LogControl;
use super::tap::Tap;
use crate::metrics::Counters;
use crate::outbox::{Class, ClassStats, OutboxHandle};
use crate::pipeline::{BLOCKED_REASONS, Gauges};
use crate::reading::{Key, TimestampMs, now_ms};
use crate::source::health::SensorBoard;
use crate::source::link::IngestLink;
use crate::uplink::LinkStatus;

/// How long a status waits for the engine and for the outbox.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// What the engine task reports when asked.
#[derive(Clone, Debug, Default)]
pub struct EngineView {
    /// Every key's watermark.
    pub watermarks: Vec<(Key, TimestampMs)>,
    /// Alerts currently raised, as status JSON (see [`alert_json`]).
    pub alerts: Vec<Value>,
    /// Wall-clock ms of the last committed checkpoint, 0 if none yet.
    pub last_checkpoint_ms: TimestampMs,
}

/// A raised alert as `weir status` shows it.
pub fn alert_json(a: &crate::detect::Alert) -> Value {
    json!({
        "id": a.id,
        "sensor": &*a.key.sensor,
        "metric": &*a.key.metric,
        "detector": a.detector,
        "kind": a.kind,
        "severity": a.severity.as_str(),
        "since_ms": a.raised_ts,
        "value": a.value,
        "reason": a.reason,
    })
}

/// The engine task's end of the status channel.
pub type EngineRequests = mpsc::Receiver<oneshot::Sender<EngineView>>;

/// The running pipeline's live state.
#[derive(Clone)]
pub struct Live {
    /// When this pipeline started (differs from the process start after a reload).
    pub started_at: TimestampMs,
    /// The device name.
    pub device: String,
    /// `host:port` of the upstream broker.
    pub upstream: String,
    /// The outbox file.
    pub outbox_path: PathBuf,
    /// The outbox's byte budget (`[outbox] max_bytes`).
    pub outbox_max_bytes: u64,
    /// Counters.
    pub counters: Arc<Counters>,
    /// Engine gauges.
    pub gauges: Arc<Gauges>,
    /// Upstream link.
    pub link: Arc<LinkStatus>,
    /// Local sensor health.
    pub sensors: Arc<SensorBoard>,
    /// The ingest link to the local broker, when `[ingest]` is configured.
    pub ingest: Option<Arc<IngestLink>>,
    /// The outbox.
    pub outbox: OutboxHandle,
    /// Asks the engine task for an [`EngineView`].
    pub engine: mpsc::Sender<oneshot::Sender<EngineView>>,
}

/// Shared by the control tasks and the pipelines of one `weir run`.
pub struct Hub {
    /// Process start, wall-clock ms.
    pub started_at: TimestampMs,
    /// The configuration file.
    pub config_path: PathBuf,
    /// The log filter.
    pub log: LogControl,
    /// The live tail.
    pub tap: Arc<Tap>,
    /// Cancelled when the process is shutting down (not merely reloading).
    stopping: tokio_util::sync::CancellationToken,
    live: Mutex<Option<Live>>,
    /// The upstream link of the last pipeline, kept across a reload (see [`Hub::attach`]).
    earlier_link: Mutex<Option<Arc<LinkStatus>>>,
}

impl Hub {
    /// A hub for a process started now; `stopping` is its shutdown token.
    pub fn new(
        config_path: PathBuf,
        log: LogControl,
        stopping: tokio_util::sync::CancellationToken,
    ) -> Self {
        Self {
            started_at: now_ms(),
            config_path,
            log,
            tap: Arc::default(),
            stopping,
            live: Mutex::new(None),
            earlier_link: Mutex::new(None),
        }
    }

    /// Whether the process is shutting down (not merely reloading).
    pub fn is_stopping(&self) -> bool {
        self.stopping.is_cancelled()
    }

    /// The pipeline is up: status requests read `live`.
    /// After a reload the new pipeline's link takes over the last PUBACK and the last error
    /// of the one before, so `weir status` does not say "last PUBACK never" after a reload.
    pub fn attach(&self, live: Live) {
        let earlier = self
            .earlier_link
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(live.link.clone());
        if let Some(earlier) = earlier {
            live.link.carry_over(&earlier);
        }
        *self.live.lock().unwrap_or_else(|e| e.into_inner()) = Some(live);
    }

    /// The pipeline stopped.
    pub fn detach(&self) {
        *self.live.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The status document (`docs/control.md`).
    pub async fn status(&self) -> Value {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let now = now_ms();
        let mut doc = json!({
            "running": true,
            "source": "daemon",
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "config": self.config_path.display().to_string(),
            "now_ms": now,
            "started_at": self.started_at,
            "uptime_s": (now - self.started_at) / 1000,
            "log": {"filter": self.log.current(), "target": self.log.target},
            "pipeline": "reloading",
            "clock": crate::clock::global().status(),
        });
        let Some(live) = live else {
            if self.stopping.is_cancelled() {
                doc["pipeline"] = json!("stopping");
            }
            return doc;
        };
        doc["pipeline"] = json!("running");
        doc["device"] = json!(live.device);
        doc["pipeline_started_at"] = json!(live.started_at);
        let connected = live.link.connected.load(Relaxed);
        let lost = live.link.lost_ms.load(Relaxed);
        let puback = live.link.last_puback_ms.load(Relaxed);
        let (error_ms, up_ms) = (
            live.link.last_error_ms.load(Relaxed),
            live.link.connected_ms.load(Relaxed),
        );
        let last_error = live
            .link
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        doc["upstream"] = json!({
            "address": live.upstream,
            "connected": connected,
            // Never connected since this pipeline started: down since then.
            "down_since_ms": (!connected).then_some(if lost > 0 { lost } else { live.started_at }),
            "up_since_ms": (connected && up_ms > 0).then_some(up_ms),
            "last_puback_ms": (puback > 0).then_some(puback),
            "last_error": last_error,
            "last_error_ms": (error_ms > 0).then_some(error_ms),
        });
        if let Some(ingest) = &live.ingest {
            doc["ingest"] = ingest.json();
        }
        let blocked = live.gauges.outbox_blocked.load(Relaxed);
        let stats = tokio::time::timeout(ANSWER_TIMEOUT, live.outbox.stats()).await;
        doc["outbox"] = json!({
            "path": live.outbox_path.display().to_string(),
            "max_bytes": live.outbox_max_bytes,
            "blocked": blocked != 0,
            "blocked_reason": usize::try_from(blocked).ok().and_then(|b| b.checked_sub(1)).and_then(|i| BLOCKED_REASONS.get(i)),
        });
        let damaged = live
            .link
            .outbox_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(e) = damaged {
            doc["outbox"]["damaged"] = json!(e);
        }
        match stats {
            Ok(Ok(s)) => doc["outbox"]["classes"] = classes_json(&s, now),
            Ok(Err(e)) => doc["outbox"]["error"] = json!(e.to_string()),
            Err(_) => doc["outbox"]["error"] = json!("the outbox did not answer within 2 s"),
        }
        let (tx, rx) = oneshot::channel();
        let view = match live.engine.try_send(tx) {
            Ok(()) => tokio::time::timeout(ANSWER_TIMEOUT, rx)
                .await
                .ok()
                .and_then(Result::ok),
            Err(_) => None,
        };
        doc["engine"] = json!({
            "responding": view.is_some(),
            "keys": live.gauges.keys.load(Relaxed),
            "open_windows": live.gauges.open_windows.load(Relaxed),
            "active_alerts": live.gauges.active_alerts.load(Relaxed),
        });
        if let Some(v) = view {
            doc["engine"]["last_checkpoint_ms"] =
                json!((v.last_checkpoint_ms > 0).then_some(v.last_checkpoint_ms));
            doc["watermarks"] = watermarks_json(v.watermarks, now);
            doc["alerts"] = json!(v.alerts);
        }
        doc["sensors"] = live.sensors.snapshot();
        doc["counters"] = live.counters.snapshot();
        doc
    }
}

/// Backlog per class: `{class: {rows, bytes, oldest_ms, oldest_age_ms}}`.
pub fn classes_json(stats: &[ClassStats; 3], now: TimestampMs) -> Value {
    let mut v = json!({});
    for c in Class::ALL {
        let s = &stats[c.index()];
        v[c.as_str()] = json!({
            "rows": s.rows,
            "bytes": s.bytes,
            "oldest_ms": s.oldest_created_ms,
            "oldest_age_ms": s.oldest_created_ms.map(|t| (now - t).max(0)),
        });
    }
    v
}

/// Per-key watermarks and their lag behind `now`, worst (largest lag) first, then by key.
pub fn watermarks_json(mut wms: Vec<(Key, TimestampMs)>, now: TimestampMs) -> Value {
    wms.sort_by(|a, b| {
        a.1.cmp(&b.1)
            .then_with(|| a.0.sensor.cmp(&b.0.sensor))
            .then_with(|| a.0.metric.cmp(&b.0.metric))
    });
    Value::Array(
        wms.into_iter()
            .map(|(k, wm)| {
                json!({
                    "sensor": &*k.sensor,
                    "metric": &*k.metric,
                    "watermark_ms": wm,
                    "lag_ms": now.saturating_sub(wm).max(0),
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermarks_come_worst_first_and_ties_by_key() {
        let v = watermarks_json(
            vec![
                (Key::new("b", "t"), 900),
                (Key::new("a", "t"), 100),
                (Key::new("a", "h"), 900),
            ],
            1000,
        );
        let order: Vec<_> = v
            .as_array()
            .into_iter()
            .flatten()
            .map(|w| format!("{}/{}={}", w["sensor"], w["metric"], w["lag_ms"]))
            .collect();
        assert_eq!(
            order,
            [r#""a"/"t"=900"#, r#""a"/"h"=100"#, r#""b"/"t"=100"#]
        );
    }

    #[test]
    fn an_empty_class_has_no_oldest_age() {
        let stats = [
            ClassStats::default(),
            ClassStats {
                rows: 2,
                bytes: 30,
                oldest_created_ms: Some(400),
            },
            ClassStats::default(),
        ];
        let v = classes_json(&stats, 1000);
        assert_eq!(v["alert"]["oldest_age_ms"], Value::Null);
        assert_eq!(v["aggregate"]["oldest_age_ms"], 600);
        assert_eq!(v["aggregate"]["rows"], 2);
    }
}
