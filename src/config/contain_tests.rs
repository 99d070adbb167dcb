//! Tests of the containment keys: `sandbox` (with `no_pin`'s read-only default) and
//! `limits` (per rule, and defaults under `jobs`).

use std::fs;
use std::os::unix::fs::PermissionsExt;

use super::tests::{parse_err, problems, prog, tempdir, validate};

#[test]
fn no_pin_rules_are_read_only_and_must_list_what_they_write() {
    let dir = tempdir("sandbox");
    let rule = |extra: &str| {
        format!(
            r#"{{"rules": [{{"name": "u", "argv": ["{}"], {extra}}}]}}"#,
            prog("uptime")
        )
    };
    let c = validate(&rule(r#""no_pin": true"#)).unwrap();
    assert!(
        c.rules[0].sandbox.read_only,
        "no_pin is read-only by default"
    );
    let c = validate(&rule(r#""no_pin": false"#)).unwrap();
    assert!(
        c.rules[0].sandbox.is_empty(),
        "a code rule has no sandbox unless asked"
    );
    let w = dir.display();
    let c = validate(&rule(&format!(
        r#""no_pin": true, "sandbox": {{"writable": ["{w}"], "network": false,
            "private_tmp": true, "no_new_privileges": true}}"#
    )))
    .unwrap();
    let s = &c.rules[0].sandbox;
    assert!(s.read_only && s.private_network && s.private_tmp && s.no_new_privileges);
    assert_eq!(s.writable, std::slice::from_ref(&dir));
    // network: true is the default; it adds nothing.
    let c = validate(&rule(r#""sandbox": {"network": true}"#)).unwrap();
    assert!(c.rules[0].sandbox.is_empty());

    let got = problems(&rule(r#""no_pin": true, "sandbox": {"read_only": false}"#));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with("rules[0].sandbox.read_only: a rule that needs no code runs read-only")
            && got[0].contains("\"writable\"")
            && got[0].contains("remove \"no_pin\""),
        "{got:?}"
    );
    let got = problems(&rule(&format!(r#""sandbox": {{"writable": ["{w}"]}}"#)));
    assert!(
        got[0].starts_with("rules[0].sandbox.writable: only makes exceptions"),
        "{got:?}"
    );
    let got = problems(&rule(
        r#""no_pin": true, "sandbox": {"writable": ["var/log", "/", "/nonexistent-sa"]}"#,
    ));
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got[0].contains("writable[0]: \"var/log\" is not an absolute path"));
    assert!(got[1].contains("writable[1]: \"/\" would make everything writable"));
    assert!(got[2].contains("writable[2]: /nonexistent-sa does not exist"));
    assert!(
        parse_err(&rule(r#""sandbox": {"readonly": true}"#))
            .to_string()
            .contains("rules[0].sandbox.readonly")
    );
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_root_jobs_writable_path_is_reached_only_through_directories_root_controls() {
    // Bound over itself, links followed, each time its namespace is made: a link there,
    // or a directory on the way another user can change, could make /etc writable.
    let Some(dir) = crate::sys::files::trusted_test_dir("config-writable") else {
        return;
    };
    let open = dir.join("open");
    fs::create_dir_all(open.join("w")).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    let link = dir.join("link");
    std::os::unix::fs::symlink(open.join("w"), &link).unwrap();
    let rule = |path: &std::path::Path, user: &str| {
        format!(
            r#"{{"rules": [{{"name": "u", "argv": ["{}"], "no_pin": true, {user}
                "sandbox": {{"writable": ["{}"]}}}}]}}"#,
            prog("uptime"),
            path.display()
        )
    };
    let got = problems(&rule(&open.join("w"), ""));
    assert_eq!(got.len(), 1, "{got:?}");
    let want = format!(
        "rules[0].sandbox.writable[0]: {} is not trusted (another user could change it): \
         directory {} is mode 0777 (writable by group or others); run: chmod go-w {}",
        open.display(),
        open.display(),
        open.display()
    );
    assert!(got[0].starts_with(&want), "{got:?}");
    assert!(got[0].ends_with("or run the rule as a \"user\""), "{got:?}");
    let got = problems(&rule(&link, ""));
    assert_eq!(
        got,
        [format!(
            "rules[0].sandbox.writable[0]: {} is a symbolic link; name what it points to ({})",
            link.display(),
            open.join("w").display()
        )]
    );
    // As a user, the job writes only what that user may: no more is asked.
    assert!(validate(&rule(&open.join("w"), r#""user": "nobody","#)).is_ok());
    fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).unwrap();
    assert!(validate(&rule(&open.join("w"), "")).is_ok());
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn limits_are_integers_in_range_with_defaults_under_jobs() {
    let text = format!(
        r#"{{"jobs": {{"limits": {{"memory_max": 268435456, "tasks_max": 64}}}},
            "rules": [{{"name": "u", "argv": ["{}"], "limits": {{"tasks_max": 8,
            "cpu_max_percent": 150}}}}]}}"#,
        prog("uptime")
    );
    let c = validate(&text).unwrap();
    assert_eq!(c.jobs.limits.memory_max, Some(268_435_456));
    assert_eq!(c.rules[0].limits.tasks_max, Some(8));
    assert_eq!(
        c.rules[0].limits.memory_max, None,
        "merged per job, not here"
    );
    let got = problems(&text.replace("268435456", "4096").replace("150", "0"));
    assert_eq!(
        got,
        [
            "jobs.limits.memory_max: 4096 is out of range; use a value from 1048576 to \
             1125899906842624",
            "rules[0].limits.cpu_max_percent: 0 is out of range; use a value from 1 to 100000"
        ]
    );
    assert!(
        parse_err(&text.replace("64", "\"64\""))
            .to_string()
            .contains("jobs.limits.tasks_max")
    );
}
