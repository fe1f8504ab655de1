"""Actors as Ray's documentation describes them (Ray Core user guide: actors, fault tolerance,
ActorPool, Queue), written as a Ray user would: `import rayfast as ray`."""
import os
import signal
import time

import pytest

import rayfast as ray
from rayfast.util import ActorPool

from conftest import wait_for


@ray.remote
class Pinger:
    def ping(self):
        return "hello"

    def pid(self):
        return os.getpid()

    def double(self, v):
        if v == "die":
            os._exit(1)
        return 2 * v


# --- fault tolerance: actors ----------------------------------------------------

def test_actor_fate_shares_with_its_owner_detached_does_not(cluster):
    # The docs' "actor creator failure" example: the owner is the process that called .remote().
    @ray.remote
    class Parent:
        def generate_actors(self):
            self.child = Pinger.remote()
            self.detached_actor = Pinger.options(name="docs_detached", lifetime="detached").remote()
            return self.child, self.detached_actor

        def pid(self):
            return os.getpid()

    parent = Parent.remote()
    child, detached = ray.get(parent.generate_actors.remote())
    assert ray.get([child.ping.remote(), detached.ping.remote()]) == ["hello", "hello"]
    os.kill(ray.get(parent.pid.remote()), signal.SIGKILL)
    with pytest.raises(ray.exceptions.ActorDiedError, match="owner"):
        # (the owner's death reaches the node a moment after the kill)
        for _ in range(100):
            ray.get(child.ping.remote())
            time.sleep(0.05)
    assert ray.get(detached.ping.remote()) == "hello"
    ray.kill(detached)


def test_actor_died_error_says_why_as_ray_does(cluster):
    a = Pinger.remote()
    ray.get(a.ping.remote())
    ray.kill(a)
    with pytest.raises(ray.exceptions.ActorDiedError) as info:
        ray.get(a.ping.remote())
    text = str(info.value)
    assert text.startswith("The actor died unexpectedly before finishing this task.")
    assert "class_name: Pinger" in text and a._actor_id.hex() in text and "killed by `ray.kill`" in text


def test_a_method_may_create_actors_of_its_own_class(cluster):
    # (the class reaches the actor's process in a pickle cycle: its methods refer to it)
    @ray.remote
    class Tree:
        def __init__(self, depth):
            self.child = Tree.remote(depth - 1) if depth else None

        def size(self):
            return 1 + (ray.get(self.child.size.remote()) if self.child else 0)

        def sibling(self):
            return Tree.remote(0)

    t = Tree.remote(2)
    assert ray.get(t.size.remote()) == 3
    assert ray.get(ray.get(t.sibling.remote()).size.remote()) == 1


def test_dunder_methods_of_the_class_are_remote_methods(cluster):
    @ray.remote
    class Box:
        def __init__(self):
            self.items = [1, 2, 3]

        def __len__(self):
            return len(self.items)

        def __call__(self, i):
            return self.items[i]

    b = Box.remote()
    assert ray.get([b.__len__.remote(), b.__call__.remote(1)]) == [3, 2]
    with pytest.raises(AttributeError):
        b.__iter__   # object's own are not


def test_actor_made_by_a_task_lives_on_after_the_task(cluster):
    @ray.remote
    def make():
        return Pinger.remote()

    assert ray.get(ray.get(make.remote()).ping.remote()) == "hello"


def test_call_in_flight_during_restart_is_unavailable_then_actor_recovers(cluster):
    @ray.remote(max_restarts=1)
    class Crashy:
        def die(self):
            os._exit(1)

        def ping(self):
            return "hello"

    a = Crashy.remote()
    with pytest.raises(ray.exceptions.ActorUnavailableError) as info:
        ray.get(a.die.remote())
    assert isinstance(info.value, ray.exceptions.RayActorError)
    assert not isinstance(info.value, ray.exceptions.ActorDiedError)
    assert ray.get(a.ping.remote()) == "hello"
    with pytest.raises(ray.exceptions.ActorDiedError) as info:   # no restarts left
        ray.get(a.die.remote())
    assert info.value.actor_id == a._actor_id.hex()
    with pytest.raises(ray.exceptions.ActorDiedError):
        ray.get(a.ping.remote())


def test_actor_died_error_attributes(cluster):
    @ray.remote
    class Bad:
        def __init__(self):
            raise ValueError("boom")

        def f(self):
            return 1

    b = Bad.remote()
    with pytest.raises(ray.exceptions.ActorDiedError) as info:
        ray.get(b.f.remote())
    e = info.value
    assert e.actor_init_failed and isinstance(e.cause, ValueError)
    assert e.actor_id == b._actor_id.hex() and "creation task" in e.error_msg
    k = Pinger.remote()
    ray.kill(k)
    with pytest.raises(ray.exceptions.ActorDiedError) as info:
        ray.get(k.ping.remote())
    assert not info.value.actor_init_failed


# --- ray.util.ActorPool -----------------------------------------------------------

def test_actor_pool_drops_an_actor_that_died(cluster):
    a1, a2 = Pinger.remote(), Pinger.remote()
    pool = ActorPool([a1, a2])
    pool.submit(lambda a, v: a.double.remote(v), "die")
    with pytest.raises(ray.exceptions.ActorDiedError):
        pool.get_next()
    assert len(pool._idle_actors) == 1 and pool.has_free()
    # the survivor takes all later work
    assert list(pool.map(lambda a, v: a.double.remote(v), [1, 2, 3])) == [2, 4, 6]
    assert sorted(pool.map_unordered(lambda a, v: a.double.remote(v), [1, 2])) == [2, 4]


# --- ray.util.queue.Queue ---------------------------------------------------------

def test_queue_shutdown_graceful_and_forced(cluster):
    from rayfast.util.queue import Queue

    q = Queue()
    q.put(1)
    actor = q.actor
    t = time.monotonic()
    q.shutdown()                      # graceful: __ray_terminate__, killed after grace_period_s
    assert time.monotonic() - t < 5 and q.actor is None
    with pytest.raises(ray.exceptions.ActorDiedError):
        ray.get(actor.qsize.remote())
    q2 = Queue(actor_options={"num_cpus": 0})
    actor = q2.actor
    q2.shutdown(force=True)
    with pytest.raises(ray.exceptions.ActorDiedError):
        ray.get(actor.qsize.remote())


# --- terminating actors -------------------------------------------------------------

class _Tidy:
    """Leaves a file per cleanup hook that ran (__ray_shutdown__, atexit) in its directory."""

    def __init__(self, where):
        import atexit
        self.where = where
        atexit.register(lambda: open(os.path.join(where, "atexit"), "w").close())

    def __ray_shutdown__(self):
        open(os.path.join(self.where, "shutdown"), "w").close()

    def stop(self):
        ray.actor.exit_actor()

    def ping(self):
        return 1


class _AsyncTidy(_Tidy):
    async def stop(self):
        ray.actor.exit_actor()


@pytest.mark.parametrize("how", ["exit_actor", "threaded_exit_actor", "async_exit_actor", "__ray_terminate__",
                                 "out_of_scope", "kill"])
def test_graceful_ends_run_shutdown_hooks_kill_does_not(cluster, tmp_path, how):
    # Terminating actors: a graceful end runs __ray_shutdown__() and atexit handlers, ray.kill neither.
    cls = ray.remote(_AsyncTidy if how == "async_exit_actor" else _Tidy)
    opts = {"max_concurrency": 2} if how == "threaded_exit_actor" else {}
    a = cls.options(**opts).remote(str(tmp_path))
    assert ray.get(a.ping.remote()) == 1
    if how.endswith("exit_actor"):
        ref = a.stop.remote()
    elif how == "__ray_terminate__":
        ref = a.__ray_terminate__.remote()
    elif how == "kill":
        ray.kill(a)
        ref = a.ping.remote()
    if how == "out_of_scope":
        del a
    else:
        with pytest.raises(ray.exceptions.ActorDiedError):
            ray.get(ref)
    expected = [] if how == "kill" else ["atexit", "shutdown"]
    deadline = time.monotonic() + (0.3 if how == "kill" else 5)
    while sorted(os.listdir(tmp_path)) != expected and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)
    assert sorted(os.listdir(tmp_path)) == expected


class _Busy:
    def slow(self):
        time.sleep(0.5)
        return "done"

    def stop(self):
        ray.actor.exit_actor()

    def ping(self):
        return 1


class _AsyncBusy:
    async def slow(self):
        import asyncio
        await asyncio.sleep(0.5)
        return "done"

    async def stop(self):
        ray.actor.exit_actor()

    async def ping(self):
        return 1


@pytest.mark.parametrize("kind", ["threaded", "async"])
@pytest.mark.parametrize("how", ["exit_actor", "__ray_terminate__"])
def test_graceful_end_of_a_concurrent_actor_lets_running_calls_finish(cluster, kind, how):
    # ray.kill docs: "to kill the actor but let pending tasks finish, call __ray_terminate__";
    # exit_actor() likewise waits for the calls already running.
    cls = ray.remote(_AsyncBusy if kind == "async" else _Busy)
    a = cls.options(max_concurrency=2 if kind == "threaded" else None).remote()
    ray.get(a.ping.remote())
    running = a.slow.remote()
    time.sleep(0.1)
    end = a.stop.remote() if how == "exit_actor" else a.__ray_terminate__.remote()
    later = a.ping.remote()
    assert ray.get(running) == "done"
    for ref in (end, later):
        with pytest.raises(ray.exceptions.ActorDiedError):
            ray.get(ref)


def test_graceful_end_does_not_wait_on_a_blocked_call(cluster):
    # The ending call fails at once, as in Ray, even while another call waits for ever.
    import asyncio

    @ray.remote
    class Waiter:
        def __init__(self):
            self.event = asyncio.Event()

        async def wait(self):
            await self.event.wait()

        async def ping(self):
            return 1

    w = Waiter.remote()
    ray.get(w.ping.remote())
    w.wait.remote()
    t = time.monotonic()
    with pytest.raises(ray.exceptions.ActorDiedError):
        ray.get(w.__ray_terminate__.remote(), timeout=10)
    with pytest.raises(ray.exceptions.ActorDiedError):
        ray.get(w.ping.remote(), timeout=10)
    assert time.monotonic() - t < 5
    ray.kill(w)


@pytest.mark.parametrize("code", [0, 1])
def test_sys_exit_in_a_method_zero_ends_nonzero_crashes(cluster, code):
    # Ray: sys.exit(0) is the actor's own end (as exit_actor(): no restart); any other code is a
    # crash that max_restarts covers (the docs' checkpointing example exits with sys.exit(1)).
    @ray.remote(max_restarts=1)
    class Exits:
        def quit(self, code):
            import sys
            sys.exit(code)

        def pid(self):
            return os.getpid()

    a = Exits.remote()
    pid = ray.get(a.pid.remote())
    if code == 0:
        with pytest.raises(ray.exceptions.ActorDiedError):
            ray.get(a.quit.remote(code))
        with pytest.raises(ray.exceptions.ActorDiedError):
            ray.get(a.pid.remote())
    else:
        with pytest.raises(ray.exceptions.ActorUnavailableError):
            ray.get(a.quit.remote(code))
        assert ray.get(a.pid.remote()) != pid


# --- actor task execution order ------------------------------------------------------------

@ray.remote
def _delayed_resolution(value):
    time.sleep(0.5)
    return value


class _Adder:
    def __init__(self):
        self.value = 0

    def add(self, addition):
        self.value += addition
        return self.value


class _AsyncAdder:
    def __init__(self):
        self.value = 0

    async def add(self, addition):
        self.value += addition
        return self.value


@pytest.mark.parametrize("kind", ["sync", "threaded", "async", "out_of_order"])
@pytest.mark.parametrize("warm", [False, True])   # first calls go through the node manager, later direct
def test_execution_order_with_an_unready_argument(cluster, kind, warm):
    # "Actor task execution order": a sequential actor runs a caller's calls in submission order,
    # waiting for the first one's argument, unless allow_out_of_order_execution; an async or
    # threaded one runs the second meanwhile.
    cls = ray.remote(_AsyncAdder if kind == "async" else _Adder)
    counter = cls.options(max_concurrency=2 if kind == "threaded" else None,
                          allow_out_of_order_execution=kind == "out_of_order").remote()
    if warm:
        ray.get(counter.add.remote(0))
    value0 = counter.add.remote(_delayed_resolution.remote(1))
    value1 = counter.add.remote(2)
    if kind == "sync":
        assert ray.get([value0, value1]) == [1, 3]
    else:
        assert ray.get([value0, value1]) == [3, 2]


# --- AsyncIO actors ------------------------------------------------------------------------

def test_async_actor_constructor_sees_the_actor_event_loop(cluster):
    import asyncio

    @ray.remote
    class Ticker:
        def __init__(self):
            self.ticks = 0
            self.task = asyncio.get_event_loop().create_task(self.tick())   # a background task

        async def tick(self):
            while True:
                self.ticks += 1
                await asyncio.sleep(0.02)

        async def count(self):
            await asyncio.sleep(0.3)
            return self.ticks

    assert ray.get(Ticker.remote().count.remote()) > 2


# --- generators from actor methods -------------------------------------------------------

def test_async_generator_method_streams_items_as_yielded(cluster, tmp_path):
    # Ray generators in async actors: each item is ready as soon as it is yielded.
    import asyncio

    @ray.remote
    class Streamer:
        def __init__(self):
            self.steps = 0

        async def items(self, n, fail=False, gate=None):
            for i in range(n):
                yield i
                self.steps += 1
                deadline = time.monotonic() + 30
                while i == 0 and gate is not None and not os.path.exists(gate) and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.5)
            if fail:
                raise ValueError("bad")

        async def where(self):
            yield ray.get_runtime_context().get_task_id()

        def count(self):
            return self.steps

    s = Streamer.remote()
    gate = str(tmp_path / "gate")
    gen = s.items.remote(3, True, gate)
    # The first item comes while the generator still waits (for the gate) after it, not at its
    # end (a stream that came whole would come after 30 s, with steps at 3): no clock involved.
    assert ray.get(next(gen)) == 0
    assert ray.get(s.count.remote()) <= 1   # (0: it has not been resumed after its yield yet)
    open(gate, "w").close()
    assert ray.get(next(gen)) == 1
    rest = list(gen)
    assert ray.get(rest[0]) == 2 and len(rest) == 2
    with pytest.raises(ValueError, match="bad"):
        ray.get(rest[1])
    assert isinstance(ray.get(next(s.where.remote())), str)

    async def consume():
        return [await ref async for ref in s.items.remote(2)]
    assert asyncio.run(consume()) == [0, 1]
    # cancelling the call stops the generator
    gen = s.items.remote(100)
    ray.get(next(gen))
    ray.cancel(gen)
    # Running, it steps every 0.5 s: stopped once two counts 0.6 s apart agree (the cancel may
    # take a while to land on a loaded machine), and it stays stopped.
    def still():
        steps = ray.get(s.count.remote())
        time.sleep(0.6)
        return ray.get(s.count.remote()) == steps
    assert wait_for(still, timeout=30), "the cancelled generator went on"
    steps = ray.get(s.count.remote())
    time.sleep(0.6)
    assert ray.get(s.count.remote()) == steps


# --- type hints ------------------------------------------------------------------------------

class _Typed:
    def __init__(self, init: int):
        self.init = init

    @ray.method
    def calculate(self, v1: int, v2: int) -> int:
        return self.init + v1 + v2


def test_type_hint_patterns(cluster):
    # Ray's "Type hints in Ray": ray.remote(Cls) annotated ActorClass[Cls], handles ActorProxy[Cls],
    # and a bare @ray.method.
    from rayfast.actor import ActorClass, ActorProxy

    typed: ActorClass[_Typed] = ray.remote(_Typed)
    actor: ActorProxy[_Typed] = typed.remote(1)
    assert ray.get(actor.calculate.remote(1, 2)) == 4

    @ray.remote
    def use(a: ActorProxy[_Typed]) -> int:
        return ray.get(a.calculate.remote(0, 0))

    assert ray.get(use.remote(actor)) == 1
    with pytest.raises(TypeError):
        actor.calculate.remote(1)   # the signature is still checked at the call site


def test_calls_made_before_the_last_handle_went_still_run(cluster):
    # `ray.get(A.remote().f.remote())` is a common idiom: the handle is gone at once, while the
    # actor may not even be placed yet; its calls run, then it ends (Ray: out of scope).
    from rayfast.util.state import list_actors

    @ray.remote(num_cpus=2)
    class Needy:
        def value(self, x):
            return x * 2

    @ray.remote(num_cpus=2)
    def hold(t):
        time.sleep(t)

    busy = hold.remote(1.0)       # the actor waits for both CPUs: it is placed after this task
    time.sleep(0.2)
    ref = Needy.remote().value.remote(21)
    time.sleep(0.3)               # the handle's release has reached the node by now
    assert ray.get(ref, timeout=30) == 42
    ray.get(busy)
    assert wait_for(lambda: all(a.state == "DEAD" for a in list_actors(filters=[("class_name", "=", "Needy")])),
                    timeout=10)
