//! A rule's `examples`: commands it must allow and commands the policy must refuse.
//! `check` (and start-up) run each through the matcher, as Codex checks the examples of
//! its `prefix_rule`s, so a policy cannot drift from what its owner meant unnoticed.

use super::explain::explain;
use super::matcher::{Invocation, plan};
use super::rule::Rule;

/// Why `example`, given as an `allow` example of `rules[index]`, is wrong; `None` when
/// the policy sends it to that very rule (first match wins: a rule above that also
/// matches would run it with its own user, timeout and code requirement).
pub fn wrong_allow(rules: &[Rule], index: usize, example: &Invocation<'_>) -> Option<String> {
    let ours = rules.get(index)?;
    match plan(rules, example) {
        Err(err) => Some(format!("cannot be split into words: {err}")),
        Ok(Some(found)) if std::ptr::eq(found.rule, ours) => None,
        Ok(Some(found)) => Some(format!(
            "is matched first by rule `{}`, which would run it with its own settings; move \
             this rule above that one, or the example to it",
            found.rule.name
        )),
        Ok(None) => {
            let refused = explain(rules, example)
                .ok()?
                .tried
                .into_iter()
                .find(|attempt| std::ptr::eq(attempt.rule, ours))?
                .refused?;
            Some(format!("is refused by this rule: {refused}"))
        }
    }
}

/// Why `example`, given as a `deny` example, is wrong: `None` when no rule of the policy
/// matches it (an example meant to be refused must be refused, whichever rule it sits
/// on).
pub fn wrong_deny(rules: &[Rule], example: &Invocation<'_>) -> Option<String> {
    match plan(rules, example) {
        Ok(Some(found)) => Some(format!("is allowed by rule `{}`", found.rule.name)),
        Ok(None) | Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::patterns::ArgPattern;

    fn rules() -> Vec<Rule> {
        vec![
            Rule::argv(
                "status",
                "/usr/bin/systemctl",
                vec![ArgPattern::Literal("status".into()), ArgPattern::Word],
            ),
            Rule::argv("any", "/usr/bin/systemctl", vec![ArgPattern::Rest]),
        ]
    }

    #[test]
    fn allow_examples_must_reach_their_own_rule() {
        let rules = rules();
        assert_eq!(
            wrong_allow(&rules, 0, &Invocation::Command("systemctl status nginx")),
            None
        );
        let why = wrong_allow(
            &rules[..1],
            0,
            &Invocation::Command("systemctl status --help"),
        )
        .unwrap();
        assert!(
            why.starts_with("is refused by this rule: word 2 \"--help\" does not fit \"*\""),
            "{why}"
        );
        let why = wrong_allow(&rules, 1, &Invocation::Command("systemctl status x")).unwrap();
        assert!(
            why.starts_with("is matched first by rule `status`"),
            "{why}"
        );
        assert!(wrong_allow(&rules, 1, &Invocation::Command("systemctl 'x")).is_some());
        // With "**" below it, the refused word still runs: through the other rule.
        let why = wrong_allow(&rules, 0, &Invocation::Command("systemctl status --help")).unwrap();
        assert!(why.starts_with("is matched first by rule `any`"), "{why}");
        let argv = vec!["systemctl".to_string(), "stop".into(), "x".into()];
        assert_eq!(wrong_allow(&rules, 1, &Invocation::Argv(&argv)), None);
    }

    #[test]
    fn deny_examples_must_be_refused_by_every_rule() {
        let rules = rules();
        assert_eq!(
            wrong_deny(&rules[..1], &Invocation::Command("systemctl stop x")),
            None
        );
        assert_eq!(
            wrong_deny(&rules, &Invocation::Command("systemctl stop x")).unwrap(),
            "is allowed by rule `any`"
        );
        assert_eq!(wrong_deny(&rules, &Invocation::Command("reboot 'x")), None);
    }
}
