"""rayfast against Ray on the same machine, in one run, alternating.

    python -m bench.compare [--quick] [--only NAMES] [--json out.json] [--png out.png]

Each round starts one process per system that runs `init()` once and then the
requested workloads of `bench/workloads.py` (the same code for both: it gets
`import rayfast` or `import ray` as its `ray`): rayfast with this
interpreter, Ray with `--ray-python` (default /opt/rayenv/bin/python, Ray's
own virtual environment: Ray is never a dependency of rayfast). Rounds
alternate rayfast, Ray, rayfast, Ray, ... and the table reports the median
of the rounds for each figure. Only one system runs at a time, and each
round starts once the machine is quiet (`settle`: the previous round's
processes gone; Ray's take seconds to exit).

Every figure printed is measured in this run; the only constants are the
issues' targets (ratios, or absolute bounds where an issue sets one).
"""
import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

from bench import workloads as W

DEFAULT_RAY_PYTHON = "/opt/rayenv/bin/python"

# Targets from the issues (2: tasks, 3: object store, 4: actors, 5: programs):
#   ("ratio", x): rayfast at least x times better than Ray, in the row's direction;
#   ("below", x): rayfast's figure below x (the row's unit);
#   ("memcpy", f): rayfast's GB/s at least f x the memcpy bandwidth measured in the same run;
#   ("below_at", x, key, v): below x, judged only when extras[key] == v (the problem size).
TARGETS = {
    "tasks_serial": ("ratio", 20),
    "tasks_bulk": ("ratio", 25),
    "chain_us": ("ratio", 20),
    "actor_serial": ("ratio", 15),
    "actor_batched": ("ratio", 15),
    "put_small": ("ratio", 20),
    "get_small": ("ratio", 10),
    "put_large_gbps": ("memcpy", 0.5),
    "get_large_us": ("below", 20),
    "tasks_large_arg": ("ratio", 10),
    "lcs_b30": ("ratio", 10),
    "lcs_b60": ("below_at", 0.7, "lcs_n", 3000),
    "parameter_server": ("ratio", 5),
}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def find_ray_python(path, no_ray):
    """An interpreter that can `import ray, numpy`, or None (then Ray is skipped)."""
    if no_ray:
        return None
    candidates = [path] if path else [DEFAULT_RAY_PYTHON, sys.executable]
    for py in candidates:
        if not py or not os.path.exists(py):
            continue
        ok = subprocess.run([py, "-c", "import ray, numpy"], capture_output=True, timeout=120).returncode == 0
        if ok:
            return py
    if path:
        log(f"warning: {path} cannot import ray and numpy: Ray is skipped")
    return None


def settle(max_wait=15.0, busy_below=0.1, window=0.5):
    """Wait until the machine is quiet (CPU busy under busy_below over a window), at most
    max_wait seconds: the previous round's processes (Ray's take seconds to exit) must not
    run into the next one's timings. Returns the seconds waited."""
    def ticks():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]   # total, idle + iowait
    t0 = time.monotonic()
    try:
        total, idle = ticks()
        while time.monotonic() - t0 < max_wait:
            time.sleep(window)
            total2, idle2 = ticks()
            busy = 1 - (idle2 - idle) / max(1, total2 - total)
            total, idle = total2, idle2
            if busy < busy_below:
                break
    except OSError:   # no /proc/stat: nothing to wait for
        pass
    return time.monotonic() - t0


def run_system(system, python, args):
    """One process: init once, run the workloads, return its JSON (or an error record)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    cmd = [python, "-m", "bench.workloads", "--system", system, "--out", out, "--num-cpus", str(args.num_cpus)]
    if args.quick:
        cmd.append("--quick")
    if args.only:
        cmd += ["--only", args.only]
    env = dict(os.environ)
    env["PYTHONPATH"] = W.ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=W.ROOT, env=env, timeout=args.timeout, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
        with open(out) as f:
            data = json.load(f) if proc.returncode == 0 else None
    except (subprocess.TimeoutExpired, OSError, ValueError) as e:
        proc, data = None, None
        err = f"{type(e).__name__}: {e}"
    finally:
        try:
            os.unlink(out)
        except OSError:
            pass
    if data is None:
        if proc is not None:
            err = f"exit {proc.returncode}: " + "\n".join(proc.stderr.strip().splitlines()[-15:])
        log(f"  {system}: FAILED ({err})")
        return {"system": system, "failed": err, "results": {}, "errors": {}, "skipped": {}}
    if args.verbose:
        log(proc.stderr.rstrip())
    data["wall_s"] = time.perf_counter() - t
    for name, e in data.get("errors", {}).items():
        log(f"  {system}: {name} failed: {e.splitlines()[0]}")
    return data


def median_results(runs):
    """{figure: median over the rounds that produced it} for numeric figures."""
    keys = {k for r in runs for k, v in r.get("results", {}).items() if isinstance(v, (int, float))}
    return {k: statistics.median([r["results"][k] for r in runs if k in r.get("results", {})])
            for k in sorted(keys)}


def ratio(row, rf, ray):
    """How many times better rayfast is than Ray on this row (> 1: rayfast better)."""
    if rf is None or ray is None or rf <= 0 or ray <= 0 or W.ROWS[row][2] == "ref":
        return None
    return rf / ray if W.ROWS[row][2] == "higher" else ray / rf


def judge(row, rf, r, med_rf):
    """(target text, met: True/False/None) for a row."""
    t = TARGETS.get(row)
    if t is None:
        return "", None
    kind = t[0]
    unit = W.ROWS[row][1]
    if kind == "ratio":
        return f"≥ {t[1]}x", (None if r is None else r >= t[1])
    if kind == "below":
        return f"< {t[1]} {unit}", (None if rf is None else rf < t[1])
    if kind == "memcpy":
        mc = med_rf.get("memcpy_gbps")
        if mc is None:
            return f"≥ {t[1]}x memcpy", None
        bound = t[1] * mc
        return f"≥ {bound:.1f} GB/s ({t[1]}x memcpy)", (None if rf is None else rf >= bound)
    if kind == "below_at":
        _, bound, key, at = t
        size = med_rf.get(key)
        if size != at:
            return f"< {bound} {unit} at {key}={at} (n/a here)", None
        return f"< {bound} {unit}", (None if rf is None else rf < bound)
    return "", None


def fmt(v):
    if v is None:
        return "—"
    a = abs(v)
    if a >= 10_000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def build_table(med_rf, med_ray, have_ray):
    rows = []
    for row, (label, unit, better) in W.ROWS.items():
        rf, ry = med_rf.get(row), med_ray.get(row)
        if rf is None and ry is None:
            continue
        r = ratio(row, rf, ry)
        target, met = judge(row, rf, r, med_rf)
        rows.append(dict(row=row, workload=label, unit=unit, better=better, rayfast=rf,
                         ray=ry if have_ray else None, ratio=r, target=target, met=met))
    return rows


def render(rows):
    head = ["workload", "unit", "rayfast", "Ray", "rayfast/Ray (x better)", "target", ""]
    body = [[x["workload"], x["unit"], fmt(x["rayfast"]), fmt(x["ray"]),
             "—" if x["ratio"] is None else f"{x['ratio']:.2f}x", x["target"],
             {True: "✓", False: "✗", None: ""}[x["met"]]] for x in rows]
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"   # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(head), sep] + [line(r) for r in body])


def plot(path, med_rf, med_ray, have_ray, title):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed (pip install 'rayfast[bench]'): no PNG")
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, med, style in (("rayfast", med_rf, "o-"), ("Ray", med_ray, "s--")):
        if name == "Ray" and not have_ray:
            continue
        pts = [(b, med[f"lcs_b{b}"]) for b in W.LCS_BLOCKS if f"lcs_b{b}" in med]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=name)
    ax.set_xlabel("block size (cells per side)")
    ax.set_ylabel("wall time (s)")
    ax.set_yscale("log")
    ax.set_xticks(list(W.LCS_BLOCKS))
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv=None):
    p = argparse.ArgumentParser(description="Benchmark rayfast against Ray (alternating rounds, medians).")
    p.add_argument("--quick", action="store_true", help="small sizes: the whole run takes about a minute")
    p.add_argument("--only", default="", help=f"comma-separated workloads: {', '.join(W.WORKLOADS)}")
    p.add_argument("--rounds", type=int, default=None, help="rounds per system (default 3)")
    p.add_argument("--json", help="write all figures (every round, medians, table) here")
    p.add_argument("--png", help="draw LCS time against block size here")
    p.add_argument("--ray-python", help=f"interpreter with Ray installed (default {DEFAULT_RAY_PYTHON})")
    p.add_argument("--no-ray", action="store_true", help="measure rayfast only")
    p.add_argument("--num-cpus", type=int, default=os.cpu_count(), help="workers for both systems")
    p.add_argument("--timeout", type=float, default=1800, help="seconds allowed per system per round")
    p.add_argument("-v", "--verbose", action="store_true", help="show each process's progress")
    args = p.parse_args(argv)
    W.select(args.only)                       # unknown names fail here, before anything starts
    rounds = args.rounds or 3
    if rounds < 1:
        p.error("--rounds must be at least 1")

    ray_py = find_ray_python(args.ray_python, args.no_ray)
    systems = [("rayfast", sys.executable)] + ([("ray", ray_py)] if ray_py else [])
    log(f"rounds: {rounds}, systems: {', '.join(s for s, _ in systems)}"
        + ("" if ray_py else " (Ray not found: rayfast only)") + (", quick sizes" if args.quick else ""))
    runs = {s: [] for s, _ in systems}
    t0 = time.perf_counter()
    for i in range(rounds):
        for system, python in systems:
            waited = settle()
            log(f"round {i + 1}/{rounds}: {system} ..." + (f" (after {waited:.1f} s for the machine to settle)"
                                                            if waited > 1 else ""))
            runs[system].append(run_system(system, python, args))
    wall = time.perf_counter() - t0

    med_rf = median_results(runs["rayfast"])
    med_ray = median_results(runs.get("ray", []))
    have_ray = bool(ray_py) and bool(med_ray)
    rows = build_table(med_rf, med_ray, have_ray)
    meta = dict(command="python -m bench.compare " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
                rounds=rounds, quick=args.quick, num_cpus=args.num_cpus, cpus_on_machine=os.cpu_count(),
                machine=platform.platform(), python=platform.python_version(), wall_s=wall,
                rayfast_version=next((r.get("version") for r in runs["rayfast"] if "version" in r), None),
                ray_version=next((r.get("version") for r in runs.get("ray", []) if "version" in r), None),
                ray_python=ray_py)
    print(f"\nrayfast {meta['rayfast_version']} vs "
          + (f"Ray {meta['ray_version']}" if have_ray else "Ray (not measured)")
          + f" — {args.num_cpus} CPUs, median of {rounds} alternating rounds"
          + (", --quick sizes" + (f" (LCS n={int(med_rf['lcs_n'])})" if "lcs_n" in med_rf else "")
             if args.quick else "") + f", {wall:.0f} s")
    print(render(rows))
    for system in runs:
        skipped = {k: v for r in runs[system] for k, v in r.get("skipped", {}).items()}
        errors = {k: v.splitlines()[0] for r in runs[system] for k, v in r.get("errors", {}).items()}
        failed = [r["failed"] for r in runs[system] if "failed" in r]
        for k, v in skipped.items():
            print(f"skipped on {system}: {k} ({v})")
        for k, v in errors.items():
            print(f"error on {system}: {k}: {v}")
        for v in failed:
            print(f"{system} run failed: {v.splitlines()[0] if v else v}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(meta=meta, median={"rayfast": med_rf, "ray": med_ray}, table=rows, runs=runs), f,
                      indent=1, default=str)
        print(f"figures: {args.json}")
    if args.png:
        n = med_rf.get("lcs_n") or med_ray.get("lcs_n")
        title = f"LCS {int(n)}x{int(n)}, {args.num_cpus} CPUs" if n else "LCS"
        if plot(args.png, med_rf, med_ray, have_ray, title):
            print(f"plot: {args.png}")
    return 0 if runs["rayfast"] and not all("failed" in r for r in runs["rayfast"]) else 1


if __name__ == "__main__":
    sys.exit(main())
