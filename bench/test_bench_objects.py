"""Objects: small put and get, put and get of a 100 MB numpy array, tasks taking a 100 MB argument."""
import numpy as np
import pytest

from bench import workloads as W


@pytest.fixture(scope="module")
def big():
    return np.ones(W.MB100 // 8)


def test_small_put(benchmark, cluster):
    value = b"x" * 100
    benchmark(cluster.put, value)
    benchmark.extra_info["puts_per_s"] = 1 / benchmark.stats.stats.median


def test_small_get(benchmark, cluster):
    ref = cluster.put(b"x" * 100)
    assert benchmark(cluster.get, ref) == b"x" * 100
    benchmark.extra_info["gets_per_s"] = 1 / benchmark.stats.stats.median


def test_put_100mb(benchmark, cluster, big):
    memcpy = W.memcpy_gbps()          # the machine's reference, measured in the same run

    def put():
        cluster.put(big)              # the ref is dropped at once: the object is freed before the next round

    benchmark.pedantic(put, rounds=7, warmup_rounds=1)
    gbps = W.MB100 / benchmark.stats.stats.median / 1e9
    benchmark.extra_info.update(gb_per_s=gbps, memcpy_gb_per_s=memcpy, fraction_of_memcpy=gbps / memcpy)
    try:
        from rayfast._core.store import memcpy_bandwidth
        benchmark.extra_info["store_memcpy_gb_per_s"] = memcpy_bandwidth(W.MB100)
    except ImportError:
        pass


@pytest.mark.parametrize("nbytes", [1_000_000, W.MB100], ids=["1MB", "100MB"])
def test_get_array(benchmark, cluster, nbytes):
    ref = cluster.put(np.ones(nbytes // 8))
    cluster.get(ref)
    v = benchmark(cluster.get, ref)
    assert v.nbytes == nbytes
    benchmark.extra_info["us"] = benchmark.stats.stats.median * 1e6


def test_tasks_with_100mb_argument(benchmark, cluster, cx, sizes, big):
    ref, n = cluster.put(big), sizes["big_tasks"]
    out = benchmark.pedantic(lambda: cluster.get([cx.nbytes.remote(ref) for _ in range(n)]),
                             rounds=5, warmup_rounds=1)
    assert out == [W.MB100] * n
    benchmark.extra_info.update(tasks=n, tasks_per_s=n / benchmark.stats.stats.median)
