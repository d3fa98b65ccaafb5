//! Non-blocking socket I/O for the transports and socket calls above the core.
//!
//! The one place where `recv`/`send`/`sendmsg` retry `EINTR`; "would block" (`EAGAIN`,
//! `EWOULDBLOCK`) is `Ok(None)`, any other failure the `io::Error` with its errno. Sends use
//! `MSG_NOSIGNAL` where the platform has it, so a write to a closed peer is `EPIPE`, never a
//! `SIGPIPE` (Python ignores SIGPIPE by default; a program that restores it is not killed).

use std::io;
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

/// One `sendmsg(2)` of up to [`MAX_IOV`] of `bufs`, in order.
pub fn sendmsg(fd: RawFd, bufs: &[&[u8]]) -> io::Result<Option<usize>> {
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
    // SAFETY: an all-zero msghdr is valid (no address, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = n as _;
    // SAFETY: `msg` points at `n` iovecs describing live slices of `bufs`, which outlive the
    // call; sendmsg only reads them.
    retry(|| unsafe { libc::sendmsg(fd, &msg, SEND_FLAGS) })
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
}
