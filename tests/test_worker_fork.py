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
