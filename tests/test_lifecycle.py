"""init / shutdown / reinit, and cleanup after every way a driver can end."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import rayfast
from rayfast.exceptions import RayError

from conftest import alive, assert_no_leftovers, descendants, runtime_children, session_leftovers, wait_for

pytestmark = pytest.mark.usefixtures("fresh")


@rayfast.remote
def square(x):
    return x * x


def test_init_shutdown_cycle():
    assert not rayfast.is_initialized()
    t = time.time()
    ctx = rayfast.init(num_cpus=2)
    assert time.time() - t < 5
    assert rayfast.is_initialized()
    assert os.path.isdir(ctx["session_dir"])
    assert rayfast.get(square.remote(4)) == 16
    pids = [p for p, _ in runtime_children()]
    assert pids  # the node manager, GCS shards and workers
    rayfast.shutdown()
    assert not rayfast.is_initialized()
    assert_no_leftovers(ctx["session_dir"], pids)


def test_second_init_raises_and_ignore_reinit_error():
    rayfast.init(num_cpus=1)
    with pytest.raises(RuntimeError, match="ignore_reinit_error"):
        rayfast.init(num_cpus=1)
    ctx = rayfast.init(num_cpus=1, ignore_reinit_error=True)
    assert ctx is not None
    assert rayfast.is_initialized()
    assert rayfast.get(square.remote(3)) == 9
    rayfast.shutdown()


def test_reinit_after_shutdown():
    for _ in range(3):
        ctx = rayfast.init(num_cpus=1)
        assert rayfast.get(square.remote(2)) == 4
        rayfast.shutdown()
        assert_no_leftovers(ctx["session_dir"])


def test_temp_dir_is_made_if_missing(tmp_path):
    temp = tmp_path / "not" / "yet"
    ctx = rayfast.init(num_cpus=1, _temp_dir=str(temp))
    assert ctx["session_dir"].startswith(str(temp))
    assert rayfast.get(square.remote(3)) == 9
    rayfast.shutdown()
    assert_no_leftovers(ctx["session_dir"])


def test_shutdown_is_idempotent_and_safe_uninitialized():
    rayfast.shutdown()
    rayfast.init(num_cpus=1)
    rayfast.shutdown()
    rayfast.shutdown()
    assert not rayfast.is_initialized()


def test_cluster_queries_before_init_raise():
    # remote/put/get/wait start a cluster first, as Ray's do (tests/test_ray_compat_api.py)
    with pytest.raises(RayError, match="init"):
        rayfast.cluster_resources()
    with pytest.raises(RayError, match="init"):
        rayfast.nodes()


def test_refs_after_shutdown_raise():
    rayfast.init(num_cpus=1)
    r = rayfast.put(1)
    rayfast.shutdown()
    with pytest.raises(RayError):
        rayfast.get(r)


def test_shutdown_with_tasks_in_flight():
    ctx = rayfast.init(num_cpus=2)

    @rayfast.remote
    def sleepy():
        time.sleep(30)

    refs = [sleepy.remote() for _ in range(4)]
    rayfast.wait(refs, timeout=0.3)
    pids = [p for p, _ in runtime_children()]
    t = time.time()
    rayfast.shutdown()
    assert time.time() - t < 10
    assert_no_leftovers(ctx["session_dir"], pids)


def test_init_bad_arguments():
    with pytest.raises((ValueError, TypeError)):
        rayfast.init(num_cpus=-1)
    with pytest.raises(RuntimeError):   # Ray's error for an unknown init() keyword
        rayfast.init(no_such_option=1)
    with pytest.raises((ValueError, TypeError)):
        rayfast.init(resources={"CPU": 2})
    with pytest.raises((ValueError, TypeError)):
        rayfast.init(resources={"foo": -1})
    assert not rayfast.is_initialized()


def test_context_manager():
    with rayfast.init(num_cpus=1) as ctx:
        assert rayfast.get(square.remote(5)) == 25
    assert not rayfast.is_initialized()
    assert_no_leftovers(ctx["session_dir"])


def test_custom_resources():
    rayfast.init(num_cpus=2, resources={"foo": 2})
    assert rayfast.cluster_resources()["foo"] == 2.0
    assert rayfast.nodes()[0]["Resources"]["foo"] == 2.0

    @rayfast.remote(resources={"foo": 1})
    def uses_foo():
        time.sleep(0.2)
        return os.getpid()

    assert len(rayfast.get([uses_foo.remote(), uses_foo.remote()], timeout=30)) == 2

    @rayfast.remote(resources={"foo": 2}, num_cpus=0)
    def all_foo():
        t = time.time()
        time.sleep(0.2)
        return t, time.time()

    spans = sorted(rayfast.get([all_foo.remote(), all_foo.remote()], timeout=30))
    assert spans[1][0] >= spans[0][1] - 0.02  # never at the same time
    more = uses_foo.options(resources={"foo": 3}).remote()   # more than there is: pending, as Ray
    assert rayfast.wait([more], timeout=0.2)[0] == []
    rayfast.cancel(more)
    assert wait_for(lambda: rayfast.available_resources().get("foo") == 2.0, timeout=5)
    rayfast.shutdown()


def test_num_cpus_zero_cluster():
    rayfast.init(num_cpus=0)
    pending = square.remote(1)   # needs a CPU: pending, as in Ray
    assert rayfast.wait([pending], timeout=0.2)[0] == []
    rayfast.cancel(pending)

    @rayfast.remote(num_cpus=0)
    def free(x):
        return x

    assert rayfast.get(free.remote(3), timeout=30) == 3
    rayfast.shutdown()


@pytest.mark.parametrize("shards", [1, 3])
def test_gcs_shards(shards):
    ctx = rayfast.init(num_cpus=1, gcs_shards=shards)
    servers = [p for p, cmd in runtime_children() if "valkey-server" in cmd or "redis-server" in cmd]
    assert len(servers) == shards
    assert len(ctx["gcs_address"].split(",")) == shards
    assert rayfast.get(square.remote(3)) == 9
    rayfast.shutdown()
    assert_no_leftovers(ctx["session_dir"], servers)


def test_default_num_cpus_is_machine_cores():
    rayfast.init()
    assert rayfast.cluster_resources()["CPU"] == float(os.cpu_count())
    rayfast.shutdown()


# --- drivers that end in different ways -------------------------------------
_DRIVER = """
import json, os, sys, time
sys.path.insert(0, {tests!r})
import rayfast
from conftest import descendants
ctx = rayfast.init(num_cpus=2)

@rayfast.remote
def sleepy(x):
    time.sleep(x)
    return x

assert rayfast.get(sleepy.remote(0)) == 0
running = [sleepy.remote(60) for _ in range(2)]   # busy workers at the end
big = rayfast.put(b"x" * 1_000_000)               # a store object
time.sleep(0.2)
print(json.dumps({{"session_dir": ctx["session_dir"], "pids": descendants()}}), flush=True)
{end}
"""

_ENDS = {
    "normal": "",
    "raises": "raise RuntimeError('driver failed')",
    "sys_exit": "sys.exit(3)",
    "sigterm": "time.sleep(60)",
    "sigkill": "time.sleep(60)",
    "shutdown": "rayfast.shutdown()",
}


@pytest.mark.parametrize("end", list(_ENDS))
def test_driver_end_leaves_nothing(end):
    tests = os.path.dirname(os.path.abspath(__file__))
    code = _DRIVER.format(tests=tests, end=_ENDS[end])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.dirname(tests) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        info = json.loads(line)
        pids = info["pids"]
        assert len(pids) >= 4  # node manager, 2 GCS shards, 2 workers
        if end == "sigterm":
            proc.send_signal(signal.SIGTERM)
        elif end == "sigkill":
            proc.kill()
        proc.wait(30)
        if end in ("normal", "shutdown"):
            assert proc.returncode == 0, proc.stderr.read()
        deadline = time.time() + 5
        while time.time() < deadline:
            if not [p for p in pids if alive(p)] and not session_leftovers(info["session_dir"]):
                break
            time.sleep(0.05)
        live = [(p, open(f"/proc/{p}/cmdline", "rb").read()[:80]) for p in pids if alive(p)]
        assert not live, f"processes left: {live}"
        assert not session_leftovers(info["session_dir"])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
