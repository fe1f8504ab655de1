"""Objects larger than the object store: Ray's fallback allocation.

An object that can never fit in the node's shared-memory store (larger than its
largest possible object) is kept in a file of its own in the session directory,
mapped by each process that reads it (csrc/store.c, EF_FALLBACK). Every path
that handles store objects works with it: put, task results, large arguments,
get (read-only zero-copy views), wait, actors, many readers, two nodes; it is
freed (file removed) when no longer referenced, and nothing is left at shutdown.
"""
import glob
import os
import subprocess
import time

import numpy as np
import pytest

import rayfast
from rayfast import core_worker
from rayfast.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from conftest import assert_no_leftovers, wait_for

STORE = 64 * 2**20
N = 96 * 2**20 // 8   # float64 elements: 1.5x the store


def _files(session_dir):
    """The session's fallback files (named after the store and the object id)."""
    return glob.glob(os.path.join(session_dir, "rayfast-*.*"))


def _store_stats():
    return core_worker.current().request("statistics")["store"]


@pytest.fixture(scope="module")
def small_store():
    if rayfast.is_initialized():
        rayfast.shutdown()
    ctx = rayfast.init(num_cpus=2, object_store_memory=STORE)
    yield ctx["session_dir"]
    rayfast.shutdown()
    assert_no_leftovers(ctx["session_dir"])


def _gone(session_dir):
    """Every fallback file is removed once its refs are dropped (the releases reach the
    node with the next message: the statistics request)."""
    return wait_for(lambda: _store_stats()["num_fallback"] == 0 and not _files(session_dir), timeout=10)


@rayfast.remote
def total(x):
    return float(x.sum())


@rayfast.remote
def make(n, v):
    return np.full(n, v)


@rayfast.remote
class Holder:
    def __init__(self, arr):
        self.first = float(arr[0])

    def total(self, arr):
        return self.first, float(arr.sum())

    def make(self, n):
        return np.arange(n, dtype=np.float64)


def test_put_get_is_a_read_only_view_of_a_file(small_store):
    a = np.arange(N, dtype=np.float64)
    ref = rayfast.put(a)
    assert len(_files(small_store)) == 1
    st = _store_stats()
    assert st["num_fallback"] == 1 and st["bytes_fallback"] >= a.nbytes and st["bytes_used"] < STORE
    assert "1 larger than the store in files (96.0 MiB)" in str(rayfast.summary())
    b = rayfast.get(ref)
    assert not b.flags.writeable and not b.flags.owndata
    assert np.array_equal(a, b)
    assert np.shares_memory(b, rayfast.get(ref))   # one mapping per process, no copy
    assert rayfast.wait([ref], timeout=5)[0] == [ref]
    del ref, b
    assert _gone(small_store)


def test_task_results_and_arguments(small_store):
    a = np.ones(N)
    assert rayfast.get(total.remote(a)) == N                       # a large argument, promoted
    assert rayfast.get(total.remote(make.remote(N, 2.0))) == 2 * N  # a result passed on
    r = make.remote(N, 3.0)
    assert rayfast.wait([r], timeout=30)[0] == [r]
    b = rayfast.get(r)
    assert b.shape == (N,) and b[0] == b[-1] == 3.0 and not b.flags.writeable
    del r, b
    assert _gone(small_store)


def test_actor_arguments_and_results(small_store):
    a = np.full(N, 5.0)
    h = Holder.remote(a)                                 # constructor argument
    assert rayfast.get(h.total.remote(a)) == (5.0, 5 * N)
    ref = rayfast.put(np.full(N, 7.0))
    assert rayfast.get(h.total.remote(ref)) == (5.0, 7 * N)
    b = rayfast.get(h.make.remote(N))
    assert b[-1] == N - 1
    rayfast.kill(h)
    assert b[-1] == N - 1 and rayfast.get(ref)[0] == 7.0     # acknowledged data outlives its writer
    del ref, b, h
    assert _gone(small_store)


def test_many_readers(small_store):
    ref = rayfast.put(np.full(N, 1.0))
    mine = rayfast.get(ref)
    assert rayfast.get([total.remote(ref) for _ in range(6)]) == [N] * 6
    assert mine.sum() == N and len(_files(small_store)) == 1
    del ref
    time.sleep(0.1)
    assert len(_files(small_store)) == 1 and mine[-1] == 1.0   # the driver's view keeps it
    del mine
    assert _gone(small_store)


def test_a_writer_that_dies_leaves_no_file(small_store):
    @rayfast.remote(max_retries=0)
    def put_and_die():
        rayfast.put(np.ones(N))
        os._exit(1)

    with pytest.raises(rayfast.exceptions.WorkerCrashedError):
        rayfast.get(put_and_die.remote())
    assert _gone(small_store)


def test_a_store_full_of_objects_in_use(small_store):
    """Held views of more than the store: what is spilled and read back while the rest is in
    use, and new results with no room left, go to files of their own (Ray's fallback
    allocation) instead of ObjectStoreFullError; all freed when the refs go."""
    part = STORE // 4 // 8   # float64 elements: a quarter of the store each
    refs = [rayfast.put(np.full(part, float(i))) for i in range(8)]    # twice the store: spills
    views = [rayfast.get(r) for r in refs]                              # all held at once
    assert [v[0] + v[-1] for v in views] == [2.0 * i for i in range(8)]
    made = [make.remote(part, 100.0 + i) for i in range(3)]             # no room: files too
    assert [float(x[-1]) for x in rayfast.get(made)] == [100.0, 101.0, 102.0]
    assert rayfast.get(total.remote(refs[0])) == 0.0
    assert _store_stats()["num_fallback"] >= 3
    del refs, views, made
    assert _gone(small_store)


def test_spilling_off_and_shutdown_leaves_nothing():
    if rayfast.is_initialized():
        rayfast.shutdown()
    ctx = rayfast.init(num_cpus=1, object_store_memory=STORE,
                       _system_config={"automatic_object_spilling_enabled": False})
    session_dir = ctx["session_dir"]
    refs = [rayfast.put(np.ones(N)), make.remote(N, 1.0)]
    assert rayfast.get(total.remote(refs[0])) == N and rayfast.get(refs[1])[0] == 1.0
    assert len(_files(session_dir)) == 2
    rayfast.shutdown()
    assert_no_leftovers(session_dir)


def test_two_nodes():
    """A fallback object crosses between the nodes' stores (rayfast/node/object_transfer.py)."""
    from rayfast.cluster_utils import Cluster
    if rayfast.is_initialized():
        rayfast.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": STORE})
    try:
        other = c.add_node(num_cpus=1, object_store_memory=STORE)
        c.wait_for_nodes()
        rayfast.init(address=c.address)
        there = NodeAffinitySchedulingStrategy(other.node_id, soft=False)
        ref = rayfast.put(np.full(N, 2.0))
        assert rayfast.get(total.options(scheduling_strategy=there).remote(ref)) == 2 * N
        b = rayfast.get(make.options(scheduling_strategy=there).remote(N, 4.0))
        assert b.shape == (N,) and b[-1] == 4.0
        del ref, b
        assert wait_for(lambda: _store_stats()["num_fallback"] == 0 and not _files(c.head_node.session_dir),
                        timeout=10)
        rayfast.shutdown()
    finally:
        nodes = c.list_all_nodes()
        c.shutdown()
        for n in nodes:
            assert_no_leftovers(n.session_dir, timeout=10)


def test_store_level_fallback_and_its_errors(tmp_path):
    from rayfast._core.store import ObjectStore
    name = f"/rayfast-test-fallback-{os.getpid()}"
    s = ObjectStore.create(name, 1 << 20, fallback_dir=str(tmp_path / "fb"))
    try:
        assert s.fallback_dir == str(tmp_path / "fb")
        oid = b"\1" * 20
        w = s.create_object(oid, 3 << 20)
        w[-1] = 7
        s.seal(oid)
        del w
        v = s.get(oid)
        assert len(v) == 3 << 20 and v[-1] == 7 and v.readonly
        assert os.listdir(tmp_path / "fb") == [name[1:] + "." + oid.hex()]
        s.release(oid)
        assert os.listdir(tmp_path / "fb")   # the view's pin keeps it
        del v
        assert not os.listdir(tmp_path / "fb") and s.statistics()["num_fallback"] == 0
        s.check()
    finally:
        s.unlink()
        s.close()
    (tmp_path / "not-a-dir").write_text("")
    s = ObjectStore.create(name, 1 << 20, fallback_dir=str(tmp_path / "not-a-dir"))
    try:
        with pytest.raises(OSError, match="fallback file in .*not-a-dir could not be made: Not a directory"):
            s.put_bytes(b"\2" * 20, bytes(2 << 20))
        assert s.statistics()["num_objects"] == 0
    finally:
        s.unlink()
        s.close()


def test_a_full_disk_is_out_of_disk_error(tmp_path):
    """No room in the store (all in use) nor on the disk for a fallback file: Ray's
    OutOfDiskError, for a new object and for a spilled one read back."""
    from rayfast._core.store import ObjectStore
    disk = tmp_path / "tiny"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here to fill")
    name = f"/rayfast-test-oodisk-{os.getpid()}"
    try:
        s = ObjectStore.create(name, 4 << 20, spill_dir=str(disk / "spill"), fallback_dir=str(disk / "fb"))
        try:
            for i in range(4):                      # 4 MiB in the store, 1 spilled to the disk
                s.put_bytes(bytes([i + 1]) * 20, bytes(1 << 20))
            held = [s.get(bytes([i + 1]) * 20) for i in range(1, 4)]   # what is in memory, held
            st = os.statvfs(disk)
            with open(disk / "filler", "wb") as f:   # the disk is full now
                f.write(bytes(st.f_bavail * st.f_frsize))
            with pytest.raises(rayfast.exceptions.OutOfDiskError, match="no room"):
                s.create_object(b"\x09" * 20, 1 << 20, fallback_if_full=True)
            with pytest.raises(rayfast.exceptions.OutOfDiskError, match="no room"):
                s.put_bytes(b"\x0a" * 20, bytes(8 << 20))                # larger than the store
            with pytest.raises(rayfast.exceptions.OutOfDiskError, match="no room"):
                s.get(b"\x01" * 20)                                     # spilled, nowhere to restore
            assert s.statistics()["num_fallback"] == 0
            os.unlink(disk / "filler")
            assert bytes(s.get(b"\x01" * 20)) == bytes(1 << 20)         # room on the disk again
            del held
            s.check()
        finally:
            s.unlink()
            s.close()
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)
