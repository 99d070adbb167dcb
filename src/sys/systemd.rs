//! systemd integration, all of it optional: socket activation (`LISTEN_PID`,
//! `LISTEN_FDS`, fd 3), readiness and watchdog pings over `NOTIFY_SOCKET` (the datagram
//! protocol of `sd_notify(3)`), and exit when idle. Without systemd's variables the
//! agent binds its own socket, tells no one, and never exits on its own.

use std::fmt;
use std::io;
use std::net::TcpListener;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram, UnixListener};
use std::time::{Duration, Instant};

use super::cerr::cerr;

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// The variables systemd sets for a service that are read here. All of them are
/// removed from the environment once read; jobs get a cleared environment anyway.
pub const VARS: [&str; 6] = [
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
];

/// systemd's variables, decoded; no I/O.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Vars {
    /// `LISTEN_PID` names this process and `LISTEN_FDS` is 1 or 2: fd 3 (and 4) are
    /// our sockets, the TCP one and perhaps the Unix one (`sudo-agent-unix.socket`).
    pub socket: bool,
    pub sockets: u8,
    /// Where to send notifications: a path, or `@name` for an abstract socket.
    pub notify_socket: Option<String>,
    /// How often to ping: half of `WATCHDOG_USEC`, when the watchdog is meant for us.
    pub watchdog_ping: Option<Duration>,
}

/// A variable systemd (or whoever imitates it) set wrongly, or a socket that cannot
/// be used. Start-up stops: a half-activated agent would confuse systemd more.
#[derive(Debug)]
pub enum SystemdError {
    BadVar {
        name: &'static str,
        value: String,
        why: &'static str,
    },
    Socket(io::Error),
    Notify {
        target: String,
        err: io::Error,
    },
}

impl fmt::Display for SystemdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadVar { name, value, why } => write!(f, "{name}={value:?} {why}"),
            Self::Socket(err) => write!(f, "socket passed by systemd: {err}"),
            Self::Notify { target, err } => write!(f, "NOTIFY_SOCKET={target:?}: {err}"),
        }
    }
}

impl std::error::Error for SystemdError {}

fn number(name: &'static str, value: &str) -> Result<u64, SystemdError> {
    value.parse().map_err(|_| SystemdError::BadVar {
        name,
        value: value.into(),
        why: "is not a number",
    })
}

/// Decodes the variables as `sd_listen_fds(3)` and `sd_watchdog_enabled(3)` do: the
/// socket and the watchdog count only when their `*_PID` names this process (`pid`),
/// so a child that inherited them does not act on them.
pub fn parse_vars(get: impl Fn(&str) -> Option<String>, pid: u32) -> Result<Vars, SystemdError> {
    let ours = |name: &'static str| -> Result<bool, SystemdError> {
        match get(name) {
            None => Ok(true),
            Some(value) => Ok(number(name, &value)? == u64::from(pid)),
        }
    };
    let mut vars = Vars::default();
    if get("LISTEN_PID").is_some() && ours("LISTEN_PID")? {
        let fds = get("LISTEN_FDS").unwrap_or_default();
        match number("LISTEN_FDS", &fds)? {
            0 => {}
            n @ (1 | 2) => {
                vars.socket = true;
                vars.sockets = n as u8;
            }
            _ => {
                return Err(SystemdError::BadVar {
                    name: "LISTEN_FDS",
                    value: fds,
                    why: "passes more than two sockets; give sudo-agent.socket exactly one \
                          ListenStream= (and sudo-agent-unix.socket at most one)",
                });
            }
        }
    }
    if let Some(target) = get("NOTIFY_SOCKET").filter(|t| !t.is_empty()) {
        if !target.starts_with('/') && !target.starts_with('@') {
            return Err(SystemdError::BadVar {
                name: "NOTIFY_SOCKET",
                value: target,
                why: "is neither an absolute path nor an @abstract name",
            });
        }
        vars.notify_socket = Some(target);
    }
    if let Some(usec) = get("WATCHDOG_USEC")
        && ours("WATCHDOG_PID")?
    {
        match number("WATCHDOG_USEC", &usec)? {
            0 => {
                return Err(SystemdError::BadVar {
                    name: "WATCHDOG_USEC",
                    value: usec,
                    why: "is zero; set WatchdogSec= to a duration or remove it",
                });
            }
            // Pinging at half the timeout is what sd_watchdog_enabled(3) recommends.
            n => vars.watchdog_ping = Some(Duration::from_micros(n) / 2),
        }
    }
    Ok(vars)
}

/// A datagram socket to systemd's notification socket.
#[derive(Debug)]
pub struct SdNotify {
    socket: UnixDatagram,
    addr: UnixAddr,
}

impl SdNotify {
    /// `target` is a path, or `@name` for a Linux abstract socket.
    pub fn connect(target: &str) -> io::Result<SdNotify> {
        let addr = match target.strip_prefix('@') {
            Some(name) => UnixAddr::from_abstract_name(name.as_bytes())?,
            None => UnixAddr::from_pathname(target)?,
        };
        let socket = UnixDatagram::unbound()?;
        // A full receive queue must never stall the event loop: drop the ping instead.
        socket.set_nonblocking(true)?;
        Ok(SdNotify { socket, addr })
    }

    /// Sends one notification, e.g. `READY=1` or `WATCHDOG=1` (lines joined by `\n`).
    pub fn send(&self, state: &str) -> io::Result<()> {
        self.socket.send_to_addr(state.as_bytes(), &self.addr)?;
        Ok(())
    }
}

/// What systemd handed this process.
#[derive(Debug, Default)]
pub struct Systemd {
    pub listener: Option<TcpListener>,
    /// `sudo-agent-unix.socket`'s, when it is enabled.
    pub unix_listener: Option<UnixListener>,
    pub notifier: Option<SdNotify>,
    pub watchdog_ping: Option<Duration>,
}

impl Systemd {
    /// Reads systemd's variables, removes them from the environment and takes fd 3
    /// when it is ours. Call first thing, before any thread starts.
    pub fn from_env() -> Result<Systemd, SystemdError> {
        let vars = parse_vars(
            |name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()),
            std::process::id(),
        );
        remove_env_at_startup(&VARS);
        let vars = vars?;
        let (listener, unix_listener) = match vars.socket {
            true => {
                let (tcp, unix) = take_listen_fds(vars.sockets).map_err(SystemdError::Socket)?;
                (Some(TcpListener::from(tcp)), unix.map(UnixListener::from))
            }
            false => (None, None),
        };
        let notifier = match vars.notify_socket {
            Some(target) => Some(
                SdNotify::connect(&target).map_err(|err| SystemdError::Notify { target, err })?,
            ),
            None => None,
        };
        // Without a notification socket there is no one to ping.
        let watchdog_ping = vars.watchdog_ping.filter(|_| notifier.is_some());
        Ok(Systemd {
            listener,
            unix_listener,
            notifier,
            watchdog_ping,
        })
    }
}

/// The agent's side of its life under systemd, driven by the event loop's `tick`.
#[derive(Debug)]
pub struct Lifecycle {
    notifier: Option<SdNotify>,
    watchdog_ping: Option<Duration>,
    next_ping: Option<Instant>,
    idle_exit: Option<Duration>,
    idle_since: Option<Instant>,
    /// A failing notification is logged once, not every ping.
    send_failed: bool,
}

impl Lifecycle {
    /// `idle_exit` only makes sense when systemd holds the socket and starts the agent
    /// again on the next connection; the caller decides that.
    pub fn new(
        notifier: Option<SdNotify>,
        watchdog_ping: Option<Duration>,
        idle_exit: Option<Duration>,
    ) -> Lifecycle {
        Lifecycle {
            notifier,
            watchdog_ping,
            next_ping: None,
            idle_exit,
            idle_since: None,
            send_failed: false,
        }
    }

    /// Tells systemd `state`, if it listens. Never fails: systemd's bookkeeping must not
    /// take the agent down.
    pub fn notify(&mut self, state: &str) {
        let Some(notifier) = &self.notifier else {
            return;
        };
        if let Err(err) = notifier.send(state)
            && !self.send_failed
        {
            self.send_failed = true;
            log::warn!(
                "cannot notify systemd ({}): {err}",
                state.replace('\n', " ")
            );
        }
    }

    /// Once a loop turn (at least once a second): pings the watchdog when due, and says
    /// whether the agent has been `idle` (no job, no connection) long enough to exit.
    pub fn tick(&mut self, now: Instant, idle: bool) -> bool {
        if let Some(every) = self.watchdog_ping
            && self.next_ping.is_none_or(|at| now >= at)
        {
            self.notify("WATCHDOG=1");
            self.next_ping = Some(now + every);
        }
        let Some(limit) = self.idle_exit else {
            return false;
        };
        if !idle {
            self.idle_since = None;
            return false;
        }
        let since = *self.idle_since.get_or_insert(now);
        if now.saturating_duration_since(since) < limit {
            return false;
        }
        log::info!(
            "IDLE for {} s with no job and no connection; exiting (systemd starts the agent again on the next connection)",
            limit.as_secs()
        );
        self.notify("STOPPING=1");
        true
    }
}

/// The first descriptor systemd passes with socket activation (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// Set once the fds have been taken, so two owners of one can never exist.
static LISTEN_FD_TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn socket_option(fd: RawFd, option: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes and `len` holds value's size; a bad
    // fd or option yields an error code, not UB.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    cerr(rc)?;
    Ok(value)
}

/// Takes the `count` (1 or 2) sockets systemd passed from fd 3 on: exactly one
/// listening TCP socket, and with two, one listening Unix stream socket, in either
/// order (systemd does not promise one). Each is marked close-on-exec: systemd hands
/// them over inheritable, and no job may inherit the agent's listening sockets.
pub fn take_listen_fds(count: u8) -> io::Result<(OwnedFd, Option<OwnedFd>)> {
    if LISTEN_FD_TAKEN.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the sockets from systemd were already taken",
        ));
    }
    let (mut tcp, mut unix) = (None, None);
    for fd in LISTEN_FDS_START..LISTEN_FDS_START + RawFd::from(count) {
        // SOCK_STREAM + listening + its family is exactly "a TCP (or Unix) listener"; a
        // closed fd fails the first call with EBADF.
        let listening = socket_option(fd, libc::SO_TYPE)? == libc::SOCK_STREAM
            && socket_option(fd, libc::SO_ACCEPTCONN)? == 1;
        let slot = match socket_option(fd, libc::SO_DOMAIN)? {
            libc::AF_INET | libc::AF_INET6 if listening && tcp.is_none() => &mut tcp,
            libc::AF_UNIX if listening && count == 2 && unix.is_none() => &mut unix,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "fd {fd} from systemd is not a listening socket expected; \
                         sudo-agent.socket needs ListenStream=127.0.0.1:9999, \
                         sudo-agent-unix.socket ListenStream=/run/sudo-agent/agent.sock"
                    ),
                ));
            }
        };
        // SAFETY: fcntl(F_SETFD) takes an integer flag; `fd` is open (getsockopt
        // succeeded).
        cerr(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) })?;
        // SAFETY: `fd` is open, was passed to this process by systemd (the caller checked
        // LISTEN_PID and LISTEN_FDS), nothing else in the process refers to it, and the
        // flag above makes this the only time it is wrapped.
        *slot = Some(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    // Each fd filled a slot of its own: one TCP listener, and with two fds, the other.
    tcp.map(|tcp| (tcp, unix))
        .ok_or_else(|| io::Error::other("systemd passed no listening TCP socket"))
}

/// Removes `names` from this process's environment, as `sd_notify(3)` and
/// `sd_listen_fds(3)` do with `unset_environment`, so nothing started later sees them.
///
/// For start-up only: `serve` calls it (through `systemd::Systemd::from_env`) before
/// the agent starts any thread.
pub(crate) fn remove_env_at_startup(names: &[&str]) {
    for name in names {
        // SAFETY: libc's getenv/setenv are not thread-safe, hence the unsafe; this runs
        // at the start of `serve`, before any job, audit or loop thread exists, so
        // nothing reads the environment at the same time.
        unsafe { std::env::remove_var(name) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)], pid: u32) -> Result<Vars, SystemdError> {
        parse_vars(
            |name| {
                list.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            },
            pid,
        )
    }

    #[test]
    fn socket_only_when_listen_pid_is_ours() {
        assert_eq!(vars(&[], 7).unwrap(), Vars::default());
        let ours = [("LISTEN_PID", "7"), ("LISTEN_FDS", "1")];
        assert!(vars(&ours, 7).unwrap().socket);
        assert!(!vars(&ours, 8).unwrap().socket);
        // LISTEN_FDS alone is inherited noise, not a socket for us.
        assert!(!vars(&[("LISTEN_FDS", "1")], 7).unwrap().socket);
        assert!(
            !vars(&[("LISTEN_PID", "7"), ("LISTEN_FDS", "0")], 7)
                .unwrap()
                .socket
        );
        let two = vars(&[("LISTEN_PID", "7"), ("LISTEN_FDS", "2")], 7).unwrap();
        assert!(two.socket && two.sockets == 2, "TCP and the Unix socket");
        assert!(vars(&[("LISTEN_PID", "7"), ("LISTEN_FDS", "3")], 7).is_err());
        assert!(vars(&[("LISTEN_PID", "x"), ("LISTEN_FDS", "1")], 7).is_err());
        assert!(vars(&[("LISTEN_PID", "7"), ("LISTEN_FDS", "one")], 7).is_err());
    }

    #[test]
    fn watchdog_pings_at_half_the_timeout_when_meant_for_us() {
        let usec = [("WATCHDOG_USEC", "30000000")];
        assert_eq!(
            vars(&usec, 7).unwrap().watchdog_ping,
            Some(Duration::from_secs(15))
        );
        let theirs = [("WATCHDOG_USEC", "30000000"), ("WATCHDOG_PID", "8")];
        assert_eq!(vars(&theirs, 7).unwrap().watchdog_ping, None);
        let ours = [("WATCHDOG_USEC", "2000000"), ("WATCHDOG_PID", "7")];
        assert_eq!(
            vars(&ours, 7).unwrap().watchdog_ping,
            Some(Duration::from_secs(1))
        );
        assert!(vars(&[("WATCHDOG_USEC", "0")], 7).is_err());
        assert!(vars(&[("WATCHDOG_USEC", "soon")], 7).is_err());
    }

    #[test]
    fn notify_socket_must_be_absolute_or_abstract() {
        let v = vars(&[("NOTIFY_SOCKET", "/run/systemd/notify")], 7).unwrap();
        assert_eq!(v.notify_socket.as_deref(), Some("/run/systemd/notify"));
        assert!(vars(&[("NOTIFY_SOCKET", "@abstract")], 7).is_ok());
        assert_eq!(
            vars(&[("NOTIFY_SOCKET", "")], 7).unwrap().notify_socket,
            None
        );
        assert!(vars(&[("NOTIFY_SOCKET", "relative/sock")], 7).is_err());
    }

    fn received(socket: &UnixDatagram) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(n) = socket.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    #[test]
    fn notifies_an_abstract_socket_and_pings_when_due() {
        let name = format!("sudo-agent-test-{}", std::process::id());
        let server =
            UnixDatagram::bind_addr(&UnixAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        server.set_nonblocking(true).unwrap();
        let notifier = SdNotify::connect(&format!("@{name}")).unwrap();
        let mut life = Lifecycle::new(Some(notifier), Some(Duration::from_secs(10)), None);
        life.notify("READY=1");
        let t0 = Instant::now();
        assert!(!life.tick(t0, true));
        assert!(!life.tick(t0 + Duration::from_secs(9), true));
        assert!(!life.tick(t0 + Duration::from_secs(10), true));
        assert_eq!(received(&server), ["READY=1", "WATCHDOG=1", "WATCHDOG=1"]);
    }

    #[test]
    fn exits_only_after_being_idle_for_the_whole_limit() {
        let mut life = Lifecycle::new(None, None, Some(Duration::from_secs(5)));
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        assert!(!life.tick(at(0), true));
        assert!(!life.tick(at(4), true));
        // A connection or a job resets the clock.
        assert!(!life.tick(at(5), false));
        assert!(!life.tick(at(6), true));
        assert!(!life.tick(at(10), true));
        assert!(life.tick(at(11), true));

        let mut never = Lifecycle::new(None, None, None);
        assert!(!never.tick(at(1_000_000), true));
    }

    #[test]
    fn a_missing_notify_socket_is_not_fatal() {
        let notifier = SdNotify::connect("/nonexistent/notify").unwrap();
        let mut life = Lifecycle::new(Some(notifier), Some(Duration::from_secs(1)), None);
        life.notify("READY=1");
        assert!(!life.tick(Instant::now(), true));
    }
}
