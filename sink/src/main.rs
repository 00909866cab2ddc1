//! `weir-sink`: consumes a Weir fleet's upstream MQTT messages into PostgreSQL.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Writes a Weir fleet's panes, alerts, late readings, dead letters and status into
/// PostgreSQL (schema in docs/fleet.md). Run several with the same --group and different
/// --client-id to share the load; restart each with its own --client-id.
#[derive(Parser, Debug)]
#[command(name = "weir-sink", version)]
struct Args {
    /// Upstream broker, HOST:PORT.
    #[arg(long, env = "WEIR_SINK_MQTT", default_value = "127.0.0.1:1883")]
    mqtt: String,
    /// MQTT client id: unique per sink process, and the same when it restarts (its
    /// persistent session holds what it has not acknowledged).
    #[arg(long, env = "WEIR_SINK_CLIENT_ID", default_value = "weir-sink-1")]
    client_id: String,
    /// MQTT user name (the password comes from WEIR_SINK_MQTT_PASSWORD).
    #[arg(long, env = "WEIR_SINK_MQTT_USER")]
    mqtt_user: Option<String>,
    /// Topic filter to consume (repeatable).
    #[arg(long = "topic", default_value = "weir/+/#")]
    topics: Vec<String>,
    /// Shared-subscription group: sinks with the same group split the messages
    /// (`$share/<group>/<filter>`). An empty string subscribes without sharing.
    #[arg(long, default_value = "weir-sink")]
    group: String,
    /// PostgreSQL connection string: `host=... port=... user=... dbname=...` or
    /// `postgres://user@host:port/db` (password through PGPASSWORD-style `password=`).
    #[arg(long, env = "WEIR_SINK_DATABASE")]
    database: String,
    /// Most messages per transaction.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// MQTT keep-alive in seconds.
    #[arg(long, default_value_t = 30)]
    keep_alive: u64,
    /// No guard session. With a group, the sink otherwise also holds `<client-id>-guard`, a
    /// plain persistent subscription that writes what a broker restart hides from the group
    /// (Mosquitto 2.0 does not persist shared subscriptions; docs/fleet.md).
    #[arg(long, env = "WEIR_SINK_NO_GUARD", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    no_guard: bool,
}

fn main() -> std::process::ExitCode {
    // `WEIR_SINK_LOG`: `level` or `target=level,...` (tracing-subscriber's `Targets`).
    let filter = std::env::var("WEIR_SINK_LOG")
        .ok()
        .and_then(|f| f.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(filter)
        .init();
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    let a = Args::parse();
    let (host, port) = a
        .mqtt
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .with_context(|| {
            format!(
                "--mqtt {:?}: expected HOST:PORT, e.g. 127.0.0.1:1883",
                a.mqtt
            )
        })?;
    anyhow::ensure!(a.batch > 0, "--batch must be at least 1");
    let credentials = a.mqtt_user.map(|u| {
        let p = std::env::var("WEIR_SINK_MQTT_PASSWORD").unwrap_or_default();
        (u, p)
    });
    let opts = weir_sink::run::Options {
        host,
        port,
        client_id: a.client_id,
        credentials,
        topics: a.topics,
        group: (!a.group.is_empty()).then_some(a.group),
        database: a.database,
        batch: a.batch,
        keep_alive: Duration::from_secs(a.keep_alive.max(5)),
        guard: !a.no_guard,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("stop requested");
            let _ = stop_tx.send(true);
        });
        weir_sink::run::run(opts, stop_rx).await
    })?;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
