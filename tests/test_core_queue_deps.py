"""Python-visible behaviour of rayfast._core.queue, .deps and .lineage,
with hypothesis state machines checking them against pure-Python models."""
import os

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from rayfast._core.deps import DependencyTable
from rayfast._core.ids import ObjectID, TaskID
from rayfast._core.lineage import LineageTable
from rayfast._core.queue import TaskQueue

# ---- TaskQueue ----


def test_queue_basics():
    q = TaskQueue()
    assert len(q) == 0 and not q and q.pop() == -1 and q.peek() == -1
    for i in range(100):
        q.push(i)
    q.push_front(1000)
    assert len(q) == 101 and q.peek() == 1000 and q.pop() == 1000
    assert q.remove(50) and not q.remove(50) and not q.remove(12345)
    assert [q.pop() for _ in range(99)] == [i for i in range(100) if i != 50]
    assert q.pop() == -1
    s = q.statistics()
    assert s == {"length": 0, "pushed": 101, "popped": 100, "removed": 1, "max_length": 101}
    q.push(1)
    q.push(2)
    q.clear()
    assert len(q) == 0 and q.pop() == -1


def test_queue_rejects_bad_handles():
    q = TaskQueue()
    with pytest.raises(ValueError):
        q.push(-1)
    with pytest.raises(ValueError):
        q.push_front(-5)
    with pytest.raises(OverflowError):
        q.push(2**63)
    with pytest.raises(TypeError):
        q.push("1")


class QueueMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.q = TaskQueue()
        self.model = []
        self.max_len = 0

    handles = st.integers(min_value=0, max_value=50)

    @rule(h=handles)
    def push(self, h):
        self.q.push(h)
        self.model.append(h)

    @rule(h=handles)
    def push_front(self, h):
        self.q.push_front(h)
        self.model.insert(0, h)

    @rule()
    def pop(self):
        assert self.q.pop() == (self.model.pop(0) if self.model else -1)

    @rule()
    def peek(self):
        assert self.q.peek() == (self.model[0] if self.model else -1)

    @rule(h=handles)
    def remove(self, h):
        present = h in self.model
        assert self.q.remove(h) == present
        if present:
            self.model.remove(h)

    @rule()
    def clear(self):
        self.q.clear()
        self.model.clear()

    @invariant()
    def same(self):
        self.max_len = max(self.max_len, len(self.model))
        assert len(self.q) == len(self.model)
        s = self.q.statistics()
        assert s["length"] == len(self.model) and s["max_length"] == self.max_len
        assert s["pushed"] == s["popped"] + s["removed"] + s["length"]


TestQueueModel = QueueMachine.TestCase
TestQueueModel.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)

# ---- DependencyTable ----


def oid(i):
    return i.to_bytes(4, "little") * 5


def test_deps_basics():
    d = DependencyTable()
    a, b = oid(1), oid(2)
    assert d.add_task(1, [a, b, a]) == 2  # duplicates count once
    assert d.add_task(2, [b]) == 1
    assert d.add_task(3, []) == 0 and 3 not in d
    assert len(d) == 2 and 1 in d
    assert d.missing(1) == [a, b]
    assert d.mark_ready(a) == [] and d.is_ready(a)
    assert d.mark_ready(a) == []  # idempotent
    assert d.missing(1) == [b]
    assert d.mark_ready(b) == [1, 2]  # add order
    assert len(d) == 0
    assert d.add_task(4, [a, b]) == 0 and len(d) == 0  # runnable now, not stored
    with pytest.raises(KeyError):
        d.missing(4)
    d.mark_missing(a)
    assert not d.is_ready(a) and d.is_ready(b)
    assert d.add_task(5, [a, b]) == 1
    assert d.remove_task(5) and not d.remove_task(5)
    s = d.statistics()
    assert s["waiting_tasks"] == 0 and s["ready_objects"] == 1
    assert s["waited_objects"] == 0 and s["released_total"] == 2


def test_deps_release_order_is_add_order():
    d = DependencyTable()
    x, y = oid(1), oid(2)
    d.add_task(30, [x, y])
    d.add_task(10, [y])
    d.add_task(20, [x, y])
    d.add_task(5, [y, x])
    d.mark_ready(x)
    assert d.mark_ready(y) == [30, 10, 20, 5]


def test_deps_mark_missing_does_not_affect_released_or_waiting():
    d = DependencyTable()
    x, y = oid(1), oid(2)
    d.add_task(1, [x, y])
    d.mark_ready(x)
    d.mark_missing(x)  # task 1 no longer waits on x (it saw x ready)
    assert d.missing(1) == [y]
    assert d.mark_ready(y) == [1]


def test_deps_validation():
    d = DependencyTable()
    with pytest.raises(ValueError):
        d.add_task(1, [b"short"])
    with pytest.raises(ValueError):
        d.add_task(1, [oid(1), b"x" * 21])
    assert len(d) == 0 and not d.is_ready(oid(1))
    with pytest.raises(ValueError):
        d.mark_ready(b"x")
    with pytest.raises(ValueError):
        d.is_ready(b"x" * 16)
    d.add_task(1, [oid(1)])
    with pytest.raises(ValueError):
        d.add_task(1, [oid(2)])  # already waiting


def test_deps_accepts_object_ids_and_many_deps():
    d = DependencyTable()
    t = TaskID.random()
    refs = [t.object_id(i) for i in range(1, 101)]
    assert d.add_task(7, refs + [r.binary() for r in refs]) == 100
    for r in refs[:-1]:
        assert d.mark_ready(r) == []
    assert d.missing(7) == [refs[-1].binary()]
    assert d.mark_ready(refs[-1].binary()) == [7]


class DepsMachine(RuleBasedStateMachine):
    """Model: ready set; waiting = {handle: (seq, [missing oids in order])}."""

    def __init__(self):
        super().__init__()
        self.d = DependencyTable()
        self.ready = set()
        self.waiting = {}
        self.seq = 0
        self.released = 0

    objs = st.integers(min_value=0, max_value=12).map(oid)
    handles = st.integers(min_value=0, max_value=20)

    @rule(h=handles, deps=st.lists(objs, max_size=6))
    def add(self, h, deps):
        if h in self.waiting:
            with pytest.raises(ValueError):
                self.d.add_task(h, deps)
            return
        missing = []
        for o in deps:
            if o not in self.ready and o not in missing:
                missing.append(o)
        assert self.d.add_task(h, deps) == len(missing)
        if missing:
            self.waiting[h] = (self.seq, missing)
            self.seq += 1

    @rule(o=objs)
    def mark_ready(self, o):
        got = self.d.mark_ready(o)
        want = []
        if o not in self.ready:
            self.ready.add(o)
            for h, (seq, missing) in sorted(self.waiting.items(), key=lambda kv: kv[1][0]):
                if o in missing:
                    missing.remove(o)
                    if not missing:
                        want.append(h)
            for h in want:
                del self.waiting[h]
        self.released += len(want)
        assert got == want

    @rule(o=objs)
    def mark_missing(self, o):
        self.d.mark_missing(o)
        self.ready.discard(o)

    @rule(h=handles)
    def remove(self, h):
        assert self.d.remove_task(h) == (h in self.waiting)
        self.waiting.pop(h, None)

    @precondition(lambda self: self.waiting)
    @rule(data=st.data())
    def missing(self, data):
        h = data.draw(st.sampled_from(sorted(self.waiting)))
        assert self.d.missing(h) == self.waiting[h][1]

    @invariant()
    def same(self):
        assert len(self.d) == len(self.waiting)
        s = self.d.statistics()
        assert s["waiting_tasks"] == len(self.waiting)
        assert s["ready_objects"] == len(self.ready)
        assert s["waited_objects"] == len({o for _, m in self.waiting.values() for o in m})
        assert s["released_total"] == self.released
        for i in range(13):
            assert self.d.is_ready(oid(i)) == (oid(i) in self.ready)


TestDepsModel = DepsMachine.TestCase
TestDepsModel.settings = settings(max_examples=200, stateful_step_count=80, deadline=None)

# ---- LineageTable ----


def test_lineage():
    lt = LineageTable()
    t = TaskID.random()
    assert lt.get(t.binary()) is None and t.binary() not in lt and len(lt) == 0
    lt.put(t.binary(), b"spec-1")
    assert lt.get(t.binary()) == b"spec-1" and lt.get(t) == b"spec-1"
    assert t.binary() in lt and t in lt and len(lt) == 1
    lt.put(t, b"longer spec 2")  # replaces
    assert lt.get(t.binary()) == b"longer spec 2"
    assert lt.statistics()["entries"] == 1 and lt.statistics()["bytes"] == 13
    lt.put(TaskID.nil(), b"")
    assert lt.get(TaskID.nil()) == b""
    assert lt.remove(t.binary()) and not lt.remove(t.binary())
    assert len(lt) == 1 and lt.statistics()["bytes"] == 0
    assert b"short" not in lt
    for bad in (b"x" * 15, b"x" * 20):
        with pytest.raises(ValueError):
            lt.put(bad, b"s")
        with pytest.raises(ValueError):
            lt.get(bad)


def test_lineage_many():
    lt = LineageTable()
    specs = {os.urandom(16): os.urandom(i % 300) for i in range(3000)}
    for k, v in specs.items():
        lt.put(k, v)
    assert len(lt) == 3000
    assert all(lt.get(k) == v for k, v in specs.items())
    assert lt.statistics()["bytes"] == sum(map(len, specs.values()))
    for k in list(specs)[::2]:
        assert lt.remove(k)
    assert len(lt) == 1500
    assert all((lt.get(k) is None) == (i % 2 == 0) for i, k in enumerate(specs))


def test_object_id_type_accepted_in_lineage_rejected():
    lt = LineageTable()
    with pytest.raises(ValueError):
        lt.put(ObjectID(b"x" * 20), b"s")
