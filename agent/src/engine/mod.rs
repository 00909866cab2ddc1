//! The event-time core (pure: no I/O, no clock; "now" is passed in).

mod agg;
mod config;
mod pane;

pub use config::{EngineConfig, EngineConfigError, Window, WindowSpec, Windows};
pub use pane::{Aggregates, LateReading, Output, Pane, RejectReason, Timing};
