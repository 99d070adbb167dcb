//! Clients of a running agent, in the same binary: `http_client` (a small blocking
//! HTTP/1.1 client for loopback), `run` (submit, wait, print, exit with the remote
//! code; also `approve`, `deny`, `run --request`), `pending`, `mcp` (an MCP tool
//! server on stdio), `sip` (the Asterisk message format), `shown` (a held request as a
//! human reads it) and `endpoint` (TCP or the agent's Unix socket, and what a client
//! may read of the config).

mod endpoint;
mod http_client;
pub(crate) mod mcp;
pub(crate) mod pending;
pub(crate) mod run;
mod shown;
mod sip;

pub use self::sip::MAX_REPLY as SIP_MAX_REPLY;

pub(crate) use self::endpoint::Endpoint;
pub(crate) use self::http_client::Client;
