//! Programs that hand whoever chooses their arguments a way out: interpreters, shells,
//! editors, pagers, programs that run other programs, write any file, or start
//! containers. A rule that fixes every word is the owner's own choice and fine; a
//! wildcard after one of these is a root shell waiting for the right word. `check`
//! refuses that in a `no_pin` rule and warns about it in a rule that needs a code.

use std::path::Path;

use super::patterns::ArgPattern;
use super::rule::{Action, Rule};

/// What makes a program's escape reachable from a rule's wildcards.
#[derive(Debug, Clone, Copy)]
enum Opens {
    /// Any wildcard that can carry a word of the caller's choice (not `{"int"}`): the
    /// word itself is code, a script, a command or a file to write.
    AnyWord,
    /// A wildcard that admits one of these words (simulated through the matcher, so
    /// `"*"` is no way to `-exec`, `"**"` is).
    Words(&'static [&'static str]),
    /// The first position that is not a literal option: the subcommand.
    Verb(&'static [&'static str]),
    /// `AnyWord`, unless the rule holds this literal (which turns the escape off).
    Unless(&'static str),
}

struct Escape {
    names: &'static [&'static str],
    opens: Opens,
    /// What the escape is, naming the words that reach it.
    reason: &'static str,
}

const RUNS_ITS_ARGUMENTS: &str = "runs its arguments as a command";

/// The built-in list. Names are matched after dropping a `.suffix` and trailing digits
/// (`python3.11` → `python`, `vim.basic` → `vim`), on both the rule's path and the
/// file it links to.
const ESCAPES: &[Escape] = &[
    Escape {
        names: &[
            "sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "csh", "tcsh", "fish", "busybox",
        ],
        opens: Opens::AnyWord,
        reason: "a shell runs any command it is given (-c, a script, a busybox applet)",
    },
    Escape {
        names: &[
            "python",
            "pypy",
            "perl",
            "ruby",
            "irb",
            "node",
            "nodejs",
            "deno",
            "bun",
            "php",
            "lua",
            "luajit",
            "tclsh",
            "wish",
            "expect",
            "Rscript",
            "julia",
            "guile",
            "java",
            "jrunscript",
            "gdb",
        ],
        opens: Opens::AnyWord,
        reason: "an interpreter runs any code it is given (a script path, -c or -e code)",
    },
    Escape {
        names: &["awk", "gawk", "mawk", "nawk", "sed", "dc"],
        opens: Opens::AnyWord,
        reason: "its program text runs shell commands (awk's system(), sed's e and s///e, \
                 dc's !) and writes any file",
    },
    Escape {
        names: &[
            "vi",
            "vim",
            "nvim",
            "view",
            "ex",
            "ed",
            "nano",
            "emacs",
            "pico",
            "joe",
            "mcedit",
            "editor",
            "sensible-editor",
            "vipw",
            "vigr",
            "visudo",
            "sudoedit",
        ],
        opens: Opens::AnyWord,
        reason: "an editor runs shell commands (:!sh, +cmd) and writes any file",
    },
    Escape {
        names: &["less", "more", "most", "pg", "pager", "sensible-pager"],
        opens: Opens::AnyWord,
        reason: "a pager runs shell commands (!sh, +cmd) and opens any file",
    },
    Escape {
        names: &["man"],
        opens: Opens::Words(&["-P", "--pager=sh", "-H", "--html=sh"]),
        reason: "man -P/--pager and -H run any command",
    },
    Escape {
        names: &["find"],
        opens: Opens::Words(&[
            "-exec", "-execdir", "-ok", "-okdir", "-fprint", "-fprintf", "-fls", "-delete",
        ]),
        reason: "find's -exec, -execdir, -ok and -okdir run any command; -fprint, -fprintf \
                 and -fls write any file; -delete removes",
    },
    Escape {
        names: &[
            "xargs",
            "env",
            "nice",
            "timeout",
            "nohup",
            "stdbuf",
            "setsid",
            "ionice",
            "chrt",
            "taskset",
            "flock",
            "time",
            "watch",
            "strace",
            "ltrace",
            "valgrind",
            "script",
            "sudo",
            "su",
            "doas",
            "pkexec",
            "runuser",
            "setpriv",
            "capsh",
            "chroot",
            "nsenter",
            "unshare",
            "systemd-run",
            "tmux",
            "screen",
            "at",
            "batch",
            "crontab",
        ],
        opens: Opens::AnyWord,
        reason: RUNS_ITS_ARGUMENTS,
    },
    Escape {
        names: &["ld-linux", "ld-musl"],
        opens: Opens::AnyWord,
        reason: "the dynamic loader runs any program given as its argument",
    },
    Escape {
        names: &["tar"],
        opens: Opens::Words(&[
            "--checkpoint-action=exec=sh",
            "--to-command=sh",
            "-I",
            "--use-compress-program=sh",
            "--info-script=sh",
            "--new-volume-script=sh",
            "-F",
            "-C",
        ]),
        reason: "tar --checkpoint-action=exec=, --to-command, -I/--use-compress-program and \
                 -F/--info-script run any command; -C with -x writes any file",
    },
    Escape {
        names: &["zip"],
        opens: Opens::Words(&["-T", "-TT", "--unzip-command=sh"]),
        reason: "zip -T with -TT/--unzip-command runs any command",
    },
    Escape {
        names: &["rsync"],
        opens: Opens::Words(&["-e", "--rsh=sh", "--rsync-path=sh", "host:/x", "/etc/x"]),
        reason: "rsync -e/--rsh and --rsync-path run any command, and it writes any file",
    },
    Escape {
        names: &["ssh", "scp", "sftp", "socat", "nc", "ncat", "netcat"],
        opens: Opens::AnyWord,
        reason: "runs commands (ssh -o ProxyCommand=, LocalCommand; socat exec:; nc -e) or \
                 reaches a root shell elsewhere",
    },
    Escape {
        names: &[
            "docker",
            "podman",
            "nerdctl",
            "ctr",
            "kubectl",
            "lxc",
            "machinectl",
            "systemd-nspawn",
        ],
        opens: Opens::AnyWord,
        reason: "a container runtime starts a root shell with the host mounted \
                 (docker run -v /:/host)",
    },
    Escape {
        names: &["git"],
        opens: Opens::AnyWord,
        reason: "git runs commands through -c core.pager=, aliases with !, hooks and \
                 --upload-pack",
    },
    Escape {
        names: &[
            "cp", "mv", "install", "ln", "tee", "dd", "chmod", "chown", "chgrp", "truncate",
        ],
        opens: Opens::AnyWord,
        reason: "writes, moves or re-permissions any file (/etc/shadow, a setuid copy of a \
                 shell)",
    },
    Escape {
        names: &["apt", "apt-get", "dpkg", "pip", "npm", "make"],
        opens: Opens::AnyWord,
        reason: "installs or builds whatever it is given, whose scripts run as root \
                 (apt-get install ./x.deb, apt -o APT::Update::Pre-Invoke::=, make -f)",
    },
    Escape {
        names: &["mysql", "psql", "sqlite", "mariadb"],
        opens: Opens::AnyWord,
        reason: "a database shell runs shell commands (\\! in mysql and psql, .shell in \
                 sqlite3)",
    },
    Escape {
        names: &["tcpdump"],
        opens: Opens::Words(&["-z", "-w"]),
        reason: "tcpdump -z runs any command on each file -w writes",
    },
    Escape {
        names: &["curl", "wget"],
        opens: Opens::Words(&["-o", "-O", "-K", "--output=/x", "--config=/x", "-e"]),
        reason: "-o/-O write any file and -K/--config (wget -e) read options from one",
    },
    Escape {
        names: &["ip"],
        opens: Opens::Verb(&["netns"]),
        reason: "ip netns exec runs any command",
    },
    Escape {
        names: &["systemctl"],
        opens: Opens::Verb(&["edit"]),
        reason: "systemctl edit opens an editor as root",
    },
    Escape {
        names: &["journalctl"],
        opens: Opens::Unless("--no-pager"),
        reason: "without a literal --no-pager journalctl may start a pager (less), whose \
                 !cmd runs a shell",
    },
];

/// An escape a rule leaves open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The program's name as listed (`python`, `find`).
    pub program: &'static str,
    /// 1-based position of the wildcard that reaches it.
    pub position: usize,
    /// That wildcard, as the config writes it.
    pub pattern: String,
    pub reason: &'static str,
}

impl Finding {
    /// What `check` says about rule `rule`, before its advice.
    pub fn describe(&self, rule: &str) -> String {
        format!(
            "rule `{rule}` lets the caller pick argument {} ({}) of {}, which reaches its \
             escape: {}",
            self.position, self.pattern, self.program, self.reason
        )
    }
}

/// The escape an Argv rule leaves open, looking the program up by the name in the rule
/// and by the name of the file it links to (`/usr/bin/vi` → `vim.basic`). Reading that
/// link is the one file-system look in this folder.
pub fn escape_for(rule: &Rule) -> Option<Finding> {
    let Action::Argv { program, args } = &rule.action else {
        return None;
    };
    let real = std::fs::canonicalize(program).ok();
    [Some(program.as_path()), real.as_deref()]
        .into_iter()
        .flatten()
        .filter_map(|path| path.file_name()?.to_str())
        .find_map(|name| escape(name, args))
}

/// The escape `args` leave open for a program called `name`, if it is on the list.
pub fn escape(name: &str, args: &[ArgPattern]) -> Option<Finding> {
    let base = base_name(name);
    let entry = ESCAPES.iter().find(|e| e.names.contains(&base))?;
    let program = entry.names.iter().copied().find(|n| *n == base)?;
    let position = match entry.opens {
        Opens::AnyWord => first_open(args, |_, _| true),
        Opens::Unless(literal) => {
            if args.contains(&ArgPattern::Literal(literal.into())) {
                return None;
            }
            first_open(args, |_, _| true)
        }
        Opens::Words(words) => first_open(args, |pattern, operands| {
            words.iter().any(|w| pattern.check(w, operands).is_ok())
        }),
        Opens::Verb(words) => {
            let at = args
                .iter()
                .position(|a| !matches!(a, ArgPattern::Literal(t) if t.starts_with('-')))?;
            let pattern = &args[at];
            let reachable =
                !pattern.is_fixed() && words.iter().any(|w| pattern.check(w, false).is_ok());
            reachable.then_some(at)
        }
    }?;
    Some(Finding {
        program,
        position: position + 1,
        pattern: args[position].to_string(),
        reason: entry.reason,
    })
}

/// Index of the first wildcard for which `reaches(pattern, operands)` holds. A list or
/// a literal is the owner's own words; an `{"int"}` carries no code, path or command.
fn first_open(args: &[ArgPattern], reaches: impl Fn(&ArgPattern, bool) -> bool) -> Option<usize> {
    let mut operands = false;
    for (i, pattern) in args.iter().enumerate() {
        let open = !pattern.is_fixed() && !matches!(pattern, ArgPattern::Int { .. });
        if open && reaches(pattern, operands) {
            return Some(i);
        }
        operands |= matches!(pattern, ArgPattern::Literal(t) if t == "--");
    }
    None
}

/// `python3.11` → `python`, `vim.basic` → `vim`, `ld-linux-aarch64.so.1` → `ld-linux`.
fn base_name(name: &str) -> &str {
    let name = Path::new(name)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(name);
    let name = name.split('.').next().unwrap_or(name);
    if let Some(loader) = ["ld-linux", "ld-musl"]
        .iter()
        .find(|l| name.starts_with(*l))
    {
        return loader;
    }
    name.trim_end_matches(|c: char| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::patterns::WordRe;

    fn lit(s: &str) -> ArgPattern {
        ArgPattern::Literal(s.into())
    }

    #[test]
    fn names_are_reduced_to_the_program() {
        assert_eq!(base_name("python3.11"), "python");
        assert_eq!(base_name("python3"), "python");
        assert_eq!(base_name("vim.basic"), "vim");
        assert_eq!(base_name("perl5.36.0"), "perl");
        assert_eq!(base_name("ld-linux-aarch64.so.1"), "ld-linux");
        assert_eq!(base_name("ld-musl-x86_64.so.1"), "ld-musl");
        assert_eq!(base_name("/usr/bin/find"), "find");
    }

    #[test]
    fn wildcards_after_interpreters_are_found() {
        let f = escape("python3", &[ArgPattern::Rest]).unwrap();
        assert_eq!((f.program, f.position), ("python", 1));
        assert!(f.describe("py").contains("interpreter"), "{f:?}");
        assert!(escape("bash", &[lit("-c"), ArgPattern::Word]).is_some());
        assert!(escape("env", &[ArgPattern::Word]).is_some());
        // Literal-only rules are the owner's own words.
        assert!(escape("python3", &[lit("/usr/local/lib/report.py")]).is_none());
        assert!(escape("bash", &[ArgPattern::OneOf(vec!["-x".into()])]).is_none());
        // A number carries no code.
        assert!(escape("nice", &[lit("-n"), ArgPattern::Int { min: 0, max: 19 }]).is_none());
        assert!(escape("uptime", &[ArgPattern::Rest]).is_none());
    }

    #[test]
    fn word_escapes_follow_the_matcher() {
        // "**" can be -exec; "*" cannot (it takes no options) unless after "--".
        let f = escape("find", &[lit("/srv"), ArgPattern::Rest]).unwrap();
        assert!(f.reason.contains("-exec"), "{f:?}");
        assert!(escape("find", &[lit("/srv"), lit("-name"), ArgPattern::Word]).is_none());
        assert!(escape("find", &[lit("--"), ArgPattern::Word]).is_some());
        assert!(escape("find", &[ArgPattern::Any]).is_some());
        let re = |s: &str| ArgPattern::Re(WordRe::new(s).unwrap());
        assert!(escape("find", &[re("-[a-z]+")]).is_some());
        assert!(escape("find", &[re("[a-z]+")]).is_none());
        assert!(escape("tar", &[lit("-xf"), ArgPattern::Word]).is_none());
        assert!(escape("tar", &[lit("-xf"), ArgPattern::Any]).is_some());
    }

    #[test]
    fn verbs_and_defusing_literals() {
        let status = ArgPattern::OneOf(vec!["status".into(), "is-active".into()]);
        assert!(escape("systemctl", &[status, ArgPattern::Word]).is_none());
        let f = escape("systemctl", &[ArgPattern::Word, lit("nginx")]).unwrap();
        assert!(f.reason.contains("edit"), "{f:?}");
        assert!(escape("systemctl", &[lit("--no-pager"), ArgPattern::Rest]).is_some());
        assert!(escape("ip", &[lit("addr"), ArgPattern::Word]).is_none());
        assert!(escape("ip", &[ArgPattern::Rest]).is_some());
        let logs = [lit("--no-pager"), lit("-u"), ArgPattern::Word];
        assert!(escape("journalctl", &logs).is_none());
        assert!(escape("journalctl", &[lit("-u"), ArgPattern::Word]).is_some());
    }
}
