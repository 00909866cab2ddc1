//! `weir outbox peek` and `weir outbox export`: the rows in the order the uplink sends them
//! (strict class priority, then oldest first), payloads decoded to JSON whether the uplink
//! writes JSON or postcard. Read-only, safe while the daemon runs.

use std::io::Write;
use std::path::Path;

use serde_json::{Value, json};

use super::exit;
use super::outbox::{ClassArg, Target, fail, when};
use super::progress::Progress;
use crate::outbox::inspect::{self, Cursor, StoredRow};

/// Rows read per query by `export`: bounded memory whatever the backlog.
const PAGE: usize = 500;

/// One row as a JSON object: the columns and the payload as JSON (or, when it cannot be
/// decoded, why, and its bytes in hex).
pub fn row_json(r: &StoredRow) -> Value {
    let mut v = json!({
        "id": r.id,
        "class": r.class.as_str(),
        "topic": r.topic,
        "created_ms": r.created_ms,
        "supersede_key": r.supersede_key,
        "bytes": r.bytes,
    });
    let decoded = super::decode::payload_to_json(&r.payload)
        .and_then(|j| serde_json::from_slice::<Value>(&j).map_err(|e| e.to_string()));
    match decoded {
        Ok(p) => v["payload"] = p,
        Err(e) => {
            v["payload_error"] = json!(e);
            v["payload_hex"] = json!(
                r.payload
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            );
        }
    }
    v
}

/// `weir outbox peek`: the next `n` rows the uplink will send; exit codes as `stats`.
pub fn peek(
    t: &Target<'_>,
    n: usize,
    class: Option<ClassArg>,
    out: &mut impl Write,
    err: &mut impl Write,
) -> u8 {
    let path = match t.path(err) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let class = class.map(ClassArg::class);
    let read = inspect::open_read_only(&path).and_then(|c| {
        let total = inspect::count(&c, &path, class)?;
        let (rows, _) = inspect::rows_after(&c, &path, class, Cursor::start(), n)?;
        Ok((total, rows))
    });
    let (total, rows) = match read {
        Ok(r) => r,
        Err(e) => return fail(&e, err),
    };
    if t.json {
        for r in &rows {
            let _ = writeln!(out, "{}", row_json(r));
        }
        return exit::OK;
    }
    let now = crate::reading::now_ms();
    let _ = writeln!(
        out,
        "next {} of {total} rows{}, in send order (alerts, then aggregates, then diagnostics; \
         oldest first within a class; rows in flight included):",
        rows.len(),
        class.map_or(String::new(), |c| format!(" of class {}", c.as_str()))
    );
    for (i, r) in rows.iter().enumerate() {
        let v = row_json(r);
        let _ = writeln!(
            out,
            "{:>3}. id {} {} {} ({}), produced {}",
            i + 1,
            r.id,
            r.class.as_str(),
            r.topic,
            super::human::bytes(r.bytes),
            when(r.created_ms, now)
        );
        if let Some(k) = &r.supersede_key {
            let _ = writeln!(
                out,
                "     window {k}: a newer revision of it replaces this row while unsent"
            );
        }
        let payload = v
            .get("payload")
            .map(Value::to_string)
            .or_else(|| {
                v.get("payload_error")
                    .map(|e| format!("cannot decode: {e}"))
            })
            .unwrap_or_default();
        let _ = writeln!(out, "     {payload}");
    }
    exit::OK
}

/// `weir outbox export`: every row as a JSON line, to `output` or standard output, with a
/// progress bar on a terminal; exit codes as `stats`.
pub fn export(
    t: &Target<'_>,
    class: Option<ClassArg>,
    output: Option<&Path>,
    out: &mut impl Write,
    err: &mut impl Write,
) -> u8 {
    let path = match t.path(err) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let class = class.map(ClassArg::class);
    let conn = match inspect::open_read_only(&path) {
        Ok(c) => c,
        Err(e) => return fail(&e, err),
    };
    let mut file = match output.map(std::fs::File::create).transpose() {
        Ok(f) => f.map(std::io::BufWriter::new),
        Err(e) => {
            let _ = writeln!(
                err,
                "error: cannot create {}: {e}",
                output.unwrap_or(Path::new("-")).display()
            );
            return exit::FAILURE;
        }
    };
    let sink: &mut dyn Write = match file.as_mut() {
        Some(f) => f,
        None => out,
    };
    // A read transaction for the whole walk: one consistent snapshot even while the daemon
    // acknowledges and inserts rows.
    if let Err(e) = conn.execute_batch("BEGIN") {
        return fail(&crate::outbox::OutboxError::from_sqlite(&path, e), err);
    }
    let total = match inspect::count(&conn, &path, class) {
        Ok(n) => n,
        Err(e) => return fail(&e, err),
    };
    let mut bar = Progress::new("export", total);
    let (mut cursor, mut done) = (Cursor::start(), 0u64);
    loop {
        let (rows, next) = match inspect::rows_after(&conn, &path, class, cursor, PAGE) {
            Ok(r) => r,
            Err(e) => return fail(&e, err),
        };
        if rows.is_empty() {
            break;
        }
        for r in &rows {
            if let Err(e) = writeln!(sink, "{}", row_json(r)) {
                bar.finish();
                return super::output_failed(&e, "the export", err);
            }
        }
        done += rows.len() as u64;
        bar.set(done);
        cursor = next;
    }
    bar.finish();
    if let Err(e) = sink.flush() {
        return super::output_failed(&e, "the export", err);
    }
    if let Some(o) = output {
        let _ = writeln!(err, "exported {done} rows to {}", o.display());
    }
    exit::OK
}
