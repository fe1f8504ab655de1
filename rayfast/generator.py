"""Generator tasks: a remote generator function returns an ObjectRefGenerator (Ray's generator API).

rayfast runs the generator to completion in the worker: each yielded value is
put in the object store and the task's result is the list of their refs.
Iterating the ObjectRefGenerator yields those refs in order, so programs get
Ray's results and errors; what differs is timing: the first ref becomes
available when the whole generator has finished, not after its first yield.
An exception raised by the generator is raised by `get` of the ref that
follows the last value it yielded, as in Ray.
"""
from __future__ import annotations

import os

import rayfast
from rayfast._core.ids import ObjectRef
from rayfast.exceptions import RayError


class ObjectRefGenerator:
    """One ObjectRef per value the generator task yielded, in order (iterate it, sync or async)."""

    def __init__(self, source):
        # source: a ref to the task's result (a list of refs), or that list itself
        self._source = source
        self._refs = None
        self._i = 0

    def _load(self):
        if self._refs is None:
            src = self._source
            if isinstance(src, ObjectRef):
                try:
                    self._refs = list(rayfast.get(src))
                except RayError:
                    self._refs = [src]   # the task failed as a whole: get(src) raises its error
            else:
                self._refs = list(src)
        return self._refs

    def __iter__(self):
        return self

    def __next__(self):
        refs = self._load()
        if self._i >= len(refs):
            raise StopIteration
        ref = refs[self._i]
        self._i += 1
        return ref

    def __len__(self):
        return len(self._load())

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self._refs is None and isinstance(self._source, ObjectRef):
            try:
                await self._source
            except Exception:
                pass
        try:
            return next(self)
        except StopIteration:
            raise StopAsyncIteration from None

    def completed(self):
        """A ref that is ready once the generator task has finished."""
        return self._source if isinstance(self._source, ObjectRef) else rayfast.put(None)

    def is_finished(self):
        src = self._source
        if not isinstance(src, ObjectRef):
            return True
        ready, _ = rayfast.wait([src], timeout=0)
        return bool(ready) and self._i >= len(self._load())

    def __reduce__(self):
        if isinstance(self._source, ObjectRef):
            raise TypeError("An ObjectRefGenerator of a streaming generator task cannot be serialized "
                            "(as in Ray); pass the refs it yields instead.")
        return (ObjectRefGenerator, (self._refs if self._refs is not None else list(self._source),))

    def __repr__(self):
        return f"ObjectRefGenerator({self._source!r})"


DynamicObjectRefGenerator = ObjectRefGenerator


@rayfast.remote(max_retries=0)
def _reraise(err):
    raise err


def materialize(cw, spec, gen):
    """Run gen in this worker: a list of refs to its values, then one that raises its error if it failed."""
    from rayfast import protocol as P
    from rayfast.core_worker import format_exception
    from rayfast.exceptions import RayTaskError

    refs = []
    try:
        for v in gen:
            refs.append(cw.put(v))
    except Exception as e:
        err = e if isinstance(e, RayTaskError) else RayTaskError(
            spec[P.S_NAME], format_exception(e), e, os.getpid(), "127.0.0.1")
        try:
            refs.append(_reraise.remote(err))
        except Exception:
            refs.append(_reraise.remote(RayTaskError(spec[P.S_NAME], err.traceback_str, None,
                                                     os.getpid(), "127.0.0.1")))
    if spec[P.S_OPTIONS].get("generator") == "dynamic":
        return ObjectRefGenerator(refs)
    return refs
