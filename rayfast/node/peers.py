"""Links to the other nodes of the cluster, and the tasks this node spills to them.

Scheduling stays bottom-up (DESIGN.md): a task runs where it was submitted
whenever this node could ever run it. Only a task whose resource request
this node's *total* resources can never meet (it would wait as infeasible)
leaves it: it goes to a live node whose total does meet it, found in the GCS
node table, which this node reads without waiting (`NodeGcs.read_all_shards`)
when such a task waits and its copy is older than a second. Nothing here
runs for a task that stays on its node.

A link is a TCP connection that the forwarding node (the *origin*) opens,
without blocking, when it first needs that peer, and registers in its loop
like any client's socket. The peer sees the origin as one more client: the
origin submits the task (SUBMIT, the function's EXPORT first), and the peer
runs it as if a local driver had, holding and pushing its results to that
client. So a forwarded task gets everything a local one does there
(dependency table, pipelining, worker crashes retried by the peer itself),
and its results come back as OBJ messages that this module turns into the
task's outcome here, delivered by the node manager exactly as a local
task's (subscribers, refs, errors with the remote traceback).

Objects cross with the task. The origin subscribes the link to the task's
arguments (and refs nested in them), so each is pushed as it is ready: an
inline value inside the message, a store object as its size, which the peer
pulls into its own store before the task runs (`object_transfer.py`). A
store result stays in the peer's store, held there by the link, and is
pulled here as soon as it arrives if anything here refers to it (its
submitter is subscribed to it, and a waiting task reads it): the task counts
as done here when its values are. The peer's copy is released when this
node frees the object (the origin owns what it submitted), an inline
result's at once. A later task forwarded to the same peer with that object
as argument finds it there and moves nothing.

A link that closes is a dead node: the tasks forwarded over it go back to
this node's queue, with a retry consumed (`max_retries`, as a worker crash)
if it was reached, and are spilled again to another node that can run them,
or wait as infeasible if none can; with no retries left they fail with
`NodeDiedError`. A task pinned to that node by soft affinity or SPREAD loses the
pin, one pinned by hard affinity fails. Actors that lived there restart
elsewhere if they have restarts left (`ActorManager.node_died`). The node is
marked dead in the GCS.
"""
import select
import socket
import time

from rayfast import protocol as P
from rayfast.exceptions import NodeDiedError, ObjectLostError, TaskUnschedulableError
from rayfast._core.objects import READY
from rayfast.gcs.tables import NODE_TABLE_COMMANDS, dumps, parse_nodes
from rayfast.node.object_transfer import Transfers
from rayfast import serialization
from rayfast.scheduling import fits_in, pinned_to, unpinned, visible

REFRESH_EVERY = 1.0       # seconds a copy of the node table is used for spilling at most
READ_GIVE_UP = 2.0        # seconds after which a node table read with no answer is given up (GCS gone)
LOAD_EVERY = 0.5          # seconds between this node's writes of its free resources to the GCS at most


class _Link:
    """What this node knows of one peer connection (a Client of the node manager)."""
    __slots__ = ("node_id", "address", "up", "functions", "forwarded")

    def __init__(self, node_id, address):
        self.node_id = node_id
        self.address = address      # the peer's listener (HOST:PORT), where its objects are pulled from
        self.up = False             # the peer has answered: a task sent may have run there
        self.functions = set()      # function ids exported over this link
        self.forwarded = 0          # tasks of ours running there


class _Forwarded:
    """A task of ours running on a peer: its results as they come back."""
    __slots__ = ("rec", "link", "left", "results")

    def __init__(self, rec, link, n):
        self.rec = rec
        self.link = link
        self.left = n               # results not yet here (pulls included)
        self.results = []


class Peers:
    def __init__(self, nm, host="127.0.0.1"):
        self.nm = nm
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))
        sock.listen(256)
        sock.setblocking(False)
        self.listener = sock
        self.address = "%s:%d" % (host, sock.getsockname()[1])
        nm.ep.register(sock.fileno(), select.EPOLLIN)
        self.transfers = Transfers(nm.store, nm.ep)
        self.links = {}             # Client -> _Link (both directions)
        self.out = {}               # node id -> Client: our link to that node
        self.nodes = {}             # node id -> its GCS record (the last copy read)
        self.dead = set()           # node ids whose link closed
        self.forwarded = {}         # task id -> _Forwarded
        self.copies = {}            # oid -> Client: a peer holds a copy of our object for us
        self._read_at = 0.0
        self._reading = False
        self._read_id = None
        self._after_read = []
        self._load = None
        self._load_at = 0.0
        self._sent = {}             # node id -> [its node table record, tasks sent it by spill_busy since]

    # --- the node table ---------------------------------------------------------------
    def read_nodes(self, then=None):
        """Read the GCS node table without waiting (then() once it is in); at most once per
        REFRESH_EVERY unless someone waits for the answer."""
        if then is not None:
            self._after_read.append(then)
        gcs = self.nm.gcs
        if gcs is None:             # (no GCS: nothing but this node to know of)
            self._read_done()
            return
        if self._reading or (then is None and time.monotonic() - self._read_at < REFRESH_EVERY):
            return
        self._reading = True
        self._read_at = time.monotonic()
        read = self._read_id = object()
        gcs.read_all_shards(NODE_TABLE_COMMANDS, lambda replies: self._got_nodes(read, replies))
        self.nm.send_gcs_now()

    def _got_nodes(self, read, replies):
        if read is not self._read_id:
            return                  # given up on (on_idle)
        me = self.nm.node_id
        self.nodes = {n["node_id"]: n for n in parse_nodes(replies) if n["node_id"] != me}
        self._read_done()

    def _read_done(self):
        self._reading = False
        self._read_id = None
        self._read_at = time.monotonic()
        after, self._after_read = self._after_read, []
        for then in after:
            then()

    def _live(self):
        return [n for nid, n in self.nodes.items()
                if n["alive"] and nid not in self.dead and n.get("peer_address")]

    def on_idle(self):
        """When the loop is idle: a node table read that the GCS never answered is given up (its
        waiters get the last copy); this node's free resources go to the GCS when they changed
        (LOAD_EVERY at most: what available_resources() shows of it elsewhere)."""
        now = time.monotonic()
        if self._reading and now - self._read_at > READ_GIVE_UP:
            self._read_done()
        if now - self._load_at < LOAD_EVERY or self.nm.gcs is None:
            return
        self._load_at = now
        available = self.nm.available()
        if available != self._load:
            self._load = available
            me = self.nm.node_id
            self.nm.gcs.write(me, "HSET", "node:load", me, dumps({"available": available}))

    # --- spilling ---------------------------------------------------------------------
    def spill(self, shape, q):
        """Forward the tasks of q (a shape this node can never run) to live peers that can;
        they stay queued here if none can (as infeasible), and the node table is read again."""
        tasks = self.nm.tasks
        while len(q):
            link = self.link_for(shape)
            if link is None:
                return
            rec = tasks.get(q.pop())
            if rec is None or rec.done:
                continue
            opts = rec.spec[P.S_OPTIONS]
            if opts and opts.get("generator"):
                self.nm.fail_task(rec, TaskUnschedulableError(
                    f"{rec.spec[P.S_NAME]} is a generator task that only another node could run "
                    f"(it asks for {dict(shape)}); generator tasks do not cross nodes yet."))
                continue
            self.forward(rec, link)

    def spill_busy(self, shape, q):
        """Bottom-up scheduling's other half: ready tasks of a shape this node can run but has
        no room for now go to live peers whose last reported free resources hold them, as many
        as those hold (less what we sent them since that report). Plain tasks only, in queue
        order: one with options (placement group, affinity, a generator...) or forwarded to us
        stops it. The node table (with each node's free resources, written every LOAD_EVERY)
        is read again at most every REFRESH_EVERY while tasks wait."""
        self.read_nodes()
        if not self.nodes:
            return
        tasks = self.nm.tasks
        for n in self._live():
            room = self._room(n, shape)
            while room > 0 and len(q):
                rec = tasks.get(q.peek())
                if rec is None or rec.done:
                    q.pop()
                    continue
                if rec.spec[P.S_OPTIONS] or rec.owner.kind == "peer":   # (queues hold normal tasks only)
                    return
                q.pop()
                self.forward(rec, self._link_to(n))
                self._sent[n["node_id"]][1] += 1
                room -= 1

    def _room(self, node, shape):
        """How many tasks of shape the node's last reported free resources hold, less those we
        sent it since that report (a new read of the node table is a new report)."""
        free = (node.get("load") or {}).get("available")
        if not free:
            return 0
        fits = min((int(free.get(name, 0.0) / amount) if amount > 0 else 1 << 30) for name, amount in shape) \
            if shape else 0
        sent = self._sent.get(node["node_id"])
        if sent is None or sent[0] is not node:
            sent = self._sent[node["node_id"]] = [node, 0]
        return fits - sent[1]

    def link_for(self, shape):
        """A link to the live node with the fewest of our tasks that can run shape; None if no
        node can (the node table is read again)."""
        live = [n for n in self._live() if fits_in(shape, n["resources"])]
        if not live:
            self.read_nodes()
            return None
        return self._link_to(min(live, key=lambda n: self._load_of(n["node_id"])))

    def _load_of(self, node_id):
        c = self.out.get(node_id)
        return self.links[c].forwarded if c is not None else 0

    def _link_to(self, node):
        nid = node["node_id"]
        c = self.out.get(nid)
        if c is not None:
            return c
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        host, port = node["peer_address"].rsplit(":", 1)
        sock.connect_ex((host, int(port)))   # (refused or unreachable: the socket errors, the loop closes it)
        nm = self.nm
        c = nm._add_client(sock)
        c.kind = "peer"
        self.out[nid] = c
        self.links[c] = _Link(nid, node["peer_address"])
        nm.send(c, (P.HELLO, "peer", None, None, False, nm.node_id, self.address))
        return c

    def forward(self, rec, c):
        """Send rec (a task, an actor's creation or one of its calls) to the node at the other
        end of c, which runs it for us."""
        nm = self.nm
        link = self.links[c]
        spec = rec.spec
        fid = spec[P.S_FUNCTION_ID]
        if fid not in link.functions and fid in nm.functions:
            link.functions.add(fid)
            nm.send(c, (P.EXPORT, fid, nm.functions.get(fid)))
        nm.send(c, (P.SUBMIT, spec))
        needed = [oid for _, oid in spec[P.S_ARG_REFS]] + list(spec[P.S_BORROWED])
        if needed:
            nm._subscribe(c, needed)   # each pushed as it is ready (after the SUBMIT, so the peer waits for it)
        self.forwarded[spec[P.S_TASK_ID]] = _Forwarded(rec, c, len(rec.returns))
        link.forwarded += 1

    def cancel(self, rec, force, recursive):
        """cancel() of a task of ours running on a peer: the peer cancels it and answers with
        its results (True); False if rec is not forwarded."""
        f = self.forwarded.get(rec.spec[P.S_TASK_ID])
        if f is None:
            return False
        self.nm.send(f.link, (P.CANCEL, rec.returns[0], force, recursive))
        return True

    # --- messages over links ------------------------------------------------------------
    def hello(self, c, m):
        """A node opened a link to us (it will forward tasks): it is a client, answered WELCOME."""
        c.kind = "peer"
        c.pid = None
        self.links[c] = _Link(m[5], m[6])
        self.nm.send(c, (P.WELCOME, {"node_id": self.nm.node_id}))

    def welcome(self, c):
        link = self.links.get(c)
        if link is not None:
            link.up = True

    def on_obj(self, c, oid, kind, data, contained):
        """An object's value (or, STORE, its size: pull it) from the node at the other end of c:
        a result of a task we forwarded there, or an object it pushed to us (an argument of a
        task it forwarded here, or one that a value it sent refers to). Refs inside the value
        (contained), whose values it pushes next, are held here for c until the value holding
        them is ready here (and counts them)."""
        nm = self.nm
        if contained:
            nm.objects.add_holders(contained, c)
        f = self.forwarded.get(oid[:16])
        if f is not None and f.link is c:
            self._result(f, oid, kind, data, contained)
            return
        e = nm.objects.get(oid)
        if e is None or e.state == READY:   # nothing here needs it, or a copy is here
            self._received(c, oid)
        elif kind == P.STORE:
            self.transfers.pull(oid, data, self.links[c].address,
                                lambda ok: self._pushed_pulled(c, oid, data, contained, ok))
        else:
            nm._object_ready(e, kind, data, contained)
            self._received(c, oid, contained)

    def push_contained(self, subs, contained):
        """A value sent to another node refers to these objects: push them too, held here for that
        node until it has them (it answers with a release: _received)."""
        nm = self.nm
        for s in subs:
            if s in self.links:
                nm.objects.add_holders(contained, s)
                nm._subscribe(s, contained)

    def _received(self, c, oid, contained=()):
        """A pushed object is here (or not needed): the sender's hold of it for us goes, and so
        does ours of the refs inside it (its value counts them now)."""
        self.nm.send(c, (P.REFS, (), (oid,)))
        if contained:
            self.nm.objects.release_holders(contained, c)

    def _pushed_pulled(self, c, oid, size, contained, ok):
        nm = self.nm
        e = nm.objects.get(oid)
        if e is None or e.state == READY:
            if ok:
                nm.store.release(oid)       # nobody here needs it any more
        elif ok:
            nm._object_ready(e, P.STORE, size, contained)
        else:
            nm._object_ready(e, P.ERROR, _lost(oid, "its copy could not be pulled from the node holding it"), ())
        if not c.closed:
            self._received(c, oid, contained)

    def _result(self, f, oid, kind, data, contained):
        nm = self.nm
        c = f.link
        if kind != P.STORE:
            if f.rec.spec[P.S_KIND] == P.TASK_ACTOR_CREATE:
                self.copies[oid] = c   # the actor's liveness object: its node holds it while we do
            else:
                nm.send(c, (P.REFS, (), (oid,)))   # its value is in this message: the peer's copy goes
            self._got(f, (oid, kind, data, contained))
            return
        e = nm.objects.get(oid)
        if e is None or not (nm.objects.referenced(oid) or e.subscribers):   # nothing to pull it for
            nm.send(c, (P.REFS, (), (oid,)))
            self._got(f, (oid, P.ERROR, _lost(oid, "it was dropped before it was made"), contained))
            return
        self.copies[oid] = c
        self.transfers.pull(oid, data, self.links[c].address,
                            lambda ok: self._result_pulled(f, oid, data, contained, ok))

    def _result_pulled(self, f, oid, size, contained, ok):
        if self.forwarded.get(f.rec.spec[P.S_TASK_ID]) is not f:
            if ok:      # its node died meanwhile and the task is retried: this copy is not used
                self.nm.store.release(oid)
            return
        if ok:
            self._got(f, (oid, P.STORE, size, contained))
        else:
            self._got(f, (oid, P.ERROR, _lost(oid, "it could not be pulled from the node that made it"),
                          contained))

    def _got(self, f, result):
        f.results.append(result)
        f.left -= 1
        if f.left == 0:
            del self.forwarded[f.rec.spec[P.S_TASK_ID]]
            link = self.links.get(f.link)
            if link is not None:
                link.forwarded -= 1
            if f.rec.spec[P.S_KIND] == P.TASK_ACTOR_CREATE:
                self.nm.actors.created_elsewhere(f.rec, f.results)
            else:
                self.nm._finish(f.rec, f.results)
            for r in f.results:       # the values count the refs inside them now (on_obj held them)
                if r[3]:
                    self.nm.objects.release_holders(r[3], f.link)

    def object_freed(self, oid):
        """We freed oid: the peer holding a copy for us lets it go too."""
        c = self.copies.pop(oid, None)
        if c is not None:
            self.nm.send(c, (P.REFS, (), (oid,)))

    def serve_pull(self, c, oid):
        """c (accepted on our listener) asked for a store object: it becomes that transfer."""
        self.transfers.serve(self.nm.take_over(c), oid)

    # --- failures ---------------------------------------------------------------------
    def link_closed(self, c):
        """The node at the other end of c is gone (or never answered): our tasks there go
        back to the queue, to be spilled again, or fail if they have no retries left."""
        link = self.links.pop(c, None)
        if link is None:
            return
        nm = self.nm
        if self.out.get(link.node_id) is c:
            del self.out[link.node_id]
        if link.node_id not in self.dead:
            self.dead.add(link.node_id)
            if nm.gcs is not None and link.node_id is not None:
                nm.gcs.write(link.node_id, "HSET", "node:dead", link.node_id, repr(time.time()))
        for oid in [o for o, h in self.copies.items() if h is c]:
            del self.copies[oid]
        objects = nm.objects
        for oid in list(c.held):   # values we were waiting for from it (refs inside what it sent)
            e = objects.get(oid)
            if e is not None and e.state != READY and e.producer is None:
                nm._object_ready(e, P.ERROR, _lost(oid, f"the node holding it ({link.address}) died"), ())
        lost = [f.rec for f in self.forwarded.values() if f.link is c]
        for rec in lost:
            del self.forwarded[rec.spec[P.S_TASK_ID]]
        if nm.actors is not None:   # (first: it takes the actors' records, and restarts them elsewhere)
            lost = nm.actors.node_died(c, link.node_id, link.up, f"the node it lived on ({link.address}) died",
                                       lost)
        for rec in lost:
            if rec.done:
                continue
            if rec.cancelled:
                nm.fail_task(rec, NodeDiedError(
                    f"The node running {rec.spec[P.S_NAME]} ({link.address}) died while it was being cancelled."))
            elif not link.up or rec.retries_left != 0:
                if link.up and rec.retries_left > 0:   # (a node never reached ran nothing)
                    rec.retries_left -= 1
                if self._repin(rec, link.node_id):
                    nm.requeue_front(rec)
            else:
                nm.fail_task(rec, NodeDiedError(
                    f"The node running {rec.spec[P.S_NAME]} ({link.address}, node id "
                    f"{link.node_id.hex() if link.node_id else '?'}) died unexpectedly and no retries "
                    f"were left (max_retries={rec.spec[P.S_MAX_RETRIES]})."))
        if link.node_id is not None:
            self._repin_waiting(link.node_id)

    def _repin(self, rec, node_id):
        """A task pinned to node_id, which died: soft affinity or SPREAD lose the pin, hard affinity
        fails it (as in Ray). True if it is to be queued (unpinned, or never pinned there)."""
        if node_id is None or not pinned_to(rec.shape, node_id.hex()):
            return True
        opts = rec.spec[P.S_OPTIONS]
        shape = unpinned(rec.shape, opts)
        if shape is None:
            self.nm.unqueue(rec)   # (if it waits for arguments)
            self.nm.fail_task(rec, TaskUnschedulableError(
                f"{rec.spec[P.S_NAME]} cannot run: the node specified via NodeAffinitySchedulingStrategy "
                f"({node_id.hex()}) died, and soft=False."))
            return False
        rec.shape = shape
        spec = rec.spec   # (its spec too: a node it is spilled to queues it by the spec's resources)
        rec.spec = spec[:P.S_RESOURCES] + (shape,) + spec[P.S_RESOURCES + 1:]
        return True

    def _repin_waiting(self, node_id):
        """The tasks here pinned to node_id, which died, that were not sent there yet (queued, or
        waiting for their arguments): as _repin, under their new shape."""
        nm = self.nm
        key = node_id.hex()
        for rec in [r for r in nm.tasks.values()
                    if r.spec[P.S_KIND] == P.TASK_NORMAL and not r.done and pinned_to(r.shape, key)]:
            q = nm.queues.get(rec.shape)
            queued = q is not None and q.remove(rec.handle)
            if self._repin(rec, node_id) and queued:
                nm._enqueue(rec)

    # --- queries ----------------------------------------------------------------------
    def node_records(self):
        """Ray's nodes() entries of the other nodes this node knows (alive or dead)."""
        out = []
        for nid, n in self.nodes.items():
            alive = n["alive"] and nid not in self.dead
            host = (n.get("peer_address") or "127.0.0.1").rsplit(":", 1)[0]
            out.append({"NodeID": nid.hex(), "Alive": alive, "alive": alive, "NodeManagerAddress": host,
                        "NodeManagerHostname": n.get("hostname", ""), "Resources": visible(n.get("resources") or {}),
                        "Labels": dict(n.get("labels") or {}),
                        "ObjectStoreSocketName": n.get("store"), "NodeManagerPort": 0,
                        "MetricsExportPort": n.get("metrics_export_port", 0)})
        return out

    def add_totals(self, total):
        for n in self._live():
            for k, v in (n.get("resources") or {}).items():
                total[k] = total.get(k, 0) + v
        return total

    def add_available(self, avail):
        for n in self._live():
            load = n.get("load") or {}
            for k, v in (load.get("available") or n.get("resources") or {}).items():
                avail[k] = avail.get(k, 0) + v
        return avail

    def fds(self):
        return [self.listener.fileno()] + self.transfers.fds()

    def statistics(self):
        return {"address": self.address, "links": len(self.links), "forwarded": len(self.forwarded),
                "copies_held_elsewhere": len(self.copies), "dead": len(self.dead),
                "transfers": self.transfers.statistics()}

    def close(self):
        self.transfers.close()
        self.listener.close()


def _lost(oid, why):
    data, _ = serialization.dumps(ObjectLostError(oid.hex(), f"Object {oid.hex()} is lost: {why}."))
    return data
