//! Finding the rule for a request: its words against each rule in order, first match
//! wins. One function ([`try_rule`]) judges a rule, so what `plan` decides and what
//! `explain` and `examples` report can never differ.

use std::ffi::OsStr;
use std::path::Path;

use super::caller::Caller;
use super::patterns::ArgPattern;
use super::rule::{Action, Rule};
use super::words::{SplitError, split_words};

/// What a client asked to run.
#[derive(Debug, Clone, Copy)]
pub enum Invocation<'r> {
    /// `"command"`: a string split with `split_words` (or, for a shell rule, given whole
    /// to `/bin/sh -c`).
    Command(&'r str),
    /// `"argv"`: words already split by the client; never reaches a shell.
    Argv(&'r [String]),
}

/// What a `"shell": true` rule hands the command string to, with `-c`.
pub const SHELL: &str = "/bin/sh";

/// What to run for a request: the matched rule and the argv to exec.
#[derive(Debug)]
pub struct Plan<'a> {
    pub rule: &'a Rule,
    /// `argv[0]` is the rule's absolute program path (never the client's spelling);
    /// for a shell rule `["/bin/sh", "-c", command]`.
    pub argv: Vec<String>,
}

/// Where a rule parts from a request's words: `position` 0 is the program, 1 the first
/// argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mismatch {
    pub position: usize,
    pub why: Why,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// A shell rule takes command strings only, never an argv.
    ShellTakesCommandsOnly,
    /// The command string cannot be split into words; only a shell rule takes it.
    Unsplittable,
    /// The first word is neither the rule's program path nor its file name.
    NotTheProgram,
    /// The pattern at this position refused the word, for this reason.
    Word(&'static str),
    /// The words ran out before the rule's patterns did.
    Missing,
    /// A word past the rule's last pattern.
    Extra,
}

/// A request's words, split once for all rules.
pub(super) enum Words<'r> {
    Given(&'r [String]),
    Split(Vec<String>),
    /// A command that cannot be split: only a shell rule can take it.
    Unsplittable(SplitError),
}

impl Words<'_> {
    pub(super) fn as_slice(&self) -> Option<&[String]> {
        match self {
            Words::Given(words) => Some(words),
            Words::Split(words) => Some(words),
            Words::Unsplittable(_) => None,
        }
    }
}

/// Splits a command (an argv is taken as it is). Empty requests are an error: there is
/// nothing to run, not even through a shell.
pub(super) fn words<'r>(request: &Invocation<'r>) -> Result<Words<'r>, SplitError> {
    match *request {
        Invocation::Argv([]) => Err(SplitError::Empty),
        Invocation::Argv(argv) => Ok(Words::Given(argv)),
        Invocation::Command(command) => match split_words(command) {
            Ok(words) => Ok(Words::Split(words)),
            Err(SplitError::Empty) => Err(SplitError::Empty),
            Err(err) => Ok(Words::Unsplittable(err)),
        },
    }
}

/// One rule against one request: the argv to run, or where the rule parts from it.
pub(super) fn try_rule(
    rule: &Rule,
    request: &Invocation<'_>,
    words: &Words<'_>,
) -> Result<Vec<String>, Mismatch> {
    let refuse = |why| Err(Mismatch { position: 0, why });
    match (&rule.action, request) {
        (Action::Shell, Invocation::Command(command)) => {
            Ok(vec![SHELL.into(), "-c".into(), (*command).into()])
        }
        (Action::Shell, Invocation::Argv(_)) => refuse(Why::ShellTakesCommandsOnly),
        (Action::Argv { .. }, _) => {
            let Some(words) = words.as_slice() else {
                return refuse(Why::Unsplittable);
            };
            check(rule, words)?;
            let program = rule_program(rule).unwrap_or_default();
            Ok(std::iter::once(program.to_owned())
                .chain(words.iter().skip(1).cloned())
                .collect())
        }
    }
}

/// Finds the first rule that matches `request`. `Ok(None)`: no rule does (a refusal).
///
/// A command that cannot be split can still match a shell rule (which gets the string
/// whole, as the old agent did); if none matches, the split error is returned, since the
/// client most likely mistyped a quote. An empty command or empty argv is always
/// `Err(SplitError::Empty)`: there is nothing to run, not even through a shell.
pub fn plan<'a>(
    rules: &'a [Rule],
    request: &Invocation<'_>,
) -> Result<Option<Plan<'a>>, SplitError> {
    plan_for(rules, request, None)
}

/// [`plan`] for `caller`: rules whose `callers` do not admit it are skipped, exactly as
/// if they were not there. `None` looks at every rule (`explain`, tests).
pub fn plan_for<'a>(
    rules: &'a [Rule],
    request: &Invocation<'_>,
    caller: Option<&Caller>,
) -> Result<Option<Plan<'a>>, SplitError> {
    let words = words(request)?;
    let admitted = |rule: &Rule| match (&rule.callers, caller) {
        (Some(who), Some(caller)) => who.allows(caller),
        _ => true,
    };
    for rule in rules.iter().filter(|rule| admitted(rule)) {
        if let Ok(argv) = try_rule(rule, request, &words) {
            return Ok(Some(Plan { rule, argv }));
        }
    }
    match words {
        Words::Unsplittable(err) => Err(err),
        Words::Given(_) | Words::Split(_) => Ok(None),
    }
}

/// An Argv rule's program path as a string; `None` for shell rules and for a path that
/// is not UTF-8 (a request could never spell it exactly, so such a rule never matches).
pub(super) fn rule_program(rule: &Rule) -> Option<&str> {
    match &rule.action {
        Action::Argv { program, .. } => program.to_str(),
        Action::Shell => None,
    }
}

/// True when `argv` fits an Argv rule (see `check`).
pub fn matches(rule: &Rule, argv: &[String]) -> bool {
    check(rule, argv).is_ok()
}

/// Where `argv` parts from an Argv rule, if it does. `argv[0]` without a `/` must equal
/// the program's file name; with a `/` it must equal the rule's path exactly as a string
/// (no normalising, so `/tmp/x/../../bin/sh` never matches `/bin/sh`). A shell rule
/// matches no argv: split words never go to a shell.
fn check(rule: &Rule, argv: &[String]) -> Result<(), Mismatch> {
    let at = |position, why| Err(Mismatch { position, why });
    let Action::Argv { args, .. } = &rule.action else {
        return at(0, Why::ShellTakesCommandsOnly);
    };
    let Some((first, rest)) = argv.split_first() else {
        return at(0, Why::Missing);
    };
    let program_ok = rule_program(rule).is_some_and(|program| {
        if first.contains('/') {
            first == program
        } else {
            !first.is_empty() && Path::new(program).file_name() == Some(OsStr::new(first))
        }
    });
    if !program_ok {
        return at(0, Why::NotTheProgram);
    }
    args_check(args, rest)
}

fn args_check(patterns: &[ArgPattern], args: &[String]) -> Result<(), Mismatch> {
    // Set by a literal "--": from there on the program reads operands, not options.
    let mut operands = false;
    for (i, pattern) in patterns.iter().enumerate() {
        let position = i + 1;
        if *pattern == ArgPattern::Rest {
            // Validation allows "**" last only; a hand-built rule with it elsewhere fails
            // closed instead of matching more than written.
            if i + 1 == patterns.len() {
                return Ok(());
            }
            return Err(Mismatch {
                position,
                why: Why::Word("meets a \"**\" that is not last, so this rule matches nothing"),
            });
        }
        let Some(arg) = args.get(i) else {
            return Err(Mismatch {
                position,
                why: Why::Missing,
            });
        };
        pattern.check(arg, operands).map_err(|why| Mismatch {
            position,
            why: Why::Word(why),
        })?;
        operands |= matches!(pattern, ArgPattern::Literal(text) if text == "--");
    }
    if args.len() > patterns.len() {
        return Err(Mismatch {
            position: patterns.len() + 1,
            why: Why::Extra,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn at(rule: &Rule, argv: &[&str]) -> Mismatch {
        check(rule, &strings(argv)).unwrap_err()
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
                vec![lit("status"), ArgPattern::Word],
            ),
            rule("any", "/usr/bin/systemctl", vec![ArgPattern::Rest]),
            rule("other", "/usr/local/bin/systemctl", vec![ArgPattern::Rest]),
        ];
        let p = plan(&rules, &Invocation::Command("systemctl status nginx"))
            .unwrap()
            .unwrap();
        assert_eq!(p.rule.name, "status");
        assert_eq!(p.argv, ["/usr/bin/systemctl", "status", "nginx"]);
        let p = plan(&rules, &Invocation::Command("systemctl restart nginx"))
            .unwrap()
            .unwrap();
        assert_eq!(p.rule.name, "any");
        let p = plan(
            &rules,
            &Invocation::Command("/usr/local/bin/systemctl stop x"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.rule.name, "other");
        assert_eq!(p.argv[0], "/usr/local/bin/systemctl");
        let argv = strings(&["systemctl", "status", "a b"]);
        let p = plan(&rules, &Invocation::Argv(&argv)).unwrap().unwrap();
        assert_eq!(p.rule.name, "status");
        assert_eq!(p.argv, ["/usr/bin/systemctl", "status", "a b"]);
        assert!(
            plan(&rules, &Invocation::Command("reboot"))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn plan_shell_rule_only_for_command_form() {
        let rules = vec![rule("uptime", "/usr/bin/uptime", vec![]), shell_rule("sh")];
        let p = plan(&rules, &Invocation::Command("uptime"))
            .unwrap()
            .unwrap();
        assert_eq!(p.rule.name, "uptime");
        let p = plan(&rules, &Invocation::Command("echo hi | tail"))
            .unwrap()
            .unwrap();
        assert_eq!(p.rule.name, "sh");
        assert_eq!(p.argv, ["/bin/sh", "-c", "echo hi | tail"]);
        let argv = strings(&["echo", "hi"]);
        assert!(plan(&rules, &Invocation::Argv(&argv)).unwrap().is_none());
        assert!(!matches(&rules[1], &argv));
        // An unsplittable command still goes to the shell rule as the old agent did ...
        let p = plan(&rules, &Invocation::Command("echo 'x"))
            .unwrap()
            .unwrap();
        assert_eq!(p.rule.name, "sh");
        // ... but an empty one never does.
        assert_eq!(
            plan(&rules, &Invocation::Command("  ")).unwrap_err(),
            SplitError::Empty
        );
    }

    #[test]
    fn plan_errors() {
        let rules = vec![rule("echo", "/usr/bin/echo", vec![ArgPattern::Rest])];
        assert_eq!(
            plan(&rules, &Invocation::Command("echo 'x")).unwrap_err(),
            SplitError::UnterminatedQuote('\'')
        );
        assert_eq!(
            plan(&rules, &Invocation::Command("echo x\\")).unwrap_err(),
            SplitError::TrailingBackslash
        );
        assert_eq!(
            plan(&rules, &Invocation::Command("")).unwrap_err(),
            SplitError::Empty
        );
        assert_eq!(
            plan(&rules, &Invocation::Argv(&[])).unwrap_err(),
            SplitError::Empty
        );
        assert!(plan(&[], &Invocation::Command("echo")).unwrap().is_none());
    }

    #[test]
    fn star_takes_no_options_until_a_literal_double_dash() {
        let r = rule(
            "r",
            "/usr/bin/systemctl",
            vec![lit("status"), ArgPattern::Word],
        );
        assert!(m(&r, &["systemctl", "status", "nginx"]));
        for word in ["--help", "-H", "--host=x", "--root=/tmp", "-", "--"] {
            assert!(!m(&r, &["systemctl", "status", word]), "{word}");
        }
        // After a literal "--" the program reads operands: "*" takes any word.
        let r = rule(
            "r",
            "/usr/bin/rm",
            vec![lit("-f"), lit("--"), ArgPattern::Word],
        );
        assert!(m(&r, &["rm", "-f", "--", "-rf"]));
        // ... but only a literal "--" in the rule, never one the request brings along.
        let r = rule("r", "/usr/bin/rm", vec![ArgPattern::Any, ArgPattern::Word]);
        assert!(!m(&r, &["rm", "--", "-rf"]));
        let r = rule("r", "/usr/bin/rm", vec![one_of(&["--"]), ArgPattern::Word]);
        assert!(!m(&r, &["rm", "--", "-rf"]));
    }

    #[test]
    fn mismatches_name_their_position() {
        let r = rule(
            "r",
            "/usr/bin/journalctl",
            vec![lit("-n"), ArgPattern::Int { min: 1, max: 100 }],
        );
        assert_eq!(at(&r, &["df"]).position, 0);
        assert_eq!(at(&r, &["df"]).why, Why::NotTheProgram);
        assert_eq!(at(&r, &["journalctl", "-n"]).why, Why::Missing);
        assert_eq!(at(&r, &["journalctl", "-n", "500"]).position, 2);
        assert!(matches!(
            at(&r, &["journalctl", "-n", "500"]).why,
            Why::Word(_)
        ));
        let extra = at(&r, &["journalctl", "-n", "5", "x"]);
        assert_eq!((extra.position, extra.why), (3, Why::Extra));
        assert_eq!(
            at(&shell_rule("s"), &["sh"]).why,
            Why::ShellTakesCommandsOnly
        );
    }
}
