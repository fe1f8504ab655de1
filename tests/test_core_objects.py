"""rayfast._core.objects: the node manager's object table (reference counting and freeing)."""
from rayfast._core.objects import PENDING, READY, ObjectTable

INLINE, STORE = 0, 1


class _Client:
    def __init__(self, cid):
        self.id = cid
        self.held = set()


class _Store:
    def __init__(self):
        self.released = []

    def release(self, oid):
        self.released.append(oid)


def _oid(i):
    return bytes([i]) * 20


def _table():
    freed, store = [], _Store()
    return ObjectTable(store, on_free=freed.append, store_kind=STORE), freed, store


def test_returns_are_held_and_pushed_to_the_submitter():
    t, freed, _ = _table()
    c = _Client(1)
    t.add_returns([_oid(1), _oid(2)], c, 7)
    e = t.get(_oid(1))
    assert e.state == PENDING and e.holders == {1} and e.subscribers == [c] and e.producer == 7
    assert c.held == {_oid(1), _oid(2)} and len(t) == 2
    assert t.set_ready(e, INLINE, b"abc", ()) == [c]
    assert e.state == READY and e.subscribers is None and e.producer is None
    assert t.statistics() == {"objects": 2, "ready": 1, "pending": 1, "inline_bytes": 3, "freed_total": 0}
    t.release_holders([_oid(1)], c)
    assert freed == [_oid(1)] and t.get(_oid(1)) is None and _oid(1) not in c.held
    assert t.statistics()["inline_bytes"] == 0


def test_release_unsubscribes_and_a_pending_object_waits_for_its_producer():
    t, freed, _ = _table()
    c = _Client(1)
    t.add_returns([_oid(1)], c, 7)
    t.release_holders([_oid(1)], c)
    e = t.get(_oid(1))
    assert e is not None and e.subscribers is None and freed == []   # its task still runs
    assert t.set_ready(e, INLINE, b"x", ()) is None
    t.maybe_free(e)
    assert freed == [_oid(1)]


def test_task_refs_and_holders_both_keep_an_object():
    t, freed, store = _table()
    c = _Client(2)
    t.add_holders([_oid(3)], c)
    t.add_task_refs([_oid(3), _oid(3)])
    e = t.get(_oid(3))
    t.set_ready(e, STORE, 100, ())
    t.release_holders([_oid(3)], c)
    t.release_task_refs([_oid(3)])
    assert freed == []
    t.release_task_ref(_oid(3))
    assert freed == [_oid(3)] and store.released == [_oid(3)]


def test_contained_refs_live_as_long_as_their_container():
    t, freed, _ = _table()
    c = _Client(1)
    t.add_holders([_oid(1), _oid(2)], c)
    t.set_ready(t.get(_oid(2)), INLINE, b"inner", ())
    t.set_ready(t.get(_oid(1)), INLINE, b"outer", (_oid(2),))
    t.release_holders([_oid(2)], c)
    assert freed == [] and t.get(_oid(2)).contained_in == 1
    t.release_holders([_oid(1)], c)
    assert freed == [_oid(1), _oid(2)] and len(t) == 0


def test_a_ref_to_something_never_produced_is_forgotten():
    t, freed, _ = _table()
    t.add_task_refs([_oid(9)])
    t.release_task_refs([_oid(9)])
    t.release_holder(_oid(8), 1)   # unknown: nothing happens
    assert len(t) == 0 and freed == []


def test_waiters_are_kept_until_the_value_is_ready():
    t, _, _ = _table()
    c = _Client(1)
    t.add_returns([_oid(1)], c, 7)
    t.add_holders([_oid(2)], c)
    t.set_ready(t.get(_oid(2)), INLINE, b"x", ())
    t.add_waiter([_oid(1), _oid(2)], 11)   # only the pending one records it
    t.add_waiter([_oid(1)], 12)
    assert t.get(_oid(1)).waiters == [11, 12] and t.get(_oid(2)).waiters is None
    t.set_ready(t.get(_oid(1)), INLINE, b"y", ())
    assert t.get(_oid(1)).waiters is None
