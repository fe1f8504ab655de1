"""Faulting in the object store ahead of its use, in the background.

The segment is tmpfs memory that the kernel allocates and zeroes page by page
on first write: a put into never-touched memory runs at ~1.3 GB/s here, into
touched memory at memcpy speed (a 1 MB put: ~0.8 ms against ~0.07 ms). So the
node keeps a margin of touched memory above what the allocator has handed out
(it hands out low offsets first; `ObjectStore.heap_top` is the highest end),
faulting it in from a thread of its own at the lowest CPU priority while the
puts go on: a driver putting a gigabyte of arrays finds its memory ready, and
the node commits only what was used plus the margin, not the whole store.

The node manager's loop calls `used()` when an object reaches the store (a
cheap comparison); the thread sleeps until the top comes within the margin.
It starts with the first object in the store, not at start-up: zeroing
hundreds of megabytes on the idle core as the first tasks ran took a fifth to
a third off tiny tasks called one at a time in the first half second after
`init()` (the zeroing evicts the caches of the processes taking turns on that
core), for puts that may never come. The first large put pays for its own
memory instead.
"""
import os
import threading

CHUNK = 32 << 20   # bytes per warm() call: stop() waits for one at most


class StoreWarmer:
    def __init__(self, store, ahead):
        self._store = store
        self._ahead = ahead
        self._limit = store.capacity
        self._target = 0                 # nothing until the store is used (see above)
        self._warmed = 0
        self._stopping = False
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rayfast-warm-store", daemon=True)
        self._thread.start()

    def used(self):
        """The loop saw a new object in the store: move the margin up if the top came near it."""
        top = self._store.heap_top()
        if top + self._ahead > self._target and self._target < self._limit:
            self._target = min(self._limit, top + self._ahead)
            self._wake.set()

    def statistics(self):
        return {"warmed_bytes": self._warmed, "target_bytes": self._target}

    def stop(self):
        """Before the store is closed: the thread ends after the chunk it is faulting in."""
        self._stopping = True
        self._wake.set()
        self._thread.join()

    def _run(self):
        try:   # only a core nobody else wants, as the store's copy helper (csrc/memcopy.c)
            os.sched_setscheduler(threading.get_native_id(), os.SCHED_IDLE, os.sched_param(0))
        except (OSError, AttributeError):
            pass
        while True:
            self._wake.wait()
            self._wake.clear()
            while not self._stopping and self._warmed < self._target:
                end = min(self._target, self._warmed + CHUNK)
                try:
                    self._store.warm(end, self._warmed)
                except Exception:
                    return   # only an optimisation (no MADV_POPULATE_WRITE before Linux 5.14)
                self._warmed = end
            if self._stopping:
                return
