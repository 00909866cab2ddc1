//! Which outbox row each unacknowledged publish carries: pure bookkeeping, no I/O.
//!
//! rumqttc's `publish` does not return the packet id (rumqtt issue 349). The
//! event loop reports `Outgoing::Publish(pkid)` for each publish, in the order
//! the publishes were handed to the client, so one task that both publishes and
//! reads the events can pair them up in FIFO order.
//!
//! Invariants:
//! - `queued` holds, in publish order, the tags of publishes handed to the client
//!   whose `Outgoing::Publish` has not been seen yet.
//! - `by_pkid` holds the tags of publishes sent on the wire and not yet PUBACKed.
//! - `rows` is exactly the set of row ids in `queued` and `by_pkid`: the rows in
//!   flight, which must not be fetched and published again.
//! - After a disconnect everything is forgotten ([`Inflight::reset`]): the rows
//!   are still in the outbox (only a PUBACK deletes them) and become pending
//!   again. A new connection uses a new client and event loop, so no packet of
//!   the old session can be replayed into this bookkeeping.

use std::collections::{HashMap, HashSet, VecDeque};

/// What a publish carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    /// An outbox row: delete it on PUBACK.
    Row(i64),
    /// Something not in the outbox (the status message).
    Untracked,
}

/// An event that the bookkeeping did not expect: a broken invariant of the
/// client or the broker. The caller logs it and reconnects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InflightError {
    /// `Outgoing::Publish` with no publish waiting for it.
    #[error("the MQTT client reported publish {0} that was never requested")]
    UnknownPublish(u16),
    /// A packet id reused while its previous publish was not acknowledged.
    #[error("packet id {0} reused before its PUBACK")]
    PkidReused(u16),
}

/// The in-flight table of one connection.
#[derive(Debug, Default)]
pub struct Inflight {
    queued: VecDeque<Tag>,
    by_pkid: HashMap<u16, Tag>,
    rows: HashSet<i64>,
}

impl Inflight {
    /// Empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// A publish was handed to the client.
    pub fn sent(&mut self, tag: Tag) {
        if let Tag::Row(id) = tag {
            self.rows.insert(id);
        }
        self.queued.push_back(tag);
    }

    /// The event loop wrote a publish with this packet id (QoS 1 ids are never 0).
    pub fn on_outgoing_publish(&mut self, pkid: u16) -> Result<(), InflightError> {
        let tag = self
            .queued
            .pop_front()
            .ok_or(InflightError::UnknownPublish(pkid))?;
        if pkid == 0 {
            // QoS 0 is never acknowledged; nothing to track.
            if let Tag::Row(id) = tag {
                self.rows.remove(&id);
            }
            return Ok(());
        }
        match self.by_pkid.insert(pkid, tag) {
            Some(Tag::Row(old)) => {
                self.rows.remove(&old);
                Err(InflightError::PkidReused(pkid))
            }
            Some(Tag::Untracked) => Err(InflightError::PkidReused(pkid)),
            None => Ok(()),
        }
    }

    /// The broker acknowledged this packet id: the row to delete, if it was one.
    /// An unknown id (a stray or duplicate PUBACK) yields `None`.
    pub fn on_puback(&mut self, pkid: u16) -> Option<i64> {
        match self.by_pkid.remove(&pkid)? {
            Tag::Row(id) => {
                self.rows.remove(&id);
                Some(id)
            }
            Tag::Untracked => None,
        }
    }

    /// The connection is gone: forget everything; returns how many rows were in
    /// flight (they are pending again).
    pub fn reset(&mut self) -> usize {
        let n = self.rows.len();
        self.queued.clear();
        self.by_pkid.clear();
        self.rows.clear();
        n
    }

    /// Rows in flight.
    pub fn rows(&self) -> &HashSet<i64> {
        &self.rows
    }

    /// Publishes (rows and untracked) not yet acknowledged.
    pub fn len(&self) -> usize {
        self.queued.len() + self.by_pkid.len()
    }

    /// Nothing awaits an acknowledgement.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn publishes_are_paired_with_packet_ids_in_order() {
        let mut f = Inflight::new();
        f.sent(Tag::Row(10));
        f.sent(Tag::Untracked);
        f.sent(Tag::Row(11));
        f.on_outgoing_publish(1).unwrap();
        f.on_outgoing_publish(2).unwrap();
        f.on_outgoing_publish(3).unwrap();
        assert_eq!(f.on_puback(3), Some(11));
        assert_eq!(f.on_puback(2), None);
        assert_eq!(f.on_puback(1), Some(10));
        assert!(f.is_empty());
        assert!(f.rows().is_empty());
    }

    #[test]
    fn a_row_stays_in_flight_until_its_own_puback() {
        let mut f = Inflight::new();
        f.sent(Tag::Row(1));
        assert!(
            f.rows().contains(&1),
            "in flight before the event loop numbers it"
        );
        f.on_outgoing_publish(7).unwrap();
        assert_eq!(f.on_puback(8), None, "another id does not release it");
        assert!(f.rows().contains(&1));
        assert_eq!(f.on_puback(7), Some(1));
        assert_eq!(
            f.on_puback(7),
            None,
            "a duplicate PUBACK deletes nothing more"
        );
    }

    #[test]
    fn a_reset_makes_every_unacknowledged_row_pending_again() {
        let mut f = Inflight::new();
        f.sent(Tag::Row(1));
        f.sent(Tag::Row(2));
        f.on_outgoing_publish(1).unwrap();
        assert_eq!(f.reset(), 2);
        assert!(f.rows().is_empty());
        assert_eq!(
            f.on_puback(1),
            None,
            "a PUBACK from the old session deletes nothing"
        );
    }

    #[test]
    fn an_unrequested_publish_event_is_an_error() {
        let mut f = Inflight::new();
        assert_eq!(
            f.on_outgoing_publish(1),
            Err(InflightError::UnknownPublish(1))
        );
    }

    #[test]
    fn a_reused_packet_id_is_an_error_and_forgets_the_old_row() {
        let mut f = Inflight::new();
        f.sent(Tag::Row(1));
        f.sent(Tag::Row(2));
        f.on_outgoing_publish(5).unwrap();
        assert_eq!(f.on_outgoing_publish(5), Err(InflightError::PkidReused(5)));
        assert!(!f.rows().contains(&1));
        assert_eq!(f.on_puback(5), Some(2));
    }

    proptest! {
        /// Against a model: whatever interleaving of sends, wire events and acks
        /// (acks in any order), each PUBACK releases exactly the row whose publish
        /// got that id, and `rows` is exactly the set not yet acknowledged.
        #[test]
        fn every_row_is_released_by_its_own_puback_only(
            n in 1usize..40,
            ack_order in proptest::collection::vec(any::<proptest::sample::Index>(), 40),
            wire_lag in 0usize..5,
        ) {
            let mut f = Inflight::new();
            let mut model: HashMap<u16, i64> = HashMap::new();
            let mut unwired: VecDeque<i64> = VecDeque::new();
            let mut next_pkid = 1u16;
            for row in 0..n as i64 {
                f.sent(Tag::Row(row));
                unwired.push_back(row);
                // The event loop lags a few publishes behind.
                while unwired.len() > wire_lag {
                    let r = unwired.pop_front().unwrap();
                    f.on_outgoing_publish(next_pkid).unwrap();
                    model.insert(next_pkid, r);
                    next_pkid += 1;
                }
            }
            while let Some(r) = unwired.pop_front() {
                f.on_outgoing_publish(next_pkid).unwrap();
                model.insert(next_pkid, r);
                next_pkid += 1;
            }
            let mut pkids: Vec<u16> = model.keys().copied().collect();
            pkids.sort_unstable();
            for idx in ack_order {
                if pkids.is_empty() { break; }
                let pkid = pkids.remove(idx.index(pkids.len()));
                prop_assert_eq!(f.on_puback(pkid), Some(model[&pkid]));
                let expected: HashSet<i64> = pkids.iter().map(|p| model[p]).collect();
                prop_assert_eq!(f.rows(), &expected);
            }
        }
    }
}
