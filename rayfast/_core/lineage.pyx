"""Lineage table (csrc/lineage.c): task id (16 bytes, or a TaskID) -> the
task's serialized spec. C keeps its own copy of each spec."""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE

from rayfast._core.ids cimport TaskID


cdef inline const uint8_t *_tid(object task_id) except NULL:
    if isinstance(task_id, TaskID):
        return (<TaskID>task_id)._id
    if not isinstance(task_id, bytes):
        raise ValueError(f"task id must be 16 bytes, got {type(task_id).__name__}")
    if PyBytes_GET_SIZE(task_id) != 16:
        raise ValueError(f"task id must be exactly 16 bytes, got {PyBytes_GET_SIZE(task_id)}")
    return <const uint8_t *>PyBytes_AS_STRING(task_id)


cdef class LineageTable:
    """task id -> spec bytes."""

    def __cinit__(self):
        self._l = rf_lineage_new()
        if self._l == NULL:
            raise MemoryError("LineageTable: out of memory")

    def __dealloc__(self):
        rf_lineage_free(self._l)

    def put(self, task_id, bytes spec not None):
        """Store a copy of spec for task_id, replacing any previous one."""
        if rf_lineage_put(self._l, _tid(task_id), <const uint8_t *>PyBytes_AS_STRING(spec),
                          PyBytes_GET_SIZE(spec)) != RF_OK:
            raise MemoryError(f"LineageTable.put: out of memory for a {len(spec)}-byte spec")

    def get(self, task_id):
        """The stored spec, or None."""
        cdef const uint8_t *spec
        cdef size_t n
        if rf_lineage_get(self._l, _tid(task_id), &spec, &n) != RF_OK:
            return None
        return PyBytes_FromStringAndSize(<const char *>spec, n)

    def remove(self, task_id):
        """Drop the entry; False if there was none."""
        return rf_lineage_remove(self._l, _tid(task_id)) == RF_OK

    def __contains__(self, task_id):
        if isinstance(task_id, bytes) and PyBytes_GET_SIZE(task_id) != 16:
            return False
        return rf_lineage_contains(self._l, _tid(task_id)) != 0

    def __len__(self):
        return rf_lineage_len(self._l)

    def statistics(self):
        cdef rf_lineage_stats s
        rf_lineage_get_stats(self._l, &s)
        return {"entries": s.entries, "bytes": s.bytes, "puts": s.puts, "removes": s.removes}

    def __repr__(self):
        return f"LineageTable(entries={rf_lineage_len(self._l)})"
