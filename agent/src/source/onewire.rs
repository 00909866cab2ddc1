//! DS18B20 probes as polled sources (one thread for the 1-Wire bus).

use weir_sensors::onewire;

use super::health::ReadError;
use super::poll::{Polled, PolledSensor};
use crate::config::OneWireProbe;

/// One probe.
pub struct Probe {
    cfg: OneWireProbe,
    metrics: Vec<String>,
}

impl Probe {
    /// The reader of a configured probe.
    pub fn new(cfg: OneWireProbe) -> Self {
        let metrics = vec![cfg.metric.clone()];
        Self { cfg, metrics }
    }
}

impl Polled for Probe {
    fn read(&mut self) -> Result<Vec<f64>, ReadError> {
        onewire::read(&self.cfg.base, &self.cfg.id)
            .map(|t| vec![t])
            .map_err(|e| ReadError {
                fault: e.fault(),
                detail: e.to_string(),
            })
    }

    fn metrics(&self) -> &[String] {
        &self.metrics
    }
}

/// The probes, as the 1-Wire thread runs them.
pub fn sensors(probes: &[OneWireProbe]) -> Vec<PolledSensor> {
    probes
        .iter()
        .map(|p| PolledSensor {
            name: p.name.clone(),
            sensor: Box::new(Probe::new(p.clone())),
            policy: p.poll.clone(),
        })
        .collect()
}
