//! The guard session's gate: when the guard writes what it receives, and when the sink
//! publishes the mark that lets it stop. Pure: [`crate::run`] feeds it the two MQTT clients'
//! events and does what it returns.
//!
//! Why a guard: Mosquitto 2.0 does not persist shared subscriptions, so after a broker restart
//! the group `$share/<group>/...` has no members until a sink's SUBSCRIBE reaches the new
//! broker, and what devices publish meanwhile is acknowledged to them and delivered to no
//! sink (docs/fleet.md). The guard is a second client of the same sink (`<client-id>-guard`),
//! on a persistent session with a *plain* subscription to the same filters, which the broker
//! does persist: it receives every message, gap included.
//!
//! Invariants (the reasoning is in docs/fleet.md, "The guard session"):
//! - The guard writes every message unless it has received, on its current connection, the
//!   mark whose nonce is [`Gate::issued`] now; then it acknowledges without writing.
//! - A mark is issued (a fresh random nonce) only when both the main client's shared
//!   SUBSCRIBE and the guard's SUBSCRIBE are acknowledged on their current connections, and
//!   it is published on the main client's connection. So it is routed by the broker instance
//!   that holds the group membership and that the guard is connected to, after both
//!   subscriptions exist; whatever the guard receives after it was routed to the group too.
//! - Losing either connection withdraws the issued nonce (a mark already in flight, or
//!   retransmitted by rumqttc on the next connection before the resubscription, then no
//!   longer matches), and losing the guard's connection forgets the mark it had seen: the
//!   guard writes again until a new mark comes back.

/// Topics of the marks: `weir-sink/mark/<client-id>`; outside Weir's `weir/...` topics, and
/// skipped (acknowledged, not written) by a sink whose filters happen to match them.
pub const MARK_PREFIX: &str = "weir-sink/mark/";

/// The mark topic of the sink with MQTT client id `client_id`.
pub fn mark_topic(client_id: &str) -> String {
    format!("{MARK_PREFIX}{client_id}")
}

/// Whether `topic` is a mark (any sink's).
pub fn is_mark(topic: &str) -> bool {
    topic.starts_with(MARK_PREFIX)
}

/// The state shared by the main client's and the guard's event loops.
#[derive(Debug, Default)]
pub struct Gate {
    main_subscribed: bool,
    guard_subscribed: bool,
    /// The nonce of the mark published since both subscriptions were last acknowledged.
    issued: Option<u64>,
    /// The nonce of the last mark the guard received on its current connection.
    seen: Option<u64>,
    /// Marks the guard received that matched, for the logs.
    pub marks_matched: u64,
}

impl Gate {
    /// The main client's connection failed: the group may be gone with the broker.
    pub fn main_lost(&mut self) {
        self.main_subscribed = false;
        self.issued = None;
    }

    /// The guard's connection failed: it writes again until a new mark comes back.
    pub fn guard_lost(&mut self) {
        self.guard_subscribed = false;
        self.issued = None;
        self.seen = None;
    }

    /// The main client's shared SUBSCRIBE was acknowledged; `nonce` is fresh randomness.
    /// Returns the nonce of a mark to publish now on the main client, if any.
    pub fn main_subscribed(&mut self, nonce: u64) -> Option<u64> {
        self.main_subscribed = true;
        self.issue(nonce)
    }

    /// The guard's SUBSCRIBE was acknowledged; as [`Gate::main_subscribed`].
    pub fn guard_subscribed(&mut self, nonce: u64) -> Option<u64> {
        self.guard_subscribed = true;
        self.issue(nonce)
    }

    fn issue(&mut self, nonce: u64) -> Option<u64> {
        if !(self.main_subscribed && self.guard_subscribed) {
            return None;
        }
        self.issued = Some(nonce);
        Some(nonce)
    }

    /// The guard received its own mark carrying `nonce`. True if it was the one issued now
    /// (the guard stops writing); an older one changes nothing.
    pub fn mark_received(&mut self, nonce: u64) -> bool {
        if self.issued == Some(nonce) {
            self.seen = Some(nonce);
            self.marks_matched += 1;
            true
        } else {
            false
        }
    }

    /// Whether the guard writes the message it just received.
    pub fn guard_writes(&self) -> bool {
        self.seen.is_none() || self.seen != self.issued
    }

    /// The nonce issued now, if any.
    pub fn issued(&self) -> Option<u64> {
        self.issued
    }
}

/// A mark's payload: the nonce in decimal.
pub fn mark_payload(nonce: u64) -> Vec<u8> {
    nonce.to_string().into_bytes()
}

/// The nonce in a mark's payload; `None` for anything else.
pub fn parse_mark(payload: &[u8]) -> Option<u64> {
    std::str::from_utf8(payload).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn armed() -> Gate {
        let mut g = Gate::default();
        assert_eq!(g.main_subscribed(1), None);
        assert_eq!(g.guard_subscribed(2), Some(2));
        g
    }

    #[test]
    fn the_guard_writes_from_the_start_until_its_mark_comes_back() {
        let mut g = Gate::default();
        assert!(g.guard_writes());
        assert_eq!(
            g.guard_subscribed(5),
            None,
            "no mark before the group exists"
        );
        assert!(g.guard_writes());
        assert_eq!(g.main_subscribed(6), Some(6));
        assert!(
            g.guard_writes(),
            "a mark published is not yet a mark received"
        );
        assert!(g.mark_received(6));
        assert!(!g.guard_writes());
    }

    #[test]
    fn a_stale_mark_does_not_stop_the_guard() {
        let mut g = armed();
        g.main_lost();
        assert!(
            !g.mark_received(2),
            "issued before the main connection was lost"
        );
        assert_eq!(g.main_subscribed(3), Some(3));
        assert!(!g.mark_received(2), "retransmitted on the new connection");
        assert!(g.guard_writes());
        assert!(g.mark_received(3));
        assert!(!g.guard_writes());
    }

    #[test]
    fn losing_the_main_connection_puts_the_guard_back_to_writing() {
        let mut g = armed();
        assert!(g.mark_received(2));
        g.main_lost();
        assert!(g.guard_writes());
        assert_eq!(g.main_subscribed(4), Some(4));
        assert!(g.guard_writes(), "until the new mark comes back");
        assert!(g.mark_received(4));
        assert!(!g.guard_writes());
    }

    #[test]
    fn losing_the_guard_connection_forgets_the_mark_even_if_it_is_redelivered() {
        let mut g = armed();
        assert!(g.mark_received(2));
        g.guard_lost();
        assert!(g.guard_writes());
        // The broker restarted and redelivers the persisted mark before the main client
        // noticed: it must not count.
        assert!(!g.mark_received(2));
        assert!(g.guard_writes());
        // The main client still believes in its (dead) connection: the mark goes out on it,
        // reaches no broker, and is withdrawn when that connection's loss is seen.
        assert_eq!(g.guard_subscribed(7), Some(7));
        g.main_lost();
        assert!(
            !g.mark_received(7),
            "retransmitted on the main client's new connection"
        );
        assert_eq!(g.main_subscribed(8), Some(8));
        assert!(g.mark_received(8));
        assert!(!g.guard_writes());
    }

    #[test]
    fn a_guard_reconnect_alone_gets_a_new_mark() {
        let mut g = armed();
        assert!(g.mark_received(2));
        g.guard_lost();
        assert_eq!(g.guard_subscribed(9), Some(9));
        assert!(g.guard_writes());
        assert!(g.mark_received(9));
        assert!(!g.guard_writes());
    }

    #[test]
    fn mark_payloads_round_trip_and_others_are_not_marks() {
        assert_eq!(parse_mark(&mark_payload(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_mark(b"{\"v\":1}"), None);
        assert!(is_mark(&mark_topic("sink-1")));
        assert!(!is_mark("weir/pi/agg/s/m"));
    }
}
