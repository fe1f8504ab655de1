"""Tests of the node's shared-memory object store (rayfast._core.store)."""
import ctypes
import gc
import itertools
import multiprocessing as mp
import os
import signal
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rayfast
from conftest import run_driver, wait_for
from rayfast._core.store import ObjectExistsError, ObjectStore, copy_statistics, memcpy_bandwidth, write_into
from rayfast.exceptions import GetTimeoutError, ObjectStoreFullError

MiB = 1 << 20
PREFIX = f"/rayfast-test-{os.getpid()}-"
_counter = itertools.count()


def seg_name():
    return f"{PREFIX}{next(_counter)}"


def oid(i):
    return i.to_bytes(4, "little") + b"rayfast-test-oid"


class Stores:
    """Creates stores and always unlinks and closes them."""

    def __init__(self):
        self.stores = []

    def new(self, capacity=4 * MiB, spill_dir=None, **kw):
        s = ObjectStore.create(seg_name(), capacity, spill_dir, **kw)
        self.stores.append(s)
        return s

    def cleanup(self):
        for s in self.stores:
            if not s.closed:
                s.unlink()
                s.close()


@pytest.fixture
def stores():
    st_ = Stores()
    yield st_
    st_.cleanup()


@pytest.fixture
def store(stores):
    return stores.new()


@pytest.fixture(scope="module", autouse=True)
def no_leftover_segments():
    yield
    gc.collect()
    left = [f for f in os.listdir("/dev/shm") if ("/" + f).startswith(PREFIX)]
    assert not left, f"segments left in /dev/shm: {left}"


def addr(view):
    return np.frombuffer(view, dtype=np.uint8).__array_interface__["data"][0]


# ----------------------------------------------------------------- basics


def test_put_get_roundtrip(store):
    o = oid(1)
    store.put_bytes(o, b"hello world")
    assert store.contains(o) and o in store
    assert store.size_of(o) == 11
    assert bytes(store.get(o)) == b"hello world"
    assert store.list_objects() == [o]


def test_create_write_seal(store):
    o = oid(2)
    mv = store.create_object(o, 100)
    assert not mv.readonly and len(mv) == 100
    assert not store.contains(o)
    mv[:] = bytes(range(100))
    store.seal(o)
    assert store.contains(o)
    assert bytes(store.get(o)) == bytes(range(100))
    with pytest.raises(ValueError):
        mv[0]  # released by seal(): the writer cannot touch a sealed object


def test_abort(store):
    o = oid(3)
    mv = store.create_object(o, 1000)
    mv[:3] = b"abc"
    store.abort(o)
    assert not store.contains(o)
    with pytest.raises(KeyError):
        store.get(o, timeout=0)
    assert store.statistics()["bytes_used"] == 0
    store.put_bytes(o, b"again")  # the id can be reused
    assert bytes(store.get(o)) == b"again"


def test_zero_size_object(store):
    o = oid(4)
    store.put_bytes(o, b"")
    assert bytes(store.get(o)) == b""
    assert store.size_of(o) == 0


def test_put_bytes_any_buffer(store):
    a = np.arange(1000, dtype=np.float64)
    store.put_bytes(oid(5), a)
    store.put_bytes(oid(6), bytearray(b"xyz"))
    store.put_bytes(oid(7), memoryview(b"0123456789")[::2])  # not contiguous: copied once
    assert np.array_equal(np.frombuffer(store.get(oid(5)), dtype=np.float64), a)
    assert bytes(store.get(oid(6))) == b"xyz"
    assert bytes(store.get(oid(7))) == b"02468"


# ---------------------------------------------------------------- zero copy


def test_zero_copy_numpy(store):
    a = np.random.default_rng(0).random(10000)
    o = oid(10)
    store.put_bytes(o, a)
    v1 = store.get(o)
    v2 = store.get(o)
    assert v1.readonly and v2.readonly
    assert addr(v1) == addr(v2)  # two gets: views of the same memory
    assert addr(v1) % 64 == 0
    arr = np.frombuffer(v1, dtype=np.float64)
    assert np.array_equal(arr, a)
    assert not arr.flags.owndata and not arr.flags.writeable
    base = arr.base
    while base is not None and not isinstance(base, memoryview):
        assert not getattr(base, "flags", None) or not base.flags.owndata
        base = base.base
    assert isinstance(base, memoryview) and base.obj is not None
    with pytest.raises(ValueError):
        arr[0] = 1.0
    with pytest.raises(TypeError):
        v1[0] = 1
    with pytest.raises(TypeError):
        (ctypes.c_char * len(v1)).from_buffer(v1)  # no writable export, not even via the exporter
    with pytest.raises(TypeError):
        (ctypes.c_char * len(v1)).from_buffer(v1.obj)
    with pytest.raises(ValueError):
        np.frombuffer(v1, dtype=np.uint8).setflags(write=True)
    # views are of the segment, not a copy: a write through the writer's view before
    # seal is what readers see afterwards
    o2 = oid(11)
    w = store.create_object(o2, 8)
    w[:] = b"ABCDEFGH"
    store.seal(o2)
    assert bytes(store.get(o2)) == b"ABCDEFGH"


def test_pin_keeps_object_across_release(store):
    o = oid(20)
    store.put_bytes(o, b"x" * 100000)
    view = store.get(o)
    arr = np.frombuffer(view[10:], dtype=np.uint8)  # a slice and an array on it also pin
    del view
    store.release(o)
    s = store.statistics()
    assert s["num_objects"] == 1 and s["num_pinned"] == 1
    # fill the store: the pinned object must survive
    with pytest.raises(ObjectStoreFullError):
        for i in range(200):
            store.put_bytes(oid(1000 + i), b"y" * 50000)
    assert (arr == ord("x")).all()
    del arr
    gc.collect()
    s = store.statistics()
    assert s["num_pinned"] == 0
    assert o not in store.list_objects()


def test_delete_pinned(store):
    o = oid(21)
    store.put_bytes(o, b"z" * 1000)
    v = store.get(o)
    store.delete(o)
    assert not store.contains(o)
    assert bytes(v[:3]) == b"zzz"  # still readable: freed when the view goes
    store.put_bytes(o, b"new")  # the id is free again
    assert bytes(store.get(o)) == b"new"
    del v
    gc.collect()
    assert store.statistics()["num_objects"] == 1


def test_views_survive_close(stores):
    s = stores.new()
    o = oid(22)
    s.put_bytes(o, b"abc" * 100)
    v = s.get(o)
    s.unlink()
    s.close()
    s.close()  # idempotent
    assert bytes(v[:3]) == b"abc"
    with pytest.raises(ValueError):
        s.get(o)


# ---------------------------------------------------------------- waiting


def test_get_timeout_on_unsealed(store):
    o = oid(30)
    store.create_object(o, 10)
    t = time.monotonic()
    with pytest.raises(TimeoutError):
        store.get(o, timeout=0)
    assert time.monotonic() - t < 0.5    # at once (not the 2 s wait below), with room for a loaded machine
    t = time.monotonic()
    with pytest.raises(GetTimeoutError):
        store.get(o, timeout=2.0)
    assert 1.99 < time.monotonic() - t < 10
    with pytest.raises(KeyError):
        store.get(oid(31), timeout=1)  # unknown: no wait


def test_get_wakes_on_seal(store):
    o = oid(32)
    mv = store.create_object(o, 4)

    def writer():
        time.sleep(0.2)
        mv[:] = b"done"
        store.seal(o)

    t = threading.Thread(target=writer)
    t0 = time.monotonic()
    t.start()
    v = store.get(o, timeout=10)
    assert bytes(v) == b"done"
    assert time.monotonic() - t0 < 2
    t.join()


def _child_reader(name, o, q):
    s = ObjectStore.attach(name)
    v = s.get(o, timeout=10)
    q.put(bytes(v[:16]) + len(v).to_bytes(8, "little"))
    o2 = b"\x01" * 20
    mv = s.create_object(o2, 5)
    mv[:] = b"child"
    s.seal(o2)
    del v
    s.close()


def test_get_from_second_process(store):
    o = oid(40)
    data = os.urandom(1 << 20)
    store.put_bytes(o, data)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child_reader, args=(store.name, o, q))
    p.start()
    got = q.get(timeout=30)
    p.join(30)
    assert p.exitcode == 0
    assert got == data[:16] + len(data).to_bytes(8, "little")
    assert bytes(store.get(b"\x01" * 20, timeout=5)) == b"child"
    assert store.statistics()["num_pinned"] == 0  # the child's pins went with its views


def _child_waiter(name, o, q):
    s = ObjectStore.attach(name)
    q.put(bytes(s.get(o, timeout=20)))


def test_cross_process_wait_for_seal(store):
    o = oid(41)
    mv = store.create_object(o, 3)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child_waiter, args=(store.name, o, q))
    p.start()
    time.sleep(0.2)
    mv[:] = b"yes"
    store.seal(o)
    assert q.get(timeout=20) == b"yes"
    p.join(20)
    assert p.exitcode == 0


def _child_crashes_holding(name, o, unsealed):
    s = ObjectStore.attach(name)
    views = [s.get(o), s.get(o), s.create_object(unsealed, MiB)]  # noqa: F841 (held when it dies)
    os._exit(1)


def test_release_process_of_a_crashed_process(stores):
    """Pins and unsealed objects of a process that died are given back by release_process."""
    s = stores.new(4 * MiB)
    o, unsealed = oid(60), oid(61)
    s.put_bytes(o, b"\3" * (2 * MiB))
    p = mp.get_context("fork").Process(target=_child_crashes_holding, args=(s.name, o, unsealed))
    p.start()
    p.join(30)
    assert p.exitcode == 1
    s.release(o)  # refcount 0: only the dead child's pins keep it
    st_ = s.statistics()
    assert st_["num_pinned"] == 2 and st_["num_objects"] == 2
    s.check()
    # 2 get pins + the writable view's pin on the unsealed object; and that object
    assert s.release_process(p.pid) == (3, 1)
    st_ = s.statistics()
    assert st_["num_pinned"] == 0 and st_["num_objects"] == 0 and st_["bytes_used"] == 0
    assert st_["pins_reclaimed"] == 3 and st_["objects_reclaimed"] == 1
    s.put_bytes(oid(62), b"\4" * (2 * MiB))
    s.put_bytes(unsealed, b"again")   # the id is free again
    assert s.release_process(p.pid) == (0, 0)
    with pytest.raises(ValueError, match="pid"):
        s.release_process(0)
    s.check()


def test_full_store_reclaims_what_dead_processes_hold(stores):
    """Nobody calls release_process for the dead child: the store does it when full."""
    s = stores.new(4 * MiB)
    o, unsealed = oid(63), oid(64)
    s.put_bytes(o, b"\3" * (2 * MiB))
    p = mp.get_context("fork").Process(target=_child_crashes_holding, args=(s.name, o, unsealed))
    p.start()
    p.join(30)
    s.release(o)
    s.put_bytes(oid(65), b"\4" * (3 * MiB))   # needs the dead child's memory
    st_ = s.statistics()
    assert st_["num_pinned"] == 0 and st_["num_objects"] == 1
    assert st_["pins_reclaimed"] == 3 and st_["objects_reclaimed"] == 1
    s.check()


def _store_stats():
    from rayfast import core_worker
    return core_worker.current().store.statistics()


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_crashed_worker_leaves_no_pins(fresh, how):
    """A worker that dies holding a view of its argument and an unsealed object: the node
    gives both back, so the store fills again with spilling off and the id can be written
    again (as a retry of the task would)."""
    from rayfast.exceptions import WorkerCrashedError
    rayfast.init(num_cpus=1, object_store_memory=64 * MiB,
                 _system_config={"automatic_object_spilling_enabled": False})

    @rayfast.remote(max_retries=0)
    def pin_and_die(a, how):
        from rayfast import core_worker
        w = core_worker.current().store.create_object(b"\xee" * 20, 8 * MiB)  # noqa: F841
        if how == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(1)

    for i in range(3):   # each round needs the memory and the object id of the one before
        ref = rayfast.put(np.ones(5 * MiB))   # 40 MiB of 64
        with pytest.raises(WorkerCrashedError):
            rayfast.get(pin_and_die.remote(ref, how))
        del ref
        assert wait_for(lambda: _store_stats()["objects_reclaimed"] == i + 1), _store_stats()
    st_ = _store_stats()
    assert st_["num_pinned"] == 0 and st_["pins_reclaimed"] >= 3, st_


def test_killed_driver_leaves_no_pins(fresh):
    """A second driver SIGKILLed while it reads a large object: once its process is gone
    the node gives its pins back and the object, released by everyone, is freed."""
    ctx = rayfast.init(num_cpus=1, object_store_memory=64 * MiB,
                       _system_config={"automatic_object_spilling_enabled": False})
    ref = rayfast.put(np.ones(5 * MiB))
    p = run_driver(f"""
        import os, signal, rayfast
        from rayfast import ObjectRef
        rayfast.init(address="{ctx['address']}")
        a = rayfast.get(ObjectRef(bytes.fromhex("{ref.hex()}")))
        assert a[-1] == 1.0
        os.kill(os.getpid(), signal.SIGKILL)
        """)
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert wait_for(lambda: _store_stats()["pins_reclaimed"] == 1), _store_stats()   # the node saw it go
    assert _store_stats()["num_pinned"] == 0
    del ref
    big = rayfast.put(np.ones(5 * MiB))   # 40 + 40 MiB do not fit in 64: the first one is gone
    assert rayfast.get(big)[-1] == 1.0
    assert _store_stats()["num_objects"] == 1


@pytest.mark.parametrize("make", [
    lambda: np.asfortranarray(np.arange(60_000.0).reshape(200, 300)),     # Fortran order
    lambda: np.arange(40_000).astype("datetime64[ns]"),                    # no buffer export
    lambda: np.arange(40_000, dtype=">i8"),                                # non-native byte order
    lambda: np.zeros(5, dtype=[("a", "f8"), ("b", "i4")]).repeat(8000),    # structured
], ids=["fortran", "datetime64", "big-endian", "structured"])
def test_lone_array_layout_any_contiguous_array(store, make):
    """A lone large ndarray skips pickle whatever its order or dtype, and reads back equal."""
    from rayfast import serialization
    a = make()
    inline, parts, _ = serialization.serialize(a, 1024)
    assert inline is None
    buf = store.create_object(oid(70), parts[3])
    serialization.write_parts(buf, parts)
    store.seal(oid(70))
    b = serialization.deserialize_view(store.get(oid(70)))
    assert b.dtype == a.dtype and b.shape == a.shape and b.flags.f_contiguous == a.flags.f_contiguous
    assert (b == a).all() and not b.flags.writeable


def test_write_into(store):
    from rayfast._core.store import write_into
    src = np.arange(3 * MiB, dtype=np.uint8)   # large enough for streaming stores
    mv = store.create_object(oid(71), 3 * MiB + 100)
    write_into(mv, 0, b"head")
    write_into(mv, 100, src)
    write_into(mv, 4, memoryview(b"xyz"))
    with pytest.raises(ValueError, match="do not fit"):
        write_into(mv, 101, src)
    with pytest.raises(ValueError, match="do not fit"):
        write_into(mv, -1, b"a")
    store.seal(oid(71))
    v = store.get(oid(71))
    assert bytes(v[:7]) == b"headxyz" and (np.frombuffer(v, np.uint8, offset=100) == src).all()
    with pytest.raises(BufferError):
        write_into(v, 0, b"a")   # read-only


# ------------------------------------------------------------ space management


def test_put_10x_capacity_while_releasing(stores):
    s = stores.new(4 * MiB)
    chunk = np.full(MiB, 7, dtype=np.uint8)
    for i in range(40):
        o = oid(i)
        s.put_bytes(o, chunk)
        assert np.frombuffer(s.get(o), dtype=np.uint8)[-1] == 7
        s.release(o)
    st_ = s.statistics()
    assert st_["bytes_used"] == 0 and st_["num_objects"] == 0
    s.check()


def test_full_store_error_without_spilling(stores):
    s = stores.new(4 * MiB)
    held = []
    with pytest.raises(ObjectStoreFullError) as ei:
        for i in range(100):
            s.put_bytes(oid(i), b"\0" * MiB)
            held.append(oid(i))
    msg = str(ei.value)
    assert str(MiB) in msg and str(4 * MiB) in msg and "used" in msg and "spilling disabled" in msg
    assert len(held) == 3
    for o in held:
        s.release(o)
    s.put_bytes(oid(500), b"\1" * (3 * MiB))  # works again
    assert bytes(s.get(oid(500))[:1]) == b"\1"
    with pytest.raises(ObjectStoreFullError, match="can never fit"):
        s.create_object(oid(501), 5 * MiB)
    s.check()


def test_spill_and_restore_100MiB_six_30MiB(stores, tmp_path):
    spill = tmp_path / "spill"
    s = stores.new(100 * MiB, str(spill))
    n = 30 * MiB
    ids = [oid(i) for i in range(6)]
    for i, o in enumerate(ids):
        a = np.arange(n // 8, dtype=np.uint64) * (i + 1)
        s.put_bytes(o, a)
        del a
    st_ = s.statistics()
    assert st_["spills"] >= 3 and st_["bytes_spilled"] >= 3 * n
    assert st_["num_objects"] == 6 and st_["num_sealed"] == 6
    assert len(os.listdir(spill)) >= 3
    for rnd in range(2):
        for i, o in enumerate(ids):
            assert s.contains(o)
            v = np.frombuffer(s.get(o), dtype=np.uint64)
            assert v.size == n // 8
            assert v[0] == 0 and v[12345] == 12345 * (i + 1) and v[-1] == (n // 8 - 1) * (i + 1)
            del v
    st_ = s.statistics()
    assert st_["restores"] >= 6 and st_["bytes_restored"] >= 6 * n
    s.check()
    # releasing deletes the spill files
    for o in ids[:3]:
        s.release(o)
    remaining = {f for f in os.listdir(spill)}
    assert not remaining & {o.hex() for o in ids[:3]}
    # unlink removes the rest
    assert any(f in remaining for f in (o.hex() for o in ids[3:])) or s.statistics()["num_spilled"] == 0
    s.unlink()
    s.close()
    assert os.listdir(spill) == []


def test_spill_dir_read_from_header(stores, tmp_path):
    s = stores.new(8 * MiB, str(tmp_path / "sp"))
    t = ObjectStore.attach(s.name)
    assert t.spill_dir == str(tmp_path / "sp")
    for i in range(5):
        t.put_bytes(oid(i), bytes([i]) * (3 * MiB))
    assert s.statistics()["spills"] >= 3
    for i in range(5):
        assert bytes(t.get(oid(i))[-1:]) == bytes([i])
    t.close()


def test_pinned_objects_are_not_spilled(stores, tmp_path):
    s = stores.new(8 * MiB, str(tmp_path / "sp"))
    a, b = oid(1), oid(2)
    s.put_bytes(a, b"a" * (3 * MiB))
    s.put_bytes(b, b"b" * (3 * MiB))
    va, vb = s.get(a), s.get(b)
    with pytest.raises(ObjectStoreFullError):
        s.put_bytes(oid(3), b"c" * (3 * MiB))
    del vb
    gc.collect()
    s.put_bytes(oid(3), b"c" * (3 * MiB))  # b can go to disk now
    assert bytes(va[:1]) == b"a"
    assert bytes(s.get(b)[-1:]) == b"b"


def test_statistics_fields(store):
    st_ = store.statistics()
    for k in ("capacity", "bytes_used", "bytes_free", "num_objects", "num_sealed", "num_pinned", "evictions",
              "bytes_evicted", "spills", "bytes_spilled", "restores", "bytes_restored", "largest_free_block",
              "lock_recoveries", "max_objects", "pins_reclaimed", "objects_reclaimed"):
        assert isinstance(st_[k], int), k
    assert st_["capacity"] == store.capacity == 4 * MiB
    assert st_["bytes_used"] == 0 and st_["bytes_free"] == 4 * MiB
    store.put_bytes(oid(1), b"x" * 1000)
    store.create_object(oid(2), 10)
    v = store.get(oid(1))
    st_ = store.statistics()
    assert st_["num_objects"] == 2 and st_["num_sealed"] == 1 and st_["num_pinned"] == 2
    assert st_["bytes_used"] == (1024 + 64) + (64 + 64)
    assert st_["bytes_used"] + st_["bytes_free"] == st_["capacity"]
    assert st_["largest_free_block"] == 4 * MiB - st_["bytes_used"] - 64
    del v


def test_refcounts(store):
    o = oid(1)
    store.put_bytes(o, b"abc")
    store.incref(o)
    store.release(o)
    assert store.contains(o)
    store.release(o)
    assert not store.contains(o)
    with pytest.raises(KeyError):
        store.release(o)


# ------------------------------------------------------------------ bad input


def test_bad_input(store):
    with pytest.raises(ValueError, match="20 bytes"):
        store.create_object(b"short", 10)
    with pytest.raises(ValueError):
        store.get(b"x" * 21)
    with pytest.raises(TypeError):
        store.get("not bytes" * 3)
    with pytest.raises(ValueError, match=">= 0"):
        store.create_object(oid(1), -1)
    with pytest.raises(TypeError):
        store.create_object(oid(1), 1.5)
    with pytest.raises(ValueError):
        store.get(oid(1), timeout=-1)
    o = oid(2)
    store.put_bytes(o, b"1")
    with pytest.raises(KeyError, match="exists"):
        store.put_bytes(o, b"2")
    with pytest.raises(ObjectExistsError):
        store.create_object(o, 5)
    with pytest.raises(ValueError):
        store.seal(o)  # already sealed
    for fn in (store.seal, store.abort, store.incref, store.release, store.delete, store.size_of, store.get):
        with pytest.raises(KeyError):
            fn(oid(99))
    with pytest.raises(TypeError):
        ObjectStore()


def test_create_attach_errors(stores):
    with pytest.raises(FileNotFoundError):
        ObjectStore.attach(PREFIX + "missing")
    s = stores.new()
    with pytest.raises(FileExistsError):
        ObjectStore.create(s.name, MiB)
    with pytest.raises(ValueError):
        ObjectStore.create("no-slash", MiB)
    with pytest.raises(ValueError):
        ObjectStore.create(PREFIX + "tiny", 10)
    free = os.statvfs("/dev/shm").f_bavail * os.statvfs("/dev/shm").f_frsize
    with pytest.raises(MemoryError, match="/dev/shm"):
        ObjectStore.create(PREFIX + "huge", free + (1 << 30))
    assert not os.path.exists("/dev/shm/" + (PREFIX + "huge")[1:])


def test_memcpy_bandwidth():
    assert memcpy_bandwidth(1 << 24) > 0.1


@pytest.mark.parametrize("n", [5, (1 << 20) + 3, (4 << 20) - 1, (9 << 20) + 13])
def test_write_into_large_and_odd_sizes(n):
    # Large copies are chunked and shared with a helper thread: every byte lands, none beyond.
    src = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8)
    dst = np.zeros(n + 200, dtype=np.uint8)
    before = copy_statistics()
    write_into(dst, 100, src)
    assert np.array_equal(dst[100:100 + n], src)
    assert not dst[:100].any() and not dst[100 + n:].any()
    after = copy_statistics()
    shared = after["copies"] - before["copies"]
    assert shared in (0, 1) and (shared == 0 or n >= 4 << 20)
    assert after["helper_chunks"] <= after["chunks"]


def test_write_into_rejects_overflow():
    with pytest.raises(ValueError, match="do not fit"):
        write_into(bytearray(10), 5, b"123456")


def test_get_latency(stores):
    s = stores.new(200 * MiB)
    small, big = oid(1), oid(2)
    s.put_bytes(small, b"x" * 1024)
    s.put_bytes(big, np.zeros(100 * MiB // 8))
    for o in (small, big):
        n = 20000
        t = time.perf_counter()
        for _ in range(n):
            s.get(o)
        dt = (time.perf_counter() - t) / n
        assert dt < 20e-6, f"get took {dt * 1e6:.1f} us"


# --------------------------------------------------------- property test


ops = st.lists(
    st.one_of(
        st.tuples(st.just("create"), st.integers(0, 15), st.integers(0, 300_000), st.booleans()),
        st.tuples(st.just("seal"), st.integers(0, 15)),
        st.tuples(st.just("release"), st.integers(0, 15)),
        st.tuples(st.just("delete"), st.integers(0, 15)),
        st.tuples(st.just("get"), st.integers(0, 15)),
        st.tuples(st.just("drop_view"), st.integers(0, 15)),
        st.tuples(st.just("abort"), st.integers(0, 15)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops)
def test_property_against_model(tmp_path_factory, seq):
    cap = 1 * MiB
    s = ObjectStore.create(seg_name(), cap)
    try:
        ids = [bytes([k]) * 20 for k in range(16)]
        model = {}  # k -> dict(size, sealed, fill, rc)
        views = {}  # k -> list of views
        for op in seq:
            kind, k = op[0], op[1]
            o = ids[k]
            m = model.get(k)
            if kind == "create":
                size, seal_now = op[2], op[3]
                if m is not None:
                    with pytest.raises(KeyError):
                        s.create_object(o, size)
                    continue
                try:
                    w = s.create_object(o, size)
                except ObjectStoreFullError:
                    continue
                fill = (k * 7 + size) % 251
                w[:] = bytes([fill]) * size
                model[k] = dict(size=size, sealed=False, fill=fill, rc=1)
                del w
                if seal_now:
                    s.seal(o)
                    model[k]["sealed"] = True
            elif kind == "seal":
                if m is None:
                    with pytest.raises(KeyError):
                        s.seal(o)
                elif m["sealed"]:
                    with pytest.raises(ValueError):
                        s.seal(o)
                else:
                    s.seal(o)
                    m["sealed"] = True
                    if m["rc"] == 0 or m.get("deleted"):
                        del model[k]
            elif kind == "abort":
                if m is None:
                    with pytest.raises(KeyError):
                        s.abort(o)
                elif m["sealed"]:
                    with pytest.raises(ValueError):
                        s.abort(o)
                else:
                    s.abort(o)
                    del model[k]
            elif kind == "release":
                if m is None:
                    with pytest.raises(KeyError):
                        s.release(o)
                elif m["rc"] == 0:
                    with pytest.raises(ValueError):
                        s.release(o)
                else:
                    s.release(o)
                    m["rc"] -= 1
                    if m["rc"] == 0 and m["sealed"] and not views.get(k):
                        del model[k]   # (a view still pinning it keeps it, id and all, until it goes)
            elif kind == "delete":
                if m is None:
                    with pytest.raises(KeyError):
                        s.delete(o)
                else:
                    s.delete(o)
                    if m["sealed"]:
                        del model[k]
                    else:
                        m["deleted"] = True  # freed as soon as it is sealed
            elif kind == "get":
                v = None
                if m is None:
                    with pytest.raises(KeyError):
                        s.get(o, timeout=0)
                elif not m["sealed"]:
                    with pytest.raises(TimeoutError):
                        s.get(o, timeout=0)
                else:
                    v = s.get(o)
                    assert len(v) == m["size"]
                    views.setdefault(k, []).append(v)
                    del v
            elif kind == "drop_view":
                if views.get(k):
                    views[k].pop()
                    if not views[k] and m is not None and m["rc"] == 0 and m["sealed"]:
                        del model[k]   # its last pin went: freed
            # invariants
            s.check()
            stt = s.statistics()
            assert stt["bytes_used"] + stt["bytes_free"] == cap
            live = {kk: mm for kk, mm in model.items() if not mm.get("deleted")}
            assert sorted(s.list_objects()) == sorted(ids[kk] for kk, mm in live.items() if mm["sealed"])
            spans = []
            for kk, mm in model.items():
                off, alloc = s._offset(ids[kk])
                assert off % 64 == 0 and alloc >= mm["size"] + 64
                spans.append((off, off + mm["size"]))
            # views of objects freed from the model are still pinned and intact
            assert all(len(x) == 0 or x[0] == x[-1] for vs in views.values() for x in vs)
            spans.sort()
            for (a0, a1), (b0, b1) in zip(spans, spans[1:]):
                assert a1 <= b0, "live objects overlap"
        for kk, mm in model.items():
            if mm["sealed"] and not mm.get("deleted"):
                assert bytes(s.get(ids[kk])) == bytes([mm["fill"]]) * mm["size"]
        views.clear()
        gc.collect()
        for kk in [kk for kk, mm in model.items() if mm["rc"] == 0 and mm["sealed"]]:
            del model[kk]   # released objects whose views just went are freed
        assert s.statistics()["num_pinned"] == sum(1 for mm in model.values() if not mm["sealed"])
    finally:
        s.unlink()
        s.close()


def test_heap_top_follows_the_highest_block_handed_out(store):
    assert store.heap_top() == 0
    store.put_bytes(oid(1), b"x" * 100_000)
    top = store.heap_top()
    assert 100_000 < top < 200_000
    store.put_bytes(oid(2), b"y" * 100_000)
    assert store.heap_top() > top
    store.delete(oid(2))
    store.put_bytes(oid(3), b"z" * 1000)      # fits below the top: the top stays
    assert store.heap_top() > top


def test_store_warmer_keeps_a_margin_above_what_is_used(stores):
    from rayfast.node.store_warmer import StoreWarmer

    s = stores.new(64 * MiB)
    w = StoreWarmer(s, ahead=8 * MiB)
    try:
        time.sleep(0.1)
        assert w.statistics()["warmed_bytes"] == 0   # nothing before the store is used
        s.put_bytes(oid(100), b"\1" * MiB)
        w.used()
        assert wait_for(lambda: w.statistics()["warmed_bytes"] >= 8 * MiB, timeout=10)
        for i in range(12):                   # 12 MiB in use: the margin moves up with it
            s.put_bytes(oid(i), b"\1" * MiB)
            w.used()
        assert w.statistics()["target_bytes"] >= s.heap_top() + 8 * MiB - MiB
        assert wait_for(lambda: w.statistics()["warmed_bytes"] >= s.heap_top() + 7 * MiB, timeout=10)
        assert w.statistics()["warmed_bytes"] <= 64 * MiB
        s.warm(2 * MiB, 1 * MiB)              # a range in the middle, idempotent
    finally:
        w.stop()
    assert not w._thread.is_alive()
