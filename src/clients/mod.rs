//! Clients of a running agent, in the same binary: `http_client` (a small blocking
//! HTTP/1.1 client for loopback), `run` (submit, wait, print, exit with the remote
//! code), `mcp` (an MCP tool server on stdio) and `sip` (the Asterisk message format).

mod http_client;
pub(crate) mod mcp;
pub(crate) mod run;
mod sip;

pub use self::sip::MAX_REPLY as SIP_MAX_REPLY;

pub(crate) use self::http_client::{Client, default_url};
