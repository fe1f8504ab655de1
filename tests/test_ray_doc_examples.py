"""Behaviour that Ray's Ray Core documentation examples rely on, checked on rayfast (our own tests,
written from what the docs say; the examples themselves are not part of this repository)."""
import asyncio
import os
import socket
import time

import pytest

import rayfast
from rayfast.util.scheduling_strategies import NodeAffinitySchedulingStrategy


@rayfast.remote
def _node_of_task():
    return rayfast.get_runtime_context().node_id


def test_node_affinity_takes_a_node_id_object(cluster):
    # The scheduling guide pins tasks with the NodeID object that runtime_context().node_id gives,
    # from the driver or from a task, not only with its hex string.
    here = rayfast.get_runtime_context().node_id
    strategy = NodeAffinitySchedulingStrategy(node_id=here, soft=False)
    assert strategy.node_id == here.hex() == rayfast.get_runtime_context().get_node_id()
    pinned = _node_of_task.options(scheduling_strategy=strategy)
    assert rayfast.get(pinned.remote()) == here
    from_task = rayfast.get(_node_of_task.remote())
    soft = _node_of_task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=from_task, soft=True))
    assert rayfast.get(soft.remote()) == here
    with pytest.raises(TypeError):
        NodeAffinitySchedulingStrategy(node_id=42, soft=False)


@rayfast.remote
class _Tally:
    def __init__(self, start):
        self.total = start

    def add(self, x):
        self.total += x

    def read(self):
        return self.total


@rayfast.remote
def _plus(a, b):
    return a + b


def test_dag_method_calls_on_a_class_node_run_in_bind_order(cluster):
    # The DAG guide binds calls on an actor node whose results nothing uses: executing a later call
    # on that node runs them first, in the order they were bound, on a new actor each execute().
    first, second = _Tally.bind(10), _Tally.bind(10)
    before = first.read.bind()
    assert rayfast.get(before.execute()) == 10
    first.add.bind(2)
    first.add.bind(4)
    second.add.bind(6)
    dag = _plus.bind(first.read.bind(), second.read.bind())
    assert rayfast.get(dag.execute()) == 32
    assert rayfast.get(dag.execute()) == 32   # fresh actors again, not 54
    assert rayfast.get(before.execute()) == 10   # a call bound earlier does not run later ones
    long = _Tally.bind(0)
    for _ in range(2000):   # a long chain is no recursion limit
        long.add.bind(1)
    assert rayfast.get(long.read.bind().execute()) == 2000
    handle = _Tally.remote(0)
    handle.add.bind(5)   # on an actor that exists, an unused bound call is never run (as Ray)
    assert rayfast.get(handle.read.bind().execute()) == 0


@rayfast.remote
class _Sleeper:
    def __init__(self):
        self.running = set()

    async def nap(self, name, catch):
        self.running.add(name)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            if not catch:
                raise
            return "caught it"
        return "slept"

    async def is_running(self, name):
        return name in self.running


def test_cancel_of_a_running_async_actor_call(cluster):
    # The actor guide cancels a running async call and catches RayTaskError: as in Ray, the error is
    # RayTaskError(TaskCancelledError), also when the method catches its CancelledError and returns.
    actor = _Sleeper.remote()
    for name, catch in (("raises", False), ("catches", True)):
        ref = actor.nap.remote(name, catch)
        deadline = time.monotonic() + 10
        while not rayfast.get(actor.is_running.remote(name)):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        rayfast.cancel(ref)
        with pytest.raises(rayfast.exceptions.RayTaskError) as info:
            rayfast.get(ref, timeout=10)
        assert isinstance(info.value, rayfast.exceptions.TaskCancelledError)
    assert rayfast.get(actor.is_running.remote("raises"))   # the actor lives on


@rayfast.remote
def _count_up(n):
    for i in range(n):
        yield i


@rayfast.remote
def _forty_two():
    return 42


def test_raylet_module_names(cluster):
    # The streaming generator guide imports ObjectRefGenerator from ray._raylet to tell generators
    # from refs while it waits on both.
    from rayfast import _raylet
    assert _raylet.ObjectRefGenerator is rayfast.ObjectRefGenerator
    assert _raylet.StreamingObjectRefGenerator is rayfast.ObjectRefGenerator
    assert _raylet.ObjectRef is rayfast.ObjectRef and _raylet.NodeID is rayfast.NodeID
    pending, got = [_count_up.remote(3), _forty_two.remote()], []
    while pending:
        ready, pending = rayfast.wait(pending)
        for r in ready:
            if isinstance(r, _raylet.ObjectRefGenerator):
                try:
                    got.append(rayfast.get(next(r)))
                except StopIteration:
                    continue
                pending.append(r)
            else:
                got.append(rayfast.get(r))
    assert sorted(got) == [0, 1, 2, 42]


@rayfast.remote
def _walk_with_a_bar(n):
    from rayfast.experimental.tqdm_ray import tqdm
    bar = tqdm(range(n), desc="walk")
    for _ in bar:
        pass
    return bar.n, bar.total


def test_tqdm_ray_counts_and_reports(cluster, capsys):
    # Ray's progress bars for tasks (ray.experimental.tqdm_ray): iterating or update() counts, and
    # here each report is a line on stderr.
    from rayfast.experimental.tqdm_ray import safe_print, tqdm
    assert rayfast.get(_walk_with_a_bar.remote(5)) == (5, 5)
    bar = tqdm(desc="load", total=4, unit="file", flush_interval_s=0)
    bar.update(1)
    bar.update(3)
    bar.set_description("loaded")
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["load: 1/4 file (25%)", "load: 4/4 file (100%)", "loaded: 4/4 file (100%)"]
    quiet = tqdm(iter([1, 2, 3]))   # no length: counts without a total; reports at most each second
    assert list(quiet) == [1, 2, 3] and quiet.n == 3 and quiet.total is None
    assert capsys.readouterr().err.splitlines() == ["1 it", "3 it"]
    with pytest.raises(ValueError):
        list(tqdm(total=3))
    safe_print("plain")
    assert capsys.readouterr().out == "plain\n"


@rayfast.remote
class _CountServer:
    async def __init__(self, start):
        # an async constructor may await, and what it starts on the loop serves on after it returns
        self.count = start
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)

    async def serve(self, reader, writer):
        writer.write(str(self.count).encode())
        await writer.drain()
        writer.close()

    async def bump(self):
        self.count += 1

    def port(self):
        return self.server.sockets[0].getsockname()[1]


@rayfast.remote
class _FailsToStart:
    async def __init__(self):
        await asyncio.sleep(0)
        raise ValueError("no start")

    def ping(self):
        return "pong"


def test_async_actor_constructor(cluster):
    # The actor guide's HTTP server actor starts its server from an `async def __init__`: as in Ray,
    # the constructor runs on the actor's event loop.
    actor = _CountServer.remote(10)
    rayfast.get([actor.bump.remote() for _ in range(3)])
    with socket.create_connection(("127.0.0.1", rayfast.get(actor.port.remote())), timeout=10) as conn:
        assert conn.recv(16) == b"13"
    with pytest.raises(rayfast.exceptions.ActorDiedError, match="no start"):
        rayfast.get(_FailsToStart.remote().ping.remote(), timeout=30)


@rayfast.remote(num_returns="dynamic")
def _chunks(n):
    for i in range(n):
        yield i


def test_dynamic_generator_repr_is_short(cluster):
    # The generators guide prints the DynamicObjectRefGenerator it gets: one line, however many refs
    gen = rayfast.get(_chunks.remote(3000))
    assert repr(gen) == "DynamicObjectRefGenerator(3000 refs)"
    assert len(list(gen)) == 3000


# --- tests that start clusters of their own (after the module's `cluster` ones) ---------------------
_HOOK_LOG = "RF_TEST_HOOK_LOG"


def _record_setup():
    # the hook of the test below: notes the process it ran in, and leaves a mark tasks can read
    with open(os.environ[_HOOK_LOG], "a") as f:
        f.write(f"{os.getpid()}\n")
    os.environ["RF_TEST_HOOK_RAN"] = "yes"


@rayfast.remote
def _hook_mark():
    return os.getpid(), os.environ.get("RF_TEST_HOOK_RAN")


@rayfast.remote
class _HookActor:
    def mark(self):
        return os.getpid(), os.environ.get("RF_TEST_HOOK_RAN")


def test_worker_process_setup_hook_runs_once_per_worker(fresh, tmp_path, monkeypatch):
    # The logging guide sets up each worker's loggers with init(runtime_env={"worker_process_setup_hook":
    # fn}): fn runs in every worker process before the job's tasks and actors, once per process.
    log = tmp_path / "hook.log"
    monkeypatch.setenv(_HOOK_LOG, str(log))
    rayfast.init(num_cpus=2, runtime_env={"worker_process_setup_hook": _record_setup})
    marks = rayfast.get([_hook_mark.remote() for _ in range(20)])
    actor = _HookActor.remote()
    marks.append(rayfast.get(actor.mark.remote()))
    assert {m for _, m in marks} == {"yes"}
    ran = log.read_text().split()
    assert sorted(ran) == sorted(set(ran)), "the hook ran twice in one process"
    assert {str(pid) for pid, _ in marks} <= set(ran)
    assert "RF_TEST_HOOK_RAN" not in os.environ   # not the driver's
    with pytest.raises(ValueError, match="init"):
        _hook_mark.options(runtime_env={"worker_process_setup_hook": _record_setup}).remote()
    rayfast.shutdown()
    with pytest.raises(TypeError):
        rayfast.init(num_cpus=1, runtime_env={"worker_process_setup_hook": 3})


def test_worker_process_setup_hook_by_module_path(fresh, tmp_path):
    # A "module.function" string names the hook; the module may come with the job's py_modules.
    mod = tmp_path / "rf_hook_mod.py"
    mod.write_text("import os\n\ndef setup():\n    os.environ['RF_TEST_HOOK_RAN'] = 'by path'\n")
    rayfast.init(num_cpus=1, runtime_env={"py_modules": [str(mod)],
                                          "worker_process_setup_hook": "rf_hook_mod.setup"})
    assert rayfast.get(_hook_mark.remote())[1] == "by path"
    rayfast.shutdown()
    rayfast.init(num_cpus=1, runtime_env={"worker_process_setup_hook": "rf_no_such_module.setup"})
    with pytest.raises(ModuleNotFoundError):   # a hook that fails fails the job's tasks
        rayfast.get(_hook_mark.remote())


def test_init_context_disconnect(fresh):
    # The namespaces guide ends a connection with the context init() returned: disconnect()
    ctx = rayfast.init(num_cpus=1, namespace="colors")
    assert rayfast.get_runtime_context().namespace == "colors"
    ctx.disconnect()
    assert not rayfast.is_initialized()
    with rayfast.init(num_cpus=1):   # and as a context manager, shut down on leaving
        assert rayfast.is_initialized()
    assert not rayfast.is_initialized()
    with pytest.raises(ValueError, match="Ray Client"):   # the guide's ray:// addresses: refused, clearly
        rayfast.init("ray://localhost:10001", namespace="colors")
    assert not rayfast.is_initialized()


@rayfast.remote
def _env_var(name):
    return os.environ.get(name)


def test_typed_runtime_env(fresh):
    # The runtime env guide builds runtime_envs with the typed RuntimeEnv (and RuntimeEnvConfig) as
    # well as with dicts: a RuntimeEnv is the dict of the fields given, used wherever a dict is.
    from rayfast.runtime_env import RuntimeEnv, RuntimeEnvConfig
    config = RuntimeEnvConfig(setup_timeout_seconds=60)
    env = RuntimeEnv(env_vars={"RF_TYPED": "job"}, config=config)
    assert env == {"env_vars": {"RF_TYPED": "job"}, "config": config} and env.to_dict() == dict(env)
    rayfast.init(num_cpus=1, runtime_env=env)
    assert rayfast.get(_env_var.remote("RF_TYPED")) == "job"
    own = _env_var.options(runtime_env=RuntimeEnv(env_vars={"RF_TYPED": "task"}))
    assert rayfast.get(own.remote("RF_TYPED")) == "task"
    with pytest.raises(NotImplementedError):   # what rayfast cannot build is refused where it is used
        _env_var.options(runtime_env=RuntimeEnv(pip=["requests"])).remote("RF_TYPED")
    with pytest.raises(ValueError):
        RuntimeEnvConfig(setup_timeout_seconds=0)
    with pytest.raises(TypeError):
        RuntimeEnvConfig(eager_install="yes")
