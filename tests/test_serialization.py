"""The inline encodings: compact forms for small arrays and call arguments, pickle for the rest."""
import numpy as np
import pytest

from rayfast import serialization as S
from rayfast._core.ids import ObjectRef

ARRAYS = [np.arange(30, dtype=np.uint8), np.arange(7, dtype=">i4"), np.zeros(0), np.array([True, False]),
          np.arange(4, dtype=np.complex64), np.float16([1, 2]), np.arange(10)[::2], np.arange(5.)[::-1],
          np.array([], dtype=np.int8), np.arange(3, dtype="<u8")]
OTHERS = [np.arange(12.).reshape(3, 4).T, np.array(5), np.array(["a", "bc"]),
          np.array(["2020-01-01"], dtype="datetime64[D]"), np.array([None, 1], dtype=object)]


def _same(x, a):
    assert type(x) is np.ndarray and x.dtype.str == a.dtype.str and x.shape == a.shape
    assert np.array_equal(x, a)


@pytest.mark.parametrize("a", ARRAYS + OTHERS, ids=lambda a: f"{a.dtype.str}{a.shape}")
def test_array_value_roundtrip(a):
    data, parts, contained = S.serialize(a, 100_000)
    assert parts is None and contained == ()
    assert (data[0] == 1) == any(a is b for b in ARRAYS)   # the compact form for 1-D numeric arrays
    w = S.loads_inline(data)
    _same(w, a)
    if a.dtype.hasobject:   # pickled by numpy's own reduce: a writable copy, as Ray's are
        assert w.flags.writeable
    else:                   # as Ray's: read-only (over the message's bytes)
        assert not w.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            w[...] = w
    assert w.flags.aligned   # numpy is slow on unaligned arrays, and some code refuses them


def test_readonly_array_from_an_odd_place_is_aligned():
    data = S.serialize(np.arange(10, dtype=np.float64), 100_000)[0]
    r = S.loads_inline(memoryview(b"x" + data)[1:])
    assert r.flags.aligned and not r.flags.writeable and np.array_equal(r, np.arange(10.))


@pytest.mark.parametrize("a", ARRAYS + OTHERS, ids=lambda a: f"{a.dtype.str}{a.shape}")
def test_array_arguments_roundtrip(a):
    args, kwargs = [a, 1, None, "s"], {"k": a, "n": 2.5}
    payload = S.dumps_args(args, kwargs) or S.dumps((args, kwargs))[0]   # (object arrays: cloudpickle)
    args, kwargs = S.loads_inline(payload)
    for x in (args[0], kwargs["k"]):
        _same(x, a)
        assert x.flags.writeable == a.dtype.hasobject and x.flags.aligned   # read-only, as Ray's arguments
    assert args[1:] == [1, None, "s"] and kwargs["n"] == 2.5


def test_arguments_without_arrays_and_with_other_values():
    args, kwargs = S.loads_inline(S.dumps_args([1, b"x", None, True], {}))
    assert args == [1, b"x", None, True] and kwargs == {}
    assert S.dumps_args([object()], {}) is None            # needs cloudpickle: dumps() takes it
    assert S.dumps_args([1], {"k": [1, 2]}) is None
    assert S.dumps_args([np.zeros(3, dtype=object)], {}) is None


def test_dumps_args_leaves_its_inputs_alone():
    a = np.arange(3)
    args, kwargs = [a], {"k": a}
    S.dumps_args(args, kwargs)
    assert args[0] is a and kwargs["k"] is a


def test_readonly_view_keeps_its_bytes():
    data = S.serialize(np.arange(1000, dtype=np.int64), 100_000)[0]
    r = S.loads_inline(data)
    del data
    assert r.sum() == 999 * 1000 // 2


def test_pickled_values_still_load():
    for v in ("s", b"b", None, 2**70, (1, np.arange(3)), [np.ones((2, 2))], {"a": 1}):
        data, _, _ = S.serialize(v, 100_000)
        assert data[0] == 0x80
        out = S.loads_inline(data)
        assert type(out) is type(v)
    ref = ObjectRef(b"r" * 20)
    data, contained = S.dumps([ref])
    assert contained == (ref.binary(),) and S.loads_inline(data)[0].binary() == ref.binary()


def test_numbers_roundtrip_exactly():
    import math
    import struct
    odd_nan = struct.unpack("<d", b"\x01\x00\x00\x00\x00\x00\xf8\x7f")[0]
    for v in (0, 1, -1, 2**63 - 1, -2**63, 2**63, -2**63 - 1, 10**30, True, False,
              0.0, -0.0, 1.5, float("inf"), float("-inf"), odd_nan, 5e-324, 1e308):
        data, parts, contained = S.serialize(v, 100_000)
        assert parts is None and contained == ()
        if type(v) is int and -2**63 <= v < 2**63:
            assert data[0] == 3 and len(data) == 9   # the INT form
        for out in (S.loads_inline(data),):
            assert type(out) is type(v)
            if type(v) is float:
                assert struct.pack("<d", out) == struct.pack("<d", v)   # bit for bit: -0.0, NaN payloads
            else:
                assert out == v and not math.isnan(out)
