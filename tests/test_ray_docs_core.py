"""Ray Core behaviour as Ray's documentation describes it, checked where the other compat
tests do not look: error messages of cancelled tasks, generator and option validation,
runtime context and util helpers. Written as a Ray user would (`import rayfast as ray`)."""
import pickle
import time

import pytest

import rayfast as ray
from rayfast import exceptions


@ray.remote
def sleeper(s):
    time.sleep(s)
    return s


def test_cancelled_task_error_names_the_task_once(cluster):
    ref = sleeper.remote(30)
    ray.cancel(ref)
    with pytest.raises(exceptions.TaskCancelledError) as info:
        ray.get(ref, timeout=20)
    text = str(info.value)
    assert text.count("was cancelled") == 1 and text.count("Task") == 1, text
    # errors that travel between processes keep their fields, not their message as a field
    for e in (exceptions.TaskCancelledError("ab"), exceptions.TaskCancelledWorkerCrashedError("ab"),
              exceptions.ObjectLostError("cd"), exceptions.OwnerDiedError("cd", "gone")):
        copy = pickle.loads(pickle.dumps(e))
        assert type(copy) is type(e) and str(copy) == str(e)


def test_cancel_right_after_submit_never_lets_the_task_run_on(cluster):
    # Ray's documented example: cancel at once, get raises TaskCancelledError. The interrupt
    # can reach the worker before it has started the task; it is repeated until it lands.
    for _ in range(20):
        ref = sleeper.remote(10 ** 6)
        ray.cancel(ref)
        with pytest.raises(exceptions.TaskCancelledError):
            ray.get(ref, timeout=10)


def test_option_types_are_type_errors_and_values_value_errors():
    def f():
        return 1

    # Ray: a wrong type is a TypeError, a wrong value a ValueError
    for bad in (dict(num_cpus="1"), dict(num_gpus=[1]), dict(memory="1GB"), dict(num_returns=1.0),
                dict(max_retries=1.5), dict(resources={"custom": "2"})):
        with pytest.raises(TypeError):
            ray.remote(**bad)(f)
    for bad in (dict(num_cpus=-1), dict(num_returns=-1), dict(max_retries=-2), dict(resources={"custom": -1}),
                dict(num_cpus=0.00001), dict(resources={"custom": 0.00001})):
        with pytest.raises(ValueError):
            ray.remote(**bad)(f)
    remote_f = ray.remote(num_cpus=0.0001, resources={"custom": 1.00001})(f)   # fine grain, but not finer

    async def coroutine():
        return 1

    with pytest.raises(ValueError, match="async def"):   # as Ray: for async actors only
        ray.remote(coroutine)
    # streaming and dynamic returns are for generator functions only, checked at the call site
    for nr in ("streaming", "dynamic"):
        with pytest.raises(ValueError, match="generator"):
            ray.remote(num_returns=nr)(f)
        with pytest.raises(ValueError, match="generator"):
            remote_f.options(num_returns=nr)


def test_assigned_resources_inside_a_placement_group_are_what_the_task_asked_for(cluster):
    from rayfast.util.placement_group import placement_group, remove_placement_group
    from rayfast.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    @ray.remote
    def assigned():
        ctx = ray.get_runtime_context()
        return ctx.get_assigned_resources(), ctx.current_placement_group_id

    pg = placement_group([{"CPU": 1}, {"CPU": 1}])
    ray.get(pg.ready(), timeout=30)
    try:
        for index in (-1, 1):
            strategy = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=index)
            res, pg_id = ray.get(assigned.options(num_cpus=0.5, scheduling_strategy=strategy).remote(), timeout=30)
            assert res == {"CPU": 0.5} and pg_id == pg.id.hex()
    finally:
        remove_placement_group(pg)
    assert ray.get(assigned.remote(), timeout=30) == ({"CPU": 1.0}, None)


def test_util_as_completed_and_map_unordered(cluster):
    # each as it finishes: a value that exists already comes before a task still sleeping,
    # whatever the order given (which worker runs the sleepers is not this test's business)
    refs = [sleeper.remote(0.8), ray.put(0.0), sleeper.remote(0.3)]
    got = list(ray.util.as_completed(refs, chunk_size=1))
    assert got[0] == 0.0 and sorted(got) == [0.0, 0.3, 0.8]
    assert sorted(ray.get(list(ray.util.as_completed(refs, yield_obj_refs=True)))) == [0.0, 0.3, 0.8]
    assert list(ray.util.as_completed([])) == []

    @ray.remote
    def square(x):
        return x * x

    assert sorted(ray.util.map_unordered(square, range(7), backpressure_size=2, chunk_size=1)) == \
        [x * x for x in range(7)]
    assert sorted(ray.util.map_unordered(square, [1, 2], backpressure_size=None)) == [1, 4]
    with pytest.raises(ValueError):
        list(ray.util.as_completed(refs, chunk_size=0))
    with pytest.raises(ValueError):
        list(ray.util.as_completed(refs, num_returns=2))
    with pytest.raises(ValueError):
        list(ray.util.map_unordered(square, [1], backpressure_size=0))


class _Locked:
    def __init__(self, x):
        import threading
        self.x = x
        self.lock = threading.Lock()


def test_unserializable_value_is_a_type_error_and_custom_serializers(cluster):
    class NoPickle:
        def __reduce__(self):
            raise RuntimeError("not today")

    with pytest.raises(TypeError, match="Could not serialize"):
        ray.put(NoPickle())
    with pytest.raises(TypeError, match="Could not serialize"):
        ray.put(_Locked(1))

    @ray.remote
    def plus_one(a):
        return a.x + 1

    # Ray's documented way out: a serializer registered for the class, in this process
    ray.util.register_serializer(_Locked, serializer=lambda a: a.x, deserializer=_Locked)
    try:
        assert ray.get(ray.put(_Locked(5))).x == 5
        assert ray.get(plus_one.remote(_Locked(2))) == 3
        assert ray.get(ray.put([_Locked(3)]))[0].x == 3   # inside a container too
    finally:
        ray.util.deregister_serializer(_Locked)
    with pytest.raises(TypeError):
        ray.put(_Locked(1))
    with pytest.raises(TypeError):
        ray.util.register_serializer("A", serializer=str, deserializer=str)


def test_get_of_a_list_raises_a_failure_without_waiting_for_the_rest(cluster):
    @ray.remote
    def fail():
        raise ValueError("failed early")

    slow = sleeper.remote(60)
    try:
        for refs in ([slow, fail.remote()], [fail.remote(), slow]):
            start = time.monotonic()
            with pytest.raises(ValueError, match="failed early"):
                ray.get(refs, timeout=30)
            assert time.monotonic() - start < 10
        bad = fail.remote()
        with pytest.raises(ValueError):
            ray.get([bad, bad, slow], timeout=30)   # already failed when get starts
    finally:
        ray.cancel(slow)
    # a failure among values that all arrive: still the first failed one's error, in list order
    with pytest.raises(ValueError):
        ray.get([sleeper.remote(0), fail.remote(), sleeper.remote(0)], timeout=30)


def test_ray_cloudpickle_is_there_for_out_of_band_serialization():
    from rayfast import cloudpickle   # Ray's anti-pattern page imports it this way
    assert cloudpickle.loads(cloudpickle.dumps(lambda x: x + 1))(1) == 2


def test_child_tasks_that_choose_where_to_run_leave_the_captured_group(cluster):
    from rayfast.util.placement_group import (PlacementGroup, get_current_placement_group, placement_group,
                                              remove_placement_group)
    from rayfast.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    @ray.remote
    def where():
        return get_current_placement_group() is not None

    @ray.remote
    def parent():
        # Ray's placement group guide: placement_group=None keeps a child out of the captured group
        return [ray.get(where.remote()),
                ray.get(where.options(scheduling_strategy=PlacementGroupSchedulingStrategy(None)).remote()),
                ray.get(where.options(placement_group=None).remote()),
                ray.get(where.options(scheduling_strategy="DEFAULT").remote())]

    pg = placement_group([{"CPU": 1}])
    try:
        ray.get(pg.ready(), timeout=30)
        strategy = PlacementGroupSchedulingStrategy(pg, placement_group_capture_child_tasks=True)
        assert ray.get(parent.options(num_cpus=0, scheduling_strategy=strategy).remote(), timeout=30) == \
            [True, False, False, False]
    finally:
        remove_placement_group(pg)
    empty = PlacementGroup.empty()
    assert empty.is_empty and not pg.is_empty and empty.bundle_count == 0


def test_generator_next_ready_says_whether_next_would_wait(cluster):
    @ray.remote
    def two_items(path):
        import os
        yield 1
        while not os.path.exists(path):   # the second item only once the test says so
            time.sleep(0.01)
        yield 2

    import os
    import tempfile
    path = os.path.join(tempfile.mkdtemp(), "go")
    gen = two_items.remote(path)
    assert ray.get(next(gen), timeout=30) == 1
    assert not gen.next_ready() and not gen.is_finished()
    open(path, "w").close()
    ray.get(gen.completed(), timeout=30)
    assert gen.next_ready()
    assert ray.get(next(gen)) == 2
    assert not gen.next_ready() and gen.is_finished()


def test_awaiting_a_ref_with_a_timeout_that_expires_breaks_nothing(cluster):
    import asyncio

    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(sleeper.remote(0.3), timeout=0.01)   # cancels the ref's future
        await asyncio.sleep(0.5)   # its value arrives for a future nobody waits on any more
        return await asyncio.gather(sleeper.remote(0), sleeper.remote(0.1))

    assert asyncio.run(main()) == [0, 0.1]
    assert sleeper.remote(0).future().result(timeout=30) == 0


def test_put_owner_is_an_actor_handle(cluster):
    @ray.remote
    class Owner:
        def ping(self):
            return 1

    owner = Owner.remote()
    ref = ray.put([1, 2], _owner=owner)
    assert ray.get(ref) == [1, 2]
    with pytest.raises(TypeError):
        ray.put(1, _owner=5)


def test_node_labels_match_nodes(cluster):
    labels = ray.get_runtime_context().get_node_labels()
    assert labels["ray.io/node-id"] == ray.get_runtime_context().get_node_id()
    assert ray.nodes()[0]["Labels"]["ray.io/node-id"] == labels["ray.io/node-id"]


def test_removing_a_placement_group_ends_its_tasks(cluster, tmp_path):
    from rayfast.util.placement_group import placement_group, remove_placement_group
    from rayfast.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    @ray.remote
    def long(path):
        open(path, "w").close()
        time.sleep(60)

    pg = placement_group([{"CPU": 1}])
    ray.get(pg.ready(), timeout=30)
    strategy = PlacementGroupSchedulingStrategy(pg)
    refs = [long.options(scheduling_strategy=strategy).remote(str(tmp_path / str(i))) for i in range(3)]
    deadline = time.monotonic() + 30
    while not any((tmp_path / str(i)).exists() for i in range(3)):
        ray.wait(refs, timeout=0.05)
        assert time.monotonic() < deadline
    remove_placement_group(pg)
    # Ray: the group's tasks are killed; those that had not started fail with TaskPlacementGroupRemoved
    errors = []
    for ref in refs:
        with pytest.raises((exceptions.TaskPlacementGroupRemovedError, exceptions.WorkerCrashedError)) as info:
            ray.get(ref, timeout=30)
        errors.append(type(info.value))
    assert errors.count(exceptions.TaskPlacementGroupRemovedError) == 2
    assert exceptions.TaskPlacementGroupRemoved is exceptions.TaskPlacementGroupRemovedError
    # nothing of the group comes back when its killed task's resources are released
    deadline = time.monotonic() + 10
    while ray.available_resources().get("CPU") != 2.0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    from rayfast import core_worker
    left = [k for k in core_worker.current().request("available_resources") if "_group_" in k]
    assert not left, left
    assert ray.get(sleeper.remote(0), timeout=30) == 0
    # one submitted into the removed group fails at once (Ray's would wait forever)
    with pytest.raises(exceptions.TaskPlacementGroupRemovedError, match="was removed"):
        ray.get(long.options(scheduling_strategy=strategy).remote(str(tmp_path / "late")), timeout=30)
    assert not (tmp_path / "late").exists()


def test_tasks_run_while_the_driver_does_something_else():
    # Tasks run in the background (Ray's futures): a driver that submits and then sleeps, reading
    # nothing, must not hold the only CPU leased for calls it makes no more.
    from conftest import run_driver
    code = """
        import os, tempfile, time
        import rayfast as ray
        ray.init(num_cpus=1)

        @ray.remote
        def touch(path):
            open(path, "w").close()

        where = tempfile.mkdtemp()
        for trial in range(4):
            ray.get(touch.remote(os.path.join(where, "warm")))   # lone calls
            refs = [touch.remote(os.path.join(where, f"{trial}-{i}")) for i in range(3)]
            deadline = time.monotonic() + 20
            while sum(os.path.exists(os.path.join(where, f"{trial}-{i}")) for i in range(3)) < 3:
                assert time.monotonic() < deadline, f"trial {trial}: tasks did not run while the driver slept"
                time.sleep(0.02)
            ray.get(refs)
        print("ok")
    """
    out = run_driver(code, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]
