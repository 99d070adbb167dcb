//! Tests of who may use the agent: `unix_socket`, a rule's `callers`, `approvals`.

use super::tests::{parse_err, problems, prog, validate};

fn with(extra: &str, rule_extra: &str) -> String {
    format!(
        r#"{{{extra} "rules": [{{"name": "u", "argv": ["{}"] {rule_extra}}}]}}"#,
        prog("uptime")
    )
}

#[test]
fn approvals_defaults_and_bounds() {
    let c = validate(&with("", "")).unwrap();
    assert_eq!(
        (c.approvals.max_pending, c.approvals.ttl_s),
        (8, 300),
        "the issue's defaults"
    );
    assert!(c.approvals.approvers.is_none() && c.approvals.notify.is_none());
    assert!(c.unix_socket.is_none());
    let got = problems(&with(
        r#""approvals": {"max_pending": 0, "ttl_s": 86401, "notify": []},"#,
        "",
    ));
    assert!(
        got.iter()
            .any(|p| p.starts_with("approvals.max_pending: 0 is out of range")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|p| p.starts_with("approvals.ttl_s: 86401 is out of range")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|p| p.starts_with("approvals.notify: is empty")),
        "{got:?}"
    );
    let c = validate(&with(
        r#""approvals": {"ttl_s": 86400, "max_pending": 64},"#,
        "",
    ))
    .unwrap();
    assert_eq!(c.approvals.ttl_s, 86_400);
    let typo = parse_err(&with(
        r#""approvals": {"approver": {"users": ["root"]}},"#,
        "",
    ));
    assert!(typo.to_string().contains("approver"), "{typo}");
}

#[test]
fn users_and_groups_are_looked_up_now() {
    let c = validate(&with(
        r#""approvals": {"approvers": {"users": ["root"], "groups": ["nogroup"]}},"#,
        r#", "callers": {"users": ["nobody"]}"#,
    ))
    .unwrap();
    let approvers = c.approvals.approvers.unwrap();
    assert_eq!(approvers.uids, vec![0]);
    assert_eq!(approvers.shown, vec!["root", "@nogroup"]);
    assert_eq!(approvers.gids.len(), 1);
    assert_eq!(c.rules[0].callers.as_ref().unwrap().uids, vec![65534]);

    let got = problems(&with(
        r#""approvals": {"approvers": {}},"#,
        r#", "callers": {"users": ["no-such-user-x"], "groups": ["no-such-group-x"]}"#,
    ));
    assert!(
        got.iter()
            .any(|p| p.starts_with("approvals.approvers: names no user")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|p| p.starts_with("rules[0].callers.users[0]: no user")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|p| p.starts_with("rules[0].callers.groups[0]: no group")),
        "{got:?}"
    );
}

#[test]
fn the_unix_socket() {
    let c = validate(&with(
        r#""unix_socket": {"path": "/run/sudo-agent/agent.sock", "group": "nogroup"},"#,
        "",
    ))
    .unwrap();
    let socket = c.unix_socket.unwrap();
    assert_eq!(socket.mode, 0o660, "default mode");
    assert!(socket.group.is_some());
    let long = format!("/run/{}", "x".repeat(110));
    let got = problems(&with(
        &format!(r#""unix_socket": {{"path": "{long}", "mode": "0999"}},"#),
        "",
    ));
    assert!(
        got.iter()
            .any(|p| p.contains("longer than a Unix socket path")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|p| p.starts_with("unix_socket.mode: is not an octal mode")),
        "{got:?}"
    );
    let got = problems(&with(r#""unix_socket": {"path": "agent.sock"},"#, ""));
    assert!(
        got.iter().any(|p| p.starts_with("unix_socket.path")),
        "{got:?}"
    );
}
