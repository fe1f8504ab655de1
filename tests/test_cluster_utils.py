"""rayfast.cluster_utils.Cluster, Ray's way to test several nodes on one machine ("Tips for
testing Ray programs", tip 4), checked against Ray's documented behaviour: resources and nodes
of added nodes, tasks placed by resources, node affinity and SPREAD, objects crossing nodes, and
a node removed (gracefully, or killed as a crashed machine) leaving nothing behind.

One Cluster (a head and a node with the custom resource "special") serves the module; the
tests that remove nodes add their own first.
"""
import contextlib
import glob
import os
import signal
import tempfile
import time

import numpy as np
import pytest

import rayfast
from rayfast import cluster as rf_cluster
from rayfast.cluster_utils import Cluster
from rayfast.exceptions import NodeDiedError, RayActorError, TaskUnschedulableError
from rayfast.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from conftest import alive, run_driver, session_leftovers, wait_for
from test_multinode import _processes_of


def _gone(node, timeout=10):
    """Nothing of a removed node is left: processes, segment, socket, session dir."""
    assert wait_for(lambda: not _processes_of(node.session_dir) and not session_leftovers(node.session_dir),
                    timeout=timeout), (_processes_of(node.session_dir), session_leftovers(node.session_dir))


@contextlib.contextmanager
def connected_cluster(*added):
    """A Cluster with a 2-CPU head and nodes of the given add_node() arguments, this process its
    driver: (cluster, [added nodes]); at the end every node gone, nothing of them left."""
    if rayfast.is_initialized():
        rayfast.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    try:
        nodes = [c.add_node(**args) for args in added]
        if nodes:
            c.wait_for_nodes()
        rayfast.init(address=c.address)
        yield c, nodes
    finally:
        nodes = c.list_all_nodes()
        c.shutdown()
        for n in nodes:
            _gone(n)


@pytest.fixture(scope="module")
def cluster():
    with connected_cluster(dict(num_cpus=1, resources={"special": 1}, labels={"zone": "b"})) as (c, added):
        yield c, added[0]


def here():
    return rayfast.get_runtime_context().get_node_id()


@rayfast.remote
def where(delay=0.0):
    time.sleep(delay)
    return rayfast.get_runtime_context().get_node_id()


def test_added_nodes_are_listed_with_their_resources(cluster):
    c, worker = cluster
    assert c.address == c.gcs_address and c.head_node.node_id == here()
    assert [n.node_id for n in c.list_all_nodes()] == [c.head_node.node_id, worker.node_id]
    total = rayfast.cluster_resources()
    assert total["CPU"] == 3 and total["special"] == 1.0
    assert not [k for k in total if k.startswith("node_id:")]   # (the hidden per-node resource)
    nodes = {n["NodeID"]: n for n in rayfast.nodes()}
    assert set(nodes) == {c.head_node.node_id, worker.node_id} and all(n["Alive"] for n in nodes.values())
    assert nodes[worker.node_id]["Resources"]["special"] == 1.0 and nodes[worker.node_id]["Resources"]["CPU"] == 1
    assert nodes[worker.node_id]["Labels"]["zone"] == "b"
    ports = {n["MetricsExportPort"] for n in nodes.values()}   # each node serves its own metrics
    assert len(ports) == 2 and all(p > 0 for p in ports), nodes
    assert wait_for(lambda: rayfast.available_resources().get("special") == 1.0, timeout=5)


def test_a_resource_only_the_added_node_has(cluster):
    c, worker = cluster

    @rayfast.remote(resources={"special": 1})
    def special():
        return here()

    assert rayfast.get([special.remote() for _ in range(3)], timeout=60) == [worker.node_id] * 3
    assert rayfast.get(where.remote(), timeout=60) == c.head_node.node_id   # the rest stays where submitted


def test_node_affinity(cluster):
    c, worker = cluster
    for node in (worker, c.head_node, worker):
        strategy = NodeAffinitySchedulingStrategy(node.node_id, soft=False)
        assert rayfast.get(where.options(scheduling_strategy=strategy).remote(), timeout=60) == node.node_id
    ghost = "ab" * 28
    with pytest.raises(TaskUnschedulableError):
        rayfast.get(where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(ghost, soft=False)).remote(),
                    timeout=60)
    # soft: a node that does not exist (or cannot run it) is no obstacle
    soft = NodeAffinitySchedulingStrategy(ghost, soft=True)
    assert rayfast.get(where.options(scheduling_strategy=soft).remote(), timeout=60) == c.head_node.node_id

    @rayfast.remote
    class Where:
        def node(self):
            return here()

    a = Where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(worker.node_id, soft=False)).remote()
    assert rayfast.get(a.node.remote(), timeout=60) == worker.node_id


def test_spread(cluster):
    c, worker = cluster
    spread = where.options(scheduling_strategy="SPREAD")
    assert set(rayfast.get([spread.remote(0.05) for _ in range(6)], timeout=60)) == \
        {c.head_node.node_id, worker.node_id}


def test_objects_cross_nodes(cluster):
    c, worker = cluster
    on_worker = NodeAffinitySchedulingStrategy(worker.node_id, soft=False)

    @rayfast.remote
    def total(a):
        return here(), float(a.sum())

    @rayfast.remote
    def make(n):
        return np.ones(n)

    big = np.arange(1_000_000, dtype=np.float64)          # 8 MB: a store object
    ref = rayfast.put(big)
    assert rayfast.get(total.options(scheduling_strategy=on_worker).remote(ref), timeout=60) == \
        (worker.node_id, float(big.sum()))
    made = make.options(scheduling_strategy=on_worker).remote(1_000_000)
    assert rayfast.get(made, timeout=60).sum() == 1_000_000   # made there, read by the driver here
    assert rayfast.get(total.remote(made), timeout=60) == (c.head_node.node_id, 1_000_000.0)   # and by a task here


def test_work_the_drivers_node_has_no_room_for_goes_to_a_node_with_room(cluster):
    """Bottom-up scheduling: tasks run where they are submitted while there is room; those that
    find this node full go to a node whose reported free resources hold them, not wait here."""
    c, worker = cluster
    assert wait_for(lambda: rayfast.available_resources().get("CPU") == 3.0, timeout=10)
    nodes = rayfast.get([where.remote(1.0) for _ in range(9)], timeout=60)
    assert worker.node_id in nodes and c.head_node.node_id in nodes, nodes


def test_removing_the_drivers_node_is_refused(cluster):
    c, _ = cluster
    with pytest.raises(ValueError, match="connected"):
        c.remove_node(c.head_node)
    assert not rayfast.is_initialized()      # (as Ray's: the driver is shut down first)
    rayfast.init(address=c.address)
    assert c.head_node.remaining_processes_alive()


def test_node_killed(cluster, tmp_path):
    """remove_node(allow_graceful=False), a crashed machine: the task running there is retried on
    another node that can run it, one without retries fails, an actor that lived there restarts
    on another node that can hold it (max_restarts) unless hard affinity pinned it there, an
    object made there earlier is still read, and the node is listed dead."""
    c, _ = cluster
    a_node = c.add_node(num_cpus=1, resources={"ft": 1})
    b_node = c.add_node(num_cpus=1, resources={"ft": 1})
    c.wait_for_nodes()
    marker = str(tmp_path / "first-try")

    @rayfast.remote(resources={"ft": 0.4}, num_cpus=0.4, max_retries=2)
    def retried(path):
        if not os.path.exists(path):
            with open(path, "w") as f:
                f.write(here())
            time.sleep(60)
        return here()

    @rayfast.remote(resources={"ft": 0.4}, num_cpus=0.4, max_retries=0)
    def once(node_id):
        time.sleep(60)

    @rayfast.remote(resources={"ft": 0.1}, num_cpus=0, max_restarts=1)
    class Actor:
        def node(self):
            return here()

    ref = retried.remote(marker)
    assert wait_for(lambda: os.path.exists(marker) and open(marker).read(), timeout=30)
    first = open(marker).read()
    victim, survivor = (a_node, b_node) if first == a_node.node_id else (b_node, a_node)
    doomed = once.options(scheduling_strategy=NodeAffinitySchedulingStrategy(victim.node_id, soft=False)).remote(0)
    actor = Actor.options(scheduling_strategy=NodeAffinitySchedulingStrategy(victim.node_id, soft=False)).remote()
    assert rayfast.get(actor.node.remote(), timeout=60) == victim.node_id
    roamer = Actor.options(scheduling_strategy=NodeAffinitySchedulingStrategy(victim.node_id, soft=True)) \
        .remote()
    assert rayfast.get(roamer.node.remote(), timeout=60) == victim.node_id
    made = where.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(victim.node_id, soft=False)).remote()
    assert rayfast.get(made, timeout=60) == victim.node_id

    c.remove_node(victim, allow_graceful=False)
    _gone(victim)
    assert rayfast.get(ref, timeout=60) == survivor.node_id
    with pytest.raises(NodeDiedError):
        rayfast.get(doomed, timeout=60)
    # pinned there by hard affinity it cannot restart elsewhere: it is dead; the soft one restarts
    # on the only other node that has "ft"
    with pytest.raises(RayActorError, match="soft=False"):
        rayfast.get(actor.node.remote(), timeout=60)
    assert rayfast.get(roamer.node.remote(), timeout=60) == survivor.node_id
    assert rayfast.get(made, timeout=60) == victim.node_id
    c.wait_for_nodes()
    dead = [n for n in rayfast.nodes() if n["NodeID"] == victim.node_id]
    assert dead and not dead[0]["Alive"]
    assert rayfast.cluster_resources()["ft"] == 1.0
    with pytest.raises(TaskUnschedulableError):
        rayfast.get(where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(victim.node_id, soft=False))
                    .remote(), timeout=60)
    c.remove_node(survivor)          # graceful
    _gone(survivor)
    c.wait_for_nodes()
    assert "ft" not in rayfast.cluster_resources()


def test_not_what_init_finds_and_ends_with_its_process(tmp_path):
    """A Cluster is not the `rayfast start` cluster that a later init() would join, and its nodes
    end with the process that made it, even one that is killed (SIGKILL: no atexit)."""
    code = f"""
        import os, time
        from rayfast.cluster_utils import Cluster
        c = Cluster(initialize_head=True)
        n = c.add_node(num_cpus=1)
        print(os.getpid(), flush=True)
        with open({str(tmp_path / "dirs")!r}, "w") as f:
            f.write(" ".join(x.session_dir for x in c.list_all_nodes()))
        os.kill(os.getpid(), 9)
    """
    r = run_driver(code, timeout=60)
    assert r.returncode == -signal.SIGKILL, r.stderr
    dirs = (tmp_path / "dirs").read_text().split()
    assert len(dirs) == 2
    for d in dirs:
        assert wait_for(lambda: not _processes_of(d) and not session_leftovers(d), timeout=15), \
            (_processes_of(d), session_leftovers(d))
    roots = glob.glob(f"{tempfile.gettempdir()}/rayfast-cluster-{r.stdout.strip()}-*")
    assert len(roots) == 1     # its records and logs, until the next Cluster sweeps them away
    with Cluster(initialize_head=True) as c:
        assert not os.path.exists(roots[0])
        info = rf_cluster.live_session()
        assert info is None or info["session_dir"] != c.head_node.session_dir
        assert c.head_node.pid not in [i.get("pid") for i in rf_cluster.started_nodes()]
        head = c.head_node
    _gone(head)
    assert not alive(head.pid)
