//! sudo-agent: run allowlisted root commands over loopback HTTP, each gated by a fresh
//! TOTP code from the owner's phone.
//!
//! A request travels `server` (mio loop, httparse) → `api` (route, JSON, errors) →
//! `auth` (throttle, TOTP, replay) → `policy` (words → rule) → `jobs` (queue, thread) →
//! `exec` (environment, process group, timeout, capture) → `results` + `journal` +
//! `audit` (+ `notify`) → back to `server` through a `mio::Waker`.

pub mod agent;
pub mod api;
pub mod audit;
pub mod auth;
pub mod check;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod enrol;
pub mod exec;
pub mod files;
pub mod http;
pub mod install;
pub mod jobs;
pub mod journal;
pub mod mcp;
pub mod metrics;
pub mod notify;
pub mod policy;
pub mod results;
pub mod run;
pub mod server;
pub mod sip;
pub mod state;
pub mod sys;
pub mod systemd;
pub mod totp;
