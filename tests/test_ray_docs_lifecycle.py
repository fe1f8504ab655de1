"""Lifecycle, failure handling and clean-up as Ray documents them (init errors, drivers that leave
a cluster, workers' child processes, the node's start-up errors)."""
import os
import time

import pytest

import rayfast

from conftest import alive, run_driver, wait_for

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
        time.sleep(0.5)
        print(rayfast.available_resources().get("CPU", 0.0))
    """)
    assert p.returncode == 0, p.stderr
    assert float(p.stdout.split()[-1]) == 0.0   # its tasks did hold both CPUs
    assert wait_for(lambda: rayfast.available_resources().get("CPU") == 2.0, timeout=5)
    t = time.monotonic()
    pids = rayfast.get([sleepy.remote(0.5) for _ in range(2)], timeout=20)
    assert len(set(pids)) == 2 and time.monotonic() - t < 5   # both workers free, side by side


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
    ctx = rayfast.init(num_cpus=1, object_store_memory=64 << 20)   # and a good value still works
    assert rayfast.get(sleepy.remote(0)) > 0
    rayfast.shutdown()
