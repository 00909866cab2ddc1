//! `weir sensors list` and `read` for the sources that have no hardware to probe:
//! simulated sensors (`[[sim]]`) and MQTT topics (`[[ingest.topic]]`), whose sensors are
//! known only from what the running daemon has seen. A read of either takes the next
//! live reading from the running daemon's stream; with weir stopped, a simulated sensor
//! shows its generator's first sample (and says so), an MQTT sensor cannot be read.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use serde_json::{Value, json};

use super::{exit, human, sensors::Opts};
use crate::config::Config;
use crate::control::Request;
use crate::control::client::{Client, ClientError};
use crate::control::tap::Kind;

/// One row of the list: name, source, where, metrics, health, last error.
pub type Row = [String; 6];

/// The `[[sim]]` sensors and the MQTT topics, then every sensor the running daemon has
/// seen that no section names (those came over MQTT), with their metrics.
pub fn rows(cfg: &Config) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    for s in &cfg.sims {
        rows.push([
            s.name.clone(),
            "sim".into(),
            format!(
                "simulated, every {}",
                human::duration_ms(s.interval.as_millis() as i64)
            ),
            s.metric.clone(),
            "-".into(),
            String::new(),
        ]);
    }
    let Some(ingest) = &cfg.ingest else {
        return rows;
    };
    let address = format!("{}:{}", ingest.host, ingest.port);
    for t in &ingest.topics {
        rows.push([
            "(topic)".into(),
            "mqtt".into(),
            format!("{} on {address}", t.filter()),
            "from the topic".into(),
            "-".into(),
            String::new(),
        ]);
    }
    let Ok(mut answer) =
        Client::connect(&cfg.control_socket()).and_then(|c| c.request(&Request::Status))
    else {
        return rows;
    };
    let doc = answer["status"].take();
    let mut configured: Vec<&str> = cfg.sims.iter().map(|s| s.name.as_str()).collect();
    configured.extend(cfg.devices.names());
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for k in doc["watermarks"].as_array().into_iter().flatten() {
        let (Some(s), Some(m)) = (k["sensor"].as_str(), k["metric"].as_str()) else {
            continue;
        };
        if !configured.contains(&s) {
            seen.entry(s.to_string()).or_default().push(m.to_string());
        }
    }
    for (sensor, mut metrics) in seen {
        metrics.sort();
        rows.push([
            sensor,
            "mqtt".into(),
            format!("seen on {address}"),
            metrics.join(","),
            "live".into(),
            String::new(),
        ]);
    }
    rows
}

/// `weir sensors read NAME` of a simulated sensor, or of any name when MQTT ingest is
/// configured; `None` when `name` is neither (the caller says it is unknown).
pub fn read(
    cfg: &Config,
    name: &str,
    count: usize,
    timeout: Duration,
    o: Opts,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Option<u8> {
    let sim = cfg.sims.iter().find(|s| s.name == name);
    if sim.is_none() && cfg.ingest.is_none() {
        return None;
    }
    match live(cfg, name, count.max(1), timeout) {
        Ok(lines) if lines.is_empty() => {
            let _ = writeln!(
                err,
                "error: no reading of {name:?} within {} (weir is running; is the sensor publishing?)",
                human::duration_ms(timeout.as_millis() as i64)
            );
            Some(exit::FAILURE)
        }
        Ok(lines) => {
            for l in lines {
                let text = if o.json {
                    json!({"sensor": l["sensor"], "metric": l["metric"], "value": l["value"], "ts": l["ts"]})
                        .to_string()
                } else {
                    format!(
                        "{name}/{} = {} at {}",
                        l["metric"].as_str().unwrap_or("-"),
                        l["value"].as_f64().map_or("-".into(), human::num),
                        l["ts"].as_i64().map_or("-".into(), human::local_time)
                    )
                };
                let _ = writeln!(out, "{text}");
            }
            Some(exit::OK)
        }
        Err(ClientError::NotRunning(_)) => match sim {
            Some(s) => {
                let mut g = weir_sensors::sim::SimSensor::new(s.spec.clone());
                let v = g.next_sample();
                if o.json {
                    let _ = writeln!(
                        out,
                        "{}",
                        json!({"sensor": name, "metric": s.metric, "value": v, "simulated": true, "running": false})
                    );
                } else {
                    let _ = writeln!(
                        out,
                        "{name}/{} = {} (simulated; weir is not running: its generator's first sample)",
                        s.metric,
                        v.map_or("-".into(), human::num)
                    );
                }
                Some(exit::OK)
            }
            None => {
                let _ = writeln!(
                    err,
                    "error: {name:?} is not a configured sensor; an MQTT sensor is read through the running weir, which is not running"
                );
                Some(super::status::exit_code(&ClientError::NotRunning(
                    cfg.control_socket(),
                )))
            }
        },
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            Some(super::status::exit_code(&e))
        }
    }
}

/// The next `count` readings of `name` from the running daemon, fewer if `timeout` passes.
fn live(
    cfg: &Config,
    name: &str,
    count: usize,
    timeout: Duration,
) -> Result<Vec<Value>, ClientError> {
    let mut client = Client::connect(&cfg.control_socket())?;
    client.tail(&Request::Tail {
        kinds: vec![Kind::Readings],
        sensor: Some(name.to_string()),
    })?;
    let end = std::time::Instant::now() + timeout;
    let mut lines = Vec::new();
    while lines.len() < count {
        let left = end.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        client.set_read_timeout(Some(left))?;
        match client.next_line() {
            Ok(Some(l)) if l["kind"] == "readings" => lines.push(l),
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(ClientError::Io { source, .. })
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(lines)
}
