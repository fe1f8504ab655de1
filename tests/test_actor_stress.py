"""A seeded mixed load from four driver threads at once: bursts of actor calls, large replies,
async calls cancelled in flight, tasks calling the actor, kills with restarts, leased tasks.

Nothing may hang, and no error other than RayActorError (a kill) or TaskCancelledError (a
cancel) may reach a caller. It found a stream corrupted by unlocked writes, a leftover result
that a retry could not replace, and a select on a lease another thread had closed.
"""
import asyncio
import random
import threading

import pytest

import rayfast as ray

pytestmark = pytest.mark.usefixtures("cluster")


@ray.remote(max_restarts=-1, max_task_retries=-1)
class Acc:
    def __init__(self):
        self.n = 0

    def add(self, k):
        self.n += k
        return self.n

    def big(self, n):
        return b"x" * n


@ray.remote
class Sleeper:
    async def sleep(self, t):
        await asyncio.sleep(t)
        return t

    async def blob(self, n):
        return b"y" * n


@ray.remote
def call_actor(a, n):
    return len(ray.get([a.add.remote(1) for _ in range(n)]))


@ray.remote
def square(x):
    return x * x


def _one_thread(a, s, seed, iterations, errors):
    rnd = random.Random(seed)
    for _ in range(iterations):
        op = rnd.random()
        try:
            if op < 0.25:
                ray.get([a.add.remote(1) for _ in range(rnd.randint(1, 300))], timeout=60)
            elif op < 0.4:
                sizes = [rnd.choice([10, 50_000, 200_000]) for _ in range(rnd.randint(1, 10))]
                assert [len(b) for b in ray.get([a.big.remote(n) for n in sizes], timeout=60)] == sizes
            elif op < 0.55:
                refs = [s.sleep.remote(rnd.random() * 0.02) for _ in range(rnd.randint(1, 30))]
                for r in refs[::3]:
                    ray.cancel(r)
                for r in refs:
                    try:
                        ray.get(r, timeout=60)
                    except ray.exceptions.TaskCancelledError:
                        pass
            elif op < 0.65:
                n = rnd.randint(1, 50)
                assert ray.get(call_actor.remote(a, n), timeout=60) == n
            elif op < 0.7:
                ray.kill(a, no_restart=False)
            elif op < 0.85:
                x = rnd.randint(0, 100)
                assert ray.get(square.remote(x), timeout=60) == x * x
            else:
                sizes = [rnd.choice([10, 300_000]) for _ in range(rnd.randint(1, 10))]
                assert [len(b) for b in ray.get([s.blob.remote(n) for n in sizes], timeout=60)] == sizes
        except ray.exceptions.RayActorError:
            pass   # a call in flight when its actor was killed (with restarts left it may also succeed)
        except Exception as e:  # anything else is a bug
            errors.append(repr(e))


def test_mixed_concurrent_load_from_four_threads():
    a, s = Acc.remote(), Sleeper.remote()
    errors = []
    threads = [threading.Thread(target=_one_thread, args=(a, s, seed, 80, errors)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    assert not any(t.is_alive() for t in threads), "a caller hung"
    assert errors == []
