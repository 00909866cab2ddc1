//! Deterministic simulated sensors: a base value with drift, a periodic
//! component, gaussian noise and scripted anomalies, identical bit for bit on
//! every platform so that a test scenario written on a laptop replays exactly
//! on a Raspberry Pi.
//!
//! Invariants of a [`SimSensor`]:
//! - `index` is the number of samples produced, dropped ones included;
//! - the generator has drawn exactly `2 · index` numbers, whatever the
//!   anomalies did, so the noise of sample `i` depends only on the seed and `i`
//!   (adding an anomaly never changes the samples outside it);
//! - `prev` is the value sample `index - 1` had or would have had (a dropped
//!   sample still has a value: it was measured but not delivered), `None` only
//!   before the first sample;
//! - `held` is `Some` exactly while consecutive samples are stuck, and holds the
//!   value they repeat.

mod rng;
mod spec;

pub use spec::{Anomaly, AnomalyKind, MAX_ANOMALIES, MAX_MAGNITUDE, SimError, SimSpec, validate};

use rng::SplitMix64;

/// A simulated sensor following a [`SimSpec`].
#[derive(Clone, Debug)]
pub struct SimSensor {
    spec: SimSpec,
    rng: SplitMix64,
    index: u64,
    prev: Option<f64>,
    held: Option<f64>,
}

impl SimSensor {
    /// A sensor at sample 0. Does not validate: a spec that fails [`validate`] may
    /// produce non-finite samples; use [`SimSensor::try_new`] for specs from users.
    pub fn new(spec: SimSpec) -> Self {
        Self {
            rng: SplitMix64::new(spec.seed),
            spec,
            index: 0,
            prev: None,
            held: None,
        }
    }

    /// A sensor at sample 0, after [`validate`]: every sample it produces is finite.
    pub fn try_new(spec: SimSpec) -> Result<Self, SimError> {
        validate(&spec)?;
        Ok(Self::new(spec))
    }

    /// The spec this sensor follows.
    pub fn spec(&self) -> &SimSpec {
        &self.spec
    }

    /// The next sample; `None` during a Dropout. Deterministic: the same spec gives
    /// the same sequence, bit for bit, on every platform (aarch64, armv7, x86_64).
    ///
    /// Overlapping anomalies combine in a fixed order: the normal value, plus every
    /// covering Spike magnitude and Step delta; then, if any Stuck covers the
    /// sample, that sum is replaced by the value of the sample before the stuck run
    /// began (a stuck run starting at sample 0 repeats sample 0's own value); then,
    /// if any Dropout covers the sample, it is not delivered. A Stuck run that
    /// follows a Dropout repeats the dropped sample's value, as a frozen register
    /// would.
    pub fn next_sample(&mut self) -> Option<f64> {
        let i = self.index;
        // Drawn before anything else so the stream stays aligned with the index.
        let noise = self.rng.next_gaussian();
        let mut value = self.normal_value(i, noise);
        let (mut stuck, mut dropout) = (false, false);
        for a in self.spec.anomalies.iter().filter(|a| a.covers(i)) {
            match a.kind {
                AnomalyKind::Spike { magnitude } => value += magnitude,
                AnomalyKind::Step { delta } => value += delta,
                AnomalyKind::Stuck => stuck = true,
                AnomalyKind::Dropout => dropout = true,
            }
        }
        if stuck {
            let held = *self.held.get_or_insert(self.prev.unwrap_or(value));
            value = held;
        } else {
            self.held = None;
        }
        self.prev = Some(value);
        self.index = i.wrapping_add(1);
        if dropout { None } else { Some(value) }
    }

    /// Samples produced so far, including dropped ones; the index of the next sample.
    pub fn index(&self) -> u64 {
        self.index
    }

    fn normal_value(&self, i: u64, noise: f64) -> f64 {
        let s = &self.spec;
        let mut v = s.base + s.drift_per_sample * i as f64;
        if s.amplitude != 0.0 && s.period_samples != 0 {
            // Reduce the phase in integers first: sin of a huge argument loses all
            // precision, and the reduction keeps the wave exactly periodic.
            let phase = (i % s.period_samples) as f64 / s.period_samples as f64;
            v += s.amplitude * libm::sin(core::f64::consts::TAU * phase);
        }
        v + s.noise_stddev * noise
    }
}

/// An endless stream of [`SimSensor::next_sample`] results: `next()` is never
/// `None`; a dropped sample is `Some(None)`.
impl Iterator for SimSensor {
    type Item = Option<f64>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.next_sample())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::MAX, None)
    }
}

#[cfg(test)]
mod tests;
