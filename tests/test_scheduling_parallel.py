"""Two 1-CPU tasks submitted together on a 2-CPU node run at the same time, as in Ray.

The node queues tasks of functions that have run briefly behind a busy worker
(pipelining). That must never serialise tasks while a CPU is to be had: lent
to the driver's lease, or free while a worker is being forked. CI once ran a
0.3 s task after a 0.8 s one on one worker: the function had looked brief (its
earlier runs were cancelled at once) and the driver had been granted a lease
between the two submissions.
"""
import os
import time

import pytest

import rayfast
from rayfast import core_worker, exceptions


@rayfast.remote
def nap(seconds, me=None, other=None):
    """Sleep; given two marker paths, first mark that this one runs and wait (up to 30 s) for
    the other to: whether they met says they ran side by side, however slow a loaded machine
    is to start them."""
    start = time.time()
    met = None
    if me is not None:
        open(me, "w").close()
        deadline = time.monotonic() + 30
        while not os.path.exists(other) and time.monotonic() < deadline:
            time.sleep(0.005)
        met = os.path.exists(other)
    time.sleep(seconds)
    return os.getpid(), start, time.time(), met


def _learn_brief():
    """Make nap look like a brief function to the node, so that it may be pipelined."""
    rayfast.get([nap.remote(0) for _ in range(3000)], timeout=120)
    summary = core_worker.current().request("summary")
    row = next(v for k, v in summary.items() if k.endswith(".nap"))
    assert row["mean_run_s"] < 0.001, row


def _pair(tmp_path, seconds):
    """Two naps that wait for each other to start (see nap)."""
    ma, mb = str(tmp_path / "a"), str(tmp_path / "b")
    for m in (ma, mb):
        if os.path.exists(m):
            os.unlink(m)
    return (lambda: nap.remote(seconds, ma, mb)), (lambda: nap.remote(seconds, mb, ma))


def _assert_overlap(a, b):
    (pid_a, start_a, end_a, met_a), (pid_b, start_b, end_b, met_b) = rayfast.get([a, b], timeout=90)
    # each saw the other start while it waited: they ran side by side (so on two workers);
    # one queued behind the other would have waited its 30 s in vain
    assert met_a and met_b, (met_a, met_b, end_a - start_a, start_b - start_a)
    assert pid_a != pid_b


def test_lease_granted_between_submissions_does_not_serialise(cluster, tmp_path):
    for _ in range(3):
        _learn_brief()   # (a burst: the driver holds no lease afterwards)
        first, second = _pair(tmp_path, 1.0)
        a = first()            # a lone call: the driver asks for a lease, which the node grants
        time.sleep(0.05)       # ... while the driver reads nothing
        b = second()           # through the node: the other CPU is lent to that lease
        _assert_overlap(a, b)


def test_worker_being_replaced_does_not_serialise(cluster, tmp_path):
    for _ in range(3):
        _learn_brief()
        doomed = [nap.remote(30), nap.remote(30)]
        time.sleep(0.2)
        for ref in doomed:     # kills both workers: the node forks replacements
            rayfast.cancel(ref, force=True)
        for ref in doomed:
            with pytest.raises(exceptions.TaskCancelledError):
                rayfast.get(ref, timeout=30)
        first, second = _pair(tmp_path, 1.0)
        _assert_overlap(first(), second())


@rayfast.remote
def doze(seconds):
    time.sleep(seconds)


def test_runs_cut_short_by_cancel_do_not_make_a_function_look_brief(cluster):
    from rayfast.util.state import list_tasks

    for _ in range(5):
        ref = doze.remote(30)
        assert _wait(lambda: any(t.state == "RUNNING" for t in list_tasks(
            filters=[("func_or_class_name", "=", doze._name), ("state", "=", "RUNNING")])))
        rayfast.cancel(ref)
        with pytest.raises((exceptions.TaskCancelledError, exceptions.RayTaskError)):
            rayfast.get(ref, timeout=30)
    summary = core_worker.current().request("summary")
    row = next((v for k, v in summary.items() if k.endswith(".doze")), {})
    assert row.get("finished", 0) == 0, row   # cancelled, not finished: no run time to learn from


def _wait(pred, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return False
