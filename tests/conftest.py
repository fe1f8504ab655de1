"""Shared fixtures for the core-runtime tests.

* `cluster` — a module-scoped local cluster (`rayfast.init(num_cpus=2)`),
  shut down at the end of the module, with a leak check afterwards.
* `fresh` — a per-test guard: nothing initialized before, everything gone after.
* helpers to find a driver's processes and to assert that a session left
  nothing behind (processes, shared-memory segment, socket file, session dir).

There is no psutil here: processes are found through /proc.
"""
import os
import subprocess
import sys
import textwrap
import time

import pytest

import rayfast

_NAMES = ("valkey-server", "redis-server", "rayfast.node.main")

# init() without an address joins a cluster that `rayfast start` left running (as Ray's): the
# suite's clusters are its own, whatever runs on the machine.
os.environ.pop("RAYFAST_ADDRESS", None)
if "RAYFAST_SESSION_ROOT" not in os.environ:
    import atexit
    import shutil
    import tempfile
    _ROOT = tempfile.mkdtemp(prefix="rftest-records-")
    os.environ["RAYFAST_SESSION_ROOT"] = _ROOT
    atexit.register(shutil.rmtree, _ROOT, True)


# --- processes --------------------------------------------------------------
def _stat(pid):
    """(ppid, state) of pid, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode(errors="replace")
    except OSError:
        return None
    rest = data[data.rindex(")") + 2:].split()
    return int(rest[1]), rest[0]


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pid):
    """True if pid exists and is not a zombie."""
    st = _stat(pid)
    return st is not None and st[1] != "Z"


def descendants(root=None):
    """Live (non-zombie) descendant pids of root (default: this process)."""
    root = os.getpid() if root is None else root
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = _stat(int(name))
        if st is None or st[1] == "Z":
            continue
        children.setdefault(st[0], []).append(int(name))
    out, stack = [], [root]
    while stack:
        for c in children.get(stack.pop(), ()):
            out.append(c)
            stack.append(c)
    return out


def runtime_children(root=None):
    """Descendants of root that are part of a rayfast cluster (GCS servers, node managers, workers)."""
    return [(p, cmd) for p in descendants(root) for cmd in [_cmdline(p)] if any(n in cmd for n in _NAMES)]


def session_leftovers(session_dir):
    """What of a session still exists: its segment, socket file, session dir."""
    left = []
    if session_dir:
        seg = "/dev/shm/rayfast-" + os.path.basename(session_dir.rstrip("/"))
        if os.path.exists(seg):
            left.append(seg)
        sock = os.path.join(session_dir, "node.sock")
        if os.path.exists(sock):
            left.append(sock)
        if os.path.exists(session_dir):
            left.append(session_dir)
    return left


def assert_no_leftovers(session_dir=None, pids=(), timeout=5.0):
    """Within timeout: no rayfast processes among our children, none of `pids` alive, nothing of session_dir."""
    deadline = time.monotonic() + timeout
    while True:
        procs = runtime_children()
        live = [p for p in pids if alive(p)]
        files = session_leftovers(session_dir)
        if not procs and not live and not files:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"leftovers after shutdown: processes={procs} pids={live} files={files}")
        time.sleep(0.05)


def wait_for(pred, timeout=5.0, interval=0.02):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            return v
        time.sleep(interval)


def run_driver(code, timeout=60, **kwargs):
    """Run `python -c code` with the repository importable; returns the CompletedProcess."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env=env, **kwargs)


def object_count():
    from rayfast import core_worker
    return core_worker.current().request("statistics")["objects"]["objects"]


# --- fixtures ---------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster():
    if rayfast.is_initialized():
        rayfast.shutdown()
    ctx = rayfast.init(num_cpus=2)
    yield ctx
    rayfast.shutdown()
    assert_no_leftovers(ctx["session_dir"])


@pytest.fixture(scope="module")
def cluster_foo():
    """A cluster with a custom resource: init(num_cpus=2, resources={"foo": 2})."""
    if rayfast.is_initialized():
        rayfast.shutdown()
    ctx = rayfast.init(num_cpus=2, resources={"foo": 2})
    yield ctx
    rayfast.shutdown()
    assert_no_leftovers(ctx["session_dir"])


@pytest.fixture
def fresh():
    """A test that starts and stops clusters itself; leaves nothing behind."""
    if rayfast.is_initialized():
        rayfast.shutdown()
    yield
    if rayfast.is_initialized():
        rayfast.shutdown()
    assert_no_leftovers()
