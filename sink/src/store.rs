//! Writes batches of records in one transaction each.
//!
//! Invariants:
//! - Every statement is idempotent, so a batch written twice (a redelivery after a sink died
//!   between its commit and its PUBACKs, a duplicate publish, another sink of the group
//!   holding a copy) leaves the tables as written once:
//!   panes `ON CONFLICT DO UPDATE ... WHERE excluded.revision > panes.revision` (a later
//!   revision replaces, an older or equal one changes nothing); alerts fill their raised and
//!   cleared columns once each, in either order; late readings and dead letters
//!   `ON CONFLICT (msg_id) DO NOTHING`; rejects count arrivals on one row per payload.
//! - A batch's statements run in key order (table, then id), so two sinks writing
//!   overlapping batches take row locks in the same order and do not deadlock each other.
//! - [`Store::write`] returns `Ok` only after the commit: the caller acknowledges then.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::try_join_all;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Statement, Transaction};

use crate::decode::{AlertState, Record, Reject};

/// One message to write: a record, or why it could not be read.
#[derive(Clone, Debug)]
pub enum Item {
    /// A message read.
    Record(Record),
    /// A message refused, with its topic and payload.
    Reject {
        /// The topic it came on.
        topic: String,
        /// The raw payload.
        payload: Vec<u8>,
        /// Why.
        why: Reject,
    },
}

/// What the caller does about a failed write.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The connection is gone or the server is unavailable: reconnect and retry the batch.
    #[error("database unavailable: {0}")]
    Unavailable(tokio_postgres::Error),
    /// A transient conflict (deadlock, serialization): retry the batch as it is.
    #[error("transient database error: {0}")]
    Transient(tokio_postgres::Error),
    /// The database refused the data itself: retry item by item, rejecting the ones it refuses.
    #[error("the database refused a row: {0}")]
    Refused(tokio_postgres::Error),
}

impl StoreError {
    fn classify(e: tokio_postgres::Error) -> Self {
        let Some(code) = e.code() else {
            // No SQLSTATE: an I/O or protocol error, or the connection closed.
            return StoreError::Unavailable(e);
        };
        if *code == SqlState::T_R_DEADLOCK_DETECTED
            || *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::LOCK_NOT_AVAILABLE
        {
            return StoreError::Transient(e);
        }
        // Class 22: data exception; 23: integrity constraint; 42: syntax or access rule
        // (a value the statement cannot take). The rest (08 connection, 53 resources,
        // 57 operator intervention, 58 system) is the server's state, not the row's.
        match &code.code()[..2] {
            "22" | "23" => StoreError::Refused(e),
            _ => StoreError::Unavailable(e),
        }
    }
}

/// Rows a write changed and left alone, for the logs and the benchmark.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Rows inserted or updated.
    pub applied: u64,
    /// Statements that changed nothing (a duplicate, an older revision).
    pub unchanged: u64,
}

impl std::ops::AddAssign for Written {
    fn add_assign(&mut self, o: Self) {
        self.applied += o.applied;
        self.unchanged += o.unchanged;
    }
}

/// A connection with its prepared statements.
pub struct Store {
    client: Client,
    st: Statements,
}

struct Statements {
    pane: Statement,
    raised: Statement,
    cleared: Statement,
    late: Statement,
    dead: Statement,
    status: Statement,
    reject: Statement,
}

impl Store {
    /// Connects, migrates the schema and prepares the statements.
    pub async fn connect(url: &str) -> Result<(Self, i32), crate::Error> {
        let (mut client, conn) = tokio_postgres::connect(url, NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::warn!(error = %e, "PostgreSQL connection ended");
            }
        });
        let before = crate::schema::migrate(&mut client).await?;
        let st = Statements::prepare(&client).await?;
        Ok((Self { client, st }, before))
    }

    /// Whether the connection is gone (then reconnect).
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Writes `items` in one transaction, statements pipelined, in key order.
    pub async fn write(&mut self, items: &[Item]) -> Result<Written, StoreError> {
        let mut order: Vec<&Item> = items.iter().collect();
        // Stable: a device's statuses keep their arrival order.
        order.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
        let tx = self
            .client
            .transaction()
            .await
            .map_err(StoreError::classify)?;
        let counts = try_join_all(order.iter().map(|i| exec(&tx, &self.st, i)))
            .await
            .map_err(StoreError::classify)?;
        tx.commit().await.map_err(StoreError::classify)?;
        let mut w = Written::default();
        for n in counts {
            if n > 0 {
                w.applied += n;
            } else {
                w.unchanged += 1;
            }
        }
        Ok(w)
    }
}

fn sort_key(i: &Item) -> (u8, &str) {
    match i {
        Item::Record(Record::Pane(p)) => (0, &p.id),
        Item::Record(Record::Alert(a)) => (1, &a.id),
        Item::Record(Record::Late(l)) => (2, &l.msg_id),
        Item::Record(Record::DeadLetter(d)) => (3, &d.msg_id),
        Item::Record(Record::Status(s)) => (4, &s.device),
        Item::Reject { topic, .. } => (5, topic),
    }
}

/// Milliseconds since the epoch as a time PostgreSQL stores exactly.
fn ts(ms: i64) -> SystemTime {
    let d = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    }
}

async fn exec(
    tx: &Transaction<'_>,
    st: &Statements,
    item: &Item,
) -> Result<u64, tokio_postgres::Error> {
    match item {
        Item::Record(Record::Pane(p)) => {
            let (rev, count) = (i64::from(p.revision), clamp(p.count));
            tx.execute(
                &st.pane,
                &[
                    &p.id,
                    &p.device,
                    &p.sensor,
                    &p.metric,
                    &ts(p.window_start),
                    &ts(p.window_end),
                    &rev,
                    &p.timing,
                    &p.is_final,
                    &count,
                    &p.sum,
                    &p.min,
                    &p.max,
                    &p.mean,
                    &p.stddev,
                    &p.first,
                    &p.last,
                    &p.p50,
                    &p.p90,
                    &p.p99,
                    &ts(p.emitted_at),
                ],
            )
            .await
        }
        Item::Record(Record::Alert(a)) => {
            let (raised_at, at) = (ts(a.raised_ts), ts(a.ts));
            let head: [&(dyn tokio_postgres::types::ToSql + Sync); 9] = [
                &a.id,
                &a.device,
                &a.sensor,
                &a.metric,
                &a.detector,
                &a.kind,
                &a.severity,
                &a.threshold,
                &raised_at,
            ];
            match a.state {
                AlertState::Raised => {
                    let tail: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
                        [&a.value, &a.baseline, &a.reason];
                    tx.execute(&st.raised, &[&head[..], &tail[..]].concat())
                        .await
                }
                AlertState::Cleared => {
                    let tail: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
                        [&at, &a.value, &a.reason];
                    tx.execute(&st.cleared, &[&head[..], &tail[..]].concat())
                        .await
                }
            }
        }
        Item::Record(Record::Late(l)) => {
            tx.execute(
                &st.late,
                &[
                    &l.msg_id,
                    &l.device,
                    &l.sensor,
                    &l.metric,
                    &l.value,
                    &ts(l.ts),
                    &l.ts_source,
                    &ts(l.watermark),
                    &l.late_by_ms,
                    &ts(l.emitted_at),
                ],
            )
            .await
        }
        Item::Record(Record::DeadLetter(d)) => {
            tx.execute(
                &st.dead,
                &[
                    &d.msg_id,
                    &d.device,
                    &d.source,
                    &d.reason,
                    &d.detail,
                    &d.payload,
                    &ts(d.received_at),
                    &ts(d.emitted_at),
                ],
            )
            .await
        }
        Item::Record(Record::Status(s)) => {
            let started = s.started_at.map(ts);
            tx.execute(
                &st.status,
                &[&s.device, &s.state, &s.version, &started, &s.json],
            )
            .await
        }
        Item::Reject {
            topic,
            payload,
            why,
        } => {
            tx.execute(&st.reject, &[topic, payload, &why.reason, &why.detail])
                .await
        }
    }
}

/// A count above `i64::MAX` (2^63 readings in one window) cannot happen; saturate rather
/// than wrap if it ever does.
fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Statements {
    async fn prepare(c: &Client) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            pane: c
                .prepare(
                    "INSERT INTO panes (id, device, sensor, metric, window_start, window_end,
                        revision, timing, final, count, sum, min, max, mean, stddev, first, last,
                        p50, p90, p99, emitted_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                        $16, $17, $18, $19, $20, $21)
                     ON CONFLICT (id) DO UPDATE SET
                        revision = excluded.revision, timing = excluded.timing,
                        final = excluded.final, count = excluded.count, sum = excluded.sum,
                        min = excluded.min, max = excluded.max, mean = excluded.mean,
                        stddev = excluded.stddev, first = excluded.first, last = excluded.last,
                        p50 = excluded.p50, p90 = excluded.p90, p99 = excluded.p99,
                        emitted_at = excluded.emitted_at, written_at = now()
                     WHERE excluded.revision > panes.revision",
                )
                .await?,
            // The raised message's value, baseline and reason fill the raised columns once.
            raised: c
                .prepare(
                    "INSERT INTO alerts (id, device, sensor, metric, detector, kind, severity,
                        threshold, raised_at, raised_value, baseline, raised_reason)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                     ON CONFLICT (id) DO UPDATE SET
                        kind = excluded.kind, severity = excluded.severity,
                        threshold = excluded.threshold, raised_value = excluded.raised_value,
                        baseline = excluded.baseline, raised_reason = excluded.raised_reason,
                        written_at = now()
                     WHERE alerts.raised_reason IS NULL",
                )
                .await?,
            // A cleared message that arrives first makes the row from what it carries
            // (raised_ts, severity, threshold); the raised message fills in the rest later.
            cleared: c
                .prepare(
                    "INSERT INTO alerts (id, device, sensor, metric, detector, kind, severity,
                        threshold, raised_at, cleared_at, cleared_value, cleared_reason)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                     ON CONFLICT (id) DO UPDATE SET
                        cleared_at = excluded.cleared_at, cleared_value = excluded.cleared_value,
                        cleared_reason = excluded.cleared_reason, written_at = now()
                     WHERE alerts.cleared_at IS NULL",
                )
                .await?,
            late: c
                .prepare(
                    "INSERT INTO late_readings (msg_id, device, sensor, metric, value, ts,
                        ts_source, watermark, late_by_ms, emitted_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                     ON CONFLICT (msg_id) DO NOTHING",
                )
                .await?,
            dead: c
                .prepare(
                    "INSERT INTO dead_letters (msg_id, device, source, reason, detail, payload,
                        received_at, emitted_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (msg_id) DO NOTHING",
                )
                .await?,
            status: c
                .prepare(
                    "INSERT INTO device_status (device, state, version, started_at, status)
                     VALUES ($1, $2, $3, $4, $5::text::jsonb)
                     ON CONFLICT (device) DO UPDATE SET
                        state = excluded.state, version = excluded.version,
                        started_at = excluded.started_at, status = excluded.status,
                        updated_at = now()",
                )
                .await?,
            reject: c
                .prepare(
                    "INSERT INTO rejects (digest, topic, reason, detail, payload)
                     VALUES (md5(convert_to($1::text, 'UTF8') || '\\x00'::bytea || $2::bytea),
                        $1, $3, $4, substring($2::bytea from 1 for 4096))
                     ON CONFLICT (digest) DO UPDATE SET
                        seen = rejects.seen + 1, last_at = now()",
                )
                .await?,
        })
    }
}
