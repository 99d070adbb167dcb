//! The audit log: one line per event, to `log_file` and (under systemd) stderr.
//!
//! Line shapes of the Python agent are kept so existing greps and dashboards work:
//! `QUEUED [id]: cmd`, `EXECUTING [id]: cmd`, `RESULT [id] (rc=N): output`,
//! `INVALID PIN attempt for command: cmd`. Everything that came from outside passes
//! through [`one_line`], so one event is one line and nobody can forge a line.
//! No function here takes a code or the secret, so neither can be logged by mistake.
//!
//! A line reads `2026-11-22T00:44:33.120Z [INFO] QUEUED [id]: cmd`: RFC 3339 UTC time
//! with milliseconds, level, message. Security refusals are logged at `WARN`.
//!
//! Nobody waits for the log's disk: a line is formatted where the event happens (its
//! time is the event's), put in a bounded queue, and written by the `audit` thread, a
//! batch at a time with one `write` per destination. A full or slow log disk fills the
//! queue, never stalls a request; lines that find it full are counted, and the count is
//! written as a line of its own once there is room (and served as
//! `sudo_agent_audit_lines_dropped_total`), so none is lost silently.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::sys::clock;
use crate::sys::files::{self, FileError};

/// Commands are cut to this many characters in a line.
pub const MAX_COMMAND_CHARS: usize = 500;
/// Output in `RESULT` lines: one line of at most this many characters.
pub const MAX_OUTPUT_CHARS: usize = 200;
/// Anything else from outside (reasons, peers, ids, rule names).
const MAX_FIELD_CHARS: usize = 200;
/// Bytes reserved for a line: most fit, so its buffer is not regrown.
const LINE_GUESS: usize = 192;
/// Mode of a log file the agent creates: the group (e.g. `adm`) may read, nobody else.
pub const LOG_MODE: u32 = 0o640;

/// Refusals anyone on the box can cause at will (bad requests, codes without a valid
/// one, locked-out retries) are logged in bursts of at most this many per kind...
const REFUSAL_BURST: u32 = 50;
/// ...then at most one line per this many seconds per kind while the flood lasts, so a
/// local flood cannot fill the disk or the journal; each line that is written says how
/// many of its kind were left out before it.
const REFUSAL_EVERY_S: u64 = 1;

/// Kinds of refusal, each with its own budget.
#[derive(Clone, Copy)]
enum Refusal {
    Invalid,
    Reused,
    Denied,
    Locked,
    BadRequest,
    Forbidden,
}

/// A token bucket per kind: `tokens` left, refilled one per `REFUSAL_EVERY_S`.
#[derive(Clone, Copy)]
struct Budget {
    tokens: u32,
    refilled_at: u64,
    left_out: u64,
}

static BUDGETS: Mutex<[Budget; 6]> = Mutex::new(
    [Budget {
        tokens: REFUSAL_BURST,
        refilled_at: 0,
        left_out: 0,
    }; 6],
);

/// Whether a refusal line of `kind` may be written now; `Some` carries the text that
/// reports how many were left out before it (empty when none were).
fn admit(kind: Refusal) -> Option<String> {
    let mut budgets = BUDGETS.lock().unwrap_or_else(PoisonError::into_inner);
    spend(&mut budgets[kind as usize], crate::sys::clock::now_unix())
}

fn spend(budget: &mut Budget, now: u64) -> Option<String> {
    let earned = now.saturating_sub(budget.refilled_at) / REFUSAL_EVERY_S;
    if earned > 0 {
        let earned = u32::try_from(earned).unwrap_or(u32::MAX);
        budget.tokens = budget.tokens.saturating_add(earned).min(REFUSAL_BURST);
        budget.refilled_at = now;
    }
    if budget.tokens == 0 {
        budget.left_out += 1;
        return None;
    }
    budget.tokens -= 1;
    Some(match std::mem::take(&mut budget.left_out) {
        0 => String::new(),
        n => format!(" (+{n} like it not logged)"),
    })
}

/// Why the audit log could not be set up.
#[derive(Debug)]
pub enum AuditError {
    /// The log file could not be opened, created or trusted.
    Open(FileError),
    /// A logger was already installed in this process.
    AlreadyInitialized,
}

impl fmt::Display for AuditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Open(FileError::Symlink { path, .. }) => write!(
                f,
                "log file {} is a symbolic link; replace it with a real file or set \
                 \"log_file\" in the config (links are never followed)",
                path.display()
            ),
            Self::Open(FileError::Io { path, err, .. }) => write!(
                f,
                "cannot open log file {}: {err}; check the directory exists and is writable \
                 by the agent's user, or set \"log_file\" in the config",
                path.display()
            ),
            Self::Open(FileError::NotRegular { path, .. }) => write!(
                f,
                "log file {} is not a regular file; remove it or set \"log_file\" in the config",
                path.display()
            ),
            Self::Open(err) => write!(f, "{err}"),
            Self::AlreadyInitialized => f.write_str("the audit log was already set up"),
        }
    }
}

impl std::error::Error for AuditError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Open(err) => Some(err),
            _ => None,
        }
    }
}

/// Bytes of lines waiting for the writer; beyond, lines are counted and dropped. A
/// job's four lines are about 600 bytes, so this holds a few hundred jobs' worth: a
/// log disk stalled for seconds under a steady stream of jobs.
const QUEUE_BYTES: usize = 256 * 1024;
/// After the first line of a batch, the writer waits this long for more, so the lines
/// of one job (and of jobs close together) go out in one write per destination.
const BATCH_DELAY: Duration = Duration::from_millis(5);

/// Lines dropped because the queue was full or a destination failed, since start.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Audit lines lost so far (queue full, or the log file could not be written).
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// The writer's queue, for [`wake_deferred`].
static SHARED: OnceLock<&'static Shared> = OnceLock::new();

thread_local! {
    /// Set on the threads a request's answer waits for ([`defer_wakes`]): their lines
    /// leave the writer asleep until [`wake_deferred`].
    static DEFERS: Cell<bool> = const { Cell::new(false) };
}

/// Lines waiting for the writer thread.
#[derive(Default)]
struct Queue {
    buf: Vec<u8>,
    /// Lines dropped since the last report line.
    dropped: u64,
    /// The writer sleeps until told: the first line of a batch wakes it.
    idle: bool,
    /// Since when lines wait that the writer was not woken for ([`defer_wakes`]).
    deferred_at: Option<Instant>,
    /// Lines ever queued and lines ever written (or given up on): `flush` waits for
    /// the second to reach the first.
    queued: u64,
    written: u64,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the writer.
    wake: Condvar,
    /// Wakes `flush` callers.
    done: Condvar,
    /// Lines wait that the writer was not woken for (the queue says since when): one
    /// atomic read for [`wake_deferred`] when there are none.
    deferred: AtomicBool,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            done: Condvar::new(),
            deferred: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, line: &[u8]) {
        let mut q = self.lock();
        if q.buf.len() + line.len() > QUEUE_BYTES {
            q.dropped += 1;
            DROPPED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        q.buf.extend_from_slice(line);
        q.queued += 1;
        let wake = q.idle && !DEFERS.get();
        if q.idle && !wake && q.deferred_at.is_none() {
            q.deferred_at = Some(Instant::now());
            self.deferred.store(true, Ordering::Relaxed);
        }
        self.woken(q, wake);
    }

    /// Wakes the writer for lines deferred at least `older_than` ago.
    fn wake_deferred(&self, older_than: Duration) {
        if !self.deferred.load(Ordering::Relaxed) {
            return;
        }
        let q = self.lock();
        let wake = q.idle && q.deferred_at.is_some_and(|at| at.elapsed() >= older_than);
        self.woken(q, wake);
    }

    /// Lets the lock go and, with `wake`, wakes the writer: after the lock, as the job
    /// pool does (woken under it, the writer would only block on it again).
    fn woken(&self, mut q: MutexGuard<'_, Queue>, wake: bool) {
        if wake {
            q.idle = false;
            q.deferred_at = None;
            self.deferred.store(false, Ordering::Relaxed);
        }
        drop(q);
        if wake {
            self.wake.notify_one();
        }
    }

    /// Waits for lines, gathers what comes within [`BATCH_DELAY`], and swaps them into
    /// `batch` (empty on entry), with a line counting those dropped since the last
    /// batch; returns the count of lines queued so far, for `flush`.
    fn next_batch(&self, batch: &mut Vec<u8>) -> u64 {
        let mut q = self.lock();
        while q.buf.is_empty() {
            q.idle = true;
            q = self.wake.wait(q).unwrap_or_else(PoisonError::into_inner);
        }
        // Producers do not wake a writer that is already up, so this costs them nothing.
        if q.buf.len() < QUEUE_BYTES / 2 {
            q = self
                .wake
                .wait_timeout(q, BATCH_DELAY)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        std::mem::swap(batch, &mut q.buf);
        // Whoever woke the writer, deferred lines are in this batch.
        q.deferred_at = None;
        self.deferred.store(false, Ordering::Relaxed);
        let dropped = std::mem::take(&mut q.dropped);
        let upto = q.queued;
        drop(q);
        if dropped > 0 {
            batch.extend_from_slice(
                format!(
                    "{} [WARN] AUDIT {dropped} line(s) dropped: the log queue was full \
                     (the log disk is slow or full)\n",
                    clock::rfc3339(clock::now_unix_ms())
                )
                .as_bytes(),
            );
        }
        upto
    }
}

/// The `log::Log` the agent installs: formats, queues, returns.
struct AuditLogger {
    shared: &'static Shared,
}

impl log::Log for AuditLogger {
    fn enabled(&self, meta: &log::Metadata<'_>) -> bool {
        // Only our own lines: a dependency's message is not an audit event and has not
        // been through `one_line`.
        meta.level() <= log::Level::Info && meta.target().starts_with("sudo_agent")
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        use std::fmt::Write as _;
        // One buffer, sized for a typical line, the time written into it.
        let mut line = String::with_capacity(LINE_GUESS);
        clock::push_rfc3339(&mut line, clock::now_unix_ms());
        let _ = writeln!(line, " [{}] {}", record.level(), record.args());
        self.shared.push(line.as_bytes());
    }

    /// Waits until every line queued before the call is written (or given up on).
    fn flush(&self) {
        let mut q = self.shared.lock();
        let target = q.queued;
        while q.written < target {
            if q.idle {
                q.idle = false;
                self.shared.wake.notify_one();
            }
            q = self
                .shared
                .done
                .wait(q)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// The writer thread's side: the destinations and what it has reported.
struct Writer {
    shared: &'static Shared,
    /// `None` while the disk refuses to open it (full, or read-only): each batch tries
    /// again, so lines reach it once the disk takes writes.
    file: Option<File>,
    path: PathBuf,
    stderr: bool,
    /// The file write failed: said once on stderr until a write succeeds again.
    failing: bool,
}

impl Writer {
    fn run(mut self) {
        let mut batch = Vec::new();
        loop {
            let upto = self.shared.next_batch(&mut batch);
            self.write(&batch);
            batch.clear();
            // Hand a large buffer back to the allocator: a burst must not stay resident.
            if batch.capacity() > QUEUE_BYTES / 4 {
                batch = Vec::new();
            }
            let mut q = self.shared.lock();
            q.written = upto;
            self.shared.done.notify_all();
        }
    }

    fn write(&mut self, batch: &[u8]) {
        match self.write_file(batch) {
            Ok(()) => self.failing = false,
            Err(err) => {
                let lines = batch.iter().filter(|&&b| b == b'\n').count() as u64;
                DROPPED.fetch_add(lines, Ordering::Relaxed);
                if !std::mem::replace(&mut self.failing, true) {
                    // Said on stderr (the journal), which is the one place left to say it.
                    let _ = writeln!(
                        io::stderr(),
                        "{} [ERROR] AUDIT cannot write the log file: {err}; lines are lost \
                         until it can be written again",
                        clock::rfc3339(clock::now_unix_ms())
                    );
                }
            }
        }
        if self.stderr {
            let _ = io::stderr().write_all(batch);
        }
    }

    fn write_file(&mut self, batch: &[u8]) -> Result<(), String> {
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(
                files::open_append("log file", &self.path, LOG_MODE)
                    .map_err(|err| err.to_string())?,
            ),
        };
        file.write_all(batch)
            .map_err(|err| format!("{}: {err}", self.path.display()))
    }
}

/// Installs the process-wide logger: `log_file` (append) plus stderr when `stderr`,
/// written by a thread of its own. Can succeed once per process. A disk that refuses
/// writes (full, or gone read-only) does not stop it: the writer says so on stderr and
/// opens the file once it can.
pub fn init(log_file: &Path, stderr: bool) -> Result<(), AuditError> {
    let file = match files::open_append("log file", log_file, LOG_MODE) {
        Ok(file) => Some(file),
        Err(err) if err.disk_refuses_writes() => None,
        Err(err) => return Err(AuditError::Open(err)),
    };
    // Leaked once: the logger and its thread live as long as the process.
    let shared: &'static Shared = Box::leak(Box::new(Shared::new()));
    let writer = Writer {
        shared,
        file,
        path: log_file.to_path_buf(),
        stderr,
        failing: false,
    };
    // The writer first: an installed logger without one would make `flush` wait forever.
    std::thread::Builder::new()
        .name("audit".into())
        .stack_size(64 * 1024)
        .spawn(move || writer.run())
        .map_err(|err| {
            AuditError::Open(FileError::Io {
                what: "audit writer thread for log file".into(),
                path: log_file.into(),
                err,
            })
        })?;
    let _ = SHARED.set(shared);
    let logger: &'static AuditLogger = Box::leak(Box::new(AuditLogger { shared }));
    log::set_logger(logger).map_err(|_| AuditError::AlreadyInitialized)?;
    log::set_max_level(log::LevelFilter::Info);
    Ok(())
}

/// On the event loop and the job threads: lines this thread logs leave the writer
/// thread asleep until [`wake_deferred`], which they call once answers are out, so the
/// writer's wake-up is not between a request and its answer.
pub fn defer_wakes() {
    DEFERS.set(true);
}

/// Wakes the writer for lines deferred at least `older_than` ago (any thread's); one
/// atomic read when there are none.
pub fn wake_deferred(older_than: Duration) {
    if let Some(shared) = SHARED.get() {
        shared.wake_deferred(older_than);
    }
}

/// Waits until every line logged so far is written: before the process exits.
pub fn flush() {
    log::logger().flush();
}

/// Makes `text` safe as part of one log line: `\n`, `\r`, `\t` become those two-character
/// escapes, other control characters (C0, DEL, C1) `\xNN`, and line/paragraph separators
/// and bidirectional overrides `\u{NNNN}` (they can fake a line break or reorder text on
/// screen). The result has at most `max_chars` characters; when cut it ends in `…`.
/// Backslashes are left alone so ordinary commands read as typed.
pub fn one_line(text: &str, max_chars: usize) -> Cow<'_, str> {
    // Most text (ids, rule names, commands) needs no change: no copy then. Counting
    // bytes bounds the characters from above.
    if text.len() <= max_chars && !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len().min(max_chars.saturating_mul(4)));
    let mut count = 0usize;
    // Byte length of `out` at the last point where an ellipsis would still fit.
    let mut fits_ellipsis = 0usize;
    let mut piece = String::new();
    for c in text.chars() {
        piece.clear();
        escape_into(c, &mut piece);
        let n = piece.chars().count();
        if count.saturating_add(n) > max_chars {
            if max_chars == 0 {
                return Cow::Borrowed("");
            }
            out.truncate(fits_ellipsis);
            out.push('…');
            return Cow::Owned(out);
        }
        out.push_str(&piece);
        count += n;
        if count < max_chars {
            fits_ellipsis = out.len();
        }
    }
    Cow::Owned(out)
}

/// Whether [`escape_into`] writes `c` as an escape rather than as itself.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

fn escape_into(c: char, out: &mut String) {
    use std::fmt::Write;
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if c.is_control() => {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        }
        c if needs_escape(c) => {
            let _ = write!(out, "\\u{{{:04x}}}", u32::from(c));
        }
        c => out.push(c),
    }
}

fn cmd(command: &str) -> Cow<'_, str> {
    one_line(command, MAX_COMMAND_CHARS)
}

fn field(text: &str) -> Cow<'_, str> {
    one_line(text, MAX_FIELD_CHARS)
}

/// The `rc` of a `RESULT` line: the exit code (`0`, `1`, …); `signal N` when a signal
/// ended the process (a timeout or a cancel shows the signal that did it, and has its
/// own `TIMEOUT`/`CANCELLED` line); `none` when there is neither (it never started).
pub fn rc_text(exit_code: Option<i32>, signal: Option<i32>) -> String {
    match (exit_code, signal) {
        (Some(code), _) => code.to_string(),
        (None, Some(sig)) => format!("signal {sig}"),
        (None, None) => "none".into(),
    }
}

/// The output shown in a `RESULT` line: the first non-empty line of stdout, else of
/// stderr, at most 200 characters.
fn result_output<'a>(stdout: &'a str, stderr: &'a str) -> Cow<'a, str> {
    let first = |s: &'a str| s.lines().map(str::trim).find(|l| !l.is_empty());
    let line = first(stdout).or_else(|| first(stderr)).unwrap_or_default();
    one_line(line, MAX_OUTPUT_CHARS)
}

/// A request passed auth and policy: `ACCEPTED [id] rule=name caller=who: cmd`
/// (`who`: `tcp:alice(1000)`, the caller as the kernel named it).
pub fn accepted(id: &str, rule: &str, caller: &str, command: &str) {
    log::info!(
        "ACCEPTED [{}] rule={} caller={}: {}",
        field(id),
        field(rule),
        field(caller),
        cmd(command)
    );
}

/// A request held for a human: `REQUESTED [id] approval=K7Q3 rule=name caller=who: cmd`.
pub fn requested(id: &str, approval: &str, rule: &str, caller: &str, command: &str) {
    log::info!(
        "REQUESTED [{}] approval={} rule={} caller={}: {}",
        field(id),
        field(approval),
        field(rule),
        field(caller),
        cmd(command)
    );
}

/// `APPROVED [id] approval=K7Q3 caller=who: cmd` (`who` approved it, with a good code).
pub fn approved(id: &str, approval: &str, caller: &str, command: &str) {
    log::info!(
        "APPROVED [{}] approval={} caller={}: {}",
        field(id),
        field(approval),
        field(caller),
        cmd(command)
    );
}

/// `DENIED [id] approval=K7Q3 caller=who: cmd`.
pub fn denied(id: &str, approval: &str, caller: &str, command: &str) {
    log::info!(
        "DENIED [{}] approval={} caller={}: {}",
        field(id),
        field(approval),
        field(caller),
        cmd(command)
    );
}

/// A held request nobody decided on in time: `EXPIRED [id] approval=K7Q3`.
pub fn expired(id: &str, approval: &str) {
    log::info!("EXPIRED [{}] approval={}", field(id), field(approval));
}

/// `QUEUED [id]: cmd`.
pub fn queued(id: &str, command: &str) {
    log::info!("QUEUED [{}]: {}", field(id), cmd(command));
}

/// `EXECUTING [id]: cmd`.
pub fn executing(id: &str, command: &str) {
    log::info!("EXECUTING [{}]: {}", field(id), cmd(command));
}

/// `REFUSED [id]: why`: the job's program or working directory lost its trust chain
/// after start-up, so nothing was run; `why` names the path and the fix.
pub fn refused(id: &str, why: &str) {
    log::warn!("REFUSED [{}]: {}", field(id), cmd(why));
}

/// `RESULT [id] (rc=rc): output`; `rc` from [`rc_text`], output from the job's stdout and
/// stderr as [`result_output`] picks it.
pub fn result(id: &str, rc: &str, stdout: &str, stderr: &str) {
    log::info!(
        "RESULT [{}] (rc={}): {}",
        field(id),
        field(rc),
        result_output(stdout, stderr)
    );
}

/// `TIMEOUT [id] after Ns: cmd`.
pub fn timeout(id: &str, secs: u64, command: &str) {
    log::warn!("TIMEOUT [{}] after {secs}s: {}", field(id), cmd(command));
}

/// `CANCELLED [id]: cmd`.
pub fn cancelled(id: &str, command: &str) {
    log::info!("CANCELLED [{}]: {}", field(id), cmd(command));
}

/// A job found running in the journal after a restart: `INTERRUPTED [id]: cmd`.
pub fn interrupted(id: &str, command: &str) {
    log::warn!("INTERRUPTED [{}]: {}", field(id), cmd(command));
}

/// The notify command for a job ran: `NOTIFY [id] (rc=N): output`, a warning unless it
/// exited 0.
pub fn notified(id: &str, rc: &str, stdout: &str, stderr: &str) {
    let level = if rc == "0" {
        log::Level::Info
    } else {
        log::Level::Warn
    };
    log::log!(
        level,
        "NOTIFY [{}] (rc={}): {}",
        field(id),
        field(rc),
        result_output(stdout, stderr)
    );
}

/// Wrong or expired code: `INVALID PIN attempt for command: cmd`.
pub fn invalid_code(command: &str) {
    if let Some(more) = admit(Refusal::Invalid) {
        log::warn!(
            "INVALID PIN attempt for command: {}{}{more}",
            cmd(command),
            clock_note()
        );
    }
}

/// ` (the system clock is not synchronized: …)` while it is not, else nothing. The owner
/// reads the `INVALID PIN` line when their phone's code was refused: a clock no time
/// source set is the likeliest cause that is not a typo.
fn clock_note() -> String {
    clock_unsynced().map_or_else(String::new, |why| format!(" ({why})"))
}

/// What start-up, `check` and a refused code's log line say while the kernel's clock is
/// not synchronized (see `clock::synchronized`); `None` while it is, or cannot be told.
pub fn clock_unsynced() -> Option<&'static str> {
    (clock::synchronized() == Some(false)).then_some(CLOCK_UNSYNCED)
}

const CLOCK_UNSYNCED: &str = "the system clock is not synchronized: codes are \
    checked against it, so if this box's clock is off a correct code reads as invalid and \
    counts toward a lockout; check: timedatectl, and that an NTP client such as \
    systemd-timesyncd or chrony runs";

/// Correct but already used code: `REUSED PIN attempt for command: cmd`.
pub fn reused_code(command: &str) {
    if let Some(more) = admit(Refusal::Reused) {
        log::warn!("REUSED PIN attempt for command: {}{more}", cmd(command));
    }
}

/// No rule matched: `DENIED by policy [peer]: cmd` (`peer` is the client's address).
pub fn denied_by_policy(peer: &str, command: &str) {
    if let Some(more) = admit(Refusal::Denied) {
        log::warn!("DENIED by policy [{}]: {}{more}", field(peer), cmd(command));
    }
}

/// The throttle just locked: `LOCKED OUT for Ns after K failed codes`.
pub fn locked_out(secs: u64, failures: usize) {
    log::warn!("LOCKED OUT for {secs}s after {failures} failed codes");
}

/// A code-bearing request arrived while locked:
/// `LOCKED request refused (retry in Ns): cmd`.
pub fn locked_refused(retry_after_s: u64, command: &str) {
    if let Some(more) = admit(Refusal::Locked) {
        log::warn!(
            "LOCKED request refused (retry in {retry_after_s}s): {}{more}",
            cmd(command)
        );
    }
}

/// `BAD REQUEST from peer: reason`.
pub fn bad_request(peer: &str, reason: &str) {
    if let Some(more) = admit(Refusal::BadRequest) {
        log::warn!("BAD REQUEST from {}: {}{more}", field(peer), field(reason));
    }
}

/// A non-loopback client while `allow_remote` is false: `FORBIDDEN peer addr`.
pub fn forbidden_peer(addr: &str) {
    if let Some(more) = admit(Refusal::Forbidden) {
        log::warn!("FORBIDDEN peer {}{more}", field(addr));
    }
}

/// A web page, or a name that may be DNS rebinding:
/// `FORBIDDEN browser request from peer: Origin "https://evil.example"`.
pub fn forbidden_browser(peer: &str, header: &str, value: &str) {
    if let Some(more) = admit(Refusal::Forbidden) {
        log::warn!(
            "FORBIDDEN browser request from {}: {header} {}{more}",
            field(peer),
            field(value)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn open_log(path: &Path) -> Result<std::fs::File, AuditError> {
        files::open_append("log file", path, LOG_MODE).map_err(AuditError::Open)
    }

    #[test]
    fn a_full_queue_counts_what_it_drops_and_says_so_in_the_next_batch() {
        let shared = Shared::new();
        let line = format!("{}\n", "x".repeat(99));
        let before = dropped();
        let fit = QUEUE_BYTES / line.len();
        for _ in 0..fit + 25 {
            shared.push(line.as_bytes());
        }
        assert_eq!(shared.lock().dropped, 25);
        assert!(dropped() >= before + 25);
        let mut batch = Vec::new();
        let upto = shared.next_batch(&mut batch);
        assert_eq!(upto, fit as u64);
        let text = String::from_utf8(batch).unwrap();
        assert_eq!(text.lines().filter(|l| l.starts_with('x')).count(), fit);
        let report = text.lines().last().unwrap();
        assert!(
            report.ends_with("[WARN] AUDIT 25 line(s) dropped: the log queue was full (the log disk is slow or full)"),
            "{report}"
        );
        // Room again: lines are queued, and the count starts over.
        shared.push(line.as_bytes());
        assert_eq!(shared.lock().dropped, 0);
        assert_eq!(shared.lock().buf.len(), line.len());
    }

    #[test]
    fn a_deferring_thread_wakes_the_writer_only_when_it_says_so() {
        let shared = Shared::new();
        defer_wakes();
        std::thread::scope(|s| {
            let (tx, rx) = std::sync::mpsc::channel();
            let writer = &shared;
            s.spawn(move || {
                let mut batch = Vec::new();
                writer.next_batch(&mut batch);
                tx.send(batch).unwrap();
            });
            // The writer is asleep before the line comes, as between requests.
            while !shared.lock().idle {
                std::thread::sleep(Duration::from_millis(1));
            }
            shared.push(b"line\n");
            let waited = rx.recv_timeout(BATCH_DELAY * 20);
            assert!(waited.is_err(), "the writer woke for a deferred line");
            shared.wake_deferred(Duration::from_secs(60));
            let waited = rx.recv_timeout(BATCH_DELAY * 4);
            assert!(waited.is_err(), "woken for lines younger than asked");
            shared.wake_deferred(BATCH_DELAY);
            let batch = rx.recv_timeout(Duration::from_secs(5)).unwrap();
            assert_eq!(batch, b"line\n");
        });
    }

    #[test]
    fn refusal_floods_are_logged_in_bounded_bursts() {
        let mut budget = Budget {
            tokens: REFUSAL_BURST,
            refilled_at: 1000,
            left_out: 0,
        };
        let logged = (0..1000)
            .filter(|_| spend(&mut budget, 1000).is_some())
            .count();
        assert_eq!(
            logged, REFUSAL_BURST as usize,
            "a burst, then silence in the same second"
        );
        assert_eq!(
            spend(&mut budget, 1001).as_deref(),
            Some(" (+950 like it not logged)")
        );
        assert_eq!(spend(&mut budget, 1001), None);
        // A quiet hour refills the whole burst, not more.
        let logged = (0..1000)
            .filter(|_| spend(&mut budget, 4601).is_some())
            .count();
        assert_eq!(logged, REFUSAL_BURST as usize);
    }

    #[test]
    fn one_line_escapes_controls() {
        assert_eq!(one_line("ls -l /tmp", 100), "ls -l /tmp");
        // Text that needs nothing is not copied; text that needs an escape is.
        assert!(matches!(one_line("ls -l /tmp", 10), Cow::Borrowed(_)));
        assert!(matches!(one_line("ls\u{202e}", 10), Cow::Owned(_)));
        assert_eq!(
            one_line("a\nb\rc\td\0e\x1bf\x7fg", 100),
            "a\\nb\\rc\\td\\x00e\\x1bf\\x7fg"
        );
        assert_eq!(one_line("x\u{85}y", 100), "x\\x85y");
        assert_eq!(
            one_line("x\u{2028}y\u{202e}z", 100),
            "x\\u{2028}y\\u{202e}z"
        );
        assert_eq!(one_line("grüße \\ \"q\"", 100), "grüße \\ \"q\"");
        let forged = one_line("ls\n2026-01-01T00:00:00.000Z [INFO] EXECUTING [x]: rm", 500);
        assert!(!forged.contains('\n') && !forged.contains('\r'));
    }

    #[test]
    fn one_line_cuts_to_max_chars() {
        assert_eq!(one_line("abcdef", 6), "abcdef");
        assert_eq!(one_line("abcdefg", 6), "abcde…");
        assert_eq!(one_line("ääääääää", 4), "äää…");
        assert_eq!(one_line("abc", 0), "");
        assert_eq!(one_line("abc", 1), "…");
        assert_eq!(one_line("", 5), "");
        // An escape is never cut in half.
        assert_eq!(one_line("abcd\nefgh", 6), "abcd…");
        assert_eq!(one_line("abc\nefgh", 6), "abc\\n…");
        let long = "x".repeat(10_000);
        assert_eq!(one_line(&long, 500).chars().count(), 500);
    }

    #[test]
    fn result_fields() {
        assert_eq!(rc_text(Some(0), None), "0");
        assert_eq!(rc_text(Some(-1), None), "-1");
        assert_eq!(rc_text(None, Some(9)), "signal 9");
        assert_eq!(rc_text(None, None), "none");
        assert_eq!(result_output("\n  first\nsecond\n", "err"), "first");
        assert_eq!(result_output("", "boom\nmore"), "boom");
        assert_eq!(result_output(" \n", ""), "");
        assert_eq!(result_output(&"y".repeat(300), "").chars().count(), 200);
    }

    #[test]
    fn open_log_refuses_links_and_tightens_modes() {
        let dir = std::env::temp_dir().join(format!("sudo-agent-auditopen-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let real = dir.join("real.log");
        fs::write(&real, "old\n").unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o666)).unwrap();
        let link = dir.join("link.log");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = open_log(&link).unwrap_err().to_string();
        assert!(err.contains("is a symbolic link"), "{err}");
        open_log(&real).unwrap();
        assert_eq!(fs::metadata(&real).unwrap().mode() & 0o777, 0o640);
        fs::set_permissions(&real, fs::Permissions::from_mode(0o600)).unwrap();
        open_log(&real).unwrap();
        assert_eq!(
            fs::metadata(&real).unwrap().mode() & 0o777,
            0o600,
            "never loosened"
        );
        let err = open_log(&dir.join("no/such/dir.log"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cannot open log file") && err.contains("\"log_file\""),
            "{err}"
        );
        assert!(open_log(&dir).is_err(), "a directory is not a log file");
        fs::remove_dir_all(dir).unwrap();
    }

    /// The only test that installs the global logger (possible once per process). Other
    /// tests may log into the same file meanwhile, so lines are found by their unique id.
    #[test]
    fn log_file_lines() {
        let dir = std::env::temp_dir().join(format!("sudo-agent-audit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.log");
        init(&path, false).unwrap();
        assert!(matches!(
            init(&path, false),
            Err(AuditError::AlreadyInitialized)
        ));
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o640);

        let code = "492039"; // what the client sent as "pin"; must never be logged
        let id = "0123456789abcdef0123456789abcdef";
        let c = "systemctl restart nginx";
        accepted(id, "service", "tcp:root(0)", c);
        requested(id, "K7Q3", "service", "unix:ai(1000)", c);
        approved(id, "K7Q3", "tcp:root(0)", c);
        queued(id, c);
        executing(id, c);
        result(id, &rc_text(Some(0), None), "", "warning: x\nmore");
        result(id, &rc_text(None, Some(9)), "line1\nline2", "");
        timeout(id, 60, c);
        cancelled(id, c);
        interrupted(id, c);
        notified(id, "timeout", "", "curl: (28) timed out");
        invalid_code("uniq-invalid ls");
        reused_code("uniq-reused ls");
        denied_by_policy("127.0.0.1:40000", "uniq-denied\nFAKE [INFO] line");
        locked_out(31_337, 5);
        locked_refused(29, "uniq-locked ls");
        bad_request("127.0.0.1:40001", "uniq-bad: body is not JSON");
        forbidden_peer("192.0.2.7:5555");
        log::logger().flush();

        let text = fs::read_to_string(&path).unwrap();
        assert!(!text.contains(code));
        let messages: Vec<&str> = text
            .lines()
            .map(|line| {
                // `2026-11-22T00:44:33.12034Z [INFO] message`
                let (ts, rest) = line.split_once(' ').unwrap();
                assert!((20..=30).contains(&ts.len()), "{line}");
                assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{line}");
                assert!(ts[..4].bytes().all(|b| b.is_ascii_digit()), "{line}");
                let (level, message) = rest.split_once(' ').unwrap();
                assert!(["[INFO]", "[WARN]", "[ERROR]"].contains(&level), "{line}");
                message
            })
            .collect();
        for want in [
            format!("ACCEPTED [{id}] rule=service caller=tcp:root(0): {c}"),
            format!("REQUESTED [{id}] approval=K7Q3 rule=service caller=unix:ai(1000): {c}"),
            format!("APPROVED [{id}] approval=K7Q3 caller=tcp:root(0): {c}"),
            format!("QUEUED [{id}]: {c}"),
            format!("EXECUTING [{id}]: {c}"),
            format!("RESULT [{id}] (rc=0): warning: x"),
            format!("RESULT [{id}] (rc=signal 9): line1"),
            format!("TIMEOUT [{id}] after 60s: {c}"),
            format!("CANCELLED [{id}]: {c}"),
            format!("INTERRUPTED [{id}]: {c}"),
            format!("NOTIFY [{id}] (rc=timeout): curl: (28) timed out"),
            format!(
                "INVALID PIN attempt for command: uniq-invalid ls{}",
                clock_note()
            ),
            "REUSED PIN attempt for command: uniq-reused ls".into(),
            "DENIED by policy [127.0.0.1:40000]: uniq-denied\\nFAKE [INFO] line".into(),
            "LOCKED OUT for 31337s after 5 failed codes".into(),
            "LOCKED request refused (retry in 29s): uniq-locked ls".into(),
            "BAD REQUEST from 127.0.0.1:40001: uniq-bad: body is not JSON".into(),
            "FORBIDDEN peer 192.0.2.7:5555".into(),
        ] {
            assert!(
                messages.contains(&want.as_str()),
                "missing {want:?} in\n{text}"
            );
        }
        assert!(!messages.iter().any(|m| m.starts_with("FAKE")));
        fs::remove_dir_all(dir).unwrap();
    }
}
