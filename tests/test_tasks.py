"""Remote functions: decorators, options, argument passing, returns, resources, cluster queries."""
import os

import numpy as np
import pytest

import rayfast
from rayfast import ObjectRef

pytestmark = pytest.mark.usefixtures("cluster")


@rayfast.remote
def square(x):
    return x * x


@rayfast.remote
def add(a, b=0, *, c=0):
    return a + b + c


@rayfast.remote
def identity(x):
    return x


@rayfast.remote
def pid():
    return os.getpid()


def test_remote_returns_ref_and_value():
    ref = square.remote(7)
    assert isinstance(ref, ObjectRef)
    assert rayfast.get(ref) == 49


def test_remote_with_options_decorator():
    @rayfast.remote(num_cpus=1, max_retries=0)
    def f(x):
        return x + 1

    assert rayfast.get(f.remote(1)) == 2


def test_kwargs_and_defaults():
    assert rayfast.get(add.remote(1)) == 1
    assert rayfast.get(add.remote(1, 2)) == 3
    assert rayfast.get(add.remote(1, b=2, c=3)) == 6
    assert rayfast.get(add.remote(a=4, c=1)) == 5


def test_ref_as_kwarg_is_resolved():
    assert rayfast.get(add.remote(square.remote(2), b=square.remote(3), c=rayfast.put(1))) == 14


def test_num_returns_decorator_and_options():
    @rayfast.remote(num_returns=3)
    def three():
        return 1, 2, 3

    refs = three.remote()
    assert isinstance(refs, list) and len(refs) == 3
    assert rayfast.get(refs) == [1, 2, 3]

    @rayfast.remote
    def pair():
        return "a", "b"

    a, b = pair.options(num_returns=2).remote()
    assert rayfast.get([a, b]) == ["a", "b"]
    # options() is per call: the function itself is unchanged
    assert rayfast.get(pair.remote()) == ("a", "b")


def test_options_does_not_mutate_function():
    f = identity.options(num_cpus=2, max_retries=1)
    assert rayfast.get(f.remote(5)) == 5
    assert rayfast.get(identity.remote(6)) == 6


def test_num_returns_zero():
    @rayfast.remote(num_returns=0)
    def nothing():
        return None

    assert nothing.remote() is None


def test_num_returns_one_with_tuple():
    @rayfast.remote(num_returns=1)
    def t():
        return (1, 2)

    assert rayfast.get(t.remote()) == (1, 2)


def test_direct_call_raises_type_error():
    with pytest.raises(TypeError, match=r"\.remote\(\)"):
        square(3)
    with pytest.raises(TypeError, match=r"\.remote\(\)"):
        square.options(num_cpus=1)(3)


def test_top_level_refs_resolved_nested_refs_stay_refs():
    @rayfast.remote
    def kinds(x, lst, dct):
        return (type(x).__name__, [type(v).__name__ for v in lst], {k: type(v).__name__ for k, v in dct.items()},
                rayfast.get(lst[0]), rayfast.get(dct["k"]))

    r = rayfast.put(10)
    s = square.remote(3)
    out = rayfast.get(kinds.remote(r, [s], {"k": r}))
    assert out == ("int", ["ObjectRef"], {"k": "ObjectRef"}, 9, 10)


def test_nested_ref_returned_from_task():
    @rayfast.remote
    def wrap(x):
        return [rayfast.put(x)]

    lst = rayfast.get(wrap.remote(42))
    assert isinstance(lst[0], ObjectRef)
    assert rayfast.get(lst[0]) == 42


def test_numpy_argument_and_result_large():
    @rayfast.remote
    def total(a):
        return float(a.sum()), a.flags.writeable

    @rayfast.remote
    def make(n):
        return np.ones(n)

    arr = np.arange(200_000, dtype=np.float64)  # 1.6 MB: goes through the store
    s, _ = rayfast.get(total.remote(arr))
    assert s == float(arr.sum())
    out = rayfast.get(make.remote(50_000))
    assert out.shape == (50_000,) and out.sum() == 50_000
    small = rayfast.get(make.remote(3))
    assert list(small) == [1.0, 1.0, 1.0]


def test_argument_arrays_are_read_only_as_in_ray():
    """Ray's serialization guide: writing into an argument array fails ("assignment destination
    is read-only"); copying it first works. Small or large, nested or not, for actors too."""
    @rayfast.remote
    def write(arr):
        arr[0] = 1
        return arr

    @rayfast.remote
    def write_copy(arr):
        arr = arr.copy()
        arr[0] = 1
        return arr

    @rayfast.remote
    class Keeper:
        def __init__(self, a):
            self.writable = a.flags.writeable

        def flags(self, d):
            return self.writable, d["x"].flags.writeable, d["y"][0].flags.writeable

    for arr in (np.zeros(100), np.zeros((300, 300))):   # inline, and through the store
        with pytest.raises(ValueError, match="read-only"):
            rayfast.get(write.remote(arr))
        assert rayfast.get(write_copy.remote(arr)).flat[0] == 1
    k = Keeper.remote(np.zeros(3))
    assert rayfast.get(k.flags.remote({"x": np.zeros(2), "y": [np.ones((2, 2))]})) == (False, False, False)


@rayfast.remote
def _describe(a, b=None):
    return a, b, (a.dtype.str, a.shape, a.flags.writeable)


def test_small_arrays_roundtrip_through_task():
    # small arrays are pickled in band (1-D ones rebuilt by np.frombuffer): every dtype and layout
    cases = [np.arange(30, dtype=np.uint8), np.arange(7, dtype=">i4"), np.zeros(0), np.array([True, False]),
             np.arange(4, dtype=np.complex64), np.float16([1, 2]), np.arange(12.).reshape(3, 4).T,
             np.arange(10)[::2], np.array(5), np.array(["a", "bc"]),
             np.array(["2020-01-01"], dtype="datetime64[D]")]
    for a in cases:
        x, y, (dt, shape, writeable) = rayfast.get(_describe.remote(a, b=[a, 1]))
        assert (dt, shape, writeable) == (a.dtype.str, a.shape, False)   # read-only, as Ray's arguments
        assert x.dtype == a.dtype and np.array_equal(x, a) and np.array_equal(y[0], a) and y[1] == 1
        r = rayfast.put(a)
        x, _, _ = rayfast.get(_describe.remote(r))   # a ref to it: resolved before the call
        assert x.dtype == a.dtype and np.array_equal(x, a)


def test_large_bytes_roundtrip_through_task():
    data = os.urandom(300_000)
    assert rayfast.get(identity.remote(data)) == data


def test_tasks_run_in_other_processes():
    pids = set(rayfast.get([pid.remote() for _ in range(20)]))
    assert os.getpid() not in pids


def test_parallelism_two_cpus(tmp_path):
    import time

    @rayfast.remote
    def sleepy(me, other):
        # mark that this one runs, then wait (up to 30 s) for the other to: they meet only if
        # they run at the same time, however slow a loaded machine is to start them
        open(me, "w").close()
        deadline = time.monotonic() + 30
        while not os.path.exists(other) and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.5)
        return os.getpid(), os.path.exists(other)

    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    out = rayfast.get([sleepy.remote(a, b), sleepy.remote(b, a)], timeout=90)
    assert len({pid for pid, _ in out}) == 2
    assert all(met for _, met in out), out


def test_num_cpus_limits_concurrency():
    import time

    @rayfast.remote(num_cpus=2)
    def hog():
        t = time.time()
        time.sleep(0.3)
        return t, time.time()

    spans = sorted(rayfast.get([hog.remote(), hog.remote()]))
    assert spans[1][0] >= spans[0][1] - 0.02  # never overlapped


def test_infeasible_resources_stay_pending_with_a_warning(capfd):
    # As Ray: never scheduled, a warning names what is missing, cancel() ends it
    from conftest import object_count, wait_for
    before = object_count()
    for opts in ({"num_cpus": 3}, {"resources": {"nonexistent": 1}}):
        ref = square.options(**opts).remote(1)
        assert rayfast.wait([ref], timeout=0.2) == ([], [ref])
        rayfast.cancel(ref)
        with pytest.raises(rayfast.exceptions.TaskCancelledError):
            rayfast.get(ref, timeout=5)
    del ref
    assert wait_for(lambda: object_count() <= before)   # nothing left (earlier tests' objects may go too)
    err = capfd.readouterr().err
    assert "3 CPU" in err and "nonexistent" in err


def test_cluster_queries_shapes():
    ns = rayfast.nodes()
    assert isinstance(ns, list) and len(ns) == 1
    n = ns[0]
    for key in ("NodeID", "Alive", "NodeManagerAddress", "Resources"):
        assert key in n
    assert n["Alive"] is True
    assert n["Resources"]["CPU"] == 2
    cr = rayfast.cluster_resources()
    assert cr["CPU"] == 2.0
    import time
    deadline = time.time() + 5
    while rayfast.available_resources().get("CPU") != 2.0 and time.time() < deadline:
        time.sleep(0.05)
    assert rayfast.available_resources()["CPU"] == 2.0


def test_available_resources_drop_while_running():
    import time

    @rayfast.remote
    def hold(s):
        time.sleep(s)

    ref = hold.remote(1.0)
    deadline = time.time() + 5
    while rayfast.available_resources().get("CPU", 0) != 1.0 and time.time() < deadline:
        time.sleep(0.02)
    assert rayfast.available_resources().get("CPU", 0) == 1.0
    rayfast.get(ref)


def test_objects_freed_when_refs_dropped():
    from conftest import object_count, wait_for

    import gc
    gc.collect()
    wait_for(lambda: object_count() == 0, timeout=2)   # releases of earlier tests have landed
    base = object_count()
    refs = [rayfast.put(i) for i in range(50)] + [square.remote(i) for i in range(50)]
    rayfast.get(refs)
    big = rayfast.put(np.zeros(100_000))
    during = object_count()
    assert during >= base + 100
    del refs, big
    gc.collect()
    rayfast.get(square.remote(1))  # ref changes travel with the next batch
    assert wait_for(lambda: object_count() <= base + 1, timeout=5), (base, object_count())


def test_function_redefinition_uses_new_code():
    @rayfast.remote
    def v():
        return 1

    assert rayfast.get(v.remote()) == 1

    @rayfast.remote
    def v():  # noqa: F811
        return 2

    assert rayfast.get(v.remote()) == 2


def test_closure_and_lambda_like_functions():
    k = 17

    @rayfast.remote
    def closure(x):
        return x + k

    assert rayfast.get(closure.remote(1)) == 18
    f = rayfast.remote(lambda x: x * 3)
    assert rayfast.get(f.remote(4)) == 12



def test_object_put_in_task_and_returned_is_freed():
    """A store object put() inside a task and returned inside its result is freed once the result is."""
    from conftest import object_count, wait_for
    import gc
    import time

    @rayfast.remote
    def wrap():
        return [rayfast.put(np.ones(20_000))]

    def settle():
        gc.collect()
        rayfast.get(square.remote(0))
        time.sleep(0.2)
        rayfast.get(square.remote(0))
        return object_count()

    base = settle()
    for _ in range(3):
        w = wrap.remote()
        inner = rayfast.get(w)
        assert rayfast.get(inner[0]).sum() == 20_000
        del w, inner
    assert wait_for(lambda: settle() <= base, timeout=5), (base, object_count())
    from rayfast import core_worker
    assert core_worker.current().request("statistics")["store"]["bytes_used"] == 0
