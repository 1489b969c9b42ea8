//! TCP MD5 signatures (RFC 2385) on a BGP connection: the kernel takes the
//! peer's address and key as a `struct tcp_md5sig`, which neither the
//! standard library nor socket2 offers. The struct is laid out here as
//! bytes and handed to `setsockopt`, the only `unsafe` call.

use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

/// `sizeof(struct __kernel_sockaddr_storage)`.
const ADDR_LEN: usize = 128;
/// `TCP_MD5SIG_MAXKEYLEN`.
const MAX_KEY: usize = 80;
/// `sizeof(struct tcp_md5sig)`: the address, flags, prefix length, key
/// length, interface index, key.
const LEN: usize = ADDR_LEN + 1 + 1 + 2 + 4 + MAX_KEY;

/// The `struct tcp_md5sig` for `peer` and `key` (at most 80 bytes; none
/// removes the peer's key).
fn tcp_md5sig(peer: IpAddr, key: &[u8]) -> io::Result<[u8; LEN]> {
    if key.len() > MAX_KEY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "TCP MD5 keys are 1 to 80 bytes",
        ));
    }
    let mut b = [0u8; LEN];
    match peer {
        IpAddr::V4(a) => {
            // struct sockaddr_in: family (host order), port, address.
            b[..2].copy_from_slice(&u16::try_from(libc::AF_INET).unwrap_or(2).to_ne_bytes());
            b[4..8].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            // struct sockaddr_in6: family, port, flow info, address.
            b[..2].copy_from_slice(&u16::try_from(libc::AF_INET6).unwrap_or(10).to_ne_bytes());
            b[8..24].copy_from_slice(&a.octets());
        }
    }
    let keylen = u16::try_from(key.len()).unwrap_or(0);
    b[ADDR_LEN + 2..ADDR_LEN + 4].copy_from_slice(&keylen.to_ne_bytes());
    b[ADDR_LEN + 8..ADDR_LEN + 8 + key.len()].copy_from_slice(key);
    Ok(b)
}

/// Signs every segment to and from `peer` on `socket` with `key`; set
/// before connecting.
pub fn set_md5(socket: &impl AsRawFd, peer: IpAddr, key: &[u8]) -> io::Result<()> {
    if key.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "TCP MD5 keys are 1 to 80 bytes",
        ));
    }
    setsockopt(socket, &tcp_md5sig(peer, key)?)
}

/// Removes the key of `peer` from a listening `socket`.
pub fn clear_md5(socket: &impl AsRawFd, peer: IpAddr) -> io::Result<()> {
    setsockopt(socket, &tcp_md5sig(peer, &[])?)
}

#[allow(unsafe_code)]
fn setsockopt(socket: &impl AsRawFd, sig: &[u8; LEN]) -> io::Result<()> {
    // SAFETY: `sig` is an initialised buffer of `LEN` bytes, laid out as
    // the kernel's `struct tcp_md5sig`, that outlives the call; the
    // descriptor is the caller's open socket.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            sig.as_ptr().cast(),
            libc::socklen_t::try_from(LEN).unwrap_or(0),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_the_kernels() {
        assert_eq!(LEN, 216);
        let b = tcp_md5sig("192.0.2.1".parse().unwrap(), b"secret").unwrap();
        assert_eq!(&b[4..8], &[192, 0, 2, 1]);
        assert_eq!(u16::from_ne_bytes([b[130], b[131]]), 6);
        assert_eq!(&b[136..142], b"secret");
        assert!(tcp_md5sig("::1".parse().unwrap(), &[0; 81]).is_err());
    }

    /// The kernel takes it (a wrong layout is refused with EINVAL).
    #[test]
    fn the_kernel_takes_it() {
        let s = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        set_md5(&s, "127.0.0.1".parse().unwrap(), b"secret").unwrap();
        clear_md5(&s, "127.0.0.1".parse().unwrap()).unwrap();
        assert!(set_md5(&s, "127.0.0.1".parse().unwrap(), b"").is_err());
        let s6 = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
        set_md5(&s6, "::1".parse().unwrap(), b"secret").unwrap();
    }
}
