//! Words to a [`Command`], with no I/O: the main commands here, `run`'s own line in
//! [`parse_run`] (its command words pass through as they are).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::flags::Flags;
use crate::clients::run::{Pin, ReplyFormat, RunArgs, What};
use crate::clients::{Client, Endpoint};
use crate::config::{DEFAULT_CONFIG_PATH, DEFAULT_LISTEN};
use crate::deploy::{Enrolment, InstallOptions};

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Version,
    Serve {
        config: PathBuf,
    },
    Demo {
        listen: SocketAddr,
    },
    Init {
        config: PathBuf,
        /// `None`: this machine's host name, so one phone tells many boxes apart.
        account: Option<String>,
        issuer: String,
        force: bool,
        enrolment: Enrolment,
    },
    Code {
        config: PathBuf,
    },
    Verify {
        config: PathBuf,
        code: String,
    },
    Check {
        config: PathBuf,
    },
    Install {
        options: InstallOptions,
        account: Option<String>,
        issuer: String,
    },
    Uninstall {
        options: InstallOptions,
        purge: bool,
    },
    /// `run`, `approve` and `deny`.
    Run(RunArgs),
    Pending {
        endpoint: Endpoint,
        json: bool,
    },
    Mcp {
        endpoint: Endpoint,
    },
    Qr {
        files: Vec<PathBuf>,
    },
    Explain {
        config: PathBuf,
        json: bool,
        asked: Asked,
    },
}

/// What `explain` is asked about: a command string (split as the agent splits one) or
/// words given one by one (an argv request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Asked {
    Command(String),
    Argv(Vec<String>),
}

/// Words to a `Command`; no I/O.
pub fn parse(args: &[String]) -> Result<Command, String> {
    let Some((sub, rest)) = args.split_first() else {
        return Err("no command given".into());
    };
    if sub == "run" {
        // `run` passes the command's own words through, so it parses on its own.
        return Ok(parse_run(rest)?.map_or(Command::Help, Command::Run));
    }
    if sub == "explain" {
        // So does `explain`.
        return Ok(parse_explain(rest)?.unwrap_or(Command::Help));
    }
    let mut config = PathBuf::from(DEFAULT_CONFIG_PATH);
    let mut url = None;
    let mut socket = None;
    let mut json = false;
    let mut pin = Pin::Auto;
    let mut wait_s = None;
    let mut listen = DEFAULT_LISTEN;
    let mut account = None;
    let mut issuer = String::from("sudo-agent");
    let mut force = false;
    let mut root = PathBuf::from("/");
    let mut dry_run = false;
    let mut purge = false;
    let mut uri_file = None;
    let mut config_only = false;
    let mut positional = Vec::new();
    let mut given: Vec<&str> = Vec::new();
    let mut flags = Flags::new(rest);
    while let Some(flag) = flags.next_word() {
        let mut value = |name: &str| flags.value(name);
        if flag.starts_with("--") {
            given.push(flag);
        }
        match flag {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--config" => config = PathBuf::from(value("--config")?),
            "--listen" => {
                let text = value("--listen")?;
                listen = text.parse().map_err(|_| {
                    format!("--listen {text} is not an address like 127.0.0.1:9999")
                })?;
            }
            "--account" => account = Some(value("--account")?),
            "--issuer" => issuer = value("--issuer")?,
            "--force" => force = true,
            "--root" => {
                root = PathBuf::from(value("--root")?);
                if !root.is_absolute() {
                    return Err(format!(
                        "--root {} must be an absolute path",
                        root.display()
                    ));
                }
            }
            "--dry-run" => dry_run = true,
            "--purge" => purge = true,
            "--uri-file" => uri_file = Some(PathBuf::from(value("--uri-file")?)),
            "--config-only" => config_only = true,
            "--url" => url = Some(value("--url")?),
            "--socket" => socket = Some(PathBuf::from(value("--socket")?)),
            "--json" => json = true,
            "--pin-stdin" => pin = Pin::Stdin,
            "--wait" => wait_s = Some(seconds("--wait", &value("--wait")?)?),
            other if other.starts_with('-') && other.len() > 1 => {
                return Err(format!("unknown option {other}"));
            }
            other => positional.push(other.to_string()),
        }
    }
    let endpoint = endpoint(url, socket, &config)?;
    let answer = |what| {
        Command::Run(RunArgs {
            endpoint: endpoint.clone(),
            pin: pin.clone(),
            hold: false,
            reason: None,
            wait_s,
            json,
            detach: false,
            reply: ReplyFormat::Text,
            what,
        })
    };
    let command = match sub.as_str() {
        "-h" | "--help" | "help" => Command::Help,
        "-V" | "--version" => Command::Version,
        "serve" => Command::Serve { config },
        "demo" => Command::Demo { listen },
        "init" => Command::Init {
            config,
            account,
            issuer,
            force,
            enrolment: match (uri_file, config_only) {
                (Some(_), true) => {
                    return Err("--config-only makes no secret, so no URI file; pick one".into());
                }
                (Some(path), false) => Enrolment::UriFile(path),
                (None, true) if force => {
                    return Err("--config-only makes no secret; leave out --force".into());
                }
                (None, true) => Enrolment::ConfigOnly,
                (None, false) => Enrolment::Show,
            },
        },
        "code" => Command::Code { config },
        "install" => Command::Install {
            options: InstallOptions { root, dry_run },
            account,
            issuer,
        },
        "uninstall" => Command::Uninstall {
            options: InstallOptions { root, dry_run },
            purge,
        },
        "check" => Command::Check { config },
        "mcp" => Command::Mcp {
            endpoint: endpoint.clone(),
        },
        "pending" => Command::Pending {
            endpoint: endpoint.clone(),
            json,
        },
        "approve" | "deny" => {
            let [approval] = positional.as_slice() else {
                return Err(format!(
                    "{sub} takes exactly one approval code, e.g. {sub} K7QX"
                ));
            };
            let approval = approval.to_ascii_uppercase();
            positional.clear();
            answer(match sub.as_str() {
                "approve" => What::Approve(approval),
                _ => What::Deny(approval),
            })
        }
        "qr" if positional.is_empty() => {
            return Err("qr takes the URI file(s) to show: sudo-agent qr FILE...".into());
        }
        "qr" => Command::Qr {
            files: positional.iter().map(PathBuf::from).collect(),
        },
        "verify" => {
            let [code] = positional.as_slice() else {
                return Err("verify takes exactly one CODE".into());
            };
            Command::Verify {
                config,
                code: code.clone(),
            }
        }
        other => return Err(format!("unknown command {other}")),
    };
    if !positional.is_empty() && !matches!(command, Command::Verify { .. } | Command::Qr { .. }) {
        return Err(format!("unexpected argument {}", positional[0]));
    }
    let allowed: &[&str] = match command {
        Command::Demo { .. } => &["--listen"],
        Command::Init { .. } => &[
            "--config",
            "--account",
            "--issuer",
            "--force",
            "--uri-file",
            "--config-only",
        ],
        Command::Qr { .. } => &[],
        Command::Install { .. } => &["--root", "--dry-run", "--account", "--issuer"],
        Command::Uninstall { .. } => &["--root", "--dry-run", "--purge"],
        Command::Mcp { .. } => &["--url", "--socket", "--config"],
        Command::Pending { .. } => &["--url", "--socket", "--config", "--json"],
        Command::Run(RunArgs {
            what: What::Approve(_),
            ..
        }) => &[
            "--url",
            "--socket",
            "--config",
            "--json",
            "--pin-stdin",
            "--wait",
        ],
        Command::Run(_) => &["--url", "--socket", "--config", "--json"],
        _ => &["--config"],
    };
    if let Some(flag) = given.iter().find(|f| !allowed.contains(f)) {
        return Err(format!("{flag} is not an option of `{sub}`"));
    }
    Ok(command)
}

/// Where the agent is: `--url` checked now, `--socket` and the config's socket at use.
fn endpoint(
    url: Option<String>,
    socket: Option<PathBuf>,
    config: &Path,
) -> Result<Endpoint, String> {
    if url.is_some() && socket.is_some() {
        return Err("--url and --socket name two agents; pick one".into());
    }
    if let Some(url) = &url {
        Client::new(url).map_err(|e| e.to_string())?;
    }
    Ok(Endpoint {
        url,
        socket,
        config: config.to_path_buf(),
    })
}

fn seconds(flag: &str, text: &str) -> Result<u64, String> {
    text.parse()
        .map_err(|_| format!("{flag} {text} is not a whole number of seconds"))
}

/// Parses the words after `explain`; `Ok(None)` for `--help`. As with `run`, the first
/// word that is not an option (or everything after `--`) is the command.
pub fn parse_explain(words: &[String]) -> Result<Option<Command>, String> {
    let mut config = PathBuf::from(DEFAULT_CONFIG_PATH);
    let mut json = false;
    let mut command = None;
    let mut argv = Vec::new();
    let mut flags = Flags::new(words);
    while let Some(flag) = flags.next_word() {
        match flag {
            "-h" | "--help" => return Ok(None),
            "--config" => config = PathBuf::from(flags.value("--config")?),
            "--json" => json = true,
            "--command" => command = Some(flags.value("--command")?),
            "--" => argv.extend(flags.rest().cloned()),
            other if other.starts_with('-') && other.len() > 1 => {
                return Err(format!("unknown option {other} of `explain`"));
            }
            word => {
                argv.push(word.to_string());
                argv.extend(flags.rest().cloned());
            }
        }
    }
    let asked = match (command, argv.is_empty()) {
        (Some(command), true) => Asked::Command(command),
        (None, false) => Asked::Argv(argv),
        (Some(_), false) => return Err("give either --command or words, not both".into()),
        (None, true) => {
            return Err(
                "nothing to explain: sudo-agent explain [--config P] -- CMD ARGS... \
                 (or --command 'CMD ARGS')"
                    .into(),
            );
        }
    };
    Ok(Some(Command::Explain {
        config,
        json,
        asked,
    }))
}

/// Parses the words after `run`; `Ok(None)` for `--help`. The first word that is not an
/// option (or everything after `--`) starts the command, so its own options pass through.
pub fn parse_run(words: &[String]) -> Result<Option<RunArgs>, String> {
    let (mut url, mut socket) = (None, None);
    let mut config = PathBuf::from(DEFAULT_CONFIG_PATH);
    let mut pin = Pin::Auto;
    let mut wait_s = None;
    let (mut json, mut detach, mut hold) = (false, false, false);
    let mut reason = None;
    let mut reply = ReplyFormat::Text;
    let mut message = None;
    let mut flags = Flags::new(words);
    let mut command = Vec::new();
    while let Some(flag) = flags.next_word() {
        let mut value = |name: &str| flags.value(name);
        match flag {
            "-h" | "--help" => return Ok(None),
            "--url" => url = Some(value("--url")?),
            "--socket" => socket = Some(PathBuf::from(value("--socket")?)),
            "--config" => config = PathBuf::from(value("--config")?),
            "--pin" => pin = Pin::Given(value("--pin")?),
            "--pin-stdin" => pin = Pin::Stdin,
            "--request" => hold = true,
            "--reason" => reason = Some(value("--reason")?),
            "--wait" => wait_s = Some(seconds("--wait", &value("--wait")?)?),
            "--json" => json = true,
            "--detach" => detach = true,
            "--message" => message = Some(value("--message")?),
            "--reply-format" => {
                reply = match value("--reply-format")?.as_str() {
                    "text" => ReplyFormat::Text,
                    "sip" => ReplyFormat::Sip,
                    other => return Err(format!("--reply-format {other}: use text or sip")),
                }
            }
            "--" => command.extend(flags.rest().cloned()),
            other if other.starts_with('-') && other.len() > 1 => {
                return Err(format!("unknown option {other} of `run`"));
            }
            word => {
                command.push(word.to_string());
                command.extend(flags.rest().cloned());
            }
        }
    }
    let endpoint = endpoint(url, socket, &config)?;
    if hold && (pin != Pin::Auto || message.is_some()) {
        return Err("--request sends no code (a human approves it); leave out --pin, --pin-stdin and --message".into());
    }
    if reason.is_some() && !hold {
        return Err("--reason goes with --request".into());
    }
    let what = match (message, command.is_empty()) {
        (Some(text), true) => {
            if pin != Pin::Auto {
                return Err("--message carries its own code; leave out --pin/--pin-stdin".into());
            }
            What::Message(text)
        }
        (Some(_), false) => return Err("give either --message or a command, not both".into()),
        (None, false) => What::Words(command),
        (None, true) => {
            return Err("no command given: sudo-agent run [OPTIONS] -- CMD ARGS...".into());
        }
    };
    if json && reply == ReplyFormat::Sip {
        return Err("--json and --reply-format sip are two output formats; pick one".into());
    }
    Ok(Some(RunArgs {
        endpoint,
        pin,
        hold,
        reason,
        wait_s,
        json,
        detach,
        reply,
        what,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_commands() {
        assert_eq!(
            parse(&words("serve")).unwrap(),
            Command::Serve {
                config: DEFAULT_CONFIG_PATH.into()
            }
        );
        assert_eq!(
            parse(&words("serve --config /x.json")).unwrap(),
            Command::Serve {
                config: "/x.json".into()
            }
        );
        assert_eq!(
            parse(&words("code --config=/y")).unwrap(),
            Command::Code {
                config: "/y".into()
            }
        );
        assert_eq!(
            parse(&words("verify 123456")).unwrap(),
            Command::Verify {
                config: DEFAULT_CONFIG_PATH.into(),
                code: "123456".into()
            }
        );
        assert_eq!(
            parse(&words("demo --listen 127.0.0.1:1234")).unwrap(),
            Command::Demo {
                listen: "127.0.0.1:1234".parse().unwrap()
            }
        );
        assert_eq!(parse(&words("check --help")).unwrap(), Command::Help);
        assert_eq!(parse(&words("--version")).unwrap(), Command::Version);
    }

    #[test]
    fn usage_errors() {
        assert!(parse(&[]).is_err());
        assert!(parse(&words("frobnicate")).is_err());
        assert!(parse(&words("serve --nope")).is_err());
        assert!(parse(&words("verify")).is_err());
        assert!(parse(&words("serve --config")).is_err());
        assert!(parse(&words("demo --listen nowhere")).is_err());
        assert!(parse(&words("code extra")).is_err());
        assert!(parse(&words("serve --force")).is_err());
        assert!(parse(&words("verify 1 --listen 127.0.0.1:1")).is_err());
        assert!(parse(&words("install --root relative/dir")).is_err());
        assert!(parse(&words("install --purge")).is_err());
        assert!(parse(&words("uninstall --account x")).is_err());
    }

    #[test]
    fn parses_install_and_uninstall() {
        assert_eq!(
            parse(&words("install --dry-run --root /mnt/sd")).unwrap(),
            Command::Install {
                options: InstallOptions {
                    root: "/mnt/sd".into(),
                    dry_run: true
                },
                account: None,
                issuer: "sudo-agent".into(),
            }
        );
        assert_eq!(
            parse(&words("uninstall --purge")).unwrap(),
            Command::Uninstall {
                options: InstallOptions {
                    root: "/".into(),
                    dry_run: false
                },
                purge: true,
            }
        );
    }

    fn args(text: &str) -> Result<Option<RunArgs>, String> {
        parse_run(&words(text))
    }

    #[test]
    fn parses_run_lines() {
        let a = args("--pin 123456 --wait 5 -- df -h /").unwrap().unwrap();
        assert_eq!(a.pin, Pin::Given("123456".into()));
        assert_eq!(a.wait_s, Some(5));
        assert_eq!(
            a.what,
            What::Words(vec!["df".into(), "-h".into(), "/".into()])
        );
        assert_eq!(a.endpoint.url, None);
        // Without `--`, the first plain word starts the command and its options are its own.
        let a = args("--url=http://127.0.0.1:1 ls --help").unwrap().unwrap();
        assert_eq!(a.what, What::Words(vec!["ls".into(), "--help".into()]));
        assert_eq!(a.endpoint.url.as_deref(), Some("http://127.0.0.1:1"));
        let a = args("--message x --reply-format sip --detach")
            .unwrap()
            .unwrap();
        assert_eq!(
            (a.what, a.reply, a.detach),
            (What::Message("x".into()), ReplyFormat::Sip, true)
        );
        assert_eq!(args("--help").unwrap(), None);
    }

    #[test]
    fn parses_approvals() {
        let Command::Run(a) = parse(&words("approve k7q2 --pin-stdin --socket /s")).unwrap() else {
            panic!("approve is a run");
        };
        assert_eq!(
            (a.what, a.pin, a.endpoint.socket),
            (What::Approve("K7Q2".into()), Pin::Stdin, Some("/s".into()))
        );
        let Command::Run(a) = parse(&words("deny K7Q2 --json")).unwrap() else {
            panic!("deny is a run");
        };
        assert_eq!((a.what, a.json), (What::Deny("K7Q2".into()), true));
        assert!(matches!(
            parse(&words("pending --json")).unwrap(),
            Command::Pending { json: true, .. }
        ));
        let a = args("--request --reason disk -- df -h").unwrap().unwrap();
        assert_eq!((a.hold, a.reason.as_deref()), (true, Some("disk")));
        for bad in [
            "approve",
            "approve A B",
            "deny K7Q2 --pin-stdin",
            "pending X",
            "pending --pin-stdin",
            "approve K7Q2 --url http://127.0.0.1:1 --socket /s",
            "serve --socket /s",
        ] {
            assert!(parse(&words(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parses_explain_lines() {
        let explain = |text: &str| parse(&words(&format!("explain {text}")));
        assert_eq!(
            explain("--config /c.json -- df -h /").unwrap(),
            Command::Explain {
                config: "/c.json".into(),
                json: false,
                asked: Asked::Argv(vec!["df".into(), "-h".into(), "/".into()]),
            }
        );
        // The command's own options pass through after its first word.
        assert_eq!(
            explain("--json systemctl status --help").unwrap(),
            Command::Explain {
                config: DEFAULT_CONFIG_PATH.into(),
                json: true,
                asked: Asked::Argv(vec!["systemctl".into(), "status".into(), "--help".into()]),
            }
        );
        assert_eq!(
            parse(&["explain".into(), "--command".into(), "df -h".into()]).unwrap(),
            Command::Explain {
                config: DEFAULT_CONFIG_PATH.into(),
                json: false,
                asked: Asked::Command("df -h".into()),
            }
        );
        assert_eq!(explain("--help").unwrap(), Command::Help);
        for bad in [
            "",
            "--json",
            "--bogus -- df",
            "--command x -- df",
            "--config",
        ] {
            assert!(explain(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn run_usage_errors() {
        for bad in [
            "",
            "--pin",
            "--wait soon -- true",
            "--bogus -- true",
            "--message x -- true",
            "--message x --pin 1",
            "--reply-format xml -- true",
            "--json --reply-format sip -- true",
            "--url https://127.0.0.1:9999 -- true",
            "--url http://127.0.0.1:1 --socket /s -- true",
            "--request --pin 1 -- true",
            "--reason why -- true",
        ] {
            assert!(args(bad).is_err(), "{bad:?}");
        }
    }
}
