//! What one position of a rule's argv accepts, judged one word at a time with no I/O.
//! Every kind says what it means: `"*"` is one word that is not an option, and only the
//! explicit `{"any": true}` also takes options.

use std::fmt;

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

/// Longest `{"re": …}` source: a word pattern, not a program.
pub const MAX_RE_SOURCE: usize = 1024;
/// Memory for one compiled `{"re": …}`. Matching runs on the event loop, in time
/// proportional to word length × program size, so both stay small: a unit-name pattern
/// such as `[a-z0-9@._-]{1,64}` is far below this.
const RE_SIZE_LIMIT: usize = 32 * 1024;
/// Longest word a `{"re": …}` is run on; longer ones are refused unread. A unit, user
/// or host name fits (paths have `path_under`), and the worst regex the size limit
/// admits then costs a few milliseconds, not a stalled loop.
pub const MAX_RE_WORD: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgPattern {
    /// Exactly this string.
    Literal(String),
    /// Any one of these strings. A one-element list `["*"]` (or `["**"]`) is how a config
    /// writes a literal `*` argument, since the bare strings mean Word and Rest.
    OneOf(Vec<String>),
    /// `"*"`: one word that does not start with `-`, so an option cannot ride in on it.
    /// After a literal `"--"` earlier in the rule (where the program reads operands,
    /// not options) any one word.
    Word,
    /// `{"any": true}`: any one word, options included.
    Any,
    /// `{"re": …}`: a word the regex matches as a whole.
    Re(WordRe),
    /// `{"path_under": dir}`: an absolute path strictly below `dir` with no empty, `.`
    /// or `..` component. Judged on the text alone: a link inside `dir` can still lead
    /// out, so name directories only root can write.
    PathUnder(String),
    /// `{"int": [min, max]}`: a decimal integer in `min..=max`, with no `+`, no leading
    /// zero and no `-0` (programs that read `010` as octal would see another number).
    Int { min: i64, max: i64 },
    /// `"**"`, last only: any number of further words, zero included.
    Rest,
}

impl ArgPattern {
    /// `Ok` when `word` fits this position, else why not (for `explain` and `check`).
    /// `operands`: a literal `"--"` came earlier in the rule. [`ArgPattern::Rest`] is
    /// the matcher's business (it is not one word) and takes any word here.
    pub fn check(&self, word: &str, operands: bool) -> Result<(), &'static str> {
        let fits = match self {
            Self::Literal(text) => word == text,
            Self::OneOf(list) => list.iter().any(|text| text == word),
            Self::Word => {
                if !operands && word.starts_with('-') {
                    return Err(
                        "starts with \"-\" and \"*\" takes no options; list the allowed \
                         values, or write {\"any\": true} if options are meant",
                    );
                }
                true
            }
            Self::Any | Self::Rest => true,
            Self::Re(re) => {
                if word.len() > MAX_RE_WORD {
                    return Err("is longer than the 256 bytes a {\"re\"} pattern takes");
                }
                if !re.matches(word) {
                    return Err("is not matched, as a whole word, by the regex");
                }
                true
            }
            Self::PathUnder(dir) => return path_under(dir, word),
            Self::Int { min, max } => return int_in(word, *min, *max),
        };
        if fits {
            Ok(())
        } else {
            Err("is not a word the rule lists")
        }
    }

    /// True for a literal or a list: every word it admits is written in the rule.
    pub fn is_fixed(&self) -> bool {
        matches!(self, Self::Literal(_) | Self::OneOf(_))
    }
}

/// `path_under`'s test; `dir` is absolute with no trailing `/` (see [`path_under_dir`]).
fn path_under(dir: &str, word: &str) -> Result<(), &'static str> {
    let Some(rest) = word.strip_prefix('/') else {
        return Err("is not an absolute path");
    };
    if rest
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err("has an empty, \".\" or \"..\" component");
    }
    // `rest` has no empty component, so after `dir` + "/" there is at least one name.
    let below = dir == "/" || word.strip_prefix(dir).is_some_and(|r| r.starts_with('/'));
    if below {
        Ok(())
    } else {
        Err("is not a path below the rule's directory")
    }
}

/// The directory of a `{"path_under": …}` as matching wants it: absolute, no empty,
/// `.` or `..` component, one trailing `/` dropped.
pub fn path_under_dir(dir: &str) -> Result<String, &'static str> {
    if dir == "/" {
        return Ok(dir.into());
    }
    let trimmed = dir.strip_suffix('/').unwrap_or(dir);
    match trimmed.strip_prefix('/') {
        None => Err("is not an absolute path"),
        Some(rest)
            if rest
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == "..") =>
        {
            Err("has an empty, \".\" or \"..\" component; write the plain absolute path")
        }
        Some(_) => Ok(trimmed.into()),
    }
}

fn int_in(word: &str, min: i64, max: i64) -> Result<(), &'static str> {
    let digits = word.strip_prefix('-').unwrap_or(word);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("is not a decimal integer");
    }
    if (digits.len() > 1 && digits.starts_with('0')) || word == "-0" {
        return Err("has a leading zero or is -0; write the plain number");
    }
    match word.parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(()),
        _ => Err("is outside the rule's range"),
    }
}

/// A compiled `{"re": …}`: it must match the whole word, written with `^…$` or not.
#[derive(Clone)]
pub struct WordRe {
    source: String,
    re: regex_lite::Regex,
}

impl WordRe {
    pub fn new(source: &str) -> Result<WordRe, String> {
        if source.len() > MAX_RE_SOURCE {
            return Err(format!(
                "is longer than {MAX_RE_SOURCE} bytes; a word pattern should be short"
            ));
        }
        let build = |pattern: &str| {
            regex_lite::RegexBuilder::new(pattern)
                .size_limit(RE_SIZE_LIMIT)
                .build()
                .map_err(|e| e.to_string())
        };
        // Alone first: a source that only compiles inside the anchors (`a)|(b`) would
        // otherwise split them into two unanchored halves.
        build(source)?;
        // Flags such as `(?m)` set inside stay inside the group, so these anchors
        // always mean the start and the end of the word.
        let re = build(&format!("^(?:{source})$"))?;
        Ok(WordRe {
            source: source.into(),
            re,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn matches(&self, word: &str) -> bool {
        self.re.is_match(word)
    }
}

impl PartialEq for WordRe {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for WordRe {}

impl fmt::Debug for WordRe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WordRe({:?})", self.source)
    }
}

/// As the config writes it: `"text"`, `["a", "b"]`, `"*"`, `{"any": true}`,
/// `{"re": "…"}`, `{"path_under": "/dir"}`, `{"int": [1, 10]}`, `"**"`.
impl Serialize for ArgPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        fn object<S: Serializer, V: Serialize + ?Sized>(
            s: S,
            key: &str,
            value: &V,
        ) -> Result<S::Ok, S::Error> {
            let mut map = s.serialize_map(Some(1))?;
            map.serialize_entry(key, value)?;
            map.end()
        }
        match self {
            // The bare strings mean Word and Rest, so a literal star is a one-item list.
            Self::Literal(text) if text == "*" || text == "**" => [text].serialize(s),
            Self::Literal(text) => text.serialize(s),
            Self::OneOf(list) => list.serialize(s),
            Self::Word => s.serialize_str("*"),
            Self::Rest => s.serialize_str("**"),
            Self::Any => object(s, "any", &true),
            Self::Re(re) => object(s, "re", re.source()),
            Self::PathUnder(dir) => object(s, "path_under", dir),
            Self::Int { min, max } => object(s, "int", &[min, max]),
        }
    }
}

/// The config's spelling on one line, e.g. `{"int":[1,10]}`.
impl fmt::Display for ArgPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_string(self).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(p: &ArgPattern, word: &str) -> bool {
        p.check(word, false).is_ok()
    }

    #[test]
    fn star_refuses_options_unless_operands() {
        let p = ArgPattern::Word;
        for word in ["nginx", "", "a-b", "/etc/x", "+x", "0"] {
            assert!(ok(&p, word), "{word:?}");
        }
        for word in ["--help", "-H", "--host=x", "-", "--", "-1"] {
            assert!(!ok(&p, word), "{word:?}");
            assert!(p.check(word, true).is_ok(), "{word:?} as an operand");
        }
        assert!(ok(&ArgPattern::Any, "--help") && ok(&ArgPattern::Any, ""));
    }

    #[test]
    fn literal_and_list() {
        assert!(ok(&ArgPattern::Literal("-h".into()), "-h"));
        assert!(!ok(&ArgPattern::Literal("-h".into()), "-H"));
        let list = ArgPattern::OneOf(vec!["a".into(), "b".into()]);
        assert!(ok(&list, "b") && !ok(&list, "c") && !ok(&list, "a "));
    }

    #[test]
    fn regex_must_match_the_whole_word() {
        let p = ArgPattern::Re(WordRe::new("[a-z0-9@._-]{1,64}").unwrap());
        for word in ["nginx", "getty@tty1.service", "a-b_c"] {
            assert!(ok(&p, word), "{word:?}");
        }
        for word in [
            "",
            "Nginx",
            "nginx;reboot",
            "a b",
            "nginx\n",
            "x".repeat(65).as_str(),
        ] {
            assert!(!ok(&p, word), "{word:?}");
        }
        // Anchored or not, the same; alternation cannot escape the anchors.
        let p = ArgPattern::Re(WordRe::new("^a$|^b$").unwrap());
        assert!(ok(&p, "a") && ok(&p, "b") && !ok(&p, "ab") && !ok(&p, "a\nb"));
        let p = ArgPattern::Re(WordRe::new("a|b").unwrap());
        assert!(!ok(&p, "xa") && !ok(&p, "bx"));
        // Multi-line mode inside the source stays inside it.
        let p = ArgPattern::Re(WordRe::new("(?m)^a$").unwrap());
        assert!(ok(&p, "a") && !ok(&p, "a\nb") && !ok(&p, "b\na"));
        // Only compiles inside our wrapper: refused.
        assert!(WordRe::new("a)|(b").is_err());
        assert!(WordRe::new("(").is_err());
        assert!(WordRe::new(&"a".repeat(MAX_RE_SOURCE + 1)).is_err());
        assert!(WordRe::new("[a-z]{1,1000}{1,1000}").is_err());
    }

    #[test]
    fn regex_time_is_bounded_on_long_words() {
        // About the costliest regex the size limit admits, against the longest word it
        // is run on (a few ms in a release build; the bound allows for debug and qemu).
        let p = ArgPattern::Re(WordRe::new("(?:.*a){1,100}b").unwrap());
        let t = std::time::Instant::now();
        assert!(!ok(&p, &"a".repeat(MAX_RE_WORD)));
        assert!(
            t.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            t.elapsed()
        );
        // Longer words are refused without running it, even ones it would match.
        let p = ArgPattern::Re(WordRe::new("a+").unwrap());
        assert!(ok(&p, &"a".repeat(MAX_RE_WORD)));
        assert!(!ok(&p, &"a".repeat(MAX_RE_WORD + 1)));
        assert!(
            WordRe::new("(a|aa|[a-z]){1,200}b").is_err(),
            "over the size limit"
        );
    }

    #[test]
    fn path_under_is_lexical_and_strict() {
        let p = ArgPattern::PathUnder("/var/log".into());
        for word in [
            "/var/log/syslog",
            "/var/log/nginx/access.log",
            "/var/log/-x",
        ] {
            assert!(ok(&p, word), "{word:?}");
        }
        for word in [
            "/var/log",
            "/var/log/",
            "/var/logs/x",
            "/var/log/../../etc/shadow",
            "/var/log/./x",
            "/var/log//x",
            "var/log/x",
            "/var/log/x/",
            "/etc/shadow",
            "",
        ] {
            assert!(!ok(&p, word), "{word:?}");
        }
        let root = ArgPattern::PathUnder("/".into());
        assert!(ok(&root, "/etc") && !ok(&root, "/") && !ok(&root, "/a/../b"));
        assert_eq!(path_under_dir("/var/log/").unwrap(), "/var/log");
        assert_eq!(path_under_dir("/").unwrap(), "/");
        for bad in ["var/log", "/var//log", "/var/../log", "/var/./log", ""] {
            assert!(path_under_dir(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn int_range_and_spelling() {
        let p = ArgPattern::Int { min: 1, max: 10000 };
        for word in ["1", "50", "10000"] {
            assert!(ok(&p, word), "{word:?}");
        }
        for word in [
            "0",
            "10001",
            "-1",
            "+5",
            "050",
            "5 ",
            "",
            "-",
            "1e3",
            "٣",
            "99999999999999999999",
        ] {
            assert!(!ok(&p, word), "{word:?}");
        }
        let p = ArgPattern::Int { min: -5, max: 5 };
        assert!(ok(&p, "-5") && ok(&p, "0") && !ok(&p, "-0") && !ok(&p, "-05"));
        let p = ArgPattern::Int {
            min: i64::MIN,
            max: i64::MAX,
        };
        assert!(ok(&p, "-9223372036854775808") && !ok(&p, "9223372036854775808"));
    }

    #[test]
    fn written_as_in_the_config() {
        let cases = [
            (ArgPattern::Literal("-h".into()), r#""-h""#),
            (ArgPattern::Literal("*".into()), r#"["*"]"#),
            (ArgPattern::OneOf(vec!["a".into()]), r#"["a"]"#),
            (ArgPattern::Word, r#""*""#),
            (ArgPattern::Rest, r#""**""#),
            (ArgPattern::Any, r#"{"any":true}"#),
            (
                ArgPattern::Re(WordRe::new("^x$").unwrap()),
                r#"{"re":"^x$"}"#,
            ),
            (
                ArgPattern::PathUnder("/var".into()),
                r#"{"path_under":"/var"}"#,
            ),
            (ArgPattern::Int { min: 1, max: 9 }, r#"{"int":[1,9]}"#),
        ];
        for (pattern, text) in cases {
            assert_eq!(pattern.to_string(), text);
        }
    }
}
