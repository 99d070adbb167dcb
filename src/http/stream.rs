//! A client's connection as the event loop holds it: TCP or the Unix socket, the same
//! HTTP on both, and who is at the other end as the kernel says.

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsFd;

use mio::net::{TcpStream, UnixStream};

use super::message::Peer;
use crate::policy::{Caller, Via};

/// A client's connection, over TCP or the Unix socket: the same HTTP on both.
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
        }
    }

    /// Who is at the other end, from the kernel: the uid owning a loopback client's
    /// socket, or the Unix peer's; `None` when it cannot be read (logged).
    pub fn caller(&self, peer: Peer) -> Caller {
        let (via, uid) = match (self, peer) {
            (Stream::Tcp(s), Peer::Tcp(addr)) if peer.is_local() => (
                Via::Tcp,
                s.local_addr()
                    .and_then(|local| crate::sys::tcp_peer_uid(local, addr)),
            ),
            (Stream::Unix(s), _) => (Via::Unix, crate::sys::unix_peer_uid(s.as_fd()).map(Some)),
            _ => (Via::Tcp, Ok(None)),
        };
        let uid = uid.unwrap_or_else(|err| {
            log::warn!("cannot read which user {peer} is: {err}");
            None
        });
        Caller {
            via,
            uid,
            ..Caller::default()
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write_vectored(bufs),
            Stream::Unix(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
