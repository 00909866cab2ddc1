#![allow(clippy::unwrap_used)]

use super::*;
use proptest::prelude::*;

fn noisy(seed: u64) -> SimSpec {
    SimSpec {
        seed,
        base: 20.0,
        noise_stddev: 0.5,
        ..SimSpec::default()
    }
}

fn with(mut spec: SimSpec, kind: AnomalyKind, start_sample: u64, len_samples: u64) -> SimSpec {
    let a = Anomaly {
        kind,
        start_sample,
        len_samples,
    };
    spec.anomalies.push(a).unwrap();
    spec
}

fn take(spec: SimSpec, n: usize) -> Vec<Option<f64>> {
    SimSensor::try_new(spec).unwrap().take(n).collect()
}

fn bits(samples: &[Option<f64>]) -> Vec<Option<u64>> {
    samples.iter().map(|s| s.map(f64::to_bits)).collect()
}

#[test]
fn the_same_seed_gives_the_same_sequence_bit_for_bit() {
    assert_eq!(bits(&take(noisy(42), 1000)), bits(&take(noisy(42), 1000)));
}

#[test]
fn a_different_seed_gives_a_different_sequence() {
    let a = take(noisy(42), 100);
    let b = take(noisy(43), 100);
    let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
    assert_eq!(same, 0);
}

#[test]
fn the_sequence_is_pinned_bit_for_bit_on_every_platform() {
    // Generated on x86_64; the ARM builds run this under QEMU. A change here means
    // recorded scenarios no longer replay: only update it deliberately.
    let spec = SimSpec {
        seed: 42,
        base: 20.0,
        noise_stddev: 0.5,
        drift_per_sample: 0.01,
        amplitude: 2.0,
        period_samples: 7,
        anomalies: heapless::Vec::new(),
    };
    let got = bits(&take(spec, 8));
    let want = [
        0x4034_3515_896a_8dea_u64,
        0x4035_20b2_3fa5_af3e,
        0x4036_d5ab_c711_8432,
        0x4035_2baa_fadb_2649,
        0x4032_a1cc_7576_601b,
        0x4031_35f1_c123_6b2f,
        0x4031_ec6c_51b8_ae20,
        0x4034_3341_f698_9275,
    ];
    assert_eq!(got, want.map(Some).to_vec(), "{got:#x?}");
}

#[test]
fn noise_over_10k_samples_has_the_requested_mean_and_stddev() {
    let spec = SimSpec {
        seed: 7,
        base: 100.0,
        noise_stddev: 2.0,
        ..SimSpec::default()
    };
    let xs: Vec<f64> = take(spec, 10_000).into_iter().map(Option::unwrap).collect();
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
    // Standard error of the mean is 2/100 = 0.02; of the stddev about 2/141 = 0.014.
    assert!((mean - 100.0).abs() < 0.08, "mean {mean}");
    assert!((var.sqrt() - 2.0).abs() < 0.06, "stddev {}", var.sqrt());
}

#[test]
fn zero_noise_and_no_drift_give_the_base_exactly() {
    let spec = SimSpec {
        base: 21.5,
        ..SimSpec::default()
    };
    assert!(take(spec, 100).iter().all(|s| *s == Some(21.5)));
}

#[test]
fn drift_adds_a_fixed_amount_per_sample() {
    let spec = SimSpec {
        base: 10.0,
        drift_per_sample: 0.25,
        ..SimSpec::default()
    };
    let got = take(spec, 5);
    assert_eq!(got, [10.0, 10.25, 10.5, 10.75, 11.0].map(Some).to_vec());
}

#[test]
fn the_periodic_component_repeats_every_period_and_peaks_a_quarter_in() {
    let spec = SimSpec {
        amplitude: 3.0,
        period_samples: 8,
        ..SimSpec::default()
    };
    let got = take(spec, 16);
    assert_eq!(bits(&got[..8]), bits(&got[8..]));
    assert_eq!(got[0], Some(0.0));
    assert_eq!(got[2], Some(3.0));
    assert!((got[6].unwrap() + 3.0).abs() < 1e-12);
}

#[test]
fn a_spike_adds_its_magnitude_exactly_on_its_samples() {
    let normal = take(noisy(1), 20);
    let spiked = take(
        with(noisy(1), AnomalyKind::Spike { magnitude: 50.0 }, 5, 3),
        20,
    );
    for i in 0..20 {
        let want = if (5..8).contains(&i) {
            normal[i].map(|v| v + 50.0)
        } else {
            normal[i]
        };
        assert_eq!(
            spiked[i].map(f64::to_bits),
            want.map(f64::to_bits),
            "sample {i}"
        );
    }
}

#[test]
fn a_step_adds_its_delta_exactly_on_its_samples() {
    let normal = take(noisy(2), 20);
    let stepped = take(
        with(noisy(2), AnomalyKind::Step { delta: -4.5 }, 10, u64::MAX),
        20,
    );
    for i in 0..20 {
        let want = if i >= 10 {
            normal[i].map(|v| v - 4.5)
        } else {
            normal[i]
        };
        assert_eq!(
            stepped[i].map(f64::to_bits),
            want.map(f64::to_bits),
            "sample {i}"
        );
    }
}

#[test]
fn a_stuck_sensor_repeats_the_previous_value_bit_for_bit() {
    let normal = take(noisy(3), 20);
    let stuck = take(with(noisy(3), AnomalyKind::Stuck, 6, 4), 20);
    let frozen = normal[5].unwrap().to_bits();
    for i in 0..20 {
        let got = stuck[i].unwrap().to_bits();
        if (6..10).contains(&i) {
            assert_eq!(got, frozen, "sample {i}");
        } else {
            assert_eq!(got, normal[i].unwrap().to_bits(), "sample {i}");
        }
    }
}

#[test]
fn a_stuck_run_from_sample_zero_repeats_the_first_value() {
    let normal = take(noisy(4), 5);
    let stuck = take(with(noisy(4), AnomalyKind::Stuck, 0, 3), 5);
    assert_eq!(bits(&stuck[..3]), vec![normal[0].map(f64::to_bits); 3]);
    assert_eq!(bits(&stuck[3..]), bits(&normal[3..]));
}

#[test]
fn a_dropout_yields_none_and_still_advances_the_index() {
    let normal = take(noisy(5), 10);
    let mut s = SimSensor::try_new(with(noisy(5), AnomalyKind::Dropout, 2, 3)).unwrap();
    for (i, want) in normal.iter().enumerate() {
        assert_eq!(s.index(), i as u64);
        let got = s.next_sample();
        if (2..5).contains(&i) {
            assert_eq!(got, None, "sample {i}");
        } else {
            assert_eq!(got.map(f64::to_bits), want.map(f64::to_bits), "sample {i}");
        }
    }
    assert_eq!(s.index(), 10);
}

#[test]
fn overlapping_spike_and_step_add_up_in_list_order() {
    let normal = take(noisy(6), 10);
    let spec = with(noisy(6), AnomalyKind::Step { delta: 1.5 }, 2, 6);
    let got = take(with(spec, AnomalyKind::Spike { magnitude: 9.0 }, 4, 1), 10);
    assert_eq!(got[3], normal[3].map(|v| v + 1.5));
    assert_eq!(got[4], normal[4].map(|v| v + 1.5 + 9.0));
}

#[test]
fn a_stuck_run_hides_a_spike_inside_it() {
    let normal = take(noisy(7), 10);
    let spec = with(noisy(7), AnomalyKind::Stuck, 3, 4);
    let got = take(
        with(spec, AnomalyKind::Spike { magnitude: 100.0 }, 4, 1),
        10,
    );
    assert_eq!(got[4], normal[2]);
}

#[test]
fn a_stuck_run_after_a_dropout_repeats_the_dropped_value() {
    let normal = take(noisy(8), 10);
    let spec = with(noisy(8), AnomalyKind::Dropout, 2, 1);
    let got = take(with(spec, AnomalyKind::Stuck, 3, 2), 10);
    assert_eq!(got[2], None);
    assert_eq!(got[3], normal[2]);
    assert_eq!(got[4], normal[2]);
}

#[test]
fn anomalies_never_change_the_samples_outside_them() {
    let normal = take(noisy(9), 40);
    let mut spec = noisy(9);
    for (k, kind) in [
        AnomalyKind::Spike { magnitude: 5.0 },
        AnomalyKind::Stuck,
        AnomalyKind::Step { delta: 2.0 },
        AnomalyKind::Dropout,
    ]
    .into_iter()
    .enumerate()
    {
        spec = with(spec, kind, 5 + 8 * k as u64, 3);
    }
    let got = take(spec.clone(), 40);
    for i in (0..40).filter(|&i| !spec.anomalies.iter().any(|a| a.covers(i as u64))) {
        assert_eq!(
            got[i].map(f64::to_bits),
            normal[i].map(f64::to_bits),
            "sample {i}"
        );
    }
}

#[test]
fn validation_refuses_each_kind_of_bad_spec() {
    let ok = SimSpec::default();
    assert_eq!(validate(&ok), Ok(()));
    let cases: [(SimSpec, SimError); 8] = [
        (
            SimSpec {
                base: f64::NAN,
                ..ok.clone()
            },
            SimError::NonFinite { field: "base" },
        ),
        (
            SimSpec {
                noise_stddev: f64::INFINITY,
                ..ok.clone()
            },
            SimError::NonFinite {
                field: "noise_stddev",
            },
        ),
        (
            SimSpec {
                drift_per_sample: -1e16,
                ..ok.clone()
            },
            SimError::OutOfRange {
                field: "drift_per_sample",
            },
        ),
        (
            SimSpec {
                noise_stddev: -0.1,
                ..ok.clone()
            },
            SimError::NegativeNoise,
        ),
        (
            SimSpec {
                amplitude: 1.0,
                period_samples: 0,
                ..ok.clone()
            },
            SimError::ZeroPeriod,
        ),
        (
            with(ok.clone(), AnomalyKind::Dropout, 3, 0),
            SimError::EmptyAnomaly { index: 0 },
        ),
        (
            with(
                with(ok.clone(), AnomalyKind::Stuck, 0, 1),
                AnomalyKind::Spike {
                    magnitude: f64::NAN,
                },
                0,
                1,
            ),
            SimError::AnomalyNonFinite { index: 1 },
        ),
        (
            with(ok.clone(), AnomalyKind::Step { delta: 2e15 }, 0, 1),
            SimError::AnomalyOutOfRange { index: 0 },
        ),
    ];
    for (spec, want) in cases {
        assert_eq!(validate(&spec), Err(want), "{spec:?}");
        assert_eq!(SimSensor::try_new(spec).err(), Some(want));
    }
}

#[test]
fn zero_amplitude_needs_no_period_and_overlaps_are_valid() {
    let spec = with(
        with(SimSpec::default(), AnomalyKind::Stuck, 0, 10),
        AnomalyKind::Dropout,
        5,
        10,
    );
    assert_eq!(validate(&spec), Ok(()));
}

#[test]
fn errors_say_which_field_is_wrong() {
    let msg = SimError::NonFinite { field: "base" }.to_string();
    assert_eq!(msg, "base must be a finite number");
    let msg = SimError::AnomalyOutOfRange { index: 3 }.to_string();
    assert!(msg.starts_with("anomaly 3 "), "{msg}");
}

fn arb_anomaly() -> impl Strategy<Value = Anomaly> {
    let m = -MAX_MAGNITUDE..=MAX_MAGNITUDE;
    let kind = prop_oneof![
        m.clone()
            .prop_map(|magnitude| AnomalyKind::Spike { magnitude }),
        Just(AnomalyKind::Stuck),
        m.prop_map(|delta| AnomalyKind::Step { delta }),
        Just(AnomalyKind::Dropout),
    ];
    (kind, 0u64..200, 1u64..=u64::MAX).prop_map(|(kind, start_sample, len_samples)| Anomaly {
        kind,
        start_sample,
        len_samples,
    })
}

fn arb_spec() -> impl Strategy<Value = SimSpec> {
    let m = || -MAX_MAGNITUDE..=MAX_MAGNITUDE;
    (
        any::<u64>(),
        m(),
        0.0..=MAX_MAGNITUDE,
        m(),
        m(),
        1u64..=u64::MAX,
        prop::collection::vec(arb_anomaly(), 0..=MAX_ANOMALIES),
    )
        .prop_map(
            |(seed, base, noise_stddev, drift, amplitude, period, anomalies)| SimSpec {
                seed,
                base,
                noise_stddev,
                drift_per_sample: drift,
                amplitude,
                period_samples: period,
                anomalies: anomalies.into_iter().collect(),
            },
        )
}

proptest! {
    #[test]
    fn a_valid_spec_never_yields_nan_or_infinity(spec in arb_spec(), skip in prop::option::of(u64::MAX - 300..u64::MAX - 200)) {
        prop_assert_eq!(validate(&spec), Ok(()));
        let mut s = SimSensor::try_new(spec).unwrap();
        if let Some(at) = skip {
            // Far along the stream, where drift is largest.
            s.index = at;
        }
        for _ in 0..200 {
            if let Some(v) = s.next_sample() {
                prop_assert!(v.is_finite(), "{} at {}", v, s.index() - 1);
            }
        }
    }
}
