"""Markdown tables and PNG plots from a results.json written by bench.py.

    python report.py benchmarks/out/latest/results.json   # re-render report.md and the plots
"""

from __future__ import annotations

import json
import os
import shutil
import sys

REFS = ("asyncio", "uvloop", "rloop")
COLORS = {
    "asyncio": "#7f7f7f",
    "uvloop": "#1f77b4",
    "rloop": "#ff7f0e",
    "oxloop": "#2ca02c",
    "oxloop-poll": "#98df8a",
    "oxloop-select": "#bcbd22",
    "oxloop-pysel": "#17becf",
    "native": "#d62728",
}


def fmt_size(n: int) -> str:
    return f"{n // 1024} KiB" if n >= 1024 and n % 1024 == 0 else f"{n} B"


def fmt_num(x, unit: str = "") -> str:
    if x is None:
        return "–"
    if unit == "ms":
        return f"{x:.1f} ms" if x < 100 else f"{x:.0f} ms"
    ax = abs(x)
    if ax >= 1e6:
        return f"{x / 1e6:.2f}M"
    if ax >= 1e4:
        return f"{x / 1e3:.1f}k"
    if ax >= 1e3:
        return f"{x / 1e3:.2f}k"
    if ax >= 100:
        return f"{x:.0f}"
    return f"{x:.1f}" if ax >= 10 else f"{x:.2f}"


def fmt_spread(s) -> str:
    return "–" if s is None else f"{s * 100:.0f}%"


def ratio(r: dict, ref: dict | None, higher_better: bool) -> str:
    if not ref or "median" not in r or "median" not in ref or not r["median"] or not ref["median"]:
        return "–"
    x = r["median"] / ref["median"] if higher_better else ref["median"] / r["median"]
    return f"{x:.2f}×"


def loop_labels(results: dict) -> list[str]:
    labels = list(results.get("loops", {}))
    labels = [lab for lab in labels if "unavailable" not in results["loops"][lab]]
    return labels


def cell(r: dict | None, unit: str = "") -> str:
    if r is None:
        return ""
    if "skipped" in r:
        return "skip"
    if "median" not in r:
        return "n/a" if r.get("na") else "error"
    mark = "*" if r.get("noisy") else ""
    return f"{fmt_num(r['median'], unit)} [{fmt_spread(r.get('spread'))}]{mark}"


def native_for(results: dict, case: dict) -> dict | None:
    if "native" in case["results"]:
        return case["results"]["native"]
    if case["group"] != "echo":
        return None
    for c in results["cases"]:
        if c["group"] == "echo" and c["size"] == case["size"] and c["conns"] == case["conns"] and "native" in c["results"]:
            return c["results"]["native"]
    return None


def render(results: dict, out_dir: str | None = None) -> str:
    meta = results["meta"]
    labels = loop_labels(results)
    m = meta["machine"]
    lines = []
    add = lines.append
    add(f"# oxloop benchmarks — {meta['mode']} run")
    add("")
    add(f"- date: {meta['date']}; commit: {meta['commit']}; runtime {meta.get('runtime_s', '?')} s")
    add(f"- machine: {m['cpu']}, {m['cores']} cores, {m['memory']}; {m['os']}, Linux {m['kernel']}; {m['python']}")
    add(f"- {meta['pinning']}; {meta['reps']} repetitions per figure, interleaved across loops; {meta['duration_s']} s per load measurement after a {meta['warmup_s']} s warm-up of each fresh server")
    add(f"- host load average before/after: {' '.join(meta['loadavg_before'])} / {' '.join(meta.get('loadavg_after', ['?']))}")
    vers = []
    for lab, info in results["loops"].items():
        if "unavailable" in info:
            vers.append(f"{lab}: not available ({info['unavailable']})")
        else:
            vers.append(f"{lab} `{info['spec']}` {info['version']}")
    add("- loops: " + "; ".join(vers))
    add("")
    add("Figures are medians; `[n%]` is the spread (max − min) / median of the repetitions; `*` marks a figure")
    add(f"with a sample whose host load from other processes stayed above {meta['noise_threshold_cores']} cores after one re-run.")
    add("Ratios `×asyncio` etc. are the row's loop relative to that loop: above 1.00× means better (faster, or less time or memory).")
    add("`native` is the tokio echo server at the same message size and connection count (measured once, with the Protocol case).")
    add("")

    load_cases = [c for c in results["cases"] if c["group"] in ("echo", "http", "udp", "tls")]
    micro_cases = [c for c in results["cases"] if c["group"] in ("micro", "tree")]
    has_native = any("native" in c["results"] for c in load_cases)
    if results["cases"]:
        add("## Summary")
        add("")
        cols = labels + (["native"] if has_native else [])
        add("| case | unit | " + " | ".join(cols) + " |")
        add("|---|---|" + "---:|" * len(cols))
        for c in load_cases + micro_cases:
            unit = c["metric"]
            row = [cell(c["results"].get(lab), unit) for lab in labels]
            if has_native:
                nat = native_for(results, c) if c["group"] in ("echo", "udp") else None
                row.append(cell(nat, unit) if nat else "")
            add(f"| {c['name']} | {unit} | " + " | ".join(row) + " |")
        add("")

    if load_cases:
        add("## Network cases")
        add("")
        add("Requests/s of a closed-loop client (one request in flight per connection); p50/p99 latency in µs as")
        add("the client saw it; `CPU µs/req` is the server process's CPU time (user + system) divided by the requests")
        add("it served — lower is better and it still ranks loops when the client's core is the bottleneck.")
        add("")
        for c in load_cases:
            gen = f" — load: {c['generator']}" if c["group"] == "http" else ""
            add(f"### {c['name']}{gen}")
            add("")
            nat = native_for(results, c)
            add("| loop | req/s | spread | p50 µs | p99 µs | CPU µs/req | server CPU | ×asyncio | ×uvloop | ×rloop |" + (" % native |" if nat else ""))
            add("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if nat else ""))
            for lab in labels + (["native"] if "native" in c["results"] else []):
                r = c["results"].get(lab)
                if r is None:
                    continue
                if "median" not in r:
                    what = r["error"] if r.get("na") else f"error: {str(r.get('error', '?'))[:120].replace('|', '/')}"
                    add(f"| {lab} | {what} |" + " |" * (9 + (1 if nat else 0)))
                    continue
                refs = [ratio(r, c["results"].get(ref), True) for ref in REFS]
                pn = f"{r['median'] / nat['median'] * 100:.0f}%" if nat and "median" in nat and lab != "native" else ("100%" if lab == "native" else "–")
                util = f"{r['server_util'] * 100:.0f}%" if r.get("server_util") is not None else "–"
                cpu = f"{r['cpu_us_per_req']:.2f}" if r.get("cpu_us_per_req") is not None else "–"
                p50 = f"{r['p50']:.0f}" if r.get("p50") is not None else "–"
                p99 = f"{r['p99']:.0f}" if r.get("p99") is not None else "–"
                add(f"| {lab}{'*' if r.get('noisy') else ''} | {fmt_num(r['median'])} | {fmt_spread(r.get('spread'))} | {p50} | {p99} | {cpu} | {util} | " + " | ".join(refs) + " |" + (f" {pn} |" if nat else ""))
            add("")

    instr = results.get("instr", {})
    instr_res = instr.get("results", {}) if isinstance(instr, dict) else {}
    if micro_cases:
        add("## Loop micro benchmarks and async_tree")
        add("")
        add("Operations/s (higher is better) or milliseconds for a whole async_tree (lower is better), timed inside")
        add("the loop on a fresh loop per run." + (f" `instr/op`: instructions per operation counted by {instr.get('tool')} (noise cannot move it; lower is better)." if instr_res else ""))
        add("")
        for c in micro_cases:
            ic = c.get("instr_case") if instr_res else None
            add(f"### {c['name']}  ({c['metric']}; params {json.dumps(c['params'])})")
            add("")
            add(f"| loop | {c['metric']} | spread | ×asyncio | ×uvloop | ×rloop |" + (" instr/op |" if ic else ""))
            add("|---|---:|---:|---:|---:|---:|" + ("---:|" if ic else ""))
            for lab in labels:
                r = c["results"].get(lab)
                if r is None:
                    continue
                iv = instr_res.get(lab, {}).get(ic) if ic else None
                icol = (f" {iv:,.0f} |" if isinstance(iv, (int, float)) else " – |") if ic else ""
                if "skipped" in r:
                    add(f"| {lab} | skipped: {r['skipped']} | | | | |" + icol)
                    continue
                if "median" not in r:
                    add(f"| {lab} | error: {str(r.get('error', '?'))[:120].replace('|', '/')} | | | | |" + icol)
                    continue
                refs = [ratio(r, c["results"].get(ref), c["higher_better"]) for ref in REFS]
                add(f"| {lab}{'*' if r.get('noisy') else ''} | {fmt_num(r['median'], c['metric'])} | {fmt_spread(r.get('spread'))} | " + " | ".join(refs) + " |" + icol)
            add("")

    if instr_res:
        add(f"## Instructions per operation ({instr.get('tool')}, differential over two run lengths)")
        add("")
        add("| case | " + " | ".join(labels) + " |")
        add("|---|" + "---:|" * len(labels))
        for case in instr.get("cases", []):
            row = []
            for lab in labels:
                v = instr_res.get(lab, {})
                if "error" in v:
                    row.append("error")
                else:
                    x = v.get(case)
                    row.append(f"{x:,.0f}" if isinstance(x, (int, float)) else "–")
            add(f"| {case} | " + " | ".join(row) + " |")
        errs = [f"{lab}: {v['error']}" for lab, v in instr_res.items() if "error" in v]
        if errs:
            add("")
            add("Errors: " + "; ".join(errs))
        add("")
    elif isinstance(instr, dict) and instr.get("error"):
        add(f"Instruction counts: {instr['error']}")
        add("")

    timers = results.get("timers")
    if timers:
        tr = timers["results"]
        add(f"## Timer precision: call_later lateness (µs, p50 / p99 of {timers['samples_per_delay']} timers per delay, median of repetitions)")
        add("")
        add("Lateness = when the callback ran (time.perf_counter) − (when it was scheduled + the delay); negative means early.")
        add("")
        tl = [lab for lab in labels if lab in tr]
        add("| delay | " + " | ".join(tl) + " |")
        add("|---:|" + "---:|" * len(tl))
        delays = next((list(v["lateness_us"]) for v in tr.values() if "lateness_us" in v), [])
        for d in delays:
            row = []
            for lab in tl:
                v = tr[lab]
                if "lateness_us" not in v:
                    row.append("error")
                else:
                    x = v["lateness_us"][d]
                    row.append(f"{x['p50']:.0f} / {x['p99']:.0f}")
            add(f"| {d} ms | " + " | ".join(row) + " |")
        errs = [f"{lab}: {v['error']}" for lab, v in tr.items() if "error" in v]
        if errs:
            add("")
            add("Errors: " + "; ".join(errs))
        add("")

    mem = results.get("memory")
    if mem:
        mr = mem["results"]
        add(f"## Memory: RSS per idle connection ({mem['connections']:,} connections open to a Protocol echo server)")
        add("")
        add("| loop | bytes/conn | spread | RSS before | RSS with connections | ×asyncio | ×uvloop | ×rloop |")
        add("|---|---:|---:|---:|---:|---:|---:|---:|")
        for lab in labels + (["native"] if "native" in mr else []):
            r = mr.get(lab)
            if r is None:
                continue
            if "median" not in r:
                add(f"| {lab} | error: {str(r.get('error', '?'))[:120]} | | | | | | |")
                continue
            refs = [ratio(r, mr.get(ref), False) for ref in REFS]
            add(f"| {lab} | {r['median']:,.0f} | {fmt_spread(r.get('spread'))} | {r.get('rss0_kib', 0) / 1024:.1f} MiB | {r.get('rss1_kib', 0) / 1024:.1f} MiB | " + " | ".join(refs) + " |")
        add("")

    if out_dir:
        plots = make_plots(results, out_dir)
        if plots:
            add("## Plots")
            add("")
            for p in plots:
                add(f"![{p}]({p})")
            add("")
    return "\n".join(lines)


def make_plots(results: dict, out_dir: str) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter
    except Exception:
        return []
    made = []
    labels = loop_labels(results)

    def grid(cases, fname, title):
        if not cases:
            return
        n = len(cases)
        ncol = 3 if n > 4 else n
        nrow = (n + ncol - 1) // ncol
        fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 2.9 * nrow), squeeze=False)
        for ax in axes.flat[n:]:
            ax.axis("off")
        for ax, c in zip(axes.flat, cases):
            labs = [lab for lab in labels + ["native"] if lab in c["results"] and "median" in c["results"][lab]]
            nat = native_for(results, c) if c["group"] in ("echo", "udp") else None
            if nat and "native" not in labs and "median" in nat:
                labs.append("native")
            vals, lo, hi = [], [], []
            for lab in labs:
                r = c["results"].get(lab) or nat
                xs = [s["value"] for s in r["samples"] if "value" in s and "error" not in s] or [r["median"]]
                vals.append(r["median"])
                lo.append(r["median"] - min(xs))
                hi.append(max(xs) - r["median"])
            ax.bar(range(len(labs)), vals, yerr=[lo, hi], color=[COLORS.get(lab, "#444") for lab in labs], capsize=3)
            ax.set_xticks(range(len(labs)))
            ax.set_xticklabels(labs, rotation=30, ha="right", fontsize=8)
            ax.set_title(c["name"], fontsize=9)
            ax.set_ylabel(c["metric"] + (" (lower is better)" if not c["higher_better"] else ""), fontsize=8)
            ax.tick_params(axis="y", labelsize=8)
        for ax, c in zip(axes.flat, cases):
            if c["metric"] == "ms":
                ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
            else:
                ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: fmt_num(v) if v else "0"))
        fig.suptitle(title, fontsize=11)
        fig.tight_layout(rect=(0, 0, 1, 0.97))
        fig.savefig(os.path.join(out_dir, fname), dpi=80)
        plt.close(fig)
        made.append(fname)

    grid([c for c in results["cases"] if c["group"] in ("echo", "http", "udp", "tls")], "echo.png", "Network cases (median, bars: min–max of repetitions)")
    grid([c for c in results["cases"] if c["group"] in ("micro", "tree")], "micro.png", "Loop micro benchmarks and async_tree (median, bars: min–max)")
    timers = results.get("timers")
    if timers:
        fig, ax = plt.subplots(figsize=(6.5, 3.8))
        for lab, v in timers["results"].items():
            if "lateness_us" not in v:
                continue
            ds = [float(d) for d in v["lateness_us"]]
            ax.plot(ds, [max(0.5, x["p50"]) for x in v["lateness_us"].values()], "-o", color=COLORS.get(lab, "#444"), label=f"{lab} p50")
            ax.plot(ds, [max(0.5, x["p99"]) for x in v["lateness_us"].values()], "--", color=COLORS.get(lab, "#444"), alpha=0.6, label=f"{lab} p99")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("call_later delay (ms)")
        ax.set_ylabel("lateness (µs, ≤0 drawn at 0.5)")
        ax.set_title("Timer lateness (lower is better)", fontsize=10)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "timers.png"), dpi=80)
        plt.close(fig)
        made.append("timers.png")
    return made


def results_page(results: dict, md: str, out_dir: str, dest_dir: str) -> str:
    """The report as benchmarks/RESULTS.md: plots copied next to it under results/."""
    pic_dir = os.path.join(dest_dir, "results")
    os.makedirs(pic_dir, exist_ok=True)
    for name in ("echo.png", "micro.png", "timers.png"):
        src = os.path.join(out_dir, name)
        if os.path.exists(src):
            shutil.copy(src, os.path.join(pic_dir, name))
            md = md.replace(f"]({name})", f"](results/{name})")
    mode = results["meta"]["mode"]
    if mode == "full":
        head = "Latest full run of the suite (`bash benchmarks/run.sh full`). Re-running it rewrites this file.\n\n"
    else:
        head = (f"**This is a {mode.upper()} run** (`bash benchmarks/run.sh {mode}`): fewer cases, shorter measurements. "
                "`bash benchmarks/run.sh full` replaces it with the full suite.\n\n")
    title, _, rest = md.partition("\n")
    return title + "\n\n" + head + rest.lstrip("\n") + "\n"


if __name__ == "__main__":
    path = sys.argv[1]
    with open(path) as f:
        res = json.load(f)
    d = os.path.dirname(os.path.abspath(path))
    text = render(res, d)
    with open(os.path.join(d, "report.md"), "w") as f:
        f.write(text)
    print(text)
