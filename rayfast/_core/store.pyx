# cython: language_level=3
"""The node's shared-memory object store (thin layer over csrc/store.c).

``get`` returns a read-only memoryview straight into the shared segment (or
into the mapped fallback file of an object kept outside it); the view's
exporter pins the object until it (and every view, slice or numpy array built on
it) is garbage-collected.
"""
from libc.stdint cimport uint8_t, uint32_t, int32_t, uint64_t, int64_t
from libc.errno cimport errno
from cpython.buffer cimport PyBuffer_FillInfo, PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE
from cpython.memoryview cimport PyMemoryView_FromObject
from cpython.exc cimport PyErr_CheckSignals
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from posix.unistd cimport getpid

import errno as errno_mod
import os
import weakref

from rayfast.exceptions import ObjectStoreFullError, GetTimeoutError, OutOfDiskError


class ObjectExistsError(KeyError, FileExistsError):
    """create_object/put_bytes on an object id that is already in the store."""

    def __str__(self):
        return str(self.args[0]) if self.args else "exists"


cdef int64_t _WAIT_SLICE_NS = 100_000_000  # wake up to check for signals (Ctrl-C)
# csrc/store.c refuses larger objects; checked first so that a size converts to uint64_t
_MAX_OBJECT_SIZE = 1 << 47


cdef class _Mapping:
    def __dealloc__(self):
        if self.s != NULL:
            rf_store_close(self.s)
            self.s = NULL


cdef class _Pin:
    def __getbuffer__(self, Py_buffer *buf, int flags):
        PyBuffer_FillInfo(buf, self, self.ptr, self.size, self.readonly, flags)

    def __releasebuffer__(self, Py_buffer *buf):
        pass

    def __dealloc__(self):
        # A forked child that inherited this object must not drop the parent's pin.
        if self.m is not None and self.m.s != NULL and self.pid == getpid():
            rf_store_unpin(self.m.s, self.idx)


cdef inline const uint8_t *_oid_ptr(object oid) except NULL:
    if not isinstance(oid, bytes):
        raise TypeError(f"object id must be bytes, not {type(oid).__name__}")
    if PyBytes_GET_SIZE(oid) != RF_OID_SIZE:
        raise ValueError(f"object id must be {RF_OID_SIZE} bytes, got {PyBytes_GET_SIZE(oid)}")
    return <const uint8_t *>PyBytes_AS_STRING(oid)


cdef str _hex(object oid):
    return oid.hex() if isinstance(oid, bytes) else repr(oid)


cdef class ObjectStore:
    """A node's object store segment, created by the node manager and attached by every process."""

    def __cinit__(self):
        self._m = None
        self._writers = {}

    def __init__(self):
        raise TypeError("use ObjectStore.create(name, capacity) or ObjectStore.attach(name)")

    @staticmethod
    cdef ObjectStore _wrap(rf_store *s):
        cdef ObjectStore st = ObjectStore.__new__(ObjectStore)
        cdef _Mapping m = _Mapping.__new__(_Mapping)
        m.s = s
        st._m = m
        st._name = rf_store_name(s).decode()
        st._capacity = rf_store_capacity(s)
        return st

    @staticmethod
    def create(str name, capacity, spill_dir=None, max_objects=0, fallback_dir=None):
        """Create the segment `name` ("/rayfast-<session>") with `capacity` bytes of object data.

        Objects larger than the segment can hold, and those that find it full of objects
        in use (create_object(fallback_if_full=True), a spilled object read back), go to
        files of their own in `fallback_dir` (None: they raise ObjectStoreFullError)."""
        cdef rf_store *s = NULL
        cdef int r
        cdef uint64_t cap, maxo = max_objects
        if not isinstance(capacity, int) or isinstance(capacity, bool):
            raise TypeError("capacity must be an int")
        if capacity < 4096:
            raise ValueError(f"capacity must be at least 4096 bytes, got {capacity}")
        cap = capacity
        bname = os.fsencode(name)
        if not name.startswith("/") or "/" in name[1:]:
            raise ValueError(f"segment name must look like '/rayfast-<session>', got {name!r}")
        bspill = b"" if spill_dir is None else os.fsencode(os.path.abspath(os.fspath(spill_dir)))
        bfallback = b"" if fallback_dir is None else os.fsencode(os.path.abspath(os.fspath(fallback_dir)))
        cdef const char *cname = bname
        cdef const char *cspill = bspill
        cdef const char *cfallback = bfallback
        with nogil:
            r = rf_store_create_ex(cname, cap, cspill, cfallback, maxo, &s)
        if r == 0:
            return ObjectStore._wrap(s)
        err = errno
        if r == RF_STORE_ENOSHM:
            try:
                vfs = os.statvfs("/dev/shm")
                avail = vfs.f_bavail * vfs.f_frsize
            except OSError:
                avail = -1
            raise MemoryError(
                f"cannot create object store {name!r} of {capacity} bytes: /dev/shm has only "
                f"{avail} bytes free; lower the object store capacity or enlarge /dev/shm")
        if r == RF_STORE_EINVAL:
            raise ValueError(f"invalid object store parameters: name={name!r} capacity={capacity}")
        if err == 17:
            raise FileExistsError(err, f"object store segment {name!r} already exists")
        raise OSError(err, f"cannot create object store {name!r} of {capacity} bytes: {os.strerror(err)}")

    @staticmethod
    def attach(str name):
        """Map an existing segment."""
        cdef rf_store *s = NULL
        cdef int r
        bname = os.fsencode(name)
        cdef const char *cname = bname
        with nogil:
            r = rf_store_attach(cname, &s)
        if r == 0:
            return ObjectStore._wrap(s)
        err = errno
        if r == RF_STORE_EBADSEG:
            raise OSError(f"{name!r} is not a rayfast object store segment (or it is still being created)")
        if err == 2:
            raise FileNotFoundError(err, f"no object store segment named {name!r}")
        raise OSError(err, f"cannot attach object store {name!r}: {os.strerror(err)}")

    # ------------------------------------------------------------------ helpers

    cdef rf_store *_s(self) except NULL:
        if self._m is None:
            raise ValueError(f"object store {self._name!r} is closed")
        return self._m.s

    cdef int _raise(self, int r, object oid, object size=0) except -1:
        cdef rf_store_stats st
        err = errno
        h = _hex(oid)
        if r == RF_STORE_FULL or r == RF_STORE_TABLE_FULL:
            used = -1
            lf = -1
            pinned = -1
            if self._m is not None and rf_store_stats_get(self._m.s, &st) == 0:
                used = st.bytes_used
                lf = st.largest_free_block
                pinned = st.num_pinned
            spill = rf_store_spill_dir(self._m.s).decode() if self._m is not None else ""
            if r == RF_STORE_TABLE_FULL:
                raise ObjectStoreFullError(
                    f"object store {self._name}: object table full ({st.max_objects} objects) "
                    f"while creating object {h}")
            if size + RF_STORE_BLOCK_OVERHEAD > self._capacity:
                raise ObjectStoreFullError(
                    f"object {h} of {size} bytes can never fit in object store {self._name} "
                    f"(capacity {self._capacity} bytes, largest possible object "
                    f"{self._capacity - RF_STORE_BLOCK_OVERHEAD} bytes)"
                    + ("" if self._fallback_dir() else " and it has no directory for fallback files"))
            raise ObjectStoreFullError(
                f"object store {self._name} is full: requested {size} bytes for object {h}, "
                f"capacity {self._capacity} bytes, used {used} bytes, largest free block {lf} bytes, "
                f"{pinned} pinned objects; spilling {'to ' + spill if spill else 'disabled'}")
        if r == RF_STORE_EXISTS:
            raise ObjectExistsError(f"object {h} already exists in the store")
        if r == RF_STORE_NOTFOUND:
            raise KeyError(f"object {h} not found in the store")
        if r == RF_STORE_TIMEOUT:
            raise GetTimeoutError(f"timed out waiting for object {h} to be sealed")
        if r == RF_STORE_EINVAL:
            raise ValueError(f"invalid argument for object {h}")
        if r == RF_STORE_ESTATE:
            raise ValueError(f"object {h} is in the wrong state for this operation")
        if r == RF_STORE_ESYS and err in (errno_mod.ENOSPC, errno_mod.EDQUOT):
            # as Ray's: the store had no room (what fills it is in use) and the disk none for a
            # spill or a fallback file either
            raise OutOfDiskError(
                f"object {h}" + (f" of {size} bytes" if size else "") + f": object store {self._name} "
                f"has no room and the disk none for spilling or a fallback file "
                f"(in {self._fallback_dir() or '-'}): {os.strerror(err)}")
        if r == RF_STORE_ESYS and size + RF_STORE_BLOCK_OVERHEAD > self._capacity:
            raise OSError(err, f"object {h} of {size} bytes is larger than object store {self._name} can hold "
                               f"(largest possible object {self._capacity - RF_STORE_BLOCK_OVERHEAD} bytes) and "
                               f"its fallback file in {self._fallback_dir()} could not be made: {os.strerror(err)}")
        if r == RF_STORE_ESYS:
            raise OSError(err, f"object store {self._name}, object {h}: {os.strerror(err)}")
        raise RuntimeError(f"object store error {r}: {rf_store_strerror(r).decode()}")

    cdef _apply(self, _id_op op, bytes oid, str wrong_state=None):
        """Run op on oid with the GIL released; raise its error (`wrong_state`
        words RF_STORE_ESTATE for this op)."""
        cdef rf_store *s = self._s()
        cdef const uint8_t *o = _oid_ptr(oid)
        cdef int r
        with nogil:
            r = op(s, o)
        if r == RF_STORE_ESTATE and wrong_state is not None:
            raise ValueError(f"object {oid.hex()} {wrong_state}")
        if r < 0:
            self._raise(r, oid)

    cdef _Pin _pin(self, uint32_t idx, char *ptr, Py_ssize_t size, bint readonly):
        cdef _Pin p = _Pin.__new__(_Pin)
        p.m = self._m
        p.idx = idx
        p.ptr = ptr
        p.size = size
        p.readonly = readonly
        p.pid = getpid()
        return p

    # --------------------------------------------------------------- properties

    @property
    def name(self):
        return self._name

    @property
    def capacity(self):
        return self._capacity

    @property
    def spill_dir(self):
        d = rf_store_spill_dir(self._s()).decode()
        return d or None

    cdef str _fallback_dir(self):
        return rf_store_fallback_dir(self._m.s).decode() if self._m is not None else ""

    @property
    def fallback_dir(self):
        """Where objects kept outside the segment go (None: there are none; they fail)."""
        self._s()
        return self._fallback_dir() or None

    @property
    def closed(self):
        return self._m is None

    # --------------------------------------------------------------- operations

    def create_object(self, bytes oid, size, fallback_if_full=False):
        """A writable memoryview of exactly `size` bytes for a new object (refcount 1, unsealed).
        fallback_if_full: when nothing can be evicted or spilled to make room, the object gets
        a file of its own in the fallback directory instead of ObjectStoreFullError."""
        cdef rf_store *s = self._s()
        cdef const uint8_t *o = _oid_ptr(oid)
        cdef uint32_t idx
        cdef uint8_t *ptr
        cdef int r
        cdef uint64_t n
        cdef int flags = RF_STORE_FALLBACK_IF_FULL if fallback_if_full else 0
        if not isinstance(size, int) or isinstance(size, bool):
            raise TypeError(f"size must be an int, not {type(size).__name__}")
        if size < 0:
            raise ValueError(f"object size must be >= 0, got {size}")
        if size > _MAX_OBJECT_SIZE:
            self._raise(RF_STORE_FULL, oid, size)
        n = size
        with nogil:
            r = rf_store_create_object_ex(s, o, n, 0, flags, &idx, &ptr)
        if r < 0:
            self._raise(r, oid, n)
        # the writable view pins the object too, so that it stays valid while it lives;
        # seal() releases it when nothing else exports from it
        with nogil:
            r = rf_store_pin(s, idx)
        if r < 0:
            self._raise(r, oid, n)
        mv = PyMemoryView_FromObject(self._pin(idx, <char *>ptr, <Py_ssize_t>n, False))
        self._writers[oid] = weakref.ref(mv)
        return mv

    cdef _drop_writer(self, bytes oid):
        ref = self._writers.pop(oid, None)
        if ref is not None:
            mv = ref()
            if mv is not None:
                try:
                    mv.release()
                except BufferError:  # a numpy array or slice still uses it: its pin stays
                    pass

    def put_bytes(self, bytes oid, data):
        """Create, copy `data` (any buffer) with the GIL released, and seal."""
        cdef rf_store *s = self._s()
        cdef const uint8_t *o = _oid_ptr(oid)
        cdef Py_buffer buf
        cdef uint32_t idx
        cdef uint8_t *ptr
        cdef int r
        cdef uint64_t n
        try:
            PyObject_GetBuffer(data, &buf, PyBUF_SIMPLE)
        except BufferError:  # not contiguous: copy once
            data = memoryview(data).tobytes()
            PyObject_GetBuffer(data, &buf, PyBUF_SIMPLE)
        try:
            n = <uint64_t>buf.len
            with nogil:
                r = rf_store_create_object(s, o, n, 0, &idx, &ptr)
                if r == 0:
                    rf_copy(ptr, buf.buf, n)
                    r = rf_store_seal(s, o)
            if r < 0:
                self._raise(r, oid, n)
        finally:
            PyBuffer_Release(&buf)

    def seal(self, bytes oid):
        """Make the object immutable and visible; wakes every waiting get()."""
        self._drop_writer(oid)
        self._apply(rf_store_seal, oid)

    def abort(self, bytes oid):
        """Discard an unsealed object (the writer failed)."""
        self._drop_writer(oid)
        self._apply(rf_store_abort, oid)

    def get(self, bytes oid, timeout=None):
        """A read-only, pinned memoryview of a sealed object; waits up to `timeout` s for the seal."""
        cdef rf_store *s = self._s()
        cdef const uint8_t *o = _oid_ptr(oid)
        cdef uint32_t idx
        cdef const uint8_t *ptr
        cdef uint64_t size
        cdef int r
        cdef int64_t remaining, slice_ns
        if timeout is None:
            remaining = -1
        else:
            if timeout < 0:
                raise ValueError(f"timeout must be >= 0 or None, got {timeout}")
            remaining = <int64_t>(timeout * 1e9)
        while True:
            if remaining < 0 or remaining > _WAIT_SLICE_NS:
                slice_ns = _WAIT_SLICE_NS
            else:
                slice_ns = remaining
            with nogil:
                r = rf_store_get(s, o, slice_ns, &idx, &ptr, &size, NULL)
            if r == 0:
                return PyMemoryView_FromObject(self._pin(idx, <char *>ptr, <Py_ssize_t>size, True))
            if r != RF_STORE_TIMEOUT or remaining == slice_ns:
                self._raise(r, oid)
            if remaining > 0:
                remaining -= slice_ns
            PyErr_CheckSignals()

    def contains(self, bytes oid):
        """True if the object is sealed (in memory or spilled)."""
        cdef int r = rf_store_contains(self._s(), _oid_ptr(oid))
        if r < 0:
            self._raise(r, oid)
        return r == 1

    def __contains__(self, oid):
        return self.contains(oid)

    def size_of(self, bytes oid):
        cdef uint64_t n
        cdef int r = rf_store_size_of(self._s(), _oid_ptr(oid), &n)
        if r < 0:
            self._raise(r, oid)
        return n

    def incref(self, bytes oid):
        cdef int r = rf_store_incref(self._s(), _oid_ptr(oid))
        if r < 0:
            self._raise(r, oid)

    def release(self, bytes oid):
        """Drop one reference; at 0 the object is freed once unpinned (and its spill file deleted)."""
        self._apply(rf_store_release, oid, "has no reference left to release")

    def delete(self, bytes oid):
        """Free the object regardless of its refcount, as soon as it is unpinned."""
        self._apply(rf_store_delete, oid)

    def release_process(self, pid):
        """Give back what process `pid` held: its pins and the objects it created but never
        sealed (and a restore or spill it was in the middle of). Returns (pins, objects).

        Only for a process that has exited: the memory under its views is reused."""
        cdef rf_store *s = self._s()
        cdef uint64_t pins = 0, objects = 0
        cdef int r
        cdef int32_t p = _pid_arg(pid, "pid")
        with nogil:
            r = rf_store_release_process(s, p, &pins, &objects)
        if r < 0:
            self._raise(r, None)
        return pins, objects

    def list_objects(self, written_by=None):
        """Ids of the sealed objects (in memory or spilled); written_by=pid: only those
        that process wrote whose creation reference nobody has released yet."""
        cdef rf_store *s = self._s()
        cdef uint64_t total = 0
        cdef int n
        cdef int32_t pid = 0
        cdef bytearray buf
        if written_by is not None:
            pid = _pid_arg(written_by, "written_by")
        n = rf_store_list(s, pid, NULL, 0, &total)
        while True:
            buf = bytearray((total + 16) * RF_OID_SIZE)
            n = rf_store_list(s, pid, <uint8_t *><char *>buf, total + 16, &total)
            if n < 0:
                self._raise(n, None)
            if <uint64_t>n >= total:
                break
        return [bytes(buf[i * RF_OID_SIZE:(i + 1) * RF_OID_SIZE]) for i in range(n)]

    def warm(self, end, start=0):
        """Fault in bytes [start, end) of the data area so that puts there run at memcpy
        speed (rayfast/node/store_warmer.py).

        Runs without the GIL; meant for a background thread of the node manager."""
        cdef _Mapping m = self._m           # kept alive while the GIL is released
        cdef rf_store *s = self._s()
        cdef uint64_t a = start, b = end
        cdef int rc
        with nogil:
            rc = rf_store_warm(s, a, b)
        if rc != 0:
            raise OSError(errno, f"warming the object store failed: {os.strerror(errno)}")

    def heap_top(self):
        """End of the highest block ever handed out: what lies above has never been used."""
        return rf_store_heap_top(self._s())

    def statistics(self):
        cdef rf_store_stats st
        cdef int r
        cdef rf_store *s = self._s()
        with nogil:
            r = rf_store_stats_get(s, &st)
        if r < 0:
            self._raise(r, None)
        return {
            "capacity": st.capacity,
            "bytes_used": st.bytes_used,
            "bytes_free": st.bytes_free,
            "num_objects": st.num_objects,
            "num_sealed": st.num_sealed,
            "num_pinned": st.num_pinned,
            "num_spilled": st.num_spilled,
            "evictions": st.evictions,
            "bytes_evicted": st.bytes_evicted,
            "spills": st.spills,
            "bytes_spilled": st.bytes_spilled,
            "restores": st.restores,
            "bytes_restored": st.bytes_restored,
            "largest_free_block": st.largest_free_block,
            "lock_recoveries": st.lock_recoveries,
            "max_objects": st.max_objects,
            "pins_reclaimed": st.pins_reclaimed,
            "objects_reclaimed": st.objects_reclaimed,
            "num_fallback": st.num_fallback,
            "bytes_fallback": st.bytes_fallback,
        }

    def check(self):
        """Verify every invariant of the allocator, index and LRU (tests); raises AssertionError."""
        cdef int r = rf_store_check(self._s())
        if r != 0:
            raise AssertionError(f"object store {self._name} is inconsistent (check code {r})")

    def _offset(self, bytes oid):
        """(payload offset in the data area, allocated block size) of an in-memory object (tests)."""
        cdef uint64_t off, alloc
        cdef int r = rf_store_debug_offset(self._s(), _oid_ptr(oid), &off, &alloc)
        if r < 0:
            self._raise(r, oid)
        return off, alloc

    def close(self):
        """Forget the mapping (idempotent). Views still alive keep it mapped until they go."""
        self._m = None
        self._writers.clear()

    def unlink(self):
        """Remove the segment name and every spill file of this store (node shutdown)."""
        cdef int r = rf_store_unlink(self._s())
        if r < 0:
            err = errno
            raise OSError(err, f"cannot unlink object store {self._name}: {os.strerror(err)}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        state = "closed" if self._m is None else f"capacity={self._capacity}"
        return f"<ObjectStore {self._name} {state}>"

    def __reduce__(self):
        return (ObjectStore.attach, (self._name,))


cdef int32_t _pid_arg(object pid, str name) except 0:
    if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid < 2 ** 31:
        raise ValueError(f"{name} must be a positive process id, got {pid!r}")
    return pid


def write_into(dest, Py_ssize_t offset, src):
    """Copy the bytes of buffer `src` into the writable buffer `dest` (an object being
    written) at `offset`, with the GIL released: no intermediate bytes, large copies
    streamed past the cache and shared with a helper thread (rf_copy)."""
    cdef Py_buffer d, b
    PyObject_GetBuffer(dest, &d, PyBUF_WRITABLE)
    try:
        PyObject_GetBuffer(src, &b, PyBUF_SIMPLE)
        try:
            if offset < 0 or b.len > d.len - offset:
                raise ValueError(f"write_into: {b.len} bytes at offset {offset} do not fit in {d.len}")
            with nogil:
                rf_copy(<char *>d.buf + offset, b.buf, <uint64_t>b.len)
        finally:
            PyBuffer_Release(&b)
    finally:
        PyBuffer_Release(&d)


def memcpy_bandwidth(nbytes=1 << 28):
    """GB/s (1e9 bytes/s) of a plain memcpy of `nbytes` in C, best of 5 (benchmark reference)."""
    cdef uint64_t n = nbytes
    cdef double r
    with nogil:
        r = rf_memcpy_bandwidth(n)
    return r


def copy_statistics():
    """This process's large copies into the store: how many were shared with the
    helper thread, in how many chunks, and how many of those the helper copied."""
    cdef rf_copy_stats st
    rf_copy_stats_get(&st)
    return {"copies": st.copies, "chunks": st.chunks, "helper_chunks": st.helper_chunks}
