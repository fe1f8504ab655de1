"""The node manager's loop collects reference cycles itself (when idle); its workers keep Python's collector."""
import gc
import os
import time

import numpy as np
import pytest

import rayfast as ray
from conftest import wait_for
from rayfast import protocol as P, serialization
from rayfast.exceptions import WorkerCrashedError
from rayfast.node.manager import NodeManager


class _Cycle:
    def __init__(self):
        self.me = self


def test_collect_garbage_collects_cycles_above_least():
    was = gc.isenabled()
    gc.disable()
    try:
        gc.collect()
        for _ in range(100):
            _Cycle()
        NodeManager._collect_garbage(10_000)    # too few new objects: nothing collected
        assert sum(isinstance(o, _Cycle) for o in gc.get_objects()) == 100
        NodeManager._collect_garbage(10)
        assert not any(isinstance(o, _Cycle) for o in gc.get_objects())
    finally:
        if was:
            gc.enable()


def test_workers_collect_cycles(cluster):
    """Workers forked by the running loop (replacing dead ones) too."""
    @ray.remote(max_retries=0)
    def die():
        time.sleep(0.2)
        os._exit(1)

    @ray.remote
    def collector():
        time.sleep(0.2)
        return os.getpid(), gc.isenabled(), gc.get_threshold()[0] > 0

    first = {pid for pid, _, _ in ray.get([collector.remote() for _ in range(2)])}
    for ref in [die.remote() for _ in range(2)]:   # both run at once: both workers are replaced
        with pytest.raises(WorkerCrashedError):
            ray.get(ref)
    got = ray.get([collector.remote() for _ in range(2)])
    assert not first & {pid for pid, _, _ in got}
    assert all(enabled and threshold for _, enabled, threshold in got)


def _store_stats():
    from rayfast import core_worker
    return core_worker.current().request("statistics")["store"]


@pytest.mark.parametrize("retries", [0, 1])
def test_objects_of_a_worker_that_died_before_announcing_them_are_deleted(cluster, tmp_path, retries):
    """A put is announced with the worker's next frame; a worker that dies first (here at once)
    leaves a sealed object nobody can name. So does a result stored just before the death.
    The node deletes both when the worker is gone (a retry stores its result again)."""
    marker = str(tmp_path / "died")

    @ray.remote(max_retries=retries)
    def put_then_die(n):
        ray.put(np.ones(n))                       # store-sized: not inline
        if not os.path.exists(marker):
            open(marker, "w").close()
            from rayfast import core_worker
            cw = core_worker.current()
            result = P.return_ids(cw.current_task_id.binary(), 1)[0]
            cw.write_to_store(result, serialization.serialize(np.ones(n), 0)[1])
            os._exit(1)
        return n

    used = _store_stats()["bytes_used"]
    ref = put_then_die.remote(200_000)
    if retries:
        assert ray.get(ref) == 200_000
    else:
        with pytest.raises(WorkerCrashedError):
            ray.get(ref)
    del ref
    assert wait_for(lambda: _store_stats()["bytes_used"] <= used, timeout=10), (used, _store_stats())
