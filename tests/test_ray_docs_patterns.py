"""Ray Core's "Design Patterns & Anti-patterns" pages and the ray.util helpers they lead to
(ActorPool, ray.util.queue.Queue, as_completed/map_unordered), each page's example shrunk and
checked for what the page (and Ray 2.x, where the page leaves it open) says it does.

tests/test_ray_compat_patterns.py has the plain runs of several of these pages; these tests check
what those leave out."""
import asyncio
import os
import pickle
import queue as stdlib_queue
import subprocess
import sys
import textwrap
import time
import weakref

import numpy as np
import pytest

import rayfast as ray
from rayfast.exceptions import GetTimeoutError
from rayfast.util import ActorPool
from rayfast.util.queue import Empty, Full, Queue

from conftest import wait_for

pytestmark = pytest.mark.usefixtures("cluster")   # conftest: init(num_cpus=2), leak check after


# --- Pattern: generators to reduce heap memory --------------------------------------------------
def _tracked(i, seen):
    value = np.full(300_000, i, dtype=np.uint8)    # large enough for the store
    seen.append(weakref.ref(value))
    return value


def test_generator_with_num_returns_stores_each_value_as_it_is_yielded(cluster):
    @ray.remote(num_returns=4)
    def large_values_generator():
        seen, freed = [], []
        for i in range(3):
            yield _tracked(i, seen)
            # back here, the value just yielded must be stored and dropped already: that is
            # the page's point (peak heap is one value, not num_returns of them)
            freed.append(seen[-1]() is None)
        yield freed

    *values, freed = large_values_generator.remote()
    assert [int(ray.get(v)[0]) for v in values] == [0, 1, 2]
    assert ray.get(freed) == [True, True, True]


def test_generator_yielding_another_count_than_num_returns(cluster):
    @ray.remote(num_returns=3)
    def too_few():
        yield "a"
        yield "b"

    @ray.remote(num_returns=2)
    def too_many():
        yield from range(5)

    @ray.remote(num_returns=3)
    def fails_midway():
        yield "a"
        raise KeyError("boom")

    # As in Ray: what was yielded is kept, the missing ones fail
    a, b, c = too_few.remote()
    assert ray.get([a, b]) == ["a", "b"]
    with pytest.raises(ValueError, match=r"returned 2 .*num_returns=3"):
        ray.get(c)
    # the first num_returns values are the results (Ray only logs the extra ones)
    assert ray.get(too_many.remote()) == [0, 1]
    a, b, c = fails_midway.remote()
    assert ray.get(a) == "a"
    for ref in (b, c):
        with pytest.raises(KeyError):
            ray.get(ref)


# --- Pattern: resources to limit concurrently running tasks ------------------------------------
def test_memory_resource_limits_how_many_tasks_run_at_once(cluster, tmp_path):
    memory = ray.cluster_resources()["memory"]

    @ray.remote(memory=memory * 0.6)   # only one such task fits the node at a time
    def process(path):
        with open(path, "a") as f:
            f.write("start\n")
        time.sleep(0.2)
        with open(path, "a") as f:
            f.write("end\n")
        return path

    log = tmp_path / "log"
    assert ray.get([process.remote(str(log)) for _ in range(3)]) == [str(log)] * 3
    assert log.read_text().split() == ["start", "end"] * 3   # never two at once

    @ray.remote(resources={"large_memory": 1})
    def needs_a_resource_no_node_has():
        return 1

    ref = needs_a_resource_no_node_has.remote()
    assert ray.wait([ref], timeout=0.3) == ([], [ref])   # pending, not failed
    ray.cancel(ref)


# --- Pattern: asyncio to run actor methods concurrently -----------------------------------------
@ray.remote(num_cpus=0)
class _TaskStore:
    def get_next_task(self):
        time.sleep(0.01)
        return "task"


def test_a_sync_actor_looping_in_run_starves_other_calls_an_async_one_does_not(cluster):
    @ray.remote
    class TaskExecutor:
        def __init__(self, task_store):
            self.task_store = task_store
            self.num_executed_tasks = 0

        def run(self):
            while True:
                ray.get(self.task_store.get_next_task.remote())
                self.num_executed_tasks += 1

        def get_num_executed_tasks(self):
            return self.num_executed_tasks

    @ray.remote
    class AsyncTaskExecutor:
        def __init__(self, task_store):
            self.task_store = task_store
            self.num_executed_tasks = 0

        async def run(self):
            while True:
                await self.task_store.get_next_task.remote()   # gives the loop up while waiting
                self.num_executed_tasks += 1

        def get_num_executed_tasks(self):
            return self.num_executed_tasks

    store = _TaskStore.remote()
    executor = TaskExecutor.remote(store)
    executor.run.remote()
    # run() holds the actor's only thread: the page's GetTimeoutError (a TimeoutError too)
    with pytest.raises(GetTimeoutError):
        ray.get(executor.get_num_executed_tasks.remote(), timeout=0.5)
    with pytest.raises(TimeoutError):
        ray.get(executor.get_num_executed_tasks.remote(), timeout=0.1)
    ray.kill(executor)

    async_executor = AsyncTaskExecutor.remote(store)
    async_executor.run.remote()
    assert wait_for(lambda: ray.get(async_executor.get_num_executed_tasks.remote(), timeout=5) > 3)
    ray.kill(async_executor)
    ray.kill(store)


# --- Anti-pattern: returning ray.put() ObjectRefs from a task -----------------------------------
def test_returning_values_directly_or_put_refs_gives_the_same_values(cluster):
    @ray.remote
    def single_bad():
        return ray.put(np.zeros(200_000))

    @ray.remote
    def single_good():
        return np.zeros(200_000)

    assert np.array_equal(ray.get(ray.get(single_bad.remote())), ray.get(single_good.remote()))

    @ray.remote
    def static_bad():
        return ray.put(1), ray.put(2), ray.put(3)

    @ray.remote(num_returns=3)
    def static_good():
        return 1, 2, 3

    assert [ray.get(r) for r in ray.get(static_bad.remote())] == ray.get(list(static_good.remote()))

    @ray.remote
    def dynamic_bad(n):
        return [ray.put(i) for i in range(n)]

    @ray.remote(num_returns="dynamic")
    def dynamic_good(n):
        for i in range(n):
            yield i

    gen = ray.get(dynamic_good.remote(3))
    assert type(gen).__name__ == "DynamicObjectRefGenerator"
    assert ray.get(ray.get(dynamic_bad.remote(3))) == ray.get(list(gen)) == [0, 1, 2]

    @ray.remote(num_returns="streaming")
    def streaming(n):
        for i in range(n):
            yield i

    assert [ray.get(r) for r in streaming.remote(3)] == [0, 1, 2]


# --- Anti-pattern: ray.get on task arguments; ray.get unnecessarily -----------------------------
def test_refs_nested_in_an_argument_stay_refs_top_level_ones_are_values(cluster):
    @ray.remote
    def f():
        return 1

    @ray.remote
    def pass_via_nested_ref(refs):
        assert all(isinstance(r, ray.ObjectRef) for r in refs)
        return sum(ray.get(refs))

    @ray.remote
    def pass_via_direct_arg(*args):
        assert args == (1, 1, 1)
        return sum(args)

    assert ray.get(pass_via_nested_ref.remote([f.remote() for _ in range(3)])) == 3
    assert ray.get(pass_via_direct_arg.remote(*[f.remote() for _ in range(3)])) == 3


def test_a_large_result_passed_on_by_ref_is_the_same_as_by_value(cluster):
    @ray.remote
    def generate_rollout():
        return np.ones((300, 300))

    @ray.remote
    def reduce(rollout):
        return float(np.sum(rollout))

    rollout = ray.get(generate_rollout.remote())
    assert ray.get(reduce.remote(rollout)) == ray.get(reduce.remote(generate_rollout.remote())) == 90_000.0


# --- Anti-patterns: processing in submission order, too many objects at once -------------------
def test_fetching_results_a_batch_at_a_time_with_wait(cluster):
    @ray.remote
    def return_big_object(i):
        return np.full(1024 * 10, i)

    refs = [return_big_object.remote(i) for i in range(25)]
    seen = []
    while refs:
        ready, refs = ray.wait(refs, num_returns=min(10, len(refs)))
        seen += [int(v[0]) for v in ray.get(ready)]
    assert sorted(seen) == list(range(25))
    # a batch larger than what is left is the caller's error, as in Ray
    with pytest.raises(ValueError, match="num_returns"):
        ray.wait([ray.put(1)], num_returns=2)


# --- Anti-pattern: too fine-grained tasks ---------------------------------------------------------
def test_batched_tasks_give_what_one_task_per_item_gives(cluster):
    def double(number):
        return number * 2

    @ray.remote
    def remote_double(number):
        return double(number)

    @ray.remote
    def remote_double_batch(numbers):
        return [double(n) for n in numbers]

    numbers = list(range(500))
    one_by_one = ray.get([remote_double.remote(n) for n in numbers])
    batches = [remote_double_batch.remote(numbers[i:i + 100]) for i in range(0, len(numbers), 100)]
    batched = [x for ref in batches for x in ray.get(ref)]
    assert one_by_one == batched == [2 * n for n in numbers]


# --- Anti-pattern: redefining the same remote function or class ---------------------------------
def test_a_redefined_remote_function_or_class_runs_its_latest_code(cluster):
    outputs = []
    for i in range(3):
        @ray.remote
        def double(x):
            return x * 2 + i   # each definition its own code object value of i

        outputs.append(double.remote(i))
    assert ray.get(outputs) == [0, 3, 6]

    values = []
    for i in range(3):
        @ray.remote
        class Actor:
            def value(self):
                return i

        values.append(Actor.remote().value.remote())
    assert ray.get(values) == [0, 1, 2]


# --- Anti-pattern: closure capturing large objects ------------------------------------------------
def test_large_objects_by_closure_by_put_or_made_inside(cluster):
    large_object = np.zeros(1024 * 1024)   # 8 MB

    @ray.remote
    def f1():
        return len(large_object)   # travels with f1

    large_object_ref = ray.put(np.zeros(1024 * 1024))

    @ray.remote
    def f2(large_object):
        return len(large_object)

    large_object_creator = lambda: np.zeros(1024 * 1024)  # noqa: E731

    @ray.remote
    def f3():
        return len(large_object_creator())

    assert ray.get([f1.remote(), f2.remote(large_object_ref), f3.remote()]) == [1024 * 1024] * 3


def test_a_lone_call_of_a_function_with_a_large_closure_runs(cluster, tmp_path):
    # Lone calls go to a leased worker directly; a call that carries an 8 MB function does not
    # fit that socket at once, and must still arrive, while the driver waits or does other things.
    @ray.remote
    def small():
        return 1

    large_object = np.zeros(1024 * 1024)
    done = tmp_path / "done"

    @ray.remote
    def f1():
        done.write_text("ran")
        return len(large_object)

    for _ in range(3):
        assert ray.get(small.remote()) == 1   # (the lease)
    assert ray.get(f1.remote(), timeout=20) == 1024 * 1024

    large_object = np.ones(1024 * 1024)   # another closure: f1 travels again
    done.unlink()
    assert ray.get(small.remote()) == 1
    ref = f1.remote()
    assert wait_for(done.exists, timeout=20)   # no get() yet
    assert ray.get(ref) == 1024 * 1024


# --- Anti-pattern: passing the same large argument by value repeatedly --------------------------
def test_a_large_argument_by_value_or_by_put(cluster):
    @ray.remote
    def func(large_arg, i):
        return len(large_arg) + i

    large_arg = np.zeros(256 * 1024)   # 2 MB
    by_value = ray.get([func.remote(large_arg, i) for i in range(4)])
    large_arg_ref = ray.put(large_arg)
    by_ref = ray.get([func.remote(large_arg_ref, i) for i in range(4)])
    assert by_value == by_ref == [256 * 1024 + i for i in range(4)]


# --- Anti-pattern: serializing ray.ObjectRef out of band ----------------------------------------
def test_out_of_band_ref_serialization(cluster):
    @ray.remote
    def by_pickle():
        return pickle.dumps(ray.put(1))   # invisible to the runtime: the object is freed

    @ray.remote
    def by_ray_cloudpickle():
        from rayfast import cloudpickle
        return cloudpickle.dumps(ray.put(2))   # pinned for the life of this worker

    # The worker's release travels to the node on its own socket while the reply comes straight
    # to the driver, so the free may land just after the driver sees the reply: wait for it.
    for _ in range(3):   # (the first through the node, then over a leased worker)
        blob = ray.get(by_pickle.remote())
        deadline = time.monotonic() + 10
        while True:
            try:   # (a fresh ref each time: a value the driver has read stays while a ref holds it)
                ray.get(pickle.loads(blob), timeout=0.05)
            except GetTimeoutError:
                break
            assert time.monotonic() < deadline, "an object whose only ref was pickled was not freed"
            ray.get(ray.put(None))   # carries the release of the ref this attempt made to the node
            time.sleep(0.01)
    assert ray.get(pickle.loads(ray.get(by_ray_cloudpickle.remote())), timeout=10) == 2

    # RAY_allow_out_of_band_object_ref_serialization=0 makes it an error, for finding the culprit
    forbidden = by_ray_cloudpickle.options(
        runtime_env={"env_vars": {"RAY_allow_out_of_band_object_ref_serialization": "0"}})
    with pytest.raises(ray.exceptions.OufOfBandObjectRefSerializationException,
                       match="not allowed to serialize"):
        ray.get(forbidden.remote())

    # the driver's own: pinned for the life of the driver, however its refs come and go
    from rayfast import cloudpickle
    ref = ray.put("driver's")
    blob = cloudpickle.dumps(ref)
    del ref
    assert ray.get(cloudpickle.loads(blob), timeout=10) == "driver's"


# --- Anti-pattern: forking new processes in application code -------------------------------------
def test_results_handed_to_spawned_processes(tmp_path):
    script = tmp_path / "spawn_pool.py"
    script.write_text(textwrap.dedent("""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        import numpy as np
        import rayfast as ray


        @ray.remote
        def generate_response(request):
            return np.ones(100_000) * request


        def process_response(response, idx):
            return idx, float(response.sum())


        def main():
            ray.init(num_cpus=1)
            responses = ray.get([generate_response.remote(i) for i in range(3)])
            multiprocessing.set_start_method("spawn", force=True)
            with ProcessPoolExecutor(max_workers=2) as executor:
                futures = [executor.submit(process_response, r, i) for i, r in enumerate(responses)]
                print(sorted(f.result() for f in as_completed(futures)))
            ray.shutdown()


        if __name__ == "__main__":
            main()
    """))
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[(0, 0.0), (1, 100000.0), (2, 200000.0)]"


# --- ray.util.ActorPool -------------------------------------------------------------------------
@ray.remote(num_cpus=0)
class _Doubler:
    def double(self, v):
        return 2 * v

    def slow(self, v):
        time.sleep(v)
        return v


def test_actor_pool_as_documented(cluster):
    a1, a2 = _Doubler.remote(), _Doubler.remote()
    pool = ActorPool([a1, a2])
    assert list(pool.map(lambda a, v: a.double.remote(v), [1, 2, 3, 4])) == [2, 4, 6, 8]
    assert set(pool.map_unordered(lambda a, v: a.double.remote(v), [1, 2, 3, 4])) == {2, 4, 6, 8}

    pool = ActorPool([a1])
    pool.submit(lambda a, v: a.double.remote(v), 1)
    assert pool.has_next() and not pool.has_free() and pool.pop_idle() is None
    assert pool.get_next() == 2
    assert not pool.has_next() and pool.has_free()
    assert pool.pop_idle() == a1
    pool.push(a2)
    with pytest.raises(ValueError, match="already belongs"):
        pool.push(a2)

    # get_next(timeout) leaves a late result in place, unless told to skip it
    pool.submit(lambda a, v: a.slow.remote(v), 0.5)
    with pytest.raises(TimeoutError):
        pool.get_next(timeout=0.05)
    assert pool.has_next()
    with pytest.raises(TimeoutError, match="has been ignored"):
        pool.get_next(timeout=0.05, ignore_if_timedout=True)
    assert not pool.has_next()

    # results in order, after an unordered one: not allowed, as in Ray
    pool = ActorPool([a1, a2])
    for v in (0.3, 0.0):
        pool.submit(lambda a, v: a.slow.remote(v), v)
    assert pool.get_next_unordered() == 0.0
    with pytest.raises(ValueError, match="get_next_unordered"):
        pool.get_next()
    assert pool.get_next_unordered() == 0.3
    with pytest.raises(StopIteration):
        pool.get_next_unordered()


def test_actor_pool_map_unordered_after_get_next_unordered(cluster):
    # As Ray's: map_unordered first waits out (and drops) what is still pending, even after an
    # unordered get, where get_next() would refuse
    pool = ActorPool([_Doubler.remote(), _Doubler.remote()])
    pool.submit(lambda a, v: a.slow.remote(v), 0.3)
    pool.submit(lambda a, v: a.slow.remote(v), 0.0)
    assert pool.get_next_unordered() == 0.0
    assert sorted(pool.map_unordered(lambda a, v: a.double.remote(v), [1, 2, 3])) == [2, 4, 6]
    assert not pool.has_next()


def test_actor_pool_submissions_queue_for_a_free_actor(cluster):
    pool = ActorPool([_Doubler.remote()])
    for v in range(5):
        pool.submit(lambda a, v: a.double.remote(v), v)
    assert [pool.get_next() for _ in range(5)] == [0, 2, 4, 6, 8]


# --- ray.util.queue.Queue -----------------------------------------------------------------------
def test_queue_consumers_drain_it_until_empty(cluster):
    queue = Queue(maxsize=100)

    @ray.remote
    def consumer(queue):
        got = []
        try:
            while True:
                got.append(queue.get(block=True, timeout=0.5))
        except Empty:
            return got

    for i in range(10):
        queue.put(i)
    consumers = [consumer.remote(queue) for _ in range(2)]
    got = ray.get(consumers, timeout=30)
    assert sorted(got[0] + got[1]) == list(range(10))
    assert all(g == sorted(g) for g in got)   # each sees the queue's order


def test_queue_errors_and_batches(cluster):
    q = Queue(maxsize=3)
    assert issubclass(Empty, stdlib_queue.Empty) and issubclass(Full, stdlib_queue.Full)
    q.put_nowait_batch([1, 2])
    with pytest.raises(Full):
        q.put_nowait_batch([3, 4])   # all or nothing
    assert q.qsize() == 2
    with pytest.raises(TypeError):
        q.put_nowait_batch(5)
    with pytest.raises(TypeError):
        q.get_nowait_batch("2")
    with pytest.raises(ValueError):
        q.get_nowait_batch(-1)
    with pytest.raises(Empty):
        q.get_nowait_batch(3)
    assert q.get_nowait_batch(2) == [1, 2]
    with pytest.raises(ValueError):
        q.put(1, timeout=-1)

    # a blocked put goes in once a consumer makes room
    q.put_nowait_batch([1, 2, 3])

    @ray.remote
    def take_later(q):
        time.sleep(0.2)
        return q.get()

    ref = take_later.remote(q)
    q.put(4, timeout=10)
    assert ray.get(ref) == 1
    assert q.get_nowait_batch(3) == [2, 3, 4]


def test_queue_actor_options_and_use_from_an_actor(cluster):
    q = Queue(actor_options={"num_cpus": 0, "name": "patterns-queue"})
    assert ray.get_actor("patterns-queue") is not None

    @ray.remote
    class Producer:
        def __init__(self, q):
            self.q = q

        async def produce(self, n):
            for i in range(n):
                await self.q.put_async(i)
            return n

    assert ray.get(Producer.remote(q).produce.remote(3)) == 3
    assert [q.get(timeout=5) for _ in range(3)] == [0, 1, 2]

    async def nonblocking():
        with pytest.raises(Empty):
            await q.get_async(block=False)
        with pytest.raises(Empty):
            await q.get_async(timeout=0.05)

    asyncio.run(nonblocking())
    q.shutdown()
    assert q.actor is None
    assert wait_for(lambda: "patterns-queue" not in ray.util.list_named_actors())


# --- ray.util.as_completed / map_unordered -------------------------------------------------------
def test_as_completed_and_map_unordered_yield_as_tasks_finish(cluster):
    @ray.remote
    def f(x):
        time.sleep(x)
        return x

    refs = [f.remote(x) for x in (0.6, 0.0, 0.0)]
    out = list(ray.util.as_completed(refs, chunk_size=1))
    assert sorted(out) == [0.0, 0.0, 0.6] and out[-1] == 0.6
    assert list(ray.util.as_completed([], chunk_size=2)) == []
    got = list(ray.util.as_completed([f.remote(0)], yield_obj_refs=True))
    assert isinstance(got[0], ray.ObjectRef)
    with pytest.raises(ValueError):
        list(ray.util.as_completed(refs, num_returns=2))
    with pytest.raises(ValueError):
        list(ray.util.as_completed(refs, chunk_size=0))

    assert sorted(ray.util.map_unordered(f, [0.0] * 7, backpressure_size=2, chunk_size=1)) == [0.0] * 7
    assert sorted(ray.util.map_unordered(f, [0.0] * 3, backpressure_size=None)) == [0.0] * 3
    with pytest.raises(ValueError):
        list(ray.util.map_unordered(f, [0.0], backpressure_size=0))
