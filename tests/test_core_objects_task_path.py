"""rayfast._core.objects: the per-task calls of the node manager's hot path (add_task, resolve, first_producer, made_on)."""
import pytest

from rayfast._core.objects import READY, ObjectTable

INLINE, STORE, ERROR, LOCAL = 0, 1, 2, 3


class _Client:
    def __init__(self, cid):
        self.id = cid
        self.held = set()


class _Store:
    def release(self, oid):
        pass


def _oid(i):
    return bytes([i]) * 20


def test_add_task_holds_returns_arguments_and_borrowed():
    t = ObjectTable(_Store(), store_kind=STORE)
    c = _Client(1)
    deps = t.add_task([_oid(1)], c, 7, ((0, _oid(2)), ("k", _oid(3))), (_oid(4),))
    assert deps == [_oid(2), _oid(3)]
    assert t.get(_oid(1)).producer == 7 and t.get(_oid(1)).subscribers == [c] and c.held == {_oid(1)}
    assert [t.get(_oid(i)).task_refs for i in (2, 3, 4)] == [1, 1, 1]
    assert t.add_task([_oid(5)], c, 8, (), ()) == ()
    t.release_task_refs(deps)
    t.release_task_refs([_oid(4)])
    assert t.get(_oid(2)) is None and t.get(_oid(4)) is None   # never produced, no longer referenced


def test_resolve_and_first_producer():
    t = ObjectTable(_Store(), store_kind=STORE)
    c = _Client(1)
    t.add_returns([_oid(1)], c, 11)
    t.add_returns([_oid(2)], c, 12)
    t.add_task([_oid(9)], c, 13, ((0, _oid(1)), (1, _oid(2)), (2, _oid(3))), ())
    assert t.first_producer([_oid(1), _oid(2)]) == 11
    assert t.first_producer([_oid(3), _oid(1)]) is None      # nothing makes _oid(3)
    t.set_ready(t.get(_oid(1)), INLINE, b"v", ())
    assert t.get(_oid(1)).state == READY
    assert t.first_producer([_oid(1), _oid(2)]) == 12
    assert t.resolve([_oid(1), _oid(2)], LOCAL, ERROR) == ((_oid(1), INLINE, b"v"), (_oid(2), LOCAL, None))
    t.set_ready(t.get(_oid(2)), ERROR, b"err", ())
    failed = t.resolve([_oid(1), _oid(2)], LOCAL, ERROR)
    assert failed is t.get(_oid(2)) and failed.data == b"err"
    with pytest.raises(KeyError):
        t.resolve([_oid(30)], LOCAL, ERROR)


class _Task:
    def __init__(self, worker, done=False):
        self.worker = worker
        self.done = done


def test_made_on():
    t = ObjectTable(_Store(), store_kind=STORE)
    c = _Client(1)
    for i, producer in ((1, 11), (2, 12), (3, 13)):
        t.add_returns([_oid(i)], c, producer)
    t.add_task([_oid(4)], c, 14, ((0, _oid(5)),), ())   # _oid(5): nothing makes it
    w, other = object(), object()
    tasks = {11: _Task(w), 12: _Task(w), 13: _Task(other)}
    assert t.made_on([_oid(1), _oid(2)], tasks, w)
    assert not t.made_on([_oid(1), _oid(3)], tasks, w)
    assert not t.made_on([_oid(1), _oid(5)], tasks, w)
    tasks[12].done = True
    assert not t.made_on([_oid(2)], tasks, w)
    t.set_ready(t.get(_oid(3)), INLINE, b"v", ())
    assert t.made_on([_oid(1), _oid(3)], tasks, w)            # ready: made already
    del tasks[11]
    assert not t.made_on([_oid(1)], tasks, w)
