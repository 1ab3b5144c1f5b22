//! The HTTP edge: the JSON error every refused request gets, request-body
//! limits, the per-key log throttle webhook handlers share, the identity
//! filter, and the common answers (JSON, the signed-in redirect).

pub mod error;
pub mod identity;
pub mod limits;
pub mod log_throttle;
pub mod reply;

pub use identity::{auth_header, authenticate, bearer};
pub use reply::{body, json_response, redirect_with_token, respond};
