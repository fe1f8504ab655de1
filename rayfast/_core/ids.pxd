# C API of csrc/hash.h and csrc/ids.h, and the id classes.
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t

from rayfast._core.rf_errors cimport RF_OK


cdef extern from "hash.h" nogil:
    uint64_t rf_hash64(const void *data, size_t len)
    uint64_t rf_hash64_seed(const void *data, size_t len, uint64_t seed)
    void rf_derive_id(const uint8_t *parent, size_t n, uint64_t counter, uint8_t *out)


cdef extern from "ids.h" nogil:
    enum:
        RF_TASK_ID_SIZE
        RF_OBJECT_ID_SIZE
        RF_PUT_BIT
        RF_INDEX_MASK

    int rf_object_id_for_return(const uint8_t *task_id, uint32_t index, uint8_t *out)
    int rf_object_id_for_put(const uint8_t *task_id, uint32_t index, uint8_t *out)
    uint32_t rf_object_id_raw_index(const uint8_t *oid)
    uint32_t rf_object_id_index(const uint8_t *oid)
    int rf_object_id_is_put(const uint8_t *oid)

    ctypedef struct rf_reftable_stats:
        size_t live_ids
        size_t entries
        size_t dirty_ids
        size_t reported_ids
        uint64_t increfs
        uint64_t decrefs
        uint64_t drains
        uint64_t added_total
        uint64_t released_total

    ctypedef struct rf_reftable:
        pass

    rf_reftable *rf_reftable_new()
    void rf_reftable_free(rf_reftable *rt)
    int rf_reftable_incref(rf_reftable *rt, const uint8_t *oid, uint64_t h)
    int rf_reftable_decref(rf_reftable *rt, const uint8_t *oid, uint64_t h)
    int64_t rf_reftable_count(const rf_reftable *rt, const uint8_t *oid)
    int rf_reftable_set_reported(rf_reftable *rt, const uint8_t *oid)
    int rf_reftable_drain(rf_reftable *rt, const uint8_t **added, size_t *n_added,
                          const uint8_t **released, size_t *n_released)
    void rf_reftable_get_stats(const rf_reftable *rt, rf_reftable_stats *out)
    int rf_reftable_next_held(const rf_reftable *rt, size_t *pos, const uint8_t **oid)


cdef class TaskID:
    cdef uint8_t _id[16]
    cdef Py_hash_t _hash


cdef class ObjectID:
    cdef uint8_t _id[20]
    cdef uint64_t _h64      # rf_hash64 of _id; also the reference-table hash
    cdef Py_hash_t _hash
    cdef bytes _key         # binary(), made once: the runtime's dicts are keyed by it (its hash cached too)
    cdef bytes _binary(self)


cdef class ObjectRef(ObjectID):
    cdef bint _counted      # incref succeeded, so __dealloc__ must decref
