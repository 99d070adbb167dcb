//! Local accounts and groups from the user database (getpwnam_r, getgrnam_r, and
//! getpwent for the whole list).

use std::ffi::{CStr, CString};
use std::io;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

/// A local account, as `getpwnam(3)` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

/// Effective user id of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Looks up a user by name; `Ok(None)` when no such user exists.
pub fn lookup_user(name: &str) -> io::Result<Option<UserInfo>> {
    let Ok(cname) = CString::new(name) else {
        return Ok(None);
    };
    passwd_entry(&move |pwd, buf, len, out| {
        // SAFETY: all pointers come from `passwd_entry` and are valid for the call;
        // `buf` is `len` bytes long.
        unsafe { libc::getpwnam_r(cname.as_ptr(), pwd, buf, len, out) }
    })
}

/// Looks up a user by uid; `Ok(None)` when the uid has no passwd entry.
pub fn lookup_uid(uid: u32) -> io::Result<Option<UserInfo>> {
    passwd_entry(&move |pwd, buf, len, out| {
        // SAFETY: as in `lookup_user`.
        unsafe { libc::getpwuid_r(uid, pwd, buf, len, out) }
    })
}

type PasswdCall =
    dyn Fn(*mut libc::passwd, *mut libc::c_char, libc::size_t, *mut *mut libc::passwd) -> i32;

fn passwd_entry(call: &PasswdCall) -> io::Result<Option<UserInfo>> {
    let mut buf = vec![0 as libc::c_char; 4096];
    loop {
        // SAFETY: passwd is a plain C struct of integers and pointers; all-zero is valid.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        let rc = call(&mut pwd, buf.as_mut_ptr(), buf.len(), &mut out);
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        if out.is_null() {
            return Ok(None);
        }
        // SAFETY: on success the strings of `pwd` live inside `buf`, which outlives this
        // call.
        return Ok(Some(unsafe { user_info(&pwd) }));
    }
}

/// The account a `passwd` entry describes.
///
/// # Safety
/// `pw_name` and `pw_dir` must point to NUL-terminated strings.
unsafe fn user_info(pwd: &libc::passwd) -> UserInfo {
    // SAFETY: the caller promises both strings are NUL-terminated and alive.
    let (name, home) = unsafe {
        (
            CStr::from_ptr(pwd.pw_name).to_string_lossy().into_owned(),
            CStr::from_ptr(pwd.pw_dir).to_string_lossy().into_owned(),
        )
    };
    UserInfo {
        name,
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
        home: PathBuf::from(home),
    }
}

/// getpwent's place in the database is one per process: one enumeration at a time.
static ENUMERATING: Mutex<()> = Mutex::new(());

/// The first `max` accounts of the user database, in its order (what `getent passwd`
/// lists). An error partway (an unreadable file, a failing disk) is an error, never a
/// shorter list.
pub fn all_users(max: usize) -> io::Result<Vec<UserInfo>> {
    let _alone = ENUMERATING.lock().unwrap_or_else(PoisonError::into_inner);
    // SAFETY: no preconditions; it rewinds this process's enumeration, which no other
    // thread uses while `ENUMERATING` is held.
    unsafe { libc::setpwent() };
    let mut users = Vec::new();
    let read = loop {
        if users.len() >= max {
            break Ok(());
        }
        // getpwent says "no more" and "failed" with the same NULL; errno tells them apart.
        // SAFETY: errno is this thread's own int.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: as for setpwent; the entry stays valid until the next getpwent call.
        let pwd = unsafe { libc::getpwent() };
        if pwd.is_null() {
            let err = io::Error::last_os_error();
            // glibc ends with ENOENT, musl with errno untouched.
            break match err.raw_os_error() {
                Some(0 | libc::ENOENT) => Ok(()),
                _ => Err(err),
            };
        }
        // SAFETY: a non-NULL entry has NUL-terminated strings, alive until the next call.
        users.push(unsafe { user_info(&*pwd) });
    };
    // SAFETY: as for setpwent; closes the database file.
    unsafe { libc::endpwent() };
    read.map(|()| users)
}

/// Looks up a group id by name; `Ok(None)` when no such group exists.
pub fn lookup_group(name: &str) -> io::Result<Option<u32>> {
    Ok(group_with_members(name)?.map(|(gid, _)| gid))
}

/// A group's id and the member names `/etc/group` lists for it (not the users whose
/// primary group it is); `Ok(None)` when no such group exists.
pub fn group_with_members(name: &str) -> io::Result<Option<(u32, Vec<String>)>> {
    let Ok(cname) = CString::new(name) else {
        return Ok(None);
    };
    let mut buf = vec![0 as libc::c_char; 4096];
    loop {
        // SAFETY: group is a plain C struct of integers and pointers; all-zero is valid.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut out: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call and `buf` is `buf.len()` bytes.
        let rc = unsafe {
            libc::getgrnam_r(
                cname.as_ptr(),
                &mut grp,
                buf.as_mut_ptr(),
                buf.len(),
                &mut out,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        if out.is_null() {
            return Ok(None);
        }
        let mut members = Vec::new();
        let mut at = grp.gr_mem;
        // SAFETY: on success gr_mem is a NULL-terminated array of pointers to
        // NUL-terminated strings inside `buf`, which outlives this loop.
        unsafe {
            while !at.is_null() && !(*at).is_null() {
                members.push(CStr::from_ptr(*at).to_string_lossy().into_owned());
                at = at.add(1);
            }
        }
        return Ok(Some((grp.gr_gid, members)));
    }
}
