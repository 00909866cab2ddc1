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
    let wire = Wire::new(&cfg.device, &cfg.uplink.topic_prefix);
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
    let engine = EngineTask {
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
                "last_puback_ms": link.last_puback_ms.load(Relaxed),
                "counters": counters.snapshot(),
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
    };
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
        loop {
            // The watchdog is fed from this loop and nowhere else: if the engine
            // stops turning, systemd stops hearing from it and restarts the service.
            tokio::select! {
                n = rx.recv_many(&mut batch, 512) => if n == 0 { break },
                () = self.watchdog.due() => {}
            }
            self.watchdog.feed().await;
            if batch.is_empty() {
                continue;
            }
            let now = now_ms();
            for input in batch.drain(..) {
                self.processor.input(input, now, &mut msgs);
            }
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

    async fn commit(&self, msgs: &mut Vec<NewMessage>) {
        if msgs.is_empty() {
            return;
        }
        let n = msgs.len() as u64;
        let mut lost_by_class = [0u64; 3];
        for m in msgs.iter() {
            lost_by_class[m.class as usize] += 1;
        }
        match self.outbox.insert(std::mem::take(msgs)).await {
            Ok(report) => {
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
                self.new_rows.notify_one();
            }
            Err(e) => {
                // ERROR: results are lost and an operator must act (disk full, read-only SD card).
                tracing::error!(error = %e, messages = n, "cannot write results to the outbox; they are lost");
                for c in Class::ALL {
                    self.counters.bump(
                        "dropped",
                        &format!("outbox_error_{}", c.as_str()),
                        lost_by_class[c as usize],
                    );
                }
            }
        }
    }
}
