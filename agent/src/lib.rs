//! Weir: an edge streaming agent for embedded Linux.
//!
//! Readings flow `source -> engine -> detect -> outbox -> uplink`, each arrow a
//! bounded channel (see `DESIGN.md` in the repository and [`pipeline`]).
//! The engine, the detectors and the uplink's delivery bookkeeping are pure
//! state machines; sockets, threads and SQLite live at the edges.

pub mod checkpoint;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod detect;
pub mod engine;
pub mod homeassistant;
pub mod metrics;
pub mod outbox;
pub mod pipeline;
pub mod process;
pub mod reading;
pub mod source;
pub mod supervise;
pub mod uplink;
pub mod wire;
