//! The HTTP edge: the JSON error every refused request gets, request-body
//! limits, and the per-key log throttle webhook handlers share.

pub mod error;
pub mod limits;
pub mod log_throttle;

/// The peer of the connection a request came on, for handlers that log by
/// source (`warp::ext::optional::<PeerAddr>()`); the server inserts it.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);
