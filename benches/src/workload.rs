//! The load generator's stream and what Weir must make of it, with no I/O.
//!
//! [`Workload`] yields readings round-robin over K keys, stamped from a wall-clock
//! time the caller passes in, with a configurable disorder: late readings (within
//! `allowed_lateness`), very late ones (beyond it), exact duplicates, devices whose
//! clock is off by a constant, and injected anomalies (a value above the threshold
//! detector's limit). It is deterministic for a seed and a sequence of times.
//!
//! [`Expect`] replays Weir's per-key event-time rules on the same readings, in
//! publish order (one MQTT connection, one subscription: the broker keeps the
//! order): which keys fit under `max_keys`, which readings are windowed and which
//! late, how many readings each window must count, and which threshold alerts
//! must be raised. Invariants: `windowed + late + rejected` = readings observed;
//! a window's count is the number of windowed readings with a timestamp in it.
//! Idle keys are not modelled: the generator keeps `idle_timeout` above a key's
//! interval, so idleness only closes the last windows at the end of a run.

use std::collections::HashMap;

/// The kind of disorder a reading was made with (what it tests, not what Weir
/// will do with it: [`Expect`] decides that).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// In order, a normal value.
    Normal,
    /// Stamped behind its key's watermark but within `allowed_lateness`.
    Late,
    /// Stamped far behind, beyond `allowed_lateness`: Weir publishes it on `late`.
    VeryLate,
    /// An exact copy of the key's previous normal reading.
    Duplicate,
    /// In order, above the threshold: must raise an alert.
    Anomaly,
}

/// One reading of key `key` (sensor `d<key>`, metric `v`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GenReading {
    /// Key index in `0..keys`.
    pub key: u32,
    /// Event time, ms since the epoch (the device's clock, skew included).
    pub ts: i64,
    /// The value.
    pub value: f64,
    /// How it was made.
    pub kind: Kind,
}

impl GenReading {
    /// The MQTT topic it is published on under `prefix` (e.g. `load`).
    pub fn topic(&self, prefix: &str) -> String {
        format!("{prefix}/{}/v", sensor_name(self.key))
    }

    /// The JSON payload Weir's ingest reads (`value`, `ts` in ms).
    pub fn payload(&self) -> String {
        format!("{{\"value\":{:.3},\"ts\":{}}}", self.value, self.ts)
    }
}

/// The sensor name of key `key`.
pub fn sensor_name(key: u32) -> String {
    format!("d{key:06}")
}

/// The key index of a sensor name made by [`sensor_name`].
pub fn key_of(sensor: &str) -> Option<u32> {
    sensor.strip_prefix('d')?.parse().ok()
}

/// What to generate, and the Weir settings the expectations depend on.
#[derive(Clone, Debug)]
pub struct Params {
    /// Number of distinct keys.
    pub keys: u32,
    /// Seed of the pseudo-random choices.
    pub seed: u64,
    /// Share of readings stamped late but within `allowed_lateness`.
    pub late: f64,
    /// Share stamped beyond `allowed_lateness`.
    pub very_late: f64,
    /// Share sent twice.
    pub duplicates: f64,
    /// Share of keys (devices) whose clock is off by up to minus 5 minutes or
    /// plus 1 minute (inside the default `max_future_skew` of 5 minutes).
    pub skewed_keys: f64,
    /// Share of readings that are anomalies (at most one raised episode per key at once).
    pub anomalies: f64,
    /// Weir's `max_keys`.
    pub max_keys: u32,
    /// Tumbling window size, ms.
    pub window_ms: i64,
    /// `max_out_of_orderness`, ms.
    pub ooo_ms: i64,
    /// `allowed_lateness`, ms.
    pub lateness_ms: i64,
}

/// Threshold detector's `high` in the generated config; normal values stay near 20.
pub const HIGH: f64 = 100.0;
/// Its hysteresis (with `clear_after = "0s"` the first normal reading clears).
pub const HYSTERESIS: f64 = 1.0;

/// The stream of readings.
pub struct Workload {
    p: Params,
    rng: fastrand::Rng,
    next_key: u32,
    skew: Vec<i64>,
    /// Per key: the last normal reading, and whether the last reading was an anomaly.
    last: Vec<(Option<GenReading>, bool)>,
}

impl Workload {
    /// A workload for `p`.
    pub fn new(p: Params) -> Self {
        let mut rng = fastrand::Rng::with_seed(p.seed);
        let skew = (0..p.keys)
            .map(|_| {
                if rng.f64() < p.skewed_keys {
                    rng.i64(-300_000..=60_000)
                } else {
                    0
                }
            })
            .collect();
        let last = vec![(None, false); p.keys as usize];
        Self {
            p,
            rng,
            next_key: 0,
            skew,
            last,
        }
    }

    /// The clock offset of key `key`'s device, ms.
    pub fn skew(&self, key: u32) -> i64 {
        self.skew[key as usize]
    }

    /// The next reading, round-robin over the keys, made at wall-clock `now_ms`.
    pub fn next(&mut self, now_ms: i64) -> GenReading {
        let key = self.next_key;
        self.next_key = (self.next_key + 1) % self.p.keys;
        let kind = self.pick(key);
        self.make(key, kind, now_ms)
    }

    /// A reading of `key` of the given kind (the end-of-run marker is a normal
    /// reading then an anomaly of key 0).
    pub fn make(&mut self, key: u32, kind: Kind, now_ms: i64) -> GenReading {
        let p = &self.p;
        let now = now_ms + self.skew[key as usize];
        let normal = 20.0 + self.rng.f64() * 2.0 - 1.0;
        let (ts, value) = match kind {
            Kind::Normal => (now, normal),
            Kind::Anomaly => (now, HIGH * 10.0),
            // Behind the watermark (now - D) by 10% to 50% of L: late, never too late.
            Kind::Late => {
                let l = p.lateness_ms.max(10);
                (now - p.ooo_ms - self.rng.i64(l / 10..l / 2), normal)
            }
            Kind::VeryLate => (
                now - p.ooo_ms - p.lateness_ms - 2 * p.window_ms - 5_000,
                normal,
            ),
            Kind::Duplicate => match self.last[key as usize].0 {
                Some(r) => (r.ts, r.value),
                None => (now, normal),
            },
        };
        let r = GenReading {
            key,
            ts,
            value,
            kind,
        };
        let slot = &mut self.last[key as usize];
        if kind == Kind::Normal {
            slot.0 = Some(r);
        }
        slot.1 = kind == Kind::Anomaly;
        r
    }

    fn pick(&mut self, key: u32) -> Kind {
        let (last_normal, last_anomaly) = self.last[key as usize];
        // The first reading of a key sets its watermark: always in order.
        if last_normal.is_none() {
            return Kind::Normal;
        }
        let p = &self.p;
        let mut x = self.rng.f64();
        for (share, kind) in [
            (p.late, Kind::Late),
            (p.very_late, Kind::VeryLate),
            (p.duplicates, Kind::Duplicate),
        ] {
            if x < share {
                return kind;
            }
            x -= share;
        }
        if x < p.anomalies && !last_anomaly {
            return Kind::Anomaly;
        }
        Kind::Normal
    }
}

/// Per key, what Weir's engine and threshold detector hold.
#[derive(Clone, Copy, Debug, Default)]
struct KeyState {
    max_ts: Option<i64>,
    raised: bool,
}

/// What Weir must produce for the readings observed so far.
#[derive(Debug, Default)]
pub struct Expect {
    window_ms: i64,
    ooo_ms: i64,
    lateness_ms: i64,
    max_keys: usize,
    keys: HashMap<u32, KeyState>,
    /// Readings each window must count, by (key, window start).
    pub windows: HashMap<(u32, i64), u32>,
    /// Readings added to a window.
    pub windowed: u64,
    /// Readings beyond `allowed_lateness` (published on `late`).
    pub late: u64,
    /// Readings of keys beyond `max_keys`.
    pub rejected: u64,
    /// Threshold alerts that must be raised: (key, raised_ts).
    pub alerts: Vec<(u32, i64)>,
}

impl Expect {
    /// Expectations under the settings of `p`.
    pub fn new(p: &Params) -> Self {
        Self {
            window_ms: p.window_ms,
            ooo_ms: p.ooo_ms,
            lateness_ms: p.lateness_ms,
            max_keys: p.max_keys as usize,
            ..Self::default()
        }
    }

    /// Start of the tumbling window holding `ts`.
    pub fn window_start(&self, ts: i64) -> i64 {
        ts.div_euclid(self.window_ms) * self.window_ms
    }

    /// Accounts for one reading, in publish order. Returns the starts of the
    /// windows of this key whose end its watermark passes with this reading: the
    /// reading that lets them fire on time.
    pub fn observe(&mut self, r: &GenReading) -> Vec<i64> {
        if !self.keys.contains_key(&r.key) && self.keys.len() >= self.max_keys {
            self.rejected += 1;
            return Vec::new();
        }
        let mut closes = Vec::new();
        let start = self.window_start(r.ts);
        let (ooo, l, size) = (self.ooo_ms, self.lateness_ms, self.window_ms);
        let k = self.keys.entry(r.key).or_default();
        let too_late = k.max_ts.is_some_and(|m| m - ooo >= start + size + l);
        if too_late {
            self.late += 1;
        } else {
            self.windowed += 1;
            *self.windows.entry((r.key, start)).or_insert(0) += 1;
            if let Some(old) = k.max_ts.filter(|&m| r.ts > m) {
                // Window ends in (old - ooo, ts - ooo], each a multiple of the size.
                let mut end = (old - ooo).div_euclid(size) * size + size;
                while end <= r.ts - ooo {
                    closes.push(end - size);
                    end += size;
                }
            }
            k.max_ts = Some(k.max_ts.map_or(r.ts, |m| m.max(r.ts)));
        }
        // The threshold judges every reading the engine did not refuse, late ones too.
        if r.value > HIGH {
            if !k.raised {
                k.raised = true;
                self.alerts.push((r.key, r.ts));
            }
        } else if r.value <= HIGH - HYSTERESIS {
            k.raised = false;
        }
        closes
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn params() -> Params {
        Params {
            keys: 10,
            seed: 7,
            late: 0.1,
            very_late: 0.05,
            duplicates: 0.05,
            skewed_keys: 0.3,
            anomalies: 0.05,
            max_keys: 8,
            window_ms: 1_000,
            ooo_ms: 500,
            lateness_ms: 2_000,
        }
    }

    fn run(n: u64) -> (Vec<GenReading>, Expect) {
        let p = params();
        let mut w = Workload::new(p.clone());
        let mut e = Expect::new(&p);
        let rs: Vec<_> = (0..n)
            .map(|i| w.next(1_763_719_200_000 + i as i64))
            .collect();
        rs.iter().for_each(|r| {
            e.observe(r);
        });
        (rs, e)
    }

    #[test]
    fn the_same_seed_and_times_give_the_same_stream() {
        assert_eq!(run(500).0, run(500).0);
    }

    #[test]
    fn every_reading_is_windowed_late_or_rejected_and_windows_count_the_windowed() {
        let (rs, e) = run(5_000);
        assert_eq!(e.windowed + e.late + e.rejected, rs.len() as u64);
        assert_eq!(
            e.windows.values().map(|&c| u64::from(c)).sum::<u64>(),
            e.windowed
        );
        assert_eq!(e.rejected, rs.iter().filter(|r| r.key >= 8).count() as u64);
    }

    #[test]
    fn very_late_readings_of_accepted_keys_are_late_and_late_ones_are_windowed() {
        let p = params();
        let mut w = Workload::new(p.clone());
        let mut e = Expect::new(&p);
        let t = 1_763_719_200_000;
        for (i, kind) in [Kind::Normal, Kind::Late, Kind::VeryLate, Kind::Duplicate]
            .into_iter()
            .enumerate()
        {
            e.observe(&w.make(0, kind, t + 100 * i as i64));
        }
        assert_eq!((e.windowed, e.late), (3, 1));
    }

    #[test]
    fn an_anomaly_raises_once_per_episode_and_a_normal_reading_ends_it() {
        let p = params();
        let mut w = Workload::new(p.clone());
        let mut e = Expect::new(&p);
        let t = 1_763_719_200_000;
        for (i, kind) in [
            Kind::Normal,
            Kind::Anomaly,
            Kind::Anomaly,
            Kind::Normal,
            Kind::Anomaly,
        ]
        .into_iter()
        .enumerate()
        {
            e.observe(&w.make(1, kind, t + i as i64));
        }
        let skew = w.skew(1);
        assert_eq!(e.alerts, vec![(1, t + 1 + skew), (1, t + 4 + skew)]);
    }

    #[test]
    fn disorder_shares_are_roughly_honoured_and_anomalies_never_follow_one() {
        let (rs, _) = run(20_000);
        let share = |k| rs.iter().filter(|r| r.kind == k).count() as f64 / rs.len() as f64;
        assert!((share(Kind::Late) - 0.1).abs() < 0.02);
        assert!((share(Kind::VeryLate) - 0.05).abs() < 0.01);
        for pair in rs.windows(11) {
            // Round-robin over 10 keys: the key's previous reading is 10 back.
            assert!(!(pair[0].kind == Kind::Anomaly && pair[10].kind == Kind::Anomaly));
        }
    }

    #[test]
    fn sensor_names_round_trip() {
        assert_eq!(key_of(&sensor_name(4_321)), Some(4_321));
        assert_eq!(key_of("x12"), None);
    }

    #[test]
    fn the_reading_that_moves_the_watermark_past_a_window_end_closes_it() {
        let mut p = params();
        (p.max_keys, p.window_ms, p.ooo_ms) = (10, 1_000, 500);
        let mut e = Expect::new(&p);
        let r = |ts| GenReading {
            key: 3,
            ts,
            value: 20.0,
            kind: Kind::Normal,
        };
        assert!(
            e.observe(&r(10_100)).is_empty(),
            "the first reading closes nothing"
        );
        assert_eq!(
            e.observe(&r(11_400)),
            vec![9_000],
            "watermark 10.9 s passes 10 s, not 11 s (a window without readings never fires)"
        );
        assert_eq!(e.observe(&r(11_500)), vec![10_000]);
        assert!(
            e.observe(&r(11_200)).is_empty(),
            "an older reading moves nothing"
        );
        assert_eq!(e.observe(&r(13_600)), vec![11_000, 12_000]);
    }
}
