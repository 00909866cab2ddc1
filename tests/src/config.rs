//! A builder for `weir.toml`: sensible test defaults, every one of them overridable, so
//! that a test states only the settings its scenario is about.
//!
//! Defaults: `[agent] device`, `state_dir = <dir>/state` and `runtime_dir = <dir>/run` (a
//! test never takes the system's `/run/weir/control.sock`); `[engine.window] size = "1s"`;
//! with [`Config::upstream`], the uplink on 127.0.0.1 with `reconnect_min = "100ms"` and
//! `reconnect_max = "1s"` (a restarted broker is found again at once); with
//! [`Config::ingest`], MQTT ingest from 127.0.0.1 with a fixed `client_id`. Everything
//! else is weir's own default until a test sets it.
//!
//! ```
//! # let dir = std::path::Path::new("/tmp");
//! use weir_tests::Config;
//! let text = Config::new("e2e", dir)
//!     .upstream(1883)
//!     .ingest(1883, "e2e-ingest")
//!     .topic("sensors/+/+", "{2}", "{3}")
//!     .set("engine", "allowed_lateness", "2s")
//!     .array("detector", weir_tests::toml! { name = "hot", kind = "threshold", high = 40.0 })
//!     .text();
//! assert!(text.contains("allowed_lateness = \"2s\""));
//! ```

use std::path::{Path, PathBuf};

/// A TOML value as written into the file.
#[derive(Clone, Debug, PartialEq)]
pub struct Toml(String);

impl Toml {
    /// Verbatim TOML, e.g. an inline table `{ power = "meters.0.power" }`.
    pub fn raw(text: impl Into<String>) -> Self {
        Self(text.into())
    }
}

impl From<&str> for Toml {
    fn from(s: &str) -> Self {
        // A JSON string is a valid TOML basic string (same escapes).
        Self(serde_json::Value::String(s.to_string()).to_string())
    }
}

impl From<String> for Toml {
    fn from(s: String) -> Self {
        s.as_str().into()
    }
}

impl From<&Path> for Toml {
    fn from(p: &Path) -> Self {
        p.display().to_string().into()
    }
}

impl From<bool> for Toml {
    fn from(b: bool) -> Self {
        Self(b.to_string())
    }
}

impl From<f64> for Toml {
    fn from(v: f64) -> Self {
        // Debug keeps the decimal point (`40.0`), which makes it a TOML float.
        Self(format!("{v:?}"))
    }
}

macro_rules! toml_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Toml {
            fn from(v: $t) -> Self {
                Self(v.to_string())
            }
        }
    )*};
}
toml_int!(i32, i64, u16, u32, u64, usize);

/// Key/value entries for [`Config::table`] and [`Config::array`]:
/// `toml! { name = "hot", kind = "threshold", high = 40.0 }` (keys are TOML bare keys).
#[macro_export]
macro_rules! toml {
    ($($k:ident = $v:expr),* $(,)?) => {
        &[$((stringify!($k), $crate::Toml::from($v))),*]
    };
}

/// A `weir.toml` being built (see the module docs).
#[derive(Clone, Debug)]
pub struct Config {
    dir: PathBuf,
    /// `[table]` sections in first-set order, each with its keys in order.
    tables: Vec<(String, Vec<(String, Toml)>)>,
    /// `[[array]]` entries, in order (a `[[sim.anomaly]]` follows its `[[sim]]`).
    arrays: Vec<(String, Vec<(String, Toml)>)>,
}

impl Config {
    /// A config for device `device` whose state lives in `<dir>/state` and whose control
    /// socket is `<dir>/run/control.sock`.
    pub fn new(device: &str, dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            tables: Vec::new(),
            arrays: Vec::new(),
        }
        .set("agent", "device", device)
        .set("agent", "state_dir", dir.join("state").as_path())
        .set("agent", "runtime_dir", dir.join("run").as_path())
        .set("engine.window", "size", "1s")
    }

    /// Sets `key` in `[table]` (replacing an earlier value, in place).
    pub fn set(mut self, table: &str, key: &str, value: impl Into<Toml>) -> Self {
        let value = value.into();
        let pos = self.tables.iter().position(|(t, _)| t == table);
        let entries = match pos {
            Some(i) => &mut self.tables[i].1,
            None => {
                self.tables.push((table.to_string(), Vec::new()));
                &mut self.tables.last_mut().unwrap_or_else(|| unreachable!()).1
            }
        };
        match entries.iter_mut().find(|(k, _)| k == key) {
            Some(e) => e.1 = value,
            None => entries.push((key.to_string(), value)),
        }
        self
    }

    /// Sets every entry in `[table]`, as [`Config::set`] does one.
    pub fn table(self, table: &str, entries: &[(&str, Toml)]) -> Self {
        entries
            .iter()
            .fold(self, |c, (k, v)| c.set(table, k, v.clone()))
    }

    /// [`Config::table`] of `[agent]`.
    pub fn agent(self, entries: &[(&str, Toml)]) -> Self {
        self.table("agent", entries)
    }

    /// [`Config::table`] of `[engine]`.
    pub fn engine(self, entries: &[(&str, Toml)]) -> Self {
        self.table("engine", entries)
    }

    /// [`Config::table`] of `[uplink]`.
    pub fn uplink(self, entries: &[(&str, Toml)]) -> Self {
        self.table("uplink", entries)
    }

    /// One `[[detector]]`.
    pub fn detector(self, entries: &[(&str, Toml)]) -> Self {
        self.array("detector", entries)
    }

    /// One `[[sim]]` (simulated sensor).
    pub fn sim(self, entries: &[(&str, Toml)]) -> Self {
        self.array("sim", entries)
    }

    /// Removes `key` from `[table]`: weir's own default applies.
    pub fn unset(mut self, table: &str, key: &str) -> Self {
        for (t, entries) in &mut self.tables {
            if t == table {
                entries.retain(|(k, _)| k != key);
            }
        }
        self
    }

    /// The uplink to the broker on 127.0.0.1:`port` (see the module docs for defaults).
    pub fn upstream(self, port: u16) -> Self {
        self.set("uplink", "host", "127.0.0.1")
            .set("uplink", "port", port)
            .set("uplink", "reconnect_min", "100ms")
            .set("uplink", "reconnect_max", "1s")
    }

    /// MQTT ingest from the broker on 127.0.0.1:`port` with a fixed (persistent) client id.
    pub fn ingest(self, port: u16, client_id: &str) -> Self {
        self.set("ingest", "host", "127.0.0.1")
            .set("ingest", "port", port)
            .set("ingest", "client_id", client_id)
    }

    /// One `[[ingest.topic]]` with a plain payload: `sensor` and `metric` from the topic
    /// (`"{2}"`, `"{3}"`) or fixed.
    pub fn topic(self, filter: &str, sensor: &str, metric: &str) -> Self {
        self.array(
            "ingest.topic",
            &[
                ("filter", filter.into()),
                ("sensor", sensor.into()),
                ("metric", metric.into()),
            ],
        )
    }

    /// One `[[ingest.topic]]` of `format = "multi"`: one JSON message carries every metric
    /// in `metrics` (each read from the field of its own name), stamped by `ts_path`.
    pub fn multi_topic(
        self,
        filter: &str,
        sensor: &str,
        ts_path: &str,
        metrics: &[String],
    ) -> Self {
        let fields: Vec<String> = metrics.iter().map(|m| format!("{m} = \"{m}\"")).collect();
        self.array(
            "ingest.topic",
            toml! {
                filter = filter, sensor = sensor, format = "multi", ts_path = ts_path,
                fields = Toml::raw(format!("{{ {} }}", fields.join(", "))),
            },
        )
    }

    /// One `[[name]]` entry (`sim`, `detector`, `i2c`, `ingest.topic`, `sim.anomaly`...).
    pub fn array(mut self, name: &str, entries: &[(&str, Toml)]) -> Self {
        self.arrays.push((
            name.to_string(),
            entries
                .iter()
                .map(|(k, v)| ((*k).to_string(), v.clone()))
                .collect(),
        ));
        self
    }

    /// The state directory (`[agent] state_dir`).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// The outbox database in the default state directory.
    pub fn outbox_db(&self) -> PathBuf {
        self.state_dir().join("outbox.db")
    }

    /// The file's text.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for (table, entries) in &self.tables {
            out.push_str(&format!("[{table}]\n"));
            for (k, v) in entries {
                out.push_str(&format!("{k} = {}\n", v.0));
            }
            out.push('\n');
        }
        for (name, entries) in &self.arrays {
            out.push_str(&format!("[[{name}]]\n"));
            for (k, v) in entries {
                out.push_str(&format!("{k} = {}\n", v.0));
            }
            out.push('\n');
        }
        out
    }

    /// Writes `<dir>/weir.toml` and returns its path.
    pub fn write(&self) -> PathBuf {
        self.write_as("weir.toml")
    }

    /// Writes `<dir>/<name>` and returns its path.
    pub fn write_as(&self, name: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, self.text()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_file_is_a_valid_weir_config_with_the_defaults_and_overrides() {
        let dir = Path::new("/tmp/x");
        let text = Config::new("d1", dir)
            .upstream(1883)
            .ingest(1884, "d1-ingest")
            .topic("sensors/+/+", "{2}", "{3}")
            .table(
                "engine",
                toml! { max_out_of_orderness = "0s", allowed_lateness = "0s" },
            )
            .set("engine.window", "size", "2s")
            .set("uplink", "max_rate", 0)
            .array(
                "detector",
                toml! { name = "hot", kind = "threshold", high = 40.0 },
            )
            .array("sim", toml! { name = "s1", interval = "50ms" })
            .text();
        let cfg =
            weir::config::Config::parse(&text, None).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(cfg.device, "d1");
        assert_eq!(cfg.engine.allowed_lateness_ms, 0);
        assert_eq!(cfg.sims.len(), 1);
        assert_eq!(cfg.detectors.len(), 1);
        assert!(
            text.contains("size = \"2s\"") && !text.contains("size = \"1s\""),
            "{text}"
        );
        assert_eq!(Toml::from("a\"b\\c").0, r#""a\"b\\c""#);
    }

    #[test]
    fn a_multi_topic_maps_each_metric_to_its_own_field() {
        let text = Config::new("d", Path::new("/x"))
            .multi_topic("in/+/data", "{2}", "ts", &["m00".into(), "m01".into()])
            .text();
        assert!(
            text.ends_with(
                "[[ingest.topic]]\nfilter = \"in/+/data\"\nsensor = \"{2}\"\nformat = \"multi\"\n\
                 ts_path = \"ts\"\nfields = { m00 = \"m00\", m01 = \"m01\" }\n\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn unset_leaves_weirs_default() {
        let text = Config::new("d", Path::new("/x"))
            .upstream(1)
            .unset("uplink", "reconnect_max")
            .text();
        assert!(!text.contains("reconnect_max"), "{text}");
        assert!(text.contains("reconnect_min = \"100ms\""), "{text}");
    }
}
