//! One input in, the messages it causes out: engine, detectors and wire format
//! composed, with no I/O. The daemon's engine task runs this, and so does
//! `weir backtest`: they give the same messages for the same inputs at the same
//! wall-clock times.

use std::sync::Arc;

use crate::detect::{AlertState, Detectors};
use crate::engine::{Engine, Output, RejectReason};
use crate::metrics::Counters;
use crate::outbox::NewMessage;
use crate::reading::{Reading, TimestampMs};
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
    scores: Option<Vec<Score>>,
    /// Detector names as shared strings, so a score record does not allocate.
    names: Vec<Arc<str>>,
    homeassistant: Option<crate::homeassistant::HomeAssistant>,
}

/// How anomalous one reading looked to its key's detectors (see
/// [`Detectors::score`]), recorded when [`Processor::record_scores`] is on.
#[derive(Clone, Debug, PartialEq)]
pub struct Score {
    /// The reading.
    pub reading: Reading,
    /// In [0, 1]; 0 when no detector scores the key.
    pub score: f64,
    /// The detector that gave the highest score, when it is above 0.
    pub detector: Option<Arc<str>>,
}

/// The shared copy of a detector's name (a config has a handful).
fn intern(names: &mut Vec<Arc<str>>, name: &str) -> Arc<str> {
    if let Some(n) = names.iter().find(|n| &***n == name) {
        return n.clone();
    }
    let n: Arc<str> = Arc::from(name);
    names.push(n.clone());
    n
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
            scores: None,
            names: Vec::new(),
            homeassistant: None,
        }
    }

    /// Also publishes Home Assistant discovery and entity states (the daemon's
    /// `[homeassistant]`).
    pub fn with_homeassistant(mut self, ha: Option<crate::homeassistant::HomeAssistant>) -> Self {
        self.homeassistant = ha;
        self
    }

    /// The Home Assistant publisher, when on.
    pub fn homeassistant(&mut self) -> Option<&mut crate::homeassistant::HomeAssistant> {
        self.homeassistant.as_mut()
    }

    /// Records a [`Score`] for every reading the engine accepts (the daemon
    /// does not; the backtest does). Collect them with [`Processor::take_scores`].
    pub fn record_scores(&mut self, on: bool) {
        self.scores = on.then(Vec::new);
    }

    /// The scores recorded since the last call, in input order, swapped into
    /// `into` (cleared first): the two buffers are reused, not reallocated.
    pub fn take_scores(&mut self, into: &mut Vec<Score>) {
        into.clear();
        if let Some(s) = &mut self.scores {
            std::mem::swap(s, into);
        }
    }

    /// Lets wall-clock time pass to `now`: held late panes that are due and
    /// windows of idle keys go out, with the alerts they cause. Cheap when
    /// nothing is due. [`Processor::input`] calls it first, so what a run
    /// emits does not depend on how often the daemon's timer calls it.
    pub fn tick(&mut self, now: TimestampMs, msgs: &mut Vec<NewMessage>) {
        self.engine.tick(now, &mut self.outputs);
        self.drain(now, msgs);
    }

    /// Publishes the `cleared` of every open episode the restored state could not
    /// keep (see [`crate::detect::Detectors::end_orphaned`]); at start, once.
    pub fn end_orphaned_alerts(&mut self, now: TimestampMs, msgs: &mut Vec<NewMessage>) {
        self.detectors.end_orphaned(now, &mut self.alerts);
        self.drain_alerts(now, msgs);
    }

    /// Handles one input at wall-clock `now`, appending the messages it causes
    /// (panes, alerts, late readings, dead letters) to `msgs` in causal order.
    pub fn input(&mut self, input: Input, now: TimestampMs, msgs: &mut Vec<NewMessage>) {
        self.tick(now, msgs);
        match input {
            Input::Reading(r) => {
                Counters::add(&self.counters.readings, 1);
                // Scored against what the detectors knew before this reading.
                let score = self.scores.is_some().then(|| {
                    let s = self.detectors.score(&r).filter(|s| s.0 > 0.0);
                    (
                        s.map_or(0.0, |s| s.0),
                        s.map(|s| intern(&mut self.names, s.1)),
                    )
                });
                self.engine.push_ref(&r, now, &mut self.outputs);
                let late = self.outputs.iter().any(|o| matches!(o, Output::Late(_)));
                let refused = self.drain(now, msgs);
                if !refused && !late {
                    Counters::add(&self.counters.windowed, 1);
                }
                // A refused reading (quarantined, over a limit) is not evidence of anything.
                if !refused {
                    let online = self.detectors.on_reading_scored(&r, &mut self.alerts);
                    if let (Some(scores), Some((mut score, mut detector))) =
                        (&mut self.scores, score)
                    {
                        // Per-reading statistical detectors judge a reading as
                        // they learn it: their score is ready only now.
                        if let Some((o, name)) = online {
                            if o > score {
                                score = o;
                                detector = Some(intern(&mut self.names, name));
                            }
                        }
                        // The reading itself, not a clone: nothing needs it after this.
                        scores.push(Score {
                            reading: r,
                            score,
                            detector,
                        });
                    }
                }
            }
            Input::DeadLetter(d) => {
                self.counters.bump("deadletter", d.reason, 1);
                tracing::debug!(source = %d.source, reason = d.reason, detail = %d.detail, "dead letter");
                msgs.push(self.wire.dead_letter(&d, now));
            }
            Input::Alert(a) => self.alerts.push(a),
            // The daemon unpacks deliveries itself (it owes their acknowledgements);
            // anywhere else the inputs are simply processed.
            Input::Delivery(d) => {
                for i in d.inputs {
                    self.input(i, now, msgs);
                }
            }
            Input::Release(_) => {}
        }
        self.drain_alerts(now, msgs);
    }

    /// Turns the engine's outputs into messages and detector calls; true if
    /// one of them refused a reading.
    fn drain(&mut self, now: TimestampMs, msgs: &mut Vec<NewMessage>) -> bool {
        let c = &self.counters;
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
                    if let Some(ha) = &mut self.homeassistant {
                        ha.pane(&p, self.detectors.active_alerts(), now, msgs);
                    }
                }
                Output::Late(l) => {
                    Counters::add(&c.late, 1);
                    msgs.push(self.wire.late(&l, now));
                }
                Output::Rejected { reading, reason } => {
                    refused = true;
                    c.bump("rejected", reason.as_str(), 1);
                    // Clock-guard and range rejections are published; limit rejections
                    // are only counted, or a flood of new keys would flood the outbox.
                    if matches!(
                        reason,
                        RejectReason::FutureSkew | RejectReason::TooOld | RejectReason::OutOfRange
                    ) {
                        msgs.push(self.wire.rejected(&reading, reason.as_str(), now));
                    }
                }
                Output::Idle(idle) => {
                    c.bump("idle", "keys", 1);
                    tracing::debug!(key = %idle.key, last_ts = idle.last_ts, "key idle");
                    self.detectors.on_idle(&idle, &mut self.alerts);
                }
            }
        }
        self.drain_alerts(now, msgs);
        refused
    }

    fn drain_alerts(&mut self, now: TimestampMs, msgs: &mut Vec<NewMessage>) {
        // Nearly every reading raises nothing: not even an empty drain then.
        if self.alerts.is_empty() {
            return;
        }
        let c = &self.counters;
        for a in self.alerts.drain(..) {
            let n = match a.state {
                AlertState::Raised => &c.alerts_raised,
                AlertState::Cleared => &c.alerts_cleared,
            };
            Counters::add(n, 1);
            tracing::info!(id = %a.id, state = ?a.state, reason = %a.reason, "alert");
            msgs.push(self.wire.alert(&a, now));
            if let Some(ha) = &mut self.homeassistant {
                ha.alert(&a, now, msgs);
            }
        }
    }
}

#[cfg(test)]
#[path = "process_tests.rs"]
mod tests;
