# C API of csrc/deps.h and the DependencyTable class.
from libc.stdint cimport int64_t, uint8_t, uint64_t

from rayfast._core.rf_errors cimport RF_EEXIST, RF_OK


cdef extern from "deps.h" nogil:
    enum:
        RF_DEPS_ID_SIZE

    ctypedef struct rf_deps_stats:
        size_t waiting_tasks
        size_t ready_objects
        size_t waited_objects
        uint64_t added_total
        uint64_t released_total
        uint64_t removed_total

    ctypedef struct rf_deps:
        pass

    rf_deps *rf_deps_new()
    void rf_deps_free(rf_deps *d)
    int rf_deps_add_task(rf_deps *d, int64_t handle, const uint8_t *ids, size_t n, size_t *missing)
    int rf_deps_mark_ready(rf_deps *d, const uint8_t *oid, const int64_t **released, size_t *n)
    void rf_deps_mark_missing(rf_deps *d, const uint8_t *oid)
    int rf_deps_is_ready(const rf_deps *d, const uint8_t *oid)
    int rf_deps_remove_task(rf_deps *d, int64_t handle)
    int rf_deps_missing(const rf_deps *d, int64_t handle, const uint8_t **ids, size_t *n)
    size_t rf_deps_waiting(const rf_deps *d)
    void rf_deps_get_stats(const rf_deps *d, rf_deps_stats *out)


cdef class DependencyTable:
    cdef rf_deps *_d
