//! What stage 2 collects ([`Problems`]: every problem at once, each with the key it is
//! about), and the check every program the agent runs must pass.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::raw::{Problem, RawWho};
use crate::policy::Who;
use crate::sys::{self, check_chain};

/// Collects problems; each check pushes and carries on.
pub(super) struct Problems(pub(super) Vec<Problem>);

impl Problems {
    pub(super) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem::new(path, message));
    }

    /// `value` if within `min..=max`, else a problem (the value is still returned: the
    /// config is refused anyway, and later checks can go on).
    pub(super) fn range(&mut self, path: &str, value: u64, min: u64, max: u64) -> u64 {
        if value < min || value > max {
            self.push(
                path,
                format!("{value} is out of range; use a value from {min} to {max}"),
            );
        }
        value
    }

    pub(super) fn absolute(&mut self, path: &str, value: PathBuf, example: &str) -> PathBuf {
        if !value.is_absolute() {
            self.push(
                path,
                format!(
                    "{:?} is not an absolute path; write the full path, e.g. {example}",
                    value.display().to_string()
                ),
            );
        } else if value.as_os_str().as_encoded_bytes().contains(&0) {
            self.push(path, "contains a NUL byte");
        }
        value
    }

    /// The user or group `name` (`kind` is "user" or "group") through `lookup`, or a
    /// problem saying how to create it.
    pub(super) fn account<T>(
        &mut self,
        path: &str,
        kind: &str,
        name: &str,
        lookup: impl Fn(&str) -> io::Result<Option<T>>,
    ) -> Option<T> {
        let problem = match lookup(name) {
            Ok(Some(found)) => return Some(found),
            Ok(None) => {
                let (noun, add) = match kind {
                    "user" => ("account", "useradd"),
                    _ => ("group", "groupadd"),
                };
                format!(
                    "no {kind} {name:?} on this system; name an existing {noun} or create it \
                     ({add} --system {name})"
                )
            }
            Err(e) => format!("cannot look up {kind} {name:?}: {e}"),
        };
        self.push(path, problem);
        None
    }

    /// Octal permission bits (a umask `"027"`, a mode `"0660"`), at most 0777; `what`
    /// ends the complaint.
    pub(super) fn octal(&mut self, path: &str, text: &str, what: &str) -> Option<u32> {
        let value =
            (!text.is_empty() && text.len() <= 4 && text.bytes().all(|b| matches!(b, b'0'..=b'7')))
                .then(|| u32::from_str_radix(text, 8).ok())
                .flatten()
                .filter(|&v| v <= 0o777);
        if value.is_none() {
            self.push(path, format!("is not an octal {what}"));
        }
        value
    }

    /// A list of users and groups, each name looked up now; `users` and `groups` may
    /// not both be empty (that would admit nobody, which is surely a mistake).
    pub(super) fn who(&mut self, path: &str, raw: RawWho) -> Who {
        if raw.users.is_empty() && raw.groups.is_empty() {
            self.push(
                path,
                "names no user and no group; list who is meant, e.g. {\"users\": [\"alice\"]}, \
                 or remove it",
            );
        }
        let mut who = Who::default();
        for (i, name) in raw.users.iter().enumerate() {
            let user = self.account(
                &format!("{path}.users[{i}]"),
                "user",
                name,
                sys::lookup_user,
            );
            who.uids.extend(user.map(|u| u.uid));
            who.shown.push(name.clone());
        }
        for (i, name) in raw.groups.iter().enumerate() {
            let at = format!("{path}.groups[{i}]");
            if let Some((gid, members)) = self.account(&at, "group", name, sys::group_with_members)
            {
                who.gids.push(gid);
                who.members.extend(members);
            }
            who.shown.push(format!("@{name}"));
        }
        who
    }

    /// An argv run without a shell (`notify`, `approvals.notify`).
    pub(super) fn command(&mut self, path: &str, argv: &[String]) {
        match argv.first() {
            None => self.push(
                path,
                "is empty; remove it, or give the command as [\"/absolute/program\", \
                 \"arg\", ...]",
            ),
            Some(program) => {
                if let Some(why) = program_problem(Path::new(program)) {
                    self.push(format!("{path}[0]"), why);
                }
            }
        }
        for (i, arg) in argv.iter().enumerate() {
            self.no_nul(&format!("{path}[{i}]"), arg);
        }
    }

    pub(super) fn no_nul(&mut self, path: &str, value: &str) {
        if value.contains('\0') {
            self.push(
                path,
                "contains a NUL byte, which no command argument can hold",
            );
        }
    }
}

/// Why `path` cannot be a program the agent runs as root, or `None` when it can: it must
/// be an existing regular file (symlinks followed) with an execute bit, and it and every
/// directory on the way to it owned by root and not writable by group or others
/// (whoever can change any of them could run anything as root).
pub(crate) fn program_problem(path: &Path) -> Option<String> {
    let shown = path.display();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| shown.to_string());
    let hint = format!("use the program's absolute path (see: command -v {name})");
    if !path.is_absolute() {
        return Some(format!(
            "{:?} is not an absolute path; {hint}",
            shown.to_string()
        ));
    }
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Some(format!("{shown} does not exist; {hint}"));
        }
        Err(e) => return Some(format!("cannot inspect {shown}: {e}; {hint}")),
    };
    let mode = meta.permissions().mode() & 0o7777;
    if !meta.is_file() {
        Some(format!("{shown} is not a regular file; {hint}"))
    } else if mode & 0o111 == 0 {
        Some(format!(
            "{shown} is not executable (mode {mode:04o}); name an executable program"
        ))
    } else {
        check_chain(path).err().map(|e| e.to_string())
    }
}
