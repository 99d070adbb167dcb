//! The trust chain of a path the agent runs (a rule's program, the notify program) or
//! runs in (a rule's `cwd`): after following every link, the file and each directory
//! above it up to `/` must be owned by root (or the agent's own user) and not writable
//! by group or others, or another user could swap it and run anything as root. OpenSSH's
//! `StrictModes` judges `authorized_keys` the same way. Sticky directories such as
//! `/tmp` are no exception: a name there that is ever removed (tmp cleaning, a package
//! upgrade) can be taken by anyone.

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use super::files::{owner_name, trusted_owner};
use super::users::euid;

/// Links followed before giving up, as the kernel's own limit for ELOOP.
const MAX_LINKS: usize = 40;

/// Why a path cannot be trusted, worded for the person who must fix it.
#[derive(Debug)]
pub enum ChainError {
    NotAbsolute(PathBuf),
    /// The path, or a component on the way, does not exist.
    Missing(PathBuf),
    /// Links that loop, or more than [`MAX_LINKS`] of them.
    Loop(PathBuf),
    /// A path that must not be a link (see [`check_writable`]), and where it leads.
    Link {
        path: PathBuf,
        target: PathBuf,
    },
    Io {
        path: PathBuf,
        err: io::Error,
    },
    /// Components another user could change, each with its fix.
    Untrusted {
        path: PathBuf,
        weak: Vec<Weak>,
    },
}

/// One component of a chain that another user could change.
#[derive(Debug)]
pub struct Weak {
    path: PathBuf,
    dir: bool,
    uid: u32,
    mode: u32,
}

impl Weak {
    fn foreign_owner(&self) -> bool {
        !trusted_owner(self.uid)
    }

    fn writable(&self) -> bool {
        self.mode & 0o022 != 0
    }
}

impl fmt::Display for Weak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.path.display();
        let kind = if self.dir { "directory" } else { "file" };
        let owner = owner_name(self.uid);
        match (self.foreign_owner(), self.writable()) {
            (true, true) => write!(
                f,
                "{kind} {p} is owned by {owner} (uid {}) and mode {:04o} (writable by group or others)",
                self.uid, self.mode
            )?,
            (true, false) => write!(f, "{kind} {p} is owned by {owner} (uid {})", self.uid)?,
            _ => write!(
                f,
                "{kind} {p} is mode {:04o} (writable by group or others)",
                self.mode
            )?,
        }
        let shared_tmp = self.dir && self.mode & 0o1002 == 0o1002;
        if shared_tmp {
            // chmod of /tmp would break the system; the program must move instead.
            return f.write_str(
                "; a sticky directory does not protect a name that is ever removed, so \
                 move it under a directory only root can write, such as /usr/local/bin",
            );
        }
        let mut fixes = Vec::new();
        if self.foreign_owner() {
            fixes.push(format!("chown {} {p}", owner_name(euid())));
        }
        if self.writable() {
            fixes.push(format!("chmod go-w {p}"));
        }
        write!(f, "; run: {}", fixes.join(" && "))
    }
}

impl fmt::Display for ChainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAbsolute(path) => write!(f, "{:?} is not an absolute path", path.display()),
            Self::Missing(path) => write!(f, "{} does not exist", path.display()),
            Self::Loop(path) => write!(f, "{}: too many levels of symbolic links", path.display()),
            Self::Link { path, target } => write!(
                f,
                "{} is a symbolic link; name what it points to ({})",
                path.display(),
                target.display()
            ),
            Self::Io { path, err } => write!(f, "cannot inspect {}: {err}", path.display()),
            Self::Untrusted { path, weak } => {
                write!(
                    f,
                    "{} is not trusted (another user could change it): ",
                    path.display()
                )?;
                for (i, w) in weak.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{w}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ChainError {}

/// Walks `path` from `/`, following links, and judges `/`, every directory entered,
/// every directory a link is read from and the final file or directory. Returns the
/// path with links resolved, or every weak component at once with its fix.
pub fn check_chain(path: &Path) -> Result<PathBuf, ChainError> {
    if !path.is_absolute() {
        return Err(ChainError::NotAbsolute(path.into()));
    }
    let io_err = |at: &Path, err: io::Error| {
        if err.kind() == io::ErrorKind::NotFound {
            ChainError::Missing(path.into())
        } else {
            ChainError::Io {
                path: at.into(),
                err,
            }
        }
    };
    let mut weak = Vec::new();
    let mut resolved = PathBuf::from("/");
    let root = fs::symlink_metadata(&resolved).map_err(|e| io_err(&resolved, e))?;
    judge(&resolved, &root, &mut weak);
    // Names still to walk, the next one last.
    let mut todo: Vec<OsString> = Vec::new();
    push_names(&mut todo, path);
    let mut links = 0;
    while let Some(name) = todo.pop() {
        if name == ".." {
            // Its parent was judged on the way down (or is `/`).
            resolved.pop();
            continue;
        }
        let next = resolved.join(&name);
        let meta = fs::symlink_metadata(&next).map_err(|e| io_err(&next, e))?;
        if meta.file_type().is_symlink() {
            links += 1;
            if links > MAX_LINKS {
                return Err(ChainError::Loop(path.into()));
            }
            let target = fs::read_link(&next).map_err(|e| io_err(&next, e))?;
            if target.is_absolute() {
                resolved = PathBuf::from("/");
            }
            push_names(&mut todo, &target);
            continue;
        }
        if !todo.is_empty() && !meta.is_dir() {
            return Err(ChainError::Io {
                path: next,
                err: io::Error::from_raw_os_error(libc::ENOTDIR),
            });
        }
        judge(&next, &meta, &mut weak);
        resolved = next;
    }
    if weak.is_empty() {
        Ok(resolved)
    } else {
        Err(ChainError::Untrusted {
            path: path.into(),
            weak,
        })
    }
}

/// Checks a path a root job may write: a `writable` path of its sandbox, bound over
/// itself (links followed) whenever its namespace is made, so whoever can put a link in
/// its place could make any directory writable, `/etc` as well. It must not be a link,
/// and every directory on the way to it must pass [`check_chain`]; the path itself may be
/// anyone's (theirs to write in, not to replace).
pub fn check_writable(path: &Path) -> Result<(), ChainError> {
    let meta = fs::symlink_metadata(path).map_err(|err| match err.kind() {
        io::ErrorKind::NotFound => ChainError::Missing(path.into()),
        _ => ChainError::Io {
            path: path.into(),
            err,
        },
    })?;
    if meta.file_type().is_symlink() {
        let target = fs::canonicalize(path)
            .or_else(|_| fs::read_link(path))
            .unwrap_or_default();
        return Err(ChainError::Link {
            path: path.into(),
            target,
        });
    }
    match path.parent() {
        Some(parent) => check_chain(parent).map(drop),
        None => Ok(()),
    }
}

/// Pushes `path`'s names so that the first is popped first; `..` stays a name.
fn push_names(todo: &mut Vec<OsString>, path: &Path) {
    for part in path.components().rev() {
        match part {
            Component::Normal(name) => todo.push(name.to_os_string()),
            Component::ParentDir => todo.push("..".into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
}

fn judge(path: &Path, meta: &fs::Metadata, weak: &mut Vec<Weak>) {
    let w = Weak {
        path: path.into(),
        dir: meta.is_dir(),
        uid: meta.uid(),
        mode: meta.mode() & 0o7777,
    };
    if w.foreign_owner() || w.writable() {
        weak.push(w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::files::trusted_test_dir;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn chown(path: &Path, uid: u32) {
        std::os::unix::fs::lchown(path, Some(uid), None).unwrap();
    }

    fn program(dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, "#!/bin/sh\n").unwrap();
        chmod(&path, 0o755);
        path
    }

    #[test]
    fn system_programs_are_trusted_through_links() {
        // /bin is a link to usr/bin on merged-/usr systems; either way it resolves.
        let real = check_chain(Path::new("/bin/sh")).unwrap();
        assert!(real.is_absolute() && fs::metadata(&real).unwrap().is_file());
        assert_eq!(check_chain(Path::new("/")).unwrap(), Path::new("/"));
        assert!(matches!(
            check_chain(Path::new("/usr/../usr/bin/env")),
            Ok(p) if p == fs::canonicalize("/usr/bin/env").unwrap()
        ));
    }

    #[test]
    fn every_weak_component_is_named_with_its_fix() {
        let Some(dir) = trusted_test_dir("chain-weak") else {
            return;
        };
        let good = program(&dir, "good");
        assert_eq!(check_chain(&good).unwrap(), good);

        let open = dir.join("open");
        fs::create_dir(&open).unwrap();
        chmod(&open, 0o777);
        let inside = program(&open, "prog");
        let err = check_chain(&inside).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "directory {} is mode 0777 (writable by group or others); run: chmod go-w {}",
                open.display(),
                open.display()
            )),
            "{err}"
        );

        // Reached through a link from a trusted place: the directory behind it counts.
        let link = dir.join("link");
        symlink(&inside, &link).unwrap();
        let err = check_chain(&link).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{} is not trusted", link.display())),
            "{err}"
        );
        assert!(
            err.contains(&format!("chmod go-w {}", open.display())),
            "{err}"
        );

        // A link read from a weak directory counts too, even if it points somewhere safe.
        let hop = open.join("hop");
        symlink("/bin/sh", &hop).unwrap();
        assert!(check_chain(&hop).is_err());

        if euid() == 0 {
            let nobody = dir.join("nobody");
            fs::create_dir(&nobody).unwrap();
            chmod(&nobody, 0o755);
            chown(&nobody, 65534);
            let owned = program(&dir, "owned");
            chown(&owned, 65534);
            for (path, weak) in [(program(&nobody, "p"), &nobody), (owned.clone(), &owned)] {
                let err = check_chain(&path).unwrap_err().to_string();
                assert!(err.contains("(uid 65534)"), "{err}");
                assert!(
                    err.contains(&format!("run: chown root {}", weak.display())),
                    "{err}"
                );
            }
        }

        let group = program(&dir, "group");
        chmod(&group, 0o775);
        let err = check_chain(&group).unwrap_err().to_string();
        assert!(err.contains("is mode 0775"), "{err}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn sticky_directories_are_no_exception() {
        let Some(dir) = trusted_test_dir("chain-sticky") else {
            return;
        };
        let tmp = dir.join("tmp");
        fs::create_dir(&tmp).unwrap();
        chmod(&tmp, 0o1777);
        let err = check_chain(&program(&tmp, "p")).unwrap_err().to_string();
        assert!(err.contains("mode 1777"), "{err}");
        assert!(
            err.contains("/usr/local/bin") && !err.contains("chmod"),
            "{err}"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn missing_loops_and_relative_paths() {
        let Some(dir) = trusted_test_dir("chain-odd") else {
            return;
        };
        assert!(matches!(
            check_chain(&dir.join("nope")),
            Err(ChainError::Missing(_))
        ));
        symlink("b", dir.join("a")).unwrap();
        symlink("a", dir.join("b")).unwrap();
        assert!(matches!(
            check_chain(&dir.join("a")),
            Err(ChainError::Loop(_))
        ));
        let file = program(&dir, "f");
        assert!(matches!(
            check_chain(&file.join("x")),
            Err(ChainError::Io { .. })
        ));
        assert!(matches!(
            check_chain(Path::new("bin/sh")),
            Err(ChainError::NotAbsolute(_))
        ));
        // `..` after a link climbs from where the link led, not from the link's name.
        symlink(&file, dir.join("to-f")).unwrap();
        assert!(check_chain(&dir.join("to-f/..")).is_err());
        fs::remove_dir_all(dir).unwrap();
    }
}
