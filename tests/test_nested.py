"""Tasks that submit tasks and get their results; blocked workers give their CPU back."""
import os
import time

import numpy as np
import pytest

import rayfast

pytestmark = pytest.mark.usefixtures("cluster")


@rayfast.remote
def leaf(x):
    return x * 2


@rayfast.remote
def parent(n):
    return sum(rayfast.get([leaf.remote(i) for i in range(n)]))


@rayfast.remote
def fib(n):
    if n < 2:
        return n
    return sum(rayfast.get([fib.remote(n - 1), fib.remote(n - 2)]))


@rayfast.remote
def depth(n):
    if n == 0:
        return 0
    return 1 + rayfast.get(depth.remote(n - 1))


def test_task_submits_and_gets():
    assert rayfast.get(parent.remote(10), timeout=30) == 90


def test_many_parents_more_than_cpus():
    assert rayfast.get([parent.remote(5) for _ in range(6)], timeout=60) == [20] * 6


def test_recursive_fib_depth6_no_deadlock():
    assert rayfast.get(fib.remote(6), timeout=60) == 8


def test_linear_nesting_deeper_than_cpus():
    assert rayfast.get(depth.remote(8), timeout=60) == 8


def test_nested_wait_and_put():
    @rayfast.remote
    def waiter():
        refs = [leaf.remote(i) for i in range(4)]
        ready, not_ready = rayfast.wait(refs, num_returns=4, timeout=30)
        big = rayfast.put(np.ones(50_000))
        return len(ready), len(not_ready), float(rayfast.get(big).sum())

    assert rayfast.get(waiter.remote(), timeout=30) == (4, 0, 50_000.0)


def test_ref_passed_down_and_got_in_child():
    @rayfast.remote
    def child(lst):
        return rayfast.get(lst[0]) + 1

    @rayfast.remote
    def top(lst):
        return rayfast.get(child.remote(lst))

    r = rayfast.put(41)
    assert rayfast.get(top.remote([r]), timeout=30) == 42


def test_nested_result_ref_outlives_child():
    @rayfast.remote
    def make():
        return [leaf.remote(21)]

    inner = rayfast.get(make.remote(), timeout=30)
    time.sleep(0.1)
    assert rayfast.get(inner[0], timeout=30) == 42


def test_blocked_worker_returns_cpu_and_takes_it_back():
    @rayfast.remote
    def slow_leaf():
        time.sleep(0.3)
        return os.getpid()

    @rayfast.remote
    def outer():
        return rayfast.get([slow_leaf.remote() for _ in range(2)])

    # two outers occupy both CPUs and block: their four leaves must still run
    assert len(rayfast.get([outer.remote(), outer.remote()], timeout=30)) == 2
    deadline = time.time() + 5
    while rayfast.available_resources().get("CPU") != 2.0 and time.time() < deadline:
        time.sleep(0.05)
    assert rayfast.available_resources().get("CPU") == 2.0


def test_linear_nesting_deeper_than_worker_cap():
    """20 tasks each blocked on the next: more than the pool's cap of 8 workers per CPU."""
    assert rayfast.get(depth.remote(20), timeout=60) == 20
    assert rayfast.get(leaf.remote(1), timeout=30) == 2
