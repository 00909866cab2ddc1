//! `weir sensors list|scan|read`: the field technician's wiring checks.
//!
//! - `list`: the configured sensors and the health the running daemon last
//!   recorded (`<state_dir>/sensors.json`); simulated sensors, MQTT topics and the
//!   sensors seen on them come from `sensors_live`.
//! - `scan`: probes an I2C bus like `i2cdetect` and names known chips by their
//!   id registers; without `--bus`, every bus in the config (a `sim = true`
//!   sensor's bus is its simulator).
//! - `read NAME`: one reading through the same code the daemon runs; for a
//!   GPIO input, the level now and then each debounced edge, up to `--count`; a
//!   simulated or MQTT sensor, the next live readings from the running daemon.
//!
//! Exit codes: 0 ok, 1 the sensor or bus failed, 78 bad config, 2 usage.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weir_sensors::chipsim::SimBus;
use weir_sensors::linux::LinuxI2c;
use weir_sensors::scan;

use super::exit;
use crate::config::{Config, WhenFull};
use crate::metrics::Counters;
use crate::source::Input;
use crate::source::devices::health_file;
use crate::source::health::SensorBoard;
use crate::source::poll::{Ctx, Polled, StopSignal};

/// Output format.
#[derive(Clone, Copy, Debug)]
pub struct Opts {
    /// `--json`.
    pub json: bool,
}

fn load(config: &Path, err: &mut impl Write) -> Result<Config, u8> {
    Config::load(config).map_err(|e| {
        let _ = writeln!(err, "error: {e}");
        exit::CONFIG
    })
}

/// `weir sensors list`.
pub fn list(config: &Path, o: Opts, out: &mut impl Write, err: &mut impl Write) -> u8 {
    let cfg = match load(config, err) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let file = health_file(&cfg.state_dir);
    let health: Value = std::fs::read_to_string(&file)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    let d = &cfg.devices;
    let mut rows: Vec<(String, String, String, String)> = Vec::new();
    let others = super::sensors_live::rows(&cfg);
    for s in &d.i2c {
        let at = format!(
            "{} {} {:#04x}{}",
            s.chip.name(),
            s.bus,
            s.address,
            if s.sim.is_some() { " (sim)" } else { "" }
        );
        rows.push((s.name.clone(), "i2c".into(), at, s.chip.metrics().join(",")));
    }
    for g in &d.gpio {
        rows.push((
            g.name.clone(),
            "gpio".into(),
            format!("{} line {}", g.chip, g.line),
            g.metric.clone(),
        ));
    }
    for w in &d.onewire {
        rows.push((
            w.name.clone(),
            "onewire".into(),
            w.id.clone(),
            w.metric.clone(),
        ));
    }
    let state = |name: &str| {
        let h = &health[name];
        (
            h["health"].as_str().unwrap_or("unknown").to_string(),
            h["last_error"].as_str().unwrap_or("").to_string(),
        )
    };
    if o.json {
        let mut v: Vec<Value> = rows
            .iter()
            .map(|(n, s, at, m)| {
                json!({"name": n, "source": s, "at": at, "metrics": m, "status": health.get(n.as_str()).cloned().unwrap_or(Value::Null)})
            })
            .collect();
        v.extend(others.iter().map(|[n, s, at, m, h, _]| {
            json!({"name": n, "source": s, "at": at, "metrics": m, "status": if h == "live" { json!({"health": "live"}) } else { Value::Null }})
        }));
        let _ = writeln!(out, "{}", Value::Array(v));
        return exit::OK;
    }
    let _ = writeln!(
        out,
        "{:<20} {:<8} {:<34} {:<32} {:<9} LAST ERROR",
        "NAME", "SOURCE", "WHERE", "METRICS", "HEALTH"
    );
    for (n, s, at, m) in &rows {
        let (h, e) = state(n);
        let _ = writeln!(out, "{n:<20} {s:<8} {at:<34} {m:<32} {h:<9} {e}");
    }
    for [n, s, at, m, h, e] in &others {
        let line = format!("{n:<20} {s:<8} {at:<34} {m:<32} {h:<9} {e}");
        let _ = writeln!(out, "{}", line.trim_end());
    }
    if health.is_null() && !rows.is_empty() {
        let _ = writeln!(
            out,
            "(no health recorded in {}: is `weir run` running?)",
            file.display()
        );
    }
    exit::OK
}

/// A bus to scan: its simulator when simulated, and the sensors configured on it by address.
type Target = (Option<SimBus>, BTreeMap<u8, String>);

/// `weir sensors scan`.
pub fn scan_cmd(
    config: &Path,
    bus: Option<&Path>,
    o: Opts,
    out: &mut impl Write,
    err: &mut impl Write,
) -> u8 {
    // (bus label, (the simulator when simulated, configured sensors by address))
    let mut targets: Vec<(String, Option<SimBus>, BTreeMap<u8, String>)> = Vec::new();
    if let Some(b) = bus {
        targets.push((b.display().to_string(), None, BTreeMap::new()));
    } else {
        let cfg = match load(config, err) {
            Ok(c) => c,
            Err(code) => return code,
        };
        let mut by_bus: BTreeMap<(String, bool), Target> = BTreeMap::new();
        for s in &cfg.devices.i2c {
            let label = if s.sim.is_some() {
                format!("{} (sim)", s.bus)
            } else {
                s.bus.clone()
            };
            let entry = by_bus
                .entry((label, s.sim.is_some()))
                .or_insert_with(|| (s.sim.as_ref().map(|_| SimBus::new()), BTreeMap::new()));
            if let (Some(sim_bus), Some(sim)) = (&entry.0, &s.sim) {
                crate::source::i2c::attach_sim(sim_bus, s, sim);
            }
            entry.1.insert(s.address, s.name.clone());
        }
        if by_bus.is_empty() {
            let _ = writeln!(
                err,
                "error: no [[i2c]] sensor in {}; give a bus: weir sensors scan --bus /dev/i2c-1",
                config.display()
            );
            return exit::USAGE;
        }
        targets.extend(by_bus.into_iter().map(|((l, _), (b, c))| (l, b, c)));
    }
    let mut code = exit::OK;
    let mut report = Vec::new();
    for (label, sim, configured) in targets {
        let mut found = Vec::new();
        let mut record = |a: u8, c: Option<scan::Chip>| found.push((a, c));
        match sim {
            Some(mut b) => scan::scan(&mut b, &mut record),
            None => match LinuxI2c::open(Path::new(&label)) {
                Ok(mut b) => scan::scan(&mut b, &mut record),
                Err(e) => {
                    let _ = writeln!(err, "error: {e}");
                    code = exit::FAILURE;
                    continue;
                }
            },
        }
        if !o.json {
            let _ = writeln!(out, "{label}: {} device(s)", found.len());
            for (a, c) in &found {
                let chip = c.map_or("unknown", scan::Chip::name);
                let cfg = configured
                    .get(a)
                    .map_or(String::new(), |n| format!("  configured as {n}"));
                let _ = writeln!(out, "  {a:#04x}  {chip}{cfg}");
            }
            for (a, n) in &configured {
                if !found.iter().any(|(f, _)| f == a) {
                    let _ = writeln!(
                        out,
                        "  {a:#04x}  MISSING: {n} is configured here but nothing answers"
                    );
                }
            }
        }
        let devices: Vec<Value> = found
            .iter()
            .map(|(a, c)| json!({"address": format!("{a:#04x}"), "chip": c.map(scan::Chip::name), "configured": configured.get(a)}))
            .collect();
        report.push(json!({"bus": label, "devices": devices}));
    }
    if o.json {
        let _ = writeln!(out, "{}", Value::Array(report));
    }
    code
}

/// `weir sensors read NAME`.
pub fn read(
    config: &Path,
    name: &str,
    count: usize,
    timeout: Duration,
    o: Opts,
    out: &mut impl Write,
    err: &mut impl Write,
) -> u8 {
    let cfg = match load(config, err) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let d = &cfg.devices;
    let polled: Option<(Box<dyn Polled>, u32)> = d
        .i2c
        .iter()
        .find(|s| s.name == name)
        .map(|s| (crate::source::i2c::sensor(s), s.poll.retries))
        .or_else(|| {
            d.onewire.iter().find(|p| p.name == name).map(|p| {
                let b: Box<dyn Polled> = Box::new(crate::source::onewire::Probe::new(p.clone()));
                (b, p.poll.retries)
            })
        });
    if let Some((mut sensor, retries)) = polled {
        let mut result = sensor.read();
        for _ in 0..retries {
            match &result {
                Err(e) if e.fault == weir_sensors::Fault::Glitch => {
                    std::thread::sleep(Duration::from_millis(50));
                    result = sensor.read();
                }
                _ => break,
            }
        }
        return match result {
            Ok(values) => {
                let pairs: Vec<(&String, &f64)> = sensor.metrics().iter().zip(&values).collect();
                if o.json {
                    let m: serde_json::Map<String, Value> = pairs
                        .iter()
                        .map(|(k, v)| ((*k).clone(), json!(v)))
                        .collect();
                    let _ = writeln!(out, "{}", json!({"sensor": name, "values": m}));
                } else {
                    for (m, v) in pairs {
                        let _ = writeln!(out, "{name}/{m} = {v}");
                    }
                }
                exit::OK
            }
            Err(e) => {
                let _ = writeln!(err, "error: {name}: {} ({})", e.detail, e.fault.as_str());
                exit::FAILURE
            }
        };
    }
    if let Some(g) = d.gpio.iter().find(|g| g.name == name) {
        return read_gpio(g.clone(), count, timeout, o, out, err);
    }
    if let Some(code) = super::sensors_live::read(&cfg, name, count, timeout, o, out, err) {
        return code;
    }
    let mut names: Vec<&str> = cfg.sims.iter().map(|s| s.name.as_str()).collect();
    names.extend(d.names());
    let _ = writeln!(
        err,
        "error: no sensor named {name:?} in {} (configured: {})",
        config.display(),
        names.join(", ")
    );
    exit::USAGE
}

/// Runs the daemon's own GPIO thread and prints what it produces.
fn read_gpio(
    g: crate::config::GpioInput,
    count: usize,
    timeout: Duration,
    o: Opts,
    out: &mut impl Write,
    err: &mut impl Write,
) -> u8 {
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let stop = Arc::new(StopSignal::default());
    let board = Arc::new(SensorBoard::new(None));
    board.register(&g.name, "gpio");
    let ctx = Ctx {
        tx,
        counters: Arc::new(Counters::default()),
        board,
        stop: stop.clone(),
    };
    let mut g = g;
    g.when_full = WhenFull::Block;
    let thread = match crate::source::gpio::spawn(g, ctx) {
        Ok(t) => t,
        Err(e) => {
            let _ = writeln!(err, "error: cannot start the GPIO thread: {e}");
            return exit::FAILURE;
        }
    };
    let end = Instant::now() + timeout;
    let mut got = 0;
    let mut code = exit::OK;
    while got < count {
        let Some(left) = end.checked_duration_since(Instant::now()) else {
            let _ = writeln!(err, "error: timed out after {got} of {count} reading(s)");
            code = exit::FAILURE;
            break;
        };
        match recv_timeout(&mut rx, left) {
            Some(Input::Reading(r)) => {
                got += 1;
                if o.json {
                    let _ = writeln!(
                        out,
                        "{}",
                        json!({"sensor": &*r.key.sensor, "metric": &*r.key.metric, "value": r.value, "ts": r.ts})
                    );
                } else {
                    let _ = writeln!(out, "{} = {} at {}", r.key, r.value, r.ts);
                }
                let _ = out.flush();
            }
            Some(Input::Alert(a)) => {
                let _ = writeln!(err, "error: {}", a.reason);
                code = exit::FAILURE;
                break;
            }
            Some(Input::DeadLetter(_) | Input::Delivery(_) | Input::Release(_)) | None => {}
        }
    }
    stop.stop();
    drop(rx);
    let _ = thread.join();
    code
}

fn recv_timeout(rx: &mut tokio::sync::mpsc::Receiver<Input>, d: Duration) -> Option<Input> {
    let end = Instant::now() + d;
    loop {
        match rx.try_recv() {
            Ok(i) => return Some(i),
            Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => return None,
            Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {}
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
