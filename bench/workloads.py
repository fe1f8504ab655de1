"""The benchmark workloads, written once against a module `ray` that is either rayfast or Ray.

    import rayfast as ray            # or: import ray
    from bench import workloads
    results = workloads.run(ray, ["tasks_serial", "lcs"], quick=True)

Every workload measures itself and returns figures; nothing here knows which
system it is timing. `python -m bench.workloads --system rayfast|ray` runs
the requested workloads in one process (one `init`) and writes JSON: that is
what `bench.compare` starts, once per system per round, with this
interpreter for rayfast and Ray's own interpreter for Ray (which needs only
numpy and ray: the remote functions are defined inside functions so that they
are pickled by value and workers import nothing from this repository).

Actor workloads come from `bench/bench_actors.py` (the actors' own benchmark
module) when it exists: for each name in ACTOR_WORKLOADS it may define a
function `name(ray, quick=False)` (or a dict `WORKLOADS = {name: fn}`) that
returns the figure as a number or as a dict with a "value" key (plus extras).
When the module or a function is missing, that workload is reported as skipped.
"""
import argparse
import gc
import importlib
import importlib.util
import inspect
import json
import os
import statistics
import sys
import time
import traceback

import numpy as np

from bench import micro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MB100 = 100_000_000          # "100 MB": 10**8 bytes (a float64 array of 12.5M elements)
LCS_BLOCKS = (30, 60, 100, 150, 300)
LCS_SERIAL_BLOCKS = (30, 60)   # also timed with every tile called in the driver: the compute floor

# row -> (label, unit, better: "higher", "lower", or "ref" for a reference figure that is not compared).
# A workload fills one or more rows.
ROWS = {
    "init_s": ("init()", "s", "lower"),
    "tasks_serial": ("tiny tasks, one at a time", "tasks/s", "higher"),
    "tasks_bulk": ("tiny tasks, submitted then gathered", "tasks/s", "higher"),
    "wait_loop": ("tiny tasks, each taken by wait() as it finishes", "tasks/s", "higher"),
    "chain_us": ("dependency chain", "µs/task", "lower"),
    "actor_serial": ("actor calls, one at a time", "calls/s", "higher"),
    "actor_batched": ("actor calls, submitted then gathered", "calls/s", "higher"),
    "put_small": ("small put", "puts/s", "higher"),
    "get_small": ("small get", "gets/s", "higher"),
    "memcpy_gbps": ("memcpy 100 MB (np.copyto), reference", "GB/s", "ref"),
    "store_memcpy_gbps": ("memcpy 100 MB (C, store.memcpy_bandwidth), reference", "GB/s", "ref"),
    "put_large_gbps": ("put 100 MB numpy array", "GB/s", "higher"),
    "get_large_us": ("get 100 MB numpy array", "µs", "lower"),
    "get_1mb_us": ("get 1 MB numpy array", "µs", "lower"),
    "tasks_large_arg": ("tasks taking a 100 MB array", "tasks/s", "higher"),
    **{f"lcs_b{b}": (f"LCS block {b}", "s", "lower") for b in LCS_BLOCKS},
    **{f"lcs_b{b}_serial": (f"LCS block {b}: its tiles run in one process, reference", "s", "ref")
       for b in LCS_SERIAL_BLOCKS},
    "map_reduce_s": ("map-reduce word count", "s", "lower"),
    "parameter_server": ("parameter server", "updates/s", "higher"),
    **{name: (label, unit, "higher") for name, (label, unit, _) in micro.CASES.items()},
}

ACTOR_WORKLOADS = ("actor_serial", "actor_batched", "parameter_server")


def sizes(quick):
    """Problem sizes: the issues' sizes, or small ones that make a whole comparison take about a minute."""
    if quick:
        return dict(serial=600, bulk=3000, waits=1000, chain=300, puts=500, gets=2000, big_reps=3, get_reps=20,
                    big_tasks=30, lcs_n=900, docs=6, words=10_000)
    return dict(serial=2000, bulk=10_000, waits=5000, chain=1000, puts=2000, gets=5000, big_reps=5, get_reps=50,
                big_tasks=200, lcs_n=3000, docs=12, words=50_000)


def _load_example(name):
    """examples/<name>.py as a module (examples/ is not a package: load it by path)."""
    spec = importlib.util.spec_from_file_location(f"_bench_example_{name}",
                                                  os.path.join(ROOT, "examples", name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Context:
    """The remote functions of the workloads for one runtime, defined (and exported) once."""

    def __init__(self, ray, quick):
        self.ray, self.quick, self.size = ray, quick, sizes(quick)

        def noop(x):
            return x

        def inc(x):
            return x + 1

        def nbytes(a):
            return a.nbytes

        self.noop = ray.remote(noop)
        self.inc = ray.remote(inc)
        self.nbytes = ray.remote(nbytes)
        self._lcs = self._mr = None

    @property
    def lcs(self):
        if self._lcs is None:
            mod = _load_example("lcs")
            self._lcs = (mod, mod.build(self.ray))
        return self._lcs

    @property
    def map_reduce(self):
        if self._mr is None:
            mod = _load_example("map_reduce")
            self._mr = (mod, mod.build(self.ray))
        return self._mr


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


# --- tasks ------------------------------------------------------------------
def tasks_serial(ray, cx):
    n = cx.size["serial"]
    for i in range(50):
        ray.get(cx.noop.remote(i))
    t = time.perf_counter()
    for i in range(n):
        ray.get(cx.noop.remote(i))
    return {"tasks_serial": n / (time.perf_counter() - t)}


def tasks_bulk(ray, cx):
    n = cx.size["bulk"]
    ray.get([cx.noop.remote(i) for i in range(200)])
    dt, out = _timed(lambda: ray.get([cx.noop.remote(i) for i in range(n)]))
    assert out[-1] == n - 1
    return {"tasks_bulk": n / dt}


def wait_loop(ray, cx):
    """`while refs: done, refs = ray.wait(refs)`: each call scans and splits the rest of the list."""
    n = cx.size["waits"]
    ray.get([cx.noop.remote(i) for i in range(200)])

    def run():
        refs = [cx.noop.remote(i) for i in range(n)]
        total = 0
        while refs:
            done, refs = ray.wait(refs, num_returns=1)
            total += ray.get(done[0])
        return total

    dt, out = _timed(run)
    assert out == n * (n - 1) // 2
    return {"wait_loop": n / dt}


def chain(ray, cx):
    n = cx.size["chain"]
    ray.get(cx.inc.remote(cx.inc.remote(0)))

    def run():
        r = cx.inc.remote(0)
        for _ in range(n - 1):
            r = cx.inc.remote(r)
        return ray.get(r)

    dt, out = _timed(run)
    assert out == n, out
    return {"chain_us": dt / n * 1e6}


# --- objects ----------------------------------------------------------------
def put_small(ray, cx):
    n = cx.size["puts"]
    value = b"x" * 100
    keep = [ray.put(value) for _ in range(50)]
    t = time.perf_counter()
    for _ in range(n):
        keep.append(ray.put(value))
    return {"put_small": n / (time.perf_counter() - t)}


def get_small(ray, cx):
    n = cx.size["gets"]
    refs = [ray.put(i.to_bytes(8, "little") * 12) for i in range(n)]
    ray.get(refs[:10])
    t = time.perf_counter()
    for r in refs:
        ray.get(r)
    return {"get_small": n / (time.perf_counter() - t)}


def memcpy_gbps(nbytes=MB100, reps=5):
    """Best-of-reps GB/s of np.copyto between two prefaulted buffers of nbytes."""
    src = np.ones(nbytes // 8)
    dst = np.zeros_like(src)
    best = min(_timed(lambda: np.copyto(dst, src))[0] for _ in range(reps))
    return nbytes / best / 1e9


def put_large(ray, cx):
    out = {"memcpy_gbps": memcpy_gbps()}
    if getattr(ray, "__name__", "") == "rayfast":
        try:
            from rayfast._core.store import memcpy_bandwidth
            out["store_memcpy_gbps"] = memcpy_bandwidth(MB100)
        except Exception:     # store without it: the numpy figure stands alone
            pass
    arr = np.ones(MB100 // 8)
    times = []
    for _ in range(cx.size["big_reps"]):
        dt, ref = _timed(lambda: ray.put(arr))
        times.append(dt)
        del ref
        gc.collect()
    out["put_large_gbps"] = MB100 / statistics.median(times) / 1e9
    out["put_large_best_gbps"] = MB100 / min(times) / 1e9
    return out


def _get_us(ray, nbytes, reps):
    ref = ray.put(np.ones(nbytes // 8))
    v = ray.get(ref)
    assert v.nbytes == nbytes
    del v
    times = []
    for _ in range(reps):
        dt, v = _timed(lambda: ray.get(ref))
        times.append(dt)
        del v
    return statistics.median(times) * 1e6


def get_large(ray, cx):
    reps = cx.size["get_reps"]
    out = {"get_large_us": _get_us(ray, MB100, reps), "get_1mb_us": _get_us(ray, 1_000_000, reps)}
    gc.collect()
    return out


def tasks_large_arg(ray, cx):
    n = cx.size["big_tasks"]
    ref = ray.put(np.ones(MB100 // 8))
    ray.get([cx.nbytes.remote(ref) for _ in range(4)])
    dt, out = _timed(lambda: ray.get([cx.nbytes.remote(ref) for _ in range(n)]))
    assert out == [MB100] * n
    del ref
    gc.collect()
    return {"tasks_large_arg": n / dt}


# --- programs ---------------------------------------------------------------
def lcs(ray, cx, blocks=LCS_BLOCKS):
    mod, tile = cx.lcs
    n = cx.size["lcs_n"]
    a, b = mod.random_strings(n, seed=1)
    want = mod.lcs_local(a, b)
    mod.lcs_blocked(ray, a[:200], b[:200], 50, tile)                 # export the function, warm the pool
    out = {"lcs_n": n}
    for block in blocks:
        dt, (length, ntasks) = _timed(lambda: mod.lcs_blocked(ray, a, b, block, tile))
        assert length == want, (block, length, want)
        out[f"lcs_b{block}"] = dt
        out[f"lcs_b{block}_tasks_per_s"] = ntasks / dt
    serial = _SerialTask(mod.tile_function())
    for block in LCS_SERIAL_BLOCKS:
        dt, (length, _) = _timed(lambda: mod.lcs_blocked(_SerialRay, a, b, block, serial))
        assert length == want
        out[f"lcs_b{block}_serial"] = dt
    return out


class _SerialTask:
    """A tile "task" that runs at once in this process: the same tiles, no runtime."""

    def __init__(self, fn):
        self.fn = fn

    def remote(self, *args):
        return self.fn(*args)


class _SerialRay:
    get = staticmethod(lambda value: value)


def map_reduce(ray, cx):
    mod, tasks = cx.map_reduce
    docs = mod.make_docs(cx.size["docs"], cx.size["words"], seed=2)
    mod.word_count(ray, docs[:1], tasks)
    dt, counts = _timed(lambda: mod.word_count(ray, docs, tasks))
    assert counts == mod.count_local(docs)
    return {"map_reduce_s": dt, "map_reduce_words": sum(counts.values())}


def _actor_fn(name):
    """bench/bench_actors.py's function for `name`, or (None, reason)."""
    try:
        try:
            mod = importlib.import_module("bench.bench_actors")
        except ModuleNotFoundError as e:
            if e.name != "pytest":
                raise
            # It also holds pytest-benchmark tests; Ray's environment has no pytest, and the
            # workload functions need none: a stand-in lets the module import there.
            sys.modules["pytest"] = _pytest_stand_in()
            try:
                mod = importlib.import_module("bench.bench_actors")
            finally:
                del sys.modules["pytest"]
    except ImportError as e:
        if getattr(e, "name", None) in ("bench.bench_actors", "bench"):
            return None, "bench/bench_actors.py not present"
        return None, f"bench.bench_actors does not import: {e!r}"
    table = getattr(mod, "WORKLOADS", None) or {}
    fn = table.get(name) or getattr(mod, name, None)
    if not callable(fn):
        return None, f"bench/bench_actors.py has no {name}(ray, quick)"
    return fn, None


def _pytest_stand_in():
    import types

    def passthrough(*args, **kwargs):
        if len(args) == 1 and callable(args[0]) and not kwargs:
            return args[0]
        return lambda fn: fn

    class _Marks:
        def __getattr__(self, name):
            return passthrough

    mod = types.ModuleType("pytest")
    mod.fixture, mod.mark = passthrough, _Marks()
    mod.skip = mod.importorskip = mod.param = passthrough
    return mod


def _actor_workload(name):
    def run(ray, cx):
        fn, why = _actor_fn(name)
        if fn is None:
            raise Skipped(why)
        params = inspect.signature(fn).parameters
        res = fn(ray, quick=cx.quick) if "quick" in params else fn(ray)
        if isinstance(res, dict):
            res = dict(res)
            value = res.pop("value", None)
            if value is None:
                value = res.pop(name)
            return {name: float(value), **{f"{name}_{k}": v for k, v in res.items()}}
        return {name: float(res)}
    run.__name__ = name
    return run


def _micro_workload(name):
    def run(ray, cx):
        return {name: micro.CASES[name][2](ray, cx.quick)}
    run.__name__ = name
    return run


class Skipped(Exception):
    pass


# name -> workload(ray, cx) -> {row or extra: figure}. In the order they run.
WORKLOADS = {
    "tasks_serial": tasks_serial,
    "tasks_bulk": tasks_bulk,
    "wait_loop": wait_loop,
    "chain": chain,
    "actor_serial": _actor_workload("actor_serial"),
    "actor_batched": _actor_workload("actor_batched"),
    "put_small": put_small,
    "get_small": get_small,
    "put_large": put_large,
    "get_large": get_large,
    "tasks_large_arg": tasks_large_arg,
    "lcs": lcs,
    "map_reduce": map_reduce,
    "parameter_server": _actor_workload("parameter_server"),
    **{name: _micro_workload(name) for name in micro.CASES},
}


def select(only):
    """Workload names from a comma-separated --only: a workload, a row name such as lcs_b30 (its
    workload), or "micro" (every microbenchmark). Without it, the headline workloads."""
    if not only:
        return [w for w in WORKLOADS if w not in micro.CASES]
    names = []
    for item in (s.strip() for s in only.split(",")):
        if not item:
            continue
        if item in WORKLOADS:
            hits = [item]
        elif item == "micro":
            hits = list(micro.CASES)
        else:
            hits = [w for w in WORKLOADS if item.startswith(w) or w.startswith(item)][:1]
        if not hits:
            raise SystemExit(f"unknown workload {item!r}; known: micro, {', '.join(WORKLOADS)}")
        names += [h for h in hits if h not in names]
    return [w for w in WORKLOADS if w in names]


def run(ray, names=None, quick=False, log=None):
    """Run workloads on an initialized `ray`; returns {"results": {...}, "errors": {...}, "skipped": {...}}."""
    cx = Context(ray, quick)
    results, errors, skipped, seconds = {}, {}, {}, {}
    for name in names or select(""):
        t = time.perf_counter()
        try:
            results.update(WORKLOADS[name](ray, cx))
        except Skipped as e:
            skipped[name] = str(e)
        except Exception as e:   # one broken workload must not hide the others' figures
            errors[name] = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=4)}"
        seconds[name] = time.perf_counter() - t
        gc.collect()
        if log:
            log(f"  {name}: {seconds[name]:.1f} s" + (" (error)" if name in errors else "")
                + (" (skipped)" if name in skipped else ""))
    return {"results": results, "errors": errors, "skipped": skipped, "seconds": seconds}


def init_kwargs(ray, num_cpus):
    kw = {"num_cpus": num_cpus}
    if getattr(ray, "__name__", "") == "ray":
        kw.update(include_dashboard=False, log_to_driver=False)
    return kw


def main(argv=None):
    p = argparse.ArgumentParser(description="Run benchmark workloads on one system (used by bench.compare).")
    p.add_argument("--system", choices=["rayfast", "ray"], required=True)
    p.add_argument("--only", default="", help="comma-separated workloads (default: all)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--num-cpus", type=int, default=os.cpu_count())
    p.add_argument("--out", help="write the JSON here (default: stdout)")
    args = p.parse_args(argv)
    names = select(args.only)
    ray = importlib.import_module(args.system)

    def log(msg):
        print(f"[{args.system}] {msg}", file=sys.stderr, flush=True)

    t = time.perf_counter()
    ray.init(**init_kwargs(ray, args.num_cpus))
    init_s = time.perf_counter() - t
    try:
        out = run(ray, names, args.quick, log)
    finally:
        ray.shutdown()
    out["results"]["init_s"] = init_s
    out.update(system=args.system, version=getattr(ray, "__version__", "?"), num_cpus=args.num_cpus,
               quick=args.quick, python=sys.version.split()[0])
    text = json.dumps(out, indent=1, default=float)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
