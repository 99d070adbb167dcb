//! Approval codes: what a human types to name one held request (`K7Q2`). Short, from
//! an alphabet without look-alikes, drawn at random and unique among held requests. A
//! code names a request; it authorises nothing: approving still takes a TOTP code.

/// No 0/O, 1/I/l, 2/Z, 5/S, 6/G, 8/B: read off a phone and typed back without doubt.
const ALPHABET: &[u8; 24] = b"ACDEFGHJKMNPQRTUVWXY3479";
/// 24⁴ = 331 776 codes for at most `approvals.max_pending` (≤ 64) held at once.
const LEN: usize = 4;

/// A fresh code for which `taken` is false.
pub fn new_code(taken: impl Fn(&str) -> bool) -> Result<String, getrandom::Error> {
    loop {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes)?;
        // Bytes from 240 up would favour the first letters; they are skipped.
        let code: String = bytes
            .iter()
            .filter(|&&b| usize::from(b) < ALPHABET.len() * 10)
            .take(LEN)
            .map(|&b| char::from(ALPHABET[usize::from(b) % ALPHABET.len()]))
            .collect();
        if code.len() == LEN && !taken(&code) {
            return Ok(code);
        }
    }
}

/// A code as a person may type it (any case, spaces around) in the form codes are kept;
/// `None` when it cannot be one.
pub fn normalize(text: &str) -> Option<String> {
    let code = text.trim().to_ascii_uppercase();
    ((4..=6).contains(&code.len()) && code.bytes().all(|b| ALPHABET.contains(&b))).then_some(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_short_plain_and_spread() {
        let mut seen = HashSet::new();
        let mut letters = HashSet::new();
        for _ in 0..2000 {
            let code = new_code(|_| false).unwrap();
            assert_eq!(code.len(), LEN);
            assert_eq!(normalize(&code).as_deref(), Some(code.as_str()));
            letters.extend(code.bytes());
            seen.insert(code);
        }
        assert!(seen.len() > 1900, "codes repeat too often: {}", seen.len());
        assert_eq!(letters.len(), ALPHABET.len(), "every letter is drawn");
        for bad in b"0O1Il2Z5S68B" {
            assert!(!letters.contains(bad));
        }
    }

    #[test]
    fn a_taken_code_is_never_given() {
        let taken: HashSet<String> = (0..50).map(|_| new_code(|_| false).unwrap()).collect();
        for _ in 0..500 {
            assert!(!taken.contains(&new_code(|c| taken.contains(c)).unwrap()));
        }
    }

    #[test]
    fn typed_codes() {
        assert_eq!(normalize(" k7q3 ").as_deref(), Some("K7Q3"));
        assert_eq!(normalize("ACDEF9").as_deref(), Some("ACDEF9"));
        for bad in [
            "", "K7Q", "K7Q3AAA", "K0Q3", "KOQ3", "K7Q2", "ÄÄÄÄ", "K7 Q3",
        ] {
            assert_eq!(normalize(bad), None, "{bad:?}");
        }
    }
}
