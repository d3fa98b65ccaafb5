//! Behaviour of every selector backend available on this target, against the
//! contract in `selector/mod.rs`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::thread::JoinHandleExt;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use oxloop_core::selector::{new_selector, Event, Interest, Selector, SelectorKind};
use oxloop_core::sys::cvt;
use oxloop_core::waker::Waker;

const ALL_KINDS: [SelectorKind; 4] = [
    SelectorKind::Epoll,
    SelectorKind::Poll,
    SelectorKind::Select,
    SelectorKind::Kqueue,
];

/// Every kind compiled in for this target (epoll, poll and select on Linux).
fn kinds() -> Vec<SelectorKind> {
    let kinds: Vec<_> = ALL_KINDS.into_iter().filter(|k| k.is_available()).collect();
    if cfg!(target_os = "linux") {
        assert_eq!(
            kinds,
            [
                SelectorKind::Epoll,
                SelectorKind::Poll,
                SelectorKind::Select
            ]
        );
    }
    kinds
}

fn selectors() -> Vec<(SelectorKind, Box<dyn Selector>)> {
    kinds()
        .into_iter()
        .map(|k| (k, new_selector(k).unwrap()))
        .collect()
}

fn poll_now(sel: &dyn Selector) -> Vec<Event> {
    let mut events = Vec::new();
    sel.select(&mut events, Some(Duration::ZERO)).unwrap();
    events
}

fn ev(token: u64, readable: bool, writable: bool) -> Event {
    Event {
        token,
        readable,
        writable,
    }
}

fn pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    (a, b)
}

fn pipe() -> (File, File) {
    let mut fds = [-1; 2];
    // SAFETY: `fds` has room for the two fds pipe() returns.
    cvt(unsafe { libc::pipe(fds.as_mut_ptr()) }).unwrap();
    // SAFETY: both fds were just created and are owned by nobody else.
    let (r, w) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    oxloop_core::sys::set_nonblocking(r.as_raw_fd(), true).unwrap();
    oxloop_core::sys::set_nonblocking(w.as_raw_fd(), true).unwrap();
    (r, w)
}

fn errno(r: io::Result<()>) -> Option<i32> {
    r.expect_err("expected an error").raw_os_error()
}

fn check_level_triggered<R: Read + AsRawFd>(
    kind: SelectorKind,
    sel: &dyn Selector,
    reader: &mut R,
    writer: &mut impl Write,
    token: u64,
) {
    let fd = reader.as_raw_fd();
    sel.register(fd, token, Interest::READABLE).unwrap();
    assert_eq!(poll_now(sel), [], "{kind}: nothing written yet");
    writer.write_all(b"0123456789").unwrap();
    assert_eq!(poll_now(sel), [ev(token, true, false)], "{kind}");
    let mut buf = [0u8; 5];
    reader.read_exact(&mut buf).unwrap();
    assert_eq!(
        poll_now(sel),
        [ev(token, true, false)],
        "{kind}: must re-fire after a partial read"
    );
    reader.read_exact(&mut buf).unwrap();
    assert_eq!(poll_now(sel), [], "{kind}: drained");
    sel.deregister(fd).unwrap();
}

/// Nothing ready, then ready, still ready after a partial read, not ready once
/// drained; on a socketpair and on a pipe.
#[test]
fn readable_is_level_triggered() {
    for (kind, sel) in selectors() {
        let (mut a, mut b) = pair();
        check_level_triggered(kind, &*sel, &mut a, &mut b, 40);
        let (mut r, mut w) = pipe();
        check_level_triggered(kind, &*sel, &mut r, &mut w, 41);
    }
}

#[test]
fn fresh_socket_is_writable() {
    for (kind, sel) in selectors() {
        let (a, _b) = pair();
        sel.register(a.as_raw_fd(), 7, Interest::WRITABLE).unwrap();
        assert_eq!(poll_now(&*sel), [ev(7, false, true)], "{kind}");
        // Still writable next time (level-triggered).
        assert_eq!(poll_now(&*sel), [ev(7, false, true)], "{kind}");
        sel.deregister(a.as_raw_fd()).unwrap();
        sel.register(a.as_raw_fd(), 8, Interest::BOTH).unwrap();
        assert_eq!(poll_now(&*sel), [ev(8, false, true)], "{kind}");
    }
}

#[test]
fn reregister_changes_interest_and_token() {
    for (kind, sel) in selectors() {
        let (a, mut b) = pair();
        let fd = a.as_raw_fd();
        b.write_all(b"pending").unwrap();
        sel.register(fd, 1, Interest::READABLE).unwrap();
        assert_eq!(poll_now(&*sel), [ev(1, true, false)], "{kind}");
        sel.reregister(fd, 2, Interest::WRITABLE).unwrap();
        assert_eq!(poll_now(&*sel), [ev(2, false, true)], "{kind}");
        sel.reregister(fd, 3, Interest::BOTH).unwrap();
        assert_eq!(poll_now(&*sel), [ev(3, true, true)], "{kind}");
        sel.reregister(fd, 4, Interest::READABLE).unwrap();
        assert_eq!(poll_now(&*sel), [ev(4, true, false)], "{kind}");
    }
}

#[test]
fn deregister_stops_events() {
    for (kind, sel) in selectors() {
        let (a, mut b) = pair();
        b.write_all(b"pending").unwrap();
        sel.register(a.as_raw_fd(), 1, Interest::BOTH).unwrap();
        assert_eq!(poll_now(&*sel), [ev(1, true, true)], "{kind}");
        sel.deregister(a.as_raw_fd()).unwrap();
        assert_eq!(poll_now(&*sel), [], "{kind}");
        let mut events = vec![ev(99, true, true)];
        sel.select(&mut events, Some(Duration::from_millis(5)))
            .unwrap();
        assert_eq!(events, [], "{kind}: select clears the vector");
        // And it can be registered again afterwards.
        sel.register(a.as_raw_fd(), 2, Interest::READABLE).unwrap();
        assert_eq!(poll_now(&*sel), [ev(2, true, false)], "{kind}");
    }
}

#[test]
fn several_fds_one_event_each() {
    for (kind, sel) in selectors() {
        let socks: Vec<_> = (0..5).map(|_| pair()).collect();
        for (i, (a, b)) in socks.iter().enumerate() {
            sel.register(a.as_raw_fd(), i as u64, Interest::BOTH)
                .unwrap();
            if i % 2 == 0 {
                (&*b).write_all(b"x").unwrap();
            }
        }
        let mut events = poll_now(&*sel);
        events.sort_by_key(|e| e.token);
        let want: Vec<_> = (0..5).map(|i| ev(i, i % 2 == 0, true)).collect();
        assert_eq!(events, want, "{kind}");
        // Remove some from the middle; the rest keep their tokens and interest.
        sel.deregister(socks[1].0.as_raw_fd()).unwrap();
        sel.deregister(socks[2].0.as_raw_fd()).unwrap();
        sel.reregister(socks[4].0.as_raw_fd(), 44, Interest::READABLE)
            .unwrap();
        let mut events = poll_now(&*sel);
        events.sort_by_key(|e| e.token);
        assert_eq!(
            events,
            [ev(0, true, true), ev(3, false, true), ev(44, true, false)],
            "{kind}"
        );
    }
}

/// EOF is readable; the hang-up is masked by interest (no spurious writable).
#[test]
fn peer_close_reports_readable() {
    for (kind, sel) in selectors() {
        let (mut a, b) = pair();
        sel.register(a.as_raw_fd(), 5, Interest::READABLE).unwrap();
        assert_eq!(poll_now(&*sel), [], "{kind}");
        drop(b);
        assert_eq!(poll_now(&*sel), [ev(5, true, false)], "{kind}: socket EOF");
        assert_eq!(a.read(&mut [0u8; 8]).unwrap(), 0);

        let (r, w) = pipe();
        sel.register(r.as_raw_fd(), 6, Interest::READABLE).unwrap();
        drop(w);
        let events = poll_now(&*sel);
        assert!(
            events.contains(&ev(6, true, false)),
            "{kind}: pipe EOF {events:?}"
        );
    }
}

#[test]
fn timeouts_never_return_early() {
    for (kind, sel) in selectors() {
        let (a, _b) = pair();
        sel.register(a.as_raw_fd(), 1, Interest::READABLE).unwrap();
        let mut events = Vec::new();
        for timeout in [
            Duration::from_millis(2),
            Duration::from_micros(300),
            Duration::from_micros(1),
            Duration::from_millis(20),
        ] {
            let start = Instant::now();
            sel.select(&mut events, Some(timeout)).unwrap();
            let elapsed = start.elapsed();
            assert!(events.is_empty(), "{kind}");
            assert!(
                elapsed >= timeout,
                "{kind}: {timeout:?} returned after {elapsed:?}"
            );
            assert!(
                elapsed < timeout + Duration::from_secs(1),
                "{kind}: {elapsed:?}"
            );
        }
        // Zero timeout: just polls.
        let start = Instant::now();
        sel.select(&mut events, Some(Duration::ZERO)).unwrap();
        assert!(start.elapsed() < Duration::from_millis(500), "{kind}");
        // A timeout with no fd registered at all still waits.
        sel.deregister(a.as_raw_fd()).unwrap();
        let start = Instant::now();
        sel.select(&mut events, Some(Duration::from_millis(3)))
            .unwrap();
        assert!(start.elapsed() >= Duration::from_millis(3), "{kind}");
    }
}

/// A descriptor number that is not open, far above what the tests allocate.
fn closed_fd() -> RawFd {
    let (a, _b) = pair();
    // SAFETY: F_DUPFD_CLOEXEC duplicates `a` onto the lowest free fd >= 900.
    let fd = cvt(unsafe { libc::fcntl(a.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 900) }).unwrap();
    // SAFETY: `fd` was just created and is owned by nobody else; dropping closes it.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    fd
}

#[test]
fn registration_errors() {
    for (kind, sel) in selectors() {
        let sel = &*sel;
        let bad = closed_fd();
        if kind == SelectorKind::Poll {
            // CPython's select.poll accepts a closed fd; poll(2) reports it POLLNVAL, ready
            // both ways.
            sel.register(bad, 1, Interest::READABLE).unwrap();
            assert_eq!(poll_now(sel), [ev(1, true, false)], "{kind}: closed fd");
            sel.deregister(bad).unwrap();
        } else {
            assert_eq!(
                errno(sel.register(bad, 1, Interest::READABLE)),
                Some(libc::EBADF),
                "{kind}: closed fd"
            );
        }
        assert_eq!(
            errno(sel.register(-1, 1, Interest::READABLE)),
            Some(libc::EBADF),
            "{kind}: negative fd"
        );

        let (a, _b) = pair();
        let fd = a.as_raw_fd();
        assert_eq!(errno(sel.deregister(fd)), Some(libc::ENOENT), "{kind}");
        assert_eq!(
            errno(sel.reregister(fd, 1, Interest::READABLE)),
            Some(libc::ENOENT),
            "{kind}"
        );
        sel.register(fd, 1, Interest::READABLE).unwrap();
        assert_eq!(
            errno(sel.register(fd, 2, Interest::WRITABLE)),
            Some(libc::EEXIST),
            "{kind}: double register"
        );
        let err = sel.register(fd, 2, Interest::NONE).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{kind}");
        let err = sel.reregister(fd, 2, Interest::NONE).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{kind}");
        sel.deregister(fd).unwrap();
        assert_eq!(errno(sel.deregister(fd)), Some(libc::ENOENT), "{kind}");
    }
}

/// Closing a registered fd and deregistering afterwards succeeds (CPython's
/// unregister() ignores the kernel's complaint too).
#[test]
fn deregister_after_close() {
    for (kind, sel) in selectors() {
        let (a, _b) = pair();
        let fd = a.as_raw_fd();
        sel.register(fd, 1, Interest::READABLE).unwrap();
        drop(a);
        sel.deregister(fd).unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(errno(sel.deregister(fd)), Some(libc::ENOENT), "{kind}");
    }
}

fn temp_file() -> (File, std::path::PathBuf) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "oxloop-core-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let mut f = File::create(&path).unwrap();
    f.write_all(b"data").unwrap();
    (File::open(&path).unwrap(), path)
}

#[test]
fn regular_files() {
    for (kind, sel) in selectors() {
        let (f, path) = temp_file();
        let r = sel.register(f.as_raw_fd(), 3, Interest::BOTH);
        match kind {
            SelectorKind::Epoll => assert_eq!(errno(r), Some(libc::EPERM), "{kind}"),
            SelectorKind::Poll | SelectorKind::Select => {
                r.unwrap();
                assert_eq!(poll_now(&*sel), [ev(3, true, true)], "{kind}: always ready");
                sel.deregister(f.as_raw_fd()).unwrap();
            }
            // kqueue: whatever the kernel says; just must not misbehave.
            SelectorKind::Kqueue => {
                if r.is_ok() {
                    poll_now(&*sel);
                    sel.deregister(f.as_raw_fd()).unwrap();
                }
            }
        }
        std::fs::remove_file(path).unwrap();
    }
}

#[test]
fn select_rejects_fds_beyond_fd_setsize() {
    let Ok(sel) = new_selector(SelectorKind::Select) else {
        return;
    };
    assert_eq!(sel.max_fd(), Some(libc::FD_SETSIZE as RawFd - 1));
    const TARGET: RawFd = 1100;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit to fill in.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }).unwrap();
    let need = TARGET as libc::rlim_t + 16;
    if lim.rlim_cur < need {
        if lim.rlim_max != libc::RLIM_INFINITY && lim.rlim_max < need {
            eprintln!(
                "skipping select_rejects_fds_beyond_fd_setsize: RLIMIT_NOFILE hard limit {} < {need}",
                lim.rlim_max
            );
            return;
        }
        lim.rlim_cur = need;
        // SAFETY: `lim` is a valid rlimit; raising the soft limit up to the
        // hard limit is always allowed.
        cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }).unwrap();
    }
    let (a, _b) = pair();
    // SAFETY: duplicates `a` onto the lowest free fd >= TARGET.
    let fd = cvt(unsafe { libc::fcntl(a.as_raw_fd(), libc::F_DUPFD_CLOEXEC, TARGET) }).unwrap();
    // SAFETY: `fd` was just created and is owned by nobody else.
    let high = unsafe { OwnedFd::from_raw_fd(fd) };
    assert!(high.as_raw_fd() >= libc::FD_SETSIZE as RawFd);
    let err = sel
        .register(high.as_raw_fd(), 1, Interest::READABLE)
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(err.to_string(), "filedescriptor out of range in select()");
    // The others take it.
    for kind in kinds() {
        if kind != SelectorKind::Select {
            let other = new_selector(kind).unwrap();
            assert_eq!(other.max_fd(), None);
            other
                .register(high.as_raw_fd(), 1, Interest::WRITABLE)
                .unwrap();
            assert_eq!(poll_now(&*other), [ev(1, false, true)], "{kind}");
        }
    }
}

extern "C" fn noop_handler(_: libc::c_int) {}

fn install_sigusr1_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: `sa` is zero-initialised plain data, filled in below.
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = noop_handler as extern "C" fn(libc::c_int) as libc::sighandler_t;
        sa.sa_flags = 0; // no SA_RESTART
                         // SAFETY: `sa.sa_mask` is a valid sigset_t.
        cvt(unsafe { libc::sigemptyset(&mut sa.sa_mask) }).unwrap();
        // SAFETY: installs a handler that does nothing (async-signal-safe).
        cvt(unsafe { libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()) }).unwrap();
    });
}

/// A signal delivered to the thread blocked in select() makes it return
/// Interrupted, without retrying.
#[test]
fn signal_interrupts_select() {
    install_sigusr1_handler();
    for kind in kinds() {
        for timeout in [None, Some(Duration::from_secs(30))] {
            let sel: Arc<dyn Selector> = Arc::from(new_selector(kind).unwrap());
            let (a, _b) = pair();
            sel.register(a.as_raw_fd(), 1, Interest::READABLE).unwrap();
            let (tx, rx) = mpsc::channel();
            let sel2 = Arc::clone(&sel);
            let handle = thread::spawn(move || {
                let mut events = Vec::new();
                let r = sel2.select(&mut events, timeout);
                tx.send(r.map_err(|e| e.kind())).unwrap();
            });
            let tid = handle.as_pthread_t();
            let deadline = Instant::now() + Duration::from_secs(10);
            let result = loop {
                assert!(
                    Instant::now() < deadline,
                    "{kind}: select was not interrupted"
                );
                // SAFETY: the thread has not been joined, so `tid` is valid
                // even if it has already finished.
                let rc = unsafe { libc::pthread_kill(tid, libc::SIGUSR1) };
                assert_eq!(rc, 0);
                match rx.recv_timeout(Duration::from_millis(20)) {
                    Ok(r) => break r,
                    Err(mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(e) => panic!("{kind}: {e}"),
                }
            };
            assert_eq!(result, Err(io::ErrorKind::Interrupted), "{kind}");
            handle.join().unwrap();
        }
    }
}

/// A waker unblocks select(None) in another thread.
#[test]
fn waker_unblocks_select_from_another_thread() {
    for kind in kinds() {
        let sel: Arc<dyn Selector> = Arc::from(new_selector(kind).unwrap());
        let waker = Arc::new(Waker::new().unwrap());
        sel.register(waker.fd(), 0, Interest::READABLE).unwrap();
        let (tx, rx) = mpsc::channel();
        let sel2 = Arc::clone(&sel);
        let handle = thread::spawn(move || {
            let mut events = Vec::new();
            let start = Instant::now();
            sel2.select(&mut events, None).unwrap();
            tx.send((events, start.elapsed())).unwrap();
        });
        thread::sleep(Duration::from_millis(50));
        let w = Arc::clone(&waker);
        thread::spawn(move || w.wake().unwrap()).join().unwrap();
        let (events, elapsed) = rx
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("{kind}: wake did not unblock select"));
        assert_eq!(events, [ev(0, true, false)], "{kind}");
        assert!(elapsed >= Duration::from_millis(40), "{kind}: {elapsed:?}");
        handle.join().unwrap();
        waker.drain().unwrap();
        assert_eq!(poll_now(&*sel), [], "{kind}");
    }
}

/// Registration from another thread while select() is blocked does not
/// deadlock (no lock is held while waiting) and is seen by the next select.
#[test]
fn register_while_blocked_in_select() {
    for kind in kinds() {
        let sel: Arc<dyn Selector> = Arc::from(new_selector(kind).unwrap());
        let waker = Arc::new(Waker::new().unwrap());
        sel.register(waker.fd(), 0, Interest::READABLE).unwrap();
        let (tx, rx) = mpsc::channel();
        let (sel2, waker2) = (Arc::clone(&sel), Arc::clone(&waker));
        let handle = thread::spawn(move || {
            let mut events = Vec::new();
            loop {
                sel2.select(&mut events, Some(Duration::from_secs(10)))
                    .unwrap();
                if events.iter().any(|e| e.token == 0) {
                    waker2.drain().unwrap();
                }
                if let Some(e) = events.iter().find(|e| e.token == 7) {
                    tx.send(*e).unwrap();
                    return;
                }
            }
        });
        thread::sleep(Duration::from_millis(30));
        let (a, _b) = pair();
        sel.register(a.as_raw_fd(), 7, Interest::WRITABLE).unwrap();
        waker.wake().unwrap();
        let got = rx
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("{kind}: registration not picked up"));
        assert_eq!(got, ev(7, false, true), "{kind}");
        handle.join().unwrap();
    }
}

#[test]
fn many_wakes_one_drain() {
    for (kind, sel) in selectors() {
        let waker = Waker::new().unwrap();
        sel.register(waker.fd(), 9, Interest::READABLE).unwrap();
        assert_eq!(poll_now(&*sel), [], "{kind}");
        for _ in 0..10_000 {
            waker.wake().unwrap();
        }
        assert_eq!(poll_now(&*sel), [ev(9, true, false)], "{kind}");
        waker.drain().unwrap();
        assert_eq!(poll_now(&*sel), [], "{kind}");
        waker.drain().unwrap(); // nothing pending: fine too
    }
}

#[test]
fn own_fd() {
    for (kind, sel) in selectors() {
        match kind {
            SelectorKind::Epoll | SelectorKind::Kqueue => {
                let fd = sel.as_raw_fd().expect("has its own fd");
                oxloop_core::sys::fd_is_valid(fd).unwrap();
                // SAFETY: reads the descriptor flags of the selector's fd.
                let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFD) }).unwrap();
                assert_ne!(flags & libc::FD_CLOEXEC, 0, "{kind}: close-on-exec");
            }
            SelectorKind::Poll | SelectorKind::Select => assert_eq!(sel.as_raw_fd(), None),
        }
        assert_eq!(sel.kind(), kind);
    }
}

/// An fd closed while registered whose number now names another file: reregister means the
/// new file (epoll adds it; the kernel dropped the old one), and its events are reported.
#[test]
fn reregister_after_close_and_reuse() {
    for (kind, sel) in selectors() {
        let sel = &*sel;
        let (a, b) = pair();
        let fd = a.as_raw_fd();
        sel.register(fd, 1, Interest::READABLE).unwrap();
        let (c, mut d) = pair();
        // dup2 closes a's file and gives its number to c's file in one step (closing first
        // and waiting for the number to be reused would race with other test threads).
        let a = std::os::fd::IntoRawFd::into_raw_fd(a);
        // SAFETY: dup2 onto the number `a` gave up; `c2` is its only owner afterwards.
        let c2 = unsafe { OwnedFd::from_raw_fd(cvt(libc::dup2(c.as_raw_fd(), a)).unwrap()) };
        assert_eq!(c2.as_raw_fd(), fd);
        drop((b, c));
        sel.reregister(fd, 2, Interest::READABLE).unwrap();
        d.write_all(b"x").unwrap();
        let evs = sel_wait(sel);
        assert_eq!(evs, [ev(2, true, false)], "{kind}");
        sel.deregister(fd).unwrap();
        drop(c2);
    }
}

fn sel_wait(sel: &dyn Selector) -> Vec<Event> {
    let mut events = Vec::new();
    sel.select(&mut events, Some(Duration::from_secs(2)))
        .unwrap();
    events
}
