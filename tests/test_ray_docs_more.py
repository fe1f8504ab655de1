"""More of Ray's documented API: ray.util.multiprocessing.Pool, runtime_context().is_canceled(),
ObjectRef's job_id/owner_address/call_site, NodeLabelSchedulingStrategy, remote tracebacks."""
import itertools
import os
import time
from multiprocessing import TimeoutError

import pytest

import rayfast
from conftest import wait_for
from rayfast.util.multiprocessing import Pool


def _square(x):
    return x * x


def _add(a, b):
    return a + b


def _fail_at_3(x):
    if x == 3:
        raise KeyError(x)
    return x


def _sleep(x):
    time.sleep(x)
    return x


def _set_env(v):
    os.environ["POOL_INIT"] = str(v)


def _read_env(_):
    return os.environ.get("POOL_INIT"), os.getpid()


# --- multiprocessing.Pool -------------------------------------------------------------------
def test_pool_api_as_stdlib(cluster):
    with Pool(2, initializer=_set_env, initargs=(7,)) as pool:
        assert pool.map(_square, range(10)) == [x * x for x in range(10)]
        assert pool.map(_square, range(10), chunksize=3) == [x * x for x in range(10)]
        assert pool.map(_square, []) == []
        assert pool.starmap(_add, [(1, 2), (3, 4)]) == [3, 7]
        assert pool.starmap_async(_add, [(1, 2)], chunksize=1).get() == [3]
        assert pool.apply(_add, (1, 2)) == 3
        assert pool.apply(_add, (1,), {"b": 5}) == 6
        assert pool.apply(_add, (1,), kwargs={"b": 6}) == 7          # Ray's keyword
        assert list(pool.imap(_square, iter(range(7)), chunksize=2)) == [x * x for x in range(7)]
        assert sorted(pool.imap_unordered(_square, range(5))) == [x * x for x in range(5)]
        seen = pool.map(_read_env, range(8), chunksize=1)
        assert {v for v, _ in seen} == {"7"} and len({pid for _, pid in seen}) == 2   # two processes, initialized
    with pytest.raises(ValueError, match="Pool not running"):
        pool.map(_square, [1])


def test_pool_errors_are_the_originals(cluster):
    with Pool(2) as pool:
        with pytest.raises(KeyError) as info:
            pool.map(_fail_at_3, range(6))
        # as multiprocessing: the remote traceback is the cause, naming the user's function
        assert "_fail_at_3" in str(info.value.__cause__)
        it = pool.imap(_fail_at_3, range(6))
        out = []
        while True:
            try:
                out.append(next(it))
            except StopIteration:
                break
            except KeyError as e:
                out.append(("failed", e.args))
        assert out == [0, 1, 2, ("failed", (3,)), 4, 5]
        with pytest.raises(KeyError):
            pool.apply(_fail_at_3, (3,))


def test_pool_async_results(cluster):
    with Pool(2) as pool:
        r = pool.apply_async(_sleep, (0.4,))
        assert not r.ready()
        with pytest.raises(TimeoutError):
            r.get(timeout=0.05)
        with pytest.raises(ValueError, match="not ready"):
            r.successful()
        r.wait()
        assert r.ready() and r.successful() and r.get() == 0.4
        got, errors = [], []
        r = pool.map_async(_square, range(4), callback=got.append)
        r.wait(timeout=10)
        assert got == [[0, 1, 4, 9]]     # called before the result is ready, as the stdlib's
        r = pool.map_async(_fail_at_3, range(5), error_callback=errors.append)
        r.wait(timeout=10)
        assert r.ready() and not r.successful()
        assert len(errors) == 1 and isinstance(errors[0], KeyError)
        it = pool.imap(_sleep, [0.4])
        with pytest.raises(TimeoutError):
            it.next(timeout=0.05)
        assert it.next() == 0.4


def test_pool_bad_input(cluster):
    with pytest.raises(ValueError, match="at least 1"):
        Pool(0)
    with pytest.raises(ValueError, match="only 2 CPUs"):
        Pool(3)
    with pytest.raises(TypeError, match="initializer"):
        Pool(1, initializer=5)
    with pytest.raises(ValueError, match="maxtasksperchild"):
        Pool(1, maxtasksperchild=0)
    with Pool(1) as pool:
        with pytest.raises(ValueError, match="Chunksize"):
            pool.map(_square, range(3), chunksize=0)
        with pytest.raises(ValueError, match="Chunksize"):
            pool.imap(_square, range(3), chunksize=0)
        with pytest.raises(TypeError, match="callable"):
            pool.apply(5)
        with pytest.raises(ValueError, match="still running"):
            pool.join()


def test_pool_lifecycle(cluster):
    pool = Pool(2, maxtasksperchild=1)
    pids = {pid for _, pid in pool.map(_read_env, range(4), chunksize=1)}
    assert len(pids) == 4          # a new process after each task (chunk)
    slow = pool.map_async(_sleep, [0.2, 0.2])
    endless = pool.imap(_square, itertools.islice(itertools.count(), 20))
    pool.close()                   # outstanding work, all of the imap included, still finishes
    pool.join()
    assert slow.get(timeout=10) == [0.2, 0.2]
    assert list(endless) == [x * x for x in range(20)]

    pool = Pool(2)
    pending = pool.apply_async(_sleep, (30,))
    pool.terminate()               # the stdlib would leave `pending` waiting for ever
    pool.join()
    with pytest.raises(rayfast.exceptions.RayActorError):
        pending.get(timeout=10)


def _exit_process(_):
    os._exit(1)


def test_pool_process_death_raises(cluster):
    with Pool(1) as pool:
        with pytest.raises(rayfast.exceptions.RayActorError):
            pool.map(_exit_process, [1], chunksize=1)


# --- runtime_context().is_canceled() and early cancels ----------------------------------------
def test_is_canceled_outside_tasks(cluster):
    with pytest.raises(RuntimeError, match="only available when the process is a worker"):
        rayfast.get_runtime_context().is_canceled()

    @rayfast.remote
    class Async:
        async def flag(self):
            return rayfast.get_runtime_context().is_canceled()

    @rayfast.remote
    def flag():
        return rayfast.get_runtime_context().is_canceled()

    assert rayfast.get(flag.remote()) is False
    with pytest.raises(RuntimeError, match="not supported in an async actor"):
        rayfast.get(Async.remote().flag.remote())


def test_is_canceled_in_task(cluster, tmp_path):
    out = str(tmp_path / "seen")
    started = str(tmp_path / "started")

    @rayfast.remote
    def task(path, started):
        try:
            open(started, "w").close()
            while True:
                time.sleep(0.01)
        except KeyboardInterrupt:
            with open(path, "w") as f:
                f.write(repr(rayfast.get_runtime_context().is_canceled()))

    ref = task.remote(out, started)
    # cancel once it runs: cancelled before it starts, it never gets to write what it saw
    assert wait_for(lambda: os.path.exists(started), timeout=30)
    rayfast.cancel(ref)
    with pytest.raises(rayfast.exceptions.TaskCancelledError):
        rayfast.get(ref, timeout=10)
    assert open(out).read() == "True"


@pytest.mark.parametrize("max_concurrency", [1, 2])
def test_is_canceled_in_actor_call(cluster, max_concurrency):
    @rayfast.remote(max_concurrency=max_concurrency)
    class Worker:
        def loop(self):
            start = time.monotonic()
            while not rayfast.get_runtime_context().is_canceled():
                time.sleep(0.01)
                if time.monotonic() - start > 20:
                    return "never saw the cancel"
            return "ended early"

        def flag(self):
            return rayfast.get_runtime_context().is_canceled()

    w = Worker.remote()
    assert rayfast.get(w.flag.remote()) is False
    ref = w.loop.remote()
    time.sleep(0.3)
    start = time.monotonic()
    rayfast.cancel(ref)
    # as Ray: the call ends because it saw is_canceled(), and get raises TaskCancelledError
    with pytest.raises(rayfast.exceptions.TaskCancelledError):
        rayfast.get(ref, timeout=10)
    assert time.monotonic() - start < 5
    assert rayfast.get(w.flag.remote()) is False     # the next call is not cancelled


def test_cancel_right_after_submit_always_cancels(cluster):
    """A cancel whose SIGINT reaches the worker before it has started the task still cancels it
    (one SIGINT, no repeats): lone calls (leased worker) and bursts (through the node)."""
    @rayfast.remote
    def long():
        time.sleep(5)
        return "ran to its end"

    @rayfast.remote
    def quick():
        return 1

    rayfast.get(quick.remote())
    for i in range(30):
        refs = [long.remote() for _ in range(1 + i % 2)]
        time.sleep(0.0003 * (i % 8))
        for r in refs:
            rayfast.cancel(r)
        start = time.monotonic()
        for r in refs:
            with pytest.raises(rayfast.exceptions.TaskCancelledError):
                rayfast.get(r, timeout=10)
        assert time.monotonic() - start < 2, i
    assert rayfast.get([quick.remote() for _ in range(4)]) == [1] * 4   # the workers still serve


# --- ObjectRef.job_id / owner_address / call_site ---------------------------------------------
def test_object_ref_job_owner_call_site(cluster):
    @rayfast.remote
    def f():
        return 1

    @rayfast.remote
    def inside(refs):
        r = refs[0]
        return r.job_id().hex(), r.owner_address(), r.call_site()

    node_id = bytes.fromhex(rayfast.get_runtime_context().get_node_id())
    ref, put = f.remote(), rayfast.put(5)
    for r in (ref, put):
        assert r.job_id().hex() == rayfast.get_runtime_context().get_job_id() == "01000000"
        assert repr(r.job_id()) == "JobID(01000000)"
        addr = r.owner_address()
        # Ray's rpc::Address in protobuf wire form: node_id (field 1), ip_address (field 2)
        assert isinstance(addr, bytes)
        assert addr[:2] == b"\x0a\x1c" and addr[2:30] == node_id and addr[30:] == b"\x12\x09127.0.0.1"
        assert r.call_site() == ""
    assert rayfast.get(inside.remote([ref])) == ("01000000", ref.owner_address(), "")
    with pytest.raises(ValueError, match="nil"):
        rayfast.ObjectRef.nil().job_id()


# --- remote tracebacks --------------------------------------------------------------------------
def _divide(x):
    return 1 / x


def test_remote_traceback_shows_user_frames(cluster):
    @rayfast.remote
    def task(x):
        return _divide(x)

    @rayfast.remote
    class Actor:
        def call(self, x):
            return _divide(x)

    @rayfast.remote
    def gen():
        yield 1
        _divide(0)

    refs = [task.remote(0), Actor.remote().call.remote(0), list(gen.remote())[1]]
    for ref, fn in zip(refs, ("task", "call", "gen")):
        with pytest.raises(ZeroDivisionError) as info:
            rayfast.get(ref)
        text = str(info.value)
        # as Ray's: the user's frames, from the task's function down, and none of rayfast's
        frames = [line for line in text.splitlines() if line.startswith("  File ")]
        assert frames[0].endswith(f"in {fn}") and frames[1].endswith("in _divide"), text
        assert len(frames) == 2 and "rayfast" not in text.split("Traceback")[1].replace(__file__, ""), text
    with Pool(1) as pool:
        with pytest.raises(ZeroDivisionError) as info:
            pool.apply(_divide, (0,))
        cause = str(info.value.__cause__)
        assert "in _divide" in cause and "multiprocessing/pool.py" not in cause


# --- NodeLabelSchedulingStrategy (keep last: it starts a cluster of its own) --------------------
def test_node_label_scheduling(fresh, capfd):
    from rayfast.util.scheduling_strategies import DoesNotExist, Exists, In, NodeLabelSchedulingStrategy, NotIn

    # decorated before init(): the labels are looked at when it is called
    @rayfast.remote(scheduling_strategy=NodeLabelSchedulingStrategy({"region": In("us", "eu")}))
    def labels():
        return rayfast.get_runtime_context().get_node_labels()

    @rayfast.remote
    class Actor:
        def labels(self):
            return rayfast.get_runtime_context().get_node_labels()

    rayfast.init(num_cpus=1, labels={"region": "us", "tier": "gold"})
    node_id = rayfast.get_runtime_context().get_node_id()
    expected = {"ray.io/node-id": node_id, "region": "us", "tier": "gold"}
    assert rayfast.nodes()[0]["Labels"] == expected
    assert rayfast.get_runtime_context().get_node_labels() == expected
    assert rayfast.get(labels.remote()) == expected
    met = [NodeLabelSchedulingStrategy({"zone": DoesNotExist(), "tier": Exists()}),
           NodeLabelSchedulingStrategy({"region": NotIn("eu")}, soft={"zone": Exists()}),   # soft: a preference
           NodeLabelSchedulingStrategy({}, soft={"region": In("eu")})]
    for s in met:
        assert rayfast.get(labels.options(scheduling_strategy=s).remote(), timeout=10) == expected
    a = Actor.options(scheduling_strategy=met[0]).remote()
    assert rayfast.get(a.labels.remote(), timeout=10) == expected
    capfd.readouterr()

    unmet = NodeLabelSchedulingStrategy({"region": In("eu")})
    ref = labels.options(scheduling_strategy=unmet).remote()
    pending = Actor.options(scheduling_strategy=NodeLabelSchedulingStrategy({"gpu": Exists()})).remote()
    ready, _ = rayfast.wait([ref, pending.labels.remote()], num_returns=1, timeout=1)
    assert ready == []                                  # pending, as an infeasible resource request
    err = capfd.readouterr().err
    assert "Task labels asks for a node whose labels meet {region: In('eu')}" in err
    assert "Actor Actor asks for a node whose labels meet {gpu: Exists()}" in err
    assert rayfast.get(labels.remote()) == expected     # and the node goes on with other work
    rayfast.cancel(ref)
    with pytest.raises(rayfast.exceptions.TaskCancelledError):
        rayfast.get(ref, timeout=10)
    rayfast.kill(pending)

    with pytest.raises(ValueError, match="cannot both be empty"):
        NodeLabelSchedulingStrategy({})
    with pytest.raises(ValueError, match="must be one of the `In`"):
        NodeLabelSchedulingStrategy({"a": "b"})
    with pytest.raises(ValueError, match="non-empty tuple"):
        In()
    with pytest.raises(ValueError, match="must be str"):
        NotIn(1)
    rayfast.shutdown()
    with pytest.raises(ValueError, match="labels must be a dict"):
        rayfast.init(num_cpus=1, labels={"a": 1})
