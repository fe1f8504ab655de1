"""`ActorPool`: run work over a fixed set of actors, Ray's `ray.util.ActorPool`."""
from __future__ import annotations

import rayfast
from rayfast.exceptions import ActorDiedError


class ActorPool:
    """Schedule `fn(actor, value)` calls over a pool of actors, one call per actor at a time.

        pool = ActorPool([A.remote(), A.remote()])
        list(pool.map(lambda a, v: a.double.remote(v), [1, 2, 3]))   # [2, 4, 6]
    """

    def __init__(self, actors):
        self._idle_actors = list(actors)
        self._future_to_actor = {}      # future key -> (task index, actor)
        self._index_to_future = {}      # task index -> future
        self._next_task_index = 0
        self._next_return_index = 0
        self._pending_submits = []

    # --- bulk -----------------------------------------------------------------
    def map(self, fn, values):
        """Results of fn(actor, v) for each v, in the order of values (a generator)."""
        self._drop_previous()
        for v in values:
            self.submit(fn, v)

        def gen():
            while self.has_next():
                yield self.get_next()
        return gen()

    def map_unordered(self, fn, values):
        """Like map, but results come as they finish."""
        # Ray: this one waits out what earlier submissions have not returned, dropping their
        # results (so it also follows a get_next_unordered(), which map's dropping may not)
        while self.has_next():
            self.get_next_unordered()
        for v in values:
            self.submit(fn, v)

        def gen():
            while self.has_next():
                yield self.get_next_unordered()
        return gen()

    def _drop_previous(self):
        # Ray: a new map ignores what earlier submissions have not returned yet.
        while self.has_next():
            try:
                self.get_next(timeout=0, ignore_if_timedout=True)
            except TimeoutError:
                pass

    # --- one at a time ----------------------------------------------------------
    def submit(self, fn, value):
        """Run fn(actor, value) on an idle actor, or queue it until one is free."""
        if self._idle_actors:
            actor = self._idle_actors.pop()
            future = fn(actor, value)
            key = tuple(future) if isinstance(future, list) else future
            self._future_to_actor[key] = (self._next_task_index, actor)
            self._index_to_future[self._next_task_index] = future
            self._next_task_index += 1
        else:
            self._pending_submits.append((fn, value))

    def has_next(self):
        """True if there are results not yet returned by get_next / get_next_unordered."""
        return bool(self._future_to_actor)

    def get_next(self, timeout=None, ignore_if_timedout=False):
        """The next result in submission order (TimeoutError if not ready within timeout)."""
        if not self.has_next():
            raise StopIteration("No more results to get")
        if self._next_return_index >= self._next_task_index:
            raise ValueError("It is not allowed to call get_next() after get_next_unordered().")
        future = self._index_to_future[self._next_return_index]
        timed_out = False
        if timeout is not None:
            wait_on = list(future) if isinstance(future, list) else [future]
            ready, _ = rayfast.wait(wait_on, num_returns=len(wait_on), timeout=timeout)
            if len(ready) < len(wait_on):
                if not ignore_if_timedout:
                    raise TimeoutError("Timed out waiting for result")
                timed_out = True
        del self._index_to_future[self._next_return_index]
        self._next_return_index += 1
        key = tuple(future) if isinstance(future, list) else future
        _, actor = self._future_to_actor.pop(key)
        if timed_out:
            self._return_actor(actor)
            raise TimeoutError(f"Timed out waiting for result. The task {future} has been ignored.")
        return self._get_result(future, actor)

    def get_next_unordered(self, timeout=None, ignore_if_timedout=False):
        """Any next result, whichever finishes first (TimeoutError if none within timeout)."""
        if not self.has_next():
            raise StopIteration("No more results to get")
        firsts = {(k[0] if isinstance(k, tuple) else k): k for k in self._future_to_actor}
        ready, _ = rayfast.wait(list(firsts), num_returns=1, timeout=timeout)
        if not ready:
            if not ignore_if_timedout:
                raise TimeoutError("Timed out waiting for result")
            raise TimeoutError("Timed out waiting for result. No task has been ignored.")
        key = firsts[ready[0]]
        index, actor = self._future_to_actor.pop(key)
        future = self._index_to_future.pop(index)
        self._next_return_index = max(self._next_return_index, index + 1)
        return self._get_result(future, actor)

    def _get_result(self, future, actor):
        # As Ray's: an actor whose call failed because it died leaves the pool, so later
        # submissions go to the live ones instead of failing on it too.
        alive = True
        try:
            return rayfast.get(future)
        except ActorDiedError:
            alive = False
            raise
        finally:
            self._return_actor(actor, alive)

    def _return_actor(self, actor, alive=True):
        if alive:
            self._idle_actors.append(actor)
        if self._pending_submits and self._idle_actors:
            self.submit(*self._pending_submits.pop(0))

    # --- membership -------------------------------------------------------------
    def has_free(self):
        """True if an actor is idle and nothing waits to be submitted."""
        return bool(self._idle_actors) and not self._pending_submits

    def pop_idle(self):
        """Remove and return an idle actor, or None if none is free."""
        if self.has_free():
            return self._idle_actors.pop()
        return None

    def push(self, actor):
        """Add an actor to the pool (ValueError if it already belongs to it)."""
        busy = [a for _, a in self._future_to_actor.values()]
        if actor in self._idle_actors or actor in busy:
            raise ValueError("Actor already belongs to current ActorPool")
        self._return_actor(actor)
