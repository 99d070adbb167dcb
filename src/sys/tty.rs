//! The controlling terminal of a client (`run`'s code prompt).

use std::io;

use super::cerr::cerr;

/// Terminal echo switched off on stdin until dropped (for typing a code unseen).
pub struct EchoOff {
    saved: libc::termios,
}

impl EchoOff {
    /// Turns echo off on stdin; fails when stdin is not a terminal.
    pub fn stdin() -> io::Result<EchoOff> {
        // SAFETY: termios is a plain C struct; all-zero is a valid value to overwrite.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd 0 is only read; `saved` is a valid, writable termios.
        cerr(unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) })?;
        let mut quiet = saved;
        // ECHONL keeps the newline visible, so the prompt line still ends.
        quiet.c_lflag &= !libc::ECHO;
        quiet.c_lflag |= libc::ECHONL;
        // SAFETY: `quiet` is a fully initialised termios copied from the terminal's own.
        cerr(unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSAFLUSH, &quiet) })?;
        Ok(EchoOff { saved })
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: restores the settings tcgetattr returned; nothing to do if it fails.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSAFLUSH, &self.saved) };
    }
}
