//! Result files: one `agent-<id>.txt` per finished job in a private directory, and a
//! bounded cleanup so the directory never grows without limit (the old agent never
//! deleted any).
//!
//! The directory is verified (0700, ours, not a link) by `files::ensure_private_dir`;
//! only root can create or rename entries in it, and in a sticky `/tmp` nobody else can
//! rename or remove the directory itself, so plain paths inside it are safe to use.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use crate::config::ResultsConfig;
use crate::files::{self, FileError};

const WHAT: &str = "results dir";

/// The verified results directory and its bounds.
#[derive(Debug)]
pub struct ResultsDir {
    dir: PathBuf,
    max_files: usize,
    max_bytes: u64,
    max_age_s: u64,
    /// Held from making room to the last byte written, so jobs ending together never
    /// push the directory past its bounds.
    room: Mutex<()>,
}

/// What one cleanup pass did and left.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cleanup {
    pub removed: usize,
    pub kept_files: usize,
    pub kept_bytes: u64,
    /// One line per entry that could not be examined or removed; never fatal.
    pub errors: Vec<String>,
}

/// A result file seen by cleanup.
struct Entry {
    mtime: (i64, i64),
    name: String,
    bytes: u64,
}

impl ResultsDir {
    /// Creates the directory 0700 if missing, else verifies it (not a link, ours, no
    /// group/other bits).
    pub fn open(cfg: &ResultsConfig) -> Result<ResultsDir, FileError> {
        files::ensure_private_dir(WHAT, &cfg.dir)?;
        Ok(ResultsDir {
            dir: cfg.dir.clone(),
            max_files: cfg.max_files,
            max_bytes: cfg.max_bytes,
            max_age_s: cfg.max_age_s,
            room: Mutex::new(()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `agent-<id>.txt` (mode 0600) and fsyncs it. The name must not exist yet:
    /// `O_CREAT|O_EXCL|O_NOFOLLOW` means a file or link planted there is an error, never
    /// followed and never overwritten. `id` must be 32 lowercase hex characters.
    pub fn write(&self, id: &str, text: &str) -> io::Result<PathBuf> {
        let (path, file) = self.create_with(id, text)?;
        synced(path, &file)
    }

    /// What a finished job calls: deletes the oldest files until the new one fits the
    /// bounds, then writes it ([`ResultsDir::write`]). Only the fsync happens outside
    /// the lock. Returns the path (or why not) and what the cleanup did.
    pub fn store(&self, id: &str, text: &str, now_unix: u64) -> (io::Result<PathBuf>, Cleanup) {
        let guard = self.room.lock().unwrap_or_else(PoisonError::into_inner);
        let report = self.sweep(now_unix, 1, text.len() as u64);
        let created = self.create_with(id, text);
        drop(guard);
        (created.and_then(|(path, file)| synced(path, &file)), report)
    }

    /// Creates `agent-<id>.txt` holding `text`, not yet synced.
    fn create_with(&self, id: &str, text: &str) -> io::Result<(PathBuf, fs::File)> {
        if id.len() != 32 || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("result id {id:?} is not 32 lowercase hex characters"),
            ));
        }
        let path = self.dir.join(format!("agent-{id}.txt"));
        let mut file = match create(&path) {
            // systemd-tmpfiles may have aged the directory away: make it again, once.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                files::ensure_private_dir(WHAT, &self.dir)
                    .map_err(|e| io::Error::other(e.to_string()))?;
                create(&path)?
            }
            other => other?,
        };
        if let Err(e) = file.write_all(text.as_bytes()) {
            // We created it (O_EXCL), so removing the partial file touches nothing else.
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        Ok((path, file))
    }

    /// Deletes result files, oldest first, until none is older than `max_age_s`, at most
    /// `max_files` remain and they total at most `max_bytes`. Only regular files named
    /// `agent-*.txt` directly in the directory are considered; links, directories and
    /// other names are never touched. Errors are collected, not fatal.
    pub fn cleanup(&self, now_unix: u64) -> Cleanup {
        self.sweep(now_unix, 0, 0)
    }

    /// [`ResultsDir::cleanup`], leaving room for `files` more files of `bytes` in all.
    fn sweep(&self, now_unix: u64, files: usize, bytes: u64) -> Cleanup {
        let (room_files, room_bytes) = (files, bytes);
        let mut report = Cleanup::default();
        if let Err(e) = files::ensure_private_dir(WHAT, &self.dir) {
            report.errors.push(e.to_string());
            return report;
        }
        let listing = match fs::read_dir(&self.dir) {
            Ok(listing) => listing,
            Err(e) => {
                report.errors.push(format!("{}: {e}", self.dir.display()));
                return report;
            }
        };
        let mut entries = Vec::new();
        for item in listing {
            let item = match item {
                Ok(item) => item,
                Err(e) => {
                    report.errors.push(format!("{}: {e}", self.dir.display()));
                    continue;
                }
            };
            let Some(name) = item.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !is_result_name(&name) {
                continue;
            }
            let path = self.dir.join(&name);
            match fs::symlink_metadata(&path) {
                // symlink_metadata: a link is seen as a link, never as its target.
                Ok(meta) if meta.file_type().is_file() => entries.push(Entry {
                    mtime: (meta.mtime(), meta.mtime_nsec()),
                    name,
                    bytes: meta.len(),
                }),
                Ok(_) => {}
                // Removed since the listing: nothing to do.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => report.errors.push(format!("{}: {e}", path.display())),
            }
        }
        entries.sort_by(|a, b| a.mtime.cmp(&b.mtime).then_with(|| a.name.cmp(&b.name)));

        let mut count = entries.len();
        let mut bytes: u64 = entries.iter().map(|e| e.bytes).sum();
        for entry in &entries {
            let mtime = u64::try_from(entry.mtime.0).unwrap_or(0);
            let too_old = now_unix.saturating_sub(mtime) > self.max_age_s;
            let over = count.saturating_add(room_files) > self.max_files
                || bytes.saturating_add(room_bytes) > self.max_bytes;
            if !(too_old || over) {
                // Sorted oldest first: every later entry is newer and the totals only
                // shrank, so nothing further needs removing.
                break;
            }
            let path = self.dir.join(&entry.name);
            match fs::remove_file(&path) {
                Ok(()) => {
                    report.removed += 1;
                    count -= 1;
                    bytes -= entry.bytes;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    count -= 1;
                    bytes -= entry.bytes;
                }
                // Still counted, so newer files go instead and the bound holds.
                Err(e) => report.errors.push(format!("{}: {e}", path.display())),
            }
        }
        report.kept_files = count;
        report.kept_bytes = bytes;
        report
    }
}

/// Flushes a result file to disk; on failure removes it (we created it, O_EXCL).
fn synced(path: PathBuf, file: &fs::File) -> io::Result<PathBuf> {
    match file.sync_all() {
        Ok(()) => Ok(path),
        Err(e) => {
            let _ = fs::remove_file(&path);
            Err(e)
        }
    }
}

fn is_result_name(name: &str) -> bool {
    name.starts_with("agent-") && name.ends_with(".txt")
}

/// (files, bytes) of result files in `dir`, for `/metrics`. Looks at no more than
/// `limit` entries: cleanup after every job keeps the private directory near
/// `max_files`, so a scrape costs one bounded listing. Unreadable means (0, 0).
pub fn usage(dir: &Path, limit: usize) -> (u64, u64) {
    let Ok(listing) = fs::read_dir(dir) else {
        return (0, 0);
    };
    listing
        .take(limit)
        .flatten()
        .filter(|item| item.file_name().to_str().is_some_and(is_result_name))
        // DirEntry::metadata does not follow links: a link is not a result file.
        .filter_map(|item| item.metadata().ok().filter(|m| m.file_type().is_file()))
        .fold((0, 0), |(files, bytes), meta| {
            (files + 1, bytes + meta.len())
        })
}

fn create(path: &Path) -> io::Result<fs::File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::time::{Duration, SystemTime};

    const ID: &str = "0123456789abcdef0123456789abcdef";

    fn tempdir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("sudo-agent-results-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn cfg(dir: &Path, max_files: usize, max_bytes: u64, max_age_s: u64) -> ResultsConfig {
        ResultsConfig {
            dir: dir.to_path_buf(),
            max_files,
            max_bytes,
            max_age_s,
        }
    }

    fn id(n: usize) -> String {
        format!("{n:032x}")
    }

    /// Writes result `n` with its mtime `age_s` seconds before `now`.
    fn put(results: &ResultsDir, n: usize, bytes: usize, now: u64, age_s: u64) -> PathBuf {
        let path = results.write(&id(n), &"x".repeat(bytes)).unwrap();
        let when = SystemTime::UNIX_EPOCH + Duration::from_secs(now - age_s);
        fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(when)
            .unwrap();
        path
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn write_creates_private_file_once() {
        let base = tempdir("write");
        let results = ResultsDir::open(&cfg(&base.join("r"), 10, 1 << 20, 3600)).unwrap();
        assert_eq!(fs::metadata(results.dir()).unwrap().mode() & 0o777, 0o700);
        let path = results.write(ID, "hello\n").unwrap();
        assert_eq!(path, results.dir().join(format!("agent-{ID}.txt")));
        assert_eq!(fs::read_to_string(&path).unwrap(), "hello\n");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);

        let err = results.write(ID, "again").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read_to_string(&path).unwrap(), "hello\n");
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn planted_symlink_is_not_followed() {
        let base = tempdir("plant");
        let results = ResultsDir::open(&cfg(&base.join("r"), 10, 1 << 20, 3600)).unwrap();
        let target = base.join("target");
        fs::write(&target, "original").unwrap();
        symlink(&target, results.dir().join(format!("agent-{ID}.txt"))).unwrap();
        assert!(results.write(ID, "evil").is_err());
        assert_eq!(fs::read_to_string(&target).unwrap(), "original");

        // A dangling link must not create its target either.
        let other = id(7);
        let missing = base.join("missing");
        symlink(&missing, results.dir().join(format!("agent-{other}.txt"))).unwrap();
        assert!(results.write(&other, "evil").is_err());
        assert!(!missing.exists());
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn bad_ids_rejected() {
        let base = tempdir("ids");
        let results = ResultsDir::open(&cfg(&base.join("r"), 10, 1 << 20, 3600)).unwrap();
        for bad in [
            "",
            "0123456789ABCDEF0123456789ABCDEF",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            "../../../../../../etc/passwd00000",
            "0123456789abcdef/123456789abcdef",
            "0123456789abcdeg0123456789abcdef",
        ] {
            let err = results.write(bad, "x").unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad}");
        }
        assert!(names(results.dir()).is_empty());
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn write_recreates_vanished_dir() {
        let base = tempdir("vanish");
        let results = ResultsDir::open(&cfg(&base.join("r"), 10, 1 << 20, 3600)).unwrap();
        fs::remove_dir(results.dir()).unwrap();
        results.write(ID, "x").unwrap();
        assert_eq!(fs::metadata(results.dir()).unwrap().mode() & 0o777, 0o700);
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn cleanup_by_count() {
        let base = tempdir("count");
        let now = 1_800_000_000;
        let results = ResultsDir::open(&cfg(&base.join("r"), 3, 1 << 20, 3600)).unwrap();
        for n in 0..5 {
            put(&results, n, 10, now, 100 - n as u64);
        }
        let report = results.cleanup(now);
        assert_eq!(
            report,
            Cleanup {
                removed: 2,
                kept_files: 3,
                kept_bytes: 30,
                errors: vec![]
            }
        );
        let want: Vec<String> = (2..5).map(|n| format!("agent-{}.txt", id(n))).collect();
        assert_eq!(names(results.dir()), want);
        // A second pass has nothing to do.
        assert_eq!(results.cleanup(now).removed, 0);
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn store_makes_room_first() {
        let base = tempdir("store");
        let now = 1_800_000_000;
        let results = ResultsDir::open(&cfg(&base.join("r"), 3, 250, 3600)).unwrap();
        for n in 0..3 {
            put(&results, n, 50, now, 100 - n as u64);
        }
        let (path, report) = results.store(&id(9), &"y".repeat(200), now);
        assert_eq!(
            path.unwrap(),
            results.dir().join(format!("agent-{}.txt", id(9)))
        );
        // One file goes for the count; then 100 + 200 > 250 bytes: a second for the bytes.
        assert_eq!(
            (report.removed, report.kept_files, report.kept_bytes),
            (2, 1, 50)
        );
        let want: Vec<String> = [2, 9]
            .iter()
            .map(|n| format!("agent-{}.txt", id(*n)))
            .collect();
        assert_eq!(names(results.dir()), want);
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn cleanup_by_bytes() {
        let base = tempdir("bytes");
        let now = 1_800_000_000;
        let results = ResultsDir::open(&cfg(&base.join("r"), 100, 250, 3600)).unwrap();
        for n in 0..4 {
            put(&results, n, 100, now, 100 - n as u64);
        }
        let report = results.cleanup(now);
        assert_eq!(report.removed, 2);
        assert_eq!(report.kept_files, 2);
        assert_eq!(report.kept_bytes, 200);
        let want: Vec<String> = (2..4).map(|n| format!("agent-{}.txt", id(n))).collect();
        assert_eq!(names(results.dir()), want);
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn cleanup_by_age() {
        let base = tempdir("age");
        let now = 1_800_000_000;
        let results = ResultsDir::open(&cfg(&base.join("r"), 100, 1 << 20, 3600)).unwrap();
        put(&results, 1, 5, now, 7200);
        put(&results, 2, 5, now, 3601);
        put(&results, 3, 5, now, 3600);
        put(&results, 4, 5, now, 0);
        let report = results.cleanup(now);
        assert_eq!(report.removed, 2);
        assert_eq!(report.kept_files, 2);
        let want: Vec<String> = [3, 4]
            .iter()
            .map(|n| format!("agent-{}.txt", id(*n)))
            .collect();
        assert_eq!(names(results.dir()), want);
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn cleanup_ignores_other_names_links_and_dirs() {
        let base = tempdir("ignore");
        let now = 1_800_000_000;
        let results = ResultsDir::open(&cfg(&base.join("r"), 0, 0, 0)).unwrap();
        let dir = results.dir();
        let outside = base.join("outside.txt");
        fs::write(&outside, "keep me").unwrap();
        fs::write(dir.join("notes.txt"), "keep").unwrap();
        fs::write(dir.join("agent-x.log"), "keep").unwrap();
        symlink(&outside, dir.join("agent-link.txt")).unwrap();
        fs::create_dir(dir.join("agent-dir.txt")).unwrap();
        fs::write(dir.join("agent-dir.txt/inner"), "keep").unwrap();
        put(&results, 1, 5, now, 10);

        let report = results.cleanup(now);
        assert_eq!(report.removed, 1);
        assert_eq!(report.kept_files, 0);
        assert_eq!(report.kept_bytes, 0);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(
            names(dir),
            [
                "agent-dir.txt",
                "agent-link.txt",
                "agent-x.log",
                "notes.txt"
            ]
        );
        assert_eq!(fs::read_to_string(&outside).unwrap(), "keep me");
        assert!(dir.join("agent-dir.txt/inner").exists());
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn open_refuses_symlinked_and_open_dirs() {
        let base = tempdir("open");
        let real = base.join("real");
        fs::create_dir(&real).unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o700)).unwrap();
        let link = base.join("link");
        symlink(&real, &link).unwrap();
        assert!(matches!(
            ResultsDir::open(&cfg(&link, 1, 1, 1)),
            Err(FileError::Symlink { .. })
        ));

        let open = base.join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            ResultsDir::open(&cfg(&open, 1, 1, 1)),
            Err(FileError::Mode { .. })
        ));
        assert!(ResultsDir::open(&cfg(&real, 1, 1, 1)).is_ok());
        fs::remove_dir_all(base).unwrap();
    }
}
