//! `weir backtest --config FILE INPUT`: the exact engine and detectors of a
//! config over recorded readings, as fast as the machine allows.
//!
//! Input: CSV with a header row naming `sensor`, `metric`, `value`, `ts` and
//! optionally `arrival` (any order, other columns ignored; RFC 4180 quoting on
//! one line), or JSON lines with those fields. Timestamps are epoch seconds or
//! milliseconds, or RFC 3339, as on MQTT. File order is arrival order.
//!
//! Numeric timestamps below 1e11 are read as epoch seconds, others as
//! milliseconds, unless `--ts-unit` says which (the summary counts the ones
//! read as seconds); strings are RFC 3339, or `YYYY-MM-DD HH:MM:SS[.fff]` taken
//! as UTC.
//!
//! The wall clock (idle keys, held late panes, clock guards) is simulated: the
//! `arrival` column when there is one (never going backwards), else the
//! readings' own timestamps, never going backwards. A reading far ahead of the
//! clock (more than `max_future_skew` and more than ten typical steps between
//! readings) does not drag it forward and is quarantined, as live, unless the
//! next far-ahead reading agrees with it: then the recording has a gap and the
//! clock follows. So a recording sampled hourly replays as it was recorded,
//! and a single reading stamped a year ahead is still caught.
//!
//! With `--labels` or `--label-column`, the run is also scored against
//! labelled anomalies (see `backtest_eval.rs` and `nab.rs`). Everything runs
//! through [`Processor`], the daemon's own core: for the same readings at the
//! same wall-clock times, the output is what the daemon publishes.
//!
//! Output, one record per line, in causal order: every message the daemon
//! would publish (`pane`, `alert`, `late`, `deadletter`; the JSON of
//! `docs/wire.md`) and, per accepted reading, a `score` record with the
//! detectors' anomaly score in [0, 1]. As JSON lines, or CSV with fixed columns.
//! Rows that are not readings become `deadletter` records, as on MQTT (a row that
//! is not UTF-8 is a `not_utf8` one; the run goes on).

use std::borrow::Cow;
use std::collections::HashMap;
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
use crate::outbox::{Class, NewMessage};
use crate::process::{Processor, Score};
use crate::reading::{Key, Reading, TimestampMs, TsSource};
use crate::source::Input;
use crate::source::payload::{MAX_TIMESTAMP_MS, SECONDS_BELOW, parse_timestamp};
use crate::wire::{DeadLetter, Wire, json};

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
    /// Write `score` records only for readings scoring at least this.
    pub min_score: Option<f64>,
    /// Labelled windows per sensor, NAB-style JSON.
    pub labels: Option<&'a Path>,
    /// A label column of the input (1 = anomalous row).
    pub label_column: Option<&'a str>,
    /// Unit of numeric timestamps; `None` guesses by magnitude.
    pub ts_unit: Option<TsUnit>,
}

/// Unit of numeric timestamps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TsUnit {
    /// Epoch seconds.
    S,
    /// Epoch milliseconds.
    Ms,
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
    let windows = match opts.labels.map(load_windows).transpose() {
        Ok(w) => w,
        Err(e) => {
            let _ = writeln!(err, "{e}");
            return exit::FAILURE;
        }
    };
    let mut eval = (windows.is_some() || opts.label_column.is_some())
        .then(|| super::backtest_eval::Eval::new(windows));
    let label_col = opts.label_column.map(str::to_lowercase);
    let mut ts_read = TsRead {
        unit: opts.ts_unit,
        as_seconds: 0,
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
    p.record_scores(!opts.no_scores || eval.is_some());
    let mut w = std::io::BufWriter::with_capacity(1 << 16, out);
    if opts.format == Format::Csv {
        let _ = writeln!(w, "{}", CSV_COLUMNS.join(","));
    }
    let mut clock = SimClock::new(skew);
    let mut msgs = Vec::new();
    let mut scores = Vec::new();
    let mut buf = Vec::with_capacity(1 << 17);
    let mut header: Option<Columns> = None;
    let mut keys = KeyCache::new();
    let mut records = 0u64;
    let mut result = Ok(());
    let mut lines = Lines::new(input);
    let mut n = 0usize;
    loop {
        let bytes = match lines.next() {
            Ok(None) => break,
            Ok(Some(b)) => b,
            Err(e) => {
                let _ = writeln!(err, "cannot read {}: {e}", opts.input.display());
                return exit::FAILURE;
            }
        };
        n += 1;
        let (input, now, label) = match std::str::from_utf8(bytes) {
            Err(_) if header.is_none() => {
                let names = header_names(&String::from_utf8_lossy(bytes));
                header = Some(Columns::new(&names, label_col.as_deref()));
                continue;
            }
            // As on MQTT: a dead letter, and the rest of the recording goes on.
            Err(_) => {
                let now = clock.advance(None, None);
                let dead = Input::DeadLetter(DeadLetter {
                    source: format!("backtest:{n}"),
                    reason: "not_utf8",
                    detail: "row is not valid UTF-8".into(),
                    payload: crate::wire::excerpt(bytes.trim_ascii_end(), 256),
                    received_at: now,
                });
                (dead, now, false)
            }
            Ok(text) => {
                let text = strip_eol(text);
                let text_trimmed = trim(text);
                if text_trimmed.is_empty() {
                    continue;
                }
                let row = if text_trimmed.starts_with('{') {
                    json_row(text, label_col.as_deref())
                } else if let Some(h) = &header {
                    csv_row(h, text)
                } else {
                    header = Some(Columns::new(&header_names(text), label_col.as_deref()));
                    continue;
                };
                let label = row.label;
                let (input, now) = to_input(row, &mut clock, n, &mut ts_read, &mut keys);
                (input, now, label)
            }
        };
        p.input(input, now, &mut msgs);
        records += msgs.len() as u64;
        p.take_scores(&mut scores);
        if let Some(e) = &mut eval {
            for m in msgs.iter().filter(|m| m.class == Class::Alert) {
                e.on_alert(&m.payload);
            }
            for s in &scores {
                e.on_reading(&s.reading.key.sensor, s.reading.ts, s.score, label);
            }
        }
        if let Some(min) = opts.min_score {
            scores.retain(|s| s.score >= min);
        }
        let scores: &[Score] = if opts.no_scores { &[] } else { &scores };
        result = result.and(write_all(&mut w, opts.format, &msgs, scores, now, &mut buf));
        msgs.clear();
    }
    if opts.flush {
        if let (Some(now), Some(idle)) = (clock.now, idle) {
            let later = now.saturating_add(idle);
            p.tick(later, &mut msgs);
            records += msgs.len() as u64;
            result = result.and(write_all(&mut w, opts.format, &msgs, &[], later, &mut buf));
        }
    }
    if let Err(e) = result
        .and_then(|()| spill(&mut w, &mut buf, 0))
        .and(w.flush())
    {
        let _ = writeln!(err, "cannot write the output: {e}");
        return exit::FAILURE;
    }
    let secs = started.elapsed().as_secs_f64();
    if ts_read.as_seconds > 0 {
        let _ = writeln!(
            err,
            "note: {} numeric timestamps below 1e11 were read as epoch seconds; pass --ts-unit ms if they are milliseconds",
            ts_read.as_seconds
        );
    }
    if let Some(e) = &mut eval {
        if let Err(e) = e.report(err) {
            let _ = writeln!(err, "cannot write the evaluation: {e}");
            return exit::FAILURE;
        }
    }
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
    /// EW mean step between consecutive readings' timestamps (ms).
    step: f64,
    last_ts: Option<TimestampMs>,
    /// A far-ahead reading not followed yet.
    pending: Option<TimestampMs>,
}

impl SimClock {
    fn new(skew: i64) -> Self {
        Self {
            now: None,
            skew,
            step: 0.0,
            last_ts: None,
            pending: None,
        }
    }

    fn advance(&mut self, ts: Option<TimestampMs>, arrival: Option<TimestampMs>) -> TimestampMs {
        let limit = (self.skew as f64).max(10.0 * self.step) as i64;
        let next = match (self.now, arrival, ts) {
            (prev, Some(a), _) => prev.map_or(a, |p| p.max(a)),
            (None, None, Some(t)) => {
                self.follow(t);
                t
            }
            (Some(p), None, Some(t)) if t <= p.saturating_add(limit) => {
                self.follow(t);
                p.max(t)
            }
            (Some(p), None, Some(t)) => match self.pending {
                // Time goes on from the far-ahead reading by no more than it
                // jumped: a gap or a sparse recording, not one bad clock.
                Some(q) if t >= q && t - q <= (q - p).saturating_add(limit) => {
                    self.pending = None;
                    self.follow(t);
                    t
                }
                Some(q) if t < q => p,
                _ => {
                    self.pending = Some(t);
                    p
                }
            },
            (prev, _, _) => prev.unwrap_or(0),
        };
        self.now = Some(next);
        next
    }

    /// A reading the clock follows: learn the typical step.
    fn follow(&mut self, t: TimestampMs) {
        if let Some(last) = self.last_ts {
            let d = (t - last).max(0) as f64;
            self.step += 0.1 * (d - self.step);
        }
        self.last_ts = Some(t);
        self.pending = None;
    }
}

/// Numeric timestamps: the unit asked for, and how many were guessed seconds.
struct TsRead {
    unit: Option<TsUnit>,
    as_seconds: u64,
}

impl TsRead {
    /// A timestamp field of a row.
    fn field(&mut self, f: &TsField) -> Result<TimestampMs, crate::source::payload::PayloadError> {
        match f {
            TsField::Text(s) => self.text(s),
            TsField::Json(v) => self.parse(v),
        }
    }

    /// A CSV timestamp: what [`TsRead::parse`] gives for the field read as a
    /// JSON number if it is one, else as a JSON string. Epoch digits and the
    /// date-time layouts are read straight from the text; anything else, and
    /// every error, goes through `parse`, so the messages are its own.
    fn text(&mut self, s: &str) -> Result<TimestampMs, crate::source::payload::PayloadError> {
        match self.fast_text(s) {
            Some(ms) => Ok(ms),
            None => self.parse(&num_or_text(s)),
        }
    }

    /// The accepted timestamps of [`TsRead::text`] that need no JSON value:
    /// up to 15 plain digits (below 2^53, so exact as the `f64` that `parse`
    /// works with), or a date-time that chrono's RFC 3339 parser (a
    /// fixed-layout scan) takes as it is or with `Z` appended, as `parse`
    /// does for the logger layout. `None` for everything else, and for what
    /// `parse` would refuse (out of range).
    fn fast_text(&mut self, s: &str) -> Option<TimestampMs> {
        let b = s.as_bytes();
        let in_range = |ms: i64| (0..=MAX_TIMESTAMP_MS).contains(&ms).then_some(ms);
        if let Some(i) = digits(b) {
            let seconds = i < SECONDS_BELOW;
            let ms = in_range(match self.unit {
                Some(TsUnit::Ms) => i,
                // i < 10^15: no overflow.
                Some(TsUnit::S) => i * 1000,
                None if seconds => i * 1000,
                None => i,
            })?;
            if self.unit.is_none() && seconds {
                self.as_seconds += 1;
            }
            return Some(ms);
        }
        if b.len() < 19 || !b[0].is_ascii_digit() {
            return None;
        }
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
            return in_range(t.timestamp_millis());
        }
        // `YYYY-MM-DD HH:MM:SS[.fff]`: chrono reads a space at byte 10 as it
        // reads the `T` that `parse` puts there, so only the `Z` is added.
        const MAX: usize = 64;
        if b[10] != b' ' || b.len() >= MAX {
            return None;
        }
        let mut z = [0u8; MAX];
        z[..b.len()].copy_from_slice(b);
        z[b.len()] = b'Z';
        let iso = std::str::from_utf8(&z[..=b.len()]).ok()?;
        let t = chrono::DateTime::parse_from_rfc3339(iso).ok()?;
        in_range(t.timestamp_millis())
    }

    fn parse(&mut self, v: &Value) -> Result<TimestampMs, crate::source::payload::PayloadError> {
        if let (Some(unit), Some(f)) = (self.unit, v.as_f64()) {
            let ms = match unit {
                TsUnit::S => f * 1000.0,
                TsUnit::Ms => f,
            }
            .round();
            // Through the string path, so the range check is the payload one.
            return parse_timestamp(&Value::String(
                chrono::DateTime::from_timestamp_millis(ms as i64)
                    .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                    .unwrap_or_default(),
            ));
        }
        if let Some(f) = v.as_f64() {
            if f.abs() < 1e11 {
                self.as_seconds += 1;
            }
        }
        match (parse_timestamp(v), v.as_str()) {
            // `YYYY-MM-DD HH:MM:SS[.fff]`, as many loggers write: UTC.
            (Err(e), Some(s)) if s.len() >= 19 && s.as_bytes().get(10) == Some(&b' ') => {
                let iso = format!("{}T{}Z", &s[..10], &s[11..]);
                parse_timestamp(&Value::String(iso)).map_err(|_| e)
            }
            (r, _) => r,
        }
    }
}

/// Labelled windows per sensor: `{"sensor": [[start, end], ...]}`.
fn load_windows(path: &Path) -> Result<HashMap<String, Vec<(i64, i64)>>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read labels {}: {e}", path.display()))?;
    let raw: HashMap<String, Vec<(Value, Value)>> = serde_json::from_str(&text).map_err(|e| {
        format!(
            "labels {}: {e}; expected {{\"<sensor>\": [[start, end], ...], ...}}",
            path.display()
        )
    })?;
    let mut ts = TsRead {
        unit: None,
        as_seconds: 0,
    };
    let mut out = HashMap::new();
    for (series, wins) in raw {
        let mut v = Vec::with_capacity(wins.len());
        for (a, b) in wins {
            let a = ts
                .parse(&a)
                .map_err(|e| format!("labels {}: {series}: {e}", path.display()))?;
            let b = ts
                .parse(&b)
                .map_err(|e| format!("labels {}: {series}: {e}", path.display()))?;
            v.push((a.min(b), a.max(b)));
        }
        v.sort_unstable();
        out.insert(series, v);
    }
    Ok(out)
}

/// One input row's fields, as text or JSON values, borrowed from the line
/// where they can be.
struct Row<'a> {
    sensor: Option<Cow<'a, str>>,
    metric: Option<Cow<'a, str>>,
    value: Result<f64, (&'static str, String)>,
    ts: Option<TsField<'a>>,
    arrival: Option<TsField<'a>>,
    label: bool,
    raw: &'a str,
}

/// Up to 15 ASCII digits (below 2^53) as their number, in one pass: the first
/// eight at once (an epoch timestamp has 10 or 13), the rest one by one.
fn digits(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 15 {
        return None;
    }
    let (mut n, rest) = match b.split_first_chunk::<8>() {
        Some((w, rest)) => (eight_digits(u64::from_le_bytes(*w))?, rest),
        None => (0, b),
    };
    for &d in rest {
        let d = d.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n = n * 10 + i64::from(d);
    }
    Some(n)
}

/// Eight ASCII digits, the first in the lowest byte, as their number; `None` if
/// one byte is not a digit. Every byte must have high nibble 3 and a low one that
/// does not pass 9 when 6 is added (no carry leaves a byte: at most 0x3F + 6);
/// then pairs, fours and the eight are combined by three multiplications.
fn eight_digits(x: u64) -> Option<i64> {
    const HIGH: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    const THREES: u64 = 0x3030_3030_3030_3030;
    if x & HIGH != THREES || x.wrapping_add(0x0606_0606_0606_0606) & HIGH != THREES {
        return None;
    }
    let v = x & 0x0F0F_0F0F_0F0F_0F0F;
    let v = (v.wrapping_mul(10 * 256 + 1) >> 8) & 0x00FF_00FF_00FF_00FF;
    let v = (v.wrapping_mul(100 * 65_536 + 1) >> 16) & 0x0000_FFFF_0000_FFFF;
    let v = v.wrapping_mul(10_000 * (1 << 32) + 1) >> 32;
    Some(v as i64)
}

/// A timestamp field as a row has it: CSV text, or a JSON value.
#[derive(Debug, PartialEq)]
enum TsField<'a> {
    Text(Cow<'a, str>),
    Json(Value),
}

/// A CSV field as the JSON value it would be: a number when it reads as an
/// `i64` or an `f64` (a non-finite one is `null`), else a string.
fn num_or_text(s: &str) -> Value {
    s.parse::<i64>()
        .map(Value::from)
        .or_else(|_| s.parse::<f64>().map(Value::from))
        .unwrap_or_else(|_| Value::String(s.to_string()))
}

/// `line` without its trailing `\n`s and `\r`s, as `trim_end_matches(['\n', '\r'])` gives
/// it, by bytes (the char-set pattern was a visible cost per line).
fn strip_eol(line: &str) -> &str {
    let n = line
        .bytes()
        .rev()
        .take_while(|&b| b == b'\n' || b == b'\r')
        .count();
    &line[..line.len() - n]
}

/// A CSV header's column names, trimmed and in lower case.
fn header_names(line: &str) -> Vec<String> {
    split_csv(strip_eol(line))
        .into_iter()
        .map(|c| c.trim().to_lowercase())
        .collect()
}

/// The lines of the input, each with its end of line, borrowed from the reader's
/// buffer when they lie whole in it (nearly all of them): `read_line` copied every
/// line and checked its UTF-8 before the row was even looked at. A line across the
/// buffer's end, or longer than the buffer, is gathered in `carry`.
struct Lines<R> {
    input: R,
    carry: Vec<u8>,
    /// Bytes of the buffer the line handed out last occupies, consumed at the next call.
    pending: usize,
}

impl<R: BufRead> Lines<R> {
    fn new(input: R) -> Self {
        Self {
            input,
            carry: Vec::new(),
            pending: 0,
        }
    }

    /// The next line, `None` at the end of the input; the last line may lack its newline.
    fn next(&mut self) -> std::io::Result<Option<&[u8]>> {
        self.input.consume(std::mem::take(&mut self.pending));
        self.carry.clear();
        loop {
            let (end, newline) = {
                let buf = match self.input.fill_buf() {
                    Ok(b) => b,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                match memchr::memchr(b'\n', buf) {
                    Some(i) => (i + 1, true),
                    None => (buf.len(), false),
                }
            };
            if end == 0 {
                return Ok((!self.carry.is_empty()).then_some(&self.carry[..]));
            }
            if newline && self.carry.is_empty() {
                self.pending = end;
                return Ok(Some(&self.input.fill_buf()?[..end]));
            }
            let buf = self.input.fill_buf()?;
            self.carry.extend_from_slice(&buf[..end]);
            self.input.consume(end);
            if newline {
                return Ok(Some(&self.carry[..]));
            }
        }
    }
}

/// `str::trim`, with a fast path for the usual field that starts and ends with a byte that
/// is plainly not whitespace (printable ASCII other than space): it is returned as is.
fn trim(s: &str) -> &str {
    let plain = |b: Option<&u8>| b.is_some_and(|&b| b > b' ' && b < 0x7F);
    if plain(s.as_bytes().first()) && plain(s.as_bytes().last()) {
        s
    } else {
        s.trim()
    }
}

fn is_label(s: &str) -> bool {
    matches!(trim(s), "1" | "1.0" | "true" | "True" | "TRUE")
}

/// Where a CSV header puts the fields a row needs: per column, which field
/// (an index into [`Columns::FIELDS`]) or none.
struct Columns {
    by_col: Vec<Option<usize>>,
}

impl Columns {
    /// sensor, metric, value, ts, arrival, label.
    const FIELDS: usize = 6;

    fn new(header: &[String], label: Option<&str>) -> Self {
        let names = ["sensor", "metric", "value", "ts", "arrival"];
        let by_col = header
            .iter()
            .map(|h| {
                names
                    .iter()
                    .position(|n| n == h)
                    .or_else(|| (Some(h.as_str()) == label).then_some(5))
            })
            .collect();
        Self { by_col }
    }
}

fn csv_row<'a>(cols: &Columns, line: &'a str) -> Row<'a> {
    let mut f: [Option<Cow<'a, str>>; Columns::FIELDS] = Default::default();
    // Most lines have no quotes: split in place, nothing allocated, in the same
    // pass that looks for a quote.
    let mut quoted = false;
    for (i, field) in comma_fields(line).take(cols.by_col.len()).enumerate() {
        let Some(field) = field else {
            quoted = true;
            break;
        };
        if let Some(Some(k)) = cols.by_col.get(i) {
            f[*k] = Some(Cow::Borrowed(field));
        }
    }
    if quoted {
        f = Default::default();
        for (i, field) in split_csv(line).into_iter().enumerate() {
            if let Some(Some(k)) = cols.by_col.get(i) {
                f[*k] = Some(Cow::Owned(field));
            }
        }
    }
    let [sensor, metric, value, ts, arrival, label] = f.map(|x| {
        x.map(|c| match c {
            Cow::Borrowed(b) => Cow::Borrowed(trim(b)),
            Cow::Owned(o) => Cow::Owned(o.trim().to_string()),
        })
        .filter(|c| !c.is_empty())
    });
    Row {
        sensor,
        metric,
        value: match value {
            None => Err(("missing_value", "no value".into())),
            Some(v) => v
                .parse::<f64>()
                .map_err(|_| ("not_a_number", format!("value {v:?} is not a number"))),
        },
        ts: ts.map(TsField::Text),
        arrival: arrival.map(TsField::Text),
        label: label.as_deref().is_some_and(is_label),
        raw: line,
    }
}

/// The fields of a CSV line, as `line.split(',')` gives them, up to a double
/// quote: from there on `None` (the line needs [`split_csv`]). Eight bytes at a
/// time, both bytes in one pass (neither is ever part of another character in
/// UTF-8): a byte loop or `memchr2` per field cost several times more on fields
/// this short.
fn comma_fields(line: &str) -> impl Iterator<Item = Option<&str>> {
    let bytes = line.as_bytes();
    // Offset of the 8-byte word `marks` comes from; its ',' and '"' bytes not taken yet.
    let mut word = 0;
    let mut marks = marks_at(bytes, 0);
    let mut from = Some(0);
    std::iter::from_fn(move || {
        let start = from?;
        while marks == 0 {
            word += 8;
            if word >= bytes.len() {
                from = None;
                return Some(line.get(start..));
            }
            marks = marks_at(bytes, word);
        }
        let at = word + (marks.trailing_zeros() / 8) as usize;
        marks &= marks - 1;
        if bytes.get(at) == Some(&b'"') {
            from = None;
            return Some(None);
        }
        from = Some(at + 1);
        Some(line.get(start..at))
    })
}

/// Bit 7 of byte `i` is set where `bytes[at + i]` is ',' or '"' (past the end: neither).
fn marks_at(bytes: &[u8], at: usize) -> u64 {
    const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
    const ONES: u64 = 0x0101_0101_0101_0101;
    let rest = bytes.get(at..).unwrap_or_default();
    let x = match rest.first_chunk::<8>() {
        // One load; the zero-padded copy below is a `memcpy` call.
        Some(w) => u64::from_le_bytes(*w),
        None => {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            u64::from_le_bytes(w)
        }
    };
    // Exact zero-byte test (no false positives next to a true one).
    let zero = |y: u64| !(((y & LOW7) + LOW7) | y | LOW7);
    zero(x ^ (ONES * u64::from(b','))) | zero(x ^ (ONES * u64::from(b'"')))
}

fn json_row<'a>(line: &'a str, label: Option<&str>) -> Row<'a> {
    let v: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => {
            return Row {
                sensor: None,
                metric: None,
                value: Err(("bad_json", format!("not valid JSON: {e}"))),
                ts: None,
                arrival: None,
                label: false,
                raw: line,
            };
        }
    };
    let text = |f: &str| {
        v.get(f)
            .and_then(Value::as_str)
            .map(|s| Cow::Owned(s.to_string()))
    };
    Row {
        sensor: text("sensor"),
        metric: text("metric"),
        value: match v.get("value") {
            None | Some(Value::Null) => Err(("missing_value", "no value".into())),
            Some(x) => x
                .as_f64()
                .ok_or(("wrong_type", format!("value {x} is not a number"))),
        },
        ts: v
            .get("ts")
            .filter(|t| !t.is_null())
            .cloned()
            .map(TsField::Json),
        arrival: v
            .get("arrival")
            .filter(|t| !t.is_null())
            .cloned()
            .map(TsField::Json),
        label: label.and_then(|l| v.get(l)).is_some_and(|x| match x {
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64() == Some(1.0),
            Value::String(s) => is_label(s),
            _ => false,
        }),
        raw: line,
    }
}

/// A row becomes a reading, or a dead letter saying why not; and the
/// simulated time it arrived.
fn to_input(
    row: Row,
    clock: &mut SimClock,
    line: usize,
    ts_read: &mut TsRead,
    keys: &mut KeyCache,
) -> (Input, TimestampMs) {
    let arrival = row.arrival.as_ref().and_then(|a| ts_read.field(a).ok());
    let ts = row.ts.as_ref().map(|t| ts_read.field(t));
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
    match Reading::new(keys.get(sensor, metric), value, ts, source) {
        Ok(r) => (Input::Reading(r), now),
        Err(e) => (dead("non_finite", e.to_string()), now),
    }
}

/// The keys seen lately, so that a row's key is not two new allocations and
/// the engine's and detectors' lookups find it by its pointers. A direct-mapped
/// table (a key's slot is its hash; a newcomer replaces whatever was there), so
/// a lookup costs one hash and one comparison however many keys the recording
/// has, and the memory stays bounded. Before the hash, the key that followed the
/// previous one last time is tried: recordings repeat their order of keys
/// (round-robin sensors, one row per instant), so most rows need no hash at all.
struct KeyCache {
    slots: Vec<Option<Key>>,
    /// Per slot, the slot looked up right after it last time.
    next: Vec<u32>,
    /// The slot of the previous lookup.
    prev: usize,
    hasher: foldhash::fast::FixedState,
}

impl KeyCache {
    const SIZE: usize = 4096;

    fn new() -> Self {
        Self {
            slots: vec![None; Self::SIZE],
            next: vec![0; Self::SIZE],
            prev: 0,
            hasher: foldhash::fast::FixedState::default(),
        }
    }

    fn get(&mut self, sensor: &str, metric: &str) -> Key {
        let is = |k: &Key| {
            same(k.metric.as_bytes(), metric.as_bytes())
                && same(k.sensor.as_bytes(), sensor.as_bytes())
        };
        let guess = self.next[self.prev] as usize;
        let slot = if self.slots[guess].as_ref().is_some_and(is) {
            guess
        } else {
            use std::hash::BuildHasher;
            let slot = self.hasher.hash_one((sensor, metric)) as usize & (Self::SIZE - 1);
            self.next[self.prev] = slot as u32;
            slot
        };
        self.prev = slot;
        match &self.slots[slot] {
            Some(k) if is(k) => k.clone(),
            _ => self.slots[slot].insert(Key::new(sensor, metric)).clone(),
        }
    }
}

/// `a == b` for the short names of sensors and metrics without a call to `memcmp`:
/// two overlapping 8-byte (or 4-byte) words from each end cover 4 to 16 bytes.
fn same(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word8 = |s: &[u8], at: usize| {
        s.get(at..at + 8)
            .map(|w| u64::from_ne_bytes(w.try_into().unwrap_or([0; 8])))
    };
    let word4 = |s: &[u8], at: usize| {
        s.get(at..at + 4)
            .map(|w| u32::from_ne_bytes(w.try_into().unwrap_or([0; 4])))
    };
    match n {
        8..=16 => word8(a, 0) == word8(b, 0) && word8(a, n - 8) == word8(b, n - 8),
        4..=7 => word4(a, 0) == word4(b, 0) && word4(a, n - 4) == word4(b, n - 4),
        _ => a == b,
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

/// Writes the records of one step. JSON lines are gathered in `buf` and go to `w`
/// 64 KiB at a time (see [`spill`]): one call through the writer per record was a
/// good share of the cost, the score records being one per reading.
fn write_all(
    w: &mut dyn Write,
    format: Format,
    msgs: &[NewMessage],
    scores: &[Score],
    now: TimestampMs,
    buf: &mut Vec<u8>,
) -> std::io::Result<()> {
    match format {
        Format::Jsonl => {
            for m in msgs {
                buf.extend_from_slice(&m.payload);
                buf.push(b'\n');
            }
            for s in scores {
                score_json(buf, s, now);
            }
            spill(w, buf, 1 << 16)
        }
        Format::Csv => {
            for m in msgs {
                let v: Value = serde_json::from_slice(&m.payload).unwrap_or(Value::Null);
                csv_record(buf, &v)?;
            }
            for s in scores {
                score_csv(buf, s, now);
            }
            spill(w, buf, 1 << 16)
        }
    }
}

/// Hands what `buf` gathered to `w` once it holds at least `at` bytes (0: now).
fn spill(w: &mut dyn Write, buf: &mut Vec<u8>, at: usize) -> std::io::Result<()> {
    if buf.len() >= at && !buf.is_empty() {
        w.write_all(buf)?;
        buf.clear();
    }
    Ok(())
}

/// One `score` record as a JSON line (fields in alphabetical order, as the
/// other records have them), with the wire's JSON writer: serde_json's bytes.
fn score_json(buf: &mut Vec<u8>, s: &Score, now: TimestampMs) {
    let mut now_text = itoa::Buffer::new();
    let now_text = now_text.format(now).as_bytes();
    buf.extend_from_slice(b"{\"detector\":");
    match &s.detector {
        Some(d) => json::string(buf, d),
        None => buf.extend_from_slice(b"null"),
    }
    buf.extend_from_slice(b",\"emitted_at\":");
    buf.extend_from_slice(now_text);
    buf.extend_from_slice(b",\"metric\":");
    json::string(buf, &s.reading.key.metric);
    buf.extend_from_slice(b",\"score\":");
    if s.score.to_bits() == 0 {
        // +0.0, a good share of all scores.
        buf.extend_from_slice(b"0.0");
    } else {
        json::float(buf, s.score);
    }
    buf.extend_from_slice(b",\"sensor\":");
    json::string(buf, &s.reading.key.sensor);
    buf.extend_from_slice(b",\"ts\":");
    if s.reading.ts == now {
        buf.extend_from_slice(now_text);
    } else {
        buf.extend_from_slice(itoa::Buffer::new().format(s.reading.ts).as_bytes());
    }
    buf.extend_from_slice(b",\"type\":\"score\",\"value\":");
    json::float(buf, s.reading.value);
    buf.extend_from_slice(b"}\n");
}

/// One `score` record as a CSV row of [`CSV_COLUMNS`], written directly: the
/// bytes [`csv_record`] gives for the record's JSON, without building it (a score
/// record is one per reading; through JSON values it took two thirds of the run).
fn score_csv(buf: &mut Vec<u8>, s: &Score, now: TimestampMs) {
    let mut int = itoa::Buffer::new();
    buf.extend_from_slice(b"score,");
    csv_cell(buf, &s.reading.key.sensor);
    buf.push(b',');
    csv_cell(buf, &s.reading.key.metric);
    buf.extend_from_slice(b",,");
    buf.extend_from_slice(int.format(s.reading.ts).as_bytes());
    buf.push(b',');
    csv_float(buf, s.reading.value);
    buf.push(b',');
    if s.score.to_bits() == 0 {
        buf.extend_from_slice(b"0.0");
    } else {
        csv_float(buf, s.score);
    }
    buf.push(b',');
    if let Some(d) = &s.detector {
        csv_cell(buf, d);
    }
    // window_start to reason: nothing in a score record.
    buf.extend_from_slice(&[b','; 20]);
    buf.extend_from_slice(int.format(now).as_bytes());
    buf.push(b'\n');
}

/// A string cell: as is, or quoted with its quotes doubled if it holds a comma,
/// a quote or a line end.
fn csv_cell(buf: &mut Vec<u8>, s: &str) {
    if s.contains([',', '"', '\n']) {
        buf.push(b'"');
        for part in s.split_inclusive('"') {
            buf.extend_from_slice(part.as_bytes());
            if part.ends_with('"') {
                buf.push(b'"');
            }
        }
        buf.push(b'"');
    } else {
        buf.extend_from_slice(s.as_bytes());
    }
}

/// A number cell: serde_json's digits; blank where JSON would have `null`.
fn csv_float(buf: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        json::float(buf, v);
    }
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
    fn digits_read_eight_at_once_are_what_one_by_one_gives() {
        let slow = |b: &[u8]| -> Option<i64> {
            if b.is_empty() || b.len() > 15 || !b.iter().all(u8::is_ascii_digit) {
                return None;
            }
            std::str::from_utf8(b).ok()?.parse().ok()
        };
        let mut cases: Vec<Vec<u8>> = [
            "0",
            "7",
            "1234567",
            "12345678",
            "00000000",
            "99999999",
            "123456789",
            "1700000000",
            "1700000000000",
            "999999999999999",
            "1000000000000000",
            "",
            "1234567a",
            "a2345678",
            "1234/678",
            "1234:678",
            "12345678:",
            "-1234567",
            "1234 678",
            "12345678901234x",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        // Every byte value at every place of an eight-digit field.
        for at in 0..8 {
            for b in 0..=255u8 {
                let mut f = b"31415926".to_vec();
                f[at] = b;
                cases.push(f.clone());
                f.extend_from_slice(b"53");
                cases.push(f);
            }
        }
        for c in cases {
            assert_eq!(digits(&c), slow(&c), "{:?}", String::from_utf8_lossy(&c));
        }
    }

    #[test]
    fn comma_fields_are_what_split_gives() {
        for line in [
            "",
            ",",
            "a",
            "a,b",
            ",a,",
            "s,m,1.5,17,",
            "é,ü,,x",
            ",,,,",
            "a,,b",
        ] {
            let ours: Vec<&str> = comma_fields(line).map(Option::unwrap).collect();
            let std: Vec<&str> = line.split(',').collect();
            assert_eq!(ours, std, "{line:?}");
        }
        // A quote ends the plain fields: what follows needs the quoted split.
        // Every length and position around the 8-byte words.
        for n in 0..40 {
            for at in 0..n {
                let mut line = vec![b'x'; n];
                line[at] = b',';
                if at + 3 < n {
                    line[at + 3] = b',';
                }
                let line = String::from_utf8(line).unwrap();
                let ours: Vec<&str> = comma_fields(&line).map(Option::unwrap).collect();
                assert_eq!(ours, line.split(',').collect::<Vec<_>>(), "{line:?}");
            }
        }
        let ours: Vec<Option<&str>> = comma_fields("a,b,\"c,d\",e").collect();
        assert_eq!(ours, [Some("a"), Some("b"), None]);
        assert_eq!(comma_fields("\"").collect::<Vec<_>>(), [None]);
    }

    #[test]
    fn csv_fields_may_be_quoted_and_contain_commas_and_quotes() {
        assert_eq!(
            split_csv("a,\"b,c\",\"say \"\"hi\"\"\",,"),
            ["a", "b,c", "say \"hi\"", "", ""]
        );
    }

    #[test]
    fn the_simulated_clock_follows_timestamps_but_not_a_reading_from_the_future() {
        let mut c = SimClock::new(1_000);
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
    fn the_simulated_clock_follows_a_recording_sampled_hourly() {
        // Before: every reading after the first was more than max_future_skew
        // (5 minutes) ahead of the clock, and quarantined as future_skew.
        let mut c = SimClock::new(300_000);
        let hour = 3_600_000;
        let mut held = 0;
        for i in 0..100 {
            let t = 1_700_000_000_000 + i * hour;
            if c.advance(Some(t), None) != t {
                held += 1;
            }
        }
        assert!(held <= 1, "{held} of 100 readings were ahead of the clock");
        // A gap of a day in a 1 Hz recording: the clock follows after one reading.
        let mut c = SimClock::new(300_000);
        for i in 0..100 {
            c.advance(Some(i * 1000), None);
        }
        assert_eq!(c.advance(Some(86_400_000), None), 99_000);
        assert_eq!(c.advance(Some(86_401_000), None), 86_401_000);
        // One reading a year ahead among 1 Hz ones does not drag it.
        assert_eq!(
            c.advance(Some(86_401_000 + 31_536_000_000), None),
            86_401_000
        );
        assert_eq!(c.advance(Some(86_402_000), None), 86_402_000);
    }

    #[test]
    fn numeric_timestamps_take_the_unit_given_and_small_ones_are_counted_as_seconds() {
        let mut t = TsRead {
            unit: None,
            as_seconds: 0,
        };
        assert_eq!(
            t.parse(&Value::from(1_700_000_000)).unwrap(),
            1_700_000_000_000
        );
        assert_eq!(t.as_seconds, 1);
        let mut t = TsRead {
            unit: Some(TsUnit::Ms),
            as_seconds: 0,
        };
        assert_eq!(t.parse(&Value::from(5_000)).unwrap(), 5_000);
        let mut t = TsRead {
            unit: Some(TsUnit::S),
            as_seconds: 0,
        };
        assert_eq!(t.parse(&Value::from(1.5)).unwrap(), 1_500);
        assert_eq!(
            t.parse(&Value::from("2020-03-09 10:14:33")).unwrap(),
            1_583_748_873_000,
            "a logger's UTC date-time"
        );
        assert_eq!(t.as_seconds, 0);
    }

    #[test]
    fn a_csv_timestamp_read_from_text_is_what_the_json_value_path_gives() {
        let inputs = [
            // epoch digits, either side of 1e11 and of the limits
            "0",
            "7",
            "007",
            "1583250000",
            "99999999999",
            "100000000000",
            "1583250000000",
            "253402300799999",
            "253402300800000",
            "999999999999999",
            "1000000000000000",
            "12345678901234567890",
            // signs, fractions, exponents, non-finite
            "-1",
            "+5",
            "-1583250000000",
            "1583250000.5",
            "1583250000.4999",
            "1.5e12",
            "1e400",
            "-1e400",
            "nan",
            "NaN",
            "inf",
            "-inf",
            // RFC 3339, fractions of 1 to 9 digits and more, offsets
            "2020-03-09T10:14:33Z",
            "2020-03-09t10:14:33z",
            "2020-03-09T10:14:33.1Z",
            "2020-03-09T10:14:33.12Z",
            "2020-03-09T10:14:33.123Z",
            "2020-03-09T10:14:33.1234Z",
            "2020-03-09T10:14:33.12345Z",
            "2020-03-09T10:14:33.123456Z",
            "2020-03-09T10:14:33.1234567Z",
            "2020-03-09T10:14:33.12345678Z",
            "2020-03-09T10:14:33.123456789Z",
            "2020-03-09T10:14:33.1234567891234Z",
            "2020-03-09T10:14:33.999+01:00",
            "2020-03-09T00:14:33-23:59",
            "2020-03-09T10:14:33+24:00",
            "2020-03-09T10:14:33+0100",
            "1970-01-01T00:00:00Z",
            "1970-01-01T00:59:59+01:00",
            "1969-12-31T23:59:59.999Z",
            "9999-12-31T23:59:59.999Z",
            "9999-12-31T23:59:59.999-01:00",
            "2020-02-29T12:00:00Z",
            "2019-02-29T12:00:00Z",
            "2000-02-29T12:00:00Z",
            "1900-02-29T12:00:00Z",
            "2020-04-31T12:00:00Z",
            "2020-13-01T12:00:00Z",
            "2020-12-31T24:00:00Z",
            "2020-12-31T23:60:00Z",
            "2016-12-31T23:59:60Z",
            "2016-12-31 23:59:60",
            // the logger layout, with and without offsets and fractions
            "2020-03-09 10:14:33",
            "2020-03-09 10:14:33.5",
            "2020-03-09 10:14:33.123456789",
            "2020-03-09 10:14:33Z",
            "2020-03-09 10:14:33+02:00",
            "2020-03-09 10:14:33 ",
            " 2020-03-09 10:14:33",
            "2020-03-09  10:14:33",
            "2020-03-09 10:14:33.",
            "2020-03-09 10:14:33x",
            "2020-03-09 10:14",
            "2020-03-09",
            "2020-03-09 10:14:33.00000000000000000000000000000000000000000000",
            "2020-03-09 10:14:33.000000000000000000000000000000000000000000000",
            // not timestamps
            "",
            " ",
            "yesterday",
            "2020-03-09T10:14:33",
            "20200309T101433Z",
            "2020-03-09T10:14:33ZZ",
            "2020-03-09T10:14:33Z ",
            "2020-03-09T10:14:33.Z",
            "2020-03-09T1é:14:33Z",
            "2020-03-0é 10:14:33",
        ];
        for unit in [None, Some(TsUnit::S), Some(TsUnit::Ms)] {
            for s in inputs {
                let mut fast = TsRead {
                    unit,
                    as_seconds: 0,
                };
                let mut slow = TsRead {
                    unit,
                    as_seconds: 0,
                };
                assert_eq!(
                    fast.text(s),
                    slow.parse(&num_or_text(s)),
                    "{s:?} with {unit:?}"
                );
                assert_eq!(fast.as_seconds, slow.as_seconds, "{s:?} with {unit:?}");
            }
        }
        let mut t = TsRead {
            unit: None,
            as_seconds: 0,
        };
        for (s, ms) in [
            ("1583250000", 1_583_250_000_000),
            ("1583250000000", 1_583_250_000_000),
            ("2020-03-09 10:14:33.5", 1_583_748_873_500),
            ("2020-03-09T10:14:33.999+01:00", 1_583_745_273_999),
        ] {
            assert_eq!(t.fast_text(s), Some(ms), "{s:?} takes the fast path");
        }
        for s in ["1e3", "1583250000.5", "yesterday", "2020-03-09T10:14:33"] {
            assert_eq!(t.fast_text(s), None, "{s:?} takes the general path");
        }
    }

    #[test]
    fn a_row_becomes_a_reading_or_a_dead_letter_with_its_reason() {
        let h: Vec<String> = ["ts", "sensor", "metric", "value"].map(String::from).into();
        let mut c = SimClock::new(0);
        let mut t = TsRead {
            unit: None,
            as_seconds: 0,
        };
        match to_input(
            csv_row(&Columns::new(&h, None), "1700000000000,gh,temp,21.5"),
            &mut c,
            2,
            &mut t,
            &mut KeyCache::new(),
        ) {
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
            match to_input(
                csv_row(&Columns::new(&h, None), line),
                &mut c,
                3,
                &mut t,
                &mut KeyCache::new(),
            )
            .0
            {
                Input::DeadLetter(d) => assert_eq!(d.reason, reason, "{line}"),
                other => panic!("{line}: {other:?}"),
            }
        }
        match to_input(
            json_row(
                r#"{"sensor":"a","metric":"b","value":1,"ts":"2023-11-14T22:13:20Z"}"#,
                None,
            ),
            &mut c,
            4,
            &mut t,
            &mut KeyCache::new(),
        )
        .0
        {
            Input::Reading(r) => assert_eq!(r.ts, 1_700_000_000_000),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_quoted_row_and_a_plain_one_give_the_same_fields_in_any_column_order() {
        let h: Vec<String> = ["value", "anomaly", "ts", "metric", "sensor"]
            .map(String::from)
            .into();
        let cols = Columns::new(&h, Some("anomaly"));
        let plain = csv_row(&cols, " 21.5 ,1,1700000000000,temp,gh");
        let quoted = csv_row(&cols, "\"21.5\",\"1\",1700000000000,\"temp\",\"gh\"");
        for r in [&plain, &quoted] {
            assert_eq!(r.sensor.as_deref(), Some("gh"));
            assert_eq!(r.metric.as_deref(), Some("temp"));
            assert_eq!(r.value, Ok(21.5));
            assert_eq!(r.ts, Some(TsField::Text("1700000000000".into())));
            assert!(r.label);
        }
        let commas = csv_row(&cols, "1,0,5,\"a,b\",gh");
        assert_eq!(commas.metric.as_deref(), Some("a,b"));
        assert!(!commas.label);
        let short = csv_row(&cols, "1,0");
        assert_eq!((short.sensor, short.ts), (None, None));
    }

    #[test]
    fn the_key_cache_gives_the_right_key_beyond_its_size() {
        let mut c = KeyCache::new();
        // Round-robin over more keys than slots, then at random: every answer
        // is the key asked for, whether the guess, the slot or neither held it.
        for round in 0..3 {
            for i in 0..(KeyCache::SIZE + 7) {
                let (s, m) = (format!("s{}", i % 5), format!("m{i}"));
                assert_eq!(c.get(&s, &m), Key::new(s.as_str(), m.as_str()), "{round}");
            }
        }
        let mut x = 1u64;
        for _ in 0..20_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let (s, m) = (
                format!("s{}", (x >> 40) % 97),
                format!("m{}", (x >> 20) % 113),
            );
            assert_eq!(c.get(&s, &m), Key::new(s.as_str(), m.as_str()));
        }
        let lengths = [
            "",
            "a",
            "abc",
            "abcd",
            "abcdefg",
            "abcdefgh",
            "0123456789abcdef",
            "0123456789abcdefg",
        ];
        // The same lengths, one byte off at either end or in the middle.
        let near = [
            "abce",
            "bbcd",
            "abcdefh",
            "xbcdefgh",
            "0123456789abcdeg",
            "0123456X89abcdef",
        ];
        for a in lengths {
            for b in lengths.iter().chain(&near) {
                assert_eq!(same(a.as_bytes(), b.as_bytes()), a == *b, "{a:?} {b:?}");
            }
        }
        // A key asked for twice in a row is the same allocation: the engine's
        // lookups then compare pointers, not strings.
        let a = c.get("pump", "flow");
        let b = c.get("pump", "flow");
        assert!(Arc::ptr_eq(&a.sensor, &b.sensor) && Arc::ptr_eq(&a.metric, &b.metric));
    }

    #[test]
    fn a_score_record_is_the_json_it_always_was() {
        let s = Score {
            reading: Reading::new(Key::new("pump \"1\"", "p"), 2.5, 1_000, TsSource::Event)
                .unwrap(),
            score: 0.25,
            detector: Some("unusual".into()),
        };
        let mut buf = Vec::new();
        score_json(&mut buf, &s, 7);
        assert_eq!(buf.last(), Some(&b'\n'));
        let v: Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"detector": "unusual", "emitted_at": 7, "metric": "p",
                "score": 0.25, "sensor": "pump \"1\"", "ts": 1000, "type": "score",
                "value": 2.5})
        );
    }

    #[test]
    fn a_score_record_has_serde_jsons_bytes_for_awkward_strings_and_numbers() {
        let names = [
            "abcdefgh\"ijk",
            "0123456789abcdef\n",
            "01234567\\",
            "\u{1}bcdefgh",
            "long plain name with spaces ü and \u{7f}~",
            "ABCDEFGHIJKLMNOPQRSTUVWXYZ[]^_`{|}",
            "p",
            "",
            "é ü",
            "a\"b",
            "back\\slash",
            "tab\there",
            "nl\n",
            "\u{7f}",
            "\u{1f}",
        ];
        for name in names {
            for (score, ts, now) in [(0.0, 5, 5), (-0.0, 5, 6), (0.25, -3, 0), (1.0, i64::MAX, 1)] {
                for detector in [None, Some(Arc::<str>::from(name))] {
                    let s = Score {
                        reading: Reading::new(Key::new(name, name), 1e-7, ts, TsSource::Event)
                            .unwrap(),
                        score,
                        detector: detector.clone(),
                    };
                    let mut buf = Vec::new();
                    score_json(&mut buf, &s, now);
                    let expected = format!(
                        "{{\"detector\":{},\"emitted_at\":{},\"metric\":{},\"score\":{},\"sensor\":{},\"ts\":{},\"type\":\"score\",\"value\":{}}}\n",
                        serde_json::to_string(&detector.as_deref()).unwrap(),
                        serde_json::to_string(&now).unwrap(),
                        serde_json::to_string(name).unwrap(),
                        serde_json::to_string(&score).unwrap(),
                        serde_json::to_string(name).unwrap(),
                        serde_json::to_string(&ts).unwrap(),
                        serde_json::to_string(&1e-7).unwrap(),
                    );
                    assert_eq!(
                        String::from_utf8(buf).unwrap(),
                        expected,
                        "{name:?} {score} {ts}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_csv_score_row_is_what_the_generic_csv_writer_gives_for_its_json() {
        let names = [
            "p",
            "",
            "a,b",
            "say \"hi\"",
            "\"",
            "two\nlines",
            "é ü",
            ",\",\n",
        ];
        let numbers = [
            (0.0, 1e-7, 5, 5),
            (-0.0, 2.5, 5, 6),
            (0.25, -3.0e300, -3, 0),
            (1.0, 21.5, i64::MAX, 1),
            (0.5, f64::NAN, 1, i64::MIN),
            (f64::INFINITY, 0.1 + 0.2, 0, 0),
        ];
        for name in names {
            for (score, value, ts, now) in numbers {
                for detector in [None, Some(Arc::<str>::from(name))] {
                    let s = Score {
                        reading: Reading {
                            key: Key::new(name, name),
                            value,
                            ts,
                            ts_source: TsSource::Event,
                        },
                        score,
                        detector: detector.clone(),
                    };
                    let mut fast = Vec::new();
                    score_csv(&mut fast, &s, now);
                    let v = serde_json::json!({
                        "type": "score", "sensor": name, "metric": name, "ts": ts,
                        "value": value, "score": score, "detector": detector.as_deref(),
                        "emitted_at": now,
                    });
                    let mut generic = Vec::new();
                    csv_record(&mut generic, &v).unwrap();
                    assert_eq!(
                        String::from_utf8(fast).unwrap(),
                        String::from_utf8(generic).unwrap(),
                        "{name:?} {score} {value} {ts}"
                    );
                }
            }
        }
    }

    /// A config with one `auto` detector in `dir`.
    fn auto_config(dir: &Path) -> std::path::PathBuf {
        let cfg = dir.join("weir.toml");
        std::fs::write(
            &cfg,
            format!(
                "[agent]\ndevice = \"t\"\nstate_dir = \"{}\"\n[engine]\nidle_timeout = \"off\"\n\
                 [engine.window]\nsize = \"10s\"\n[uplink]\nhost = \"127.0.0.1\"\n\
                 [ingest]\nhost = \"127.0.0.1\"\n[[ingest.topic]]\nfilter = \"s/+/+\"\n\
                 sensor = \"{{2}}\"\nmetric = \"{{3}}\"\n[[detector]]\nname = \"u\"\nkind = \"auto\"\n",
                dir.display()
            ),
        )
        .unwrap();
        cfg
    }

    #[test]
    fn lines_are_what_read_until_gives_across_the_buffers_end() {
        let long = "x".repeat(40);
        let text = format!("a,b\r\n\n{long},1\nshort\n\r\nlast without newline");
        let mut want = Vec::new();
        let mut cursor = std::io::Cursor::new(text.as_bytes());
        loop {
            let mut l = Vec::new();
            if cursor.read_until(b'\n', &mut l).unwrap() == 0 {
                break;
            }
            want.push(l);
        }
        for cap in 1..=48 {
            let mut lines = Lines::new(std::io::BufReader::with_capacity(cap, text.as_bytes()));
            let mut got = Vec::new();
            while let Some(l) = lines.next().unwrap() {
                got.push(l.to_vec());
            }
            assert_eq!(got, want, "buffer of {cap} bytes");
        }
        let mut empty = Lines::new(&b""[..]);
        assert_eq!(empty.next().unwrap(), None);
    }

    #[test]
    fn a_row_that_is_not_utf8_is_a_dead_letter_and_the_rest_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = auto_config(dir.path());
        let input = dir.path().join("in.csv");
        let mut csv = b"sensor,metric,value,ts\n".to_vec();
        csv.extend_from_slice(b"a,b,1.5,1700000000000\n");
        csv.extend_from_slice(b"a,b\xff\xfe,2.5,1700000001000\n");
        csv.extend_from_slice(b"a,b,3.5,1700000002000\n");
        std::fs::write(&input, csv).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let opts = Options {
            config: &cfg,
            input: &input,
            format: Format::Jsonl,
            flush: false,
            no_scores: false,
            min_score: None,
            labels: None,
            label_column: None,
            ts_unit: None,
        };
        let code = backtest(&opts, &mut out, &mut err);
        assert_eq!(code, exit::OK, "{}", String::from_utf8_lossy(&err));
        let records: Vec<Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let dead: Vec<&Value> = records
            .iter()
            .filter(|v| v["type"] == "deadletter")
            .collect();
        assert_eq!(dead.len(), 1, "{records:?}");
        assert_eq!(dead[0]["reason"], "not_utf8");
        assert_eq!(dead[0]["source"], "backtest:3");
        assert_eq!(dead[0]["payload"], "a,b\u{fffd}\u{fffd},2.5,1700000001000");
        let values: Vec<f64> = records
            .iter()
            .filter(|v| v["type"] == "score")
            .map(|v| v["value"].as_f64().unwrap())
            .collect();
        assert_eq!(values, [1.5, 3.5]);
    }

    #[test]
    fn min_score_keeps_only_the_unusual_readings_score_records() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = auto_config(dir.path());
        let mut csv = String::from("sensor,metric,value,ts\n");
        for i in 0..400i64 {
            let v = if (300..310).contains(&i) {
                90.0
            } else {
                20.0 + (i % 7) as f64 * 0.1
            };
            csv.push_str(&format!("a,b,{v},{}\n", 1_700_000_000_000 + 1000 * i));
        }
        let input = dir.path().join("in.csv");
        std::fs::write(&input, csv).unwrap();
        let run = |min_score| {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let opts = Options {
                config: &cfg,
                input: &input,
                format: Format::Jsonl,
                flush: false,
                no_scores: false,
                min_score,
                labels: None,
                label_column: None,
                ts_unit: None,
            };
            assert_eq!(backtest(&opts, &mut out, &mut err), exit::OK);
            String::from_utf8(out)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .filter(|v| v["type"] == "score")
                .map(|v| v["score"].as_f64().unwrap())
                .collect::<Vec<_>>()
        };
        let all = run(None);
        assert_eq!(all.len(), 400);
        let high = run(Some(0.5));
        assert!(!high.is_empty() && high.len() < 60, "{high:?}");
        assert!(high.iter().all(|s| *s >= 0.5));
        assert_eq!(
            high,
            all.into_iter().filter(|s| *s >= 0.5).collect::<Vec<_>>()
        );
    }
}
