//! Scoring a backtest against labelled anomaly windows: the Numenta Anomaly
//! Benchmark's algorithm (NAB v1.1, Lavin and Ahmad 2015; `nab/sweeper.py`),
//! plus plain counts (windows detected and missed, false alarms, delay).
//!
//! Pure: series of (timestamp, score) and windows in, numbers out.
//!
//! NAB, per profile (cost weights for true positives, false positives and
//! missed windows):
//! - the first `min(floor(0.15 N), 750)` rows of each series are probationary
//!   and not scored;
//! - a detected row inside a window of width W rows whose right edge is row R
//!   is worth `tp * sigma(-(R - i + 1) / W) / sigma(-1)`, with the scaled
//!   sigmoid `sigma(x) = 2 / (1 + e^(5x)) - 1` (-1 for x > 3): earliest is best;
//!   a window counts its best row, or `-fn` when none is detected;
//! - a detected row outside every window costs `fp * sigma((i - R') / (W' - 1))`
//!   from the preceding window (R', W'), or `-fp` with none before it;
//! - a row is detected when its score is at or above a threshold, chosen
//!   corpus-wide per profile by sweeping every distinct score (ties to the
//!   highest threshold), starting from 1.1 (nothing detected);
//! - normalised: `100 (S - S_null) / (S_perfect - S_null)`, the null detector
//!   being a constant score (it detects nothing at its optimum) and the
//!   perfect one `tp` per window.
//!
//! Windows need not fall on row timestamps: a window covers the rows whose
//! timestamps lie within it (NAB's own files are aligned, where both agree).

use std::collections::HashMap;

/// A cost profile.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Profile {
    /// Name as NAB spells it.
    pub name: &'static str,
    /// Weight of a detected window.
    pub tp: f64,
    /// Weight of a detection outside windows.
    pub fp: f64,
    /// Weight of a missed window.
    pub fn_: f64,
}

/// NAB's three published profiles (`config/profiles.json`).
pub const PROFILES: [Profile; 3] = [
    Profile {
        name: "standard",
        tp: 1.0,
        fp: 0.11,
        fn_: 1.0,
    },
    Profile {
        name: "reward_low_FP_rate",
        tp: 1.0,
        fp: 0.22,
        fn_: 1.0,
    },
    Profile {
        name: "reward_low_FN_rate",
        tp: 1.0,
        fp: 0.11,
        fn_: 2.0,
    },
];

/// One labelled series: its rows' timestamps and scores, in row order, and
/// its anomaly windows `[start, end]` (inclusive, ms), in time order.
#[derive(Clone, Debug, Default)]
pub struct Series {
    /// Row timestamps.
    pub ts: Vec<i64>,
    /// Row scores in [0, 1].
    pub scores: Vec<f64>,
    /// Labelled windows.
    pub windows: Vec<(i64, i64)>,
}

/// A profile's result over a corpus.
#[derive(Clone, Debug, PartialEq)]
pub struct NabResult {
    /// The profile.
    pub profile: &'static str,
    /// Normalised score: 100 perfect, 0 the null detector.
    pub normalised: f64,
    /// Raw score at the chosen threshold.
    pub raw: f64,
    /// The threshold the sweep chose.
    pub threshold: f64,
    /// Windows with a detected row, and all windows.
    pub windows_detected: usize,
    /// Detected rows outside windows.
    pub false_rows: usize,
}

fn sigma(x: f64) -> f64 {
    if x > 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * x).exp()) - 1.0
    }
}

/// One scorable row: (score, window id, unweighted sigmoid value).
type Point = (f64, Option<usize>, f64);

/// NAB's annotation of one series (`Sweeper.calcSweepScore`): the scorable
/// rows; window ids are offset by `first_id` so they are corpus-unique.
fn annotate(s: &Series, first_id: usize) -> (Vec<Point>, Vec<usize>) {
    let n = s.ts.len();
    let prob = ((0.15 * n as f64).floor()).min(750.0) as usize;
    // Rows of each window: first row at or after start, last row at or before end.
    let spans: Vec<Option<(usize, usize)>> = s
        .windows
        .iter()
        .map(|&(a, b)| {
            let lo = s.ts.partition_point(|&t| t < a);
            let hi = s.ts.partition_point(|&t| t <= b);
            (hi > lo).then(|| (lo, hi - 1))
        })
        .collect();
    let mut points = Vec::with_capacity(n.saturating_sub(prob));
    let mut ids = Vec::new();
    // As NAB walks a file: a window becomes current at its first row (a
    // window starting inside another replaces it, as in NAB), and stops
    // being current at its last row, which later rows measure from.
    let mut next = 0;
    let mut cur: Option<(usize, usize, f64)> = None;
    let mut prev: Option<(usize, f64)> = None;
    for i in 0..n {
        while next < spans.len() && spans[next].is_none() {
            next += 1;
        }
        if let Some(Some((l, r))) = spans.get(next).copied() {
            if l == i {
                cur = Some((first_id + next, r, (r - l + 1) as f64));
                next += 1;
            }
        }
        let (wid, u) = match cur {
            Some((id, r, width)) => (Some(id), sigma(-((r as f64 - i as f64 + 1.0) / width))),
            None => match prev {
                None => (None, -1.0),
                Some((r, width)) => (None, sigma((i - r) as f64 / (width - 1.0))),
            },
        };
        if i >= prob {
            if let Some(id) = wid {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            points.push((s.scores.get(i).copied().unwrap_or(0.0), wid, u));
        }
        if let Some((_, r, width)) = cur {
            if r == i {
                prev = Some((r, width));
                cur = None;
            }
        }
    }
    (points, ids)
}

fn weighted(wid: Option<usize>, u: f64, p: &Profile) -> f64 {
    match wid {
        None => u * p.fp,
        Some(_) => u * p.tp / sigma(-1.0),
    }
}

/// `points` ordered by score, highest first; equal scores keep their order
/// (a stable sort), as the sweep's sums must not depend on the sort.
fn by_score(points: &[Point]) -> Vec<Point> {
    let mut sorted = points.to_vec();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    sorted
}

/// The corpus-wide threshold sweep over `sorted` (see [`by_score`]):
/// (threshold, best raw score).
fn sweep(sorted: &[Point], ids: &[usize], p: &Profile) -> (f64, f64) {
    let mut win: HashMap<usize, f64> = ids.iter().map(|&id| (id, -p.fn_)).collect();
    let mut win_sum = -p.fn_ * ids.len() as f64;
    let mut fp_sum = 0.0;
    let (mut best_t, mut best) = (1.1, win_sum);
    let mut i = 0;
    while i < sorted.len() {
        let s = sorted[i].0;
        while i < sorted.len() && sorted[i].0 == s {
            let (_, wid, u) = sorted[i];
            let v = weighted(wid, u, p);
            match wid {
                None => fp_sum += v,
                Some(id) => {
                    if let Some(cur) = win.get_mut(&id) {
                        if v > *cur {
                            win_sum += v - *cur;
                            *cur = v;
                        }
                    }
                }
            }
            i += 1;
        }
        if fp_sum + win_sum > best {
            best_t = s;
            best = fp_sum + win_sum;
        }
    }
    (best_t, best)
}

/// Scores a corpus under each of `profiles`.
pub fn score(series: &[Series], profiles: &[Profile]) -> Vec<NabResult> {
    let mut points = Vec::new();
    let mut ids = Vec::new();
    let mut first = 0;
    for s in series {
        let (p, i) = annotate(s, first);
        first += s.windows.len();
        points.extend(p);
        ids.extend(i);
    }
    let total_windows: usize = series.iter().map(|s| s.windows.len()).sum();
    // One sort for every profile; the null detector's equal scores need none.
    let null: Vec<Point> = points.iter().map(|&(_, w, u)| (0.5, w, u)).collect();
    let sorted = by_score(&points);
    profiles
        .iter()
        .map(|p| {
            let (_, null_score) = sweep(&null, &ids, p);
            let (threshold, raw) = sweep(&sorted, &ids, p);
            let perfect = total_windows as f64 * p.tp;
            let mut detected: Vec<usize> = points
                .iter()
                .filter(|(s, w, _)| *s >= threshold && w.is_some())
                .filter_map(|(_, w, _)| *w)
                .collect();
            detected.dedup();
            let false_rows = points
                .iter()
                .filter(|(s, w, _)| *s >= threshold && w.is_none())
                .count();
            NabResult {
                profile: p.name,
                normalised: 100.0 * (raw - null_score) / (perfect - null_score),
                raw,
                threshold,
                windows_detected: detected.len(),
                false_rows,
            }
        })
        .collect()
}

/// Alert-level counts for one series: what an operator would have seen.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AlertCounts {
    /// Windows with at least one alert raised inside them.
    pub detected: usize,
    /// Windows without.
    pub missed: usize,
    /// Alerts raised outside every window.
    pub false_alarms: usize,
    /// Sum of (first raise in window - window start), ms, over detected windows.
    pub delay_ms_sum: i64,
}

/// Counts alerts raised at `raised` (ms, any order) against `windows`.
pub fn count_alerts(windows: &[(i64, i64)], raised: &[i64]) -> AlertCounts {
    let mut c = AlertCounts::default();
    for &(a, b) in windows {
        match raised.iter().filter(|&&t| t >= a && t <= b).min() {
            Some(&t) => {
                c.detected += 1;
                c.delay_ms_sum += t - a;
            }
            None => c.missed += 1,
        }
    }
    c.false_alarms = raised
        .iter()
        .filter(|&&t| !windows.iter().any(|&(a, b)| t >= a && t <= b))
        .count();
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(scores: &[f64], windows: &[(i64, i64)]) -> Series {
        Series {
            ts: (0..scores.len() as i64).collect(),
            scores: scores.to_vec(),
            windows: windows.to_vec(),
        }
    }

    #[test]
    fn the_null_detector_scores_zero_and_a_perfect_early_one_a_hundred() {
        let mut s = vec![0.0; 100];
        let null = score(&[series(&s, &[(50, 59)])], &PROFILES);
        assert!(null.iter().all(|r| r.normalised.abs() < 1e-9), "{null:?}");
        s[50] = 1.0;
        let perfect = score(&[series(&s, &[(50, 59)])], &PROFILES);
        for r in perfect {
            assert!((r.normalised - 100.0).abs() < 1e-9, "{r:?}");
            assert_eq!((r.windows_detected, r.false_rows), (1, 0));
        }
    }

    #[test]
    fn a_late_detection_is_worth_less_and_probation_rows_do_not_count() {
        let mut early = vec![0.0; 100];
        early[51] = 1.0;
        let mut late = vec![0.0; 100];
        late[58] = 1.0;
        let e = score(&[series(&early, &[(50, 59)])], &PROFILES[..1])[0].normalised;
        let l = score(&[series(&late, &[(50, 59)])], &PROFILES[..1])[0].normalised;
        assert!(e > l && l > 0.0, "{e} {l}");
        // A detection in the first 15 rows is not scored at all.
        let mut prob = vec![0.0; 100];
        prob[5] = 1.0;
        let p = score(&[series(&prob, &[(50, 59)])], &PROFILES[..1])[0].clone();
        assert_eq!(p.threshold, 1.1);
    }

    /// The same corpus through this scorer and the reference implementation
    /// in `../shared/tools/nab_score.py` (checked against NAB's own code).
    #[test]
    #[allow(clippy::unwrap_used)]
    fn scores_equal_the_reference_nab_scorer_on_the_same_inputs() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/tools");
        let script = root.join("nab_score.py");
        if !script.exists() {
            eprintln!(
                "SKIPPED: {} is absent (the shared tools are not beside this checkout)",
                script.display()
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["nab/data/syn", "nab/labels", "out"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let mut x: u64 = 7;
        let mut rnd = move || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as f64 / (1u64 << 31) as f64
        };
        let t0 = 1_600_000_000_000i64;
        let fmt = |t: i64| {
            chrono::DateTime::from_timestamp_millis(t)
                .unwrap()
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        };
        let mut corpus = Vec::new();
        let mut labels = serde_json::Map::new();
        for (f, n) in [800usize, 3000, 6000].into_iter().enumerate() {
            let ts: Vec<i64> = (0..n as i64).map(|i| t0 + 60_000 * i).collect();
            let mut windows: Vec<(i64, i64)> = (1..=3)
                .map(|k| {
                    let a = n * k / 4;
                    (ts[a], ts[a + n / 20])
                })
                .collect();
            // Overlapping windows (as SKAB's change points give): NAB lets the
            // later one take over.
            let a = n / 4 + n / 40;
            windows.insert(1, (ts[a], ts[a + n / 20]));
            // Scores rounded to 0.01 so that ties occur, higher inside windows.
            let scores: Vec<f64> = ts
                .iter()
                .map(|&t| {
                    let inside = windows.iter().any(|&(a, b)| t >= a && t <= b);
                    let v = if inside {
                        rnd().max(rnd()).max(rnd())
                    } else {
                        rnd()
                    };
                    (v * 100.0).round() / 100.0
                })
                .collect();
            let name = format!("s{f}.csv");
            let mut data = String::from("timestamp,value\n");
            let mut out = String::from("timestamp,value,anomaly_score\n");
            for (t, s) in ts.iter().zip(&scores) {
                data.push_str(&format!("{},1\n", fmt(*t)));
                out.push_str(&format!("{},1,{s}\n", fmt(*t)));
            }
            std::fs::write(d.join("nab/data/syn").join(&name), data).unwrap();
            std::fs::write(d.join("out").join(&name), out).unwrap();
            labels.insert(
                format!("syn/{name}"),
                windows
                    .iter()
                    .map(|&(a, b)| serde_json::json!([fmt(a), fmt(b)]))
                    .collect(),
            );
            corpus.push(Series {
                ts,
                scores,
                windows,
            });
        }
        std::fs::write(
            d.join("nab/labels/combined_windows.json"),
            serde_json::Value::Object(labels).to_string(),
        )
        .unwrap();
        let status = std::process::Command::new("python3")
            .arg(&script)
            .arg("--nab-root")
            .arg(d.join("nab"))
            .arg("--profiles")
            .arg(root.join("nab_profiles.json"))
            .arg("--json")
            .arg(d.join("r.json"))
            .arg(d.join("out"))
            .output()
            .unwrap();
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("r.json")).unwrap()).unwrap();
        let ours = score(&corpus, &PROFILES);
        for o in &ours {
            let p = &r["profiles"][o.profile];
            let norm = p["normalized_score"].as_f64().unwrap();
            let raw = p["raw_score"].as_f64().unwrap();
            let thr = p["threshold"].as_f64().unwrap();
            assert!((o.normalised - norm).abs() < 1e-9, "{o:?} vs {p}");
            assert!((o.raw - raw).abs() < 1e-9, "{o:?} vs {p}");
            assert_eq!(o.threshold, thr, "{}", o.profile);
            assert_eq!(
                o.windows_detected as u64,
                p["counts"]["windows_detected"].as_u64().unwrap()
            );
            assert_eq!(o.false_rows as u64, p["counts"]["fp"].as_u64().unwrap());
        }
        assert!(
            ours[0].normalised.abs() > 1.0,
            "a corpus that tells scorers apart"
        );
    }

    #[test]
    fn alerts_are_counted_against_windows() {
        let c = count_alerts(&[(10, 20), (30, 40), (50, 60)], &[5, 12, 15, 45, 52]);
        assert_eq!(
            c,
            AlertCounts {
                detected: 2,
                missed: 1,
                false_alarms: 2,
                delay_ms_sum: 2 + 2
            }
        );
    }
}
