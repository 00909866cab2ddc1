//! The sensor thread of one bus: polls each of its sensors on its own
//! interval, timestamps the values at read time, retries glitches at once with
//! capped backoff, backs off from a failed sensor, tracks health, and hands
//! readings and sensor-failure alerts to the engine's channel.
//!
//! One OS thread per bus, never the async runtime: I2C ioctls and 1-Wire reads
//! block (a DS18B20 conversion takes 750 ms). Sensors on one bus are polled
//! one after the other, which is also what the bus allows.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::Input;
use super::health::{HealthTracker, ReadError, SensorBoard};
use crate::clock::Stamp;
use crate::config::{PollPolicy, WhenFull};
use crate::metrics::Counters;
use crate::reading::{Key, Reading, TsSource};
use crate::uplink::backoff::Backoff;
use crate::wire::DeadLetter;
use weir_sensors::Fault;

/// First and largest pause between immediate retries of a glitched poll.
const RETRY_MIN: Duration = Duration::from_millis(20);
const RETRY_MAX: Duration = Duration::from_millis(500);

/// A sensor that is read by polling.
pub trait Polled: Send {
    /// One attempt: a value per metric, in [`Polled::metrics`] order.
    fn read(&mut self) -> Result<Vec<f64>, ReadError>;
    /// The metric names, fixed.
    fn metrics(&self) -> &[String];
    /// The poll is over, retries included (a simulated chip advances one tick).
    fn end_poll(&mut self) {}
}

/// A sensor with its policy, as the thread runs it.
pub struct PolledSensor {
    /// Sensor name.
    pub name: String,
    /// The reader.
    pub sensor: Box<dyn Polled>,
    /// Interval, retries, health thresholds.
    pub policy: PollPolicy,
}

/// Tells sensor threads to stop, and wakes them from their waits.
#[derive(Debug, Default)]
pub struct StopSignal {
    stopped: Mutex<bool>,
    wake: Condvar,
    flag: AtomicBool,
}

impl StopSignal {
    /// Stops every thread waiting on this signal.
    pub fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.flag.store(true, Ordering::Relaxed);
        self.wake.notify_all();
    }

    /// Whether [`StopSignal::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    /// Sleeps until `deadline`; `true` if stopped meanwhile.
    pub fn wait_until(&self, deadline: Instant) -> bool {
        let mut stopped = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if *stopped {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            stopped = match self.wake.wait_timeout(stopped, deadline - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

/// What every sensor thread shares.
#[derive(Clone)]
pub struct Ctx {
    /// The engine's channel.
    pub tx: mpsc::Sender<Input>,
    /// Counters.
    pub counters: Arc<Counters>,
    /// Health for the status message and `weir sensors list`.
    pub board: Arc<SensorBoard>,
    /// Shutdown.
    pub stop: Arc<StopSignal>,
}

impl Ctx {
    /// Sends per the policy; `false` when the engine is gone.
    pub fn send(&self, input: Input, when_full: WhenFull) -> bool {
        match when_full {
            // The engine drains its channel until every sender is gone, so a
            // blocked send always finishes, also during shutdown.
            WhenFull::Block => self.tx.blocking_send(input).is_ok(),
            WhenFull::DropNewest => match self.tx.try_send(input) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    self.counters.bump("dropped", "sensor_channel_full", 1);
                    true
                }
                Err(TrySendError::Closed(_)) => false,
            },
        }
    }

    /// Sends values read at `stamp` as readings (a non-finite one is dead-lettered).
    pub fn send_values(
        &self,
        sensor: &str,
        metrics: &[String],
        values: &[f64],
        stamp: Stamp,
        wf: WhenFull,
    ) -> bool {
        let ts = stamp.ms;
        for (m, &v) in metrics.iter().zip(values) {
            let key = Key::new(sensor, m.as_str());
            let input = match Reading::new(key.clone(), v, ts, stamp.source(TsSource::Event)) {
                Ok(r) => Input::Reading(r),
                Err(e) => Input::DeadLetter(DeadLetter {
                    source: key.to_string(),
                    reason: "non_finite",
                    detail: e.to_string(),
                    payload: v.to_string(),
                    received_at: ts,
                }),
            };
            if !self.send(input, wf) {
                return false;
            }
        }
        true
    }
}

struct Slot {
    s: PolledSensor,
    health: HealthTracker,
    due: Instant,
    backoff: Backoff,
}

/// Starts the thread of one bus.
pub fn spawn(
    bus: &str,
    sensors: Vec<PolledSensor>,
    ctx: Ctx,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let name = format!("weir-{}", bus.rsplit('/').next().unwrap_or(bus));
    std::thread::Builder::new()
        .name(name)
        .spawn(move || run(sensors, &ctx))
}

/// Polls until stopped or the engine is gone.
pub fn run(sensors: Vec<PolledSensor>, ctx: &Ctx) {
    let now = Instant::now();
    let mut slots: Vec<Slot> = sensors
        .into_iter()
        .map(|s| Slot {
            health: HealthTracker::new(&s.name, s.policy.fail_after),
            backoff: Backoff::new(s.policy.interval, s.policy.max_backoff),
            due: now,
            s,
        })
        .collect();
    loop {
        let Some(slot) = slots.iter_mut().min_by_key(|s| s.due) else {
            return;
        };
        if ctx.stop.wait_until(slot.due) {
            return;
        }
        if !poll_once(slot, ctx) {
            return;
        }
    }
}

/// One poll of one sensor; `false` when the engine is gone or we are stopping.
fn poll_once(slot: &mut Slot, ctx: &Ctx) -> bool {
    let policy = &slot.s.policy;
    let mut retry = Backoff::new(RETRY_MIN, RETRY_MAX);
    let mut attempt = 0;
    let result = loop {
        match slot.s.sensor.read() {
            Err(e) if e.fault == Fault::Glitch && attempt < policy.retries => {
                attempt += 1;
                ctx.counters.bump("sensor_retries", e.fault.as_str(), 1);
                if ctx
                    .stop
                    .wait_until(Instant::now() + retry.next_delay(fastrand::f64()))
                {
                    return false;
                }
            }
            other => break other,
        }
    };
    // Event time is when the chip was read, not when the engine gets to it.
    let stamp = crate::clock::stamp();
    let ts = stamp.ms;
    slot.s.sensor.end_poll();
    let name = slot.s.name.as_str();
    let now = Instant::now();
    let (alert, error) = match result {
        Ok(values) => {
            let metrics = slot.s.sensor.metrics();
            if !ctx.send_values(name, metrics, &values, stamp, policy.when_full) {
                return false;
            }
            slot.backoff.reset();
            let next = slot.due + policy.interval;
            // Behind (the engine was slow, or a retry took long): poll on from now, no burst.
            slot.due = if next <= now {
                now + policy.interval
            } else {
                next
            };
            (slot.health.success(ts), None)
        }
        Err(e) => {
            ctx.counters.bump("sensor_errors", e.fault.as_str(), 1);
            tracing::debug!(sensor = name, fault = e.fault.as_str(), error = %e.detail, "sensor poll failed");
            let alert = slot.health.failure(&e, ts);
            let failed = slot.health.state() == super::health::Health::Failed;
            slot.due = if failed {
                now + slot
                    .backoff
                    .next_delay(fastrand::f64())
                    .max(policy.interval)
            } else {
                now + policy.interval
            };
            (alert, Some(e.detail))
        }
    };
    let ok_at = error.is_none().then_some(ts);
    ctx.board.record(
        name,
        slot.health.state(),
        slot.health.failures(),
        ok_at,
        error.as_deref(),
    );
    if let Some(a) = alert {
        if error.is_none() {
            tracing::info!(sensor = name, id = %a.id, "sensor recovered");
        } else {
            // ERROR: readings are being lost and someone should look at the wiring.
            tracing::error!(sensor = name, id = %a.id, reason = %a.reason, "sensor failed");
        }
        // Alerts wait for room whatever the sensor's policy: they are what matters most.
        if !ctx.send(Input::Alert(a), WhenFull::Block) {
            return false;
        }
    }
    true
}
