# C API of csrc/queue.h and the TaskQueue class.
from libc.stdint cimport int64_t, uint64_t

from rayfast._core.rf_errors cimport RF_OK


cdef extern from "queue.h" nogil:
    ctypedef struct rf_queue_stats:
        size_t length
        uint64_t pushed
        uint64_t popped
        uint64_t removed
        size_t max_length

    ctypedef struct rf_queue:
        size_t len

    void rf_queue_init(rf_queue *q)
    void rf_queue_destroy(rf_queue *q)
    int rf_queue_push(rf_queue *q, int64_t handle)
    int rf_queue_push_front(rf_queue *q, int64_t handle)
    int rf_queue_pop(rf_queue *q, int64_t *out)
    int rf_queue_peek(const rf_queue *q, int64_t *out)
    int rf_queue_remove(rf_queue *q, int64_t handle)
    void rf_queue_clear(rf_queue *q)
    size_t rf_queue_len(const rf_queue *q)
    void rf_queue_get_stats(const rf_queue *q, rf_queue_stats *out)


cdef class TaskQueue:
    cdef rf_queue _q
    cdef int push_c(self, int64_t handle) except -1
    cdef int64_t pop_c(self) noexcept
