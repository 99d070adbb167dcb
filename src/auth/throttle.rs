//! Code checks: throttle (RFC 4226 §7.3), TOTP (RFC 6238), replay (RFC 6238 §5.2).
//!
//! `check` decides in memory, at once: a good code's step is used from that moment, so
//! a second request with the same code is refused even while the first is still being
//! made durable. Recent failures and lockouts are saved to the state file by
//! [`Auth::save_work`], run on a writer thread, never the event loop's. A good code's
//! step goes to the job journal with what it authorised, and the caller holds the
//! success until it is on disk there (see `http::routes`), so a command never runs on a
//! code that a crash could make valid again; the state file gets that step only when no
//! journal line will hold it (see [`Auth::journaled`]).
//! `now` is always a parameter: the caller reads the clock, tests fake it.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use super::secret::SecretKey;
use super::state::{AuthState, StateStore};
use super::totp;
use crate::audit;
use crate::config::ThrottleConfig;

/// Why a code-bearing request was refused.
#[derive(Debug)]
pub enum Denied {
    /// Wrong or expired code.
    Invalid,
    /// A correct code for a time step already used (or older than one used).
    Reused,
    /// Too many recent failures; the code was not looked at.
    LockedOut { retry_after_s: u64 },
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid => f.write_str("invalid code"),
            Self::Reused => f.write_str("code already used"),
            Self::LockedOut { retry_after_s } => {
                write!(
                    f,
                    "locked out after too many bad codes; retry in {retry_after_s}s"
                )
            }
        }
    }
}

impl std::error::Error for Denied {}

/// A save the writer thread runs: `Err` says why the state is not on disk.
pub type SaveWork = Box<dyn FnOnce() -> Result<(), String> + Send>;

/// The work that saves a changed state, and whether an answer should wait for it.
pub struct Save {
    pub work: SaveWork,
    /// A failure was counted since the last save: so that a restart cannot forget it,
    /// the refusal it caused leaves once this is on disk. A success's save may wait (its
    /// step is made durable with what it authorised).
    pub urgent: bool,
}

/// The TOTP gate: key, code shape, throttle settings and the state it keeps.
pub struct Auth {
    key: SecretKey,
    params: totp::Params,
    throttle: ThrottleConfig,
    state: AuthState,
    /// The state changed since the last `save_work`, and whether by a counted failure.
    changed: bool,
    urgent: bool,
    /// A code was accepted and its step not yet handed to the job journal (see
    /// [`Auth::journaled`]): if the request ends without that, the state file is saved.
    unjournaled: bool,
    saver: Arc<Saver>,
}

/// The newest state not yet on disk, shared with the writer thread. Saves coalesce:
/// however many changes queued one, the first save writes the newest, the rest find
/// nothing left to do.
#[derive(Debug)]
struct Saver {
    store: StateStore,
    newest: Mutex<Option<AuthState>>,
}

impl Saver {
    fn save(&self) -> Result<(), String> {
        let lock = || self.newest.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(state) = lock().take() else {
            return Ok(());
        };
        self.store.save(&state).map_err(|err| {
            // Left for the next save to retry, unless a newer state already is.
            lock().get_or_insert(state);
            format!(
                "{err}; until it is saved, wrong codes and lockouts are counted in memory only \
                 (a restart forgets them)"
            )
        })
    }
}

// By hand so the key can never end up in a log through `{:?}`.
impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("key", &"<redacted>")
            .field("params", &self.params)
            .field("throttle", &self.throttle)
            .field("state", &self.state)
            .field("saver", &self.saver)
            .finish()
    }
}

impl Auth {
    /// `state` is what `StateStore::open` returned for `store`.
    pub fn new(
        key: SecretKey,
        params: totp::Params,
        throttle: ThrottleConfig,
        store: StateStore,
        state: AuthState,
    ) -> Auth {
        Auth {
            key,
            params,
            throttle,
            state,
            changed: false,
            urgent: false,
            unjournaled: false,
            saver: Arc::new(Saver {
                store,
                newest: Mutex::new(None),
            }),
        }
    }

    /// Seconds of lockout left at `now` (0 = not locked). Never more than
    /// `lockout_max_s`: if the clock jumped backwards, the stored end lies further away
    /// than any lockout can last, and waiting for the clock to catch up could take years.
    pub fn locked_for(&self, now: u64) -> u64 {
        self.state
            .locked_until
            .saturating_sub(now)
            .min(self.throttle.lockout_max_s)
    }

    /// Checks `code` at `now`, in memory. `Ok(step)`: the step is used from now on; the
    /// caller must have it on disk before acting on it.
    pub fn check(&mut self, code: &str, now: u64) -> Result<u64, Denied> {
        let left = self.locked_for(now);
        if left > 0 {
            self.reanchor_lockout(now, left);
            // Not counted, code not looked at: a locked gate must not become an oracle.
            return Err(Denied::LockedOut {
                retry_after_s: left,
            });
        }
        match totp::verify(&self.key, code, now, &self.params) {
            // Strictly greater: a step at or below the last one is refused even when the
            // clock went back, which is what makes a seen code worthless.
            Some(step) if step > self.state.last_step => self.accept(step),
            Some(_) => Err(self.fail(now, Denied::Reused)),
            None => Err(self.fail(now, Denied::Invalid)),
        }
    }

    /// When the state changed since the last call: the work that saves it, to run on a
    /// writer thread. Only the newest state is written, however many works are queued.
    pub fn save_work(&mut self) -> Option<Save> {
        let unjournaled = std::mem::take(&mut self.unjournaled);
        if !std::mem::take(&mut self.changed) && !unjournaled {
            return None;
        }
        let urgent = std::mem::take(&mut self.urgent);
        *self
            .saver
            .newest
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(self.state.clone());
        let saver = Arc::clone(&self.saver);
        Some(Save {
            work: Box::new(move || saver.save()),
            urgent,
        })
    }

    /// A code that came in a shape the request decoder refused (a JSON number, a list):
    /// each of `candidates` that is valid now is spent as if used, since the request may
    /// have been logged on its way here (a number loses its leading zeros, so short
    /// digit strings are also tried zero-padded). The request counts as one failed
    /// attempt unless locked out, when nothing is counted. Returns whether it counted.
    pub fn refuse_stray(&mut self, candidates: &[String], now: u64) -> bool {
        let width = usize::try_from(self.params.digits).unwrap_or(0);
        let mut spent = false;
        for candidate in candidates {
            let padded = (candidate.len() < width && candidate.bytes().all(|b| b.is_ascii_digit()))
                .then(|| format!("{candidate:0>width$}"));
            for text in std::iter::once(candidate).chain(padded.as_ref()) {
                if let Some(step) = totp::verify(&self.key, text, now, &self.params)
                    && step > self.state.last_step
                {
                    self.state.last_step = step;
                    spent = true;
                }
            }
        }
        if self.locked_for(now) > 0 {
            // A spent code is on disk before the answer, like a counted failure.
            self.changed |= spent;
            self.urgent |= spent;
            return false;
        }
        let _ = self.fail(now, Denied::Invalid);
        true
    }

    /// The current state, for tests.
    #[cfg(test)]
    pub fn state(&self) -> &AuthState {
        &self.state
    }

    /// The step of the code just accepted was handed to the job journal, which syncs it
    /// with what it authorised before acting on it; start-up takes the larger of the
    /// journal's step and the state file's. Saving the file for it too would put two
    /// more syncs (the file, its rename) beside the code's own on a disk that does one
    /// at a time (an SD card), where the code would wait for them, and wear it for
    /// nothing. A code accepted and then refused (by the policy, say) is not journaled:
    /// the file is saved for it at the next [`Auth::save_work`].
    pub fn journaled(&mut self) {
        self.unjournaled = false;
    }

    /// A success resets the throttle (saved if there was anything to reset); its step
    /// waits for [`Auth::journaled`].
    fn accept(&mut self, step: u64) -> Result<u64, Denied> {
        let throttled = !self.state.failures.is_empty()
            || self.state.locked_until != 0
            || self.state.lockouts != 0;
        self.changed |= throttled;
        self.unjournaled = true;
        self.state = AuthState {
            last_step: step,
            failures: Vec::new(),
            locked_until: 0,
            lockouts: 0,
        };
        Ok(step)
    }

    /// Counts a failure at `now`, locks when the window holds `max_failures`, and hands
    /// back `denial`.
    fn fail(&mut self, now: u64, denial: Denied) -> Denied {
        let window = self.throttle.window_s;
        // Entries stamped in the future (clock went back) stay: counting them can only
        // lock sooner, never later.
        self.state
            .failures
            .retain(|&t| now.saturating_sub(t) < window);
        self.state.failures.push(now);
        let count = self.state.failures.len();
        if count >= usize::try_from(self.throttle.max_failures).unwrap_or(usize::MAX) {
            let factor = 2u64.saturating_pow(self.state.lockouts);
            let duration = self
                .throttle
                .lockout_s
                .saturating_mul(factor)
                .min(self.throttle.lockout_max_s);
            self.state.locked_until = now.saturating_add(duration);
            self.state.lockouts = self.state.lockouts.saturating_add(1);
            self.state.failures.clear();
            audit::locked_out(duration, count);
        }
        self.changed = true;
        self.urgent = true;
        denial
    }

    /// After the clock went back, moves the end of a lockout to at most `lockout_max_s`
    /// from now (`left`, already capped), so it ends in bounded time, never earlier than
    /// it would have.
    fn reanchor_lockout(&mut self, now: u64, left: u64) {
        if self.state.locked_until.saturating_sub(now) > left {
            self.state.locked_until = now.saturating_add(left);
            self.changed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    // Tests that need real codes call `totp::code_at`/`totp::verify`; they pass once the
    // TOTP work item has filled in totp.rs.
    use super::*;
    use std::fs;
    use std::path::{Path, PathBuf};

    const KEY: &[u8] = b"12345678901234567890";
    /// A time well past 2038, on a step boundary plus a bit.
    const T0: u64 = 2_000_000_010;

    fn params() -> totp::Params {
        totp::Params {
            digits: 6,
            step_s: 30,
            skew: 1,
        }
    }

    fn throttle() -> ThrottleConfig {
        ThrottleConfig {
            max_failures: 3,
            window_s: 60,
            lockout_s: 30,
            lockout_max_s: 100,
        }
    }

    fn tempdir(tag: &str) -> PathBuf {
        crate::sys::files::test_dir(&format!("auth-{tag}"))
    }

    fn open(dir: &Path) -> Auth {
        let (store, state) = StateStore::open(dir).unwrap();
        Auth::new(
            SecretKey::new(KEY.to_vec()),
            params(),
            throttle(),
            store,
            state,
        )
    }

    fn code(at: u64) -> String {
        totp::code_at(KEY, at, &params())
    }

    /// Runs the pending save, as the writer thread would.
    fn saved(auth: &mut Auth) {
        if let Some(save) = auth.save_work() {
            (save.work)().unwrap();
        }
    }

    /// A code that matches no step in the window around `at`.
    fn wrong_code(at: u64) -> String {
        (0..1_000_000u32)
            .map(|n| format!("{n:06}"))
            .find(|c| totp::verify(KEY, c, at, &params()).is_none())
            .unwrap()
    }

    /// Fails `n` times at `at`, asserting each is `Invalid`.
    fn fail_n(auth: &mut Auth, n: u32, at: u64) {
        for _ in 0..n {
            assert!(matches!(
                auth.check(&wrong_code(at), at),
                Err(Denied::Invalid)
            ));
        }
    }

    #[test]
    fn valid_code_accepted_once() {
        let dir = tempdir("once");
        let mut auth = open(&dir);
        assert_eq!(auth.check(&code(T0), T0).unwrap(), T0 / 30);
        assert!(matches!(auth.check(&code(T0), T0 + 1), Err(Denied::Reused)));
        assert_eq!(
            auth.state().failures,
            vec![T0 + 1],
            "reuse counts as a failure"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn older_step_after_newer_is_reused() {
        let dir = tempdir("older");
        let mut auth = open(&dir);
        // The next step's code is inside the skew window.
        assert_eq!(auth.check(&code(T0 + 30), T0).unwrap(), T0 / 30 + 1);
        assert!(matches!(auth.check(&code(T0), T0), Err(Denied::Reused)));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn wrong_code_is_invalid() {
        let dir = tempdir("wrong");
        let mut auth = open(&dir);
        assert!(matches!(
            auth.check(&wrong_code(T0), T0),
            Err(Denied::Invalid)
        ));
        assert!(matches!(auth.check("", T0), Err(Denied::Invalid)));
        assert_eq!(auth.state().failures, vec![T0, T0]);
        // Malformed codes are just wrong codes (and the third failure locks).
        assert!(matches!(auth.check("12345\n", T0), Err(Denied::Invalid)));
        assert_eq!(auth.state().lockouts, 1);
        assert_eq!(auth.state().last_step, 0);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn lockout_after_max_failures_within_window() {
        let dir = tempdir("lockout");
        let mut auth = open(&dir);
        fail_n(&mut auth, 2, T0);
        assert_eq!(auth.locked_for(T0), 0);
        fail_n(&mut auth, 1, T0 + 20);
        assert_eq!(auth.locked_for(T0 + 20), 30);
        assert!(auth.state().failures.is_empty());
        // Locked: even the right code is refused, not counted and not consumed.
        let before = auth.state().clone();
        match auth.check(&code(T0 + 30), T0 + 30) {
            Err(Denied::LockedOut { retry_after_s }) => assert_eq!(retry_after_s, 20),
            other => panic!("{other:?}"),
        }
        assert_eq!(auth.state(), &before);
        // Lockout over: the code works.
        assert_eq!(auth.check(&code(T0 + 50), T0 + 50).unwrap(), (T0 + 50) / 30);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn failures_spread_wider_than_window_do_not_lock() {
        let dir = tempdir("spread");
        let mut auth = open(&dir);
        for i in 0..10 {
            let at = T0 + i * 31;
            fail_n(&mut auth, 1, at);
            assert_eq!(auth.locked_for(at), 0, "failure {i}");
            assert!(auth.state().failures.len() <= 2);
        }
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn lockout_doubles_up_to_cap_and_resets_after_success() {
        let dir = tempdir("doubling");
        let mut auth = open(&dir);
        let mut at = T0;
        for want in [30, 60, 100, 100] {
            fail_n(&mut auth, 3, at);
            assert_eq!(auth.locked_for(at), want);
            at += want;
        }
        assert_eq!(auth.state().lockouts, 4);
        auth.check(&code(at), at).unwrap();
        assert_eq!(auth.state().lockouts, 0);
        assert!(auth.state().failures.is_empty());
        fail_n(&mut auth, 3, at + 1);
        assert_eq!(auth.locked_for(at + 1), 30);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn saturating_math_with_huge_settings() {
        let dir = tempdir("saturating");
        let (store, _) = StateStore::open(&dir).unwrap();
        let state = AuthState {
            lockouts: u32::MAX,
            ..AuthState::default()
        };
        let throttle = ThrottleConfig {
            max_failures: 1,
            window_s: u64::MAX,
            lockout_s: u64::MAX,
            lockout_max_s: u64::MAX,
        };
        let mut auth = Auth::new(
            SecretKey::new(KEY.to_vec()),
            params(),
            throttle,
            store,
            state,
        );
        assert!(matches!(
            auth.check("x", u64::MAX - 5),
            Err(Denied::Invalid)
        ));
        assert_eq!(auth.state().locked_until, u64::MAX);
        assert_eq!(auth.state().lockouts, u32::MAX);
        assert_eq!(auth.locked_for(u64::MAX), 0);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn lockout_and_replay_survive_reload() {
        let dir = tempdir("reload");
        let mut auth = open(&dir);
        assert_eq!(auth.check(&code(T0), T0).unwrap(), T0 / 30);
        fail_n(&mut auth, 3, T0 + 1);
        saved(&mut auth);
        drop(auth);

        let mut auth = open(&dir);
        assert_eq!(auth.state().last_step, T0 / 30);
        assert_eq!(auth.state().lockouts, 1);
        match auth.check(&code(T0 + 30), T0 + 10) {
            Err(Denied::LockedOut { retry_after_s }) => assert_eq!(retry_after_s, 21),
            other => panic!("{other:?}"),
        }
        // After the lockout, the code used before the restart is still spent.
        assert!(matches!(
            auth.check(&code(T0), T0 + 31),
            Err(Denied::Reused)
        ));
        saved(&mut auth);
        drop(auth);
        let auth = open(&dir);
        assert_eq!(auth.state().failures, vec![T0 + 31]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_success_is_saved_only_when_it_resets_the_throttle_or_is_not_journaled() {
        let dir = tempdir("success-save");
        let mut auth = open(&dir);
        auth.check(&code(T0), T0).unwrap();
        auth.journaled();
        assert!(
            auth.save_work().is_none(),
            "the step alone is synced in the journal by the caller"
        );
        // Accepted, then refused before the journal had it: the file keeps the step.
        auth.check(&code(T0 + 30), T0 + 30).unwrap();
        let save = auth.save_work().expect("a step nothing journaled");
        (save.work)().unwrap();
        let (_, on_disk) = StateStore::open(&dir).unwrap();
        assert_eq!(on_disk.last_step, (T0 + 30) / 30);
        fail_n(&mut auth, 1, T0 + 31);
        saved(&mut auth);
        auth.check(&code(T0 + 60), T0 + 61).unwrap();
        auth.journaled();
        let save = auth.save_work().expect("the failure count was reset");
        assert!(!save.urgent, "a success waits for no save");
        (save.work)().unwrap();
        let text = fs::read_to_string(dir.join("auth.json")).unwrap();
        let on_disk: AuthState = serde_json::from_str(&text).unwrap();
        assert_eq!(&on_disk, auth.state());
        assert!(on_disk.failures.is_empty());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn checks_decide_in_memory_and_the_save_writes_the_newest_state() {
        let dir = tempdir("persisted");
        let mut auth = open(&dir);
        let step = auth.check(&code(T0), T0).unwrap();
        // Used at once, before anything is on disk: a second request is refused.
        assert!(matches!(auth.check(&code(T0), T0), Err(Denied::Reused)));
        assert!(
            !dir.join("auth.json").exists(),
            "check never touches the disk"
        );
        let first = auth.save_work().unwrap();
        assert!(first.urgent, "a failure was counted");
        assert_eq!(auth.state().failures, vec![T0]);
        let second = auth.save_work();
        assert!(second.is_none(), "nothing changed since the last save_work");
        fail_n(&mut auth, 1, T0 + 1);
        let third = auth.save_work().unwrap();
        // The first save writes the newest state; the later one finds nothing to do.
        (first.work)().unwrap();
        let text = fs::read_to_string(dir.join("auth.json")).unwrap();
        let on_disk: AuthState = serde_json::from_str(&text).unwrap();
        assert_eq!(on_disk.last_step, step);
        assert_eq!(&on_disk, auth.state());
        (third.work)().unwrap();
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_failed_save_says_why_and_is_retried_by_the_next() {
        let dir = tempdir("unsaveable");
        let mut auth = open(&dir);
        // A directory where the file should be: rename over it fails, even for root.
        fs::create_dir(dir.join("auth.json")).unwrap();
        assert!(matches!(
            auth.check(&wrong_code(T0), T0),
            Err(Denied::Invalid)
        ));
        let save = auth.save_work().unwrap();
        assert!(save.urgent, "a failure's refusal waits for its save");
        let err = (save.work)().unwrap_err();
        assert!(err.contains("auth.json"), "{err}");
        // Codes are decided all the same: a good one resets, a reused one counts.
        auth.check(&code(T0), T0).unwrap();
        assert!(matches!(auth.check(&code(T0), T0), Err(Denied::Reused)));
        assert_eq!(auth.state().failures.len(), 1);
        fs::remove_dir(dir.join("auth.json")).unwrap();
        let retry = auth.save_work().unwrap();
        (retry.work)().unwrap();
        let (_, on_disk) = StateStore::open(&dir).unwrap();
        assert_eq!(&on_disk, auth.state());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn clock_jumping_backwards() {
        let dir = tempdir("backwards");
        let mut auth = open(&dir);
        auth.check(&code(T0), T0).unwrap();
        // An hour back: that time's code is an older step, refused.
        let back = T0 - 3600;
        assert!(matches!(auth.check(&code(back), back), Err(Denied::Reused)));
        // Failures stamped "in the future" still count toward a lockout.
        fail_n(&mut auth, 2, T0 + 10);
        fail_n(&mut auth, 1, T0);
        assert_eq!(auth.state().locked_until, T0 + 30);

        // Back a year while locked: still locked, for at most lockout_max_s.
        let way_back = T0 - 365 * 86_400;
        assert_eq!(auth.locked_for(way_back), 100);
        assert!(matches!(
            auth.check(&code(way_back), way_back),
            Err(Denied::LockedOut { retry_after_s: 100 })
        ));
        assert_eq!(auth.state().locked_until, way_back + 100);
        assert_eq!(auth.locked_for(way_back + 99), 1);
        // The re-anchored end is saved too.
        saved(&mut auth);
        drop(auth);
        let mut auth = open(&dir);
        assert_eq!(auth.locked_for(way_back + 50), 50);
        // Once it ends, codes of that (earlier) time are older steps: refused.
        let at = way_back + 100;
        assert!(matches!(auth.check(&code(at), at), Err(Denied::Reused)));
        // And at time 0 nothing underflows.
        assert!(auth.check("000000", 0).is_err());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_stray_code_is_spent_and_counted_even_as_a_number_that_lost_its_zeros() {
        let dir = tempdir("stray");
        let mut auth = open(&dir);
        // The code of T0, as digits and as the number a template would make of it.
        let good = code(T0);
        let number = good.trim_start_matches('0').to_string();
        assert!(auth.refuse_stray(&["x".into(), number], T0));
        assert_eq!(auth.state().failures, vec![T0]);
        assert!(matches!(auth.check(&good, T0 + 1), Err(Denied::Reused)));
        // Reloaded from disk (once the writer thread saved it): still spent.
        let save = auth.save_work().unwrap();
        assert!(
            save.urgent,
            "failures were counted: the refusal waits for this"
        );
        (save.work)().unwrap();
        let mut again = open(&dir);
        assert!(matches!(again.check(&good, T0 + 2), Err(Denied::Reused)));
        // That made three failures (max_failures): locked out. Now a stray code is not
        // counted, but a valid one is still spent.
        assert!(again.locked_for(T0 + 3) > 0);
        let next = code(T0 + 30);
        assert!(!again.refuse_stray(std::slice::from_ref(&next), T0 + 30));
        assert!(again.state().failures.is_empty());
        assert!(matches!(
            again.check(&next, T0 + 200),
            Err(Denied::Invalid | Denied::Reused)
        ));
        assert!(again.state().last_step >= (T0 + 30) / 30);
        fs::remove_dir_all(dir).unwrap();
    }
}
