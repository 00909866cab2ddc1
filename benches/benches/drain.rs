//! End-to-end drain: a backlog in a real outbox file, delivered by the real uplink
//! (`weir::uplink::Uplink`: QoS 1, a row deleted on its PUBACK, `max_inflight` 64, no
//! rate limit) to a real Mosquitto started here on a free loopback port, with a
//! subscriber counting what arrives.
//!
//! Not criterion: one run of the big case is a minute of I/O. Prints a table:
//! `cargo bench -p weir-benches --bench drain` (a 50,000-row backlog, then 100 MB;
//! `WEIR_DRAIN_MB` changes the second). Without `--bench` (e.g. `cargo test
//! --benches`) it runs a 2,000-row smoke case only.
#![allow(missing_docs, clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use tempfile::TempDir;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use weir::config::Config;
use weir::metrics::Counters;
use weir::outbox::{Outbox, OutboxConfig, OutboxHandle};
use weir::uplink::{LinkStatus, Uplink};
use weir_benches::pane_message;

struct Mosquitto {
    child: Child,
    port: u16,
}

impl Mosquitto {
    fn start(dir: &std::path::Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        // No persistence; the subscriber's queue is unbounded so that a slow subscriber
        // delays delivery instead of losing messages.
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"),
        )
        .unwrap();
        // Started as root, mosquitto drops to its own user, which must read the file.
        let _ = Command::new("chmod").arg("755").arg(dir).status();
        let _ = Command::new("chmod").arg("644").arg(&conf).status();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto must be installed (scripts/deps.sh)");
        let end = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < end, "mosquitto did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Counts the panes arriving on `weir/bench/agg/#` (QoS 1).
fn subscriber(port: u16) -> Arc<AtomicU64> {
    let mut opts = MqttOptions::new(format!("drain-bench-sub-{port}"), "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut connection) = Client::new(opts, 64);
    let count = Arc::new(AtomicU64::new(0));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn({
        let (count, client) = (count.clone(), client.clone());
        move || {
            // The client lives as long as the connection is read.
            let _client = client;
            for ev in connection.iter() {
                match ev {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(_))) => {
                        count.fetch_add(1, Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
    });
    client
        .subscribe("weir/bench/agg/#", QoS::AtLeastOnce)
        .unwrap();
    rx.recv_timeout(Duration::from_secs(10))
        .expect("subscriber not subscribed within 10 s");
    count
}

struct Figures {
    rows: u64,
    bytes: u64,
    db_bytes: u64,
    fill: Duration,
    drained: Duration,
    received: Duration,
}

/// Fills an outbox with `rows` panes (or until `max_bytes` of topic + payload), then
/// drains it through the uplink to `broker`.
fn run(broker: &Mosquitto, rows: u64, max_bytes: u64) -> Figures {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("outbox.db");
    let mut outbox = Outbox::open(&OutboxConfig {
        path: path.clone(),
        max_bytes: 1 << 40,
    })
    .unwrap();
    let t = Instant::now();
    let (mut n, mut bytes) = (0u64, 0u64);
    while n < rows && bytes < max_bytes {
        // Batches of 512, as the engine task commits them.
        let batch: Vec<_> = (n..(n + 512).min(rows)).map(pane_message).collect();
        bytes += batch.iter().map(|m| m.bytes()).sum::<u64>();
        n += batch.len() as u64;
        outbox.insert(&batch).unwrap();
    }
    let fill = t.elapsed();
    let db_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
        + std::fs::metadata(format!("{}-wal", path.display()))
            .map(|m| m.len())
            .unwrap_or(0);

    let received = subscriber(broker.port);
    let cfg = Config::parse(
        &format!(
            // A config must name a source; the sim sensor is not run here.
            "[agent]\ndevice = \"bench\"\n[uplink]\nhost = \"127.0.0.1\"\nport = {}\n\
             max_rate = 0\nclient_id = \"drain-bench\"\n[[sim]]\nname = \"unused\"\n",
            broker.port
        ),
        None,
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (handle, thread) = OutboxHandle::spawn(outbox);
    let counters = Arc::new(Counters::default());
    let uplink = Uplink {
        cfg: cfg.uplink,
        status_topic: "weir/bench/status".into(),
        offline_payload: b"offline".to_vec(),
        status: Box::new(|| b"{}".to_vec()),
        outbox: handle,
        counters: counters.clone(),
        link: Arc::new(LinkStatus::default()),
        new_rows: Arc::new(Notify::new()),
        space_freed: Arc::new(Notify::new()),
        retained: Vec::new(),
    };
    let drain = CancellationToken::new();
    let t = Instant::now();
    let task = rt.spawn(uplink.run(drain.clone(), Duration::from_secs(5)));
    let (mut drained, mut got) = (None, None);
    let limit = Duration::from_secs(1800);
    while (drained.is_none() || got.is_none()) && t.elapsed() < limit {
        if drained.is_none() && counters.acked.load(Relaxed) >= n {
            drained = Some(t.elapsed());
        }
        if got.is_none() && received.load(Relaxed) >= n {
            got = Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    drain.cancel();
    rt.block_on(task).unwrap();
    drop(rt);
    thread.join().unwrap();
    Figures {
        rows: n,
        bytes,
        db_bytes,
        fill,
        drained: drained.expect("the backlog was not acknowledged within 30 minutes"),
        received: got.expect("the subscriber did not receive every row within 30 minutes"),
    }
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let mb: u64 = std::env::var("WEIR_DRAIN_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let cases: Vec<(String, u64, u64)> = if bench {
        vec![
            ("50,000 rows".into(), 50_000, u64::MAX),
            (format!("{mb} MB"), u64::MAX, mb * 1_000_000),
        ]
    } else {
        vec![("smoke: 2,000 rows".into(), 2_000, u64::MAX)]
    };
    let dir = TempDir::new().unwrap();
    let broker = Mosquitto::start(dir.path());
    println!(
        "| backlog | rows | topic+payload | file | fill (batches of 512) | drained (all PUBACKed) | rows/s | MB/s | last row at subscriber |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, rows, max_bytes) in cases {
        let f = run(&broker, rows, max_bytes);
        let s = f.drained.as_secs_f64();
        println!(
            "| {name} | {} | {:.1} MB | {:.1} MB | {:.2} s ({:.0} rows/s) | {s:.2} s | {:.0} | {:.2} | {:.2} s |",
            f.rows,
            f.bytes as f64 / 1e6,
            f.db_bytes as f64 / 1e6,
            f.fill.as_secs_f64(),
            f.rows as f64 / f.fill.as_secs_f64(),
            f.rows as f64 / s,
            f.bytes as f64 / 1e6 / s,
            f.received.as_secs_f64(),
        );
    }
}
