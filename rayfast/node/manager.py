"""The node manager: local scheduler, worker pool, object table and failure detector.

It is one single-threaded epoll loop. Every driver and worker of the node
holds one socket to it. A loop turn reads every readable socket, handles
the whole batch of messages (submissions, results, ref changes), schedules
what became runnable, and then writes each client's outgoing batch as one
frame. Batching on both sides is what keeps the per-task cost low: under
load one syscall carries hundreds of messages.

Scheduling is bottom-up: a task whose arguments are all ready (the
dependency table, in C) goes to the ready queue of its resource shape (a
C queue per shape) and runs on an idle worker when the node's resources
allow. A worker blocked in get() gives its CPU back, and the pool forks a
new worker when runnable tasks would otherwise wait on blocked ones.
"""
from __future__ import annotations

import collections
import gc
import os
import select
import signal
import socket
import struct
import time

from rayfast import protocol as P
from rayfast._core.deps import DependencyTable
from rayfast._core.objects import READY, ObjectTable
from rayfast._core.queue import TaskQueue
from rayfast.config import MAX_WORKERS_PER_CPU
from rayfast.exceptions import TaskCancelledWorkerCrashedError, WorkerCrashedError
from rayfast.node.actors import DEFERRED
from rayfast.node.gpus import GpuIds
from rayfast.node.metrics_http import MetricsHttp
from rayfast.node.metrics_table import MetricsTable
from rayfast.node.placement_groups import PlacementGroups
from rayfast.node.state import snapshot as state_rows, task_failed
from rayfast.direct import cancelled_results, error_results, worker_socket_path
from rayfast.node.worker_pool import BUSY, IDLE, LEASED, WorkerPool, kill_children
from rayfast.node.stats import FunctionStats
from rayfast.scheduling import fits_in, visible

_HDR = struct.Struct("<I")
PIPELINE_DEPTH = P.PIPELINE_DEPTH   # tasks queued on one worker at most
PIPELINE_MAX_RUN = 0.001    # only functions whose mean run time is below this are queued
LEASE_STARVE = 0.002        # queued work waits this long before leased workers are called back
IDLE_WAIT = 1.0              # seconds the loop waits for events when it has nothing pending
GCS_BATCH = 50_000           # task specs or timeline events held for the GCS while the loop is busy at most
GCS_CHUNK = 2_000            # of which a loop turn packs and sends this many
GC_IDLE_MIN = 1_000          # an idle loop collects cycles once this many objects were made since
GC_BUSY_MAX = 200_000        # a loop that is never idle collects once this many were
GC_FULL_EVERY = 10           # every this many collections go over the long-lived objects too
_CLUSTER_QUERIES = ("nodes", "cluster_resources", "available_resources")
_EPOLLIN = select.EPOLLIN
_EPOLLOUT = select.EPOLLOUT



class Client:
    __slots__ = ("id", "sock", "fd", "rbuf", "out", "wbuf", "kind", "pid", "worker", "held",
                 "owner", "closed", "actor_handles", "writing", "namespace")

    def __init__(self, cid, sock):
        self.id = cid
        self.sock = sock
        self.fd = sock.fileno()
        self.rbuf = b""
        self.out = []
        self.wbuf = b""
        self.kind = None
        self.pid = None
        self.worker = None
        self.held = set()
        self.owner = False
        self.closed = False
        self.actor_handles = {}
        self.writing = False
        self.namespace = None         # a driver's job namespace (rayfast/node/actors.py namespace_of)


class TaskRecord:
    __slots__ = ("handle", "spec", "owner", "retries_left", "deps", "worker", "shape",
                 "submitted", "dispatched", "cancelled", "returns", "done", "stats", "gpu_ids")

    def __init__(self, handle, spec, owner, shape, returns, stats):
        self.handle = handle
        self.stats = stats          # its function's statistics row (node/stats.py)
        self.spec = spec
        self.owner = owner
        self.retries_left = spec[P.S_MAX_RETRIES]
        self.deps = ()
        self.worker = None
        self.shape = shape
        self.submitted = time.time()
        self.dispatched = 0.0
        self.cancelled = False
        self.returns = returns
        self.done = False
        self.gpu_ids = None         # the GPUs it runs on (node/gpus.py)


def _one_at_a_time(rec):
    """Whether rec is never queued on a busy worker: its function has max_calls (it could land on
    a worker that has to retire), or it uses GPUs (which are given to it at dispatch)."""
    opts = rec.spec[P.S_OPTIONS]
    if opts and "max_calls" in opts:
        return True
    for name, _ in rec.shape:
        if name == "GPU":
            return True
    return False


class NodeManager:
    def __init__(self, socket_path, node_id, resources, store, gcs_addresses=(), session_dir=None, labels=None):
        self.socket_path = socket_path
        self.node_id = node_id
        self.labels = {"ray.io/node-id": node_id.hex(), **(labels or {})}   # Ray's default label and init()'s
        self.total = dict(resources)
        self.avail = dict(resources)
        self.num_cpus = int(resources.get("CPU", 1))
        self.store = store
        self.gcs = None                    # the GCS link (attach_gcs), after the first workers start
        self.warmer = None                 # faults the store in ahead of the puts (node/store_warmer.py)
        self.gcs_addresses = list(gcs_addresses)   # (known before: those workers get them too)
        self.session_dir = session_dir
        self.objects = ObjectTable(store, on_free=self._on_object_freed, store_kind=P.STORE,
                                   on_orphan=self._on_object_orphaned)
        self.deps = DependencyTable()
        self.queues = {}                   # shape -> TaskQueue of handles
        self.tasks = {}                    # handle -> TaskRecord
        self.task_by_id = {}               # task id -> handle, for cancel
        self._lease_asks = []              # (client, shape): answered after the turn's scheduling pass
        self.functions = {}                # function id -> pickled
        self.clients = {}                  # fd -> Client
        self.idle = []                     # idle WorkerStates (LIFO keeps caches warm)
        self.busy = []                     # task workers running (and maybe queueing) tasks
        self.leases = {}                   # worker_id -> [WorkerState, Client, revoked] leased to drivers
        self._starved_at = None            # since when queued work has waited with leases out
        self.starting = 0                  # forked workers that have not said HELLO yet
        self.stats = FunctionStats()
        self.events = []                   # timeline events not yet written to the GCS
        self.timeline = collections.deque(maxlen=200_000)
        self.failed_tasks = collections.OrderedDict()   # task id -> error data, the latest (node/state.py)
        self._lineage = {}                 # task id -> its returned objects not freed yet (_lineage_written)
        self._next_handle = 0
        self._next_client = 0
        self._dirty = set()
        self._running = True
        self.ep = select.epoll()
        self.listener = None
        self.pool = None
        self.actors = None                 # ActorManager, attached by rayfast.node.actors
        self.peers = None                  # links to other nodes (rayfast/node/peers.py), attached at start
        self.pgs = PlacementGroups(self)   # placement groups (rayfast/node/placement_groups.py)
        self.gpus = GpuIds(resources.get("GPU", 0))
        self._exits = {}                   # pidfd -> pid of a disconnected process not yet exited
        self._cut_short = {}               # worker -> task whose dependents found its queue full
        from rayfast import __version__   # (not at import: the package sets it after its own imports)
        self.metrics = MetricsTable({"Component": "core_worker", "Version": __version__,
                                     "SessionName": os.path.basename((session_dir or "").rstrip("/"))})
        self.metrics_http = None           # the metrics export port (serve_metrics)

    # --- setup ------------------------------------------------------------
    def listen(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(self.socket_path)
        sock.listen(256)
        sock.setblocking(False)
        self.listener = sock
        self.ep.register(sock.fileno(), _EPOLLIN)

    def node_info(self):
        return {"node_id": self.node_id, "resources": visible(self.total), "labels": self.labels,
                "store_name": self.store.name,
                "store_capacity": self.store.capacity, "socket": self.socket_path,
                "session_dir": self.session_dir,
                "gcs_addresses": self.gcs_addresses, "metrics_export_port": self.metrics_port()}

    def serve_metrics(self, host, port):
        """Serve the application metrics over HTTP on host:port (0: a free port); OSError if it cannot."""
        self.metrics_http = MetricsHttp(self.metrics, self.ep, host, port)
        self.metrics.labels["NodeAddress"] = host

    def metrics_port(self):
        return self.metrics_http.port if self.metrics_http is not None else -1

    def start_workers(self, n):
        self.pool = WorkerPool(self.store.name, self.node_info())
        for _ in range(n):
            self._spawn_worker()

    def _inherited_fds(self):
        fds = [self.ep.fileno()]
        if self.listener is not None:
            fds.append(self.listener.fileno())
        fds.extend(self.clients.keys())
        fds.extend(self._exits)
        if self.gcs is not None:
            fds.extend(self.gcs.fds())
        if self.peers is not None:
            fds.extend(self.peers.fds())
        if self.metrics_http is not None:
            fds.extend(self.metrics_http.fds())
        return fds

    def _spawn_worker(self):
        w, sock = self.pool.spawn(self._inherited_fds)
        c = self._add_client(sock)
        c.kind = "worker"
        c.worker = w
        c.pid = w.pid
        w.client = c
        self.starting += 1
        return w

    def _add_client(self, sock):
        sock.setblocking(False)
        self._next_client += 1
        c = Client(self._next_client, sock)
        self.clients[c.fd] = c
        self.ep.register(c.fd, _EPOLLIN)
        return c

    # --- the loop ---------------------------------------------------------
    def run(self):
        # The loop keeps tens of thousands of objects alive (tasks, object entries) and
        # allocates tens per task, most of which live as long as their task: the cyclic
        # collector, run by allocation counts, went over them while they were all still alive
        # (~5 us of CPU per task on LCS at block 30, measured with gc.callbacks, at a threshold
        # of 20,000). So start-up state is frozen out of its reach and collections run when the
        # loop is idle, by which time most of what a burst made is gone (_collect_garbage).
        gc.freeze()
        gc.disable()
        gc.set_threshold(20_000, 20, 100)   # what workers forked from now on (actors, replacements) run with
        ep = self.ep
        clients = self.clients
        lfd = self.listener.fileno() if self.listener else -1
        while self._running:
            timeout = 0 if self._dirty else (0.002 if self._gcs_pending() or self._starved_at else IDLE_WAIT)
            try:
                events = ep.poll(timeout)
            except InterruptedError:
                events = ()
            for fd, ev in events:
                if fd == lfd:
                    self._accept()
                    continue
                c = clients.get(fd)
                if c is None:
                    self._other_event(fd, ev)
                    continue
                if ev & _EPOLLOUT:
                    self._write(c)
                if ev & (_EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                    self._read(c)
            self._schedule()
            if self._lease_asks:
                asks, self._lease_asks = self._lease_asks, []
                for c, shape in asks:
                    if not c.closed:
                        self._lease_request(c, shape)
            self._flush_all()
            if self.gcs is not None:
                self._flush_gcs(not events)
            if not events:
                self.pool.reap()
                if timeout == IDLE_WAIT:   # nothing to do for that long: most of what work made is gone
                    self._collect_garbage(GC_IDLE_MIN)
            elif gc.get_count()[0] > GC_BUSY_MAX:
                self._collect_garbage(0)

    @staticmethod
    def _collect_garbage(least):
        """Collect reference cycles if more than `least` objects were made since the last time;
        every GC_FULL_EVERY-th time all generations (cycles of long-lived objects: clients, workers)."""
        young, _, collections = gc.get_count()
        if young > least:
            gc.collect(2 if collections >= GC_FULL_EVERY else 1)

    def _accept(self, listener=None):
        while True:
            try:
                sock, _ = (listener or self.listener).accept()
            except (BlockingIOError, InterruptedError):
                return
            self._add_client(sock)

    def _read(self, c):
        chunk = P.recv_ready(c.sock, P.RECV_SIZE)
        if chunk is None:
            return
        if not chunk:
            self._disconnect(c)
            return
        buf = c.rbuf + chunk if c.rbuf else chunk
        pos = 0
        n = len(buf)
        loads = P._loads
        while n - pos >= 4:
            (length,) = _HDR.unpack_from(buf, pos)
            if n - pos - 4 < length:
                break
            msgs = loads(buf[pos + 4:pos + 4 + length])
            pos += 4 + length
            self._handle(c, msgs)
            if c.closed:
                return
        c.rbuf = buf[pos:] if pos < n else b""

    def send(self, c, msg):
        if not c.closed:
            c.out.append(msg)
            self._dirty.add(c)

    def _flush_all(self):
        dirty = self._dirty
        if not dirty:
            return
        self._dirty = set()
        for c in dirty:
            if c.closed or not c.out:
                continue
            data = P.encode(c.out)
            c.out = []
            c.wbuf = c.wbuf + data if c.wbuf else data
            self._write(c)

    def _write(self, c):
        if c.closed or not c.wbuf:
            return
        try:
            n = c.sock.send(c.wbuf)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            self._disconnect(c)
            return
        waiting = n < len(c.wbuf)
        was_waiting = c.writing
        c.wbuf = c.wbuf[n:] if waiting else b""
        if waiting != was_waiting:
            c.writing = waiting
            self.ep.modify(c.fd, _EPOLLIN | _EPOLLOUT if waiting else _EPOLLIN)

    # --- messages ---------------------------------------------------------
    def _handle(self, c, msgs):
        objects = self.objects
        for m in msgs:
            t = m[0]
            if t == P.SUBMIT:
                self._submit(c, m[1])
            elif t == P.DONE:
                self._done(c, m[1], m[2], m[3], m[4])
            elif t == P.REFS:
                if m[1]:
                    objects.add_holders(m[1], c)
                if m[2]:
                    objects.release_holders(m[2], c)
            elif t == P.GET:
                self._subscribe(c, m[1])
            elif t == P.PUT:
                self._put(c, m[1], m[2], m[3], m[4])
            elif t == P.EXPORT:
                if m[1] not in self.functions:
                    self.functions[m[1]] = m[2]
                    if self.gcs is not None:
                        self.gcs.export_function_async(m[1], m[2])
            elif t == P.BLOCKED:
                self._blocked(c, True)
            elif t == P.UNBLOCKED:
                self._blocked(c, False)
            elif t == P.HELLO:
                self._hello(c, m)
            elif t == P.RETURN:
                self._returned(c, m[1])
            elif t == P.PIN:
                for oid in m[1]:
                    objects.entry(oid).contained_in += 1
            elif t == P.DIRECT_DONE:
                self._direct_done(c, m[1], m[2], m[3], m[4], m[5], m[6], len(m) > 7)
            elif t == P.LEASE_REQUEST:
                # Answered once this turn's submissions are placed: a driver asks with its first
                # task, in the same frame, and a lease granted before that task was queued took the
                # resources it needed. A driver that then does other work, reading nothing, would
                # hold them while its tasks waited (the call-back reaches it only when it reads).
                self._lease_asks.append((c, m[1]))
            elif t == P.LEASE_RETURN:
                self._lease_return(m[1])
            elif t == P.CANCEL:
                self._cancel(m[1], m[2], m[3])
            elif t == P.REQUEST:
                self._request(c, m[1], m[2], m[3])
            elif t == P.OBJ:          # from another node (rayfast/node/peers.py)
                self.peers.on_obj(c, m[1], m[2], m[3], m[4] if len(m) > 4 else ())
            elif t == P.WELCOME:
                self.peers.welcome(c)
            elif t == P.PULL:
                self.peers.serve_pull(c, m[1])
            elif t == P.METRICS:
                self.metrics.record(m[1])
            elif self.actors is not None and self.actors.handle(c, m):
                pass
            else:
                raise ValueError(f"unknown message {t}")

    def _hello(self, c, m):
        if m[1] == "peer":
            self.peers.hello(c, m)
            return
        c.kind = m[1]
        c.pid = m[2]
        if c.kind == "worker":
            w = c.worker
            w.started = True
            self.starting -= 1
            if w.state == IDLE and w.task is None and w.actor_id is None:
                self.idle.append(w)
        else:
            c.owner = len(m) > 4 and m[4]
            self.send(c, (P.WELCOME, self.node_info()))

    def _submit(self, c, spec):
        self._next_handle += 1
        handle = self._next_handle
        task_id = spec[P.S_TASK_ID]
        n = spec[P.S_NUM_RETURNS]
        returns = P.return_ids(task_id, max(n, 1))
        rec = TaskRecord(handle, spec, c, spec[P.S_RESOURCES], returns, self.stats.submitted(spec[P.S_NAME]))
        self.tasks[handle] = rec
        self.task_by_id[task_id] = handle
        objects = self.objects
        rec.deps = deps = objects.add_task(returns, c, handle, spec[P.S_ARG_REFS], spec[P.S_BORROWED])
        self._lineage_written(spec, len(returns))
        if spec[P.S_KIND] != P.TASK_NORMAL:
            self.actors.submit(rec)
            return
        if spec[P.S_OPTIONS] and self.pgs.removed_for(rec):
            return
        if not deps or self.deps.add_task(handle, deps) == 0:
            self._enqueue(rec)
        else:
            objects.add_waiter(deps, handle)
            self._pipeline_on_producer(rec)

    def _enqueue(self, rec):
        q = self.queues.get(rec.shape)
        if q is None:
            q = self.queues[rec.shape] = TaskQueue()
        q.push(rec.handle)

    def _put(self, c, oid, kind, data, contained):
        e = self.objects.entry(oid)
        e.holders.add(c.id)
        c.held.add(oid)
        if e.state != READY:   # else: a retried generator task storing an item its first run stored
            self._object_ready(e, kind, data, contained)

    def _object_ready(self, e, kind, data, contained, pinned=False):
        subs = self.objects.set_ready(e, kind, data, contained, pinned)
        if kind == P.STORE and self.warmer is not None:
            self.warmer.used()
        if subs:
            msg = (P.OBJ, e.oid, kind, data, contained) if contained else (P.OBJ, e.oid, kind, data)
            for s in subs:
                self.send(s, msg)
            if contained and self.peers is not None and self.peers.links:
                self.peers.push_contained(subs, contained)   # another node gets those too
        for handle in self.deps.mark_ready(e.oid):
            rec = self.tasks.get(handle)
            if rec is None:
                continue
            if rec.spec[P.S_KIND] == P.TASK_NORMAL:
                self._enqueue(rec)
            else:
                self.actors.deps_ready(rec)
        self.objects.maybe_free(e)

    def _subscribe(self, c, oids):
        objects = self.objects
        for oid in oids:
            e = objects.entry(oid)
            if e.state == READY:
                if e.contains:
                    self.send(c, (P.OBJ, oid, e.kind, e.data, e.contains))
                    if c.kind == "peer":
                        self.peers.push_contained((c,), e.contains)
                else:
                    self.send(c, (P.OBJ, oid, e.kind, e.data))
            else:
                if e.subscribers is None:
                    e.subscribers = [c]
                else:
                    e.subscribers.append(c)

    def _blocked(self, c, blocked):
        w = c.worker
        if w is None or w.blocked == blocked:
            return
        if w.task is not None:
            shape = w.task.shape
        elif w.worker_id in self.leases:
            shape = w.shape        # a task run over a lease waits in get()
        else:
            return
        w.blocked = blocked
        cpu = dict(shape).get("CPU", 0)
        if cpu:
            self.avail["CPU"] += cpu if blocked else -cpu

    # --- scheduling -------------------------------------------------------
    def _fits(self, shape):
        return fits_in(shape, self.avail)

    def _fits_total(self, shape):
        """Whether the node could ever run shape (else it stays pending, as in Ray)."""
        return fits_in(shape, self.total)

    def _schedule(self):
        # placement groups first; one that waits for resources in use starves like a task
        starving = bool(self.pgs.pending) and self.pgs.schedule()
        actors = self.actors
        if actors is not None and (actors.pending or actors.orphaned):
            actors.schedule()          # actors waiting for resources to be placed
            starving = self._actors_waiting() or starving
        if self.queues:
            starving = self._schedule_tasks() or starving
        if not starving:
            self._starved_at = None
        elif self.leases:
            self._starving()

    def _actors_waiting(self):
        """Whether an actor waits for resources in use (not for more than the node has: it stays
        pending, as in Ray, and must not keep leases from being granted)."""
        actors = self.actors
        return actors is not None and any(self._fits_total(a.placement) for a in actors.pending)

    def _schedule_tasks(self):
        """Dispatch what resources and workers allow; True if runnable tasks still wait."""
        waiting = False
        idle = self.idle
        for shape, q in self.queues.items():
            while len(q):
                if idle and self._fits(shape):
                    w = idle.pop()
                    pipelined = False
                else:
                    # queued behind a busy worker only when the node is full: with a CPU free
                    # (a worker starting or to be forked) or lent to a lease (called back when work
                    # waits) the task gets a worker of its own, as in Ray; a long task wrongly
                    # taken for brief must not hold another back while a CPU is to be had
                    w = None if self._room_elsewhere(shape) else self._pipeline_target(shape, q)
                    if w is None:
                        if not self._fits_total(shape):
                            # never here: to a node that can run it, else pending (as Ray)
                            if self.peers is not None:
                                self.peers.spill(shape, q)
                            break
                        if self.peers is not None and not self._fits(shape):
                            self.peers.spill_busy(shape, q)   # no room here now: to a node with some
                            if not len(q):
                                break
                        waiting = True
                        if not idle and self._fits(shape) and self.starting == 0 and self._may_grow():
                            self._spawn_worker()
                        break
                    pipelined = True
                handle = q.pop()
                rec = self.tasks.get(handle)
                if rec is None or rec.done:
                    if not pipelined:
                        idle.append(w)
                    continue
                self._dispatch(rec, w, pipelined)
        return waiting

    # --- leases (rayfast/direct.py) ----------------------------------------
    def _lease_request(self, c, shape):
        q = self.queues.get(shape)
        # (no lease for GPU tasks: the node gives them their GPUs at dispatch; nor for a placement
        # group's: removing the group ends its tasks, which must pass through here)
        if c.kind == "driver" and self.idle and self._fits(shape) and not (q and len(q)) \
                and not self._actors_waiting() and "GPU" not in dict(shape) \
                and not any("_group_" in name for name, _ in shape):
            w = self.idle.pop()
            avail = self.avail
            for name, amount in shape:
                avail[name] = avail.get(name, 0) - amount
            w.state = LEASED
            w.shape = shape
            self.leases[w.worker_id] = [w, c, False]
            self.send(c, (P.LEASE_GRANT, w.worker_id, w.pid,
                          worker_socket_path(self.session_dir, w.worker_id), shape))
        else:
            self.send(c, (P.LEASE_DENIED,))

    def _lease_return(self, worker_id):
        lease = self.leases.pop(worker_id, None)
        if lease is None:
            return
        w = lease[0]
        avail = self.avail
        for name, amount in w.shape:
            if name == "CPU" and w.blocked:
                continue
            avail[name] = avail.get(name, 0) + amount
        w.blocked = False
        if w.state == LEASED:
            w.state = IDLE
            self.idle.append(w)

    def _starving(self):
        """Work waits while workers are leased: after LEASE_STARVE, call the leases back."""
        now = time.monotonic()
        if self._starved_at is None:
            self._starved_at = now
        elif now - self._starved_at > LEASE_STARVE:
            self._starved_at = None
            self._revoke_leases()

    def _revoke_leases(self):
        for lease in self.leases.values():
            if not lease[2]:
                lease[2] = True
                self.send(lease[1], (P.LEASE_REVOKE, lease[0].worker_id))

    def _direct_done(self, c, spec, results, start, end, worker_id, pid, cancelled=False):
        """A task ran over a lease: record it as if it had passed through here (a run cut short
        by cancel() counts as started, not finished: as in _done)."""
        name = spec[P.S_NAME]
        objects = self.objects
        if results and results[0][1] == P.ERROR:
            task_failed(self, spec[P.S_TASK_ID], results[0][2])
        self._lineage_written(spec, len(results))   # (first: a result may be freed at once below)
        for oid, kind, data, contained, held in results:
            if not held and not contained and kind != P.STORE and objects.get(oid) is None:
                self._return_freed(oid)
                continue   # its caller dropped it before anyone else saw it (core_worker._unhold_released)
            e = objects.entry(oid)
            if held:
                e.holders.add(c.id)
                c.held.add(oid)
            self._object_ready(e, kind, data, contained, pinned=True)
        stats = self.stats
        row = stats.submitted(name)
        stats.start_row(row, 0.0)
        if not cancelled:
            stats.finish_row(row, start, end)
        self.events.append((name, spec[P.S_TASK_ID], worker_id, pid, start, end))

    def _lineage_written(self, spec, n):
        """Record a task's lineage in the GCS for as long as any of its n returned objects
        lives (it is what would rebuild them). A long-running cluster keeps no lineage of
        tasks long forgotten, and a brief task's is mostly never written at all.
        Only normal tasks: an actor call's result cannot be rebuilt by running the call again
        (the actor's state has moved on, and a restart re-runs the constructor, replaying
        nothing), so recording calls cost the node and the GCS per call for nothing."""
        if self.gcs is not None and n and spec[P.S_KIND] == P.TASK_NORMAL:
            self.gcs.put_task_async(spec)
            self._lineage[spec[P.S_TASK_ID]] = n

    def _return_freed(self, oid):
        lineage = self._lineage
        tid = oid[:16]
        left = lineage.get(tid)
        if left is None or oid[19] & 0x80:   # not a task's we track, or a put (the index's RF_PUT_BIT)
            return
        if left > 1:
            lineage[tid] = left - 1
        else:
            del lineage[tid]
            self.gcs.drop_task_async(tid)

    def _pipeline_target(self, shape, q):
        """A busy worker to queue one more task on, or None.

        Only tasks of functions known to run briefly are queued behind others
        (a long task queued behind another could wait while a worker idles);
        for those, sending several at once saves a wakeup and a message per
        task on both sides. A worker that blocks in get() hands its queue back.
        """
        rec = self.tasks.get(q.peek())
        if rec is None or not FunctionStats.is_short(rec.stats, PIPELINE_MAX_RUN) or _one_at_a_time(rec):
            return None
        best = None
        for w in self.busy:
            if (w.shape == shape and not w.blocked and not w.retiring and len(w.pipeline) < PIPELINE_DEPTH
                    and (best is None or len(w.pipeline) < len(best.pipeline))):
                best = w
        return best

    def _room_elsewhere(self, shape):
        """Whether shape, with no idle worker for it now, will soon have one: its resources are
        free and a worker is starting or can be forked, or they are lent to a lease."""
        if self._fits(shape):
            return self.starting > 0 or self._may_grow()
        return bool(self.leases) and fits_in(shape, self.available())

    def _may_grow(self):
        # Workers blocked in get() do not count: nesting deeper than the cap must not deadlock.
        n = sum(1 for w in self.pool.workers.values() if w.actor_id is None and not w.blocked)
        return n < max(self.num_cpus, 1) * MAX_WORKERS_PER_CPU

    def _resolve(self, rec):
        """(oid, kind, data) of each top-level argument, or the error entry of a failed one.

        An argument not ready yet is made by a task queued before rec on its worker
        (_pipeline_dependents): LOCAL, the worker has it."""
        if not rec.deps:
            return (), None
        resolved = self.objects.resolve(rec.deps, P.LOCAL, P.ERROR)
        if type(resolved) is not tuple:
            return None, resolved
        return resolved, None

    def _dispatch(self, rec, w, pipelined=False):
        resolved, failed = self._resolve(rec)
        if failed is not None:
            if not pipelined:
                w.state = IDLE
                self.idle.append(w)
            self._finish(rec, tuple((oid, P.ERROR, failed.data, ()) for oid in rec.returns))
            return
        if not pipelined:
            avail = self.avail
            for name, amount in rec.shape:
                avail[name] = avail.get(name, 0) - amount
            w.shape = rec.shape
            w.task = rec
            self.busy.append(w)
            rec.gpu_ids = self.gpus.take(rec.shape)
        w.pipeline.append(rec)
        spec = rec.spec
        if rec.gpu_ids is not None:
            spec = spec[:P.S_OPTIONS] + (dict(spec[P.S_OPTIONS] or (), gpu_ids=rec.gpu_ids),)
        fid = spec[P.S_FUNCTION_ID]
        if fid in w.functions:
            fn = None
        else:
            fn = self.functions.get(fid)
            w.functions.add(fid)
        w.state = BUSY
        rec.worker = w
        rec.dispatched = now = time.time()
        self.stats.start_row(rec.stats, now - rec.submitted)
        self.send(w.client, (P.TASK, rec.handle, spec, resolved, fn))
        if FunctionStats.is_short(rec.stats, PIPELINE_MAX_RUN):
            self._pipeline_dependents(rec, w)

    def _pipeline_dependents(self, rec, w):
        """Queue tasks that wait only for results of tasks queued on w behind rec, on w.

        The worker keeps the results of its last PIPELINE_DEPTH tasks, so a chain of
        tiny tasks runs there back to back, not one round trip through this loop
        (two wakeups) per link. Only brief functions, as for _pipeline_target."""
        entries = self.objects.entries
        tasks = self.tasks
        for oid in rec.returns:
            e = entries.get(oid)
            if e is None or not e.waiters:
                continue
            for h in e.waiters:
                if len(w.pipeline) >= PIPELINE_DEPTH or w.blocked:
                    self._cut_short[w] = rec
                    return
                dep = tasks.get(h)
                if dep is not None and dep.worker is None:
                    self._pipeline_behind(dep, w)

    def _pipeline_on_producer(self, rec):
        """rec, just submitted, waits: if what it waits for is being made on one worker, queue it there."""
        producer = self.objects.first_producer(rec.deps)
        if producer is not None:
            p = self.tasks.get(producer)
            w = p.worker if p is not None else None
            if w is not None and w.pipeline and not w.blocked and len(w.pipeline) < PIPELINE_DEPTH \
                    and FunctionStats.is_short(p.stats, PIPELINE_MAX_RUN):
                self._pipeline_behind(rec, w)

    def _pipeline_behind(self, rec, w):
        """Dispatch rec, waiting in the dependency table, to w if every argument it lacks is
        made by a task queued on w (and it is brief, of w's shape, not cancelled)."""
        if not self.objects.made_on(rec.deps, self.tasks, w):   # first: most candidates also wait for a task elsewhere
            return
        if rec.cancelled or rec.shape != w.shape or w.retiring or rec.handle not in self.deps \
                or not FunctionStats.is_short(rec.stats, PIPELINE_MAX_RUN) or _one_at_a_time(rec):
            return
        self.deps.remove_task(rec.handle)
        self._dispatch(rec, w, True)

    def _release_resources(self, rec, w):
        if rec.gpu_ids is not None:
            self.gpus.give(rec.gpu_ids, rec.shape)
            rec.gpu_ids = None
        avail = self.avail
        total = self.total
        for name, amount in rec.shape:
            if name == "CPU" and w is not None and w.blocked:
                continue  # already given back while blocked
            if name in total:   # (not a removed placement group's: it must not come back)
                avail[name] = avail.get(name, 0) + amount
        if w is not None:
            w.blocked = False

    def _done(self, c, handle, results, start, end):
        rec = self.tasks.get(handle)
        w = c.worker
        if rec is None:
            return
        if rec.spec[P.S_KIND] != P.TASK_NORMAL:
            self.actors.done(c, rec, results, start, end)
            return
        opts = rec.spec[P.S_OPTIONS]
        if w is not None and opts and "max_calls" in opts:
            self._count_call(w, rec.spec, opts["max_calls"])
        self._leave_worker(rec, w)
        spec = rec.spec
        if not rec.cancelled:   # a run cut short by cancel() would make its function look brief
            self.stats.finish_row(rec.stats, start, end, rec.dispatched, c.id,
                                  w is not None and bool(w.pipeline) and w.pipeline[0].dispatched <= end)
        if w is not None:
            self.events.append((spec[P.S_NAME], spec[P.S_TASK_ID], w.worker_id, w.pid, start, end))
        else:
            self.events.append((spec[P.S_NAME], spec[P.S_TASK_ID], 0, os.getpid(), start, end))
        if rec.cancelled:
            results = cancelled_results(rec.spec)
        self._finish(rec, results)

    def _leave_worker(self, rec, w):
        """rec, at the head of w's queue, is done there (or was handed back unstarted): the next
        queued task takes its resources over, or w is idle."""
        if w is not None and w.pipeline and w.pipeline[0] is rec:
            w.pipeline.popleft()
        if w is not None and w.pipeline:
            w.task = w.pipeline[0]     # already running there; the resources carry over
            cut = self._cut_short.pop(w, None)
            if cut is not None and cut.worker is w and not cut.done:
                self._pipeline_dependents(cut, w)   # room again for what waits on it
        else:
            self._release_resources(rec, w)
            if w is not None:
                w.task = None
                w.state = IDLE
                self._not_busy(w)
                if w.retiring:
                    self.send(w.client, (P.EXIT,))   # a new worker replaces it when it is gone
                else:
                    self.idle.append(w)

    def _count_call(self, w, spec, max_calls):
        """Ray's max_calls: a worker that has run a function that many times takes no more tasks."""
        if w.calls is None:
            w.calls = {}
        fid = spec[P.S_FUNCTION_ID]
        w.calls[fid] = n = w.calls.get(fid, 0) + 1
        if n >= max_calls:
            w.retiring = True

    def _finish(self, rec, results):
        """Record a task's outcome and drop its hold on its arguments."""
        rec.done = True
        self.tasks.pop(rec.handle, None)
        tid = rec.spec[P.S_TASK_ID]
        if self.task_by_id.get(tid) == rec.handle:
            del self.task_by_id[tid]
        objects = self.objects
        if results and results[0][1] == P.ERROR:
            task_failed(self, tid, results[0][2])
        for oid, kind, data, contained in results:
            e = objects.get(oid)
            if e is None:
                # nobody holds it any more: keep store space tidy
                if kind == P.STORE:
                    try:
                        self.store.release(oid)
                    except KeyError:
                        pass
                continue
            self._object_ready(e, kind, data, contained)
        if rec.deps:
            objects.release_task_refs(rec.deps)
        if rec.spec[P.S_BORROWED]:
            objects.release_task_refs(rec.spec[P.S_BORROWED])

    def fail_task(self, rec, exc):
        self._finish(rec, error_results(rec.spec, exc))

    def unqueue(self, rec):
        """Take a task that waits for its arguments or resources out of the wait."""
        self.deps.remove_task(rec.handle)
        q = self.queues.get(rec.shape)
        if q is not None:
            q.remove(rec.handle)

    # --- cancellation -----------------------------------------------------
    def _cancel(self, oid, force, recursive):
        handle = self.task_by_id.get(oid[:16])
        rec = self.tasks.get(handle) if handle is not None else None
        if rec is None or rec.done:
            return
        if rec.spec[P.S_KIND] != P.TASK_NORMAL:
            if rec.spec[P.S_KIND] == P.TASK_ACTOR_METHOD and self.actors is not None:
                self.actors.cancel(rec)
            return
        rec.cancelled = True
        w = rec.worker
        if recursive and w is not None and w.client is not None:
            # Ray's recursive=True: its children too, i.e. what its worker submitted since it got it
            for child in [r for r in self.tasks.values()
                          if r.owner is w.client and r.submitted >= rec.dispatched and not r.done]:
                self._cancel(child.returns[0], force, True)
        if w is not None and w.pipeline and w.pipeline[0] is rec:
            # tasks queued behind it that read its results there: back here, to see it cancelled
            returns = set(rec.returns)
            for r in w.pipeline:
                if r is not rec and not returns.isdisjoint(r.deps):
                    self.send(w.client, (P.CANCEL_QUEUED, r.handle))
        if w is not None and w.pipeline and w.pipeline[0] is not rec:
            self.send(w.client, (P.CANCEL_QUEUED, rec.handle))   # queued there, not started
        elif w is None:
            if self.peers is not None and self.peers.cancel(rec, force, recursive):
                return   # it runs on another node, which answers with its results
            self.unqueue(rec)
            self._finish(rec, cancelled_results(rec.spec))
        elif force:
            rec.retries_left = 0
            self.pool.kill(w)
        else:
            # The message naming the task is in the worker's socket before the SIGINT that
            # interrupts it: a worker that has not started the task yet reads it (node/worker.py).
            self.send(w.client, (P.CANCEL_CALL, rec.spec[P.S_TASK_ID]))
            self._flush_all()
            self.pool.kill(w, signal.SIGINT)

    # --- failures ---------------------------------------------------------
    def _disconnect(self, c):
        if c.closed:
            return
        c.closed = True
        self.clients.pop(c.fd, None)
        try:
            self.ep.unregister(c.fd)
        except (OSError, ValueError):
            pass
        c.sock.close()
        self._dirty.discard(c)
        w = c.worker
        if w is not None:
            self._worker_died(w)   # first: a result of a task failed now is garbage below
        if c.pid is not None:
            self._release_store_holds(c)
        if self.actors is not None:
            self.actors.client_gone(c)
        if self.pgs.scoped:
            self.pgs.creator_gone(c)
        for wid, lease in list(self.leases.items()):
            if lease[1] is c:
                self._lease_return(wid)
                if not c.owner:
                    self._end_leased(lease[0])
        if c.kind == "peer" and self.peers is not None:
            self.peers.link_closed(c)
        if w is None and not c.owner:
            self._end_tasks_of(c)
        cid = c.id
        objects = self.objects
        for oid in c.held:
            objects.release_holder(oid, cid)
        c.held = set()
        for e in list(objects.entries.values()):
            if e.subscribers and c in e.subscribers:
                e.subscribers.remove(c)
        if c.owner:
            self._running = False

    def _end_tasks_of(self, c):
        """A driver that left a long-lived node takes its tasks with it, as a finished job does in
        Ray: queued ones are dropped, running ones (and what they submitted) are killed, so they
        hold no CPU for ever. (An owner's node stops anyway.)"""
        for rec in [r for r in self.tasks.values()
                    if r.owner is c and not r.done and r.spec[P.S_KIND] == P.TASK_NORMAL]:
            self._cancel(rec.returns[0], True, True)

    def _end_leased(self, w):
        """A worker leased to a driver that left may still run the driver's task, which this node
        never saw: it is killed rather than made idle (the pool refills)."""
        try:
            self.idle.remove(w)
        except ValueError:
            pass
        self.pool.kill(w)

    def _release_store_holds(self, c):
        """Give back the store pins and unsealed objects of c's process once it has exited.

        A worker's socket closes only when its process exits (before a retry of its task
        can create the same objects again). A driver may close its connection (shutdown())
        and go on reading its views, so its pidfd is watched until it exits."""
        pid = c.pid
        if c.worker is None:
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                fd = None                  # exited and reaped already
            except OSError:                # no pidfd (old kernel): its pins stay
                return
            if fd is not None:
                if not select.select([fd], [], [], 0)[0]:
                    self._exits[fd] = pid
                    self.ep.register(fd, _EPOLLIN)
                    return
                os.close(fd)
        self._process_gone(pid)

    def _process_gone(self, pid):
        """Give back the store pins and unsealed objects of an exited process, and delete
        what it stored and never told us of: a put is announced with the process's next
        frame (or its flush timer's), a result with its DONE; dying in between leaves the
        object sealed with nobody to ask for it. A result the task's retry will store
        again stays (the retry replaces it); one of a task that failed instead goes."""
        self.store.release_process(pid)
        objects = self.objects
        for oid in self.store.list_objects(written_by=pid):
            e = objects.get(oid)
            if e is None or (e.state == READY and e.kind != P.STORE):
                self.store.delete(oid)

    def _worker_died(self, w):
        if not w.started:
            self.starting -= 1
        try:
            self.idle.remove(w)
        except ValueError:
            pass
        self.pool.remove(w)
        self._cut_short.pop(w, None)
        self.pool.reap()
        if w.worker_id in self.leases:
            self._lease_return(w.worker_id)
        rec = w.task
        w.task = None
        self._not_busy(w)
        queued = list(w.pipeline)[1:] if rec is not None else list(w.pipeline)
        w.pipeline.clear()
        self._requeue(queued)
        if w.actor_id is not None and self.actors is not None:
            self.actors.worker_died(w)
        elif rec is not None and not rec.done:
            self._release_resources(rec, w)
            rec.worker = None
            if rec.cancelled:   # killed by cancel(force=True) while it ran
                self.fail_task(rec, TaskCancelledWorkerCrashedError(rec.spec[P.S_TASK_ID].hex()))
            elif rec.retries_left != 0:
                if rec.retries_left > 0:
                    rec.retries_left -= 1
                self.requeue_front(rec)
            else:
                self.fail_task(rec, WorkerCrashedError(
                    f"The worker running {rec.spec[P.S_NAME]} (pid {w.pid}) died unexpectedly "
                    f"and no retries were left (max_retries={rec.spec[P.S_MAX_RETRIES]})."))
        if self._running and self._count_task_workers() < self.num_cpus:
            self._spawn_worker()

    def requeue_front(self, rec):
        """A task whose run was cut short goes back to the front of its queue."""
        q = self.queues.get(rec.shape)
        if q is None:
            q = self.queues[rec.shape] = TaskQueue()
        q.push_front(rec.handle)

    def take_over(self, c):
        """c's socket leaves the loop's clients (a pull's connection: rayfast/node/object_transfer.py)."""
        c.closed = True
        self.clients.pop(c.fd, None)
        self._dirty.discard(c)
        try:
            self.ep.unregister(c.fd)
        except (OSError, ValueError):
            pass
        return c.sock

    def _not_busy(self, w):
        try:
            self.busy.remove(w)
        except ValueError:
            pass

    def _requeue(self, recs):
        """Put tasks that never started back at the front of their queues, in order."""
        for rec in reversed(recs):
            if rec.done:
                continue
            rec.worker = None
            if rec.cancelled:
                self._finish(rec, cancelled_results(rec.spec))
                continue
            if rec.deps and self.deps.add_task(rec.handle, rec.deps) != 0:
                continue   # it was queued behind the task making an argument, which did not finish there
            q = self.queues.get(rec.shape)
            if q is None:
                q = self.queues[rec.shape] = TaskQueue()
            q.push_front(rec.handle)

    def _returned(self, c, handles):
        """The worker hands back tasks it has not started: queued behind a task that blocked,
        cancelled there, or (at the head of its queue) missing an argument it should have had."""
        w = c.worker
        if w is None:
            return
        recs = []
        for h in handles:
            rec = self.tasks.get(h)
            if rec is None or rec not in w.pipeline:
                continue
            if rec is w.pipeline[0]:
                self._leave_worker(rec, w)
            else:
                w.pipeline.remove(rec)
            recs.append(rec)
        self._requeue(recs)

    def _count_task_workers(self):
        return sum(1 for w in self.pool.workers.values() if w.actor_id is None)

    def _on_object_freed(self, oid):
        self.deps.mark_missing(oid)
        if self.peers is not None and self.peers.copies:
            self.peers.object_freed(oid)   # a copy another node holds for us
        if self._lineage:
            self._return_freed(oid)
        actors = self.actors
        if actors is not None and actors.by_live:
            actors.object_freed(oid)   # an actor's liveness object: its last handle is gone

    def _on_object_orphaned(self, oid):
        actors = self.actors
        if actors is not None and oid in actors.by_live:
            actors.orphaned.append(oid)   # an actor not made yet lost its last handle (_schedule)

    # --- requests ---------------------------------------------------------
    def _request(self, c, req_id, what, args):
        if what in _CLUSTER_QUERIES and self.peers is not None:
            # answered from a fresh copy of the GCS node table, read without waiting
            self.peers.read_nodes(lambda: self._request_now(c, req_id, what, args))
        else:
            self._request_now(c, req_id, what, args)

    def _request_now(self, c, req_id, what, args):
        try:
            if what == "actor_channel":   # may be answered later (rayfast/node/actors.py)
                value = self.actors.answer(what, args, c, req_id)
                if value is DEFERRED:
                    return
            else:
                value = self.answer(what, args, c)
        except Exception as e:  # the caller re-raises it
            value = e
        self.send(c, (P.REPLY, req_id, value))

    def answer(self, what, args, c):
        if what == "ping":
            return True
        if what.startswith("pg_"):
            return self.pgs.answer(what, args, c)
        peers = self.peers
        if what == "cluster_resources":
            total = dict(self.total)
            return visible(peers.add_totals(total) if peers is not None else total)
        if what == "available_resources":
            avail = self.available()
            if peers is not None:
                peers.add_available(avail)
            return {k: v for k, v in visible(avail).items() if v > 0}
        if what == "nodes":
            return [self.node_record()] + (peers.node_records() if peers is not None else [])
        if what == "statistics":
            return self.statistics()
        if what == "timeline":
            return list(self.timeline) + self.events
        if what == "summary":
            return self.stats.summary()
        if what == "state":
            return state_rows(self, args[0])
        if what == "shutdown":
            self._running = False
            return True
        if self.actors is not None:
            return self.actors.answer(what, args, c)
        raise ValueError(f"unknown request {what!r}")

    def available(self):
        """Free resources, counting leased ones as free: a lease is lent, not used (its
        worker idles between its driver's calls and is called back when work waits)."""
        avail = dict(self.avail)
        for w, _, _ in self.leases.values():
            for name, amount in w.shape:
                if not (name == "CPU" and w.blocked):
                    avail[name] = avail.get(name, 0) + amount
        return avail

    def node_record(self):
        host = self.peers.address.rsplit(":", 1)[0] if self.peers is not None else "127.0.0.1"
        return {"NodeID": self.node_id.hex(), "Alive": True, "NodeManagerAddress": host,
                "NodeManagerHostname": socket.gethostname(), "Resources": visible(self.total), "Labels": self.labels,
                "alive": True, "ObjectStoreSocketName": self.store.name,
                "NodeManagerPort": 0, "MetricsExportPort": self.metrics_port()}

    def statistics(self):
        queued = sum(len(q) for q in self.queues.values())
        return {"node_id": self.node_id.hex(), "resources_total": visible(self.total),
                "resources_available": visible(self.available()), "leases": len(self.leases), "tasks_queued": queued,
                "tasks_waiting_for_args": len(self.deps), "tasks_in_flight": len(self.tasks),
                "workers": self.pool.statistics(), "objects": self.objects.statistics(),
                "dependency_table": self.deps.statistics(),
                "queues": {str(k): q.statistics() for k, q in self.queues.items()},
                "store": self.store.statistics(), "functions": self.stats.summary(),
                "store_warmer": self.warmer.statistics() if self.warmer is not None else {},
                "peers": self.peers.statistics() if self.peers is not None else {},
                "metrics": dict(self.metrics.statistics(),
                                **(self.metrics_http.statistics() if self.metrics_http is not None else {})),
                "gcs": self.gcs.statistics() if self.gcs is not None else {}}

    def _gcs_pending(self):
        return self.gcs is not None and (self.events or self.gcs.queued() or self.gcs.dirty)

    def attach_gcs(self, gcs):
        self.gcs = gcs
        for fd in gcs.by_fd:
            self.ep.register(fd, _EPOLLIN)

    def _other_event(self, fd, ev):
        peers = self.peers
        if peers is not None:
            if fd == peers.listener.fileno():
                self._accept(peers.listener)
                return
            if peers.transfers.on_event(fd, ev):
                return
        if self.metrics_http is not None and self.metrics_http.on_event(fd, ev):
            return
        pid = self._exits.pop(fd, None)
        if pid is not None:                # a disconnected driver's process has exited
            self.ep.unregister(fd)
            os.close(fd)
            self._process_gone(pid)
            return
        sh = self.gcs.by_fd.get(fd) if self.gcs is not None else None
        if sh is None:
            return
        if ev & _EPOLLIN:
            self.gcs.on_readable(sh)
        if ev & _EPOLLOUT:
            sh.want_write = False
            self.ep.modify(fd, _EPOLLIN)
            self.gcs.dirty.add(sh)

    def _flush_gcs(self, idle):
        """Send GCS writes when the loop is idle or a batch has built up: fewer, larger pipelines,
        and their packing (a spec pickled, an event formatted: a quarter of the loop's CPU on
        tiny tasks) kept out of a burst of work unless the burst is long."""
        gcs = self.gcs
        if not idle and len(self.events) < GCS_BATCH and gcs.queued() < GCS_BATCH:
            return
        if idle and self.peers is not None:
            self.peers.on_idle()
        if self.events:   # (a turn packs GCS_CHUNK at most: the loop pauses a few ms, not ~100)
            self._events_to_gcs(GCS_CHUNK)
        if gcs.dirty or gcs.queued():
            for sh in gcs.send_some(GCS_CHUNK):
                sh.want_write = True
                self.ep.modify(sh.sock.fileno(), _EPOLLIN | _EPOLLOUT)

    def send_gcs_now(self):
        """Send what is queued for the GCS now (a read someone waits for is among it)."""
        for sh in self.gcs.send_some(GCS_CHUNK):
            if not sh.want_write:
                sh.want_write = True
                self.ep.modify(sh.sock.fileno(), _EPOLLIN | _EPOLLOUT)

    def _events_to_gcs(self, n):
        """The first n pending timeline events go to the GCS link (written with its next send)."""
        ev = self.events[:n]
        del self.events[:n]
        self.timeline.extend(ev)
        self.gcs.add_events_async(self.node_id, ev)

    # --- shutdown ---------------------------------------------------------
    def stop(self):
        self._running = False

    def shutdown(self):
        """Stop every worker and close every socket; idempotent."""
        if self.pool is None:
            return
        if self.gcs is not None and self.events:   # for the GCS link's last flush (its close())
            self._events_to_gcs(len(self.events))
        workers = list(self.pool.workers.values()) if self.pool else []
        for w in workers:
            if w.client is not None and not w.client.closed:
                try:
                    w.client.sock.setblocking(True)
                    w.client.sock.sendall(P.encode([(P.EXIT,)]))
                except OSError:
                    pass
        deadline = time.monotonic() + 1.0
        for w in workers:
            while time.monotonic() < deadline:
                try:
                    pid, _ = os.waitpid(w.pid, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid:
                    break
                time.sleep(0.005)
            else:
                kill_children((w.pid,))   # what its tasks started: it did not live to (worker.py)
                self.pool.kill(w)
        for w in workers:
            self.pool.kill(w)
            try:
                os.waitpid(w.pid, 0)
            except ChildProcessError:
                pass
        for c in list(self.clients.values()):
            c.sock.close()
        if self.peers is not None:
            self.peers.close()
        if self.metrics_http is not None:
            self.metrics_http.close()
        if self.listener is not None:
            self.listener.close()
            try:
                os.unlink(self.socket_path)
            except OSError:
                pass
        self.pool = None
