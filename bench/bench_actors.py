"""Actor benchmarks: calls one at a time, 10,000 calls submitted then gathered, a parameter server.

Two ways to run them:

* `pytest bench/bench_actors.py --benchmark-only` (pytest-benchmark, rayfast alone, one
  session cluster from bench/conftest.py);
* `python -m bench.compare` / `python -m bench.workloads`, which call the workload
  functions below — `actor_serial(ray, quick)`, `actor_batched(ray, quick)`,
  `parameter_server(ray, quick)` — with `ray` either rayfast or Ray. They use only
  numpy and `ray`, and define their remote classes inside the function so that Ray's
  workers unpickle them by value and import nothing from this repository.
"""
import time

import numpy as np
import pytest


def _counter(ray):
    @ray.remote
    class Counter:
        def __init__(self):
            self.n = 0

        def inc(self):
            self.n += 1
            return self.n

    return Counter


def _rate(n, fn):
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def actor_serial(ray, quick=False):
    """Calls per second, each call waited for before the next (the issue's ~1,330/s for Ray)."""
    n = 600 if quick else 2000
    a = _counter(ray).remote()
    for _ in range(100):
        ray.get(a.inc.remote())

    def run():
        for _ in range(n):
            ray.get(a.inc.remote())
    rate = _rate(n, run)
    ray.kill(a)
    return {"value": rate, "calls": n}


def actor_batched(ray, quick=False):
    """Calls per second with 10,000 submitted before getting them (the issue's ~3,850/s for Ray)."""
    n = 3000 if quick else 10_000
    a = _counter(ray).remote()
    ray.get([a.inc.remote() for _ in range(1000)])
    out = []
    rate = _rate(n, lambda: out.append(ray.get([a.inc.remote() for _ in range(n)])))
    assert out[0][-1] == out[0][0] + n - 1
    ray.kill(a)
    return {"value": rate, "calls": n}


def parameter_server(ray, quick=False, dim=1_000_000, workers=2):
    """Updates per second of a parameter server holding `dim` floats, `workers` tasks pulling and pushing."""
    iterations = 40 if quick else 150
    lr = 0.01

    @ray.remote
    class ParameterServer:
        def __init__(self, dim):
            self.weights = np.zeros(dim)
            self.scratch = np.empty(dim)
            self.updates = 0

        def push(self, grad):
            np.multiply(grad, lr, out=self.scratch)
            self.weights -= self.scratch
            self.updates += 1
            return self.updates

        def pull(self):
            return self.weights

    @ray.remote
    def worker(ps, index, dim, iterations):
        grad = np.full(dim, float(index + 1))
        for _ in range(iterations):
            w = ray.get(ps.pull.remote())
            assert w.shape == (dim,)
            ray.get(ps.push.remote(grad))
        return iterations

    ps = ParameterServer.remote(dim)
    ray.get(worker.remote(ps, -1, dim, 2))  # warm up: workers started, code loaded
    base = ray.get(ps.pull.remote()).copy()
    t0 = time.perf_counter()
    ray.get([worker.remote(ps, i, dim, iterations) for i in range(workers)])
    elapsed = time.perf_counter() - t0
    final = ray.get(ps.pull.remote())
    expected = base - lr * sum(i + 1 for i in range(workers)) * iterations
    assert np.allclose(final, expected)
    ray.kill(ps)
    n = workers * iterations
    return {"value": n / elapsed, "updates": n, "dim": dim, "workers": workers}


WORKLOADS = {"actor_serial": actor_serial, "actor_batched": actor_batched, "parameter_server": parameter_server}


# --- pytest-benchmark (rayfast alone) -------------------------------------------------

@pytest.fixture(scope="module")
def counter(cluster):
    a = _counter(cluster).remote()
    cluster.get([a.inc.remote() for _ in range(1000)])
    yield a
    cluster.kill(a)


def test_actor_call_one_at_a_time(benchmark, cluster, counter):
    ray = cluster
    benchmark(lambda: ray.get(counter.inc.remote()))
    benchmark.extra_info["calls_per_s"] = 1 / benchmark.stats.stats.median


def test_actor_calls_10000_batched(benchmark, cluster, counter, quick):
    ray = cluster
    n = 3000 if quick else 10_000
    out = benchmark.pedantic(lambda: ray.get([counter.inc.remote() for _ in range(n)]), rounds=5,
                             warmup_rounds=1)
    assert len(out) == n
    benchmark.extra_info.update(calls=n, calls_per_s=n / benchmark.stats.stats.median)


def test_parameter_server(benchmark, cluster, quick):
    res = benchmark.pedantic(lambda: parameter_server(cluster, quick), rounds=3)
    benchmark.extra_info.update(updates_per_s=res["value"], dim=res["dim"], workers=res["workers"])
