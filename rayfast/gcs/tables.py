"""The cluster's tables on top of GcsClient.

Key layout (every key is prefixed by its table; an ID-keyed entry lives on
the shard of its ID, chosen by `GcsClient.shard_index(id)`):

  fn:<function_id>        string   pickled function (SET NX: first export wins)
  task:<task_id>          string   task spec (lineage)
  obj:<object_id>         hash     node_id -> size (bytes of decimal)
  node:info / node:hb / node:load / node:dead
                          hashes, one set per shard, field = node_id
                          (get_nodes reads 4 hashes per shard in one
                          pipelined round trip per shard, all shards at once)
  actor:<actor_id>        hash     field -> JSON value
  names:<namespace>       hash     name -> actor_id, on the shard of the namespace
  events                  list     JSON events, one list per shard
  kv:<key>                string   on the shard of the key

Dicts are stored as JSON; `bytes` values inside them round-trip (encoded as
{"__b": "<hex>"}), so IDs can be put in node/actor info directly.
"""
from __future__ import annotations

import itertools
import json
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence

from .client import GcsClient, ReplyError
from .pubsub import Subscriber

__all__ = ["Gcs", "Subscriber", "NODE_DEATH_CHANNEL", "object_channel", "dumps", "loads"]

NODE_DEATH_CHANNEL = "node_death"
OBJECT_READY_PREFIX = "obj_ready:"


def object_channel(object_id: bytes) -> str:
    return OBJECT_READY_PREFIX + object_id.hex()


def _default(o):
    if isinstance(o, (bytes, bytearray, memoryview)):
        return {"__b": bytes(o).hex()}
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    raise TypeError(f"not JSON-serializable for the GCS: {type(o).__name__}")


def _hook(d):
    if len(d) == 1 and "__b" in d:
        return bytes.fromhex(d["__b"])
    return d


def dumps(obj) -> bytes:
    return json.dumps(obj, default=_default, separators=(",", ":")).encode()


def loads(data):
    if data is None:
        return None
    return json.loads(data, object_hook=_hook)


# What get_nodes reads on every shard (the node manager sends the same without waiting:
# rayfast/node/peers.py), and how the replies make the node list.
NODE_TABLE_COMMANDS = [("HGETALL", "node:info"), ("HGETALL", "node:hb"), ("HGETALL", "node:load"),
                       ("HGETALL", "node:dead")]


def parse_nodes(shard_replies, heartbeat_timeout: Optional[float] = None) -> List[dict]:
    """The node list from each shard's replies to NODE_TABLE_COMMANDS: each node's info dict plus
    node_id, last_heartbeat, load, alive, death_time."""
    now = time.time()
    out = []
    for replies in shard_replies:
        info, hb, load, dead = (_pairs(r) for r in replies)
        for node_id, raw in info.items():
            d = loads(raw)
            if not isinstance(d, dict):
                d = {"info": d}
            last = float(hb[node_id]) if node_id in hb else None
            d["node_id"] = node_id
            d["last_heartbeat"] = last
            d["load"] = loads(load.get(node_id))
            d["death_time"] = float(dead[node_id]) if node_id in dead else None
            alive = node_id not in dead
            if alive and heartbeat_timeout is not None:
                alive = last is not None and now - last <= heartbeat_timeout
            d["alive"] = alive
            out.append(d)
    return out


def _s(x) -> bytes:
    return x.encode() if isinstance(x, str) else bytes(x)


class Gcs:
    """Tables of the cluster.  `Gcs(addresses)` or `Gcs(client=GcsClient(...))`."""

    def __init__(self, addresses: Optional[Sequence[str]] = None, *, client: Optional[GcsClient] = None,
                 **client_kwargs):
        if client is None:
            if addresses is None:
                raise ValueError("Gcs needs addresses or a client")
            client = GcsClient(addresses, **client_kwargs)
        self.client = client
        self.addresses = client.addresses
        self.num_shards = client.num_shards
        self._shard = client.shard_index
        self._event_rr = itertools.count()

    # ------------------------------------------------------------------ functions

    def export_function(self, function_id: bytes, pickled: bytes) -> bool:
        """Store once (SET NX), synchronously; True if this call stored it."""
        return self.client.write(self._shard(function_id), "SET", b"fn:" + function_id, pickled, "NX") == b"OK"

    def get_function(self, function_id: bytes) -> Optional[bytes]:
        return self.client.execute(self._shard(function_id), "GET", b"fn:" + function_id)

    # ------------------------------------------------------------------ tasks (lineage)

    def put_task_async(self, task_id: bytes, spec: bytes) -> None:
        self.client.write_async(self._shard(task_id), "SET", b"task:" + task_id, spec)

    def put_task(self, task_id: bytes, spec: bytes) -> None:
        self.client.write(self._shard(task_id), "SET", b"task:" + task_id, spec)

    def get_task(self, task_id: bytes) -> Optional[bytes]:
        return self.client.execute(self._shard(task_id), "GET", b"task:" + task_id)

    # ------------------------------------------------------------------ objects

    def add_object_location_async(self, object_id: bytes, node_id: bytes, size: int,
                                  publish: bool = False) -> None:
        """Record that node_id holds object_id; publish=True also sends an object-ready notice
        on `object_channel(object_id)` (message = node_id)."""
        shard = self._shard(object_id)
        self.client.write_async(shard, "HSET", b"obj:" + object_id, node_id, int(size))
        if publish:
            ch = object_channel(object_id).encode()
            self.client.write_async(self._shard(ch), "PUBLISH", ch, node_id)

    def add_object_location(self, object_id: bytes, node_id: bytes, size: int) -> None:
        self.client.write(self._shard(object_id), "HSET", b"obj:" + object_id, node_id, int(size))

    def remove_object_location_async(self, object_id: bytes, node_id: bytes) -> None:
        self.client.write_async(self._shard(object_id), "HDEL", b"obj:" + object_id, node_id)

    def get_object_locations(self, object_id: bytes) -> Dict[bytes, int]:
        r = self.client.execute(self._shard(object_id), "HGETALL", b"obj:" + object_id)
        return {r[i]: int(r[i + 1]) for i in range(0, len(r), 2)}

    def get_object_locations_many(self, object_ids: Sequence[bytes]) -> List[Dict[bytes, int]]:
        """Locations of many objects: one pipelined round trip per shard, shards in parallel."""
        by_shard: Dict[int, List[int]] = {}
        for i, oid in enumerate(object_ids):
            by_shard.setdefault(self._shard(oid), []).append(i)
        replies = self.client.execute_all(
            {s: [("HGETALL", b"obj:" + object_ids[i]) for i in idx] for s, idx in by_shard.items()})
        out: List[Dict[bytes, int]] = [{} for _ in object_ids]
        for s, idx in by_shard.items():
            for i, r in zip(idx, replies[s]):
                out[i] = {r[j]: int(r[j + 1]) for j in range(0, len(r), 2)}
        return out

    def delete_object_async(self, object_id: bytes) -> None:
        self.client.write_async(self._shard(object_id), "DEL", b"obj:" + object_id)

    # ------------------------------------------------------------------ nodes

    def register_node(self, node_id: bytes, info: dict) -> None:
        now = repr(time.time())
        self.client.write_many(self._shard(node_id), [
            ("HSET", "node:info", node_id, dumps(info)),
            ("HSET", "node:hb", node_id, now),
            ("HDEL", "node:dead", node_id),
        ])

    def heartbeat_async(self, node_id: bytes, load: Optional[dict] = None) -> None:
        shard = self._shard(node_id)
        self.client.write_async(shard, "HSET", "node:hb", node_id, repr(time.time()))
        if load is not None:
            self.client.write_async(shard, "HSET", "node:load", node_id, dumps(load))

    def mark_node_dead(self, node_id: bytes, publish: bool = True) -> None:
        """Mark dead (synchronously) and publish node_id on NODE_DEATH_CHANNEL."""
        self.client.write(self._shard(node_id), "HSET", "node:dead", node_id, repr(time.time()))
        if publish:
            self.publish(NODE_DEATH_CHANNEL, node_id)

    def get_nodes(self, heartbeat_timeout: Optional[float] = None) -> List[dict]:
        """Every registered node: its info dict plus node_id, last_heartbeat, load, alive, death_time.

        alive = not marked dead (and, if heartbeat_timeout is given, heard from within it).
        """
        replies = self.client.execute_all({s: NODE_TABLE_COMMANDS for s in range(self.num_shards)})
        return parse_nodes([replies[s] for s in range(self.num_shards)], heartbeat_timeout)

    # ------------------------------------------------------------------ actors

    def put_actor(self, actor_id: bytes, info: dict) -> None:
        key = b"actor:" + actor_id
        cmds = [("DEL", key)]
        if info:
            flat = []
            for k, v in info.items():
                flat += [k, dumps(v)]
            cmds.append(("HSET", key, *flat))
        # MULTI/EXEC: readers never see the entry half-replaced.
        self.client.write_many(self._shard(actor_id), [("MULTI",), *cmds, ("EXEC",)])

    def get_actor(self, actor_id: bytes) -> Optional[dict]:
        r = self.client.execute(self._shard(actor_id), "HGETALL", b"actor:" + actor_id)
        if not r:
            return None
        return {r[i].decode(): loads(r[i + 1]) for i in range(0, len(r), 2)}

    def update_actor_async(self, actor_id: bytes, fields: dict) -> None:
        if not fields:
            return
        flat = []
        for k, v in fields.items():
            flat += [k, dumps(v)]
        self.client.write_async(self._shard(actor_id), "HSET", b"actor:" + actor_id, *flat)

    def update_actor(self, actor_id: bytes, fields: dict) -> None:
        if not fields:
            return
        flat = []
        for k, v in fields.items():
            flat += [k, dumps(v)]
        self.client.write(self._shard(actor_id), "HSET", b"actor:" + actor_id, *flat)

    def delete_actor_async(self, actor_id: bytes) -> None:
        self.client.write_async(self._shard(actor_id), "DEL", b"actor:" + actor_id)

    def register_name(self, namespace: str, name: str, actor_id: bytes) -> Optional[bytes]:
        """Atomically claim (namespace, name).  None if claimed by this call, else the holder's id."""
        key = b"names:" + _s(namespace)
        r = self.client.write_many(self._shard(_s(namespace)),
                                   [("MULTI",), ("HSETNX", key, _s(name), actor_id), ("HGET", key, _s(name)),
                                    ("EXEC",)])
        won, holder = r[-1]
        return None if won == 1 else holder

    def lookup_name(self, namespace: str, name: str) -> Optional[bytes]:
        return self.client.execute(self._shard(_s(namespace)), "HGET", b"names:" + _s(namespace), _s(name))

    def unregister_name(self, namespace: str, name: str) -> None:
        self.client.write(self._shard(_s(namespace)), "HDEL", b"names:" + _s(namespace), _s(name))

    def list_named_actors(self, namespace: str) -> List[str]:
        r = self.client.execute(self._shard(_s(namespace)), "HKEYS", b"names:" + _s(namespace))
        return sorted(x.decode() for x in r)

    # ------------------------------------------------------------------ events (timeline)

    def add_events_async(self, events: List[dict], node_id: Optional[bytes] = None) -> None:
        """Append JSON events to one shard's `events` list (the node's shard, else round robin)."""
        if not events:
            return
        shard = self._shard(node_id) if node_id is not None else next(self._event_rr) % self.num_shards
        self.client.write_async(shard, "RPUSH", "events", *[dumps(e) for e in events])

    def get_events(self) -> List[dict]:
        """All events from all shards (shard order, then insertion order)."""
        replies = self.client.execute_all({s: [("LRANGE", "events", 0, -1)] for s in range(self.num_shards)})
        out = []
        for s in range(self.num_shards):
            for x in replies[s][0]:
                ev = loads(x)
                if isinstance(ev, list):   # a batch: one JSON array per write
                    out.extend(ev)
                else:
                    out.append(ev)
        return out

    def clear_events(self) -> None:
        self.client.execute_all({s: [("DEL", "events")] for s in range(self.num_shards)})

    # ------------------------------------------------------------------ kv

    def kv_put(self, key: str, value: bytes, overwrite: bool = True) -> bool:
        k = b"kv:" + _s(key)
        args = ("SET", k, value) if overwrite else ("SET", k, value, "NX")
        return self.client.write(self._shard(k), *args) == b"OK"

    def kv_get(self, key: str) -> Optional[bytes]:
        k = b"kv:" + _s(key)
        return self.client.execute(self._shard(k), "GET", k)

    def kv_del(self, key: str) -> bool:
        k = b"kv:" + _s(key)
        return self.client.write(self._shard(k), "DEL", k) == 1

    def kv_keys(self, prefix: str = "") -> List[str]:
        pat = b"kv:" + _s(prefix).replace(b"*", b"\\*") + b"*"
        replies = self.client.execute_all({s: [("KEYS", pat)] for s in range(self.num_shards)})
        return sorted(k[3:].decode() for s in replies for k in replies[s][0])

    # ------------------------------------------------------------------ pub/sub

    def publish(self, channel: str, message: bytes) -> int:
        """Publish on the shard of the channel name; returns the receiver count."""
        ch = _s(channel)
        return self.client.execute(self._shard(ch), "PUBLISH", ch, message)

    def publish_async(self, channel: str, message: bytes) -> None:
        ch = _s(channel)
        self.client.write_async(self._shard(ch), "PUBLISH", ch, message)

    def subscriber(self, channels: Iterable = (), callback: Optional[Callable[[str, bytes], None]] = None,
                   **kw) -> Subscriber:
        return Subscriber(self.addresses, channels, callback, **kw)

    # ------------------------------------------------------------------ misc

    def flush(self, wait: bool = True) -> int:
        return self.client.flush(wait)

    def statistics(self) -> dict:
        st = self.client.statistics()
        try:
            sizes = self.client.execute_all({s: [("DBSIZE",)] for s in range(self.num_shards)})
            st["keys_per_shard"] = [sizes[s][0] for s in range(self.num_shards)]
        except (ConnectionError, ReplyError):
            st["keys_per_shard"] = None
        return st

    def close(self) -> None:
        self.client.close()


def read_once(addresses: Sequence[str], read: Callable[["Gcs"], object], **client_kwargs):
    """read(gcs) over a connection made for it alone and closed after, whatever
    happens (an error closing it is dropped: read's answer or error is what counts)."""
    gcs = Gcs(addresses, background_flush=False, **client_kwargs)
    try:
        return read(gcs)
    finally:
        try:
            gcs.close()
        except Exception:
            pass


def _pairs(r) -> dict:
    return {r[i]: r[i + 1] for i in range(0, len(r), 2)}
