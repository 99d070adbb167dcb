//! The one place that opens files the agent trusts (secret, config, state) and the
//! directories it writes into. Links are refused, owners and modes are checked, and every
//! refusal names the file and the command that fixes it.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::users::{euid, lookup_uid};

/// Largest trusted file read into memory; a config or secret is a few KiB.
const MAX_TRUSTED_BYTES: u64 = 1 << 20;

/// How strictly a file's mode is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// Secrets and state: owner only, nothing for group or others (0600 or stricter).
    Private,
    /// Config: readable by others is fine, writable by anyone but the owner is not.
    NotWritableByOthers,
}

/// What went wrong with a trusted file, worded for the person who must fix it.
#[derive(Debug)]
pub enum FileError {
    Missing {
        what: String,
        path: PathBuf,
    },
    Symlink {
        what: String,
        path: PathBuf,
    },
    NotRegular {
        what: String,
        path: PathBuf,
    },
    NotDirectory {
        what: String,
        path: PathBuf,
    },
    Mode {
        what: String,
        path: PathBuf,
        mode: u32,
        want: u32,
    },
    Owner {
        what: String,
        path: PathBuf,
        uid: u32,
        want: u32,
    },
    TooLarge {
        what: String,
        path: PathBuf,
    },
    Io {
        what: String,
        path: PathBuf,
        err: io::Error,
    },
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing { what, path } => write!(f, "{what} {} does not exist", path.display()),
            Self::Symlink { what, path } => write!(
                f,
                "{what} {} is a symbolic link; replace it with the real file (links are never followed)",
                path.display()
            ),
            Self::NotRegular { what, path } => {
                write!(f, "{what} {} is not a regular file", path.display())
            }
            Self::NotDirectory { what, path } => {
                write!(f, "{what} {} is not a directory", path.display())
            }
            Self::Mode {
                what,
                path,
                mode,
                want,
            } => write!(
                f,
                "{what} {} is mode {mode:04o}; run: chmod {want:o} {}",
                path.display(),
                path.display()
            ),
            Self::Owner {
                what,
                path,
                uid,
                want,
            } => write!(
                f,
                "{what} {} is owned by uid {uid}, not {}; run: chown {} {}",
                path.display(),
                owner_name(*want),
                owner_name(*want),
                path.display()
            ),
            Self::TooLarge { what, path } => write!(
                f,
                "{what} {} is larger than {MAX_TRUSTED_BYTES} bytes",
                path.display()
            ),
            Self::Io { what, path, err } => {
                write!(f, "{what} {}: {err}", path.display())?;
                let dir = parent_or_dot(path).display();
                match err.raw_os_error() {
                    Some(libc::ENOSPC | libc::EDQUOT) => {
                        write!(f, "; free space on its disk (see: df -h {dir})")
                    }
                    Some(libc::EROFS) => write!(
                        f,
                        "; its file system is mounted read-only (see: findmnt -T {dir}); if \
                         the kernel did that after disk errors, check the disk (fsck) before \
                         mounting it read-write again"
                    ),
                    _ => Ok(()),
                }
            }
        }
    }
}

impl std::error::Error for FileError {}

impl FileError {
    /// A write failed because the disk takes none: it is full (or a quota is), or its
    /// file system is read-only (as ext4 remounts itself after disk errors). The file
    /// itself is fine, and writes may work again later.
    pub fn disk_refuses_writes(&self) -> bool {
        matches!(self, Self::Io { err, .. }
            if matches!(err.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT | libc::EROFS)))
    }
}

/// A user name for messages, or the uid when it has none.
pub(super) fn owner_name(uid: u32) -> String {
    match lookup_uid(uid) {
        Ok(Some(user)) => user.name,
        _ => uid.to_string(),
    }
}

fn io_err(what: &str, path: &Path, err: io::Error) -> FileError {
    if err.kind() == io::ErrorKind::NotFound {
        FileError::Missing {
            what: what.into(),
            path: path.into(),
        }
    } else if err.raw_os_error() == Some(libc::ELOOP) {
        FileError::Symlink {
            what: what.into(),
            path: path.into(),
        }
    } else {
        FileError::Io {
            what: what.into(),
            path: path.into(),
            err,
        }
    }
}

/// Who may own what the agent trusts: root, or the agent's own user.
pub(super) fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == euid()
}

/// Checks the owner of an open file or directory: this process's user, or root.
fn check_owner(what: &str, path: &Path, meta: &fs::Metadata) -> Result<(), FileError> {
    let me = euid();
    if !trusted_owner(meta.uid()) {
        return Err(FileError::Owner {
            what: what.into(),
            path: path.into(),
            uid: meta.uid(),
            want: me,
        });
    }
    Ok(())
}

/// Checks owner (this process's user, or root) and mode of an open file or directory.
fn check_meta(what: &str, path: &Path, meta: &fs::Metadata, trust: Trust) -> Result<(), FileError> {
    check_owner(what, path, meta)?;
    let mode = meta.mode() & 0o7777;
    let (forbidden, want) = match trust {
        Trust::Private => (0o077, mode & 0o700),
        Trust::NotWritableByOthers => (0o022, mode & !0o022),
    };
    if mode & forbidden != 0 {
        return Err(FileError::Mode {
            what: what.into(),
            path: path.into(),
            mode,
            want,
        });
    }
    Ok(())
}

/// Reads a trusted file: not a link, a regular file, owned by us or root, mode per `trust`.
/// `what` names it in errors ("secret file", "config file").
pub fn read_trusted(what: &str, path: &Path, trust: Trust) -> Result<String, FileError> {
    let (file, meta) = open_trusted(what, path, trust)?;
    if meta.len() > MAX_TRUSTED_BYTES {
        return Err(FileError::TooLarge {
            what: what.into(),
            path: path.into(),
        });
    }
    let mut text = String::new();
    file.take(MAX_TRUSTED_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| io_err(what, path, e))?;
    Ok(text)
}

/// Opens a trusted file for reading, with no size limit (the job journal can be larger
/// than a config): not a link, a regular file, owned by us or root, mode per `trust`.
pub fn open_trusted(
    what: &str,
    path: &Path,
    trust: Trust,
) -> Result<(File, fs::Metadata), FileError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path);
    checked_regular(what, path, file, trust)
}

/// The checks every trusted open ends with: a regular file, owner and mode per `trust`.
pub(super) fn checked_regular(
    what: &str,
    path: &Path,
    opened: io::Result<File>,
    trust: Trust,
) -> Result<(File, fs::Metadata), FileError> {
    let file = opened.map_err(|e| io_err(what, path, e))?;
    let meta = file.metadata().map_err(|e| io_err(what, path, e))?;
    if !meta.is_file() {
        return Err(FileError::NotRegular {
            what: what.into(),
            path: path.into(),
        });
    }
    check_meta(what, path, &meta, trust)?;
    Ok((file, meta))
}

/// Opens `path` for appending (the audit log): never through a link, and
/// without blocking on a FIFO planted there (`O_NONBLOCK` changes nothing for a regular
/// file). A file it creates gets exactly `mode` whatever the umask; an existing one must
/// be a regular file owned by us or root, and loses any permission bit beyond `mode`
/// (a 0644 log left by the Python agent becomes 0640), never gaining one.
pub fn open_append(what: &str, path: &Path, mode: u32) -> Result<File, FileError> {
    open_writable(what, path, mode, true)
}

/// [`open_append`], but for reading and for writing where the caller says (the
/// journal, which writes its lines over zeros kept ahead of them).
pub fn open_read_write(what: &str, path: &Path, mode: u32) -> Result<File, FileError> {
    open_writable(what, path, mode, false)
}

fn open_writable(what: &str, path: &Path, mode: u32, append: bool) -> Result<File, FileError> {
    let flags = libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK;
    let mut options = OpenOptions::new();
    if append {
        options.append(true);
    } else {
        options.read(true).write(true);
    }
    options.mode(mode).custom_flags(flags);
    let open_err = |err: io::Error| match err.raw_os_error() {
        Some(libc::ELOOP) => FileError::Symlink {
            what: what.into(),
            path: path.into(),
        },
        _ => FileError::Io {
            what: what.into(),
            path: path.into(),
            err,
        },
    };
    let (file, created) = match options.clone().create_new(true).open(path) {
        Ok(file) => (file, true),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
            (options.open(path).map_err(open_err)?, false)
        }
        Err(err) => return Err(open_err(err)),
    };
    let meta = file.metadata().map_err(open_err)?;
    if !meta.is_file() {
        return Err(FileError::NotRegular {
            what: what.into(),
            path: path.into(),
        });
    }
    check_owner(what, path, &meta)?;
    let current = meta.mode() & 0o7777;
    let want = if created { mode } else { current & mode };
    if current != want {
        file.set_permissions(fs::Permissions::from_mode(want))
            .map_err(open_err)?;
    }
    Ok(file)
}

/// The directory `path` is in: its parent, or `.` for a bare file name.
pub fn parent_or_dot(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Replaces `path` atomically: write a temp file beside it (O_EXCL, no links, `mode`),
/// fsync it, rename over the target, fsync the directory. A power cut leaves the old
/// content or the new, never a mix.
pub fn write_atomic(what: &str, path: &Path, bytes: &[u8], mode: u32) -> Result<(), FileError> {
    write_atomic_with(what, path, mode, |file| file.write_all(bytes))
}

/// [`write_atomic`] with the content written by `fill`, for files too large to build in
/// memory first.
pub fn write_atomic_with(
    what: &str,
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), FileError> {
    let mut new = Replacement::begin(what, path, mode)?;
    fill(new.file()).map_err(|err| new.failed(err))?;
    new.commit()
}

/// A file written beside `path` to replace it, in steps ([`write_atomic_with`] in one):
/// filled through [`Replacement::file`], then put in place by [`Replacement::commit`]
/// (synced, renamed, directory synced) or by [`Replacement::rename`] for a caller that
/// syncs as it needs; dropped before that, it is removed.
pub struct Replacement {
    file: File,
    path: PathBuf,
    what: String,
    temp: Temp,
}

/// The temp file's name: removed when dropped, unless it was put in place.
struct Temp {
    path: PathBuf,
    placed: bool,
}

impl Drop for Temp {
    fn drop(&mut self) {
        if !self.placed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl Replacement {
    /// Creates the temp file (`O_EXCL`, no links, `mode`) in `path`'s directory.
    pub fn begin(what: &str, path: &Path, mode: u32) -> Result<Replacement, FileError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = parent_or_dot(path).join(format!(".{name}.tmp.{}", std::process::id()));
        // A stale temp file from a crash under the same pid would block O_EXCL.
        let _ = fs::remove_file(&tmp);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(|err| io_err(what, path, err))?;
        Ok(Replacement {
            file,
            path: path.into(),
            what: what.into(),
            temp: Temp {
                path: tmp,
                placed: false,
            },
        })
    }

    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// `err` named for the file being replaced.
    pub fn failed(&self, err: io::Error) -> FileError {
        io_err(&self.what, &self.path, err)
    }

    /// Synced, renamed over the target, the directory synced: a power cut leaves the old
    /// content or the new, never a mix.
    pub fn commit(self) -> Result<(), FileError> {
        self.file.sync_all().map_err(|err| self.failed(err))?;
        let path = self.path.clone();
        self.rename()?;
        sync_dir(&path).map_err(|err| io_err("directory of", &path, err))
    }

    /// Renamed over the target, nothing synced: until the caller syncs the file and
    /// then [`sync_dir`], a power cut may leave either file under the name. Gives back
    /// the file, open for writing at its end.
    pub fn rename(self) -> Result<File, FileError> {
        let Replacement {
            file,
            path,
            what,
            mut temp,
        } = self;
        fs::rename(&temp.path, &path).map_err(|err| io_err(&what, &path, err))?;
        temp.placed = true;
        Ok(file)
    }
}

/// Syncs the directory `path` is in, which makes a rename to `path` durable.
pub fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(parent_or_dot(path))?.sync_all()
}

/// Makes sure `path` is a private directory of ours: created 0700 if missing (parents
/// 0755), otherwise it must be a real directory (not a link), owned by us, mode 0700 or
/// stricter. Never chmods what it did not create: a wrong mode may mean someone else
/// got there first.
pub fn ensure_private_dir(what: &str, path: &Path) -> Result<(), FileError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(parent)
                    .map_err(|e| io_err(what, parent, e))?;
            }
            match fs::DirBuilder::new().mode(0o700).create(path) {
                Ok(()) => fs::set_permissions(path, fs::Permissions::from_mode(0o700))
                    .map_err(|e| io_err(what, path, e))?,
                // Lost a race with another creator: fall through to the checks below.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err(what, path, e)),
            }
            check_private_dir(what, path)
        }
        Err(e) => Err(io_err(what, path, e)),
        Ok(_) => check_private_dir(what, path),
    }
}

/// The private directory `path`, opened without following a link and checked on the
/// descriptor (ours, a directory, mode 0700 or stricter); made again (as
/// [`ensure_private_dir`] does) if it went missing. What is created through the handle
/// lands in the directory that was checked, even if its path is swapped for a link in
/// between. Two system calls when all is well: this runs for every job.
pub fn open_private_dir(what: &str, path: &Path) -> Result<File, FileError> {
    let open = || {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(path)
    };
    let dir = match open() {
        Ok(dir) => dir,
        // Aged away (systemd-tmpfiles): made again, private, then opened.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            ensure_private_dir(what, path)?;
            open().map_err(|e| io_err(what, path, e))?
        }
        // A link or not a directory: the checks say which, and what to do.
        Err(e) => {
            check_private_dir(what, path)?;
            return Err(io_err(what, path, e));
        }
    };
    let meta = dir.metadata().map_err(|e| io_err(what, path, e))?;
    check_mine_private(what, path, &meta)?;
    Ok(dir)
}

/// A directory [`open_private_dir`] opened, kept for the next use.
#[derive(Debug)]
pub struct KeptDir {
    file: File,
    /// Its device and inode. A directory put at the path since has others: this one
    /// cannot be freed, and its number given out again, while it is open.
    id: (u64, u64),
}

impl KeptDir {
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Its device and inode: which directory it is.
    pub fn id(&self) -> (u64, u64) {
        self.id
    }
}

/// [`open_private_dir`], the directory kept in `kept`: while `path` still names that
/// directory, ours and private, one `lstat` says so instead of an open, a `fstat` and
/// a close each time (this runs for every job).
pub fn kept_private_dir<'a>(
    what: &str,
    path: &Path,
    kept: &'a mut Option<KeptDir>,
) -> Result<&'a KeptDir, FileError> {
    let same = |dir: &KeptDir| {
        fs::symlink_metadata(path).is_ok_and(|meta| {
            (meta.dev(), meta.ino()) == dir.id && check_mine_private(what, path, &meta).is_ok()
        })
    };
    let dir = match kept.take().filter(same) {
        Some(dir) => dir,
        None => {
            let file = open_private_dir(what, path)?;
            let meta = file.metadata().map_err(|e| io_err(what, path, e))?;
            KeptDir {
                file,
                id: (meta.dev(), meta.ino()),
            }
        }
    };
    Ok(kept.insert(dir))
}

/// Owned by this process's user (not root, unless that is us), no group or other bits.
fn check_mine_private(what: &str, path: &Path, meta: &fs::Metadata) -> Result<(), FileError> {
    if meta.uid() != euid() {
        return Err(FileError::Owner {
            what: what.into(),
            path: path.into(),
            uid: meta.uid(),
            want: euid(),
        });
    }
    check_meta(what, path, meta, Trust::Private)
}

fn check_private_dir(what: &str, path: &Path) -> Result<(), FileError> {
    let meta = fs::symlink_metadata(path).map_err(|e| io_err(what, path, e))?;
    if meta.file_type().is_symlink() {
        return Err(FileError::Symlink {
            what: what.into(),
            path: path.into(),
        });
    }
    if !meta.is_dir() {
        return Err(FileError::NotDirectory {
            what: what.into(),
            path: path.into(),
        });
    }
    check_mine_private(what, path, &meta)
}

/// Where unit tests make their directories: as root, a root-owned 0755 directory in
/// /run, so that programs written there pass the trust-chain check (nothing under the
/// world-writable temp dir does); otherwise the temp dir.
#[cfg(test)]
fn test_base() -> PathBuf {
    if euid() != 0 {
        return std::env::temp_dir();
    }
    let base = PathBuf::from("/run/sudo-agent-unit-tests");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&base)
        .unwrap();
    fs::set_permissions(&base, fs::Permissions::from_mode(0o755)).unwrap();
    base
}

/// A fresh, empty 0700 directory for one unit test (removed first if a previous run left
/// it behind); `tag` must be unique across the crate's tests.
#[cfg(test)]
pub(crate) fn test_dir(tag: &str) -> PathBuf {
    let dir = test_base().join(format!("sudo-agent-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

/// [`test_dir`] whose whole chain is trusted, or `None` (a loud skip; a failure with
/// `CI=true`) when not root: only root can make such a directory outside its home.
#[cfg(test)]
pub(crate) fn trusted_test_dir(tag: &str) -> Option<PathBuf> {
    if euid() == 0 {
        return Some(test_dir(tag));
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "trust-chain tests need root under CI=true"
    );
    eprintln!("SKIPPED: {tag} needs root for a directory whose whole chain is trusted");
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tempdir(tag: &str) -> PathBuf {
        test_dir(&format!("files-{tag}"))
    }

    #[test]
    fn a_disk_that_refuses_writes_is_told_apart_and_its_fix_named() {
        let error = |errno| FileError::Io {
            what: "journal file".into(),
            path: "/var/lib/sudo-agent/jobs.jsonl".into(),
            err: io::Error::from_raw_os_error(errno),
        };
        let full = error(libc::ENOSPC);
        assert!(full.disk_refuses_writes());
        assert!(
            full.to_string()
                .ends_with("; free space on its disk (see: df -h /var/lib/sudo-agent)"),
            "{full}"
        );
        let read_only = error(libc::EROFS);
        assert!(read_only.disk_refuses_writes());
        assert!(
            read_only
                .to_string()
                .contains("mounted read-only (see: findmnt -T /var/lib/sudo-agent); if"),
            "{read_only}"
        );
        let denied = error(libc::EACCES);
        assert!(!denied.disk_refuses_writes());
        assert!(!denied.to_string().contains("; "), "{denied}");
    }

    #[test]
    fn private_file_modes() {
        let dir = tempdir("modes");
        let path = dir.join("secret");
        write_atomic("secret file", &path, b"ABC", 0o600).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(
            read_trusted("secret file", &path, Trust::Private).unwrap(),
            "ABC"
        );

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_trusted("secret file", &path, Trust::Private)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is mode 0644; run: chmod 600"), "{err}");
        assert!(read_trusted("config file", &path, Trust::NotWritableByOthers).is_ok());

        fs::set_permissions(&path, fs::Permissions::from_mode(0o664)).unwrap();
        let err = read_trusted("config file", &path, Trust::NotWritableByOthers)
            .unwrap_err()
            .to_string();
        assert!(err.contains("run: chmod 644"), "{err}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn links_are_refused() {
        let dir = tempdir("links");
        let real = dir.join("real");
        write_atomic("secret file", &real, b"x", 0o600).unwrap();
        let link = dir.join("link");
        symlink(&real, &link).unwrap();
        let err = read_trusted("secret file", &link, Trust::Private).unwrap_err();
        assert!(matches!(err, FileError::Symlink { .. }), "{err}");

        let dlink = dir.join("dlink");
        fs::create_dir(dir.join("d")).unwrap();
        symlink(dir.join("d"), &dlink).unwrap();
        assert!(matches!(
            ensure_private_dir("results dir", &dlink),
            Err(FileError::Symlink { .. })
        ));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn private_dir_created_and_checked() {
        let dir = tempdir("dirs");
        let sub = dir.join("a/b");
        ensure_private_dir("results dir", &sub).unwrap();
        assert_eq!(fs::metadata(&sub).unwrap().mode() & 0o777, 0o700);
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o777)).unwrap();
        let err = ensure_private_dir("results dir", &sub)
            .unwrap_err()
            .to_string();
        assert!(err.contains("mode 0777; run: chmod 700"), "{err}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_kept_directory_serves_only_while_its_path_still_names_it_ours_and_private() {
        let base = tempdir("kept");
        let path = base.join("results");
        let mut kept = None;
        use std::os::fd::AsFd;
        // What lands through the handle, read back by path.
        let put = |kept: &mut Option<KeptDir>, name: &str| {
            let dir = kept_private_dir("results dir", &path, kept)?.file();
            crate::sys::create_at(dir.as_fd(), name, 0o600).map_err(|e| io_err("", &path, e))?;
            Ok::<bool, FileError>(path.join(name).exists())
        };
        // Missing: made, private.
        assert!(put(&mut kept, "a").unwrap());
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o700);
        assert!(put(&mut kept, "b").unwrap(), "the kept one, still there");
        // Swapped for another directory: that one, not the old one renamed away.
        fs::rename(&path, base.join("old")).unwrap();
        ensure_private_dir("results dir", &path).unwrap();
        assert!(put(&mut kept, "c").unwrap());
        assert!(!base.join("old/c").exists());
        // Opened to others: refused, as when first opened.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        let err = put(&mut kept, "d").unwrap_err().to_string();
        assert!(err.contains("mode 0755; run: chmod 700"), "{err}");
        assert!(kept.is_none(), "a refused directory is not kept");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
        assert!(put(&mut kept, "d").unwrap());
        // Aged away, then a link put where it was: refused, nothing lands where it points.
        fs::remove_dir_all(&path).unwrap();
        symlink(base.join("old"), &path).unwrap();
        let err = put(&mut kept, "e").unwrap_err();
        assert!(matches!(err, FileError::Symlink { .. }), "{err}");
        assert!(!base.join("old/e").exists());
        fs::remove_dir_all(base).unwrap();
    }
}
