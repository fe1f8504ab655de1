"""Ray Core's "Design Patterns & Anti-patterns" pages and the ray.util helpers they lead to
(ActorPool, ray.util.queue.Queue, as_completed/map_unordered), each page's example shrunk and
checked for what the page (and Ray 2.x, where the page leaves it open) says it does.

tests/test_ray_compat_patterns.py has the plain runs of several of these pages; these tests check
what those leave out."""
import asyncio
import os
import pickle
import subprocess
import sys
import textwrap
import time
import weakref

import numpy as np
import pytest

import rayfast as ray
from rayfast.exceptions import GetTimeoutError, RayTaskError
from rayfast.util import ActorPool
from rayfast.util.queue import Empty, Full, Queue

from conftest import wait_for

pytestmark = pytest.mark.usefixtures("cluster")   # conftest: init(num_cpus=2), leak check after


# --- Pattern: generators to reduce heap memory --------------------------------------------------
def _tracked(i, seen):
    value = np.full(300_000, i, dtype=np.uint8)    # large enough for the store
    seen.append(weakref.ref(value))
    return value


def test_generator_with_num_returns_stores_each_value_as_it_is_yielded(cluster):
    @ray.remote(num_returns=4)
    def large_values_generator():
        seen, freed = [], []
        for i in range(3):
            yield _tracked(i, seen)
            # back here, the value just yielded must be stored and dropped already: that is
            # the page's point (peak heap is one value, not num_returns of them)
            freed.append(seen[-1]() is None)
        yield freed

    *values, freed = large_values_generator.remote()
    assert [int(ray.get(v)[0]) for v in values] == [0, 1, 2]
    assert ray.get(freed) == [True, True, True]


def test_generator_yielding_another_count_than_num_returns(cluster):
    @ray.remote(num_returns=3)
    def too_few():
        yield "a"
        yield "b"

    @ray.remote(num_returns=2)
    def too_many():
        yield from range(5)

    @ray.remote(num_returns=3)
    def fails_midway():
        yield "a"
        raise KeyError("boom")

    # As in Ray: what was yielded is kept, the missing ones fail
    a, b, c = too_few.remote()
    assert ray.get([a, b]) == ["a", "b"]
    with pytest.raises(ValueError, match=r"returned 2 .*num_returns=3"):
        ray.get(c)
    # the first num_returns values are the results (Ray only logs the extra ones)
    assert ray.get(too_many.remote()) == [0, 1]
    a, b, c = fails_midway.remote()
    assert ray.get(a) == "a"
    for ref in (b, c):
        with pytest.raises(KeyError):
            ray.get(ref)


# --- Anti-pattern: closure capturing large objects ------------------------------------------------
def test_large_objects_by_closure_by_put_or_made_inside(cluster):
    large_object = np.zeros(1024 * 1024)   # 8 MB

    @ray.remote
    def f1():
        return len(large_object)   # travels with f1

    large_object_ref = ray.put(np.zeros(1024 * 1024))

    @ray.remote
    def f2(large_object):
        return len(large_object)

    large_object_creator = lambda: np.zeros(1024 * 1024)  # noqa: E731

    @ray.remote
    def f3():
        return len(large_object_creator())

    assert ray.get([f1.remote(), f2.remote(large_object_ref), f3.remote()]) == [1024 * 1024] * 3


def test_a_lone_call_of_a_function_with_a_large_closure_runs(cluster, tmp_path):
    # Lone calls go to a leased worker directly; a call that carries an 8 MB function does not
    # fit that socket at once, and must still arrive, while the driver waits or does other things.
    @ray.remote
    def small():
        return 1

    large_object = np.zeros(1024 * 1024)
    done = tmp_path / "done"

    @ray.remote
    def f1():
        done.write_text("ran")
        return len(large_object)

    for _ in range(3):
        assert ray.get(small.remote()) == 1   # (the lease)
    assert ray.get(f1.remote(), timeout=20) == 1024 * 1024

    large_object = np.ones(1024 * 1024)   # another closure: f1 travels again
    done.unlink()
    assert ray.get(small.remote()) == 1
    ref = f1.remote()
    assert wait_for(done.exists, timeout=20)   # no get() yet
    assert ray.get(ref) == 1024 * 1024


# --- Anti-pattern: passing the same large argument by value repeatedly --------------------------
def test_a_large_argument_by_value_or_by_put(cluster):
    @ray.remote
    def func(large_arg, i):
        return len(large_arg) + i

    large_arg = np.zeros(256 * 1024)   # 2 MB
    by_value = ray.get([func.remote(large_arg, i) for i in range(4)])
    large_arg_ref = ray.put(large_arg)
    by_ref = ray.get([func.remote(large_arg_ref, i) for i in range(4)])
    assert by_value == by_ref == [256 * 1024 + i for i in range(4)]


# --- Anti-pattern: serializing ray.ObjectRef out of band ----------------------------------------
def test_out_of_band_ref_serialization(cluster):
    @ray.remote
    def by_pickle():
        return pickle.dumps(ray.put(1))   # invisible to the runtime: the object is freed

    @ray.remote
    def by_ray_cloudpickle():
        from rayfast import cloudpickle
        return cloudpickle.dumps(ray.put(2))   # pinned for the life of this worker

    with pytest.raises(GetTimeoutError):
        ray.get(pickle.loads(ray.get(by_pickle.remote())), timeout=0.5)
    assert ray.get(pickle.loads(ray.get(by_ray_cloudpickle.remote())), timeout=10) == 2

    # RAY_allow_out_of_band_object_ref_serialization=0 makes it an error, for finding the culprit
    forbidden = by_ray_cloudpickle.options(
        runtime_env={"env_vars": {"RAY_allow_out_of_band_object_ref_serialization": "0"}})
    with pytest.raises(ray.exceptions.OufOfBandObjectRefSerializationException,
                       match="not allowed to serialize"):
        ray.get(forbidden.remote())

    # the driver's own: pinned for the life of the driver, however its refs come and go
    from rayfast import cloudpickle
    ref = ray.put("driver's")
    blob = cloudpickle.dumps(ref)
    del ref
    assert ray.get(cloudpickle.loads(blob), timeout=10) == "driver's"
