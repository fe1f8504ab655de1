"""Tasks: one at a time, 10,000 submitted then gathered, a 1,000-task dependency chain (rayfast alone)."""
import pytest

from bench import workloads as W


def test_tiny_task_one_at_a_time(benchmark, cluster, cx):
    ray = cluster
    ray.get([cx.noop.remote(i) for i in range(100)])
    assert benchmark(lambda: ray.get(cx.noop.remote(1))) == 1
    benchmark.extra_info["tasks_per_s"] = 1 / benchmark.stats.stats.median


def test_tiny_tasks_submitted_then_gathered(benchmark, cluster, cx, sizes):
    ray, n = cluster, sizes["bulk"]
    out = benchmark.pedantic(lambda: ray.get([cx.noop.remote(i) for i in range(n)]), rounds=5, warmup_rounds=1)
    assert out[-1] == n - 1
    benchmark.extra_info.update(tasks=n, tasks_per_s=n / benchmark.stats.stats.median)


def test_dependency_chain(benchmark, cluster, cx, sizes):
    ray, n = cluster, sizes["chain"]

    def run():
        r = cx.inc.remote(0)
        for _ in range(n - 1):
            r = cx.inc.remote(r)
        return ray.get(r)

    assert benchmark.pedantic(run, rounds=5, warmup_rounds=1) == n
    benchmark.extra_info.update(tasks=n, us_per_task=benchmark.stats.stats.median / n * 1e6)


@pytest.mark.parametrize("name", ["actor_serial", "actor_batched"])
def test_actor_calls(benchmark, cluster, quick, name):
    """The actors' own workloads (bench/bench_actors.py), when that module provides them."""
    fn, why = W._actor_fn(name)
    if fn is None:
        pytest.skip(why)
    ray = cluster
    rate = benchmark.pedantic(lambda: W._actor_workload(name)(ray, W.Context(ray, quick))[name], rounds=3)
    benchmark.extra_info["calls_per_s"] = rate
