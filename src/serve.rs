//! Start-up of the serving agent: every file it trusts is checked before the socket
//! opens, and each failure is one error that says what to fix.

use std::fmt;
use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::audit::{self, AuditError};
use crate::auth::{Auth, SecretError, StateError, StateStore, load_secret};
use crate::config::{Config, UnixSocketConfig};
use crate::http::{Gate, Handler, Limits, Reply, Request, Routes, Server, Users, WaitKind, Woken};
use crate::jobs::{
    Jobs, Journal, NotifyCommand, RemoveTree, ResultsDir, init_containment, own_home,
};
use crate::sys::files::FileError;
use crate::sys::systemd::{Lifecycle, Systemd};
use crate::sys::{self, LockError, clock, is_loopback};

/// How long the loop's audit lines may wait for the writer while jobs run: a job's
/// thread wakes it once the job is answered, and this bounds the wait when none does.
const AUDIT_WAIT: Duration = Duration::from_millis(5);

/// Why the agent (or a command that needs its secret) could not start.
#[derive(Debug)]
pub enum StartError {
    Secret(SecretError),
    Audit(AuditError),
    State(StateError),
    Results(FileError),
    Journal(FileError),
    /// Another agent holds the state directory.
    Locked(LockError),
    Bind {
        addr: String,
        err: std::io::Error,
    },
    /// The Unix socket could not be made, given its mode or its group.
    Unix {
        path: PathBuf,
        err: std::io::Error,
    },
    /// systemd passed a socket on an address the config does not allow.
    RemoteSocket(SocketAddr),
    Io {
        what: &'static str,
        err: std::io::Error,
    },
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Secret(err) => write!(f, "{err}"),
            Self::Results(err) | Self::Journal(err) => write!(f, "{err}"),
            Self::Locked(err) => write!(f, "{err}"),
            Self::Audit(err) => write!(f, "{err}"),
            Self::State(err) => write!(f, "{err}"),
            Self::Bind { addr, err } => write!(
                f,
                "cannot listen on {addr}: {err}; is another agent running? (ss -ltnp | grep {addr}) or set \"listen\""
            ),
            Self::Unix { path, err } => write!(
                f,
                "cannot listen on the Unix socket {}: {err}; check that its directory exists \
                 and is root's, or change unix_socket.path",
                path.display()
            ),
            Self::RemoteSocket(addr) => write!(
                f,
                "systemd passed a socket on {addr}, which is not a loopback address; set ListenStream=127.0.0.1:9999 in sudo-agent.socket, or \"allow_remote\": true"
            ),
            Self::Io { what, err } => write!(f, "{what}: {err}"),
        }
    }
}

impl std::error::Error for StartError {}

/// Runs the agent until SIGTERM/SIGINT (or, socket-activated with `idle_exit_s`, until
/// it has been idle that long). It serves the socket systemd handed over, else binds
/// `cfg.listen`, and tells systemd when it is ready and that it is alive.
pub fn serve(cfg: Config, systemd: Systemd) -> Result<(), StartError> {
    audit::init(&cfg.log_file, true).map_err(StartError::Audit)?;
    // Audit lines are written by a thread: whatever ends serving, they reach the file.
    let result = serve_logged(cfg, systemd);
    audit::flush();
    result
}

fn serve_logged(cfg: Config, systemd: Systemd) -> Result<(), StartError> {
    // Before anything reads or rewrites the state: auth.json, the journal, leftover jobs.
    let _lock = sys::lock_state_dir(&cfg.state_dir).map_err(StartError::Locked)?;
    let key = load_secret(&cfg.secret_file).map_err(StartError::Secret)?;
    let (store, mut state) = StateStore::open(&cfg.state_dir).map_err(StartError::State)?;
    let results = ResultsDir::open(&cfg.results).map_err(StartError::Results)?;
    let cleanup = results.cleanup(clock::now_unix());
    if !cleanup.foreign.is_empty() {
        log::warn!(
            "removed {} result file(s) in {} that did not hold their own job's record: \
             written just before a power cut (or the disk went away), they held an older \
             job's record or nothing; GET /job/<id> serves each record from the journal",
            cleanup.foreign.len(),
            results.dir().display()
        );
    }
    for error in &cleanup.errors {
        log::warn!("results cleanup: {error}");
    }
    let activated = systemd.listener.is_some();
    let listener = match systemd.listener {
        Some(listener) => listener,
        None => TcpListener::bind(cfg.listen).map_err(|err| StartError::Bind {
            addr: cfg.listen.to_string(),
            err,
        })?,
    };
    let addr = listener.local_addr().map_err(|err| StartError::Io {
        what: "listening socket",
        err,
    })?;
    // The socket unit, not the config, chose this address: hold it to the same rule.
    if activated && !cfg.allow_remote && !is_loopback(addr.ip()) {
        return Err(StartError::RemoteSocket(addr));
    }
    let idle_exit = cfg.idle_exit_s.map(Duration::from_secs);
    if idle_exit.is_some() && !activated {
        log::warn!(
            "idle_exit_s is ignored without socket activation: nothing would start the agent again"
        );
    }
    let mut life = Lifecycle::new(
        systemd.notifier,
        systemd.watchdog_ping,
        idle_exit.filter(|_| activated),
    );
    let limits = Limits {
        gate: Gate::new(&cfg.allowed_hosts, &cfg.allowed_origins),
        send_queue_bytes: cfg.send_queue_bytes,
    };
    // systemd's (sudo-agent-unix.socket sets its mode and group), else the config's.
    let unix = match (systemd.unix_listener, &cfg.unix_socket) {
        (Some(listener), _) => Some(listener),
        (None, Some(socket)) => Some(bind_unix(socket)?),
        (None, None) => None,
    };
    let server = Server::new(listener, unix, limits).map_err(|err| StartError::Io {
        what: "event loop",
        err,
    })?;
    let signals = sys::stop_signal_pipe()
        .map(mio::net::UnixStream::from_std)
        .map_err(|err| StartError::Io {
            what: "signal handlers",
            err,
        })?;
    // Before any job thread: the cgroup tree (which may move the agent into a leaf).
    let containment = init_containment(&cfg.rules, &cfg.jobs);
    let _remove_tree = RemoveTree;
    log::info!("CONTAINMENT: {}", containment.describe());
    for warning in containment.warnings(&cfg.rules, &cfg.jobs) {
        log::warn!("{warning}");
    }
    let mut journal = Journal::open(&cfg.state_dir, cfg.jobs.history, server.waker())
        .map_err(StartError::Journal)?;
    // A code used just before a crash may be in the journal only (it is synced there,
    // with what it authorised, before `auth.json` is rewritten): the larger step wins.
    if journal.1.last_step > state.last_step {
        state.last_step = journal.1.last_step;
        match store.save(&state) {
            // The journal, read at every start, still carries the step.
            Err(StateError::Write(err)) if err.disk_refuses_writes() => log::error!("{err}"),
            saved => saved.map_err(StartError::State)?,
        }
    }
    // Their records no longer name a file that is not theirs, now and after a restart
    // (the file is gone then, and nothing else would tell).
    let mut amended = false;
    for record in (journal.1.records.iter_mut()).filter(|r| cleanup.foreign.contains(&r.id)) {
        record.result_file = None;
        record.result_error = Some(
            "result file removed at start-up: a power cut left it \
            holding another job's record or nothing"
                .into(),
        );
        journal.0.ended_now(record);
        amended = true;
    }
    if amended {
        journal.0.sync();
    }
    let notify = cfg
        .notify
        .clone()
        .map(|argv| NotifyCommand::new(argv, own_home()));
    let jobs = Jobs::new(cfg.jobs, Arc::new(results), server.waker(), journal, notify);
    let auth = Auth::new(key, cfg.totp, cfg.throttle, store, state);
    // Callers' names: the user database read now, and again off the loop when it changes.
    let users = Users::watch();
    let (rules, results_dir) = (cfg.rules.len(), cfg.results.dir.clone());
    // Before READY: it reads the user database (the agent's home), which the loop never does.
    let routes = Routes::new(cfg, auth, jobs, users);
    if let Some(why) = audit::clock_unsynced() {
        log::warn!("{why}");
    }
    log::info!(
        "LISTENING on {addr} (sudo-agent {}, {rules} rules, results in {}{})",
        env!("CARGO_PKG_VERSION"),
        results_dir.display(),
        if activated {
            ", socket from systemd"
        } else {
            ""
        }
    );
    life.notify(&format!("READY=1\nSTATUS=listening on {addr}"));
    let mut agent = Supervised { routes, life };
    // This thread is the event loop from here on (see `Supervised::tick`).
    audit::defer_wakes();
    server
        .run(&mut agent, Some(signals))
        .map_err(|err| StartError::Io {
            what: "event loop",
            err,
        })?;
    log::info!("STOPPED");
    Ok(())
}

/// Binds the Unix socket: a socket a previous agent left is replaced (anything else at
/// the path is refused), then its mode and group are set before it is served. The
/// agent holds the state directory lock, so no other agent is using it.
fn bind_unix(socket: &UnixSocketConfig) -> Result<UnixListener, StartError> {
    let path = &socket.path;
    let failed = |err| StartError::Unix {
        path: path.clone(),
        err,
    };
    // Its directory must be one no other user can change: whoever could would swap the
    // socket for their own under the clients' feet. Made (root's, 0755) when missing.
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(failed)?;
        sys::check_chain(dir).map_err(|err| failed(std::io::Error::other(err.to_string())))?;
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => fs::remove_file(path).map_err(failed)?,
        Ok(_) => {
            return Err(failed(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "something other than a socket is there",
            )));
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(failed)?;
    std::os::unix::fs::chown(path, None, socket.group).map_err(failed)?;
    fs::set_permissions(path, fs::Permissions::from_mode(socket.mode)).map_err(failed)?;
    log::info!(
        "UNIX SOCKET {} (mode {:04o}) serves the same API",
        path.display(),
        socket.mode
    );
    Ok(listener)
}

/// The agent as the loop drives it, plus its life under systemd: watchdog pings and idle
/// exit ride on `tick`, `STOPPING=1` on shutdown.
struct Supervised {
    routes: Routes,
    life: Lifecycle,
}

impl Handler for Supervised {
    fn handle(&mut self, request: Request, now: Instant) -> Reply {
        self.routes.handle(request, now)
    }

    fn on_wake(&mut self) -> Vec<String> {
        self.routes.on_wake()
    }

    fn answer_wait(&mut self, on: &str, kind: WaitKind, why: Woken, until: Instant) -> Reply {
        self.routes.answer_wait(on, kind, why, until)
    }

    fn tick(&mut self, now: Instant, open_connections: usize) -> bool {
        // Right before the loop waits for events: this turn's answers are out, but a
        // running job's client still waits for its own (its thread wakes the writer
        // once it is answered), so lines wait for it a batch's time at most.
        let idle = open_connections == 0 && self.routes.idle();
        audit::wake_deferred(if self.routes.running() == 0 {
            Duration::ZERO
        } else {
            AUDIT_WAIT
        });
        self.routes.tick(now, open_connections) || self.life.tick(now, idle)
    }

    fn shutdown(&mut self) {
        self.life.notify("STOPPING=1");
        self.routes.shutdown();
    }
}
