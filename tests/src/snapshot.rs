//! Snapshot checks of command output: the exact text a technician sees is kept in
//! `tests/snapshots/<name>.txt` and compared byte for byte. Values that differ between
//! runs (times, ports, temporary paths) are replaced before the comparison, by the
//! caller with [`replace`] on text and [`redact_json`] on JSON.
//!
//! `WEIR_BLESS=1 cargo test ...` writes the current output as the new snapshot (review
//! the diff before committing it). A missing snapshot fails, so a new test cannot pass
//! without one.

use std::path::PathBuf;

use serde_json::Value;

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("snapshots")
        .join(format!("{name}.txt"))
}

/// Panics, showing both texts, unless `actual` equals the stored snapshot `name`.
pub fn assert_snapshot(name: &str, actual: &str) {
    let file = path(name);
    if std::env::var_os("WEIR_BLESS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(file.parent().expect("snapshots dir")).expect("mkdir snapshots");
        std::fs::write(&file, actual).expect("write snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&file).unwrap_or_else(|_| {
        panic!(
            "no snapshot {}; the output was:\n{actual}\n(WEIR_BLESS=1 writes it)",
            file.display()
        )
    });
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(e, a)| e != a)
            .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
        panic!(
            "output differs from {} (first at line {}):\n--- expected\n{expected}\n--- actual\n{actual}",
            file.display(),
            first + 1
        );
    }
}

/// `text` with each `(from, to)` replaced, in order.
pub fn replace(text: &str, pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .fold(text.to_string(), |t, (from, to)| t.replace(from, to))
}

/// Sets every object field named in `keys`, at any depth, to `"[redacted]"`.
pub fn redact_json(value: &mut Value, keys: &[&str]) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if keys.contains(&k.as_str()) {
                    *v = Value::String("[redacted]".into());
                } else {
                    redact_json(v, keys);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact_json(v, keys)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_json_replaces_nested_fields_and_keeps_the_others() {
        let mut v = serde_json::json!({"a": 1, "b": {"uptime_s": 5, "c": [{"uptime_s": 6}]}});
        redact_json(&mut v, &["uptime_s"]);
        assert_eq!(
            v,
            serde_json::json!({"a": 1, "b": {"uptime_s": "[redacted]", "c": [{"uptime_s": "[redacted]"}]}})
        );
    }

    #[test]
    fn replace_applies_pairs_in_order() {
        assert_eq!(
            replace("port 1883", &[("1883", "P"), ("P", "<port>")]),
            "port <port>"
        );
    }
}
