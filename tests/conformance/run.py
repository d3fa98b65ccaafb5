#!/usr/bin/env python3
"""Conformance runner: CPython's own ``Lib/test/test_asyncio`` with oxloop.

Runs every ``test_*.py`` module of the RUNNING interpreter's
``test.test_asyncio`` package, each in its own subprocess
(``tests/conformance/_child.py``) with oxloop made the loop under test
through the event-loop policy and ``asyncio.SelectorEventLoop`` (see
``_child.install_oxloop`` for the exact patches), and prints a per-module
pass/fail/error/skip table.

    python tests/conformance/run.py                       # all modules, oxloop
    python tests/conformance/run.py --loop asyncio        # stock asyncio reference
    python tests/conformance/run.py --modules test_tasks,test_locks -v
    python tests/conformance/run.py --check               # vs baseline-3.X.json
    python tests/conformance/run.py --write-baseline tests/conformance/baseline-3.11.json
    python tests/conformance/run.py --loop asyncio \
        --write-baseline tests/conformance/reference-3.11.json

A test that exceeds ``--test-timeout`` (or crashes the interpreter) is
recorded as ``hang``/``crash``, and the module is resumed after it in a new
process, so one hung test does not lose the rest of its module.  The whole
module is limited to ``--timeout`` seconds; past that it is reported as
``hang`` with the results it had.

Exit status: 0, or 1 when ``--check`` finds a module below its baseline
(passed count lower, or newly hung/crashed), or 2 on a usage/setup error
(e.g. the loop under test is not oxloop).
"""

import argparse
import concurrent.futures
import datetime
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CHILD = os.path.join(HERE, "_child.py")
PYVER = "%d.%d" % sys.version_info[:2]
MAX_RESUMES = 5

OUTCOMES = ("pass", "fail", "error", "skip", "xfail", "xpass", "hang", "crash")


# ---------------------------------------------------------------------------
# Discovery

def test_asyncio_dir():
    import importlib.util
    spec = importlib.util.find_spec("test")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("this interpreter has no 'test' package (CPython's test suite)")
    d = os.path.join(list(spec.submodule_search_locations)[0], "test_asyncio")
    if not os.path.isdir(d):
        sys.exit("no test_asyncio directory in %s" % d)
    return d


def discover_modules():
    d = test_asyncio_dir()
    return sorted(os.path.basename(p)[:-3]
                  for p in glob.glob(os.path.join(d, "test_*.py")))


# ---------------------------------------------------------------------------
# Running one module

class FatalSetupError(Exception):
    pass


def _read_records(path):
    recs = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    recs.append(json.loads(line))
                except ValueError:
                    pass        # a line cut by a kill
    except FileNotFoundError:
        pass
    return recs


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass


def run_module(name, args, workdir, logdir):
    """Run one module (resuming after hung/crashed tests); return its summary."""
    out_path = os.path.join(workdir, name + ".jsonl")
    skip_path = os.path.join(workdir, name + ".skip")
    log_path = os.path.join(logdir, name + ".log")
    for p in (out_path, skip_path, log_path):
        if os.path.exists(p):
            os.unlink(p)
    cwd = os.path.join(workdir, name + ".cwd")
    os.makedirs(cwd, exist_ok=True)

    t0 = time.monotonic()
    deadline = t0 + args.timeout
    tests = {}           # id -> {"outcome", "msg", "tb"}
    excluded = {}
    status = None
    begin = None
    notes = []
    bad_tests = []       # hung / crashed test ids
    runs = 0

    env = dict(os.environ)
    env.setdefault("PYTHONFAULTHANDLER", "1")
    env["PYTHONUNBUFFERED"] = "1"
    if getattr(args, "native_selectors", False):
        env["OXLOOP_CONFORMANCE_NATIVE_SELECTORS"] = "1"

    while True:
        runs += 1
        with open(skip_path, "w", encoding="utf-8") as f:
            f.write("\n".join(list(tests) + bad_tests) + "\n")
        n_before = len(_read_records(out_path))
        log_off = os.path.getsize(log_path) if os.path.exists(log_path) else 0
        remaining = deadline - time.monotonic()
        if remaining <= 1:
            status = "hang"
            notes.append("module time budget exhausted")
            break
        cmd = [sys.executable, CHILD, "--loop", args.loop, "--module", name,
               "--out", out_path, "--skip-file", skip_path,
               "--test-timeout", str(min(args.test_timeout, remaining)),
               "--total-timeout", str(max(remaining - 3, 1))]
        if args.trace_loops:
            cmd.append("--trace-loops")
        with open(log_path, "a", encoding="utf-8") as log:
            log.write("\n### run %d: %s\n" % (runs, " ".join(cmd)))
            log.flush()
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, cwd=cwd, env=env,
                                    start_new_session=True)
            timed_out = False
            try:
                rc = proc.wait(remaining)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc)
                rc = proc.returncode
            else:
                # reap anything the tests left behind in the group
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass

        recs = _read_records(out_path)[n_before:]
        started = None
        last_ended = None
        done = False
        for r in recs:
            ev = r.get("event")
            if ev == "begin":
                begin = r
            elif ev == "start":
                started = r["id"]
            elif ev == "end":
                if r["id"] == started:
                    last_ended = started
                tests[r["id"]] = {"outcome": r["outcome"], "msg": r.get("msg", ""),
                                  "tb": r.get("tb", "")}
                if "loops" in r:
                    tests[r["id"]]["loops"] = r["loops"]
                if r["id"] == started:
                    started = None
            elif ev == "excluded":
                excluded[r["id"]] = r.get("reason", "")
            elif ev == "module-skip":
                status = "skipped"
                notes.append(r.get("reason", ""))
            elif ev == "import-error":
                status = "import-error"
                notes.append(r.get("msg", ""))
                tests["<import %s>" % name] = {"outcome": "error",
                                               "msg": r.get("msg", ""),
                                               "tb": r.get("tb", "")}
            elif ev == "done":
                done = True

        if rc == 3 and begin is None:
            with open(log_path, encoding="utf-8", errors="replace") as f:
                f.seek(log_off)
                raise FatalSetupError("%s: %s" % (name, f.read().strip()))
        if done or status in ("skipped", "import-error"):
            break
        with open(log_path, encoding="utf-8", errors="replace") as f:
            f.seek(log_off)
            new_log = f.read()
        if timed_out:
            status = "hang"
            if started:
                tests[started] = {"outcome": "hang",
                                  "msg": "module timeout (%ss) in this test"
                                  % args.timeout, "tb": new_log[-3000:]}
                bad_tests.append(started)
            notes.append("module timeout after %.0fs" % (time.monotonic() - t0))
            break
        after = ""
        if started is None and last_ended is not None:
            # died after its last test finished (its teardown, or the next
            # test's setup outside any test): blame the last test
            started, after = last_ended, " after the test had finished"
        if started is None:
            status = "crash"
            notes.append("child exited with %s outside any test" % rc)
            tests["<exit %s>" % name] = {"outcome": "crash",
                                         "msg": "child exited rc=%s" % rc,
                                         "tb": new_log[-3000:]}
            break
        if "Timeout (" in new_log:
            kind = "hang"
            msg = "no result after --test-timeout=%ss%s" % (args.test_timeout,
                                                          after)
        else:
            kind = "crash"
            msg = "interpreter died (rc=%s)%s" % (rc, after)
        tests[started] = {"outcome": kind, "msg": msg, "tb": new_log[-3000:]}
        bad_tests.append(started)
        if runs > MAX_RESUMES:
            status = kind
            notes.append("too many hung/crashed tests; gave up")
            break
        # resume after the bad test

    counts = {o: 0 for o in OUTCOMES}
    for t in tests.values():
        counts[t["outcome"]] = counts.get(t["outcome"], 0) + 1
    if status is None:
        # finished (possibly after resuming past hung/crashed tests, which
        # are counted in "hung" and listed as such)
        status = "ok"
    return {
        "module": name,
        "status": status,
        "passed": counts["pass"],
        "failed": counts["fail"],
        "errors": counts["error"],
        "skipped": counts["skip"],
        "xfail": counts["xfail"],
        "xpass": counts["xpass"],
        "hung": counts["hang"] + counts["crash"],
        "hang": status == "hang",
        "excluded": len(excluded),
        "duration": round(time.monotonic() - t0, 1),
        "runs": runs,
        "notes": notes,
        "loop_types": (begin or {}).get("loop_types"),
        "log": log_path,
        "tests": tests,
        "excluded_tests": excluded,
    }


# ---------------------------------------------------------------------------
# Reporting

def _load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _cell(m):
    if m is None:
        return "-"
    if m.get("status") in ("skipped",):
        return "module skipped"
    if m.get("status") == "import-error":
        return "import error"
    s = "%d/%d/%d/%d" % (m["passed"], m["failed"], m["errors"], m["skipped"])
    if m.get("status") in ("hang", "crash"):
        s += " " + m["status"].upper()
    elif m.get("hung"):
        s += " +%d hung" % m["hung"]
    return s


def print_table(results, loop, reference):
    show_ref = reference is not None and loop == "oxloop"
    w = max([len(n) for n in results] + [len("module")])
    head = "%-*s  " % (w, "module")
    if show_ref:
        head += "%-22s  " % "asyncio p/f/e/s"
    head += "%-22s  %7s  %s" % ("%s p/f/e/s" % loop, "time", "")
    print(head)
    print("-" * len(head))
    tot = {k: 0 for k in ("passed", "failed", "errors", "skipped")}
    rtot = dict(tot)
    for name in sorted(results):
        m = results[name]
        line = "%-*s  " % (w, name)
        mark = ""
        if show_ref:
            r = reference.get("modules", {}).get(name)
            line += "%-22s  " % _cell(r)
            if r is not None:
                for k in rtot:
                    rtot[k] += r.get(k, 0)
                if m["status"] == "ok" and r.get("status") == "ok" and \
                        m["passed"] < r["passed"]:
                    mark = "  (-%d)" % (r["passed"] - m["passed"])
        line += "%-22s  %6.1fs%s" % (_cell(m), m["duration"], mark)
        if m["excluded"]:
            line += "  [%d excluded]" % m["excluded"]
        print(line)
        for k in tot:
            tot[k] += m[k]
    print("-" * len(head))
    line = "%-*s  " % (w, "TOTAL")
    if show_ref:
        line += "%-22s  " % ("%d/%d/%d/%d" % tuple(rtot.values()))
    line += "%-22s" % ("%d/%d/%d/%d" % tuple(tot.values()))
    print(line)
    print("(p/f/e/s = passed/failed/errors/skipped)")


def print_failures(results):
    for name in sorted(results):
        m = results[name]
        bad = [(tid, t) for tid, t in sorted(m["tests"].items())
               if t["outcome"] in ("fail", "error", "hang", "crash", "xpass")]
        if not bad:
            continue
        print("\n== %s: %d not passing (log: %s)" % (name, len(bad), m["log"]))
        for tid, t in bad:
            print("  %-5s %s" % (t["outcome"].upper(), tid))
            if t.get("msg"):
                print("        %s" % t["msg"][:300])


def print_loop_coverage(results, loop):
    prefix = "oxloop" if loop == "oxloop" else "asyncio."
    print("\nloop coverage (--trace-loops): tests that ran a %s loop / "
          "tests run; other loop classes seen" % loop)
    for name in sorted(results):
        tests = results[name]["tests"]
        ran = sum(1 for t in tests.values()
                  if any(l.startswith(prefix) and "TestLoop" not in l
                         for l in t.get("loops", ())))
        others = {}
        for t in tests.values():
            for l in t.get("loops", ()):
                if not (l.startswith(prefix) and "TestLoop" not in l):
                    others[l] = others.get(l, 0) + 1
        print("  %-24s %4d / %-4d  %s" % (name, ran, len(tests), ", ".join(
            "%s x%d" % kv for kv in sorted(others.items()))))


def baseline_of(results, loop):
    mods = {}
    for name, m in sorted(results.items()):
        mods[name] = {k: m[k] for k in ("status", "passed", "failed", "errors",
                                         "skipped", "hang", "hung")}
        mods[name]["not_passing"] = sorted(
            tid for tid, t in m["tests"].items()
            if t["outcome"] in ("fail", "error", "hang", "crash"))
    return {
        "python": PYVER,
        "python_full": sys.version.split()[0],
        "loop": loop,
        "generated": datetime.date.today().isoformat(),
        "modules": mods,
    }


def check(results, baseline):
    """Return a list of human-readable regressions (empty: OK)."""
    problems = []
    bmods = baseline.get("modules", {})
    for name in sorted(results):
        m = results[name]
        b = bmods.get(name)
        if b is None:
            continue
        if m["status"] in ("hang", "crash", "import-error") and \
                b.get("status") not in ("hang", "crash", "import-error"):
            problems.append("%s: %s (baseline: %s, %d passed)"
                            % (name, m["status"], b.get("status"), b["passed"]))
            continue
        was_bad = set(b.get("not_passing", ()))
        if b.get("status") in ("hang", "crash"):
            # partial counts of a module that ran out of time are not
            # stable; only a module that finishes can be compared.
            if m["status"] == "ok" and m["passed"] < b["passed"]:
                problems.append("%s: passed %d < baseline %d"
                                % (name, m["passed"], b["passed"]))
            continue
        new_hangs = [tid for tid, t in sorted(m["tests"].items())
                     if t["outcome"] in ("hang", "crash")
                     and tid not in was_bad]
        if new_hangs:
            problems.append("%s: test(s) newly hung/crashed the interpreter: %s"
                            % (name, ", ".join(
                                "%s (%s)" % (tid, m["tests"][tid]["outcome"])
                                for tid in new_hangs)))
            continue
        if m["passed"] < b["passed"]:
            newly = [tid for tid, t in sorted(m["tests"].items())
                     if t["outcome"] in ("fail", "error", "hang", "crash")
                     and tid not in was_bad]
            msg = "%s: passed %d < baseline %d" % (name, m["passed"],
                                                     b["passed"])
            if newly:
                msg += "; newly not passing: " + ", ".join(
                    "%s (%s)" % (tid, m["tests"][tid]["msg"][:120])
                    for tid in newly[:15])
                if len(newly) > 15:
                    msg += ", ... %d more" % (len(newly) - 15)
            problems.append(msg)
    return problems


# ---------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Run CPython's test_asyncio against oxloop (or asyncio).")
    ap.add_argument("--loop", choices=("oxloop", "asyncio"), default="oxloop")
    ap.add_argument("--modules", help="comma-separated, e.g. test_tasks,test_locks"
                    " (default: every test_*.py of this interpreter's test_asyncio)")
    ap.add_argument("--timeout", type=float, default=300,
                    help="seconds per module (default 300)")
    ap.add_argument("--test-timeout", type=float, default=60,
                    help="seconds per single test before it is marked hung and "
                         "the module resumed after it (default 60)")
    ap.add_argument("--native-selectors", action="store_true",
                    help="with --loop oxloop: a Python selectors.EpollSelector/"
                         "PollSelector/SelectSelector handed to SelectorEventLoop is "
                         "replaced by oxloop's native epoll/poll/select (so test_events, "
                         "test_sock_lowlevel... exercise the native selectors); the "
                         "default baseline is then baseline-3.X-native.json")
    ap.add_argument("--jobs", "-j", type=int, default=2)
    ap.add_argument("--json", metavar="OUT", help="write full results as JSON")
    ap.add_argument("--baseline", metavar="FILE",
                    help="baseline to --check against (default: "
                         "tests/conformance/baseline-%s.json)" % PYVER)
    ap.add_argument("--check", action="store_true",
                    help="exit 1 if a module passes fewer tests than its "
                         "baseline, or hangs/crashes where it did not")
    ap.add_argument("--retries", type=int, default=1,
                    help="with --check: re-run a module below its baseline "
                         "this many times and keep its best run (timing "
                         "flakes on a loaded machine); default 1")
    ap.add_argument("--write-baseline", metavar="FILE")
    ap.add_argument("--reference", metavar="FILE",
                    help="stock-asyncio numbers to show beside oxloop's "
                         "(default: tests/conformance/reference-%s.json if it "
                         "exists)" % PYVER)
    ap.add_argument("--logdir", help="keep per-module child logs here "
                    "(default: a temporary directory, printed at the end)")
    ap.add_argument("--trace-loops", action="store_true",
                    help="diagnostics: record which loop classes each test "
                         "ran and print, per module, how many tests ran the "
                         "loop under test (wraps asyncio.events."
                         "_set_running_loop; not for baselines)")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="list every non-passing test id with the first line "
                         "of its error")
    args = ap.parse_args(argv)

    all_mods = discover_modules()
    if args.modules:
        mods = [m.strip() for m in args.modules.split(",") if m.strip()]
        mods = [m if m.startswith("test_") else "test_" + m for m in mods]
        unknown = [m for m in mods if m not in all_mods]
        if unknown:
            print("not in this Python's (%s) test_asyncio, skipped: %s"
                  % (PYVER, ", ".join(unknown)), file=sys.stderr)
        mods = [m for m in mods if m in all_mods]
    else:
        mods = all_mods
    if not mods:
        print("no modules to run", file=sys.stderr)
        return 2

    baseline = None
    if args.check:
        path = args.baseline or os.path.join(HERE, "baseline-%s%s.json" % (
            PYVER, "-native" if args.native_selectors else ""))
        if not os.path.exists(path):
            # No oxloop baseline recorded for this Python yet: hold oxloop to
            # stock asyncio's own numbers instead (the strictest baseline).
            ref = os.path.join(HERE, "reference-%s.json" % PYVER)
            if not os.path.exists(ref):
                print("no baseline file %s (nor %s)" % (path, ref),
                      file=sys.stderr)
                return 2
            print("note: no baseline %s; checking against stock asyncio's "
                  "numbers in %s" % (path, ref), flush=True)
            path = ref
        baseline = _load(path)
        if baseline.get("python") != PYVER:
            print("warning: baseline %s is for Python %s, running %s"
                  % (path, baseline.get("python"), PYVER), file=sys.stderr)
    reference = None
    ref_path = args.reference or os.path.join(HERE, "reference-%s.json" % PYVER)
    if os.path.exists(ref_path):
        reference = _load(ref_path)

    workdir = tempfile.mkdtemp(prefix="oxloop-conformance-")
    logdir = args.logdir or os.path.join(workdir, "logs")
    os.makedirs(logdir, exist_ok=True)

    print("python %s (%s), loop %s, %d modules, jobs %d, timeout %ss/module"
          % (sys.version.split()[0], sys.executable, args.loop, len(mods),
             args.jobs, args.timeout), flush=True)
    t0 = time.monotonic()
    results = {}
    lock = threading.Lock()
    fatal = []

    def one(name):
        if fatal:
            return
        try:
            r = run_module(name, args, workdir, logdir)
        except FatalSetupError as e:
            fatal.append(str(e))
            return
        with lock:
            results[name] = r
            print("  %-28s %-26s %6.1fs" % (name, _cell(r), r["duration"]),
                  flush=True)

    # longest modules first keeps both workers busy until the end
    order = sorted(mods, key=lambda m: -(
        (reference or {}).get("modules", {}).get(m, {}).get("passed", 0)))
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as ex:
        list(ex.map(one, order))
    if fatal:
        print("\nFATAL: the loop under test is not %s -- aborting.\n%s"
              % (args.loop, "\n".join(fatal)), file=sys.stderr)
        return 2

    problems = []
    if baseline is not None:
        problems = check(results, baseline)
        for attempt in range(args.retries):
            if not problems:
                break
            again = sorted({p.split(":", 1)[0] for p in problems})
            print("\nre-running below-baseline modules (retry %d): %s"
                  % (attempt + 1, ", ".join(again)), flush=True)
            for name in again:
                r = run_module(name, args, workdir, logdir)
                old = results[name]
                better = (r["status"] == "ok", r["passed"]) > \
                         (old["status"] == "ok", old["passed"])
                if better:
                    results[name] = r
            problems = check(results, baseline)

    # keep only the logs of the work directory
    if not os.path.abspath(logdir).startswith(os.path.abspath(workdir) + os.sep):
        shutil.rmtree(workdir, ignore_errors=True)
    for entry in (os.listdir(workdir) if os.path.isdir(workdir) else ()):
        full = os.path.join(workdir, entry)
        if full == logdir:
            continue
        if os.path.isdir(full):
            shutil.rmtree(full, ignore_errors=True)
        else:
            os.unlink(full)

    elapsed = time.monotonic() - t0
    print()
    print_table(results, args.loop, reference)
    if args.verbose:
        print_failures(results)
    if args.trace_loops:
        print_loop_coverage(results, args.loop)
    print("\nwall time %.0fs; logs in %s" % (elapsed, logdir))

    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"python": PYVER, "python_full": sys.version.split()[0],
                       "loop": args.loop, "elapsed": round(elapsed, 1),
                       "modules": results}, f, indent=1, sort_keys=True)
    if args.write_baseline:
        data = baseline_of(results, args.loop)
        if args.modules and os.path.exists(args.write_baseline):
            # a partial run updates only its modules in an existing file
            old = _load(args.write_baseline)
            if old.get("python") == PYVER and old.get("loop") == args.loop:
                old["modules"].update(data["modules"])
                old["generated"] = data["generated"]
                data = old
        with open(args.write_baseline, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.write("\n")
        print("wrote %s" % args.write_baseline)

    if baseline is not None:
        if problems:
            print("\nBASELINE CHECK FAILED (%d modules):" % len(problems))
            for p in problems:
                print("  " + p)
            return 1
        print("\nbaseline check OK (%d modules compared)"
              % len([m for m in results if m in baseline.get("modules", {})]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
