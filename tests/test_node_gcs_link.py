"""rayfast.node.gcs_link: what the node manager writes to the GCS without waiting."""
import collections
import os
import pickle

import hiredis

from rayfast.gcs.client import shard_for
from rayfast.node.gcs_link import NodeGcs, _AsyncShard


def _Shard():
    return _AsyncShard(None)   # its buffers only


def _spec(i):
    return (os.urandom(16), 0, b"fid", "f", os.urandom(i), (), (), 1, (("CPU", 1.0),), 3, None, None, None)


def test_lineage_is_one_mset_per_shard_of_pickled_specs():
    g = NodeGcs.__new__(NodeGcs)   # its buffers only: no shard connections
    g.shards, g.dirty, g._tasks, g._dropped = [_Shard(), _Shard()], set(), {}, []
    specs = [_spec(i) for i in range(60)]
    for spec in specs:
        g.put_task_async(spec)
    g.pack_tasks()
    for i, sh in enumerate(g.shards):
        args = ["MSET"]
        for spec in specs:
            if shard_for(spec[0], 2) == i:
                args += [b"task:" + spec[0], pickle.dumps(spec, 5)]
        assert len(args) > 1 and sh.pending == 1
        assert b"".join(sh.out) == hiredis.pack_command(tuple(args))
        reader = hiredis.Reader()
        reader.feed(b"".join(sh.out))
        cmd = reader.gets()
        assert [pickle.loads(v) for v in cmd[2::2]] == [s for s in specs if shard_for(s[0], 2) == i]
    assert g.dirty == set(g.shards) and not g._tasks


def test_commands_as_hiredis_packs_them():
    from rayfast.node.gcs_link import _command
    for args in [("SET", b"fn:\x00\xff", b"\r\n" * 3, "NX"), ("LTRIM", "events", -20000, -1),
                 ("RPUSH", "events", '[{"name":"f\\u00e9"}]' + "é" * 10), ("PING",)]:
        assert _command(args) == hiredis.pack_command(args)


def test_pack_tasks_packs_at_most_limit():
    g = NodeGcs.__new__(NodeGcs)
    g.shards, g.dirty, g._tasks, g._dropped = [_Shard()], set(), {}, []
    specs = [_spec(i) for i in range(10)]
    for spec in specs:
        g.put_task_async(spec)
    g.pack_tasks(4)
    assert list(g._tasks.values()) == specs[4:] and g.shards[0].pending == 1
    g.pack_tasks()
    assert g.queued() == 0 and g.shards[0].pending == 2


def test_dropped_lineage_is_forgotten_if_unwritten_else_deleted_after_its_write():
    g = NodeGcs.__new__(NodeGcs)
    g.shards, g.dirty, g._tasks, g._dropped = [_Shard(), _Shard()], set(), {}, []
    g._shard = lambda key: shard_for(key, 2)
    written, unwritten = _spec(1), _spec(2)
    g.put_task_async(written)
    g.pack_tasks()
    g.put_task_async(unwritten)
    g.drop_task_async(unwritten[0])    # still queued: never written at all
    g.drop_task_async(written[0])      # written: one DEL, on its shard, after its MSET
    assert g.queued() == 1
    g.pack_tasks()
    assert g.queued() == 0
    sh = g.shards[shard_for(written[0], 2)]
    reader = hiredis.Reader()
    reader.feed(b"".join(sh.out))
    cmds = [reader.gets(), reader.gets()]
    assert cmds[0][0] == b"MSET" and cmds[0][1] == b"task:" + written[0]
    assert cmds[1] == [b"DEL", b"task:" + written[0]] and reader.gets() is False
    other = g.shards[1 - shard_for(written[0], 2)]
    assert b"".join(other.out).count(b"MSET") == 0 and b"".join(other.out).count(unwritten[0]) == 0


def test_lineage_and_events_reach_the_gcs(cluster):
    """What the node holds back while busy is written once it is idle."""
    import time

    import rayfast as ray
    from rayfast import core_worker
    from rayfast.gcs.tables import Gcs

    @ray.remote
    def noop(i):
        return i

    refs = [noop.remote(i) for i in range(3000)]
    assert ray.get(refs) == list(range(3000))
    gcs = Gcs(core_worker.current().node_info["gcs_addresses"], background_flush=False)
    try:
        deadline = time.time() + 10
        while time.time() < deadline:
            spec = gcs.get_task(refs[-1].task_id().binary())
            events = {e["task_id"] for e in gcs.get_events()}
            if spec is not None and refs[-1].task_id().hex() in events:
                break
            time.sleep(0.05)
        assert pickle.loads(spec)[3].endswith("noop")
        assert {r.task_id().hex() for r in refs} <= events
        # Lineage lives as long as what the task returned: gone once the refs are dropped.
        kept = refs[-1].task_id().binary()
        held = noop.remote(-1)
        ray.get(held)
        del refs
        ray.get(noop.remote(0))   # the drops reach the node
        deadline = time.time() + 10
        while gcs.get_task(kept) is not None and time.time() < deadline:
            time.sleep(0.05)
        assert gcs.get_task(kept) is None
        while gcs.get_task(held.task_id().binary()) is None and time.time() < deadline:
            time.sleep(0.05)
        assert gcs.get_task(held.task_id().binary()) is not None
    finally:
        gcs.close()


def test_shard_output_survives_partial_sends():
    import socket

    from rayfast.node.gcs_link import _AsyncShard

    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    a.setblocking(False)
    sh = _AsyncShard.__new__(_AsyncShard)
    sh.sock, sh.sent = a, 0
    sh.out = collections.deque()
    chunks = [os.urandom(n) for n in (10, 70_000, 3, 50_000)] * 300
    sh.out.extend(chunks)
    want = b"".join(chunks)
    got = bytearray()
    b.setblocking(False)
    while sh.out:
        sh.send()
        while True:
            try:
                got += b.recv(1 << 20)
            except BlockingIOError:
                break
    while len(got) < len(want):
        got += b.recv(1 << 20)
    assert bytes(got) == want and sh.sent == len(want)
    a.close()
    b.close()
