"""The dependency table (csrc/deps.c): tasks, as int64 handles, waiting for
objects, as 20-byte ids (bytes or ObjectID)."""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from rayfast._core.ids cimport ObjectID

# Deps of most tasks fit here, avoiding a malloc per add_task.
cdef enum:
    STACK_DEPS = 16


cdef inline const uint8_t *_oid(object oid) except NULL:
    if type(oid) is bytes:
        if PyBytes_GET_SIZE(oid) != 20:
            raise ValueError(f"object id must be exactly 20 bytes, got {PyBytes_GET_SIZE(oid)}: {oid!r}")
        return <const uint8_t *>PyBytes_AS_STRING(oid)
    if isinstance(oid, ObjectID):
        return (<ObjectID>oid)._id
    if isinstance(oid, bytes):
        return _oid(bytes(oid))  # a bytes subclass: same rules
    raise ValueError(f"object id must be 20 bytes, got {type(oid).__name__}")


cdef class DependencyTable:
    """Tasks waiting for objects; mark_ready releases them in add order."""

    def __cinit__(self):
        self._d = rf_deps_new()
        if self._d == NULL:
            raise MemoryError("DependencyTable: out of memory")

    def __dealloc__(self):
        rf_deps_free(self._d)

    def add_task(self, int64_t handle, deps):
        """Record the task as waiting on its deps that are not ready.

        Returns how many distinct deps are missing; 0 means runnable now, and
        then nothing is stored. ValueError if a dep is not a 20-byte id or the
        handle is already waiting.
        """
        cdef list seq = deps if type(deps) is list else list(deps)
        cdef Py_ssize_t n = len(seq), i
        cdef uint8_t stack_buf[STACK_DEPS * 20]
        cdef uint8_t *buf = stack_buf
        cdef size_t missing = 0
        cdef int rc
        if n > STACK_DEPS:
            buf = <uint8_t *>malloc(n * 20)
            if buf == NULL:
                raise MemoryError("DependencyTable.add_task: out of memory")
        try:
            for i in range(n):
                memcpy(buf + i * 20, _oid(seq[i]), 20)
            rc = rf_deps_add_task(self._d, handle, buf, n, &missing)
        finally:
            if buf != stack_buf:
                free(buf)
        if rc == RF_EEXIST:
            raise ValueError(f"task {handle} is already waiting in the dependency table")
        if rc != RF_OK:
            raise MemoryError("DependencyTable.add_task: out of memory")
        return missing

    def mark_ready(self, oid):
        """Record oid as ready (idempotent); return the handles it released, in add order."""
        cdef const int64_t *rel
        cdef size_t n, i
        if rf_deps_mark_ready(self._d, _oid(oid), &rel, &n) != RF_OK:
            raise MemoryError("DependencyTable.mark_ready: out of memory")
        return [rel[i] for i in range(n)]

    def mark_missing(self, oid):
        """oid is no longer ready; tasks already released are unaffected."""
        rf_deps_mark_missing(self._d, _oid(oid))

    def is_ready(self, oid):
        return rf_deps_is_ready(self._d, _oid(oid)) != 0

    def remove_task(self, int64_t handle):
        """Cancel a waiting task; False if it was not waiting."""
        return rf_deps_remove_task(self._d, handle) == RF_OK

    def missing(self, int64_t handle):
        """The deps a waiting task still lacks; KeyError if it is not waiting."""
        cdef const uint8_t *ids
        cdef size_t n, i
        if rf_deps_missing(self._d, handle, &ids, &n) != RF_OK:
            raise KeyError(handle)
        return [PyBytes_FromStringAndSize(<const char *>ids + i * 20, 20) for i in range(n)]

    def __contains__(self, int64_t handle):
        cdef const uint8_t *ids
        cdef size_t n
        return rf_deps_missing(self._d, handle, &ids, &n) == RF_OK

    def __len__(self):
        return rf_deps_waiting(self._d)

    def statistics(self):
        cdef rf_deps_stats s
        rf_deps_get_stats(self._d, &s)
        return {
            "waiting_tasks": s.waiting_tasks,
            "ready_objects": s.ready_objects,
            "waited_objects": s.waited_objects,
            "released_total": s.released_total,
            "added_total": s.added_total,
            "removed_total": s.removed_total,
        }

    def __repr__(self):
        return f"DependencyTable(waiting={rf_deps_waiting(self._d)})"
