"""`rayfast.util.queue.Queue`: a FIFO queue shared by drivers, tasks and actors (Ray's ray.util.queue).

The items live in an async actor; the Queue object is a small handle that can
be passed to tasks and actors.
"""
from __future__ import annotations

import asyncio
import queue as _queue
from collections.abc import Iterable

import rayfast


class Empty(_queue.Empty):
    pass


class Full(_queue.Full):
    pass


class Queue:
    """A first-in first-out queue (maxsize <= 0: unbounded).

        q = Queue(maxsize=10)
        q.put(1); q.get()              # 1
        q.get(timeout=0.1)             # raises Empty after 0.1 s
    """

    def __init__(self, maxsize: int = 0, actor_options: dict | None = None):
        actor_options = actor_options or {}
        self.maxsize = maxsize
        self.actor = rayfast.remote(_QueueActor).options(**actor_options).remote(self.maxsize)

    def __len__(self):
        return self.size()

    def size(self):
        return rayfast.get(self.actor.qsize.remote())

    def qsize(self):
        return self.size()

    def empty(self):
        return rayfast.get(self.actor.empty.remote())

    def full(self):
        return rayfast.get(self.actor.full.remote())

    def put(self, item, block=True, timeout=None):
        """Add item; with block=False or after timeout seconds on a full queue, raise Full."""
        if not block:
            if not rayfast.get(self.actor.put_nowait.remote(item)):
                raise Full
            return
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        rayfast.get(self.actor.put.remote(item, timeout))

    async def put_async(self, item, block=True, timeout=None):
        if not block:
            if not await self.actor.put_nowait.remote(item):
                raise Full
            return
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        await self.actor.put.remote(item, timeout)

    def get(self, block=True, timeout=None):
        """Remove and return an item; with block=False or after timeout seconds on an empty queue, raise Empty."""
        if not block:
            ok, item = rayfast.get(self.actor.get_nowait.remote())
            if not ok:
                raise Empty
            return item
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        return rayfast.get(self.actor.get.remote(timeout))

    async def get_async(self, block=True, timeout=None):
        if not block:
            ok, item = await self.actor.get_nowait.remote()
            if not ok:
                raise Empty
            return item
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        return await self.actor.get.remote(timeout)

    def put_nowait(self, item):
        return self.put(item, block=False)

    def put_nowait_batch(self, items):
        if not isinstance(items, Iterable):
            raise TypeError("Argument 'items' must be an Iterable")
        rayfast.get(self.actor.put_nowait_batch.remote(list(items)))

    def get_nowait(self):
        return self.get(block=False)

    def get_nowait_batch(self, num_items):
        if not isinstance(num_items, int):
            raise TypeError("Argument 'num_items' must be an int")
        if num_items < 0:
            raise ValueError("'num_items' must be nonnegative")
        return rayfast.get(self.actor.get_nowait_batch.remote(num_items))

    def shutdown(self, force=False, grace_period_s=5):
        """End the queue's actor: at once if force, else gracefully (calls already sent finish),
        killing it if that takes longer than grace_period_s."""
        if self.actor is not None:
            if force:
                rayfast.kill(self.actor, no_restart=True)
            else:
                _, not_done = rayfast.wait([self.actor.__ray_terminate__.remote()], timeout=grace_period_s)
                if not_done:
                    rayfast.kill(self.actor, no_restart=True)
        self.actor = None


class _QueueActor:
    def __init__(self, maxsize):
        self.maxsize = maxsize
        self.queue = asyncio.Queue(self.maxsize)

    def qsize(self):
        return self.queue.qsize()

    def empty(self):
        return self.queue.empty()

    def full(self):
        return self.queue.full()

    async def put(self, item, timeout=None):
        try:
            await asyncio.wait_for(self.queue.put(item), timeout)
        except asyncio.TimeoutError:
            raise Full from None

    async def put_nowait_batch(self, items):
        if self.maxsize > 0 and len(items) + self.qsize() > self.maxsize:
            raise Full(f"Cannot add {len(items)} items to queue of size {self.qsize()} "
                       f"and maxsize {self.maxsize}.")
        for item in items:
            self.queue.put_nowait(item)

    async def get(self, timeout=None):
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            raise Empty from None

    async def put_nowait(self, item):
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            return False
        return True

    async def get_nowait(self):
        try:
            return True, self.queue.get_nowait()
        except asyncio.QueueEmpty:
            return False, None

    async def get_nowait_batch(self, num_items):
        if num_items > self.qsize():
            raise Empty(f"Cannot get {num_items} items from queue of size {self.qsize()}.")
        return [self.queue.get_nowait() for _ in range(num_items)]
