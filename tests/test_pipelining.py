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


# --- tasks queued behind the task making their argument (dependent pipelining) ---

@rayfast.remote
def step(x, delay=0.0, fail_at=None):
    if delay:
        time.sleep(delay)
    if fail_at is not None and x == fail_at:
        raise ValueError(f"failed at {x}")
    return x + 1


def _chain(n, first=0, **kw):
    r = step.remote(first, **kw)
    for _ in range(n - 1):
        r = step.remote(r, **kw)
    return r


def _learn_short():
    rayfast.get([step.remote(i) for i in range(50)])
    rayfast.get(_chain(20))


def test_chain_runs_behind_its_producer(cluster):
    _learn_short()
    refs = []
    r = step.remote(0)
    for _ in range(499):
        refs.append(r)
        r = step.remote(r)
    refs.append(r)
    assert rayfast.get(refs, timeout=60) == list(range(1, 501))
    two = [_chain(200), _chain(200, first=1000)]   # two chains side by side
    assert rayfast.get(two, timeout=60) == [200, 1200]


def test_chain_error_reaches_the_end(cluster):
    _learn_short()
    end = _chain(100, fail_at=40)
    with pytest.raises(ValueError, match="failed at 40"):
        rayfast.get(end, timeout=60)


def test_cancel_running_task_fails_the_chain_behind_it(cluster):
    _learn_short()
    head = step.remote(0, delay=1.0)
    chain = [head]
    for _ in range(5):
        chain.append(step.remote(chain[-1]))
    time.sleep(0.3)   # head runs; the links behind it may be queued on its worker
    rayfast.cancel(head)
    for r in chain:
        with pytest.raises(TaskCancelledError):
            rayfast.get(r, timeout=30)


@rayfast.remote
def step_or_die(x, path, at):
    import os
    if x == at and not os.path.exists(path):
        open(path, "w").close()
        os._exit(1)   # the links queued behind it on this worker lose their argument
    return x + 1


def test_worker_death_mid_chain_refiles_the_links_behind(cluster, tmp_path):
    _learn_short()
    path = str(tmp_path / "died")
    rayfast.get([step_or_die.remote(i, path, -1) for i in range(50)])   # learned as short
    r = step_or_die.remote(0, path, 10)
    links = [r]
    for _ in range(40):
        r = step_or_die.remote(r, path, 10)
        links.append(r)
    assert rayfast.get(links, timeout=60) == list(range(1, 42))
