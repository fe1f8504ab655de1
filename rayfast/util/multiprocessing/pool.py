"""`Pool`: a drop-in for `multiprocessing.Pool` whose processes are actors (Ray's
`ray.util.multiprocessing.Pool`).

Each pool process is an actor holding no CPU (as Ray's, so that the tasks a pool function
starts are not starved by its own pool); the pool is never bigger than the cluster's CPUs.
Work travels in chunks, as in the standard library: one actor call runs a chunk of items and
returns one outcome per item, an exception raised by an item travelling as a value together
with its formatted traceback. So one failing item fails only itself: `map` raises the first
failing item's exception (in order), `imap` raises it at that item's position and goes on, and
the exception is re-raised as its original type with the remote traceback as its
`__cause__`, exactly as `multiprocessing` shows it. Where the standard library would hang (a
pool process that dies, a terminated pool), the chunk's actor call fails and its items raise
that error (`ActorDiedError`) at `get` instead.

An `AsyncResult` is just the refs of its chunks: `wait`, `ready` and `get` are `rayfast.wait`
and `rayfast.get` on them, so pending results cost no thread. Only a result with a callback
gets a (daemon) thread, which calls it once every chunk is back, as the standard library's
result handler does; such a result is ready only after its callback has run, as there.

`imap` and `imap_unordered` take items from their iterable lazily, one chunk per pool process
in flight, the next chunk going to the process whose chunk came back: an endless iterable, or
one of big items, never floods the object store. `close()` submits what the iterators it
still has not taken, then ends each process gracefully after the calls sent to it (Ray's
`__ray_terminate__`), so outstanding work finishes; `terminate()` kills them.
"""
from __future__ import annotations

import functools
import itertools
import logging
import threading
import time
import traceback
import weakref
from collections import deque
from multiprocessing import TimeoutError
from multiprocessing.pool import RemoteTraceback

import rayfast
from rayfast.core_worker import format_exception
from rayfast.exceptions import RayError

logger = logging.getLogger(__name__)


class _Failed:
    """An item's exception and its traceback text, as a chunk returns it."""

    __slots__ = ("exc", "tb")

    def __init__(self, exc, tb):
        self.exc, self.tb = exc, tb

    def __reduce__(self):
        return _Failed, (self.exc, self.tb)

    def reraise(self):
        # The standard library's form: the remote traceback as the cause, between triple quotes.
        self.exc.__cause__ = RemoteTraceback(self.tb)
        raise self.exc


class _PoolActor:
    """One pool process."""

    def __init__(self, initializer, initargs):
        if initializer is not None:
            initializer(*initargs)

    def ready(self):
        pass

    def run_chunk(self, func, items, star):
        out = []
        for item in items:
            try:
                out.append(func(*item) if star else func(item))
            except Exception as e:
                out.append(_Failed(e, '\n"""\n' + format_exception(e) + '"""'))
        return out


def _chunk_outcomes(ref, size):
    """The outcomes of a chunk whose ref is ready: its list, or `size` times the call's error."""
    try:
        return rayfast.get(ref)
    except RayError as e:
        return [_Failed(e, "".join(traceback.format_exception(e)))] * size


def _value(outcome):
    if isinstance(outcome, _Failed):
        outcome.reraise()
    return outcome


def _remaining(deadline):
    return None if deadline is None else max(0.0, deadline - time.monotonic())


class AsyncResult:
    """The result of `apply_async`, `map_async` or `starmap_async`."""

    def __init__(self, chunks, single, callback=None, error_callback=None):
        self._chunks = chunks          # [(ref, number of items)]
        self._single = single
        self._outcomes = None          # flat list once every chunk is back
        self._callbacks_done = None
        if callback is not None or error_callback is not None:
            self._callbacks_done = threading.Event()
            threading.Thread(target=self._run_callbacks, args=(callback, error_callback), daemon=True,
                             name="rayfast-pool-callback").start()

    def _chunks_ready(self, timeout):
        refs = [ref for ref, _ in self._chunks]
        ready, _ = rayfast.wait(refs, num_returns=len(refs), timeout=timeout)
        return len(ready) == len(refs)

    def _collect(self):
        if self._outcomes is None:
            self._outcomes = [o for ref, n in self._chunks for o in _chunk_outcomes(ref, n)]
        return self._outcomes

    def _run_callbacks(self, callback, error_callback):
        try:
            self._chunks_ready(None)
            outcomes = self._collect()
            failed = next((o for o in outcomes if isinstance(o, _Failed)), None)
            if failed is None:
                if callback is not None:
                    callback(outcomes[0] if self._single else list(outcomes))
            elif error_callback is not None:
                error_callback(failed.exc)
        finally:
            self._callbacks_done.set()

    def wait(self, timeout=None):
        """Return once the result is ready or `timeout` seconds have passed."""
        if self._callbacks_done is not None:
            self._callbacks_done.wait(timeout)
        else:
            self._chunks_ready(timeout)

    def ready(self):
        if self._callbacks_done is not None:
            return self._callbacks_done.is_set()
        return self._chunks_ready(0)

    def successful(self):
        """True if no item raised; ValueError while the result is not ready."""
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return not any(isinstance(o, _Failed) for o in self._collect())

    def get(self, timeout=None):
        """The result (a list for the map forms); the first failing item's exception is raised,
        `multiprocessing.TimeoutError` if it is not ready within `timeout` seconds."""
        self.wait(timeout)
        if not self.ready():
            raise TimeoutError
        values = [_value(o) for o in self._collect()]
        return values[0] if self._single else values


class IMapIterator:
    """The iterator `imap` (in order) and `imap_unordered` (as they finish) return."""

    def __init__(self, pool, func, iterable, chunksize, ordered):
        self._pool, self._func, self._ordered = pool, func, ordered
        self._items = iter(iterable)
        self._chunksize = chunksize
        self._exhausted = False
        self._submitted = 0              # chunks submitted so far
        self._in_flight = {}             # ref -> (chunk index, size, pool process index)
        self._back = {}                  # chunk index -> outcomes (in order only)
        self._next_chunk = 0             # the chunk whose items come next (in order only)
        self._ready = deque()            # outcomes to hand out
        for i in range(pool._processes):
            self._submit_next(i)

    def _submit_next(self, actor_index):
        if self._exhausted:
            return
        chunk = list(itertools.islice(self._items, self._chunksize))
        if len(chunk) < self._chunksize:
            self._exhausted = True
            self._pool._iterators.discard(self)
        if chunk:
            ref = self._pool._run(actor_index, self._func, chunk, False)
            self._in_flight[ref] = (self._submitted, len(chunk), actor_index)
            self._submitted += 1

    def _submit_rest(self):
        """The pool is closing: submit every item not taken yet (round robin)."""
        for i in itertools.cycle(range(self._pool._processes)):
            if self._exhausted:
                return
            self._submit_next(i)

    def __iter__(self):
        return self

    def next(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ready:
            if self._ordered and self._next_chunk in self._back:
                self._ready.extend(self._back.pop(self._next_chunk))
                self._next_chunk += 1
                continue
            if not self._in_flight:
                raise StopIteration
            done, _ = rayfast.wait(list(self._in_flight), num_returns=1, timeout=_remaining(deadline))
            if not done:
                raise TimeoutError
            index, size, actor_index = self._in_flight.pop(done[0])
            outcomes = _chunk_outcomes(done[0], size)
            if self._ordered:
                self._back[index] = outcomes
            else:
                self._ready.extend(outcomes)
            self._submit_next(actor_index)
        return _value(self._ready.popleft())

    __next__ = next


def _check_chunksize(chunksize):
    if chunksize is not None and (not isinstance(chunksize, int) or chunksize < 1):
        raise ValueError(f"Chunksize must be 1+, not {chunksize!r}")


def _check_func(func):
    if not callable(func):
        raise TypeError(f"func must be a callable, not {type(func).__name__}")


class Pool:
    """A pool of actor processes with the `multiprocessing.Pool` API.

        with Pool(2) as pool:
            pool.map(f, range(10))

    `processes` defaults to the cluster's CPUs; a cluster is started (`init(num_cpus=processes)`,
    or `init(address=ray_address)`) if none is. `context` is accepted and ignored, as Ray's;
    `ray_remote_args` are the pool actors' options.
    """

    def __init__(self, processes=None, initializer=None, initargs=(), maxtasksperchild=None, context=None,
                 ray_address=None, ray_remote_args=None):
        if processes is not None and (not isinstance(processes, int) or isinstance(processes, bool)):
            raise TypeError(f"processes must be an int or None, not {type(processes).__name__}")
        if processes is not None and processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if maxtasksperchild is not None and (not isinstance(maxtasksperchild, int) or maxtasksperchild < 1):
            raise ValueError("maxtasksperchild must be a positive int or None")
        if context is not None:
            logger.warning("The 'context' argument is ignored by rayfast's Pool: its processes are actors.")
        if not rayfast.is_initialized():
            if ray_address is not None and ray_address != "local":
                rayfast.init(address=ray_address)
            else:
                rayfast.init(num_cpus=processes)
        cpus = int(rayfast.cluster_resources().get("CPU", 0))
        if processes is None:
            processes = max(cpus, 1)
        if processes > cpus:
            raise ValueError(f"Tried to start a pool with {processes} processes on a cluster that has only "
                             f"{cpus} CPUs")
        self._processes = processes
        self._initializer, self._initargs = initializer, tuple(initargs or ())
        self._maxtasksperchild = maxtasksperchild
        self._actor_class = rayfast.remote(_PoolActor).options(**{"num_cpus": 0, **(ray_remote_args or {})})
        self._closed = False
        self._stopping = []              # (handle, its __ray_terminate__ ref) of processes told to end
        self._iterators = weakref.WeakSet()   # imap iterators with items not taken yet
        self._next = 0                   # round robin for apply_async
        self._actors = [self._actor_class.remote(self._initializer, self._initargs) for _ in range(processes)]
        self._counts = [0] * processes
        # As Ray's: an initializer that raises fails the constructor here, not the first task.
        rayfast.get([a.ready.remote() for a in self._actors])

    # --- internals --------------------------------------------------------------------------
    def _check_running(self):
        if self._closed:
            raise ValueError("Pool not running")

    def _run(self, i, func, items, star):
        ref = self._actors[i].run_chunk.remote(func, items, star)
        self._counts[i] += 1
        if self._maxtasksperchild is not None and self._counts[i] >= self._maxtasksperchild:
            # stdlib: a process that has run maxtasksperchild tasks (chunks) is replaced
            self._stop(self._actors[i])
            self._actors[i] = self._actor_class.remote(self._initializer, self._initargs)
            self._counts[i] = 0
        return ref

    def _chunksize(self, n, chunksize):
        if chunksize is not None:
            return chunksize
        size, extra = divmod(n, self._processes * 4)   # the standard library's choice
        return size + 1 if extra else max(size, 1)

    def _map_async(self, func, iterable, chunksize, star, callback, error_callback):
        self._check_running()
        _check_func(func)
        _check_chunksize(chunksize)
        items = iterable if hasattr(iterable, "__len__") else list(iterable)
        chunksize = self._chunksize(len(items), chunksize)
        it = iter(items)
        chunks = []
        while True:
            chunk = list(itertools.islice(it, chunksize))
            if not chunk:
                break
            chunks.append((self._run(len(chunks) % self._processes, func, chunk, star), len(chunk)))
        return AsyncResult(chunks, False, callback, error_callback)

    # --- the multiprocessing.Pool API ---------------------------------------------------------
    def apply_async(self, func, args=(), kwds=None, callback=None, error_callback=None, *, kwargs=None):
        """func(*args, **kwds) in a pool process; an AsyncResult. (`kwargs=` is Ray's name.)"""
        self._check_running()
        _check_func(func)
        kwds = kwds or kwargs
        if kwds:
            func = functools.partial(func, **kwds)
        i, self._next = self._next, (self._next + 1) % self._processes
        return AsyncResult([(self._run(i, func, [tuple(args or ())], True), 1)], True, callback,
                           error_callback)

    def apply(self, func, args=(), kwds=None, *, kwargs=None):
        return self.apply_async(func, args, kwds, kwargs=kwargs).get()

    def map_async(self, func, iterable, chunksize=None, callback=None, error_callback=None):
        return self._map_async(func, iterable, chunksize, False, callback, error_callback)

    def map(self, func, iterable, chunksize=None):
        return self._map_async(func, iterable, chunksize, False, None, None).get()

    def starmap_async(self, func, iterable, chunksize=None, callback=None, error_callback=None):
        return self._map_async(func, iterable, chunksize, True, callback, error_callback)

    def starmap(self, func, iterable, chunksize=None):
        return self._map_async(func, iterable, chunksize, True, None, None).get()

    def imap(self, func, iterable, chunksize=1):
        return self._imap(func, iterable, chunksize, True)

    def imap_unordered(self, func, iterable, chunksize=1):
        return self._imap(func, iterable, chunksize, False)

    def _imap(self, func, iterable, chunksize, ordered):
        self._check_running()
        _check_func(func)
        _check_chunksize(chunksize)
        it = IMapIterator(self, func, iterable, chunksize, ordered)
        if not it._exhausted:
            self._iterators.add(it)
        return it

    def _stop(self, actor):
        # a graceful end: after the calls already sent to it
        self._stopping.append((actor, actor.__ray_terminate__.remote()))

    def close(self):
        """No more work; the processes end once what was submitted (all of every imap) is done."""
        if self._closed:
            return
        for it in list(self._iterators):
            it._submit_rest()
        self._closed = True
        for a in self._actors:
            self._stop(a)

    def terminate(self):
        """Stop the processes now; results not back yet raise ActorDiedError, imap iterators take
        no more items."""
        self._closed = True
        for it in list(self._iterators):
            it._exhausted = True
        self._iterators.clear()
        for a in self._actors + [a for a, _ in self._stopping]:
            rayfast.kill(a)

    def join(self):
        """Wait for the processes of a closed pool to end."""
        if not self._closed:
            raise ValueError("Pool is still running")
        refs = [ref for _, ref in self._stopping]
        if refs:
            rayfast.wait(refs, num_returns=len(refs))
        self._stopping = []

    def __enter__(self):
        self._check_running()
        return self

    def __exit__(self, *exc_info):
        self.terminate()

    def __repr__(self):
        state = "CLOSE" if self._closed else "RUN"
        return f"<{type(self).__name__} state={state} pool_size={self._processes}>"
