"""Turning values into bytes and back, with ObjectRefs and zero-copy buffers.

Two encodings:

* inline — a plain pickle (protocol 5, buffers in band). Used for values
  below the inline threshold; they ride inside messages. Two compact forms
  skip pickle's per-call work for what tasks pass by the thousand; their
  first byte tells them apart (a protocol 5 pickle starts with 0x80):

      ARRAY:   1 | 16 | dtype.str padded with NULs to 16 bytes in all | the bytes of a 1-D
               array of plain numbers (the padding keeps them aligned in a bytes object)
      ARGS:    2 | pickle of (args, kwargs, spots): a call's arguments with each such
               array swapped for the bytes of its data; spots: ((position, ARRAY header), ...)
      INT:     3 | int64, little-endian          (an int that fits)
      FLOAT:   4 | float64, little-endian
* store — the layout written into the shared-memory store for large values:

      uint32 nbuf | uint32 kind | uint64 pickle_len | nbuf * (uint64 off, uint64 len)
      pickle bytes | pad to 64 | buffer 0 | pad | buffer 1 ...

  The pickle is taken with a buffer_callback so numpy arrays (and any
  PickleBuffer) stay out of band; reading builds them on read-only
  memoryview slices of the segment, so `get` of a large array is a view of
  shared memory, not a copy. A lone contiguous ndarray (kind 1) is stored
  as (dtype, shape, order) plus its bytes and rebuilt with np.frombuffer.

Numpy arrays come back read-only from every encoding, values and a call's
arguments alike, as Ray's do (its serialization guide: a task that writes
into an argument array fails with "assignment destination is read-only",
and is to copy it first): over the store they are views of shared memory,
inline they are rebuilt over their pickled bytes (no copy there either).

ObjectRefs inside a value are pickled through persistent_id: the pickler
records every ref it meets (the node manager counts them as held by the
containing object) and the unpickler rebuilds them as live ObjectRefs.
"""
import collections
import io
import pickle
import types
import struct

import cloudpickle
import numpy as np

from rayfast._core.ids import ObjectRef
from rayfast._core.store import write_into
from rayfast.config import ALIGNMENT

_HEAD = struct.Struct("<IIQ")
_BUF = struct.Struct("<QQ")
_PRIMITIVES = (int, float, str, bytes, bool, type(None))
_RAW_ARRAY = 1   # layout kind: one ndarray, no pickle
_SMALL_ARRAY = 64 * 1024   # arrays below this pickle in band with the C pickler
_dumps = pickle.dumps
_loads = pickle.loads


def _code_reduce_keeping_filename(code):
    """cloudpickle >= 3.1 renames the file of code it pickles by value to
    "<dynamic-code>"; remote tracebacks would lose their file names and source
    lines. Put the real file name back."""
    func, args = _cloudpickle_code_reduce(code)
    return func, tuple(code.co_filename if a == "<dynamic-code>" and type(a) is str else a for a in args)


_cloudpickle_code_reduce = getattr(getattr(cloudpickle, "cloudpickle", None), "_code_reduce", None)
_DISPATCH = {types.CodeType: _code_reduce_keeping_filename} if _cloudpickle_code_reduce else {}


class _Pickler(cloudpickle.Pickler):
    # a class attribute: the C pickler reads it when the instance is created
    dispatch_table = collections.ChainMap(_DISPATCH, cloudpickle.Pickler.dispatch_table)

    def __init__(self, file, buffer_callback=None, readonly_arrays=False):
        super().__init__(file, protocol=5, buffer_callback=buffer_callback)
        self.contained = []
        # a value's arrays, pickled in band: rebuilt read-only (module docstring); a function's
        # closure keeps numpy's own (writable) reduce, as Ray's cloudpickled functions do
        self._readonly_arrays = readonly_arrays and buffer_callback is None

    def persistent_id(self, obj):
        if type(obj) is ObjectRef:
            b = obj.binary()
            self.contained.append(b)
            return b
        return None

    def reducer_override(self, obj):
        if self._readonly_arrays and type(obj) is np.ndarray:
            return _reduce_array(obj)
        hook = getattr(type(obj), "__rayfast_reduce__", None)
        if hook is not None:
            return hook(obj, self)
        if _custom:
            custom = _custom.get(type(obj))
            if custom is not None:
                serializer, deserializer = custom
                return deserializer, (serializer(obj),)
        return super().reducer_override(obj)


_custom = {}   # class -> (serializer, deserializer): register_serializer(), this process only


def register_serializer(cls, *, serializer, deserializer):
    """Ray's ray.util.register_serializer: pickle instances of cls as deserializer(serializer(obj))
    in this process (the deserializer travels with the value, pickled by cloudpickle)."""
    if not isinstance(cls, type):
        raise TypeError(f"register_serializer() takes a class, got {type(cls).__name__}")
    if not callable(serializer) or not callable(deserializer):
        raise TypeError("serializer and deserializer must be callables")
    if cls in _PRIMITIVES or cls in (list, tuple, np.ndarray):
        # values of these never reach the pickler's hooks (the fast paths above take them)
        raise ValueError(f"rayfast serializes {cls.__name__} itself; a custom serializer for it is not "
                         f"supported")
    _custom[cls] = (serializer, deserializer)


def deregister_serializer(cls):
    """Undo register_serializer(cls) in this process."""
    _custom.pop(cls, None)


class _Unpickler(pickle.Unpickler):
    def persistent_load(self, pid):
        return ObjectRef(pid)


_out_of_band = {}   # id -> ObjectRef: refs pickled where no one counts them, held for the session


def pin_out_of_band(ref):
    """Hold ref for the rest of this process's session: it was pickled where reference counting
    cannot follow it (rayfast.cloudpickle), and whoever unpickles it must still find the object.
    Ray pins such refs for the worker's life the same way."""
    _out_of_band.setdefault(ref.binary(), ref)


def unpin_out_of_band():
    _out_of_band.clear()


def dumps_function(fn):
    """Pickle a function or class to export it (by value when cloudpickle must)."""
    f = io.BytesIO()
    _Pickler(f).dump(fn)
    return f.getvalue()


PLAIN, PLAIN_ARRAYS = 1, 2   # what _is_plain/_plain_items say of a plain value: without, with ndarrays


def _is_plain(value):
    """Whether the C pickler alone can take value (no cloudpickle, no refs inside): 0 if not,
    else PLAIN or PLAIN_ARRAYS (for dumps_plain)."""
    t = type(value)
    if t in _PRIMITIVES:
        return PLAIN
    if t is np.ndarray and _small_array(value):
        return PLAIN_ARRAYS
    if t is tuple or t is list:
        return _plain_items(enumerate(value)) if len(value) < 16 else 0
    return 0


def _plain_items(items, spots=None):
    """Whether every value of (position, value) items is a primitive or a small plain ndarray: 0
    if not, else PLAIN_ARRAYS if some are arrays, PLAIN if none. With spots, 1-D numeric arrays
    are listed there as (position, array, ARRAY header) instead (dumps_args)."""
    out = PLAIN
    for pos, v in items:
        t = type(v)
        if t in _PRIMITIVES:
            continue
        if t is np.ndarray:
            if spots is not None and v.ndim == 1 and v.nbytes < _SMALL_ARRAY:
                head = _array_head(v.dtype)
                if head is not None:
                    spots.append((pos, v, head))
                    continue
            if _small_array(v):
                out = PLAIN_ARRAYS
                continue
        return 0
    return out


def _small_array(a):
    return a.nbytes < _SMALL_ARRAY and not a.dtype.hasobject


# --- compact forms (see the module docstring) ---
_ARRAY, _ARGS, _INT, _FLOAT = 1, 2, 3, 4
_int_form = struct.Struct("<Bq")     # (a struct call: a quarter of pickle.dumps's time, which makes a Pickler)
_float_form = struct.Struct("<Bd")
_INT_MIN, _INT_END = -(1 << 63), 1 << 63
_array_heads = {}    # dtype -> the ARRAY header; numeric dtypes only, so a few dozen at most
_array_dtypes = {}   # ARRAY header -> dtype


_ARRAY_HEAD = 16     # bytes: a view of the data then starts as aligned as a bytes object's (16)


def _array_head(dtype):
    """The ARRAY header of a 1-D array of dtype; None unless its items are plain numbers."""
    head = _array_heads.get(dtype)
    if head is None and dtype.kind in "biufc":
        s = dtype.str.encode()   # e.g. b"<i4"; b"<c32" at the longest
        head = _array_heads[dtype] = bytes((_ARRAY, _ARRAY_HEAD)) + s.ljust(_ARRAY_HEAD - 2, b"\0")
    return head


def _dump_array(a):
    """a in the ARRAY form, None if it has no such form. Pickling one costs ~2.5 µs of
    per-call setup (a Pickler, the np.frombuffer global); this, ~0.15 µs."""
    if a.ndim != 1:
        return None
    head = _array_head(a.dtype)
    return None if head is None else head + a.tobytes()


def _array_dtype(head):
    """The dtype an ARRAY header names. (Not `get(head) or ...`: a dtype without fields is falsy.)"""
    dtype = _array_dtypes.get(head)
    if dtype is None:
        dtype = _array_dtypes[head] = np.dtype(head[2:].rstrip(b"\0").decode())
    return dtype


def _load_array(data):
    """An array from its ARRAY form: a read-only view of data."""
    n = data[1]
    dtype = _array_dtype(bytes(data[:n]))
    # (np.ndarray over bytes at an offset costs half of np.frombuffer's)
    a = np.ndarray(((len(data) - n) // dtype.itemsize,), dtype, data, n)
    if not a.flags.aligned:   # (data a slice at an odd place: numpy is slow on, and some code refuses, such views)
        a = a.copy()
        a.flags.writeable = False
    return a


def dumps_args(args, kwargs):
    """The payload of a call: args (a list) and kwargs with top-level refs taken out; None if
    some value needs dumps() (cloudpickle, refs inside). Small 1-D numeric arrays travel as
    the bytes of their data beside their dtypes (ARGS) and come back read-only views of them."""
    spots = []
    plain = _plain_items(enumerate(args), spots)
    if plain and kwargs:
        k = _plain_items(kwargs.items(), spots)
        plain = k and max(plain, k)
    if not plain:
        return None
    if plain == PLAIN_ARRAYS or not spots:   # (arrays of other shapes: all through _ArrayPickler)
        return dumps_plain((args, kwargs), plain)
    args = list(args)
    kwargs = dict(kwargs) if kwargs else kwargs
    for i, (pos, a, head) in enumerate(spots):
        (args if type(pos) is int else kwargs)[pos] = a.tobytes()
        spots[i] = (pos, head)
    return b"\x02" + _dumps((args, kwargs, tuple(spots)), 5)


def _load_args(data):
    args, kwargs, spots = _loads(memoryview(data)[1:])
    for pos, head in spots:
        dtype = _array_dtype(head)
        if type(pos) is int:
            args[pos] = np.frombuffer(args[pos], dtype)
        else:
            kwargs[pos] = np.frombuffer(kwargs[pos], dtype)
    return args, kwargs


def _reduce_array(a):
    """An array pickled in band rebuilds read-only over the bytes of its data (module docstring).
    A 1-D array of plain numbers with np.frombuffer: numpy's own reduce (its dtype pickled by a
    Python reducer, rebuilt by a Python _frombuffer) takes ~2x as long to pickle and ~3x to
    unpickle, and tasks pass small arrays by the thousand. Arrays of objects keep numpy's."""
    if a.ndim == 1 and a.dtype.kind in "biufc" and a.flags.c_contiguous:
        return np.frombuffer, (a.tobytes(), a.dtype.str)
    if a.dtype.hasobject:
        return a.__reduce_ex__(5)
    order = "F" if a.flags.f_contiguous and not a.flags.c_contiguous else "C"
    return _array_over, (a.tobytes(order), a.dtype.str if a.dtype.names is None else a.dtype, a.shape, order)


def _array_over(data, dtype, shape, order):
    return np.ndarray(shape, dtype, data, order=order)


class _ArrayPickler(pickle.Pickler):
    dispatch_table = {np.ndarray: _reduce_array}   # a class attribute: the C pickler reads it at creation


def dumps_plain(value, plain):
    """pickle of a value that _is_plain or _plain_items accepted (plain: what they said)."""
    if plain != PLAIN_ARRAYS:
        return _dumps(value, 5)
    f = io.BytesIO()
    _ArrayPickler(f, 5).dump(value)
    return f.getvalue()


def dumps(value, buffer_callback=None):
    """Pickle value; returns (bytes, contained_ref_ids)."""
    if buffer_callback is None:
        plain = _is_plain(value)
        if plain:
            return dumps_plain(value, plain), ()
    f = io.BytesIO()
    p = _Pickler(f, buffer_callback, readonly_arrays=True)
    p.dump(value)
    return f.getvalue(), tuple(p.contained)


def loads_inline(data):
    """A value from its inline bytes (arrays in it read-only, module docstring)."""
    tag = data[0]
    if tag == _INT:
        return _int_form.unpack(data)[1]
    if tag == _ARRAY:
        return _load_array(data)
    if tag == _ARGS:
        return _load_args(data)
    if tag == _FLOAT:
        return _float_form.unpack(data)[1]
    # The plain loader is several times faster; refs need persistent_load.
    try:
        return _loads(data)
    except pickle.UnpicklingError:
        return _Unpickler(io.BytesIO(data)).load()


def serialize(value, inline_threshold):
    """Returns (inline_bytes or None, store_parts or None, contained).

    Exactly one of the first two is set: small values are inline bytes; large
    ones are (header, pickle, buffers, total_size) ready for write_parts.
    """
    t = type(value)
    if t in _PRIMITIVES:   # (what tasks return most: no more calls than needed)
        if t is int and _INT_MIN <= value < _INT_END:
            return _int_form.pack(_INT, value), None, ()
        if t is float:
            return _float_form.pack(_FLOAT, value), None, ()
        data = _dumps(value, 5)
        if len(data) < inline_threshold:
            return data, None, ()
    elif t is np.ndarray and value.nbytes < inline_threshold:
        data = _dump_array(value)
        if data is not None and len(data) < inline_threshold:
            return data, None, ()
    plain = _is_plain(value)
    if plain:
        data = dumps_plain(value, plain)
        if len(data) < inline_threshold:
            return data, None, ()
    elif type(value) is np.ndarray and value.nbytes >= inline_threshold and not value.dtype.hasobject:
        parts = _array_layout(value)
        if parts is not None:
            return None, parts, ()
    buffers = []
    try:
        data, contained = dumps(value, buffers.append)
    except Exception as e:   # as Ray: a TypeError naming the value, whatever pickle raised
        raise TypeError(f"Could not serialize the value {_short_repr(value)}: {type(e).__name__}: {e}") from e
    raw = [b.raw() for b in buffers]
    size = len(data) + sum(r.nbytes for r in raw)
    if size < inline_threshold:
        if raw:
            data, contained = dumps(value)  # fold buffers in band
        return data, None, contained
    return None, _layout(data, raw), contained


def _short_repr(value):
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__} object>"
    return text if len(text) <= 200 else text[:200] + "..."


def _array_layout(a):
    """A plain ndarray skips pickle: numpy's unpickling of a fresh buffer costs ~100 µs,
    np.frombuffer a few. The meta is (dtype, shape, fortran)."""
    if a.flags.c_contiguous:
        fortran = False
    elif a.flags.f_contiguous:
        fortran = True
    else:
        return None
    meta = _dumps((a.dtype, a.shape, fortran), 5)
    # its bytes in memory order, as uint8: memoryview cannot cast a Fortran-ordered
    # array nor export datetime64 and a few other dtypes
    return _layout(meta, [memoryview(a.ravel(order="K").view(np.uint8))], _RAW_ARRAY)


def _layout(data, raw, kind=0):
    nbuf = len(raw)
    head_len = _HEAD.size + nbuf * _BUF.size
    off = _align(head_len + len(data))
    table = []
    for r in raw:
        table.append((off, r.nbytes))
        off = _align(off + r.nbytes)
    head = bytearray(head_len)
    _HEAD.pack_into(head, 0, nbuf, kind, len(data))
    for i, (o, n) in enumerate(table):
        _BUF.pack_into(head, _HEAD.size + i * _BUF.size, o, n)
    return bytes(head), data, list(zip(table, raw)), off


def _align(n):
    return (n + ALIGNMENT - 1) & ~(ALIGNMENT - 1)


def write_parts(dest, parts):
    """Copy a layout into a writable buffer of at least its total size (one copy per part,
    in C without the GIL)."""
    head, data, bufs, _total = parts
    write_into(dest, 0, head)
    write_into(dest, len(head), data)
    for (off, _nbytes), raw in bufs:
        write_into(dest, off, raw)


def deserialize_view(view):
    """Rebuild a value from its store layout; buffers become read-only views of `view`."""
    nbuf, kind, plen = _HEAD.unpack_from(view, 0)
    pos = _HEAD.size
    bufs = []
    for _ in range(nbuf):
        off, n = _BUF.unpack_from(view, pos)
        pos += _BUF.size
        bufs.append(view[off:off + n])
    data = view[pos:pos + plen]
    if kind == _RAW_ARRAY:
        dtype, shape, fortran = _loads(data)
        return np.frombuffer(bufs[0], dtype=dtype).reshape(shape, order="F" if fortran else "C")
    return _Unpickler(io.BytesIO(data), buffers=bufs).load()
