//! Who is at the other end of a connection, as the kernel knows it: for a TCP client
//! on this machine, the uid that owns its socket, read from the kernel's socket table
//! over `NETLINK_SOCK_DIAG` (what `ss -e` prints as `uid:`); for a Unix socket, the
//! peer's credentials (`SO_PEERCRED`). Neither can be claimed by the client: the kernel
//! set them when the client's socket was made, or when it connected.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::cerr::cerr;

/// `SOCK_DIAG_BY_FAMILY`, the request and answer type of `inet_diag`.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
/// `struct nlmsghdr`, then `struct inet_diag_req_v2` (family, protocol, ext, pad,
/// states, then the 48-byte `inet_diag_sockid`).
const HEADER: usize = 16;
const REQUEST: usize = HEADER + 56;
/// `idiag_uid` in an answer: after the header, `family, state, timer, retrans` (4), the
/// socket id (48) and `expires, rqueue, wqueue` (12).
const UID_AT: usize = HEADER + 64;

/// The uid owning the client's end of the TCP connection from `peer` to `local`, both
/// on this machine; `Ok(None)` when the kernel has no such socket (the client is gone,
/// or is not local). One exact lookup, answered while the request is sent, so this
/// never waits.
pub fn tcp_peer_uid(local: SocketAddr, peer: SocketAddr) -> io::Result<Option<u32>> {
    let request = diag_request(local, peer);
    // SAFETY: socket() takes no pointers.
    let fd = cerr(unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    })?;
    // SAFETY: `fd` was just returned by socket() and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_nl is plain integers, all-zero valid: pid 0 is the kernel.
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: `request` and `kernel` live across the call, their sizes passed with them.
    cerr(unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            request.as_ptr().cast(),
            request.len(),
            0,
            (&raw const kernel).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    })?;
    let mut answer = [0u8; 1024];
    // SAFETY: `answer` is valid for writes of its length. The kernel queued the answer
    // during sendto(); MSG_DONTWAIT makes sure a missing one is an error, not a wait.
    let n = cerr(unsafe {
        libc::recv(
            fd.as_raw_fd(),
            answer.as_mut_ptr().cast(),
            answer.len(),
            libc::MSG_DONTWAIT,
        )
    })?;
    parse_answer(answer.get(..n.unsigned_abs()).unwrap_or_default())
}

/// The uid of the process that connected to a Unix socket (`SO_PEERCRED`).
pub fn unix_peer_uid(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `fd` is open for the borrow; `cred` and `len` live across the call and
    // `len` says how big `cred` is.
    cerr(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    })?;
    Ok(cred.uid)
}

/// The `inet_diag` request for exactly one socket: the one whose own address is `peer`
/// and whose remote address is `local` (the client's end), TCP, in any state.
fn diag_request(local: SocketAddr, peer: SocketAddr) -> [u8; REQUEST] {
    let (l, p) = (local.ip().to_canonical(), peer.ip().to_canonical());
    let (family, src, dst) = match (p, l) {
        (IpAddr::V4(p), IpAddr::V4(l)) => {
            let pad = |a: [u8; 4]| {
                let mut out = [0u8; 16];
                out[..4].copy_from_slice(&a);
                out
            };
            (libc::AF_INET, pad(p.octets()), pad(l.octets()))
        }
        (p, l) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                IpAddr::V6(v6) => v6.octets(),
            };
            (libc::AF_INET6, v6(p), v6(l))
        }
    };
    let mut m = [0u8; REQUEST];
    m[0..4].copy_from_slice(&(REQUEST as u32).to_ne_bytes());
    m[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m[8..12].copy_from_slice(&1u32.to_ne_bytes());
    // inet_diag_req_v2: family, protocol, no extensions, pad, every TCP state.
    m[16] = family as u8;
    m[17] = libc::IPPROTO_TCP as u8;
    m[20..24].copy_from_slice(&u32::MAX.to_ne_bytes());
    // inet_diag_sockid: ports and addresses in network order, interface any, and no
    // cookie (both words all ones), so the 4-tuple alone picks the socket.
    m[24..26].copy_from_slice(&peer.port().to_be_bytes());
    m[26..28].copy_from_slice(&local.port().to_be_bytes());
    m[28..44].copy_from_slice(&src);
    m[44..60].copy_from_slice(&dst);
    m[64..72].copy_from_slice(&[0xff; 8]);
    m
}

/// The uid in the kernel's answer; `Ok(None)` for "no such socket".
fn parse_answer(answer: &[u8]) -> io::Result<Option<u32>> {
    let word = |at: usize| -> Option<[u8; 4]> { answer.get(at..at + 4)?.try_into().ok() };
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "a short sock_diag answer");
    let kind = answer
        .get(4..6)
        .and_then(|b| b.try_into().ok())
        .map(u16::from_ne_bytes)
        .ok_or_else(bad)?;
    match kind {
        NLMSG_ERROR => match word(HEADER).map(i32::from_ne_bytes).ok_or_else(bad)? {
            0 => Ok(None),
            err if -err == libc::ENOENT => Ok(None),
            err => Err(io::Error::from_raw_os_error(-err)),
        },
        SOCK_DIAG_BY_FAMILY => Ok(Some(u32::from_ne_bytes(word(UID_AT).ok_or_else(bad)?))),
        other => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected sock_diag answer type {other}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn request_names_the_clients_end_exactly() {
        let local: SocketAddr = "127.0.0.1:9999".parse().unwrap();
        let peer: SocketAddr = "127.0.0.2:40000".parse().unwrap();
        let m = diag_request(local, peer);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 72);
        assert_eq!(u16::from_ne_bytes(m[4..6].try_into().unwrap()), 20);
        assert_eq!((m[16], m[17]), (libc::AF_INET as u8, 6));
        assert_eq!(&m[24..28], &[0x9c, 0x40, 0x27, 0x0f]);
        assert_eq!(&m[28..32], &[127, 0, 0, 2]);
        assert_eq!(&m[44..48], &[127, 0, 0, 1]);
        assert_eq!(&m[64..72], &[0xff; 8]);

        let m = diag_request("[::1]:9999".parse().unwrap(), "[::1]:1".parse().unwrap());
        assert_eq!(m[16], libc::AF_INET6 as u8);
        assert_eq!(m[43], 1);
        // A v4 client seen through a dual-stack listener is asked for as v4.
        let m = diag_request(
            "[::ffff:127.0.0.1]:9999".parse().unwrap(),
            "[::ffff:127.0.0.1]:5".parse().unwrap(),
        );
        assert_eq!(m[16], libc::AF_INET as u8);
    }

    #[test]
    fn answers_are_read_or_refused() {
        let mut msg = vec![0u8; UID_AT + 8];
        msg[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        msg[UID_AT..UID_AT + 4].copy_from_slice(&65534u32.to_ne_bytes());
        assert_eq!(parse_answer(&msg).unwrap(), Some(65534));
        assert!(parse_answer(&msg[..UID_AT]).is_err(), "cut short");
        let mut err = vec![0u8; HEADER + 4];
        err[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        err[HEADER..].copy_from_slice(&(-libc::ENOENT).to_ne_bytes());
        assert_eq!(parse_answer(&err).unwrap(), None);
        err[HEADER..].copy_from_slice(&(-libc::EPERM).to_ne_bytes());
        assert_eq!(
            parse_answer(&err).unwrap_err().raw_os_error(),
            Some(libc::EPERM)
        );
        assert!(parse_answer(&[1, 2]).is_err());
    }

    #[test]
    fn the_kernel_names_our_own_uid() {
        for host in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(listener) = TcpListener::bind(host) else {
                continue; // no IPv6 here
            };
            let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (_server, peer) = listener.accept().unwrap();
            let local = listener.local_addr().unwrap();
            assert_eq!(peer, client.local_addr().unwrap());
            let uid = match tcp_peer_uid(local, peer) {
                // qemu-user passes no netlink family but route, uevent and audit; the
                // native suite checks this on the kernel itself.
                Err(err) if err.raw_os_error() == Some(libc::EPROTONOSUPPORT) => {
                    eprintln!("SKIPPED: NETLINK_SOCK_DIAG not supported here (qemu-user?)");
                    return;
                }
                other => other.unwrap(),
            };
            assert_eq!(uid, Some(super::super::euid()), "{host}");
            drop(client);
        }
        // No such connection: no uid, no error.
        let gone = tcp_peer_uid(
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        );
        assert_eq!(gone.unwrap(), None);
    }
}
