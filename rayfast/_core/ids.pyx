"""Task and object ids, and ObjectRef with its process-local reference table.

Thin wrappers over csrc/ids.c and csrc/hash.c. A task id is 16 bytes; an
object id is its task's id plus a 4-byte little-endian index (1..N for
returns, high bit set for put objects).
"""
import os
import types

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint32_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcmp, memcpy, memset

TASK_ID_SIZE = 16
OBJECT_ID_SIZE = 20

cdef bytes _NIL_TASK = b"\0" * 16

# Hooks installed by the runtime: (future_fn, await_fn); None until set.
cdef object _future_fn = None
cdef object _await_fn = None

# The process-local reference table. All access happens with the GIL held.
cdef rf_reftable *_reftable = rf_reftable_new()
if _reftable == NULL:
    raise MemoryError("rayfast: cannot allocate the object reference table")


cdef inline Py_hash_t _py_hash(uint64_t h) noexcept:
    cdef Py_hash_t r = <Py_hash_t>h
    return -2 if r == -1 else r


cdef inline TaskID _task_id_from(const uint8_t *p):
    return TaskID(PyBytes_FromStringAndSize(<const char *>p, 16))


cdef inline uint32_t _check_index(object index, uint32_t lo) except? 0:
    if not (lo <= index < 0x80000000):
        raise ValueError(f"object index must be in [{lo}, 2**31), got {index!r}")
    return <uint32_t>index


cdef class TaskID:
    """A 16-byte task id."""

    def __cinit__(self, bytes binary not None):
        if PyBytes_GET_SIZE(binary) != 16:
            raise ValueError(f"TaskID needs exactly 16 bytes, got {PyBytes_GET_SIZE(binary)}")
        memcpy(self._id, PyBytes_AS_STRING(binary), 16)
        self._hash = _py_hash(rf_hash64(self._id, 16))

    @staticmethod
    def random():
        return TaskID(os.urandom(16))

    @staticmethod
    def nil():
        return TaskID(_NIL_TASK)

    @staticmethod
    def from_hex(str s):
        return TaskID(bytes.fromhex(s))

    def is_nil(self):
        cdef uint8_t zero[16]
        memset(zero, 0, 16)
        return memcmp(self._id, zero, 16) == 0

    def child(self, counter):
        """The id of the counter-th task submitted by this task (deterministic)."""
        if not (0 <= counter < 2**64):
            raise ValueError(f"counter must be in [0, 2**64), got {counter!r}")
        cdef uint8_t out[16]
        rf_derive_id(self._id, 16, <uint64_t>counter, out)
        return _task_id_from(out)

    def object_id(self, index):
        """The id of this task's index-th return value (1-based)."""
        cdef uint8_t out[20]
        rf_object_id_for_return(self._id, _check_index(index, 1), out)
        return ObjectID(PyBytes_FromStringAndSize(<char *>out, 20))

    def put_id(self, index):
        """The id of the index-th object put() by this task (index >= 0)."""
        cdef uint8_t out[20]
        rf_object_id_for_put(self._id, _check_index(index, 0), out)
        return ObjectID(PyBytes_FromStringAndSize(<char *>out, 20))

    def binary(self):
        return PyBytes_FromStringAndSize(<char *>self._id, 16)

    def hex(self):
        return self.binary().hex()

    def __hash__(self):
        return self._hash

    def __eq__(self, other):
        if type(other) is not TaskID:
            return NotImplemented
        return memcmp(self._id, (<TaskID>other)._id, 16) == 0

    def __ne__(self, other):
        if type(other) is not TaskID:
            return NotImplemented
        return memcmp(self._id, (<TaskID>other)._id, 16) != 0

    def __repr__(self):
        return f"TaskID({self.hex()})"

    def __reduce__(self):
        return (TaskID, (self.binary(),))


cdef class ObjectID:
    """A 20-byte object id: producing task id + little-endian index."""

    def __cinit__(self, bytes binary not None):
        if PyBytes_GET_SIZE(binary) != 20:
            raise ValueError(f"{type(self).__name__} needs exactly 20 bytes, got {PyBytes_GET_SIZE(binary)}")
        memcpy(self._id, PyBytes_AS_STRING(binary), 20)
        self._h64 = rf_hash64(self._id, 20)
        self._hash = _py_hash(self._h64)

    @classmethod
    def from_hex(cls, str s):
        return cls(bytes.fromhex(s))

    @classmethod
    def from_binary(cls, bytes binary not None):
        return cls(binary)

    @classmethod
    def nil(cls):
        """The all-zero id (Ray's ObjectRef.nil()): no object has it."""
        return cls(b"\0" * 20)

    @classmethod
    def from_random(cls):
        return cls(os.urandom(20))

    @staticmethod
    def size():
        """Bytes in an id."""
        return 20

    def is_nil(self):
        cdef uint8_t zero[20]
        memset(zero, 0, 20)
        return memcmp(self._id, zero, 20) == 0

    def binary(self):
        return self._binary()

    cdef bytes _binary(self):
        if self._key is None:
            self._key = PyBytes_FromStringAndSize(<char *>self._id, 20)
        return self._key

    def hex(self):
        return self._binary().hex()

    def task_id(self):
        return _task_id_from(self._id)

    def index(self):
        """The index without the put bit."""
        return rf_object_id_index(self._id)

    def is_put(self):
        return rf_object_id_is_put(self._id) != 0

    def __hash__(self):
        return self._hash

    # ObjectID and ObjectRef with the same bytes are equal (and hash equal).
    def __eq__(self, other):
        if not isinstance(other, ObjectID):
            return NotImplemented
        return memcmp(self._id, (<ObjectID>other)._id, 20) == 0

    def __ne__(self, other):
        if not isinstance(other, ObjectID):
            return NotImplemented
        return memcmp(self._id, (<ObjectID>other)._id, 20) != 0

    def __repr__(self):
        return f"ObjectID({self.hex()})"

    def __reduce__(self):
        return (type(self), (self.binary(),))


cdef class ObjectRef(ObjectID):
    """A reference to an object; each live instance counts in the process's
    reference table (see local_ref_count and drain_ref_changes)."""

    def __cinit__(self, bytes binary not None):
        # ObjectID.__cinit__ has already validated and hashed the id.
        if rf_reftable_incref(_reftable, self._id, self._h64) != RF_OK:
            raise MemoryError("rayfast: out of memory in the object reference table")
        self._counted = True

    def __dealloc__(self):
        if self._counted:
            rf_reftable_decref(_reftable, self._id, self._h64)

    def __repr__(self):
        return f"ObjectRef({self.hex()})"

    def __class_getitem__(cls, item):
        """ObjectRef[int] in annotations, as Ray's generic ObjectRef."""
        return types.GenericAlias(cls, item)

    def future(self):
        """A concurrent.futures.Future for the object's value (runtime hook)."""
        if _future_fn is None:
            raise RuntimeError("ObjectRef.future(): no runtime hooks set (is rayfast initialised?)")
        return _future_fn(self)

    def as_future(self):
        """An asyncio future for the object's value, on the running event loop (as Ray's)."""
        import asyncio
        return asyncio.wrap_future(self.future())

    def __await__(self):
        if _await_fn is None:
            raise RuntimeError("await ObjectRef: no runtime hooks set (is rayfast initialised?)")
        return _await_fn(self).__await__()

    def job_id(self):
        """The JobID of the job that made this ref (Ray's)."""
        from rayfast.runtime_context import ref_job_id
        return ref_job_id(self)

    def owner_address(self):
        """The owner's address as Ray's: an rpc::Address, protobuf-encoded (bytes)."""
        from rayfast.runtime_context import ref_owner_address
        return ref_owner_address(self)

    def call_site(self):
        """Where the ref was made: "", as Ray's unless it records creation sites, which rayfast
        does not."""
        return ""

    def __reduce__(self):
        return (ObjectRef, (self.binary(),))


def set_ref_hooks(future_fn, await_fn):
    """Install the runtime's ObjectRef.future() and await implementations."""
    global _future_fn, _await_fn
    _future_fn = future_fn
    _await_fn = await_fn


cdef inline const uint8_t *_oid_bytes(object id) except NULL:
    if isinstance(id, ObjectID):
        return (<ObjectID>id)._id
    if not isinstance(id, bytes):
        raise TypeError(f"expected a 20-byte object id, got {type(id).__name__}")
    if PyBytes_GET_SIZE(id) != 20:
        raise ValueError(f"object id must be exactly 20 bytes, got {PyBytes_GET_SIZE(id)}")
    return <const uint8_t *>PyBytes_AS_STRING(id)


def set_reported(id):
    """Mark id (held here) as already known to the node manager: no `added` for it."""
    if rf_reftable_set_reported(_reftable, _oid_bytes(id)) != RF_OK:
        raise KeyError(f"no live ObjectRef for {_oid_bytes_hex(id)}")


cdef str _oid_bytes_hex(id):
    return id.hex() if isinstance(id, (bytes, ObjectID)) else repr(id)


def local_ref_count(id):
    """Live ObjectRef instances for id (20 bytes, or an ObjectID) in this process."""
    return rf_reftable_count(_reftable, _oid_bytes(id))


cdef list _unpack_ids(const uint8_t *p, size_t n):
    cdef list out = []
    cdef size_t i
    for i in range(n):
        out.append(PyBytes_FromStringAndSize(<const char *>p + i * 20, 20))
    return out


def drain_ref_changes():
    """(added, released) id bytes since the previous call.

    added: ids this process now holds a ref for but had not reported held;
    released: ids with no ref left that were reported held before or were
    touched since the previous call (an id created and dropped between two
    calls is released: its holder may have been counted without a report).
    """
    cdef const uint8_t *added
    cdef const uint8_t *released
    cdef size_t na, nr
    if rf_reftable_drain(_reftable, &added, &na, &released, &nr) != RF_OK:
        raise MemoryError("rayfast: out of memory draining reference changes")
    return _unpack_ids(added, na), _unpack_ids(released, nr)


def held_ref_keys():
    """The id bytes of every object this process holds a ref to now."""
    cdef size_t pos = 0
    cdef const uint8_t *oid
    out = []
    while rf_reftable_next_held(_reftable, &pos, &oid):
        out.append(PyBytes_FromStringAndSize(<const char *>oid, 20))
    return out


def ref_table_statistics():
    cdef rf_reftable_stats s
    rf_reftable_get_stats(_reftable, &s)
    return {
        "live_ids": s.live_ids,
        "entries": s.entries,
        "dirty_ids": s.dirty_ids,
        "reported_ids": s.reported_ids,
        "increfs": s.increfs,
        "decrefs": s.decrefs,
        "drains": s.drains,
        "added_total": s.added_total,
        "released_total": s.released_total,
    }


def wait_split(list refs, dict results, Py_ssize_t num_returns):
    """wait()'s pass over its list: (ready, not_ready, missing) where ready holds the
    first num_returns refs whose key is in results, in the order given, not_ready the
    others in order, and missing their keys if ready is short (else empty). None if the
    list holds anything but ObjectRefs (a generator: the caller's slower path); raises
    ValueError if it holds one object twice.

    A loop of `ray.wait(refs)` over a shrinking list calls this once per call, so it
    is O(n) per call: duplicates are found in a table of the ids' own hashes instead of
    a set() of refs, and once ready is full the rest of the list is copied, not looked
    up (Python took ~0.3 us per ref and call, this ~0.02)."""
    cdef Py_ssize_t i, n = len(refs), nready = 0, rest = n
    cdef size_t cap = 16, mask, slot
    while cap < <size_t>(2 * n):
        cap <<= 1
    mask = cap - 1
    cdef uint32_t *table = <uint32_t *>calloc(cap, sizeof(uint32_t))
    if table == NULL:
        raise MemoryError()
    cdef object r
    cdef ObjectID o, other
    try:
        for i in range(n):
            r = refs[i]
            if type(r) is not ObjectRef:
                return None
            o = <ObjectID>r
            slot = <size_t>o._h64 & mask
            while table[slot]:
                other = <ObjectID>refs[table[slot] - 1]
                if other._h64 == o._h64 and memcmp(other._id, o._id, 20) == 0:
                    raise ValueError("wait() requires a list of unique ObjectRefs: the list has duplicates")
                slot = (slot + 1) & mask
            table[slot] = <uint32_t>(i + 1)
    finally:
        free(table)
    cdef list ready = [], not_ready = []
    for i in range(n):
        r = refs[i]
        if (<ObjectID>r)._binary() in results:
            ready.append(r)
            nready += 1
            if nready == num_returns:
                rest = i + 1
                break
        else:
            not_ready.append(r)
    if nready == num_returns:
        if rest < n:
            not_ready.extend(refs[rest:])
        return ready, not_ready, []
    return ready, not_ready, [(<ObjectID>r)._binary() for r in not_ready]
