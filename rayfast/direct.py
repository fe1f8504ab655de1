"""Direct task channels: a driver running tasks one at a time on a leased worker.

A task that is submitted, run and waited for one at a time crosses the node
manager twice on its way there and back: four wakeups of three Python
processes. For that pattern the driver leases a worker from its node
manager and talks to it over a socket of their own: the task goes straight
to the worker and the result straight back, two wakeups. The node manager
keeps the lease's resources reserved and learns of every task run this way
afterwards, off the critical path (DIRECT_DONE: lineage, timeline, and the
results, so that other tasks and processes can use them as usual).

Only simple tasks take this path: one in flight at a time, the lease's
resource shape, no refs nested in the arguments, and top-level ref arguments
whose values the driver already holds inline. Everything else goes through
the node manager as before. The node manager revokes a lease as soon as
other work waits for its resources; the driver hands it back when its task
in flight (if any) is done. A worker that dies under a lease closes the
channel: its task is resubmitted through the node manager (consuming a
retry) or fails with WorkerCrashedError.
"""
import os
import select
import signal
import socket
import struct
import threading
import time

from rayfast import protocol as P
from rayfast import serialization
from rayfast._core.spin import Spinner
from rayfast.exceptions import TaskCancelledError, TaskCancelledWorkerCrashedError, WorkerCrashedError

# When to ask for a lease again. The node grants one only while no work waits for its
# resources, so asking again soon after a denial or a lease handed back (called back for
# waiting work, or by a burst) costs a message, not a fight over the worker.
LEASE_RETRY = 0.01     # after a denial or giving a lease back
LOST_COOLDOWN = 0.1    # after the leased worker died (or could not be reached)


class Lease:
    __slots__ = ("worker_id", "pid", "conn", "shape", "functions", "inflight", "revoked", "cancelled")

    def __init__(self, worker_id, pid, conn, shape):
        self.worker_id = worker_id
        self.pid = pid
        self.conn = conn
        self.shape = shape
        self.functions = set()
        self.inflight = None      # (handle, spec, submitted) of the task on the worker
        self.revoked = False
        self.cancelled = False    # cancel() was called on the task in flight


def failed_results(spec, data):
    """The results of a task that fails with data (a pickled error) for each return."""
    return tuple((oid, P.ERROR, data, ()) for oid in P.return_ids(spec[P.S_TASK_ID], max(spec[P.S_NUM_RETURNS], 1)))


def error_results(spec, exc):
    """The results of a task that failed with exc without running to its end: exc for each return."""
    return failed_results(spec, serialization.dumps(exc)[0])


def cancelled_error(spec):
    """The error of a task cancelled before it ran (what get() raises for it)."""
    return TaskCancelledError(spec[P.S_TASK_ID].hex())


def cancelled_results(spec):
    """The results of a task cancelled before it ran: TaskCancelledError for each return."""
    return error_results(spec, cancelled_error(spec))


def _kill(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def worker_socket_path(session_dir, worker_id):
    return os.path.join(session_dir, f"w{worker_id}.sock")


class DriverChannel:
    """The driver's side: asking for a lease, submitting over it, taking results."""

    def __init__(self, cw):
        self.cw = cw
        self.lease = None
        self.requested = False
        self.declined = False     # a burst began while our request was unanswered: a grant goes straight back
        self.retry_at = 0.0       # no lease request before this (time.monotonic())
        self._handles = 0
        # One task in flight per lease: checking and taking the slot must be
        # atomic when several threads submit (a thread that finds the lock
        # taken goes through the node manager instead).
        self._lock = threading.Lock()

    # --- called by the submit path ---------------------------------------
    def try_submit(self, spec, pickled_fn):
        """Run spec on the leased worker if it qualifies; True if it went there."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            return self._try_submit(spec, pickled_fn)
        finally:
            self._lock.release()

    def _try_submit(self, spec, pickled_fn):
        lease = self.lease
        if lease is None:
            if not self.requested and time.monotonic() > self.retry_at:
                self.requested = True
                self.cw.conn.send((P.LEASE_REQUEST, spec[P.S_RESOURCES]))
            return False
        if lease.inflight is not None or lease.revoked or spec[P.S_RESOURCES] != lease.shape \
                or spec[P.S_BORROWED] or (spec[P.S_OPTIONS] and "max_calls" in spec[P.S_OPTIONS]):
            return False
        resolved = ()
        if spec[P.S_ARG_REFS]:
            results = self.cw._results
            out = []
            for _, oid in spec[P.S_ARG_REFS]:
                r = results.get(oid)
                if r is None or r[0] != P.INLINE:
                    return False
                out.append((oid, r[0], r[1]))
            resolved = tuple(out)
        fid = spec[P.S_FUNCTION_ID]
        fn = None
        if fid not in lease.functions:
            fn = pickled_fn
            lease.functions.add(fid)
        self._handles += 1
        lease.inflight = (self._handles, spec, time.time())
        try:
            lease.conn.send((P.TASK, self._handles, spec, resolved, fn))
            lease.conn.flush()
        except OSError:
            self._lost(lease)    # resubmits through the node manager
        return True

    # --- called by the receive path ----------------------------------------
    def on_grant(self, m):
        _, worker_id, pid, path, shape = m
        self.requested = False
        if self.declined:
            self.declined = False
            self.cw.conn.send((P.LEASE_RETURN, worker_id))
            self.cw._must_flush = True
            self.retry_at = time.monotonic() + LEASE_RETRY
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except OSError:
            sock.close()
            self.cw.conn.send((P.LEASE_RETURN, worker_id))
            self.retry_at = time.monotonic() + LOST_COOLDOWN
            return
        self.lease = Lease(worker_id, pid, HotConnection(sock), shape)

    def on_denied(self):
        self.requested = False
        self.declined = False
        self.retry_at = time.monotonic() + LEASE_RETRY

    def on_burst(self):
        """A burst of submissions: the leased worker is better off in the pool, where the node
        queues the burst's tasks on it. Give the lease back now if idle, else once its task in
        flight is done; a grant still on its way goes straight back. True if the caller should
        read what came in (the grant, the task's DONE): until the node has the worker back it
        holds the burst's tasks back from running in its place (manager._room_elsewhere)."""
        self.retry_at = time.monotonic() + LEASE_RETRY   # and no new request while the burst lasts
        if self.lease is None and not self.requested:
            return False
        with self._lock:
            lease = self.lease
            if lease is not None:
                lease.revoked = True
                if lease.inflight is None:
                    self._give_back(lease)
                    return False
                return True
            if self.requested:
                self.declined = True
            return self.requested

    def on_revoke(self, worker_id):
        with self._lock:
            self._on_revoke(worker_id)

    def _on_revoke(self, worker_id):
        lease = self.lease
        if lease is None or lease.worker_id != worker_id:
            return
        lease.revoked = True
        if lease.inflight is None:
            self._give_back(lease)

    def on_messages(self, msgs):
        """Messages from the leased worker (its DONE replies); None when the channel closed."""
        with self._lock:
            self._on_messages(msgs)

    def _on_messages(self, msgs):
        lease = self.lease
        if lease is None:
            return
        if msgs is None:
            self._lost(lease)
            return
        for m in msgs:
            if m[0] != P.DONE or lease.inflight is None or m[1] != lease.inflight[0]:
                continue
            _, spec, _ = lease.inflight
            lease.inflight = None
            results = m[2]
            cancelled = lease.cancelled
            if cancelled:
                lease.cancelled = False
                results = cancelled_results(spec)
            self._record(spec, results, m[3], m[4], lease, cancelled)
        if lease.revoked and lease.inflight is None:
            self._give_back(lease)

    def _record(self, spec, results, start, end, lease, cancelled=False):
        """Keep the results we still hold refs to, and tell the node manager what ran."""
        cw = self.cw
        # Not urgent: it rides with the next frame, or the flush timer's.
        cw.send_later(cw.done_record(spec, results, start, end, lease.worker_id, lease.pid, cancelled))

    def _give_back(self, lease):
        self.lease = None
        self.retry_at = time.monotonic() + LEASE_RETRY
        lease.conn.close()
        self.cw.conn.send((P.LEASE_RETURN, lease.worker_id))
        self.cw._must_flush = True

    def _lost(self, lease):
        """The leased worker's channel closed: it died (or is shutting down)."""
        self.lease = None
        self.retry_at = time.monotonic() + LOST_COOLDOWN
        lease.conn.close()
        if lease.inflight is None:
            return
        _, spec, _ = lease.inflight
        lease.inflight = None
        retries = spec[P.S_MAX_RETRIES]
        if lease.cancelled:   # killed by cancel(force=True) while it ran
            self._record(spec, error_results(spec, TaskCancelledWorkerCrashedError(spec[P.S_TASK_ID].hex())),
                         time.time(), time.time(), lease, True)
        elif retries != 0:
            spec = spec[:P.S_MAX_RETRIES] + (retries - 1 if retries > 0 else retries,) + spec[P.S_MAX_RETRIES + 1:]
            self.cw.conn.send((P.SUBMIT, spec))
        else:
            err = WorkerCrashedError(
                f"The worker running {spec[P.S_NAME]} (pid {lease.pid}) died unexpectedly and no "
                f"retries were left (max_retries={spec[P.S_MAX_RETRIES]}).")
            self._record(spec, error_results(spec, err), time.time(), time.time(), lease)
        self.cw._must_flush = True

    def cancel(self, oid, force):
        """cancel() of a task running over the lease: True if it was one."""
        lease = self.lease
        if lease is None or lease.inflight is None or oid[:16] != lease.inflight[1][P.S_TASK_ID]:
            return False
        lease.cancelled = True
        if not force:
            # the message naming the task first, so that a worker the SIGINT reaches before it has
            # started the task still cancels it (node/worker.py)
            try:
                lease.conn.send((P.CANCEL_CALL, oid[:16]))
                lease.conn.flush()
            except OSError:
                pass   # the worker is gone: _lost() handles its task
        _kill(lease.pid, signal.SIGKILL if force else signal.SIGINT)
        return True

    def connections(self):
        return [self.lease.conn] if self.lease is not None else []

    def writers(self):
        """The lease's channel while part of a task waits to be written (a task that carries a
        large function does not fit the socket at once)."""
        lease = self.lease
        return [lease.conn] if lease is not None and lease.conn.wbuf else []

    def push(self):
        """Write what waits for the leased worker (the reader calls it when the socket is
        writable, CoreWorker.flush on every flush); True if some still waits."""
        lease = self.lease
        if lease is None or not lease.conn.wbuf:
            return False
        if not self._lock.acquire(blocking=False):
            return True   # a submission is writing to it: the flush timer comes back
        try:
            lease.conn.flush()
        except OSError:
            lease.conn.wbuf.clear()   # the worker is gone: the reader sees the close (_lost)
        finally:
            self._lock.release()
        return bool(lease.conn.wbuf)

    def hot_conn(self, keys):
        """The lease's channel if every key is a result of the task in flight on it."""
        lease = self.lease
        if lease is None or lease.inflight is None:
            return None
        tid = lease.inflight[1][P.S_TASK_ID]
        return lease.conn if all(k[:16] == tid for k in keys) else None

    def close(self):
        if self.lease is not None:
            self.lease.conn.close()
            self.lease = None


class WorkerChannels:
    """The worker's side: accept the connection of the driver that leased us."""

    def __init__(self, path):
        self.path = path
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(128)   # every process calling an actor connects to it (actor_channel.py)
        self.conns = []
        # Every write to these connections holds it: task threads (threaded and async actors),
        # the flush timer (push) and the reader share their buffers.
        self.lock = threading.Lock()

    def reply(self, conn, done):
        """Answer a call on the channel it came from, at once.

        Returns True when part of it waits in the connection's buffer: the
        caller then arms the flush timer (CoreWorker.flush pushes it), since
        the reader may be waiting without watching for writability — replies
        of async and threaded actors come from other threads. (Holding replies
        back to share a frame with the next call's saved about a microsecond a
        call, and a crash in that call would lose results of calls that ran.)"""
        with self.lock:
            conn.send(done)
            try:
                conn.flush()
            except OSError:
                conn.wbuf.clear()   # the caller went away; it resubmits or no longer cares
            return bool(conn.wbuf)

    def push(self):
        """Push what waits in any connection's buffer; True if some still waits."""
        waiting = False
        for c in self.writers():
            self.writable(c)
            waiting = waiting or bool(c.wbuf)
        return waiting

    def writers(self):
        """Connections with replies the socket could not take yet."""
        return [c for c in self.conns if c.wbuf]

    def writable(self, conn):
        with self.lock:
            try:
                conn.flush()
            except OSError:
                conn.wbuf.clear()   # the caller is gone; its reader sees the close

    def accept(self):
        try:
            sock, _ = self.listener.accept()
        except OSError:
            return
        self.conns.append(HotConnection(sock))

    def on_messages(self, cw, conn, msgs):
        if msgs is None:
            self.conns.remove(conn)
            conn.close()
            return
        for m in msgs:
            if m[0] == P.TASK:
                cw._inbox.append(m + (conn,))   # the reply goes back on this channel
            elif m[0] == P.CANCEL_CALL and cw.cancel_hook is not None:
                cw.cancel_hook(m[1])

    def read_pending(self, cw):
        """Take in, without waiting, every call already sent to us (an actor about to exit)."""
        for c in list(self.conns):
            closed = False
            while True:
                r, _, _ = select.select((c.sock,), (), (), 0)
                if not r:
                    break
                try:
                    chunk = c.sock.recv(P.RECV_SIZE)
                except OSError:
                    chunk = b""
                if not chunk:
                    closed = True
                    break
                c._rbuf += chunk
            msgs = c._parse()
            if msgs:
                self.on_messages(cw, c, msgs)
            if closed:
                self.on_messages(cw, c, None)

    def close(self):
        with self.lock:   # (the flush timer may be pushing a buffer)
            for c in self.conns:
                c.finish(5.0)
                c.close()
        self.listener.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


WRITABLE = object()   # recv_any's report that one of `writers` can take more bytes
HOT_WAIT = 0.002      # how long recv_hot waits on one channel before the reader looks at all of them
_RCVTIMEO = struct.pack("ll", 0, int(HOT_WAIT * 1e6))
_DONTWAIT = socket.MSG_DONTWAIT


# How long a reader expecting an answer polls its channel before sleeping in recv (csrc/spin.h:
# a wakeup costs 15-20 µs on small VMs). Long enough to cover a peer's turnaround of a
# small call; a peer that is slower makes the spinner back off.
SPIN = float(os.environ.get("RAYFAST_SPIN_US", "100")) * 1e-6


class HotConnection(P.Connection):
    """A direct channel (lease or actor calls): a reader waits on it for quick answers, writes never block.

    Its socket stays blocking, but recv blocks for HOT_WAIT at most
    (SO_RCVTIMEO), after which the reader falls back to watching every
    connection. Writes that the socket cannot take wait in wbuf, pushed
    whenever the writer flushes again or its reader sees the socket writable:
    two processes that each block writing to the other would wedge both
    (a caller submitting thousands of calls while its actor answers them)."""

    __slots__ = ("spin", "wbuf")

    def __init__(self, sock):
        super().__init__(sock)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _RCVTIMEO)
        self.spin = Spinner(SPIN)
        self.wbuf = bytearray()

    def flush(self):
        """Write what is queued without blocking; OSError when the peer is gone."""
        if self._out:
            out, self._out = self._out, []
            if not self.wbuf:   # the common case: one frame, written whole
                data = P.encode(out)
                try:
                    n = self.sock.send(data, _DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    n = 0
                if n < len(data):
                    self.wbuf += memoryview(data)[n:]
                return
            self.wbuf += P.encode(out)
        if self.wbuf:
            try:
                n = self.sock.send(self.wbuf, _DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            del self.wbuf[:n]

    def finish(self, timeout):
        """Before the process ends: write what waits, blocking up to timeout."""
        try:
            self.flush()
            if self.wbuf:
                self.sock.settimeout(timeout)
                self.sock.sendall(self.wbuf)
        except OSError:
            pass


def recv_hot(conn):
    """One blocking read of the HotConnection we expect the next messages on.

    A select() plus a recv() cost noticeably more than one recv() (two
    syscalls and a wakeup each on small VMs), so a reader waiting for replies
    from one channel polls it briefly and then reads it directly. Returns
    messages, None if the channel closed, or [] if nothing came within HOT_WAIT."""
    m = conn._parse()
    if m:
        return m
    sock = conn.sock
    try:
        conn.spin.wait(sock.fileno())
        chunk = sock.recv(P.RECV_SIZE)
    except (BlockingIOError, InterruptedError, socket.timeout):
        return []
    except (OSError, ValueError):
        chunk = b""
    if not chunk:
        return None
    conn._rbuf += chunk
    return conn._parse() or []


def recv_any(main, extra, listener, timeout, writers=()):
    """Read whichever of main/extra connections is ready.

    Returns a list of (connection, messages or None-if-closed); the listener,
    when readable, is reported as (listener, []), and a connection of
    `writers` (ones with bytes waiting to be written) that became writable as
    (connection, WRITABLE). ConnectionClosed only for main.
    """
    out = []
    for c in [main] + extra:
        m = c._parse()
        if m:
            out.append((c, m))
    if out:
        return out
    socks = [main.sock] + [c.sock for c in extra]
    if listener is not None:
        socks.append(listener)
    try:
        r, w, _ = select.select(socks, [c.sock for c in writers], (), timeout)
    except (OSError, ValueError):
        # Another thread closed one of them meanwhile (a lease handed back in a burst): the
        # caller looks again, without it.
        if main.sock.fileno() < 0:
            raise P.ConnectionClosed("node manager connection closed") from None
        return out
    for s in w:
        out.append((next(c for c in writers if c.sock is s), WRITABLE))
    for s in r:
        if s is listener:
            out.append((listener, []))
            continue
        c = main if s is main.sock else next(x for x in extra if x.sock is s)
        try:
            chunk = s.recv(P.RECV_SIZE)
        except (BlockingIOError, InterruptedError):   # (a non-blocking actor channel)
            continue
        except OSError:
            chunk = b""
        if not chunk:
            if c is main:
                raise P.ConnectionClosed("node manager connection closed")
            out.append((c, None))
            continue
        c._rbuf += chunk
        m = c._parse()
        if m:
            out.append((c, m))
    return out
