"""Short tasks are queued several deep on busy workers; that must never cost correctness.

A worker that blocks in get() while tasks are queued behind it hands them
back (otherwise a task waiting on one queued behind it would deadlock), and
a queued task can still be cancelled before it starts.
"""
import time

import pytest

import rayfast
from rayfast import core_worker
from rayfast.exceptions import TaskCancelledError




@rayfast.remote
def maybe_wait(refs):
    # Short when refs is empty (so the scheduler learns it is a short function),
    # then blocks on other tasks of its own kind that are queued behind it.
    return 1 + (sum(rayfast.get(refs)) if refs else 0)


def test_blocking_task_hands_back_its_queue(cluster):
    rayfast.get([maybe_wait.remote([]) for _ in range(200)])   # learned as short
    later = [maybe_wait.remote([]) for _ in range(300)]
    waiters = [maybe_wait.remote(later[i::10]) for i in range(10)]
    more = [maybe_wait.remote([]) for _ in range(300)]
    assert rayfast.get(waiters, timeout=60) == [1 + 30] * 10
    assert rayfast.get(more, timeout=60) == [1] * 300


@rayfast.remote
def short(x):
    return x


@rayfast.remote
def slow_then(x, delay):
    time.sleep(delay)
    return x


def test_results_in_order_and_complete_when_pipelined(cluster):
    rayfast.get([short.remote(i) for i in range(100)])
    refs = [short.remote(i) for i in range(20000)]
    assert rayfast.get(refs) == list(range(20000))


def test_cancel_task_queued_on_a_worker(cluster):
    rayfast.get([slow_then.remote(i, 0) for i in range(50)])   # learned as short
    refs = [slow_then.remote(i, 0.2 if i < 2 else 0) for i in range(40)]
    victim = refs[-1]
    rayfast.cancel(victim)
    with pytest.raises(TaskCancelledError):
        rayfast.get(victim, timeout=30)
    assert rayfast.get(refs[:-1], timeout=30) == list(range(39))


def test_worker_busy_state_settles(cluster):
    rayfast.get([short.remote(i) for i in range(5000)])
    deadline = time.time() + 10
    while time.time() < deadline:
        st = core_worker.current().request("statistics")
        if st["tasks_in_flight"] == 0 and st["resources_available"]["CPU"] == 2.0:
            break
        time.sleep(0.05)
    assert st["tasks_in_flight"] == 0
    assert st["resources_available"]["CPU"] == 2.0
