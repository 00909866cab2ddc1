//! Power cuts: nothing Weir acknowledged is lost when the power goes.
//!
//! Run by `cross/powercut.sh`, which builds the guest (Debian's arm64 kernel, a busybox
//! initramfs with the aarch64 `weir`) and names it in `WEIR_POWERCUT_KERNEL` and
//! `WEIR_POWERCUT_INITRD`; ignored in the ordinary suite, which has no emulated machine.
//!
//! The scenario: `weir` runs in `qemu-system-aarch64` with its state directory on a
//! virtual disk of its own (a raw ext4 image made here), ingesting QoS 2 from a Mosquitto
//! on the host (`10.0.2.2` through QEMU's user networking) that keeps what Weir has not
//! acknowledged, and sending its panes to a second Mosquitto. A publisher on the host
//! sends readings at a steady pace the whole time. QEMU is killed with SIGKILL at a random
//! moment after weir starts, `WEIR_POWERCUT_CUTS` times (default 12), and booted again on
//! the same disk each time: the guest's RAM, with its page cache, is gone, as at a power
//! cut (docs/storage.md, "Power cuts", says what the cache mode models). Then:
//! - at every boot `weir outbox verify` passes before weir starts (the file opens and
//!   `PRAGMA integrity_check` is clean);
//! - every window's result upstream (the last one received of its highest revision) has
//!   exactly the count and sum of the readings published for it: none lost (the broker
//!   forgot only what weir acknowledged), none counted twice;
//! - no revision ever reported more readings than the window has, and no revision was
//!   reported with two different results (a checkpoint undone after its panes went out).
//!
//! With `WEIR_POWERCUT_SYNCHRONOUS=OFF` the guest's weir runs its outbox with SQLite's
//! `synchronous=OFF` (the `WEIR_TEST_SQLITE_SYNCHRONOUS` hook): acknowledgements then go
//! out for commits that are still in the guest's page cache, and the test must fail.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use weir_tests::{Broker, Config, Publisher, Recorder, free_port, scratch, toml, wait_for};

const KEYS: i64 = 6;
/// Event time advances 100 ms per reading: 10 readings per key per 1 s window.
const STEP_MS: i64 = 100;
/// Readings per second per key on the wall clock (event time runs at the same pace).
const RATE: u64 = 10;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// One boot of the emulated machine; its console goes to `log`.
struct Vm {
    child: Child,
    log: PathBuf,
    started: Instant,
}

impl Vm {
    fn boot(dir: &Path, n: usize, disk: &Path, cfg: &Path) -> Self {
        let kernel = env("WEIR_POWERCUT_KERNEL")
            .unwrap_or_else(|| panic!("WEIR_POWERCUT_KERNEL unset: run cross/powercut.sh"));
        let initrd = env("WEIR_POWERCUT_INITRD")
            .unwrap_or_else(|| panic!("WEIR_POWERCUT_INITRD unset: run cross/powercut.sh"));
        let mut append = String::from("console=ttyAMA0 panic=-1 loglevel=3");
        if let Some(level) = env("WEIR_POWERCUT_SYNCHRONOUS") {
            append.push_str(&format!(" WEIR_TEST_SQLITE_SYNCHRONOUS={level}"));
        }
        let log = dir.join(format!("boot-{n:02}.log"));
        let out = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}"));
        // cache=writeback: the guest sees a volatile write cache and sends flushes, as
        // to an SD card; SIGKILL takes the guest's RAM (its page cache) with QEMU.
        let cache = env("WEIR_POWERCUT_CACHE").unwrap_or_else(|| "writeback".into());
        let child = Command::new("qemu-system-aarch64")
            .args(["-M", "virt", "-cpu", "cortex-a72", "-smp", "2", "-m", "512"])
            .args([
                "-nographic",
                "-no-reboot",
                "-kernel",
                &kernel,
                "-initrd",
                &initrd,
            ])
            .args(["-append", &append])
            .arg("-drive")
            .arg(format!(
                "file={},format=raw,if=none,id=state,cache={cache}",
                disk.display()
            ))
            .args(["-device", "virtio-blk-pci,drive=state"])
            .args([
                "-netdev",
                "user,id=net",
                "-device",
                "virtio-net-pci,netdev=net,romfile=",
            ])
            .arg("-fw_cfg")
            .arg(format!("name=opt/weir.toml,file={}", cfg.display()))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("qemu-system-aarch64: {e}"));
        Self {
            child,
            log,
            started: Instant::now(),
        }
    }

    fn console(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).replace('\r', ""))
            .unwrap_or_default()
    }

    /// The first console line containing `needle`, waiting at most `timeout`.
    /// (`None` as well when QEMU exited first.)
    fn wait_line(&mut self, needle: &str, timeout: Duration) -> Option<String> {
        wait_for(timeout, || {
            let found = self
                .console()
                .lines()
                .find(|l| l.contains(needle))
                .map(|l| Some(l.to_string()));
            found.or_else(|| self.child.try_wait().ok().flatten().map(|_| None))
        })
        .flatten()
    }

    /// The power cut: SIGKILL, nothing of the guest's RAM is written anywhere.
    fn cut(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.console()
    }
}

/// (count, sum) per (key, window start) of the readings 0..n of every key.
fn expected(base: i64, n: i64) -> BTreeMap<(String, i64), (i64, i64)> {
    let mut out = BTreeMap::new();
    for i in 0..n {
        for k in 0..KEYS {
            let ts = base + i * STEP_MS;
            let e = out
                .entry((format!("k{k}"), ts - ts.rem_euclid(1000)))
                .or_insert((0, 0));
            e.0 += 1;
            e.1 += value(i, k);
        }
    }
    out
}

fn value(i: i64, k: i64) -> i64 {
    (i * 7 + k) % 50
}

/// Per window and revision, every distinct (count, sum) received, in order of arrival.
type Results = BTreeMap<(String, i64), BTreeMap<i64, Vec<(i64, i64)>>>;

fn results(upstream: &Recorder) -> Results {
    let mut out: Results = BTreeMap::new();
    for m in upstream.messages() {
        let j = &m.json;
        if j["type"] != "pane" {
            continue;
        }
        let key = (
            j["sensor"].as_str().unwrap_or("").to_string(),
            j["window_start"].as_i64().unwrap_or(0),
        );
        let got = (
            j["count"].as_i64().unwrap_or(-1),
            j["sum"].as_f64().unwrap_or(f64::NAN) as i64,
        );
        let seen = out
            .entry(key)
            .or_default()
            .entry(j["revision"].as_i64().unwrap_or(0))
            .or_default();
        if !seen.contains(&got) {
            seen.push(got);
        }
    }
    out
}

/// The result a consumer ends with: the last one received of the highest revision.
fn finals(r: &Results) -> BTreeMap<(String, i64), (i64, i64)> {
    r.iter()
        .filter_map(|(k, revs)| {
            let (_, got) = revs.last_key_value()?;
            Some((k.clone(), *got.last()?))
        })
        .collect()
}

#[test]
#[ignore = "needs the emulated ARM machine: run cross/powercut.sh"]
fn power_cuts_lose_nothing_acknowledged_and_count_nothing_twice() {
    let cuts: usize = env("WEIR_POWERCUT_CUTS")
        .and_then(|c| c.parse().ok())
        .unwrap_or(12);
    let seed: u64 = env("WEIR_POWERCUT_SEED")
        .and_then(|c| c.parse().ok())
        .unwrap_or(15);
    let t_run = Instant::now();
    let dir = scratch();
    let ingest = Broker::start_new(dir.path());
    let mut upstream_broker = Broker::new(dir.path(), free_port());
    upstream_broker.start();
    let upstream = Recorder::persistent(upstream_broker.port, "weir/pc/#", "pc-consumer");

    // The state disk: a raw image with ext4, made without root.
    let disk = dir.path().join("state.img");
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(64 << 20))
        .unwrap_or_else(|e| panic!("{e}"));
    let mkfs = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "weir-state"])
        .arg(&disk)
        .status()
        .unwrap_or_else(|e| panic!("mkfs.ext4: {e}"));
    assert!(mkfs.success(), "mkfs.ext4 failed");

    // Both brokers at the host's address as the guest sees it.
    let cfg = Config::new("pc", dir.path())
        .upstream(upstream_broker.port)
        .set("uplink", "host", "10.0.2.2")
        .set("uplink", "reconnect_max", "500ms")
        .ingest(ingest.port, "weir-pc-ingest")
        .set("ingest", "host", "10.0.2.2")
        .topic("pc/+", "{2}", "v")
        .set("agent", "state_dir", "/state/weir")
        .engine(
            toml! { max_out_of_orderness = "2s", allowed_lateness = "10s", max_future_skew = "1d" },
        )
        .write();

    // Event time an hour ago, aligned to a window; readings in event-time order across
    // keys, so every window fires once, after all its readings.
    let base = (weir_tests::now_ms() - 3_600_000) / 1000 * 1000;
    let published = Arc::new(AtomicI64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut outcomes = Vec::new();
    let mut feeder = None;

    for n in 0..=cuts {
        let mut vm = Vm::boot(dir.path(), n, &disk, &cfg);
        let start = vm.wait_line("PC-START", Duration::from_secs(300));
        let Some(_) = start else {
            panic!("boot {n}: weir did not start\n{}", vm.cut());
        };
        let booted = vm.started.elapsed();
        if feeder.is_none() {
            // The first time: the load starts once weir's QoS 2 subscription exists.
            vm.wait_line("ingest connected", Duration::from_secs(120))
                .unwrap_or_else(|| panic!("weir did not connect\n{}", vm.console()));
            let (published, stop) = (published.clone(), stop.clone());
            let port = ingest.port;
            feeder = Some(std::thread::spawn(move || {
                let p = Publisher::connect(port);
                let t0 = Instant::now();
                let mut i = 0i64;
                while !stop.load(Ordering::Relaxed) {
                    for k in 0..KEYS {
                        let ts = base + i * STEP_MS;
                        let payload = format!(r#"{{"value": {}, "ts": {ts}}}"#, value(i, k));
                        p.send(&format!("pc/k{k}"), payload.into_bytes(), false);
                    }
                    i += 1;
                    if i % RATE as i64 == 0 {
                        // Every reading sent so far is the broker's (PUBACK) before it counts.
                        p.flush();
                        published.store(i, Ordering::Relaxed);
                    }
                    let due = Duration::from_millis(i as u64 * 1000 / RATE);
                    if let Some(wait) = due.checked_sub(t0.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
                p.flush();
                published.store(i, Ordering::Relaxed);
                // One reading per key an hour later: the watermark passes every window.
                for k in 0..KEYS {
                    let ts = base + i * STEP_MS + 3_600_000;
                    p.publish(
                        &format!("pc/k{k}"),
                        format!(r#"{{"value": 0, "ts": {ts}}}"#),
                    );
                }
                p.disconnect();
            }));
        }
        if n == cuts {
            // The last boot: no cut until everything has been counted.
            stop.store(true, Ordering::Relaxed);
            if let Some(f) = feeder.take() {
                f.join().unwrap_or_else(|_| panic!("publisher panicked"));
            }
            let want = expected(base, published.load(Ordering::Relaxed));
            // Until every window has its full count, or nothing has arrived for 60 s
            // (readings lost: the count is never reached).
            let (mut last_len, mut last_change) = (0, Instant::now());
            let done = wait_for(Duration::from_secs(900), || {
                // Panes only: weir's status messages keep coming.
                let msgs = upstream.with(|m| m.iter().filter(|m| m.json["type"] == "pane").count());
                if msgs != last_len {
                    (last_len, last_change) = (msgs, Instant::now());
                }
                let f = finals(&results(&upstream));
                let complete = want
                    .iter()
                    .all(|(k, v)| f.get(k).is_some_and(|got| got.0 >= v.0));
                (complete || last_change.elapsed() > Duration::from_secs(60)).then_some(complete)
            })
            .unwrap_or(false);
            // Let anything still queued arrive before the exact comparison.
            std::thread::sleep(Duration::from_secs(3));
            let console = vm.cut();
            outcomes.push(outcome(n, booted, None, &console));
            report(&outcomes, t_run.elapsed());
            check(&want, &results(&upstream), done, &console);
            break;
        }
        // A random moment after weir started: during its recovery, its reconnection,
        // or under load.
        let at = Duration::from_millis(rng.u64(200..10_000));
        std::thread::sleep(at);
        let console = vm.cut();
        outcomes.push(outcome(n, booted, Some(at), &console));
    }

    // After the last cut the outbox still opens: one more boot, its verify, no load.
    let mut vm = Vm::boot(dir.path(), cuts + 1, &disk, &cfg);
    let verify = vm.wait_line("PC-VERIFY", Duration::from_secs(300));
    let console = vm.cut();
    assert!(
        verify.as_deref().is_some_and(|l| l.contains("rc=0")),
        "the outbox does not verify after the last cut: {verify:?}\n{console}"
    );
    let failed: Vec<_> = outcomes
        .iter()
        .filter(|o| o.verify.contains("rc=") && !o.verify.contains("rc=0"))
        .collect();
    assert!(
        failed.is_empty(),
        "weir outbox verify failed at boot: {failed:?}"
    );
    eprintln!(
        "powercut: {cuts} cuts, {} windows exact, outbox verified at every boot, {:.0} s",
        expected(base, published.load(Ordering::Relaxed)).len(),
        t_run.elapsed().as_secs_f64()
    );
}

/// What one boot showed on its console.
#[derive(Debug)]
struct Outcome {
    boot: usize,
    /// From power-on to weir's start (kernel, modules, ext4 journal replay, verify).
    booted: Duration,
    /// How long after weir's start the power was cut (`None`: the final boot).
    cut_after: Option<Duration>,
    /// `weir outbox verify` at this boot, before weir started.
    verify: String,
    /// Whether weir restored a checkpoint, reconnected to ingest, or died.
    weir: String,
}

fn outcome(boot: usize, booted: Duration, cut_after: Option<Duration>, console: &str) -> Outcome {
    let line = |needle: &str| console.lines().find(|l| l.contains(needle)).map(str::trim);
    let verify = line("PC-VERIFY")
        .map(|l| {
            // "rc=0 /state/weir/outbox.db: ok (integrity_check ok, ...) class rows ..."
            let l = l.trim_start_matches("PC-VERIFY ");
            let l = l.split(" class ").next().unwrap_or(l);
            let l = l.split(". Check it").next().unwrap_or(l);
            l.replace(" /state/weir/outbox.db:", "")
        })
        .unwrap_or_else(|| "(no line)".into());
    let mut weir = Vec::new();
    if let Some(l) = line("state restored from the last checkpoint") {
        let keys = l.split("keys=").nth(1).and_then(|s| s.split(' ').next());
        weir.push(format!("restored (keys={})", keys.unwrap_or("?")));
    } else if console.contains("outbox open") {
        weir.push("fresh state".into());
    } else if console.contains("PC-START") {
        weir.push("cut while weir was starting (outbox not yet open)".into());
    }
    if console.contains("ingest connected") {
        weir.push("ingest connected".into());
    }
    for bad in ["PC-FAIL", "PC-EXIT", "panicked", "ERROR"] {
        if let Some(l) = line(bad) {
            weir.push(l.to_string());
        }
    }
    Outcome {
        boot,
        booted,
        cut_after,
        verify,
        weir: weir.join(", "),
    }
}

fn report(outcomes: &[Outcome], took: Duration) {
    eprintln!("boot | power-on to weir | cut after weir start | verify at boot | weir");
    for o in outcomes {
        eprintln!(
            "{:>4} | {:>6.1} s | {} | {} | {}",
            o.boot,
            o.booted.as_secs_f64(),
            o.cut_after
                .map_or("final boot".into(), |d| format!("{:.1} s", d.as_secs_f64())),
            o.verify,
            o.weir
        );
    }
    eprintln!("run so far: {:.0} s", took.as_secs_f64());
}

fn check(want: &BTreeMap<(String, i64), (i64, i64)>, got: &Results, complete: bool, console: &str) {
    let finals = finals(got);
    let mut problems = Vec::new();
    for (k, revs) in got {
        let Some(w) = want.get(k) else { continue };
        for (rev, results) in revs {
            if let Some(over) = results.iter().find(|r| r.0 > w.0) {
                problems.push(format!(
                    "{}@{} revision {rev}: count {} above its {} readings (counted twice)",
                    k.0, k.1, over.0, w.0
                ));
            }
            if results.len() > 1 {
                problems.push(format!(
                    "{}@{} revision {rev} reported with different results {results:?} (a checkpoint undone after its panes went out)",
                    k.0, k.1
                ));
            }
        }
    }
    for (k, w) in want {
        match finals.get(k) {
            Some(f) if f == w => {}
            Some(f) => problems.push(format!(
                "{}@{}: final (count, sum) {f:?}, published {w:?}{}",
                k.0,
                k.1,
                if f.0 < w.0 { " (readings lost)" } else { "" }
            )),
            None => problems.push(format!("{}@{}: no result upstream", k.0, k.1)),
        }
    }
    let lost: i64 = want
        .iter()
        .map(|(k, w)| (w.0 - finals.get(k).map_or(0, |f| f.0)).max(0))
        .sum();
    eprintln!(
        "windows: {}, readings published: {}, lost: {lost}, problems: {}",
        want.len(),
        want.values().map(|w| w.0).sum::<i64>(),
        problems.len()
    );
    let seen: BTreeSet<&String> = want.keys().map(|k| &k.0).collect();
    assert!(
        problems.is_empty() && complete,
        "{} problems over {} windows of {} keys (first 20):\n{}\nlast console:\n{console}",
        problems.len(),
        want.len(),
        seen.len(),
        problems
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
