//! Sources: everything that produces readings, each feeding the engine's one
//! bounded channel. Parsing is pure (`payload`, `topic`); the tasks (`sim`,
//! `mqtt`) only move bytes and readings.

pub mod devices;
pub mod gpio;
pub mod health;
pub mod i2c;
pub mod link;
pub mod mqtt;
pub mod mqtt_wire;
pub mod multi;
pub mod onewire;
pub mod payload;
pub mod poll;
pub mod sim;
pub mod topic;

use crate::detect::Alert;
use crate::reading::Reading;
use crate::wire::DeadLetter;

/// What a source sends to the engine.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// A valid reading.
    Reading(Reading),
    /// Something that could not become one; published on the dead-letter topic.
    DeadLetter(DeadLetter),
    /// An alert raised by a source itself (a sensor that failed or recovered).
    Alert(Alert),
    /// One message from the local MQTT broker: the inputs it became, and the
    /// acknowledgement the daemon owes once a checkpoint holds their effect.
    Delivery(Delivery),
    /// The local broker released a QoS 2 message (PUBREL): its packet id may be
    /// forgotten once a checkpoint records that, and then PUBCOMP is owed.
    Release(mqtt::Ack),
}

/// See [`Input::Delivery`].
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    /// What the message became (readings, dead letters), in order.
    pub inputs: Vec<Input>,
    /// What tells it from a message already counted (see `checkpoint::Seen`).
    pub meta: crate::checkpoint::DeliveryMeta,
    /// How to acknowledge it; `None` for a QoS 0 message (nothing to acknowledge).
    pub ack: Option<mqtt::Ack>,
}

#[cfg(test)]
mod device_tests;
