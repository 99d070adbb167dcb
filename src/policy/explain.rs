//! The matcher's decision told step by step, for `sudo-agent explain` and for the
//! examples `check` runs. It comes from the same [`try_rule`] that `plan` uses, so the
//! story and the decision cannot differ. What the job would run with (user, timeout…)
//! is added by the command line, which knows the jobs' defaults.

use std::fmt;
use std::path::Path;

use super::matcher::{Invocation, Mismatch, Plan, Why, Words, rule_program, try_rule, words};
use super::rule::{Action, Rule};
use super::words::SplitError;

/// How a request fared against the policy.
#[derive(Debug)]
pub struct Explanation<'a> {
    /// The words matched against the rules; `None` for a command that cannot be split.
    pub words: Option<Vec<String>>,
    /// Why the command could not be split (then only a shell rule can take it).
    pub split_error: Option<SplitError>,
    /// The rules tried, in order, up to and including the one that matched.
    pub tried: Vec<Attempt<'a>>,
    pub plan: Option<Plan<'a>>,
}

#[derive(Debug)]
pub struct Attempt<'a> {
    pub rule: &'a Rule,
    /// `None` when this rule matched.
    pub refused: Option<Refusal>,
}

/// Where and why one rule refused the request's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 0 is the program, 1 the first argument.
    pub position: usize,
    /// The request's word there, if it has one.
    pub word: Option<String>,
    pub why: String,
}

/// `word 2 "--help" does not fit "*": …`.
impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "word {}", self.position)?;
        if let Some(word) = &self.word {
            write!(f, " {}", quote(word))?;
        }
        write!(f, " {}", self.why)
    }
}

/// A word as JSON writes a string: quoted, with control characters escaped, so what
/// `explain` prints is unambiguous and fits on one line.
pub fn quote(word: &str) -> String {
    serde_json::to_string(word).unwrap_or_else(|_| format!("{word:?}"))
}

/// Tries the rules in order, as `plan` does, and keeps each refusal.
pub fn explain<'a>(
    rules: &'a [Rule],
    request: &Invocation<'_>,
) -> Result<Explanation<'a>, SplitError> {
    let words = words(request)?;
    let slice = words.as_slice().unwrap_or_default();
    let mut tried = Vec::new();
    let mut plan = None;
    for rule in rules {
        match try_rule(rule, request, &words) {
            Ok(argv) => {
                tried.push(Attempt {
                    rule,
                    refused: None,
                });
                plan = Some(Plan { rule, argv });
                break;
            }
            Err(mismatch) => tried.push(Attempt {
                rule,
                refused: Some(refusal(rule, slice, mismatch)),
            }),
        }
    }
    Ok(Explanation {
        words: words.as_slice().map(<[String]>::to_vec),
        split_error: match words {
            Words::Unsplittable(err) => Some(err),
            Words::Given(_) | Words::Split(_) => None,
        },
        tried,
        plan,
    })
}

fn refusal(rule: &Rule, words: &[String], m: Mismatch) -> Refusal {
    let pattern = || match &rule.action {
        Action::Argv { args, .. } => m
            .position
            .checked_sub(1)
            .and_then(|i| args.get(i))
            .map_or_else(|| "nothing".into(), ToString::to_string),
        Action::Shell => "nothing".into(),
    };
    let why = match m.why {
        Why::ShellTakesCommandsOnly => {
            "is refused: a shell rule takes a command string only, never an argv".into()
        }
        Why::Unsplittable => {
            "is refused: the command cannot be split into words, and only a shell rule takes \
             it whole"
                .into()
        }
        Why::NotTheProgram => match rule_program(rule) {
            Some(program) => {
                let name = Path::new(program)
                    .file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default();
                format!("is neither {program} nor its file name {name}")
            }
            None => "cannot name the rule's program, whose path is not UTF-8".into(),
        },
        Why::Word(reason) => format!("does not fit {}: it {reason}", pattern()),
        Why::Missing => format!("is missing: the rule wants {} there", pattern()),
        Why::Extra => {
            "is one word too many: the rule ends before it (a last \"**\" would take more)".into()
        }
    };
    Refusal {
        position: m.position,
        word: words.get(m.position).cloned(),
        why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::patterns::ArgPattern;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn rules() -> Vec<Rule> {
        vec![
            Rule::argv("uptime", "/usr/bin/uptime", vec![]),
            Rule::argv(
                "status",
                "/usr/bin/systemctl",
                vec![ArgPattern::Literal("status".into()), ArgPattern::Word],
            ),
            Rule::argv(
                "logs",
                "/usr/bin/journalctl",
                vec![
                    ArgPattern::Literal("-n".into()),
                    ArgPattern::Int { min: 1, max: 100 },
                ],
            ),
        ]
    }

    fn lines(rules: &[Rule], argv: &[&str]) -> Vec<String> {
        let argv = strings(argv);
        let e = explain(rules, &Invocation::Argv(&argv)).unwrap();
        e.tried
            .iter()
            .map(|a| match &a.refused {
                None => format!("{}: matches", a.rule.name),
                Some(r) => format!("{}: {r}", a.rule.name),
            })
            .collect()
    }

    #[test]
    fn each_rule_says_where_it_parted() {
        let rules = rules();
        assert_eq!(
            lines(&rules, &["systemctl", "status", "--help"]),
            [
                "uptime: word 0 \"systemctl\" is neither /usr/bin/uptime nor its file name uptime",
                "status: word 2 \"--help\" does not fit \"*\": it starts with \"-\" and \"*\" \
                 takes no options; list the allowed values, or write {\"any\": true} if \
                 options are meant",
                "logs: word 0 \"systemctl\" is neither /usr/bin/journalctl nor its file name \
                 journalctl",
            ]
        );
        assert_eq!(
            lines(&rules, &["journalctl", "-n"])[2],
            "logs: word 2 is missing: the rule wants {\"int\":[1,100]} there"
        );
        assert_eq!(
            lines(&rules, &["uptime", "-p"])[0],
            "uptime: word 1 \"-p\" is one word too many: the rule ends before it (a last \
             \"**\" would take more)"
        );
        // The first match ends the story, and it is the plan's.
        let argv = strings(&["systemctl", "status", "nginx"]);
        let e = explain(&rules, &Invocation::Argv(&argv)).unwrap();
        assert_eq!(e.tried.len(), 2);
        assert_eq!(
            e.plan.unwrap().argv,
            ["/usr/bin/systemctl", "status", "nginx"]
        );
    }

    #[test]
    fn unsplittable_commands_and_shell_rules() {
        let mut rules = rules();
        let e = explain(&rules, &Invocation::Command("echo 'x")).unwrap();
        assert!(e.words.is_none() && e.split_error.is_some() && e.plan.is_none());
        assert!(
            e.tried[0]
                .refused
                .as_ref()
                .unwrap()
                .why
                .contains("cannot be split")
        );
        rules.push(Rule {
            action: Action::Shell,
            ..Rule::argv("sh", "/bin/sh", vec![])
        });
        let e = explain(&rules, &Invocation::Command("echo 'x")).unwrap();
        assert_eq!(e.plan.unwrap().rule.name, "sh");
        let argv = strings(&["echo"]);
        let e = explain(&rules, &Invocation::Argv(&argv)).unwrap();
        assert!(
            e.tried[3]
                .refused
                .as_ref()
                .unwrap()
                .why
                .contains("shell rule")
        );
        assert!(explain(&rules, &Invocation::Command(" ")).is_err());
    }
}
