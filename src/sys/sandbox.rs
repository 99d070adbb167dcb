//! A rule's sandbox: a private mount namespace where every mount is read-only but the
//! `writable` paths (made ahead by a thread of its own and kept, see `mntns`), a fresh
//! `/tmp`, a network namespace with only a loopback that is down, and `no_new_privs`;
//! the job's own process enters or makes them between `clone` and `exec` (see `child`),
//! so nothing outside the job changes.
//!
//! Everything the child needs is prepared before the clone ([`Sandbox::prepare`]); a step
//! the kernel refuses fails the spawn with that step named ([`Step`]), and nothing runs.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::cerr::cerr;
use super::{mntns, mounts};

/// What a rule's `sandbox` asks for (after `no_pin`'s default of `read_only`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sandbox {
    /// Every mount read-only in the job's own mount namespace, but `writable`.
    pub read_only: bool,
    pub writable: Vec<PathBuf>,
    /// `"network": false`: a network namespace of its own, loopback only and down.
    pub private_network: bool,
    pub private_tmp: bool,
    pub no_new_privileges: bool,
}

impl Sandbox {
    pub fn is_empty(&self) -> bool {
        *self == Sandbox::default()
    }

    /// Whether it needs a mount namespace.
    pub fn mounts(&self) -> bool {
        self.read_only || self.private_tmp
    }

    /// What the child will do, prepared while allocating is still allowed. The
    /// read-only mounts are a namespace made beforehand and entered (`mntns`); a private
    /// `/tmp` and network are the child's own namespaces, made by it (the first over a
    /// copy of the read-only one).
    pub fn prepare(&self) -> io::Result<SandboxSetup> {
        let enter = if self.read_only {
            // Gone now: refused as the bind mount in a fresh namespace would be.
            let bound = identities(&self.writable).map_err(|e| Step::Writable.tag(e))?;
            Some(mntns::read_only(&self.writable, &bound, || {
                make(&self.writable)
            })?)
        } else {
            None
        };
        let mut unshare = 0;
        if self.private_tmp {
            unshare |= libc::CLONE_NEWNS;
        }
        if self.private_network {
            unshare |= libc::CLONE_NEWNET;
        }
        Ok(SandboxSetup {
            enter,
            unshare,
            no_new_privileges: self.no_new_privileges,
        })
    }
}

/// A read-only mount namespace where only `writable` can be written, made by a thread of
/// its own, which then names it and opens its mount table (for `mntns` to see what jobs
/// change there): a thread may leave the agent's mount namespace (`unshare` gives it its
/// own file system context too), and the namespace outlives it through the descriptors.
fn make(writable: &[PathBuf]) -> io::Result<(OwnedFd, OwnedFd)> {
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("sandbox".into())
            .spawn_scoped(scope, || {
                // SAFETY: unshare takes a flag word; it changes this thread alone.
                cerr(unsafe { libc::unshare(libc::CLONE_NEWNS) })
                    .map_err(|e| Step::Namespaces.tag(e))?;
                private()?;
                // Listed only now, from the namespace no mount reaches any more: a mount
                // made in the agent's meanwhile would be in the copy but not in a list
                // read before, and stay writable where `mount_setattr` is missing.
                let all = mounts::mounts_of("/proc/thread-self/mountinfo")
                    .map_err(|e| Step::ReadOnly.tag(e))?;
                let points = all
                    .iter()
                    .map(|m| Ok((c_path(&m.point)?, mount_flags(&m.options))))
                    .collect::<io::Result<Vec<_>>>()?;
                let listed = points.iter().map(|(p, f)| (p.as_c_str(), *f));
                set_read_only(c"/", true, listed).map_err(|e| Step::ReadOnly.tag(e))?;
                for path in writable {
                    make_writable(path, &all).map_err(|e| Step::Writable.tag(e))?;
                }
                Ok((
                    mntns::open_cloexec(c"/proc/thread-self/ns/mnt")?,
                    mntns::open_cloexec(c"/proc/thread-self/mountinfo")?,
                ))
            })?;
        thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the thread making the sandbox panicked")))
    })
}

/// `path` bound over itself and made writable, repeating for the fallback's remount the
/// flags of the mount it is on (the deepest of `all` that holds it).
fn make_writable(path: &Path, all: &[mounts::Mount]) -> io::Result<()> {
    let flags = all
        .iter()
        .filter(|m| path.starts_with(&m.point))
        .max_by_key(|m| m.point.as_os_str().len())
        .map_or(0, |m| mount_flags(&m.options));
    let path = c_path(path)?;
    mount(Some(&path), &path, None, libc::MS_BIND | libc::MS_REC, None)?;
    set_read_only(&path, false, std::iter::once((path.as_c_str(), flags)))
}

/// No mount made in this namespace may reach the agent's, and none made there may
/// appear here (it would not be read-only).
fn private() -> io::Result<()> {
    mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None).map_err(|e| Step::Private.tag(e))
}

fn identities(paths: &[PathBuf]) -> io::Result<mntns::Identities> {
    paths
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| (m.dev(), m.ino())))
        .collect()
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// The per-mount flags mountinfo lists, which a bind remount must repeat (or it would
/// clear `nosuid`, `nodev`, `noexec`).
fn mount_flags(options: &str) -> libc::c_ulong {
    options
        .split(',')
        .map(|o| match o {
            "ro" => libc::MS_RDONLY,
            "nosuid" => libc::MS_NOSUID,
            "nodev" => libc::MS_NODEV,
            "noexec" => libc::MS_NOEXEC,
            "noatime" => libc::MS_NOATIME,
            "nodiratime" => libc::MS_NODIRATIME,
            "relatime" => libc::MS_RELATIME,
            _ => 0,
        })
        .fold(0, |all, f| all | f)
}

/// The sandbox as the child applies it, allocating nothing.
#[derive(Debug)]
pub struct SandboxSetup {
    /// The read-only namespace to enter (lent by `mntns`).
    enter: Option<mntns::LentNamespace>,
    /// `CLONE_NEWNS` for a private `/tmp`, `CLONE_NEWNET` for a private network.
    unshare: libc::c_int,
    no_new_privileges: bool,
}

/// The containment steps a child can fail at; the spawn error names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Cgroup = 1,
    Namespaces,
    Private,
    ReadOnly,
    Writable,
    PrivateTmp,
    NoNewPrivileges,
    Enter,
}

/// Marks an errno as carrying a [`Step`] in the bits above it. The child reports an
/// error to `spawn` as one `i32` errno, whatever its value, so the step needs no other
/// channel out of the child.
const TAGGED: i32 = 0x4000_0000;

impl Step {
    /// `err` (an errno) with this step added; allocates nothing.
    pub fn tag(self, err: io::Error) -> io::Error {
        let errno = err.raw_os_error().unwrap_or(libc::EINVAL) & 0xffff;
        io::Error::from_raw_os_error(TAGGED | (self as i32) << 16 | errno)
    }

    fn what(self) -> &'static str {
        match self {
            Step::Cgroup => "entering the job's cgroup",
            Step::Namespaces => "creating the sandbox's namespaces (unshare)",
            Step::Private => "making the sandbox's mounts private",
            Step::ReadOnly => "making every mount read-only (read_only)",
            Step::Writable => "making a writable path writable",
            Step::PrivateTmp => "mounting a private /tmp (private_tmp)",
            Step::NoNewPrivileges => "setting no_new_privileges",
            Step::Enter => "entering the sandbox's read-only mount namespace (setns)",
        }
    }
}

/// For a spawn error: which containment step failed and why, if it was one.
pub fn failed_step(err: &io::Error) -> Option<String> {
    let raw = err.raw_os_error().filter(|r| r & TAGGED != 0)?;
    let step = [
        Step::Cgroup,
        Step::Namespaces,
        Step::Private,
        Step::ReadOnly,
        Step::Writable,
        Step::PrivateTmp,
        Step::NoNewPrivileges,
        Step::Enter,
    ]
    .into_iter()
    .find(|s| *s as i32 == (raw >> 16) & 0xff)?;
    let why = io::Error::from_raw_os_error(raw & 0xffff);
    Some(format!("{}: {why}", step.what()))
}

impl SandboxSetup {
    /// After the spawn: the read-only namespace the child runs in, kept until the job
    /// has ended. A child that unshared its own copy of it (`private_tmp`) runs there
    /// instead, so the one it entered goes back at once to be lent to the next job.
    pub(super) fn into_lent(self) -> Option<mntns::LentNamespace> {
        self.enter.filter(|_| self.unshare & libc::CLONE_NEWNS == 0)
    }

    /// In the child, as root, before it drops to the rule's user: the read-only
    /// namespace made beforehand, then namespaces of its own and the private /tmp; then
    /// `no_new_privs`.
    pub(super) fn apply(&self) -> io::Result<()> {
        if let Some(ns) = &self.enter {
            // A file system context shared with another thread cannot enter a mount
            // namespace (EINVAL): the child's own is not shared, but under qemu-user the
            // child is a fork with an emulator thread of its own. A no-op otherwise.
            // SAFETY: unshare takes a flag word.
            cerr(unsafe { libc::unshare(libc::CLONE_FS) }).map_err(|e| Step::Enter.tag(e))?;
            // SAFETY: setns takes a descriptor (a mount namespace, kept open by `self`)
            // and a flag.
            cerr(unsafe { libc::setns(ns.fd(), libc::CLONE_NEWNS) })
                .map_err(|e| Step::Enter.tag(e))?;
        }
        if self.unshare != 0 {
            // SAFETY: unshare takes a flag word; the child is single-threaded (a thread
            // of `mntns` leaves only its own view of the mounts).
            cerr(unsafe { libc::unshare(self.unshare) }).map_err(|e| Step::Namespaces.tag(e))?;
        }
        if self.unshare & libc::CLONE_NEWNS != 0 {
            // A private /tmp, over a copy of the read-only namespace if it entered one.
            private()?;
            for dir in [c"/tmp", c"/var/tmp"] {
                let flags = libc::MS_NOSUID | libc::MS_NODEV;
                match mount(
                    Some(c"tmpfs"),
                    dir,
                    Some(c"tmpfs"),
                    flags,
                    Some(c"mode=1777"),
                ) {
                    Err(e) if dir == c"/var/tmp" && e.raw_os_error() == Some(libc::ENOENT) => {}
                    other => other.map_err(|e| Step::PrivateTmp.tag(e))?,
                }
            }
        }
        if self.no_new_privileges {
            // SAFETY: prctl with integer arguments only.
            cerr(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })
                .map_err(|e| Step::NoNewPrivileges.tag(e))?;
        }
        Ok(())
    }
}

fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> io::Result<()> {
    let ptr = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: every pointer is null or a NUL-terminated string alive for the call.
    cerr(unsafe {
        libc::mount(
            ptr(source),
            target.as_ptr(),
            ptr(fstype),
            flags,
            ptr(data).cast(),
        )
    })?;
    Ok(())
}

/// The kernel's `struct mount_attr` (linux/mount.h).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 1;

/// Makes the mount at `path` and every mount below it read-only (or writable again):
/// `mount_setattr` (Linux 5.12+). Where that is missing (ENOSYS: older kernels,
/// qemu-user) or refused by a seccomp filter (EPERM), a bind remount of each mount in
/// `fallback`, repeating its own flags; a mount point another mount has hidden cannot
/// be reached, so it is skipped.
fn set_read_only<'a>(
    path: &CStr,
    on: bool,
    fallback: impl Iterator<Item = (&'a CStr, libc::c_ulong)>,
) -> io::Result<()> {
    let bit = |set: bool| if set { MOUNT_ATTR_RDONLY } else { 0 };
    let attr = MountAttr {
        attr_set: bit(on),
        attr_clr: bit(!on),
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `path` is NUL-terminated and `attr` a mount_attr of the size passed, both
    // alive for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    match cerr(rc) {
        Ok(_) => return Ok(()),
        Err(e) if !matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => return Err(e),
        Err(_) => {}
    }
    for (point, flags) in fallback {
        let flags = if on {
            flags | libc::MS_RDONLY
        } else {
            flags & !libc::MS_RDONLY
        };
        let remount = libc::MS_REMOUNT | libc::MS_BIND | flags;
        match mount(None, point, None, remount, None) {
            Err(e) if !matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EINVAL)) => {
                return Err(e);
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_follow_the_mount_options() {
        assert_eq!(
            mount_flags("rw,nosuid,nodev,relatime"),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_RELATIME
        );
        assert_eq!(mount_flags("ro,noexec"), libc::MS_RDONLY | libc::MS_NOEXEC);
    }

    #[test]
    fn a_step_rides_on_the_errno_and_comes_back_named() {
        let err = Step::ReadOnly.tag(io::Error::from_raw_os_error(libc::EPERM));
        let text = failed_step(&err).unwrap();
        assert!(text.starts_with("making every mount read-only"), "{text}");
        assert!(text.contains("Operation not permitted"), "{text}");
        assert_eq!(
            failed_step(&io::Error::from_raw_os_error(libc::ENOENT)),
            None
        );
    }
}
