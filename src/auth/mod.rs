//! The first lock: a TOTP code from the owner's phone. `totp` is the RFC 6238
//! verifier, `throttle` the gate every code passes (lockout, replay), `state` what the
//! gate persists across restarts, `secret` the key on disk.

mod secret;
mod state;
mod throttle;
pub mod totp;

pub(crate) use self::secret::{SecretError, SecretKey, load_secret, new_secret};
pub(crate) use self::state::{StateError, StateStore};
pub(crate) use self::throttle::{Auth, Denied};
