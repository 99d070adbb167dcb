//! Command-line words: `--flag=value` and `--flag value` read alike, for the main
//! commands and for `run`, whose command words pass through untouched.

/// Command-line words for `parse` and `parse_run`: `--flag=value` is read as `--flag`
/// with its value waiting for [`Flags::value`], which otherwise takes the next word.
pub(crate) struct Flags<'a> {
    words: std::slice::Iter<'a, String>,
    inline: Option<&'a str>,
}

impl<'a> Flags<'a> {
    pub(crate) fn new(words: &'a [String]) -> Flags<'a> {
        Flags {
            words: words.iter(),
            inline: None,
        }
    }

    /// The next word, or the flag part of `--flag=value`.
    pub(crate) fn next_word(&mut self) -> Option<&'a str> {
        let word = self.words.next()?;
        self.inline = None;
        match word.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                self.inline = Some(value);
                Some(flag)
            }
            _ => Some(word),
        }
    }

    /// The value of the flag just read: its `=value`, else the next word.
    pub(crate) fn value(&mut self, name: &str) -> Result<String, String> {
        self.inline
            .take()
            .or_else(|| self.words.next().map(String::as_str))
            .map(str::to_string)
            .ok_or_else(|| format!("{name} needs a value"))
    }

    /// Every word not read yet, as given.
    pub(crate) fn rest(&mut self) -> impl Iterator<Item = &'a String> + '_ {
        self.words.by_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_and_separate_values() {
        let words: Vec<String> = ["--a=1", "--b", "2", "x", "--c=", "rest"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut flags = Flags::new(&words);
        assert_eq!(flags.next_word(), Some("--a"));
        assert_eq!(flags.value("--a").unwrap(), "1");
        assert_eq!(flags.next_word(), Some("--b"));
        assert_eq!(flags.value("--b").unwrap(), "2");
        assert_eq!(flags.next_word(), Some("x"));
        assert_eq!(flags.next_word(), Some("--c"));
        assert_eq!(flags.value("--c").unwrap(), "");
        assert_eq!(flags.rest().collect::<Vec<_>>(), vec!["rest"]);
        assert!(flags.value("--d").is_err());
    }
}
