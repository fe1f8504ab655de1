"""Ray's state API (rayfast.util.state): what list/get/summarize report for actors, tasks, workers,
objects, nodes, placement groups and jobs, and its filters."""
import os
import time

import pytest

import rayfast
from rayfast.util.state import (get_actor, get_node, get_task, list_actors, list_jobs, list_nodes, list_objects,
                                list_placement_groups, list_tasks, list_workers, summarize_actors,
                                summarize_objects, summarize_tasks)

from conftest import wait_for


@rayfast.remote
class Counter:
    def __init__(self):
        self.n = 0

    def incr(self):
        self.n += 1
        return self.n

    def pid(self):
        return os.getpid()


@rayfast.remote
def square(x):
    return x * x


@rayfast.remote
def fails():
    raise KeyError("state api")


@rayfast.remote
def getpid():
    return os.getpid()


@rayfast.remote
def sleeper(t):
    time.sleep(t)
    return t


def test_actors_alive_and_dead_with_filters(cluster):
    named = Counter.options(name="state_counter").remote()
    pid = rayfast.get(named.pid.remote())
    doomed = Counter.remote()
    rayfast.get(doomed.incr.remote())
    rayfast.kill(doomed)
    assert wait_for(lambda: get_actor(doomed._actor_id.hex()) is not None
                    and get_actor(doomed._actor_id.hex()).state == "DEAD", timeout=5)
    row = get_actor(named._actor_id.hex())
    assert (row.state, row.class_name, row.name, row.pid) == ("ALIVE", "Counter", "state_counter", pid)
    assert row["state"] == "ALIVE" and row.asdict()["actor_id"] == named._actor_id.hex()   # dict-like, as Ray's
    assert row.ray_namespace == rayfast.get_runtime_context().namespace
    dead = get_actor(doomed._actor_id.hex())
    assert dead.death_cause and "ray.kill" in dead.death_cause["error_message"].replace("rayfast.kill", "ray.kill")
    alive = list_actors(filters=[("state", "=", "ALIVE")])
    assert named._actor_id.hex() in {a.actor_id for a in alive}
    assert all(a.state == "ALIVE" for a in alive)
    assert doomed._actor_id.hex() in {a.actor_id for a in list_actors(filters=[("state", "!=", "alive")])}
    assert list_actors(filters=[("name", "=", "state_counter")])[0].actor_id == named._actor_id.hex()
    assert len(list_actors(limit=1)) == 1
    counts = summarize_actors()["cluster"]["summary"]["Counter"]["state_counts"]
    assert counts.get("ALIVE", 0) >= 1 and counts.get("DEAD", 0) >= 1
    assert get_actor("ff" * 16) is None
    rayfast.kill(named)


def test_tasks_finished_failed_running_and_pending(cluster):
    refs = [square.remote(i) for i in range(3)]
    assert rayfast.get(refs) == [0, 1, 4]
    bad = fails.remote()
    with pytest.raises(KeyError):
        rayfast.get(bad)
    slow = [sleeper.remote(1.5) for _ in range(3)]   # two run on the 2 CPUs, one waits
    assert wait_for(lambda: len(list_tasks(filters=[("state", "=", "RUNNING"), ("func_or_class_name", "=",
                                                                                 sleeper._name)])) == 2, timeout=5)
    pending = list_tasks(filters=[("state", "=", "PENDING_NODE_ASSIGNMENT")])
    assert any(t.func_or_class_name == sleeper._name for t in pending)
    failed = list_tasks(filters=[("state", "=", "FAILED")])
    assert any(t.error_type == "KeyError" and "state api" in t.error_message for t in failed)
    summary = summarize_tasks()["cluster"]
    assert summary["summary"][square._name]["state_counts"]["FINISHED"] >= 3
    assert summary["summary"][square._name]["type"] == "NORMAL_TASK"
    assert rayfast.get(slow) == [1.5] * 3
    c = Counter.remote()
    rayfast.get(c.incr.remote())
    calls = list_tasks(filters=[("name", "=", "Counter.incr")])
    assert calls and calls[0].type == "ACTOR_TASK" and calls[0].state == "FINISHED"
    one = get_task(calls[0].task_id)
    assert one and one[0].task_id == calls[0].task_id
    with pytest.raises(ValueError, match="not supported"):
        list_tasks(filters=[("colour", "=", "red")])
    with pytest.raises(ValueError, match="predicate"):
        list_tasks(filters=[("state", ">", "RUNNING")])


def test_nodes_workers_objects_placement_groups_and_jobs(cluster):
    from rayfast.util import placement_group, remove_placement_group

    nodes = list_nodes()
    assert len(nodes) == 1 and nodes[0].state == "ALIVE" and nodes[0].is_head_node
    assert nodes[0].resources_total["CPU"] == 2
    assert get_node(nodes[0].node_id).node_id == rayfast.get_runtime_context().get_node_id()
    pid = rayfast.get(getpid.remote())
    workers = list_workers(filters=[("worker_type", "=", "WORKER")])
    assert pid in {w.pid for w in workers} and all(w.is_alive for w in workers)
    driver = list_workers(filters=[("worker_type", "=", "DRIVER")])
    assert driver and driver[0].worker_id == rayfast.get_runtime_context().get_worker_id()
    import numpy as np
    big = rayfast.put(np.zeros(1 << 18))
    small = rayfast.put(7)
    objs = {o.object_id: o for o in list_objects()}
    assert objs[big.hex()].object_size >= 8 << 18 and objs[big.hex()].task_status == "FINISHED"
    assert objs[small.hex()].reference_type == "LOCAL_REFERENCE"
    assert summarize_objects()["cluster"]["total_objects"] >= 2
    pg = placement_group([{"CPU": 0.5}], name="state_pg")
    pg.ready()
    rows = list_placement_groups(filters=[("name", "=", "state_pg")])
    assert rows[0].state == "CREATED" and rows[0].bundles[0]["unit_resources"] == {"CPU": 0.5}
    remove_placement_group(pg)
    assert list_placement_groups(filters=[("name", "=", "state_pg")])[0].state == "REMOVED"
    jobs = list_jobs()
    assert jobs[0].job_id == rayfast.get_runtime_context().get_job_id() and jobs[0].status == "RUNNING"
