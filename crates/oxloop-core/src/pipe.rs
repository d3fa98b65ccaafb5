//! Non-blocking I/O on plain file descriptors: pipes, FIFOs, character devices (ttys, ptys)
//! and sockets used as pipes, for the pipe transports above the core.
//!
//! Same convention as [`net`](crate::net): `EINTR` is retried (in `net::retry`), "would block"
//! (`EAGAIN`, `EWOULDBLOCK`) is `Ok(None)`, any other failure the `io::Error` with its errno
//! (`EIO` from a pty whose other side is gone, `EPIPE` from a pipe without reader: Python
//! ignores `SIGPIPE`, so a write to a closed pipe fails with `EPIPE` there too).

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;

use crate::net::{iovecs, retry};
use crate::sys::cvt;

/// What `fstat` says about an fd, as far as the pipe transports care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileKind {
    /// A pipe or FIFO (`S_ISFIFO`).
    pub fifo: bool,
    /// A socket (`S_ISSOCK`).
    pub socket: bool,
    /// A character device: tty, pty, `/dev/null` ... (`S_ISCHR`).
    pub char_device: bool,
}

/// `fstat(2)` of `fd`, reduced to its [`FileKind`].
pub fn file_kind(fd: RawFd) -> io::Result<FileKind> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is valid for writes of one `struct stat`; fstat fills it on success.
    cvt(unsafe { libc::fstat(fd, st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded, so the struct is initialized.
    let mode = unsafe { st.assume_init() }.st_mode & libc::S_IFMT;
    Ok(FileKind {
        fifo: mode == libc::S_IFIFO,
        socket: mode == libc::S_IFSOCK,
        char_device: mode == libc::S_IFCHR,
    })
}

/// `read(2)` into `buf`.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    // SAFETY: `buf` is a live, writable slice of `buf.len()` bytes for the whole call.
    unsafe { read_raw(fd, buf.as_mut_ptr(), buf.len()) }
}

/// `read(2)` into `len` bytes at `ptr`.
///
/// # Safety
/// `ptr` must point to `len` writable bytes that stay valid for the whole call.
pub unsafe fn read_raw(fd: RawFd, ptr: *mut u8, len: usize) -> io::Result<Option<usize>> {
    // SAFETY: guaranteed by this function's contract.
    retry(|| unsafe { libc::read(fd, ptr.cast(), len) })
}

/// `write(2)` of `data`.
pub fn write(fd: RawFd, data: &[u8]) -> io::Result<Option<usize>> {
    // SAFETY: `data` is a live slice of `data.len()` readable bytes for the whole call.
    retry(|| unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) })
}

/// One `writev(2)` of up to [`MAX_IOV`](crate::net::MAX_IOV) of `bufs`, in order.
pub fn writev(fd: RawFd, bufs: &[&[u8]]) -> io::Result<Option<usize>> {
    if bufs.len() == 1 {
        return write(fd, bufs[0]);
    }
    let (iov, n) = iovecs(bufs);
    // SAFETY: `iov[..n]` describe live slices of `bufs`, which outlive the call; writev only
    // reads them.
    retry(|| unsafe { libc::writev(fd, iov.as_ptr(), n as libc::c_int) })
}

/// How many bytes a read of `fd` would return now (`ioctl(FIONREAD)`): pipes, FIFOs, sockets
/// and ttys answer it; other fds fail (`ENOTTY`, `EINVAL`). 0 may mean "nothing yet" or EOF.
pub fn available(fd: RawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which is valid for the call.
    cvt(unsafe { libc::ioctl(fd, libc::FIONREAD as _, &mut n as *mut libc::c_int) })?;
    Ok(n.max(0) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::{pipe, set_nonblocking};
    use std::os::fd::AsRawFd;

    #[test]
    fn pipe_read_write_writev_would_block_and_epipe() {
        let (r, w) = pipe().unwrap();
        let (r, w) = (r.as_raw_fd(), w.as_raw_fd());
        let k = file_kind(r).unwrap();
        assert!(k.fifo && !k.socket && !k.char_device);
        let mut buf = [0u8; 16];
        assert_eq!(read(r, &mut buf).unwrap(), None);
        assert_eq!(available(r).unwrap(), 0);
        assert_eq!(write(w, b"abc").unwrap(), Some(3));
        assert_eq!(writev(w, &[b"de", b"", b"f"]).unwrap(), Some(3));
        assert_eq!(available(r).unwrap(), 6);
        assert_eq!(read(r, &mut buf).unwrap(), Some(6));
        assert_eq!(&buf[..6], b"abcdef");
        // Fill the pipe: a non-blocking write then would block.
        let big = vec![7u8; 1 << 16];
        while write(w, &big).unwrap().is_some() {}
        assert_eq!(writev(w, &[b"x", b"y"]).unwrap(), None);
    }

    #[test]
    fn eof_and_epipe() {
        let (r, w) = pipe().unwrap();
        set_nonblocking(r.as_raw_fd(), true).unwrap();
        let mut buf = [0u8; 4];
        drop(w);
        assert_eq!(read(r.as_raw_fd(), &mut buf).unwrap(), Some(0));
        let (r2, w2) = pipe().unwrap();
        drop(r2);
        // SAFETY: ignoring SIGPIPE for this test process, as Python does at startup.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        let e = write(w2.as_raw_fd(), b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPIPE));
    }

    #[test]
    fn regular_file_kind_and_bad_fd() {
        let f = std::fs::File::open("/proc/self/exe").unwrap();
        let k = file_kind(f.as_raw_fd()).unwrap();
        assert!(!k.fifo && !k.socket && !k.char_device);
        let e = file_kind(-1).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF));
        let dev_null = std::fs::File::open("/dev/null").unwrap();
        assert!(file_kind(dev_null.as_raw_fd()).unwrap().char_device);
    }
}
