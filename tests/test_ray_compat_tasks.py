"""Ray core's documented behaviour of tasks and objects, run with `import rayfast as ray`.

Each test is an example or a documented rule from docs.ray.io (ray-core: tasks,
objects, fault tolerance, generators, cancel, runtime context, cluster info),
checked against Ray's documented result or error class.
"""
import asyncio
import os
import time

import numpy as np
import pytest

import rayfast as ray


pytestmark = pytest.mark.usefixtures("cluster")   # conftest: init(num_cpus=2), leak check after


# --- tasks -------------------------------------------------------------------

@ray.remote
def square(x):
    return x * x


def test_tasks_quickstart():
    futures = [square.remote(i) for i in range(4)]
    assert ray.get(futures) == [0, 1, 4, 9]


def test_remote_function_called_directly_is_type_error():
    with pytest.raises(TypeError):
        square(3)


def test_passing_object_refs_to_tasks():
    @ray.remote
    def my_function():
        return 1

    @ray.remote
    def function_with_an_argument(value):
        return value + 1

    obj_ref1 = my_function.remote()
    assert ray.get(obj_ref1) == 1
    obj_ref2 = function_with_an_argument.remote(obj_ref1)
    assert ray.get(obj_ref2) == 2


def test_multiple_returns_and_options():
    @ray.remote(num_returns=3)
    def return_multiple():
        return 0, 1, 2

    a, b, c = return_multiple.remote()
    assert ray.get([a, b, c]) == [0, 1, 2]

    @ray.remote
    def two():
        return 1, 2

    x, y = two.options(num_returns=2).remote()
    assert ray.get(x) == 1 and ray.get(y) == 2
    assert ray.get(square.options(num_cpus=1).remote(5)) == 25


def test_invalid_option_is_value_error():
    with pytest.raises(ValueError):
        square.options(not_an_option=1)


def test_infeasible_task_stays_pending():
    # Ray warns and never schedules it (a node with the resources could join)
    ref = square.options(num_cpus=1000).remote(1)
    with pytest.raises(ray.exceptions.GetTimeoutError):
        ray.get(ref, timeout=0.2)
    ray.cancel(ref)


def test_nested_tasks():
    @ray.remote
    def f():
        return 1

    @ray.remote
    def g():
        return [f.remote() for _ in range(4)]

    @ray.remote
    def h():
        return ray.get([f.remote() for _ in range(4)])

    refs = ray.get(g.remote())
    assert all(isinstance(r, ray.ObjectRef) for r in refs)
    assert ray.get(refs) == [1, 1, 1, 1]
    assert ray.get(h.remote()) == [1, 1, 1, 1]


def test_recursive_fibonacci_nested():
    @ray.remote
    def fib(n):
        if n <= 1:
            return n
        return sum(ray.get([fib.remote(n - 1), fib.remote(n - 2)]))

    assert ray.get(fib.remote(7)) == 13


# --- objects -----------------------------------------------------------------

def test_put_get():
    y_id = ray.put(1)
    assert isinstance(y_id, ray.ObjectRef)
    assert ray.get(y_id) == 1
    obj_refs = [ray.put(i) for i in range(10)]
    assert ray.get(obj_refs) == list(range(10))


def test_get_numpy_is_read_only_zero_copy():
    a = ray.get(ray.put(np.zeros(1000)))
    assert a.sum() == 0
    with pytest.raises(ValueError):
        a[0] = 1


def test_get_timeout_raises_get_timeout_error():
    @ray.remote
    def long_running_function():
        time.sleep(8)

    obj_ref = long_running_function.remote()
    with pytest.raises(ray.exceptions.GetTimeoutError):
        ray.get(obj_ref, timeout=0.2)
    # GetTimeoutError is also a TimeoutError, as in Ray
    with pytest.raises(TimeoutError):
        ray.get(obj_ref, timeout=0)
    ray.cancel(obj_ref, force=True)


def test_nested_refs_are_not_resolved():
    @ray.remote
    def echo_and_get(x_list):
        return [type(x).__name__ for x in x_list], ray.get(x_list)

    a, b, c = ray.put(1), ray.put(2), ray.put(3)
    names, values = ray.get(echo_and_get.remote([a, b, c]))
    assert names == ["ObjectRef"] * 3
    assert values == [1, 2, 3]


def test_top_level_refs_are_resolved():
    @ray.remote
    def echo(a, b, c):
        return a, b, c

    a, b, c = ray.put(1), ray.put(2), ray.put(3)
    assert ray.get(echo.remote(a, b, c)) == (1, 2, 3)


def test_object_containing_refs():
    obj = ray.put(5)
    outer = ray.put([obj])
    inner = ray.get(outer)[0]
    assert isinstance(inner, ray.ObjectRef)
    assert ray.get(inner) == 5


def test_returning_put_ref_from_task():
    @ray.remote
    def task_with_single_small_return_value_bad():
        return ray.put(np.zeros(10))

    ref = ray.get(task_with_single_small_return_value_bad.remote())
    assert isinstance(ref, ray.ObjectRef)
    assert ray.get(ref).shape == (10,)


def test_put_object_ref_is_type_error():
    with pytest.raises(TypeError):
        ray.put(ray.put(1))


def test_get_bad_argument_errors():
    with pytest.raises(ValueError):       # Ray: "'object_refs' must either be an ObjectRef or a list"
        ray.get(1)
    with pytest.raises(TypeError):        # Ray: "Attempting to call `get` on the value 1 ..."
        ray.get([ray.put(1), 1])


def test_future_and_await():
    ref = square.remote(6)
    assert ref.future().result(timeout=10) == 36

    async def main():
        r1 = await square.remote(7)
        r2 = await asyncio.wrap_future(square.remote(8).future())
        r3 = await asyncio.gather(square.remote(2), square.remote(3))
        return r1, r2, r3

    assert asyncio.run(main()) == (49, 64, [4, 9])


def test_future_of_failed_task_raises():
    @ray.remote
    def boom():
        raise ValueError("x")

    with pytest.raises(ValueError):
        boom.remote().future().result(timeout=10)


# --- wait ----------------------------------------------------------------------

def test_wait_basic():
    @ray.remote
    def sleep_for(t):
        time.sleep(t)
        return t

    refs = [sleep_for.remote(0), sleep_for.remote(3)]
    ready, not_ready = ray.wait(refs, num_returns=1, timeout=2)
    assert ready == [refs[0]] and not_ready == [refs[1]]
    ready, not_ready = ray.wait(refs, timeout=0)
    assert len(ready) + len(not_ready) == 2
    ray.cancel(refs[1], force=True)


def test_wait_all_preserves_order():
    refs = [ray.put(i) for i in range(5)]
    ready, not_ready = ray.wait(refs, num_returns=5)
    assert ready == refs and not_ready == []


def test_wait_errors():
    r = ray.put(1)
    with pytest.raises(TypeError):
        ray.wait(r)
    with pytest.raises(ValueError):
        ray.wait([r], num_returns=2)
    with pytest.raises(ValueError):
        ray.wait([r, r])
    with pytest.raises(ValueError):
        ray.wait([r], timeout=-1)


# --- errors and fault tolerance -------------------------------------------------

class MyException(Exception):
    pass


def test_task_exception_is_instance_of_cause_and_ray_task_error():
    @ray.remote
    def raises_my_exc():
        raise MyException("this is a MyException")

    with pytest.raises(MyException):
        ray.get(raises_my_exc.remote())
    try:
        ray.get(raises_my_exc.remote())
    except ray.exceptions.RayTaskError as e:
        assert isinstance(e.cause, MyException)
        assert "this is a MyException" in str(e)


def test_error_propagates_through_dependent_tasks():
    @ray.remote
    def fail():
        raise ZeroDivisionError("no")

    @ray.remote
    def add_one(x):
        return x + 1

    with pytest.raises(ZeroDivisionError):
        ray.get(add_one.remote(fail.remote()))


def test_unsubclassable_exception_keeps_cause():
    class NoSubclass(Exception):
        def __init_subclass__(cls, **kw):
            raise TypeError("no subclassing")

    @ray.remote
    def f():
        raise NoSubclass("x")

    with pytest.raises(ray.exceptions.RayTaskError) as ei:
        ray.get(f.remote())
    assert type(ei.value.cause).__name__ == "NoSubclass"


def test_worker_crash_retried_then_worker_crashed_error(tmp_path):
    marker = str(tmp_path / "crashed")

    @ray.remote(max_retries=1)
    def crash_once(path):
        if not os.path.exists(path):
            open(path, "w").close()
            os._exit(1)
        return "recovered"

    assert ray.get(crash_once.remote(marker)) == "recovered"

    @ray.remote(max_retries=0)
    def crash():
        os._exit(1)

    with pytest.raises(ray.exceptions.WorkerCrashedError):
        ray.get(crash.remote())


def _counting_task(path, fail_times, exc):
    n = int(open(path).read()) if os.path.exists(path) else 0
    with open(path, "w") as f:
        f.write(str(n + 1))
    if n < fail_times:
        raise exc("flaky")
    return n


def test_retry_exceptions_true(tmp_path):
    path = str(tmp_path / "n")
    f = ray.remote(max_retries=3, retry_exceptions=True)(_counting_task)
    assert ray.get(f.remote(path, 2, ValueError)) == 2


def test_retry_exceptions_default_off(tmp_path):
    path = str(tmp_path / "n")
    f = ray.remote(max_retries=3)(_counting_task)
    with pytest.raises(ValueError):
        ray.get(f.remote(path, 2, ValueError))
    assert open(path).read() == "1"


def test_retry_exceptions_exhausted(tmp_path):
    path = str(tmp_path / "n")
    f = ray.remote(_counting_task).options(max_retries=1, retry_exceptions=True)
    with pytest.raises(ValueError):
        ray.get(f.remote(path, 5, ValueError))
    assert open(path).read() == "2"   # the first run and one retry


def test_retry_exceptions_list(tmp_path):
    f = ray.remote(max_retries=2, retry_exceptions=[KeyError])(_counting_task)
    assert ray.get(f.remote(str(tmp_path / "a"), 1, KeyError)) == 1
    with pytest.raises(ValueError):
        ray.get(f.remote(str(tmp_path / "b"), 1, ValueError))
    assert open(str(tmp_path / "b")).read() == "1"


def test_retry_exceptions_bad_value():
    with pytest.raises((TypeError, ValueError)):
        square.options(retry_exceptions="yes").remote(1)


# --- cancel ----------------------------------------------------------------------

def test_cancel_running_task():
    @ray.remote
    def blocking_operation():
        time.sleep(1000)

    obj_ref = blocking_operation.remote()
    time.sleep(0.2)
    ray.cancel(obj_ref)
    with pytest.raises(ray.exceptions.TaskCancelledError):
        ray.get(obj_ref, timeout=10)


def test_cancel_force_is_worker_crashed_or_cancelled():
    @ray.remote
    def blocking_operation():
        time.sleep(1000)

    obj_ref = blocking_operation.remote()
    time.sleep(0.2)
    ray.cancel(obj_ref, force=True)
    with pytest.raises((ray.exceptions.TaskCancelledError, ray.exceptions.WorkerCrashedError)):
        ray.get(obj_ref, timeout=10)


def test_cancel_non_ref_is_type_error():
    with pytest.raises(TypeError):
        ray.cancel("not a ref")


# --- generators -------------------------------------------------------------------

@ray.remote
def numbers(n):
    for i in range(n):
        yield i


def test_generator_task_yields_refs():
    gen = numbers.remote(3)
    assert isinstance(gen, ray.ObjectRefGenerator)
    refs = list(gen)
    assert all(isinstance(r, ray.ObjectRef) for r in refs)
    assert ray.get(refs) == [0, 1, 2]


def test_generator_next_and_stop():
    gen = numbers.remote(2)
    assert ray.get(next(gen)) == 0
    assert ray.get(next(gen)) == 1
    with pytest.raises(StopIteration):
        next(gen)


def test_generator_error_raised_at_next_ref():
    @ray.remote
    def task():
        for i in range(3):
            if i == 1:
                raise ValueError("boom")
            yield i

    gen = task.remote()
    assert ray.get(next(gen)) == 0
    with pytest.raises(ValueError):
        ray.get(next(gen))


def test_generator_async_iteration():
    async def main():
        return [await ref async for ref in numbers.remote(4)]

    assert asyncio.run(main()) == [0, 1, 2, 3]


def test_generator_refs_passed_to_task():
    @ray.remote
    def total(*xs):
        return sum(xs)

    assert ray.get(total.remote(*numbers.remote(5))) == 10


def test_dynamic_generator():
    ref = numbers.options(num_returns="dynamic").remote(3)
    assert isinstance(ref, ray.ObjectRef)
    assert [ray.get(r) for r in ray.get(ref)] == [0, 1, 2]


def test_generator_with_fixed_num_returns():
    a, b, c = numbers.options(num_returns=3).remote(3)
    assert ray.get([a, b, c]) == [0, 1, 2]


# --- runtime context and cluster info -----------------------------------------------

def test_runtime_context_driver():
    ctx = ray.get_runtime_context()
    assert isinstance(ctx.get_job_id(), str)
    assert isinstance(ctx.get_node_id(), str)
    assert ctx.get_actor_id() is None
    assert ctx.get_task_id() is None
    assert ctx.namespace


def test_runtime_context_in_task():
    @ray.remote
    def ids():
        c = ray.get_runtime_context()
        return c.get_task_id(), c.get_actor_id(), c.get_node_id(), c.get_assigned_resources()

    task_id, actor_id, node_id, res = ray.get(ids.remote())
    assert isinstance(task_id, str) and actor_id is None
    assert node_id == ray.get_runtime_context().get_node_id()
    assert res == {"CPU": 1.0}
    t2 = ray.get(ids.remote())[0]
    assert t2 != task_id


def test_nodes_and_resources():
    nodes = ray.nodes()
    assert len(nodes) == 1
    n = nodes[0]
    assert n["Alive"] is True
    assert n["Resources"]["CPU"] == 2.0
    assert n["NodeID"] == ray.get_runtime_context().get_node_id()
    assert ray.cluster_resources()["CPU"] == 2.0
    avail = ray.available_resources()
    assert 0 <= avail.get("CPU", 0) <= 2.0


def test_is_initialized_and_reinit():
    assert ray.is_initialized()
    with pytest.raises(RuntimeError):
        ray.init()
    ray.init(ignore_reinit_error=True)
    assert ray.is_initialized()


def test_get_gpu_ids_empty():
    assert ray.get_gpu_ids() == []


def test_exception_names_exist():
    for name in ["RayError", "RayTaskError", "RayActorError", "ActorDiedError", "TaskCancelledError",
                 "GetTimeoutError", "WorkerCrashedError", "ObjectLostError", "ObjectStoreFullError",
                 "OutOfMemoryError", "ActorUnavailableError", "ObjectFetchTimedOutError", "OwnerDiedError",
                 "ObjectReconstructionFailedError", "ReferenceCountingAssertionError",
                 "RuntimeEnvSetupError", "PendingCallsLimitExceeded", "TaskUnschedulableError",
                 "ActorUnschedulableError", "RaySystemError", "NodeDiedError", "ObjectFreedError"]:
        cls = getattr(ray.exceptions, name)
        assert issubclass(cls, ray.exceptions.RayError), name
    assert issubclass(ray.exceptions.GetTimeoutError, TimeoutError)
