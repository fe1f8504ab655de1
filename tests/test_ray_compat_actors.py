"""Ray core's documented actor behaviour, ActorPool and Queue, run with `import rayfast as ray`.

Examples and rules from docs.ray.io (ray-core/actors, named actors, async and
threaded actors, terminating actors, actor fault tolerance, ray.util.ActorPool,
ray.util.queue). Known differences from Ray are xfail with the reason.
"""
import asyncio
import os
import threading
import time

import pytest

import rayfast as ray
from rayfast.util import ActorPool
from rayfast.util.queue import Empty, Full, Queue


pytestmark = pytest.mark.usefixtures("cluster")   # conftest: init(num_cpus=2), leak check after


@ray.remote
class Counter:
    def __init__(self):
        self.value = 0

    def increment(self):
        self.value += 1
        return self.value

    def get_counter(self):
        return self.value


def test_counter_actor():
    counter = Counter.remote()
    assert ray.get([counter.increment.remote() for _ in range(3)]) == [1, 2, 3]
    assert ray.get(counter.get_counter.remote()) == 3


def test_actor_cannot_be_instantiated_or_called_directly():
    with pytest.raises(TypeError):
        Counter()
    c = Counter.remote()
    with pytest.raises(TypeError):
        c.increment()


def test_passing_actor_handles_to_tasks():
    @ray.remote
    def f(counter):
        for _ in range(10):
            counter.increment.remote()

    counter = Counter.remote()
    ray.get([f.remote(counter) for _ in range(3)])
    # Each task's 10 calls are done by the time get of the task returns? Not guaranteed by
    # Ray either; poll for the final value like the docs' example prints progress.
    deadline = time.monotonic() + 10
    while ray.get(counter.get_counter.remote()) < 30 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ray.get(counter.get_counter.remote()) == 30


def test_method_num_returns():
    @ray.remote
    class A:
        @ray.method(num_returns=2)
        def two(self):
            return 1, 2

        def one(self):
            return 0

    a = A.remote()
    r1, r2 = a.two.remote()
    assert ray.get([r1, r2]) == [1, 2]
    x, y, z = a.one.options(num_returns=1).remote(), *a.two.options(num_returns=2).remote()
    assert ray.get([x, y, z]) == [0, 1, 2]


def test_actor_method_exception_keeps_actor_alive():
    @ray.remote
    class A:
        def bad(self):
            raise ValueError("bad")

        def ok(self):
            return "ok"

    a = A.remote()
    with pytest.raises(ValueError):
        ray.get(a.bad.remote())
    assert ray.get(a.ok.remote()) == "ok"


def test_constructor_failure_is_actor_error():
    @ray.remote
    class Broken:
        def __init__(self):
            raise RuntimeError("init failed")

        def f(self):
            return 1

    b = Broken.remote()
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(b.f.remote(), timeout=10)


# --- named and detached -----------------------------------------------------------

def test_named_actor_get_actor():
    counter = Counter.options(name="compat_counter").remote()
    ray.get(counter.increment.remote())
    same = ray.get_actor("compat_counter")
    assert ray.get(same.increment.remote()) == 2


def test_get_actor_missing_is_value_error():
    with pytest.raises(ValueError):
        ray.get_actor("no_such_actor_anywhere")


def test_duplicate_name_is_value_error():
    # held: a non-detached actor whose handles are all gone ends, and frees its name
    first = Counter.options(name="compat_dup").remote()
    with pytest.raises(ValueError):
        Counter.options(name="compat_dup").remote()
    del first


def test_get_if_exists():
    a = Counter.options(name="compat_gie", get_if_exists=True).remote()
    ray.get(a.increment.remote())
    b = Counter.options(name="compat_gie", get_if_exists=True).remote()
    assert ray.get(b.get_counter.remote()) == 1


def test_namespaces():
    # held: with its only handle dropped at once, the actor could end before get_actor() finds it
    held = Counter.options(name="compat_ns", namespace="colors").remote()
    assert ray.get(ray.get_actor("compat_ns", namespace="colors").increment.remote()) == 1
    with pytest.raises(ValueError):
        ray.get_actor("compat_ns")
    del held


def test_list_named_actors():
    held = Counter.options(name="compat_listed").remote()   # (dropped, it could end before the listing)
    assert "compat_listed" in ray.util.list_named_actors()
    entries = ray.util.list_named_actors(all_namespaces=True)
    assert {"name": "compat_listed", "namespace": ray.get_runtime_context().namespace} in entries
    del held


def test_detached_actor_outlives_its_handle():
    d = Counter.options(name="compat_detached", lifetime="detached").remote()
    ray.get(d.increment.remote())
    del d
    time.sleep(0.3)
    again = ray.get_actor("compat_detached")
    assert ray.get(again.increment.remote()) == 2
    ray.kill(again)


# --- kill / exit -------------------------------------------------------------------------

def test_kill_then_calls_raise_actor_error():
    c = Counter.remote()
    ray.get(c.increment.remote())
    ray.kill(c)
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(c.increment.remote(), timeout=10)


def test_kill_non_actor_is_value_error():
    with pytest.raises(ValueError):
        ray.kill(ray.put(1))


def test_kill_frees_name():
    c = Counter.options(name="compat_reuse").remote()
    ray.get(c.increment.remote())
    ray.kill(c)
    time.sleep(0.3)
    c2 = Counter.options(name="compat_reuse").remote()
    assert ray.get(c2.increment.remote()) == 1


def test_exit_actor():
    @ray.remote
    class Exiter:
        def exit(self):
            ray.actor.exit_actor()

    a = Exiter.remote()
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(a.exit.remote(), timeout=10)


def test_ray_terminate():
    # Ray 2.x: calls before it finish, its own get and every later call raise ActorDiedError
    c = Counter.remote()
    ray.get(c.increment.remote())
    before = c.increment.remote()
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(c.__ray_terminate__.remote(), timeout=10)
    assert ray.get(before, timeout=10) == 2
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(c.increment.remote(), timeout=10)


# --- fault tolerance -------------------------------------------------------------------

def test_max_restarts():
    @ray.remote(max_restarts=1)
    class Phoenix:
        def __init__(self):
            self.n = 0

        def inc(self):
            self.n += 1
            return self.n

        def die(self):
            os._exit(1)

        def reconstructed(self):
            return ray.get_runtime_context().was_current_actor_reconstructed

    p = Phoenix.remote()
    assert ray.get(p.inc.remote()) == 1
    assert not ray.get(p.reconstructed.remote())
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(p.die.remote(), timeout=10)
    assert ray.get(p.inc.remote(), timeout=10) == 1      # state is rebuilt by __init__
    assert ray.get(p.reconstructed.remote())
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(p.die.remote(), timeout=10)
    with pytest.raises(ray.exceptions.RayActorError):   # no restarts left
        ray.get(p.inc.remote(), timeout=10)


def test_actor_retry_exceptions():
    @ray.remote(max_task_retries=3)
    class Flaky:
        def __init__(self):
            self.n = 0

        @ray.method(retry_exceptions=True)
        def f(self):
            self.n += 1
            if self.n < 3:
                raise ValueError("flaky")
            return self.n

    assert ray.get(Flaky.remote().f.remote(), timeout=10) == 3


def test_actor_retry_exceptions_options_and_limits():
    @ray.remote(max_task_retries=3)
    class Always:
        def __init__(self):
            self.n = 0

        def fail(self, exc_type):
            self.n += 1
            raise exc_type("no")

        def count(self):
            return self.n

    a = Always.remote()
    with pytest.raises(ValueError):   # 1 run + max_task_retries=3 retries, then the error
        ray.get(a.fail.options(retry_exceptions=True).remote(ValueError), timeout=10)
    assert ray.get(a.count.remote()) == 4
    with pytest.raises(KeyError):     # not in the list: not retried
        ray.get(a.fail.options(retry_exceptions=[ValueError]).remote(KeyError), timeout=10)
    assert ray.get(a.count.remote()) == 5
    with pytest.raises(ValueError):   # without retry_exceptions: never retried
        ray.get(a.fail.remote(ValueError), timeout=10)
    assert ray.get(a.count.remote()) == 6
    b = Always.options(max_task_retries=0).remote()
    with pytest.raises(ValueError):
        ray.get(b.fail.options(retry_exceptions=True).remote(ValueError), timeout=10)
    assert ray.get(b.count.remote()) == 1


# --- concurrency ------------------------------------------------------------------------

def test_async_actor_runs_concurrently():
    @ray.remote
    class AsyncActor:
        def __init__(self):
            self.arrived = 0

        async def run_concurrent(self, n):
            self.arrived += 1
            deadline = time.monotonic() + 30
            while self.arrived < n:   # only calls running at once get past this together
                assert time.monotonic() < deadline, "the calls did not run concurrently"
                await asyncio.sleep(0.01)
            return 1

    actor = AsyncActor.remote()
    assert ray.get([actor.run_concurrent.remote(4) for _ in range(4)], timeout=60) == [1] * 4


def test_async_actor_max_concurrency_1_serializes():
    @ray.remote(max_concurrency=1)
    class AsyncActor:
        async def run(self):
            await asyncio.sleep(0.3)
            return 1

    actor = AsyncActor.remote()
    ray.get(actor.run.remote())
    t = time.monotonic()
    ray.get([actor.run.remote() for _ in range(3)])
    assert time.monotonic() - t >= 0.85


def test_async_actor_awaits_object_refs():
    @ray.remote
    def some_task():
        return 1

    @ray.remote
    class AsyncActor:
        async def run_task(self):
            return await some_task.remote() + await asyncio.wrap_future(some_task.remote().future())

    assert ray.get(AsyncActor.remote().run_task.remote()) == 2


def test_threaded_actor():
    @ray.remote(max_concurrency=2)
    class ThreadedActor:
        def task(self):
            start = time.monotonic()
            time.sleep(0.5)
            return threading.get_ident(), start, time.monotonic()

    a = ThreadedActor.remote()
    ray.get(a.task.remote())
    (id1, s1, e1), (id2, s2, e2) = ray.get([a.task.remote(), a.task.remote()])
    assert max(s1, s2) < min(e1, e2)   # they overlapped (one actor process: one clock)
    assert id1 != id2


def test_sync_actor_runs_in_order():
    @ray.remote
    class Log:
        def __init__(self):
            self.items = []

        def add(self, x):
            self.items.append(x)

        def get(self):
            return self.items

    log = Log.remote()
    for i in range(100):
        log.add.remote(i)
    assert ray.get(log.get.remote()) == list(range(100))


def test_current_actor_and_actor_id():
    @ray.remote
    class Self:
        def me(self):
            return ray.get_runtime_context().current_actor

        def aid(self):
            return ray.get_runtime_context().get_actor_id()

    s = Self.remote()
    aid = ray.get(s.aid.remote())
    assert isinstance(aid, str)
    assert s._actor_id.hex() == aid
    assert ray.get(s.me.remote())._actor_id.hex() == aid


def test_cancel_async_actor_task():
    @ray.remote
    class AsyncSleeper:
        async def sleep(self):
            await asyncio.sleep(30)

    a = AsyncSleeper.remote()
    ref = a.sleep.remote()
    time.sleep(0.3)
    ray.cancel(ref)
    with pytest.raises(ray.exceptions.TaskCancelledError):
        ray.get(ref, timeout=5)
    assert ray.get(a.__ray_ready__.remote(), timeout=5)   # the actor goes on


@pytest.mark.parametrize("direct", [True, False])
def test_cancel_actor_calls_follows_ray(direct, monkeypatch, tmp_path):
    # Ray: a queued call is cancelled, a running call of a sync actor runs on, force=True is refused
    @ray.remote
    class Sleeper:
        def sleep(self, x, marker=None, gate=None):
            if marker:
                open(marker, "w").close()
            deadline = time.monotonic() + 30
            while gate and not os.path.exists(gate) and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(x)
            return x

    s = Sleeper.remote()
    if not direct:   # calls of a process that opened no channel go through the node manager
        from rayfast import core_worker
        monkeypatch.setattr(core_worker.current(), "actor_channels", None)
        import rayfast.actor_channel as ach
        monkeypatch.setattr(ach, "ENABLED", False)
    assert ray.get(s.sleep.remote(0)) == 0
    # the running call waits at a gate until queued is cancelled: queued cannot have run by then
    gate = str(tmp_path / "gate")
    running, queued = s.sleep.remote(0.6, None, gate), s.sleep.remote(0.01)
    time.sleep(0.2)
    ray.cancel(queued)
    open(gate, "w").close()
    with pytest.raises(ray.exceptions.TaskCancelledError):
        ray.get(queued, timeout=10)
    assert ray.get(running, timeout=10) == 0.6
    marker = str(tmp_path / "running")
    r = s.sleep.remote(0.4, marker)
    deadline = time.monotonic() + 10
    while not os.path.exists(marker):   # cancel it once it runs
        assert time.monotonic() < deadline
        time.sleep(0.005)
    ray.cancel(r)
    assert ray.get(r, timeout=10) == 0.4
    with pytest.raises(ValueError, match="force=True"):
        ray.cancel(s.sleep.remote(0.01), force=True)
    assert ray.get(s.sleep.remote(0)) == 0


def test_cancel_queued_call_of_threaded_actor(tmp_path):
    @ray.remote(max_concurrency=2)
    class Threaded:
        def sleep(self, x, gate=None):
            deadline = time.monotonic() + 30
            while gate and not os.path.exists(gate) and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(x)
            return x

    t = Threaded.remote()
    ray.get(t.sleep.remote(0))
    gate = str(tmp_path / "gate")   # the first two wait there until the third is cancelled
    refs = [t.sleep.remote(0.5, gate) for _ in range(3)]
    time.sleep(0.2)
    ray.cancel(refs[2])   # the pool's two threads run the first two; the third waits
    open(gate, "w").close()
    assert ray.get(refs[:2], timeout=10) == [0.5, 0.5]
    with pytest.raises(ray.exceptions.TaskCancelledError):
        ray.get(refs[2], timeout=10)


# --- ActorPool ------------------------------------------------------------------------

@ray.remote
class PoolActor:
    def double(self, v):
        return 2 * v

    def slow_double(self, v):
        time.sleep(v)
        return 2 * v


def test_actor_pool_map():
    a1, a2 = PoolActor.remote(), PoolActor.remote()
    pool = ActorPool([a1, a2])
    assert list(pool.map(lambda a, v: a.double.remote(v), [1, 2, 3, 4])) == [2, 4, 6, 8]


def test_actor_pool_map_unordered():
    pool = ActorPool([PoolActor.remote(), PoolActor.remote()])
    out = list(pool.map_unordered(lambda a, v: a.slow_double.remote(v), [0.4, 0.0, 0.1]))
    assert sorted(out) == [0.0, 0.2, 0.8]
    assert out[-1] == 0.8


def test_actor_pool_submit_get_next():
    pool = ActorPool([PoolActor.remote(), PoolActor.remote()])
    pool.submit(lambda a, v: a.double.remote(v), 1)
    pool.submit(lambda a, v: a.double.remote(v), 2)
    pool.submit(lambda a, v: a.double.remote(v), 3)   # queued until an actor is free
    assert pool.has_next()
    assert [pool.get_next(), pool.get_next(), pool.get_next()] == [2, 4, 6]
    assert not pool.has_next()
    with pytest.raises(StopIteration):
        pool.get_next()


def test_actor_pool_get_next_unordered_and_timeout():
    pool = ActorPool([PoolActor.remote()])
    pool.submit(lambda a, v: a.slow_double.remote(v), 1.0)
    with pytest.raises(TimeoutError):
        pool.get_next_unordered(timeout=0.05)
    assert pool.get_next_unordered() == 2.0


def test_actor_pool_idle_push_pop():
    a1, a2 = PoolActor.remote(), PoolActor.remote()
    pool = ActorPool([a1])
    assert pool.has_free()
    popped = pool.pop_idle()
    assert popped == a1
    assert not pool.has_free() and pool.pop_idle() is None
    pool.push(a2)
    assert pool.has_free()
    with pytest.raises(ValueError):
        pool.push(a2)
    pool.submit(lambda a, v: a.double.remote(v), 5)
    assert not pool.has_free()
    assert pool.get_next() == 10


# --- Queue -------------------------------------------------------------------------------

def test_queue_put_get_between_driver_and_tasks():
    queue = Queue(maxsize=100)

    @ray.remote
    def consumer(id, queue):
        next_item = queue.get(block=True)
        return id, next_item

    consumers = [consumer.remote(i, queue) for i in range(2)]
    [queue.put(i) for i in range(2)]
    out = ray.get(consumers, timeout=20)
    assert sorted(item for _, item in out) == [0, 1]
    assert queue.empty()


def test_queue_sizes_and_nowait():
    q = Queue(maxsize=2)
    assert q.empty() and not q.full() and q.qsize() == 0 and len(q) == 0
    q.put(1)
    q.put_nowait(2)
    assert q.full() and q.qsize() == 2
    with pytest.raises(Full):
        q.put_nowait(3)
    with pytest.raises(Full):
        q.put(3, timeout=0.1)
    assert q.get() == 1
    assert q.get_nowait() == 2
    with pytest.raises(Empty):
        q.get_nowait()
    with pytest.raises(Empty):
        q.get(timeout=0.1)
    with pytest.raises(ValueError):
        q.get(timeout=-1)


def test_queue_batches_and_shutdown():
    q = Queue()
    q.put_nowait_batch([1, 2, 3])
    assert q.get_nowait_batch(2) == [1, 2]
    with pytest.raises(Empty):
        q.get_nowait_batch(5)
    assert q.get() == 3
    q.shutdown()


def test_queue_async_api():
    q = Queue()

    async def main():
        await q.put_async("a")
        return await q.get_async()

    assert asyncio.run(main()) == "a"


# --- concurrency groups ------------------------------------------------------------------

@ray.remote(concurrency_groups={"io": 2, "compute": 1})
class Grouped:
    def __init__(self):
        self.active = {"io": 0, "compute": 0, "default": 0}
        self.peak = dict(self.active)
        self.lock = threading.Lock()

    def _occupy(self, group):
        with self.lock:
            self.active[group] += 1
            self.peak[group] = max(self.peak[group], self.active[group])
        time.sleep(0.15)
        with self.lock:
            self.active[group] -= 1

    @ray.method(concurrency_group="io")
    def io(self):
        self._occupy("io")

    @ray.method(concurrency_group="compute")
    def compute(self):
        self._occupy("compute")

    def default(self):
        self._occupy("default")

    def peaks(self):
        return self.peak


def test_concurrency_groups_limit_each_group_separately():
    a = Grouped.remote()
    ray.get([a.io.remote() for _ in range(4)] + [a.compute.remote() for _ in range(2)]
            + [a.default.remote() for _ in range(2)], timeout=30)
    # each group ran up to its own limit (not one call at a time, not all at once)
    assert ray.get(a.peaks.remote()) == {"io": 2, "compute": 1, "default": 1}


def test_concurrency_group_chosen_per_call_and_unknown_group():
    a = Grouped.remote()
    ray.get([a.default.options(concurrency_group="io").remote() for _ in range(2)], timeout=30)
    assert ray.get(a.peaks.remote())["default"] == 2   # both ran at once, in the io group
    with pytest.raises(ValueError, match="concurrency group 'nope' does not exist"):
        ray.get(a.default.options(concurrency_group="nope").remote(), timeout=30)
    with pytest.raises(ValueError):
        Grouped.options(concurrency_groups={"io": 0}).remote()


def test_concurrency_groups_of_an_async_actor():
    @ray.remote(concurrency_groups={"io": 2})
    class AsyncGrouped:
        def __init__(self):
            self.active = 0
            self.peak = 0

        @ray.method(concurrency_group="io")
        async def io(self):
            self.active += 1
            self.peak = max(self.peak, self.active)
            await asyncio.sleep(0.1)
            self.active -= 1

        async def peak_seen(self):
            return self.peak

    b = AsyncGrouped.remote()
    ray.get([b.io.remote() for _ in range(6)], timeout=30)
    assert ray.get(b.peak_seen.remote()) == 2


def test_max_pending_calls():
    @ray.remote(max_pending_calls=2)
    class Slow:
        def f(self):
            time.sleep(0.3)
            return 1

    a = Slow.remote()
    refs = [a.f.remote(), a.f.remote()]
    with pytest.raises(ray.exceptions.PendingCallsLimitExceeded, match="max_pending_calls"):
        a.f.remote()
    assert ray.get(refs, timeout=10) == [1, 1]
    assert ray.get(a.f.remote(), timeout=10) == 1   # results in: room again
    with pytest.raises(ValueError):
        Slow.options(max_pending_calls=0).remote()


# --- generator methods ---------------------------------------------------------------------

@ray.remote
class Producer:
    def gen(self, n):
        for i in range(n):
            yield i

    def gen_then_fail(self, n):
        for i in range(n):
            yield i
        raise ValueError("ran dry")

    def slow_gen(self, marker):
        yield "first"
        while not os.path.exists(marker):   # the caller has item 0 while this still runs
            time.sleep(0.01)
        yield "second"

    async def agen(self, n):
        for i in range(n):
            await asyncio.sleep(0)
            yield i * 10


def test_actor_generator_methods_stream_by_default():
    p = Producer.remote()
    g = p.gen.remote(3)
    assert isinstance(g, ray.ObjectRefGenerator)
    assert [ray.get(r) for r in g] == [0, 1, 2]
    assert ray.get(p.gen.options(num_returns=3).remote(3)) == [0, 1, 2]
    dyn = ray.get(p.gen.options(num_returns="dynamic").remote(2))
    assert [ray.get(r) for r in dyn] == [0, 1]


def test_actor_generator_error_is_the_last_item():
    refs = list(Producer.remote().gen_then_fail.remote(2))
    assert ray.get(refs[:2]) == [0, 1]
    with pytest.raises(ValueError, match="ran dry"):
        ray.get(refs[2])


def test_actor_generator_items_arrive_while_it_runs(tmp_path):
    marker = str(tmp_path / "go")
    g = Producer.remote().slow_gen.remote(marker)
    assert ray.get(next(g), timeout=10) == "first"
    open(marker, "w").close()
    assert ray.get(next(g), timeout=10) == "second"
    with pytest.raises(StopIteration):
        next(g)


def test_async_actor_generator_method():
    g = Producer.remote().agen.remote(3)
    assert [ray.get(r) for r in g] == [0, 10, 20]


def test_runtime_context_per_call_in_threaded_and_async_actors():
    # several calls run at once there: each sees its own task id and name
    @ray.remote(max_concurrency=3)
    class Threaded:
        def who(self):
            time.sleep(0.05)
            ctx = ray.get_runtime_context()
            return ctx.get_task_name(), ctx.get_task_id()

    @ray.remote
    class Async:
        async def who(self):
            await asyncio.sleep(0.05)
            ctx = ray.get_runtime_context()
            return ctx.get_task_name(), ctx.get_task_id()

    for cls, name in ((Threaded, "Threaded.who"), (Async, "Async.who")):
        a = cls.remote()
        refs = [a.who.remote() for _ in range(3)]
        out = ray.get(refs, timeout=30)
        assert [n for n, _ in out] == [name] * 3
        assert [t for _, t in out] == [r.task_id().hex() for r in refs]


def test_ray_call_runs_a_function_on_the_actor_instance():
    # Ray's built-in actor method: __ray_call__(fn, *args, **kwargs) runs fn(instance, ...) in the actor
    @ray.remote
    class Holder:
        def __init__(self):
            self.value = 41

    @ray.remote
    class AsyncHolder:
        async def noop(self):
            return None

    h = Holder.remote()
    assert ray.get(h.__ray_call__.remote(lambda self, inc, scale=1: (self.value + inc) * scale, 1, scale=2)) == 84
    assert ray.get(AsyncHolder.remote().__ray_call__.remote(lambda self: type(self).__name__)) == "AsyncHolder"
    with pytest.raises(TypeError):
        h.__ray_call__.remote()   # fn is required, at the call site
