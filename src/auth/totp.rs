//! RFC 4226 HOTP and RFC 6238 TOTP (SHA-1), hand-written on `hmac` + `sha1` so it can be
//! audited line by line. Base32 (RFC 4648) for secrets, otpauth:// Key URIs.
//!
//! Nothing here panics for any input: out-of-range parameters make [`verify`] refuse
//! (fail closed) and make [`code_at`] clamp, as each function documents.

use std::fmt;
use std::hint::black_box;

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

type HmacSha1 = Hmac<Sha1>;

/// Secret length made by [`generate_secret`]: 160 bits, the length RFC 4226 §4 recommends
/// (it requires at least 128).
pub const SECRET_BYTES: usize = 20;

/// RFC 4226 §4 (R6): a shared secret of fewer than 128 bits is not allowed.
const MIN_SECRET_BYTES: usize = 16;

/// Code lengths [`verify`] accepts and [`code_at`] clamps to (RFC 4226 R4, `config.totp`).
const MIN_DIGITS: u32 = 6;
const MAX_DIGITS: u32 = 8;

/// Largest skew [`verify`] accepts (`config.totp.skew` is 0–10). It bounds the work a
/// single request can cause: the window is checked in full, without early exit.
const MAX_SKEW: u64 = 10;

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

/// RFC 4226 HOTP: HMAC-SHA1 of the 8-byte big-endian counter, dynamic truncation to 31
/// bits, then `mod 10^digits`. For `digits >= 10` the 31-bit value is returned whole
/// (it is already below 10^10), so no `digits` overflows.
pub fn hotp(key: &[u8], counter: u64, digits: u32) -> u32 {
    // HMAC takes keys of any length (long ones are hashed), so this never fails; the
    // arm exists only to avoid an unwrap. u32::MAX has ten digits, so it can never
    // equal a 6–8 digit code: a failure here would refuse, not accept.
    let Ok(mut mac) = <HmacSha1 as KeyInit>::new_from_slice(key) else {
        return u32::MAX;
    };
    mac.update(&counter.to_be_bytes());
    let hash: [u8; 20] = mac.finalize().into_bytes().into();
    // Dynamic truncation (RFC 4226 §5.3): the low nibble of the last byte picks 4 bytes;
    // offset <= 15, so offset + 3 <= 18 stays inside the 20-byte SHA-1 output.
    let offset = usize::from(hash[19] & 0x0f);
    let bin = u32::from_be_bytes([
        hash[offset] & 0x7f, // top bit cleared: avoids signed/unsigned ambiguity (§5.3)
        hash[offset + 1],
        hash[offset + 2],
        hash[offset + 3],
    ]);
    match 10u32.checked_pow(digits) {
        Some(modulus) => bin % modulus,
        None => bin,
    }
}

/// The RFC 6238 time step `T = unix / step_s`, all in u64 so it is right past 2038 (and
/// past 2106). A zero `step_s` (which config refuses) is treated as 1 s instead of
/// dividing by zero.
pub fn step_at(unix: u64, step_s: u64) -> u64 {
    unix / step_s.max(1)
}

/// The code for time `unix`, zero-padded to `params.digits`. Digits outside 6–8 are
/// clamped into that range; `step_s` 0 is treated as 1 (see `step_at`).
pub fn code_at(key: &[u8], unix: u64, params: &Params) -> String {
    let digits = params.digits.clamp(MIN_DIGITS, MAX_DIGITS);
    let code = ascii_code(hotp(key, step_at(unix, params.step_s), digits), digits);
    code.iter()
        .take(digits as usize)
        .map(|&b| char::from(b))
        .collect()
}

/// Verifies `code` at `unix` seconds; returns the matched time step (the caller enforces
/// replay by accepting only steps greater than the last accepted one).
///
/// `code` must be exactly `params.digits` ASCII digits. Every step in
/// `[now - skew, now + skew]` (clamped to `0..=u64::MAX`) is computed and compared in
/// constant time, with no early exit, so timing does not tell which step (if any) was
/// close; when several steps match, the largest wins (it keeps replay protection
/// strictest). Parameters config would refuse (digits outside 6–8, `step_s` 0, skew
/// above 10) match nothing: they mean a bug upstream, and refusing is the safe failure.
pub fn verify(key: &[u8], code: &str, unix: u64, params: &Params) -> Option<u64> {
    if !(MIN_DIGITS..=MAX_DIGITS).contains(&params.digits)
        || params.step_s == 0
        || params.skew > MAX_SKEW
    {
        return None;
    }
    let digits = params.digits as usize;
    let given = code.as_bytes();
    // Byte checks, so fullwidth or other Unicode digits, signs and spaces are refused.
    // Only the shape of the input is revealed by returning early here, never the secret.
    if given.len() != digits || !given.iter().all(u8::is_ascii_digit) {
        return None;
    }

    let now = step_at(unix, params.step_s);
    let first = now.saturating_sub(params.skew);
    let last = now.saturating_add(params.skew);
    let mut found: u64 = 0;
    let mut best: u64 = 0;
    // An inclusive range ends at u64::MAX without overflowing.
    for step in first..=last {
        let expected = ascii_code(hotp(key, step, params.digits), params.digits);
        let mut diff: u8 = 0;
        for (e, g) in expected.iter().zip(given) {
            diff |= e ^ g;
        }
        // black_box keeps the optimiser from turning the accumulation into an early exit.
        let hit = u64::from(black_box(diff) == 0);
        // Branch-free select: all ones on a hit, so a later (larger) matching step
        // replaces the earlier one.
        let mask = hit.wrapping_neg();
        best = (step & mask) | (best & !mask);
        found |= hit;
    }
    (found == 1).then_some(best)
}

/// `value` as exactly `digits` ASCII digits, zero-padded, at the start of the buffer.
/// Written by hand (not `format!`) so verifying allocates nothing.
fn ascii_code(mut value: u32, digits: u32) -> [u8; MAX_DIGITS as usize] {
    let mut out = [b'0'; MAX_DIGITS as usize];
    // take() bounds the write even if a caller passed more than MAX_DIGITS.
    for slot in out.iter_mut().take(digits as usize).rev() {
        // value % 10 < 10, so the cast is lossless.
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
    out
}

/// Why a base32 secret was refused. Positions count characters of the input from 1,
/// spaces and hyphens included, so they match what the owner sees in the file. No
/// variant holds a character of the secret: these messages reach stderr and the
/// journal, which others may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base32Error {
    /// No base32 characters at all.
    Empty,
    /// A character outside A–Z, a–z, 2–7, space, hyphen and trailing `=`.
    InvalidChar { pos: usize },
    /// `=` followed by more base32 data.
    MisplacedPadding { pos: usize },
    /// A number of `=` that does not fit the number of data characters.
    BadPadding { data_chars: usize, pad_chars: usize },
    /// A count of data characters no whole number of bytes encodes to (1, 3 or 6 mod 8).
    BadLength { data_chars: usize },
    /// The last character carries non-zero bits past the last byte. Canonical encoders
    /// never emit that, so the text was mistyped or cut short; it is refused.
    TrailingBits { pos: usize },
    /// Decoded fine, but shorter than RFC 4226's 128-bit minimum.
    TooShort { bytes: usize },
}

impl fmt::Display for Base32Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Base32Error::Empty => write!(f, "base32 secret is empty"),
            Base32Error::InvalidChar { pos } => write!(
                f,
                "base32 secret: the character at position {pos} is not allowed \
                 (only A-Z, 2-7, spaces, hyphens and trailing '='; 0, 1, 8 and 9 are not \
                 base32: O, I or L, and B may be meant)"
            ),
            Base32Error::MisplacedPadding { pos } => write!(
                f,
                "base32 secret: padding '=' at position {pos} is followed by more data; \
                 '=' may only end the secret"
            ),
            Base32Error::BadPadding {
                data_chars,
                pad_chars,
            } => write!(
                f,
                "base32 secret: {pad_chars} padding '=' do not fit {data_chars} data \
                 characters (remove the '=' or fix the length)"
            ),
            Base32Error::BadLength { data_chars } => write!(
                f,
                "base32 secret: bad length, {data_chars} characters cannot encode whole \
                 bytes; a character is missing or extra"
            ),
            Base32Error::TrailingBits { pos } => write!(
                f,
                "base32 secret: the last character, at position {pos}, has non-zero \
                 trailing bits; the secret is mistyped or cut short"
            ),
            Base32Error::TooShort { bytes } => write!(
                f,
                "secret too short: {bytes} bytes ({} bits), RFC 4226 requires at least \
                 {MIN_SECRET_BYTES} bytes (128 bits); `sudo-agent init --force` makes a \
                 new 160-bit one",
                bytes * 8
            ),
        }
    }
}

impl std::error::Error for Base32Error {}

const BASE32_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// The 5-bit value of a base32 character, either case.
fn base32_value(ch: char) -> Option<u8> {
    match ch {
        'A'..='Z' => Some(ch as u8 - b'A'),
        'a'..='z' => Some(ch as u8 - b'a'),
        '2'..='7' => Some(ch as u8 - b'2' + 26),
        _ => None,
    }
}

/// Decodes an RFC 4648 base32 secret as owners type and paste it: lowercase, spaces and
/// hyphens (as apps group it) and missing `=` padding are accepted; any other character,
/// `=` before the end, impossible lengths and non-zero trailing bits are refused, as is
/// a result under 16 bytes (RFC 4226 requires at least 128 bits). Callers reading a file
/// trim its line ending first: a newline here is refused like any other character.
pub fn base32_decode(text: &str) -> Result<Vec<u8>, Base32Error> {
    let mut out = Vec::with_capacity(text.len() / 8 * 5 + 5);
    let mut buffer: u32 = 0; // bits not yet emitted, in the low `bits` bits
    let mut bits: u32 = 0;
    let mut data_chars: usize = 0;
    let mut pad_chars: usize = 0;
    let mut first_pad: usize = 0;
    let mut last_data: Option<usize> = None;

    for (index, ch) in text.chars().enumerate() {
        let pos = index + 1;
        if ch == ' ' || ch == '-' {
            continue;
        }
        if ch == '=' {
            if pad_chars == 0 {
                first_pad = pos;
            }
            pad_chars += 1;
            continue;
        }
        let Some(value) = base32_value(ch) else {
            return Err(Base32Error::InvalidChar { pos });
        };
        if pad_chars > 0 {
            return Err(Base32Error::MisplacedPadding { pos: first_pad });
        }
        data_chars += 1;
        last_data = Some(pos);
        buffer = (buffer << 5) | u32::from(value);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            // Only the byte just completed; the mask drops the already emitted bits.
            out.push(((buffer >> bits) & 0xff) as u8);
        }
        // At most 7 pending bits remain: keep only them so the u32 never overflows.
        buffer &= (1 << bits) - 1;
    }

    if data_chars == 0 {
        return Err(Base32Error::Empty);
    }
    // 8 characters make 5 bytes; the last group may have 2, 4, 5 or 7 characters
    // (1, 2, 3 or 4 bytes). 1, 3 or 6 leftover characters encode no whole byte.
    let rem = data_chars % 8;
    if matches!(rem, 1 | 3 | 6) {
        return Err(Base32Error::BadLength { data_chars });
    }
    if pad_chars > 0 && (rem == 0 || rem + pad_chars != 8) {
        return Err(Base32Error::BadPadding {
            data_chars,
            pad_chars,
        });
    }
    if buffer != 0
        && let Some(pos) = last_data
    {
        return Err(Base32Error::TrailingBits { pos });
    }
    if out.len() < MIN_SECRET_BYTES {
        return Err(Base32Error::TooShort { bytes: out.len() });
    }
    Ok(out)
}

/// RFC 4648 base32, uppercase, without `=` padding (what authenticator apps and the
/// otpauth:// format expect).
pub fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5).saturating_mul(8));
    let mut buffer: u32 = 0;
    let mut bits: u32 = 0;
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(
                BASE32_ALPHABET[((buffer >> bits) & 0x1f) as usize],
            ));
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        // Leftover bits go high in the last character, zero-filled (RFC 4648 §6).
        out.push(char::from(
            BASE32_ALPHABET[((buffer << (5 - bits)) & 0x1f) as usize],
        ));
    }
    out
}

/// A new 160-bit secret from the operating system's CSPRNG (`getrandom`).
pub fn generate_secret() -> Result<Vec<u8>, getrandom::Error> {
    let mut secret = vec![0u8; SECRET_BYTES];
    getrandom::fill(&mut secret)?;
    Ok(secret)
}

/// Google Key URI format:
/// `otpauth://totp/ISSUER:ACCOUNT?secret=…&issuer=ISSUER&algorithm=SHA1&digits=6&period=30`.
/// Issuer and account are percent-encoded (RFC 3986 unreserved characters kept, space
/// as `%20`). An empty issuer leaves out both the label prefix and the parameter.
pub fn otpauth_uri(secret: &[u8], account: &str, issuer: &str, params: &Params) -> String {
    let account = percent_encode(account);
    let secret = base32_encode(secret);
    let (digits, period) = (params.digits, params.step_s);
    if issuer.is_empty() {
        format!(
            "otpauth://totp/{account}?secret={secret}&algorithm=SHA1&digits={digits}&period={period}"
        )
    } else {
        let issuer = percent_encode(issuer);
        format!(
            "otpauth://totp/{issuer}:{account}?secret={secret}&issuer={issuer}\
             &algorithm=SHA1&digits={digits}&period={period}"
        )
    }
}

/// RFC 3986 percent-encoding of every byte outside the unreserved set
/// (`A-Z a-z 0-9 - . _ ~`), UTF-8 bytes one by one.
fn percent_encode(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len());
    for &byte in text.as_bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B / RFC 4226 Appendix D key: ASCII "12345678901234567890".
    const RFC_KEY: &[u8] = b"12345678901234567890";

    fn p(digits: u32, step_s: u64, skew: u64) -> Params {
        Params {
            digits,
            step_s,
            skew,
        }
    }

    #[test]
    fn rfc6238_appendix_b_sha1() {
        let rows: [(u64, &str); 6] = [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ];
        let params = p(8, 30, 1);
        for (unix, expected) in rows {
            assert_eq!(code_at(RFC_KEY, unix, &params), expected, "T={unix}");
            assert_eq!(verify(RFC_KEY, expected, unix, &params), Some(unix / 30));
        }
    }

    #[test]
    fn rfc4226_appendix_d_hotp() {
        let expected = [
            755224, 287082, 359152, 969429, 338314, 254676, 287922, 162583, 399871, 520489,
        ];
        for (counter, want) in expected.into_iter().enumerate() {
            assert_eq!(hotp(RFC_KEY, counter as u64, 6), want, "counter {counter}");
        }
    }

    #[test]
    fn hotp_digits_extremes_do_not_overflow() {
        // 31-bit truncated value of counter 0 is 1284755224 (RFC 4226 Appendix D).
        assert_eq!(hotp(RFC_KEY, 0, 10), 1_284_755_224);
        assert_eq!(hotp(RFC_KEY, 0, u32::MAX), 1_284_755_224);
        assert_eq!(hotp(RFC_KEY, 0, 0), 0);
        assert!(hotp(b"", u64::MAX, 6) < 1_000_000); // empty key: no panic
    }

    #[test]
    fn step_at_is_64_bit_and_total() {
        assert_eq!(step_at(59, 30), 1);
        assert_eq!(step_at(20_000_000_000, 30), 666_666_666);
        assert_eq!(step_at(u64::MAX, 30), u64::MAX / 30);
        assert_eq!(step_at(7, 0), 7); // zero step treated as 1 s
    }

    #[test]
    fn verify_accepts_within_skew_only() {
        let params = p(6, 30, 1);
        let now: u64 = 1_700_000_010;
        let t = now / 30;
        for delta in [-1i64, 0, 1] {
            let step = t.checked_add_signed(delta).expect("step in range");
            let code = code_at(RFC_KEY, step * 30, &params);
            assert_eq!(
                verify(RFC_KEY, &code, now, &params),
                Some(step),
                "T{delta:+}"
            );
        }
        for delta in [-2i64, 2] {
            let code = code_at(
                RFC_KEY,
                t.checked_add_signed(delta).expect("step in range") * 30,
                &params,
            );
            assert_eq!(verify(RFC_KEY, &code, now, &params), None, "T{delta:+}");
        }
    }

    #[test]
    fn verify_skew_zero_accepts_current_step_only() {
        let params = p(6, 30, 0);
        let now: u64 = 1_700_000_010;
        let t = now / 30;
        let current = code_at(RFC_KEY, now, &params);
        assert_eq!(verify(RFC_KEY, &current, now, &params), Some(t));
        for step in [t - 1, t + 1] {
            let code = code_at(RFC_KEY, step * 30, &params);
            assert_eq!(verify(RFC_KEY, &code, now, &params), None);
        }
    }

    #[test]
    fn verify_returns_largest_matching_step() {
        // Find two steps at most 2 * MAX_SKEW apart whose 6-digit codes collide, then
        // verify that code in a window holding both: the later step must win.
        let params = p(6, 1, MAX_SKEW);
        let mut last_seen = std::collections::HashMap::new();
        let (earlier, later) = (0u64..10_000_000)
            .find_map(|step| {
                let prev = last_seen.insert(hotp(RFC_KEY, step, 6), step)?;
                (step - prev <= 2 * MAX_SKEW).then_some((prev, step))
            })
            .expect("a collision within the window exists");
        let code = code_at(RFC_KEY, earlier, &params);
        assert_eq!(code, code_at(RFC_KEY, later, &params));
        let now = earlier + MAX_SKEW; // window [earlier, earlier + 2 * MAX_SKEW]
        assert_eq!(verify(RFC_KEY, &code, now, &params), Some(later));
    }

    #[test]
    fn verify_refuses_malformed_codes() {
        let params = p(6, 30, 1);
        let now = 59;
        let good = code_at(RFC_KEY, now, &params);
        assert_eq!(verify(RFC_KEY, &good, now, &params), Some(1));
        for bad in [
            "12345",
            "1234567",
            "123456789",
            "",
            " 123456",
            "123456 ",
            "+12345",
            "-12345",
            "１２３４５６",
            "12345a",
            "12\u{0}456",
        ] {
            assert_eq!(verify(RFC_KEY, bad, now, &params), None, "{bad:?}");
        }
        // The right code with decoration is refused too.
        assert_eq!(verify(RFC_KEY, &format!(" {good}"), now, &params), None);
        assert_eq!(verify(RFC_KEY, &good[1..], now, &params), None);
    }

    #[test]
    fn verify_fails_closed_on_bad_params() {
        let now = 59;
        let code8 = code_at(RFC_KEY, now, &p(8, 30, 1));
        for params in [p(5, 30, 1), p(9, 30, 1), p(0, 30, 1), p(u32::MAX, 30, 1)] {
            assert_eq!(verify(RFC_KEY, "12345", now, &params), None);
            assert_eq!(verify(RFC_KEY, &code8, now, &params), None);
        }
        let code6 = code_at(RFC_KEY, now, &p(6, 30, 1));
        assert_eq!(verify(RFC_KEY, &code6, now, &p(6, 0, 1)), None);
        assert_eq!(verify(RFC_KEY, &code6, now, &p(6, 30, u64::MAX)), None);
    }

    #[test]
    fn code_at_clamps_digits() {
        assert_eq!(code_at(RFC_KEY, 59, &p(0, 30, 1)), "287082");
        assert_eq!(code_at(RFC_KEY, 59, &p(u32::MAX, 30, 1)), "94287082");
        assert_eq!(code_at(RFC_KEY, 59, &p(7, 30, 1)), "4287082");
        assert_eq!(code_at(RFC_KEY, 59, &p(6, 0, 1)).len(), 6);
    }

    #[test]
    fn extreme_times_do_not_panic() {
        for params in [p(6, 30, 1), p(8, 1, MAX_SKEW), p(6, u64::MAX, MAX_SKEW)] {
            for unix in [0, 1, 29, 30, u64::MAX - 1, u64::MAX] {
                let code = code_at(RFC_KEY, unix, &params);
                let step = step_at(unix, params.step_s);
                assert_eq!(verify(RFC_KEY, &code, unix, &params), Some(step), "{unix}");
            }
        }
        // At time 0 the window has no earlier steps; at the end no later ones.
        let params = p(6, 1, 1);
        let at_max = code_at(RFC_KEY, u64::MAX, &params);
        assert_eq!(
            verify(RFC_KEY, &at_max, u64::MAX - 1, &params),
            Some(u64::MAX)
        );
        let at_zero = code_at(RFC_KEY, 0, &params);
        assert_eq!(verify(RFC_KEY, &at_zero, 1, &params), Some(0));
    }

    #[test]
    fn base32_rfc4648_vectors_encode() {
        assert_eq!(base32_encode(b""), "");
        assert_eq!(base32_encode(b"f"), "MY");
        assert_eq!(base32_encode(b"fo"), "MZXQ");
        assert_eq!(base32_encode(b"foo"), "MZXW6");
        assert_eq!(base32_encode(b"foob"), "MZXW6YQ");
        assert_eq!(base32_encode(b"fooba"), "MZXW6YTB");
        assert_eq!(base32_encode(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32_encode(RFC_KEY), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
    }

    #[test]
    fn base32_round_trips_every_length() {
        for len in MIN_SECRET_BYTES..=64 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + len) as u8).collect();
            let text = base32_encode(&bytes);
            assert_eq!(base32_decode(&text), Ok(bytes.clone()), "{len} bytes");
            assert_eq!(
                base32_decode(&text.to_lowercase()),
                Ok(bytes),
                "{len} lower"
            );
        }
        let secret = generate_secret().unwrap_or_else(|e| panic!("getrandom: {e}"));
        assert_eq!(secret.len(), SECRET_BYTES);
        assert_eq!(base32_decode(&base32_encode(&secret)), Ok(secret));
    }

    #[test]
    fn base32_tolerates_case_spaces_hyphens_padding() {
        let key = Ok(RFC_KEY.to_vec());
        assert_eq!(base32_decode("gezdgnbvgy3tqojqgezdgnbvgy3tqojq"), key);
        assert_eq!(
            base32_decode("gezd gnbv gy3t qojq gezd gnbv gy3t qojq"),
            key
        );
        assert_eq!(
            base32_decode("GEZD-GNBV-GY3T-QOJQ-GEZD-GNBV-GY3T-QOJQ"),
            key
        );
        assert_eq!(base32_decode("  GeZdGnBvGy3TqOjQGeZdGnBvGy3TqOjQ - "), key);
        // 17 bytes: 28 data characters, 4 '=' of padding, with or without them.
        let bytes17: Vec<u8> = (1..=17).collect();
        let text = base32_encode(&bytes17);
        assert_eq!(text.len(), 28);
        assert_eq!(base32_decode(&text), Ok(bytes17.clone()));
        assert_eq!(base32_decode(&format!("{text}====")), Ok(bytes17));
    }

    #[test]
    fn base32_rejects_with_clear_messages() {
        let key = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
        let err = base32_decode("GEZDGNBVGY3TQOJ1GEZDGNBVGY3TQOJQ").unwrap_err();
        assert_eq!(err, Base32Error::InvalidChar { pos: 16 });
        let msg = err.to_string();
        assert!(msg.contains("position 16"), "{msg}");
        // The message never shows a character of the secret.
        assert!(!msg.contains("'1'") && !msg.contains("\"1\""), "{msg}");

        for (text, pos) in [
            ("GEZDGNBVGY3TQOJ0GEZDGNBVGY3TQOJQ", 16),
            ("GEZDGNBVGY3TQOJQ_GEZDGNBVGY3TQOJQ", 17),
            ("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\n", 33),
            ("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJÄ", 32),
        ] {
            assert_eq!(
                base32_decode(text),
                Err(Base32Error::InvalidChar { pos }),
                "{text:?}"
            );
        }

        let err = base32_decode(&format!("GEZDGNBVGY3TQOJQ==={key}")).unwrap_err();
        assert_eq!(err, Base32Error::MisplacedPadding { pos: 17 });
        assert!(err.to_string().contains("position 17"));

        // 33 data characters: 33 % 8 == 1 cannot be whole bytes.
        let err = base32_decode(&format!("{key}A")).unwrap_err();
        assert_eq!(err, Base32Error::BadLength { data_chars: 33 });
        assert!(err.to_string().contains("bad length"));

        // 32 characters need no padding; 28 need exactly four.
        let err = base32_decode(&format!("{key}=")).unwrap_err();
        assert!(matches!(err, Base32Error::BadPadding { .. }), "{err:?}");
        let text28 = base32_encode(&[7u8; 17]);
        let err = base32_decode(&format!("{text28}===")).unwrap_err();
        assert_eq!(
            err,
            Base32Error::BadPadding {
                data_chars: 28,
                pad_chars: 3
            }
        );

        // 17 bytes are 136 bits in 28 characters (140 bits): the last character's
        // low 4 bits are unused, so setting its lowest bit must be refused.
        let mut bad = text28.clone();
        let last = bad
            .pop()
            .and_then(base32_value)
            .expect("a base32 character");
        bad.push(char::from(BASE32_ALPHABET[usize::from(last ^ 1)]));
        let err = base32_decode(&bad).unwrap_err();
        assert!(
            matches!(err, Base32Error::TrailingBits { pos: 28, .. }),
            "{err:?}"
        );
        // 32 characters hold exactly 20 bytes: no trailing bits, just another key.
        assert!(base32_decode("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJR").is_ok());
        let err = base32_decode("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOB").unwrap_err();
        assert_eq!(err, Base32Error::TrailingBits { pos: 31 });
        assert!(err.to_string().contains("trailing bits"));
        assert!(!err.to_string().contains('B'), "{err}");

        assert_eq!(base32_decode(""), Err(Base32Error::Empty));
        assert_eq!(base32_decode(" - "), Err(Base32Error::Empty));
        assert_eq!(base32_decode("===="), Err(Base32Error::Empty));
        assert!(base32_decode("").unwrap_err().to_string().contains("empty"));

        // 80-bit secrets (common elsewhere) are below RFC 4226's minimum.
        let err = base32_decode("JBSWY3DPEHPK3PXP").unwrap_err();
        assert_eq!(err, Base32Error::TooShort { bytes: 10 });
        let msg = err.to_string();
        assert!(
            msg.starts_with("secret too short") && msg.contains("128 bits"),
            "{msg}"
        );
        assert_eq!(
            base32_decode(&base32_encode(&[1u8; 15])),
            Err(Base32Error::TooShort { bytes: 15 })
        );
        assert!(base32_decode(&base32_encode(&[1u8; 16])).is_ok());
    }

    #[test]
    fn otpauth_uri_exact() {
        let uri = otpauth_uri(RFC_KEY, "owner@jetson", "sudo-agent", &Params::default());
        assert_eq!(
            uri,
            "otpauth://totp/sudo-agent:owner%40jetson?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &issuer=sudo-agent&algorithm=SHA1&digits=6&period=30"
        );
        let uri = otpauth_uri(RFC_KEY, "root on pi/5", "Home Lab:Ünï", &p(8, 60, 1));
        assert_eq!(
            uri,
            "otpauth://totp/Home%20Lab%3A%C3%9Cn%C3%AF:root%20on%20pi%2F5\
             ?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Home%20Lab%3A%C3%9Cn%C3%AF\
             &algorithm=SHA1&digits=8&period=60"
        );
        let uri = otpauth_uri(RFC_KEY, "a.b_c~d-e", "", &Params::default());
        assert_eq!(
            uri,
            "otpauth://totp/a.b_c~d-e?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &algorithm=SHA1&digits=6&period=30"
        );
    }
}
