//! `weir backtest --labels` / `--label-column`: what the run's alerts and
//! scores are worth against labelled anomalies.
//!
//! A *series* is a sensor: a device is as anomalous as its most anomalous
//! metric, so the rows of one sensor that share a timestamp are one row of its
//! series, with the highest score, "alerted" if any alert of the sensor is
//! open, and labelled if any of them is. Rows must come in time order per
//! sensor (as recordings do); windows of a labels file are matched by the
//! sensor name.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use serde_json::Value;

use super::nab::{self, AlertCounts, PROFILES, Series};

#[derive(Default)]
struct Acc {
    ts: Vec<i64>,
    scores: Vec<f64>,
    labels: Vec<bool>,
    alerted: Vec<bool>,
    open: u32,
    raised: Vec<i64>,
}

/// Collects the run's rows and alerts per sensor.
pub struct Eval {
    /// Sensor name to its accumulator; reported in name order.
    series: BTreeMap<String, Acc>,
    /// The sensor of the last reading and its accumulator, out of `series` while it is here:
    /// readings come in runs of one sensor, and a map lookup per reading (string compares)
    /// was a visible part of the run. `series` is only complete after `settle`.
    last: Option<(String, Acc)>,
    windows: Option<HashMap<String, Vec<(i64, i64)>>>,
}

impl Eval {
    /// Windows from a labels file, or `None` to take them from a label column.
    pub fn new(windows: Option<HashMap<String, Vec<(i64, i64)>>>) -> Self {
        Self {
            series: BTreeMap::new(),
            last: None,
            windows,
        }
    }

    /// An alert message the run published (JSON of `docs/wire.md`).
    pub fn on_alert(&mut self, payload: &[u8]) {
        let Ok(v) = serde_json::from_slice::<Value>(payload) else {
            return;
        };
        let (Some(sensor), Some(state), Some(ts)) = (
            v.get("sensor").and_then(Value::as_str),
            v.get("state").and_then(Value::as_str),
            v.get("ts").and_then(Value::as_i64),
        ) else {
            return;
        };
        let acc = self.acc(sensor);
        match state {
            "raised" => {
                acc.open += 1;
                acc.raised.push(ts);
            }
            _ => acc.open = acc.open.saturating_sub(1),
        }
    }

    /// `sensor`'s accumulator, made the `last` one.
    fn acc(&mut self, sensor: &str) -> &mut Acc {
        if self.last.as_ref().is_none_or(|(name, _)| name != sensor) {
            self.settle();
        }
        let series = &mut self.series;
        &mut self
            .last
            .get_or_insert_with(|| {
                let acc = series.remove(sensor).unwrap_or_default();
                (sensor.to_string(), acc)
            })
            .1
    }

    /// Puts the `last` accumulator back into `series`.
    fn settle(&mut self) {
        if let Some((name, acc)) = self.last.take() {
            self.series.insert(name, acc);
        }
    }

    /// One accepted reading, with its score and label (if a column has one).
    pub fn on_reading(&mut self, sensor: &str, ts: i64, score: f64, label: bool) {
        let acc = self.acc(sensor);
        let alerted = acc.open > 0;
        if acc.ts.last() == Some(&ts) {
            let i = acc.ts.len() - 1;
            acc.scores[i] = acc.scores[i].max(score);
            acc.labels[i] |= label;
            acc.alerted[i] |= alerted;
        } else {
            acc.ts.push(ts);
            acc.scores.push(score);
            acc.labels.push(label);
            acc.alerted.push(alerted);
        }
    }

    fn windows_of(&self, name: &str, acc: &Acc) -> Vec<(i64, i64)> {
        if let Some(w) = &self.windows {
            return w.get(name).cloned().unwrap_or_default();
        }
        let mut out: Vec<(i64, i64)> = Vec::new();
        let mut in_run = false;
        for (i, &l) in acc.labels.iter().enumerate() {
            match (l, in_run) {
                (true, false) => out.push((acc.ts[i], acc.ts[i])),
                (true, true) => {
                    if let Some(last) = out.last_mut() {
                        last.1 = acc.ts[i];
                    }
                }
                _ => {}
            }
            in_run = l;
        }
        out
    }

    /// Prints the evaluation.
    pub fn report(&mut self, w: &mut dyn Write) -> std::io::Result<()> {
        self.settle();
        let rows = self.windows.is_none();
        let mut corpus = Vec::new();
        let mut total = AlertCounts::default();
        let (mut tp, mut fp, mut fn_) = (0u64, 0u64, 0u64);
        writeln!(
            w,
            "{:<28} {:>7} {:>8} {:>6} {:>12} {:>14}{}",
            "series",
            "windows",
            "detected",
            "missed",
            "false_alarms",
            "mean_delay_s",
            if rows {
                "  row_precision row_recall row_f1"
            } else {
                ""
            }
        )?;
        for (name, acc) in &self.series {
            if self.windows.as_ref().is_some_and(|w| !w.contains_key(name)) {
                continue;
            }
            let windows = self.windows_of(name, acc);
            let c = nab::count_alerts(&windows, &acc.raised);
            let delay = if c.detected > 0 {
                format!("{:.1}", c.delay_ms_sum as f64 / c.detected as f64 / 1000.0)
            } else {
                "-".into()
            };
            write!(
                w,
                "{:<28} {:>7} {:>8} {:>6} {:>12} {:>14}",
                name,
                windows.len(),
                c.detected,
                c.missed,
                c.false_alarms,
                delay
            )?;
            if rows {
                let (t, f, n) = acc.labels.iter().zip(&acc.alerted).fold(
                    (0u64, 0u64, 0u64),
                    |(t, f, n), (&l, &a)| match (l, a) {
                        (true, true) => (t + 1, f, n),
                        (false, true) => (t, f + 1, n),
                        (true, false) => (t, f, n + 1),
                        _ => (t, f, n),
                    },
                );
                let (p, r, f1) = prf(t, f, n);
                write!(w, "  {p:>13.3} {r:>10.3} {f1:>6.3}")?;
                tp += t;
                fp += f;
                fn_ += n;
            }
            writeln!(w)?;
            total.detected += c.detected;
            total.missed += c.missed;
            total.false_alarms += c.false_alarms;
            total.delay_ms_sum += c.delay_ms_sum;
            corpus.push(Series {
                ts: acc.ts.clone(),
                scores: acc.scores.clone(),
                windows,
            });
        }
        let delay = if total.detected > 0 {
            format!(
                "{:.1}",
                total.delay_ms_sum as f64 / total.detected as f64 / 1000.0
            )
        } else {
            "-".into()
        };
        write!(
            w,
            "{:<28} {:>7} {:>8} {:>6} {:>12} {:>14}",
            "overall",
            total.detected + total.missed,
            total.detected,
            total.missed,
            total.false_alarms,
            delay
        )?;
        if rows {
            let (p, r, f1) = prf(tp, fp, fn_);
            write!(w, "  {p:>13.3} {r:>10.3} {f1:>6.3}")?;
        }
        writeln!(w)?;
        for r in nab::score(&corpus, &PROFILES) {
            writeln!(
                w,
                "NAB {:<19} {:>7.2}  (raw {:.3}, threshold {}, windows detected {}, detected rows outside windows {})",
                r.profile, r.normalised, r.raw, r.threshold, r.windows_detected, r.false_rows
            )?;
        }
        Ok(())
    }
}

fn prf(tp: u64, fp: u64, fn_: u64) -> (f64, f64, f64) {
    let p = if tp + fp > 0 {
        tp as f64 / (tp + fp) as f64
    } else {
        0.0
    };
    let r = if tp + fn_ > 0 {
        tp as f64 / (tp + fn_) as f64
    } else {
        0.0
    };
    let f1 = if p + r > 0.0 {
        2.0 * p * r / (p + r)
    } else {
        0.0
    };
    (p, r, f1)
}
