# C API of csrc/spin.h and the Spinner class.
from libc.stdint cimport int64_t, uint32_t, uint64_t


cdef extern from "spin.h" nogil:
    ctypedef struct rf_spin_stats:
        uint64_t hits
        uint64_t misses
        uint64_t skipped
        uint64_t spun_ns

    ctypedef struct rf_spin:
        int64_t max_ns

    void rf_spin_init(rf_spin *s, int64_t max_ns)
    int rf_spin_wait(rf_spin *s, int fd)
    void rf_spin_get_stats(const rf_spin *s, rf_spin_stats *out)


cdef class Spinner:
    cdef rf_spin _s
