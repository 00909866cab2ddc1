//! The database schema and its migrations.
//!
//! Invariants:
//! - `schema_version` holds one row per migration applied; the highest is the schema's version.
//! - Migrations run in one transaction under an advisory lock, so two sinks starting at once
//!   apply each migration exactly once, and a migration that fails leaves nothing behind.
//! - A database newer than this sink (a version it does not know) is refused, not written:
//!   an old sink must not write rows a newer schema reads differently.
//!
//! Every time is `timestamptz` (what Grafana's time macros expect), converted from the
//! wire's milliseconds exactly (PostgreSQL keeps microseconds).

use tokio_postgres::Client;

/// Migrations, in order: (version, SQL). Append only; never edit a released one.
pub const MIGRATIONS: &[(i32, &str)] = &[(1, V1)];

/// The version this sink writes.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// Any number: identifies our advisory lock among the database's users.
const LOCK_KEY: i64 = 0x7765_6972_5f73_696e; // "weir_sin"

const V1: &str = r#"
-- One row per window (pane id); the highest revision wins.
CREATE TABLE panes (
    id           text PRIMARY KEY,
    device       text NOT NULL,
    sensor       text NOT NULL,
    metric       text NOT NULL,
    window_start timestamptz NOT NULL,
    window_end   timestamptz NOT NULL,
    revision     bigint NOT NULL,
    timing       text NOT NULL,
    final        boolean NOT NULL,
    count        bigint NOT NULL,
    sum          double precision NOT NULL,
    min          double precision NOT NULL,
    max          double precision NOT NULL,
    mean         double precision NOT NULL,
    stddev       double precision NOT NULL,
    first        double precision NOT NULL,
    last         double precision NOT NULL,
    p50          double precision,
    p90          double precision,
    p99          double precision,
    emitted_at   timestamptz NOT NULL,
    written_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX panes_series ON panes (device, sensor, metric, window_start);

-- One row per alert episode (alert id): the raised and the cleared message fill it, in
-- either order. raised_reason is NULL until the raised message arrived.
CREATE TABLE alerts (
    id             text PRIMARY KEY,
    device         text NOT NULL,
    sensor         text NOT NULL,
    metric         text NOT NULL,
    detector       text NOT NULL,
    kind           text NOT NULL,
    severity       text NOT NULL,
    threshold      double precision NOT NULL,
    raised_at      timestamptz NOT NULL,
    raised_value   double precision,
    baseline       double precision,
    raised_reason  text,
    cleared_at     timestamptz,
    cleared_value  double precision,
    cleared_reason text,
    written_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alerts_open ON alerts (device, raised_at) WHERE cleared_at IS NULL;

CREATE TABLE late_readings (
    msg_id     text PRIMARY KEY,
    device     text NOT NULL,
    sensor     text NOT NULL,
    metric     text NOT NULL,
    value      double precision NOT NULL,
    ts         timestamptz NOT NULL,
    ts_source  text NOT NULL,
    watermark  timestamptz NOT NULL,
    late_by_ms bigint NOT NULL,
    emitted_at timestamptz NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX late_readings_series ON late_readings (device, sensor, metric, ts);

CREATE TABLE dead_letters (
    msg_id      text PRIMARY KEY,
    device      text NOT NULL,
    source      text NOT NULL,
    reason      text NOT NULL,
    detail      text NOT NULL,
    payload     text NOT NULL,
    received_at timestamptz NOT NULL,
    emitted_at  timestamptz NOT NULL,
    written_at  timestamptz NOT NULL DEFAULT now()
);

-- The latest status message per device, as it arrived (status carries no revision).
CREATE TABLE device_status (
    device     text PRIMARY KEY,
    state      text NOT NULL,
    version    text,
    started_at timestamptz,
    status     jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Messages the sink could not read: one row per distinct (topic, payload); `seen` counts
-- arrivals, redeliveries included. The payload is kept up to 4096 bytes.
CREATE TABLE rejects (
    digest   text PRIMARY KEY,
    topic    text NOT NULL,
    reason   text NOT NULL,
    detail   text NOT NULL,
    payload  bytea NOT NULL,
    seen     bigint NOT NULL DEFAULT 1,
    first_at timestamptz NOT NULL DEFAULT now(),
    last_at  timestamptz NOT NULL DEFAULT now()
);
"#;

/// Errors of [`migrate`].
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The database talks back with an error (permissions, a broken migration, the link).
    #[error("migrating the schema: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// The database was migrated by a newer sink.
    #[error(
        "the database's schema is version {found}, newer than this sink's {known}: upgrade weir-sink"
    )]
    Newer {
        /// In the database.
        found: i32,
        /// The highest this sink knows.
        known: i32,
    },
}

/// Brings the schema to [`latest`]; returns the version found before.
pub async fn migrate(client: &mut Client) -> Result<i32, SchemaError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version    integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await?;
    let found: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
        .await?
        .get(0);
    if found > latest() {
        return Err(SchemaError::Newer {
            found,
            known: latest(),
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > found) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[version],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(found)
}
