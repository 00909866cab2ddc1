//! Starting and stopping the threads of the locally wired sensors.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Input;
use super::health::SensorBoard;
use super::poll::{Ctx, StopSignal};
use crate::config::DeviceSources;
use crate::metrics::Counters;

/// The file `weir sensors list` reads the daemon's sensor health from.
pub fn health_file(state_dir: &Path) -> std::path::PathBuf {
    state_dir.join("sensors.json")
}

/// Starts a thread per I2C bus, per GPIO line, and one for 1-Wire; they stop
/// when `shutdown` is cancelled (within one poll or one wait tick). Returns the
/// health board.
pub fn start(
    devices: &DeviceSources,
    state_dir: &Path,
    tx: &mpsc::Sender<Input>,
    counters: &Arc<Counters>,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) -> Arc<SensorBoard> {
    let board = Arc::new(SensorBoard::new(
        (!devices.is_empty()).then(|| health_file(state_dir)),
    ));
    if devices.is_empty() {
        return board;
    }
    for s in &devices.i2c {
        board.register(&s.name, "i2c");
    }
    for g in &devices.gpio {
        board.register(&g.name, "gpio");
    }
    for o in &devices.onewire {
        board.register(&o.name, "onewire");
    }
    let stop = Arc::new(StopSignal::default());
    let ctx = Ctx {
        tx: tx.clone(),
        counters: counters.clone(),
        board: board.clone(),
        stop: stop.clone(),
    };
    let mut threads = Vec::new();
    let mut spawned = |what: &str, r: std::io::Result<std::thread::JoinHandle<()>>| match r {
        Ok(h) => threads.push(h),
        Err(e) => {
            tracing::error!(source = what, error = %e, "cannot start a sensor thread; its sensors are not read")
        }
    };
    for (bus, sensors) in super::i2c::by_bus(&devices.i2c) {
        spawned(&bus, super::poll::spawn(&bus, sensors, ctx.clone()));
    }
    for g in &devices.gpio {
        spawned(&g.name, super::gpio::spawn(g.clone(), ctx.clone()));
    }
    if !devices.onewire.is_empty() {
        spawned(
            "onewire",
            super::poll::spawn("w1", super::onewire::sensors(&devices.onewire), ctx.clone()),
        );
    }
    // The threads hold the only clones of `tx` now besides the caller's.
    drop(ctx);
    let shutdown = shutdown.clone();
    tracker.spawn(async move {
        shutdown.cancelled().await;
        stop.stop();
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                if t.join().is_err() {
                    tracing::error!("a sensor thread panicked");
                }
            }
        })
        .await;
    });
    board
}
