//! Attack: a pager or the agent's own environment as the way in. A rule running
//! `systemctl status` or `journalctl` must get no pager and no terminal, and nothing set
//! in the agent's environment (loader, shell start-up files, systemd hand-over) may reach
//! a child. systemctl/journalctl are stand-in scripts here, so the test also runs in
//! containers without systemd; they report what a pager would look at.

use std::fs;

use crate::common::{Agent, TempDir, base_config, script};
use serde_json::json;

const REPORT: &str = r#"tty >/dev/null 2>&1 && echo "tty=yes" || echo "tty=no"
echo "stdin=$(readlink /proc/self/fd/0)"
echo "ctty=$(cut -d' ' -f7 /proc/self/stat)"
echo "leader=$( [ "$(cut -d' ' -f5 /proc/self/stat)" = "$$" ] && echo yes || echo no)"
echo "args=$*"
env | sort | sed 's/^/env /'"#;

/// What a hostile parent environment holds: loader and interpreter hooks, shell start-up
/// files and word splitting, systemd's notify socket and socket-activation variables.
const HOSTILE: &[(&str, &str)] = &[
    ("LD_PRELOAD", "/tmp/evil.so"),
    ("LD_LIBRARY_PATH", "/tmp/evil"),
    ("LD_AUDIT", "/tmp/evil.so"),
    ("BASH_ENV", "/tmp/evil.sh"),
    ("ENV", "/tmp/evil.sh"),
    ("IFS", "/"),
    ("PS4", "$(touch /tmp/evil)"),
    ("SHELLOPTS", "xtrace"),
    ("PYTHONPATH", "/tmp/evil"),
    ("PYTHONSTARTUP", "/tmp/evil.py"),
    ("PERL5OPT", "-Mevil"),
    ("NODE_OPTIONS", "--require /tmp/evil.js"),
    ("PAGER", "sh -c 'touch /tmp/evil'"),
    ("SYSTEMD_PAGER", "sh"),
    ("LESSOPEN", "|touch /tmp/evil %s"),
    ("NOTIFY_SOCKET", "/run/systemd/notify"),
    ("LISTEN_FDS", "1"),
    ("LISTEN_PID", "1"),
    ("LISTEN_FDNAMES", "x"),
    ("WATCHDOG_USEC", "1000"),
    ("HOME", "/tmp/evil-home"),
    ("PATH", "/tmp/evil:/usr/bin:/bin"),
];

#[test]
fn status_and_logs_get_no_pager_no_tty_and_none_of_the_agents_environment() {
    let dir = TempDir::new("env-pager");
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).unwrap();
    let systemctl = script(&bin, "systemctl", REPORT);
    let journalctl = script(&bin, "journalctl", REPORT);
    let cfg = base_config(
        dir.path(),
        json!({"rules": [
            {"name": "status", "argv": [systemctl, "status", ["nginx"]], "no_pin": true},
            {"name": "logs", "argv": [journalctl, "--no-pager", "-n", "*"], "no_pin": true}
        ]}),
    );
    let agent = Agent::start_in(dir, &cfg, HOSTILE);
    let own_home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    for command in ["systemctl status nginx", "journalctl --no-pager -n 5"] {
        let r = agent.post_json("/run", &json!({"command": command}));
        assert_eq!(r.status, 200, "{command}: {}", r.body);
        let out = r.json()["stdout"].as_str().unwrap().to_string();
        let line = |key: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(key))
                .unwrap_or_else(|| panic!("{key} missing in {out}"))
                .to_string()
        };
        assert_eq!(line("tty="), "no", "{out}");
        assert_eq!(line("stdin="), "/dev/null", "{out}");
        assert_eq!(line("ctty="), "0", "no controlling terminal: {out}");
        assert_eq!(line("leader="), "yes", "own process group: {out}");
        let env: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("env ")).collect();
        let mut expected = vec![
            format!("HOME={own_home}"),
            "LANG=C.UTF-8".into(),
            "LESSSECURE=1".into(),
            "PAGER=cat".into(),
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin".into(),
            "PWD=".into(),
            "SYSTEMD_COLORS=0".into(),
            "SYSTEMD_PAGER=cat".into(),
            "SYSTEMD_PAGERSECURE=1".into(),
            "TERM=dumb".into(),
        ];
        expected.sort();
        // /bin/sh adds PWD (and may add SHLVL/_) itself; compare only the names it did
        // not invent, and PWD by name.
        let ours: Vec<String> = env
            .iter()
            .filter(|v| {
                !v.starts_with("SHLVL=") && !v.starts_with("_=") && !v.starts_with("OLDPWD")
            })
            .map(|v| {
                if v.starts_with("PWD=") {
                    "PWD=".to_string()
                } else {
                    v.to_string()
                }
            })
            .collect();
        assert_eq!(ours, expected, "{command}");
        for (name, _) in HOSTILE {
            if !matches!(*name, "HOME" | "PATH" | "PAGER" | "SYSTEMD_PAGER") {
                assert!(
                    !env.iter().any(|v| v.starts_with(&format!("{name}="))),
                    "{name} leaked"
                );
            }
        }
    }
    assert!(!std::path::Path::new("/tmp/evil").exists());
}
