"""Messages between the node manager and the processes it serves.

Every process talks to its node manager over one Unix stream socket. A
frame is a 4-byte little-endian length followed by one pickle of a *list*
of message tuples: senders batch everything they have into one frame, so a
burst of 10,000 submissions costs a handful of syscalls and one pickle call
per batch rather than per message. Tuples of bytes/ints/strs pickle and
unpickle in C, which keeps Python off the per-message path as far as it can.
"""
import pickle
import select
import socket
import struct

_HDR = struct.Struct("<I")
# recv(n) allocates n bytes before it reads: a large n costs an mmap and page
# faults on every call. 64 KiB stays on the malloc heap; bigger frames take
# a few reads.
RECV_SIZE = 1 << 16
_dumps = pickle.dumps
_loads = pickle.loads

# --- client -> node manager -------------------------------------------------
HELLO = 1          # (HELLO, kind, pid, worker_id)
SUBMIT = 2         # (SUBMIT, spec)
EXPORT = 3         # (EXPORT, function_id, pickled)
PUT = 4            # (PUT, oid, kind, data, contained)
GET = 5            # (GET, oids)         subscribe: the node manager answers OBJ as each is ready
REFS = 6           # (REFS, added, released)
DONE = 7           # (DONE, handle, results)     results: tuple of (oid, kind, data, contained)
BLOCKED = 8        # (BLOCKED,)  the worker's running task waits in get(): give its CPU back
UNBLOCKED = 9      # (UNBLOCKED,)
CANCEL = 10        # (CANCEL, oid, force, recursive)
REQUEST = 11       # (REQUEST, req_id, what, args)
KILL_ACTOR = 12    # (KILL_ACTOR, actor_id, no_restart)
LEASE_REQUEST = 15 # (LEASE_REQUEST, shape)   a driver asks for a worker of its own (see rayfast/direct.py)
LEASE_RETURN = 16  # (LEASE_RETURN, worker_id)
DIRECT_DONE = 17   # (DIRECT_DONE, spec, results, start, end, worker_id, pid)  a task run on a lease
PIN = 18           # (PIN, oids)  a leased worker's results contain these refs: hold them for the result
RETURN = 14        # (RETURN, handles)  queued tasks a worker hands back unstarted (it blocked, or they were cancelled)
METRICS = 19       # (METRICS, records)  application metric updates, summed per series since the last (rayfast/node/metrics_table.py)
# --- node manager <-> node manager (rayfast/node/peers.py, rayfast/node/object_transfer.py) -------------
# A link is a TCP connection framed as above, opened by the node that forwards tasks over it, which
# says (HELLO, "peer", None, None, False, node_id, address) and then is a client of the other node:
# SUBMIT, EXPORT, REFS and CANCEL as a driver's, plus OBJ both ways for an object's value (INLINE,
# ERROR) or its size when it is in the sender's store (STORE: pull it). A pull is a TCP connection
# of its own: (PULL, oid) in one frame, answered by an 8-byte size (-1: not here) and the raw bytes.
PULL = 30          # (PULL, oid)
# --- node manager -> client -------------------------------------------------
OBJ = 20           # (OBJ, oid, kind, data)
TASK = 21          # (TASK, handle, spec, resolved, function)   resolved: tuple of (oid, kind, data)
REPLY = 22         # (REPLY, req_id, value)
EXIT = 23          # (EXIT,)
WELCOME = 24       # (WELCOME, info)
LEASE_GRANT = 26   # (LEASE_GRANT, worker_id, pid, socket_path, shape)
LEASE_DENIED = 27  # (LEASE_DENIED,)
LEASE_REVOKE = 28  # (LEASE_REVOKE, worker_id)   give it back once the task in flight is done
CANCEL_QUEUED = 25 # (CANCEL_QUEUED, handle)  drop this task if it has not started; answer RETURN
CANCEL_CALL = 29   # (CANCEL_CALL, task_id)  to an actor or a task's worker (or over a channel): cancel that call or task (ActorTaskExecutor.cancel_call)

# Object kinds, as carried in OBJ / PUT / DONE.
INLINE = 0         # data: serialized bytes
STORE = 1          # data: size in bytes; the value is in the node's shared-memory store
ERROR = 2          # data: serialized exception (RayTaskError, WorkerCrashedError, ...)
LOCAL = 3          # in TASK's resolved only: data None; a result of a task queued before this one on
                   # the same worker, which keeps the results of its last PIPELINE_DEPTH tasks
                   # (a worker that no longer has it hands the task back: RETURN)

PIPELINE_DEPTH = 16 # tasks queued on one worker at most (rayfast/node/manager.py)

# Task spec: a tuple, indexed by these constants (tuples pickle fastest).
S_TASK_ID = 0      # bytes(16)
S_KIND = 1         # TASK_NORMAL / TASK_ACTOR_CREATE / TASK_ACTOR_METHOD
S_FUNCTION_ID = 2  # bytes
S_NAME = 3         # str, for errors and the timeline
S_PAYLOAD = 4      # bytes: pickled (args, kwargs) with top-level refs replaced by None
S_ARG_REFS = 5     # tuple of (position: int | str, oid: bytes)  top-level refs, resolved before running
S_BORROWED = 6     # tuple of oid: refs nested inside the arguments (counted, not resolved)
S_NUM_RETURNS = 7  # int
S_RESOURCES = 8    # tuple of (name, amount), sorted
S_MAX_RETRIES = 9  # int
S_ACTOR_ID = 10    # bytes or None
S_METHOD = 11      # str or None (actor method name)
S_OPTIONS = 12     # dict or None: rarely used extras (actor options, names, ...)

TASK_NORMAL = 0
TASK_ACTOR_CREATE = 1
TASK_ACTOR_METHOD = 2


_INDEX = [i.to_bytes(4, "little") for i in range(64)]
_INDEX_FROM_1 = _INDEX[1:]
_INDEX_1 = _INDEX[1]


def return_id(task_id, i):
    """The id of a task's i-th return value (1-based): the task id and a 4-byte index,
    as rf_object_id in csrc/ids.c builds it; so object -> producing task is a slice."""
    return task_id + (_INDEX[i] if i < 64 else i.to_bytes(4, "little"))


def return_ids(task_id, n):
    # (every task has these built at submission and when it is done: keep it cheap)
    if n == 1:
        return [task_id + _INDEX_1]   # (without a comprehension: a third of the time)
    if n < 64:
        return [task_id + x for x in _INDEX_FROM_1[:n]]
    return [return_id(task_id, i) for i in range(1, n + 1)]


class ConnectionClosed(Exception):
    pass


def encode(messages):
    data = _dumps(messages, 5)
    return _HDR.pack(len(data)) + data


class Connection:
    """A blocking, batching message channel used by drivers and workers."""

    __slots__ = ("sock", "_out", "_rbuf")

    def __init__(self, sock):
        self.sock = sock
        self._out = []
        self._rbuf = b""

    def fileno(self):
        return self.sock.fileno()

    def send(self, msg):
        self._out.append(msg)

    def has_pending(self):
        return bool(self._out)

    def flush(self):
        if self._out:
            out, self._out = self._out, []
            self.sock.sendall(encode(out))

    def recv(self, timeout=None):
        """Messages of every complete frame available; waits up to timeout for the first one.

        Returns [] on timeout; raises ConnectionClosed when the peer is gone.
        """
        msgs = self._parse()
        if msgs:
            return msgs
        sock = self.sock
        while True:
            if timeout is not None:
                r, _, _ = select.select((sock,), (), (), max(timeout, 0))
                if not r:
                    return []
            try:
                chunk = sock.recv(RECV_SIZE)
            except ConnectionError:   # (a peer killed with unread bytes resets the socket)
                chunk = b""
            if not chunk:
                raise ConnectionClosed("node manager connection closed")
            self._rbuf += chunk
            msgs = self._parse()
            if msgs:
                return msgs
            if timeout is not None:
                timeout = 0.5 if timeout <= 0 else timeout  # a frame is mid-flight: finish reading it

    def _parse(self):
        buf = self._rbuf
        if len(buf) < 4:
            return None
        msgs = None
        pos = 0
        n = len(buf)
        while n - pos >= 4:
            (length,) = _HDR.unpack_from(buf, pos)
            if n - pos - 4 < length:
                break
            batch = _loads(buf[pos + 4:pos + 4 + length])
            if msgs is None:
                msgs = batch
            else:
                msgs.extend(batch)
            pos += 4 + length
        if pos:
            self._rbuf = buf[pos:]
        return msgs

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def recv_ready(sock, n):
    """What a non-blocking socket that polled readable has for us: up to n bytes, b"" once it
    closed or broke, or None when nothing is there after all (EAGAIN, EINTR)."""
    try:
        return sock.recv(n)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""


def connect(path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    return Connection(sock)
