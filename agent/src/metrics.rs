//! Counters: every reading in, every result out, and every drop, rejection,
//! eviction and dead letter by reason. Shared by all stages (atomics; the
//! by-reason map is behind a mutex, touched only on the rare paths), shown in the
//! status message and by `weir status`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde_json::{Value, json};

/// What the pipeline has done since start.
#[derive(Debug, Default)]
pub struct Counters {
    /// Readings handed to the engine (all sources).
    pub readings: AtomicU64,
    /// MQTT messages received on ingest topics.
    pub mqtt_messages: AtomicU64,
    /// Readings added to at least one window. Every reading handed to the engine
    /// is exactly one of: windowed, late, or rejected (by reason), so
    /// `readings = windowed + late + rejected`.
    pub windowed: AtomicU64,
    /// Readings too late for all their windows (published on `late`).
    pub late: AtomicU64,
    /// On-time panes emitted.
    pub panes_on_time: AtomicU64,
    /// Late panes (revision > 0) emitted.
    pub panes_late: AtomicU64,
    /// Alerts raised.
    pub alerts_raised: AtomicU64,
    /// Alerts cleared.
    pub alerts_cleared: AtomicU64,
    /// Messages produced for the outbox (panes, alerts, late readings, dead letters).
    /// Every one ends up acked, evicted, superseded, expired, dropped, or still pending.
    pub produced: AtomicU64,
    /// Rows entered into the outbox (its memory first; see `outbox_written`).
    pub outbox_inserted: AtomicU64,
    /// Rows written to the outbox's file: those not delivered before the checkpoint after
    /// they were produced (see `docs/storage.md`).
    pub outbox_written: AtomicU64,
    /// Unsent rows replaced by a newer revision of the same window.
    pub outbox_superseded: AtomicU64,
    /// Publishes handed to the upstream connection.
    pub published: AtomicU64,
    /// Rows deleted on the upstream broker's acknowledgement (a duplicate or stray
    /// PUBACK deletes nothing and is not counted).
    pub acked: AtomicU64,
    /// Successful upstream connections.
    pub uplink_connects: AtomicU64,
    /// Upstream connection failures and drops.
    pub uplink_errors: AtomicU64,
    /// Checkpoints committed (state and the results it produced, together).
    pub checkpoints: AtomicU64,
    /// Ingest messages the broker sent again whose effect was already in the
    /// state (their acknowledgement was lost): acknowledged, not counted twice.
    pub ingest_redelivered: AtomicU64,
    by_reason: Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    /// Adds `n` to a counter.
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }

    /// Counts one event of `category` (`deadletter`, `rejected`, `evicted`,
    /// `expired`, `dropped`) for `reason`.
    pub fn bump(&self, category: &str, reason: &str, n: u64) {
        if n == 0 {
            return;
        }
        // A poisoned lock only means another thread panicked mid-increment: the map
        // is still a valid map, keep counting.
        let mut map = self.by_reason.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(format!("{category}.{reason}")).or_insert(0) += n;
    }

    /// The count for one `category.reason`.
    pub fn reason(&self, category: &str, reason: &str) -> u64 {
        let map = self.by_reason.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&format!("{category}.{reason}"))
            .copied()
            .unwrap_or(0)
    }

    /// Every counter as JSON: plain counters at the top level, by-reason ones
    /// nested as `{category: {reason: n}}`.
    pub fn snapshot(&self) -> Value {
        let g = |c: &AtomicU64| c.load(Relaxed);
        let mut v = json!({
            "readings": g(&self.readings),
            "mqtt_messages": g(&self.mqtt_messages),
            "windowed": g(&self.windowed),
            "late": g(&self.late),
            "panes_on_time": g(&self.panes_on_time),
            "panes_late": g(&self.panes_late),
            "alerts_raised": g(&self.alerts_raised),
            "alerts_cleared": g(&self.alerts_cleared),
            "produced": g(&self.produced),
            "outbox_inserted": g(&self.outbox_inserted),
            "outbox_written": g(&self.outbox_written),
            "outbox_superseded": g(&self.outbox_superseded),
            "published": g(&self.published),
            "acked": g(&self.acked),
            "uplink_connects": g(&self.uplink_connects),
            "uplink_errors": g(&self.uplink_errors),
            "checkpoints": g(&self.checkpoints),
            "ingest_redelivered": g(&self.ingest_redelivered),
        });
        let map = self.by_reason.lock().unwrap_or_else(|e| e.into_inner());
        for category in ["deadletter", "rejected", "evicted", "expired", "dropped"] {
            v[category] = json!({});
        }
        for (k, n) in map.iter() {
            if let Some((category, reason)) = k.split_once('.') {
                v[category][reason] = json!(n);
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_counted_and_nested_in_the_snapshot() {
        let c = Counters::default();
        c.bump("deadletter", "bad_json", 2);
        c.bump("deadletter", "bad_json", 1);
        c.bump("rejected", "key_limit", 1);
        Counters::add(&c.readings, 5);
        let s = c.snapshot();
        assert_eq!(s["deadletter"]["bad_json"], 3);
        assert_eq!(s["rejected"]["key_limit"], 1);
        assert_eq!(s["readings"], 5);
        assert_eq!(s["evicted"], json!({}));
        assert_eq!(c.reason("deadletter", "bad_json"), 3);
    }
}
