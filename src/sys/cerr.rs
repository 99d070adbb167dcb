//! The one place a libc return value of `-1` becomes the `io::Error` that `errno` names
//! (sudo-rs's `cerr`), so no call site can forget to look.

use std::io;

/// `Err(last_os_error())` when `res` is -1, else `Ok(res)`.
pub fn cerr<Int: Copy + TryInto<libc::c_long>>(res: Int) -> io::Result<Int> {
    match res.try_into() {
        Ok(-1) => Err(io::Error::last_os_error()),
        _ => Ok(res),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minus_one_is_the_errno() {
        assert_eq!(cerr(3).unwrap(), 3);
        assert_eq!(cerr(0i64).unwrap(), 0);
        // SAFETY: closing an invalid descriptor only sets errno.
        let rc = unsafe { libc::close(-1) };
        assert_eq!(cerr(rc).unwrap_err().raw_os_error(), Some(libc::EBADF));
    }
}
