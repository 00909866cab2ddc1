//! Simulator-backed scenarios through the agent's sensor thread: the real
//! BME280 driver against the register-level simulator, scripted faults, and
//! what comes out of the thread (readings, sensor-failure alerts, health).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::Input;
use super::health::{Health, SensorBoard};
use super::poll::{Ctx, StopSignal};
use crate::config::Config;
use crate::detect::{AlertState, Detectors};
use crate::metrics::Counters;

fn config(extra: &str) -> Config {
    let text = format!(
        "[agent]\ndevice = \"d\"\n\n[[i2c]]\nname = \"air\"\nchip = \"bme280\"\ninterval = \"5ms\"\n\
         sim = true\nfail_after = 2\n{extra}"
    );
    Config::parse(&text, None).unwrap()
}

struct Running {
    rx: mpsc::Receiver<Input>,
    board: Arc<SensorBoard>,
    counters: Arc<Counters>,
    stop: Arc<StopSignal>,
    thread: std::thread::JoinHandle<()>,
}

fn start(cfg: &Config, capacity: usize) -> Running {
    let (tx, rx) = mpsc::channel(capacity);
    let board = Arc::new(SensorBoard::new(None));
    board.register("air", "i2c");
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(StopSignal::default());
    let ctx = Ctx {
        tx,
        counters: counters.clone(),
        board: board.clone(),
        stop: stop.clone(),
    };
    let mut buses = super::i2c::by_bus(&cfg.devices.i2c);
    let (bus, sensors) = buses.pop_first().unwrap();
    let thread = super::poll::spawn(&bus, sensors, ctx).unwrap();
    Running {
        rx,
        board,
        counters,
        stop,
        thread,
    }
}

impl Running {
    /// The next `n` inputs (the thread polls every 5 ms; generous bound, no timing asserted).
    fn take(&mut self, n: usize) -> Vec<Input> {
        (0..n)
            .map(|_| self.rx.blocking_recv().expect("the sensor thread stopped"))
            .collect()
    }

    fn finish(self) {
        self.stop.stop();
        drop(self.rx);
        self.thread.join().unwrap();
    }
}

#[test]
fn a_simulated_bme280_gives_three_metrics_per_poll_stamped_at_read_time() {
    let cfg = config("sim_base = { temperature = 24.5 }\nsim_noise = { temperature = 0.0 }\n");
    let mut run = start(&cfg, 64);
    let inputs = run.take(6);
    let keys: Vec<String> = inputs
        .iter()
        .map(|i| match i {
            Input::Reading(r) => r.key.to_string(),
            other => panic!("expected readings, got {other:?}"),
        })
        .collect();
    assert_eq!(
        keys,
        [
            "air/temperature",
            "air/humidity",
            "air/pressure",
            "air/temperature",
            "air/humidity",
            "air/pressure"
        ]
    );
    let Input::Reading(t) = &inputs[0] else {
        unreachable!()
    };
    assert!((t.value - 24.5).abs() < 0.01, "{}", t.value);
    assert!(t.ts > 1_600_000_000_000, "a wall-clock timestamp: {}", t.ts);
    assert_eq!(run.board.snapshot()["air"]["health"], "ok");
    run.finish();
}

#[test]
fn a_vanished_device_raises_the_sensor_failure_alert_and_clears_it_when_it_comes_back() {
    let cfg = config("[[i2c.sim_fault]]\nkind = \"absent\"\nat = 2\nlength = 3\n");
    let mut run = start(&cfg, 64);
    let mut seen = Vec::new();
    let mut readings_after = 0;
    while readings_after < 3 {
        match run.take(1).pop().unwrap() {
            Input::Alert(a) => seen.push(a),
            Input::Reading(_) if seen.len() == 2 => readings_after += 1,
            Input::Reading(_) => {}
            other => panic!("unexpected input {other:?}"),
        }
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].state, AlertState::Raised);
    assert_eq!(seen[0].kind, "sensor_failure");
    assert_eq!(seen[0].key.to_string(), "air/health");
    assert!(seen[0].reason.contains("absent"), "{}", seen[0].reason);
    assert_eq!(seen[1].state, AlertState::Cleared);
    assert_eq!(seen[1].id, seen[0].id);
    assert_eq!(run.board.snapshot()["air"]["health"], "ok");
    assert!(
        run.counters.snapshot()["sensor_errors"]["absent"]
            .as_u64()
            .unwrap()
            >= 2
    );
    run.finish();
}

#[test]
fn bus_errors_are_retried_within_the_poll_and_never_fail_the_sensor() {
    let cfg = config("retries = 2\n[[i2c.sim_fault]]\nkind = \"bus_error\"\nat = 1\nlength = 1\n");
    let mut run = start(&cfg, 64);
    let inputs = run.take(9);
    assert!(
        inputs.iter().all(|i| matches!(i, Input::Reading(_))),
        "{inputs:?}"
    );
    // A fault spans a whole poll (tick), so the retries of poll 1 fail too and the
    // sensor is degraded, not failed; poll 2 succeeds.
    assert!(
        run.counters.snapshot()["sensor_retries"]["glitch"]
            .as_u64()
            .unwrap()
            >= 2
    );
    assert_ne!(
        run.board.snapshot()["air"]["health"],
        Health::Failed.as_str()
    );
    run.finish();
}

#[test]
fn a_stuck_simulated_sensor_raises_the_flatline_alert_through_the_real_driver() {
    let cfg = config(
        "[[i2c.sim_fault]]\nkind = \"stuck\"\nmetric = \"temperature\"\nat = 3\nlength = 8\n\n\
         [[detector]]\nname = \"stuck\"\nkind = \"flatline\"\nstuck_for = \"0s\"\nmin_readings = 5\n",
    );
    let mut detectors = Detectors::new(cfg.detectors.clone(), 100);
    let mut run = start(&cfg, 64);
    let mut alerts = Vec::new();
    for input in run.take(3 * 14) {
        if let Input::Reading(r) = input {
            detectors.on_reading(&r, &mut alerts);
        }
    }
    let states: Vec<_> = alerts
        .iter()
        .map(|a| (a.key.to_string(), a.state))
        .collect();
    assert_eq!(
        states,
        [
            ("air/temperature".to_string(), AlertState::Raised),
            ("air/temperature".to_string(), AlertState::Cleared)
        ]
    );
    assert_eq!(alerts[0].kind, "flatline");
    run.finish();
}

#[test]
fn with_drop_newest_a_full_channel_drops_and_counts_instead_of_blocking() {
    let cfg = config("when_full = \"drop_newest\"\n");
    let run = start(&cfg, 1);
    let counters = run.counters.clone();
    // Nobody reads: the first reading fills the channel, the rest are dropped.
    while counters.reason("dropped", "sensor_channel_full") < 6 {
        std::thread::sleep(Duration::from_millis(5));
    }
    run.finish();
}
