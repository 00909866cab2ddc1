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
    let mut spawned = |what: &str,
                       sensors: Vec<String>,
                       r: std::io::Result<std::thread::JoinHandle<()>>| {
        match r {
            Ok(handle) => threads.push(SensorThread { handle, sensors }),
            Err(e) => {
                tracing::error!(source = what, error = %e, "cannot start a sensor thread; its sensors are not read");
                for s in &sensors {
                    board.unread(s, &format!("its thread could not start: {e}"));
                }
            }
        }
    };
    for (bus, sensors) in super::i2c::by_bus(&devices.i2c) {
        let names = sensors.iter().map(|s| s.name.clone()).collect();
        spawned(&bus, names, super::poll::spawn(&bus, sensors, ctx.clone()));
    }
    for g in &devices.gpio {
        spawned(
            &g.name,
            vec![g.name.clone()],
            super::gpio::spawn(g.clone(), ctx.clone()),
        );
    }
    if !devices.onewire.is_empty() {
        let names = devices.onewire.iter().map(|o| o.name.clone()).collect();
        spawned(
            "onewire",
            names,
            super::poll::spawn("w1", super::onewire::sensors(&devices.onewire), ctx.clone()),
        );
    }
    // The threads hold the only clones of `tx` now besides the caller's.
    drop(ctx);
    let shutdown = shutdown.clone();
    let watched = board.clone();
    tracker.spawn(async move {
        // A thread ends before shutdown only by a panic: its sensors are then
        // reported failed rather than left showing their last state.
        let mut check = tokio::time::interval(CHECK_THREADS);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = check.tick() => threads = reap(threads, &watched),
            }
        }
        stop.stop();
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                if t.handle.join().is_err() {
                    tracing::error!("a sensor thread panicked");
                }
            }
        })
        .await;
    });
    board
}

/// How often the threads are checked for having ended early.
const CHECK_THREADS: std::time::Duration = std::time::Duration::from_secs(1);

/// A sensor thread and the sensors it reads.
struct SensorThread {
    handle: std::thread::JoinHandle<()>,
    sensors: Vec<String>,
}

/// The threads still running; those that ended (before shutdown: a panic) are
/// joined, logged, and their sensors marked failed on `board`.
fn reap(threads: Vec<SensorThread>, board: &SensorBoard) -> Vec<SensorThread> {
    let (ended, running): (Vec<_>, Vec<_>) =
        threads.into_iter().partition(|t| t.handle.is_finished());
    for t in ended {
        let how = if t.handle.join().is_err() {
            "panicked"
        } else {
            "ended"
        };
        // ERROR: these sensors are no longer read until weir restarts.
        tracing::error!(sensors = ?t.sensors, how, "a sensor thread stopped; its sensors are not read until weir restarts");
        for s in &t.sensors {
            board.unread(
                s,
                &format!(
                    "its thread {how}; restart weir (systemctl restart weir) and report the journal"
                ),
            );
        }
    }
    running
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_sensor_thread_that_dies_marks_its_sensors_failed_and_the_others_stay() {
        let board = SensorBoard::new(None);
        board.register("air", "i2c");
        board.register("door", "gpio");
        board.record("air", super::super::health::Health::Ok, 0, Some(1), None);
        let dead = std::thread::spawn(|| panic!("driver bug (test)"));
        while !dead.is_finished() {
            std::thread::yield_now();
        }
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let alive = std::thread::spawn(move || {
            let _ = rx.recv();
        });
        let threads = vec![
            SensorThread {
                handle: dead,
                sensors: vec!["air".into()],
            },
            SensorThread {
                handle: alive,
                sensors: vec!["door".into()],
            },
        ];
        let left = reap(threads, &board);
        assert_eq!(left.len(), 1);
        let v = board.snapshot();
        assert_eq!(v["air"]["health"], "failed");
        assert!(
            v["air"]["last_error"]
                .as_str()
                .unwrap()
                .contains("panicked"),
            "{v}"
        );
        assert_eq!(v["door"]["health"], "unknown");
        drop(tx);
        for t in left {
            t.handle.join().unwrap();
        }
    }
}
