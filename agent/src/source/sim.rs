//! Simulated sensors as a source: one task per sensor, a sample per interval,
//! timestamped at generation like a real sensor read.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;
use weir_sensors::sim::SimSensor;

use super::Input;
use crate::config::{SimSource, WhenFull};
use crate::metrics::Counters;
use crate::reading::{Key, Reading, TsSource};
use crate::wire::DeadLetter;

/// Samples `src` until `stop` is cancelled.
pub async fn run(
    src: SimSource,
    tx: mpsc::Sender<Input>,
    counters: Arc<Counters>,
    stop: CancellationToken,
) {
    let key = Key::new(src.name.as_str(), src.metric.as_str());
    let mut sensor = SimSensor::new(src.spec);
    let mut tick = tokio::time::interval(src.interval);
    // A blocked sensor does not catch up in a burst when room frees: it samples on.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(value) = sensor.next_sample() else {
            continue;
        };
        let stamp = crate::clock::stamp();
        let ts = stamp.ms;
        let input = match Reading::new(key.clone(), value, ts, stamp.source(TsSource::Event)) {
            Ok(r) => Input::Reading(r),
            Err(e) => Input::DeadLetter(DeadLetter {
                source: key.to_string(),
                reason: "non_finite",
                detail: e.to_string(),
                payload: value.to_string(),
                received_at: ts,
            }),
        };
        match src.when_full {
            WhenFull::Block => {
                tokio::select! {
                    // Stopping while blocked loses only this sample, which was never
                    // acknowledged to anyone.
                    _ = stop.cancelled() => return,
                    sent = tx.send(input) => if sent.is_err() { return },
                }
            }
            WhenFull::DropNewest => match tx.try_send(input) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => counters.bump("dropped", "sim_channel_full", 1),
                Err(TrySendError::Closed(_)) => return,
            },
        }
    }
}
