"""Tasks run one at a time go over a worker leased to the driver (rayfast/direct.py).

That path must be indistinguishable from the node manager's: same results,
errors, retries, cancellation, reference counting, and its results usable
by every other task.
"""
import os
import time

import numpy as np
import pytest

import rayfast
from rayfast import core_worker
from rayfast.exceptions import TaskCancelledError, WorkerCrashedError

from conftest import wait_for




def _lease():
    cw = core_worker.current()
    deadline = time.monotonic() + 30   # a deadline, not a count of tries: a loaded node grants late
    while time.monotonic() < deadline:   # the first calls ask for the lease; it comes with a later reply
        if cw.direct.lease is not None:
            return cw.direct.lease
        rayfast.get(ident.remote(0))
        time.sleep(0.001)
    raise AssertionError("no lease was granted")


@rayfast.remote
def ident(x):
    return x


@rayfast.remote
def add(a, b):
    return a + b


@rayfast.remote
def total(refs):
    return sum(rayfast.get(refs))


@rayfast.remote
def pid():
    return os.getpid()


@rayfast.remote
def die_once(marker):
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return "survived"


@rayfast.remote(max_retries=0)
def die():
    os._exit(1)


@rayfast.remote
def sleep(s):
    time.sleep(s)
    return s


@rayfast.remote
def sleep_marked(path, s):
    open(path, "w").close()
    time.sleep(s)
    return s


@rayfast.remote
def big(n):
    return np.arange(n, dtype=np.int64)


def test_lone_calls_use_the_lease(cluster):
    lease = _lease()
    assert [rayfast.get(ident.remote(i)) for i in range(100)] == list(range(100))
    assert rayfast.get(pid.remote()) == lease.pid
    st = core_worker.current().request("statistics")
    assert st["leases"] == 1
    assert st["resources_available"]["CPU"] == 2.0   # a lent worker counts as free


def test_direct_results_feed_other_tasks(cluster):
    _lease()
    a = ident.remote(20)
    assert rayfast.get(a) == 20
    b = add.remote(a, 22)                       # top-level ref: inlined by the driver
    assert rayfast.get(b) == 42
    c = total.remote([a, b])                    # nested refs: resolved through the node
    assert rayfast.get(c) == 62
    refs = [add.remote(a, i) for i in range(50)]   # a burst: through the node manager
    assert rayfast.get(refs) == [20 + i for i in range(50)]


def test_a_leased_result_another_task_waits_for_is_reported_at_once(cluster, monkeypatch):
    # The report of a leased task may wait for company (LATER_DELAY), but not while the driver
    # waits for the node manager: the task there may need that result (here: for 30 s).
    monkeypatch.setattr(core_worker, "LATER_DELAY", 30.0)
    _lease()
    for i in range(5):
        a = sleep.remote(0.05)          # a lone call: on the lease
        b = add.remote(a, 1)            # the lease is busy: through the node manager, waiting for a
        assert rayfast.get(b, timeout=10) == 1.05


def test_large_results_over_the_lease(cluster):
    _lease()
    r = big.remote(1_000_000)
    arr = rayfast.get(r)
    assert arr[-1] == 999_999 and not arr.flags.writeable
    assert rayfast.get(total.remote([ident.remote(5)])) == 5
    del arr, r


def test_worker_death_is_retried(cluster, tmp_path):
    _lease()
    assert rayfast.get(die_once.remote(str(tmp_path / "m")), timeout=30) == "survived"


def test_worker_death_without_retries(cluster):
    _lease()
    with pytest.raises(WorkerCrashedError):
        rayfast.get(die.remote(), timeout=30)
    assert rayfast.get(ident.remote(7), timeout=30) == 7


@pytest.mark.parametrize("force", [False, True])
def test_cancel_over_the_lease(cluster, force):
    lease = _lease()
    r = sleep.remote(30)
    assert lease.inflight is not None           # it went over the lease
    time.sleep(0.2)
    rayfast.cancel(r, force=force)
    with pytest.raises(TaskCancelledError):
        rayfast.get(r, timeout=30)
    assert rayfast.get(ident.remote(1), timeout=30) == 1


def test_bulk_work_calls_the_lease_back(cluster):
    _lease()
    refs = [sleep.remote(0.002) for _ in range(400)]
    assert len(rayfast.get(refs, timeout=60)) == 400
    cw = core_worker.current()
    deadline = time.time() + 10
    while time.time() < deadline and cw.direct.lease is not None:
        rayfast.get(ident.remote(0))   # lets the driver read the revoke
        time.sleep(0.01)
        if not cw.direct.lease or cw.direct.lease.revoked:
            break
    # Bursts until one runs on both workers: a worker an earlier test killed may still be starting
    # on a loaded machine, and the one up can run a whole burst of such brief tasks meanwhile
    # (seen). A lease never called back would keep its worker out of every burst.
    def both():
        return len(set(rayfast.get([pid.remote() for _ in range(200)], timeout=60))) == 2
    assert wait_for(both, timeout=30), ("both workers should have run the burst", cw.request("statistics")["workers"])


def test_direct_objects_are_freed(cluster):
    _lease()
    cw = core_worker.current()
    before = cw.request("statistics")["objects"]["objects"]
    for i in range(300):
        rayfast.get(ident.remote(i))

    def count():
        rayfast.get(ident.remote(0))   # carries the releases still on their way
        return cw.request("statistics")["objects"]["objects"]
    assert wait_for(lambda: count() <= before + 5, timeout=20), (before, count())


def test_timeline_and_summary_count_direct_tasks(cluster):
    _lease()
    for i in range(20):
        rayfast.get(pid.remote())
    names = [e["name"] for e in rayfast.timeline() if e.get("ph") == "X"]
    assert sum(1 for n in names if n.endswith(".pid")) >= 20


def test_force_cancel_is_both_cancelled_and_crashed(cluster, tmp_path):
    # Ray documents WorkerCrashedError after cancel(force=True) of a running task,
    # and TaskCancelledError for cancelled tasks: code written for either must work.
    for via_lease in (True, False):
        marker = str(tmp_path / f"running-{via_lease}")
        if via_lease:
            _lease()
            r = sleep_marked.remote(marker, 30)
        else:
            r = sleep_marked.options(num_cpus=2).remote(marker, 30)   # not the lease's shape: through the node
        # once it runs: a task force-cancelled before it started is only cancelled (no worker crashed)
        assert wait_for(lambda: os.path.exists(marker), timeout=30)
        rayfast.cancel(r, force=True)
        with pytest.raises(WorkerCrashedError) as info:
            rayfast.get(r, timeout=30)
        assert isinstance(info.value, TaskCancelledError)


def test_threads_sharing_the_lease(cluster):
    import threading
    _lease()
    errors = []

    def run(k):
        try:
            for i in range(200):
                assert rayfast.get(ident.remote((k, i)), timeout=30) == (k, i)
        except Exception as e:   # reported below
            errors.append(repr(e))
    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
