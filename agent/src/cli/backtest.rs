//! `weir backtest --config FILE INPUT`: the exact engine and detectors of a
//! config over recorded readings, as fast as the machine allows.
//!
//! Input: CSV with a header row naming `sensor`, `metric`, `value`, `ts` and
//! optionally `arrival` (any order, other columns ignored; RFC 4180 quoting on
//! one line), or JSON lines with those fields. Timestamps are epoch seconds or
//! milliseconds, or RFC 3339, as on MQTT. File order is arrival order.
//!
//! The wall clock (idle keys, held late panes, clock guards) is simulated: the
//! `arrival` column when there is one (never going backwards), else the
//! readings' own timestamps, never going backwards and never dragged forward
//! by a reading more than `max_future_skew` ahead (which is then quarantined,
//! as live). So a recording of any date replays the same way. Everything runs
//! through [`Processor`], the daemon's own core: for the same readings at the
//! same wall-clock times, the output is what the daemon publishes.
//!
//! Output, one record per line, in causal order: every message the daemon
//! would publish (`pane`, `alert`, `late`, `deadletter`; the JSON of
//! `docs/wire.md`) and, per accepted reading, a `score` record with the
//! detectors' anomaly score in [0, 1]. As JSON lines, or CSV with fixed columns.
//! Rows that are not readings become `deadletter` records, as on MQTT.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use super::exit;
use crate::config::Config;
use crate::detect::Detectors;
use crate::engine::Engine;
use crate::metrics::Counters;
use crate::outbox::NewMessage;
use crate::process::{Processor, Score};
use crate::reading::{Key, Reading, TimestampMs, TsSource};
use crate::source::Input;
use crate::source::payload::parse_timestamp;
use crate::wire::{DeadLetter, Wire};

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// CSV with the columns of [`CSV_COLUMNS`].
    Csv,
}

/// What `weir backtest` was asked to do.
#[derive(Debug)]
pub struct Options<'a> {
    /// The configuration whose engine and detectors run.
    pub config: &'a Path,
    /// The recording; `-` reads standard input.
    pub input: &'a Path,
    /// Output format.
    pub format: Format,
    /// At the end, let the simulated clock run on until every key is idle, so
    /// every open window fires (needs `idle_timeout`). The daemon would wait.
    pub flush: bool,
    /// Leave out the per-reading `score` records.
    pub no_scores: bool,
}

/// Columns of the CSV output; a record leaves blank what it does not have.
pub const CSV_COLUMNS: [&str; 28] = [
    "type",
    "sensor",
    "metric",
    "id",
    "ts",
    "value",
    "score",
    "detector",
    "window_start",
    "window_end",
    "revision",
    "timing",
    "final",
    "count",
    "sum",
    "min",
    "max",
    "mean",
    "stddev",
    "first",
    "last",
    "p50",
    "p90",
    "p99",
    "state",
    "late_by_ms",
    "reason",
    "emitted_at",
];

/// Runs the backtest, writing records to `out` and a summary to `err`.
pub fn backtest(opts: &Options, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let cfg = match Config::load(opts.config) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(err, "{e}");
            return exit::CONFIG;
        }
    };
    let input: Box<dyn BufRead> = if opts.input == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        match std::fs::File::open(opts.input) {
            Ok(f) => Box::new(std::io::BufReader::with_capacity(1 << 16, f)),
            Err(e) => {
                let _ = writeln!(err, "cannot read {}: {e}", opts.input.display());
                return exit::FAILURE;
            }
        }
    };
    let started = Instant::now();
    let counters = Arc::new(Counters::default());
    let skew = cfg.engine.max_future_skew_ms;
    let idle = cfg.engine.idle_timeout_ms;
    let max_keys = cfg.engine.max_keys;
    let wire = Wire::with_boot_id(&cfg.device, &cfg.uplink.topic_prefix, "backtest");
    let mut p = Processor::new(
        Engine::new(cfg.engine),
        Detectors::new(cfg.detectors, max_keys),
        wire,
        counters.clone(),
    );
    p.record_scores(!opts.no_scores);
    let mut w = std::io::BufWriter::with_capacity(1 << 16, out);
    if opts.format == Format::Csv {
        let _ = writeln!(w, "{}", CSV_COLUMNS.join(","));
    }
    let mut clock = SimClock { now: None, skew };
    let mut msgs = Vec::new();
    let mut header: Option<Vec<String>> = None;
    let mut records = 0u64;
    let mut result = Ok(());
    for (n, line) in input.lines().enumerate() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                let _ = writeln!(err, "cannot read {}: {e}", opts.input.display());
                return exit::FAILURE;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let row = if line.trim_start().starts_with('{') {
            json_row(&line)
        } else if let Some(h) = &header {
            csv_row(h, &line)
        } else {
            header = Some(
                split_csv(&line)
                    .into_iter()
                    .map(|c| c.trim().to_lowercase())
                    .collect(),
            );
            continue;
        };
        let (input, now) = to_input(row, &mut clock, n + 1);
        p.input(input, now, &mut msgs);
        records += msgs.len() as u64;
        result = result.and(write_all(&mut w, opts.format, &msgs, &p.take_scores(), now));
        msgs.clear();
    }
    if opts.flush {
        if let (Some(now), Some(idle)) = (clock.now, idle) {
            let later = now.saturating_add(idle);
            p.tick(later, &mut msgs);
            records += msgs.len() as u64;
            result = result.and(write_all(&mut w, opts.format, &msgs, &[], later));
        }
    }
    if let Err(e) = result.and(w.flush()) {
        let _ = writeln!(err, "cannot write the output: {e}");
        return exit::FAILURE;
    }
    let secs = started.elapsed().as_secs_f64();
    let readings = counters.readings.load(std::sync::atomic::Ordering::Relaxed);
    let _ = writeln!(
        err,
        "backtest: {readings} readings, {records} messages in {secs:.2} s ({:.0} readings/s), peak memory {}",
        readings as f64 / secs.max(1e-9),
        peak_rss().map_or("unknown".into(), |kib| format!(
            "{:.1} MiB",
            kib as f64 / 1024.0
        )),
    );
    exit::OK
}

/// The simulated wall clock; see the module docs.
struct SimClock {
    now: Option<TimestampMs>,
    skew: i64,
}

impl SimClock {
    fn advance(&mut self, ts: Option<TimestampMs>, arrival: Option<TimestampMs>) -> TimestampMs {
        let next = match (self.now, arrival, ts) {
            (prev, Some(a), _) => prev.map_or(a, |p| p.max(a)),
            (None, None, Some(t)) => t,
            (Some(p), None, Some(t)) if t <= p.saturating_add(self.skew) => p.max(t),
            (prev, _, _) => prev.unwrap_or(0),
        };
        self.now = Some(next);
        next
    }
}

/// One input row's fields, as text or JSON values.
struct Row {
    sensor: Option<String>,
    metric: Option<String>,
    value: Result<f64, (&'static str, String)>,
    ts: Option<Value>,
    arrival: Option<Value>,
    raw: String,
}

fn csv_row(header: &[String], line: &str) -> Row {
    let fields = split_csv(line);
    let get = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .and_then(|i| fields.get(i))
            .map(|f| f.trim())
            .filter(|f| !f.is_empty())
    };
    let num_or_text = |s: &str| {
        s.parse::<i64>()
            .map(Value::from)
            .or_else(|_| s.parse::<f64>().map(Value::from))
            .unwrap_or_else(|_| Value::String(s.to_string()))
    };
    Row {
        sensor: get("sensor").map(str::to_string),
        metric: get("metric").map(str::to_string),
        value: match get("value") {
            None => Err(("missing_value", "no value".into())),
            Some(v) => v
                .parse::<f64>()
                .map_err(|_| ("not_a_number", format!("value {v:?} is not a number"))),
        },
        ts: get("ts").map(num_or_text),
        arrival: get("arrival").map(num_or_text),
        raw: line.to_string(),
    }
}

fn json_row(line: &str) -> Row {
    let v: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => {
            return Row {
                sensor: None,
                metric: None,
                value: Err(("bad_json", format!("not valid JSON: {e}"))),
                ts: None,
                arrival: None,
                raw: line.to_string(),
            };
        }
    };
    let text = |f: &str| v.get(f).and_then(Value::as_str).map(str::to_string);
    Row {
        sensor: text("sensor"),
        metric: text("metric"),
        value: match v.get("value") {
            None | Some(Value::Null) => Err(("missing_value", "no value".into())),
            Some(x) => x
                .as_f64()
                .ok_or(("wrong_type", format!("value {x} is not a number"))),
        },
        ts: v.get("ts").filter(|t| !t.is_null()).cloned(),
        arrival: v.get("arrival").filter(|t| !t.is_null()).cloned(),
        raw: line.to_string(),
    }
}

/// A row becomes a reading, or a dead letter saying why not; and the
/// simulated time it arrived.
fn to_input(row: Row, clock: &mut SimClock, line: usize) -> (Input, TimestampMs) {
    let arrival = row.arrival.as_ref().and_then(|a| parse_timestamp(a).ok());
    let ts = row.ts.as_ref().map(parse_timestamp);
    let now = clock.advance(ts.as_ref().and_then(|t| t.as_ref().ok().copied()), arrival);
    let dead = |reason: &'static str, detail: String| {
        Input::DeadLetter(DeadLetter {
            source: format!("backtest:{line}"),
            reason,
            detail,
            payload: crate::wire::excerpt(row.raw.as_bytes(), 256),
            received_at: now,
        })
    };
    let (Some(sensor), Some(metric)) = (&row.sensor, &row.metric) else {
        return (
            dead("unmapped_topic", "row has no sensor or metric".into()),
            now,
        );
    };
    let value = match &row.value {
        Ok(v) => *v,
        Err((reason, detail)) => return (dead(reason, detail.clone()), now),
    };
    let (ts, source) = match ts {
        Some(Ok(t)) => (t, TsSource::Event),
        Some(Err(e)) => return (dead(e.reason(), e.to_string()), now),
        None if arrival.is_some() => (now, TsSource::Arrival),
        None => return (dead("bad_timestamp", "row has no ts".into()), now),
    };
    match Reading::new(
        Key::new(sensor.as_str(), metric.as_str()),
        value,
        ts,
        source,
    ) {
        Ok(r) => (Input::Reading(r), now),
        Err(e) => (dead("non_finite", e.to_string()), now),
    }
}

/// Splits one CSV line: commas separate, double quotes enclose, `""` is a quote.
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    fields.push(cur);
    fields
}

fn write_all(
    w: &mut dyn Write,
    format: Format,
    msgs: &[NewMessage],
    scores: &[Score],
    now: TimestampMs,
) -> std::io::Result<()> {
    for m in msgs {
        match format {
            Format::Jsonl => {
                w.write_all(&m.payload)?;
                w.write_all(b"\n")?;
            }
            Format::Csv => {
                let v: Value = serde_json::from_slice(&m.payload).unwrap_or(Value::Null);
                csv_record(w, &v)?;
            }
        }
    }
    for s in scores {
        let v = serde_json::json!({
            "type": "score",
            "sensor": &*s.reading.key.sensor,
            "metric": &*s.reading.key.metric,
            "ts": s.reading.ts,
            "value": s.reading.value,
            "score": s.score,
            "detector": s.detector,
            "emitted_at": now,
        });
        match format {
            Format::Jsonl => writeln!(w, "{v}")?,
            Format::Csv => csv_record(w, &v)?,
        }
    }
    Ok(())
}

fn csv_record(w: &mut dyn Write, v: &Value) -> std::io::Result<()> {
    let cells: Vec<String> = CSV_COLUMNS
        .iter()
        .map(|c| match v.get(*c) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) if s.contains([',', '"', '\n']) => {
                format!("\"{}\"", s.replace('"', "\"\""))
            }
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        })
        .collect();
    writeln!(w, "{}", cells.join(","))
}

/// Peak resident memory of this process in KiB (`VmHWM`), on Linux.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_may_be_quoted_and_contain_commas_and_quotes() {
        assert_eq!(
            split_csv("a,\"b,c\",\"say \"\"hi\"\"\",,"),
            ["a", "b,c", "say \"hi\"", "", ""]
        );
    }

    #[test]
    fn the_simulated_clock_follows_timestamps_but_not_a_reading_from_the_future() {
        let mut c = SimClock {
            now: None,
            skew: 1_000,
        };
        assert_eq!(c.advance(Some(5_000), None), 5_000);
        assert_eq!(c.advance(Some(4_000), None), 5_000, "never backwards");
        assert_eq!(c.advance(Some(5_900), None), 5_900);
        assert_eq!(
            c.advance(Some(999_999), None),
            5_900,
            "a bad clock does not drag it"
        );
        assert_eq!(
            c.advance(None, Some(7_000)),
            7_000,
            "an arrival column wins"
        );
        assert_eq!(c.advance(Some(1), Some(6_000)), 7_000);
    }

    #[test]
    fn a_row_becomes_a_reading_or_a_dead_letter_with_its_reason() {
        let h: Vec<String> = ["ts", "sensor", "metric", "value"].map(String::from).into();
        let mut c = SimClock { now: None, skew: 0 };
        match to_input(csv_row(&h, "1700000000000,gh,temp,21.5"), &mut c, 2) {
            (Input::Reading(r), now) => {
                assert_eq!(
                    (r.ts, r.value, now),
                    (1_700_000_000_000, 21.5, 1_700_000_000_000)
                );
                assert_eq!(r.key, Key::new("gh", "temp"));
            }
            other => panic!("{other:?}"),
        }
        for (line, reason) in [
            ("1700000000000,gh,temp,warm", "not_a_number"),
            ("1700000000000,gh,temp,NaN", "non_finite"),
            ("yesterday,gh,temp,1", "bad_timestamp"),
            ("1700000000000,,temp,1", "unmapped_topic"),
        ] {
            match to_input(csv_row(&h, line), &mut c, 3).0 {
                Input::DeadLetter(d) => assert_eq!(d.reason, reason, "{line}"),
                other => panic!("{line}: {other:?}"),
            }
        }
        match to_input(
            json_row(r#"{"sensor":"a","metric":"b","value":1,"ts":"2023-11-14T22:13:20Z"}"#),
            &mut c,
            4,
        )
        .0
        {
            Input::Reading(r) => assert_eq!(r.ts, 1_700_000_000_000),
            other => panic!("{other:?}"),
        }
    }
}
