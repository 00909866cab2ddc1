//! Detectors and the alert lifecycle.

mod alert;
mod glob;
mod spec;

pub use alert::{Alert, AlertState};
pub use glob::Glob;
pub use spec::{DetectError, DetectorKind, DetectorSpec, Severity, validate_specs};
