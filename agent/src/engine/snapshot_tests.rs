//! Checkpoints: an engine snapshotted and restored (through postcard bytes) at
//! any point mid-stream gives exactly the outputs of one never interrupted,
//! with every feature on (all window kinds and scopes, held late panes, idle
//! keys, quantiles) and wall-clock ticks interleaved.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::reading::TsSource;
use proptest::prelude::*;

fn cfg(kind: u8, global: bool, delay: i64, quantiles: bool) -> EngineConfig {
    EngineConfig {
        window: match kind {
            0 => WindowSpec::Tumbling {
                size_ms: 5,
                offset_ms: 1,
            },
            1 => WindowSpec::Hopping {
                size_ms: 6,
                slide_ms: 2,
                offset_ms: 0,
            },
            _ => WindowSpec::Session {
                gap_ms: 3,
                max_length_ms: 12,
                offset_ms: 0,
            },
        },
        scope: if global { Scope::Global } else { Scope::PerKey },
        max_out_of_orderness_ms: 2,
        allowed_lateness_ms: 6,
        max_future_skew_ms: 10,
        max_backfill_ms: Some(40),
        idle_timeout_ms: Some(15),
        late_fire_delay_ms: delay,
        quantiles,
        max_keys: 3,
        max_windows_per_key: 4,
    }
}

fn roundtrip(e: &Engine) -> Engine {
    let bytes = postcard::to_allocvec(&e.snapshot()).unwrap();
    let state: EngineState = postcard::from_bytes(&bytes).unwrap();
    Engine::restore(e.config().clone(), state)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn a_snapshot_restored_mid_stream_gives_the_same_outputs_as_no_interruption(
        kind in 0u8..3,
        global in any::<bool>(),
        delay in prop_oneof![Just(0i64), 1i64..8],
        quantiles in any::<bool>(),
        raw in super::model_tests::arrivals(),
        ticks in prop::collection::vec(any::<bool>(), 60),
        cut in 0usize..60,
    ) {
        let c = cfg(kind, global, delay, quantiles);
        let mut whole = Engine::new(c.clone());
        let mut split = Engine::new(c);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for (i, (k, ts, v, now)) in raw.iter().enumerate() {
            if i == cut {
                split = roundtrip(&split);
                prop_assert_eq!(split.snapshot(), whole.snapshot());
            }
            let r = Reading::new(Key::new(format!("k{k}"), "m"), *v, *ts, TsSource::Event).unwrap();
            if ticks[i] {
                whole.tick(*now, &mut a);
                split.tick(*now, &mut b);
            }
            whole.push(r.clone(), *now, &mut a);
            split.push(r, *now, &mut b);
            prop_assert_eq!(&a, &b, "after arrival {}", i);
        }
        whole.tick(1_000_000, &mut a);
        split.tick(1_000_000, &mut b);
        prop_assert_eq!(a, b);
        prop_assert_eq!(whole.open_windows(), split.open_windows());
    }
}

#[test]
fn a_snapshot_is_a_few_dozen_bytes_per_key_without_quantiles() {
    let mut e = Engine::new(cfg(0, false, 0, false));
    let mut out = Vec::new();
    for k in 0..3 {
        let r = Reading::new(
            Key::new(format!("sensor-{k}"), "temperature"),
            21.5,
            100,
            TsSource::Event,
        )
        .unwrap();
        e.push(r, 100, &mut out);
    }
    let bytes = postcard::to_allocvec(&e.snapshot()).unwrap();
    assert!(bytes.len() < 3 * 150, "{} bytes", bytes.len());
    let state: EngineState = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(state.key_count(), 3);
}
