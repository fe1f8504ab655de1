"""Microbenchmarks of the runtime's other paths, in the spirit of `ray microbenchmark`.

The headline workloads (bench/workloads.py) time what the issues set targets
for. These time the rest of what Ray's own microbenchmark suite looks at, so a
path that is slow shows up side by side with Ray: puts from many clients,
objects holding many refs, tasks submitted from several actors at once,
threaded and async actors, one client calling many actors and many calling
many, and placement groups made and removed. No targets: the table shows the
ratio.

Every case is a function `case(ray, quick) -> operations per second`, using only
numpy and `ray`, its remote code defined inside it (pickled by value, so Ray's
workers import nothing from this repository). Sizes follow Ray's suite, scaled
down where Ray's would move gigabytes on a two-core machine.
"""
import os
import time

import numpy as np

N_CPU = max(1, (os.cpu_count() or 2) // 2)   # actors per "n" side, as Ray's suite


def _rate(ops, fn, reps=3):
    """Best of reps of ops / seconds for fn() (first one more run as warm-up)."""
    fn()
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = max(best, ops / (time.perf_counter() - t))
    return best


def _actors(ray):
    @ray.remote
    class Actor:
        def small_value(self):
            return b"ok"

        def small_value_arg(self, x):
            return b"ok"

        def small_value_batch(self, n):
            @ray.remote
            def small():
                return b"ok"
            ray.get([small.remote() for _ in range(n)])

    @ray.remote
    class AsyncActor:
        async def small_value(self):
            return b"ok"

        async def small_value_arg(self, x):
            return b"ok"

    @ray.remote
    class Client:
        def __init__(self, servers):
            self.servers = servers if isinstance(servers, list) else [servers]

        def small_value_batch(self, n):
            ray.get([s.small_value.remote() for s in self.servers for _ in range(n)])

        def small_value_batch_arg(self, n):
            x = ray.put(0)
            ray.get([s.small_value_arg.remote(x) for s in self.servers for _ in range(n)])

    return Actor, AsyncActor, Client


def multi_put_small(ray, quick):
    @ray.remote
    def puts(n):
        for _ in range(n):
            ray.put(0)

    return _rate(10 * 100, lambda: ray.get([puts.remote(100) for _ in range(10)]))


def multi_put_large(ray, quick):
    """GB/s of 80 MB arrays put by several tasks at once."""
    tasks, each = (2, 2) if quick else (4, 4)

    @ray.remote
    def puts(n):
        for _ in range(n):
            ray.put(np.zeros(10 * 1024 * 1024, dtype=np.int64))

    return _rate(tasks * each * 80 * 1024 * 1024 / 1e9, lambda: ray.get([puts.remote(each) for _ in range(tasks)]),
                 reps=2)


def get_10k_refs(ray, quick):
    """Gets per second of one object holding 10,000 refs."""
    @ray.remote
    def holder():
        return [ray.put(i) for i in range(10_000)]

    ref = holder.remote()
    assert len(ray.get(ref)) == 10_000
    n = 5 if quick else 20

    def run():
        for _ in range(n):
            ray.get(ref)
    return _rate(n, run)


def multi_client_tasks(ray, quick):
    Actor, _, _ = _actors(ray)
    n, m = (1000, 4) if quick else (2500, 4)
    clients = [Actor.remote() for _ in range(m)]
    return _rate(n * m, lambda: ray.get([c.small_value_batch.remote(n) for c in clients]))


def _batched_calls(ray, actor, n=1000):
    return _rate(n, lambda: ray.get([actor.small_value.remote() for _ in range(n)]))


def actor_concurrent(ray, quick):
    Actor, _, _ = _actors(ray)
    return _batched_calls(ray, Actor.options(max_concurrency=16).remote())


def actor_1_to_n(ray, quick):
    Actor, _, Client = _actors(ray)
    n = 1000 if quick else 5000
    client = Client.remote([Actor.remote() for _ in range(N_CPU)])
    return _rate(n * N_CPU, lambda: ray.get(client.small_value_batch.remote(n)))


def _n_to_n(ray, actor_class, quick):
    n, m = (1000, 4) if quick else (5000, 4)
    servers = [actor_class.remote() for _ in range(N_CPU)]

    @ray.remote
    def work(servers):
        ray.get([servers[i % len(servers)].small_value.remote() for i in range(n)])

    return _rate(n * m, lambda: ray.get([work.remote(servers) for _ in range(m)]))


def actor_n_to_n(ray, quick):
    return _n_to_n(ray, _actors(ray)[0], quick)


def actor_n_to_n_arg(ray, quick):
    Actor, _, Client = _actors(ray)
    n = 300 if quick else 1000
    clients = [Client.remote(Actor.remote()) for _ in range(N_CPU)]
    return _rate(n * len(clients), lambda: ray.get([c.small_value_batch_arg.remote(n) for c in clients]))


def async_actor_sync(ray, quick):
    _, AsyncActor, _ = _actors(ray)
    a = AsyncActor.remote()
    n = 500 if quick else 2000

    def run():
        for _ in range(n):
            ray.get(a.small_value.remote())
    return _rate(n, run)


def async_actor_batched(ray, quick):
    return _batched_calls(ray, _actors(ray)[1].remote())


def async_actor_args(ray, quick):
    a = _actors(ray)[1].remote()
    return _rate(1000, lambda: ray.get([a.small_value_arg.remote(i) for i in range(1000)]))


def async_actor_1_to_n(ray, quick):
    _, AsyncActor, Client = _actors(ray)
    n = 1000 if quick else 5000
    client = Client.remote([AsyncActor.remote() for _ in range(N_CPU)])
    return _rate(n * N_CPU, lambda: ray.get(client.small_value_batch.remote(n)))


def async_actor_n_to_n(ray, quick):
    return _n_to_n(ray, _actors(ray)[1], quick)


def pg_create_remove(ray, quick):
    """Placement groups (one small CPU bundle each) made, waited for and removed, per second."""
    n = 100

    def run():
        pgs = [ray.util.placement_group([{"CPU": 0.001}]) for _ in range(n)]
        for pg in pgs:
            assert pg.wait(timeout_seconds=30)
        for pg in pgs:
            ray.util.remove_placement_group(pg)
    return _rate(n, run)


# name -> (label, unit, case)
CASES = {
    "micro_multi_put_small": ("puts of 0 from 10 tasks at once", "puts/s", multi_put_small),
    "micro_multi_put_large": ("puts of 80 MB from several tasks at once", "GB/s", multi_put_large),
    "micro_get_10k_refs": ("get an object holding 10k refs", "gets/s", get_10k_refs),
    "micro_multi_client_tasks": ("tasks submitted by 4 actors at once", "tasks/s", multi_client_tasks),
    "micro_actor_concurrent": ("calls to a max_concurrency=16 actor, batched", "calls/s", actor_concurrent),
    "micro_actor_1_to_n": ("one actor calling n actors", "calls/s", actor_1_to_n),
    "micro_actor_n_to_n": ("4 tasks calling n actors", "calls/s", actor_n_to_n),
    "micro_actor_n_to_n_arg": ("n actors each calling one, with a ref argument", "calls/s", actor_n_to_n_arg),
    "micro_async_actor_sync": ("async actor calls, one at a time", "calls/s", async_actor_sync),
    "micro_async_actor_batched": ("async actor calls, batched", "calls/s", async_actor_batched),
    "micro_async_actor_args": ("async actor calls with an argument, batched", "calls/s", async_actor_args),
    "micro_async_actor_1_to_n": ("one actor calling n async actors", "calls/s", async_actor_1_to_n),
    "micro_async_actor_n_to_n": ("4 tasks calling n async actors", "calls/s", async_actor_n_to_n),
    "micro_pg_create_remove": ("placement groups made and removed", "groups/s", pg_create_remove),
}
