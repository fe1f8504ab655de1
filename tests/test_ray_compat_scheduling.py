"""Ray's scheduling options on one node, checked against Ray 2.x: scheduling_strategy values,
node affinity, placement groups, accelerator_type, the predefined node resources."""
import pytest

import rayfast as ray
from rayfast.exceptions import GetTimeoutError, TaskUnschedulableError
from rayfast.util.placement_group import (get_current_placement_group, get_placement_group, placement_group,
                                          placement_group_table, remove_placement_group)
from rayfast.util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy


@pytest.fixture(scope="module", autouse=True)
def _cluster(cluster):
    yield cluster


@ray.remote
def where():
    pg = get_current_placement_group()
    return None if pg is None else pg.id.hex()


def test_string_strategies():
    assert ray.get(where.options(scheduling_strategy="DEFAULT").remote()) is None
    assert ray.get(where.options(scheduling_strategy="SPREAD").remote()) is None
    with pytest.raises(ValueError, match="scheduling_strategy"):
        where.options(scheduling_strategy="NEAREST")
    with pytest.raises(TypeError):
        where.options(scheduling_strategy=3)
    with pytest.raises(NotImplementedError, match="label_selector"):   # refused, not ignored
        where.options(label_selector={"zone": "a"})


def test_node_affinity():
    me = ray.get_runtime_context().get_node_id()
    assert ray.get(where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(me, soft=False)).remote()) is None
    other = "ab" * 28
    soft = NodeAffinitySchedulingStrategy(other, soft=True)
    assert ray.get(where.options(scheduling_strategy=soft).remote()) is None
    hard = NodeAffinitySchedulingStrategy(other, soft=False)
    with pytest.raises(TaskUnschedulableError):
        ray.get(where.options(scheduling_strategy=hard).remote(), timeout=10)


def test_predefined_node_resources():
    res = ray.cluster_resources()
    assert res["CPU"] == 2.0 and res["object_store_memory"] > 0 and res["memory"] > 0
    assert res["node:127.0.0.1"] == 1.0 == res["node:__internal_head__"]
    # Ray's way of pinning a task to a node: a sliver of its node:<ip> resource
    pin = {f"node:{ray.util.get_node_ip_address()}": 0.01}
    assert ray.get(where.options(resources=pin, memory=1 << 20).remote()) is None


def test_accelerator_type_nobody_has_stays_pending():
    ref = where.options(accelerator_type="V100").remote()
    with pytest.raises(GetTimeoutError):
        ray.get(ref, timeout=0.2)
    ray.cancel(ref)


def test_placement_group_reserves_and_runs_tasks():
    pg = placement_group([{"CPU": 1}], strategy="PACK", name="rf_pg")
    assert ray.get(pg.ready(), timeout=10) == pg
    assert pg.wait(5) and pg.bundle_count == 1 and pg.bundle_specs == [{"CPU": 1.0}]
    row = placement_group_table(pg)
    assert row["state"] == "CREATED" and row["strategy"] == "PACK" and row["bundles"] == {0: {"CPU": 1.0}}
    assert get_placement_group("rf_pg") == pg
    # the bundle's CPU is reserved, and the group's own resources are not shown (as Ray)
    assert ray.available_resources().get("CPU") == 1.0
    assert not any("_group_" in k for k in ray.cluster_resources())

    inside = PlacementGroupSchedulingStrategy(pg)
    assert ray.get(where.options(scheduling_strategy=inside).remote(), timeout=10) == pg.id.hex()
    bundle0 = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=0)
    assert ray.get(where.options(scheduling_strategy=bundle0).remote(), timeout=10) == pg.id.hex()
    assert ray.get(where.options(placement_group=pg).remote(), timeout=10) == pg.id.hex()   # legacy option
    assert ray.get(where.remote()) is None

    with pytest.raises(ValueError, match="bundle index"):
        where.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=3))
    with pytest.raises(ValueError, match="cannot fit"):
        where.options(num_cpus=2, scheduling_strategy=inside)

    remove_placement_group(pg)
    assert placement_group_table(pg)["state"] == "REMOVED"
    assert ray.available_resources().get("CPU") == 2.0
    with pytest.raises(ValueError):
        pg.wait(0)


def test_placement_group_too_big_stays_pending():
    pg = placement_group([{"CPU": 4}])
    assert pg.wait(0.2) is False
    assert placement_group_table(pg)["state"] == "PENDING"
    spread = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")   # needs 2 nodes
    assert spread.wait(0.2) is False
    remove_placement_group(pg)
    remove_placement_group(spread)
    # a group that fits is placed once the pending ones are gone
    pack = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_PACK")
    assert pack.wait(5)
    remove_placement_group(pack)


def test_placement_group_bad_arguments():
    with pytest.raises(ValueError, match="strategy"):
        placement_group([{"CPU": 1}], strategy="FOO")
    for bad in ([], [{}], [{"CPU": 0}]):
        with pytest.raises(ValueError):
            placement_group(bad)
    assert all(row["state"] == "REMOVED" for row in placement_group_table().values())


def test_placement_group_capture_child_tasks():
    pg = placement_group([{"CPU": 1}, {"CPU": 1}])
    assert pg.wait(5)

    @ray.remote
    def parent():
        ctx = ray.get_runtime_context()
        return ctx.should_capture_child_tasks_in_placement_group, ray.get(where.remote())

    captured = PlacementGroupSchedulingStrategy(pg, placement_group_capture_child_tasks=True)
    assert ray.get(parent.options(scheduling_strategy=captured).remote(), timeout=10) == (True, pg.id.hex())

    @ray.remote(num_cpus=0)
    class Child:
        def group(self):
            return ray.get_runtime_context().get_placement_group_id()

        def childs_group(self):
            return ray.get(where.remote())   # takes the group's other CPU

    @ray.remote
    def make_actor(default):
        if default:
            return ray.get(Child.options(scheduling_strategy="DEFAULT").remote().group.remote())
        a = Child.remote()
        return ray.get(a.group.remote()), ray.get(a.childs_group.remote())

    # as Ray: the actors a capturing task makes go into its group (and capture their own children);
    # one that says where to run does not
    assert ray.get(make_actor.options(scheduling_strategy=captured).remote(False), timeout=10) == \
        (pg.id.hex(), pg.id.hex())
    assert ray.get(make_actor.options(scheduling_strategy=captured).remote(True), timeout=10) is None
    remove_placement_group(pg)
    pg = placement_group([{"CPU": 1}])   # the other CPU stays outside the group
    assert pg.wait(5)
    free = PlacementGroupSchedulingStrategy(pg)   # children run outside the group
    assert ray.get(parent.options(scheduling_strategy=free).remote(), timeout=10) == (False, None)
    remove_placement_group(pg)


def test_gpu_ids_of_tasks_and_actors():
    code = """
        import os, time
        import rayfast as ray
        ray.init(num_cpus=4, num_gpus=2)

        @ray.remote(num_gpus=1)
        def gpus(t=0):
            time.sleep(t)
            ctx = ray.get_runtime_context()
            return ray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES"), ctx.get_accelerator_ids()["GPU"]

        @ray.remote(num_gpus=1)
        class OnGpu:
            def ids(self):
                return ray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")

        assert ray.get_gpu_ids() == []
        assert ray.get(gpus.remote()) == ([0], "0", ["0"])
        assert sorted(ray.get([gpus.remote(0.3), gpus.remote(0.3)])) == [([0], "0", ["0"]), ([1], "1", ["1"])]
        assert ray.get([gpus.options(num_gpus=0.5).remote(0.3) for _ in range(2)]) == [([0], "0", ["0"])] * 2
        assert ray.get(gpus.options(num_gpus=2).remote()) == ([0, 1], "0,1", ["0", "1"])
        assert ray.get(gpus.options(num_gpus=0).remote())[:2] == ([], None)
        a = OnGpu.remote()
        assert ray.get(a.ids.remote()) == ([0], "0")
        assert ray.get(gpus.remote()) == ([1], "1", ["1"])   # GPU 0 is the actor's
        print("ok")
    """
    from conftest import run_driver
    p = run_driver(code)
    assert p.returncode == 0 and "ok" in p.stdout, p.stderr


def test_actor_in_a_placement_group():
    pg = placement_group([{"CPU": 1}])
    assert pg.wait(5)

    @ray.remote(num_cpus=1)
    class InGroup:
        def where(self):
            current = get_current_placement_group()
            return None if current is None else current.id.hex()

    inside = PlacementGroupSchedulingStrategy(pg)
    a = InGroup.options(scheduling_strategy=inside).remote()
    assert ray.get(a.where.remote(), timeout=10) == pg.id.hex()
    b = InGroup.options(scheduling_strategy=inside).remote()   # the bundle is taken: waits
    assert ray.wait([b.where.remote()], timeout=0.3)[0] == []
    ray.kill(a)
    assert ray.get(b.where.remote(), timeout=10) == pg.id.hex()
    ray.kill(b)
    remove_placement_group(pg)


def test_pending_actor_ends_when_its_last_handle_is_dropped(capfd):
    import gc
    import time

    @ray.remote(resources={"no_such_resource": 1})
    class PendingGpu:
        def f(self):
            return 1

    a = PendingGpu.options(name="pending_gpu_actor").remote()
    assert "pending_gpu_actor" in ray.util.list_named_actors()
    b = PendingGpu.options(name="pending_still_held").remote()
    del a
    gc.collect()
    deadline = time.time() + 10
    while "pending_gpu_actor" in ray.util.list_named_actors():
        assert time.time() < deadline, "a pending actor with no handles left stays (as in Ray, it ends)"
        time.sleep(0.05)
    with pytest.raises(ValueError):
        ray.get_actor("pending_gpu_actor")
    assert "pending_still_held" in ray.util.list_named_actors()   # its handle lives: it stays
    ray.kill(b)
    capfd.readouterr()


def test_util_names_are_the_functions():
    # the test module imported rayfast.util.placement_group (the submodule): the name is still the function
    assert ray.util.placement_group is placement_group and callable(ray.util.placement_group)
    assert ray.util.remove_placement_group is remove_placement_group
    assert ray.util.scheduling_strategies.PlacementGroupSchedulingStrategy is PlacementGroupSchedulingStrategy


def test_infeasible_actor_stays_pending_until_killed(capfd):
    @ray.remote(num_gpus=1)
    class NeedsGpu:
        def f(self):
            return 1

    a = NeedsGpu.remote()
    assert "1 GPU" in capfd.readouterr().err
    with pytest.raises(GetTimeoutError):
        ray.get(a.f.remote(), timeout=0.3)
    ray.kill(a)
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(a.f.remote(), timeout=10)
    assert ray.get(where.remote(), timeout=10) is None   # the node goes on scheduling
