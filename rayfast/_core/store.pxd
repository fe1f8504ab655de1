# C API of the node object store (csrc/store.h) and the Cython classes over it.
from libc.stdint cimport uint8_t, uint32_t, int32_t, uint64_t, int64_t

cdef extern from "store.h" nogil:
    enum:
        RF_OID_SIZE
        RF_STORE_ALIGN
        RF_STORE_BLOCK_OVERHEAD
        RF_STORE_OK
        RF_STORE_FULL
        RF_STORE_EXISTS
        RF_STORE_NOTFOUND
        RF_STORE_TIMEOUT
        RF_STORE_EINVAL
        RF_STORE_ESYS
        RF_STORE_ESTATE
        RF_STORE_TABLE_FULL
        RF_STORE_ENOSHM
        RF_STORE_EBADSEG

    ctypedef struct rf_store:
        pass

    ctypedef struct rf_store_stats:
        uint64_t capacity
        uint64_t bytes_used
        uint64_t bytes_free
        uint64_t num_objects
        uint64_t num_sealed
        uint64_t num_pinned
        uint64_t num_spilled
        uint64_t evictions
        uint64_t bytes_evicted
        uint64_t spills
        uint64_t bytes_spilled
        uint64_t restores
        uint64_t bytes_restored
        uint64_t largest_free_block
        uint64_t lock_recoveries
        uint64_t max_objects
        uint64_t pins_reclaimed
        uint64_t objects_reclaimed
        uint64_t num_fallback
        uint64_t bytes_fallback

    const char *rf_store_strerror(int code)
    int rf_store_create_ex(const char *name, uint64_t capacity, const char *spill_dir,
                           const char *fallback_dir, uint64_t max_objects, rf_store **out)
    int rf_store_attach(const char *name, rf_store **out)
    void rf_store_close(rf_store *s)
    int rf_store_unlink(rf_store *s)
    const char *rf_store_name(const rf_store *s)
    uint64_t rf_store_capacity(const rf_store *s)
    const char *rf_store_spill_dir(const rf_store *s)
    const char *rf_store_fallback_dir(const rf_store *s)
    uint64_t rf_store_max_object_size(const rf_store *s)
    int rf_store_warm(rf_store *s, uint64_t start, uint64_t end)
    uint64_t rf_store_heap_top(const rf_store *s)
    int rf_store_create_object(rf_store *s, const uint8_t *oid, uint64_t data_size, uint64_t meta_size,
                               uint32_t *idx_out, uint8_t **ptr_out)
    int RF_STORE_FALLBACK_IF_FULL
    int rf_store_create_object_ex(rf_store *s, const uint8_t *oid, uint64_t data_size, uint64_t meta_size,
                                  int flags, uint32_t *idx_out, uint8_t **ptr_out)
    int rf_store_seal(rf_store *s, const uint8_t *oid)
    int rf_store_abort(rf_store *s, const uint8_t *oid)
    int rf_store_get(rf_store *s, const uint8_t *oid, int64_t timeout_ns, uint32_t *idx_out,
                     const uint8_t **ptr_out, uint64_t *data_size_out, uint64_t *meta_size_out)
    int rf_store_pin(rf_store *s, uint32_t idx)
    int rf_store_unpin(rf_store *s, uint32_t idx)
    int rf_store_contains(rf_store *s, const uint8_t *oid)
    int rf_store_size_of(rf_store *s, const uint8_t *oid, uint64_t *size_out)
    int rf_store_incref(rf_store *s, const uint8_t *oid)
    int rf_store_release(rf_store *s, const uint8_t *oid)
    int rf_store_delete(rf_store *s, const uint8_t *oid)
    int rf_store_release_process(rf_store *s, int32_t pid, uint64_t *pins_out, uint64_t *objects_out)
    int rf_store_list(rf_store *s, int32_t written_by, uint8_t *buf, uint64_t max, uint64_t *total)
    int rf_store_stats_get(rf_store *s, rf_store_stats *out)
    int rf_store_check(rf_store *s)
    int rf_store_debug_offset(rf_store *s, const uint8_t *oid, uint64_t *off_out, uint64_t *alloc_out)

cdef extern from "memcopy.h" nogil:
    ctypedef struct rf_copy_stats:
        uint64_t copies
        uint64_t chunks
        uint64_t helper_chunks

    void rf_copy(void *dst, const void *src, uint64_t n)
    void rf_copy_stats_get(rf_copy_stats *out)
    double rf_memcpy_bandwidth(uint64_t nbytes)


# seal, abort, release and delete: one object id in, an RF_STORE_* code out.
ctypedef int (*_id_op)(rf_store *s, const uint8_t *oid) noexcept nogil


cdef class _Mapping:
    """Owns the process's mapping; unmapped when the last user (store or view) goes."""
    cdef rf_store *s


cdef class _Pin:
    """Buffer exporter over one object's bytes; holds a pin until garbage-collected."""
    cdef _Mapping m
    cdef uint32_t idx
    cdef char *ptr
    cdef Py_ssize_t size
    cdef bint readonly
    cdef int pid


cdef class ObjectStore:
    cdef _Mapping _m
    cdef str _name
    cdef uint64_t _capacity
    cdef dict _writers
    cdef object __weakref__

    @staticmethod
    cdef ObjectStore _wrap(rf_store *s)
    cdef rf_store *_s(self) except NULL
    cdef int _raise(self, int r, object oid, object size=*) except -1
    cdef _Pin _pin(self, uint32_t idx, char *ptr, Py_ssize_t size, bint readonly)
    cdef _drop_writer(self, bytes oid)
    cdef str _fallback_dir(self)
    cdef _apply(self, _id_op op, bytes oid, str wrong_state=*)
