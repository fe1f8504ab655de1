"""Direct actor calls: a caller talks to an actor's process over a socket of their own.

Through the node manager an actor call costs four wakeups of three processes
(caller -> node manager -> actor -> node manager -> caller) and the node
manager's Python on every call. Once an actor is alive, each process that
calls it (driver or worker) opens a channel to the actor's process (every
worker listens on `<session_dir>/w<worker_id>.sock`, rayfast/direct.py) and
sends its calls straight there; the actor answers on the channel a call came
from (ActorTaskExecutor._reply), batching its DONEs while more calls from the
same channel wait in its inbox. The caller delivers the results itself
(`CoreWorker.deliver`) and reports every call run this way to the node
manager afterwards, batched (DIRECT_DONE, as for leased tasks): lineage,
timeline, statistics and the object table stay right, so results can be
passed to other tasks and processes as usual.

Switching over keeps Ray's ordering guarantee (calls of one caller run in
submission order). The first call to an actor goes through the node manager
followed by a request for the actor's channel; the node manager answers it
only once the actor is alive and the last call this process sent it before
the request is done (every earlier call has run), and the caller switches
only if it sent no call through the node manager after its request
(otherwise it asks again). From then on every call of this process to that
actor uses the channel, in order:

* a call whose top-level ref arguments have no value in the caller yet
  waits *in the caller*, head-of-line: it and every later call to that actor
  stay queued here until its arguments arrive (subscribed, with callbacks),
  then go out in order. An argument that is an error fails the call here,
  without running it, as the node manager would. An async or threaded actor
  (`unordered`, told with the grant) keeps no such order, as in Ray: only
  the waiting call waits, later ready ones go out;
* neither side ever blocks writing to a channel (direct.HotConnection: what
  the socket cannot take waits in a buffer, pushed when the writer flushes
  again or sees the socket writable); so neither can wedge the other however
  many calls are in flight, and the actor keeps running calls while the
  caller is still submitting.

Failures: the actor's process dying closes the channel. Calls in flight on
it are resubmitted through the node manager, marked `rerouted` with the dead
process's pid; the node manager, which decides restarts, treats them exactly
like calls it had forwarded to that process (retried with max_task_retries
on the restarted actor, else RayActorError with the right cause); calls
still queued in the caller follow them in order. After `kill()` from this
process no call goes out on the channel any more: later calls wait until
the channel closes and then take the node-manager path behind the rerouted
ones. An actor ended because its last handle was dropped runs every call
that reached its socket before it exits (ActorTaskExecutor.drain_direct).

What stays on the node-manager path: calls before the switch, calls to an
actor that is dead or not alive yet, calls of an actor to itself, calls on a
process with RAYFAST_DIRECT_ACTORS=0, and everything after a failure until
the channel is granted again.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from collections import deque

from rayfast import protocol as P
from rayfast._core.ids import ObjectRef
from rayfast.direct import HotConnection, cancelled_results

NONE, REQUESTED, OFF, OPEN, CLOSING = range(5)
BATCH = 128              # calls per frame at most
BURST_GAP = 50e-6        # calls closer than this are batched (as CoreWorker.send_batched)
BATCH_WAIT = 0.0002      # a batch waits this long at most before it is written
CONNECT_COOLDOWN = 0.05  # after a failed connect, wait this long before asking again
ENABLED = os.environ.get("RAYFAST_DIRECT_ACTORS", "1") != "0"


class _Chan:
    __slots__ = ("aid", "state", "conn", "worker_id", "pid", "req_id", "sent_since", "inflight", "waiting",
                 "last_send", "batch_started", "dead", "retry_at", "unordered")

    def __init__(self, aid):
        self.aid = aid
        self.state = NONE
        self.conn = None
        self.worker_id = None
        self.pid = None
        self.req_id = None
        self.sent_since = 0       # node-manager calls sent after the channel request
        self.inflight = {}        # task id -> (spec, keep) sent on the channel, in order
        self.waiting = deque()    # (spec, keep) not sent yet: arguments not ready, or closing
        self.last_send = 0.0
        self.batch_started = 0.0
        self.dead = False         # killed with no_restart: never ask again
        self.retry_at = 0.0
        self.unordered = False    # an async or threaded actor: calls need not wait for earlier ones' arguments


class ActorChannels:
    """A process's channels to the actors it calls."""

    def __init__(self, cw):
        self.cw = cw
        self.lock = threading.RLock()
        self.chans = {}         # actor id -> _Chan
        self.conns = []         # open channel connections (CoreWorker._pump reads them)
        self.by_conn = {}       # connection -> _Chan
        self.dirty = []         # channels with calls not written yet
        self.pending = {}       # task id -> _Chan, calls sent and not answered
        self._req = 0

    # --- submitting ---------------------------------------------------------------
    def submit(self, aid, spec, keep):
        """Send an actor call: over the actor's channel, or through the node manager."""
        missing = None
        with self.lock:
            ch = self.chans.get(aid)
            if ch is not None and ch.state >= OPEN:
                missing = self._call(ch, spec, keep)
            else:
                self.cw.send_batched((P.SUBMIT, spec))
                if ch is None:
                    ch = self.chans[aid] = _Chan(aid)
                if ch.state == NONE and time.monotonic() >= ch.retry_at:
                    self._request(ch, False)
                elif ch.state == REQUESTED:
                    ch.sent_since += 1
        if missing:
            # outside the lock: add_callback takes the core worker's condition
            for oid in missing:
                self.cw.add_callback(oid, lambda kind, data, oid=oid: self._arrived(aid, oid, kind, data))

    def _call(self, ch, spec, keep):
        """Send (or queue, in order) one call on an open channel; the oids to wait for, if any."""
        refs = spec[P.S_ARG_REFS]
        keep = _hold(spec, keep)
        if ch.state == CLOSING or (ch.waiting and not ch.unordered):
            ch.waiting.append((spec, keep))
            return self._missing(refs) if ch.state != CLOSING else None
        resolved = self._resolve(refs) if refs else ()
        if resolved is None:
            ch.waiting.append((spec, keep))
            return self._missing(refs)
        self._send(ch, spec, keep, resolved)
        return None

    def _missing(self, refs):
        results = self.cw._results
        return [oid for _, oid in refs if oid not in results]

    def _resolve(self, refs):
        results = self.cw._results
        out = []
        for _, oid in refs:
            r = results.get(oid)
            if r is None:
                return None
            out.append((oid, r[0], r[1]))
        return tuple(out)

    def _send(self, ch, spec, keep, resolved):
        tid = spec[P.S_TASK_ID]
        for r in resolved:
            if r[1] == P.ERROR:   # an argument failed: so does the call, without running
                self._record(ch, spec, tuple((oid, P.ERROR, r[2], ()) for oid in _returns(spec)),
                             time.time(), time.time())
                return
        ch.inflight[tid] = (spec, keep)
        self.pending[tid] = ch
        conn = ch.conn
        conn._out.append((P.TASK, tid, spec, resolved, None))
        n = len(conn._out)
        now = time.perf_counter()
        last, ch.last_send = ch.last_send, now
        if n == 1:
            if now - last > BURST_GAP:
                self._write(ch)
                return
            ch.batch_started = now
            self.dirty.append(ch)
            self.cw._arm_timer()
        elif n >= BATCH or now - ch.batch_started > BATCH_WAIT:
            self._write(ch)

    def _write(self, ch):
        try:
            ch.conn.flush()
        except OSError:
            # The actor's process is gone. Its replies may still wait unread: the reader
            # reroutes the calls when it reaches the end of the channel; until then later
            # calls wait here.
            ch.conn._out = []
            ch.conn.wbuf = bytearray()
            if ch.state == OPEN:
                ch.state = CLOSING
            return
        if ch.conn.wbuf:
            self.dirty.append(ch)
            self.cw._arm_timer(0.001)   # the actor is busy: push the rest soon (or when we read)

    def flush(self):
        """Write every channel's batch (CoreWorker.flush calls this before its own frame)."""
        with self.lock:
            dirty, self.dirty = self.dirty, []
            for ch in set(dirty):
                if ch.conn is not None:
                    self._write(ch)

    def writers(self):
        """Connections with bytes waiting to be written (the reader selects them for writing)."""
        return [c for c in self.conns if c.wbuf]

    def writable(self, conn):
        with self.lock:
            ch = self.by_conn.get(conn)
            if ch is not None:
                self._write(ch)

    # --- the node manager's side of the switch --------------------------------------
    def _request(self, ch, in_pump):
        self._req += 1
        ch.req_id = req = ("actor_channel", self._req)
        ch.state = REQUESTED
        ch.sent_since = 0
        cw = self.cw
        cw._reply_hooks[req] = lambda value, aid=ch.aid: self._granted(aid, req, value)
        msg = (P.REQUEST, req, "actor_channel", (ch.aid,))
        if in_pump:
            with cw._send_lock:
                cw.conn._out.append(msg)
            cw._must_flush = True
        else:
            cw.send_batched(msg)

    def _granted(self, aid, req, value):
        """The node manager's answer to a channel request (runs in the reader, its lock held)."""
        with self.lock:
            ch = self.chans.get(aid)
            if ch is None or ch.req_id != req or ch.state != REQUESTED:
                return
            ch.req_id = None
            if value is None or isinstance(value, BaseException) or ch.dead:
                ch.state = OFF
                return
            if ch.sent_since:   # calls went through the node manager meanwhile: they must run first
                self._request(ch, True)
                return
            worker_id, pid, path, unordered = value[:4]
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                sock.connect(path)
            except OSError:   # gone, or its backlog is full: try again later
                sock.close()
                ch.state = NONE
                ch.retry_at = time.monotonic() + CONNECT_COOLDOWN
                return
            sock.setblocking(True)   # reads may block (recv_hot, bounded); writes never do (MSG_DONTWAIT)
            conn = HotConnection(sock)
            ch.conn = conn
            ch.worker_id = worker_id
            ch.pid = pid
            ch.state = OPEN
            ch.unordered = unordered
            self.conns.append(conn)
            self.by_conn[conn] = ch

    # --- receiving ----------------------------------------------------------------
    def on_messages(self, conn, msgs):
        """Replies from an actor (runs in the reader, its lock held); msgs None: the channel closed."""
        with self.lock:
            ch = self.by_conn.get(conn)
            if ch is None:
                return
            if msgs is None:
                self._lost(ch)
                return
            cw = self.cw
            pending = self.pending
            inflight = ch.inflight
            records = []
            wid, pid = ch.worker_id, ch.pid
            for m in msgs:
                if m[0] != P.DONE:
                    continue
                ent = inflight.pop(m[1], None)
                if ent is None:
                    continue
                pending.pop(m[1], None)
                records.append(cw.done_record(ent[0], m[2], m[3], m[4], wid, pid))
            if records:
                cw.send_later(*records)
            if ch.waiting and ch.state == OPEN:
                self._drain(ch)

    def _record(self, ch, spec, results, start, end):
        """A call's DIRECT_DONE rides with the next frame to the node manager (or the flush timer's)."""
        cw = self.cw
        cw.send_later(cw.done_record(spec, results, start, end, ch.worker_id or 0, ch.pid or 0))

    def _arrived(self, aid, oid, kind, data):
        """A value a queued call waits for has arrived (a callback: the reader's lock may be held)."""
        self.cw._results[oid] = (kind, data)   # what deliver() does next, as we hold a ref to it
        with self.lock:
            ch = self.chans.get(aid)
            if ch is not None and ch.state == OPEN and ch.waiting:
                self._drain(ch)

    def _drain(self, ch):
        """Send queued calls whose arguments are ready: from the head, in order, up to the first
        that waits; for an unordered actor every ready one (those that wait stay, in order)."""
        waiting = ch.waiting
        held = []
        while waiting and ch.state == OPEN:
            spec, keep = waiting[0]
            refs = spec[P.S_ARG_REFS]
            resolved = self._resolve(refs) if refs else ()
            if resolved is None:
                if not ch.unordered:
                    break
                held.append(waiting.popleft())
                continue
            waiting.popleft()
            self._send(ch, spec, keep, resolved)
        waiting.extendleft(reversed(held))
        if ch.conn is not None and ch.conn._out:
            self._write(ch)

    # --- failures -----------------------------------------------------------------
    def _lost(self, ch):
        """The channel closed (the actor's process ended): reroute its calls through the node manager."""
        conn = ch.conn
        ch.conn = None
        if conn is not None:
            try:
                self.conns.remove(conn)
            except ValueError:
                pass
            self.by_conn.pop(conn, None)
            conn.close()
        ch.state = OFF if ch.dead else NONE
        cw = self.cw
        msgs = []
        for tid, (spec, _) in ch.inflight.items():
            self.pending.pop(tid, None)
            opts = dict(spec[P.S_OPTIONS] or ())
            opts["rerouted"] = ch.pid
            msgs.append((P.SUBMIT, spec[:P.S_OPTIONS] + (opts,)))
        ch.inflight.clear()
        msgs.extend((P.SUBMIT, spec) for spec, _ in ch.waiting)
        ch.waiting.clear()
        if msgs:
            with cw._send_lock:
                cw.conn._out.extend(msgs)
            cw._must_flush = True
            cw._arm_timer()

    def on_kill(self, aid, no_restart):
        """kill() from this process: nothing more goes out on the channel; later calls wait for it to close."""
        with self.lock:
            ch = self.chans.get(aid)
            if ch is None:
                ch = self.chans[aid] = _Chan(aid)
            if no_restart:
                ch.dead = True
            if ch.state == OPEN:
                ch.state = CLOSING
            elif ch.state == REQUESTED:
                ch.req_id = None
                ch.state = OFF if no_restart else NONE
            elif no_restart:
                ch.state = OFF if ch.state == NONE else ch.state

    def cancel(self, tid, force):
        """cancel() of a call of ours: True if it is known here (queued here, or in flight on a channel).

        Ray's rules: a call not started is cancelled, a running call of an
        async actor is cancelled, a running call of any other actor runs on;
        force=True is refused for actor calls."""
        with self.lock:
            ch = self.pending.get(tid)
            queued = None
            if ch is None:
                for c in self.chans.values():
                    queued = next((e for e in c.waiting if e[0][P.S_TASK_ID] == tid), None)
                    if queued is not None:
                        ch = c
                        break
            if ch is None:
                return False
            if force:
                raise ValueError("force=True is not supported for actor tasks.")
            if queued is not None:
                ch.waiting.remove(queued)
                spec = queued[0]
                self._record(ch, spec, cancelled_results(spec), time.time(), time.time())
                if ch.waiting and ch.state == OPEN:
                    self._drain(ch)
            elif ch.conn is not None:
                ch.conn.send((P.CANCEL_CALL, tid))
                self._write(ch)
            return True

    def waits_only_on_channels(self, keys):
        """Whether every key is the result of a call in flight on a channel."""
        pending = self.pending
        if len(keys) == 1:   # (a get of one call: no generator)
            return keys[0][:16] in pending
        return all(k[:16] in pending for k in keys)

    def hot_conn(self, keys):
        """The channel every key's call is in flight on, if there is one such channel."""
        pending = self.pending
        ch = pending.get(keys[0][:16])
        if ch is None or ch.conn is None:
            return None
        for k in keys:
            if pending.get(k[:16]) is not ch:
                return None
        return ch.conn

    def close(self):
        with self.lock:
            for c in self.conns:
                c.close()
            self.conns = []
            self.by_conn.clear()
            self.chans.clear()

    def statistics(self):
        with self.lock:
            return {"channels": sum(1 for c in self.chans.values() if c.state >= OPEN),
                    "in_flight": len(self.pending),
                    "waiting": sum(len(c.waiting) for c in self.chans.values())}


def _returns(spec):
    return P.return_ids(spec[P.S_TASK_ID], spec[P.S_NUM_RETURNS])


def _hold(spec, keep):
    """Refs that keep the call's arguments alive until it is done (the node manager does not know of it)."""
    refs = spec[P.S_ARG_REFS]
    borrowed = spec[P.S_BORROWED]
    if not refs and not borrowed:
        return keep
    out = list(keep) if keep else []
    out.extend(ObjectRef(oid) for _, oid in refs)
    out.extend(ObjectRef(oid) for oid in borrowed)
    return out


def channels_of(cw):
    """The process's ActorChannels, made on first use (None when direct calls are off)."""
    ac = cw.actor_channels
    if ac is None and ENABLED:
        ac = cw.actor_channels = ActorChannels(cw)
    return ac


__all__ = ["ActorChannels", "channels_of"]
