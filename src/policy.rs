//! Matching a request to the allowlist: split a command string into words with POSIX
//! shell quoting (never a shell), then find the first rule whose pattern fits.

use std::ffi::OsStr;
use std::fmt;
use std::path::Path;

use crate::config::{Action, ArgPattern, Rule};

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

/// What a client asked to run.
#[derive(Debug, Clone, Copy)]
pub enum Request<'r> {
    /// `"command"`: a string split with `split_words` (or, for a shell rule, given whole
    /// to `/bin/sh -c`).
    Command(&'r str),
    /// `"argv"`: words already split by the client; never reaches a shell.
    Argv(&'r [String]),
}

/// What to run for a request: the matched rule and the argv to exec.
#[derive(Debug)]
pub struct Plan<'a> {
    pub rule: &'a Rule,
    /// `argv[0]` is the rule's absolute program path (never the client's spelling);
    /// for a shell rule `["/bin/sh", "-c", command]`.
    pub argv: Vec<String>,
}

/// Finds the first rule that matches `request`. `Ok(None)`: no rule does (a refusal).
///
/// A command that cannot be split can still match a shell rule (which gets the string
/// whole, as the old agent did); if none matches, the split error is returned, since the
/// client most likely mistyped a quote. An empty command or empty argv is always
/// `Err(SplitError::Empty)`: there is nothing to run, not even through a shell.
pub fn plan<'a>(rules: &'a [Rule], request: &Request<'_>) -> Result<Option<Plan<'a>>, SplitError> {
    match *request {
        Request::Argv(argv) => {
            if argv.is_empty() {
                return Err(SplitError::Empty);
            }
            Ok(rules.iter().find_map(|rule| argv_plan(rule, argv)))
        }
        Request::Command(command) => {
            let words = split_words(command);
            if words == Err(SplitError::Empty) {
                return Err(SplitError::Empty);
            }
            for rule in rules {
                match (&rule.action, &words) {
                    (Action::Shell, _) => {
                        return Ok(Some(Plan {
                            rule,
                            argv: vec!["/bin/sh".into(), "-c".into(), command.into()],
                        }));
                    }
                    (Action::Argv { .. }, Ok(words)) => {
                        if let Some(plan) = argv_plan(rule, words) {
                            return Ok(Some(plan));
                        }
                    }
                    (Action::Argv { .. }, Err(_)) => {}
                }
            }
            words.map(|_| None)
        }
    }
}

fn argv_plan<'a>(rule: &'a Rule, argv: &[String]) -> Option<Plan<'a>> {
    let program = rule_program(rule)?;
    if !matches(rule, argv) {
        return None;
    }
    let argv = std::iter::once(program.to_owned())
        .chain(argv.iter().skip(1).cloned())
        .collect();
    Some(Plan { rule, argv })
}

/// An Argv rule's program path as a string; `None` for shell rules and for a path that
/// is not UTF-8 (a request could never spell it exactly, so such a rule never matches).
fn rule_program(rule: &Rule) -> Option<&str> {
    match &rule.action {
        Action::Argv { program, .. } => program.to_str(),
        Action::Shell => None,
    }
}

/// True when `argv` fits an Argv rule. `argv[0]` without a `/` must equal the program's
/// file name; with a `/` it must equal the rule's path exactly as a string (no
/// normalising, so `/tmp/x/../../bin/sh` never matches `/bin/sh`). A shell rule matches
/// no argv: split words never go to a shell.
pub fn matches(rule: &Rule, argv: &[String]) -> bool {
    let Action::Argv { args, .. } = &rule.action else {
        return false;
    };
    let Some(program) = rule_program(rule) else {
        return false;
    };
    let Some((first, rest)) = argv.split_first() else {
        return false;
    };
    let program_ok = if first.contains('/') {
        first == program
    } else {
        !first.is_empty() && Path::new(program).file_name() == Some(OsStr::new(first))
    };
    program_ok && args_match(args, rest)
}

fn args_match(patterns: &[ArgPattern], args: &[String]) -> bool {
    for (i, pattern) in patterns.iter().enumerate() {
        let arg = match pattern {
            // Validation allows "**" last only; a hand-built rule with it elsewhere fails
            // closed instead of matching more than written.
            ArgPattern::Rest => return i + 1 == patterns.len(),
            _ => match args.get(i) {
                Some(arg) => arg,
                None => return false,
            },
        };
        let ok = match pattern {
            ArgPattern::Literal(s) => arg == s,
            ArgPattern::OneOf(allowed) => allowed.contains(arg),
            ArgPattern::Any => true,
            ArgPattern::Rest => false,
        };
        if !ok {
            return false;
        }
    }
    patterns.len() == args.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(command: &str) -> Vec<String> {
        split_words(command).unwrap()
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn rule(name: &str, program: &str, args: Vec<ArgPattern>) -> Rule {
        Rule::argv(name, program, args)
    }

    fn shell_rule(name: &str) -> Rule {
        Rule {
            action: Action::Shell,
            ..rule(name, "/bin/sh", vec![])
        }
    }

    fn lit(s: &str) -> ArgPattern {
        ArgPattern::Literal(s.into())
    }

    fn one_of(items: &[&str]) -> ArgPattern {
        ArgPattern::OneOf(strings(items))
    }

    fn m(rule: &Rule, argv: &[&str]) -> bool {
        matches(rule, &strings(argv))
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

    #[test]
    fn match_literal() {
        let r = rule("r", "/usr/bin/df", vec![lit("-h")]);
        assert!(m(&r, &["df", "-h"]));
        assert!(!m(&r, &["df", "-H"]));
        assert!(!m(&r, &["df", "-h "]));
    }

    #[test]
    fn match_list() {
        let r = rule(
            "r",
            "/usr/bin/systemctl",
            vec![one_of(&["restart", "status"]), one_of(&["nginx"])],
        );
        assert!(m(&r, &["systemctl", "status", "nginx"]));
        assert!(m(&r, &["systemctl", "restart", "nginx"]));
        assert!(!m(&r, &["systemctl", "stop", "nginx"]));
        assert!(!m(&r, &["systemctl", "status", "sshd"]));
    }

    #[test]
    fn match_literal_star_via_list() {
        let r = rule("r", "/usr/bin/echo", vec![one_of(&["*"])]);
        assert!(m(&r, &["echo", "*"]));
        assert!(!m(&r, &["echo", "x"]));
    }

    #[test]
    fn match_any_one() {
        let r = rule("r", "/usr/bin/journalctl", vec![lit("-n"), ArgPattern::Any]);
        assert!(m(&r, &["journalctl", "-n", "50"]));
        assert!(m(&r, &["journalctl", "-n", ""]));
        assert!(!m(&r, &["journalctl", "-n"]));
        assert!(!m(&r, &["journalctl", "-n", "5", "6"]));
    }

    #[test]
    fn match_rest_including_zero() {
        let r = rule("r", "/usr/bin/df", vec![lit("-h"), ArgPattern::Rest]);
        assert!(m(&r, &["df", "-h"]));
        assert!(m(&r, &["df", "-h", "/"]));
        assert!(m(&r, &["df", "-h", "/", "/boot", "--total"]));
        assert!(!m(&r, &["df"]));
        assert!(!m(&r, &["df", "/", "-h"]));
    }

    #[test]
    fn match_rest_not_last_fails_closed() {
        let r = rule("r", "/usr/bin/df", vec![ArgPattern::Rest, lit("-h")]);
        assert!(!m(&r, &["df", "-h"]));
        assert!(!m(&r, &["df", "x", "-h"]));
    }

    #[test]
    fn match_counts_must_agree() {
        let r = rule("r", "/usr/bin/uptime", vec![]);
        assert!(m(&r, &["uptime"]));
        assert!(!m(&r, &["uptime", "-p"]));
        let r = rule("r", "/usr/bin/free", vec![lit("-h"), lit("-w")]);
        assert!(!m(&r, &["free", "-h"]));
        assert!(!m(&r, &["free"]));
        assert!(!m(&r, &[]));
    }

    #[test]
    fn match_file_name_or_exact_path() {
        let r = rule("r", "/usr/bin/uptime", vec![]);
        assert!(m(&r, &["uptime"]));
        assert!(m(&r, &["/usr/bin/uptime"]));
        assert!(!m(&r, &["/bin/uptime"]));
        assert!(!m(&r, &["./uptime"]));
        assert!(!m(&r, &["bin/uptime"]));
        assert!(!m(&r, &["/usr/bin//uptime"]));
        assert!(!m(&r, &["Uptime"]));
        assert!(!m(&r, &[""]));
    }

    #[test]
    fn match_dotdot_tricks_never_match() {
        let r = rule("r", "/bin/sh", vec![lit("-c"), ArgPattern::Any]);
        assert!(!m(&r, &["/tmp/x/../../bin/sh", "-c", "id"]));
        assert!(!m(&r, &["/bin/../bin/sh", "-c", "id"]));
        assert!(!m(&r, &["/bin/./sh", "-c", "id"]));
        assert!(!m(&r, &["..", "-c", "id"]));
        assert!(m(&r, &["/bin/sh", "-c", "id"]));
    }

    #[test]
    fn plan_first_match_wins_and_uses_rule_path() {
        let rules = vec![
            rule(
                "status",
                "/usr/bin/systemctl",
                vec![lit("status"), ArgPattern::Any],
            ),
            rule("any", "/usr/bin/systemctl", vec![ArgPattern::Rest]),
            rule("other", "/usr/local/bin/systemctl", vec![ArgPattern::Rest]),
        ];
        let p = plan(&rules, &Request::Command("systemctl status nginx"))
            .unwrap()
            .unwrap();
        assert_eq!(p.rule.name, "status");
        assert_eq!(p.argv, ["/usr/bin/systemctl", "status", "nginx"]);
        let p = plan(&rules, &Request::Command("systemctl restart nginx"))
            .unwrap()
            .unwrap();
        assert_eq!(p.rule.name, "any");
        let p = plan(&rules, &Request::Command("/usr/local/bin/systemctl stop x"))
            .unwrap()
            .unwrap();
        assert_eq!(p.rule.name, "other");
        assert_eq!(p.argv[0], "/usr/local/bin/systemctl");
        let argv = strings(&["systemctl", "status", "a b"]);
        let p = plan(&rules, &Request::Argv(&argv)).unwrap().unwrap();
        assert_eq!(p.rule.name, "status");
        assert_eq!(p.argv, ["/usr/bin/systemctl", "status", "a b"]);
        assert!(plan(&rules, &Request::Command("reboot")).unwrap().is_none());
    }

    #[test]
    fn plan_shell_rule_only_for_command_form() {
        let rules = vec![rule("uptime", "/usr/bin/uptime", vec![]), shell_rule("sh")];
        let p = plan(&rules, &Request::Command("uptime")).unwrap().unwrap();
        assert_eq!(p.rule.name, "uptime");
        let p = plan(&rules, &Request::Command("echo hi | tail"))
            .unwrap()
            .unwrap();
        assert_eq!(p.rule.name, "sh");
        assert_eq!(p.argv, ["/bin/sh", "-c", "echo hi | tail"]);
        let argv = strings(&["echo", "hi"]);
        assert!(plan(&rules, &Request::Argv(&argv)).unwrap().is_none());
        assert!(!matches(&rules[1], &argv));
        // An unsplittable command still goes to the shell rule as the old agent did ...
        let p = plan(&rules, &Request::Command("echo 'x")).unwrap().unwrap();
        assert_eq!(p.rule.name, "sh");
        // ... but an empty one never does.
        assert_eq!(
            plan(&rules, &Request::Command("  ")).unwrap_err(),
            SplitError::Empty
        );
    }

    #[test]
    fn plan_errors() {
        let rules = vec![rule("echo", "/usr/bin/echo", vec![ArgPattern::Rest])];
        assert_eq!(
            plan(&rules, &Request::Command("echo 'x")).unwrap_err(),
            SplitError::UnterminatedQuote('\'')
        );
        assert_eq!(
            plan(&rules, &Request::Command("echo x\\")).unwrap_err(),
            SplitError::TrailingBackslash
        );
        assert_eq!(
            plan(&rules, &Request::Command("")).unwrap_err(),
            SplitError::Empty
        );
        assert_eq!(
            plan(&rules, &Request::Argv(&[])).unwrap_err(),
            SplitError::Empty
        );
        assert!(plan(&[], &Request::Command("echo")).unwrap().is_none());
    }
}
