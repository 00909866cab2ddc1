//! `weir run`: sources -> engine + detectors -> outbox -> uplink, each arrow a
//! bounded channel or a bounded queue.
//!
//! Shutdown (the token is cancelled on SIGTERM/SIGINT) runs front to back so that
//! nothing in between is dropped: sources stop; the engine task drains the
//! channel and commits what it produced to the outbox; the uplink then delivers
//! the backlog for up to `shutdown_grace`; whatever is unacknowledged stays in
//! the outbox for the next start. Open windows are not flushed early (their
//! result would be wrong); they are lost at shutdown until checkpoints exist.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde_json::json;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::detect::Detectors;
use crate::engine::Engine;
use crate::metrics::Counters;
use crate::outbox::{Class, NewMessage, Outbox, OutboxError, OutboxHandle};
use crate::process::Processor;
use crate::reading::now_ms;
use crate::source::{self, Input};
use crate::supervise::{Supervisor, WatchdogFeed};
use crate::uplink::{LinkStatus, Uplink};
use crate::wire::Wire;

/// Why the pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The state directory cannot be created.
    #[error("cannot create state directory {path}: {source} (create it, or set [agent] state_dir)")]
    StateDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The outbox cannot be opened.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
}

/// Engine gauges for the status message.
#[derive(Debug, Default)]
pub struct Gauges {
    /// Keys with state.
    pub keys: AtomicU64,
    /// Open windows over all keys.
    pub open_windows: AtomicU64,
    /// Alerts currently raised.
    pub active_alerts: AtomicU64,
    /// 1 while the outbox cannot be written and results are held.
    pub outbox_blocked: AtomicU64,
}

/// Runs until `shutdown` is cancelled, then drains as described above.
/// `sup` carries systemd supervision: READY once started, the engine's watchdog.
pub async fn run(
    cfg: Config,
    shutdown: CancellationToken,
    sup: &Supervisor,
) -> Result<(), PipelineError> {
    std::fs::create_dir_all(&cfg.state_dir).map_err(|source| PipelineError::StateDir {
        path: cfg.state_dir.clone(),
        source,
    })?;
    let outbox = Outbox::open(&cfg.outbox)?;
    let (outbox, outbox_thread) = OutboxHandle::spawn(outbox);
    tracing::info!(path = %cfg.outbox.path.display(), device = %cfg.device, "outbox open");

    let counters = Arc::new(Counters::default());
    let gauges = Arc::new(Gauges::default());
    let link = Arc::new(LinkStatus::default());
    let new_rows = Arc::new(Notify::new());
    let wire = Wire::new(&cfg.device, &cfg.uplink.topic_prefix).with_format(cfg.uplink.format);
    let started_at = now_ms();

    let tracker = TaskTracker::new();
    let (tx, rx) = mpsc::channel::<Input>(cfg.channel_capacity);
    for sim in cfg.sims {
        tracker.spawn(source::sim::run(
            sim,
            tx.clone(),
            counters.clone(),
            shutdown.clone(),
        ));
    }
    let sensors = source::devices::start(
        &cfg.devices,
        &cfg.state_dir,
        &tx,
        &counters,
        &shutdown,
        &tracker,
    );
    if let Some(ingest) = cfg.ingest {
        tracker.spawn(source::mqtt::run(
            ingest,
            tx.clone(),
            counters.clone(),
            shutdown.clone(),
        ));
    }
    // The engine sees the channel close once every source has stopped.
    drop(tx);

    let max_keys = cfg.engine.max_keys;
    let space_freed = Arc::new(Notify::new());
    let engine = EngineTask {
        stop: shutdown.clone(),
        space_freed: space_freed.clone(),
        processor: Processor::new(
            Engine::new(cfg.engine),
            Detectors::new(cfg.detectors, max_keys),
            wire.clone(),
            counters.clone(),
        ),
        outbox: outbox.clone(),
        counters: counters.clone(),
        gauges: gauges.clone(),
        new_rows: new_rows.clone(),
        watchdog: sup.feed(),
    };
    let engine_done = tracker.spawn(engine.run(rx));

    let status = {
        let (counters, gauges, link, wire) =
            (counters.clone(), gauges.clone(), link.clone(), wire.clone());
        let sensors = sensors.clone();
        Box::new(move || {
            let now = now_ms();
            wire.status(json!({
                "state": "online",
                "version": env!("CARGO_PKG_VERSION"),
                "started_at": started_at,
                "uptime_s": (now - started_at) / 1000,
                "emitted_at": now,
                "keys": gauges.keys.load(Relaxed),
                "open_windows": gauges.open_windows.load(Relaxed),
                "active_alerts": gauges.active_alerts.load(Relaxed),
                "outbox_blocked": gauges.outbox_blocked.load(Relaxed) == 1,
                "last_puback_ms": link.last_puback_ms.load(Relaxed),
                "counters": counters.snapshot(),
                "sensors": sensors.snapshot(),
            }))
        })
    };
    let uplink = Uplink {
        cfg: cfg.uplink,
        status_topic: wire.status_topic(),
        offline_payload: wire.offline(),
        status,
        outbox: outbox.clone(),
        counters: counters.clone(),
        link,
        new_rows,
        space_freed,
    };
    if cfg.outbox_ttl.iter().any(Option::is_some) {
        tracker.spawn(expire_old_rows(
            outbox.clone(),
            cfg.outbox_ttl,
            counters.clone(),
            shutdown.clone(),
        ));
    }
    let drain = CancellationToken::new();
    let uplink_done = tracker.spawn(uplink.run(drain.clone(), cfg.shutdown_grace));
    tracker.close();

    startup_complete(sup);

    shutdown.cancelled().await;
    tracing::info!("shutting down: draining sources and the engine");
    if engine_done.await.is_err() {
        tracing::error!("engine task panicked; readings in its channel are lost");
    }
    drain.cancel();
    if uplink_done.await.is_err() {
        tracing::error!("uplink task panicked; the backlog stays in the outbox");
    }
    tracker.wait().await;
    drop(outbox);
    // The outbox thread exits once the last handle is gone, after its queued commands.
    let _ = tokio::task::spawn_blocking(move || outbox_thread.join()).await;
    tracing::info!(counters = %counters.snapshot(), "stopped");
    Ok(())
}

/// Deletes rows older than their class's TTL, once a minute (and at start).
async fn expire_old_rows(
    outbox: OutboxHandle,
    ttl: [Option<std::time::Duration>; 3],
    counters: Arc<Counters>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = now_ms();
        let cutoffs = ttl.map(|t| {
            t.map(|d| now.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
        });
        match outbox.expire(cutoffs).await {
            Ok(expired) => {
                for c in Class::ALL {
                    let n = expired[c as usize];
                    if n > 0 {
                        // Data lost by policy: an operator should know the link was down that long.
                        tracing::error!(
                            class = c.as_str(),
                            expired = n,
                            "unsent messages older than their TTL were deleted"
                        );
                    }
                    counters.bump("expired", c.as_str(), n);
                }
            }
            Err(e) => tracing::warn!(error = %e, "outbox expiry failed; retrying in a minute"),
        }
    }
}

/// How often the engine task lets wall-clock time pass without input.
const TICK: std::time::Duration = std::time::Duration::from_millis(250);

/// The READY point: systemd (`Type=notify`) considers the service started here,
/// and `weir run`'s caller orders dependent units after it. Everything READY
/// promises must happen before this call: the state directory and the outbox are
/// open. (Issue 4: move this call after the first checkpoint is written.)
fn startup_complete(sup: &Supervisor) {
    sup.notifier.ready();
    tracing::info!(
        systemd = sup.notifier.enabled(),
        watchdog_ping = ?sup.watchdog,
        "started"
    );
}

struct EngineTask {
    processor: Processor,
    stop: CancellationToken,
    space_freed: Arc<Notify>,
    outbox: OutboxHandle,
    counters: Arc<Counters>,
    gauges: Arc<Gauges>,
    new_rows: Arc<Notify>,
    watchdog: WatchdogFeed,
}

impl EngineTask {
    /// Until the channel closes: window, detect, and commit each batch's results
    /// to the outbox in one transaction. Awaiting the outbox is the backpressure
    /// that fills the channel and so stops the sources.
    async fn run(mut self, mut rx: mpsc::Receiver<Input>) {
        let mut batch = Vec::with_capacity(512);
        let mut msgs: Vec<NewMessage> = Vec::new();
        // Wall-clock work (idle keys, held late panes) also happens when no
        // reading comes: a silent sensor is exactly when it matters. What it
        // emits does not depend on this period (see `Engine::tick`), only when.
        let mut clock = tokio::time::interval(TICK);
        clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // The watchdog is fed from this loop (and the commit retry inside it)
            // and nowhere else: if the engine stops turning, systemd stops hearing
            // from it and restarts the service.
            tokio::select! {
                n = rx.recv_many(&mut batch, 512) => {
                    if n == 0 {
                        break;
                    }
                    let now = now_ms();
                    for input in batch.drain(..) {
                        self.processor.input(input, now, &mut msgs);
                    }
                }
                _ = clock.tick() => self.processor.tick(now_ms(), &mut msgs),
                () = self.watchdog.due() => {}
            }
            self.watchdog.feed().await;
            self.commit(&mut msgs).await;
            let p = &self.processor;
            self.gauges.keys.store(p.engine.key_count() as u64, Relaxed);
            self.gauges
                .open_windows
                .store(p.engine.open_windows() as u64, Relaxed);
            self.gauges
                .active_alerts
                .store(p.detectors.active_alerts().count() as u64, Relaxed);
        }
    }

    /// Commits a batch. If the outbox cannot be written (disk full, read-only
    /// card), the batch is held and retried with capped backoff: the channel
    /// fills, MQTT ingest stops reading (the broker keeps the readings) and the
    /// sensors apply their `when_full` policy. Only at shutdown, after a few more
    /// attempts, is a batch given up, and then it is counted and logged.
    async fn commit(&mut self, msgs: &mut Vec<NewMessage>) {
        if msgs.is_empty() {
            return;
        }
        Counters::add(&self.counters.produced, msgs.len() as u64);
        let mut backoff = crate::uplink::backoff::Backoff::new(
            std::time::Duration::from_millis(100),
            std::time::Duration::from_secs(5),
        );
        let mut failures = 0u32;
        let mut batch = std::mem::take(msgs);
        loop {
            match self.outbox.insert_keeping(batch).await {
                Ok(report) => {
                    if failures > 0 {
                        tracing::warn!(
                            attempts = failures + 1,
                            "outbox writable again; held results committed"
                        );
                    }
                    self.gauges.outbox_blocked.store(0, Relaxed);
                    self.account(&report);
                    self.new_rows.notify_one();
                    return;
                }
                Err((e, held)) => {
                    failures += 1;
                    if failures == 1 {
                        // ERROR: an operator must act (free space, replace the card).
                        tracing::error!(error = %e, messages = held.len(), "cannot write results to the outbox; holding them and retrying, ingest is paused");
                    }
                    self.gauges.outbox_blocked.store(1, Relaxed);
                    if matches!(e, OutboxError::Closed)
                        || (self.stop.is_cancelled() && failures > 3)
                    {
                        tracing::error!(error = %e, messages = held.len(), "giving up on held results at shutdown; they are lost");
                        for m in &held {
                            self.counters.bump(
                                "dropped",
                                &format!("outbox_error_{}", m.class.as_str()),
                                1,
                            );
                        }
                        return;
                    }
                    batch = held;
                    // Holding is deliberate, not a hang: keep systemd's watchdog fed.
                    self.watchdog.feed().await;
                    // Retry when the uplink has deleted rows, or after the backoff.
                    tokio::select! {
                        _ = self.space_freed.notified() => {}
                        _ = tokio::time::sleep(backoff.next_delay(fastrand::f64())) => {}
                    }
                }
            }
        }
    }

    fn account(&self, report: &crate::outbox::InsertReport) {
        Counters::add(&self.counters.outbox_inserted, report.ids.len() as u64);
        Counters::add(&self.counters.outbox_superseded, report.superseded);
        for c in Class::ALL {
            let evicted = report.evicted[c as usize];
            if evicted > 0 {
                tracing::warn!(
                    class = c.as_str(),
                    evicted,
                    "outbox budget full: evicted oldest rows"
                );
            }
            self.counters.bump("evicted", c.as_str(), evicted);
        }
    }
}
