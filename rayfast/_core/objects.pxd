# The node manager's object table (objects.pyx); declared here so that other
# Cython modules can reach the fields without attribute lookups.

cdef class ObjectEntry:
    cdef public bytes oid
    cdef public int state            # PENDING or READY
    cdef public object kind          # the value's kind (protocol INLINE/STORE/ERROR), None while pending
    cdef public object data          # inline bytes, store size, or serialized error
    cdef public set holders          # ids of the clients holding ObjectRefs to it
    cdef public long task_refs       # pending tasks that will read it
    cdef public long contained_in    # stored values that contain a ref to it
    cdef public object contains      # ids of the refs its own value contains
    cdef public list subscribers     # clients to push the value to when it is ready, or None
    cdef public object producer      # handle of its producing task while queued or running
    cdef public list waiters         # handles of normal tasks that waited for it when submitted, or None


cdef class ObjectTable:
    cdef public dict entries
    cdef readonly long freed
    cdef readonly long long inline_bytes
    cdef object store
    cdef object on_free
    cdef object on_orphan
    cdef object store_kind

    cdef ObjectEntry _entry(self, bytes oid)
    cdef int _maybe_free(self, ObjectEntry e) except -1
    cdef int _free(self, ObjectEntry e) except -1
