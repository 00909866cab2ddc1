//! Bench support: realistic outbox messages, shared by the outbox and drain benches,
//! and the load generator's workload model.

pub mod workload;

use weir::outbox::{Class, NewMessage};

/// Start of the first window of [`pane_message`]s (2025-11-21T10:00:00Z).
const T0: i64 = 1_763_719_200_000;

/// The `i`-th window pane of a device with 1,000 keys and 60 s windows, as the agent
/// writes it to the outbox: the JSON of `docs/wire.md` (about 480 bytes with its
/// topic), class Aggregate, superseding by window id. Every `i` is a different window.
pub fn pane_message(i: u64) -> NewMessage {
    let sensor = i % 1000;
    let start = T0 + (i / 1000) as i64 * 60_000;
    let end = start + 60_000;
    let id = format!("bench/s{sensor:03}/temperature/{start}-{end}");
    let x = (i % 97) as f64 / 10.0;
    let payload = serde_json::json!({
        "v": 1, "type": "pane", "id": id, "msg_id": format!("{id}#r0"),
        "device": "bench", "sensor": format!("s{sensor:03}"), "metric": "temperature",
        "window_start": start, "window_end": end, "revision": 0, "timing": "on_time",
        "final": false, "count": 60, "sum": 1262.4 + x, "min": 20.7, "max": 21.4 + x,
        "mean": 21.04 + x / 60.0, "stddev": 0.16, "first": 20.9, "last": 21.1,
        "emitted_at": end + 5012,
    });
    NewMessage {
        class: Class::Aggregate,
        topic: format!("weir/bench/agg/s{sensor:03}/temperature"),
        payload: payload.to_string().into_bytes(),
        supersede_key: Some(id),
        created_ms: end + 5012,
    }
}
