"""A forked child does not inherit its parent's CoreWorker (core_worker forgets it at the fork)."""
import os

import rayfast
from rayfast import core_worker
from rayfast.exceptions import RaySystemError


def test_forked_child_has_no_core_worker(fresh):
    rayfast.init(num_cpus=1)
    try:
        assert core_worker.current() is not None
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                core_worker.current()
                code = b"had the parent's"
            except RaySystemError:
                code = b"ok" if not rayfast.is_initialized() else b"initialized"
            os.write(w, code)
            os._exit(0)
        os.close(w)
        assert os.read(r, 100) == b"ok"
        os.waitpid(pid, 0)
        assert core_worker.current() is not None   # the parent's is untouched
        assert rayfast.get(rayfast.put(3)) == 3
    finally:
        rayfast.shutdown()


def test_new_workers_collector_skips_what_the_node_manager_holds(fresh):
    """Workers are forked from the node manager; its tables grow with the session. A new
    worker's collector must not walk them (time in every new worker, and a copy of every
    page it touches): they are frozen across the fork."""
    import gc

    rayfast.init(num_cpus=1)
    try:
        @rayfast.remote
        class Probe:
            def tracked(self):
                gc.collect()
                return len(gc.get_objects())

        baseline = rayfast.get(Probe.remote().tracked.remote())
        refs = [rayfast.put(i) for i in range(30_000)]     # 30k entries in the node's object table
        rayfast.get(rayfast.put(0))
        assert rayfast.get(Probe.remote().tracked.remote()) < baseline + 5_000
        del refs
    finally:
        rayfast.shutdown()
