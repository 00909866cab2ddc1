//! Model test: the engine against a brute-force reference that keeps the whole
//! history and recomputes every decision from it, in the contract's own order
//! (late check against the old watermark, add, then fire), with no incremental
//! state. Few keys, timestamps in a small range around zero (so negative ones and
//! collisions are common), random window size, offset, D, L, skew and limits.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::reading::TsSource;
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct Params {
    size: i64,
    offset: i64,
    d: i64,
    l: i64,
    skew: i64,
    max_keys: usize,
    max_windows: usize,
}

#[derive(Clone, Debug)]
struct Arrival {
    key: u8,
    ts: i64,
    value: f64,
    now: i64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Status {
    Skew,
    KeyLimit,
    Late,
    WindowLimit,
    Windowed,
}

fn key(k: u8) -> Key {
    Key::new(format!("k{k}"), "m")
}

fn reading(a: &Arrival) -> Reading {
    Reading::new(key(a.key), a.value, a.ts, TsSource::Event).unwrap()
}

/// Window start by floor division, deliberately not the engine's formula.
fn window_of(p: &Params, ts: i64) -> (i64, i64) {
    let start = p.offset + (ts - p.offset).div_euclid(p.size) * p.size;
    (start, start + p.size)
}

/// Two-pass aggregates over the readings in arrival order.
fn aggregates(rs: &[&Arrival]) -> Aggregates {
    let n = rs.len() as f64;
    let sum: f64 = rs.iter().map(|a| a.value).sum();
    let mean = sum / n;
    let var = rs.iter().map(|a| (a.value - mean).powi(2)).sum::<f64>() / n;
    // min_by_key keeps the first of equal minima, max_by_key the last of equal maxima.
    let first = rs.iter().min_by_key(|a| a.ts).unwrap().value;
    let last = rs.iter().max_by_key(|a| a.ts).unwrap().value;
    Aggregates {
        count: rs.len() as u64,
        sum,
        min: rs.iter().map(|a| a.value).fold(f64::INFINITY, f64::min),
        max: rs.iter().map(|a| a.value).fold(f64::NEG_INFINITY, f64::max),
        mean,
        stddev: var.sqrt(),
        first,
        last,
    }
}

/// What the engine must hold after all arrivals so far.
struct Expected {
    outputs: Vec<Vec<Output>>,
    statuses: Vec<Status>,
}

fn reference(p: &Params, arrivals: &[Arrival]) -> Expected {
    let mut outputs = Vec::new();
    let mut statuses: Vec<Status> = Vec::new();
    for (i, a) in arrivals.iter().enumerate() {
        let mut out = Vec::new();
        let past = &arrivals[..i];
        let counted = |j: usize| !matches!(statuses[j], Status::Skew | Status::KeyLimit);

        if a.ts > a.now + p.skew {
            out.push(Output::Rejected {
                reading: reading(a),
                reason: RejectReason::FutureSkew,
            });
            statuses.push(Status::Skew);
            outputs.push(out);
            continue;
        }
        let mut known: Vec<u8> = (0..i)
            .filter(|&j| counted(j))
            .map(|j| past[j].key)
            .collect();
        known.sort();
        known.dedup();
        if !known.contains(&a.key) && known.len() >= p.max_keys {
            out.push(Output::Rejected {
                reading: reading(a),
                reason: RejectReason::KeyLimit,
            });
            statuses.push(Status::KeyLimit);
            outputs.push(out);
            continue;
        }

        let mine: Vec<usize> = (0..i)
            .filter(|&j| counted(j) && past[j].key == a.key)
            .collect();
        let wm_before = mine.iter().map(|&j| past[j].ts).max().map(|m| m - p.d);
        let wm_after = mine
            .iter()
            .map(|&j| past[j].ts)
            .chain([a.ts])
            .max()
            .unwrap()
            - p.d;
        // The key's windowed readings before this one, by window.
        let windowed_in = |w: (i64, i64), upto: usize| -> Vec<&Arrival> {
            (0..upto)
                .filter(|&j| statuses[j] == Status::Windowed && past[j].key == a.key)
                .filter(|&j| window_of(p, past[j].ts) == w)
                .map(|j| &past[j])
                .collect()
        };
        let mut windows_before: Vec<(i64, i64)> = (0..i)
            .filter(|&j| statuses[j] == Status::Windowed && past[j].key == a.key)
            .map(|j| window_of(p, past[j].ts))
            .collect();
        windows_before.sort_by_key(|w| (w.1, w.0));
        windows_before.dedup();

        let pane =
            |w: (i64, i64), rs: &[&Arrival], revision: u32, timing: Timing, is_final: bool| {
                Output::Pane(Pane {
                    key: key(a.key),
                    start: w.0,
                    end: w.1,
                    agg: aggregates(rs),
                    revision,
                    timing,
                    is_final,
                })
            };

        let w = window_of(p, a.ts);
        let status = match wm_before {
            Some(wm) if wm >= w.1 + p.l => {
                out.push(Output::Late(LateReading {
                    reading: reading(a),
                    watermark: wm,
                    late_by_ms: wm - (w.1 + p.l),
                }));
                Status::Late
            }
            _ => {
                let in_w = windowed_in(w, i);
                let open_elsewhere = windows_before
                    .iter()
                    .filter(|&&x| x != w && x.1 + p.l > wm_after)
                    .count();
                if in_w.is_empty() && open_elsewhere >= p.max_windows {
                    Status::WindowLimit
                } else {
                    let mut now_in: Vec<&Arrival> = in_w.clone();
                    now_in.push(a);
                    let fired_before = |j: usize| {
                        let wm_j = (0..j)
                            .filter(|&x| counted(x) && past[x].key == a.key)
                            .map(|x| past[x].ts)
                            .max()
                            .map(|m| m - p.d);
                        !windowed_in(w, j).is_empty() && wm_j.is_some_and(|wm| wm >= w.1)
                    };
                    if fired_before(i) {
                        let earlier_late_panes = (0..i)
                            .filter(|&j| statuses[j] == Status::Windowed && past[j].key == a.key)
                            .filter(|&j| window_of(p, past[j].ts) == w && fired_before(j))
                            .count() as u32;
                        out.push(pane(
                            w,
                            &now_in,
                            earlier_late_panes + 1,
                            Timing::Late,
                            false,
                        ));
                    } else if w.1 <= wm_after {
                        out.push(pane(w, &now_in, 0, Timing::OnTime, false));
                    }
                    Status::Windowed
                }
            }
        };
        // Windows the watermark passed on this arrival fire, in order of end,
        // with the readings they held before it.
        let fired: Vec<Output> = windows_before
            .iter()
            .filter(|x| wm_before.is_some_and(|wm| wm < x.1) && x.1 <= wm_after)
            .map(|&x| {
                pane(
                    x,
                    &windowed_in(x, i),
                    0,
                    Timing::OnTime,
                    wm_after >= x.1 + p.l,
                )
            })
            .collect();
        // The contract fires after adding; the reading's own output cannot be a
        // pane when something fires here, but a rejection can, and the engine
        // reports it after the firings it made room with.
        let mut all = fired;
        all.append(&mut out);
        if status == Status::WindowLimit {
            all.push(Output::Rejected {
                reading: reading(a),
                reason: RejectReason::WindowLimit,
            });
        }
        statuses.push(status);
        outputs.push(all);
    }
    Expected { outputs, statuses }
}

fn same(a: &Output, b: &Output) -> bool {
    match (a, b) {
        (Output::Pane(x), Output::Pane(y)) => {
            let close = |u: f64, v: f64| (u - v).abs() <= 1e-9 * u.abs().max(v.abs()).max(1.0);
            let (ax, ay) = (&x.agg, &y.agg);
            x.key == y.key
                && (x.start, x.end, x.revision, x.timing, x.is_final)
                    == (y.start, y.end, y.revision, y.timing, y.is_final)
                && (ax.count, ax.sum, ax.min, ax.max, ax.first, ax.last)
                    == (ay.count, ay.sum, ay.min, ay.max, ay.first, ay.last)
                && close(ax.mean, ay.mean)
                && close(ax.stddev, ay.stddev)
        }
        _ => a == b,
    }
}

fn params() -> impl Strategy<Value = Params> {
    (
        1i64..=10,
        0i64..100,
        0i64..=8,
        0i64..=8,
        0i64..=6,
        1usize..=3,
        1usize..=4,
    )
        .prop_map(|(size, offset, d, l, skew, max_keys, max_windows)| Params {
            size,
            offset: offset % size,
            d,
            l,
            skew,
            max_keys,
            max_windows,
        })
}

/// Timestamps follow a random walk that mostly moves forward, with jumps back
/// (out of order, late, very late) and forward (firing several windows), from
/// negative to positive; the wall clock is near each timestamp, sometimes behind
/// it by more than the allowed skew.
fn arrivals() -> impl Strategy<Value = Vec<Arrival>> {
    let step = prop_oneof![7 => 0i64..=4, 2 => -8i64..=-1, 1 => -30i64..=15];
    prop::collection::vec((0u8..3, step, -5i32..=5, -4i64..=20), 0..60).prop_map(|steps| {
        let mut clock = -40;
        steps
            .into_iter()
            .map(|(key, dt, v, dnow)| {
                clock += dt;
                Arrival {
                    key,
                    ts: clock,
                    value: f64::from(v),
                    now: clock + dnow,
                }
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn the_engine_equals_the_brute_force_reference(p in params(), arrivals in arrivals()) {
        let expected = reference(&p, &arrivals);
        let mut e = Engine::new(EngineConfig {
            window: WindowSpec::Tumbling { size_ms: p.size, offset_ms: p.offset },
            max_out_of_orderness_ms: p.d,
            allowed_lateness_ms: p.l,
            max_future_skew_ms: p.skew,
            max_keys: p.max_keys,
            max_windows_per_key: p.max_windows,
        });
        let mut out = Vec::new();
        for (i, a) in arrivals.iter().enumerate() {
            out.clear();
            e.push(reading(a), a.now, &mut out);
            let want = &expected.outputs[i];
            prop_assert!(
                out.len() == want.len() && out.iter().zip(want).all(|(x, y)| same(x, y)),
                "arrival {} {:?} ({:?}):\n engine    {:?}\n reference {:?}",
                i, a, expected.statuses[i], out, want
            );

            // Watermarks, key count and open windows follow from the history too.
            let counted: Vec<&Arrival> = arrivals[..=i]
                .iter()
                .zip(&expected.statuses)
                .filter(|(_, s)| !matches!(s, Status::Skew | Status::KeyLimit))
                .map(|(a, _)| a)
                .collect();
            let mut open = 0;
            let mut keys = 0;
            for k in 0u8..3 {
                let wm = counted.iter().filter(|a| a.key == k).map(|a| a.ts).max().map(|m| m - p.d);
                prop_assert_eq!(e.watermark(&key(k)), wm);
                if let Some(wm) = wm {
                    keys += 1;
                    let mut ws: Vec<(i64, i64)> = arrivals[..=i]
                        .iter()
                        .zip(&expected.statuses)
                        .filter(|(a, s)| **s == Status::Windowed && a.key == k)
                        .map(|(a, _)| window_of(&p, a.ts))
                        .filter(|w| w.1 + p.l > wm)
                        .collect();
                    ws.sort();
                    ws.dedup();
                    open += ws.len();
                }
            }
            prop_assert_eq!(e.key_count(), keys);
            prop_assert_eq!(e.open_windows(), open);
            prop_assert_eq!(e.watermarks().count(), keys);
        }
    }
}
