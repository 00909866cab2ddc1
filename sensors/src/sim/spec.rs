//! What a simulated sensor produces: the spec, its anomalies, and validation.

use core::fmt;

/// How many anomalies one spec may script. Fixed so the simulator needs no allocator.
pub const MAX_ANOMALIES: usize = 16;

/// The largest magnitude accepted for any value-like field (base, noise, drift,
/// amplitude, spike, step). No physical sensor reads near 10^15, and the bound is
/// what makes every sample provably finite: even at sample `u64::MAX` the drift
/// term is below 2·10^34, far from `f64::MAX`.
pub const MAX_MAGNITUDE: f64 = 1e15;

/// What goes wrong with a sensor during an [`Anomaly`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AnomalyKind {
    /// Adds `magnitude` to the value (a glitch or a real event).
    Spike {
        /// Added to each affected sample; may be negative.
        magnitude: f64,
    },
    /// Repeats, bit-exact, the value of the sample just before the anomaly started
    /// (a frozen register or a hung conversion).
    Stuck,
    /// Adds `delta` to the value (a calibration jump).
    Step {
        /// Added to each affected sample; may be negative.
        delta: f64,
    },
    /// Produces no sample at all (a bus error, a missed poll).
    Dropout,
}

/// One scripted anomaly over the samples `[start_sample, start_sample + len_samples)`,
/// counted from 0 like [`SimSensor::index`](super::SimSensor::index).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Anomaly {
    /// What happens.
    pub kind: AnomalyKind,
    /// Index of the first affected sample.
    pub start_sample: u64,
    /// Number of affected samples; at least 1. `u64::MAX` means "until the end".
    pub len_samples: u64,
}

impl Anomaly {
    /// Whether sample `index` is affected.
    pub fn covers(&self, index: u64) -> bool {
        index >= self.start_sample && index - self.start_sample < self.len_samples
    }
}

/// The recipe of a simulated sensor. Sample `i` (from 0) is
/// `base + drift_per_sample·i + amplitude·sin(2π·(i mod period_samples)/period_samples) + noise`,
/// with gaussian noise of standard deviation `noise_stddev`, then the anomalies
/// that cover `i` are applied (see [`SimSensor::next_sample`](super::SimSensor::next_sample)).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SimSpec {
    /// Seed of the noise generator; every seed is valid.
    pub seed: u64,
    /// The value with no drift, no periodic component and no noise.
    pub base: f64,
    /// Standard deviation of the gaussian noise; 0 for none.
    pub noise_stddev: f64,
    /// Added once per sample (linear drift).
    pub drift_per_sample: f64,
    /// Amplitude of the periodic component; 0 for none.
    pub amplitude: f64,
    /// Period of the periodic component in samples; must be > 0 when `amplitude != 0`.
    pub period_samples: u64,
    /// Scripted anomalies. They may overlap; see
    /// [`SimSensor::next_sample`](super::SimSensor::next_sample) for how they combine.
    pub anomalies: heapless::Vec<Anomaly, MAX_ANOMALIES>,
}

/// Why a [`SimSpec`] is refused by [`validate`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SimError {
    /// A field is NaN or infinite.
    NonFinite {
        /// The field, e.g. `"base"`.
        field: &'static str,
    },
    /// A field's magnitude exceeds [`MAX_MAGNITUDE`].
    OutOfRange {
        /// The field, e.g. `"drift_per_sample"`.
        field: &'static str,
    },
    /// `noise_stddev` is negative.
    NegativeNoise,
    /// `amplitude != 0` but `period_samples == 0`.
    ZeroPeriod,
    /// Anomaly number `index` (from 0) covers no sample.
    EmptyAnomaly {
        /// Position in `anomalies`.
        index: usize,
    },
    /// Anomaly number `index` has a NaN or infinite magnitude or delta.
    AnomalyNonFinite {
        /// Position in `anomalies`.
        index: usize,
    },
    /// Anomaly number `index` has a magnitude or delta beyond [`MAX_MAGNITUDE`].
    AnomalyOutOfRange {
        /// Position in `anomalies`.
        index: usize,
    },
}

// Hand-written rather than `thiserror`: this crate's core is no_std and the workspace
// pins thiserror with its std feature on.
impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NonFinite { field } => write!(f, "{field} must be a finite number"),
            Self::OutOfRange { field } => {
                write!(f, "{field} must be within ±{MAX_MAGNITUDE:e}")
            }
            Self::NegativeNoise => f.write_str("noise_stddev must not be negative"),
            Self::ZeroPeriod => f.write_str("period_samples must be > 0 when amplitude is not 0"),
            Self::EmptyAnomaly { index } => {
                write!(
                    f,
                    "anomaly {index} has len_samples = 0 and would never apply"
                )
            }
            Self::AnomalyNonFinite { index } => {
                write!(f, "anomaly {index} must have a finite magnitude or delta")
            }
            Self::AnomalyOutOfRange { index } => {
                write!(
                    f,
                    "anomaly {index} magnitude or delta must be within ±{MAX_MAGNITUDE:e}"
                )
            }
        }
    }
}

impl core::error::Error for SimError {}

/// Checks that a spec can only produce finite samples: every float finite and
/// within ±[`MAX_MAGNITUDE`], noise not negative, a period when there is an
/// amplitude, and no empty anomaly. Overlapping anomalies are allowed (a spike on
/// top of a calibration step is a realistic scenario); their combination is
/// defined in [`SimSensor::next_sample`](super::SimSensor::next_sample).
pub fn validate(spec: &SimSpec) -> Result<(), SimError> {
    let fields = [
        ("base", spec.base),
        ("noise_stddev", spec.noise_stddev),
        ("drift_per_sample", spec.drift_per_sample),
        ("amplitude", spec.amplitude),
    ];
    for (field, v) in fields {
        if !v.is_finite() {
            return Err(SimError::NonFinite { field });
        }
        if libm::fabs(v) > MAX_MAGNITUDE {
            return Err(SimError::OutOfRange { field });
        }
    }
    if spec.noise_stddev < 0.0 {
        return Err(SimError::NegativeNoise);
    }
    if spec.amplitude != 0.0 && spec.period_samples == 0 {
        return Err(SimError::ZeroPeriod);
    }
    for (index, a) in spec.anomalies.iter().enumerate() {
        if a.len_samples == 0 {
            return Err(SimError::EmptyAnomaly { index });
        }
        let v = match a.kind {
            AnomalyKind::Spike { magnitude } => magnitude,
            AnomalyKind::Step { delta } => delta,
            AnomalyKind::Stuck | AnomalyKind::Dropout => 0.0,
        };
        if !v.is_finite() {
            return Err(SimError::AnomalyNonFinite { index });
        }
        if libm::fabs(v) > MAX_MAGNITUDE {
            return Err(SimError::AnomalyOutOfRange { index });
        }
    }
    Ok(())
}
