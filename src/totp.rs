//! RFC 4226 HOTP and RFC 6238 TOTP (SHA-1), hand-written on `hmac` + `sha1` so it can be
//! audited line by line. Base32 (RFC 4648) for secrets, otpauth:// Key URIs.
//! (Skeleton: bodies are filled in by the TOTP work item.)

/// Code shape and time window, from `config.totp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// 6–8 digits.
    pub digits: u32,
    /// Step length in seconds, 1–300.
    pub step_s: u64,
    /// Steps accepted either side of now, 0–10.
    pub skew: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            digits: 6,
            step_s: 30,
            skew: 1,
        }
    }
}

/// Verifies `code` at `unix` seconds; returns the matched time step (the caller enforces
/// replay by accepting only steps greater than the last accepted one).
pub fn verify(_key: &[u8], _code: &str, _unix: u64, _params: &Params) -> Option<u64> {
    todo!()
}

/// The code for time `unix`, zero-padded to `params.digits`.
pub fn code_at(_key: &[u8], _unix: u64, _params: &Params) -> String {
    todo!()
}
