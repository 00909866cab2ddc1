//! `weir run`: sources -> engine + detectors -> outbox -> uplink, each arrow a
//! bounded channel or a bounded queue.
//!
//! Shutdown (the token is cancelled on SIGTERM/SIGINT) runs front to back so that
//! nothing in between is dropped: sources stop; the engine task drains the
//! channel and commits what it produced to the outbox; the uplink then delivers
//! the backlog for up to `shutdown_grace`; whatever is unacknowledged stays in
//! the outbox for the next start. Open windows are not flushed early (their
//! result would be wrong): the last checkpoint keeps them, and the next start
//! continues them.
//!
//! Checkpoints: the engine task hands the messages it produces to the outbox's
//! memory at once (staged: the uplink may deliver them before any write, so an
//! alert never waits for a commit), and every `checkpoint_interval` commits the
//! state that produced them (`crate::checkpoint`) in one transaction with the
//! staged rows not yet delivered; only then does it acknowledge the MQTT
//! deliveries whose effect they hold. A staged row delivered before that commit
//! never touches the disk: after a crash the state it came from is older, and
//! the row is produced again (a resend, dropped by `msg_id`) for MQTT readings,
//! which the broker redelivers; local sensors' readings of that interval are
//! lost, as they always were. READY is signalled after the first checkpoint,
//! taken right after the restore.
//!
//! The engine never waits for the outbox while it runs: staging and the commit are
//! sent and their answers taken as they come (branches of the engine's `select!`),
//! one staging and one commit in flight at most. A commit holds the state taken when
//! it was sent and the rows staged before it (the outbox thread runs commands in
//! order), and releases the acknowledgements owed at that moment; those owed later
//! wait for the next commit. Only a failed commit stops the engine (held and retried
//! as before), and the start and the end wait for the commit in flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde_json::json;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::checkpoint::{self, Seen, Verdict};
use crate::clock::{Admitted, Clock, Hold};
use crate::config::Config;
use crate::control::hub::{EngineView, Hub, Live, alert_json};
use crate::control::tap::{Event, Tap};
use crate::detect::Detectors;
use crate::engine::Engine;
use crate::homeassistant::HomeAssistant;
use crate::metrics::Counters;
use crate::outbox::{
    Batch, Class, CommitAnswer, NewMessage, Outbox, OutboxError, OutboxHandle, StageAnswer,
};
use crate::process::Processor;
use crate::reading::{Reading, TsSource, now_ms};
use crate::source::link::IngestLink;
use crate::source::mqtt::Ack;
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
    /// Non-zero while the outbox cannot be written and results are held:
    /// 1 + the index of the reason in [`BLOCKED_REASONS`].
    pub outbox_blocked: AtomicU64,
    /// Rows in the outbox, as of the last count (every `status_interval`).
    pub backlog: AtomicU64,
}

/// What `outbox_blocked_reason` says in the status message, see [`OutboxError::blocked_reason`].
pub const BLOCKED_REASONS: [&str; 4] = ["disk_full", "read_only", "error", "damaged"];

/// Runs until `shutdown` is cancelled, then drains as described above.
/// `sup` carries systemd supervision: READY once started, the engine's watchdog.
/// The pipeline attaches its live state to `hub` (the control socket's view) while it runs.
pub async fn run(
    cfg: Config,
    shutdown: CancellationToken,
    sup: &Supervisor,
    hub: &Arc<Hub>,
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

    // Before any source starts: the restored state is what their inputs continue.
    let (engine, detectors, seen, held_rows) = restore(&outbox, &cfg).await;
    // Readings held for the clock: the ones a reload handed over, or those of
    // the checkpoint (of this boot; an earlier boot's cannot be corrected).
    let (hold, stale) = match crate::clock::global().take_parked() {
        Some(parked) => (parked, Vec::new()),
        None => {
            let (hold, stale, damaged) =
                Hold::restore(crate::clock::MAX_HELD, &held_rows, crate::clock::boot_id());
            if damaged > 0 {
                tracing::error!(
                    readings = damaged,
                    "held readings of the last checkpoint do not decode and are lost"
                );
            }
            if !hold.is_empty() {
                tracing::info!(
                    readings = hold.len(),
                    "readings held for the clock's synchronisation restored from the last checkpoint"
                );
            }
            (hold, stale)
        }
    };
    let ingest_link = cfg.ingest.as_ref().map(|i| {
        Arc::new(IngestLink::new(
            format!("{}:{}", i.host, i.port),
            started_at,
        ))
    });
    let hearing = Hearing::new(&cfg, ingest_link.clone());
    let (homeassistant, ha_msgs) = homeassistant(&cfg);
    let retained = (homeassistant.as_ref()).map_or_else(Vec::new, |h| h.retained_prefixes());
    let broker_max_inflight = cfg
        .ingest
        .as_ref()
        .map_or(usize::MAX, |i| i.broker_max_inflight);
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
    if let (Some(ingest), Some(link)) = (cfg.ingest, &ingest_link) {
        tracker.spawn(source::mqtt::run(
            ingest,
            tx.clone(),
            counters.clone(),
            link.clone(),
            shutdown.clone(),
        ));
    }
    // The engine sees the channel close once every source has stopped.
    drop(tx);

    let space_freed = Arc::new(Notify::new());
    // Status requests of the control socket; a few may wait, more are answered "busy".
    let (views_tx, views) = mpsc::channel(8);
    let engine = EngineTask {
        tap: hub.tap.clone(),
        views,
        last_checkpoint_ms: 0,
        stop: shutdown.clone(),
        space_freed: space_freed.clone(),
        processor: Processor::new(engine, detectors, wire.clone(), counters.clone())
            .with_homeassistant(homeassistant),
        seen,
        checkpoint_every: cfg.checkpoint_interval,
        broker_max_inflight,
        owed_limit: owed_limit(broker_max_inflight),
        due: false,
        committing: None,
        staging: None,
        buffered_bytes: ha_msgs.iter().map(NewMessage::bytes).sum(),
        buffered_msgs: ha_msgs.len(),
        msgs: ha_msgs,
        acks: Vec::new(),
        syncing: std::collections::VecDeque::new(),
        outbox: outbox.clone(),
        counters: counters.clone(),
        gauges: gauges.clone(),
        new_rows: new_rows.clone(),
        watchdog: sup.feed(),
        hearing,
        clock: crate::clock::global(),
        hold,
        stale,
        hub: hub.clone(),
    };
    let (first_checkpoint, checkpointed) = tokio::sync::oneshot::channel();
    let engine_done = tracker.spawn(engine.run(rx, first_checkpoint));

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
                "outbox_blocked": gauges.outbox_blocked.load(Relaxed) != 0,
                "outbox_blocked_reason": usize::try_from(gauges.outbox_blocked.load(Relaxed))
                    .ok()
                    .and_then(|b| b.checked_sub(1))
                    .and_then(|i| BLOCKED_REASONS.get(i)),
                "last_puback_ms": link.last_puback_ms.load(Relaxed),
                "backlog": gauges.backlog.load(Relaxed),
                "counters": counters.snapshot(),
                "sensors": sensors.snapshot(),
                "clock": crate::clock::global().status(),
            }))
        })
    };
    hub.attach(Live {
        started_at,
        device: cfg.device.clone(),
        upstream: format!("{}:{}", cfg.uplink.host, cfg.uplink.port),
        outbox_path: cfg.outbox.path.clone(),
        outbox_max_bytes: cfg.outbox.max_bytes,
        counters: counters.clone(),
        gauges: gauges.clone(),
        link: link.clone(),
        sensors: sensors.clone(),
        ingest: ingest_link,
        outbox: outbox.clone(),
        engine: views_tx,
    });
    tracker.spawn(count_backlog(
        outbox.clone(),
        gauges.clone(),
        cfg.uplink.status_interval,
        shutdown.clone(),
    ));
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
        retained,
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

    // READY promises a durable state: wait for the first checkpoint (it waits
    // itself while the disk is full), or for a shutdown before it.
    tokio::select! {
        _ = checkpointed => startup_complete(sup),
        _ = shutdown.cancelled() => {}
    }

    shutdown.cancelled().await;
    hub.detach();
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

/// Counts the outbox's rows for the status message, every `every` (and at start).
async fn count_backlog(
    outbox: OutboxHandle,
    gauges: Arc<Gauges>,
    every: std::time::Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Ok(stats) = outbox.stats().await {
            let rows = stats.iter().map(|s| s.rows).sum();
            gauges.backlog.store(rows, Relaxed);
        }
    }
}

/// The `[homeassistant]` publisher, when configured, and what it publishes at start:
/// entities of sensors and detectors no longer configured are withdrawn.
fn homeassistant(cfg: &Config) -> (Option<HomeAssistant>, Vec<NewMessage>) {
    let Some(h) = &cfg.homeassistant else {
        return (None, Vec::new());
    };
    let d = &cfg.devices;
    let local: std::collections::HashSet<&str> = (d.i2c.iter().map(|s| s.name.as_str()))
        .chain(d.gpio.iter().map(|g| g.name.as_str()))
        .chain(d.onewire.iter().map(|o| o.name.as_str()))
        .chain(cfg.sims.iter().map(|s| s.name.as_str()))
        .collect();
    // An ingest subscription whose sensor name comes from the topic may name any sensor.
    let topics = cfg.ingest.as_ref().map_or(&[][..], |i| &i.topics[..]);
    let configured = |sensor: &str| {
        local.contains(sensor)
            || topics
                .iter()
                .any(|t| t.fixed_sensor().is_none_or(|f| f == sensor))
    };
    let mut ha = HomeAssistant::new(
        h.clone(),
        &cfg.device,
        &cfg.uplink.topic_prefix,
        cfg.detectors.clone(),
        Some(&cfg.state_dir),
    );
    let mut msgs = Vec::new();
    ha.start(configured, now_ms(), &mut msgs);
    (Some(ha), msgs)
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

/// The engine and detectors of the last checkpoint, or fresh ones. A checkpoint
/// that cannot be used (another build's format, damage) is reported and set
/// aside: the outbox rows are kept, only the open windows and baselines restart.
async fn restore(
    outbox: &OutboxHandle,
    cfg: &Config,
) -> (Engine, Detectors, Seen, Vec<(i64, Vec<u8>)>) {
    let max_keys = cfg.engine.max_keys;
    let fresh = |held: Vec<(i64, Vec<u8>)>| {
        (
            Engine::new(cfg.engine.clone()),
            Detectors::new(cfg.detectors.clone(), max_keys),
            Seen::new(max_keys),
            held,
        )
    };
    match outbox.load_checkpoint().await {
        Ok(None) => fresh(Vec::new()),
        Ok(Some(mut stored)) => {
            // Held readings have an encoding of their own: kept whatever the rest.
            let held = std::mem::take(&mut stored.hold);
            match checkpoint::restore(&stored, cfg.engine.clone(), cfg.detectors.clone(), max_keys)
            {
                Ok((engine, detectors, seen)) => {
                    tracing::info!(
                        taken_ms = stored.taken_ms,
                        keys = engine.key_count(),
                        open_windows = engine.open_windows(),
                        "state restored from the last checkpoint"
                    );
                    (engine, detectors, seen, held)
                }
                Err(e) => {
                    tracing::error!(error = %e, path = %cfg.outbox.path.display(), "the last checkpoint cannot be restored; starting with empty windows and baselines (the outbox is kept)");
                    fresh(held)
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read the last checkpoint; starting with empty windows and baselines");
            fresh(Vec::new())
        }
    }
}

/// How often the engine task lets wall-clock time pass without input.
const TICK: std::time::Duration = std::time::Duration::from_millis(250);

/// With this many owed acknowledgements the broker may have stopped sending:
/// if nothing arrives for this long, checkpoint now rather than at the interval.
const STALL: std::time::Duration = std::time::Duration::from_millis(20);

/// Bounds on what waits for the next checkpoint: beyond either, it is taken at
/// once. Messages: one transaction stays small enough to fit the space a nearly
/// full disk keeps (see `outbox`), so a held batch can always go in once the
/// uplink frees room. Acks: half the packet-id space, so the broker never runs
/// out of ids.
const MAX_BUFFERED_MSGS: usize = 512;
const MAX_BUFFERED_BYTES: u64 = 64 * 1024;
const MAX_OWED_ACKS: usize = 32_768;

/// Owed acknowledgements that start a checkpoint at once, for a broker that sends
/// `broker_max_inflight` deliveries unacknowledged: half of them, so that the commit
/// releasing them is under way while the broker still has room to send the other half.
fn owed_limit(broker_max_inflight: usize) -> usize {
    (broker_max_inflight / 2).clamp(1, MAX_OWED_ACKS)
}

/// The READY point: systemd (`Type=notify`) considers the service started here,
/// and `weir run`'s caller orders dependent units after it. Everything READY
/// promises must happen before this call: the state directory and the outbox are
/// open, the state is restored and the first checkpoint is committed.
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
    /// The live tail: checked once per step, used only while someone tails.
    tap: Arc<Tap>,
    /// Status requests: answered between inputs.
    views: mpsc::Receiver<tokio::sync::oneshot::Sender<EngineView>>,
    /// Wall-clock ms of the last committed checkpoint.
    last_checkpoint_ms: i64,
    /// Deliveries whose effect is in the state (see [`Seen`]).
    seen: Seen,
    checkpoint_every: std::time::Duration,
    broker_max_inflight: usize,
    /// Owed acknowledgements that start a checkpoint at once: half the broker's window
    /// (so the next commit is under way before the broker stops sending), at most
    /// [`MAX_OWED_ACKS`].
    owed_limit: usize,
    /// A checkpoint is due (the interval, a stalled broker) and starts as soon as no commit is in flight.
    due: bool,
    /// The commit in flight, at most one.
    committing: Option<InFlight>,
    /// Messages sent to the outbox's memory and not answered yet (one batch at most),
    /// kept to go with the next checkpoint should staging fail.
    staging: Option<(StageAnswer, Vec<NewMessage>)>,
    /// Produced since the last checkpoint; committed with the next one.
    msgs: Vec<NewMessage>,
    /// Owed for deliveries since the last checkpoint; sent after the next one.
    acks: Vec<Ack>,
    /// Messages the next checkpoint would write (staged, not delivered yet).
    buffered_msgs: usize,
    /// Committed checkpoints waiting for their fsync, oldest first, with the
    /// acknowledgements each releases.
    syncing: std::collections::VecDeque<(crate::outbox::Durable, Vec<Ack>)>,
    /// Their bytes. Both count `msgs` until staged; then the outbox says.
    buffered_bytes: u64,
    stop: CancellationToken,
    space_freed: Arc<Notify>,
    outbox: OutboxHandle,
    counters: Arc<Counters>,
    gauges: Arc<Gauges>,
    new_rows: Arc<Notify>,
    watchdog: WatchdogFeed,
    hearing: Hearing,
    /// Weir's timeline: the `now` of everything the engine does.
    clock: &'static Clock,
    /// Readings with a provisional stamp, until the correction.
    hold: Hold,
    /// Held readings of an earlier boot: published as dead letters at start.
    stale: Vec<Reading>,
    /// Tells a reload (the hold goes to the next pipeline) from a stop.
    hub: Arc<Hub>,
}

impl EngineTask {
    /// Until the channel closes: window, detect, and checkpoint. Awaiting the
    /// outbox is the backpressure that fills the channel and so stops the sources.
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Input>,
        first_checkpoint: tokio::sync::oneshot::Sender<()>,
    ) {
        let now = self.observe_clock();
        self.processor.engine.restart_clock(now);
        // Silence counts from now for every key, not across Weir's downtime.
        self.hearing.apply(&mut self.processor.engine, now);
        for r in std::mem::take(&mut self.stale) {
            self.dead_letter_held(
                r,
                now,
                "held for the clock's synchronisation when the machine restarted: when it was read cannot be known",
            );
        }
        // Episodes whose detector went away with a config change end now, in the
        // first checkpoint, rather than staying raised for their consumers.
        self.step(|p, msgs| p.end_orphaned_alerts(now, msgs));
        self.clock.held.store(self.hold.len() as u64, Relaxed);
        self.checkpoint().await;
        self.synced_all().await;
        let _ = first_checkpoint.send(());
        let mut batch = Vec::with_capacity(512);
        // Wall-clock work (idle keys, held late panes) also happens when no
        // reading comes: a silent sensor is exactly when it matters. What it
        // emits does not depend on this period (see `Engine::tick`), only when.
        let mut clock = tokio::time::interval(TICK);
        clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut every = tokio::time::interval(self.checkpoint_every);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            // At most one commit in flight: until it answers, the checkpoint triggers only
            // note that one is due (acknowledgements owed meanwhile go with the next one).
            let idle = self.committing.is_none();
            let stalled = idle && self.acks.len() >= self.broker_max_inflight;
            let mut answered = None;
            let mut staged = None;
            // The watchdog is fed from this loop (and the commit retry inside it)
            // and nowhere else: if the engine stops turning, systemd stops hearing
            // from it and restarts the service.
            tokio::select! {
                n = rx.recv_many(&mut batch, 512) => {
                    if n == 0 {
                        break;
                    }
                    let now = self.observe_clock();
                    for input in batch.drain(..) {
                        self.input(input, now);
                    }
                }
                _ = clock.tick() => {
                    let now = self.observe_clock();
                    self.hearing.apply(&mut self.processor.engine, now);
                    self.step(|p, msgs| p.tick(now, msgs));
                }
                // The interval also bounds how long an MQTT delivery waits for the
                // checkpoint that acknowledges it (unless half the broker's window fills
                // first): the broker holds it meanwhile and resends it after a reconnect,
                // so waiting costs nothing but redeliveries after a crash, and every
                // commit it saves is an fsync the card does not take.
                _ = every.tick() => self.due = true,
                // The broker waits for our acknowledgements before it sends more.
                () = tokio::time::sleep(STALL), if stalled => self.due = true,
                () = self.watchdog.due() => {}
                result = commit_answered(&mut self.committing), if !idle => answered = Some(result),
                result = stage_answered(&mut self.staging), if self.staging.is_some() => staged = Some(result),
                done = next_durable(&mut self.syncing), if !self.syncing.is_empty() => {
                    release(done);
                }
                Some(reply) = self.views.recv() => {
                    let _ = reply.send(self.view());
                }
            }
            self.watchdog.feed().await;
            if let Some(result) = staged {
                if let Some((_, msgs)) = self.staging.take() {
                    self.staged(result, msgs);
                }
            }
            if let Some(result) = answered {
                self.commit_finished(result).await;
            }
            self.stage().await;
            if self.committing.is_none()
                && (self.due
                    || self.buffered_msgs >= MAX_BUFFERED_MSGS
                    || self.buffered_bytes >= MAX_BUFFERED_BYTES
                    || self.acks.len() >= self.owed_limit)
            {
                self.begin_checkpoint().await;
            }
            let p = &self.processor;
            self.gauges.keys.store(p.engine.key_count() as u64, Relaxed);
            self.gauges
                .open_windows
                .store(p.engine.open_windows() as u64, Relaxed);
            self.gauges
                .active_alerts
                .store(p.detectors.active_alerts().count() as u64, Relaxed);
        }
        // Readings still waiting for the clock: a reload hands them to the
        // next pipeline; at a stop they stay in the checkpointed state.
        if !self.hub.is_stopping() && !self.hold.is_empty() {
            tracing::info!(
                readings = self.hold.len(),
                "reload: the readings held for the clock's synchronisation go to the new pipeline"
            );
            self.clock
                .park(std::mem::replace(&mut self.hold, Hold::new(1)));
            self.checkpoint().await;
            return self.synced_all().await;
        }
        if !self.hold.is_empty() {
            // They are part of the state: the next start of this boot holds them
            // again (and corrects them at the synchronisation); a start after a
            // reboot publishes them as dead letters, their time unknowable.
            tracing::info!(
                readings = self.hold.len(),
                "stopping before the system clock was synchronised: the readings held for it stay in the state for the next start"
            );
        }
        // Shutdown: everything processed goes into one last checkpoint. The
        // ingest connection is closed by now, so the broker resends what these
        // acknowledgements covered, and `Seen` recognises it at the next start.
        self.checkpoint().await;
        self.synced_all().await;
    }

    /// Waits until every committed checkpoint is durable, releasing its acknowledgements.
    async fn synced_all(&mut self) {
        while !self.syncing.is_empty() {
            release(next_durable(&mut self.syncing).await);
        }
    }

    /// Looks at the clock before the engine uses it: at the first
    /// synchronisation the engine's timers move with the timeline, and the
    /// held readings are corrected and processed, in order.
    fn observe_clock(&mut self) -> i64 {
        let o = self.clock.observe();
        let p = &mut self.processor;
        if o.jump != 0 {
            p.engine.shift_clock(o.jump);
        }
        p.engine.set_clock_trusted(o.trusted);
        if let (Some(c), false) = (self.clock.correction(), self.hold.is_empty()) {
            tracing::info!(
                readings = self.hold.len(),
                "system clock synchronised: processing the readings held for it, corrected"
            );
            let ready: Vec<Reading> = self.hold.release(c).collect();
            self.counters.bump("clock", "corrected", ready.len() as u64);
            for r in ready {
                self.process(r, o.now);
            }
            self.clock.held.store(0, Relaxed);
        }
        o.now
    }

    /// One reading: one Weir stamped before the first synchronisation is held
    /// until the correction is known (see [`Hold`]).
    fn reading(&mut self, r: Reading, now: i64) {
        let provisional = r.ts_source == TsSource::Unsynced;
        match self.hold.admit(r, self.clock.correction()) {
            Admitted::Ready(r) => {
                if provisional {
                    self.counters.bump("clock", "corrected", 1);
                }
                self.process(r, now);
            }
            Admitted::Held { evicted } => {
                self.clock.held.store(self.hold.len() as u64, Relaxed);
                if let Some(old) = evicted {
                    self.dead_letter_held(
                        old,
                        now,
                        "the hold for the system clock's synchronisation was full",
                    );
                }
            }
        }
    }

    fn process(&mut self, r: Reading, now: i64) {
        let input = Input::Reading(r);
        if self.tap.is_active() {
            self.tap_reading(&input);
        }
        self.step(|p, msgs| p.input(input, now, msgs));
    }

    fn dead_letter_held(&mut self, r: Reading, now: i64, why: &str) {
        self.counters.bump("clock", "unsynced_dead_lettered", 1);
        let d = crate::wire::DeadLetter {
            source: r.key.to_string(),
            reason: "clock_unsynced",
            detail: format!(
                "{why}; read at {} on Weir's unsynchronised timeline ({} ms before this message)",
                r.ts,
                now.saturating_sub(r.ts)
            ),
            payload: r.value.to_string(),
            received_at: now,
        };
        self.step(|p, msgs| p.input(Input::DeadLetter(d), now, msgs));
    }

    /// What `weir status` shows of the engine.
    fn view(&self) -> EngineView {
        let p = &self.processor;
        EngineView {
            watermarks: p.engine.watermarks().map(|(k, w)| (k.clone(), w)).collect(),
            alerts: p.detectors.active_alerts().map(alert_json).collect(),
            last_checkpoint_ms: self.last_checkpoint_ms,
        }
    }

    /// Shows a reading to `weir tail readings`.
    fn tap_reading(&self, input: &Input) {
        if let Input::Reading(r) = input {
            self.tap.send(Event::Reading(r.clone()));
        }
    }

    /// One input; a delivery the state already holds is only acknowledged again.
    fn input(&mut self, input: Input, now: i64) {
        let tapped = self.tap.is_active();
        let d = match input {
            Input::Delivery(d) => d,
            Input::Release(ack) => {
                self.seen.release(ack.pkid());
                self.acks.push(ack);
                return;
            }
            Input::Reading(r) => return self.reading(r, now),
            input => {
                if tapped {
                    self.tap_reading(&input);
                }
                return self.step(|p, msgs| p.input(input, now, msgs));
            }
        };
        match self.seen.admit(&d.meta) {
            Verdict::New => {
                for i in d.inputs {
                    if let Input::Reading(r) = i {
                        self.reading(r, now);
                        continue;
                    }
                    if tapped {
                        self.tap_reading(&i);
                    }
                    self.step(|p, msgs| p.input(i, now, msgs));
                }
            }
            Verdict::Repeat => Counters::add(&self.counters.ingest_redelivered, 1),
            Verdict::RetainedRepeat => {
                tracing::debug!(
                    pkid = d.meta.pkid,
                    "retained message already counted, not counted again"
                );
                Counters::add(&self.counters.ingest_redelivered, 1);
            }
        }
        self.acks.extend(d.ack);
    }

    /// Runs `f` on the processor, noting whether it raised an alert.
    fn step(&mut self, f: impl FnOnce(&mut Processor, &mut Vec<NewMessage>)) {
        let before = self.msgs.len();
        f(&mut self.processor, &mut self.msgs);
        for m in &self.msgs[before..] {
            self.buffered_msgs += 1;
            self.buffered_bytes += m.bytes();
        }
        if self.tap.is_active() {
            self.tap.messages(&self.msgs[before..]);
        }
    }

    /// Hands what was produced to the outbox's memory, where the uplink finds it
    /// at once, and returns: the answer comes to [`EngineTask::staged`] while the
    /// engine goes on (one batch at a time; what is produced meanwhile goes with the
    /// next). A commit queued before it is written first; the engine does not wait for it.
    async fn stage(&mut self) {
        if self.staging.is_some() || self.msgs.is_empty() {
            return;
        }
        if let Some(ha) = self.processor.homeassistant() {
            ha.before_send();
        }
        let msgs = std::mem::take(&mut self.msgs);
        match self.outbox.send_stage(msgs.clone()).await {
            Ok(answer) => self.staging = Some((answer, msgs)),
            Err(e) => self.staged(Err(e), msgs),
        }
    }

    /// Waits for the messages being staged, if any, and takes the answer.
    async fn stage_settled(&mut self) {
        if self.staging.is_some() {
            let result = stage_answered(&mut self.staging).await;
            if let Some((_, msgs)) = self.staging.take() {
                self.staged(result, msgs);
            }
        }
    }

    /// The outbox's answer to staging `msgs`. If staging failed (the outbox cannot
    /// read the file), the messages come back here and go with the next checkpoint's
    /// transaction instead.
    fn staged(
        &mut self,
        result: Result<crate::outbox::InsertReport, OutboxError>,
        msgs: Vec<NewMessage>,
    ) {
        let n = msgs.len() as u64;
        match result {
            Ok(report) => {
                // What the next checkpoint would write bounds the wait, not what was
                // produced: rows delivered meanwhile cost nothing.
                let (rows, bytes) = report.staged;
                self.buffered_msgs = rows + self.msgs.len();
                self.buffered_bytes = bytes + self.msgs.iter().map(NewMessage::bytes).sum::<u64>();
                Counters::add(&self.counters.produced, n);
                Counters::add(&self.counters.outbox_inserted, report.ids.len() as u64);
                self.account_dropped(&report);
                if !report.ids.is_empty() {
                    self.new_rows.notify_one();
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, messages = n, "cannot stage results; they go with the next checkpoint");
                // In front of what was produced since.
                let later = std::mem::replace(&mut self.msgs, msgs);
                self.msgs.extend(later);
            }
        }
    }

    /// A checkpoint now, waiting for it (at start and at the end): after the one in
    /// flight, if any, commits what was produced since together with the state now.
    async fn checkpoint(&mut self) {
        self.commit_settled().await;
        self.begin_checkpoint().await;
        self.commit_settled().await;
    }

    /// Waits for the commit in flight, if any, and takes its answer (see
    /// [`EngineTask::commit_finished`]).
    async fn commit_settled(&mut self) {
        if self.committing.is_some() {
            let result = commit_answered(&mut self.committing).await;
            self.commit_finished(result).await;
        }
    }

    /// Sends what was produced since the last checkpoint, with the state now, to the
    /// outbox as one commit, and returns: the engine goes on while the outbox writes it
    /// ([`EngineTask::commit_finished`] takes the answer). The state is taken here, so
    /// the checkpoint matches the messages of its commit: those staged before this call
    /// (the outbox runs commands in order) and `msgs`. The acknowledgements owed now are
    /// the ones it releases; those owed from now on wait for the next commit.
    async fn begin_checkpoint(&mut self) {
        debug_assert!(self.committing.is_none(), "one commit in flight at most");
        // Everything produced so far is staged first (the uplink may deliver it before
        // the commit), so the batch carries messages only when staging failed.
        self.stage_settled().await;
        if !self.msgs.is_empty() {
            self.stage().await;
            self.stage_settled().await;
        }
        self.due = false;
        self.buffered_msgs = 0;
        self.buffered_bytes = 0;
        if let Some(ha) = self.processor.homeassistant() {
            ha.before_send();
        }
        let msgs = std::mem::take(&mut self.msgs);
        let produced = msgs.len() as u64;
        let mut cp = checkpoint::take(
            &mut self.processor.engine,
            &mut self.processor.detectors,
            &self.seen,
            now_ms(),
        );
        let hold = self.hold.changes(crate::clock::boot_id());
        cp.hold = hold.added;
        cp.hold_delete_below = hold.delete_below;
        if msgs.is_empty()
            && cp.keys.is_empty()
            && self.acks.is_empty()
            && cp.hold.is_empty()
            && cp.hold_delete_below.is_none()
        {
            // Nothing changed: no write (an idle agent does not wear the card).
            return;
        }
        Counters::add(&self.counters.produced, produced);
        let taken = Taken {
            acks: std::mem::take(&mut self.acks),
            produced,
            seen: cp.seen.clone(),
            seen_mark: self.seen.mark(),
            hold: self.hold.mark(),
        };
        let answer = match self.outbox.send_commit(Batch::new(msgs, Some(cp))).await {
            Ok(answer) => answer,
            // Not queued (the thread is gone): answered at once, for the usual handling.
            Err(refused) => {
                let (reply, answer) = tokio::sync::oneshot::channel();
                let _ = reply.send(Err(refused));
                answer
            }
        };
        self.committing = Some(InFlight { answer, taken });
    }

    /// The commit in flight has answered. Committed: its acknowledgements are sent once
    /// the card has it (see `outbox::sync`). Failed (disk full, read-only card): the batch
    /// is held and retried here with capped backoff, the engine waiting: the channel
    /// fills, MQTT ingest stops reading (the broker keeps the readings) and the sensors
    /// apply their `when_full` policy. Only at shutdown, after a few more attempts, is a
    /// batch given up, and then it is counted and logged.
    async fn commit_finished(&mut self, result: CommitResult) {
        let Some(InFlight { taken, .. }) = self.committing.take() else {
            return;
        };
        let Taken {
            acks,
            produced,
            seen,
            seen_mark,
            hold,
        } = taken;
        let mut backoff = crate::uplink::backoff::Backoff::new(
            std::time::Duration::from_millis(100),
            std::time::Duration::from_secs(5),
        );
        let mut failures = 0u32;
        let mut result = result;
        loop {
            match result {
                Ok((report, durable)) => {
                    if failures > 0 {
                        tracing::warn!(
                            attempts = failures + 1,
                            "outbox writable again; held results committed"
                        );
                    }
                    Counters::add(&self.counters.checkpoints, 1);
                    self.last_checkpoint_ms = now_ms();
                    self.gauges.outbox_blocked.store(0, Relaxed);
                    self.account(&report, produced);
                    if !report.ids.is_empty() {
                        self.new_rows.notify_one();
                    }
                    // What changed since the state was taken goes with the next checkpoint.
                    self.seen.committed_entries(&seen, seen_mark);
                    self.hold.committed_at(hold);
                    if let Some(ha) = self.processor.homeassistant() {
                        ha.committed();
                    }
                    // Acknowledged once the card has it, not before; the engine goes on
                    // meanwhile (see `outbox::sync`).
                    self.syncing.push_back((durable, acks));
                    return;
                }
                Err((e, held)) => {
                    failures += 1;
                    if failures == 1 {
                        // ERROR: an operator must act (free space, replace the card).
                        tracing::error!(error = %e, messages = held.msgs.len(), "cannot write results to the outbox; holding them and retrying, ingest is paused");
                    }
                    let reason = BLOCKED_REASONS
                        .iter()
                        .position(|r| *r == e.blocked_reason());
                    self.gauges
                        .outbox_blocked
                        .store(reason.map_or(3, |i| i as u64 + 1), Relaxed);
                    if matches!(e, OutboxError::Closed)
                        || (self.stop.is_cancelled() && failures > 3)
                    {
                        // Unacknowledged MQTT readings come again at the next
                        // start; these results of local sensors are lost.
                        tracing::error!(error = %e, messages = held.msgs.len(), "giving up on held results at shutdown; the MQTT readings behind them were not acknowledged and will be redelivered at the next start, results of local sensors are lost");
                        for m in &held.msgs {
                            self.counters.bump(
                                "dropped",
                                &format!("outbox_error_{}", m.class.as_str()),
                                1,
                            );
                        }
                        // Not sent: the broker redelivers these deliveries.
                        drop(acks);
                        return;
                    }
                    // Retry when the uplink has deleted rows, or after the backoff.
                    // Holding is deliberate, not a hang: systemd's watchdog is fed on
                    // its own schedule meanwhile (the backoff reaches 5 s, more than
                    // half of a short WatchdogSec), and status requests are answered
                    // (the state does not change while held), so the engine is not
                    // reported stalled.
                    let delay = backoff.next_delay(fastrand::f64());
                    let view = self.view();
                    let (views, space_freed) = (&mut self.views, &self.space_freed);
                    let wait = async {
                        let sleep = tokio::time::sleep(delay);
                        tokio::pin!(sleep);
                        loop {
                            tokio::select! {
                                _ = space_freed.notified() => return,
                                _ = &mut sleep => return,
                                Some(reply) = views.recv() => {
                                    let _ = reply.send(view.clone());
                                }
                            }
                        }
                    };
                    self.watchdog.while_waiting(wait).await;
                    result = self.outbox.commit(held).await;
                }
            }
        }
    }

    fn account(&self, report: &crate::outbox::InsertReport, produced: u64) {
        // Rows handed over with the commit itself (staging had failed) entered the outbox now.
        Counters::add(&self.counters.outbox_inserted, produced);
        Counters::add(&self.counters.outbox_written, report.ids.len() as u64);
        self.account_dropped(report);
    }

    fn account_dropped(&self, report: &crate::outbox::InsertReport) {
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

/// What a commit's outbox answer is.
type CommitResult =
    Result<(crate::outbox::InsertReport, crate::outbox::Durable), (OutboxError, Batch)>;

/// The commit sent to the outbox and not answered yet, see [`EngineTask::begin_checkpoint`].
struct InFlight {
    answer: CommitAnswer,
    taken: Taken,
}

/// What was taken from the engine for a commit, to settle once it answers.
struct Taken {
    /// Owed when the state was taken: released by this commit once it is durable.
    acks: Vec<Ack>,
    /// Messages handed over with the commit itself (not staged).
    produced: u64,
    /// The delivery record's entries the checkpoint holds.
    seen: Vec<(u16, u64)>,
    /// The generations of the delivery record's whole records the checkpoint holds.
    seen_mark: crate::checkpoint::SeenMark,
    /// The held readings the checkpoint holds.
    hold: crate::clock::HoldMark,
}

/// The answer to the messages being staged; never, if there are none.
async fn stage_answered(
    staging: &mut Option<(StageAnswer, Vec<NewMessage>)>,
) -> Result<crate::outbox::InsertReport, OutboxError> {
    match staging {
        Some((answer, _)) => answer.await.unwrap_or(Err(OutboxError::Closed)),
        None => std::future::pending().await,
    }
}

/// The answer of the commit in flight; never, if there is none.
// The Err carries the batch by value on purpose, see `OutboxHandle::commit`.
#[allow(clippy::result_large_err)]
async fn commit_answered(committing: &mut Option<InFlight>) -> CommitResult {
    match committing {
        Some(c) => (&mut c.answer)
            .await
            .unwrap_or_else(|_| Err((OutboxError::Closed, Batch::default()))),
        None => std::future::pending().await,
    }
}

/// The oldest checkpoint's fsync, once it is done, with its acknowledgements.
async fn next_durable(
    syncing: &mut std::collections::VecDeque<(crate::outbox::Durable, Vec<Ack>)>,
) -> (Result<(), OutboxError>, Vec<Ack>) {
    let Some((durable, _)) = syncing.front_mut() else {
        return std::future::pending().await;
    };
    let result = durable.await.unwrap_or(Err(OutboxError::Closed));
    let acks = syncing.pop_front().map(|(_, a)| a).unwrap_or_default();
    (result, acks)
}

/// Sends the acknowledgements of a durable checkpoint. If the fsync failed they
/// are withheld: the state holds the readings' effect, so when the broker resends
/// them (at the next connection) they are recognised and acknowledged then.
fn release((result, acks): (Result<(), OutboxError>, Vec<Ack>)) {
    match result {
        Ok(()) => {
            for ack in acks {
                ack.send();
            }
        }
        Err(e) => {
            // ERROR: the card may be failing; an operator should look.
            tracing::error!(error = %e, withheld = acks.len(), "a checkpoint could not be made durable; its MQTT acknowledgements are withheld");
        }
    }
}

/// From when Weir could hear each key: local sensors (devices, simulations)
/// from the pipeline's start, every other key (MQTT) from when the ingest link
/// last came up; while it is down, their silence is held at "now".
struct Hearing {
    local: std::collections::HashSet<String>,
    link: Option<Arc<IngestLink>>,
    /// Not applied yet: the pipeline's start is still to be applied.
    fresh: bool,
    /// The link's `up_since_ms` last applied.
    applied_up: Option<i64>,
}

impl Hearing {
    fn new(cfg: &Config, link: Option<Arc<IngestLink>>) -> Self {
        let d = &cfg.devices;
        let local = (d.i2c.iter().map(|s| s.name.clone()))
            .chain(d.gpio.iter().map(|g| g.name.clone()))
            .chain(d.onewire.iter().map(|o| o.name.clone()))
            .chain(cfg.sims.iter().map(|s| s.name.clone()))
            .collect();
        Self {
            local,
            link,
            fresh: true,
            applied_up: None,
        }
    }

    /// Moves the engine's idle deadlines to what Weir could hear at `now`.
    /// Cheap while the link stays up: only a new connection touches the keys.
    fn apply(&mut self, engine: &mut crate::engine::Engine, now: i64) {
        if std::mem::take(&mut self.fresh) {
            engine.hear_from(now, |_| true);
        }
        let Some(link) = &self.link else { return };
        let local = &self.local;
        let remote = |k: &crate::reading::Key| !local.contains(&*k.sensor);
        match link.state().up_since_ms() {
            Some(up) if self.applied_up == Some(up) => {}
            Some(up) => {
                engine.hear_from(up, remote);
                self.applied_up = Some(up);
            }
            None => {
                engine.hear_from(now, remote);
                self.applied_up = None;
            }
        }
    }
}
