//! `weir run`: load the config, start logging, run the pipeline until SIGTERM or
//! SIGINT. A second signal exits at once.
//!
//! SIGHUP reloads: the file is checked first; if it is valid the pipeline stops
//! gracefully (everything produced so far is committed to the outbox) and starts
//! again with the new configuration, in the same process. If it is not, the
//! running pipeline is untouched and the reason is logged. Under systemd the
//! reload is bracketed by `RELOADING=1` and `READY=1`, shutdown starts with
//! `STOPPING=1` (see [`crate::supervise`]).
//!
//! The control socket (and the metrics endpoint, when configured) belong to the process,
//! not to one pipeline: they are opened once from the first configuration and keep
//! serving across reloads (a changed `runtime_dir` or `[metrics] listen` takes a restart).

use std::path::Path;
use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use super::exit;
use crate::config::Config;
use crate::control::hub::Hub;
use crate::control::server::ControlSocket;
use crate::pipeline;
use crate::supervise::Supervisor;

/// Runs the daemon; returns the process exit code.
pub fn run(config: &Path, log: &str) -> u8 {
    let log = crate::control::logging::init(log);
    let cfg = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            // Logging goes to stderr (the journal under systemd): said once, there.
            tracing::error!("invalid configuration: {e}");
            return exit::CONFIG;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("weir-worker")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit::FAILURE;
        }
    };
    rt.block_on(async {
        let sup = Supervisor::from_env();
        let shutdown = CancellationToken::new();
        if let Err(e) = watch_signals(shutdown.clone(), &sup) {
            eprintln!("error: cannot install signal handlers: {e}");
            return exit::FAILURE;
        }
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: cannot install signal handlers: {e}");
                return exit::FAILURE;
            }
        };
        let hub = Arc::new(Hub::new(config.to_path_buf(), log, shutdown.clone()));
        let control_stop = CancellationToken::new();
        let control = control_tasks(&cfg, &hub, &control_stop).await;
        let code = match supervise(config, cfg, &shutdown, &sup, &mut hup, &hub).await {
            Ok(()) => exit::OK,
            Err(e) => {
                tracing::error!("{e}");
                failure_code(&e)
            }
        };
        control_stop.cancel();
        for task in control {
            // The socket file is removed when its task ends.
            let _ = task.await;
        }
        code
    })
}

/// Starts the control socket's task and, when configured, the metrics endpoint's. A
/// failure (another weir answers on the socket, the directory cannot be created, the
/// port is taken) is logged as an ERROR and the daemon runs without it: the pipeline
/// matters more than its dashboard.
async fn control_tasks(
    cfg: &Config,
    hub: &Arc<Hub>,
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    match ControlSocket::bind(&cfg.control_socket()) {
        Ok(sock) => {
            tracing::info!(path = %cfg.control_socket().display(), "control socket open");
            tasks.push(tokio::spawn(sock.serve(hub.clone(), stop.clone())));
        }
        // ERROR: weir status, tail and metrics will not reach this daemon.
        Err(e) => tracing::error!("{e}; running without the control socket"),
    }
    if let Some(addr) = cfg.metrics_listen {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => {
                tracing::info!(%addr, "metrics endpoint listening (GET /metrics)");
                tasks.push(tokio::spawn(crate::control::http::serve(
                    l,
                    hub.clone(),
                    stop.clone(),
                )));
            }
            Err(e) => {
                tracing::error!(%addr, error = %e, "cannot listen for [metrics]; running without the endpoint")
            }
        }
    }
    tasks
}

/// A read-only state directory gets its own exit code: the unit can stop
/// restarting, and the technician knows to look at the disk, not at weir. So
/// does a damaged outbox (or one from a newer Weir): bad data, not a passing
/// failure, so systemd does not restart into the same error.
fn failure_code(e: &pipeline::PipelineError) -> u8 {
    use crate::outbox::OutboxError;
    match e {
        pipeline::PipelineError::Outbox(OutboxError::ReadOnly { .. }) => exit::READ_ONLY,
        pipeline::PipelineError::Outbox(
            OutboxError::Corrupt { .. } | OutboxError::NewerSchema { .. },
        ) => exit::DATA,
        pipeline::PipelineError::StateDir { source, .. }
            if source.kind() == std::io::ErrorKind::ReadOnlyFilesystem =>
        {
            exit::READ_ONLY
        }
        _ => exit::FAILURE,
    }
}

/// Runs pipelines one after the other: the first with `cfg`, then one per valid
/// SIGHUP reload, until `shutdown`.
async fn supervise(
    path: &Path,
    mut cfg: Config,
    shutdown: &CancellationToken,
    sup: &Supervisor,
    hup: &mut tokio::signal::unix::Signal,
    hub: &Arc<Hub>,
) -> Result<(), pipeline::PipelineError> {
    loop {
        let stop = shutdown.child_token();
        let run = pipeline::run(cfg, stop.clone(), sup, hub);
        tokio::pin!(run);
        let next = loop {
            tokio::select! {
                r = &mut run => return r,
                _ = hup.recv() => match Config::load(path) {
                    Ok(next) => break next,
                    Err(e) => tracing::error!(
                        "reload refused, still running the previous configuration: {e}"
                    ),
                },
            }
        };
        tracing::info!(config = %path.display(), "reloading: restarting the pipeline with the new configuration");
        sup.notifier.reloading();
        stop.cancel();
        run.await?;
        if shutdown.is_cancelled() {
            // A stop during the reload: the held readings parked for the next
            // pipeline are in the last checkpoint too, and come back at the next start.
            let _ = crate::clock::global().take_parked();
            return Ok(());
        }
        cfg = next;
    }
}

fn watch_signals(shutdown: CancellationToken, sup: &Supervisor) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let notifier = sup.notifier.clone();
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            if !first {
                tracing::warn!(
                    signal = name,
                    "second signal: exiting now; the outbox keeps what it has"
                );
                std::process::exit(130);
            }
            first = false;
            tracing::info!(signal = name, "shutdown requested");
            notifier.stopping();
            shutdown.cancel();
        }
    });
    Ok(())
}
