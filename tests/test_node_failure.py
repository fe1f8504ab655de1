"""Actors and pinned tasks when the node they run on dies (remove_node(allow_graceful=False), a
crashed machine), checked against Ray's fault-tolerance docs ("Actor fault tolerance", "Node
fault tolerance"): an actor with max_restarts left restarts on a node that can hold it, re-running
__init__ with its original arguments; a call running there is retried if max_task_retries allows,
else fails with ActorUnavailableError (Ray's, as checked with Ray 2.60); calls made meanwhile wait
for it; a detached named actor keeps its name; an actor without restarts is dead. A task pinned by
soft node affinity to that node runs elsewhere, one pinned by hard affinity cannot run.

Actors are pinned to the doomed node with soft affinity, so that the head can take them after.
"""
import os
import time

import pytest

import rayfast
from rayfast.exceptions import ActorDiedError, ActorUnavailableError, TaskUnschedulableError
from rayfast.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from conftest import wait_for
from test_cluster_utils import _gone, connected_cluster, here


@pytest.fixture(scope="module")
def cluster():
    with connected_cluster() as (c, _):
        yield c


def _on(node):
    return NodeAffinitySchedulingStrategy(node.node_id, soft=True)


def _block(path):
    """Runs for a minute the first time (marking that it runs), returns at once after."""
    if os.path.exists(path):
        return "again"
    with open(path, "w"):
        pass
    time.sleep(60)
    return "first"


@rayfast.remote
class Counter:
    def __init__(self, start):
        self.n = start

    def inc(self):
        self.n += 1
        return self.n

    def where(self):
        ctx = rayfast.get_runtime_context()
        return ctx.get_node_id(), ctx.was_current_actor_reconstructed

    def block(self, path):
        return _block(path)


def test_actor_restarts_on_another_node(cluster, tmp_path):
    c = cluster
    doomed = c.add_node(num_cpus=1)
    c.wait_for_nodes()
    start = rayfast.put(10)     # held after this only by the actor, whose restarts re-run __init__
    plain = Counter.options(max_restarts=1, scheduling_strategy=_on(doomed)).remote(start)
    retried = Counter.options(max_restarts=1, max_task_retries=1, scheduling_strategy=_on(doomed),
                              name="keeper", lifetime="detached").remote(start)
    del start
    for a in (plain, retried):
        assert rayfast.get(a.where.remote(), timeout=60) == (doomed.node_id, False)
        assert rayfast.get(a.inc.remote(), timeout=60) == 11
    lost = plain.block.remote(str(tmp_path / "plain"))
    again = retried.block.remote(str(tmp_path / "retried"))
    assert wait_for(lambda: os.path.exists(tmp_path / "plain") and os.path.exists(tmp_path / "retried"),
                    timeout=60)

    c.remove_node(doomed, allow_graceful=False)
    with pytest.raises(ActorUnavailableError):      # it may have run: max_task_retries=0
        rayfast.get(lost, timeout=60)
    later = plain.inc.remote()          # made while it restarts (the death is seen): waits for it
    assert rayfast.get(again, timeout=60) == "again"    # retried on the restarted actor
    assert rayfast.get(later, timeout=60) == 11         # __init__ ran again with its argument
    head = c.head_node.node_id
    for a in (plain, retried):
        assert rayfast.get(a.where.remote(), timeout=60) == (head, True)
    named = rayfast.get_actor("keeper")
    assert rayfast.get(named.inc.remote(), timeout=60) == 11
    _gone(doomed)
    # its restart was its last: now it dies with its process
    rayfast.kill(plain, no_restart=False)
    with pytest.raises(ActorDiedError):
        rayfast.get(plain.inc.remote(), timeout=60)
    rayfast.kill(named)


def test_no_restarts_left_and_soft_pinned_tasks(cluster, tmp_path):
    c = cluster
    doomed = c.add_node(num_cpus=1)
    c.wait_for_nodes()
    mortal = Counter.options(scheduling_strategy=_on(doomed)).remote(0)
    assert rayfast.get(mortal.where.remote(), timeout=60) == (doomed.node_id, False)

    @rayfast.remote(max_retries=1)
    def task(path):
        return _block(path), here()

    @rayfast.remote
    def gate(path):
        while not os.path.exists(path):
            time.sleep(0.01)

    @rayfast.remote
    def after(_):
        return here()

    marker = str(tmp_path / "task")
    ref = task.options(scheduling_strategy=_on(doomed)).remote(marker)
    opened = str(tmp_path / "gate")
    arg = gate.remote(opened)       # tasks pinned there still waiting for their argument:
    soft = after.options(scheduling_strategy=_on(doomed)).remote(arg)
    hard = after.options(scheduling_strategy=NodeAffinitySchedulingStrategy(doomed.node_id, soft=False)).remote(arg)
    assert wait_for(lambda: os.path.exists(marker), timeout=60)
    c.remove_node(doomed, allow_graceful=False)
    with pytest.raises(ActorDiedError, match="no restarts left"):
        rayfast.get(mortal.inc.remote(), timeout=60)
    head = c.head_node.node_id
    assert rayfast.get(ref, timeout=60) == ("again", head)   # the pin went with the node
    open(opened, "w").close()
    assert rayfast.get(soft, timeout=60) == head
    with pytest.raises(TaskUnschedulableError):
        rayfast.get(hard, timeout=60)
    _gone(doomed)
