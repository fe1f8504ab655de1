"""Lifecycle, failure handling and clean-up as Ray documents them (init errors, drivers that leave
a cluster, workers' child processes, the node's start-up errors)."""
import os
import time

import pytest

import rayfast

from conftest import alive, run_driver, wait_for
from test_cli import free_port

pytestmark = pytest.mark.usefixtures("fresh")


@rayfast.remote
def sleepy(x):
    time.sleep(x)
    return os.getpid()


def test_a_departed_drivers_tasks_end_and_give_their_cpus_back():
    # Ray ends a job's tasks when its driver exits: a second driver's running tasks (one over a
    # lease, one that submitted a child) and queued ones must not hold the cluster's CPUs.
    ctx = rayfast.init(num_cpus=2)
    p = run_driver(f"""
        import os, time, rayfast
        rayfast.init(address={ctx["address"]!r})

        @rayfast.remote
        def quick():
            return os.getpid()

        @rayfast.remote
        def long():
            time.sleep(600)

        @rayfast.remote
        def parent():
            long.remote()
            time.sleep(600)

        for _ in range(5):
            rayfast.get(quick.remote())    # lone calls: a worker is leased to this driver
        refs = [long.remote() for _ in range(3)] + [parent.remote()]
        deadline = time.monotonic() + 30   # (they may take a while to start on a loaded machine)
        while rayfast.available_resources().get("CPU", 0.0) > 1.0 and time.monotonic() < deadline:
            time.sleep(0.02)
        print(rayfast.available_resources().get("CPU", 0.0))
    """)
    assert p.returncode == 0, p.stderr
    assert float(p.stdout.split()[-1]) <= 1.0   # its tasks did hold CPUs
    assert wait_for(lambda: rayfast.available_resources().get("CPU") == 2.0, timeout=20)
    t = time.monotonic()
    pids = rayfast.get([sleepy.remote(0.5) for _ in range(2)], timeout=20)
    assert len(set(pids)) == 2 and time.monotonic() - t < 5   # both workers free, side by side


def test_a_departed_drivers_placement_groups_go_unless_detached():
    # Ray: a placement group lives as long as the driver (or detached actor) that made it, unless
    # lifetime="detached".
    from rayfast.util import get_placement_group, placement_group_table

    ctx = rayfast.init(num_cpus=2)
    p = run_driver(f"""
        import rayfast
        from rayfast.util import placement_group

        rayfast.init(address={ctx["address"]!r}, namespace="pg")
        placement_group([{{"CPU": 1}}], name="scoped").ready()
        placement_group([{{"CPU": 0.5}}], name="kept", lifetime="detached").ready()

        @rayfast.remote(num_cpus=0, lifetime="detached", name="maker")
        class Maker:
            def make(self):
                placement_group([{{"CPU": 0.25}}], name="actor_scoped")
                return True

        rayfast.get(Maker.remote().make.remote())
        placement_group([{{"CPU": 0.25}}], name="pending", lifetime=None)   # does not fit: PENDING
    """)
    assert p.returncode == 0, p.stderr
    states = lambda: {row["name"]: row["state"] for row in placement_group_table().values()}
    assert wait_for(lambda: states()["scoped"] == "REMOVED" and states()["pending"] == "REMOVED", timeout=5)
    assert states()["kept"] == "CREATED" and states()["actor_scoped"] == "CREATED"
    assert rayfast.available_resources()["CPU"] == 2 - 0.5 - 0.25
    rayfast.kill(rayfast.get_actor("maker", namespace="pg"))   # the detached actor's group goes with it
    assert wait_for(lambda: states()["actor_scoped"] == "REMOVED", timeout=5)
    assert rayfast.available_resources()["CPU"] == 1.5
    get_placement_group("kept")


def test_an_object_store_that_cannot_be_made_is_a_value_error_saying_why(tmp_path, monkeypatch):
    # Ray refuses such an object_store_memory with ValueError; the node's reason used to be lost
    # with its session dir ("exit code 1").
    with pytest.raises(ValueError, match="object_store_memory=10.*at least"):
        rayfast.init(num_cpus=1, object_store_memory=10)
    assert not rayfast.is_initialized()
    with pytest.raises(ValueError, match="/dev/shm has only"):
        rayfast.init(num_cpus=1, object_store_memory=1 << 45)
    monkeypatch.setenv("RAYFAST_SESSION_ROOT", str(tmp_path))
    p = run_driver("import sys; from rayfast import cli; sys.exit(cli.main(['start', '--head', '--port', '0', "
                   "'--object-store-memory', '10']))")
    assert p.returncode != 0 and "at least" in p.stderr, p.stderr
    for bad in ("64M", -1.0, True):
        with pytest.raises(ValueError, match="object_store_memory"):
            rayfast.init(num_cpus=1, object_store_memory=bad)
    ctx = rayfast.init(num_cpus=1, object_store_memory=64e6)   # a good value still works; a float too, as Ray
    assert rayfast.available_resources()["object_store_memory"] == 64e6
    assert rayfast.get(sleepy.remote(0)) > 0
    rayfast.shutdown()


@rayfast.remote
def start_child():
    import subprocess
    return subprocess.Popen(["sleep", "600"]).pid


def _ppid(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def test_processes_a_task_started_end_with_its_worker_at_shutdown(tmp_path):
    # Ray's workers kill their direct children when they exit (on by default); rayfast's node also
    # does it for a worker it has to kill because it is busy at shutdown.
    rayfast.init(num_cpus=2)
    pid_file = tmp_path / "busy_child"

    @rayfast.remote
    def busy():
        import subprocess
        pid_file.write_text(str(subprocess.Popen(["sleep", "600"]).pid))
        time.sleep(600)

    busy.remote()
    assert wait_for(lambda: pid_file.exists() and pid_file.read_text(), timeout=10)
    busy_child = int(pid_file.read_text())
    idle_child = rayfast.get(start_child.remote())   # on the other worker, idle at shutdown
    assert alive(idle_child) and alive(busy_child)
    assert _ppid(idle_child) != _ppid(busy_child)
    rayfast.shutdown()
    try:
        assert wait_for(lambda: not alive(idle_child) and not alive(busy_child), timeout=5)
    finally:
        for pid in (idle_child, busy_child):
            if alive(pid):
                os.kill(pid, 9)


def test_shutdown_while_other_threads_wait_is_quick_and_wakes_them():
    # A thread blocked reading the node's socket used to keep the connection open past close():
    # the node did not see the driver leave, and shutdown() took its 10 s stop timeout.
    import threading

    from rayfast.exceptions import RayError

    rayfast.init(num_cpus=2)
    ref = sleepy.remote(600)
    errors = {}

    def wait_in(name, fn):
        try:
            fn()
        except BaseException as e:
            errors[name] = e

    threads = [threading.Thread(target=wait_in, args=("get", lambda: rayfast.get(ref))),
               threading.Thread(target=wait_in, args=("wait", lambda: rayfast.wait([sleepy.remote(600)])))]
    for t in threads:
        t.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    rayfast.shutdown()
    for t in threads:
        t.join(10)
    assert time.monotonic() - t0 < 5
    assert not any(t.is_alive() for t in threads)
    assert set(errors) == {"get", "wait"}
    assert all(isinstance(e, RayError) for e in errors.values()), errors


# --- the CLI as Ray's: ray stop --force / --grace-period, ray start --block / --num-gpus --------
def _cli(root, *args, **popen):
    import subprocess
    import sys
    env = dict(os.environ, RAYFAST_SESSION_ROOT=str(root))
    env.pop("RAYFAST_ADDRESS", None)
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.pathsep + \
        env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "rayfast.cli", *args]
    if popen:
        return subprocess.Popen(cmd, env=env, text=True, **popen)
    return subprocess.run(cmd, env=env, text=True, capture_output=True, timeout=60)


def _node_gone(info, procs):
    seg = "/dev/shm/rayfast-" + os.path.basename(info["session_dir"])
    return (not any(alive(p) for p in procs) and not os.path.exists(info["session_dir"])
            and not os.path.exists(seg) and not os.path.exists(info["socket"]))


def test_cli_start_block_until_sigterm_and_stop_force(tmp_path):
    import json
    import signal
    import subprocess

    from conftest import descendants

    # `start --block` stays in the foreground; SIGTERM (docker stop, Ctrl-C) stops its node.
    p = _cli(tmp_path, "start", "--head", "--port", str(free_port()), "--num-cpus", "1", "--num-gpus", "1",
             "--object-store-memory", "64M", "--block", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: (tmp_path / "session_latest.json").exists() or p.poll() is not None,
                        timeout=30)
        assert p.poll() is None, p.stderr.read()
        info = json.loads((tmp_path / "session_latest.json").read_text())
        status = _cli(tmp_path, "status", "--json")
        assert status.returncode == 0, status.stderr
        assert '"GPU"' in status.stdout
        procs = [info["pid"]] + descendants(info["pid"])
        assert p.poll() is None   # still in the foreground
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) == 0
        assert wait_for(lambda: _node_gone(info, procs), timeout=5)
        assert not (tmp_path / "nodes").exists()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()

    # `stop --force` kills at once and still leaves nothing behind.
    r = _cli(tmp_path, "start", "--head", "--port", str(free_port()), "--num-cpus", "1",
             "--object-store-memory", "64M")
    assert r.returncode == 0, r.stderr
    info = json.loads((tmp_path / "session_latest.json").read_text())
    procs = [info["pid"]] + descendants(info["pid"])
    r = _cli(tmp_path, "stop", "--force", "--grace-period", "5")
    assert r.returncode == 0 and "Stopped rayfast head node" in r.stdout, r.stderr
    assert wait_for(lambda: _node_gone(info, procs), timeout=5)
    assert "No running rayfast nodes" in _cli(tmp_path, "stop").stdout


def test_ctrl_c_at_the_terminal_interrupts_the_driver_only():
    # A terminal's Ctrl-C sends SIGINT to its whole foreground process group. Ray's processes
    # ignore it: the driver gets KeyboardInterrupt and the cluster (and its running task) goes on.
    import signal
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import time, rayfast
        rayfast.init(num_cpus=2)

        @rayfast.remote
        def f(x):
            time.sleep(x)
            return x

        running = f.remote(2)
        try:
            print("waiting", flush=True)
            rayfast.get(f.remote(600))
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        print(rayfast.get(running, timeout=20), rayfast.get(f.remote(0), timeout=20), flush=True)
    """)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.pathsep + \
        env.get("PYTHONPATH", "")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env, start_new_session=True)
    try:
        assert p.stdout.readline() == "waiting\n", p.stderr.read()
        time.sleep(0.3)
        os.killpg(p.pid, signal.SIGINT)
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        assert out.split("\n")[:2] == ["interrupted", "2 0"], (out, err)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


@rayfast.remote
def fork_and_exit_child():
    import sys
    child = os.fork()
    if child == 0:
        sys.exit(0)   # unwinds through the worker's code in the child
    os.waitpid(child, 0)
    return os.getpid()


def test_a_forked_child_leaving_by_sys_exit_does_not_close_its_workers_channels():
    ctx = rayfast.init(num_cpus=1)

    def sockets():
        return sorted(n for n in os.listdir(ctx["session_dir"]) if n.startswith("w") and n.endswith(".sock"))

    rayfast.get(sleepy.remote(0))   # the worker is up, its socket made
    before = sockets()
    assert before
    pid = rayfast.get(fork_and_exit_child.remote())
    assert sockets() == before   # the child used to remove its parent's socket on the way out
    assert rayfast.get([sleepy.remote(0) for _ in range(3)]) == [pid] * 3


@pytest.mark.parametrize("delay", [0.05, 0.2])
def test_ctrl_c_while_init_starts_the_node_leaves_nothing(tmp_path, delay):
    # The node no longer shares the driver's process group, so the driver stops it itself.
    import signal
    import subprocess
    import sys

    temp = tmp_path / "t"
    code = f"import rayfast, time; rayfast.init(num_cpus=1, _temp_dir={str(temp)!r}); time.sleep(60)"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.pathsep + \
        env.get("PYTHONPATH", "")
    p = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True, env=env,
                         start_new_session=True)
    time.sleep(delay)
    os.killpg(p.pid, signal.SIGINT)
    _, err = p.communicate(timeout=30)
    assert "KeyboardInterrupt" in err and "BrokenPipeError" not in err, err

    def leftovers():
        sessions = os.listdir(temp) if temp.exists() else []
        segments = [n for n in os.listdir("/dev/shm") for s in sessions if n == "rayfast-" + s]
        nodes = [pid for pid in os.listdir("/proc") if pid.isdigit() and _cmd_has(pid, str(temp))]
        return sessions + segments + nodes

    assert wait_for(lambda: not leftovers(), timeout=10), leftovers()


def _cmd_has(pid, text):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return text.encode() in f.read()
    except OSError:
        return False


def test_cli_status_says_why_when_the_node_stops_answering(monkeypatch, capsys):
    # A node that hangs or goes away mid-query: one line on stderr and exit code 1, no traceback.
    from rayfast import cli, cluster

    class Client:
        info = {}

        def __init__(self, exc):
            self.exc = exc

        def request(self, what, *args):
            raise self.exc

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

    for exc in (TimeoutError("the rayfast node did not answer within 10 s"),
                ConnectionError("the rayfast node closed the connection (was it stopped?)")):
        monkeypatch.setattr(cluster, "connect_cli", lambda address, exc=exc: Client(exc))
        assert cli.main(["status"]) == 1
        assert capsys.readouterr().err.strip() == f"rayfast status: {exc}"


def test_node_client_errors_for_a_node_that_closes_or_hangs(tmp_path):
    import socket
    import threading

    from rayfast.cluster import NodeClient

    path = str(tmp_path / "node.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(2)
    kept = []

    def serve():
        conn, _ = listener.accept()
        conn.close()                  # the first client: the node went away
        kept.append(listener.accept()[0])   # the second: a node that never answers

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with pytest.raises(ConnectionError, match="closed the connection"):
            NodeClient(path, timeout=5)
        with pytest.raises(TimeoutError, match="did not answer"):
            NodeClient(path, timeout=0.2)
    finally:
        t.join(5)
        for c in kept:
            c.close()
        listener.close()


def test_a_node_that_never_says_ready_is_an_error_not_a_hang():
    from rayfast.session import read_start_line, start_error

    r, w = os.pipe()
    with os.fdopen(r, "rb") as f, os.fdopen(w, "wb", buffering=0) as out:
        t = time.monotonic()
        assert read_start_line(f, 0.2) is None   # hung: init() stops it and raises
        assert 0.15 < time.monotonic() - t < 5
        out.write(b"ready\n")
        assert read_start_line(f, 5) == b"ready\n"
        out.close()
        assert read_start_line(f, 5) == b""      # died without a word
    with pytest.raises(RuntimeError, match="did not get ready in time"):
        raise start_error(None, None)
    with pytest.raises(RuntimeError, match="exit code 1"):
        raise start_error(b"", 1)


def test_a_killed_nodes_spilled_objects_in_a_user_directory_are_removed(tmp_path):
    import signal

    import numpy as np

    from conftest import _stat, runtime_children

    spill = tmp_path / "spill"
    rayfast.init(num_cpus=1, object_store_memory=64 << 20, object_spilling_directory=str(spill))
    refs = [rayfast.put(np.full(3 << 20, i, dtype=np.float64)) for i in range(5)]   # 24 MiB each
    assert sum(len(files) for _, _, files in os.walk(spill)) > 0   # some were spilled
    node = [p for p, cmd in runtime_children() if "rayfast.node.main" in cmd and _stat(p)[0] == os.getpid()]
    assert len(node) == 1
    os.kill(node[0], signal.SIGKILL)   # it cannot clean up after itself
    assert wait_for(lambda: not alive(node[0]), timeout=5)
    del refs
    rayfast.shutdown()
    assert os.listdir(spill) == []     # the session's subdirectory went; the user's directory stays


def test_a_temp_dir_too_long_for_unix_sockets_is_a_value_error(tmp_path):
    temp = tmp_path / ("x" * 100)
    with pytest.raises(ValueError, match="_temp_dir=.* is too long"):
        rayfast.init(num_cpus=1, _temp_dir=str(temp))
    assert os.listdir(temp) == [] and not rayfast.is_initialized()


def test_the_default_object_store_fits_a_small_dev_shm(monkeypatch):
    # Docker's /dev/shm is 64 MB by default: the default store used to be at least 64 MiB anyway,
    # more than /dev/shm had, and init() failed.
    from rayfast import session

    class Stat:
        f_bavail, f_frsize = 64_000_000 // 4096, 4096

    class Big:
        f_bavail, f_frsize = 1 << 40, 4096

    monkeypatch.setattr(session.os, "statvfs", lambda path: Stat)
    assert 0 < session.default_object_store_memory() <= 0.8 * 64_000_000
    monkeypatch.setattr(session.os, "statvfs", lambda path: Big)
    assert session.default_object_store_memory() >= 64 << 20   # 30% of RAM, 64 MiB at least


# --- sessions: refs of an earlier one, anonymous namespaces, init() finding a running cluster --
def test_refs_of_an_earlier_session_raise_at_once():
    # Ray: "You are trying to access Ray objects whose owner is unknown" (ValueError), never a hang.
    rayfast.init(num_cpus=1)
    old = rayfast.put(41)
    old_task = sleepy.remote(0)
    rayfast.get(old_task)
    rayfast.shutdown()
    rayfast.init(num_cpus=1)

    @rayfast.remote
    def inc(x):
        return x + 1

    t0 = time.monotonic()
    for call in (lambda: rayfast.get(old), lambda: rayfast.get([old_task]), lambda: rayfast.get(old, timeout=30),
                 lambda: rayfast.wait([old], timeout=30), lambda: inc.remote(old),
                 lambda: inc.remote([old_task])):
        with pytest.raises(ValueError, match="earlier rayfast session"):
            call()
    assert time.monotonic() - t0 < 5
    new = rayfast.put(1)   # this session's refs are not affected
    assert rayfast.get(inc.remote(new)) == 2 and rayfast.get(rayfast.wait([new])[0][0]) == 1


def test_each_job_without_a_namespace_gets_an_anonymous_one_of_its_own(tmp_path, monkeypatch):
    # Ray's namespaces page: two jobs that give no namespace may both name an actor "my_actor".
    import uuid

    monkeypatch.setenv("RAYFAST_SESSION_ROOT", str(tmp_path))
    monkeypatch.delenv("RAYFAST_ADDRESS", raising=False)
    r = _cli(tmp_path, "start", "--head", "--port", str(free_port()), "--num-cpus", "1",
             "--object-store-memory", "64M")
    assert r.returncode == 0, r.stderr
    try:
        @rayfast.remote(num_cpus=0)
        class Actor:
            def ping(self):
                return rayfast.get_runtime_context().namespace

        namespaces = []
        for _ in range(2):
            rayfast.init()   # joins the running cluster (Ray: the latest `ray start` on this machine)
            ns = rayfast.get_runtime_context().namespace
            uuid.UUID(ns)   # an anonymous namespace is a UUID
            a = Actor.options(name="my_actor", lifetime="detached").remote()
            assert rayfast.get(a.ping.remote()) == ns
            assert rayfast.get_actor("my_actor") == a
            namespaces.append(ns)
            rayfast.shutdown()
        assert namespaces[0] != namespaces[1]
        rayfast.init(namespace=namespaces[0])   # an anonymous namespace can be joined by name
        rayfast.kill(rayfast.get_actor("my_actor"))
        rayfast.kill(rayfast.get_actor("my_actor", namespace=namespaces[1]))
        rayfast.shutdown()
    finally:
        if rayfast.is_initialized():
            rayfast.shutdown()
        r = _cli(tmp_path, "stop")
        assert r.returncode == 0, r.stderr


def test_a_tasks_namespace_is_its_own_jobs_while_other_jobs_come_and_go():
    ctx = rayfast.init(num_cpus=2)
    mine = rayfast.get_runtime_context().namespace

    @rayfast.remote
    def task_namespace():
        return rayfast.get_runtime_context().namespace

    @rayfast.remote(num_cpus=0)
    class Named:
        def namespace(self):
            return rayfast.get_runtime_context().namespace

    @rayfast.remote
    def make_named(name):
        a = Named.options(name=name, lifetime="detached").remote()
        return rayfast.get(a.namespace.remote())

    p = run_driver(f"""
        import rayfast
        rayfast.init(address={ctx["address"]!r}, namespace="visitor")
    """)
    assert p.returncode == 0, p.stderr
    assert rayfast.get(task_namespace.remote()) == mine   # not the job that joined last
    assert rayfast.get(make_named.remote("from_task")) == mine
    a = rayfast.get_actor("from_task")   # made by our task: in our namespace
    assert rayfast.get(a.namespace.remote()) == mine
    with pytest.raises(ValueError):
        rayfast.get_actor("from_task", namespace="visitor")
    rayfast.kill(a)


def test_init_without_an_address_joins_the_running_cluster(tmp_path, monkeypatch):
    # Ray's init(): RAY_ADDRESS first, then the latest `ray start` on this machine, else a new one.
    import json

    monkeypatch.setenv("RAYFAST_SESSION_ROOT", str(tmp_path))
    monkeypatch.delenv("RAYFAST_ADDRESS", raising=False)
    port = free_port()
    r = _cli(tmp_path, "start", "--head", "--port", str(port), "--num-cpus", "1", "--resources",
             '{"joined": 1}', "--object-store-memory", "64M")
    assert r.returncode == 0, r.stderr
    info = json.loads((tmp_path / "session_latest.json").read_text())
    try:
        ctx = rayfast.init()
        assert rayfast.cluster_resources().get("joined") == 1
        assert rayfast.get(sleepy.remote(0)) != os.getpid()
        rayfast.shutdown()
        assert alive(info["pid"])   # a driver that joined leaves the cluster running
        with pytest.raises(ValueError, match="num_cpus"):
            rayfast.init(num_cpus=2)   # as Ray: the joined node's resources are its own
        ctx = rayfast.init("local", num_cpus=1)   # "local": always a new cluster of its own
        assert "joined" not in rayfast.cluster_resources()
        assert ctx["session_dir"] != info["session_dir"]
        rayfast.shutdown()
        monkeypatch.setenv("RAYFAST_ADDRESS", f"127.0.0.1:{port}")
        monkeypatch.setenv("RAYFAST_SESSION_ROOT", str(tmp_path / "elsewhere"))   # no record to find
        rayfast.init()
        assert rayfast.cluster_resources().get("joined") == 1
        rayfast.shutdown()
    finally:
        if rayfast.is_initialized():
            rayfast.shutdown()
        monkeypatch.setenv("RAYFAST_SESSION_ROOT", str(tmp_path))
        r = _cli(tmp_path, "stop")
        assert r.returncode == 0, r.stderr


def test_job_config_gives_the_jobs_runtime_env_namespace_and_actor_lifetime():
    from rayfast.job_config import JobConfig

    @rayfast.remote
    def env_var():
        return os.environ.get("RF_JOB_CONFIG")

    @rayfast.remote(num_cpus=0)
    class Kept:
        def ping(self):
            return True

    config = JobConfig(runtime_env={"env_vars": {"RF_JOB_CONFIG": "yes"}}, ray_namespace="jc",
                       metadata={"team": "x"}, default_actor_lifetime="detached")
    assert config.metadata == {"team": "x"}
    ctx = rayfast.init(num_cpus=1, job_config=config)
    assert rayfast.get(env_var.remote()) == "yes"
    assert rayfast.get_runtime_context().namespace == "jc"
    Kept.options(name="kept").remote()                                  # detached: the job's default
    short = Kept.options(name="short", lifetime="non_detached").remote()
    assert rayfast.get(short.ping.remote())
    p = run_driver(f"""
        import rayfast
        rayfast.init(address={ctx["address"]!r}, namespace="jc")
        print(sorted(rayfast.util.list_named_actors()))
    """)
    assert p.returncode == 0, p.stderr
    assert "'kept'" in p.stdout   # its handle here was dropped at once: only a detached actor stays
    kept = rayfast.get_actor("kept")
    assert kept._detached and not short._detached and rayfast.get(kept.ping.remote())
    rayfast.kill(kept)

    @rayfast.remote
    def make_actor():   # the job's default holds in its tasks too, as in Ray
        return Kept.options(name="from_task").remote()._detached, rayfast.get_runtime_context().runtime_env

    assert rayfast.get(make_actor.remote()) == (True, {"env_vars": {"RF_JOB_CONFIG": "yes"}})
    rayfast.kill(rayfast.get_actor("from_task"))
    rayfast.shutdown()
    # init's own arguments win over the config's, as in Ray
    rayfast.init(num_cpus=1, job_config=config, namespace="mine", runtime_env={"env_vars": {"RF_JOB_CONFIG": "own"}})
    assert rayfast.get_runtime_context().namespace == "mine" and rayfast.get(env_var.remote()) == "own"
    rayfast.shutdown()
    with pytest.raises(ValueError, match="default_actor_lifetime|lifetime"):
        JobConfig(default_actor_lifetime="forever")
    with pytest.raises(ValueError, match="Python only"):
        JobConfig(code_search_path=["/opt/jars"])
    with pytest.raises(TypeError, match="JobConfig"):
        rayfast.init(num_cpus=1, job_config={"runtime_env": {}})
    assert JobConfig.from_json('{"ray_namespace": "n"}').ray_namespace == "n"
