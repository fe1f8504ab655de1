"""get / put / wait / cancel, with Ray's semantics."""
import gc
import os
import time

import numpy as np
import pytest

import rayfast
from rayfast import ObjectRef
from rayfast.exceptions import GetTimeoutError, RayError, TaskCancelledError, WorkerCrashedError

from conftest import alive, object_count, wait_for

pytestmark = pytest.mark.usefixtures("cluster")


@rayfast.remote
def sleep_then(s, v=None):
    time.sleep(s)
    return v


@rayfast.remote
def identity(x):
    return x


@rayfast.remote
def pid_then_sleep(path, s):
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(s)
    return "finished"


# --- put / get ----------------------------------------------------------------
@pytest.mark.parametrize("value", [None, 0, -1, 2**200, -(2**100), 1.5, "s", b"b", "ü" * 10, (), [], {},
                                   (1, "a"), [1, [2, [3]]], {"a": {"b": [1, 2]}}, {1, 2, 3}, True])
def test_put_get_roundtrip(value):
    assert rayfast.get(rayfast.put(value)) == value


def test_put_unpicklable_raises():
    import threading
    with pytest.raises(Exception):
        rayfast.put(threading.Lock())
    assert rayfast.get(rayfast.put(1)) == 1


def test_put_returns_ref_and_rejects_ref():
    r = rayfast.put(1)
    assert isinstance(r, ObjectRef)
    with pytest.raises(TypeError):
        rayfast.put(r)


def test_put_numpy_small_and_large():
    small = np.arange(10, dtype=np.int32)
    out = rayfast.get(rayfast.put(small))
    assert out.dtype == np.int32 and np.array_equal(out, small)
    big = np.random.default_rng(0).random(50_000)  # 400 KB > 100 KiB: in the store
    ref = rayfast.put(big)
    out = rayfast.get(ref)
    assert np.array_equal(out, big)
    assert not out.flags.writeable  # a read-only view of shared memory
    with pytest.raises(ValueError):
        out[0] = 1.0
    big2 = np.zeros((300, 400), dtype=np.float32)
    out2 = rayfast.get(rayfast.put(big2))
    assert out2.shape == (300, 400) and out2.dtype == np.float32


def test_put_big_object_passed_to_task():
    arr = np.ones(100_000)

    @rayfast.remote
    def s(a):
        return float(a.sum())

    ref = rayfast.put(arr)
    assert rayfast.get([s.remote(ref), s.remote(ref)]) == [100_000.0, 100_000.0]


def test_put_dict_with_refs_inside():
    inner = rayfast.put(5)
    task_ref = identity.remote(6)
    outer = rayfast.put({"x": inner, "y": [task_ref]})
    del inner, task_ref
    gc.collect()
    rayfast.get(identity.remote(0))  # flush ref changes
    d = rayfast.get(outer)
    assert isinstance(d["x"], ObjectRef)
    assert rayfast.get(d["x"]) == 5
    assert rayfast.get(d["y"][0]) == 6


def test_get_list_and_tuple_and_empty():
    refs = [rayfast.put(i) for i in range(5)]
    assert rayfast.get(refs) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):   # Ray takes a ref or a list, not a tuple
        rayfast.get(tuple(refs))
    assert rayfast.get([]) == []
    assert rayfast.get([refs[0], refs[0]]) == [0, 0]


@pytest.mark.parametrize("bad", [1, "ref", None, [1, 2], {"a": 1}])
def test_get_non_refs_raises(bad):
    with pytest.raises((TypeError, ValueError)):
        rayfast.get(bad)


def test_get_timeout():
    ref = sleep_then.remote(1.0, "late")
    t = time.time()
    with pytest.raises(GetTimeoutError) as ei:
        rayfast.get(ref, timeout=0.1)
    assert isinstance(ei.value, TimeoutError)
    assert isinstance(ei.value, RayError)
    assert time.time() - t < 0.9
    with pytest.raises(TimeoutError):
        rayfast.get([ref, rayfast.put(1)], timeout=0)
    assert rayfast.get(ref, timeout=10) == "late"


def test_get_timeout_zero_on_ready():
    r = rayfast.put(3)
    assert rayfast.get(r, timeout=0) == 3


def test_timeout_zero_sees_tasks_that_finished():
    # Values come to a process once it asks for them: a zero timeout must still ask and
    # look, as Ray's get/wait(timeout=0) see a task that finished long ago.
    refs = [identity.remote(i) for i in range(20)]
    # Wait until they have all finished without the driver asking for any value: nothing left
    # at the node (queued, waiting, running) nor on the driver's leased worker.
    from rayfast import core_worker
    cw = core_worker.current()

    def all_done():
        st = cw.request("statistics")
        lease = cw.direct.lease if cw.direct is not None else None
        return (st["tasks_in_flight"] == 0 and st["tasks_queued"] == 0 and st["tasks_waiting_for_args"] == 0
                and (lease is None or lease.inflight is None))
    assert wait_for(all_done, timeout=30)
    assert rayfast.get(refs[0], timeout=0) == 0
    ready, not_ready = rayfast.wait(refs, num_returns=len(refs), timeout=0)
    assert ready == refs and not_ready == []
    assert rayfast.get(refs, timeout=0) == list(range(20))


def test_wait_timeout_zero_polling_loop_ends():
    pending = [identity.remote(i) for i in range(50)]
    deadline = time.time() + 30
    seen = []
    while pending:
        assert time.time() < deadline, "a wait(timeout=0) loop never saw the tasks finish"
        ready, pending = rayfast.wait(pending, num_returns=len(pending), timeout=0)
        seen += rayfast.get(ready)
    assert sorted(seen) == list(range(50))


def test_get_bad_timeout():
    with pytest.raises(ValueError):
        rayfast.get([rayfast.put(1)], timeout="soon")
    # as Ray: a negative timeout waits without a limit
    assert rayfast.get([rayfast.put(1)], timeout=-1) == [1]
    assert rayfast.get(rayfast.put(1), timeout=-1) == 1


def test_get_same_ref_twice_and_across_copies():
    r = identity.remote([1, 2])
    assert rayfast.get(r) == [1, 2]
    assert rayfast.get(r) == [1, 2]
    r2 = ObjectRef(r.binary())
    assert r2 == r and hash(r2) == hash(r)
    assert rayfast.get(r2) == [1, 2]


# --- wait -------------------------------------------------------------------
def test_wait_basic_num_returns():
    fast = [identity.remote(i) for i in range(3)]
    slow = sleep_then.remote(2.0)
    refs = [slow] + fast
    ready, not_ready = rayfast.wait(refs, num_returns=3, timeout=5)
    assert ready == fast  # order of the input list is kept
    assert not_ready == [slow]
    ready, not_ready = rayfast.wait(refs)
    assert len(ready) == 1 and len(not_ready) == 3
    assert ready[0] in fast


def test_wait_timeout_zero_returns_immediately():
    slow = [sleep_then.remote(1.5) for _ in range(2)]
    done = rayfast.put(1)
    t = time.time()
    ready, not_ready = rayfast.wait(slow + [done], num_returns=2, timeout=0)
    assert time.time() - t < 0.5
    assert ready == [done]
    assert not_ready == slow
    ready, not_ready = rayfast.wait(slow, timeout=0)
    assert ready == [] and not_ready == slow
    rayfast.get(slow)


def test_wait_timeout_partial():
    from rayfast.util.state import get_task
    refs = [sleep_then.remote(0.0, 1), sleep_then.remote(60.0, 2)]
    # The quick one done first (a loaded machine may take more than the 0.5 s below to run it),
    # seen from the node's task table: the driver has not asked for its value; the slow one
    # cannot end meanwhile.
    quick = refs[0].task_id().hex()
    assert wait_for(lambda: any(t.state == "FINISHED" for t in get_task(quick)), timeout=30)
    t = time.time()
    ready, not_ready = rayfast.wait(refs, num_returns=2, timeout=0.5)
    assert 0.4 < time.time() - t < 2.5
    assert ready == [refs[0]] and not_ready == [refs[1]]
    rayfast.cancel(refs[1])


def test_wait_all_order_kept():
    refs = [sleep_then.remote(0.05 * (5 - i), i) for i in range(5)]
    ready, not_ready = rayfast.wait(refs, num_returns=5)
    assert ready == refs and not_ready == []


def test_wait_errors():
    r = rayfast.put(1)
    with pytest.raises(ValueError):
        rayfast.wait([r, r])
    with pytest.raises(ValueError):
        rayfast.wait([r], num_returns=2)
    with pytest.raises((TypeError, ValueError)):
        rayfast.wait(r)
    with pytest.raises((TypeError, ValueError)):
        rayfast.wait([1])
    with pytest.raises(ValueError):
        rayfast.wait([r], num_returns=0)


def test_wait_duplicates_by_id_not_only_by_object():
    r = rayfast.put(1)
    others = [rayfast.put(i) for i in range(50)]
    with pytest.raises(ValueError, match="unique"):
        rayfast.wait(others + [ObjectRef(r.binary()), r])   # two refs, one object


def test_wait_loop_over_a_shrinking_list_sees_every_ref_once():
    """The usual `while refs: done, refs = wait(refs)` loop, with refs finishing out of order
    and more than one asked for at a time: every ref comes out once, ready ones first in the
    order given, and the rest of the list keeps its order."""
    refs = [sleep_then.remote(0.001 * (i % 7), i) for i in range(600)]
    position = {r: i for i, r in enumerate(refs)}
    seen = []
    while refs:
        ready, rest = rayfast.wait(refs, num_returns=min(3, len(refs)))
        assert len(ready) == min(3, len(refs)) and len(ready) + len(rest) == len(refs)
        assert all(position[a] < position[b] for a, b in zip(ready, ready[1:]))
        assert all(position[a] < position[b] for a, b in zip(rest, rest[1:]))
        seen += rayfast.get(ready)
        refs = rest
    assert sorted(seen) == list(range(600))


def test_wait_counts_failed_as_ready():
    @rayfast.remote
    def boom():
        raise ValueError("x")

    r = boom.remote()
    ready, _ = rayfast.wait([r], timeout=10)
    assert ready == [r]


# --- cancel -----------------------------------------------------------------
def _wait_free():
    """Wait until both CPUs are free, so the next tasks start at once."""
    assert wait_for(lambda: rayfast.available_resources().get("CPU") == 2.0, timeout=10)


def test_cancel_queued_task():
    _wait_free()
    blockers = [sleep_then.remote(1.0) for _ in range(2)]
    queued = sleep_then.remote(0.0, "ran")
    time.sleep(0.1)
    rayfast.cancel(queued)
    with pytest.raises(TaskCancelledError):
        rayfast.get(queued, timeout=10)
    rayfast.get(blockers)


def _running_task(tmp_path):
    """A task that sleeps 30 s, once it runs: (its ref, its worker's pid)."""
    _wait_free()
    path = str(tmp_path / "pid")
    ref = pid_then_sleep.remote(path, 30)
    assert wait_for(lambda: os.path.exists(path) and open(path).read(), timeout=10)
    return ref, int(open(path).read())


def test_cancel_running_task(tmp_path):
    ref, worker = _running_task(tmp_path)
    t = time.time()
    rayfast.cancel(ref)
    with pytest.raises(TaskCancelledError):
        rayfast.get(ref, timeout=10)
    assert time.time() - t < 5
    # force=False interrupts the task; the worker lives on
    time.sleep(0.2)
    assert alive(worker)
    assert rayfast.get(identity.remote(1), timeout=10) == 1


def test_cancel_running_task_force(tmp_path):
    ref, worker = _running_task(tmp_path)
    rayfast.cancel(ref, force=True)
    with pytest.raises((TaskCancelledError, WorkerCrashedError)):
        rayfast.get(ref, timeout=10)
    assert wait_for(lambda: not alive(worker), timeout=5)
    # the pool replaced the worker
    assert rayfast.get([identity.remote(i) for i in range(4)], timeout=10) == [0, 1, 2, 3]


def test_cancel_task_that_ignores_interrupt_still_reports_cancelled(tmp_path):
    _wait_free()

    @rayfast.remote
    def stubborn(path):
        with open(path, "w") as f:
            f.write("1")
        t = time.time()
        while time.time() - t < 1.0:
            try:
                time.sleep(0.05)
            except KeyboardInterrupt:
                pass
        return "done"

    path = str(tmp_path / "flag")
    ref = stubborn.remote(path)
    assert wait_for(lambda: os.path.exists(path), timeout=10)
    rayfast.cancel(ref)
    with pytest.raises(TaskCancelledError):
        rayfast.get(ref, timeout=10)


@rayfast.remote
def child_task(path, s):
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(s)
    with open(path + ".done", "w") as f:
        f.write("1")
    return 1


@rayfast.remote
def parent_task(path, s):
    return rayfast.get(child_task.remote(path, s))


def test_cancel_is_recursive_by_default(tmp_path):
    _wait_free()
    path = str(tmp_path / "child")
    ref = parent_task.remote(path, 30)
    assert wait_for(lambda: os.path.exists(path), timeout=10)
    rayfast.cancel(ref)
    with pytest.raises(TaskCancelledError):
        rayfast.get(ref, timeout=10)
    # the child was cancelled too: both CPUs come back long before it would have finished
    assert wait_for(lambda: rayfast.available_resources().get("CPU") == 2.0, timeout=5)


def test_cancel_not_recursive_leaves_child(tmp_path):
    _wait_free()
    path = str(tmp_path / "child")
    ref = parent_task.remote(path, 1.0)
    assert wait_for(lambda: os.path.exists(path), timeout=10)
    rayfast.cancel(ref, recursive=False)
    with pytest.raises(TaskCancelledError):
        rayfast.get(ref, timeout=10)
    assert wait_for(lambda: os.path.exists(path + ".done"), timeout=10)


def test_cancel_finished_task_is_noop():
    r = identity.remote(3)
    assert rayfast.get(r) == 3
    rayfast.cancel(r)
    assert rayfast.get(r) == 3


def test_cancel_non_ref():
    with pytest.raises(TypeError):
        rayfast.cancel("x")


# --- reference counting ------------------------------------------------------
def test_object_count_goes_down_after_drop():
    gc.collect()
    rayfast.get(identity.remote(0))
    base = object_count()
    refs = [rayfast.put(np.zeros(20_000)) for _ in range(5)]  # 160 KB each: store objects
    refs += [identity.remote(i) for i in range(20)]
    rayfast.get(refs)
    assert object_count() >= 25
    del refs
    gc.collect()
    rayfast.get(identity.remote(0))
    assert wait_for(lambda: object_count() <= base + 1, timeout=5), (base, object_count())


def test_store_space_reused_after_drop():
    """Many large puts, each dropped: the store must not fill up."""
    for _ in range(30):
        r = rayfast.put(np.zeros(4_000_000))  # 32 MB
        assert rayfast.get(r).shape == (4_000_000,)
        del r


# --- threads ------------------------------------------------------------------
def test_threads_submit_and_get_concurrently():
    """A result that reaches another thread before the submitter made its ref must not be lost."""
    import sys
    import threading

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # make thread switches (and the races) frequent
    try:
        for _ in range(5):
            res = {}

            def run(i):
                refs = [identity.remote((i, j)) for j in range(200)]
                try:
                    res[i] = rayfast.get(refs, timeout=10)
                except GetTimeoutError:
                    res[i] = "timeout"

            ts = [threading.Thread(target=run, args=(i,)) for i in range(4)]
            for t in ts:
                t.start()
            for t in ts:
                t.join(30)
            for i in range(4):
                assert res.get(i) == [(i, j) for j in range(200)], f"thread {i}: {str(res.get(i))[:80]}"
    finally:
        sys.setswitchinterval(old)
