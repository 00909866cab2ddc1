//! Model test: the engine against a simple reference written independently
//! here. The reference keeps every window's readings and recomputes each
//! pane's aggregates from them (two-pass; quantiles as exact order
//! statistics); it finds windows by brute force over the grid, merges sessions
//! by scanning, and follows the contract in its own words. Few keys, timestamps
//! in a small range around zero (so negative ones and collisions are common),
//! random window kind, scope, size, slide, gap, offset, D, L, clock guards and
//! limits. At the end both flush every key by idleness, so the final result
//! of every window is compared too.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::reading::TsSource;
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct Params {
    kind: u8, // 0 tumbling, 1 hopping, 2 session
    global: bool,
    size: i64,  // tumbling/hopping size, session gap
    slide: i64, // hopping slide, session max length
    offset: i64,
    d: i64,
    l: i64,
    skew: i64,
    backfill: Option<i64>,
    max_keys: usize,
    max_windows: usize,
    quantiles: bool,
}

#[derive(Clone, Debug)]
struct Arrival {
    key: u8,
    ts: i64,
    value: f64,
    now: i64,
}

fn key(k: u8) -> Key {
    Key::new(format!("k{k}"), "m")
}

fn reading(a: &Arrival) -> Reading {
    Reading::new(key(a.key), a.value, a.ts, TsSource::Event).unwrap()
}

fn config(p: &Params) -> EngineConfig {
    EngineConfig {
        window: match p.kind {
            0 => WindowSpec::Tumbling {
                size_ms: p.size,
                offset_ms: p.offset % p.size,
            },
            1 => WindowSpec::Hopping {
                size_ms: p.size,
                slide_ms: p.slide.min(p.size),
                offset_ms: p.offset % p.slide.min(p.size),
            },
            _ => WindowSpec::Session {
                gap_ms: p.size,
                max_length_ms: p.slide,
                offset_ms: p.offset % p.slide,
            },
        },
        scope: if p.global {
            Scope::Global
        } else {
            Scope::PerKey
        },
        max_out_of_orderness_ms: p.d,
        allowed_lateness_ms: p.l,
        max_future_skew_ms: p.skew,
        max_backfill_ms: p.backfill,
        idle_timeout_ms: Some(1),
        late_fire_delay_ms: 0,
        quantiles: p.quantiles,
        max_keys: p.max_keys,
        max_windows_per_key: p.max_windows,
    }
}

/// Windows of `ts` by scanning the grid: every start `offset + k * slide`
/// with `start <= ts < start + size`.
fn grid_windows(size: i64, slide: i64, offset: i64, ts: i64) -> Vec<(i64, i64)> {
    let k0 = (ts - offset).div_euclid(slide);
    let mut out: Vec<(i64, i64)> = (k0 - size / slide - 2..=k0 + 1)
        .map(|k| offset + k * slide)
        .filter(|&s| s <= ts && ts < s + size)
        .map(|s| (s, s + size))
        .collect();
    out.sort_by_key(|w| (w.1, w.0));
    out
}

#[derive(Clone, Debug)]
struct RefWin {
    start: i64,
    end: i64,
    values: Vec<(f64, i64)>,
    panes: u32,
    dirty: bool,
}

#[derive(Debug)]
struct RefKey {
    max_ts: i64,
    last_arrival: i64,
    wins: Vec<RefWin>,
}

struct Reference {
    p: Params,
    keys: Vec<(u8, RefKey)>,
    global_max: Option<i64>,
    // Readings in windows dropped after their lateness.
    closed: u64,
}

fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[(q * (sorted.len() - 1) as f64).floor() as usize]
}

impl Reference {
    fn aggregates(&self, vs: &[(f64, i64)]) -> Aggregates {
        let n = vs.len() as f64;
        let sum: f64 = vs.iter().map(|v| v.0).sum();
        let mean = sum / n;
        let var = vs.iter().map(|v| (v.0 - mean).powi(2)).sum::<f64>() / n;
        // min_by_key keeps the first of equal minima, max_by_key the last of equal maxima.
        let first = vs.iter().min_by_key(|v| v.1).unwrap().0;
        let last = vs.iter().max_by_key(|v| v.1).unwrap().0;
        let mut sorted: Vec<f64> = vs.iter().map(|v| v.0).collect();
        sorted.sort_by(f64::total_cmp);
        let q = |q| self.p.quantiles.then(|| exact_quantile(&sorted, q));
        Aggregates {
            count: vs.len() as u64,
            sum,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            mean,
            stddev: var.sqrt(),
            first,
            last,
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
        }
    }

    fn pane(&self, k: u8, w: &RefWin, is_final: bool) -> Output {
        Output::Pane(Pane {
            key: key(k),
            start: w.start,
            end: w.end,
            agg: self.aggregates(&w.values),
            revision: w.panes,
            timing: if w.panes == 0 {
                Timing::OnTime
            } else {
                Timing::Late
            },
            is_final,
        })
    }

    fn max_windows(&self) -> usize {
        let per_reading = if self.p.kind == 1 {
            let slide = self.p.slide.min(self.p.size);
            ((self.p.size + slide - 1) / slide) as usize
        } else {
            1
        };
        self.p.max_windows.max(per_reading)
    }

    /// Fires key `k`'s dirty windows ending by `limit` and drops those closed by it.
    fn advance(&mut self, k: u8, limit: i64, wm: i64, out: &mut Vec<Output>) {
        let l = self.p.l;
        let idx = self.keys.iter().position(|e| e.0 == k).unwrap();
        let mut wins = std::mem::take(&mut self.keys[idx].1.wins);
        wins.sort_by_key(|w| (w.end, w.start));
        for w in wins.iter_mut() {
            if w.end <= limit && w.dirty {
                out.push(self.pane(k, w, wm >= w.end + l));
                w.panes += 1;
                w.dirty = false;
            }
        }
        self.closed += wins
            .iter()
            .filter(|w| w.end + l <= limit)
            .map(|w| w.values.len() as u64)
            .sum::<u64>();
        wins.retain(|w| w.end + l > limit);
        self.keys[idx].1.wins = wins;
    }

    fn arrive(&mut self, a: &Arrival) -> Vec<Output> {
        let p = self.p.clone();
        let mut out = Vec::new();
        let reject = if a.ts > a.now + p.skew {
            Some(RejectReason::FutureSkew)
        } else if p.backfill.is_some_and(|b| a.ts < a.now - b) {
            Some(RejectReason::TooOld)
        } else if !self.keys.iter().any(|e| e.0 == a.key) && self.keys.len() >= p.max_keys {
            Some(RejectReason::KeyLimit)
        } else {
            None
        };
        if let Some(reason) = reject {
            out.push(Output::Rejected {
                reading: reading(a),
                reason,
            });
            return out;
        }
        if !self.keys.iter().any(|e| e.0 == a.key) {
            self.keys.push((
                a.key,
                RefKey {
                    max_ts: a.ts,
                    last_arrival: a.now,
                    wins: Vec::new(),
                },
            ));
        }
        // Sessions: the reading first joins every session of its key that it
        // touches (Flink adds an element before its watermark moves: a session
        // ending exactly at the reading's ts with D = 0 is extended, not fired).
        let cell = |t: i64| t - (t - p.offset % p.slide).rem_euclid(p.slide);
        let proto = (a.ts, (a.ts + p.size).min(cell(a.ts) + p.slide));
        let mut joined: Option<(i64, i64)> = None;
        if p.kind == 2 {
            let wins = &mut self.keys.iter_mut().find(|e| e.0 == a.key).unwrap().1.wins;
            let (hit, rest): (Vec<RefWin>, Vec<RefWin>) =
                std::mem::take(wins).into_iter().partition(|w| {
                    w.start <= proto.1 && w.end >= proto.0 && cell(w.start) == cell(proto.0)
                });
            *wins = rest;
            if !hit.is_empty() {
                let mut m = RefWin {
                    start: proto.0,
                    end: proto.1,
                    values: vec![],
                    panes: 0,
                    dirty: true,
                };
                for h in &hit {
                    m.start = m.start.min(h.start);
                    m.end = m.end.max(h.end);
                    m.panes = m.panes.max(h.panes);
                    m.values.extend(h.values.iter().copied());
                }
                m.values.push((a.value, a.ts));
                joined = Some((m.start, m.end));
                wins.push(m);
            }
        }
        // Then the watermark moves; with a global one, every key's windows
        // fire in order of (timer time, key name). A reading that opens a new
        // window is added only after, so the window limit counts open windows.
        let wm = if p.global {
            if self.global_max.is_none_or(|m| a.ts > m) {
                self.global_max = Some(a.ts);
                let wm = a.ts - p.d;
                let mut events: Vec<(i64, Key, u8)> = Vec::new();
                for (k, st) in &self.keys {
                    for w in &st.wins {
                        for t in [w.end, w.end + p.l] {
                            if t <= wm {
                                events.push((t, key(*k), *k));
                            }
                        }
                    }
                }
                events.sort();
                events.dedup();
                for (t, _, k) in events {
                    self.advance(k, t, wm, &mut out);
                }
            }
            self.global_max.unwrap() - p.d
        } else {
            let st = &self.keys.iter().find(|e| e.0 == a.key).unwrap().1;
            if a.ts > st.max_ts {
                let wm = a.ts - p.d;
                self.keys
                    .iter_mut()
                    .find(|e| e.0 == a.key)
                    .unwrap()
                    .1
                    .max_ts = a.ts;
                self.advance(a.key, wm, wm, &mut out);
            }
            self.keys.iter().find(|e| e.0 == a.key).unwrap().1.max_ts - p.d
        };
        let max_windows = self.max_windows();
        let idx = self.keys.iter().position(|e| e.0 == a.key).unwrap();
        {
            let st = &mut self.keys[idx].1;
            st.max_ts = st.max_ts.max(a.ts);
            st.last_arrival = a.now;
        }
        let mut touched: Vec<(i64, i64)> = Vec::new();
        let mut refused = false;
        let mut latest_closed: Option<i64> = None;
        let wins = &mut self.keys[idx].1.wins;
        if let Some(m) = joined {
            touched.push(m);
        } else if p.kind == 2 {
            // No session touched: the proto-session opens one of its own.
            if wm >= proto.1 + p.l {
                latest_closed = Some(proto.1 + p.l);
            } else if wins.len() >= max_windows {
                refused = true;
            } else {
                wins.push(RefWin {
                    start: proto.0,
                    end: proto.1,
                    values: vec![(a.value, a.ts)],
                    panes: 0,
                    dirty: true,
                });
                touched.push(proto);
            }
        } else {
            let (size, slide) = if p.kind == 0 {
                (p.size, p.size)
            } else {
                (p.size, p.slide.min(p.size))
            };
            for (s, e) in grid_windows(size, slide, p.offset % slide, a.ts) {
                if wm >= e + p.l {
                    latest_closed = Some(e + p.l);
                } else if let Some(w) = wins.iter_mut().find(|w| (w.start, w.end) == (s, e)) {
                    w.values.push((a.value, a.ts));
                    w.dirty = true;
                    touched.push((s, e));
                } else if wins.len() >= max_windows {
                    refused = true;
                } else {
                    wins.push(RefWin {
                        start: s,
                        end: e,
                        values: vec![(a.value, a.ts)],
                        panes: 0,
                        dirty: true,
                    });
                    touched.push((s, e));
                }
            }
        }
        // Touched windows the watermark has passed fire at once.
        for (s, e) in &touched {
            if *e <= wm {
                let w = self.keys[idx]
                    .1
                    .wins
                    .iter()
                    .find(|w| (w.start, w.end) == (*s, *e))
                    .unwrap()
                    .clone();
                out.push(self.pane(a.key, &w, false));
                let w = self.keys[idx]
                    .1
                    .wins
                    .iter_mut()
                    .find(|w| (w.start, w.end) == (*s, *e))
                    .unwrap();
                w.panes += 1;
                w.dirty = false;
            }
        }
        if refused {
            out.push(Output::Rejected {
                reading: reading(a),
                reason: RejectReason::WindowLimit,
            });
        } else if let (true, Some(c)) = (touched.is_empty(), latest_closed) {
            out.push(Output::Late(LateReading {
                reading: reading(a),
                watermark: wm,
                late_by_ms: wm - c,
            }));
        }
        out
    }

    /// Every key goes idle: its dirty windows fire, then it is reported.
    fn flush(&mut self) -> Vec<Output> {
        let mut order: Vec<(i64, Key, u8)> = self
            .keys
            .iter()
            .map(|(k, st)| (st.last_arrival + 1, key(*k), *k))
            .collect();
        order.sort();
        let mut out = Vec::new();
        for (deadline, _, k) in order {
            let idx = self.keys.iter().position(|e| e.0 == k).unwrap();
            let mut wins = std::mem::take(&mut self.keys[idx].1.wins);
            wins.sort_by_key(|w| (w.end, w.start));
            for w in wins.iter_mut().filter(|w| w.dirty) {
                out.push(self.pane(k, w, false));
                w.panes += 1;
                w.dirty = false;
            }
            let st = &self.keys[idx].1;
            out.push(Output::Idle(Idle {
                key: key(k),
                last_ts: st.max_ts,
                last_arrival: st.last_arrival,
                deadline,
            }));
            self.keys[idx].1.wins = wins;
        }
        out
    }
}

fn same(a: &Output, b: &Output) -> bool {
    match (a, b) {
        (Output::Pane(x), Output::Pane(y)) => {
            let close = |u: f64, v: f64| (u - v).abs() <= 1e-9 * u.abs().max(v.abs()).max(1.0);
            // The sketch's documented bound at level 0 (values are small integers).
            let near = |u: Option<f64>, v: Option<f64>| match (u, v) {
                (Some(u), Some(v)) => (u - v).abs() <= 0.0101 * v.abs() + 1e-9,
                (u, v) => u == v,
            };
            let (ax, ay) = (&x.agg, &y.agg);
            x.key == y.key
                && (x.start, x.end, x.revision, x.timing, x.is_final)
                    == (y.start, y.end, y.revision, y.timing, y.is_final)
                && (ax.count, ax.min, ax.max, ax.first, ax.last)
                    == (ay.count, ay.min, ay.max, ay.first, ay.last)
                && close(ax.sum, ay.sum)
                && close(ax.mean, ay.mean)
                && close(ax.stddev, ay.stddev)
                && near(ax.p50, ay.p50)
                && near(ax.p90, ay.p90)
                && near(ax.p99, ay.p99)
        }
        _ => a == b,
    }
}

fn params() -> impl Strategy<Value = Params> {
    (
        (0u8..3, any::<bool>(), 1i64..=10, 1i64..=12, 0i64..100),
        // D = 0 often: it is where firing and merging meet exactly.
        (
            prop_oneof![1 => Just(0i64), 2 => 0i64..=8],
            0i64..=8,
            0i64..=6,
            prop::option::of(5i64..=40),
        ),
        (1usize..=3, 1usize..=4, any::<bool>()),
    )
        .prop_map(
            |(
                (kind, global, size, slide, offset),
                (d, l, skew, backfill),
                (max_keys, max_windows, quantiles),
            )| Params {
                kind,
                global,
                size,
                slide: if kind == 2 { slide + 2 } else { slide },
                offset,
                d,
                l,
                skew,
                backfill,
                max_keys,
                max_windows,
                quantiles,
            },
        )
}

/// Timestamps follow a random walk that mostly moves forward, with jumps back
/// (out of order, late, very late) and forward (firing several windows), from
/// negative to positive; the wall clock is near each timestamp, sometimes behind
/// it by more than the allowed skew, sometimes ahead by more than the backfill.
pub(super) fn arrivals() -> impl Strategy<Value = Vec<(u8, i64, f64, i64)>> {
    arrivals_stepping(3)
}

/// [`arrivals`], with steps of exactly `jump` (a session gap, a window size)
/// common: readings exactly one gap apart are where a session must be
/// extended, not fired, when D = 0.
fn arrivals_stepping(jump: i64) -> impl Strategy<Value = Vec<(u8, i64, f64, i64)>> {
    let step = prop_oneof![
        6 => 0i64..=4,
        2 => Just(jump),
        2 => -8i64..=-1,
        1 => -30i64..=15
    ];
    prop::collection::vec((0u8..3, step, -5i32..=5, -4i64..=50), 0..60).prop_map(|steps| {
        let mut clock = -40;
        steps
            .into_iter()
            .map(|(key, dt, v, dnow)| {
                clock += dt;
                (key, clock, f64::from(v), clock + dnow)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn the_engine_equals_the_reference_for_every_window_kind_and_scope(
        (p, raw) in params().prop_flat_map(|p| {
            let gap = p.size;
            (Just(p), arrivals_stepping(gap))
        }),
    ) {
        let arrivals: Vec<Arrival> = raw
            .into_iter()
            .map(|(key, ts, value, now)| Arrival { key, ts, value, now })
            .collect();
        let mut e = Engine::new(config(&p));
        let mut r = Reference { p: p.clone(), keys: Vec::new(), global_max: None, closed: 0 };
        let mut out = Vec::new();
        let mut late_or_rejected = 0u64;
        for (i, a) in arrivals.iter().enumerate() {
            out.clear();
            e.push(reading(a), a.now, &mut out);
            let want = r.arrive(a);
            prop_assert!(
                out.len() == want.len() && out.iter().zip(&want).all(|(x, y)| same(x, y)),
                "arrival {} {:?}:\n engine    {:?}\n reference {:?}",
                i, a, out, want
            );
            late_or_rejected += out
                .iter()
                .filter(|o| matches!(o, Output::Late(_) | Output::Rejected { .. }))
                .count() as u64;
            prop_assert_eq!(e.key_count(), r.keys.len());
            prop_assert_eq!(e.open_windows(), r.keys.iter().map(|k| k.1.wins.len()).sum::<usize>());
            for k in 0u8..3 {
                let wm = r.keys.iter().find(|e| e.0 == k).map(|(_, st)| {
                    if p.global { r.global_max.unwrap() - p.d } else { st.max_ts - p.d }
                });
                prop_assert_eq!(e.watermark(&key(k)), wm);
            }
        }
        // Flush: every key idle; every window's final result comes out.
        out.clear();
        e.tick(1_000_000, &mut out);
        let want = r.flush();
        prop_assert!(
            out.len() == want.len() && out.iter().zip(&want).all(|(x, y)| same(x, y)),
            "flush:\n engine    {:?}\n reference {:?}", out, want
        );
        // Nothing silently dropped: with one window per reading, every reading
        // is in exactly one window (closed, or still open and just flushed), or
        // late, or rejected.
        if p.kind != 1 {
            let open: u64 = r.keys.iter().flat_map(|k| &k.1.wins).map(|w| w.values.len() as u64).sum();
            prop_assert_eq!(r.closed + open + late_or_rejected, arrivals.len() as u64);
        }
    }
}
