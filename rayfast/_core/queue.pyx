"""FIFO of int64 task handles (csrc/queue.c). Handles are >= 0; -1 means empty."""


cdef class TaskQueue:
    """A growable ring buffer of task handles."""

    def __cinit__(self):
        rf_queue_init(&self._q)

    def __dealloc__(self):
        rf_queue_destroy(&self._q)

    cdef int push_c(self, int64_t handle) except -1:
        if handle < 0:
            raise ValueError(f"task handle must be >= 0, got {handle}")
        if rf_queue_push(&self._q, handle) != RF_OK:
            raise MemoryError("TaskQueue: out of memory")
        return 0

    cdef int64_t pop_c(self) noexcept:
        cdef int64_t h
        if rf_queue_pop(&self._q, &h) != RF_OK:
            return -1
        return h

    def push(self, int64_t handle):
        self.push_c(handle)

    def push_front(self, int64_t handle):
        if handle < 0:
            raise ValueError(f"task handle must be >= 0, got {handle}")
        if rf_queue_push_front(&self._q, handle) != RF_OK:
            raise MemoryError("TaskQueue: out of memory")

    def pop(self):
        """The front handle, or -1 when empty."""
        return self.pop_c()

    def peek(self):
        """The front handle without removing it, or -1 when empty."""
        cdef int64_t h
        if rf_queue_peek(&self._q, &h) != RF_OK:
            return -1
        return h

    def remove(self, int64_t handle):
        """Remove the first occurrence of handle (O(n)); False if absent."""
        return rf_queue_remove(&self._q, handle) == RF_OK

    def clear(self):
        rf_queue_clear(&self._q)

    def __len__(self):
        return rf_queue_len(&self._q)

    def __bool__(self):
        return rf_queue_len(&self._q) != 0

    def statistics(self):
        cdef rf_queue_stats s
        rf_queue_get_stats(&self._q, &s)
        return {
            "length": s.length,
            "pushed": s.pushed,
            "popped": s.popped,
            "removed": s.removed,
            "max_length": s.max_length,
        }

    def __repr__(self):
        return f"TaskQueue(len={rf_queue_len(&self._q)})"
