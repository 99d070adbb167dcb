//! A command string to words with POSIX shell quoting, and nothing else: never a shell,
//! no expansion, no operators.

use std::fmt;

/// Why a command string could not be split into words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitError {
    /// The quote character (`'` or `"`) that was opened and never closed.
    UnterminatedQuote(char),
    /// The command ends in a backslash with nothing to escape.
    TrailingBackslash,
    /// No words at all (empty or only blanks).
    Empty,
}

impl fmt::Display for SplitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnterminatedQuote(q) => write!(
                f,
                "unterminated {q} quote in command; close it, or escape it with a backslash"
            ),
            Self::TrailingBackslash => f.write_str(
                "command ends with a backslash; remove it, or write \\\\ for a literal one",
            ),
            Self::Empty => f.write_str("command is empty"),
        }
    }
}

impl std::error::Error for SplitError {}

/// Splits `command` into words the way a POSIX shell quotes, and does nothing else:
/// blanks (space, tab, newline) separate words; single quotes keep everything literally;
/// inside double quotes a backslash escapes only `$`, `` ` ``, `"`, `\` and newline (a
/// backslash-newline disappears); outside quotes a backslash escapes the next character
/// and backslash-newline disappears; `''` and `""` make an empty word. There is no
/// expansion, globbing, comment or operator: `$`, `*`, `~`, `#`, `|`, `;` and backticks
/// are ordinary characters, so `echo hi | tail` is four words and `a;b` one.
pub fn split_words(command: &str) -> Result<Vec<String>, SplitError> {
    let mut words = Vec::new();
    let mut word = String::new();
    // Separate from `word.is_empty()` so that `''` still makes a (empty) word.
    let mut in_word = false;
    let mut chars = command.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(SplitError::UnterminatedQuote('\'')),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('$' | '`' | '"' | '\\')) => word.push(c),
                            Some('\n') => {}
                            // Any other backslash inside double quotes stays as written.
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(SplitError::UnterminatedQuote('"')),
                        },
                        Some(c) => word.push(c),
                        None => return Err(SplitError::UnterminatedQuote('"')),
                    }
                }
            }
            '\\' => match chars.next() {
                // Line continuation: removed, and does not by itself start a word.
                Some('\n') => {}
                Some(c) => {
                    in_word = true;
                    word.push(c);
                }
                None => return Err(SplitError::TrailingBackslash),
            },
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    if words.is_empty() {
        return Err(SplitError::Empty);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(command: &str) -> Vec<String> {
        split_words(command).unwrap()
    }

    #[test]
    fn split_plain_words_and_blanks() {
        assert_eq!(words("df -h /"), ["df", "-h", "/"]);
        assert_eq!(words("  a \t b\n\nc  "), ["a", "b", "c"]);
        // Only space, tab and newline separate; a carriage return is an ordinary char.
        assert_eq!(words("a\rb"), ["a\rb"]);
    }

    #[test]
    fn split_double_quotes_keep_spaces() {
        // The old agent broke on exactly this.
        assert_eq!(words(r#"echo "hello world""#), ["echo", "hello world"]);
        assert_eq!(words(r#"a"b c"d"#), ["ab cd"]);
    }

    #[test]
    fn split_single_quotes_are_literal() {
        assert_eq!(words(r#"'a "b" \c $x `y`'"#), [r#"a "b" \c $x `y`"#]);
        assert_eq!(words(r#"'it'\''s'"#), ["it's"]);
    }

    #[test]
    fn split_double_quote_escapes() {
        assert_eq!(words(r#""\$x \` \" \\""#), [r#"$x ` " \"#]);
        // Other backslashes stay as written inside double quotes.
        assert_eq!(words(r#""\n\a'""#), [r#"\n\a'"#]);
        assert_eq!(words("\"a\\\nb\""), ["ab"]);
        assert_eq!(words("\"line1\nline2\""), ["line1\nline2"]);
    }

    #[test]
    fn split_backslash_outside_quotes() {
        assert_eq!(words(r#"a\ b \' \"x\" \\"#), ["a b", "'", "\"x\"", "\\"]);
        assert_eq!(words(r"\n"), ["n"]);
        // Backslash-newline is removed, joining or separating nothing.
        assert_eq!(words("ab\\\ncd"), ["abcd"]);
        assert_eq!(words("a \\\n b"), ["a", "b"]);
    }

    #[test]
    fn split_never_interprets_shell_syntax() {
        assert_eq!(words("echo hi | tail"), ["echo", "hi", "|", "tail"]);
        assert_eq!(words("a;b"), ["a;b"]);
        assert_eq!(words("a && b > /etc/x"), ["a", "&&", "b", ">", "/etc/x"]);
        assert_eq!(words("echo $(id)"), ["echo", "$(id)"]);
        assert_eq!(words("echo `id`"), ["echo", "`id`"]);
        assert_eq!(
            words("ls ~ *.txt $HOME # no comment"),
            ["ls", "~", "*.txt", "$HOME", "#", "no", "comment"]
        );
        assert_eq!(words(r#""$(id)""#), ["$(id)"]);
    }

    #[test]
    fn split_newlines_separate_words() {
        assert_eq!(words("id\nrm -rf /"), ["id", "rm", "-rf", "/"]);
    }

    #[test]
    fn split_empty_words() {
        assert_eq!(words("''"), [""]);
        assert_eq!(words(r#""""#), [""]);
        assert_eq!(words(r#"a '' b """#), ["a", "", "b", ""]);
        assert_eq!(words(r#"a""b"#), ["ab"]);
    }

    #[test]
    fn split_errors() {
        assert_eq!(
            split_words("echo 'abc"),
            Err(SplitError::UnterminatedQuote('\''))
        );
        assert_eq!(
            split_words("echo \"abc"),
            Err(SplitError::UnterminatedQuote('"'))
        );
        assert_eq!(
            split_words("echo \"abc\\"),
            Err(SplitError::UnterminatedQuote('"'))
        );
        assert_eq!(
            split_words("echo abc\\"),
            Err(SplitError::TrailingBackslash)
        );
        assert_eq!(split_words(""), Err(SplitError::Empty));
        assert_eq!(split_words(" \t\n "), Err(SplitError::Empty));
        assert_eq!(split_words("\\\n"), Err(SplitError::Empty));
        assert!(
            SplitError::UnterminatedQuote('\'')
                .to_string()
                .contains("unterminated ' quote")
        );
    }

    #[test]
    fn split_unicode() {
        assert_eq!(
            words("héllo 'wörld ✓' \"日本\" \\é"),
            ["héllo", "wörld ✓", "日本", "é"]
        );
    }
}
