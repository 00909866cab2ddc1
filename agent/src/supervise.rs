//! systemd supervision: the `sd_notify` datagram protocol (`READY=1`,
//! `RELOADING=1`, `STOPPING=1`, `WATCHDOG=1`) and the watchdog's schedule.
//!
//! Invariants:
//! - Without `NOTIFY_SOCKET` (not under systemd, or `Type=simple`) every
//!   notification is a no-op; a failed send is logged at debug and never fatal,
//!   because supervision must not take the daemon down.
//! - The watchdog is armed only when `WATCHDOG_USEC` is set and, if
//!   `WATCHDOG_PID` is set, names this process; it pings at half the period.
//! - Pings come only from the engine task ([`WatchdogFeed::feed`] in its main
//!   loop, [`WatchdogFeed::while_waiting`] while it deliberately holds results
//!   for an outbox that cannot be written), so a pipeline that stops turning
//!   stops pinging and systemd restarts it.
//!
//! The protocol is a single datagram of `KEY=VALUE` lines to the socket named by
//! `NOTIFY_SOCKET`: a path, or `@name` for an abstract socket. Written here with
//! std's `UnixDatagram` rather than a crate: it is twenty lines and no `unsafe`.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// Environment variable of the test-only hook that hangs the engine task.
///
/// Test only: `WEIR_TEST_HANG_ENGINE_AFTER=2s` makes the engine task stop
/// turning (it parks forever, as a deadlock would) 2 s after it starts, so the
/// end-to-end tests can show that watchdog pings stop. Never set it in production.
pub const HANG_ENGINE_ENV: &str = "WEIR_TEST_HANG_ENGINE_AFTER";

/// Why `NOTIFY_SOCKET` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The address is neither a path nor `@abstract`.
    #[error(
        "NOTIFY_SOCKET={0:?} is neither an absolute path nor @abstract (vsock is not supported)"
    )]
    Address(String),
    /// The socket cannot be created or addressed.
    #[error("NOTIFY_SOCKET: {0}")]
    Io(#[from] std::io::Error),
}

/// Parses a `NOTIFY_SOCKET` value into a socket address.
pub fn notify_address(value: &str) -> Result<SocketAddr, NotifyError> {
    if let Some(name) = value.strip_prefix('@') {
        Ok(SocketAddr::from_abstract_name(name.as_bytes())?)
    } else if value.starts_with('/') {
        Ok(SocketAddr::from_pathname(value)?)
    } else {
        Err(NotifyError::Address(value.to_string()))
    }
}

/// Sends state changes to systemd, or nowhere when not supervised.
#[derive(Debug, Default)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// A notifier that sends nothing.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// From `NOTIFY_SOCKET`; disabled (with a warning) when it is set but unusable.
    pub fn from_env() -> Self {
        let Some(value) = std::env::var_os("NOTIFY_SOCKET") else {
            return Self::disabled();
        };
        match Self::connect(&value.to_string_lossy()) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "not notifying systemd");
                Self::disabled()
            }
        }
    }

    /// A notifier sending to the socket named by a `NOTIFY_SOCKET` value.
    pub fn connect(value: &str) -> Result<Self, NotifyError> {
        let addr = notify_address(value)?;
        let sock = UnixDatagram::unbound()?;
        Ok(Self {
            target: Some((sock, addr)),
        })
    }

    /// Whether anything is listening for notifications.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends one datagram of `KEY=VALUE` lines; best effort.
    pub fn notify(&self, state: &str) {
        if let Some((sock, addr)) = &self.target {
            if let Err(e) = sock.send_to_addr(state.as_bytes(), addr) {
                tracing::debug!(error = %e, state, "sd_notify failed");
            }
        }
    }

    /// Startup is complete: the service is up.
    pub fn ready(&self) {
        self.notify("READY=1\nSTATUS=running");
    }

    /// A SIGHUP reload begins; `ready` follows when the new pipeline is up.
    pub fn reloading(&self) {
        self.notify("RELOADING=1\nSTATUS=reloading configuration");
    }

    /// Shutdown has begun.
    pub fn stopping(&self) {
        self.notify("STOPPING=1\nSTATUS=stopping: delivering the backlog");
    }

    /// A free-form status line (`systemctl status`).
    pub fn status(&self, text: &str) {
        self.notify(&format!("STATUS={text}"));
    }

    /// The main loop is alive.
    pub fn watchdog(&self) {
        self.notify("WATCHDOG=1");
    }
}

/// The ping period systemd asks for: half of `WATCHDOG_USEC`, when the
/// watchdog is meant for this process (`WATCHDOG_PID` unset or equal to `own_pid`).
pub fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok() != Some(own_pid) {
            return None;
        }
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// When the next ping is due. Pure: time is a parameter.
#[derive(Clone, Copy, Debug)]
pub struct Watchdog {
    interval: Duration,
    next: Instant,
}

impl Watchdog {
    /// Pings every `interval`, the first one an interval from `now` (startup
    /// has its own timeout; READY comes first).
    pub fn new(interval: Duration, now: Instant) -> Self {
        Self {
            interval,
            next: now + interval,
        }
    }

    /// The ping period.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// When the next ping is due.
    pub fn due(&self) -> Instant {
        self.next
    }

    /// Whether to ping at `now`; if so, schedules the next one an interval from now
    /// (not from the missed due time: pings never bunch up after a stall).
    pub fn poll(&mut self, now: Instant) -> bool {
        if now < self.next {
            return false;
        }
        self.next = now + self.interval;
        true
    }
}

/// What `weir run` hands the pipeline for supervision.
#[derive(Clone, Debug, Default)]
pub struct Supervisor {
    /// Where notifications go.
    pub notifier: Arc<Notifier>,
    /// The watchdog ping period, if systemd armed one.
    pub watchdog: Option<Duration>,
    /// Test only ([`HANG_ENGINE_ENV`]): the engine task hangs this long after it starts.
    pub hang_engine_after: Option<Duration>,
}

impl Supervisor {
    /// From the environment systemd (or a test) sets up.
    pub fn from_env() -> Self {
        let var = |k| std::env::var(k).ok();
        let hang_engine_after =
            var(HANG_ENGINE_ENV).and_then(|v| humantime::parse_duration(&v).ok());
        Self {
            notifier: Arc::new(Notifier::from_env()),
            watchdog: watchdog_interval(
                var("WATCHDOG_USEC").as_deref(),
                var("WATCHDOG_PID").as_deref(),
                std::process::id(),
            ),
            hang_engine_after,
        }
    }

    /// The engine task's side of the watchdog.
    pub fn feed(&self) -> WatchdogFeed {
        let now = Instant::now();
        WatchdogFeed {
            notifier: self.notifier.clone(),
            watchdog: self.watchdog.map(|i| Watchdog::new(i, now)),
            hang_at: self.hang_engine_after.map(|d| now + d),
        }
    }
}

/// Held by the engine task: it awaits [`WatchdogFeed::due`] beside its input and
/// calls [`WatchdogFeed::feed`] on every turn of its loop.
#[derive(Debug)]
pub struct WatchdogFeed {
    notifier: Arc<Notifier>,
    watchdog: Option<Watchdog>,
    hang_at: Option<Instant>,
}

impl WatchdogFeed {
    /// Resolves when a ping (or the test hang) is due; never without a watchdog.
    pub async fn due(&self) {
        let next = match (self.watchdog.map(|w| w.due()), self.hang_at) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return std::future::pending().await,
        };
        tokio::time::sleep_until(next).await;
    }

    /// Awaits `fut`, pinging on schedule meanwhile: for waits that are deliberate
    /// (results held while the outbox cannot be written), not hangs. The test hang
    /// hook still parks it.
    pub async fn while_waiting<T>(&mut self, fut: impl std::future::Future<Output = T>) -> T {
        let mut fut = std::pin::pin!(fut);
        loop {
            tokio::select! {
                v = &mut fut => return v,
                () = self.due() => self.feed().await,
            }
        }
    }

    /// Pings if a ping is due. With the test hang hook past due, never returns.
    pub async fn feed(&mut self) {
        let now = Instant::now();
        if self.hang_at.is_some_and(|t| now >= t) {
            tracing::warn!("{HANG_ENGINE_ENV}: the engine task hangs now (test hook)");
            std::future::pending::<()>().await;
        }
        if let Some(w) = &mut self.watchdog {
            if w.poll(now) {
                self.notifier.watchdog();
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn recv_all(sock: &UnixDatagram) -> Vec<String> {
        sock.set_nonblocking(true).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 512];
        while let Ok(n) = sock.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    #[test]
    fn a_path_socket_receives_each_state_as_one_datagram() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::connect(path.to_str().unwrap()).unwrap();
        n.ready();
        n.watchdog();
        n.stopping();
        let got = recv_all(&server);
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[0].lines().any(|l| l == "READY=1"), "{got:?}");
        assert_eq!(got[1], "WATCHDOG=1");
        assert!(got[2].lines().any(|l| l == "STOPPING=1"), "{got:?}");
    }

    #[test]
    fn an_at_sign_names_an_abstract_socket() {
        let name = format!("weir-test-notify-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        Notifier::connect(&format!("@{name}")).unwrap().reloading();
        let got = recv_all(&server);
        assert!(got[0].starts_with("RELOADING=1"), "{got:?}");
    }

    #[test]
    fn a_relative_or_vsock_address_is_refused() {
        assert!(matches!(
            notify_address("notify.sock"),
            Err(NotifyError::Address(_))
        ));
        assert!(matches!(
            notify_address("vsock:2:1234"),
            Err(NotifyError::Address(_))
        ));
    }

    #[test]
    fn a_disabled_notifier_sends_nothing_and_does_not_fail() {
        let n = Notifier::disabled();
        assert!(!n.enabled());
        n.ready();
    }

    #[test]
    fn the_watchdog_pings_at_half_of_watchdog_usec() {
        assert_eq!(
            watchdog_interval(Some("30000000"), None, 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 7), None);
        assert_eq!(watchdog_interval(None, None, 7), None);
    }

    #[test]
    fn a_watchdog_meant_for_another_process_is_ignored() {
        assert_eq!(watchdog_interval(Some("2000000"), Some("8"), 7), None);
        assert_eq!(
            watchdog_interval(Some("2000000"), Some("7"), 7),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn the_watchdog_pings_once_per_interval_from_the_start() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(Duration::from_millis(100), t0);
        assert!(!w.poll(t0));
        assert!(!w.poll(t0 + Duration::from_millis(99)));
        assert!(w.poll(t0 + Duration::from_millis(100)));
        assert!(!w.poll(t0 + Duration::from_millis(150)));
        assert_eq!(w.due(), t0 + Duration::from_millis(200));
    }

    #[test]
    fn after_a_stall_the_next_ping_is_an_interval_after_the_late_one() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(Duration::from_millis(100), t0);
        let late = t0 + Duration::from_millis(750);
        assert!(w.poll(late));
        assert!(!w.poll(late + Duration::from_millis(50)));
        assert_eq!(w.due(), late + Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn the_feed_pings_once_per_interval_on_the_paused_clock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let sup = Supervisor {
            notifier: Arc::new(Notifier::connect(path.to_str().unwrap()).unwrap()),
            watchdog: Some(Duration::from_secs(1)),
            hang_engine_after: None,
        };
        let mut feed = sup.feed();
        // An engine loop with no input: it wakes only for the watchdog.
        for _ in 0..5 {
            feed.due().await;
            feed.feed().await;
        }
        let got = recv_all(&server);
        assert_eq!(got, vec!["WATCHDOG=1"; 5]);
        assert_eq!(
            feed.watchdog.map(|w| w.interval()),
            Some(Duration::from_secs(1))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_deliberate_wait_is_fed_every_interval_not_only_when_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        // WATCHDOG_USEC=2s: a ping every second, while the engine holds its results
        // for about the commit retry's longest backoff (5 s), twice.
        let sup = Supervisor {
            notifier: Arc::new(Notifier::connect(path.to_str().unwrap()).unwrap()),
            watchdog: watchdog_interval(Some("2000000"), None, 1),
            hang_engine_after: None,
        };
        let mut feed = sup.feed();
        let t0 = Instant::now();
        let mut pings = Vec::new();
        // 5.5 s then 5 s: no wait ends exactly when a ping is due.
        for ms in [5_500, 5_000] {
            let v = feed
                .while_waiting(async {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    ms
                })
                .await;
            assert_eq!(v, ms);
            pings.extend(recv_all(&server));
        }
        assert_eq!(t0.elapsed(), Duration::from_millis(10_500), "paused clock");
        // One ping per second: never a gap of a whole WATCHDOG_USEC.
        assert_eq!(pings, vec!["WATCHDOG=1"; 10]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_test_hang_hook_parks_the_feed_so_pings_stop() {
        let sup = Supervisor {
            notifier: Arc::new(Notifier::disabled()),
            watchdog: Some(Duration::from_secs(1)),
            hang_engine_after: Some(Duration::from_secs(3)),
        };
        let mut feed = sup.feed();
        let turns = async {
            let mut n = 0u32;
            loop {
                feed.due().await;
                feed.feed().await;
                n += 1;
                if n > 100 {
                    break n;
                }
            }
        };
        // Paused clock: 60 s pass in no real time; the loop must still be parked.
        let r = tokio::time::timeout(Duration::from_secs(60), turns).await;
        assert!(r.is_err(), "the feed kept turning: {r:?}");
    }
}
