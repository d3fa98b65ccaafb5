"""Subprocesses: asyncio.create_subprocess_exec/shell, loop.subprocess_exec/shell and the
SubprocessTransport/SubprocessProtocol contract.

Each test runs on stock asyncio and on every oxloop loop; the stock loop decides what is
right. Stock asyncio tracks exits through the policy's child watcher (ThreadedChildWatcher on
3.9-3.11, PidfdChildWatcher on 3.12+, both created by asyncio on first use); oxloop tracks them
itself (a pidfd in the selector, or a waitpid thread), with no watcher and no SIGCHLD handler.
Tests that check what only oxloop promises (no watcher consulted, no zombie after the loop
closes on 3.12+, the thread fallback) say so in their name and docstring.
"""

import asyncio
import hashlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings

import pytest

from helpers import exact

PY = sys.version_info[:2]
PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
STDOUT = subprocess.STDOUT

PYTHON = sys.executable
ECHO = "/bin/echo"
TRUE = "/bin/true"
SLEEP = "/bin/sleep"


def py(code):
    return [PYTHON, "-c", code]


def zombie_or_alive(pid):
    """The State line of /proc/<pid>/status, or None once the pid is gone (reaped)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("State:"):
                    return line.split()[1]
    except (FileNotFoundError, ProcessLookupError):  # gone, or going while being read
        return None
    return "?"


def wait_reaped(pid, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if zombie_or_alive(pid) is None:
            return True
        time.sleep(0.01)
    return False


def count_fds():
    return len(os.listdir("/proc/self/fd"))


# ---------------------------------------------------------------------------
# stdin / stdout / stderr forms


def test_communicate_with_input(loop, run):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            *py("import sys; d = sys.stdin.buffer.read(); "
                "sys.stdout.buffer.write(d.upper()); sys.stderr.buffer.write(d[::-1])"),
            stdin=PIPE, stdout=PIPE, stderr=PIPE)
        out, err = await proc.communicate(b"some input")
        return out, err, proc.returncode

    assert run(loop, main()) == (b"SOME INPUT", b"tupni emos", 0)


def test_stderr_to_stdout(loop, run):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            *py("import sys; sys.stdout.write('out;'); sys.stdout.flush(); "
                "sys.stderr.write('err')"),
            stdout=PIPE, stderr=STDOUT)
        assert proc.stderr is None
        out, err = await proc.communicate()
        return out, err, proc.returncode

    assert run(loop, main()) == (b"out;err", None, 0)


def test_devnull_everywhere(loop, run):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            *py("import sys; assert sys.stdin.read() == ''; print('x'); "
                "print('y', file=sys.stderr)"),
            stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL)
        assert proc.stdin is None and proc.stdout is None and proc.stderr is None
        return await proc.wait()

    assert run(loop, main()) == 0


def test_fd_and_file_object_redirections(loop, run):
    r, w = os.pipe()
    with tempfile.TemporaryFile() as out_file, tempfile.TemporaryFile() as in_file:
        in_file.write(b"from a file")
        in_file.seek(0)

        async def main():
            proc = await asyncio.create_subprocess_exec(
                *py("import sys; d = sys.stdin.read(); sys.stdout.write(d + '!'); "
                    "sys.stderr.write('to fd')"),
                stdin=in_file, stdout=out_file.fileno(), stderr=w)
            return await proc.wait()

        try:
            assert run(loop, main()) == 0
        finally:
            os.close(w)
        out_file.seek(0)
        assert out_file.read() == b"from a file!"
    try:
        assert os.read(r, 100) == b"to fd"
    finally:
        os.close(r)


def test_stdin_pipe_write_drain_close(loop, run):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            *py("import sys; print(len(sys.stdin.buffer.read()))"),
            stdin=PIPE, stdout=PIPE)
        for _ in range(64):
            proc.stdin.write(b"a" * 16384)
            await proc.stdin.drain()
        proc.stdin.close()
        out = await proc.stdout.read()
        return out, await proc.wait()

    assert run(loop, main()) == (b"1048576\n", 0)


def test_subprocess_shell(loop, run):
    async def main():
        proc = await asyncio.create_subprocess_shell(
            "read x; echo \"got $x\"; echo err >&2; exit 7",
            stdin=PIPE, stdout=PIPE, stderr=PIPE)
        out, err = await proc.communicate(b"line\n")
        return out, err, proc.returncode

    assert run(loop, main()) == (b"got line\n", b"err\n", 7)


def test_stream_reader_limit(loop, run):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            *py("print('a' * 100)"), stdout=PIPE, limit=10)
        with pytest.raises(ValueError):
            await proc.stdout.readline()
        proc.kill()
        await proc.wait()

    run(loop, main())


# ---------------------------------------------------------------------------
# returncode, signals


def test_returncodes(loop, run):
    async def main():
        codes = []
        for code in (0, 1, 3, 255):
            proc = await asyncio.create_subprocess_exec(*py(f"import sys; sys.exit({code})"))
            codes.append(await proc.wait())
        return codes

    assert run(loop, main()) == [0, 1, 3, 255]


@pytest.mark.parametrize("method,sig", [
    ("kill", signal.SIGKILL), ("terminate", signal.SIGTERM), ("send_signal", signal.SIGUSR1)])
def test_killed_by_signal_negative_returncode(loop, run, method, sig):
    async def main():
        proc = await asyncio.create_subprocess_exec(SLEEP, "30")
        assert proc.returncode is None
        if method == "send_signal":
            proc.send_signal(sig)
        else:
            getattr(proc, method)()
        return await proc.wait(), proc.returncode

    assert run(loop, main()) == (-sig, -sig)


def test_signal_methods_after_exit(loop, run):
    """After the process exited and the transport finished, asyncio raises
    ProcessLookupError from send_signal/terminate/kill."""
    async def main():
        proc = await asyncio.create_subprocess_exec(TRUE)
        assert await proc.wait() == 0
        await asyncio.sleep(0.01)  # let the transport finish (connection_lost)
        errors = []
        for call in (lambda: proc.send_signal(signal.SIGTERM), proc.terminate, proc.kill):
            try:
                call()
            except ProcessLookupError:
                errors.append("ProcessLookupError")
        return errors

    assert run(loop, main()) == ["ProcessLookupError"] * 3


def test_wait_twice_and_concurrently(loop, run):
    async def main():
        proc = await asyncio.create_subprocess_exec(*py("import time; time.sleep(0.1)"))
        a, b = await asyncio.gather(proc.wait(), proc.wait())
        return a, b, await proc.wait()

    assert run(loop, main()) == (0, 0, 0)


def test_process_already_exited_before_tracking_starts(loop, run):
    """The child exits while the loop is not running: its status is still collected."""
    async def start():
        return await loop.subprocess_exec(asyncio.SubprocessProtocol, TRUE)

    transport, _ = run(loop, start())
    pid = transport.get_pid()
    deadline = time.monotonic() + 5
    while zombie_or_alive(pid) not in ("Z", None) and time.monotonic() < deadline:
        time.sleep(0.01)

    async def wait():
        return await transport._wait()

    assert run(loop, wait()) == 0
    transport.close()
    assert wait_reaped(pid)


def test_child_reaped_elsewhere_reports_255(loop_factory, run, caplog):
    """Someone else reaps the child (os.waitpid in user code): asyncio's watchers log a
    warning and report returncode 255. (Stock 3.9-3.11's ThreadedChildWatcher is already
    blocked in waitpid and races with the test's waitpid, so the stock reference is
    3.12+, whose PidfdChildWatcher sees the child the same way oxloop does.)"""
    if loop_factory.is_stock and PY < (3, 12):
        pytest.skip("ThreadedChildWatcher races with the test's own waitpid")
    loop = loop_factory()
    try:
        async def start():
            return await loop.subprocess_exec(asyncio.SubprocessProtocol, SLEEP, "30")

        transport, _ = run(loop, start())
        pid = transport.get_pid()
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)  # reaped here, behind the loop's back

        async def wait():
            return await transport._wait()

        with caplog.at_level(logging.WARNING, logger="asyncio"):
            assert run(loop, wait()) == 255
        assert any(f"pid {pid}" in r.getMessage() and "255" in r.getMessage()
                   for r in caplog.records)
        transport.close()
    finally:
        loop.close()


# ---------------------------------------------------------------------------
# Popen arguments


def test_cwd_and_env(loop, run, tmp_path):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            *py("import os; print(os.getcwd()); print(os.environ['OXLOOP_T'])"),
            stdout=PIPE, cwd=str(tmp_path), env={"OXLOOP_T": "env value", "PATH": "/bin"})
        out, _ = await proc.communicate()
        return out.decode().splitlines()

    assert run(loop, main()) == [os.path.realpath(tmp_path), "env value"]


def test_pass_fds_and_close_fds(loop, run):
    r, w = os.pipe()
    try:
        async def main():
            code = f"import os; os.write({w}, b'inherited')"
            proc = await asyncio.create_subprocess_exec(*py(code), pass_fds=(w,))
            ok = await proc.wait()
            proc = await asyncio.create_subprocess_exec(*py(code), close_fds=True,
                                                        stderr=DEVNULL)
            closed = await proc.wait()
            return ok, closed

        assert run(loop, main()) == (0, 1)  # without pass_fds the fd is closed (OSError)
        assert os.read(r, 100) == b"inherited"
    finally:
        os.close(r)
        os.close(w)


def test_start_new_session(loop, run):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            *py("import os; print(os.getsid(0) == os.getpid())"),
            stdout=PIPE, start_new_session=True)
        out, _ = await proc.communicate()
        return out

    assert run(loop, main()) == b"True\n"


@pytest.mark.skipif(PY < (3, 11), reason="Popen(process_group=) is Python 3.11+")
def test_process_group(loop, run):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            *py("import os; print(os.getpgid(0) == os.getpid())"),
            stdout=PIPE, process_group=0)
        out, _ = await proc.communicate()
        return out

    assert run(loop, main()) == b"True\n"


def test_umask_preexec_fn_user_group(loop, run):
    def preexec():
        os.environ["OXLOOP_PREEXEC"] = "ran"  # in the child only

    async def main():
        proc = await asyncio.create_subprocess_exec(
            *py("import os; print(oct(os.umask(0))); print(os.environ.get('OXLOOP_PREEXEC')); "
                "print(os.getuid(), os.getgid())"),
            stdout=PIPE, umask=0o027, preexec_fn=preexec,
            user=os.getuid(), group=os.getgid(), extra_groups=[os.getgid()])
        out, _ = await proc.communicate()
        return out.decode().splitlines()

    assert run(loop, main()) == ["0o27", "ran", f"{os.getuid()} {os.getgid()}"]
    assert "OXLOOP_PREEXEC" not in os.environ


def test_program_not_found(loop, run):
    async def main():
        with pytest.raises(FileNotFoundError):
            await asyncio.create_subprocess_exec("/nonexistent/oxloop-program")

    run(loop, main())


@pytest.mark.parametrize("kwargs,msg", [
    ({"bufsize": 1}, "bufsize must be 0"),
    ({"bufsize": -1}, "bufsize must be 0"),
    ({"text": True}, "text must be False"),
    ({"encoding": "utf-8"}, "encoding must be None"),
    ({"errors": "strict"}, "errors must be None"),
    ({"universal_newlines": True}, "universal_newlines must be False"),
])
@pytest.mark.parametrize("api", ["exec", "shell"])
def test_rejected_arguments(loop, run, kwargs, msg, api):
    async def main():
        with pytest.raises(ValueError, match=exact(msg)):
            if api == "exec":
                await loop.subprocess_exec(asyncio.SubprocessProtocol, TRUE, **kwargs)
            else:
                await loop.subprocess_shell(asyncio.SubprocessProtocol, TRUE, **kwargs)
        with pytest.raises(ValueError, match=exact(msg)):
            if api == "exec":
                await asyncio.create_subprocess_exec(TRUE, **kwargs)
            else:
                await asyncio.create_subprocess_shell(TRUE, **kwargs)

    run(loop, main())


def test_shell_and_cmd_checks(loop, run):
    async def main():
        with pytest.raises(ValueError, match=exact("shell must be False")):
            await loop.subprocess_exec(asyncio.SubprocessProtocol, TRUE, shell=True)
        with pytest.raises(ValueError, match=exact("shell must be True")):
            await loop.subprocess_shell(asyncio.SubprocessProtocol, TRUE, shell=False)
        with pytest.raises(ValueError, match=exact("cmd must be a string")):
            await loop.subprocess_shell(asyncio.SubprocessProtocol, [TRUE])

    run(loop, main())


# ---------------------------------------------------------------------------
# the transport and the protocol


class RecordingProtocol(asyncio.SubprocessProtocol):
    def __init__(self, loop):
        self.calls = []
        self.data = {1: bytearray(), 2: bytearray()}
        self.done = loop.create_future()
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        self.calls.append(("connection_made",))

    def pipe_data_received(self, fd, data):
        self.data[fd] += data
        if self.calls[-1] != ("pipe_data_received", fd):
            self.calls.append(("pipe_data_received", fd))

    def pipe_connection_lost(self, fd, exc):
        self.calls.append(("pipe_connection_lost", fd, exc))

    def process_exited(self):
        self.calls.append(("process_exited", self.transport.get_returncode()))

    def connection_lost(self, exc):
        self.calls.append(("connection_lost", exc))
        self.done.set_result(None)


def test_protocol_callbacks_in_order(loop, run):
    async def main():
        transport, proto = await loop.subprocess_exec(
            lambda: RecordingProtocol(loop),
            *py("import sys; sys.stdout.write(sys.stdin.read()); sys.stderr.write('e'); "
                "sys.exit(4)"),
            stdin=PIPE, stdout=PIPE, stderr=PIPE)
        assert proto.calls == [("connection_made",)]
        assert isinstance(transport, asyncio.SubprocessTransport)
        pid = transport.get_pid()
        assert isinstance(pid, int) and pid > 0
        assert transport.get_returncode() is None
        stdin = transport.get_pipe_transport(0)
        assert isinstance(stdin, asyncio.WriteTransport)
        assert isinstance(transport.get_pipe_transport(1), asyncio.ReadTransport)
        assert isinstance(transport.get_pipe_transport(2), asyncio.ReadTransport)
        assert transport.get_pipe_transport(3) is None
        assert transport.get_extra_info("subprocess").pid == pid
        stdin.write(b"echo")
        stdin.close()
        await proto.done
        return transport, proto

    transport, proto = run(loop, main())
    calls = proto.calls
    assert calls[0] == ("connection_made",)
    assert calls[-1] == ("connection_lost", None)
    assert calls.count(("process_exited", 4)) == 1
    assert len([c for c in calls if c[0] == "process_exited"]) == 1
    for fd in (0, 1, 2):
        assert calls.count(("pipe_connection_lost", fd, None)) == 1
    for fd in (1, 2):
        assert calls.index(("pipe_data_received", fd)) < calls.index(("pipe_connection_lost", fd, None))
    assert bytes(proto.data[1]) == b"echo" and bytes(proto.data[2]) == b"e"
    assert transport.get_returncode() == 4
    # the transport finished: signals now raise ProcessLookupError
    for call in (lambda: transport.send_signal(signal.SIGTERM), transport.terminate,
                 transport.kill):
        with pytest.raises(ProcessLookupError):
            call()
    transport.close()
    assert transport.is_closing()


def test_transport_close_kills_running_process(loop, run):
    async def main():
        transport, proto = await loop.subprocess_exec(
            lambda: RecordingProtocol(loop), SLEEP, "30",
            stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL)
        pid = transport.get_pid()
        transport.close()
        assert transport.is_closing()
        await proto.done
        return pid, proto.calls, transport.get_returncode()

    pid, calls, rc = run(loop, main())
    assert rc == -signal.SIGKILL
    assert calls == [("connection_made",), ("process_exited", -9), ("connection_lost", None)]
    assert wait_reaped(pid)


def test_subprocess_transport_cancelled_creation(loop, run, caplog):
    """Cancelling create_subprocess_exec while the transport is being set up kills and reaps
    the child (asyncio's error path)."""
    pids = []

    class Proto(asyncio.SubprocessProtocol):
        def connection_made(self, transport):
            pids.append(transport.get_pid())

    async def main():
        task = asyncio.ensure_future(loop.subprocess_exec(Proto, SLEEP, "30", stdout=PIPE))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.05)

    with caplog.at_level(logging.CRITICAL, logger="asyncio"):
        run(loop, main())
    for pid in pids:
        assert wait_reaped(pid)


# ---------------------------------------------------------------------------
# scale, threads, loop close, fds


def test_200_concurrent_short_lived_processes(loop, run):
    async def one(i):
        proc = await asyncio.create_subprocess_exec(ECHO, f"process {i}", stdout=PIPE)
        out, _ = await proc.communicate()
        return out, proc.returncode

    async def main():
        return await asyncio.gather(*(one(i) for i in range(200)))

    results = run(loop, main(), timeout=60)
    assert results == [(f"process {i}\n".encode(), 0) for i in range(200)]


def test_subprocess_from_a_loop_in_another_thread(loop_factory):
    """A loop running in a non-main thread spawns and collects subprocesses (oxloop needs no
    watcher for it; stock asyncio uses the watcher it creates by default)."""
    result = {}

    def thread_main():
        lp = loop_factory()
        try:
            async def main():
                proc = await asyncio.create_subprocess_exec(
                    *py("import sys; print(sys.stdin.read()[::-1])"), stdin=PIPE, stdout=PIPE)
                out, _ = await proc.communicate(b"olleh")
                p2 = await asyncio.create_subprocess_exec(SLEEP, "30")
                p2.terminate()
                return out, proc.returncode, await p2.wait()

            result["value"] = lp.run_until_complete(asyncio.wait_for(main(), 20))
        except BaseException as exc:
            result["error"] = exc
        finally:
            lp.close()

    t = threading.Thread(target=thread_main)
    t.start()
    t.join(30)
    assert not t.is_alive()
    assert result.get("error") is None, result.get("error")
    assert result["value"] == (b"hello\n", 0, -signal.SIGTERM)


def test_no_sigchld_handler_installed(loop, run):
    before = signal.getsignal(signal.SIGCHLD)

    async def main():
        proc = await asyncio.create_subprocess_exec(TRUE)
        return await proc.wait()

    assert run(loop, main()) == 0
    assert signal.getsignal(signal.SIGCHLD) is before


def test_loop_closed_with_running_process_leaves_no_zombie(loop_factory, run, caplog, request):
    """The loop is closed while its child runs; the child dies afterwards and must be reaped.
    oxloop hands the pid to a reaper thread; stock 3.9-3.11's ThreadedChildWatcher reaps it
    too; stock 3.12+'s PidfdChildWatcher leaves a zombie (its reader dies with the loop)."""
    if loop_factory.is_stock and PY >= (3, 12):
        request.applymarker(pytest.mark.xfail(
            strict=True, reason="stock asyncio 3.12+ (PidfdChildWatcher) leaves a zombie"))
    lp = loop_factory()
    try:
        async def start():
            return await lp.subprocess_exec(
                asyncio.SubprocessProtocol, SLEEP, "30", stdin=DEVNULL, stdout=DEVNULL,
                stderr=DEVNULL)

        transport, _ = run(lp, start())
        pid = transport.get_pid()
    finally:
        lp.close()
    with caplog.at_level(logging.CRITICAL, logger="asyncio"):
        os.kill(pid, signal.SIGKILL)
        reaped = wait_reaped(pid)
    state = zombie_or_alive(pid)
    transport.close()
    assert reaped, f"pid {pid} not reaped after the loop closed (state {state})"


def test_fd_leak_many_subprocess_runs(loop, run):
    """50 subprocesses with all three pipes, run to completion, leave no fd open while the
    loop is still alive (pipes and pidfds are closed as each finishes)."""
    async def once(i):
        proc = await asyncio.create_subprocess_exec(
            *py("import sys; sys.stdout.write(sys.stdin.read()); sys.stderr.write('e')")
            if i % 10 == 0 else [ECHO, str(i)],
            stdin=PIPE, stdout=PIPE, stderr=PIPE)
        # (echo does not read stdin: writing to it could fail with EPIPE)
        out, err = await proc.communicate(b"x" if i % 10 == 0 else None)
        return proc.returncode

    async def main():
        await once(1)  # warm-up: anything created once per loop (e.g. the selector's state)
        await asyncio.sleep(0.01)
        before = count_fds()
        for batch in range(5):
            codes = await asyncio.gather(*(once(batch * 10 + i) for i in range(10)))
            assert codes == [0] * 10
        await asyncio.sleep(0.05)
        return before, count_fds()

    before, after = run(loop, main(), timeout=60)
    assert after == before


def test_large_output_with_slow_reader(loop, run):
    """100 MB through the child's stdout, read by a reader that stalls now and then (so the
    pipe transport is paused and resumed by the StreamReader's flow control)."""
    size = 100 * 1000 * 1000  # ~0.5 s per loop here
    block = 1 << 20
    code = (
        "import sys\n"
        f"size = {size}\n"
        "chunk = bytes(range(256)) * 4096\n"
        "out = sys.stdout.buffer\n"
        "while size > 0:\n"
        "    n = min(size, len(chunk))\n"
        "    out.write(chunk[:n])\n"
        "    size -= n\n"
        "out.flush()\n"
    )
    expected = hashlib.sha256()
    left = size
    chunk = bytes(range(256)) * 4096
    while left > 0:
        n = min(left, len(chunk))
        expected.update(chunk[:n])
        left -= n

    async def main():
        proc = await asyncio.create_subprocess_exec(*py(code), stdout=PIPE)
        got = 0
        h = hashlib.sha256()
        reads = 0
        while True:
            data = await proc.stdout.read(block)
            if not data:
                break
            got += len(data)
            h.update(data)
            reads += 1
            if reads % 8 == 0:
                await asyncio.sleep(0.002)  # the slow part
        return got, h.hexdigest(), await proc.wait()

    t0 = time.monotonic()
    got, digest, rc = run(loop, main(), timeout=60)
    elapsed = time.monotonic() - t0
    assert (got, rc) == (size, 0)
    assert digest == expected.hexdigest()
    assert elapsed < 20, f"{size} bytes took {elapsed:.1f} s"


# ---------------------------------------------------------------------------
# what only oxloop promises


def test_oxloop_consults_no_child_watcher(loop_factory, run):
    """oxloop never calls get_child_watcher(): no watcher is created, no DeprecationWarning
    (3.12+), no SIGCHLD handler. (Stock asyncio creates the policy's watcher on first use.)"""
    if loop_factory.is_stock:
        pytest.skip("stock asyncio uses the policy's child watcher by design")
    old_policy = asyncio.get_event_loop_policy()
    policy = asyncio.DefaultEventLoopPolicy()
    asyncio.set_event_loop_policy(policy)
    lp = loop_factory()
    try:
        sig = signal.getsignal(signal.SIGCHLD)

        async def main():
            proc = await asyncio.create_subprocess_exec(ECHO, "hi", stdout=PIPE)
            out, _ = await proc.communicate()
            return out, proc.returncode

        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert run(lp, main()) == (b"hi\n", 0)
        assert getattr(policy, "_watcher", None) is None
        assert signal.getsignal(signal.SIGCHLD) is sig
    finally:
        lp.close()
        asyncio.set_event_loop_policy(old_policy)


def test_oxloop_thread_fallback_without_pidfd(loop_factory, run, monkeypatch):
    """With pidfd_open unavailable (old kernel: ENOSYS; seccomp: EPERM), oxloop falls back to
    a waitpid thread per child: same results, nothing left behind."""
    if loop_factory.is_stock:
        pytest.skip("oxloop's own exit tracking")
    import errno

    def no_pidfd(*args):
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    monkeypatch.setattr(os, "pidfd_open", no_pidfd, raising=False)
    lp = loop_factory()
    try:
        async def main():
            proc = await asyncio.create_subprocess_exec(
                *py("import sys; sys.stdout.write(sys.stdin.read())"), stdin=PIPE, stdout=PIPE)
            out, _ = await proc.communicate(b"threaded")
            p2 = await asyncio.create_subprocess_exec(SLEEP, "30")
            p2.kill()
            procs = [await asyncio.create_subprocess_exec(ECHO, str(i), stdout=DEVNULL)
                     for i in range(20)]
            results = await asyncio.gather(*(p.wait() for p in procs))
            return out, proc.returncode, await p2.wait(), results

        assert run(lp, main()) == (b"threaded", 0, -9, [0] * 20)
        assert len(lp._oxloop_children) == 0

        async def start():
            return await lp.subprocess_exec(asyncio.SubprocessProtocol, SLEEP, "30",
                                            stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL)

        transport, _ = run(lp, start())
        pid = transport.get_pid()
    finally:
        lp.close()
    os.kill(pid, signal.SIGKILL)
    assert wait_reaped(pid)
    transport.close()


def test_oxloop_honours_an_explicit_watcher(loop_factory, run):
    """A watcher the user installed on purpose (here an inactive one) is used as asyncio uses
    it: asyncio's RuntimeError before any process is created."""
    if PY >= (3, 14):
        pytest.skip("child watchers were removed in Python 3.14")
    from unittest import mock

    watcher = mock.create_autospec(asyncio.AbstractChildWatcher)
    watcher.is_active.return_value = False
    watcher.__enter__.return_value = watcher
    old_policy = asyncio.get_event_loop_policy()
    policy = asyncio.DefaultEventLoopPolicy()
    asyncio.set_event_loop_policy(policy)
    lp = loop_factory()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            policy.set_child_watcher(watcher)

            async def main():
                with pytest.raises(RuntimeError, match="asyncio.get_child_watcher"):
                    await asyncio.create_subprocess_exec(TRUE)

            run(lp, main())
        watcher.add_child_handler.assert_not_called()
    finally:
        lp.close()
        asyncio.set_event_loop_policy(old_policy)
