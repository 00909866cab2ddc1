//! Missing data: a key that stopped reporting. The engine decides when a key
//! is silent (no reading for `[engine] idle_timeout` of wall-clock time, see
//! [`crate::engine::Idle`]); this detector turns that into an alert episode,
//! raised at the silence and cleared by the key's next reading.
//!
//! Invariants of [`SilenceState`]:
//! - `active` is `Some` exactly while an episode is raised (boxed: an idle slot
//!   costs a pointer).
//! - `last_raised_ts` never decreases, so episode ids never repeat.
//!
//! Semantics chosen: the raised alert's `ts` and `raised_ts` are the engine's
//! idle deadline (wall clock: last arrival + idle_timeout), which is the same
//! whenever the engine noticed it, so a backtest and the daemon agree. The
//! daemon counts "last arrival" from no earlier than when Weir could hear the
//! key (its start, or the ingest link's (re)connection for MQTT keys: see
//! `Engine::hear_from`), so Weir's own downtime is never a sensor's silence; `value`
//! and `threshold` are the silence and the timeout in seconds. The cleared
//! alert's `ts` is the event time of the reading that ended the silence.

use serde::{Deserialize, Serialize};

use crate::engine::Idle;
use crate::reading::{Reading, TimestampMs};

use super::alert::{self, Alert};
use super::spec::DetectorSpec;

/// Per (silence detector, key) state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct SilenceState {
    #[serde(with = "super::alert::boxed")]
    active: Option<Box<Alert>>,
    last_raised_ts: Option<TimestampMs>,
}

impl SilenceState {
    /// The raised alert of the current episode, if any.
    pub(super) fn active(&self) -> Option<&Alert> {
        self.active.as_deref()
    }

    /// The stored alert, for restoring its static `kind` after a checkpoint.
    pub(super) fn active_mut(&mut self) -> Option<&mut Alert> {
        self.active.as_deref_mut()
    }

    /// The engine reported the key silent.
    pub(super) fn on_idle(&mut self, spec: &DetectorSpec, idle: &Idle, out: &mut Vec<Alert>) {
        if self.active.is_some() {
            return;
        }
        let silent_s = idle.deadline.saturating_sub(idle.last_arrival) as f64 / 1000.0;
        let raised = alert::raise(
            spec,
            &idle.key,
            idle.deadline,
            &mut self.last_raised_ts,
            alert::Raise {
                value: silent_s,
                baseline: None,
                threshold: silent_s,
                reason: format!(
                    "no reading for {silent_s} s (idle_timeout); the last one was stamped {}",
                    idle.last_ts
                ),
            },
        );
        out.push(raised.clone());
        self.active = Some(Box::new(raised));
    }

    /// A reading of the key arrived: the silence, if any, is over.
    pub(super) fn on_reading(&mut self, r: &Reading, out: &mut Vec<Alert>) {
        if let Some(raised) = self.active.take() {
            let reason = format!("readings resumed (a reading stamped {})", r.ts);
            out.push(alert::clear(*raised, r.value, None, reason, r.ts));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::detect::test_support::*;
    use crate::detect::{AlertState, Detectors, Key};
    use crate::engine::Idle;

    fn idle(deadline: i64) -> Idle {
        Idle {
            key: Key::new("greenhouse", "temperature"),
            last_ts: 1_000,
            last_arrival: deadline - 300_000,
            deadline,
        }
    }

    #[test]
    fn a_silent_key_raises_once_and_its_next_reading_clears_it() {
        let mut d = Detectors::new(vec![silence_spec("quiet")], 10);
        let mut out = Vec::new();
        d.on_reading(&reading("greenhouse", "temperature", 20.0, 1_000), &mut out);
        assert!(out.is_empty());
        d.on_idle(&idle(400_000), &mut out);
        d.on_idle(&idle(500_000), &mut out);
        assert_eq!(out.len(), 1, "one episode per silence");
        let a = out[0].clone();
        assert_eq!(
            (a.state, a.kind, a.ts),
            (AlertState::Raised, "silence", 400_000)
        );
        assert_eq!(a.id, "greenhouse/temperature/quiet/400000");
        assert_eq!(a.value, 300.0);
        assert!(a.reason.contains("no reading for 300 s"), "{}", a.reason);
        d.on_reading(&reading("greenhouse", "temperature", 21.0, 2_000), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[1].state, out[1].id.as_str()),
            (AlertState::Cleared, a.id.as_str())
        );
        assert_eq!(d.active_alerts().count(), 0);
    }

    #[test]
    fn silence_of_a_key_no_silence_detector_matches_says_nothing() {
        let mut spec = silence_spec("quiet");
        spec.sensor = crate::detect::Glob::new("kitchen");
        let mut d = Detectors::new(vec![spec], 10);
        let mut out = Vec::new();
        d.on_idle(&idle(400_000), &mut out);
        assert!(out.is_empty());
    }
}
