//! Wall-clock time as plain numbers, whether the kernel's clock is synchronized, and
//! RFC 3339 formatting without a date crate.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch; 0 if the clock reads before 1970 (a broken RTC on
/// a freshly booted Pi), so callers never panic on a bad clock.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Seconds since the Unix epoch (see [`now_unix_ms`]).
pub fn now_unix() -> u64 {
    now_unix_ms() / 1000
}

/// Whether the kernel's clock is synchronized to a time source, as `timedatectl`'s
/// "System clock synchronized" says: `adjtimex`'s `STA_UNSYNC` unset. An NTP client
/// (systemd-timesyncd, chrony) clears it once it has set the clock; it stays set on a
/// box without one, and on a Pi without a real-time clock until NTP syncs after boot,
/// while the clock may be hours behind. Codes are checked against this clock, so a
/// refused code says it (see `audit::invalid_code`). `None` where the kernel refuses
/// the call (a seccomp filter).
pub fn synchronized() -> Option<bool> {
    // SAFETY: all-zero is a valid `timex` (plain integers), and modes 0 only reads.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: adjtimex reads the modes of and writes one `timex`, alive for the call.
    let rc = unsafe { libc::adjtimex(&mut tx) };
    (rc >= 0).then_some(tx.status & libc::STA_UNSYNC == 0)
}

/// `2026-11-22T00:44:33.120Z` for a Unix time in milliseconds.
pub fn rfc3339(unix_ms: u64) -> String {
    let mut out = String::with_capacity(24);
    push_rfc3339(&mut out, unix_ms);
    out
}

/// [`rfc3339`], appended to `out`.
pub fn push_rfc3339(out: &mut String, unix_ms: u64) {
    let secs = unix_ms / 1000;
    let (y, m, d) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    // By hand rather than `format!`: a request writes several of these, and formatting
    // machinery with padding costs more than the digits.
    let parts = [
        (y, 4, '-'),
        (m, 2, '-'),
        (d, 2, 'T'),
        (rem / 3600, 2, ':'),
        (rem % 3600 / 60, 2, ':'),
        (rem % 60, 2, '.'),
        (unix_ms % 1000, 3, 'Z'),
    ];
    for (n, width, then) in parts {
        push_padded(out, n, width);
        out.push(then);
    }
}

/// `n` in decimal, zero-padded to at least `width` digits.
fn push_padded(out: &mut String, n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut start = digits.len();
    let mut rest = n;
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    for &digit in &digits[start.min(digits.len() - width)..] {
        out.push(char::from(digit));
    }
}

/// Unix seconds of an RFC 3339 UTC time as [`rfc3339`] writes it (fractions ignored);
/// `None` for anything else or before 1970.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    let num = |from: usize, len: usize| -> Option<u64> {
        let digits = text.get(from..from + len)?;
        digits
            .bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| digits.parse().ok())?
    };
    if b.get(4) != Some(&b'-') || b.get(10) != Some(&b'T') || b.get(13) != Some(&b':') {
        return None;
    }
    let (y, m, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let secs = num(11, 2)? * 3600 + num(14, 2)? * 60 + num(17, 2)?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || y < 1970 {
        return None;
    }
    // Howard Hinnant's `days_from_civil`, the inverse of `civil_from_days`.
    let y = if m <= 2 { y - 1 } else { y };
    let yoe = y % 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(((y / 400) * 146_097 + doe).checked_sub(719_468)? * 86_400 + secs)
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::{parse_rfc3339, rfc3339};

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_111_111_111_123), "2005-03-18T01:58:31.123Z");
        // Past 2038: 64-bit all the way.
        assert_eq!(rfc3339(20_000_000_000_000), "2603-10-11T11:33:20.000Z");
        // Years past 9999 (a wild clock) get all their digits, as `format!` gave them.
        assert_eq!(rfc3339(253_402_300_800_000), "10000-01-01T00:00:00.000Z");
        // The same text as the `format!` it replaced, over the whole range.
        let mut ms = 1u64;
        for _ in 0..2000 {
            let secs = ms / 1000;
            let (y, m, d) = super::civil_from_days(secs / 86_400);
            let rem = secs % 86_400;
            let want = format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
                rem / 3600,
                rem % 3600 / 60,
                rem % 60,
                ms % 1000
            );
            assert_eq!(rfc3339(ms), want);
            ms = ms
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
        }
    }

    #[test]
    fn reads_back_what_it_writes() {
        for ms in [
            0,
            951_782_400_000,
            1_111_111_111_123,
            1_767_225_599_999,
            20_000_000_000_000,
        ] {
            assert_eq!(parse_rfc3339(&rfc3339(ms)), Some(ms / 1000));
        }
        for bad in [
            "",
            "2026-13-01T00:00:00Z",
            "1969-12-31T23:59:59Z",
            "2026/01/01T00:00:00",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
