"""The node manager's actor table: placement, per-caller ordering, pipelining, restarts, names.

An actor is placed like a task (its creation task waits for its arguments and
for resources), then gets a worker process of its own. Method calls are kept
in one FIFO per calling process; the head of each FIFO is forwarded to the
actor's process as soon as its arguments are ready, without waiting for the
previous call to finish: the actor's process queues them and runs them one at
a time in arrival order, so calls of one caller run in submission order while
a burst of calls costs no round trip each. Calls forwarded but not finished
are kept (in order) so that a restarted actor can run them again
(max_task_retries) or they can fail with RayActorError.

Lifetime: every handle holds a ref to the creation task's return object, the
*liveness object*. When the object table frees it (no process, task spec or
stored object refers to it any more), the actor ends once its pending calls
are done, unless it is detached.
"""
from __future__ import annotations

import collections
import pickle
import signal
import time
from collections import deque

from rayfast import protocol as P
from rayfast import serialization
from rayfast.exceptions import ActorAlreadyExistsError, ActorDiedError, ActorUnavailableError
from rayfast.direct import cancelled_error, worker_socket_path
from rayfast.node.worker_pool import ACTOR
from rayfast.scheduling import pinned_to, unpinned

PENDING, CREATING, ALIVE, RESTARTING, DEAD = "PENDING", "CREATING", "ALIVE", "RESTARTING", "DEAD"
DEFERRED = object()   # a request answered later (the node manager sends nothing now)


def _actor_died_error(message, cause_blob, actor_id=None, unavailable=False):
    """Rebuilt in the caller's process (the node manager never unpickles user exceptions)."""
    cause = None
    if cause_blob is not None:
        from rayfast import serialization
        try:
            cause = serialization.loads_inline(cause_blob)
        except Exception as e:  # the cause's class cannot be loaded here
            cause = None
            message += f" (its cause could not be deserialized: {e})"
        if cause is not None:
            message = f"{message}\n{cause}"
            if hasattr(cause, "as_instanceof_cause"):  # a RayTaskError that is also the user's class
                cause = cause.as_instanceof_cause()
    cls = ActorUnavailableError if unavailable else ActorDiedError
    return cls(message, cause=cause, actor_id=actor_id.hex() if actor_id is not None else None)


class _ErrorReducer:
    __slots__ = ("args",)

    def __init__(self, *args):
        self.args = args

    def __reduce__(self):
        return (_actor_died_error, self.args)


def _error_data(aid, message, cause_blob=None, unavailable=False):
    """The pickled error of calls to actor aid: ActorDiedError, or ActorUnavailableError (Ray's
    name for "it is restarting: this call may or may not have run")."""
    return pickle.dumps(_ErrorReducer(message, cause_blob, aid, unavailable), 5)


def dead_error_data(aid, class_name, pid, namespace, reason):
    """A dead actor's error as Ray words it: its base message, the actor, why it is dead.
    (Also made by an ending actor's process for the calls it will not run: actor.py.)"""
    return _error_data(aid, f"The actor died unexpectedly before finishing this task.\n"
                            f"\tclass_name: {class_name}\n\tactor_id: {aid.hex()}\n\tpid: {pid}\n"
                            f"\tnamespace: {namespace}\n"
                            f"The actor is dead because {reason}.")


EXITED_BY_USER = "its worker process has died: it exited by a user request (exit_actor() is called, or sys.exit(0))"


def _lost_on_restart(a):
    """The error of a call the actor's process died running, with no retries left, while the actor
    restarts: Ray's ActorUnavailableError (the call may or may not have run)."""
    return _error_data(a.aid, f"The actor {a.class_name} is unavailable: it died while running this call, "
                              f"which had no retries left (max_task_retries), and is being restarted. The "
                              f"call may or may not have run.", unavailable=True)


class Actor:
    __slots__ = ("aid", "create", "extras", "state", "worker", "queues", "inflight", "restarts_left",
                 "max_restarts", "hold", "placement", "holding", "name", "namespace", "detached",
                 "out_of_scope", "dead_data", "pinned", "num_restarts", "class_name", "live_oid",
                 "live_freed", "no_restart", "pid", "max_task_retries", "last_call", "channel_waiters",
                 "gpu_ids", "unordered", "remote")

    def __init__(self, rec):
        spec = rec.spec
        ex = spec[P.S_OPTIONS] or {}
        self.aid = spec[P.S_ACTOR_ID]
        self.create = rec
        self.extras = ex
        self.state = PENDING
        self.worker = None
        self.queues = {}            # caller client id -> deque of TaskRecords not yet forwarded
        self.inflight = {}          # handle -> TaskRecord forwarded, not done (insertion = run order)
        self.max_restarts = ex.get("max_restarts", 0)
        self.max_task_retries = ex.get("max_task_retries", 0)
        self.restarts_left = self.max_restarts
        self.hold = spec[P.S_RESOURCES]
        self.placement = tuple(tuple(x) for x in ex.get("placement", self.hold))
        self.holding = False
        self.gpu_ids = None         # the GPUs it holds (node/gpus.py), with its resources
        self.name = ex.get("name")
        self.namespace = ex.get("namespace")
        self.detached = bool(ex.get("detached"))
        self.out_of_scope = False
        self.dead_data = None
        self.pinned = False
        self.num_restarts = ex.get("restarts", 0)   # (a restart created on another node: counted on)
        self.class_name = ex.get("class_name", spec[P.S_NAME])
        self.live_oid = rec.returns[0]
        self.live_freed = False
        self.no_restart = False
        self.pid = None
        self.last_call = {}         # caller client id -> handle of its latest call through here
        self.channel_waiters = []   # (client, req_id, handle): channel requests answered once that call is done
        # Ray: an async or threaded actor's calls do not wait for earlier calls' arguments; only a
        # sequential actor runs each caller's calls in submission order (unless allow_out_of_order_execution).
        self.unordered = bool(ex.get("is_async") or (ex.get("max_concurrency") or 1) > 1
                              or ex.get("concurrency_groups") or ex.get("out_of_order"))
        self.remote = None          # the link to the node it lives on, if only another node could place it


class ActorManager:
    def __init__(self, nm):
        self.nm = nm
        self.actors = {}            # actor id -> Actor (until dead and unreferenced)
        self.dead_list = collections.deque(maxlen=1000)   # the latest dead, for the state API (node/state.py)
        self.by_live = {}           # liveness object id -> Actor
        self.names = {}             # (namespace, name) -> actor id
        self.waiting = set()        # task handles whose arguments are not ready yet
        self.pending = []           # Actors waiting for resources to be placed
        self.orphaned = []          # liveness objects of actors not made yet that lost every handle
        self.job_namespace = "default"
        self.created_total = 0
        self.restarted_total = 0

    # --- submission -------------------------------------------------------------------
    def submit(self, rec):
        if rec.spec[P.S_KIND] == P.TASK_ACTOR_CREATE:
            self._submit_create(rec)
        else:
            self._submit_call(rec)

    def _submit_create(self, rec):
        a = Actor(rec)
        self.actors[a.aid] = a
        self.by_live[a.live_oid] = a
        if rec.owner is not None and rec.owner.owner and a.namespace:
            self.job_namespace = a.namespace
        if a.name is not None:
            self.names[(a.namespace or self.job_namespace, a.name)] = a.aid
        if rec.deps and self.nm.deps.add_task(rec.handle, rec.deps):
            self.waiting.add(rec.handle)
            return
        self._place(a)

    def _submit_call(self, rec):
        nm = self.nm
        a = self.actors.get(rec.spec[P.S_ACTOR_ID])
        if a is None:
            aid = rec.spec[P.S_ACTOR_ID]
            self._fail(rec, _error_data(aid, f"The actor {aid.hex()} is dead or unknown: cannot run "
                                             f"{rec.spec[P.S_NAME]}."))
            return
        if a.state == DEAD:
            self._fail(rec, a.dead_data)
            return
        if rec.retries_left is None:
            rec.retries_left = a.max_task_retries
        a.last_call[rec.owner.id] = rec.handle
        ex = rec.spec[P.S_OPTIONS]
        if ex is not None and "rerouted" in ex and self._rerouted(a, rec, ex["rerouted"]):
            return
        missing = nm.deps.add_task(rec.handle, rec.deps) if rec.deps else 0
        if missing:
            self.waiting.add(rec.handle)
        key = rec.owner.id
        q = a.queues.get(key)
        if q is None or a.unordered:   # (an unordered actor's queue holds only calls waiting for arguments)
            if not missing and a.state == ALIVE:
                self._forward(a, rec)
                return
            if q is None:
                q = a.queues[key] = deque()
        q.append(rec)
        if a.state == ALIVE and q[0] is rec and not missing:
            self._pump(a, key, q)

    def cancel(self, rec):
        """cancel() of a call that came through here: a queued one fails now, a forwarded one is
        the actor's to cancel (queued there: dropped; running async: cancelled; else it runs on)."""
        a = self.actors.get(rec.spec[P.S_ACTOR_ID])
        if a is None:
            return
        q = a.queues.get(rec.owner.id) if rec.owner is not None else None
        if q is not None and rec in q:
            q.remove(rec)
            if not q:
                del a.queues[rec.owner.id]
            self._fail(rec, serialization.dumps(cancelled_error(rec.spec))[0])
            if q and a.state == ALIVE:
                self._pump(a, rec.owner.id, q)
        elif rec.handle in a.inflight and a.worker is not None and a.worker.client is not None:
            self.nm.send(a.worker.client, (P.CANCEL_CALL, rec.spec[P.S_TASK_ID]))

    def _rerouted(self, a, rec, pid):
        """A call that was in flight on a direct channel when the actor's process (pid) ended.

        It is treated as if it had been forwarded to that process: the death
        costs it a retry (max_task_retries) or fails it. True if it was handled here."""
        if a.pid == pid and a.worker is not None:
            # We have not seen that process go yet: count it in flight there, worker_died decides.
            if rec.deps and self.nm.deps.add_task(rec.handle, rec.deps):
                self.waiting.add(rec.handle)
            a.inflight[rec.handle] = rec
            return True
        if rec.retries_left == 0:
            self._fail(rec, _lost_on_restart(a))
            return True
        if rec.retries_left > 0:
            rec.retries_left -= 1
        return False

    # --- direct channels (rayfast/actor_channel.py) -----------------------------------------
    def channel_request(self, c, req_id, aid):
        """A caller asks for the actor's socket; answered once the actor is alive and the
        caller's last call through here is done, so direct calls cannot overtake it."""
        a = self.actors.get(aid)
        w = c.worker
        if a is None or a.state == DEAD or (w is not None and w.actor_id == aid) or a.remote is not None:
            return None   # (an actor on another node is called through the nodes)
        waiter = (c, req_id, a.last_call.get(c.id))
        if not self._answer_waiter(a, waiter):
            a.channel_waiters.append(waiter)
        return DEFERRED

    def _answer_waiter(self, a, waiter):
        c, req_id, handle = waiter
        if a.state == DEAD or a.remote is not None:   # (restarted on another node meanwhile: no channel)
            self.nm.send(c, (P.REPLY, req_id, None))
            return True
        if a.state != ALIVE or a.worker is None or (handle is not None and handle in self.nm.tasks):
            return False
        w = a.worker
        self.nm.send(c, (P.REPLY, req_id, (w.worker_id, w.pid, worker_socket_path(self.nm.session_dir, w.worker_id),
                                           a.unordered)))
        return True

    def _check_waiters(self, a):
        a.channel_waiters = [wt for wt in a.channel_waiters if not wt[0].closed and not self._answer_waiter(a, wt)]

    def deps_ready(self, rec):
        self.waiting.discard(rec.handle)
        spec = rec.spec
        a = self.actors.get(spec[P.S_ACTOR_ID])
        if a is None:
            return
        if spec[P.S_KIND] == P.TASK_ACTOR_CREATE:
            if a.state == PENDING and rec is a.create:
                self._place(a)
            return
        if a.state == ALIVE:
            key = rec.owner.id
            q = a.queues.get(key)
            if q and (q[0] is rec or a.unordered):
                self._pump(a, key, q)

    def _pump(self, a, key, q):
        """Forward a caller's queued calls whose arguments are ready: from the head up to the first
        that waits, or, for an unordered actor, all of them (those that wait stay, in order)."""
        waiting = self.waiting
        held = []
        while q and a.state == ALIVE:
            rec = q[0]
            if rec.handle in waiting:
                if not a.unordered:
                    break
                held.append(q.popleft())
                continue
            q.popleft()
            self._forward(a, rec)
        q.extendleft(reversed(held))
        if not q and a.queues.get(key) is q:
            del a.queues[key]

    def _pump_all(self, a):
        for key, q in list(a.queues.items()):
            self._pump(a, key, q)

    def _forward(self, a, rec):
        nm = self.nm
        if a.remote is not None:   # its node runs the call, in the order it gets them (peers.py)
            nm.peers.forward(rec, a.remote)
            return
        if rec.deps:
            resolved, failed = nm._resolve(rec)
            if failed is not None:
                nm._finish(rec, tuple((oid, P.ERROR, failed.data, ()) for oid in rec.returns))
                return
        else:
            resolved = ()
        a.inflight[rec.handle] = rec
        nm.stats.started(rec.spec[P.S_NAME], time.time() - rec.submitted)
        nm.send(a.worker.client, (P.TASK, rec.handle, rec.spec, resolved, None))

    # --- placement and creation ---------------------------------------------------------
    def _place(self, a):
        if not self.nm._fits_total(a.placement) and self._place_elsewhere(a):
            return
        if self.pending or not self.nm._fits(a.placement):
            if a not in self.pending:
                self.pending.append(a)
            return
        self._start(a)

    def schedule(self):
        """Place actors waiting for resources (called from the node manager's scheduling pass)."""
        if self.orphaned:
            self._end_orphans()
        if not self.pending:
            return
        fits = self.nm._fits
        still = []
        for a in self.pending:
            if a.state == PENDING and fits(a.placement):
                self._start(a)
            elif a.state == PENDING and not (not self.nm._fits_total(a.placement) and self._place_elsewhere(a)):
                still.append(a)
        self.pending = still

    def _place_elsewhere(self, a):
        """An actor this node can never place is created on a live node that can (as a task is
        spilled: rayfast/node/peers.py); this node keeps its record and sends its calls there, in
        order. True if it went."""
        peers = self.nm.peers
        link = peers.link_for(a.placement) if peers is not None else None
        if link is None:
            return False
        a.remote = link
        a.state = ALIVE
        if a.num_restarts:
            a.create.spec = self._restart_spec(a, a.create.spec)
        peers.forward(a.create, link)
        self._record(a)
        if a.channel_waiters:
            self._check_waiters(a)
        self._pump_all(a)
        return True

    def node_died(self, link, node_id, reached, why, lost):
        """The node that actors of ours lived on (node_id, at the other end of link; reached: it had
        answered) is gone, and lost (task records sent there) with it. An actor with restarts left
        is placed again, here or on another node, as after a crash: its calls lost there are
        retried per max_task_retries, the others fail; one without, or pinned there by hard node
        affinity, dies. Returns the records of lost that are not actors'."""
        calls = {}
        tasks = []
        for rec in lost:
            if rec.spec[P.S_KIND] == P.TASK_NORMAL:
                tasks.append(rec)
            else:
                calls.setdefault(rec.spec[P.S_ACTOR_ID], []).append(rec)
        for a in [a for a in self.actors.values() if a.remote is link and a.state != DEAD]:
            a.remote = None
            recs = [rec for rec in calls.pop(a.aid, ()) if rec is not a.create]
            placement = a.placement
            if node_id is not None and pinned_to(placement, node_id.hex()):
                placement = unpinned(placement, a.extras)   # (soft affinity, SPREAD: anywhere now)
            if placement is not None and self._restarting(a, recs, reached):
                a.placement = placement
                a.state = PENDING
                self._place(a)
                continue
            self._die(a, self._dead(a, f"{why}, and NodeAffinitySchedulingStrategy pinned it there with soft=False"
                                    if placement is None else "it was killed by `ray.kill`" if a.no_restart else
                                    f"{why} and it has no restarts left (max_restarts={a.max_restarts})"),
                      kill=False)
            for rec in recs:
                self._fail(rec, a.dead_data)
        for aid, recs in calls.items():   # (calls still running there of actors already dead here)
            for rec in recs:
                self._fail(rec, _error_data(aid, f"The actor that {rec.spec[P.S_NAME]} was sent to died: {why}."))
        return tasks

    def _restarting(self, a, lost, ran=True):
        """Whether a, whose process (or node) is gone, restarts (max_restarts): if so it counts a
        restart, and lost, its calls that were running there, go back to the front of their callers'
        queues if they have retries left (max_task_retries), else fail. (ran: False for a node
        that never answered: nothing ran there, nothing is counted.)"""
        if a.no_restart or a.out_of_scope or (ran and a.restarts_left == 0):
            return False
        if ran:
            if a.restarts_left > 0:
                a.restarts_left -= 1
            a.num_restarts += 1
        retry = []
        error = _lost_on_restart(a)
        for rec in lost:
            if rec.done:
                continue
            if not ran or rec.retries_left != 0:
                if ran and rec.retries_left > 0:
                    rec.retries_left -= 1
                retry.append(rec)
            else:
                self._fail(rec, error)
        for rec in reversed(retry):
            q = a.queues.get(rec.owner.id)
            if q is None:
                q = a.queues[rec.owner.id] = deque()
            q.appendleft(rec)
        return True

    def _restart_spec(self, a, spec):
        """The creation spec of a restart: the actor's process sees the restart count (and is
        placed where a.placement says); a node it is created on counts on from there, with the
        restarts it has left."""
        extras = dict(a.extras, restarts=a.num_restarts, placement=a.placement, max_restarts=a.restarts_left)
        return spec[:P.S_OPTIONS] + (extras,)

    def _start(self, a):
        nm = self.nm
        restart = a.num_restarts > 0
        rec = a.create
        resolved, failed = nm._resolve(rec) if rec.deps else ((), None)
        if failed is not None:
            self._creation_failed(a, failed.data, rec)
            return
        if not a.holding:
            avail = nm.avail
            for name, amount in a.hold:
                avail[name] = avail.get(name, 0) - amount
            a.holding = True
            a.gpu_ids = nm.gpus.take(a.hold)
        w = nm._spawn_worker()
        w.actor_id = a.aid
        w.state = ACTOR
        a.worker = w
        a.pid = w.pid
        a.state = RESTARTING if restart else CREATING
        spec = rec.spec
        if restart:
            nm.tasks[rec.handle] = rec
            spec = self._restart_spec(a, spec)
        if a.gpu_ids is not None:
            spec = spec[:P.S_OPTIONS] + (dict(spec[P.S_OPTIONS], gpu_ids=a.gpu_ids),)
        fn = nm.functions.get(spec[P.S_FUNCTION_ID])
        nm.send(w.client, (P.TASK, rec.handle, spec, resolved, fn))
        self._record(a)

    def _created(self, a, rec, results, start, end):
        nm = self.nm
        ok = not results or results[0][1] != P.ERROR
        first = not rec.done
        if first:
            if start is not None:   # (a creation on another node is timed there)
                nm.stats.finished(rec.spec[P.S_NAME], start, end)
            if ok and a.max_restarts != 0:
                # Restarts re-run the constructor: keep its arguments alive until the actor is gone.
                objects = nm.objects
                for oid in rec.deps:
                    objects.entry(oid).task_refs += 1
                for oid in rec.spec[P.S_BORROWED]:
                    objects.entry(oid).task_refs += 1
                a.pinned = True
        else:
            nm.tasks.pop(rec.handle, None)
        if a.state == DEAD:
            if first:
                nm._finish(rec, results)
            return
        if ok:
            a.state = ALIVE
            if first:
                self.created_total += 1
                nm._finish(rec, results)   # may free the liveness object (every handle dropped)
            else:
                self.restarted_total += 1
            self._record(a)
            if a.state == ALIVE:
                self._pump_all(a)
                if a.channel_waiters:
                    self._check_waiters(a)
                self._maybe_end(a)
            return
        self._creation_failed(a, results[0][2], rec)

    def created_elsewhere(self, rec, results):
        """The creation of an actor of ours placed on another node is done there (peers.py)."""
        a = self.actors.get(rec.spec[P.S_ACTOR_ID])
        if a is not None and a.create is rec:
            self._created(a, rec, results, None, None)
        elif not rec.done:
            self.nm._finish(rec, results)

    def _creation_failed(self, a, err_blob, rec):
        data = _error_data(a.aid, f"The actor {a.class_name} died because of an error raised in its creation task.",
                           err_blob)
        if not rec.done:
            self.nm._finish(rec, tuple((oid, P.ERROR, err_blob, ()) for oid in rec.returns))
        self._die(a, data, kill=True)

    # --- completion -----------------------------------------------------------------------
    def done(self, c, rec, results, start, end):
        spec = rec.spec
        a = self.actors.get(spec[P.S_ACTOR_ID])
        if spec[P.S_KIND] == P.TASK_ACTOR_CREATE:
            if a is not None:
                self._created(a, rec, results, start, end)
            elif not rec.done:
                self.nm._finish(rec, results)
            return
        nm = self.nm
        if a is not None:
            a.inflight.pop(rec.handle, None)
        name = spec[P.S_NAME]
        nm.stats.finished(name, start, end)
        w = c.worker
        nm.events.append((name, spec[P.S_TASK_ID], w.worker_id if w is not None else 0,
                          c.pid or 0, start, end))
        if not rec.done:
            nm._finish(rec, results)
        if a is not None:
            if a.channel_waiters:
                self._check_waiters(a)
            if a.out_of_scope and not a.inflight and not a.queues:
                self._end(a)

    def _fail(self, rec, data):
        if rec.handle in self.waiting:
            self.waiting.discard(rec.handle)
            self.nm.deps.remove_task(rec.handle)
        if not rec.done:
            self.nm._finish(rec, tuple((oid, P.ERROR, data, ()) for oid in rec.returns))

    # --- death, restarts, lifetime ----------------------------------------------------------
    def _die(self, a, data, kill=True, graceful=False):
        """The actor is gone for good: fail its calls, free its resources and name."""
        if a.state == DEAD:
            return
        nm = self.nm
        a.state = DEAD
        a.dead_data = data
        self.dead_list.append(a)
        if a in self.pending:
            self.pending.remove(a)
        inflight = list(a.inflight.values())
        a.inflight.clear()
        queued = [rec for q in a.queues.values() for rec in q]
        a.queues.clear()
        for rec in inflight + queued:
            self._fail(rec, data)
        if a.create.handle in self.waiting:
            self.waiting.discard(a.create.handle)
            nm.deps.remove_task(a.create.handle)
        if not a.create.done:
            self._fail(a.create, data)
        if a.holding:
            avail = nm.avail
            for name, amount in a.hold:
                avail[name] = avail.get(name, 0) + amount
            a.holding = False
            if a.gpu_ids is not None:
                nm.gpus.give(a.gpu_ids, a.hold)
                a.gpu_ids = None
        if a.pinned:
            a.pinned = False
            objects = nm.objects
            for oid in a.create.deps:
                objects.release_task_ref(oid)
            for oid in a.create.spec[P.S_BORROWED]:
                objects.release_task_ref(oid)
        self._drop_name(a)
        if a.channel_waiters:
            self._check_waiters(a)
        w = a.worker
        if w is not None and kill:
            if graceful and w.client is not None and not w.client.closed:
                nm.send(w.client, (P.EXIT,))
            else:
                nm.pool.kill(w, signal.SIGKILL)
        self._record(a)
        if a.live_freed or a.detached:
            self._forget(a)

    def _forget(self, a):
        if self.actors.get(a.aid) is a:
            del self.actors[a.aid]
        if self.by_live.get(a.live_oid) is a:
            del self.by_live[a.live_oid]

    def _drop_name(self, a):
        if a.name is None:
            return
        key = (a.namespace or self.job_namespace, a.name)
        if self.names.get(key) == a.aid:
            del self.names[key]
            gcs = self.nm.gcs
            if gcs is not None:
                try:
                    gcs.gcs.unregister_name(key[0], key[1])
                except Exception:
                    pass

    def worker_died(self, w):
        a = self.actors.get(w.actor_id)
        if a is None or a.worker is not w:
            return
        a.worker = None
        if a.state == DEAD:
            return
        if self._restarting(a, list(a.inflight.values())):
            a.inflight.clear()
            self._start(a)
            return
        self._die(a, self._dead(a, "it was killed by `ray.kill`" if a.no_restart else
                                f"its worker process (pid {w.pid}) died unexpectedly and it has no restarts "
                                f"left (max_restarts={a.max_restarts})"), kill=False)

    def kill(self, aid, no_restart, from_self=False):
        a = self.actors.get(aid)
        if a is None or a.state == DEAD:
            return
        if from_self:
            self._die(a, self._dead(a, EXITED_BY_USER), kill=False)
            return
        if a.remote is not None:
            a.no_restart = a.no_restart or no_restart   # (not restarted here either if its node dies)
            self.nm.send(a.remote, (P.KILL_ACTOR, aid, no_restart))
            return
        if no_restart or a.worker is None:
            a.no_restart = True
            self._die(a, self._dead(a, "it was killed by `ray.kill`"), kill=True)
        else:
            self.nm.pool.kill(a.worker, signal.SIGKILL)

    def object_freed(self, oid):
        a = self.by_live.pop(oid, None)
        if a is None:
            return
        a.live_freed = True
        if a.state == DEAD:
            self._forget(a)
            return
        if a.detached:
            return
        a.out_of_scope = True
        self._maybe_end(a)

    def _end_orphans(self):
        """An actor not placed yet whose every handle is gone ends, as in Ray: nothing could call it,
        and one that waits for resources the node lacks would wait, holding its name, for ever.
        One with calls already submitted runs them first (`A.remote().f.remote()` drops the handle
        at once) and ends after the last, as any actor out of scope does.
        (Found by the object table, handled here: not from inside its bookkeeping.)"""
        oids, self.orphaned = self.orphaned, []
        referenced = self.nm.objects.referenced
        for oid in oids:
            a = self.by_live.get(oid)
            if a is not None and a.state == PENDING and not a.detached and not referenced(oid):
                a.out_of_scope = True
                if not a.queues and not a.inflight:
                    self._end(a)

    def _maybe_end(self, a):
        if a.out_of_scope and a.state == ALIVE and not a.inflight and not a.queues:
            if a.remote is not None:   # its node ends it once its calls are done (the liveness object's release)
                self._die(a, self._dead(a, "all references to the actor were removed"), kill=False)
            else:
                self._end(a)

    def _end(self, a):
        self._die(a, self._dead(a, "all references to the actor were removed"), kill=True, graceful=True)

    def client_gone(self, c):
        orphans = []
        for a in self.actors.values():
            q = a.queues.get(c.id)
            if q is not None and not q:
                del a.queues[c.id]
            a.last_call.pop(c.id, None)
            if a.create.owner is c and not a.detached and a.state != DEAD:
                orphans.append(a)
        # Ray: a non-detached actor fate-shares with its owner, the process that created it.
        for a in orphans:
            self._die(a, self._dead(a, f"its owner has died (the process that created it, pid {c.pid}); "
                                       f"detached actors outlive their creator"))

    def _dead(self, a, reason):
        return dead_error_data(a.aid, a.class_name, a.pid, self.actor_namespace(a), reason)

    # --- messages and requests -------------------------------------------------------------
    def handle(self, c, m):
        t = m[0]
        if t == P.KILL_ACTOR:
            self.kill(m[1], m[2], len(m) > 3 and m[3])
            return True
        return False

    def answer(self, what, args, c, req_id=None):
        if what == "actor_create":
            return self._create_named(c, args[0])
        if what == "get_actor":
            return self._get_actor(c, args[0], args[1])
        if what == "job_namespace":   # set by a driver's init(); read by its tasks' code
            if args:
                c.namespace = self.job_namespace = args[0]
            return self.namespace_of(c)
        if what == "list_named_actors":
            ns, all_ns = args
            ns = ns or self.namespace_of(c)
            if all_ns:
                return [{"name": n, "namespace": s} for (s, n) in self.names]
            return sorted(n for (s, n) in self.names if s == ns)
        if what == "actor_channel":
            return self.channel_request(c, req_id, args[0])
        if what == "actor_state":
            a = self.actors.get(args[0])
            return None if a is None else {"state": a.state, "pid": a.pid, "restarts": a.num_restarts}
        if what == "actors":
            return self.statistics()
        if what == "is_actor_call":   # cancel(force=True) asks: Ray refuses to force-cancel actor calls
            handle = self.nm.task_by_id.get(args[0])
            rec = self.nm.tasks.get(handle) if handle is not None else None
            return rec is not None and rec.spec[P.S_KIND] == P.TASK_ACTOR_METHOD
        raise ValueError(f"unknown request {what!r}")

    def namespace_of(self, c):
        """The namespace of the job c acts for: a driver's own (from its init()); a worker's is
        that of the driver its task or actor comes from, up the chain of submitters. The node's
        latest job's when the chain ends without one (a driver that has left)."""
        nm = self.nm
        for _ in range(100):   # chains are short; the bound only guards against a cycle
            if c is None:
                break
            if c.namespace is not None:
                return c.namespace
            w = c.worker
            if w is None:
                break
            if w.actor_id is not None:
                a = self.actors.get(w.actor_id)
                if a is None:
                    break
                if a.namespace:
                    return a.namespace
                c = a.create.owner
            elif w.task is not None:
                c = w.task.owner
            else:
                lease = nm.leases.get(w.worker_id)   # running a leased driver's task directly
                c = lease[1] if lease is not None else None
        return self.job_namespace

    def actor_namespace(self, a):
        """a's namespace: its own (a named actor's), else its creator's job's."""
        return a.namespace or self.namespace_of(a.create.owner)

    def _create_named(self, c, spec):
        ex = spec[P.S_OPTIONS]
        ns = ex.get("namespace") or self.namespace_of(c)
        name = ex["name"]
        aid = self.names.get((ns, name))
        if aid is not None:
            a = self.actors.get(aid)
            if a is not None and a.state != DEAD:
                if ex.get("get_if_exists"):
                    self._hold_for(c, a)
                    return a.aid, a.extras["meta"], a.detached
                raise ActorAlreadyExistsError(f"The name {name!r} (namespace {ns!r}) is already taken by another actor. "
                                 f"Use get_if_exists=True to get it, or rayfast.get_actor({name!r}).")
            del self.names[(ns, name)]
        gcs = self.nm.gcs
        if gcs is not None:
            try:
                holder = gcs.gcs.register_name(ns, name, spec[P.S_ACTOR_ID])
            except Exception:
                holder = None
            if holder is not None and holder != spec[P.S_ACTOR_ID]:
                # a stale claim from an actor that is gone (we hold every live name of this node)
                try:
                    gcs.gcs.unregister_name(ns, name)
                    gcs.gcs.register_name(ns, name, spec[P.S_ACTOR_ID])
                except Exception:
                    pass
        if not ex.get("namespace"):
            spec = spec[:P.S_OPTIONS] + (dict(ex, namespace=ns),)
        self.nm._submit(c, spec)
        return spec[P.S_ACTOR_ID], ex["meta"], bool(ex.get("detached"))

    def _get_actor(self, c, ns, name):
        ns = ns or self.namespace_of(c)
        aid = self.names.get((ns, name))
        a = self.actors.get(aid) if aid is not None else None
        if a is None or a.state == DEAD:
            raise ValueError(f"Failed to look up actor with name {name!r} in namespace {ns!r}: no live actor "
                             f"has that name. (Names are per namespace; detached actors keep theirs until "
                             f"killed.)")
        self._hold_for(c, a)
        return a.aid, a.extras["meta"], a.detached

    def _hold_for(self, c, a):
        """Count c as a holder of the liveness object right away: its new handle is on the way."""
        if a.live_freed:
            return
        e = self.nm.objects.entries.get(a.live_oid)
        if e is not None:
            e.holders.add(c.id)
            c.held.add(a.live_oid)

    # --- bookkeeping -----------------------------------------------------------------------
    def _record(self, a):
        gcs = self.nm.gcs
        if gcs is None:
            return
        try:
            from rayfast.gcs.tables import dumps
            key = b"actor:" + a.aid
            gcs.write(a.aid, "HSET", key, "state", dumps(a.state), "class_name", dumps(a.class_name),
                      "name", dumps(a.name), "namespace", dumps(a.namespace), "pid", dumps(a.pid),
                      "node_id", dumps(self.nm.node_id), "num_restarts", dumps(a.num_restarts),
                      "detached", dumps(a.detached))
        except Exception:
            pass

    def statistics(self):
        states = {}
        for a in self.actors.values():
            states[a.state] = states.get(a.state, 0) + 1
        return {"actors": len(self.actors), "states": states, "named": len(self.names),
                "pending_placement": len(self.pending), "waiting_for_args": len(self.waiting),
                "created_total": self.created_total, "restarted_total": self.restarted_total,
                "inflight": sum(len(a.inflight) for a in self.actors.values())}
