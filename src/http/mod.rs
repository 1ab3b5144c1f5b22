//! The HTTP edge every feature's routes share: the JSON error every refused
//! request gets ([`error`]), who is calling ([`identity`]), request bodies
//! and queries read within their limits ([`request`]), answers — JSON, the
//! small HTML pages, the signed-in redirect ([`reply`]) —, warp's own
//! rejections turned into the error shape ([`mod@recover`]), what every
//! provider's sign-in routes answer ([`sign_in`]), the CORS origin
//! check ([`cors`]), the body idle timeout ([`limits`]) and the per-key log
//! throttle webhook handlers share ([`log_throttle`]).

pub mod cors;
pub mod error;
pub mod identity;
pub mod limits;
pub mod log_throttle;
pub mod recover;
pub mod reply;
pub mod request;
pub mod sign_in;

pub use cors::origin_allowed;
pub use error::{clip, ApiError, ApiResult};
pub use identity::{auth_header, authenticate, bearer, Authenticator};
pub use recover::recover;
pub use reply::{json_response, respond};
pub use request::{body, query, with_state, QueryParams};

/// The peer of the connection a request came on, for handlers that log by
/// source (`warp::ext::optional::<PeerAddr>()`); the server inserts it.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);
