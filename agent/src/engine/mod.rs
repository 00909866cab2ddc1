//! The event-time core (pure: no I/O, no clock; "now" is passed in).

mod pane;

pub use pane::{Aggregates, LateReading, Output, Pane, RejectReason, Timing};
