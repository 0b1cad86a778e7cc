//! Settlement: SI intake, matching and lifecycle (issue 6 parts 1–3).

pub mod intake;
pub mod lifecycle;
pub mod matching;
pub mod metrics;
