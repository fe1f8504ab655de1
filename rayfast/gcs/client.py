"""Sharded, pipelined GCS client: RESP over plain sockets, parsed by hiredis.

One connection per shard, guarded by a per-shard lock; every request to a
shard holds that lock from send to the last reply, so replies never mix.

Hot-path writes go through `write_async`: the command is packed in the
caller's thread and appended to a per-shard buffer (no I/O, ~1 us).  A
background flusher thread wakes when a buffer becomes non-empty, waits
`flush_interval` to let a batch build up, and sends each shard's buffer as
one pipelined write, then reads all replies.  A synchronous request to a
shard first drains that shard's buffer in the same round trip, so a process
always reads its own async writes ("read your writes" per client).

Errors in async writes are never raised to the writer (it is long gone):
they are logged, counted per shard in `statistics()`, kept in
`recent_errors`, and passed to `on_error` if given.

Replication: with `wait_replicas=k` (the shards have replicas), every
synchronous write made with `write()`/`write_many()` and every async batch
is followed by `WAIT k wait_timeout_ms` in the same pipeline, so the write is
acknowledged only once a replica has it.  For async batches this costs the
flusher thread a replica round trip, never the writer.

Reconnect: a broken connection is reopened once and the request re-sent
(pipelines of idempotent SET/HSET/DEL are safe; an RPUSH may be applied
twice if the connection broke after the server executed it).  If that fails
too, a `ConnectionError` naming the shard and address is raised.
"""
from __future__ import annotations

import atexit
import collections
import hashlib
import logging
import os
import socket
import struct
import threading
import time
import weakref
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import hiredis

logger = logging.getLogger(__name__)

ReplyError = hiredis.ReplyError
pack_command = hiredis.pack_command


def shard_for(key: bytes, num_shards: int) -> int:
    """Stable shard of a key (same in every process, every run).

    Task, object, actor and node IDs (16 or 20 bytes) are hashes already:
    their first 8 bytes are spread evenly and cost nothing to use. Any other
    key (names, KV keys) is hashed."""
    if num_shards == 1:
        return 0
    if len(key) in (16, 20):
        return int.from_bytes(key[:8], "little") % num_shards
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") % num_shards


def parse_address(address: str):
    """'unix:/path' -> (AF_UNIX, path); 'host:port' -> (AF_INET[6], (host, port))."""
    if not isinstance(address, str) or not address:
        raise ValueError(f"bad GCS address {address!r}: expected 'unix:/path/to/sock' or 'host:port'")
    if address.startswith("unix:"):
        path = address[5:]
        if not path:
            raise ValueError(f"bad GCS address {address!r}: empty unix socket path")
        return socket.AF_UNIX, path
    for prefix in ("redis://", "valkey://", "tcp://"):
        if address.startswith(prefix):
            address = address[len(prefix):]
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not (0 < int(port) < 65536):
        raise ValueError(f"bad GCS address {address!r}: expected 'unix:/path/to/sock' or 'host:port'")
    host = host.strip("[]")
    return (socket.AF_INET6 if ":" in host else socket.AF_INET), (host, int(port))


class _Conn:
    """One RESP connection.  Not thread-safe: the owner holds the shard lock."""

    __slots__ = ("address", "family", "target", "sock", "reader", "timeout", "connect_timeout")

    def __init__(self, address: str, timeout: Optional[float], connect_timeout: float):
        self.address = address
        self.family, self.target = parse_address(address)
        self.sock: Optional[socket.socket] = None
        self.reader = None
        self.timeout = timeout
        self.connect_timeout = connect_timeout

    def connect(self) -> None:
        self.close()
        s = socket.socket(self.family, socket.SOCK_STREAM)
        try:
            s.settimeout(self.connect_timeout)
            s.connect(self.target)
            if self.family != socket.AF_UNIX:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # Blocking socket with a kernel-side timeout (SO_RCVTIMEO): Python's
            # settimeout() would add a poll() before every recv/send (~15 us).
            s.settimeout(None)
            if self.timeout:
                tv = struct.pack("ll", int(self.timeout), int((self.timeout % 1) * 1e6))
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
        except BaseException:
            s.close()
            raise
        self.sock = s
        self.reader = hiredis.Reader()

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.reader = None

    def roundtrip(self, payload: bytes, n: int) -> list:
        """Send payload (n pipelined commands) and read n replies."""
        if self.sock is None:
            self.connect()
        sock = self.sock
        sock.sendall(payload)
        reader = self.reader
        out = []
        append = out.append
        recv = sock.recv
        while True:
            r = reader.gets()
            while r is not False:
                append(r)
                if len(out) == n:
                    return out
                r = reader.gets()
            data = recv(1 << 18)
            if not data:
                raise ConnectionResetError("connection closed by server")
            reader.feed(data)


class _Shard:
    __slots__ = ("index", "address", "conn", "lock", "buf_lock", "buf", "stats", "replies_pending")

    def __init__(self, index, address, timeout, connect_timeout):
        self.index = index
        self.address = address
        self.conn = _Conn(address, timeout, connect_timeout)
        self.lock = threading.Lock()       # held for a whole round trip
        self.buf_lock = threading.Lock()   # held only to append/swap the async buffer
        self.buf: List[bytes] = []
        self.stats = collections.Counter()


_start_lock = threading.Lock()
_clients: "weakref.WeakSet[GcsClient]" = weakref.WeakSet()


def _after_fork_in_child():
    global _start_lock
    _start_lock = threading.Lock()
    for c in list(_clients):
        c._reset_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _atexit_flush():
    for c in list(_clients):
        try:
            c.flush(wait=True)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


atexit.register(_atexit_flush)


class GcsClient:
    def __init__(self, addresses: Sequence[str], *, timeout: Optional[float] = 30.0,
                 connect_timeout: float = 5.0, flush_interval: float = 0.001,
                 max_batch: int = 20000, background_flush: bool = True,
                 wait_replicas: int = 0, wait_timeout_ms: int = 1000,
                 on_error: Optional[Callable[[int, BaseException], None]] = None,
                 connect: bool = True):
        if isinstance(addresses, str):
            addresses = [addresses]
        addresses = list(addresses)
        if not addresses:
            raise ValueError("GcsClient needs at least one shard address")
        for a in addresses:
            parse_address(a)  # validate early
        self.addresses = addresses
        self.num_shards = len(addresses)
        self._shards = [_Shard(i, a, timeout, connect_timeout) for i, a in enumerate(addresses)]
        self.flush_interval = flush_interval
        self.max_batch = max_batch
        self.wait_replicas = int(wait_replicas)
        self.wait_timeout_ms = int(wait_timeout_ms)
        self._wait_cmd = pack_command(("WAIT", self.wait_replicas, self.wait_timeout_ms)) if wait_replicas else b""
        self.on_error = on_error
        self.recent_errors: collections.deque = collections.deque(maxlen=100)
        self._closed = False
        self._background = background_flush
        self._wake = threading.Event()
        self._flusher: Optional[threading.Thread] = None
        if connect:
            for sh in self._shards:
                with sh.lock:
                    self._connect(sh)
        if background_flush:
            self._start_flusher()
        _clients.add(self)

    # ------------------------------------------------------------------ sharding

    def shard_index(self, key: bytes) -> int:
        n = self.num_shards
        if n == 1:
            return 0
        if isinstance(key, str):
            key = key.encode()
        return shard_for(key, n)

    # ------------------------------------------------------------------ connections

    def _connect(self, sh: _Shard) -> None:
        try:
            sh.conn.connect()
        except OSError as e:
            raise ConnectionError(
                f"cannot connect to GCS shard {sh.index} at {sh.address!r}: {e}") from e

    def _roundtrip(self, sh: _Shard, payload: bytes, n: int) -> list:
        """Caller holds sh.lock.  Reconnects and retries once."""
        if self._closed:
            raise ConnectionError("GcsClient is closed")
        try:
            replies = sh.conn.roundtrip(payload, n)
        except (socket.timeout, TimeoutError, BlockingIOError) as e:
            sh.conn.close()
            sh.stats["errors"] += 1
            raise ConnectionError(f"GCS shard {sh.index} at {sh.address!r} timed out: {e}") from e
        except OSError as e:
            sh.conn.close()
            sh.stats["reconnects"] += 1
            logger.info("GCS shard %d at %s: connection broken (%s), reconnecting", sh.index, sh.address, e)
            try:
                self._connect(sh)
                replies = sh.conn.roundtrip(payload, n)
            except OSError as e2:  # ConnectionError is an OSError too
                sh.conn.close()
                sh.stats["errors"] += 1
                raise ConnectionError(
                    f"GCS shard {sh.index} at {sh.address!r} unreachable: {e2}") from e2
        sh.stats["round_trips"] += 1
        sh.stats["commands"] += n
        sh.stats["bytes_sent"] += len(payload)
        return replies

    def _take_buffer(self, sh: _Shard):
        with sh.buf_lock:
            buf = sh.buf
            if not buf:
                return []  # never hand out the live list: writers append to it
            sh.buf = []
        return buf

    def _request(self, shard: int, cmds: List[bytes], wait: bool) -> list:
        """Send pending async writes + cmds (+WAIT) in one round trip; return cmds' replies."""
        sh = self._shards[shard]
        with sh.lock:
            pending = self._take_buffer(sh)
            parts = pending + cmds if pending else cmds
            n = len(parts)
            if wait and self.wait_replicas:
                parts = parts + [self._wait_cmd]
            try:
                replies = self._roundtrip(sh, b"".join(parts), len(parts))
            except ConnectionError as e:
                if pending:
                    self._async_failed(sh, len(pending), e)
                raise
            if pending:
                self._count_async(sh, replies[:len(pending)], len(pending))
            if wait and self.wait_replicas:
                self._check_wait(sh, replies[-1])
            return replies[len(pending):n]

    def _check_wait(self, sh: _Shard, reply) -> None:
        if isinstance(reply, int) and reply >= self.wait_replicas:
            return
        sh.stats["wait_failures"] += 1
        logger.warning("GCS shard %d: WAIT %d returned %r: write not yet on a replica",
                       sh.index, self.wait_replicas, reply)

    # ------------------------------------------------------------------ sync API

    def execute(self, shard: int, *args):
        """One command, one round trip; returns the reply (raises ReplyError on an error reply)."""
        r = self._request(shard, [pack_command(args)], False)[0]
        if isinstance(r, ReplyError):
            raise r
        return r

    def execute_many(self, shard: int, commands: Iterable[Sequence], raise_on_error: bool = True) -> list:
        """Pipelined: all commands in one round trip; replies in order.

        With raise_on_error=False an error reply is returned in place as a ReplyError instance.
        """
        cmds = [pack_command(tuple(c)) for c in commands]
        if not cmds:
            return []
        replies = self._request(shard, cmds, False)
        if raise_on_error:
            for r in replies:
                if isinstance(r, ReplyError):
                    raise r
        return replies

    def write(self, shard: int, *args):
        """Like execute, followed by WAIT for replicas when the client has wait_replicas."""
        r = self._request(shard, [pack_command(args)], True)[0]
        if isinstance(r, ReplyError):
            raise r
        return r

    def write_many(self, shard: int, commands: Iterable[Sequence], raise_on_error: bool = True) -> list:
        cmds = [pack_command(tuple(c)) for c in commands]
        if not cmds:
            return []
        replies = self._request(shard, cmds, True)
        if raise_on_error:
            for r in replies:
                if isinstance(r, ReplyError):
                    raise r
        return replies

    def execute_all(self, commands_by_shard: Dict[int, Sequence[Sequence]],
                    raise_on_error: bool = True) -> Dict[int, list]:
        """Pipelines to several shards concurrently: send to all, then read from all."""
        shards = sorted(commands_by_shard)
        out: Dict[int, list] = {}
        if len(shards) <= 1:
            for s in shards:
                out[s] = self.execute_many(s, commands_by_shard[s], raise_on_error)
            return out
        # Send everything first (locks taken in shard order: no deadlock), then read.
        locked = []
        try:
            sent = []
            for s in shards:
                sh = self._shards[s]
                sh.lock.acquire()
                locked.append(sh)
                pending = self._take_buffer(sh)
                cmds = [pack_command(tuple(c)) for c in commands_by_shard[s]]
                parts = pending + cmds
                payload = b"".join(parts)
                try:
                    if sh.conn.sock is None:
                        self._connect(sh)
                    sh.conn.sock.sendall(payload)
                    sent.append((sh, s, pending, parts, payload, True))
                except OSError:
                    sh.conn.close()
                    sent.append((sh, s, pending, parts, payload, False))
            for sh, s, pending, parts, payload, ok in sent:
                try:
                    if ok:
                        try:
                            replies = sh.conn.roundtrip(b"", len(parts))
                            sh.stats["round_trips"] += 1
                            sh.stats["commands"] += len(parts)
                            sh.stats["bytes_sent"] += len(payload)
                        except (socket.timeout, TimeoutError, BlockingIOError):
                            raise
                        except OSError:
                            sh.conn.close()
                            replies = self._roundtrip(sh, payload, len(parts))
                    else:
                        replies = self._roundtrip(sh, payload, len(parts))
                except (ConnectionError, OSError) as e:
                    sh.conn.close()
                    if pending:
                        self._async_failed(sh, len(pending), e)
                    if isinstance(e, ConnectionError) and str(e).startswith("GCS shard"):
                        raise
                    raise ConnectionError(f"GCS shard {sh.index} at {sh.address!r}: {e}") from e
                if pending:
                    self._count_async(sh, replies[:len(pending)], len(pending))
                out[s] = replies[len(pending):]
        finally:
            for sh in locked:
                sh.lock.release()
        if raise_on_error:
            for replies in out.values():
                for r in replies:
                    if isinstance(r, ReplyError):
                        raise r
        return out

    # ------------------------------------------------------------------ async API

    def write_async(self, shard: int, *args) -> None:
        """Queue a write; never blocks on I/O.  Sent by the flusher (or flush())."""
        data = pack_command(args)
        sh = self._shards[shard]
        with sh.buf_lock:
            buf = sh.buf
            buf.append(data)
            n = len(buf)
        if n == 1 or n >= self.max_batch:
            if self._flusher is None and self._background and not self._closed:
                self._start_flusher()  # after a fork: started on first use only
            self._wake.set()

    def write_async_packed(self, shard: int, packed: bytes, count: int = 1) -> None:
        """Queue already-packed RESP bytes holding `count` commands (count must be exact)."""
        sh = self._shards[shard]
        with sh.buf_lock:
            sh.buf.append(packed)
            if count > 1:
                sh.buf.extend([b""] * (count - 1))  # placeholders keep the reply count right
            n = len(sh.buf)
        if n == count or n >= self.max_batch:
            self._wake.set()

    def pending(self) -> int:
        return sum(len(sh.buf) for sh in self._shards)

    def _count_async(self, sh: _Shard, replies: list, n: int) -> None:
        sh.stats["async_batches"] += 1
        sh.stats["async_writes"] += n
        for r in replies:
            if isinstance(r, ReplyError):
                sh.stats["errors"] += 1
                sh.stats["async_errors"] += 1
                self._report(sh, r)

    def _async_failed(self, sh: _Shard, n: int, e: BaseException) -> None:
        sh.stats["errors"] += n
        sh.stats["async_errors"] += n
        sh.stats["async_lost"] += n
        logger.error("GCS shard %d at %s: %d async writes failed: %s", sh.index, sh.address, n, e)
        self._report(sh, e, log=False)

    def _report(self, sh: _Shard, e: BaseException, log: bool = True) -> None:
        if log:
            logger.error("GCS shard %d: async write failed: %s", sh.index, e)
        self.recent_errors.append((time.time(), sh.index, repr(e)))
        if self.on_error is not None:
            try:
                self.on_error(sh.index, e)
            except Exception:  # noqa: BLE001
                logger.exception("GCS on_error callback raised")

    def _flush_shard(self, sh: _Shard) -> int:
        """Send sh's buffer as one pipeline and read the replies.  Returns async errors seen."""
        with sh.lock:
            cmds = self._take_buffer(sh)
            if not cmds:
                return 0
            before = sh.stats["async_errors"]
            n = len(cmds)
            if self.wait_replicas:
                cmds.append(self._wait_cmd)
            try:
                replies = self._roundtrip(sh, b"".join(cmds), len(cmds))
            except ConnectionError as e:
                self._async_failed(sh, n, e)
                return n
            self._count_async(sh, replies[:n] if self.wait_replicas else replies, n)
            if self.wait_replicas:
                self._check_wait(sh, replies[-1])
            return sh.stats["async_errors"] - before

    def flush(self, wait: bool = True) -> int:
        """Send all buffered async writes.

        wait=True: in this thread; returns when every write queued before the
        call is acknowledged by its shard, and returns the number of async
        write errors seen doing it.  wait=False: just wake the flusher.
        """
        if not wait:
            self._wake.set()
            return 0
        errors = 0
        for sh in self._shards:
            if sh.buf or sh.lock.locked():
                errors += self._flush_shard(sh)
        return errors

    def _start_flusher(self) -> None:
        with _start_lock:
            if self._flusher is not None:
                return
            self._flusher = threading.Thread(target=self._flush_loop, name="rayfast-gcs-flusher", daemon=True)
            self._flusher.start()

    def _flush_loop(self) -> None:
        wake = self._wake
        while not self._closed:
            wake.wait()
            if self._closed:
                break
            wake.clear()
            if self.flush_interval > 0:
                time.sleep(self.flush_interval)  # let a batch build up
            for sh in self._shards:
                if sh.buf:
                    try:
                        self._flush_shard(sh)
                    except Exception as e:  # noqa: BLE001 - the flusher must survive
                        logger.exception("GCS flusher: unexpected error")
                        self._report(sh, e, log=False)

    # ------------------------------------------------------------------ misc

    def statistics(self) -> dict:
        per = []
        tot = collections.Counter()
        for sh in self._shards:
            d = {k: sh.stats.get(k, 0) for k in ("commands", "round_trips", "async_batches", "async_writes",
                                                 "bytes_sent", "errors", "async_errors", "async_lost",
                                                 "reconnects", "wait_failures")}
            d["pending"] = len(sh.buf)
            d["address"] = sh.address
            per.append(d)
            tot.update({k: v for k, v in d.items() if isinstance(v, int)})
        out = dict(tot)
        out["shards"] = per
        return out

    def _reset_after_fork(self) -> None:
        # The child must not use the parent's sockets (replies would interleave).
        for sh in self._shards:
            sh.lock = threading.Lock()
            sh.buf_lock = threading.Lock()
            sh.buf = []  # the parent will send its own copy
            sh.conn.sock = None  # don't close: the fd is the parent's connection too
            sh.conn.reader = None
        self._wake = threading.Event()
        self._flusher = None  # restarted lazily by the first write_async in the child

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.flush(wait=True)
        except Exception as e:  # noqa: BLE001
            logger.warning("GCS client close: final flush failed: %s", e)
        self._closed = True
        self._wake.set()
        if self._flusher is not None and self._flusher is not threading.current_thread():
            self._flusher.join(timeout=2)
        for sh in self._shards:
            with sh.lock:
                sh.conn.close()
        _clients.discard(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"GcsClient({self.addresses!r})"
