//! The HTTP edge: the JSON error every refused request gets, request-body
//! limits, and the per-key log throttle webhook handlers share.

pub mod error;
pub mod limits;
pub mod log_throttle;
