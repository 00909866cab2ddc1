//! GPIO inputs as event sources, one thread per line: edges from the GPIO
//! character device (stamped by the kernel at the interrupt), debounced, as
//! state readings (1.0 active, 0.0 inactive) or as a pulse rate per interval.
//! A line that cannot be requested is `failed` (alert) and re-requested with
//! capped backoff.

use std::time::{Duration, Instant};

use weir_sensors::Fault;
use weir_sensors::gpio::{Debouncer, PulseRate};
use weir_sensors::linux::{EdgeWatcher, Edges, GpioError, monotonic_ns};

use super::Input;
use super::health::{HealthTracker, ReadError};
use super::poll::Ctx;
use crate::clock::Stamp;
use crate::config::{GpioInput, GpioMode};
use crate::reading::now_ms;
use crate::uplink::backoff::Backoff;

/// How often a waiting line thread checks for shutdown.
const TICK: Duration = Duration::from_millis(200);

/// The stamp of an event the kernel timestamped `ts_ns` on CLOCK_MONOTONIC.
fn stamp_of(ts_ns: u64) -> Stamp {
    let age_ms = monotonic_ns().saturating_sub(ts_ns) / 1_000_000;
    crate::clock::stamp().minus(i64::try_from(age_ms).unwrap_or(0))
}

/// Starts the thread of one line.
pub fn spawn(g: GpioInput, ctx: Ctx) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("weir-gpio-{}", g.line))
        .spawn(move || run(&g, &ctx))
}

fn run(g: &GpioInput, ctx: &Ctx) {
    let mut health = HealthTracker::new(&g.name, 1);
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    let metrics = [g.metric.clone()];
    // Counting needs both edges to debounce: a bounce is an edge and its way back.
    let edges = match g.mode {
        GpioMode::State => g.edges,
        GpioMode::Counter { .. } => Edges::Both,
    };
    loop {
        let failure = match EdgeWatcher::open(&g.chip, g.line, edges, g.active_low, "weir") {
            Ok(w) => {
                if let Some(a) = health.success(now_ms()) {
                    ctx.send(Input::Alert(a), crate::config::WhenFull::Block);
                }
                ctx.board
                    .record(&g.name, health.state(), 0, Some(now_ms()), None);
                backoff.reset();
                match watch(g, w, ctx, &metrics) {
                    None => return,
                    Some(e) => e,
                }
            }
            Err(e) => ReadError {
                fault: Fault::Absent,
                detail: format!("cannot request line {} of {}: {e}", g.line, g.chip),
            },
        };
        tracing::warn!(sensor = %g.name, error = %failure.detail, "gpio line unavailable");
        let alert = health.failure(&failure, now_ms());
        ctx.board.record(
            &g.name,
            health.state(),
            health.failures(),
            None,
            Some(&failure.detail),
        );
        if let Some(a) = alert {
            if !ctx.send(Input::Alert(a), crate::config::WhenFull::Block) {
                return;
            }
        }
        if ctx
            .stop
            .wait_until(Instant::now() + backoff.next_delay(fastrand::f64()))
        {
            return;
        }
    }
}

/// Until stopped (`None`) or the line fails (`Some`).
fn watch(g: &GpioInput, mut w: EdgeWatcher, ctx: &Ctx, metrics: &[String]) -> Option<ReadError> {
    let fail = |e: GpioError| {
        Some(ReadError {
            fault: Fault::Glitch,
            detail: e.to_string(),
        })
    };
    let initial = match w.level() {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let debounce_ns = u64::try_from(g.debounce.as_nanos()).unwrap_or(u64::MAX);
    let mut deb = Debouncer::new(debounce_ns, Some(initial));
    let (mut rate, count_level) = match g.mode {
        GpioMode::State => {
            // The level at start is a reading too: a door open since before the start.
            let v = if initial { 1.0 } else { 0.0 };
            if !ctx.send_values(&g.name, metrics, &[v], crate::clock::stamp(), g.when_full) {
                return None;
            }
            (None, true)
        }
        GpioMode::Counter { interval, scale } => {
            let ns = u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX);
            (
                Some(PulseRate::new(ns, scale, monotonic_ns())),
                g.edges != Edges::Falling,
            )
        }
    };
    loop {
        if ctx.stop.is_stopped() {
            return None;
        }
        let now = monotonic_ns();
        let deadline = [deb.deadline(), rate.as_ref().map(PulseRate::deadline)]
            .into_iter()
            .flatten()
            .min();
        let timeout = deadline.map_or(TICK, |d| {
            Duration::from_nanos(d.saturating_sub(now)).min(TICK)
        });
        let edge = match w.wait(timeout) {
            Ok(e) => e,
            Err(e) => return fail(e),
        };
        let at = edge.map_or_else(monotonic_ns, |e| e.ts_ns);
        // Intervals that ended before this edge are reported first, so a pulse
        // counts in the interval it happened in.
        if let Some(r) = rate.as_mut() {
            while let Some(done) = r.poll(at) {
                if !ctx.send_values(
                    &g.name,
                    metrics,
                    &[done.per_second],
                    stamp_of(done.end_ns),
                    g.when_full,
                ) {
                    return None;
                }
            }
        }
        let change = match edge {
            Some(e) => deb.edge(e.level, e.ts_ns),
            None => deb.poll(at),
        };
        let Some(c) = change else { continue };
        match rate.as_mut() {
            Some(r) if c.level == count_level => r.pulse(c.ts_ns),
            Some(_) => {}
            None => {
                let v = if c.level { 1.0 } else { 0.0 };
                if !ctx.send_values(&g.name, metrics, &[v], stamp_of(c.ts_ns), g.when_full) {
                    return None;
                }
            }
        }
    }
}
