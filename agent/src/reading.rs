//! The unit of data flowing through Weir: one value of one metric of one sensor
//! at one instant of event time.

use std::fmt;
use std::sync::Arc;

/// Event time: milliseconds since the Unix epoch, UTC.
pub type TimestampMs = i64;

/// What a reading, a window and a detector's state are keyed by: `(sensor, metric)`.
///
/// Both parts are shared strings so that cloning a key (once per reading on the
/// hot path) is two reference-count increments, not two allocations.
#[derive(Clone, Debug, Eq, PartialOrd, Ord)]
pub struct Key {
    /// Sensor name, e.g. `greenhouse` or `kitchen-bme280`.
    pub sensor: Arc<str>,
    /// Metric name, e.g. `temperature`.
    pub metric: Arc<str>,
}

impl Key {
    /// Builds a key from anything string-like.
    pub fn new(sensor: impl Into<Arc<str>>, metric: impl Into<Arc<str>>) -> Self {
        Self {
            sensor: sensor.into(),
            metric: metric.into(),
        }
    }
}

impl PartialEq for Key {
    /// Equal contents, as derived, but a clone of the same key (the common
    /// case on the hot path: every map lookup ends in one comparison) is
    /// recognised by its pointers without comparing the strings.
    fn eq(&self, other: &Self) -> bool {
        (Arc::ptr_eq(&self.sensor, &other.sensor) || self.sensor == other.sensor)
            && (Arc::ptr_eq(&self.metric, &other.metric) || self.metric == other.metric)
    }
}

impl std::hash::Hash for Key {
    /// As derived: the contents, consistent with `eq`.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.sensor.hash(state);
        self.metric.hash(state);
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.sensor, self.metric)
    }
}

/// Hasher of the per-key maps on the hot path (engine, detectors): foldhash,
/// randomly seeded per process. The std SipHash cost several hundred instructions
/// per lookup, several lookups per reading. Keys come from configured sources
/// and are bounded by `max_keys`, so the weaker flooding resistance costs at
/// worst a slower lookup among at most `max_keys` keys.
pub type KeyHasher = foldhash::fast::RandomState;

/// A map keyed by [`Key`] with the hot-path hasher.
pub type KeyMap<V> = std::collections::HashMap<Key, V, KeyHasher>;

/// A set of [`Key`]s with the hot-path hasher.
pub type KeySet = std::collections::HashSet<Key, KeyHasher>;

/// Where a reading's timestamp came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TsSource {
    /// Stamped by the device or by the sensor thread at read time.
    Event,
    /// The payload carried no timestamp; Weir used the time it arrived.
    Arrival,
    /// Stamped by Weir before the system clock was first synchronised: a
    /// provisional time the pipeline holds until it can correct it (see `clock`).
    Unsynced,
    /// Stamped by Weir before the system clock was synchronised, then
    /// corrected by the exact offset found at synchronisation.
    Corrected,
}

/// One measurement. `value` is always finite: sources reject NaN and infinity
/// before a reading is built (see [`Reading::new`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    /// `(sensor, metric)`.
    pub key: Key,
    /// The measured value; finite.
    pub value: f64,
    /// Event time.
    pub ts: TimestampMs,
    /// Whether `ts` is the device's own time or the arrival time.
    pub ts_source: TsSource,
}

/// A value that cannot be a reading.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
#[error("value {0} is not a finite number")]
pub struct NonFinite(pub f64);

impl Reading {
    /// Builds a reading, refusing NaN and infinities.
    pub fn new(
        key: Key,
        value: f64,
        ts: TimestampMs,
        ts_source: TsSource,
    ) -> Result<Self, NonFinite> {
        if value.is_finite() {
            Ok(Self {
                key,
                value,
                ts,
                ts_source,
            })
        } else {
            Err(NonFinite(value))
        }
    }
}

/// Now, on Weir's timeline ([`crate::clock`]): the system clock as it was at
/// start or at its synchronisation, carried on by the monotonic clock, so a
/// step of the system clock never moves it.
pub fn now_ms() -> TimestampMs {
    crate::clock::global().now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nan_or_infinite_value_is_refused() {
        let k = Key::new("s", "m");
        assert!(Reading::new(k.clone(), f64::NAN, 0, TsSource::Event).is_err());
        assert!(Reading::new(k.clone(), f64::INFINITY, 0, TsSource::Event).is_err());
        assert!(Reading::new(k, 1.5, 0, TsSource::Event).is_ok());
    }

    #[test]
    fn a_key_displays_as_sensor_slash_metric() {
        assert_eq!(Key::new("a", "b").to_string(), "a/b");
    }
}
