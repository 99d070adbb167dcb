//! The HTTP side: `server` (the mio event loop and every network bound), `head` (a
//! request head parsed, within its bounds), `browser` (web pages and DNS rebinding kept
//! out), `message` (request, response, and the one
//! mapping from an error to its status), `body` (JSON bodies decoded without ever
//! quoting a value), `routes` (decode, authenticate, match, hand over), `held` (requests
//! held for a human: request, approve, deny, pending), `stream` (a connection, TCP or
//! Unix, and its caller), `users` (callers' names, from a snapshot of the user database
//! read off the loop) and `metrics` (Prometheus counters).

mod body;
mod browser;
mod head;
mod held;
mod message;
mod metrics;
mod routes;
mod server;
mod stream;
mod users;

pub use self::head::{MAX_BODY, MAX_HEAD, parse_head};

pub(crate) use self::browser::Gate;
pub(crate) use self::message::Request;
pub(crate) use self::routes::Routes;
pub(crate) use self::server::{Handler, Limits, Reply, Server, WaitKind, Woken};
pub(crate) use self::users::Users;
