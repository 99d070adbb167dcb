//! Callers' names and primary groups, from a snapshot of the user database that the
//! event loop never reads itself: it is read at start-up, before the loop serves, and
//! again by a thread of its own each time `/etc/passwd` changes. A slow disk or a
//! stalled mount under `/etc/passwd` then stalls that thread, never the loop, its
//! clients or the watchdog; the loop keeps the last snapshot it was given.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use crate::policy::Caller;
use crate::sys::{self, UserInfo};

/// Accounts kept, the first ones of the database: a caller beyond them is known by its
/// uid only, as one without an account is.
pub const MAX_USERS: usize = 4096;
/// How often the thread looks at `/etc/passwd` for a change.
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// The file whose change means the database changed (useradd, vipw, a package).
const PASSWD: &str = "/etc/passwd";
/// The thread's stack: reading the database (NSS modules included) needs little.
const STACK: usize = 256 * 1024;

/// uid → user name and primary group, at most [`MAX_USERS`] accounts.
#[derive(Debug, Default)]
pub struct UserDb {
    by_uid: HashMap<u32, (String, u32)>,
    /// The database held more accounts than were kept.
    cut: bool,
}

impl UserDb {
    /// The first [`MAX_USERS`] of `users`; of two accounts with one uid the first
    /// counts, as `getpwuid` would return it.
    pub fn new(users: Vec<UserInfo>) -> UserDb {
        let cut = users.len() > MAX_USERS;
        let mut by_uid = HashMap::new();
        for user in users.into_iter().take(MAX_USERS) {
            by_uid.entry(user.uid).or_insert((user.name, user.gid));
        }
        UserDb { by_uid, cut }
    }

    /// The whole database, as far as [`MAX_USERS`] (one entry past it says it was cut).
    fn read() -> std::io::Result<UserDb> {
        sys::all_users(MAX_USERS + 1).map(UserDb::new)
    }

    /// `caller` with its name and primary group when its uid has an account here;
    /// otherwise unchanged: shown as `uid N` and in no group or member list (only a
    /// list of uids can admit it).
    pub fn name(&self, mut caller: Caller) -> Caller {
        if let Some((name, gid)) = caller.uid.and_then(|uid| self.by_uid.get(&uid)) {
            caller.user = Some(name.clone());
            caller.gid = Some(*gid);
        }
        caller
    }

    fn say_if_cut(&self) {
        if self.cut {
            log::warn!(
                "USERS: the user database has more than {MAX_USERS} accounts; callers beyond \
                 the first {MAX_USERS} are known by uid only (and in no group)"
            );
        }
    }
}

/// The newest snapshot, shared with the thread that reads the next one. The lock is
/// taken to hand over or swap an `Arc`, never across a read of the database.
pub struct Users {
    now: Arc<Mutex<Arc<UserDb>>>,
}

impl Users {
    /// Reads the user database now (start-up, before the loop serves), then starts the
    /// thread that reads it again whenever `/etc/passwd` changes. A database that cannot
    /// be read leaves every caller known by uid only, until it can.
    pub fn watch() -> Users {
        let seen = stamp(Path::new(PASSWD));
        let db = UserDb::read().unwrap_or_else(|err| {
            log::warn!("USERS: cannot read the user database ({err}); callers are known by uid only until it can be read");
            UserDb::default()
        });
        db.say_if_cut();
        let now = Arc::new(Mutex::new(Arc::new(db)));
        let slot = Arc::downgrade(&now);
        let spawned = std::thread::Builder::new()
            .name("users".into())
            .stack_size(STACK)
            .spawn(move || reread_on_change(&slot, seen));
        if let Err(err) = spawned {
            log::warn!(
                "USERS: cannot start the thread that notices new accounts ({err}); \
                 accounts added from now on are known by uid only until a restart"
            );
        }
        Users { now }
    }

    /// `caller` named from the newest snapshot (see [`UserDb::name`]).
    pub fn name(&self, caller: Caller) -> Caller {
        let db = Arc::clone(&self.now.lock().unwrap_or_else(PoisonError::into_inner));
        db.name(caller)
    }
}

/// What says `/etc/passwd` changed: its device, inode, size and times (an edit in place
/// or a new file renamed over it). `None` when it cannot be looked at.
type Stamp = Option<(u64, u64, u64, i64, i64, i64, i64)>;

fn stamp(path: &Path) -> Stamp {
    let m = fs::metadata(path).ok()?;
    Some((
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    ))
}

/// The thread: every [`CHECK_EVERY`], a new snapshot when `/etc/passwd` changed; ends
/// with the loop's `Users`.
fn reread_on_change(slot: &Weak<Mutex<Arc<UserDb>>>, mut seen: Stamp) {
    let mut failing = false;
    loop {
        std::thread::sleep(CHECK_EVERY);
        let Some(slot) = slot.upgrade() else {
            return;
        };
        match changed(Path::new(PASSWD), &mut seen, UserDb::read) {
            Some(Ok(db)) => {
                log::info!(
                    "USERS: {PASSWD} changed; {} accounts known to name callers",
                    db.by_uid.len()
                );
                db.say_if_cut();
                *slot.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(db);
                failing = false;
            }
            // Said once; tried again at each check, the snapshot before kept meanwhile.
            Some(Err(err)) if !failing => {
                log::warn!(
                    "USERS: cannot read the user database again ({err}); callers are named \
                     as before the change until it can be read"
                );
                failing = true;
            }
            _ => {}
        }
    }
}

/// A new snapshot from `read` when `path`'s stamp differs from `seen` (which then moves
/// on, unless the read failed: it is tried again next time). The stamp is taken before
/// the read, so a change during the read is seen at the next check.
fn changed(
    path: &Path,
    seen: &mut Stamp,
    read: impl FnOnce() -> std::io::Result<UserDb>,
) -> Option<std::io::Result<UserDb>> {
    let now = stamp(path);
    if now == *seen {
        return None;
    }
    let db = read();
    if db.is_ok() {
        *seen = now;
    }
    Some(db)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Via, Who};
    use std::path::PathBuf;

    fn user(name: &str, uid: u32, gid: u32) -> UserInfo {
        UserInfo {
            name: name.into(),
            uid,
            gid,
            home: PathBuf::from("/"),
        }
    }

    fn caller(uid: u32) -> Caller {
        Caller {
            via: Via::Unix,
            uid: Some(uid),
            user: None,
            gid: None,
        }
    }

    #[test]
    fn the_first_accounts_up_to_the_bound_name_callers_the_rest_stay_numbers() {
        let mut users: Vec<UserInfo> = (0..MAX_USERS as u32 + 10)
            .map(|i| user(&format!("u{i}"), 10_000 + i, 50))
            .collect();
        users.insert(1, user("again", 10_000, 7));
        let db = UserDb::new(users);
        assert!(db.cut);
        assert_eq!(db.by_uid.len(), MAX_USERS - 1);
        // The first entry of a uid wins, as getpwuid's would.
        let first = db.name(caller(10_000));
        assert_eq!((first.user.as_deref(), first.gid), (Some("u0"), Some(50)));
        let last_kept = db.name(caller(10_000 + MAX_USERS as u32 - 2));
        assert_eq!(last_kept.user, Some(format!("u{}", MAX_USERS - 2)));
        let beyond = db.name(caller(10_000 + MAX_USERS as u32));
        assert_eq!((beyond.user.as_deref(), beyond.gid), (None, None));
        assert_eq!(beyond.describe(), format!("uid {}", 10_000 + MAX_USERS));
        // Fail-closed: a caller the snapshot does not know is admitted by its uid only.
        let group = Who {
            gids: vec![50],
            members: vec![format!("u{}", MAX_USERS)],
            ..Who::default()
        };
        assert!(group.allows(&first));
        assert!(!group.allows(&beyond));
        let by_uid = Who {
            uids: vec![10_000 + MAX_USERS as u32],
            ..Who::default()
        };
        assert!(by_uid.allows(&beyond));
        // No uid from the kernel: nothing to name.
        let unknown = db.name(Caller::default());
        assert_eq!(unknown.user, None);
        assert!(!UserDb::new(vec![user("a", 1, 1)]).cut);
    }

    #[test]
    fn the_database_of_this_machine_names_every_account_of_its_passwd_file() {
        let db = UserDb::read().unwrap();
        assert!(!db.cut);
        let passwd = fs::read_to_string(PASSWD).unwrap();
        let mut seen = std::collections::HashSet::new();
        for line in passwd.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            let (Some(uid), Some(gid)) = (fields.get(2), fields.get(3)) else {
                continue;
            };
            let uid: u32 = uid.parse().unwrap();
            if seen.insert(uid) {
                let named = db.name(caller(uid));
                assert_eq!(named.user.as_deref(), Some(fields[0]), "{line}");
                assert_eq!(named.gid, gid.parse().ok(), "{line}");
            }
        }
        assert!(seen.contains(&0));
    }

    #[test]
    fn read_again_only_when_the_file_changed_and_until_a_read_succeeds() {
        let dir = std::env::temp_dir().join(format!("sudo-agent-users-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("passwd");
        fs::write(&path, "root:x:0:0::/root:/bin/sh\n").unwrap();
        let mut seen = stamp(&path);
        assert!(seen.is_some());
        let read_one = || Ok(UserDb::new(vec![user("new", 1001, 1001)]));
        assert!(changed(&path, &mut seen, read_one).is_none());

        fs::write(
            &path,
            "root:x:0:0::/root:/bin/sh\nnew:x:1001:1001::/:/bin/sh\n",
        )
        .unwrap();
        let failed = changed(&path, &mut seen, || Err(std::io::Error::other("disk")));
        assert!(failed.is_some_and(|r| r.is_err()));
        // The failure is tried again at the next check.
        let db = changed(&path, &mut seen, read_one).unwrap().unwrap();
        assert_eq!(db.name(caller(1001)).user.as_deref(), Some("new"));
        assert!(changed(&path, &mut seen, read_one).is_none());

        // Gone is a change too (and so is its return).
        fs::remove_file(&path).unwrap();
        assert!(changed(&path, &mut seen, read_one).is_some());
        assert_eq!(seen, None);
        fs::remove_dir_all(&dir).unwrap();
    }
}
