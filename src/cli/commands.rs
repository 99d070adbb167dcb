//! Carrying out a parsed `Command`: each subcommand's I/O, and the one place that turns
//! errors into exit codes (0 ok, 1 failure, 2 usage).

use std::ffi::OsString;
use std::fs;
use std::net::SocketAddr;
use std::path::Path;

use super::explain::explain;
use super::parse::{Command, parse};
use crate::auth::{SecretKey, load_secret, new_secret, totp};
use crate::clients::{mcp, pending, run};
use crate::config::Config;
use crate::deploy::{self, Enrolment, Label, StarterPaths};
use crate::jobs::new_id;
use crate::serve::{self, StartError};
use crate::sys::files::{self, parent_or_dot};
use crate::sys::systemd::Systemd;
use crate::sys::{self, clock};

const USAGE: &str = "\
sudo-agent: run allowlisted root commands over loopback HTTP, each gated by a TOTP code

usage:
  sudo-agent serve  [--config PATH]     run the agent (default config /etc/sudo-agent/config.json)
  sudo-agent demo   [--listen ADDR]     throwaway agent in a temp dir on 127.0.0.1:9999
  sudo-agent init   [--config PATH] [--account NAME] [--issuer NAME] [--force]
                    [--uri-file FILE | --config-only]
                                        write a starter config (if absent) and a new secret;
                                        the phone entry is ISSUER:ACCOUNT (default
                                        sudo-agent:HOSTNAME). --uri-file: show nothing, write
                                        the otpauth:// URI to FILE (0600); --config-only: no
                                        secret
  sudo-agent qr     FILE...             the QR code of a URI file (fetched by Ansible)
  sudo-agent code   [--config PATH]     print the current code
  sudo-agent verify CODE [--config PATH]
                                        exit 0 if CODE is valid now (consumes nothing)
  sudo-agent check  [--config PATH]     validate config, policy, files and modes
  sudo-agent explain [--config PATH] [--json] -- CMD ARGS... | --command 'CMD ARGS'
                                        which rule matches and why, and how it would run;
                                        runs nothing (exit 0 allowed, 1 refused)
  sudo-agent install [--dry-run] [--root DIR] [--account NAME] [--issuer NAME]
                                        binary, systemd units, config and secret; checked
                                        before the socket is enabled
  sudo-agent uninstall [--dry-run] [--root DIR] [--purge]
                                        remove binary and units (--purge: config, secret,
                                        state and log too)
  sudo-agent run    [AGENT] [--pin P | --pin-stdin | --request [--reason TEXT]] [--wait S]
                    [--json] [--detach] [--message 'Agent: CODE CMD']
                    [--reply-format text|sip] -- CMD ARGS...
                                        client: submit, wait, print the output, exit with the
                                        command's exit code (124 timed out or approval
                                        expired, 125 refused or denied, 126 not allowed,
                                        127 agent unreachable). --request: no code; the agent
                                        holds it, prints its approval code, waits for a human
  sudo-agent pending [AGENT] [--json]  the requests awaiting approval
  sudo-agent approve APPROVAL [AGENT] [--pin-stdin] [--wait S] [--json]
                                        show the held command, ask for the code (echo off),
                                        run it; exit codes as run
  sudo-agent deny   APPROVAL [AGENT]    refuse a held request
  sudo-agent mcp    [AGENT]             MCP tool server on stdio for AI assistants
    AGENT: --url http://127.0.0.1:9999 | --socket PATH | --config PATH (its
    unix_socket.path when that socket exists; default /etc/sudo-agent/config.json)
  sudo-agent --help | --version";

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

fn execute(command: Command) -> Result<i32, String> {
    match command {
        Command::Help => println!("{USAGE}"),
        Command::Version => println!("sudo-agent {}", env!("CARGO_PKG_VERSION")),
        Command::Serve { config } => {
            // First, while the process has one thread: it edits the environment.
            let systemd = Systemd::from_env().map_err(|e| e.to_string())?;
            let cfg = Config::load(&config).map_err(|e| e.to_string())?;
            serve::serve(cfg, systemd).map_err(|e| e.to_string())?;
        }
        Command::Demo { listen } => return demo(listen),
        Command::Init {
            config,
            account,
            issuer,
            force,
            enrolment,
        } => init(
            &config,
            &label(account, issuer, Path::new("/")),
            force,
            &enrolment,
        )?,
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
            let label = label(account, issuer, &options.root);
            let problems = deploy::install(&options, &label)?;
            return Ok(i32::from(problems > 0));
        }
        Command::Uninstall { options, purge } => deploy::uninstall(&options, purge)?,
        Command::Run(args) => return Ok(run::main(args)),
        Command::Pending { endpoint, json } => return Ok(pending::main(&endpoint, json)),
        Command::Mcp { endpoint } => return mcp::serve(&endpoint).map(|()| 0),
        Command::Qr { files } => {
            for file in files {
                deploy::show_uri_file(&file)?;
            }
        }
        Command::Explain {
            config,
            json,
            asked,
        } => return explain(&config, &asked, json),
    }
    Ok(0)
}

fn load_with_secret(config: &Path) -> Result<(Config, SecretKey), String> {
    let cfg = Config::load(config).map_err(|e| e.to_string())?;
    let key = load_secret(&cfg.secret_file).map_err(|e| e.to_string())?;
    Ok((cfg, key))
}

/// `visudo -c` for the agent: every problem at once, exit 1 if any.
fn check(config: &Path) -> i32 {
    let report = deploy::check(config, Path::new("/"));
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    if let Some(containment) = &report.containment {
        println!("containment: {containment}");
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

/// The phone entry's name; the account is the box's host name unless given, so the
/// entries of many boxes read `sudo-agent:jetson`, `sudo-agent:pi4`, ... The box is this
/// machine, or for `install --root DIR` the image's `etc/hostname` ("root" if it has none).
fn label(account: Option<String>, issuer: String, root: &Path) -> Label {
    let host = || match root == Path::new("/") {
        true => sys::host_name(),
        false => fs::read_to_string(root.join("etc/hostname"))
            .ok()
            .and_then(|text| text.split_whitespace().next().map(String::from)),
    };
    Label {
        account: account.or_else(host).unwrap_or_else(|| "root".into()),
        issuer,
    }
}

/// Writes the starter config (if absent) and a new secret (unless present and not
/// `force`), then shows it as `enrolment` says; a new secret reaches the agent's units.
fn init(config: &Path, label: &Label, force: bool, enrolment: &Enrolment) -> Result<(), String> {
    let dir = parent_or_dot(config);
    let paths = StarterPaths {
        secret_file: std::path::absolute(dir.join("secret")).unwrap_or_else(|_| dir.join("secret")),
        ..StarterPaths::system()
    };
    if deploy::init(config, Path::new("/"), &paths, label, force, enrolment)? {
        deploy::restart_for_new_secret();
    }
    Ok(())
}

/// A throwaway agent: temp dir, new secret, demo policy, served until Ctrl-C.
fn demo(listen: SocketAddr) -> Result<i32, String> {
    let id = new_id().map_err(|e| format!("no randomness: {e}"))?;
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
    deploy::write_config(&config, &deploy::starter_config(&paths, true))?;
    let key = new_secret(&paths.secret_file)?;
    let cfg = Config::load(&config).map_err(|e| e.to_string())?;
    let label = Label {
        account: "demo".into(),
        issuer: "sudo-agent-demo".into(),
    };
    deploy::print_enrolment(&key, &label, &cfg);
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
    match serve::serve(cfg, Systemd::default()) {
        Ok(()) => Ok(()),
        Err(err @ StartError::Bind { .. }) => Err(format!(
            "{err}; or pick another with --listen 127.0.0.1:PORT"
        )),
        Err(err) => Err(err.to_string()),
    }
}
