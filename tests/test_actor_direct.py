"""Direct actor calls (rayfast/actor_channel.py): callers talk to the actor's process over a channel.

Ordering with many callers, head-of-line waiting for unready ref arguments,
death mid-stream with and without restarts, kill, handles dropped with calls
in flight, async and threaded actors, and results used by other tasks.
"""
import asyncio
import os
import time

import numpy as np
import pytest

import rayfast
from rayfast import core_worker
from rayfast.actor_channel import OPEN
from rayfast.exceptions import RayActorError


pytestmark = pytest.mark.usefixtures("cluster")   # conftest: init(num_cpus=2), leak check after


@rayfast.remote
class Log:
    def __init__(self):
        self.log = []
        self.n = 0

    def record(self, caller, i):
        self.log.append((caller, i))
        return i

    def add(self, k=1):
        self.n += k
        return self.n

    def get_log(self):
        return self.log

    def pid(self):
        return os.getpid()

    def die_at(self, i, k):
        if i == k:
            os._exit(1)
        self.n += 1
        return i

    def big(self, n):
        return np.arange(n, dtype=np.float64)

    def total(self, arr):
        return float(arr.sum())


@rayfast.remote
def slow_value(v, delay):
    time.sleep(delay)
    return v


@rayfast.remote
def plus_one(x):
    return x + 1


def _channel_state(handle):
    ac = core_worker.current().actor_channels
    ch = ac.chans.get(handle._aid) if ac is not None else None
    return None if ch is None else ch.state


def _open_channel(handle):
    """Make calls until this process's channel to the actor is open (the switch takes one call)."""
    deadline = time.monotonic() + 10
    while _channel_state(handle) != OPEN:
        assert time.monotonic() < deadline, "the channel never opened"
        rayfast.get(handle.pid.remote())


def test_calls_go_over_the_channel():
    a = Log.remote()
    _open_channel(a)
    n = rayfast.get(a.add.remote())
    assert rayfast.get([a.add.remote() for _ in range(1000)]) == list(range(n + 1, n + 1001))
    ac = core_worker.current().actor_channels
    assert ac.statistics()["channels"] >= 1
    # the node manager recorded them afterwards (DIRECT_DONE): statistics and timeline know the calls
    deadline = time.monotonic() + 5
    while core_worker.current().request("summary").get("Log.add", {}).get("finished", 0) < 1001:
        assert time.monotonic() < deadline, core_worker.current().request("summary")
        time.sleep(0.02)


def test_switch_keeps_order_of_a_burst():
    """Calls before, during and after the switch to the channel run in submission order."""
    a = Log.remote()
    refs = [a.record.remote("d", i) for i in range(3000)]
    rayfast.get(refs)
    refs = [a.record.remote("d", i) for i in range(3000, 6000)]
    rayfast.get(refs)
    assert _channel_state(a) == OPEN
    assert rayfast.get(a.get_log.remote()) == [("d", i) for i in range(6000)]


def test_ordering_with_many_callers():
    a = Log.remote()

    @rayfast.remote
    def caller(h, name, n):
        out = []
        for i in range(n):
            out.append(h.record.remote(name, i))
            if i % 50 == 0:
                rayfast.get(out[-1])   # mix waits into the stream
        return rayfast.get(out)[-1]

    tasks = [caller.remote(a, f"t{k}", 400) for k in range(6)]
    mine = [a.record.remote("driver", i) for i in range(400)]
    assert rayfast.get(tasks) == [399] * 6
    rayfast.get(mine)
    log = rayfast.get(a.get_log.remote())
    per = {}
    for who, i in log:
        per.setdefault(who, []).append(i)
    assert set(per) == {"driver"} | {f"t{k}" for k in range(6)}
    for who, seq in per.items():
        assert seq == list(range(400)), who


def test_unready_ref_argument_holds_later_calls():
    a = Log.remote()
    _open_channel(a)
    slow = slow_value.remote("slow", 0.5)
    r1 = a.record.remote("x", slow)       # waits in the caller for its argument
    r2 = a.record.remote("x", 1)          # ready, but must run after r1
    r3 = a.record.remote("x", 2)
    assert rayfast.get([r1, r2, r3], timeout=20) == ["slow", 1, 2]
    assert rayfast.get(a.get_log.remote()) == [("x", "slow"), ("x", 1), ("x", 2)]


def test_unready_ref_without_get_is_still_sent():
    """Nobody calls get(): the queued calls still go out once the argument arrives."""
    a = Log.remote()
    _open_channel(a)
    a.record.remote("y", slow_value.remote(0, 0.2))
    a.record.remote("y", 1)
    time.sleep(1.0)
    assert rayfast.get(a.get_log.remote()) == [("y", 0), ("y", 1)]


def test_failed_ref_argument_fails_the_call_only():
    @rayfast.remote
    def boom():
        raise ValueError("nope")

    a = Log.remote()
    _open_channel(a)
    bad = a.record.remote("z", boom.remote())
    good = a.record.remote("z", 7)
    with pytest.raises(ValueError, match="nope"):
        rayfast.get(bad)
    assert rayfast.get(good) == 7
    assert rayfast.get(a.get_log.remote()) == [("z", 7)]


def test_results_usable_by_other_tasks_and_processes():
    a = Log.remote()
    _open_channel(a)
    r = a.add.remote(41)
    assert rayfast.get(plus_one.remote(r)) == 42   # submitted before r's result reached us
    b = Log.remote()
    assert rayfast.get(b.record.remote("w", a.add.remote(1))) == 42

    @rayfast.remote
    def read_inside(refs):
        return rayfast.get(refs[0])

    r2 = a.add.remote(1)
    rayfast.get(r2)
    assert rayfast.get(read_inside.remote([r2])) == 43


def test_large_arguments_and_results():
    a = Log.remote()
    _open_channel(a)
    arr = np.ones(1_000_000)
    assert rayfast.get(a.total.remote(arr)) == 1_000_000.0
    big = rayfast.get(a.big.remote(500_000))
    assert big.shape == (500_000,) and big[-1] == 499_999
    ref = a.big.remote(300_000)
    assert rayfast.get(a.total.remote(ref)) == float(np.arange(300_000).sum())


def test_death_mid_stream_without_restarts():
    a = Log.remote()
    _open_channel(a)
    refs = [a.die_at.remote(i, 50) for i in range(200)]
    for i in range(50):
        assert rayfast.get(refs[i], timeout=20) == i
    for r in refs[50:]:
        with pytest.raises(RayActorError):
            rayfast.get(r, timeout=20)
    with pytest.raises(RayActorError):
        rayfast.get(a.add.remote(), timeout=20)


@rayfast.remote(max_restarts=2, max_task_retries=-1)
class Flaky:
    def __init__(self):
        self.n = 0

    def step(self, i, crash_file):
        # dies once (the first time it reaches i == 40), then runs normally on the new process
        if i == 40 and not os.path.exists(crash_file):
            open(crash_file, "w").close()
            os._exit(1)
        self.n += 1
        return i

    def pid(self):
        return os.getpid()


def test_retried_calls_complete_after_restart(tmp_path):
    a = Flaky.remote()
    _open_channel(a)
    crash = str(tmp_path / "crashed")
    refs = [a.step.remote(i, crash) for i in range(120)]
    assert rayfast.get(refs, timeout=30) == list(range(120))
    assert os.path.exists(crash)


def test_in_flight_calls_fail_without_task_retries(tmp_path):
    a = Flaky.options(max_task_retries=0).remote()
    _open_channel(a)
    crash = str(tmp_path / "crashed")
    refs = [a.step.remote(i, crash) for i in range(80)]
    ok, failed = [], []
    for i, r in enumerate(refs):
        try:
            ok.append(rayfast.get(r, timeout=30))
        except RayActorError:
            failed.append(i)
    assert ok[:40] == list(range(40))
    assert 40 in failed
    # the restarted actor serves new calls
    assert rayfast.get(a.step.remote(1, crash), timeout=30) == 1


def test_kill_mid_stream():
    a = Log.remote()
    _open_channel(a)
    refs = [a.add.remote() for _ in range(100)]
    rayfast.kill(a)
    after = a.add.remote()
    with pytest.raises(RayActorError):
        rayfast.get(after, timeout=20)
    done = 0
    for r in refs:
        try:
            rayfast.get(r, timeout=20)
            done += 1
        except RayActorError:
            pass
    assert 0 <= done <= 100


def test_kill_with_restart_keeps_order():
    a = Log.options(max_restarts=1).remote()
    _open_channel(a)
    pid = rayfast.get(a.pid.remote())
    rayfast.kill(a, no_restart=False)
    out = [a.record.remote("k", i) for i in range(200)]
    got = []
    for r in out:
        try:
            got.append(rayfast.get(r, timeout=30))
        except RayActorError:
            pass
    assert got == sorted(got)
    assert rayfast.get(a.pid.remote(), timeout=30) != pid


def test_dropping_the_handle_with_calls_in_flight():
    a = Log.remote()
    _open_channel(a)
    pid = rayfast.get(a.pid.remote())
    refs = [a.add.remote() for _ in range(2000)]
    del a
    assert rayfast.get(refs, timeout=30)[-1] == 2000
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ", 1)[1][0] == "Z":
                    break
        except OSError:
            break
        time.sleep(0.02)
    else:
        pytest.fail("the actor outlived its last handle")


def test_named_detached_actor_from_a_task():
    a = Log.options(name="direct-named", lifetime="detached").remote()
    _open_channel(a)

    @rayfast.remote
    def use(n):
        h = rayfast.get_actor("direct-named")
        return rayfast.get([h.record.remote("task", i) for i in range(n)])[-1]

    assert rayfast.get(use.remote(300)) == 299
    assert rayfast.get(use.remote(300)) == 299   # the worker's channel is reused
    rayfast.get(a.record.remote("driver", 0))
    log = rayfast.get(a.get_log.remote())
    assert [i for w, i in log if w == "task"] == list(range(300)) * 2
    rayfast.kill(a)


def test_async_and_threaded_actors():
    @rayfast.remote
    class AsyncA:
        def __init__(self):
            self.n = 0

        async def inc(self):
            await asyncio.sleep(0)
            self.n += 1
            return self.n

    @rayfast.remote(max_concurrency=4)
    class Threaded:
        def work(self, i):
            time.sleep(0.001)
            return i

    x = AsyncA.remote()
    _open_channel_for = [x.inc.remote() for _ in range(3)]
    rayfast.get(_open_channel_for)
    rayfast.get(x.inc.remote())
    assert sorted(rayfast.get([x.inc.remote() for _ in range(500)]))[-1] == 504
    t = Threaded.remote()
    rayfast.get(t.work.remote(0))
    rayfast.get(t.work.remote(0))
    assert rayfast.get([t.work.remote(i) for i in range(200)]) == list(range(200))


def test_actor_calls_actor_directly():
    a = Log.remote()

    @rayfast.remote
    class Front:
        def __init__(self, back):
            self.back = back

        def relay(self, n):
            return rayfast.get([self.back.add.remote() for _ in range(n)])[-1]

    f = Front.remote(a)
    assert rayfast.get(f.relay.remote(100)) == 100
    assert rayfast.get(f.relay.remote(100)) == 200
    assert rayfast.get(a.add.remote()) == 201


def test_futures_and_await_of_direct_results():
    a = Log.remote()
    _open_channel(a)
    fut = a.add.remote(5).future()
    assert fut.result(timeout=10) == 5

    async def main():
        return await a.add.remote(1)

    assert asyncio.run(main()) == 6


@rayfast.remote
class Stamper:
    def stamp(self, i):
        return time.time(), "x" * 2000   # 2 KB replies: a few hundred fill a socket

    def pid(self):
        return os.getpid()


def test_actor_runs_on_while_the_caller_does_not_read():
    # Neither end blocks writing: with the caller busy elsewhere, the actor still runs
    # every call sent to it, its replies waiting in its buffer (not after the caller reads).
    a = Stamper.remote()
    _open_channel(a)
    refs = [a.stamp.remote(i) for i in range(3000)]
    time.sleep(1.5)
    woke = time.time()
    stamps = [t for t, _ in rayfast.get(refs, timeout=60)]
    assert stamps == sorted(stamps)
    assert stamps[-1] < woke, f"the last call ran {stamps[-1] - woke:.3f} s after the caller read again"


def test_results_dropped_before_their_report_leave_nothing_at_the_node():
    # The caller reports direct calls afterwards; a result it dropped by then is reported as
    # not held, and the node manager keeps nothing for it (not even briefly).
    a = Log.remote()
    _open_channel(a)
    cw = core_worker.current()

    def freed_total():
        cw.flush()
        return cw.request("statistics")["objects"]["freed_total"]

    before = freed_total()
    for _ in range(300):
        rayfast.get(a.add.remote())
    kept = a.add.remote()              # still held when its report leaves: registered as usual
    assert rayfast.get(kept) == 301
    assert freed_total() - before < 30   # (a few may be reported while still held)
    stats = cw.request("statistics")["objects"]
    assert stats["ready"] >= 1
    assert rayfast.get(plus_one.remote(kept)) == 302


@rayfast.remote
class AsyncBig:
    async def blob(self, i):
        return i, "x" * 10_000

    def pid(self):
        return os.getpid()


def test_async_actor_replies_reach_a_caller_that_reads_late():
    # Replies written by the actor's event-loop thread that the socket cannot take wait in a
    # buffer; they must still be pushed once the caller reads, though the actor's reader
    # thread is waiting on the channel for calls, not for writability (the flush timer does).
    a = AsyncBig.remote()
    _open_channel(a)
    refs = [a.blob.remote(i) for i in range(400)]   # ~4 MB of replies: more than a socket holds
    time.sleep(0.5)
    out = rayfast.get(refs, timeout=30)
    assert [i for i, _ in out] == list(range(400))


def test_dropping_the_handle_with_a_backlog_unsent():
    # So many calls that some still wait in this process's buffer when the handle goes: each
    # call holds the actor alive until its result is back, so all of them run.
    a = Log.remote()
    _open_channel(a)
    refs = [a.add.remote() for _ in range(20000)]
    del a
    assert rayfast.get(refs, timeout=60)[-1] == 20000
