//! Command line: parse words into a `Command` (no I/O), then carry it out. Exit codes:
//! 0 ok, 1 failure, 2 usage.

use std::ffi::OsString;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::agent::{self, StartError};
use crate::check;
use crate::clock;
use crate::config::{self, Config, StarterPaths};
use crate::enrol;
use crate::files;
use crate::install;
use crate::systemd::Systemd;
use crate::totp;

const USAGE: &str = "\
sudo-agent: run allowlisted root commands over loopback HTTP, each gated by a TOTP code

usage:
  sudo-agent serve  [--config PATH]     run the agent (default config /etc/sudo-agent/config.json)
  sudo-agent demo   [--listen ADDR]     throwaway agent in a temp dir on 127.0.0.1:9999
  sudo-agent init   [--config PATH] [--account NAME] [--issuer NAME] [--force]
                                        write a starter config (if absent) and a new secret
  sudo-agent code   [--config PATH]     print the current code
  sudo-agent verify CODE [--config PATH]
                                        exit 0 if CODE is valid now (consumes nothing)
  sudo-agent check  [--config PATH]     validate config, policy, files and modes
  sudo-agent install [--dry-run] [--root DIR] [--account NAME] [--issuer NAME]
                                        binary, systemd units, config and secret; checked
                                        before the socket is enabled
  sudo-agent uninstall [--dry-run] [--root DIR] [--purge]
                                        remove binary and units (--purge: config, secret,
                                        state and log too)
  sudo-agent run    [--url U] [--pin P | --pin-stdin] [--wait S] [--json] [--detach]
                    [--message 'Agent: CODE CMD'] [--reply-format text|sip] -- CMD ARGS...
                                        client: submit, wait, print the output, exit with the
                                        command's exit code (124 timed out, 125 refused,
                                        126 not allowed, 127 agent unreachable)
  sudo-agent mcp    [--url U]           MCP tool server on stdio for AI assistants
  sudo-agent --help | --version";

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
        account: String,
        issuer: String,
        force: bool,
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
        options: install::Options,
        account: String,
        issuer: String,
    },
    Uninstall {
        options: install::Options,
        purge: bool,
    },
    Run(crate::run::RunArgs),
    Mcp {
        url: String,
    },
}

/// Runs the program; returns the exit code.
pub fn main(args: impl IntoIterator<Item = OsString>) -> i32 {
    let args: Result<Vec<String>, _> = args
        .into_iter()
        .skip(1)
        .map(OsString::into_string)
        .collect();
    let Ok(args) = args else {
        eprintln!("sudo-agent: arguments must be UTF-8");
        return 2;
    };
    match parse(&args) {
        Ok(command) => match execute(command) {
            Ok(code) => code,
            Err(err) => {
                eprintln!("sudo-agent: {err}");
                1
            }
        },
        Err(err) => {
            eprintln!("sudo-agent: {err}\n(run `sudo-agent --help` for usage)");
            2
        }
    }
}

/// Command-line words for `parse` and `run::parse`: `--flag=value` is read as `--flag`
/// with its value waiting for [`Flags::value`], which otherwise takes the next word.
pub(crate) struct Flags<'a> {
    words: std::slice::Iter<'a, String>,
    inline: Option<&'a str>,
}

impl<'a> Flags<'a> {
    pub(crate) fn new(words: &'a [String]) -> Flags<'a> {
        Flags {
            words: words.iter(),
            inline: None,
        }
    }

    /// The next word, or the flag part of `--flag=value`.
    pub(crate) fn next_word(&mut self) -> Option<&'a str> {
        let word = self.words.next()?;
        self.inline = None;
        match word.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                self.inline = Some(value);
                Some(flag)
            }
            _ => Some(word),
        }
    }

    /// The value of the flag just read: its `=value`, else the next word.
    pub(crate) fn value(&mut self, name: &str) -> Result<String, String> {
        self.inline
            .take()
            .or_else(|| self.words.next().map(String::as_str))
            .map(str::to_string)
            .ok_or_else(|| format!("{name} needs a value"))
    }

    /// Every word not read yet, as given.
    pub(crate) fn rest(&mut self) -> impl Iterator<Item = &'a String> + '_ {
        self.words.by_ref()
    }
}

/// Words to a `Command`; no I/O.
pub fn parse(args: &[String]) -> Result<Command, String> {
    let Some((sub, rest)) = args.split_first() else {
        return Err("no command given".into());
    };
    if sub == "run" {
        // `run` passes the command's own words through, so it parses on its own.
        return Ok(crate::run::parse(rest)?.map_or(Command::Help, Command::Run));
    }
    let mut config = PathBuf::from(config::DEFAULT_CONFIG_PATH);
    let mut url = crate::client::DEFAULT_URL.to_string();
    let mut listen: SocketAddr = ([127, 0, 0, 1], 9999).into();
    let mut account = String::from("root");
    let mut issuer = String::from("sudo-agent");
    let mut force = false;
    let mut root = PathBuf::from("/");
    let mut dry_run = false;
    let mut purge = false;
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
            "--account" => account = value("--account")?,
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
            "--url" => url = value("--url")?,
            other if other.starts_with('-') && other.len() > 1 => {
                return Err(format!("unknown option {other}"));
            }
            other => positional.push(other.to_string()),
        }
    }
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
        },
        "code" => Command::Code { config },
        "install" => Command::Install {
            options: install::Options { root, dry_run },
            account,
            issuer,
        },
        "uninstall" => Command::Uninstall {
            options: install::Options { root, dry_run },
            purge,
        },
        "check" => Command::Check { config },
        "mcp" => Command::Mcp { url },
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
    if !positional.is_empty() && !matches!(command, Command::Verify { .. }) {
        return Err(format!("unexpected argument {}", positional[0]));
    }
    let allowed: &[&str] = match command {
        Command::Demo { .. } => &["--listen"],
        Command::Init { .. } => &["--config", "--account", "--issuer", "--force"],
        Command::Install { .. } => &["--root", "--dry-run", "--account", "--issuer"],
        Command::Uninstall { .. } => &["--root", "--dry-run", "--purge"],
        Command::Mcp { .. } => &["--url"],
        _ => &["--config"],
    };
    if let Some(flag) = given.iter().find(|f| !allowed.contains(f)) {
        return Err(format!("{flag} is not an option of `{sub}`"));
    }
    Ok(command)
}

fn execute(command: Command) -> Result<i32, String> {
    match command {
        Command::Help => println!("{USAGE}"),
        Command::Version => println!("sudo-agent {}", env!("CARGO_PKG_VERSION")),
        Command::Serve { config } => {
            // First, while the process has one thread: it edits the environment.
            let systemd = Systemd::from_env().map_err(|e| e.to_string())?;
            let cfg = Config::load(&config).map_err(|e| e.to_string())?;
            agent::serve(cfg, systemd).map_err(|e| e.to_string())?;
        }
        Command::Demo { listen } => return demo(listen),
        Command::Init {
            config,
            account,
            issuer,
            force,
        } => init(&config, &account, &issuer, force)?,
        Command::Code { config } => {
            let (cfg, key) = load_with_secret(&config)?;
            println!("{}", totp::code_at(&key, clock::now_unix(), &cfg.totp));
        }
        Command::Verify { config, code } => {
            let (cfg, key) = load_with_secret(&config)?;
            return Ok(
                match totp::verify(&key, &code, clock::now_unix(), &cfg.totp) {
                    Some(step) => {
                        println!("valid (time step {step})");
                        0
                    }
                    None => {
                        eprintln!("invalid: {code:?} is not a current code for this secret");
                        1
                    }
                },
            );
        }
        Command::Check { config } => return Ok(check(&config)),
        Command::Install {
            options,
            account,
            issuer,
        } => {
            let problems = install::install(&options, &account, &issuer)?;
            return Ok(i32::from(problems > 0));
        }
        Command::Uninstall { options, purge } => install::uninstall(&options, purge)?,
        Command::Run(args) => return Ok(crate::run::main(args)),
        Command::Mcp { url } => return crate::mcp::serve(&url).map(|()| 0),
    }
    Ok(0)
}

fn load_with_secret(config: &Path) -> Result<(Config, Vec<u8>), String> {
    let cfg = Config::load(config).map_err(|e| e.to_string())?;
    let key = agent::load_secret(&cfg.secret_file).map_err(|e| e.to_string())?;
    Ok((cfg, key))
}

/// `visudo -c` for the agent: every problem at once, exit 1 if any.
fn check(config: &Path) -> i32 {
    let report = check::check(config, Path::new("/"));
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    if report.problems.is_empty() {
        println!("{}: ok", config.display());
        0
    } else {
        for problem in &report.problems {
            eprintln!("error: {problem}");
        }
        eprintln!("{} problem(s) found", report.problems.len());
        1
    }
}

/// Writes the starter config (if absent) and a new secret (unless present and not
/// `force`), then shows the URI and QR code to scan.
fn init(config: &Path, account: &str, issuer: &str, force: bool) -> Result<(), String> {
    let dir = config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let paths = StarterPaths {
        secret_file: std::path::absolute(dir.join("secret")).unwrap_or_else(|_| dir.join("secret")),
        ..StarterPaths::system()
    };
    enrol::init(config, Path::new("/"), &paths, account, issuer, force)
}

/// A throwaway agent: temp dir, new secret, demo policy, served until Ctrl-C.
fn demo(listen: SocketAddr) -> Result<i32, String> {
    let id = crate::jobs::new_id().map_err(|e| format!("no randomness: {e}"))?;
    let dir = std::env::temp_dir().join(format!("sudo-agent-demo-{}", &id[..12]));
    files::ensure_private_dir("demo dir", &dir).map_err(|e| e.to_string())?;
    let result = demo_in(&dir, listen);
    let _ = fs::remove_dir_all(&dir);
    println!("removed {}", dir.display());
    result.map(|()| 0)
}

fn demo_in(dir: &Path, listen: SocketAddr) -> Result<(), String> {
    let paths = StarterPaths {
        listen,
        secret_file: dir.join("secret"),
        log_file: dir.join("audit.log"),
        state_dir: dir.join("state"),
        results_dir: dir.join("results"),
    };
    let config = dir.join("config.json");
    enrol::write_config(&config, &config::starter_config(&paths, true))?;
    let key = enrol::new_secret(&paths.secret_file)?;
    let cfg = Config::load(&config).map_err(|e| e.to_string())?;
    enrol::print_enrolment(&key, "demo", "sudo-agent-demo", &cfg);
    let code = totp::code_at(&key, clock::now_unix(), &cfg.totp);
    println!(
        "\nDemo agent in {} (removed on Ctrl-C). Rules: {}\n\
         Try (use the code your phone shows now):\n  \
         curl -s http://{listen}/run -d '{{\"command\": \"uptime\"}}'\n  \
         curl -s http://{listen}/run -d '{{\"pin\": \"{code}\", \"command\": \"echo \\\"hello from\\\" $USER\"}}'\n  \
         curl -s http://{listen}/health\n",
        dir.display(),
        cfg.rules
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    );
    match agent::serve(cfg, Systemd::default()) {
        Ok(()) => Ok(()),
        Err(err @ StartError::Bind { .. }) => Err(format!(
            "{err}; or pick another with --listen 127.0.0.1:PORT"
        )),
        Err(err) => Err(err.to_string()),
    }
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
                config: config::DEFAULT_CONFIG_PATH.into()
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
                config: config::DEFAULT_CONFIG_PATH.into(),
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
                options: install::Options {
                    root: "/mnt/sd".into(),
                    dry_run: true
                },
                account: "root".into(),
                issuer: "sudo-agent".into(),
            }
        );
        assert_eq!(
            parse(&words("uninstall --purge")).unwrap(),
            Command::Uninstall {
                options: install::Options {
                    root: "/".into(),
                    dry_run: false
                },
                purge: true,
            }
        );
    }
}
