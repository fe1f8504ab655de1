"""Generator tasks: a remote generator function returns an ObjectRefGenerator (Ray's generator API).

Streaming: the worker stores each yielded value as soon as it is yielded,
under the task's next return id (item i is return i + 2; return 1 is the
task's own result), so the caller's `next()` has item i as soon as it
exists, while the task still runs. When the generator ends, the task's
result is the list of all item refs (which keeps the items alive for as long
as the generator is held). An exception raised by the generator becomes one
more item, whose `get` raises it; a task that fails as a whole (cancelled,
worker crashed) makes the next `next()` give a ref that raises its error.
`num_returns="dynamic"` gives a ref to a DynamicObjectRefGenerator: that
list of refs, once the task has finished.
"""
from __future__ import annotations

import asyncio

from rayfast import protocol as P
from rayfast._core.ids import ObjectRef
from rayfast.exceptions import RayError
from rayfast.remote_function import RemoteFunction

_DONE = object()


class ObjectRefGenerator:
    """One ObjectRef per value the generator task yields, in order (iterate it, sync or async)."""

    def __init__(self, task_ref):
        self._task = task_ref   # the task's result: the list of item refs once it has finished
        self._refs = None       # that list, once read (item refs by index)
        self._i = 0

    # --- where item i is --------------------------------------------------
    def _item_ref(self, i):
        return ObjectRef(P.return_id(self._task.task_id().binary(), i + 2))

    def _load(self):
        """The task has finished: read its list of item refs (or its failure)."""
        if self._refs is None:
            import rayfast
            try:
                self._refs = list(rayfast.get(self._task))
            except RayError:
                # the task failed as a whole: the next item is the ref that raises its error
                self._refs = [None] * self._i + [self._task]
        return self._refs

    def _step(self, task_ready, item_ready, item):
        """The next ref, or _DONE, given what is ready now."""
        if item_ready:
            self._i += 1
            return item
        if not task_ready:
            return None
        refs = self._load()
        if self._i >= len(refs):
            return _DONE
        self._i += 1
        return refs[self._i - 1]

    def _wait_refs(self):
        """What to wait on for the next item: (its ref, the task's ref); or () if it is known."""
        if self._refs is not None:
            return ()
        return (self._item_ref(self._i), self._task)

    # --- the iterator protocols ---------------------------------------------
    def __iter__(self):
        return self

    def __next__(self):
        ref = self._next_sync(None)
        if ref is _DONE:
            raise StopIteration
        return ref

    def _next_sync(self, timeout_s=None):
        """The next ref; _DONE at the end; None if timeout_s passed first."""
        import rayfast
        refs = self._wait_refs()
        if not refs:
            return self._step(True, False, None)
        ready, _ = rayfast.wait(list(refs), num_returns=1, timeout=timeout_s)
        return self._step(refs[1] in ready, refs[0] in ready, refs[0])

    def __aiter__(self):
        return self

    async def __anext__(self):
        refs = self._wait_refs()
        if refs:
            futures = [asyncio.wrap_future(r.future()) for r in refs]
            done, _ = await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
            ref = self._step(futures[1] in done, futures[0] in done, refs[0])
        else:
            ref = self._step(True, False, None)
        if ref is _DONE:
            raise StopAsyncIteration
        return ref

    # --- state ----------------------------------------------------------------
    def completed(self):
        """A ref that becomes ready (value None) when the generator task has finished."""
        return generator_finished.remote(self._task)

    def next_ready(self):
        """True if next() would now give a ref whose value is ready (False at the end)."""
        refs = self._wait_refs()
        if not refs:
            return self._i < len(self._refs)
        import rayfast
        ready, _ = rayfast.wait([refs[0]], timeout=0)
        return bool(ready)

    def is_finished(self):
        """True once the task has finished and every item has been taken."""
        import rayfast
        ready, _ = rayfast.wait([self._task], timeout=0)
        return bool(ready) and self._i >= len(self._load())

    def _task_ref(self):
        return self._task

    def __reduce__(self):
        raise TypeError("An ObjectRefGenerator cannot be serialized (as in Ray): pass the refs it "
                        "yields to other tasks instead.")

    def __repr__(self):
        return f"ObjectRefGenerator({self._task!r})"


class DynamicObjectRefGenerator:
    """What `get` of a num_returns="dynamic" task's ref gives: its items' refs (iterate, len)."""

    def __init__(self, refs):
        self._refs = list(refs)

    def __iter__(self):
        return iter(self._refs)

    def __len__(self):
        return len(self._refs)

    def __repr__(self):
        # its size, not its refs: Ray's docs print one, and it may hold thousands
        return f"DynamicObjectRefGenerator({len(self._refs)} refs)"


def _generator_finished(_refs):
    return None


# Module-level, so that workers import it by name (rayfast.generator) rather than unpickle a copy.
generator_finished = RemoteFunction(_generator_finished, {"max_retries": 0, "num_cpus": 0})


def run_generator(cw, spec, gen, error_data):
    """Run a generator task in this worker, storing each value as it is yielded (see the module doc).

    error_data(exc) -> the serialized RayTaskError to store for an exception the generator raised.
    Returns the task's own result."""
    from rayfast._core.store import ObjectExistsError
    tid = spec[P.S_TASK_ID]
    refs = []
    try:
        for value in gen:
            key = P.return_id(tid, len(refs) + 2)
            try:
                refs.append(cw.put(value, key=key))
            except ObjectExistsError:   # a retry: the run that died stored this item already
                refs.append(ObjectRef(key))
    except Exception as e:
        key = P.return_id(tid, len(refs) + 2)
        data = error_data(e)
        refs.append(ObjectRef(key))
        cw._results[key] = (P.ERROR, data)
        cw.send((P.PUT, key, P.ERROR, data, ()))
    if spec[P.S_OPTIONS].get("generator") == "dynamic":
        return DynamicObjectRefGenerator(refs)
    return refs
