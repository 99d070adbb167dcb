//! Text cut to a size without splitting a character (journal output, SIP replies), and
//! text made safe to show a human (commands awaiting approval).

/// The longest prefix of `text` of at most `max` bytes that ends on a char boundary.
pub fn utf8_prefix(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `text` with control characters and bidirectional overrides escaped (`\u{1b}`), so
/// a command shown for approval reads on a terminal or phone exactly as it would run:
/// no escape sequence can erase, recolour or reorder part of it.
pub fn printable(text: &str) -> String {
    let hidden = |c: char| {
        c.is_control()
            || matches!(c, '\u{200e}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    text.chars()
        .fold(String::with_capacity(text.len()), |mut out, c| {
            match hidden(c) {
                true => out.extend(c.escape_unicode()),
                false => out.push(c),
            }
            out
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_what_a_terminal_would_act_on() {
        assert_eq!(printable("df -h /é"), "df -h /é");
        assert_eq!(
            printable("rm -rf /\u{1b}[2K\rls\u{202e}x\n"),
            "rm -rf /\\u{1b}[2K\\u{d}ls\\u{202e}x\\u{a}"
        );
    }

    #[test]
    fn never_splits_a_character() {
        assert_eq!(utf8_prefix("héllo", 2), "h");
        assert_eq!(utf8_prefix("héllo", 3), "hé");
        assert_eq!(utf8_prefix("abc", 10), "abc");
        assert_eq!(utf8_prefix("€", 2), "");
    }
}
