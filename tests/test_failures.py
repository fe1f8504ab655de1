"""Workers that die mid-task: retried up to max_retries, then WorkerCrashedError; the pool recovers."""
import os
import signal
import time

import pytest

import rayfast
from rayfast.exceptions import RayTaskError, WorkerCrashedError

from conftest import alive, wait_for

pytestmark = pytest.mark.usefixtures("cluster")


@rayfast.remote
def identity(x):
    return x


def _count_attempts(path):
    try:
        with open(path) as f:
            return len(f.read().split())
    except OSError:
        return 0


@rayfast.remote
def exit_hard(path, times):
    """os._exit the first `times` attempts (counted in a file), then succeed."""
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    if _count_attempts(path) <= times:
        os._exit(1)
    return "survived"


@rayfast.remote
def sigkill_self(path, times):
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    if _count_attempts(path) <= times:
        os.kill(os.getpid(), signal.SIGKILL)
    return "survived"


@pytest.mark.parametrize("killer", [exit_hard, sigkill_self], ids=["os._exit", "SIGKILL"])
def test_crash_without_retries(tmp_path, killer):
    path = str(tmp_path / "attempts")
    ref = killer.options(max_retries=0).remote(path, 100)
    with pytest.raises(WorkerCrashedError):
        rayfast.get(ref, timeout=30)
    assert _count_attempts(path) == 1
    # the pool replaced the dead worker
    assert rayfast.get([identity.remote(i) for i in range(6)], timeout=30) == list(range(6))


@pytest.mark.parametrize("killer", [exit_hard, sigkill_self], ids=["os._exit", "SIGKILL"])
def test_crash_with_retries_left_succeeds(tmp_path, killer):
    path = str(tmp_path / "attempts")
    ref = killer.options(max_retries=2).remote(path, 2)
    assert rayfast.get(ref, timeout=30) == "survived"
    assert _count_attempts(path) == 3


@pytest.mark.parametrize("killer", [exit_hard, sigkill_self], ids=["os._exit", "SIGKILL"])
def test_crash_exhausts_retries(tmp_path, killer):
    path = str(tmp_path / "attempts")
    ref = killer.options(max_retries=2).remote(path, 100)
    with pytest.raises(WorkerCrashedError):
        rayfast.get(ref, timeout=30)
    assert _count_attempts(path) == 3


def test_default_max_retries_is_three(tmp_path):
    path = str(tmp_path / "attempts")
    with pytest.raises(WorkerCrashedError):
        rayfast.get(exit_hard.remote(path, 100), timeout=30)
    assert _count_attempts(path) == 4


def test_killed_from_outside_mid_task(tmp_path):
    @rayfast.remote(max_retries=0)
    def long_task(path):
        with open(path, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(60)

    path = str(tmp_path / "pid")
    ref = long_task.remote(path)
    assert wait_for(lambda: os.path.exists(path) and open(path).read(), timeout=10)
    pid = int(open(path).read())
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(WorkerCrashedError):
        rayfast.get(ref, timeout=30)
    assert rayfast.get(identity.remote(1), timeout=30) == 1


def test_crash_error_propagates_to_dependents(tmp_path):
    path = str(tmp_path / "attempts")
    bad = exit_hard.options(max_retries=0).remote(path, 100)
    dep = identity.remote(bad)
    with pytest.raises(WorkerCrashedError):
        rayfast.get(dep, timeout=30)


def test_application_errors_are_not_retried(tmp_path):
    @rayfast.remote(max_retries=3)
    def raises(path):
        with open(path, "a") as f:
            f.write("x\n")
        raise ValueError("app error")

    path = str(tmp_path / "attempts")
    with pytest.raises(ValueError):
        rayfast.get(raises.remote(path), timeout=30)
    assert _count_attempts(path) == 1


def test_many_crashes_pool_recovers(tmp_path):
    refs = [exit_hard.options(max_retries=0).remote(str(tmp_path / f"a{i}"), 100) for i in range(6)]
    for r in refs:
        with pytest.raises(WorkerCrashedError):
            rayfast.get(r, timeout=30)
    assert rayfast.get([identity.remote(i) for i in range(20)], timeout=30) == list(range(20))
    assert wait_for(lambda: rayfast.available_resources().get("CPU") == 2.0, timeout=10)


def test_worker_killed_while_idle_is_replaced():
    @rayfast.remote
    def pid():
        return os.getpid()

    pids = set(rayfast.get([pid.remote() for _ in range(10)]))
    for p in pids:
        os.kill(p, signal.SIGKILL)
    assert wait_for(lambda: not any(alive(p) for p in pids), timeout=5)
    assert rayfast.get([identity.remote(i) for i in range(10)], timeout=30) == list(range(10))


def test_a_retried_result_replaces_one_a_dead_attempt_stored():
    # An attempt that died after storing a large result, before anyone heard of it, left the
    # object behind; the retry's result (same id) replaces it instead of failing to store.
    import numpy as np
    from rayfast import core_worker, serialization
    from rayfast import protocol as P
    from rayfast._core.store import ObjectExistsError

    cw = core_worker.current()
    key = P.return_id(cw.next_task_id().binary(), 1)
    _, first, _ = serialization.serialize(np.ones(50_000), 0)
    _, second, _ = serialization.serialize(np.full(50_000, 2.0), 0)
    cw.write_to_store(key, first)
    with pytest.raises(ObjectExistsError):   # puts never replace
        cw.write_to_store(key, second)
    cw.write_to_store(key, second, replace=True)
    assert float(serialization.deserialize_view(cw.store.get(key, 5.0)).sum()) == 100_000.0
    cw.store.delete(key)


class ClashingError(KeyError, FileExistsError):
    """Bases whose C layouts clash: no class can derive from both it and RayTaskError."""


@rayfast.remote(max_retries=0)
def raise_clashing():
    raise ClashingError("both a KeyError and an OSError")


def test_error_whose_class_cannot_be_mixed_in_still_reaches_get():
    with pytest.raises(RayTaskError, match="both a KeyError and an OSError"):
        rayfast.get(raise_clashing.remote())
