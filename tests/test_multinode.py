"""Two nodes on one machine, started as a user would: tasks, objects and failures across them.

The head (`rayfast start --head`, 1 CPU) and a second node (`rayfast start --address`,
1 CPU and a custom resource "peer") share the GCS; the driver connects to the head.
A task asking for "peer" can never run on the head, so the head forwards it to the
other node (rayfast/node/peers.py); its arguments and results cross between the
nodes' stores (rayfast/node/object_transfer.py). The module's cluster has a session
root of its own, and `rayfast stop` at the end must leave nothing of either node.
"""
import json
import os
import signal
import time

import numpy as np
import pytest

import rayfast
from rayfast import core_worker
from rayfast.cluster import NodeClient
from rayfast.exceptions import GetTimeoutError, NodeDiedError, RayTaskError

from conftest import alive, wait_for
from test_cli import cli, free_port, _shm_segment


PEER_RESOURCES = '{"peer": 1, "peer_actor": 2}'   # (actors hold peer_actor, tasks ask for peer)


def _start(root, *args):
    before = set(os.listdir(root / "nodes")) if (root / "nodes").exists() else set()
    cli(root, "start", *args, "--num-cpus", "1", "--object-store-memory", "200M")
    (new,) = set(os.listdir(root / "nodes")) - before
    return json.loads((root / "nodes" / new).read_text())


def _processes_of(session_dir):
    """Live processes started for a node (its manager, workers, GCS shards): their command
    lines name its session directory."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    cmd = f.read().decode(errors="replace")
            except OSError:
                continue
            if session_dir in cmd and alive(int(name)):
                out.append(int(name))
    return out


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    if rayfast.is_initialized():
        rayfast.shutdown()
    root = tmp_path_factory.mktemp("rf-mn")
    old = os.environ.get("RAYFAST_SESSION_ROOT")
    os.environ["RAYFAST_SESSION_ROOT"] = str(root)
    port = free_port()
    nodes = {}
    try:
        nodes["head"] = _start(root, "--head", "--port", str(port))
        nodes["peer"] = _start(root, "--address", f"127.0.0.1:{port}", "--resources", PEER_RESOURCES)
        rayfast.init(address=f"127.0.0.1:{port}")
        yield {"root": root, "port": port, "nodes": nodes}
    finally:
        if rayfast.is_initialized():
            rayfast.shutdown()
        cli(root, "stop", check=False)
        if old is None:
            os.environ.pop("RAYFAST_SESSION_ROOT", None)
        else:
            os.environ["RAYFAST_SESSION_ROOT"] = old


@rayfast.remote(resources={"peer": 1})
def on_peer(x):
    return rayfast.get_runtime_context().get_node_id(), x


@rayfast.remote(resources={"peer": 1})
def double(a):
    return a * 2


@rayfast.remote
def local_double(a):
    return rayfast.get_runtime_context().get_node_id(), a * 2


@rayfast.remote(resources={"peer": 1})
def fails(x):
    raise ValueError(f"bad value {x}")


def _peer_stats(two_nodes):
    with NodeClient(two_nodes["nodes"]["peer"]["socket"]) as c:
        return c.request("statistics")


def test_task_runs_on_the_other_node(two_nodes):
    here = rayfast.get_runtime_context().get_node_id()
    there, x = rayfast.get(on_peer.remote(41), timeout=30)
    assert x == 41 and there != here
    nodes = rayfast.nodes()
    assert {n["NodeID"] for n in nodes if n["Alive"]} == {here, there}
    assert rayfast.cluster_resources()["CPU"] == 2 and rayfast.cluster_resources()["peer"] == 1
    assert wait_for(lambda: rayfast.available_resources().get("peer") == 1, timeout=15)
    # A task the head can run stays on the head.
    assert rayfast.get(local_double.remote(1), timeout=30) == (here, 2)


def test_values_cross_both_ways(two_nodes):
    assert rayfast.get(double.remote(21), timeout=30) == 42
    small = np.arange(10, dtype=np.int32)
    assert (rayfast.get(double.remote(small), timeout=30) == small * 2).all()
    big = np.random.default_rng(0).random(1_000_000)            # 8 MB: a store object each way
    out = rayfast.get(double.remote(big), timeout=30)
    assert out.dtype == big.dtype and np.array_equal(out, big * 2)
    assert not out.flags.writeable                             # a zero-copy view of the local store
    ref = rayfast.put(big)                                     # a put object as argument
    assert np.array_equal(rayfast.get(double.remote(ref), timeout=30), big * 2)
    # a result dict holding several arrays, and a nested ref travel too
    mixed = rayfast.get(on_peer.remote({"a": big, "b": [1, "x"]}), timeout=30)[1]
    assert np.array_equal(mixed["a"], big) and mixed["b"] == [1, "x"]


@rayfast.remote(resources={"peer": 1})
def puts_there(n):
    return [rayfast.put(np.full(n, 7.0)), rayfast.put("small")]


@rayfast.remote(resources={"peer": 1})
def reads_nested(refs):
    return [float(np.sum(v)) if isinstance(v, np.ndarray) else v for v in rayfast.get(refs)]


def test_refs_inside_values_cross_too(two_nodes):
    """A result holding refs to objects put there; an argument holding refs to objects here."""
    big_ref, small_ref = rayfast.get(puts_there.remote(1_000_000), timeout=30)
    assert rayfast.get(small_ref, timeout=30) == "small"
    assert np.array_equal(rayfast.get(big_ref, timeout=30), np.full(1_000_000, 7.0))
    here = [rayfast.put(np.ones(1_000_000)), rayfast.put(3)]
    assert rayfast.get(reads_nested.remote(here), timeout=30) == [1_000_000.0, 3]
    # the peer's own puts, handed back to it inside an argument
    assert rayfast.get(reads_nested.remote([big_ref, small_ref]), timeout=30) == [7_000_000.0, "small"]


def test_many_tasks_at_once(two_nodes):
    arrays = [np.full(300_000, i, dtype=np.int64) for i in range(8)]   # 2.4 MB each
    refs = [double.remote(i) for i in range(300)] + [double.remote(a) for a in arrays]
    shared = rayfast.put(arrays[0])                     # one object as argument of many tasks at once
    refs += [double.remote(shared) for _ in range(6)]
    out = rayfast.get(refs, timeout=60)
    assert out[:300] == [2 * i for i in range(300)]
    for a, b in zip(arrays + [arrays[0]] * 6, out[300:]):
        assert np.array_equal(a * 2, b)


def test_error_carries_the_remote_traceback(two_nodes):
    with pytest.raises(ValueError) as ei:
        rayfast.get(fails.remote(7), timeout=30)
    assert isinstance(ei.value, RayTaskError)
    text = str(ei.value)
    assert "bad value 7" in text and "Traceback" in text and "fails" in text
    # an argument that failed fails the task there with the same error
    with pytest.raises(ValueError, match="bad value 3"):
        rayfast.get(double.remote(fails.remote(3)), timeout=30)


def test_chains_across_nodes(two_nodes):
    here = rayfast.get_runtime_context().get_node_id()
    a = np.arange(500_000, dtype=np.float64)                   # 4 MB
    r1 = double.remote(a)                  # there
    r2 = local_double.remote(r1)           # here, reading there's result
    r3 = on_peer.remote(r2)                # there again, reading here's result
    node, (node2, value) = rayfast.get(r3, timeout=30)
    assert node != here and node2 == here and np.array_equal(value, a * 4)
    # the same with inline values
    assert rayfast.get(double.remote(local_double.remote(double.remote(1))), timeout=30) == (here, 4) * 2


def test_objects_are_freed_on_both_nodes(two_nodes):
    def peer_objects():
        core_worker.current().request("ping")   # (our dropped refs reach the head with our next frame)
        s = _peer_stats(two_nodes)
        return s["objects"]["objects"], s["store"]["num_objects"]

    # what the earlier tests left there is gone once their refs are (released a little later)
    assert wait_for(lambda: peer_objects() == (0, 0), timeout=5), peer_objects()
    def head_objects():
        s = core_worker.current().request("statistics")
        return s["objects"]["objects"], s["store"]["num_objects"]

    head_base = head_objects()
    big = np.ones(1_000_000)
    refs = [double.remote(big) for _ in range(3)]
    assert all(np.array_equal(r, big * 2) for r in rayfast.get(refs, timeout=30))
    assert peer_objects() == (3, 3)        # its results stay there while we hold them (arguments are gone)
    del refs
    assert wait_for(lambda: peer_objects() == (0, 0), timeout=5), peer_objects()
    assert wait_for(lambda: all(n <= b for n, b in zip(head_objects(), head_base)), timeout=5), \
        (head_objects(), head_base)   # (what earlier tests left may go meanwhile)


def test_no_node_has_it_stays_pending(two_nodes, capfd):
    @rayfast.remote(resources={"nowhere": 1})
    def never():
        return 1

    ref = never.remote()
    with pytest.raises(GetTimeoutError):
        rayfast.get(ref, timeout=0.5)
    assert "nowhere" in capfd.readouterr().err
    rayfast.cancel(ref)
    with pytest.raises(rayfast.exceptions.TaskCancelledError):
        rayfast.get(ref, timeout=10)
    # and a resource only the peer has gives no warning
    rayfast.get(double.remote(1), timeout=30)
    assert "peer" not in capfd.readouterr().err


@rayfast.remote(resources={"peer_actor": 1}, num_cpus=0)
class Counter:
    def __init__(self, start):
        self.n = start

    def add(self, k):
        self.n += k
        return self.n

    def where(self):
        return rayfast.get_runtime_context().get_node_id(), os.getpid()

    def scale(self, a):
        return a * self.n

    def fail(self):
        raise KeyError("not here")


def test_actor_on_the_other_node(two_nodes):
    here = rayfast.get_runtime_context().get_node_id()
    c = Counter.remote(10)
    node, pid = rayfast.get(c.where.remote(), timeout=30)
    assert node != here
    assert rayfast.get([c.add.remote(1) for _ in range(50)], timeout=30) == list(range(11, 61))
    a = np.arange(1_000_000, dtype=np.float64)
    assert np.array_equal(rayfast.get(c.scale.remote(a), timeout=30), a * 60)
    with pytest.raises(KeyError, match="not here"):
        rayfast.get(c.fail.remote(), timeout=30)
    assert rayfast.get(c.add.remote(0), timeout=30) == 60      # the error did not end it
    del c                                                        # its last handle: it ends there
    assert wait_for(lambda: not alive(pid), timeout=10)

    k = Counter.remote(0)
    rayfast.get(k.add.remote(1), timeout=30)
    rayfast.kill(k)
    with pytest.raises(rayfast.exceptions.ActorDiedError, match="killed"):
        rayfast.get(k.add.remote(1), timeout=30)

    @rayfast.remote(resources={"peer_actor": 1}, num_cpus=0)
    class BadInit:
        def __init__(self):
            raise ValueError("no init")

        def f(self):
            return 1

    b = BadInit.remote()
    with pytest.raises(rayfast.exceptions.ActorDiedError, match="creation task"):
        rayfast.get(b.f.remote(), timeout=30)


def test_peer_killed_mid_task(two_nodes):
    """SIGKILL of the node running a task: with no retries it fails with NodeDiedError; with
    retries it runs again on a node that joins later. Never a hang."""
    peer = two_nodes["nodes"]["peer"]

    # (half a CPU each: both run at once on the peer's one CPU)
    @rayfast.remote(resources={"peer": 0.5}, num_cpus=0.5, max_retries=0)
    def slow_once():
        time.sleep(60)

    @rayfast.remote(resources={"peer": 0.5}, num_cpus=0.5, max_retries=1)
    def slow_retried(path):
        if not os.path.exists(path):
            open(path, "w").close()
            time.sleep(60)
        return rayfast.get_runtime_context().get_node_id()

    actor = Counter.remote(1)
    assert rayfast.get(actor.add.remote(1), timeout=30) == 2
    marker = str(two_nodes["root"] / "ran-once")
    once = slow_once.remote()
    retried = slow_retried.remote(marker)
    assert wait_for(lambda: os.path.exists(marker), timeout=20)
    os.kill(peer["pid"], signal.SIGKILL)
    t0 = time.monotonic()
    with pytest.raises(NodeDiedError, match="died"):
        rayfast.get(once, timeout=20)
    assert time.monotonic() - t0 < 10
    with pytest.raises(rayfast.exceptions.ActorDiedError, match="node"):
        rayfast.get(actor.add.remote(1), timeout=20)
    # no node can run the retry now: it waits, as an infeasible task does
    with pytest.raises(GetTimeoutError):
        rayfast.get(retried, timeout=0.5)
    assert not [n for n in rayfast.nodes() if n["Alive"] and n["NodeID"] != rayfast.get_runtime_context().get_node_id()]
    third = _start(two_nodes["root"], "--address", f"127.0.0.1:{two_nodes['port']}", "--resources", PEER_RESOURCES)
    two_nodes["nodes"]["third"] = third
    node = rayfast.get(retried, timeout=30)
    assert node not in (rayfast.get_runtime_context().get_node_id(),)
    assert wait_for(lambda: not _processes_of(peer["session_dir"]), timeout=5)


def test_a_node_gone_before_any_link_is_skipped(two_nodes):
    """A node the GCS still lists as alive (SIGKILLed before anyone linked to it): the link is
    refused, the node is marked dead, and the task, which never reached it, costs no retry and
    waits as infeasible (no other node has "ghost")."""
    ghost = _start(two_nodes["root"], "--address", f"127.0.0.1:{two_nodes['port']}", "--resources", '{"ghost": 1}')
    two_nodes["nodes"]["ghost"] = ghost
    os.kill(ghost["pid"], signal.SIGKILL)
    assert wait_for(lambda: not alive(ghost["pid"]), timeout=5)

    @rayfast.remote(resources={"ghost": 1}, max_retries=0)
    def haunt():
        return 1

    ref = haunt.remote()
    with pytest.raises(GetTimeoutError):
        rayfast.get(ref, timeout=1.5)
    gid = None
    for n in rayfast.nodes():
        if n["Resources"].get("ghost"):
            gid = n["NodeID"]
            assert not n["Alive"]
    assert gid is not None and "ghost" not in rayfast.cluster_resources()
    rayfast.cancel(ref)
    with pytest.raises(rayfast.exceptions.TaskCancelledError):
        rayfast.get(ref, timeout=10)


def test_stop_leaves_nothing(two_nodes):
    nodes = list(two_nodes["nodes"].values())
    assert rayfast.get(on_peer.remote(1), timeout=30)[1] == 1
    rayfast.shutdown()
    cli(two_nodes["root"], "stop")
    for n in nodes:
        sdir = n["session_dir"]
        assert wait_for(lambda: not _processes_of(sdir), timeout=10), _processes_of(sdir)
        assert not os.path.exists(sdir)
        assert not os.path.exists(_shm_segment(sdir))
    assert not os.path.exists(two_nodes["root"] / "nodes")
