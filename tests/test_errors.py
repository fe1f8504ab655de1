"""Errors: raised in tasks, propagated through arguments, and bad input at the call site."""
import threading

import pytest

import rayfast
from rayfast.exceptions import RayError, RayTaskError

pytestmark = pytest.mark.usefixtures("cluster")


class MyError(Exception):
    pass


class CustomInit(Exception):
    def __init__(self, a, b):
        super().__init__(f"{a}-{b}")
        self.a, self.b = a, b


@rayfast.remote
def fail(msg="boom"):
    raise ValueError(msg)


@rayfast.remote
def fail_custom():
    raise MyError("mine")


@rayfast.remote
def identity(x):
    return x


@rayfast.remote
def plus_one(x):
    return x + 1


def test_task_error_is_ray_task_error_and_original_class():
    ref = fail.remote("bad value 123")
    with pytest.raises(ValueError) as ei:
        rayfast.get(ref)
    e = ei.value
    assert isinstance(e, RayTaskError)
    assert isinstance(e, RayError)
    text = str(e)
    assert "bad value 123" in text
    assert "Traceback" in text and "fail" in text  # the remote traceback
    assert "raise ValueError(msg)" in text


def test_custom_exception_class():
    with pytest.raises(MyError) as ei:
        rayfast.get(fail_custom.remote())
    assert isinstance(ei.value, RayTaskError)
    assert "mine" in str(ei.value)


def test_exception_with_custom_init():
    @rayfast.remote
    def f():
        raise CustomInit(1, 2)

    with pytest.raises(RayTaskError) as ei:
        rayfast.get(f.remote())
    assert isinstance(ei.value, CustomInit)
    assert "1-2" in str(ei.value)


def test_unpicklable_exception_keeps_text():
    @rayfast.remote
    def f():
        class Local(Exception):
            def __reduce__(self):
                raise TypeError("no pickling me")
        raise Local("local failure")

    with pytest.raises(RayTaskError) as ei:
        rayfast.get(f.remote())
    assert "local failure" in str(ei.value)


def test_error_in_list_get():
    refs = [identity.remote(1), fail.remote()]
    with pytest.raises(ValueError):
        rayfast.get(refs)


def test_failed_argument_propagates_same_error():
    bad = fail.remote("upstream failure")
    downstream = plus_one.remote(bad)
    with pytest.raises(ValueError) as ei:
        rayfast.get(downstream)
    assert isinstance(ei.value, RayTaskError)
    assert "upstream failure" in str(ei.value)
    # and along a chain
    chain = bad
    for _ in range(5):
        chain = plus_one.remote(chain)
    with pytest.raises(ValueError, match="upstream failure"):
        rayfast.get(chain)


def test_failed_kwarg_propagates():
    @rayfast.remote
    def kw(*, x):
        return x

    with pytest.raises(ValueError):
        rayfast.get(kw.remote(x=fail.remote()))


def test_failed_nested_ref_does_not_fail_task():
    @rayfast.remote
    def holds(lst):
        return len(lst)

    assert rayfast.get(holds.remote([fail.remote()])) == 1


def test_error_from_nested_get_propagates():
    @rayfast.remote
    def outer():
        return rayfast.get(fail.remote("inner failure"))

    with pytest.raises(ValueError, match="inner failure"):
        rayfast.get(outer.remote())


def test_unpicklable_argument_names_the_argument():
    lock = threading.Lock()
    with pytest.raises(TypeError) as ei:
        identity.remote(lock)
    assert "argument 0" in str(ei.value) or "lock" in str(ei.value).lower()

    @rayfast.remote
    def kw(a, b=None):
        return a

    with pytest.raises(TypeError) as ei:
        kw.remote(1, b=lock)
    assert "'b'" in str(ei.value)


def test_unpicklable_return_value_fails_at_get():
    @rayfast.remote
    def f():
        return threading.Lock()

    with pytest.raises(RayError):
        rayfast.get(f.remote(), timeout=10)


@pytest.mark.parametrize("args,kwargs", [((), {}), ((1, 2, 3), {}), ((1,), {"nope": 2}), ((1,), {"x": 1})])
def test_bad_signature_type_error_at_remote(args, kwargs):
    @rayfast.remote
    def one(x):
        return x

    with pytest.raises(TypeError):
        one.remote(*args, **kwargs)


def test_bad_signature_kw_only():
    @rayfast.remote
    def f(a, *, b):
        return a + b

    with pytest.raises(TypeError):
        f.remote(1, 2)
    with pytest.raises(TypeError):
        f.remote(1)
    assert rayfast.get(f.remote(1, b=2)) == 3


def test_unknown_options_keyword():
    with pytest.raises(ValueError):
        identity.options(bogus=1)
    with pytest.raises(ValueError):
        rayfast.remote(bogus=1)(lambda: 1)


@pytest.mark.parametrize("opts", [{"num_cpus": -1}, {"num_returns": -1}, {"max_retries": -2},
                                  {"num_returns": 1.5}])
def test_bad_option_values(opts):
    with pytest.raises((ValueError, TypeError)):
        identity.options(**opts).remote(1)


def test_remote_decorator_misuse():
    with pytest.raises(TypeError):
        rayfast.remote(1, 2)


def test_infeasible_warns_at_remote_and_get_times_out(capfd):
    refs = [identity.options(num_cpus=100).remote(1), identity.options(num_gpus=1).remote(1),
            identity.options(resources={"foo": 1}).remote(1)]
    err = capfd.readouterr().err
    assert "100 CPU" in err and "1 GPU" in err and "1 foo" in err
    with pytest.raises(rayfast.exceptions.GetTimeoutError):
        rayfast.get(refs[1], timeout=0.2)
    for r in refs:
        rayfast.cancel(r)


def test_wrong_number_of_returns():
    @rayfast.remote(num_returns=2)
    def three():
        return 1, 2, 3

    @rayfast.remote(num_returns=2)
    def scalar():
        return 1

    a, b = three.remote()
    with pytest.raises(RayError):
        rayfast.get(a, timeout=10)
    with pytest.raises(RayError):
        rayfast.get(b, timeout=10)
    with pytest.raises(RayError):
        rayfast.get(scalar.remote(), timeout=10)


def test_num_returns_zero_ignores_return():
    @rayfast.remote(num_returns=0)
    def f():
        return 5

    assert f.remote() is None
    assert rayfast.get(identity.remote(1)) == 1


def test_error_does_not_break_the_worker():
    for _ in range(5):
        with pytest.raises(ValueError):
            rayfast.get(fail.remote())
    assert rayfast.get([identity.remote(i) for i in range(10)]) == list(range(10))


def test_system_exit_in_task():
    @rayfast.remote(max_retries=0)
    def f():
        raise SystemExit(3)

    with pytest.raises(RayError):
        rayfast.get(f.remote(), timeout=10)
    assert rayfast.get(identity.remote(2), timeout=10) == 2


def test_not_initialized_error():
    from rayfast import core_worker
    cw = core_worker._current
    core_worker.set_current(None)
    try:
        # remote() and put() start a cluster (Ray's auto-init, tests/test_ray_compat_api.py);
        # the cluster queries do not
        with pytest.raises(Exception, match="init"):
            rayfast.cluster_resources()
        with pytest.raises(Exception, match="init"):
            rayfast.nodes()
    finally:
        core_worker.set_current(cw)
