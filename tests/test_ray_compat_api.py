"""Ray's documented API edge cases, checked against what Ray 2.x does for the same program:
get/wait argument rules, auto-init, streaming generators (wait, cancel, completed)."""
import time

import pytest

import rayfast as ray
from rayfast.exceptions import TaskCancelledError


@pytest.fixture(scope="module", autouse=True)
def _cluster(cluster):
    yield cluster


@ray.remote
def ident(x):
    return x


@ray.remote
def slow_gen(first_gap, n=3):
    yield 0
    time.sleep(first_gap)
    for i in range(1, n):
        yield i


def test_wait_empty_list_returns_two_empty_lists():
    assert ray.wait([]) == ([], [])


def test_wait_takes_a_list_only():
    r = ray.put(1)
    for bad in ((r,), r, 1, [r, 1]):
        with pytest.raises(TypeError):
            ray.wait(bad)


def test_get_takes_a_ref_or_a_list_only():
    r = ray.put(1)
    for bad in ((r,), {r}, {"a": r}, 1, None):
        with pytest.raises(ValueError):
            ray.get(bad)
    with pytest.raises(TypeError):
        ray.get([r, 1])


def test_cluster_resources_leave_out_what_is_zero():
    assert all(v > 0 for v in ray.cluster_resources().values())


def test_streaming_generator_gives_items_while_the_task_runs():
    g = slow_gen.remote(30)
    t = time.monotonic()
    assert ray.get(next(g), timeout=10) == 0
    assert time.monotonic() - t < 10
    ray.cancel(g)
    with pytest.raises(TaskCancelledError):
        for ref in g:
            ray.get(ref, timeout=10)


def test_wait_on_a_generator_is_ready_when_its_next_item_is():
    g = slow_gen.remote(0.05)
    ready, not_ready = ray.wait([g], timeout=10)
    assert ready == [g] and not_ready == []
    assert [ray.get(r) for r in g] == [0, 1, 2]
    # ended: ready at once (next() raises StopIteration)
    assert ray.wait([g], timeout=0)[0] == [g]
    with pytest.raises(StopIteration):
        next(g)


def test_wait_on_refs_and_a_generator_together():
    g = slow_gen.remote(30)
    r = ident.remote(1)
    ready, _ = ray.wait([r, g], num_returns=2, timeout=10)
    assert ready == [r, g]
    ray.cancel(g)


def test_generator_completed_and_get_of_a_generator():
    g = slow_gen.remote(0)
    assert ray.get(g) is g
    assert ray.get(g.completed(), timeout=10) is None
    assert g.is_finished() is False      # items not taken yet
    assert [ray.get(r) for r in g] == [0, 1, 2]
    assert g.is_finished() is True


def test_generator_item_error_then_stop():
    @ray.remote
    def bad():
        yield 1
        raise KeyError("k")

    out = []
    for ref in bad.remote():
        try:
            out.append(ray.get(ref))
        except KeyError:
            out.append("KeyError")
    assert out == [1, "KeyError"]


def test_dynamic_generator_is_a_dynamic_object_ref_generator():
    @ray.remote(num_returns="dynamic")
    def dyn(n):
        yield from range(n)

    gen = ray.get(dyn.remote(3))
    assert isinstance(gen, ray.DynamicObjectRefGenerator)
    assert len(gen) == 3 and [ray.get(r) for r in gen] == [0, 1, 2]


def test_auto_init_on_first_remote_put_or_actor():
    code = """
        import rayfast as ray
        @ray.remote
        def f(x):
            return x + 1
        assert not ray.is_initialized()
        assert ray.get(f.remote(1)) == 2
        assert ray.is_initialized()
        ray.shutdown()
        assert ray.get(ray.put(3)) == 3
        ray.shutdown()
        @ray.remote
        class Counter:
            def one(self):
                return 1
        assert ray.get(Counter.remote().one.remote()) == 1
        ray.shutdown()
        assert ray.wait([]) == ([], [])
        assert not ray.is_initialized()
        try:
            ray.cluster_resources()
        except Exception as e:
            assert "init" in str(e)
        else:
            raise AssertionError("cluster_resources() started a cluster")
        print("ok")
    """
    from conftest import run_driver
    p = run_driver(code)
    assert p.returncode == 0 and "ok" in p.stdout, p.stderr


# --- runtime_env -------------------------------------------------------------
@ray.remote
def getenv(*names):
    import os
    return [os.environ.get(n) for n in names]


def test_runtime_env_env_vars_for_the_task_only():
    env = {"env_vars": {"RF_A": "a", "RF_PATHX": "${HOME}:x"}}
    import os
    a, p = ray.get(getenv.options(runtime_env=env).remote("RF_A", "RF_PATHX"))
    assert a == "a" and p == os.environ["HOME"] + ":x"
    # the workers' environment is put back afterwards
    assert ray.get([getenv.remote("RF_A") for _ in range(4)]) == [[None]] * 4


def test_runtime_env_in_decorator_and_inherited_by_nested_tasks_merged():
    @ray.remote(runtime_env={"env_vars": {"RF_OUTER": "o", "RF_BOTH": "outer"}})
    def outer():
        inner = getenv.options(runtime_env={"env_vars": {"RF_BOTH": "inner"}})
        return ray.get(getenv.remote("RF_OUTER")), ray.get(inner.remote("RF_OUTER", "RF_BOTH"))

    assert ray.get(outer.remote()) == (["o"], ["o", "inner"])


def test_runtime_env_errors_at_the_call_site():
    with pytest.raises(TypeError):
        getenv.options(runtime_env={"env_vars": {"A": 1}})
    with pytest.raises(TypeError):
        getenv.options(runtime_env="env")
    with pytest.raises(NotImplementedError, match="pip"):
        getenv.options(runtime_env={"pip": ["requests"]})
    with pytest.raises(ValueError, match="URI"):   # local dirs only for init(), as in Ray
        getenv.options(runtime_env={"working_dir": "."})


def test_job_runtime_env_and_working_dir(tmp_path):
    (tmp_path / "rf_wd_mod.py").write_text("VALUE = 42\n")
    (tmp_path / "data.txt").write_text("hello")
    code = f"""
        import os
        import rayfast as ray
        ray.init(num_cpus=1, runtime_env={{"working_dir": {str(tmp_path)!r}, "env_vars": {{"RF_JOB": "j"}}}})
        @ray.remote
        def f():
            import rf_wd_mod
            return open("data.txt").read(), rf_wd_mod.VALUE, os.environ.get("RF_JOB")
        @ray.remote
        def g():
            return os.environ.get("RF_JOB"), os.environ.get("RF_OWN")
        assert ray.get(f.remote()) == ("hello", 42, "j")
        assert ray.get(g.options(runtime_env={{"env_vars": {{"RF_OWN": "o"}}}}).remote()) == ("j", "o")
        assert ray.get_runtime_context().runtime_env["env_vars"] == {{"RF_JOB": "j"}}
        print("ok")
    """
    from conftest import run_driver
    p = run_driver(code)
    assert p.returncode == 0 and "ok" in p.stdout, p.stderr


def test_job_runtime_env_py_modules(tmp_path):
    # Ray's py_modules: local packages and modules (paths or imported module objects) importable by
    # the job's tasks and actors, also when a task's function refers to them by reference
    pkg = tmp_path / "src" / "rf_pymod_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("def value():\n    return 42\n")
    (tmp_path / "single").mkdir()
    (tmp_path / "single" / "rf_pymod_single.py").write_text("WORD = 'single'\n")
    code = f"""
        import sys
        import pytest
        import rayfast as ray
        sys.path.insert(0, {str(tmp_path / "src")!r})
        import rf_pymod_pkg
        ray.init(num_cpus=1, runtime_env={{"py_modules": [rf_pymod_pkg, {str(tmp_path / "single" / "rf_pymod_single.py")!r}]}})
        @ray.remote
        def f():
            import rf_pymod_single
            return rf_pymod_pkg.value(), rf_pymod_single.WORD
        @ray.remote
        class A:
            def v(self):
                return rf_pymod_pkg.value()
        assert ray.get(f.remote()) == (42, "single")
        assert ray.get(ray.remote(rf_pymod_pkg.value).remote()) == 42   # the function itself by reference
        assert ray.get(A.remote().v.remote()) == 42
        with pytest.raises(ValueError, match="py_modules"):   # as Ray: local paths for the job only
            f.options(runtime_env={{"py_modules": [{str(tmp_path / "single")!r}]}})
        print("ok")
    """
    from conftest import run_driver
    p = run_driver(code)
    assert p.returncode == 0 and "ok" in p.stdout, p.stderr
    for bad, err in (({"py_modules": "/tmp"}, TypeError), ({"py_modules": ["/no/such/dir"]}, ValueError),
                     ({"py_modules": ["s3://bucket/x.zip"]}, NotImplementedError)):
        with pytest.raises(err):
            runtime_env_validate(bad, job_level=True)


def runtime_env_validate(env, job_level):
    from rayfast import runtime_env
    return runtime_env.validate(env, job_level=job_level)


# --- init -----------------------------------------------------------------------
def test_init_local_mode_and_bad_runtime_env_are_refused():
    code = """
        import pytest
        import rayfast as ray
        with pytest.raises(RuntimeError, match="local_mode"):
            ray.init(num_cpus=1, local_mode=True)
        with pytest.raises(TypeError):
            ray.init(num_cpus=1, runtime_env="x")
        with pytest.raises(ValueError):
            ray.init(num_cpus=1, num_gpus=0.5)
        with pytest.raises(RuntimeError, match="bogus"):
            ray.init(num_cpus=1, bogus=1)
        assert not ray.is_initialized()
        print("ok")
    """
    from conftest import run_driver
    p = run_driver(code)
    assert p.returncode == 0 and "ok" in p.stdout, p.stderr


def test_log_to_driver_false_keeps_worker_output_away():
    code = """
        import rayfast as ray
        ray.init(num_cpus=1, log_to_driver={flag})
        @ray.remote
        def f():
            print("RF-TASK-OUTPUT", flush=True)
        ray.get(f.remote())
        ray.shutdown()
    """
    from conftest import run_driver
    assert "RF-TASK-OUTPUT" not in run_driver(code.format(flag=False)).stdout
    assert "RF-TASK-OUTPUT" in run_driver(code.format(flag=True)).stdout


# --- runtime context --------------------------------------------------------------
def test_runtime_context_task_name_and_function_name():
    @ray.remote
    def who():
        c = ray.get_runtime_context()
        return c.get_task_name(), c.get_task_function_name(), c.get_assigned_resources(), c.get()

    name, fn, res, d = ray.get(who.remote())
    assert name == "who" and fn.endswith("who") and res == {"CPU": 1.0}
    assert set(d) == {"job_id", "node_id", "namespace", "task_id"}
    assert ray.get(who.options(name="custom", num_cpus=0.5).remote())[:3:2] == ("custom", {"CPU": 0.5})
    ctx = ray.get_runtime_context()
    assert ctx.get_task_name() is None and ctx.get_task_function_name() is None
    assert set(ctx.get()) == {"job_id", "node_id", "namespace"}
    # Ray's deprecated properties are id objects, whose hex() the get_*_id() methods give
    assert ctx.get()["node_id"] == ctx.node_id and ctx.node_id.hex() == ctx.get_node_id()
    assert ctx.job_id.hex() == ctx.get_job_id() and ctx.task_id is None and ctx.actor_id is None
    assert d["task_id"].hex() != ctx.get_task_id() and d["node_id"].hex() == ctx.get_node_id()

    @ray.remote
    class Ids:
        def ids(self):
            c = ray.get_runtime_context()
            return c.actor_id, c.get_actor_id(), c.task_id.hex() == c.get_task_id()

    actor = Ids.remote()
    aid, aid_hex, same = ray.get(actor.ids.remote())
    assert aid.hex() == aid_hex == actor._actor_id.hex() and type(aid) is ray.ActorID and same
    assert type(ctx.node_id) is ray.NodeID and type(ctx.job_id) is ray.JobID

    def typed(x: ray.ObjectRef[int]) -> ray.ObjectRef[int]:   # Ray's ObjectRef is generic
        return x
    assert typed.__annotations__["x"].__origin__ is ray.ObjectRef
    with pytest.raises(AssertionError):   # Ray: only in a worker
        ctx.get_assigned_resources()
    assert len(ctx.get_worker_id()) == 56
    assert ctx.job_id.hex() == ctx.get_job_id()
    assert ctx.get_accelerator_ids()["GPU"] == []


def test_namespace_reaches_tasks():
    code = """
        import rayfast as ray
        ray.init(num_cpus=1, namespace="rf_ns")
        @ray.remote
        def ns():
            return ray.get_runtime_context().namespace
        assert ray.get(ns.remote()) == "rf_ns"
        print("ok")
    """
    from conftest import run_driver
    p = run_driver(code)
    assert p.returncode == 0 and "ok" in p.stdout, p.stderr


# --- max_calls -----------------------------------------------------------------
def test_max_calls_gives_each_call_batch_a_fresh_worker():
    import os

    @ray.remote(max_calls=1)
    def once():
        return os.getpid()

    @ray.remote(max_calls=2)
    def twice():
        return os.getpid()

    assert len(set(ray.get([once.remote() for _ in range(4)]))) == 4
    pids = [ray.get(twice.remote()) for _ in range(4)]
    assert all(pids.count(p) <= 2 for p in pids)
    with pytest.raises(ValueError, match="max_calls"):   # as Ray: decorator only
        once.options(max_calls=3)
    with pytest.raises(ValueError):
        ray.remote(max_calls=-1)(lambda: 0)
    with pytest.raises(TypeError, match="max_calls"):   # Ray: the type is a TypeError
        ray.remote(max_calls=1.5)(lambda: 0)

    class A:
        pass

    with pytest.raises(TypeError, match="max_concurrency"):
        ray.remote(max_concurrency=1.5)(A)
    with pytest.raises(ValueError, match="max_concurrency"):
        ray.remote(max_concurrency=0)(A)


def test_actor_runtime_env_for_its_life_and_its_calls():
    @ray.remote(runtime_env={"env_vars": {"RF_ACTOR": "a"}})
    class A:
        def env(self):
            import os
            return os.environ.get("RF_ACTOR"), ray.get(getenv.remote("RF_ACTOR"))[0]

    a = A.remote()
    assert ray.get(a.env.remote()) == ("a", "a")
    b = A.options(runtime_env={"env_vars": {"RF_ACTOR": "b"}}).remote()
    assert ray.get(b.env.remote()) == ("b", "b")
    with pytest.raises(NotImplementedError):
        A.options(runtime_env={"conda": "env"}).remote()


# --- exceptions and util --------------------------------------------------------
def test_exception_hierarchy_as_ray():
    ex = ray.exceptions
    assert issubclass(ex.ActorAlreadyExistsError, ValueError) and issubclass(ex.ActorAlreadyExistsError, ex.RayError)
    assert issubclass(ex.ReferenceCountingAssertionError, AssertionError)
    assert issubclass(ex.ReferenceCountingAssertionError, ex.ObjectLostError)
    assert issubclass(ex.GetTimeoutError, TimeoutError)
    assert issubclass(ex.ActorUnavailableError, ex.RayActorError)
    assert ex.TaskPlacementGroupRemoved is ex.TaskPlacementGroupRemovedError
    for name in ("ObjectRefStreamEndOfStreamError", "RpcError", "UnserializableException", "UserCodeException",
                 "OwnerDiedError", "ObjectFetchTimedOutError", "OutOfMemoryError", "NodeDiedError"):
        assert issubclass(getattr(ex, name), ex.RayError)


def test_named_actor_clash_is_actor_already_exists_error():
    @ray.remote
    class Named:
        pass

    a = Named.options(name="rf_clash").remote()
    with pytest.raises(ray.exceptions.ActorAlreadyExistsError):
        Named.options(name="rf_clash").remote()
    ray.kill(a)


def test_inspect_serializability():
    import threading
    lock = threading.Lock()

    def uses_lock():
        return lock

    assert ray.util.inspect_serializability(lambda: 1) == (True, set())
    ok, failures = ray.util.inspect_serializability(uses_lock, name="uses_lock")
    assert not ok and ("lock", "lock") in failures


def test_remote_takes_functions_and_classes_only():
    import functools

    class Callable:
        def __call__(self):
            return 1

    for bad in (len, functools.partial(ident, 1), Callable()):
        with pytest.raises(TypeError, match="function or a class"):
            ray.remote(bad)


def test_wrong_number_of_returns_errors_as_ray():
    @ray.remote(num_returns=2)
    def one():
        return 5

    @ray.remote(num_returns=2)
    def three():
        return 1, 2, 3

    with pytest.raises(TypeError):
        ray.get(one.remote()[0])
    with pytest.raises(ValueError):
        ray.get(three.remote()[0])


def test_sys_exit_in_a_task_is_a_worker_crash():
    @ray.remote(max_retries=0)
    def leave():
        import sys
        sys.exit(1)

    with pytest.raises(ray.exceptions.WorkerCrashedError):
        ray.get(leave.remote(), timeout=20)


def test_remote_exception_keeps_its_attributes():
    class WithField(Exception):
        def __init__(self, msg, field):
            super().__init__(msg)
            self.field = field

    @ray.remote
    def fail():
        raise WithField("m", 5)

    with pytest.raises(WithField) as info:
        ray.get(fail.remote())
    assert info.value.field == 5 and isinstance(info.value, ray.exceptions.RayTaskError)


def test_get_checks_timeout_even_when_ready():
    with pytest.raises(ValueError):
        ray.get(ray.put(1), timeout="x")


def test_streaming_generator_retried_after_a_crash_gives_every_item(tmp_path):
    import numpy as np

    @ray.remote(max_retries=2)
    def crashes_once(marker, big):
        import os
        for i in range(4):
            if i == 2 and not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(1)
            yield np.full(200_000, i) if big else i

    small = [ray.get(r, timeout=20) for r in crashes_once.remote(str(tmp_path / "a"), False)]
    assert small == [0, 1, 2, 3]
    big = [int(ray.get(r, timeout=20)[0]) for r in crashes_once.remote(str(tmp_path / "b"), True)]
    assert big == [0, 1, 2, 3]


def test_available_resources_count_a_running_lone_task(tmp_path):
    import os
    import time

    from conftest import wait_for

    @ray.remote
    def hold(path):
        deadline = time.monotonic() + 60
        while path and not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.01)

    for _ in range(5):   # lone calls: the driver runs them over a leased worker
        ray.get(hold.remote(None))
    release = str(tmp_path / "release")
    ref = hold.remote(release)    # runs until the test says so: no window to catch it in
    assert wait_for(lambda: ray.available_resources()["CPU"] == 1.0, timeout=30), ray.available_resources()
    open(release, "w").close()
    ray.get(ref, timeout=60)
    # released by the end of the task (a deadline, not a sleep, for a loaded machine)
    assert wait_for(lambda: ray.available_resources()["CPU"] == 2.0, timeout=30), ray.available_resources()


def test_nodes_and_init_context_have_rays_keys(cluster):
    (node,) = ray.nodes()
    for key in ("NodeID", "Alive", "NodeManagerAddress", "NodeName", "Resources", "Labels", "alive"):
        assert key in node
    assert len(node["NodeID"]) == 56 == len(ray.get_runtime_context().get_node_id())
    assert node["NodeID"] == ray.get_runtime_context().get_node_id()
    ctx = ray.init(ignore_reinit_error=True)
    for key in ("address", "node_ip_address", "session_dir", "gcs_address", "webui_url", "node_id"):
        assert key in ctx.address_info and key in ctx
    assert ctx["session_dir"] == cluster["session_dir"]


def test_keyboard_interrupt_in_a_task_is_a_cancellation():
    @ray.remote
    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(TaskCancelledError) as info:
        ray.get(interrupted.remote(), timeout=10)
    assert isinstance(info.value, Exception)   # never escapes `except Exception`


def test_runtime_context_task_name_in_an_actor():
    @ray.remote
    class Named:
        def who(self):
            c = ray.get_runtime_context()
            return c.get_task_name(), c.get_task_function_name(), c.get_actor_id() is not None

    a = Named.remote()
    name, fn, in_actor = ray.get(a.who.remote())
    assert name == "Named.who" and fn.endswith("Named.who") and in_actor


def test_generator_function_with_num_returns_1_gives_its_value():
    @ray.remote
    def one():
        yield 7

    assert ray.get(one.options(num_returns=1).remote()) == 7


def test_object_ref_as_future_in_asyncio():
    import asyncio

    async def main():
        return await ident.remote(7).as_future()
    assert asyncio.run(main()) == 7


@ray.remote
class _Named:
    def context(self):
        c = ray.get_runtime_context()
        return c.get_actor_name(), c.gcs_address, c.get_session_name()


@ray.remote
def _context_in_task():
    c = ray.get_runtime_context()
    return c.get_actor_name(), c.gcs_address


def test_runtime_context_actor_name_gcs_address_session():
    here = ray.get_runtime_context()
    assert here.get_actor_name() is None and here.gcs_address
    name, gcs, session = ray.get(_Named.options(name="ctx_named").remote().context.remote())
    assert (name, gcs, session) == ("ctx_named", here.gcs_address, here.get_session_name())
    assert ray.get(_Named.remote().context.remote())[0] == ""    # an actor without a name
    assert ray.get(_context_in_task.remote()) == (None, here.gcs_address)


def test_inside_a_task_rayfast_is_initialized_and_init_is_refused(cluster):
    """Library code doing `if not ray.is_initialized(): ray.init()` must not start a cluster per worker."""
    @ray.remote
    def inside():
        out = [ray.is_initialized()]
        try:
            ray.init()
            out.append("started")
        except RuntimeError as e:
            out.append("twice" in str(e))
        out.append(ray.init(ignore_reinit_error=True) is not None)
        return out

    assert ray.get(inside.remote()) == [True, True, True]
    assert ray.is_initialized()
