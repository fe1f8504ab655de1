"""More of Ray's documented API: ray.util.multiprocessing.Pool, runtime_context().is_canceled(),
ObjectRef's job_id/owner_address/call_site, NodeLabelSchedulingStrategy, remote tracebacks."""
import itertools
import os
import time
from multiprocessing import TimeoutError

import pytest

import rayfast
from rayfast.util.multiprocessing import Pool


def _square(x):
    return x * x


def _add(a, b):
    return a + b


def _fail_at_3(x):
    if x == 3:
        raise KeyError(x)
    return x


def _sleep(x):
    time.sleep(x)
    return x


def _set_env(v):
    os.environ["POOL_INIT"] = str(v)


def _read_env(_):
    return os.environ.get("POOL_INIT"), os.getpid()


# --- multiprocessing.Pool -------------------------------------------------------------------
def test_pool_api_as_stdlib(cluster):
    with Pool(2, initializer=_set_env, initargs=(7,)) as pool:
        assert pool.map(_square, range(10)) == [x * x for x in range(10)]
        assert pool.map(_square, range(10), chunksize=3) == [x * x for x in range(10)]
        assert pool.map(_square, []) == []
        assert pool.starmap(_add, [(1, 2), (3, 4)]) == [3, 7]
        assert pool.starmap_async(_add, [(1, 2)], chunksize=1).get() == [3]
        assert pool.apply(_add, (1, 2)) == 3
        assert pool.apply(_add, (1,), {"b": 5}) == 6
        assert pool.apply(_add, (1,), kwargs={"b": 6}) == 7          # Ray's keyword
        assert list(pool.imap(_square, iter(range(7)), chunksize=2)) == [x * x for x in range(7)]
        assert sorted(pool.imap_unordered(_square, range(5))) == [x * x for x in range(5)]
        seen = pool.map(_read_env, range(8), chunksize=1)
        assert {v for v, _ in seen} == {"7"} and len({pid for _, pid in seen}) == 2   # two processes, initialized
    with pytest.raises(ValueError, match="Pool not running"):
        pool.map(_square, [1])


def test_pool_errors_are_the_originals(cluster):
    with Pool(2) as pool:
        with pytest.raises(KeyError) as info:
            pool.map(_fail_at_3, range(6))
        # as multiprocessing: the remote traceback is the cause, naming the user's function
        assert "_fail_at_3" in str(info.value.__cause__)
        it = pool.imap(_fail_at_3, range(6))
        out = []
        while True:
            try:
                out.append(next(it))
            except StopIteration:
                break
            except KeyError as e:
                out.append(("failed", e.args))
        assert out == [0, 1, 2, ("failed", (3,)), 4, 5]
        with pytest.raises(KeyError):
            pool.apply(_fail_at_3, (3,))


def test_pool_async_results(cluster):
    with Pool(2) as pool:
        r = pool.apply_async(_sleep, (0.4,))
        assert not r.ready()
        with pytest.raises(TimeoutError):
            r.get(timeout=0.05)
        with pytest.raises(ValueError, match="not ready"):
            r.successful()
        r.wait()
        assert r.ready() and r.successful() and r.get() == 0.4
        got, errors = [], []
        r = pool.map_async(_square, range(4), callback=got.append)
        r.wait(timeout=10)
        assert got == [[0, 1, 4, 9]]     # called before the result is ready, as the stdlib's
        r = pool.map_async(_fail_at_3, range(5), error_callback=errors.append)
        r.wait(timeout=10)
        assert r.ready() and not r.successful()
        assert len(errors) == 1 and isinstance(errors[0], KeyError)
        it = pool.imap(_sleep, [0.4])
        with pytest.raises(TimeoutError):
            it.next(timeout=0.05)
        assert it.next() == 0.4


def test_pool_bad_input(cluster):
    with pytest.raises(ValueError, match="at least 1"):
        Pool(0)
    with pytest.raises(ValueError, match="only 2 CPUs"):
        Pool(3)
    with pytest.raises(TypeError, match="initializer"):
        Pool(1, initializer=5)
    with pytest.raises(ValueError, match="maxtasksperchild"):
        Pool(1, maxtasksperchild=0)
    with Pool(1) as pool:
        with pytest.raises(ValueError, match="Chunksize"):
            pool.map(_square, range(3), chunksize=0)
        with pytest.raises(ValueError, match="Chunksize"):
            pool.imap(_square, range(3), chunksize=0)
        with pytest.raises(TypeError, match="callable"):
            pool.apply(5)
        with pytest.raises(ValueError, match="still running"):
            pool.join()


def test_pool_lifecycle(cluster):
    pool = Pool(2, maxtasksperchild=1)
    pids = {pid for _, pid in pool.map(_read_env, range(4), chunksize=1)}
    assert len(pids) == 4          # a new process after each task (chunk)
    slow = pool.map_async(_sleep, [0.2, 0.2])
    endless = pool.imap(_square, itertools.islice(itertools.count(), 20))
    pool.close()                   # outstanding work, all of the imap included, still finishes
    pool.join()
    assert slow.get(timeout=10) == [0.2, 0.2]
    assert list(endless) == [x * x for x in range(20)]

    pool = Pool(2)
    pending = pool.apply_async(_sleep, (30,))
    pool.terminate()               # the stdlib would leave `pending` waiting for ever
    pool.join()
    with pytest.raises(rayfast.exceptions.RayActorError):
        pending.get(timeout=10)


def _exit_process(_):
    os._exit(1)


def test_pool_process_death_raises(cluster):
    with Pool(1) as pool:
        with pytest.raises(rayfast.exceptions.RayActorError):
            pool.map(_exit_process, [1], chunksize=1)
