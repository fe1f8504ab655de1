"""Python-visible behaviour of rayfast._core.ids."""
import asyncio
import gc
import os
import pickle
import timeit

import pytest

from rayfast._core import ids
from rayfast._core.ids import (
    OBJECT_ID_SIZE,
    TASK_ID_SIZE,
    ObjectID,
    ObjectRef,
    TaskID,
    drain_ref_changes,
    local_ref_count,
    ref_table_statistics,
    set_ref_hooks,
)


@pytest.fixture(autouse=True)
def clean_ref_table():
    # Other tests (or earlier ones) may hold refs; start each test from a drained table.
    gc.collect()
    drain_ref_changes()
    set_ref_hooks(None, None)
    yield
    # Put the runtime's hooks back: later test modules use ObjectRef.future() / await.
    from rayfast import core_worker
    set_ref_hooks(core_worker._future_of, core_worker._awaitable_of)


def test_sizes():
    assert TASK_ID_SIZE == 16 and OBJECT_ID_SIZE == 20


def test_task_id_basics():
    t = TaskID.random()
    assert len(t.binary()) == 16
    assert TaskID(t.binary()) == t and hash(TaskID(t.binary())) == hash(t)
    assert TaskID.nil().binary() == b"\0" * 16 and TaskID.nil().is_nil()
    assert TaskID.random() != t
    assert repr(t) == f"TaskID({t.hex()})"
    assert TaskID.from_hex(t.hex()) == t
    assert pickle.loads(pickle.dumps(t)) == t
    for bad in (b"", b"x" * 15, b"x" * 17, b"x" * 20):
        with pytest.raises(ValueError):
            TaskID(bad)
    with pytest.raises(TypeError):
        TaskID("x" * 16)


def test_task_id_not_equal_to_object_id_or_bytes():
    t = TaskID.random()
    assert t != t.binary()
    assert t != ObjectID(t.binary() + b"\0" * 4)
    assert not (t == ObjectID(t.binary() + b"\0" * 4))


def test_child_is_deterministic_and_distinct():
    t = TaskID(bytes(range(16)))
    assert t.child(1) == t.child(1)
    kids = {t.child(i) for i in range(10000)}
    assert len(kids) == 10000
    assert t.child(0) != t
    assert TaskID(bytes(range(1, 17))).child(1) != t.child(1)
    # Stable across processes and versions: ids derived on one node must
    # match those derived on another.
    assert t.child(7) == TaskID(t.child(7).binary())
    with pytest.raises((ValueError, OverflowError)):
        t.child(-1)


def test_derived_ids_are_well_mixed():
    t = TaskID.nil()
    ones = sum(bin(b).count("1") for i in range(2000) for b in t.child(i).binary())
    assert 0.48 < ones / (2000 * 128) < 0.52


def test_object_id_layout():
    t = TaskID(bytes(range(16)))
    o = t.object_id(3)
    assert o.binary() == bytes(range(16)) + b"\x03\0\0\0"
    assert o.task_id() == t and o.index() == 3 and not o.is_put()
    p = t.put_id(3)
    assert p.binary() == bytes(range(16)) + b"\x03\0\0\x80"
    assert p.task_id() == t and p.index() == 3 and p.is_put()
    assert p != o
    assert t.object_id(2**31 - 1).index() == 2**31 - 1
    for bad in (0, -1, 2**31, 2**40):
        with pytest.raises(ValueError):
            t.object_id(bad)
    with pytest.raises(ValueError):
        t.put_id(2**31)
    assert t.put_id(0).is_put()


def test_object_id_basics():
    b = os.urandom(20)
    o = ObjectID(b)
    assert o.binary() == b and o.hex() == b.hex()
    assert ObjectID.from_hex(b.hex()) == o
    assert repr(o) == f"ObjectID({b.hex()})"
    assert pickle.loads(pickle.dumps(o)) == o
    assert type(pickle.loads(pickle.dumps(o))) is ObjectID
    assert {o: 1}[ObjectID(b)] == 1
    for bad in (b"", b"x" * 16, b"x" * 21):
        with pytest.raises(ValueError):
            ObjectID(bad)
    assert o != b


def test_object_hash_quality():
    # Ids of one task differ only in the index bytes; their hashes must still spread.
    t = TaskID.random()
    hashes = [hash(t.object_id(i)) for i in range(1, 20001)]
    assert len(set(hashes)) == len(hashes)
    assert len({h & 0xFFF for h in hashes}) > 3500  # low bits used by dicts are spread
    assert all(h != -1 for h in hashes)


def test_ref_equals_id():
    b = os.urandom(20)
    r, o = ObjectRef(b), ObjectID(b)
    assert r == o and o == r and hash(r) == hash(o)
    assert not (r != o)
    assert len({r, o}) == 1
    assert repr(r) == f"ObjectRef({b.hex()})"
    assert isinstance(r, ObjectID)
    assert not hasattr(r, "__dict__")
    with pytest.raises(AttributeError):
        r.foo = 1


def test_ref_pickle_fallback():
    r = ObjectRef(os.urandom(20))
    r2 = pickle.loads(pickle.dumps(r))
    assert type(r2) is ObjectRef and r2 == r
    assert local_ref_count(r.binary()) == 2


def test_local_ref_count():
    b = os.urandom(20)
    assert local_ref_count(b) == 0
    refs = [ObjectRef(b) for _ in range(5)]
    assert local_ref_count(b) == 5
    assert local_ref_count(ObjectID(b)) == 5
    del refs[:3]
    assert local_ref_count(b) == 2
    del refs
    assert local_ref_count(b) == 0
    ObjectID(b)  # plain ids do not count
    assert local_ref_count(b) == 0
    with pytest.raises(ValueError):
        local_ref_count(b"short")


def test_failed_construction_does_not_count():
    with pytest.raises(ValueError):
        ObjectRef(b"x" * 19)
    assert ref_table_statistics()["live_ids"] == 0


def test_drain_semantics():
    a, b, c = os.urandom(20), os.urandom(20), os.urandom(20)
    ra1, ra2, rb = ObjectRef(a), ObjectRef(a), ObjectRef(b)
    rc = ObjectRef(c)
    del rc  # created and dropped between drains: released, never added
    added, released = drain_ref_changes()
    assert sorted(added) == sorted([a, b]) and released == [c]
    assert drain_ref_changes() == ([], [])
    del ra1  # still held by ra2
    assert drain_ref_changes() == ([], [])
    del ra2
    ra3 = ObjectRef(a)  # dropped to 0 and back between drains: no net change
    assert drain_ref_changes() == ([], [])
    del ra3, rb
    added, released = drain_ref_changes()
    assert added == [] and sorted(released) == sorted([a, b])
    s = ref_table_statistics()
    assert s["live_ids"] == 0 and s["entries"] == 0 and s["dirty_ids"] == 0


def test_drain_cost_tracks_touched_ids():
    held = [ObjectRef(os.urandom(20)) for _ in range(1000)]
    drain_ref_changes()
    assert ref_table_statistics()["dirty_ids"] == 0
    extra = ObjectRef(os.urandom(20))
    assert ref_table_statistics()["dirty_ids"] == 1  # not 1001
    added, _ = drain_ref_changes()
    assert added == [extra.binary()]
    del held, extra
    _, released = drain_ref_changes()
    assert len(released) == 1001


def test_hooks():
    r = ObjectRef(os.urandom(20))
    with pytest.raises(RuntimeError):
        r.future()
    seen = []

    def future_fn(ref):
        seen.append(ref)
        return "fut"

    async def value(ref):
        return ("value", ref)

    set_ref_hooks(future_fn, value)
    assert r.future() == "fut" and seen == [r]

    async def main():
        return await r

    assert asyncio.run(main()) == ("value", r)


def test_ref_create_drop_is_fast():
    b = os.urandom(20)
    n = 200_000
    per = min(timeit.repeat(lambda: ObjectRef(b), number=n, repeat=3)) / n
    assert per < 1e-6, f"ObjectRef create+drop took {per * 1e9:.0f} ns"


def test_object_ref_constructors_as_ray():
    # Ray's ObjectRef API: nil/is_nil, from_binary/from_hex/from_random, size (of our ids)
    from rayfast._core.ids import ObjectRef
    nil = ObjectRef.nil()
    assert nil.is_nil() and type(nil) is ObjectRef
    r = ObjectRef.from_random()
    assert not r.is_nil() and type(r) is ObjectRef
    assert ObjectRef.from_binary(r.binary()) == r
    assert type(ObjectRef.from_hex(r.hex())) is ObjectRef
    assert ObjectRef.size() == len(r.binary())
