//! `weir run`: load the config, start logging, run the pipeline until SIGTERM or
//! SIGINT. A second signal exits at once.

use std::path::Path;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use super::exit;
use crate::config::Config;
use crate::pipeline;

/// Runs the daemon; returns the process exit code.
pub fn run(config: &Path, log: &str) -> u8 {
    init_logging(log);
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
        let shutdown = CancellationToken::new();
        if let Err(e) = watch_signals(shutdown.clone()) {
            eprintln!("error: cannot install signal handlers: {e}");
            return exit::FAILURE;
        }
        match pipeline::run(cfg, shutdown).await {
            Ok(()) => exit::OK,
            Err(e) => {
                tracing::error!("{e}");
                exit::FAILURE
            }
        }
    })
}

fn watch_signals(shutdown: CancellationToken) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
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
            shutdown.cancel();
        }
    });
    Ok(())
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
