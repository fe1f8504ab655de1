"""A task waiting on direct actor calls, and store puts whose announcement waits for company.

A worker task's get() of results coming over its own actor channel tells the
node manager it is blocked only after core_worker.BLOCK_AFTER (most such
waits end sooner); a put into the store is announced with the next message
or the flush timer's. Neither may cost a CPU that a waiting task needs, or
leave a reader waiting for an object the node manager has not heard of.
"""
import time

import numpy as np
import pytest

import rayfast
from rayfast import core_worker
from rayfast.actor_channel import OPEN


@pytest.fixture
def one_cpu(fresh):
    rayfast.init(num_cpus=1)
    yield
    rayfast.shutdown()


@rayfast.remote
def inner(x):
    return x + 1


@rayfast.remote
class Relay:
    def ping(self):
        return 1

    def run_inner(self, x):
        # needs the node's only CPU, which the calling task holds while it waits for us
        return rayfast.get(inner.remote(x))

    def total(self, boxed):
        return float(rayfast.get(boxed[0]).sum())

    def slow(self, delay):
        time.sleep(delay)
        return delay


def _channel_open(handle):
    ac = core_worker.current().actor_channels
    ch = ac.chans.get(handle._aid) if ac is not None else None
    return ch is not None and ch.state == OPEN


@rayfast.remote
def outer(relay, n):
    deadline = time.monotonic() + 10
    while not _channel_open(relay):   # the first call goes through the node manager
        assert time.monotonic() < deadline, "the channel never opened"
        rayfast.get(relay.ping.remote())
    # quick calls over the channel: no BLOCKED/UNBLOCKED needed
    assert sum(rayfast.get(relay.ping.remote()) for _ in range(n)) == n
    # a call that needs our CPU: it comes free once the wait outlasts BLOCK_AFTER
    return rayfast.get(relay.run_inner.remote(41))


def test_task_waiting_on_a_channel_call_lends_its_cpu(one_cpu):
    relay = Relay.options(num_cpus=0).remote()
    assert rayfast.get(outer.remote(relay, 50), timeout=30) == 42


@rayfast.remote
def put_and_pass(relay, n):
    out = []
    for i in range(n):
        ref = rayfast.put(np.full(200_000, float(i)))   # a store object (over the inline limit)
        out.append(rayfast.get(relay.total.remote([ref]), timeout=20))   # nested: the actor asks the node
    return out


def test_put_ref_passed_nested_over_a_channel(cluster):
    relay = Relay.remote()
    rayfast.get([relay.ping.remote() for _ in range(3)])
    assert rayfast.get(put_and_pass.remote(relay, 5), timeout=60) == [200_000.0 * i for i in range(5)]


def test_put_announced_while_a_callback_reader_waits(cluster):
    relay, sleeper = Relay.remote(), Relay.remote()
    for h in (relay, sleeper):
        deadline = time.monotonic() + 10
        while not _channel_open(h):
            assert time.monotonic() < deadline, "the channel never opened"
            rayfast.get(h.ping.remote())
    # A reader thread waits for this callback meanwhile: nothing comes for 5 s, and the put's
    # announcement must not wait for it (the flush timer sends it).
    slow = sleeper.slow.remote(5.0).future()
    time.sleep(0.1)   # (whatever the flush timer had to send has gone)
    ref = rayfast.put(np.ones(200_000))
    assert rayfast.get(relay.total.remote([ref]), timeout=3) == 200_000.0
    assert slow.result(timeout=20) == 5.0
