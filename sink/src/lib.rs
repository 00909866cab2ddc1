//! `weir-sink`: the reference consumer of Weir's upstream messages. It subscribes to a
//! fleet's topics on the upstream broker and writes them into PostgreSQL, applying the rules
//! every consumer of `docs/wire.md` must apply: panes upserted by id keeping the highest
//! revision, alerts one row per episode with raised and cleared times, late readings and dead
//! letters once per `msg_id`, the latest status per device. It acknowledges each message only
//! after the transaction holding it committed, and several sinks share one subscription
//! (`$share/<group>/...`) to scale out. `docs/fleet.md` shows where it fits.
//!
//! A separate binary, not a `weir` subcommand: a Raspberry Pi never runs it, and the `weir`
//! package is kept small for SD cards.
//!
//! - [`decode`]: one MQTT message to one [`decode::Record`] or a [`decode::Reject`]; pure.
//! - [`schema`]: the tables and their migrations (`schema_version`).
//! - [`store`]: idempotent statements, one transaction per batch.
//! - [`guard`]: when the guard session writes (shared subscriptions across broker restarts).
//! - [`run`]: the MQTT event loop and the batch / commit / acknowledge cycle.

pub mod decode;
pub mod guard;
pub mod run;
pub mod schema;
pub mod store;

/// What stops the sink.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Connecting to PostgreSQL or preparing statements failed.
    #[error("PostgreSQL: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// The schema could not be migrated, or is newer than this sink.
    #[error(transparent)]
    Schema(#[from] schema::SchemaError),
    /// A row could not be written even as a reject.
    #[error("{0}")]
    Store(String),
}
