//! The HTTP side: `server` (the mio event loop and every network bound), `browser`
//! (web pages and DNS rebinding kept out), `message` (request, response, and the one
//! mapping from an error to its status), `body` (JSON bodies decoded without ever
//! quoting a value), `routes` (decode, authenticate, match, hand over) and `metrics`
//! (Prometheus counters).

mod body;
mod browser;
mod message;
mod metrics;
mod routes;
mod server;

pub use self::server::{MAX_BODY, MAX_HEAD, parse_head};

pub(crate) use self::browser::Gate;
pub(crate) use self::message::{Request, Response};
pub(crate) use self::routes::Routes;
pub(crate) use self::server::{Handler, Limits, Reply, Server, WaitKind, Woken};
