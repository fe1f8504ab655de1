"""The node manager's view of every object: state, value or location, and who refers to it.

An object is referenced by processes that hold ObjectRefs to it (`holders`,
a set of client ids, so repeated announcements are idempotent), by tasks
that will read it (`task_refs`), and by stored objects whose values contain
a ref to it (`contained_in`). When all three drop to zero the object is
freed: its inline bytes dropped or its store copy released. An object whose
producing task has not finished yet is freed when it finishes.
"""
from rayfast import protocol as P

PENDING = 0   # producer not finished (or unknown yet)
READY = 1


class ObjectEntry:
    __slots__ = ("oid", "state", "kind", "data", "holders", "task_refs", "contained_in",
                 "contains", "subscribers", "producer")

    def __init__(self, oid, holder=None, producer=None, subscriber=None):
        self.oid = oid
        self.state = PENDING
        self.kind = None
        self.data = None
        self.holders = {holder} if holder is not None else set()
        self.task_refs = 0
        self.contained_in = 0
        self.contains = ()
        self.subscribers = [subscriber] if subscriber is not None else None
        self.producer = producer  # task handle while its producer is queued or running

    def referenced(self):
        return bool(self.holders) or self.task_refs > 0 or self.contained_in > 0


class ObjectTable:
    def __init__(self, store, on_free=None):
        self.store = store
        self.entries = {}
        self.on_free = on_free
        self.freed = 0
        self.inline_bytes = 0

    def __len__(self):
        return len(self.entries)

    def get(self, oid):
        return self.entries.get(oid)

    def entry(self, oid):
        e = self.entries.get(oid)
        if e is None:
            e = self.entries[oid] = ObjectEntry(oid)
        return e

    def set_ready(self, e, kind, data, contained, pinned=False):
        """Record a value; returns the subscribers to notify (or None).

        pinned: the refs it contains were already counted (PIN) by the worker
        that produced it."""
        e.state = READY
        e.kind = kind
        e.data = data
        e.producer = None
        if kind != P.STORE:
            self.inline_bytes += len(data)
        if contained:
            e.contains = contained
            if not pinned:
                for c in contained:
                    self.entry(c).contained_in += 1
        subs = e.subscribers
        e.subscribers = None
        return subs

    def release_holder(self, oid, client_id):
        e = self.entries.get(oid)
        if e is not None:
            e.holders.discard(client_id)
            self.maybe_free(e)

    def release_task_ref(self, oid):
        e = self.entries.get(oid)
        if e is not None:
            e.task_refs -= 1
            self.maybe_free(e)

    def maybe_free(self, e):
        if e.referenced() or e.subscribers:
            return
        if e.state != READY:
            if e.producer is None:
                # a ref to something never produced here (or already failed): forget it
                del self.entries[e.oid]
            return
        self._free(e)

    def _free(self, e):
        stack = [e]
        while stack:
            e = stack.pop()
            del self.entries[e.oid]
            self.freed += 1
            if e.kind == P.STORE:
                try:
                    self.store.release(e.oid)
                except KeyError:
                    pass
            elif e.data is not None:
                self.inline_bytes -= len(e.data)
            if self.on_free is not None:
                self.on_free(e.oid)
            for c in e.contains:
                ce = self.entries.get(c)
                if ce is not None:
                    ce.contained_in -= 1
                    if not ce.referenced() and not ce.subscribers and ce.state == READY:
                        stack.append(ce)

    def statistics(self):
        ready = sum(1 for e in self.entries.values() if e.state == READY)
        return {"objects": len(self.entries), "ready": ready, "pending": len(self.entries) - ready,
                "inline_bytes": self.inline_bytes, "freed_total": self.freed}
