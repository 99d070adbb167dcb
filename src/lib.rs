//! sudo-agent: run allowlisted root commands over loopback HTTP, each gated by a fresh
//! TOTP code from the owner's phone.
//!
//! A request travels `server` (mio loop, httparse) → `api` (route, JSON, errors) →
//! `auth` (throttle, TOTP, replay) → `policy` (words → rule) → `jobs` (queue, thread) →
//! `exec` (environment, process group, timeout, capture) → `results` + `audit` → back to
//! `server` through a `mio::Waker`.

pub mod clock;
pub mod config;
pub mod files;
pub mod policy;
pub mod sys;
pub mod totp;
