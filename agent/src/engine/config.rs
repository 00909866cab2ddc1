//! Engine configuration: the window shape, the time bounds and the memory bounds.

use crate::reading::TimestampMs;

/// How readings are assigned to windows.
///
/// 0.1 has tumbling windows only. The assigner ([`WindowSpec::assign`]) already
/// returns an iterator of windows so that hopping windows, where a reading belongs
/// to several, can be added without changing its callers.
#[derive(Clone, Debug, PartialEq)]
pub enum WindowSpec {
    /// Fixed-size, non-overlapping windows `[start, start + size_ms)` with
    /// `start = offset_ms + k * size_ms` for some integer `k`.
    Tumbling {
        /// Window length in ms; greater than 0.
        size_ms: i64,
        /// Shift of the window grid from the epoch, in `[0, size_ms)`: with a size
        /// of one day and an offset of one hour, windows start at 01:00 UTC.
        offset_ms: i64,
    },
}

/// Everything the engine needs to know; see `DESIGN.md`, "Time" and "Bounds".
#[derive(Clone, Debug, PartialEq)]
pub struct EngineConfig {
    /// The window shape.
    pub window: WindowSpec,
    /// D: how far out of order readings of one key may arrive and still be on time.
    /// A key's watermark is its largest timestamp seen minus D.
    pub max_out_of_orderness_ms: i64,
    /// L: how long after a window fired it still accepts readings (and re-fires
    /// with a late pane). Readings later than that are reported as late.
    pub allowed_lateness_ms: i64,
    /// Readings stamped more than this ahead of the wall clock are quarantined:
    /// one device with a wrong clock must not make everyone else's readings late.
    pub max_future_skew_ms: i64,
    /// At most this many keys hold state; a new key beyond it is rejected.
    pub max_keys: usize,
    /// At most this many windows are open per key; a reading needing a new
    /// window beyond it is rejected.
    pub max_windows_per_key: usize,
}

/// What is wrong with an [`EngineConfig`]. Messages name the setting, what it
/// was and what is allowed, because the config module shows them to the user.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EngineConfigError {
    /// The window size is zero or negative.
    #[error("window size must be greater than 0 ms, got {size_ms} ms")]
    NonPositiveWindowSize {
        /// The configured size.
        size_ms: i64,
    },
    /// The window offset is not in `[0, size)`.
    #[error(
        "window offset must be at least 0 ms and less than the window size ({size_ms} ms), got {offset_ms} ms"
    )]
    OffsetOutOfRange {
        /// The configured offset.
        offset_ms: i64,
        /// The configured size.
        size_ms: i64,
    },
    /// A duration that must be zero or more is negative.
    #[error("{setting} must be 0 ms or more, got {value_ms} ms")]
    NegativeDuration {
        /// Which setting: `max_out_of_orderness`, `allowed_lateness` or `max_future_skew`.
        setting: &'static str,
        /// The configured value.
        value_ms: i64,
    },
    /// A limit that must be at least 1 is 0.
    #[error("{setting} must be at least 1, got 0")]
    ZeroLimit {
        /// Which setting: `max_keys` or `max_windows_per_key`.
        setting: &'static str,
    },
}

impl EngineConfig {
    /// Checks every setting; returns the first problem found.
    pub fn validate(&self) -> Result<(), EngineConfigError> {
        match self.window {
            WindowSpec::Tumbling { size_ms, offset_ms } => {
                if size_ms <= 0 {
                    return Err(EngineConfigError::NonPositiveWindowSize { size_ms });
                }
                if !(0..size_ms).contains(&offset_ms) {
                    return Err(EngineConfigError::OffsetOutOfRange { offset_ms, size_ms });
                }
            }
        }
        for (setting, value_ms) in [
            ("max_out_of_orderness", self.max_out_of_orderness_ms),
            ("allowed_lateness", self.allowed_lateness_ms),
            ("max_future_skew", self.max_future_skew_ms),
        ] {
            if value_ms < 0 {
                return Err(EngineConfigError::NegativeDuration { setting, value_ms });
            }
        }
        if self.max_keys == 0 {
            return Err(EngineConfigError::ZeroLimit {
                setting: "max_keys",
            });
        }
        if self.max_windows_per_key == 0 {
            return Err(EngineConfigError::ZeroLimit {
                setting: "max_windows_per_key",
            });
        }
        Ok(())
    }

    /// The nearest valid configuration: sizes and limits at least 1, offsets
    /// taken modulo the size, negative durations as 0. The engine runs on this
    /// so that an unvalidated config can give odd results but never a panic
    /// (a zero size would divide by zero).
    pub(crate) fn clamped(mut self) -> Self {
        match &mut self.window {
            WindowSpec::Tumbling { size_ms, offset_ms } => {
                *size_ms = (*size_ms).max(1);
                *offset_ms = offset_ms.rem_euclid(*size_ms);
            }
        }
        self.max_out_of_orderness_ms = self.max_out_of_orderness_ms.max(0);
        self.allowed_lateness_ms = self.allowed_lateness_ms.max(0);
        self.max_future_skew_ms = self.max_future_skew_ms.max(0);
        self.max_keys = self.max_keys.max(1);
        self.max_windows_per_key = self.max_windows_per_key.max(1);
        self
    }
}

/// One window: the half-open event-time interval `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    /// Inclusive.
    pub start: TimestampMs,
    /// Exclusive.
    pub end: TimestampMs,
}

/// The windows one timestamp belongs to, in increasing order of end.
#[derive(Clone, Debug)]
pub struct Windows {
    next: Option<Window>,
}

impl Iterator for Windows {
    type Item = Window;

    fn next(&mut self) -> Option<Window> {
        self.next.take()
    }
}

impl WindowSpec {
    /// The windows containing `ts`, in increasing order of end (tumbling: exactly one).
    ///
    /// Windows are aligned to the epoch plus the offset, and negative timestamps
    /// work (the alignment uses the Euclidean remainder). Within about one window
    /// of `i64::MIN` or `i64::MAX` ms (some 292 million years from 1970) the
    /// bounds saturate instead of overflowing.
    pub fn assign(&self, ts: TimestampMs) -> Windows {
        match *self {
            WindowSpec::Tumbling { size_ms, offset_ms } => {
                // i128 because `ts - offset` may overflow i64 for absurd payload timestamps.
                let size = i128::from(size_ms.max(1));
                let ts_wide = i128::from(ts);
                let start = ts_wide - (ts_wide - i128::from(offset_ms)).rem_euclid(size);
                let start = saturate(start);
                Windows {
                    next: Some(Window {
                        start,
                        end: start.saturating_add(size_ms.max(1)),
                    }),
                }
            }
        }
    }
}

fn saturate(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn valid() -> EngineConfig {
        EngineConfig {
            window: WindowSpec::Tumbling {
                size_ms: 1000,
                offset_ms: 0,
            },
            max_out_of_orderness_ms: 0,
            allowed_lateness_ms: 0,
            max_future_skew_ms: 0,
            max_keys: 1,
            max_windows_per_key: 1,
        }
    }

    fn tumbling(size_ms: i64, offset_ms: i64) -> WindowSpec {
        WindowSpec::Tumbling { size_ms, offset_ms }
    }

    fn only(spec: &WindowSpec, ts: i64) -> (i64, i64) {
        let ws: Vec<Window> = spec.assign(ts).collect();
        assert_eq!(ws.len(), 1, "tumbling assigns exactly one window");
        (ws[0].start, ws[0].end)
    }

    #[test]
    fn the_smallest_valid_config_passes() {
        assert_eq!(valid().validate(), Ok(()));
    }

    #[test]
    fn a_zero_or_negative_window_size_is_refused_with_its_value() {
        for size_ms in [0, -5] {
            let cfg = EngineConfig {
                window: tumbling(size_ms, 0),
                ..valid()
            };
            let err = cfg.validate().unwrap_err();
            assert_eq!(err, EngineConfigError::NonPositiveWindowSize { size_ms });
            assert!(err.to_string().contains("greater than 0 ms"));
        }
    }

    #[test]
    fn an_offset_outside_zero_to_size_is_refused() {
        for offset_ms in [-1, 1000, 5000] {
            let cfg = EngineConfig {
                window: tumbling(1000, offset_ms),
                ..valid()
            };
            assert_eq!(
                cfg.validate(),
                Err(EngineConfigError::OffsetOutOfRange {
                    offset_ms,
                    size_ms: 1000
                })
            );
        }
        let ok = EngineConfig {
            window: tumbling(1000, 999),
            ..valid()
        };
        assert_eq!(ok.validate(), Ok(()));
    }

    #[test]
    fn each_negative_duration_is_named_in_the_error() {
        let cases = [
            (
                EngineConfig {
                    max_out_of_orderness_ms: -1,
                    ..valid()
                },
                "max_out_of_orderness",
            ),
            (
                EngineConfig {
                    allowed_lateness_ms: -1,
                    ..valid()
                },
                "allowed_lateness",
            ),
            (
                EngineConfig {
                    max_future_skew_ms: -1,
                    ..valid()
                },
                "max_future_skew",
            ),
        ];
        for (cfg, name) in cases {
            let msg = cfg.validate().unwrap_err().to_string();
            assert_eq!(msg, format!("{name} must be 0 ms or more, got -1 ms"));
        }
    }

    #[test]
    fn zero_limits_are_refused() {
        let keys = EngineConfig {
            max_keys: 0,
            ..valid()
        };
        assert_eq!(
            keys.validate().unwrap_err().to_string(),
            "max_keys must be at least 1, got 0"
        );
        let windows = EngineConfig {
            max_windows_per_key: 0,
            ..valid()
        };
        assert_eq!(
            windows.validate().unwrap_err().to_string(),
            "max_windows_per_key must be at least 1, got 0"
        );
    }

    #[test]
    fn clamping_an_invalid_config_makes_it_valid() {
        let bad = EngineConfig {
            window: tumbling(0, -3),
            max_out_of_orderness_ms: -1,
            allowed_lateness_ms: -2,
            max_future_skew_ms: -3,
            max_keys: 0,
            max_windows_per_key: 0,
        };
        assert_eq!(bad.clamped().validate(), Ok(()));
        assert_eq!(valid().clamped(), valid());
    }

    #[test]
    fn windows_are_half_open_and_aligned_to_the_epoch() {
        let spec = tumbling(1000, 0);
        assert_eq!(only(&spec, 0), (0, 1000));
        assert_eq!(only(&spec, 999), (0, 1000));
        assert_eq!(only(&spec, 1000), (1000, 2000));
        assert_eq!(
            only(&spec, 1_700_000_000_123),
            (1_700_000_000_000, 1_700_000_001_000)
        );
    }

    #[test]
    fn negative_timestamps_fall_in_windows_that_contain_them() {
        let spec = tumbling(1000, 0);
        assert_eq!(only(&spec, -1), (-1000, 0));
        assert_eq!(only(&spec, -1000), (-1000, 0));
        assert_eq!(only(&spec, -1001), (-2000, -1000));
    }

    #[test]
    fn an_offset_shifts_the_window_grid() {
        let spec = tumbling(1000, 250);
        assert_eq!(only(&spec, 250), (250, 1250));
        assert_eq!(only(&spec, 249), (-750, 250));
        assert_eq!(only(&spec, 1249), (250, 1250));
        assert_eq!(only(&spec, -751), (-1750, -750));
    }

    #[test]
    fn timestamps_at_the_ends_of_the_range_saturate_instead_of_overflowing() {
        let spec = tumbling(1000, 500);
        let (start, end) = only(&spec, i64::MIN);
        assert_eq!(start, i64::MIN);
        assert!(end > i64::MIN);
        let (start, end) = only(&spec, i64::MAX);
        assert!(start > i64::MAX - 1000);
        assert_eq!(end, i64::MAX);
    }
}
