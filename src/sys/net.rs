//! Addresses: the one loopback test for listen addresses, peers and sockets from
//! systemd, and the one reading of `host[:port]` (a `Host` header, an origin's
//! authority, an `allowed_hosts` entry).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, BorrowedFd};

use super::cerr::cerr;

/// True for 127.0.0.0/8, `::1` and their IPv4-mapped IPv6 forms (`::ffff:127.0.0.1`).
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// `host[:port]` split in two, the host as written (IPv6 keeps its brackets), or `None`
/// when it is not one: empty, unbracketed IPv6, a port that is not 1 to 5 digits, or
/// characters no host name has (space, `/`, `@`, `\\`, control characters).
pub fn split_authority(text: &str) -> Option<(&str, Option<&str>)> {
    let (host, port) = match text.strip_prefix('[') {
        Some(rest) => {
            let end = rest.find(']')? + 2;
            match &text[end..] {
                "" => (&text[..end], None),
                tail => (&text[..end], Some(tail.strip_prefix(':')?)),
            }
        }
        None => match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        },
    };
    let port_ok =
        port.is_none_or(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"/@\\?#,;\"'<>`{}|^".contains(&b));
    // Outside brackets, a colon means an IPv6 address written without them.
    let colon_ok = host.starts_with('[') || !host.contains(':');
    (port_ok && host_ok && colon_ok).then_some((host, port))
}

/// The address a host written as an IP literal names (`127.0.0.1`, `[::1]`); `None` for
/// names. Only the dotted-quad form counts as IPv4, as browsers write it in `Host`.
pub fn ip_literal(host: &str) -> Option<IpAddr> {
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        None => host.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

/// Fixes a socket's kernel send buffer at `bytes` (the kernel doubles it), instead of
/// letting it grow to `tcp_wmem`'s 4 MiB for a client that does not read.
pub fn set_send_buffer(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: `fd` is open for the borrow; the option value points to a c_int that
    // lives across the call, and its size is passed with it.
    cerr(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        assert_eq!(
            split_authority("127.0.0.1:9999"),
            Some(("127.0.0.1", Some("9999")))
        );
        assert_eq!(split_authority("localhost"), Some(("localhost", None)));
        assert_eq!(split_authority("[::1]:80"), Some(("[::1]", Some("80"))));
        assert_eq!(split_authority("[::1]"), Some(("[::1]", None)));
        assert_eq!(
            split_authority("Nas.Lan:8123"),
            Some(("Nas.Lan", Some("8123")))
        );
        for bad in [
            "",
            ":80",
            "::1",
            "[::1",
            "[::1]x",
            "[::1]:",
            "a:",
            "a:123456",
            "a:-1",
            "a b",
            "a/b",
            "user@host",
            "a:1:2",
            "h\u{7f}",
        ] {
            assert_eq!(split_authority(bad), None, "{bad:?}");
        }
        assert_eq!(
            ip_literal("127.0.0.1"),
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
        );
        assert_eq!(ip_literal("[::1]"), Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        for name in [
            "localhost",
            "127.1",
            "0x7f.0.0.1",
            "::1",
            "[fe80::1%25eth0]",
        ] {
            assert_eq!(ip_literal(name), None, "{name}");
        }
    }

    #[test]
    fn loopback_in_every_spelling() {
        for ip in ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"] {
            assert!(is_loopback(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["192.168.1.5", "0.0.0.0", "::", "::ffff:10.0.0.1", "fe80::1"] {
            assert!(!is_loopback(ip.parse().unwrap()), "{ip}");
        }
    }
}
