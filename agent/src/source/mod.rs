//! Sources: where readings come from (local sensors, MQTT) before the engine.

pub mod payload;
pub mod topic;
