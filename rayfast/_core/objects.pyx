"""The node manager's view of every object: state, value or location, and who refers to it.

An object is referenced by processes that hold ObjectRefs to it (`holders`,
a set of client ids, so repeated announcements are idempotent), by tasks
that will read it (`task_refs`), and by stored objects whose values contain
a ref to it (`contained_in`). When all three drop to zero and nobody waits
for its value (`subscribers`) the object is freed: its inline bytes dropped
or its store copy released. An object whose producing task has not finished
yet is freed when it finishes.

It is touched several times per task (returns registered at submission,
arguments counted and released, values recorded, holders released), so it
is Cython: the batch methods take a task's or a message's whole list of ids
in one call. Clients are the node manager's objects; the table only reads
their `id` and adds to or removes from their `held` set.
"""

PENDING = 0   # producer not finished (or unknown yet)
READY = 1


cdef inline ObjectEntry _new_entry(bytes oid):
    cdef ObjectEntry e = ObjectEntry.__new__(ObjectEntry)
    e.oid = oid
    return e


cdef inline bint _referenced(ObjectEntry e):
    return bool(e.holders) or e.task_refs > 0 or e.contained_in > 0


cdef class ObjectEntry:
    def __cinit__(self):
        self.state = PENDING
        self.holders = set()
        self.contains = ()


cdef class ObjectTable:
    """store: the node's ObjectStore (released when a store object is freed);
    on_free(oid) is called for every object freed; on_orphan(oid) for an object
    not made yet that nothing refers to any more (its task still runs: Ray
    keeps running such tasks; the node ends an actor never placed whose last
    handle is gone); store_kind is the kind (protocol.STORE) whose data is a
    size and whose value is in the store."""

    def __init__(self, store, on_free=None, store_kind=1, on_orphan=None):
        self.entries = {}
        self.store = store
        self.on_free = on_free
        self.on_orphan = on_orphan
        self.store_kind = store_kind

    def referenced(self, bytes oid):
        """Whether a process, a pending task or a stored object refers to oid."""
        cdef ObjectEntry e = self.entries.get(oid)
        return e is not None and _referenced(e)

    def __len__(self):
        return len(self.entries)

    def get(self, oid):
        return self.entries.get(oid)

    def entry(self, bytes oid):
        return self._entry(oid)

    cdef ObjectEntry _entry(self, bytes oid):
        cdef ObjectEntry e = self.entries.get(oid)
        if e is None:
            e = _new_entry(oid)
            self.entries[oid] = e
        return e

    # --- a task's references ------------------------------------------------
    def add_returns(self, returns, client, producer):
        """A task was submitted: its submitter holds its returns and is subscribed to them
        from the start (the values are pushed to it, so its get() costs no message)."""
        cdef bytes oid
        cdef ObjectEntry e
        cdef object cid = client.id
        cdef set held = client.held
        for oid in returns:
            held.add(oid)
            e = self.entries.get(oid)
            if e is None:
                e = _new_entry(oid)
                e.holders.add(cid)
                e.subscribers = [client]
                e.producer = producer
                self.entries[oid] = e
                continue
            e.holders.add(cid)
            e.producer = producer
            if e.subscribers is None:
                e.subscribers = [client]
            elif client not in e.subscribers:
                e.subscribers.append(client)

    def add_task(self, returns, client, producer, arg_refs, borrowed):
        """A task was submitted (one call per task, as it is on the hot path): add_returns, and
        its hold on its arguments: the top-level refs (arg_refs: (position, oid) pairs) and those
        nested in them (borrowed). Returns the top-level argument ids (a list), or () if none."""
        cdef bytes oid
        cdef ObjectEntry e
        cdef object deps = ()
        self.add_returns(returns, client, producer)
        if arg_refs:
            deps = [pair[1] for pair in arg_refs]
            for oid in deps:
                e = self._entry(oid)
                e.task_refs += 1
        if borrowed:
            self.add_task_refs(borrowed)
        return deps

    def add_task_refs(self, oids):
        cdef bytes oid
        cdef ObjectEntry e
        for oid in oids:
            e = self._entry(oid)
            e.task_refs += 1

    def release_task_refs(self, oids):
        cdef bytes oid
        cdef ObjectEntry e
        for oid in oids:
            e = self.entries.get(oid)
            if e is not None:
                e.task_refs -= 1
                self._maybe_free(e)

    def add_waiter(self, oids, handle):
        """The task (handle) waits for those of oids that are not ready (see `waiters`)."""
        cdef bytes oid
        cdef ObjectEntry e
        for oid in oids:
            e = self.entries.get(oid)
            if e is not None and e.state != READY:
                if e.waiters is None:
                    e.waiters = [handle]
                else:
                    e.waiters.append(handle)

    def first_producer(self, deps):
        """The producer (handle) of the first of deps not ready yet; None if all are ready or
        nothing here makes it. Where pipelining looks for a worker to queue a waiting task on
        (manager.py; made_on then checks the others)."""
        cdef bytes oid
        cdef ObjectEntry e
        for oid in deps:
            e = self.entries[oid]
            if e.state != READY:
                return e.producer
        return None

    def made_on(self, deps, dict tasks, worker):
        """Whether every one of deps that is not ready is made by a task of tasks (handle -> task
        record, with `worker` and `done` attributes) queued on worker and not done: whether a task
        waiting for deps can be queued on worker behind those (pipelining, manager.py)."""
        cdef bytes oid
        cdef ObjectEntry e
        for oid in deps:
            e = self.entries[oid]
            if e.state != READY:
                if e.producer is None:
                    return False
                p = tasks.get(e.producer)
                if p is None or p.worker is not worker or p.done:
                    return False
        return True

    def resolve(self, deps, local_kind, error_kind):
        """What a task is sent about its arguments: a tuple of (oid, kind, data), with local_kind and
        no data for one not ready yet (made by a task queued before it on the same worker); or the
        entry of the first argument whose value is an error (kind error_kind)."""
        cdef bytes oid
        cdef ObjectEntry e
        cdef list out = []
        for oid in deps:
            e = self.entries[oid]
            if e.state != READY:
                out.append((oid, local_kind, None))
            elif e.kind == error_kind:
                return e
            else:
                out.append((oid, e.kind, e.data))
        return tuple(out)

    def release_task_ref(self, bytes oid):
        self.release_task_refs((oid,))

    # --- processes' references ------------------------------------------------
    def add_holders(self, oids, client):
        cdef bytes oid
        cdef object cid = client.id
        cdef set held = client.held
        for oid in oids:
            self._entry(oid).holders.add(cid)
            held.add(oid)

    def release_holders(self, oids, client):
        """The client dropped its refs: it no longer holds them nor waits for their values
        (its core worker forgets its subscription with the ref, and asks again if it needs)."""
        cdef bytes oid
        cdef ObjectEntry e
        cdef object cid = client.id
        cdef set held = client.held
        for oid in oids:
            held.discard(oid)
            e = self.entries.get(oid)
            if e is not None:
                e.holders.discard(cid)
                if e.subscribers is not None and client in e.subscribers:
                    e.subscribers.remove(client)
                    if not e.subscribers:
                        e.subscribers = None
                self._maybe_free(e)

    def release_holder(self, bytes oid, client_id):
        """A process that went away no longer holds oid."""
        cdef ObjectEntry e = self.entries.get(oid)
        if e is not None:
            e.holders.discard(client_id)
            self._maybe_free(e)

    # --- values ---------------------------------------------------------------
    def set_ready(self, ObjectEntry e, kind, data, contained, bint pinned=False):
        """Record a value; returns the subscribers to notify (or None).

        pinned: the refs it contains were already counted (PIN) by the worker
        that produced it."""
        cdef bytes c
        cdef ObjectEntry ce
        e.state = READY
        e.kind = kind
        e.data = data
        e.producer = None
        e.waiters = None
        if kind != self.store_kind:
            self.inline_bytes += len(data)
        if contained:
            e.contains = contained
            if not pinned:
                for c in contained:
                    ce = self._entry(c)
                    ce.contained_in += 1
        subs = e.subscribers
        e.subscribers = None
        return subs

    def maybe_free(self, ObjectEntry e):
        self._maybe_free(e)

    cdef int _maybe_free(self, ObjectEntry e) except -1:
        if _referenced(e) or e.subscribers:
            return 0
        if e.state != READY:
            if e.producer is None:
                # a ref to something never produced here (or already failed): forget it
                del self.entries[e.oid]
            elif self.on_orphan is not None:
                self.on_orphan(e.oid)
            return 0
        return self._free(e)

    cdef int _free(self, ObjectEntry e) except -1:
        cdef list stack = [e]
        cdef ObjectEntry ce
        cdef bytes c
        while stack:
            e = stack.pop()
            del self.entries[e.oid]
            self.freed += 1
            if e.kind == self.store_kind:
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
                    if not _referenced(ce) and not ce.subscribers and ce.state == READY:
                        stack.append(ce)
        return 0

    def statistics(self):
        cdef ObjectEntry e
        cdef long ready = 0
        for e in self.entries.values():
            if e.state == READY:
                ready += 1
        return {"objects": len(self.entries), "ready": ready, "pending": len(self.entries) - ready,
                "inline_bytes": self.inline_bytes, "freed_total": self.freed}
