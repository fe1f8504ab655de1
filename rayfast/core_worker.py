"""What every driver and worker embeds: submitting tasks, holding refs, get/put/wait.

One CoreWorker per process talks to its node manager over one socket. There
is no I/O thread: the thread that needs a message reads the socket itself
(leader/follower). Whoever holds the `_reading` role reads one batch with
the condition's lock released, then files every message (object values
into `_results`, tasks into `_inbox`, replies into `_replies`) and wakes the
other waiters. A single-threaded driver therefore pays no thread hand-off
on the get path, and threaded actors still share the one connection.

Reference counting: ObjectRef instances are counted per process in C (see
`_core/ids`). Before each outgoing batch the changes are drained; ids that
became held are announced at the front of the batch and ids that were
dropped at its end, so the node manager never frees an object that a
message in the same batch still names.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import os
import socket
import threading
import time
import traceback
from collections import deque

from rayfast import protocol as P
from rayfast import serialization
from rayfast._core.ids import ObjectRef, TaskID, drain_ref_changes, held_ref_keys, local_ref_count, set_ref_hooks
from rayfast._core.store import ObjectExistsError
from rayfast.config import INLINE_THRESHOLD
from rayfast.direct import HOT_WAIT, WRITABLE, recv_any, recv_hot
from rayfast.exceptions import GetTimeoutError, ObjectLostError, ObjectStoreFullError, RaySystemError


BURST_GAP = 50e-6   # submissions closer than this are batched
LATER_DELAY = 0.01  # how long a send_later() message may wait for company
BLOCK_AFTER = 0.005  # a get waiting only on direct channels reports BLOCKED after this long
LOOK_LIMIT = 1.0    # how long a get/wait whose deadline passed waits at most for the node manager's answer (_look_once)
_NOT_READY = (None, None)   # what _failed() reads for a key without a value yet


class CoreWorker:
    def __init__(self, conn, mode, store, node_info, task_id=None, worker_id=None):
        self.conn = conn
        self.mode = mode                      # "driver" or "worker"
        self.store = store
        self.node_info = node_info
        self.worker_id = worker_id
        self.current_task_id = task_id or TaskID.random()
        self._task_counter = 0
        self._put_counter = 0
        self._cond = threading.Condition(threading.Lock())
        self._send_lock = threading.Lock()
        self._reading = False
        self._closed = False
        self._results = {}                    # oid -> (kind, data)
        self._failures = 0                    # ERROR values delivered so far (get() stops at one)
        self._subscribed = set()
        # Refs this process still held when this session began: they belong to an earlier one
        # (before shutdown()/init()), whose node and objects are gone. Waiting on one would never end.
        self.stale_keys = frozenset(held_ref_keys()) if mode == "driver" else frozenset()
        self._callbacks = {}                  # oid -> [fn(kind, data)]  for futures / asyncio
        self._inbox = deque()                 # TASK messages (workers)
        self._replies = {}
        self._req_counter = 0
        self._exported = set()
        self.feasible_shapes = set()
        self._timer = None
        self._pump_thread = None              # reads for callbacks when no get() does (futures, await)
        self._later = 0                       # queued messages that may wait (send_later)
        self._batch_started = 0.0
        self._last_submit = 0.0
        self.in_task = False                  # a worker running a task reports BLOCKED in get
        self._blocked = False                 # ... and while blocked hands queued tasks back
        self._must_flush = False
        self.exit_requested = False
        self.runtime_env = None               # the job's (driver) or running task's: what calls inherit
        self.gpu_ids = ()                     # the GPUs the running task was given (node/gpus.py)
        self.capture_pg = None                # the running task's placement group, if it takes its children
        self.spare_functions = {}             # function id -> pickled, from tasks handed back
        self.direct = None                    # DriverChannel (drivers): tasks on a leased worker
        self.channels = None                  # WorkerChannels (workers): a leasing driver's socket
        self.cancel_hook = None               # an actor's ActorTaskExecutor.cancel_call
        self.cancelled = {}                   # ids of running or unstarted tasks cancel() reached (note_cancelled)
        self.interrupted = False              # a worker got a SIGINT while it ran no task (node/worker.py)
        self._cancel_polled = 0.0             # when is_canceled() last looked for cancels
        self.pending_calls = {}               # actor id -> first return ids of calls without results (max_pending_calls)
        self.pending_of = {}                  # such a return id -> its set in pending_calls
        self.actor_channels = None            # ActorChannels: direct calls to actors (rayfast/actor_channel.py)
        self._reply_hooks = {}                # request id -> fn(value), for requests answered asynchronously
        self._wait_node = False               # a get()/wait() waits for something the node manager sends
        self._hot = None                      # the actor channel a get() waits on alone (recv_hot)
        self._hot_in = None                   # a worker's channel its last task came from
        self._hot_n = 0
        self.metrics = None                   # this process's metric updates not yet sent (rayfast/util/metrics.py)

    # --- sending ----------------------------------------------------------
    def flush(self):
        ac = self.actor_channels
        if ac is not None and ac.dirty:
            ac.flush()   # calls on actor channels leave before the ref releases that follow them
        channels = self.channels
        if channels is not None and channels.push():
            self._arm_timer(0.001)   # an actor's replies still wait for the caller to read
        direct = self.direct
        if direct is not None and direct.push():
            self._arm_timer(0.001)   # a task (its large function) still waits for the leased worker to read
        added, released = drain_ref_changes()
        for oid in released:
            self._results.pop(oid, None)
            self._subscribed.discard(oid)
        conn = self.conn
        with self._send_lock:
            if released and self._later:
                _unhold_released(conn._out, released)
            self._later = 0
            if not conn._out and not added and not released:
                return
            if added:
                conn._out.insert(0, (P.REFS, added, ()))
            if released:
                conn._out.append((P.REFS, (), released))
            try:
                conn.flush()
            except OSError as e:
                raise RaySystemError(f"lost the connection to the node manager: {e}") from None

    def send(self, msg, flush=True):
        self.conn.send(msg)
        if flush:
            self.flush()

    def send_batched(self, msg):
        """Queue msg; it leaves with the next get()/wait(), a full batch, or within about a millisecond.

        An isolated submission goes out at once. Inside a burst (submissions
        closer than BURST_GAP) they are batched, so 10,000 submissions cost a
        few hundred syscalls instead of 10,000, and the flush timer is woken
        once per batch rather than once per task.
        """
        now = time.perf_counter()
        with self._send_lock:
            out = self.conn._out
            out.append(msg)
            n = len(out)
        last, self._last_submit = self._last_submit, now
        if n == 1:
            if now - last > BURST_GAP:
                self.flush()
                return
            self._batch_started = now
            self._arm_timer()
        elif n >= 128 or now - self._batch_started > 0.0002:
            take_in = (n >= 128 or now - last < BURST_GAP) and self.direct is not None and self.direct.on_burst()
            self.flush()
            if take_in:
                self._take_in()

    def _take_in(self):
        """Read what has come in without waiting; not if another thread reads (or we are
        submitting from a callback that a read of ours runs, holding the lock)."""
        if not self._cond.acquire(blocking=False):
            return
        try:
            if not self._reading and not self._closed:
                self._pump(time.monotonic() + 1e-6)
        finally:
            self._cond.release()

    def _arm_timer(self, delay=None):
        t = self._timer
        if t is None:
            t = self._timer = _FlushTimer(self)
        t.arm(_FlushTimer.DELAY if delay is None else delay)

    def request(self, what, *args, timeout=None):
        """A synchronous request to the node manager (cluster info, actor lookups, ...)."""
        with self._cond:
            self._req_counter += 1
            req_id = self._req_counter
        self.send((P.REQUEST, req_id, what, args))
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while req_id not in self._replies:
                if not self._pump(deadline):
                    raise GetTimeoutError(f"no reply from the node manager to {what!r}")
            value = self._replies.pop(req_id)
        if isinstance(value, BaseException):
            raise value
        return value

    # --- receiving --------------------------------------------------------
    def _pump(self, deadline):
        """Wait for progress with self._cond held. False once the deadline passed."""
        remaining = None
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
        if self._reading:
            self._cond.wait(remaining)
            return True
        self._reading = True
        self._cond.release()
        batches = None
        ac = self.actor_channels
        try:
            hot = self._hot
            if hot is not None:
                if hot.wbuf or (ac is not None and ac.dirty):
                    hot = None   # (bytes still to write: wait for writability too, below)
                elif not (ac is not None and hot in ac.by_conn) and not (
                        self.direct is not None and self.direct.lease is not None and hot is self.direct.lease.conn):
                    hot = None   # the channel closed meanwhile
            elif self._hot_in is not None:
                conns = self.channels.conns   # (only while it is our one caller: others must not wait)
                hot = (self._hot_in if len(conns) == 1 and conns[0] is self._hot_in
                       and not self._hot_in.wbuf else None)   # (replies waiting to be written: watch for writable)
                self._hot_n += 1
                if hot is not None and not self._hot_n & 15:
                    # every 16th wait looks at every connection first (node manager, a new caller),
                    # without waiting, then waits on the hot one as usual
                    batches = recv_any(self.conn, conns, self.channels.listener, 0) or None
                    if batches is not None:
                        hot = None
            if hot is not None and (remaining is None or remaining > HOT_WAIT) and not self._callbacks:
                m = recv_hot(hot)   # one blocking read of the channel we expect (bounded by HOT_WAIT)
                if m is None or m:
                    batches = [(hot, m)]
                else:
                    self._hot_in = None
            extra = None
            listener = None
            writers = ()
            if batches is None and self.channels is not None:
                extra = self.channels.conns
                listener = self.channels.listener
                writers = self.channels.writers()
            if batches is None:
                if self.direct is not None and self.direct.lease is not None:
                    extra = (extra or []) + self.direct.connections()
                    writers = writers + self.direct.writers() if writers else self.direct.writers()
                if ac is not None and ac.conns:
                    extra = (extra or []) + ac.conns
                    writers = writers + ac.writers() if writers else ac.writers()
                if extra is not None or listener is not None:
                    batches = recv_any(self.conn, extra or [], listener, remaining, writers)
            msgs = None if batches is not None else self.conn.recv(remaining)
        except P.ConnectionClosed:
            self._closed = True
            msgs = None
        except OSError:
            if not self._closed:
                raise
            msgs = None   # (EBADF: shutdown() in another thread closed the socket under this read)
        finally:
            self._cond.acquire()
            self._reading = False
        if batches:
            for source, batch in batches:
                if source is self.conn:
                    self._dispatch(batch)
                elif ac is not None and source in ac.by_conn:
                    if batch is WRITABLE:
                        ac.writable(source)
                    else:
                        ac.on_messages(source, batch)
                elif self.channels is not None:
                    if source is self.channels.listener:
                        self.channels.accept()
                    elif batch is WRITABLE:
                        self.channels.writable(source)
                    else:
                        self.channels.on_messages(self, source, batch)
                        self._hot_in = source if batch is not None else None
                elif batch is WRITABLE:
                    self.direct.push()
                else:
                    self.direct.on_messages(batch)
        elif msgs:
            self._dispatch(msgs)
        self._cond.notify_all()
        if self._must_flush:
            self._must_flush = False
            self._cond.release()
            try:
                self.flush()
            finally:
                self._cond.acquire()
        if self._closed:
            raise RaySystemError("the node manager has gone away (was rayfast shut down?)")
        return True

    def _dispatch(self, msgs):
        for m in msgs:
            t = m[0]
            if t == P.OBJ:
                self.deliver(m[1], m[2], m[3])
            elif t == P.TASK:
                if self._blocked and m[2][P.S_KIND] == P.TASK_NORMAL:
                    self._keep_function(m)
                    self.conn.send((P.RETURN, (m[1],)))   # we cannot start it: hand it back
                    self._must_flush = True
                else:
                    self._inbox.append(m)
            elif t == P.CANCEL_CALL:
                if self.cancel_hook is not None:
                    self.cancel_hook(m[1])
            elif t == P.CANCEL_QUEUED:
                for q in self._inbox:
                    if q[0] == P.TASK and q[1] == m[1]:
                        self._inbox.remove(q)
                        self._keep_function(q)
                        self.conn.send((P.RETURN, (m[1],)))
                        self._must_flush = True
                        break
            elif t == P.REPLY:
                hook = self._reply_hooks.pop(m[1], None) if self._reply_hooks else None
                if hook is not None:
                    hook(m[2])
                else:
                    self._replies[m[1]] = m[2]
            elif t == P.LEASE_GRANT:
                self.direct.on_grant(m)
            elif t == P.LEASE_REVOKE:
                self.direct.on_revoke(m[1])
            elif t == P.LEASE_DENIED:
                self.direct.on_denied()
            elif t == P.EXIT:
                self.exit_requested = True
                self._inbox.append(m)

    def deliver(self, oid, kind, data):
        """An object's value arrived: wake its callbacks, keep it if we still hold a ref.

        Returns whether it was kept."""
        if self.pending_of:
            pending = self.pending_of.pop(oid, None)   # a call counted against max_pending_calls
            if pending is not None:
                pending.discard(oid)
        cbs = self._callbacks.pop(oid, None)
        if cbs:
            for cb in cbs:
                cb(kind, data)
        if kind == P.ERROR:
            self._failures += 1
        if local_ref_count(oid) > 0:
            self._results[oid] = (kind, data)
            return True
        self._subscribed.discard(oid)   # pushed to us as its submitter, but the ref is gone
        return False

    def poll(self):
        """Take in what has arrived, without waiting for more."""
        with self._cond:
            self._pump(time.monotonic() + 1e-4)   # (select waits this long at most when nothing came)

    def note_cancelled(self, tid):
        """cancel() reached task tid here (running, or taken from the inbox and not started):
        is_canceled() says so and it fails as cancelled when it starts. Bounded: a cancel that
        comes after its task ended is never looked up again."""
        self.cancelled[tid] = None
        if len(self.cancelled) > 256:
            del self.cancelled[next(iter(self.cancelled))]

    def is_cancelled(self, tid):
        """Whether cancel() has reached task tid, reading what has arrived (at most every 1 ms:
        a task may ask in a tight loop)."""
        if tid not in self.cancelled:
            now = time.monotonic()
            if now - self._cancel_polled > 0.001:
                self._cancel_polled = now
                self.poll()
        return tid in self.cancelled

    def next_task(self):
        """Block until the node manager hands this worker a message for its task loop."""
        with self._cond:
            while not self._inbox:
                self._pump(None)
            return self._inbox.popleft()

    # --- tasks ------------------------------------------------------------
    def export_function(self, function_id, pickled):
        if function_id not in self._exported:
            self._exported.add(function_id)
            self.conn.send((P.EXPORT, function_id, pickled))

    def next_task_id(self):
        self._task_counter += 1
        return self.current_task_id.child(self._task_counter)

    def submit_task(self, spec, pickled_fn):
        """Send a normal task: over a leased worker when it is a lone call, else to the node."""
        # The lease takes one task at a time: in a burst the first goes there
        # and the rest, finding it busy, go to the node manager.
        direct = self.direct
        if direct is not None and direct.try_submit(spec, pickled_fn):
            self._last_submit = time.perf_counter()
            return
        self.send_batched((P.SUBMIT, spec))

    def send_later(self, *msgs):
        """Queue messages that may wait for the next frame, or LATER_DELAY at most
        (none at all while a get()/wait() waits for the node manager)."""
        with self._send_lock:
            armed = self._later   # messages that can wait are queued already: the timer is armed for them
            self.conn._out.extend(msgs)
            self._later += len(msgs)
        if self._wait_node or self._callbacks:
            self._must_flush = True
        if not armed:
            self._arm_timer(LATER_DELAY)   # (a reader flushes after its next batch, if one comes)

    def done_record(self, spec, results, start, end, worker_id, pid, cancelled=False):
        """The DIRECT_DONE that tells the node manager of a call run over a direct channel (an
        actor's, a lease's), each result delivered here first; with each, whether we hold it.
        cancelled: cut short by cancel(), so its run time says nothing of its function's."""
        deliver = self.deliver
        if len(results) == 1:   # the common case, without a generator per call
            oid, kind, data, contained = results[0]
            published = ((oid, kind, data, contained, deliver(oid, kind, data)),)
        else:
            published = tuple((oid, kind, data, contained, deliver(oid, kind, data))
                              for oid, kind, data, contained in results)
        if cancelled:
            return (P.DIRECT_DONE, spec, published, start, end, worker_id, pid, True)
        return (P.DIRECT_DONE, spec, published, start, end, worker_id, pid)

    # --- objects ----------------------------------------------------------
    def put(self, value, key=None):
        """A ref to value, stored under a new put id (or under key: a generator task's items)."""
        item = key   # (a generator's item)
        if key is None:
            if isinstance(value, ObjectRef):
                raise TypeError("Calling put() on an ObjectRef is not allowed; put the value itself "
                                "or pass the ref to tasks directly.")
            self._put_counter += 1
            key = self.current_task_id.put_id(self._put_counter).binary()
        inline, parts, contained = serialization.serialize(value, INLINE_THRESHOLD)
        ref = ObjectRef(key)
        if inline is not None:
            self._results[key] = (P.INLINE, inline)
            self.send((P.PUT, key, P.INLINE, inline, contained))
        else:
            self.write_to_store(key, parts)
            self._results[key] = (P.STORE, parts[3])
            if item is None:
                # No one asks the node manager for it before a message of ours that follows
                # (a task submitted, a result or a ref handed on) or the flush timer's: it may
                # wait for company (a worker's pull/push loop: one node-manager wakeup less per put).
                self.send_later((P.PUT, key, P.STORE, parts[3], contained))
            else:   # its consumer waits for it now
                self.send((P.PUT, key, P.STORE, parts[3], contained))
        return ref

    def write_to_store(self, key, parts, replace=False):
        """Write a serialized value into the store under key; replace: a task's result, which
        an attempt that died may have stored already (unseen by anyone: this attempt's wins)."""
        try:
            buf = self._create_in_store(key, parts[3])
        except ObjectExistsError:
            if not replace:
                raise
            self.store.delete(key)
            buf = self._create_in_store(key, parts[3])
        try:
            serialization.write_parts(buf, parts)
        except BaseException:
            self.store.abort(key)   # also invalidates buf
            raise
        self.store.seal(key)        # also invalidates buf

    def _create_in_store(self, key, size):
        """create_object, retried while the node frees what was just released.

        Refs dropped here reach the node with the next message, and other
        processes free theirs a little later: only once the releases are
        through and a short wait has not helped does the object go to a file
        of its own (Ray's fallback allocation), or fail if that cannot be made."""
        delay = 0.01
        for attempt in range(6):
            try:
                return self.store.create_object(key, size, fallback_if_full=attempt == 5)
            except ObjectStoreFullError:
                if attempt == 5:
                    raise
                if attempt == 0:
                    self.flush()
                    self.request("ping")   # the node has handled our releases when it answers
                else:
                    time.sleep(delay)
                    delay *= 2

    def wait_objects(self, keys, num_ready, deadline, stop_on_error=False):
        """Subscribe to keys and wait until at least num_ready of them have values.

        Returns True when enough are ready, False when the deadline passed. stop_on_error
        (get()): True as soon as one of them has failed, ready or not the rest, as Ray's get
        raises that error without waiting for them.
        """
        results = self._results
        if len(keys) == 1:  # the common case, without the list work
            if keys[0] in results:
                return True
            missing = keys
        else:
            missing = [k for k in keys if k not in results]
            if len(keys) - len(missing) >= num_ready or (stop_on_error and self._failed(keys)):
                return True
        new = [k for k in missing if k not in self._subscribed]
        if new:
            if self.stale_keys:
                self.refuse_stale(new)
            self._subscribed.update(new)
            self.conn.send((P.GET, tuple(new)))
        blocked = self.in_task and self.mode == "worker" and not self._blocked
        # Waiting for anything the node manager sends, the reports of direct calls (actor
        # channels, the lease) go out at once: what we wait for may need their results.
        ac = self.actor_channels
        self._wait_node = True
        if ac is not None:
            self._wait_node = not ac.waits_only_on_channels(missing)
            self._hot = None if self._wait_node else ac.hot_conn(missing)
            if ac.dirty:
                ac.flush()   # (only the calls: ref releases for the node manager can wait for the timer)
        if self.direct is not None and self._hot is None:
            self._hot = self.direct.hot_conn(missing)   # a task on our leased worker
            if self._hot is not None:
                self._wait_node = False
        # A task waiting only for answers on its own channels (actor calls, the leased task),
        # mostly there within a millisecond or two, tells the node manager it is blocked (its
        # CPU lent, its queued tasks handed back) only after BLOCK_AFTER: two messages and
        # two node-manager wakeups less per get.
        block_at = time.monotonic() + BLOCK_AFTER if blocked and not self._wait_node else None
        if blocked and block_at is None:
            self._block()
        if len(self.conn._out) > self._later or (self._wait_node and self._later):   # anything but records that can wait
            self.flush()

        def pump():
            nonlocal block_at
            if block_at is not None:
                if time.monotonic() < block_at and (deadline is None or block_at < deadline):
                    self._pump(block_at)
                    return True
                block_at = None
                self._cond.release()
                try:
                    self._block()
                finally:
                    self._cond.acquire()
            return self._pump(deadline)
        try:
            with self._cond:
                if self._wait_ready(keys, missing, num_ready, pump, stop_on_error):
                    return True
            return self._look_once(keys, num_ready)
        finally:
            self._wait_node = False
            self._hot = None
            if blocked and block_at is None:
                self._blocked = False
                self.send((P.UNBLOCKED,))

    def refuse_stale(self, keys):
        """ValueError (Ray's, for a ref whose owner it does not know) if any of keys is an earlier session's."""
        stale = next((k for k in keys if k in self.stale_keys), None)
        if stale is not None:
            raise ValueError(f"ObjectRef({stale.hex()}) belongs to an earlier rayfast session: it was made "
                             "before the last shutdown()/init(), and its object went with that session. "
                             "Refs are valid only in the session that made them.")

    def _failed(self, keys):
        """The first of keys whose value is an error, or None."""
        results = self._results
        return next((k for k in keys if results.get(k, _NOT_READY)[0] == P.ERROR), None)

    def _wait_ready(self, keys, missing, num_ready, pump, stop_on_error=False):
        """wait_objects' wait, with self._cond held: True once num_ready of keys have values."""
        results = self._results
        if len(missing) == 1:
            key = missing[0]
            while key not in results:
                if not pump():
                    return False
            return True
        if num_ready == len(keys):
            # get(): walk the keys once (values arrive about in order),
            # not a rescan of all missing ones per batch received
            i, n = 0, len(missing)
            failures = self._failures
            while True:
                while i < n and missing[i] in results:
                    i += 1
                if i == n:
                    return True
                if stop_on_error and self._failures != failures:   # (errors are rare: look then only)
                    failures = self._failures
                    if self._failed(keys):
                        return True
                if not pump():
                    return False
        while True:
            missing = [k for k in missing if k not in results]   # shrinks as values come
            if len(keys) - len(missing) >= num_ready:
                return True
            if not pump():
                return False

    def _look_once(self, keys, num_ready):
        """The deadline passed: one round trip to the node manager and a look at every channel
        before saying "not ready". Values are only sent to us once we subscribe, so without it
        get(timeout=0) or wait(timeout=0) on a task that finished long ago would never see it
        (Ray's owner has its results: a polling loop of wait(timeout=0) must end)."""
        if self._closed:
            return False
        self._hot = None
        self._wait_node = True   # (read everything: the node manager's answer and every channel)
        try:
            # It answers in order: once the ping's reply is in, so is every value it had for us.
            self.request("ping", timeout=LOOK_LIMIT)
        except GetTimeoutError:
            pass
        results = self._results
        return sum(1 for k in keys if k in results) >= num_ready

    def _block(self):
        """Tell the node manager that this task waits in get(): its CPU is lent, its queue handed back."""
        self._hand_back_queued()
        self.send((P.BLOCKED,))

    def _keep_function(self, m):
        """A task handed back unstarted may carry the function's first copy for this
        worker; the node will not send it again, so keep it for later tasks."""
        if m[0] == P.TASK and m[4] is not None:
            self.spare_functions[m[2][P.S_FUNCTION_ID]] = m[4]

    def _hand_back_queued(self):
        """Entering a blocking get inside a task: tasks queued behind it go back to the node."""
        with self._cond:
            self._blocked = True
            # (a 6-tuple TASK came over a leased channel: it is ours to run, not the node's)
            keep = [m for m in self._inbox if m[0] != P.TASK or m[2][P.S_KIND] != P.TASK_NORMAL or len(m) > 5]
            back = tuple(m[1] for m in self._inbox
                         if m[0] == P.TASK and m[2][P.S_KIND] == P.TASK_NORMAL and len(m) == 5)
            if back:
                for m in self._inbox:
                    self._keep_function(m)
                self._inbox.clear()
                self._inbox.extend(keep)
                self.conn.send((P.RETURN, back))

    def get(self, refs, timeout=None):
        keys = [r.binary() for r in refs]
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self.wait_objects(keys, len(keys), deadline, stop_on_error=True):
            ready = sum(1 for k in keys if k in self._results)
            raise GetTimeoutError(
                f"get timed out after {timeout} s: {len(keys) - ready} of {len(keys)} objects not ready")
        results = self._results
        if len(keys) > 1 and not all(k in results for k in keys):   # one failed: its error, now
            self.value_of(self._failed(keys))
        return [self.value_of(k) for k in keys]

    def value_of(self, key, raise_errors=True):
        kind, data = self._results[key]
        if kind == P.ERROR and not raise_errors:
            return serialization.loads_inline(data)
        return decode_value(self.store, key, kind, data)

    def add_callback(self, key, fn):
        """Call fn(kind, data) once key's value arrives (immediately if it has)."""
        with self._cond:
            if key in self._results:
                kind, data = self._results[key]
            else:
                self._callbacks.setdefault(key, []).append(fn)
                if key not in self._subscribed:
                    self._subscribed.add(key)
                    self.conn.send((P.GET, (key,)))
                kind = None
        if kind is None:
            self.flush()
            self._kick_reader()
        else:
            fn(kind, data)

    def _kick_reader(self):
        """Make sure some thread reads the socket so callbacks fire without a get()."""
        with self._cond:
            if self._pump_thread is not None:
                return
            self._pump_thread = threading.Thread(target=self._pump_forever, daemon=True,
                                                 name="rayfast-callbacks")
            self._pump_thread.start()

    def _pump_forever(self):
        """Read until every callback has fired; a later add_callback starts a new reader."""
        with self._cond:
            try:
                while self._callbacks and not self._closed:
                    self._pump(None)
            except RaySystemError:
                pass
            finally:
                self._pump_thread = None

    def close(self):
        if self.metrics is not None:
            self.metrics.close()   # its last updates go out while the connection is up
        self._closed = True
        if self._timer is not None:
            self._timer.stop()
        if self.direct is not None:
            self.direct.close()
        if self.channels is not None:
            self.channels.close()
        if self.actor_channels is not None:
            self.actor_channels.close()
        try:
            # A thread blocked reading the socket keeps it open past close(): shutting it down
            # wakes that thread, and the node sees the driver leave now, not when the read ends.
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.conn.close()


class _FlushTimer:
    """Flushes messages that no get() or full batch has sent yet, by their deadline.

    It sleeps on a condition with no timeout while nothing waits, so an idle
    process pays nothing for it; the earliest armed deadline wins.
    """

    DELAY = 0.0005

    def __init__(self, cw):
        self.cw = cw
        self.cond = threading.Condition(threading.Lock())
        self.deadline = None
        self.stopped = False
        self.thread = threading.Thread(target=self._run, name="rayfast-flush", daemon=True)
        self.thread.start()

    def arm(self, delay):
        """Flush within `delay` seconds (the earliest of the armed deadlines wins)."""
        deadline = time.monotonic() + delay
        with self.cond:
            if self.deadline is None or deadline < self.deadline:
                self.deadline = deadline
                self.cond.notify()

    def stop(self):
        with self.cond:
            self.stopped = True
            self.cond.notify()

    def _run(self):
        cond = self.cond
        while True:
            with cond:
                while not self.stopped:
                    if self.deadline is None:
                        cond.wait()
                        continue
                    left = self.deadline - time.monotonic()
                    if left <= 0:
                        break
                    cond.wait(left)
                if self.stopped:
                    return
                self.deadline = None
            try:
                self.cw.flush()
            except Exception:
                return


def _unhold_released(out, released):
    """DIRECT_DONE records in this frame say held=False for results whose refs are gone by now.

    A result of a direct call that its caller dropped before the record left
    was never announced to the node manager: with held=False the node manager
    need not keep it at all (no one else can have its ref), instead of
    registering it and freeing it again one message later. That was half of
    its work per direct call."""
    gone = set(released)
    done = P.DIRECT_DONE
    for i, m in enumerate(out):
        if m[0] == done:
            results = m[2]
            for r in results:
                if r[4] and r[0] in gone:
                    if len(results) == 1:
                        results = ((r[0], r[1], r[2], r[3], False),)
                    else:
                        results = tuple((x[0], x[1], x[2], x[3], False) if x[0] in gone else x for x in results)
                    out[i] = (done, m[1], results, m[3], m[4], m[5], m[6])
                    break


# --- ObjectRef hooks: ref.future() and `await ref`, in drivers and workers alike ---

def _future_of(ref):
    cw = current()
    fut = concurrent.futures.Future()
    key = ref.binary()

    def done(kind, data):
        # A future its waiter cancelled (asyncio.wait_for's timeout) takes no result: setting one
        # would raise in the thread delivering values, and stop it.
        if not fut.set_running_or_notify_cancel():
            return
        try:
            value = decode_value(cw.store, key, kind, data)
        except BaseException as e:  # the task's error, raised as get() would
            fut.set_exception(e)
        else:
            fut.set_result(value)
    fut._rayfast_ref = ref   # keeps the object alive until its value has arrived
    cw.add_callback(key, done)
    return fut


def _awaitable_of(ref):
    return asyncio.wrap_future(_future_of(ref))


set_ref_hooks(_future_of, _awaitable_of)


def decode_value(store, key, kind, data):
    """The value of an object from what the node manager sent; raises it if it is an error."""
    if kind == P.INLINE:
        return serialization.loads_inline(data)   # (arrays read-only, as from the store and as in Ray)
    if kind == P.STORE:
        try:
            view = store.get(key, 10.0)
        except (KeyError, TimeoutError):
            raise ObjectLostError(key.hex()) from None
        return serialization.deserialize_view(view)
    err = serialization.loads_inline(data)
    if hasattr(err, "as_instanceof_cause"):
        raise err.as_instanceof_cause()
    raise err


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def format_exception(exc):
    """The traceback text of an exception a task raised, as Ray shows it: from the user's first
    frame, without the worker's own frames that led into the call (all of them if the user's code
    has none, e.g. a bad num_returns)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))


_current = None


def current():
    """The process's CoreWorker; RaySystemError if rayfast is not initialized here."""
    cw = _current
    if cw is None:
        raise RaySystemError("rayfast is not initialized: call rayfast.init() first")
    return cw


# Set by rayfast.api: starts a local cluster (Ray's auto-init on the first remote() or put()).
auto_init = None


def current_or_init():
    """current(), first starting a local cluster if this process has none, as Ray does."""
    cw = _current
    if cw is None:
        if auto_init is not None:
            auto_init()
        return current()
    return cw


def set_current(cw):
    global _current
    _current = cw


def _forget_in_child():
    """A forked child (multiprocessing, os.fork) does not own its parent's connection: it has no
    CoreWorker. (Done at the fork, not by comparing pids per call: getpid() is a syscall.)"""
    set_current(None)


os.register_at_fork(after_in_child=_forget_in_child)
