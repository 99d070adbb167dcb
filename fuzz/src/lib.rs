//! What each fuzz target checks, as plain functions: `fuzz_targets/*.rs` hand them
//! libFuzzer's input, and `tests/fuzz_corpus.rs` in the main crate replays every file of
//! `fuzz/corpus/<target>/` through them on stable Rust (it includes this file by path).
//! Beyond "no panic", each asserts the property an attacker would want broken.

use std::path::PathBuf;
use std::sync::OnceLock;

use sudo_agent::testing::{
    self as agent, Action, ArgPattern, Config, Invocation, MAX_BODY, MAX_HEAD, Rule, WordRe,
};
use sudo_agent::totp;

/// One target's checks.
pub type Check = fn(&[u8]);

/// Target names, as directories under `fuzz/corpus/`.
pub const TARGETS: &[(&str, Check)] = &[
    ("parse_head", parse_head),
    ("split_words", split_words),
    ("policy_plan", policy_plan),
    ("base32", base32),
    ("config", config),
];

/// A head is never accepted beyond the input, the head cap or the body cap.
pub fn parse_head(data: &[u8]) {
    if let Ok(Some(head)) = agent::parse_head(data) {
        assert!(head.len <= data.len() && head.len <= MAX_HEAD, "{head:?}");
        assert!(head.content_length <= MAX_BODY, "{head:?}");
    }
}

/// Words split from a command, each quoted and joined again, split back to the same
/// words: nothing the splitter produces depends on anything but quoting.
pub fn split_words(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(words) = agent::split_words(text) {
        assert!(!words.is_empty());
        let quoted: Vec<String> = words
            .iter()
            .map(|w| format!("'{}'", w.replace('\'', r"'\''")))
            .collect();
        assert_eq!(agent::split_words(&quoted.join(" ")).as_ref(), Ok(&words));
    }
}

fn rule(name: &str, program: &str, args: Vec<ArgPattern>) -> Rule {
    Rule::argv(name, program, args)
}

fn lit(s: &str) -> ArgPattern {
    ArgPattern::Literal(s.into())
}

/// The README's sample policy (no shell rule), plus a rule for each pattern kind.
fn rules() -> &'static [Rule] {
    static RULES: OnceLock<Vec<Rule>> = OnceLock::new();
    RULES.get_or_init(|| {
        let re = |s: &str| ArgPattern::Re(WordRe::new(s).unwrap_or_else(|e| panic!("{s}: {e}")));
        vec![
            rule("uptime", "/usr/bin/uptime", vec![]),
            rule("disk", "/usr/bin/df", vec![lit("-h"), ArgPattern::Rest]),
            rule(
                "service",
                "/usr/bin/systemctl",
                vec![
                    ArgPattern::OneOf(vec!["restart".into(), "status".into()]),
                    ArgPattern::OneOf(vec!["nginx".into(), "docker".into()]),
                ],
            ),
            rule(
                "logs",
                "/usr/bin/journalctl",
                vec![
                    lit("--no-pager"),
                    lit("-n"),
                    ArgPattern::Word,
                    lit("-u"),
                    ArgPattern::Word,
                ],
            ),
            rule(
                "unit",
                "/usr/bin/systemctl",
                vec![lit("is-active"), re("[a-z0-9@._-]{1,64}")],
            ),
            rule(
                "tail",
                "/usr/bin/tail",
                vec![
                    lit("-n"),
                    ArgPattern::Int { min: 1, max: 1000 },
                    ArgPattern::PathUnder("/var/log".into()),
                ],
            ),
            rule(
                "echo",
                "/usr/bin/echo",
                vec![ArgPattern::Any, ArgPattern::Word],
            ),
            rule(
                "rm",
                "/usr/bin/rm",
                vec![lit("-f"), lit("--"), ArgPattern::Word],
            ),
        ]
    })
}

/// Whatever the input (as a command string, and split at NULs as an argv), a plan only
/// ever runs a rule's own program with arguments that rule allows, each checked here
/// again by plain code written apart from the matcher.
pub fn policy_plan(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let argv: Vec<String> = text.split('\0').map(String::from).collect();
    for request in [Invocation::Command(&text), Invocation::Argv(&argv)] {
        let Ok(Some(plan)) = agent::plan(rules(), &request) else {
            continue;
        };
        let Action::Argv { program, args } = &plan.rule.action else {
            panic!(
                "no shell rule in this policy, yet {:?} was planned",
                plan.argv
            );
        };
        assert_eq!(plan.argv.first().map(PathBuf::from).as_ref(), Some(program));
        assert!(agent::matches(plan.rule, &plan.argv));
        let fixed = args.iter().all(|a| matches!(a, ArgPattern::Literal(_)));
        if fixed {
            assert_eq!(plan.argv.len(), args.len() + 1, "{:?}", plan.argv);
        }
        let mut operands = false;
        for (pattern, word) in args.iter().zip(&plan.argv[1..]) {
            assert!(
                allowed(pattern, word, operands),
                "{pattern:?} took {word:?}"
            );
            operands |= matches!(pattern, ArgPattern::Literal(t) if t == "--");
        }
    }
}

/// What each kind promises, said the simplest way.
fn allowed(pattern: &ArgPattern, word: &str, operands: bool) -> bool {
    match pattern {
        ArgPattern::Literal(t) => word == t,
        ArgPattern::OneOf(list) => list.iter().any(|t| t == word),
        ArgPattern::Word => operands || !word.starts_with('-'),
        ArgPattern::Any | ArgPattern::Rest => true,
        // The one regex of the policy above, its meaning spelt out.
        ArgPattern::Re(re) => {
            assert_eq!(re.source(), "[a-z0-9@._-]{1,64}");
            (1..=64).contains(&word.len())
                && word
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"@._-".contains(&b))
        }
        ArgPattern::PathUnder(dir) => {
            word.starts_with(&format!("{dir}/"))
                && !word
                    .split('/')
                    .skip(1)
                    .any(|c| c.is_empty() || c == "." || c == "..")
        }
        ArgPattern::Int { min, max } => {
            let digits = word.strip_prefix('-').unwrap_or(word);
            let plain = word == "0" || !digits.starts_with('0');
            !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
                && plain
                && word
                    .parse::<i64>()
                    .is_ok_and(|n| (*min..=*max).contains(&n))
        }
    }
}

/// Whatever decodes, encodes and decodes back to the same bytes.
pub fn base32(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(bytes) = totp::base32_decode(text) {
        assert_eq!(totp::base32_decode(&totp::base32_encode(&bytes)), Ok(bytes));
    }
}

/// Parsing and validating any text ends in a config or a list of problems, never a
/// panic; an accepted config names only absolute programs.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(raw) = agent::parse_config(text) else {
        return;
    };
    if let Ok(cfg) = Config::validate(raw) {
        check_rules(&cfg);
    }
}

fn check_rules(cfg: &Config) {
    for rule in &cfg.rules {
        if let Action::Argv { program, .. } = &rule.action {
            assert!(program.is_absolute(), "{rule:?}");
        }
    }
}
