"""Poll a socket briefly before blocking on it (csrc/spin.c explains why and how it backs off)."""
from rayfast._core.rf_errors cimport RF_EINVAL


cdef class Spinner:
    """One per connection a reader expects quick answers on."""

    def __cinit__(self, double max_seconds):
        rf_spin_init(&self._s, <int64_t>(max_seconds * 1e9))

    def wait(self, fd):
        """True once fd is readable (or closed); False when the budget ran out or spinning is backing off."""
        cdef int cfd = fd
        cdef int r
        with nogil:
            r = rf_spin_wait(&self._s, cfd)
        if r == RF_EINVAL:
            raise ValueError(f"Spinner.wait: {fd} is not an open file descriptor")
        return r == 1

    def statistics(self):
        cdef rf_spin_stats st
        rf_spin_get_stats(&self._s, &st)
        return {"max_us": self._s.max_ns / 1000.0, "hits": st.hits, "misses": st.misses,
                "skipped": st.skipped, "spun_us": st.spun_ns / 1000.0}
