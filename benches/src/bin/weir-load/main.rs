//! `weir-load`: Weir end to end under load, reproducible with one command.
//!
//! Starts two private Mosquitto brokers on free loopback ports (the local ingest
//! broker and the upstream one), measures the plain-subscriber ceiling of the
//! local broker, writes a Weir config, starts the real `weir run`, publishes a
//! disordered stream with anomalies over K keys, subscribes upstream, and checks
//! that every window, alert and late reading arrived and that Weir's counters
//! balance. Prints a one-line summary, writes JSON, exits 1 on loss or imbalance.
//! See `benches/README.md` for the options and the output fields.

mod collect;
mod procs;
mod publish;
mod report;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use weir_benches::workload::{Expect, Kind, Params, Workload};

use procs::{Mosquitto, Weir};

/// Command-line options.
#[derive(Parser, Debug, Clone)]
#[command(about = "Weir end to end under load: throughput, latency, loss, CPU and memory")]
pub struct Args {
    /// Readings per second; 0 publishes as fast as the broker takes them.
    #[arg(long, default_value_t = 5000.0)]
    pub rate: f64,
    /// Distinct keys (sensor d000000.. , metric v), round-robin.
    #[arg(long, default_value_t = 1000)]
    pub keys: u32,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// Share of readings late but within allowed_lateness.
    #[arg(long, default_value_t = 0.02)]
    pub late: f64,
    /// Share of readings beyond allowed_lateness (published on `late`).
    #[arg(long, default_value_t = 0.005)]
    pub very_late: f64,
    /// Share of readings sent twice.
    #[arg(long, default_value_t = 0.005)]
    pub duplicates: f64,
    /// Share of devices with a skewed clock (-5 min .. +1 min).
    #[arg(long, default_value_t = 0.05)]
    pub skewed_keys: f64,
    /// Share of readings that are anomalies (above the threshold).
    #[arg(long, default_value_t = 0.001)]
    pub anomalies: f64,
    /// Weir's [engine] max_keys.
    #[arg(long, default_value_t = 10_000)]
    pub max_keys: u32,
    /// Tumbling window size, ms.
    #[arg(long, default_value_t = 1000)]
    pub window_ms: i64,
    /// max_out_of_orderness, ms.
    #[arg(long, default_value_t = 500)]
    pub ooo_ms: i64,
    /// allowed_lateness, ms.
    #[arg(long, default_value_t = 2000)]
    pub lateness_ms: i64,
    /// idle_timeout, ms (keep it above a key's interval, keys / rate).
    #[arg(long, default_value_t = 5000)]
    pub idle_timeout_ms: i64,
    /// [agent] checkpoint_interval, ms.
    #[arg(long, default_value_t = 20)]
    pub checkpoint_ms: u64,
    /// Mosquitto max_inflight_messages and Weir's broker_max_inflight.
    #[arg(long, default_value_t = 10_000)]
    pub broker_inflight: u32,
    /// Seconds of the plain-subscriber baseline (as fast as possible); 0 skips it.
    #[arg(long, default_value_t = 10.0)]
    pub baseline: f64,
    /// Restart the upstream broker every this many seconds (0: never).
    #[arg(long, default_value_t = 0.0)]
    pub restart_upstream_every: f64,
    /// Seconds the upstream broker stays down at each restart.
    #[arg(long, default_value_t = 3.0)]
    pub restart_down: f64,
    /// Seconds to wait, after the last publish, idle_timeout and the end marker,
    /// for everything expected to arrive.
    #[arg(long, default_value_t = 60.0)]
    pub drain_timeout: f64,
    /// The weir binary.
    #[arg(long, default_value = "target/release/weir")]
    pub weir: PathBuf,
    /// Write the JSON report here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Keep brokers' and weir's files in this directory (default: a temporary one).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Seed of the workload.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// A name for the run, copied into the report.
    #[arg(long, default_value = "")]
    pub label: String,
}

/// Wall clock, ms since the epoch, with sub-millisecond precision.
pub fn now_ms_f() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// The load averages from /proc/loadavg.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn weir_config(a: &Args, dir: &std::path::Path, local: u16, upstream: u16) -> String {
    format!(
        r#"[agent]
device = "load"
state_dir = "{state}"
runtime_dir = "{run}"
checkpoint_interval = "{cp}ms"
shutdown_grace = "2s"

[engine]
max_out_of_orderness = "{ooo}ms"
allowed_lateness = "{l}ms"
idle_timeout = "{idle}ms"
max_keys = {max_keys}

[engine.window]
size = "{w}ms"

[uplink]
host = "127.0.0.1"
port = {upstream}
status_interval = "1s"
max_rate = 0

[ingest]
host = "127.0.0.1"
port = {local}
broker_max_inflight = {inflight}

[[ingest.topic]]
filter = "load/+/+"
sensor = "{{2}}"
metric = "{{3}}"

[[detector]]
name = "hot"
kind = "threshold"
high = {high:.1}
hysteresis = {hyst:.1}
clear_after = "0s"

[[detector]]
name = "unusual"
kind = "zscore"
"#,
        state = dir.join("state").display(),
        run = dir.join("run").display(),
        cp = a.checkpoint_ms,
        ooo = a.ooo_ms,
        l = a.lateness_ms,
        idle = a.idle_timeout_ms,
        max_keys = a.max_keys,
        w = a.window_ms,
        inflight = a.broker_inflight,
        high = weir_benches::workload::HIGH,
        hyst = weir_benches::workload::HYSTERESIS,
    )
}

/// Baseline: how fast a plain QoS 1 subscriber on the local broker receives the
/// same stream (as fast as possible, `secs` of publishing). Returns
/// (published, received, seconds from first publish to last receipt).
async fn baseline(a: &Args, params: &Params, port: u16) -> Result<(u64, u64, f64)> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let got = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let last = Arc::new(Mutex::new(0.0f64));
    let mut opts = MqttOptions::new("weir-load-baseline-sub", "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut ev) = AsyncClient::new(opts, 64);
    client.subscribe("base/+/+", QoS::AtLeastOnce).await?;
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = ev.poll().await? {
            break;
        }
    }
    let (g, l) = (got.clone(), last.clone());
    let task = tokio::spawn(async move {
        while let Ok(e) = ev.poll().await {
            if let Event::Incoming(Packet::Publish(_)) = e {
                g.fetch_add(1, Relaxed);
                *l.lock().unwrap_or_else(|e| e.into_inner()) = now_ms_f();
            }
        }
    });
    let p = publish::Publisher::connect(port, "weir-load-baseline-pub");
    let mut w = Workload::new(params.clone());
    let ph = publish::run(
        &p,
        &mut w,
        None,
        "base",
        0.0,
        Duration::from_secs_f64(a.baseline),
    )
    .await?;
    let end = Instant::now() + Duration::from_secs(60);
    while got.load(Relaxed) < ph.count && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p.close().await;
    let _ = client.disconnect().await;
    task.abort();
    let last = *last.lock().unwrap_or_else(|e| e.into_inner());
    Ok((ph.count, got.load(Relaxed), (last - ph.first_ms) / 1000.0))
}

fn main() -> Result<()> {
    let a = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let ok = rt.block_on(run(a))?;
    std::process::exit(if ok { 0 } else { 1 });
}

async fn run(a: Args) -> Result<bool> {
    anyhow::ensure!(
        a.weir.exists(),
        "{} not found (build it, or pass --weir)",
        a.weir.display()
    );
    let tmp = tempfile::tempdir()?;
    let dir = a.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let load_before = loadavg();
    let params = Params {
        keys: a.keys,
        seed: a.seed,
        late: a.late,
        very_late: a.very_late,
        duplicates: a.duplicates,
        skewed_keys: a.skewed_keys,
        anomalies: a.anomalies,
        max_keys: a.max_keys,
        window_ms: a.window_ms,
        ooo_ms: a.ooo_ms,
        lateness_ms: a.lateness_ms,
    };
    let local = Mosquitto::start(&dir, "local", a.broker_inflight)?;
    let upstream = Arc::new(Mutex::new(Mosquitto::start(
        &dir,
        "upstream",
        a.broker_inflight,
    )?));
    let up_port = upstream.lock().unwrap_or_else(|e| e.into_inner()).port;

    let base = if a.baseline > 0.0 {
        Some(baseline(&a, &params, local.port).await?)
    } else {
        None
    };

    // Sessions first, so nothing published or emitted before weir or the
    // collector subscribes is lost.
    collect::create_session(local.port, "weir-load-ingest", "load/+/+").await?;
    let up = collect::start(up_port, "weir-load-collector", "weir/load/#").await;
    let config = dir.join("weir.toml");
    std::fs::write(&config, weir_config(&a, &dir, local.port, up_port))?;
    let mut weir = Weir::start(&a.weir, &config, &dir)?;
    // READY: the first status message upstream.
    let end = Instant::now() + Duration::from_secs(60);
    while up
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .status
        .is_none()
    {
        anyhow::ensure!(
            !weir.exited(),
            "weir exited: {}",
            std::fs::read_to_string(&weir.log)?
        );
        anyhow::ensure!(Instant::now() < end, "weir sent no status within 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let samples = procs::sampler(weir.pid(), Duration::from_millis(200), stop.clone());

    let restarts = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let restarter = (a.restart_upstream_every > 0.0).then(|| {
        let (up, stop, n) = (upstream.clone(), stop.clone(), restarts.clone());
        let (every, down) = (a.restart_upstream_every, a.restart_down);
        std::thread::spawn(move || restart_loop(&up, &stop, &n, every, down))
    });

    let pubr = publish::Publisher::connect(local.port, "weir-load-pub");
    let mut w = Workload::new(params.clone());
    let mut expect = Expect::new(&params);
    let dur = Duration::from_secs_f64(a.duration);
    let mut ph = publish::run(&pubr, &mut w, Some(&mut expect), "load", a.rate, dur).await?;
    // End marker: key 0 normal (clears any episode), then an anomaly. Ingest is in
    // order, so its alert means everything before it was processed.
    let mut marker = (0, 0);
    for kind in [Kind::Normal, Kind::Anomaly] {
        let r = w.make(0, kind, weir::reading::now_ms());
        let at = pubr.send(&r, "load").await?;
        expect.observe(&r);
        ph.count += 1;
        ph.last_ms = at;
        marker = (r.key, r.ts);
        if kind == Kind::Anomaly {
            ph.anomalies.insert(marker, at);
        }
    }
    let published = ph.count;
    let wait_end = Instant::now()
        + Duration::from_secs_f64(a.drain_timeout + a.idle_timeout_ms as f64 / 1000.0);
    let mut end_ms = None;
    loop {
        {
            let u = up.lock().unwrap_or_else(|e| e.into_inner());
            if end_ms.is_none() {
                end_ms = u.alerts.get(&marker).copied();
            }
            let complete = end_ms.is_some()
                && u.late >= expect.late
                && expect.alerts.iter().all(|k| u.alerts.contains_key(k))
                && expect
                    .windows
                    .iter()
                    .all(|(k, &c)| u.panes.get(k).is_some_and(|p| p.1 == u64::from(c)));
            let counted = u.status.as_ref().is_some_and(|(s, _)| {
                s["counters"]["mqtt_messages"].as_u64().unwrap_or(0)
                    >= published + s["counters"]["ingest_redelivered"].as_u64().unwrap_or(0)
            });
            if (complete && counted) || Instant::now() > wait_end || weir.exited() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // One more status, emitted after everything was processed.
    let after = now_ms_f();
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        let fresh = up
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .status
            .as_ref()
            .is_some_and(|(s, _)| s["emitted_at"].as_f64().unwrap_or(0.0) > after);
        if fresh {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Relaxed);
    if let Some(t) = restarter {
        let _ = t.join();
    }
    let crashed = weir.exited();
    pubr.close().await;
    weir.stop(Duration::from_secs(10));
    let load_after = loadavg();
    let samples = samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let u = up.lock().unwrap_or_else(|e| e.into_inner());
    let r = report::build(report::Inputs {
        args: &a,
        workload: &w,
        expect: &expect,
        phase: &ph,
        end_ms,
        upstream: &u,
        samples: &samples,
        baseline: base,
        restarts: restarts.load(Relaxed),
        crashed,
        load: (load_before, load_after),
    });
    if let Some(out) = &a.out {
        std::fs::write(out, serde_json::to_string_pretty(&r)?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    println!("{}", report::summary(&r));
    if crashed {
        eprintln!(
            "weir exited during the run; its log:\n{}",
            std::fs::read_to_string(&weir.log)?
        );
    }
    Ok(r["ok"] == true)
}

fn restart_loop(
    up: &Mutex<Mosquitto>,
    stop: &AtomicBool,
    n: &std::sync::atomic::AtomicU64,
    every: f64,
    down: f64,
) {
    let mut next = Instant::now() + Duration::from_secs_f64(every);
    while !stop.load(Relaxed) {
        if Instant::now() >= next {
            let mut b = up.lock().unwrap_or_else(|e| e.into_inner());
            b.stop();
            std::thread::sleep(Duration::from_secs_f64(down));
            if let Err(e) = b.restart() {
                eprintln!("upstream restart failed: {e}");
            }
            n.fetch_add(1, Relaxed);
            next = Instant::now() + Duration::from_secs_f64(every);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
