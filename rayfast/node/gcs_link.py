"""The node manager's side of the GCS: what it records there, never waited for.

The node manager is a single-threaded event loop, so its writes to the GCS
(lineage of every task, exported functions, timeline events) must not cost
it a round trip, nor a flusher thread competing for the GIL. Each shard
gets one extra non-blocking connection owned by the loop: commands are
packed into an output buffer, sent when the socket takes them, and the
replies are read and counted (errors logged) when they come back. The
synchronous `Gcs` tables client is kept for the rare calls that need an
answer.
"""
import collections
import itertools
import json
import logging
import pickle
import socket

import hiredis

from rayfast.gcs.client import parse_address, shard_for
from rayfast.protocol import RECV_SIZE, S_TASK_ID, recv_ready
from rayfast.gcs.tables import Gcs

logger = logging.getLogger(__name__)
MAX_EVENTS = 200_000         # timeline events kept in the GCS (about: it keeps batches)
_IOV_MAX = 512               # buffers per sendmsg (the kernel takes 1024)
_TASK_PAIR = b"$%d\r\ntask:%b\r\n$%d\r\n%b\r\n"   # a task's key and spec in an MSET (RESP)
# One timeline event as JSON (floats' repr is valid JSON for the finite times here).
_EVENT = '{"name":%s,"task_id":"%s","worker":%d,"pid":%d,"start":%r,"end":%r,"node":"%NODE"}'


def _command(args):
    """A command (str, bytes or int arguments) as RESP, the bytes hiredis.pack_command makes.
    Written by hand: pack_command took ~0.75 us per argument and ~1.4 ms per MB of a long one
    (a flush's timeline events), 3 and 50 times this."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, int):
            a = b"%d" % a
        out.append(b"$%d\r\n%b\r\n" % (len(a), a))
    return b"".join(out)


class _AsyncShard:
    __slots__ = ("sock", "out", "reader", "pending", "errors", "sent", "want_write", "issued", "answered",
                 "reads")

    def __init__(self, address):
        """address None: the buffers only, no connection (tests of the packing)."""
        self.sock = None
        if address is not None:
            family, addr = parse_address(address)
            self.sock = socket.socket(family, socket.SOCK_STREAM)
            self.sock.connect(addr)
            self.sock.setblocking(False)
        # Commands not yet sent, as a queue of buffers: appending to one bytearray that the
        # shard drains from the front moved megabytes per append while the shard lagged.
        self.out = collections.deque()
        self.reader = hiredis.Reader()
        self.pending = 0
        self.errors = 0
        self.sent = 0
        self.want_write = False
        # Replies come in command order: a read's callback waits for the reply of its number.
        self.issued = self.answered = 0
        self.reads = collections.deque()   # (command number, callback(reply))

    def queue(self, command, callback=None):
        if callback is not None:
            self.reads.append((self.issued, callback))
        self.out.append(command)
        self.issued += 1
        self.pending += 1

    def send(self):
        """Write what the socket takes now (OSError if the connection is gone)."""
        out = self.out
        try:
            n = self.sock.sendmsg(list(itertools.islice(out, _IOV_MAX)))
        except (BlockingIOError, InterruptedError):
            return
        self.sent += n
        while n:
            first = out[0]
            if len(first) <= n:
                n -= len(first)
                out.popleft()
            else:
                out[0] = memoryview(first)[n:]
                n = 0

    def send_all(self):
        self.sock.setblocking(True)
        try:
            self.sock.sendall(b"".join(self.out))
        except OSError:
            pass
        self.out.clear()


class NodeGcs:
    def __init__(self, addresses):
        self.addresses = list(addresses)
        self.gcs = Gcs(addresses, background_flush=False)
        self._shard = self.gcs.client.shard_index
        self.shards = [_AsyncShard(a) for a in self.addresses]
        self.by_fd = {s.sock.fileno(): s for s in self.shards}
        self.dirty = set()
        self._tasks = {}                # task id -> spec, not yet packed
        self._dropped = []              # task ids whose lineage is to be deleted
        self._json_names = {}           # function name -> its JSON string, for events
        self._events_written = self._batches_written = 0

    # --- writes (buffered) -------------------------------------------------
    def write(self, key, *args):
        sh = self.shards[self._shard(key)]
        sh.queue(_command(args))
        self.dirty.add(sh)

    def read_all_shards(self, commands, callback):
        """Send commands to every shard without waiting; callback(per shard: its replies) once
        every reply is in (never, if a shard's connection is lost)."""
        got = [None] * len(self.shards)
        left = [len(self.shards) * len(commands)]

        def reply(i, j):
            def on_reply(r):
                if got[i] is None:
                    got[i] = [None] * len(commands)
                got[i][j] = r
                left[0] -= 1
                if not left[0]:
                    callback(got)
            return on_reply

        for i, sh in enumerate(self.shards):
            for j, c in enumerate(commands):
                sh.queue(_command(c), reply(i, j))
            self.dirty.add(sh)

    def export_function_async(self, function_id, pickled):
        self.write(function_id, "SET", b"fn:" + function_id, pickled, "NX")

    def put_task_async(self, spec):
        # Batched into one MSET per shard per flush: the shard's per-command cost dominates SETs.
        self._tasks[spec[S_TASK_ID]] = spec

    def drop_task_async(self, task_id):
        """Delete a task's lineage (nothing it returned is left): a spec not written yet
        is never written; a written one goes in one DEL per shard per flush."""
        if self._tasks.pop(task_id, None) is None:
            self._dropped.append(task_id)

    def add_events_async(self, node_id, events):
        # One JSON array per batch: one list element per write (get_events flattens). Written
        # by hand: json.dumps of a dict per event cost the node manager more than the task did.
        event = _EVENT.replace("%NODE", node_id.hex())
        names = self._json_names
        parts = []
        append = parts.append
        for name, tid, wid, pid, start, end in events:
            jname = names.get(name)
            if jname is None:
                jname = names[name] = json.dumps(name)
            append(event % (jname, tid.hex(), wid, pid, start, end))
        self.write(node_id, "RPUSH", "events", "[" + ",".join(parts) + "]")
        # A long-running cluster keeps only its newest ~MAX_EVENTS events. The list holds
        # batches (one event when idle, thousands in a burst), so the batches kept follow
        # this node's mean batch size.
        self._events_written += len(events)
        self._batches_written += 1
        keep = max(100, MAX_EVENTS * self._batches_written // self._events_written)
        self.write(node_id, "LTRIM", "events", -keep, -1)

    def register_node(self, node_id, info):
        self.gcs.register_node(node_id, info)

    # --- the loop's side -------------------------------------------------
    def queued(self):
        """Lineage writes and deletions not packed yet."""
        return len(self._tasks) + len(self._dropped)

    def pack_tasks(self, limit=None):
        """Pack the queued specs (the first `limit` of them) into one MSET per shard, and
        the lineage deletions into one DEL per shard. A deletion is of a spec packed in an
        earlier flush (one still queued is just forgotten): on the same connection, after it."""
        self._pack_drops()
        tasks = self._tasks
        if not tasks:
            return
        if limit is not None and len(tasks) > limit:
            tasks = [tasks.pop(k) for k in list(itertools.islice(tasks, limit))]
        else:
            tasks, self._tasks = list(tasks.values()), {}
        dumps = pickle.dumps
        n = len(self.shards)
        pairs = [[] for _ in self.shards]   # per shard: each task's key and value, as RESP
        for spec in tasks:
            task_id = spec[S_TASK_ID]
            value = dumps(spec, 5)
            pairs[shard_for(task_id, n) if n > 1 else 0].append(
                _TASK_PAIR % (len(task_id) + 5, task_id, len(value), value))
        for sh, p in zip(self.shards, pairs):
            if p:
                sh.queue(b"*%d\r\n$4\r\nMSET\r\n" % (1 + 2 * len(p)) + b"".join(p))
                self.dirty.add(sh)

    def _pack_drops(self):
        dropped = self._dropped
        if not dropped:
            return
        self._dropped = []
        keys = [[] for _ in self.shards]
        for task_id in dropped:
            keys[self._shard(task_id)].append(b"task:" + task_id)
        for sh, k in zip(self.shards, keys):
            if k:
                sh.queue(_command(["DEL"] + k))
                self.dirty.add(sh)

    def send_some(self, limit=None):
        """Pack up to `limit` queued specs and write what the sockets take now; returns the
        shards that still have output."""
        self.pack_tasks(limit)
        blocked = []
        for sh in self.dirty:
            try:
                sh.send()
            except OSError as e:
                logger.error("GCS shard connection lost (%s); %d writes dropped", e, sh.pending)
                sh.errors += sh.pending
                sh.out.clear()
                continue
            if sh.out:
                blocked.append(sh)
        self.dirty = set(blocked)
        return blocked

    def on_readable(self, sh):
        data = recv_ready(sh.sock, RECV_SIZE)
        if not data:   # (None: nothing after all; b"": closed)
            return
        sh.reader.feed(data)
        while True:
            reply = sh.reader.gets()
            if reply is False:
                break
            sh.pending -= 1
            n = sh.answered
            sh.answered = n + 1
            if isinstance(reply, hiredis.ReplyError):
                sh.errors += 1
                logger.warning("GCS write failed: %s", reply)
            if sh.reads and sh.reads[0][0] == n:
                sh.reads.popleft()[1](reply)

    def fds(self):
        return list(self.by_fd) + self.gcs_fds()

    def gcs_fds(self):
        out = []
        for sh in self.gcs.client._shards:
            sock = getattr(sh.conn, "sock", None)
            if sock is not None:
                out.append(sock.fileno())
        return out

    def flush_blocking(self):
        """At shutdown: push out everything still buffered."""
        self.pack_tasks()
        for sh in self.shards:
            if sh.out:
                sh.send_all()

    def statistics(self):
        return {"async_pending": sum(s.pending for s in self.shards),
                "async_errors": sum(s.errors for s in self.shards),
                "async_bytes_sent": sum(s.sent for s in self.shards),
                "client": self.gcs.statistics()}

    def close(self):
        self.flush_blocking()
        for sh in self.shards:
            sh.sock.close()
        try:
            self.gcs.close()
        except Exception:
            pass
