# C API of csrc/lineage.h and the LineageTable class.
from libc.stdint cimport uint8_t, uint64_t

from rayfast._core.rf_errors cimport RF_OK


cdef extern from "lineage.h" nogil:
    enum:
        RF_LINEAGE_ID_SIZE

    ctypedef struct rf_lineage_stats:
        size_t entries
        size_t bytes
        uint64_t puts
        uint64_t removes

    ctypedef struct rf_lineage:
        pass

    rf_lineage *rf_lineage_new()
    void rf_lineage_free(rf_lineage *l)
    int rf_lineage_put(rf_lineage *l, const uint8_t *task_id, const uint8_t *spec, size_t len)
    int rf_lineage_get(const rf_lineage *l, const uint8_t *task_id, const uint8_t **spec, size_t *len)
    int rf_lineage_contains(const rf_lineage *l, const uint8_t *task_id)
    int rf_lineage_remove(rf_lineage *l, const uint8_t *task_id)
    size_t rf_lineage_len(const rf_lineage *l)
    void rf_lineage_get_stats(const rf_lineage *l, rf_lineage_stats *out)


cdef class LineageTable:
    cdef rf_lineage *_l
