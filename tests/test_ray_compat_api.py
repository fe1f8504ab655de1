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


def test_auto_init_on_first_remote_put_get_wait():
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
        assert ray.wait([]) == ([], [])
        ray.shutdown()
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
