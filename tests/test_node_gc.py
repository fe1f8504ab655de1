"""The node manager's loop collects reference cycles itself (when idle); its workers keep Python's collector."""
import gc
import os
import time

import pytest

import rayfast as ray
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
