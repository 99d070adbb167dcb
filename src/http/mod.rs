//! The HTTP side: `server` (the mio event loop and every network bound), `message`
//! (request, response, and the one mapping from an error to its status), `routes`
//! (decode, authenticate, match, hand over) and `metrics` (Prometheus counters).

mod message;
mod metrics;
mod routes;
mod server;

pub use self::server::{MAX_BODY, MAX_HEAD, parse_head};

pub(crate) use self::message::Request;
pub(crate) use self::routes::Routes;
pub(crate) use self::server::{Handler, Reply, Server, WaitKind};
