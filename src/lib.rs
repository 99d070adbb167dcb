//! sudo-agent: run allowlisted root commands over loopback HTTP, each gated by a fresh
//! TOTP code from the owner's phone.
//!
//! A request travels `http::server` (mio loop, httparse) → `http::routes` (route, JSON,
//! errors) → `auth` (throttle, TOTP, replay) → `policy` (words → rule) → `jobs::table`
//! (queue, thread) → `jobs::exec` (environment, process group, timeout, capture) →
//! `jobs::results` + `jobs::journal` + `audit` (+ `jobs::notify`) → back to the loop
//! through a `mio::Waker`. `serve` assembles the agent; `cli` is the command line,
//! `clients` the programs that talk to a running agent, `deploy` what puts one on a box.
//! Every libc call and `unsafe` block is in `sys`.

#![deny(unsafe_code)]

mod audit;
mod auth;
mod cli;
mod clients;
mod config;
mod deploy;
mod http;
mod jobs;
mod policy;
mod serve;
#[allow(unsafe_code)]
mod sys;
mod text;

pub use cli::main;

/// TOTP codes as the owner's phone makes them, for tests that play the owner.
pub mod totp {
    pub use crate::auth::totp::{Params, base32_decode, base32_encode, code_at, verify};
}

/// The parsers that take hostile input, for the fuzz targets and tests that drive them
/// directly; everything else stays private to the crate, so unused code is reported.
pub mod testing {
    pub use crate::clients::SIP_MAX_REPLY;
    pub use crate::config::{Config, parse as parse_config};
    pub use crate::http::{MAX_BODY, MAX_HEAD, parse_head};
    pub use crate::policy::{
        Action, ArgPattern, Invocation, Rule, WordRe, matches, plan, split_words,
    };
}
