//! Non-blocking socket I/O for the transports and socket calls above the core.
//!
//! The one place where `recv`/`send`/`sendmsg`/`recvfrom`/`sendto` retry `EINTR`; "would block" (`EAGAIN`,
//! `EWOULDBLOCK`) is `Ok(None)`, any other failure the `io::Error` with its errno. Sends use
//! `MSG_NOSIGNAL` where the platform has it, so a write to a closed peer is `EPIPE`, never a
//! `SIGPIPE` (Python ignores SIGPIPE by default; a program that restores it is not killed).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;

#[cfg(any(target_os = "linux", target_os = "android"))]
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const SEND_FLAGS: libc::c_int = 0;

/// At most this many buffers go into one `sendmsg`.
pub const MAX_IOV: usize = 64;

/// Runs one syscall returning a byte count: `EINTR` is retried here (the one place for the
/// fd I/O of [`net`](self) and [`pipe`](crate::pipe)), `EAGAIN`/`EWOULDBLOCK` is `Ok(None)`.
pub(crate) fn retry(mut call: impl FnMut() -> isize) -> io::Result<Option<usize>> {
    loop {
        let r = call();
        if r >= 0 {
            return Ok(Some(r as usize));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(code) if code == libc::EAGAIN || code == libc::EWOULDBLOCK => return Ok(None),
            _ => return Err(e),
        }
    }
}

/// `recv(2)` into `buf`.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    // SAFETY: `buf` is a live, writable slice of `buf.len()` bytes for the whole call.
    unsafe { recv_raw(fd, buf.as_mut_ptr(), buf.len()) }
}

/// `recv(2)` into `len` bytes at `ptr` (a buffer exported by another object).
///
/// # Safety
/// `ptr` must point to `len` writable bytes that stay valid for the whole call.
pub unsafe fn recv_raw(fd: RawFd, ptr: *mut u8, len: usize) -> io::Result<Option<usize>> {
    // SAFETY: guaranteed by this function's contract.
    retry(|| unsafe { libc::recv(fd, ptr.cast(), len, 0) })
}

/// `send(2)` of `data`.
pub fn send(fd: RawFd, data: &[u8]) -> io::Result<Option<usize>> {
    // SAFETY: `data` is a live slice of `data.len()` readable bytes for the whole call.
    retry(|| unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), SEND_FLAGS) })
}

/// The iovecs of the first [`MAX_IOV`] of `bufs` and how many there are: each points into
/// its slice, so they are valid only while `bufs` lives.
pub(crate) fn iovecs(bufs: &[&[u8]]) -> ([libc::iovec; MAX_IOV], usize) {
    let n = bufs.len().min(MAX_IOV);
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; MAX_IOV];
    for (slot, b) in iov.iter_mut().zip(bufs.iter()) {
        *slot = libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        };
    }
    (iov, n)
}

/// One `sendmsg(2)` of up to [`MAX_IOV`] of `bufs`, in order.
pub fn sendmsg(fd: RawFd, bufs: &[&[u8]]) -> io::Result<Option<usize>> {
    let (mut iov, n) = iovecs(bufs);
    // SAFETY: an all-zero msghdr is valid (no address, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = n as _;
    // SAFETY: `msg` points at `n` iovecs describing live slices of `bufs`, which outlive the
    // call; sendmsg only reads them.
    retry(|| unsafe { libc::sendmsg(fd, &msg, SEND_FLAGS) })
}

/// A socket address as the kernel takes and gives it: any family, `len` meaningful bytes.
///
/// Bytes past `len` are zero, so two addresses are equal exactly when their meaningful bytes
/// are (the datagram transport compares a received peer with the ones it has seen).
#[derive(Clone, Copy)]
pub struct SockAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

/// What a [`SockAddr`] holds, decoded as CPython's `makesockaddr` sees it.
#[derive(Debug, PartialEq, Eq)]
pub enum Peer<'a> {
    /// No address at all (length 0: e.g. a datagram from an unbound Unix socket).
    Unnamed,
    /// AF_INET: address and port.
    V4(Ipv4Addr, u16),
    /// AF_INET6: address, port, flow info, scope id (host byte order).
    V6(Ipv6Addr, u16, u32, u32),
    /// AF_UNIX: the bytes of `sun_path` within the address length (a path, possibly
    /// NUL-terminated, or an abstract name starting with a NUL byte).
    Unix(&'a [u8]),
    /// Any other family.
    Other(libc::c_int),
}

impl SockAddr {
    fn zeroed() -> Self {
        SockAddr {
            // SAFETY: sockaddr_storage is plain old data; all zeros is a valid (empty) value.
            storage: unsafe { std::mem::zeroed() },
            len: 0,
        }
    }

    /// An IPv4 address (`sockaddr_in`).
    pub fn v4(ip: Ipv4Addr, port: u16) -> Self {
        let mut a = Self::zeroed();
        // SAFETY: plain old data; all zeros is valid (padding, and fields some platforms add).
        let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_port = port.to_be();
        sin.sin_addr = libc::in_addr {
            s_addr: u32::from_ne_bytes(ip.octets()),
        };
        // SAFETY: sockaddr_storage is larger than and aligned for every sockaddr type.
        unsafe { std::ptr::write(std::ptr::addr_of_mut!(a.storage).cast(), sin) };
        a.len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        a
    }

    /// An IPv6 address (`sockaddr_in6`); `flowinfo` and `scope_id` in host byte order.
    pub fn v6(ip: Ipv6Addr, port: u16, flowinfo: u32, scope_id: u32) -> Self {
        let mut a = Self::zeroed();
        // SAFETY: plain old data; all zeros is valid (padding, and fields some platforms add).
        let mut sin6: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        sin6.sin6_port = port.to_be();
        sin6.sin6_flowinfo = flowinfo.to_be();
        sin6.sin6_addr = libc::in6_addr {
            s6_addr: ip.octets(),
        };
        sin6.sin6_scope_id = scope_id;
        // SAFETY: sockaddr_storage is larger than and aligned for every sockaddr type.
        unsafe { std::ptr::write(std::ptr::addr_of_mut!(a.storage).cast(), sin6) };
        a.len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        a
    }

    /// The meaningful bytes.
    pub fn as_bytes(&self) -> &[u8] {
        let len = (self.len as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
        // SAFETY: `storage` is `size_of::<sockaddr_storage>()` initialized bytes, `len` at most.
        unsafe { std::slice::from_raw_parts(std::ptr::addr_of!(self.storage).cast::<u8>(), len) }
    }

    /// The address length, in bytes.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the address is empty (no address at all).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address decoded by family.
    pub fn peer(&self) -> Peer<'_> {
        if self.len == 0 {
            return Peer::Unnamed;
        }
        let len = self.len as usize;
        match self.storage.ss_family as libc::c_int {
            libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
                // SAFETY: the family says sockaddr_in and `len` covers it; storage is aligned.
                let sin = unsafe { &*std::ptr::addr_of!(self.storage).cast::<libc::sockaddr_in>() };
                Peer::V4(
                    Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                    u16::from_be(sin.sin_port),
                )
            }
            libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
                // SAFETY: the family says sockaddr_in6 and `len` covers it; storage is aligned.
                let sin6 =
                    unsafe { &*std::ptr::addr_of!(self.storage).cast::<libc::sockaddr_in6>() };
                Peer::V6(
                    Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                    u16::from_be(sin6.sin6_port),
                    u32::from_be(sin6.sin6_flowinfo),
                    sin6.sin6_scope_id,
                )
            }
            libc::AF_UNIX => {
                let off = std::mem::offset_of!(libc::sockaddr_un, sun_path);
                let bytes = self.as_bytes();
                Peer::Unix(bytes.get(off..).unwrap_or(&[]))
            }
            family => Peer::Other(family),
        }
    }
}

impl PartialEq for SockAddr {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for SockAddr {}

impl std::fmt::Debug for SockAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SockAddr({:?})", self.peer())
    }
}

/// `recvfrom(2)` into `buf`: the datagram's length and its sender.
pub fn recvfrom(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<(usize, SockAddr)>> {
    let mut addr = SockAddr::zeroed();
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `buf` is a live, writable slice of `buf.len()` bytes; `addr.storage` is a
    // writable sockaddr_storage and `len` its size, both alive for the whole call.
    let r = retry(|| unsafe {
        len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        libc::recvfrom(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            0,
            std::ptr::addr_of_mut!(addr.storage).cast(),
            &mut len,
        )
    })?;
    Ok(r.map(|n| {
        addr.len = len.min(std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t);
        (n, addr)
    }))
}

/// `sendto(2)` of `data` to `addr`.
pub fn sendto(fd: RawFd, data: &[u8], addr: &SockAddr) -> io::Result<Option<usize>> {
    // SAFETY: `data` is a live slice of `data.len()` readable bytes and `addr.storage` holds
    // `addr.len` initialized bytes, both alive for the whole call.
    retry(|| unsafe {
        libc::sendto(
            fd,
            data.as_ptr().cast(),
            data.len(),
            SEND_FLAGS,
            std::ptr::addr_of!(addr.storage).cast(),
            addr.len,
        )
    })
}

extern "C" {
    // POSIX (<arpa/inet.h>); not in the libc crate for every target.
    fn inet_pton(af: libc::c_int, src: *const libc::c_char, dst: *mut libc::c_void) -> libc::c_int;
    fn inet_ntop(
        af: libc::c_int,
        src: *const libc::c_void,
        dst: *mut libc::c_char,
        size: libc::socklen_t,
    ) -> *const libc::c_char;
}

/// The C library's `inet_pton` of a numeric host (`af` AF_INET: 4 bytes, AF_INET6: 16
/// bytes), as CPython tries before any name resolution. None: not a numeric address of that
/// family (or a string containing a NUL byte, or too long to be one).
pub fn parse_numeric_host(af: libc::c_int, host: &str) -> Option<[u8; 16]> {
    let mut cstr = [0u8; 64];
    if host.len() >= cstr.len() || host.as_bytes().contains(&0) {
        return None;
    }
    cstr[..host.len()].copy_from_slice(host.as_bytes());
    let mut out = [0u8; 16];
    // SAFETY: `cstr` is NUL-terminated; `out` has room for an in6_addr (16 bytes), more than
    // an in_addr.
    let r = unsafe { inet_pton(af, cstr.as_ptr().cast(), out.as_mut_ptr().cast()) };
    (r == 1).then_some(out)
}

/// The C library's `inet_ntop` text of an IPv6 address (what CPython's `recvfrom` returns).
pub fn format_v6(ip: &Ipv6Addr) -> String {
    let octets = ip.octets();
    let mut buf = [0 as libc::c_char; 64];
    // SAFETY: `octets` is an in6_addr (16 bytes); `buf` has room for INET6_ADDRSTRLEN (46).
    let p = unsafe {
        inet_ntop(
            libc::AF_INET6,
            octets.as_ptr().cast(),
            buf.as_mut_ptr(),
            buf.len() as libc::socklen_t,
        )
    };
    if p.is_null() {
        return ip.to_string();
    }
    // SAFETY: inet_ntop succeeded, so `buf` holds a NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn send_recv_sendmsg_and_would_block() {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(recv(b.as_raw_fd(), &mut buf).unwrap(), None);
        assert_eq!(send(a.as_raw_fd(), b"abc").unwrap(), Some(3));
        assert_eq!(
            sendmsg(a.as_raw_fd(), &[b"de", b"", b"f"]).unwrap(),
            Some(3)
        );
        assert_eq!(recv(b.as_raw_fd(), &mut buf).unwrap(), Some(6));
        assert_eq!(&buf[..6], b"abcdef");
        drop(b);
        let err = send(a.as_raw_fd(), b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPIPE));
    }

    #[test]
    fn closed_fd_is_ebadf() {
        let mut buf = [0u8; 4];
        assert_eq!(
            recv(-1, &mut buf).unwrap_err().raw_os_error(),
            Some(libc::EBADF)
        );
    }

    #[test]
    fn datagrams_with_addresses() {
        use std::net::UdpSocket;
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.set_nonblocking(true).unwrap();
        let a_port = a.local_addr().unwrap().port();
        let b_port = b.local_addr().unwrap().port();
        let mut buf = [0u8; 16];
        assert!(recvfrom(a.as_raw_fd(), &mut buf).unwrap().is_none());
        let to = SockAddr::v4(Ipv4Addr::LOCALHOST, a_port);
        assert_eq!(sendto(b.as_raw_fd(), b"hello", &to).unwrap(), Some(5));
        let (n, from) = recvfrom(a.as_raw_fd(), &mut buf).unwrap().unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(from.peer(), Peer::V4(Ipv4Addr::LOCALHOST, b_port));
        assert_eq!(from, SockAddr::v4(Ipv4Addr::LOCALHOST, b_port));
        // An empty datagram is a datagram.
        assert_eq!(sendto(b.as_raw_fd(), b"", &to).unwrap(), Some(0));
        assert_eq!(recvfrom(a.as_raw_fd(), &mut buf).unwrap().unwrap().0, 0);
    }

    #[test]
    fn numeric_hosts_and_ipv6_text() {
        assert_eq!(
            parse_numeric_host(libc::AF_INET, "127.0.0.1").map(|b| [b[0], b[1], b[2], b[3]]),
            Some([127, 0, 0, 1])
        );
        assert_eq!(parse_numeric_host(libc::AF_INET, "localhost"), None);
        assert_eq!(parse_numeric_host(libc::AF_INET, "::1"), None);
        assert_eq!(parse_numeric_host(libc::AF_INET, "1.2.3.4\0"), None);
        assert_eq!(
            parse_numeric_host(libc::AF_INET6, "::1"),
            Some(Ipv6Addr::LOCALHOST.octets())
        );
        assert_eq!(format_v6(&Ipv6Addr::LOCALHOST), "::1");
        let mapped = Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped();
        assert_eq!(format_v6(&mapped), "::ffff:127.0.0.1");
        let v6 = SockAddr::v6(Ipv6Addr::LOCALHOST, 80, 5, 2);
        assert_eq!(v6.peer(), Peer::V6(Ipv6Addr::LOCALHOST, 80, 5, 2));
    }
}
