//! What a detector is configured to do, and the checks that make a spec usable.

use std::collections::HashSet;

use super::glob::Glob;

/// How bad an alert is. Carried unchanged from the spec into every alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Someone should look.
    Warning,
    /// Someone should act now.
    Critical,
}

impl Severity {
    /// Stable, lowercase name used on the wire and in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// The detection rule and its parameters.
#[derive(Clone, Debug, PartialEq)]
pub enum DetectorKind {
    /// Per reading. Raise when value > high or < low; clear once the value has stayed inside
    /// [low + hysteresis, high - hysteresis] for `clear_after_ms` of event time
    /// (0 = at the first normal reading).
    Threshold {
        /// Raise when a value is strictly above this.
        high: Option<f64>,
        /// Raise when a value is strictly below this.
        low: Option<f64>,
        /// How far back inside the limits a value must come to count as normal.
        hysteresis: f64,
        /// How long (event time, ms) values must stay normal before the alert clears.
        clear_after_ms: i64,
    },
    /// Per on-time pane (revision 0 only; late revisions do not feed the baseline), on the pane's
    /// mean. Baseline: exponentially weighted mean and variance with factor `alpha` (0,1].
    /// z = (x - mean) / sqrt(var). Raise when |z| > threshold after `warmup` windows; clear after
    /// `clear_after` consecutive windows with |z| < threshold - hysteresis.
    ZScore {
        /// Weight of the newest window in the baseline, in (0, 1].
        alpha: f64,
        /// Raise when |z| is strictly above this.
        threshold: f64,
        /// A window is normal again only when |z| < threshold - hysteresis.
        hysteresis: f64,
        /// Windows absorbed into the baseline before any z is judged.
        warmup: u32,
        /// Consecutive normal windows needed to clear (0 behaves as 1).
        clear_after: u32,
        /// Floor for the baseline's standard deviation, so a flat baseline gives a finite z.
        min_stddev: f64,
    },
    /// Missing data: raise when the engine reports the key silent for
    /// `[engine] idle_timeout`; clear at its next reading. No parameters of its own.
    Silence,
    /// Per reading: a stuck sensor. Raise when the readings have stayed within
    /// `tolerance` of each other for `min_duration_ms` of event time and at least
    /// `min_readings` readings; clear at the first reading outside that band.
    Flatline {
        /// Largest spread (max - min) of values that counts as "not moving"; 0 = bit-identical.
        tolerance: f64,
        /// How long (event time, ms) the values must not move.
        min_duration_ms: i64,
        /// How many readings at least must not move.
        min_readings: u32,
    },
    /// Per reading: a change in mean. Two-sided CUSUM of residuals standardised
    /// against a slow, winsorised baseline; raise when a sum exceeds `threshold`,
    /// then restart from the new level; clear after `clear_after` readings with
    /// both sums below `threshold / 2`.
    LevelShift {
        /// Decision level h, in standard deviations accumulated.
        threshold: f64,
        /// Allowance k per reading, in standard deviations (half the shift to catch).
        drift: f64,
        /// Normal readings needed to clear.
        clear_after: u32,
    },
    /// Per reading: the rate of change per second against its usual spread.
    Rate {
        /// Raise when |z| of the rate is above this.
        threshold: f64,
        /// Readings with |z| below `threshold / 2` needed to clear.
        clear_after: u32,
    },
    /// Per reading: short-term (about 40 readings) against long-term (about
    /// 1,000) variance of first differences: a sensor getting noisier.
    Spread {
        /// Raise when the variance ratio is above this.
        threshold: f64,
        /// Readings with a ratio below `sqrt(threshold)` needed to clear.
        clear_after: u32,
    },
    /// Per reading: expected value and spread per time-of-day slot (and
    /// day-of-week with `weekly`), learned online.
    Seasonal {
        /// Raise when |z| against the slot is above this.
        threshold: f64,
        /// Slots per day (1 to 96, dividing the day into whole milliseconds).
        slots_per_day: u32,
        /// One set of slots per day of the week.
        weekly: bool,
        /// Visits a slot needs before it judges (cold start).
        min_samples: u32,
        /// Readings with |z| below `threshold / 2` needed to clear.
        clear_after: u32,
    },
    /// Per reading: every statistic above combined into one score in [0, 1]
    /// (see `detect/online.rs`); no tuning needed.
    Auto {
        /// Score at or above which a reading is abnormal (0.5 = 1 in 10,000).
        threshold: f64,
        /// Consecutive abnormal readings needed to raise.
        sustain: u32,
        /// Readings with a score below `threshold / 2` needed to clear.
        clear_after: u32,
    },
    /// Per reading, opt-in: each key's first `commission` readings are its
    /// normal; afterwards the recent level (about 10 readings) is judged
    /// against that frozen reference, which never absorbs a fault (see
    /// `detect/reference.rs`).
    Reference {
        /// Readings per key that make the reference (at least 60).
        commission: u32,
        /// Raise when the recent level is more than this many reference
        /// spreads from the reference level.
        threshold: f64,
        /// Consecutive abnormal readings needed to raise.
        sustain: u32,
        /// Readings within `threshold / 2` needed to clear.
        clear_after: u32,
    },
}

impl DetectorKind {
    /// Stable name of the rule, as carried in [`super::Alert::kind`].
    pub fn name(&self) -> &'static str {
        match self {
            Self::Threshold { .. } => "threshold",
            Self::ZScore { .. } => "zscore",
            Self::Silence => "silence",
            Self::Flatline { .. } => "flatline",
            Self::LevelShift { .. } => "level_shift",
            Self::Rate { .. } => "rate",
            Self::Spread { .. } => "spread",
            Self::Seasonal { .. } => "seasonal",
            Self::Auto { .. } => "auto",
            Self::Reference { .. } => "reference",
        }
    }
}

/// One configured detector.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectorSpec {
    /// Unique per config, e.g. `too-hot`. Part of every alert id.
    pub name: String,
    /// Which sensors it applies to.
    pub sensor: Glob,
    /// Which metrics it applies to.
    pub metric: Glob,
    /// Severity of its alerts.
    pub severity: Severity,
    /// The rule.
    pub kind: DetectorKind,
}

/// A detector spec that cannot work, with what is allowed instead.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum DetectError {
    /// The name is empty or contains `/`.
    #[error(
        "detector name `{0}` is not usable: it must be non-empty and contain no `/` (it is part of alert ids)"
    )]
    BadName(String),
    /// Two specs share a name.
    #[error("detector name `{0}` is used twice: names must be unique, they identify alerts")]
    DuplicateName(String),
    /// A parameter is NaN or infinite.
    #[error("detector `{name}`: `{field}` is {value}, it must be a finite number")]
    NotFinite {
        /// Detector name.
        name: String,
        /// Parameter name.
        field: &'static str,
        /// The value given.
        value: f64,
    },
    /// A threshold with neither limit.
    #[error("detector `{0}`: a threshold needs `high`, `low` or both")]
    NoLimit(String),
    /// `low >= high`.
    #[error("detector `{name}`: `low` ({low}) must be below `high` ({high})")]
    LowNotBelowHigh {
        /// Detector name.
        name: String,
        /// Lower limit given.
        low: f64,
        /// Upper limit given.
        high: f64,
    },
    /// Hysteresis negative, or too wide for the band it narrows.
    #[error("detector `{name}`: `hysteresis` is {value}, it must be >= 0 and below {limit}")]
    Hysteresis {
        /// Detector name.
        name: String,
        /// Hysteresis given.
        value: f64,
        /// Exclusive upper bound: `high - low`, or the z threshold (infinite when unbounded).
        limit: f64,
    },
    /// `clear_after_ms < 0`.
    #[error(
        "detector `{name}`: `clear_after_ms` is {value}, it must be >= 0 (0 clears at the first normal reading)"
    )]
    NegativeClearAfter {
        /// Detector name.
        name: String,
        /// Value given.
        value: i64,
    },
    /// `alpha` outside (0, 1].
    #[error(
        "detector `{name}`: `alpha` is {value}, it must be in (0, 1] (e.g. 0.1 weighs the newest window 10%)"
    )]
    Alpha {
        /// Detector name.
        name: String,
        /// Value given.
        value: f64,
    },
    /// z threshold not positive.
    #[error(
        "detector `{name}`: `threshold` is {value}, it must be > 0 (e.g. 3 standard deviations)"
    )]
    ZThreshold {
        /// Detector name.
        name: String,
        /// Value given.
        value: f64,
    },
    /// A flatline `tolerance` or duration below 0.
    #[error("detector `{name}`: `{field}` must be >= 0")]
    Negative {
        /// Detector name.
        name: String,
        /// Parameter name.
        field: &'static str,
    },
    /// A per-reading detector's parameter outside its range.
    #[error("detector `{name}`: `{field}` is {value}, it must be {rule}")]
    OutOfRange {
        /// Detector name.
        name: String,
        /// Parameter name.
        field: &'static str,
        /// Value given.
        value: f64,
        /// What is allowed.
        rule: &'static str,
    },
    /// `min_stddev` not positive.
    #[error(
        "detector `{name}`: `min_stddev` is {value}, it must be > 0 (it keeps z finite on a flat baseline)"
    )]
    MinStddev {
        /// Detector name.
        name: String,
        /// Value given.
        value: f64,
    },
}

impl DetectorSpec {
    /// Checks the parameters; see [`DetectError`] for each rule. Does not check
    /// that names are unique across specs: [`validate_specs`] does.
    pub fn validate(&self) -> Result<(), DetectError> {
        let name = &self.name;
        if name.is_empty() || name.contains('/') {
            return Err(DetectError::BadName(name.clone()));
        }
        let finite = |field: &'static str, value: f64| {
            if value.is_finite() {
                Ok(())
            } else {
                Err(DetectError::NotFinite {
                    name: name.clone(),
                    field,
                    value,
                })
            }
        };
        match self.kind {
            DetectorKind::Threshold {
                high,
                low,
                hysteresis,
                clear_after_ms,
            } => {
                if let Some(h) = high {
                    finite("high", h)?;
                }
                if let Some(l) = low {
                    finite("low", l)?;
                }
                finite("hysteresis", hysteresis)?;
                let limit = match (low, high) {
                    (None, None) => return Err(DetectError::NoLimit(name.clone())),
                    (Some(low), Some(high)) if low >= high => {
                        return Err(DetectError::LowNotBelowHigh {
                            name: name.clone(),
                            low,
                            high,
                        });
                    }
                    (Some(low), Some(high)) => high - low,
                    _ => f64::INFINITY,
                };
                if !(0.0..limit).contains(&hysteresis) {
                    return Err(DetectError::Hysteresis {
                        name: name.clone(),
                        value: hysteresis,
                        limit,
                    });
                }
                if clear_after_ms < 0 {
                    return Err(DetectError::NegativeClearAfter {
                        name: name.clone(),
                        value: clear_after_ms,
                    });
                }
            }
            DetectorKind::Flatline {
                tolerance,
                min_duration_ms,
                ..
            } => {
                finite("tolerance", tolerance)?;
                let negative = |field| DetectError::Negative {
                    name: name.clone(),
                    field,
                };
                if tolerance < 0.0 {
                    return Err(negative("tolerance"));
                }
                if min_duration_ms < 0 {
                    return Err(negative("stuck_for"));
                }
            }
            DetectorKind::ZScore {
                alpha,
                threshold,
                hysteresis,
                min_stddev,
                ..
            } => {
                finite("alpha", alpha)?;
                finite("threshold", threshold)?;
                finite("hysteresis", hysteresis)?;
                finite("min_stddev", min_stddev)?;
                if !(alpha > 0.0 && alpha <= 1.0) {
                    return Err(DetectError::Alpha {
                        name: name.clone(),
                        value: alpha,
                    });
                }
                if threshold <= 0.0 {
                    return Err(DetectError::ZThreshold {
                        name: name.clone(),
                        value: threshold,
                    });
                }
                if !(0.0..threshold).contains(&hysteresis) {
                    return Err(DetectError::Hysteresis {
                        name: name.clone(),
                        value: hysteresis,
                        limit: threshold,
                    });
                }
                if min_stddev <= 0.0 {
                    return Err(DetectError::MinStddev {
                        name: name.clone(),
                        value: min_stddev,
                    });
                }
            }
            DetectorKind::Silence => {}
            DetectorKind::LevelShift {
                threshold, drift, ..
            } => {
                finite("threshold", threshold)?;
                finite("drift", drift)?;
                self.range("threshold", threshold, threshold > 0.0, "> 0 (e.g. 8)")?;
                self.range("drift", drift, drift >= 0.0, ">= 0 (e.g. 0.5)")?;
            }
            DetectorKind::Rate { threshold, .. } => {
                finite("threshold", threshold)?;
                self.range("threshold", threshold, threshold > 0.0, "> 0 (e.g. 6)")?;
            }
            DetectorKind::Spread { threshold, .. } => {
                finite("threshold", threshold)?;
                self.range("threshold", threshold, threshold > 1.0, "> 1 (e.g. 4)")?;
            }
            DetectorKind::Seasonal {
                threshold,
                slots_per_day,
                min_samples,
                ..
            } => {
                finite("threshold", threshold)?;
                self.range("threshold", threshold, threshold > 0.0, "> 0 (e.g. 4)")?;
                let ok = (1..=96).contains(&slots_per_day) && 86_400_000 % slots_per_day == 0;
                self.range(
                    "slots_per_day",
                    f64::from(slots_per_day),
                    ok,
                    "1 to 96 and divide the day evenly (e.g. 24 or 48)",
                )?;
                self.range(
                    "min_samples",
                    f64::from(min_samples),
                    min_samples >= 1,
                    ">= 1",
                )?;
            }
            DetectorKind::Auto { threshold, .. } => {
                finite("threshold", threshold)?;
                self.range(
                    "threshold",
                    threshold,
                    threshold > 0.0 && threshold < 1.0,
                    "between 0 and 1 (e.g. 0.5)",
                )?;
            }
            DetectorKind::Reference {
                commission,
                threshold,
                ..
            } => {
                finite("threshold", threshold)?;
                self.range("threshold", threshold, threshold > 0.0, "> 0 (e.g. 6)")?;
                self.range(
                    "commission",
                    f64::from(commission),
                    commission >= super::reference::MIN_COMMISSION,
                    ">= 60 readings (e.g. 300: five minutes at 1 Hz)",
                )?;
            }
        }
        Ok(())
    }
}

impl DetectorSpec {
    fn range(
        &self,
        field: &'static str,
        value: f64,
        ok: bool,
        rule: &'static str,
    ) -> Result<(), DetectError> {
        if ok {
            Ok(())
        } else {
            Err(DetectError::OutOfRange {
                name: self.name.clone(),
                field,
                value,
                rule,
            })
        }
    }
}

/// Validates every spec and that their names are unique (alert ids rely on it).
pub fn validate_specs(specs: &[DetectorSpec]) -> Result<(), DetectError> {
    let mut seen = HashSet::with_capacity(specs.len());
    for spec in specs {
        spec.validate()?;
        if !seen.insert(spec.name.as_str()) {
            return Err(DetectError::DuplicateName(spec.name.clone()));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn threshold(
        high: Option<f64>,
        low: Option<f64>,
        hysteresis: f64,
        clear_after_ms: i64,
    ) -> DetectorSpec {
        super::super::test_support::threshold_spec("t", high, low, hysteresis, clear_after_ms)
    }

    fn zscore(alpha: f64, threshold: f64, hysteresis: f64, min_stddev: f64) -> DetectorSpec {
        DetectorSpec {
            name: "z".into(),
            sensor: Glob::new("*"),
            metric: Glob::new("*"),
            severity: Severity::Critical,
            kind: DetectorKind::ZScore {
                alpha,
                threshold,
                hysteresis,
                warmup: 5,
                clear_after: 2,
                min_stddev,
            },
        }
    }

    #[test]
    fn sensible_threshold_and_zscore_specs_pass() {
        assert_eq!(threshold(Some(35.0), Some(5.0), 1.0, 0).validate(), Ok(()));
        assert_eq!(
            threshold(Some(35.0), None, 100.0, 60_000).validate(),
            Ok(())
        );
        assert_eq!(threshold(None, Some(5.0), 0.0, 0).validate(), Ok(()));
        assert_eq!(zscore(1.0, 3.0, 0.5, 1e-6).validate(), Ok(()));
    }

    #[test]
    fn a_threshold_without_limits_is_refused() {
        let err = threshold(None, None, 0.0, 0).validate().unwrap_err();
        assert_eq!(err, DetectError::NoLimit("t".into()));
        assert!(err.to_string().contains("needs `high`, `low` or both"));
    }

    #[test]
    fn low_must_be_below_high() {
        assert!(matches!(
            threshold(Some(5.0), Some(5.0), 0.0, 0).validate(),
            Err(DetectError::LowNotBelowHigh { .. })
        ));
    }

    #[test]
    fn hysteresis_must_be_non_negative_and_narrower_than_the_band() {
        assert!(matches!(
            threshold(Some(10.0), None, -0.1, 0).validate(),
            Err(DetectError::Hysteresis { .. })
        ));
        let err = threshold(Some(10.0), Some(0.0), 10.0, 0)
            .validate()
            .unwrap_err();
        assert!(
            err.to_string().contains("must be >= 0 and below 10"),
            "{err}"
        );
    }

    #[test]
    fn a_negative_clear_after_is_refused() {
        assert!(matches!(
            threshold(Some(10.0), None, 0.0, -1).validate(),
            Err(DetectError::NegativeClearAfter { value: -1, .. })
        ));
    }

    #[test]
    fn non_finite_parameters_are_refused() {
        assert!(matches!(
            threshold(Some(f64::NAN), None, 0.0, 0).validate(),
            Err(DetectError::NotFinite { field: "high", .. })
        ));
        assert!(matches!(
            zscore(0.5, f64::INFINITY, 0.0, 1.0).validate(),
            Err(DetectError::NotFinite {
                field: "threshold",
                ..
            })
        ));
    }

    #[test]
    fn zscore_parameters_outside_their_ranges_are_refused() {
        assert!(matches!(
            zscore(0.0, 3.0, 0.0, 1.0).validate(),
            Err(DetectError::Alpha { .. })
        ));
        assert!(matches!(
            zscore(1.5, 3.0, 0.0, 1.0).validate(),
            Err(DetectError::Alpha { .. })
        ));
        assert!(matches!(
            zscore(0.5, 0.0, 0.0, 1.0).validate(),
            Err(DetectError::ZThreshold { .. })
        ));
        assert!(matches!(
            zscore(0.5, 3.0, 3.0, 1.0).validate(),
            Err(DetectError::Hysteresis { .. })
        ));
        assert!(matches!(
            zscore(0.5, 3.0, -1.0, 1.0).validate(),
            Err(DetectError::Hysteresis { .. })
        ));
        assert!(matches!(
            zscore(0.5, 3.0, 0.0, 0.0).validate(),
            Err(DetectError::MinStddev { .. })
        ));
    }

    #[test]
    fn names_must_be_usable_in_ids_and_unique() {
        let mut bad = threshold(Some(1.0), None, 0.0, 0);
        bad.name = "a/b".into();
        assert_eq!(bad.validate(), Err(DetectError::BadName("a/b".into())));
        bad.name = String::new();
        assert!(matches!(bad.validate(), Err(DetectError::BadName(_))));

        let ok = threshold(Some(1.0), None, 0.0, 0);
        assert_eq!(
            validate_specs(&[ok.clone(), zscore(0.5, 3.0, 0.0, 1.0)]),
            Ok(())
        );
        assert_eq!(
            validate_specs(&[ok.clone(), ok]),
            Err(DetectError::DuplicateName("t".into()))
        );
    }
}
