"""The seed programs of the core-runtime issue."""
import time

import pytest

import rayfast

pytestmark = pytest.mark.usefixtures("cluster")


@rayfast.remote
def f(x):
    return x * x


@rayfast.remote
def g(a, b):
    return a + b


def test_g_of_f():
    assert rayfast.get(g.remote(f.remote(3), f.remote(1))) == 10


@rayfast.remote(num_returns=3)
def map_task(chunk):
    # split a chunk into 3 partitions by value mod 3
    parts = [[], [], []]
    for v in chunk:
        parts[v % 3].append(v)
    return parts[0], parts[1], parts[2]


@rayfast.remote
def reduce_task(*parts):
    return sum(sum(p) for p in parts), sum(len(p) for p in parts)


def test_map_reduce():
    data = list(range(300))
    chunks = [data[i::3] for i in range(3)]
    mapped = [map_task.remote(c) for c in chunks]          # 3 x 3 refs
    assert all(isinstance(m, list) and len(m) == 3 for m in mapped)
    reduced = [reduce_task.remote(*[mapped[m][r] for m in range(3)]) for r in range(3)]
    out = rayfast.get(reduced, timeout=60)
    for r, (s, n) in enumerate(out):
        vals = [v for v in data if v % 3 == r]
        assert s == sum(vals) and n == len(vals)
    assert sum(s for s, _ in out) == sum(data)


@rayfast.remote
def tiny(i):
    return i


def test_10k_tiny_tasks():
    t = time.time()
    refs = [tiny.remote(i) for i in range(10_000)]
    assert rayfast.get(refs, timeout=120) == list(range(10_000))
    assert time.time() - t < 60


def test_10k_tiny_tasks_one_at_a_time_subset():
    for i in range(500):
        assert rayfast.get(tiny.remote(i)) == i


@rayfast.remote
def inc(x):
    return x + 1


def test_chain_of_1000_dependent_tasks():
    r = inc.remote(0)
    for _ in range(999):
        r = inc.remote(r)
    assert rayfast.get(r, timeout=120) == 1000


def test_wide_fan_in():
    refs = [f.remote(i) for i in range(200)]

    @rayfast.remote
    def total(*xs):
        return sum(xs)

    assert rayfast.get(total.remote(*refs), timeout=60) == sum(i * i for i in range(200))
