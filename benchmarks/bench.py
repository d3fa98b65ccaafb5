#!/usr/bin/env python3
"""oxloop's side-by-side benchmark driver (see benchmarks/README.md).

    python bench.py --mode quick|full [--loops L1,L2,...] [--only GROUP,...] [--out DIR]

Runs every case for every loop, interleaving the loops within a case and repeating each
measurement (median of --reps, spread = (max - min) / median). Servers are pinned to one
core and the Rust load generator to another; the host's other load is sampled from
/proc/stat around every measurement and a noisy one is re-run once. Writes results.json,
report.md and PNG plots into the output folder (benchmarks/out/<mode>-<time>/ by default).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as _dt
import glob
import json
import os
import platform
import re
import resource
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import loops as loops_mod  # noqa: E402
import report  # noqa: E402

TOOLS = os.environ.get("OXLOOP_BENCH_TOOLS", os.path.join(HERE, "target", "release"))
LOADGEN = os.path.join(TOOLS, "loadgen")
NATIVE = os.path.join(TOOLS, "native-echo")
PY = sys.executable
HZ = os.sysconf("SC_CLK_TCK")
NOISE_CORES = 0.25  # other load (in cores) above which a sample counts as noisy
KIB = 1024

# ---------------------------------------------------------------------------------------------
# What each mode runs. Sizes are bytes; "conns" concurrent connections.

MODES = {
    "quick": dict(
        reps=3,
        duration=0.5,
        warmup=0.2,
        http_gen="loadgen",  # wrk can only run whole seconds
        echo=[("protocol", 1 * KIB, 10), ("streams", 1 * KIB, 10), ("sock", 1 * KIB, 10), ("protocol", 100 * KIB, 10)],
        http_conns=[10],
        udp=[(1 * KIB, 10)],
        micro=dict(call_soon=200_000, timers=100_000, sleep0_rounds=1000, gather=50_000, futures=100_000, executor=3000),
        tree=dict(branches=5, depth=5),
        tree_variants=["none", "io", "memoization", "cpu_io_mixed", "taskgroup"],
        timer_samples=20,
        mem_conns=10_000,
        mem_reps=3,
        instr=False,
    ),
    "full": dict(
        reps=3,
        duration=0.6,
        warmup=0.2,
        http_gen="wrk",
        echo=[(style, size, conns) for style in ("protocol", "streams", "sock") for size in (1 * KIB, 10 * KIB, 100 * KIB) for conns in (1, 10)],
        http_conns=[10, 100],
        udp=[(1 * KIB, 1), (1 * KIB, 10)],
        micro=dict(call_soon=1_000_000, timers=100_000, sleep0_rounds=5000, gather=100_000, futures=200_000, executor=10_000),
        tree=dict(branches=6, depth=5),
        tree_variants=["none", "io", "memoization", "cpu_io_mixed", "taskgroup"],
        timer_samples=50,
        mem_conns=10_000,
        mem_reps=3,
        instr=True,
    ),
}

# Instruction counting: (case, params for the small run, params for the large run, ops of each).
INSTR_CASES = [
    ("call_soon_batch", {"n": 2000}, {"n": 12000}),
    ("call_soon_chain", {"n": 2000}, {"n": 12000}),
    ("timers", {"n": 2000}, {"n": 12000}),
    ("sleep0", {"tasks": 100, "rounds": 20}, {"tasks": 100, "rounds": 120}),
    ("gather_tasks", {"n": 2000}, {"n": 12000}),
    ("future_chain", {"n": 2000}, {"n": 12000}),
    ("executor", {"n": 200}, {"n": 1200}),
    ("async_tree", {"variant": "none", "branches": 5, "depth": 4}, {"variant": "none", "branches": 5, "depth": 5}),
]


def instr_ops(case: str, params: dict) -> int:
    if case == "sleep0":
        return params["tasks"] * params["rounds"]
    if case == "async_tree":
        b, d = params["branches"], params["depth"]
        return sum(b**k for k in range(d + 1))
    if case == "call_soon_batch":
        return (params["n"] // 1000) * 1000 if params["n"] >= 1000 else params["n"]
    return params["n"]


# Subprocesses and pipes (micro.py subprocess_spawn / pipe_throughput), same in both modes. A
# loop without subprocess or pipe support reports the case skipped ("n/a: ..."), not an error.
SUBPROCESS_PIPE_CASES = [
    dict(name="subprocess spawn+wait /bin/true x10 (procs/s)", case="subprocess_spawn", params={"n": 200, "concurrency": 10}, unit="ops/s", io=True),
    dict(name="subprocess echo + communicate x10 (procs/s)", case="subprocess_spawn", params={"n": 200, "concurrency": 10, "output": True}, unit="ops/s", io=True),
    dict(name="pipe throughput, write->read pipe (MB/s)", case="pipe_throughput", params={"mb": 200}, unit="ops/s", io=True),
]


def micro_cases(cfg: dict) -> list[dict]:
    m = cfg["micro"]
    cases = [
        dict(name="call_soon batch", case="call_soon_batch", params={"n": m["call_soon"]}, unit="ops/s", instr="call_soon_batch"),
        dict(name="call_soon chain", case="call_soon_chain", params={"n": m["call_soon"]}, unit="ops/s", instr="call_soon_chain"),
        dict(name="100k timers, half cancelled", case="timers", params={"n": m["timers"]}, unit="ops/s", instr="timers"),
        dict(name="sleep(0) among 100 tasks", case="sleep0", params={"tasks": 100, "rounds": m["sleep0_rounds"]}, unit="ops/s", instr="sleep0"),
        dict(name="create_task + gather", case="gather_tasks", params={"n": m["gather"]}, unit="ops/s", instr="gather_tasks"),
        dict(name="future chain", case="future_chain", params={"n": m["futures"]}, unit="ops/s", instr="future_chain"),
        dict(name="run_in_executor round trip", case="executor", params={"n": m["executor"]}, unit="ops/s", instr="executor", io=True),
        *SUBPROCESS_PIPE_CASES,
    ]
    for v in cfg["tree_variants"]:
        cases.append(
            dict(
                name=f"async_tree {v}" + (" (TaskGroup, io leaves)" if v == "taskgroup" else ""),
                case="async_tree",
                params={"variant": v, **cfg["tree"]},
                unit="ms",
                instr="async_tree" if v == "none" else None,
                io=v != "none",
            )
        )
    return cases


# ---------------------------------------------------------------------------------------------
# Host and process sampling


def log(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def host_stat() -> tuple[float, float]:
    """(busy seconds, total seconds) summed over all CPUs.

    Busy includes irq/softirq (a process's schedstat run time includes the softirq work done in
    its context, e.g. loopback delivery) and steal (another guest ran instead of this one).
    """
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    v = [int(x) for x in parts]
    user, nice, system, idle, iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq + steal
    total = busy + idle + iowait + irq + softirq
    return busy / HZ, total / HZ


def proc_cpu_s(pid: int) -> float:
    """CPU time (user+sys) of all live threads of pid, in seconds, ns precision if possible."""
    total = 0
    ok = False
    for p in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(p) as f:
                total += int(f.read().split()[0])
            ok = True
        except (OSError, ValueError, IndexError):
            pass
    if ok:
        return total / 1e9
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / HZ
    except (OSError, IndexError, ValueError):
        return 0.0


def proc_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def proc_nfds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


class Pinning:
    def __init__(self):
        cores = sorted(os.sched_getaffinity(0))
        self.ok = len(cores) >= 2
        self.server = {cores[0]} if self.ok else None
        self.client = {cores[1]} if self.ok else None
        self.desc = f"server on core {cores[0]}, load generator on core {cores[1]}" if self.ok else "not pinned (fewer than 2 cores)"

    def pre(self, which: str):
        cores = getattr(self, which)
        if not cores:
            return None
        return lambda: os.sched_setaffinity(0, cores)


PIN: Pinning


def median(xs):
    return statistics.median(xs) if xs else None


def spread(xs):
    m = median(xs)
    if not xs or not m:
        return None
    return (max(xs) - min(xs)) / abs(m)


# ---------------------------------------------------------------------------------------------
# Servers and the load generator


class Server:
    def __init__(self, label: str, argv: list[str], logdir: str):
        self.label = label
        self.log_path = os.path.join(logdir, f"server-{label}-{int(time.time() * 1000) % 10**8}.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL, cwd=HERE, preexec_fn=PIN.pre("server"))
        self.port = None
        self.error = None

    def wait_ready(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        buf = b""
        fd = self.proc.stdout.fileno()
        while time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not r:
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
            m = re.search(rb"READY (\d+)", buf)
            if m:
                self.port = int(m.group(1))
                return True
        self.error = f"server did not start ({self.tail()})"
        self.stop()
        return False

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self) -> str:
        try:
            self.log.flush()
            with open(self.log_path) as f:
                lines = [ln.strip() for ln in f.read().strip().splitlines() if ln.strip()]
            return " | ".join(lines[-3:])[-400:] or f"exit code {self.proc.poll()}"
        except OSError:
            return "?"

    def cpu(self) -> float:
        return proc_cpu_s(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        if self.proc.stdout:
            self.proc.stdout.close()
        self.log.close()


def start_server(label: str, spec: str | None, kind: str, logdir: str) -> Server:
    if spec is None:  # native ceiling
        argv = [NATIVE, "udp" if kind == "udp" else "tcp"]
    else:
        argv = [PY, os.path.join(HERE, "servers.py"), "--loop", spec, "--kind", kind]
    return Server(label, argv, logdir)


def run_client(argv: list[str], timeout: float) -> tuple[int, str, str, float]:
    """Run a client pinned to the client core; returns (rc, stdout, stderr, client cpu s)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, preexec_fn=PIN.pre("client"))
        deadline = time.monotonic() + timeout
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                p.kill()
                pid, status, ru = os.wait4(p.pid, 0)
                status = -1
                break
            time.sleep(0.01)
        p.returncode = os.waitstatus_to_exitcode(status) if status != -1 else -9
        out.seek(0)
        err.seek(0)
        return p.returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace"), ru.ru_utime + ru.ru_stime


WRK_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6}


def parse_wrk(text: str) -> dict:
    res = {}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", text)
    if m:
        res["count"] = int(m.group(1))
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if m:
        res["rps"] = float(m.group(1))
    for pct, key in (("50", "p50"), ("99", "p99")):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        if m:
            res[key] = float(m.group(1)) * WRK_UNITS[m.group(2)]
    m = re.search(r"Socket errors: (.*)", text)
    if m:
        res["socket_errors"] = m.group(1).strip()
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        res["non2xx"] = int(m.group(1))
    return res


def load_once(server: Server, mode: str, conns: int, size: int, duration: float, gen: str = "loadgen") -> dict:
    """One measurement against a running server, with CPU and host-load accounting."""
    if gen == "wrk":
        d = max(1, int(round(duration)))
        argv = ["wrk", "-t1", f"-c{conns}", f"-d{d}s", "--latency", f"http://127.0.0.1:{server.port}/"]
        span = float(d)
    else:
        argv = [LOADGEN, mode, "--addr", f"127.0.0.1:{server.port}", "--conns", str(conns), "--size", str(size), "--duration", f"{duration:.3f}"]
        span = duration
    b0, _ = host_stat()
    s0 = server.cpu()
    t0 = time.monotonic()
    rc, out, err, client_cpu = run_client(argv, timeout=span + 30)
    t1 = time.monotonic()
    s1 = server.cpu()
    b1, _ = host_stat()
    elapsed = t1 - t0
    server_cpu = s1 - s0
    other = max(0.0, (b1 - b0) - server_cpu - client_cpu) / elapsed
    sample = {"other_load": round(other, 3), "server_cpu_s": round(server_cpu, 6), "client_cpu_s": round(client_cpu, 6)}
    if gen == "wrk":
        w = parse_wrk(out)
        if rc != 0 or "rps" not in w or w.get("non2xx") or w.get("socket_errors"):
            sample["error"] = f"wrk rc={rc}: {(err or out).strip()[-300:]}"
            return sample
        count = w.get("count", int(w["rps"] * span))
        sample.update(value=w["rps"], count=count, p50=w.get("p50"), p99=w.get("p99"))
    else:
        try:
            j = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            sample["error"] = f"loadgen rc={rc}: {err.strip()[-300:]}"
            return sample
        if rc != 0 or j.get("errors"):
            sample["error"] = f"loadgen rc={rc}, {j.get('errors')} errors: {err.strip()[-300:]}"
            return sample
        count = j["count"]
        sample.update(value=j["rps"], count=count, p50=j["latency"]["p50"], p99=j["latency"]["p99"])
        if j.get("lost"):
            sample["lost"] = j["lost"]
    if not server.alive():
        sample["error"] = f"server died: {server.tail()}"
        return sample
    sample["cpu_us_per_req"] = server_cpu / count * 1e6 if count else None
    sample["server_util"] = round(server_cpu / span, 3)
    sample["noisy"] = other > NOISE_CORES
    return sample


def measure(server: Server, *a, **kw) -> dict:
    s = load_once(server, *a, **kw)
    if s.get("noisy") and "error" not in s:
        first = s
        s = load_once(server, *a, **kw)
        s["rerun"] = True
        s["first_other_load"] = first["other_load"]
        if s.get("noisy") and "error" not in s and first["other_load"] < s["other_load"]:
            first["rerun"] = True
            s = first
    return s


def warm(server: Server, mode: str, conns: int, size: int, seconds: float, gen: str) -> None:
    """Prime a fresh server (allocator, caches, first-connection effects) before measuring."""
    if gen == "wrk":
        mode = "http"
    argv = [LOADGEN, mode, "--addr", f"127.0.0.1:{server.port}", "--conns", str(conns), "--size", str(size), "--duration", f"{seconds:.3f}"]
    run_client(argv, timeout=seconds + 30)


def summarize(samples: list[dict], higher_better: bool = True) -> dict:
    good = [s for s in samples if "error" not in s and s.get("value") is not None]
    errors = [s["error"] for s in samples if "error" in s]
    out = {"samples": samples}
    if not good:
        out["error"] = errors[0] if errors else "no sample"
        return out
    vals = [s["value"] for s in good]
    out["median"] = median(vals)
    out["spread"] = spread(vals) if len(vals) > 1 else None
    out["n"] = len(good)
    for key in ("p50", "p99", "cpu_us_per_req", "server_util"):
        xs = [s[key] for s in good if s.get(key) is not None]
        if xs:
            out[key] = median(xs)
    out["noisy"] = sum(1 for s in good if s.get("noisy"))
    out["reruns"] = sum(1 for s in good if s.get("rerun"))
    if errors:
        out["errors"] = errors
    return out


def rotate(xs: list, k: int) -> list:
    if not xs:
        return xs
    k %= len(xs)
    return xs[k:] + xs[:k]


# ---------------------------------------------------------------------------------------------
# Case groups


def run_load_case(name: str, group: str, kind: str, mode: str, size: int, conns: int, participants: list[tuple[str, str | None]], cfg: dict, logdir: str, gen: str = "loadgen", extra: dict | None = None) -> dict:
    t_case = time.monotonic()
    servers: dict[str, Server] = {}
    results: dict[str, dict] = {}
    for label, spec in participants:
        servers[label] = start_server(label, spec, kind, logdir)
    for label, srv in servers.items():
        if not srv.wait_ready():
            results[label] = {"error": srv.error, "samples": []}
    live = [lab for lab, _ in participants if lab not in results]
    for label in live:
        warm(servers[label], mode, conns, size, cfg["warmup"], gen)
    samples: dict[str, list] = {lab: [] for lab in live}
    for rep in range(cfg["reps"]):
        for label in rotate(live, rep):
            srv = servers[label]
            if not srv.alive():
                samples[label].append({"error": f"server died: {srv.tail()}"})
                continue
            samples[label].append(measure(srv, mode, conns, size, cfg["duration"], gen=gen))
    for label in live:
        results[label] = summarize(samples[label])
    for srv in servers.values():
        srv.stop()
    case = {"group": group, "name": name, "kind": kind, "size": size, "conns": conns, "metric": "req/s", "higher_better": True, "generator": gen, "results": results}
    if extra:
        case.update(extra)
    line = "  ".join(f"{lab} {report.fmt_num(r.get('median'))}" + (f" [{r['spread'] * 100:.0f}%]" if r.get("spread") is not None else "") if "median" in r else f"{lab} ERROR" for lab, r in results.items())
    log(f"  {name:<34} {line}   ({time.monotonic() - t_case:.1f}s)")
    for lab, r in results.items():
        if "error" in r:
            log(f"    {lab}: {r['error']}")
    return case


# TLS cases: the Protocol echo server and the httptools server with ssl= (servers.py kinds
# tls-protocol / tls-http, certificate tests/certs/server.pem), loaded by the Rust loadgen's
# `tls` / `https` modes (rustls, verifying against tests/certs/ca.pem, SNI "localhost"). The
# client is native so the Python server is the bottleneck; TLS sessions are set up once per
# connection, before the clock starts, so the figures are the per-request record cost.
# (style, size, conns) per mode; style "http" is the HTTP case.
TLS_CASES = {
    "quick": [("protocol", 1 * KIB, 10), ("http", 0, 10)],  # (+ 100 KiB in full: quick's budget)
    "full": [("protocol", 1 * KIB, 10), ("protocol", 100 * KIB, 10), ("http", 0, 10)],
}


def run_tls(loop_list, mode: str, cfg: dict, logdir: str) -> list[dict]:
    os.environ.setdefault("LOADGEN_TLS_CA", os.path.join(REPO, "tests", "certs", "ca.pem"))
    cases = []
    for style, size, conns in TLS_CASES[mode]:
        if style == "http":
            name, kind, lg_mode = f"TLS HTTP httptools x{conns}", "tls-http", "https"
        else:
            name, kind, lg_mode = f"TLS {style} echo {report.fmt_size(size)} x{conns}", "tls-protocol", "tls"
        case = run_load_case(name, "tls", kind, lg_mode, size, conns, loop_list, cfg, logdir)
        for r in case["results"].values():  # a loop without TLS (rloop): n/a, not an error
            if "median" not in r and "n/a:" in str(r.get("error", "")):
                r["error"] = "n/a (no TLS support in this loop)"
                r["na"] = True
        cases.append(case)
    return cases


class Worker:
    """A micro.py --worker process for one loop, pinned to the server core."""

    def __init__(self, label: str, spec: str, logdir: str):
        self.label, self.spec, self.logdir = label, spec, logdir
        self.proc = None

    def start(self):
        self.log = open(os.path.join(self.logdir, f"micro-{self.label}.log"), "a")
        self.proc = subprocess.Popen([PY, os.path.join(HERE, "micro.py"), "--loop", self.spec, "--worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, cwd=HERE, preexec_fn=PIN.pre("server"))

    def run(self, case: str, params: dict, timeout: float) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        b0, _ = host_stat()
        c0 = proc_cpu_s(self.proc.pid)
        t0 = time.monotonic()
        try:
            self.proc.stdin.write((json.dumps({"case": case, "params": params}) + "\n").encode())
            self.proc.stdin.flush()
        except OSError as e:
            self.kill()
            return {"error": f"worker died: {e}"}
        fd = self.proc.stdout.fileno()
        r, _, _ = select.select([fd], [], [], timeout)
        if not r:
            self.kill()
            return {"error": f"timeout after {timeout:.0f}s (hang?)"}
        line = self.proc.stdout.readline()
        t1 = time.monotonic()
        c1 = proc_cpu_s(self.proc.pid)
        b1, _ = host_stat()
        if not line:
            rc = self.proc.wait()
            self.proc = None
            return {"error": f"worker crashed (exit {rc})"}
        res = json.loads(line)
        if not res.get("ok"):
            return {"error": res.get("error", "failed")}
        # schedstat misses threads that have exited (the executor's); process_time has them
        own = max(c1 - c0, res.get("process_cpu", 0.0))
        res["other_load"] = round(max(0.0, (b1 - b0) - own) / (t1 - t0), 3)
        return res

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None


def micro_sample(w: Worker, mc: dict, timeout: float) -> dict:
    def once():
        r = w.run(mc["case"], mc["params"], timeout)
        if "error" in r or "skipped" in r:
            return r
        secs = r["seconds"]
        r["value"] = r["ops"] / secs if mc["unit"] == "ops/s" else secs * 1000.0
        # A CPU-bound case that got less CPU than wall time was preempted by something else.
        starved = not mc.get("io") and r.get("process_cpu", secs) < 0.85 * secs
        r["noisy"] = r["other_load"] > NOISE_CORES or starved
        return r

    s = once()
    if s.get("noisy"):
        first = s
        s = once()
        s["rerun"] = True
        if s.get("noisy") and "error" not in s and "error" not in first and first["other_load"] < s["other_load"]:
            first["rerun"] = True
            s = first
    return s


def run_micro(loop_list: list[tuple[str, str]], cfg: dict, logdir: str, only_tree: bool | None = None) -> list[dict]:
    workers = {lab: Worker(lab, spec, logdir) for lab, spec in loop_list}
    cases = []
    try:
        for mc in micro_cases(cfg):
            is_tree = mc["case"] == "async_tree"
            if only_tree is not None and is_tree != only_tree:
                continue
            t_case = time.monotonic()
            samples: dict[str, list] = {lab: [] for lab, _ in loop_list}
            labels = [lab for lab, _ in loop_list]
            timeout = 120.0
            for rep in range(cfg["reps"]):
                for lab in rotate(labels, rep):
                    samples[lab].append(micro_sample(workers[lab], mc, timeout))
            results = {}
            for lab in labels:
                sk = [s for s in samples[lab] if "skipped" in s]
                results[lab] = {"skipped": sk[0]["skipped"], "samples": samples[lab]} if sk else summarize(samples[lab])
            hb = mc["unit"] == "ops/s"
            cases.append({"group": "tree" if is_tree else "micro", "name": mc["name"], "case": mc["case"], "params": mc["params"], "metric": mc["unit"], "higher_better": hb, "instr_case": mc.get("instr"), "results": results})
            line = "  ".join(f"{lab} {report.fmt_num(r['median'], mc['unit'])}" + (f" [{r['spread'] * 100:.0f}%]" if r.get("spread") is not None else "") if "median" in r else f"{lab} {'skip' if 'skipped' in r else 'ERROR'}" for lab, r in results.items())
            log(f"  {mc['name']:<34} {line}   ({time.monotonic() - t_case:.1f}s)")
            for lab, r in results.items():
                if "error" in r:
                    log(f"    {lab}: {r['error']}")
    finally:
        for w in workers.values():
            w.close()
    return cases


def run_timers(loop_list, cfg, logdir) -> dict:
    t_case = time.monotonic()
    workers = {lab: Worker(lab, spec, logdir) for lab, spec in loop_list}
    labels = [lab for lab, _ in loop_list]
    per: dict[str, list] = {lab: [] for lab in labels}
    params = {"samples": cfg["timer_samples"]}
    try:
        for rep in range(cfg["reps"]):
            for lab in rotate(labels, rep):
                per[lab].append(workers[lab].run("timer_precision", params, 120.0))
    finally:
        for w in workers.values():
            w.close()
    out = {}
    for lab in labels:
        good = [r for r in per[lab] if "error" not in r]
        if not good:
            out[lab] = {"error": per[lab][0].get("error", "failed") if per[lab] else "no sample"}
            continue
        res = {}
        for d in good[0]["lateness_us"]:
            p50s = [g["lateness_us"][d]["p50"] for g in good]
            p99s = [g["lateness_us"][d]["p99"] for g in good]
            res[d] = {"p50": median(p50s), "p99": median(p99s), "p50_spread_us": max(p50s) - min(p50s), "min": min(g["lateness_us"][d]["min"] for g in good)}
        out[lab] = {"lateness_us": res, "n": len(good)}
    log(f"  timer precision                    done ({time.monotonic() - t_case:.1f}s)")
    return {"samples_per_delay": cfg["timer_samples"], "results": out}


def memory_once(label: str, spec: str | None, nconns: int, logdir: str) -> dict:
    srv = start_server(label, spec, "protocol", logdir)
    if not srv.wait_ready():
        return {"error": srv.error}
    try:
        warm(srv, "tcp", 10, 1024, 0.2, "loadgen")
        time.sleep(0.3)
        fd0 = proc_nfds(srv.proc.pid)
        rss0 = proc_rss_kib(srv.proc.pid)
        t0 = time.monotonic()
        holder = subprocess.Popen([LOADGEN, "hold", "--addr", f"127.0.0.1:{srv.port}", "--conns", str(nconns)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=PIN.pre("client"))
        try:
            r, _, _ = select.select([holder.stdout.fileno()], [], [], 120)
            if not r:
                return {"error": "hold client timed out"}
            info = json.loads(holder.stdout.readline() or b"{}")
            connected = info.get("connected", 0)
            if connected < nconns:
                return {"error": f"only {connected} of {nconns} connections: {info.get('last_error')}"}
            deadline = time.monotonic() + 20  # 10,000 accepts take 1-3 s
            while time.monotonic() < deadline and proc_nfds(srv.proc.pid) < fd0 + connected:
                if not srv.alive():
                    return {"error": f"server died: {srv.tail()}"}
                time.sleep(0.05)
            accepted = proc_nfds(srv.proc.pid) - fd0
            time.sleep(0.5)  # let the loop settle (buffers, transports) before reading RSS
            rss1 = proc_rss_kib(srv.proc.pid)
            took = time.monotonic() - t0
        finally:
            try:
                holder.stdin.close()
            except OSError:
                pass
            try:
                holder.wait(timeout=30)
            except subprocess.TimeoutExpired:
                holder.kill()
                holder.wait()
        if accepted < connected:
            last = srv.tail().split(" | ")[-1][-200:]
            return {"error": f"server holds {accepted} of {connected} connections after 20 s; server log: {last}"}
        return {"value": (rss1 - rss0) * 1024 / connected, "rss0_kib": rss0, "rss1_kib": rss1, "connections": connected, "seconds": round(took, 2)}
    finally:
        srv.stop()


def run_memory(participants, cfg, logdir, nconns) -> dict:
    t_case = time.monotonic()
    per: dict[str, list] = {lab: [] for lab, _ in participants}
    labels = [lab for lab, _ in participants]
    specs = dict(participants)
    for rep in range(cfg["mem_reps"]):
        for lab in rotate(labels, rep):
            if per[lab] and all("error" in x for x in per[lab]):
                continue  # failed before (e.g. select() and fds >= FD_SETSIZE): don't wait again
            per[lab].append(memory_once(lab, specs[lab], nconns, logdir))
    results = {}
    for lab in labels:
        s = summarize(per[lab])
        good = [x for x in per[lab] if "error" not in x]
        if good:
            s["rss0_kib"] = median([g["rss0_kib"] for g in good])
            s["rss1_kib"] = median([g["rss1_kib"] for g in good])
        results[lab] = s
    line = "  ".join(f"{lab} {r['median'] / 1024:.2f} KiB" if "median" in r else f"{lab} ERROR" for lab, r in results.items())
    log(f"  RSS per idle connection ({nconns})   {line}   ({time.monotonic() - t_case:.1f}s)")
    for lab, r in results.items():
        if "error" in r:
            log(f"    {lab}: {r['error']}")
    return {"connections": nconns, "metric": "bytes/conn", "results": results}


# ---------------------------------------------------------------------------------------------
# Instruction counts


def perf_works() -> bool:
    if not shutil.which("perf"):
        return False
    try:
        p = subprocess.run(["perf", "stat", "-x,", "-e", "instructions", "true"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return p.returncode == 0 and re.search(r"^\d+,", p.stderr, re.M) is not None


def instr_for_loop(label: str, spec: str, tool: str, logdir: str) -> dict:
    env = dict(os.environ, PYTHONHASHSEED="0")
    res: dict = {}
    if tool == "callgrind":
        seq = []
        for case, small, large in INSTR_CASES:
            seq += [[case, small], [case, large]]
        tmp = tempfile.mkdtemp(prefix=f"cg-{label}-", dir=logdir)
        argv = ["valgrind", "--tool=callgrind", "--dump-before=getppid", f"--callgrind-out-file={tmp}/cg.out", PY, os.path.join(HERE, "micro.py"), "--loop", spec, "--instr-sequence", json.dumps(seq)]
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=env, cwd=HERE)
        except subprocess.TimeoutExpired:
            return {"error": "callgrind timed out"}
        totals = {}
        for f in glob.glob(f"{tmp}/cg.out.*"):
            k = int(f.rsplit(".", 1)[1])
            with open(f) as fh:
                m = re.search(r"^(?:summary|totals):\s+(\d+)", fh.read(), re.M)
            if m:
                totals[k] = int(m.group(1))
        # dump 1 = start-up; dump 2 + i = sequence entry i
        if p.returncode != 0 or len(totals) < len(seq) + 1:
            return {"error": f"callgrind rc={p.returncode}, {len(totals)} dumps: {p.stderr.strip()[-300:]}"}
        for i, (case, small, large) in enumerate(INSTR_CASES):
            a, b = totals[2 + 2 * i], totals[3 + 2 * i]
            res[case] = (b - a) / (instr_ops(case, large) - instr_ops(case, small))
        shutil.rmtree(tmp, ignore_errors=True)
        return res
    # perf: two processes per case, the difference cancels start-up and loop creation
    for case, small, large in INSTR_CASES:
        counts = []
        for params in (small, large):
            argv = ["perf", "stat", "-x,", "-e", "instructions:u", PY, os.path.join(HERE, "micro.py"), "--loop", spec, "--case", case] + [f"--param={k}={json.dumps(v)}" for k, v in params.items()]
            p = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, cwd=HERE)
            m = re.search(r"^(\d+),", p.stderr, re.M)
            counts.append(int(m.group(1)) if m and p.returncode == 0 else None)
        if None in counts:
            res[case] = None
        else:
            res[case] = (counts[1] - counts[0]) / (instr_ops(case, large) - instr_ops(case, small))
    return res


def run_instr(loop_list, logdir) -> dict:
    t0 = time.monotonic()
    if perf_works():
        tool = "perf"
    elif shutil.which("valgrind"):
        tool = "callgrind"
    else:
        return {"error": "neither perf stat -e instructions nor valgrind is available"}
    jobs = 1 if tool == "perf" else max(1, min(2, os.cpu_count() or 1))
    out = {}
    with concurrent.futures.ThreadPoolExecutor(jobs) as ex:
        futs = {lab: ex.submit(instr_for_loop, lab, spec, tool, logdir) for lab, spec in loop_list}
        for lab, f in futs.items():
            try:
                out[lab] = f.result()
            except Exception as e:  # keep the rest of the report
                out[lab] = {"error": f"{type(e).__name__}: {e}"}
    log(f"  instructions per operation ({tool})  done ({time.monotonic() - t0:.1f}s)")
    return {"tool": tool, "cases": [c for c, _, _ in INSTR_CASES], "results": out}


# ---------------------------------------------------------------------------------------------


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        sha = head.stdout.strip() if head.returncode == 0 else "no commit yet"
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + (" (with uncommitted changes)" if dirty and head.returncode == 0 else "")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def machine() -> dict:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError):
        pass
    os_name = "?"
    try:
        with open("/etc/os-release") as f:
            m = re.search(r'^PRETTY_NAME="?([^"\n]*)', f.read(), re.M)
            os_name = m.group(1) if m else "?"
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": mem, "os": os_name, "kernel": platform.release(), "python": platform.python_implementation() + " " + platform.python_version(), "python_path": PY}


def available_loops(wanted: list[tuple[str, str]]) -> tuple[list, dict]:
    ok, info = [], {}
    for label, spec in wanted:
        p = subprocess.run([PY, os.path.join(HERE, "loops.py"), spec], capture_output=True, text=True, timeout=60, cwd=HERE)
        if p.returncode == 0:
            ok.append((label, spec))
            info[label] = {"spec": spec, "version": p.stdout.strip()}
        else:
            info[label] = {"spec": spec, "unavailable": (p.stderr.strip().splitlines() or ["?"])[-1][:200]}
            log(f"  {label} ({spec}) unavailable: {info[label]['unavailable']}")
    return ok, info


def raise_nofile(need: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(need, soft)
    for new in ((max(target, hard), max(target, hard)), (hard, hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, new)
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


GROUPS = ["echo", "http", "udp", "tls", "micro", "tree", "timers", "memory", "instr"]


def main() -> int:
    global PIN
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=sorted(MODES), default="quick")
    ap.add_argument("--loops", help="comma-separated: labels (" + ", ".join(loops_mod.KNOWN) + ") or [label=]module:factory")
    ap.add_argument("--only", help="comma-separated groups: " + ",".join(GROUPS))
    ap.add_argument("--skip", help="comma-separated groups to leave out")
    ap.add_argument("--reps", type=int)
    ap.add_argument("--duration", type=float, help="seconds per load measurement")
    ap.add_argument("--no-native", action="store_true")
    ap.add_argument("--instr", action=argparse.BooleanOptionalAction, default=None, help="count instructions (default: on in full mode)")
    ap.add_argument("--out", help="output folder (default benchmarks/out/<mode>-<time>)")
    ap.add_argument("--results-md", help="also write the report to this file (full mode: benchmarks/RESULTS.md)")
    args = ap.parse_args()

    cfg = dict(MODES[args.mode])
    if args.reps:
        cfg["reps"] = args.reps
    if args.duration:
        cfg["duration"] = args.duration
    if args.instr is not None:
        cfg["instr"] = args.instr
    groups = [g for g in (args.only.split(",") if args.only else GROUPS)]
    if args.skip:
        groups = [g for g in groups if g not in args.skip.split(",")]
    if not cfg["instr"] and "instr" in groups and not args.only:
        groups.remove("instr")

    PIN = Pinning()
    try:  # the driver itself stays off the server core
        if PIN.client:
            os.sched_setaffinity(0, PIN.client)
    except OSError:
        pass
    nofile = raise_nofile(cfg["mem_conns"] + 512)
    mem_conns = min(cfg["mem_conns"], nofile - 256)

    stamp = _dt.datetime.now(_dt.timezone.utc)
    out_dir = args.out or os.path.join(HERE, "out", f"{args.mode}-{stamp.strftime('%Y%m%d-%H%M%S')}")
    logdir = os.path.join(out_dir, "logs")
    os.makedirs(logdir, exist_ok=True)

    for tool in (LOADGEN, NATIVE):
        if not os.access(tool, os.X_OK):
            log(f"error: {tool} is missing; build it with: cargo build --release --manifest-path benchmarks/rust/Cargo.toml --target-dir benchmarks/target")
            return 2

    log(f"oxloop benchmarks, {args.mode} mode -> {out_dir}")
    wanted = [loops_mod.parse(x.strip()) for x in args.loops.split(",")] if args.loops else [(lab, loops_mod.KNOWN[lab]) for lab in loops_mod.MODE_LOOPS[args.mode]]
    loop_list, loop_info = available_loops(wanted)
    if not loop_list:
        log("error: no loop is available")
        return 2
    native = [] if args.no_native else [("native", None)]
    http_gen = "wrk" if cfg["http_gen"] == "wrk" and shutil.which("wrk") else "loadgen"
    t_start = time.monotonic()
    la0 = open("/proc/loadavg").read().split()[:3]
    results = {
        "meta": {
            "mode": args.mode,
            "date": stamp.strftime("%Y-%m-%d %H:%M UTC"),
            "commit": git_commit(),
            "machine": machine(),
            "pinning": PIN.desc,
            "reps": cfg["reps"],
            "duration_s": cfg["duration"],
            "warmup_s": cfg["warmup"],
            "noise_threshold_cores": NOISE_CORES,
            "http_generator": http_gen,
            "loadavg_before": la0,
            "nofile": nofile,
        },
        "loops": loop_info,
        "cases": [],
    }

    def save():
        with open(os.path.join(out_dir, "results.json"), "w") as f:
            json.dump(results, f, indent=1)

    if "echo" in groups:
        log("TCP echo (requests/s, median [spread])")
        native_done = set()
        for style, size, conns in cfg["echo"]:
            parts = [(lab, spec) for lab, spec in loop_list]
            if native and (size, conns) not in native_done:
                parts += native
                native_done.add((size, conns))
            name = f"{style} echo {report.fmt_size(size)} x{conns}"
            results["cases"].append(run_load_case(name, "echo", style, "tcp", size, conns, parts, cfg, logdir))
            save()
    if "http" in groups:
        log(f"HTTP/1.1, httptools protocol server ({http_gen})")
        for conns in cfg["http_conns"]:
            results["cases"].append(run_load_case(f"HTTP httptools x{conns}", "http", "http", "http", 0, conns, loop_list, cfg, logdir, gen=http_gen))
            save()
    if "udp" in groups:
        log("UDP echo")
        for size, conns in cfg["udp"]:
            results["cases"].append(run_load_case(f"UDP echo {report.fmt_size(size)} x{conns}", "udp", "udp", "udp", size, conns, loop_list + native, cfg, logdir))
            save()
    if "tls" in groups:
        log("TLS (ssl=): Protocol echo and httptools HTTP, loaded by loadgen over rustls")
        results["cases"] += run_tls(loop_list, args.mode, cfg, logdir)
        save()
    if "micro" in groups:
        log("micro benchmarks (median [spread])")
        results["cases"] += run_micro(loop_list, cfg, logdir, only_tree=False)
        save()
    if "tree" in groups:
        log(f"async_tree ({cfg['tree']['branches']} branches, {cfg['tree']['depth']} levels; ms, lower is better)")
        results["cases"] += run_micro(loop_list, cfg, logdir, only_tree=True)
        save()
    if "timers" in groups:
        log("timer precision (call_later lateness)")
        results["timers"] = run_timers(loop_list, cfg, logdir)
        save()
    if "memory" in groups:
        log("memory")
        results["memory"] = run_memory(loop_list + native, cfg, logdir, mem_conns)
        save()
    if "instr" in groups:
        log("instructions per operation (slow)")
        results["instr"] = run_instr(loop_list, logdir)
        save()

    results["meta"]["runtime_s"] = round(time.monotonic() - t_start, 1)
    results["meta"]["loadavg_after"] = open("/proc/loadavg").read().split()[:3]
    save()
    md = report.render(results, out_dir)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(md)
    if args.results_md:
        with open(args.results_md, "w") as f:
            f.write(report.results_page(results, md, out_dir, os.path.dirname(os.path.abspath(args.results_md))))
        log(f"wrote {args.results_md}")
    latest = os.path.join(HERE, "out", "latest")
    try:
        if os.path.islink(latest) or os.path.exists(latest):
            os.remove(latest)
        os.symlink(os.path.relpath(out_dir, os.path.dirname(latest)), latest)
    except OSError:
        pass
    print(md)
    log(f"done in {results['meta']['runtime_s']:.0f}s; report: {os.path.join(out_dir, 'report.md')}")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    sys.exit(main())
