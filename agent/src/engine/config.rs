//! Engine configuration: the window shape, the watermark scope, the time bounds
//! and the memory bounds.

/// How readings are assigned to windows. Every kind is aligned to the epoch
/// plus an offset, and windows are half-open `[start, end)`.
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
    /// Overlapping windows `[start, start + size_ms)` with
    /// `start = offset_ms + k * slide_ms`: each reading is in `ceil(size / slide)` windows.
    Hopping {
        /// Window length in ms; greater than 0.
        size_ms: i64,
        /// Distance between window starts, in `(0, size_ms]` (larger would leave
        /// readings in no window at all).
        slide_ms: i64,
        /// Shift of the grid from the epoch, in `[0, slide_ms)`.
        offset_ms: i64,
    },
    /// Activity sessions: a reading at `ts` opens `[ts, ts + gap_ms)`, and
    /// windows that touch or overlap merge (as Flink's `EventTimeSessionWindows`).
    /// No session crosses a multiple of `max_length_ms` (from the epoch plus the
    /// offset): a session is cut there, so a sensor that never pauses still
    /// gets a result every `max_length_ms`, and a session's extent is a function
    /// of its readings alone, not of their arrival order.
    Session {
        /// Inactivity that ends a session; greater than 0.
        gap_ms: i64,
        /// The longest a session can be; greater than 0.
        max_length_ms: i64,
        /// Shift of the `max_length_ms` grid from the epoch, in `[0, max_length_ms)`.
        offset_ms: i64,
    },
}

/// Whose readings move a watermark.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scope {
    /// One watermark per key: `max ts of the key - D`. A device replaying old
    /// data lands in its true windows whatever other devices do.
    #[default]
    PerKey,
    /// One watermark for all keys: `max ts of any key - D`, as Flink at
    /// parallelism 1. See `docs/time.md` for the exact equivalence.
    Global,
}

/// Everything the engine needs to know; see `DESIGN.md`, "Time" and "Bounds".
#[derive(Clone, Debug, PartialEq)]
pub struct EngineConfig {
    /// The window shape.
    pub window: WindowSpec,
    /// Per-key or global watermark.
    pub scope: Scope,
    /// D: how far out of order readings may arrive and still be on time.
    /// A watermark is the largest timestamp seen (in its scope) minus D.
    pub max_out_of_orderness_ms: i64,
    /// L: how long after a window fired it still accepts readings (and re-fires
    /// with a late pane). Readings later than that are reported as late.
    pub allowed_lateness_ms: i64,
    /// Readings stamped more than this ahead of the wall clock are quarantined:
    /// one device with a wrong clock must not make everyone else's readings late.
    pub max_future_skew_ms: i64,
    /// Readings stamped more than this behind the wall clock are rejected
    /// (`too_old`); `None` accepts any age.
    pub max_backfill_ms: Option<i64>,
    /// A key with no reading for this long (wall clock) has its open windows
    /// fired and is reported idle; `None` waits for the watermark forever.
    pub idle_timeout_ms: Option<i64>,
    /// Late panes caused by readings are held this long (wall clock) so that a
    /// burst of late readings gives one pane; 0 emits each at once. The final
    /// result is always emitted, at the latest when the window closes.
    pub late_fire_delay_ms: i64,
    /// Whether panes carry p50/p90/p99 from a bounded sketch (up to 512 bytes
    /// more per open window).
    pub quantiles: bool,
    /// At most this many keys hold state; a new key beyond it is rejected.
    pub max_keys: usize,
    /// At most this many windows are open per key; a reading needing a new
    /// window beyond it is rejected.
    pub max_windows_per_key: usize,
}

impl Default for EngineConfig {
    /// The defaults of the configuration file.
    fn default() -> Self {
        Self {
            window: WindowSpec::Tumbling {
                size_ms: 60_000,
                offset_ms: 0,
            },
            scope: Scope::PerKey,
            max_out_of_orderness_ms: 5_000,
            allowed_lateness_ms: 30_000,
            max_future_skew_ms: 300_000,
            max_backfill_ms: None,
            idle_timeout_ms: Some(300_000),
            late_fire_delay_ms: 0,
            quantiles: false,
            max_keys: 10_000,
            max_windows_per_key: 64,
        }
    }
}

/// What is wrong with an [`EngineConfig`]. Messages name the setting, what it
/// was and what is allowed, because the config module shows them to the user.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EngineConfigError {
    /// A window length is zero or negative.
    #[error("window {setting} must be greater than 0 ms, got {value_ms} ms")]
    NonPositiveWindowSize {
        /// Which: `size`, `slide`, `gap` or `max_length`.
        setting: &'static str,
        /// The configured value.
        value_ms: i64,
    },
    /// The window offset is not in `[0, limit)`.
    #[error(
        "window offset must be at least 0 ms and less than the window {of} ({limit_ms} ms), got {offset_ms} ms"
    )]
    OffsetOutOfRange {
        /// The configured offset.
        offset_ms: i64,
        /// What bounds it: `size`, `slide` or `max_length`.
        of: &'static str,
        /// The bound.
        limit_ms: i64,
    },
    /// A hopping window slides further than its size.
    #[error(
        "window slide ({slide_ms} ms) is larger than its size ({size_ms} ms): readings between windows would belong to none"
    )]
    SlideLargerThanSize {
        /// The configured slide.
        slide_ms: i64,
        /// The configured size.
        size_ms: i64,
    },
    /// Each reading needs more windows than a key may have open.
    #[error(
        "a hopping window of size {size_ms} ms and slide {slide_ms} ms puts every reading in {needed} windows, more than max_windows_per_key ({max})"
    )]
    TooManyWindows {
        /// The configured size.
        size_ms: i64,
        /// The configured slide.
        slide_ms: i64,
        /// Windows per reading: `ceil(size / slide)`.
        needed: i64,
        /// `max_windows_per_key`.
        max: usize,
    },
    /// A duration that must be zero or more is negative.
    #[error("{setting} must be 0 ms or more, got {value_ms} ms")]
    NegativeDuration {
        /// Which setting: `max_out_of_orderness`, `allowed_lateness`,
        /// `max_future_skew` or `late_fire_delay`.
        setting: &'static str,
        /// The configured value.
        value_ms: i64,
    },
    /// A duration that must be positive when set is zero or negative.
    #[error("{setting} must be greater than 0 ms when set, got {value_ms} ms")]
    NonPositiveDuration {
        /// Which setting: `max_backfill` or `idle_timeout`.
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

impl WindowSpec {
    /// `(setting, value)` of every length that must be positive, then the
    /// offset and what bounds it.
    fn lengths(&self) -> (Vec<(&'static str, i64)>, i64, &'static str, i64) {
        match *self {
            Self::Tumbling { size_ms, offset_ms } => {
                (vec![("size", size_ms)], offset_ms, "size", size_ms)
            }
            Self::Hopping {
                size_ms,
                slide_ms,
                offset_ms,
            } => (
                vec![("size", size_ms), ("slide", slide_ms)],
                offset_ms,
                "slide",
                slide_ms,
            ),
            Self::Session {
                gap_ms,
                max_length_ms,
                offset_ms,
            } => (
                vec![("gap", gap_ms), ("max_length", max_length_ms)],
                offset_ms,
                "max_length",
                max_length_ms,
            ),
        }
    }

    /// Windows one reading belongs to at most (sessions: 1).
    pub fn windows_per_reading(&self) -> i64 {
        match *self {
            Self::Hopping {
                size_ms, slide_ms, ..
            } if slide_ms > 0 => size_ms.saturating_add(slide_ms - 1) / slide_ms,
            _ => 1,
        }
    }
}

impl EngineConfig {
    /// Checks every setting; returns the first problem found.
    pub fn validate(&self) -> Result<(), EngineConfigError> {
        let (lengths, offset_ms, of, limit_ms) = self.window.lengths();
        for (setting, value_ms) in lengths {
            if value_ms <= 0 {
                return Err(EngineConfigError::NonPositiveWindowSize { setting, value_ms });
            }
        }
        if !(0..limit_ms).contains(&offset_ms) {
            return Err(EngineConfigError::OffsetOutOfRange {
                offset_ms,
                of,
                limit_ms,
            });
        }
        if let WindowSpec::Hopping {
            size_ms, slide_ms, ..
        } = self.window
        {
            if slide_ms > size_ms {
                return Err(EngineConfigError::SlideLargerThanSize { slide_ms, size_ms });
            }
            let needed = self.window.windows_per_reading();
            if needed > self.max_windows_per_key as i64 && self.max_windows_per_key > 0 {
                return Err(EngineConfigError::TooManyWindows {
                    size_ms,
                    slide_ms,
                    needed,
                    max: self.max_windows_per_key,
                });
            }
        }
        for (setting, value_ms) in [
            ("max_out_of_orderness", self.max_out_of_orderness_ms),
            ("allowed_lateness", self.allowed_lateness_ms),
            ("max_future_skew", self.max_future_skew_ms),
            ("late_fire_delay", self.late_fire_delay_ms),
        ] {
            if value_ms < 0 {
                return Err(EngineConfigError::NegativeDuration { setting, value_ms });
            }
        }
        for (setting, value) in [
            ("max_backfill", self.max_backfill_ms),
            ("idle_timeout", self.idle_timeout_ms),
        ] {
            if let Some(value_ms) = value.filter(|v| *v <= 0) {
                return Err(EngineConfigError::NonPositiveDuration { setting, value_ms });
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

    /// The nearest valid configuration: lengths and limits at least 1, offsets
    /// taken modulo their bound, slides at most the size, negative durations
    /// as 0 and non-positive optional ones as unset. The engine runs on this so
    /// that an unvalidated config can give odd results but never a panic (a
    /// zero size would divide by zero). A window limit below the windows one
    /// reading needs is raised to that number.
    pub(crate) fn clamped(mut self) -> Self {
        match &mut self.window {
            WindowSpec::Tumbling { size_ms, offset_ms } => {
                *size_ms = (*size_ms).max(1);
                *offset_ms = offset_ms.rem_euclid(*size_ms);
            }
            WindowSpec::Hopping {
                size_ms,
                slide_ms,
                offset_ms,
            } => {
                *size_ms = (*size_ms).max(1);
                *slide_ms = (*slide_ms).clamp(1, *size_ms);
                *offset_ms = offset_ms.rem_euclid(*slide_ms);
            }
            WindowSpec::Session {
                gap_ms,
                max_length_ms,
                offset_ms,
            } => {
                *gap_ms = (*gap_ms).max(1);
                *max_length_ms = (*max_length_ms).max(1);
                *offset_ms = offset_ms.rem_euclid(*max_length_ms);
            }
        }
        self.max_out_of_orderness_ms = self.max_out_of_orderness_ms.max(0);
        self.allowed_lateness_ms = self.allowed_lateness_ms.max(0);
        self.max_future_skew_ms = self.max_future_skew_ms.max(0);
        self.late_fire_delay_ms = self.late_fire_delay_ms.max(0);
        self.max_backfill_ms = self.max_backfill_ms.filter(|v| *v > 0);
        self.idle_timeout_ms = self.idle_timeout_ms.filter(|v| *v > 0);
        self.max_keys = self.max_keys.max(1);
        let per_reading = usize::try_from(self.window.windows_per_reading()).unwrap_or(usize::MAX);
        self.max_windows_per_key = self.max_windows_per_key.max(per_reading).max(1);
        self
    }
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
            ..EngineConfig::default()
        }
    }

    fn tumbling(size_ms: i64, offset_ms: i64) -> WindowSpec {
        WindowSpec::Tumbling { size_ms, offset_ms }
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
            assert_eq!(
                err,
                EngineConfigError::NonPositiveWindowSize {
                    setting: "size",
                    value_ms: size_ms
                }
            );
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
                    of: "size",
                    limit_ms: 1000
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
            late_fire_delay_ms: -4,
            idle_timeout_ms: Some(0),
            ..EngineConfig::default()
        };
        assert_eq!(bad.clamped().validate(), Ok(()));
        let hop = EngineConfig {
            window: WindowSpec::Hopping {
                size_ms: 10,
                slide_ms: 50,
                offset_ms: 70,
            },
            max_windows_per_key: 1,
            ..valid()
        };
        assert_eq!(hop.clamped().validate(), Ok(()));
        assert_eq!(valid().clamped(), valid());
    }

    #[test]
    fn a_hopping_window_needing_more_windows_than_the_limit_is_refused() {
        let cfg = EngineConfig {
            window: WindowSpec::Hopping {
                size_ms: 60_000,
                slide_ms: 1_000,
                offset_ms: 0,
            },
            max_windows_per_key: 16,
            ..valid()
        };
        let err = cfg.validate().unwrap_err();
        assert!(matches!(
            err,
            EngineConfigError::TooManyWindows { needed: 60, .. }
        ));
        assert!(
            err.to_string()
                .contains("in 60 windows, more than max_windows_per_key (16)")
        );
        let ok = EngineConfig {
            max_windows_per_key: 60,
            ..cfg
        };
        assert_eq!(ok.validate(), Ok(()));
    }

    #[test]
    fn a_slide_larger_than_the_size_and_a_zero_gap_are_refused() {
        let hop = EngineConfig {
            window: WindowSpec::Hopping {
                size_ms: 10,
                slide_ms: 20,
                offset_ms: 0,
            },
            max_windows_per_key: 4,
            ..valid()
        };
        assert!(matches!(
            hop.validate(),
            Err(EngineConfigError::SlideLargerThanSize { .. })
        ));
        let session = EngineConfig {
            window: WindowSpec::Session {
                gap_ms: 0,
                max_length_ms: 10,
                offset_ms: 0,
            },
            ..valid()
        };
        assert_eq!(
            session.validate().unwrap_err().to_string(),
            "window gap must be greater than 0 ms, got 0 ms"
        );
    }

    #[test]
    fn optional_durations_must_be_positive_when_set() {
        let cfg = EngineConfig {
            idle_timeout_ms: Some(0),
            ..valid()
        };
        assert_eq!(
            cfg.validate().unwrap_err().to_string(),
            "idle_timeout must be greater than 0 ms when set, got 0 ms"
        );
    }
}
