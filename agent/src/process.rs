//! One input in, the messages it causes out: engine, detectors and wire format
//! composed, with no I/O. The daemon's engine task runs this; so will anything
//! that must give exactly what the daemon gives for the same inputs (a backtest).

use std::sync::Arc;

use crate::detect::{AlertState, Detectors};
use crate::engine::{Engine, Output, RejectReason};
use crate::metrics::Counters;
use crate::outbox::NewMessage;
use crate::reading::TimestampMs;
use crate::source::Input;
use crate::wire::Wire;

/// The pure processing core of the pipeline.
pub struct Processor {
    /// Windows and watermarks.
    pub engine: Engine,
    /// Detectors and their alert lifecycle.
    pub detectors: Detectors,
    wire: Wire,
    counters: Arc<Counters>,
    outputs: Vec<Output>,
    alerts: Vec<crate::detect::Alert>,
}

impl Processor {
    /// Composes the parts; `counters` receives every count.
    pub fn new(engine: Engine, detectors: Detectors, wire: Wire, counters: Arc<Counters>) -> Self {
        Self {
            engine,
            detectors,
            wire,
            counters,
            outputs: Vec::new(),
            alerts: Vec::new(),
        }
    }

    /// Handles one input at wall-clock `now`, appending the messages it causes
    /// (panes, alerts, late readings, dead letters) to `msgs` in causal order.
    pub fn input(&mut self, input: Input, now: TimestampMs, msgs: &mut Vec<NewMessage>) {
        let c = &self.counters;
        match input {
            Input::Reading(r) => {
                Counters::add(&c.readings, 1);
                self.engine.push(r.clone(), now, &mut self.outputs);
                let mut refused = false;
                for out in self.outputs.drain(..) {
                    match out {
                        Output::Pane(p) => {
                            let n = if p.revision == 0 {
                                &c.panes_on_time
                            } else {
                                &c.panes_late
                            };
                            Counters::add(n, 1);
                            self.detectors.on_pane(&p, &mut self.alerts);
                            msgs.push(self.wire.pane(&p, now));
                        }
                        Output::Late(l) => {
                            Counters::add(&c.late, 1);
                            msgs.push(self.wire.late(&l, now));
                        }
                        Output::Rejected { reading, reason } => {
                            refused = true;
                            c.bump("rejected", reason.as_str(), 1);
                            // Quarantined readings are published; limit rejections are
                            // only counted, or a flood of new keys would flood the outbox.
                            if reason == RejectReason::FutureSkew {
                                msgs.push(self.wire.rejected(&reading, reason.as_str(), now));
                            }
                        }
                    }
                }
                // A refused reading (quarantined, over a limit) is not evidence of anything.
                if !refused {
                    self.detectors.on_reading(&r, &mut self.alerts);
                }
            }
            Input::DeadLetter(d) => {
                c.bump("deadletter", d.reason, 1);
                tracing::debug!(source = %d.source, reason = d.reason, detail = %d.detail, "dead letter");
                msgs.push(self.wire.dead_letter(&d, now));
            }
            Input::Alert(a) => self.alerts.push(a),
        }
        for a in self.alerts.drain(..) {
            let n = match a.state {
                AlertState::Raised => &c.alerts_raised,
                AlertState::Cleared => &c.alerts_cleared,
            };
            Counters::add(n, 1);
            tracing::info!(id = %a.id, state = ?a.state, reason = %a.reason, "alert");
            msgs.push(self.wire.alert(&a, now));
        }
    }
}
