//! The simulators' randomness: SplitMix64 and Box–Muller.
//!
//! Both are written out here rather than taken from a crate because the
//! simulators promise bit-for-bit identical sequences on x86_64, aarch64 and
//! armv7 for ever: that holds only if the exact arithmetic is ours. Integer
//! steps are wrapping `u64` operations; the float steps are single IEEE 754
//! operations (never fused: Rust does not contract `a * b + c`) and `libm`
//! functions, which are portable software implementations (its `sqrt` may use
//! a hardware instruction, which IEEE 754 requires to be correctly rounded).

/// SplitMix64 (Steele, Lea and Flood 2014; the seeding generator of xoshiro):
/// a 64-bit counter passed through a bijective mixer. Every seed is valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SplitMix64 {
    state: u64,
}

/// 2^-53: turns the top 53 bits of a `u64` into a float in [0, 1).
const TWO_POW_MINUS_53: f64 = 1.0 / 9_007_199_254_740_992.0;

impl SplitMix64 {
    pub(crate) const fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform float in (0, 1]: never 0, so that `ln` in Box–Muller stays finite.
    /// Both conversions are exact (53-bit integer, power-of-two scale).
    fn next_unit_open_closed(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 * TWO_POW_MINUS_53
    }

    /// A standard normal variate (Box–Muller, cosine branch). Consumes exactly two
    /// `u64`s, so that the noise of sample `i` depends only on the seed and `i`.
    /// Always finite: |z| <= sqrt(-2 ln 2^-53) < 8.6.
    pub(crate) fn next_gaussian(&mut self) -> f64 {
        let u1 = self.next_unit_open_closed();
        let u2 = self.next_unit_open_closed();
        let radius = libm::sqrt(-2.0 * libm::log(u1));
        radius * libm::cos(core::f64::consts::TAU * u2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_reference_outputs_for_seed_1234567() {
        // Reference values from the C implementation by Sebastiano Vigna
        // (also the first outputs of Java's SplittableRandom for this seed).
        let mut rng = SplitMix64::new(1_234_567);
        let got: [u64; 5] = core::array::from_fn(|_| rng.next_u64());
        assert_eq!(
            got,
            [
                6_457_827_717_110_365_317,
                3_203_168_211_198_807_973,
                9_817_491_932_198_370_423,
                4_593_380_528_125_082_431,
                16_408_922_859_458_223_821,
            ]
        );
    }

    #[test]
    fn uniform_draws_stay_in_the_half_open_unit_interval() {
        let mut rng = SplitMix64::new(7);
        for _ in 0..10_000 {
            let u = rng.next_unit_open_closed();
            assert!(u > 0.0 && u <= 1.0, "{u}");
        }
    }

    #[test]
    fn the_extreme_uniform_values_give_finite_gaussians() {
        // u1 = 2^-53 is the smallest draw; the radius must still be finite.
        let smallest = libm::sqrt(-2.0 * libm::log(TWO_POW_MINUS_53));
        assert!(smallest.is_finite() && smallest < 8.6, "{smallest}");
        assert_eq!(libm::sqrt(-2.0 * libm::log(1.0)), 0.0);
    }
}
