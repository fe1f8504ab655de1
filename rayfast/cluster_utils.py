"""Several nodes on one machine for tests: Ray's `ray.cluster_utils.Cluster`.

Each node is started as `rayfast start` starts one (`rayfast.cluster.start_node`):
a node manager process tree with its own store, the first one (the head) with
the GCS, the others joining through the head's GCS address. Three things make
them this Cluster's alone:

* their records live under a session root of the Cluster's own (a temporary
  directory), so `init()` without an address, `rayfast start` and `rayfast stop`
  never see them;
* the Cluster holds an *owner* connection to every node (`NodeClient(owner=True)`),
  and a node stops and cleans up when its owner's connection closes, so nodes
  end with the process that made them, even one that is killed;
* `shutdown()` runs at exit and as the context manager's exit, and removes
  what a killed node leaves (`stop_nodes`: processes, segment, session dir).

`remove_node(node, allow_graceful=False)` SIGKILLs the node manager (its
workers and GCS shards die with it) and marks it dead in the GCS, which
stands in for Ray's missed heartbeats: the other nodes see its links close.
"""
from __future__ import annotations

import atexit
import glob
import os
import shutil
import tempfile
import time

from rayfast import cluster as _cluster
from rayfast.scheduling import forget_nodes   # (this process's copy of the node table, for node affinity)

_ROOT_PREFIX = "rayfast-cluster-"   # + the pid of the process that made it
# Ray's defaults for a node of a test cluster
_DEFAULTS = {"num_cpus": 1, "num_gpus": 0, "object_store_memory": 150 * 1024 * 1024}


class ClusterNode:
    """One node of a Cluster (what Ray's `ray._private.node.Node` offers tests)."""

    def __init__(self, record, lifeline, head):
        self._record = record
        self._lifeline = lifeline
        self.head = head
        self.node_id = lifeline.info["node_id"].hex()
        self.pid = record["pid"]
        self.session_dir = record["session_dir"]
        self.gcs_address = record["gcs_address"]
        self.address = self.gcs_address
        self.node_ip_address = "127.0.0.1"
        self.plasma_store_socket_name = lifeline.info["store_name"]
        self.unique_id = f"{self.node_ip_address}:{self.plasma_store_socket_name}"   # (as Ray's)
        self.resources = dict(lifeline.info["resources"])

    def any_processes_alive(self):
        return _cluster._pid_alive(self.pid) or bool(_cluster._group_members(self.pid))

    def remaining_processes_alive(self):
        return _cluster._is_our_node(self._record)

    def __repr__(self):
        return f"ClusterNode({'head, ' if self.head else ''}node_id={self.node_id[:12]}..., pid={self.pid})"


class Cluster:
    def __init__(self, initialize_head=False, connect=False, head_node_args=None, shutdown_at_exit=True):
        if connect and not initialize_head:
            raise RuntimeError("Cannot connect to uninitialized cluster.")
        self.head_node = None
        self.worker_nodes = set()
        self.connected = False
        _sweep()
        self._root = tempfile.mkdtemp(prefix=f"{_ROOT_PREFIX}{os.getpid()}-")
        self._gcs_tcp = []
        if shutdown_at_exit:
            atexit.register(self.shutdown)
        try:
            if initialize_head:
                self.add_node(**(head_node_args or {}))
                if connect:
                    self.connect()
        except BaseException:
            self.shutdown()
            raise

    @property
    def gcs_address(self):
        return self.head_node.gcs_address if self.head_node is not None else None

    @property
    def address(self):
        return self.gcs_address

    def connect(self, namespace=None):
        """Connect this process as a driver (`rayfast.init(address=cluster.address)`)."""
        import rayfast
        assert self.address is not None and not self.connected
        ctx = rayfast.init(address=self.address, namespace=namespace, ignore_reinit_error=True)
        self.connected = True
        return ctx

    def add_node(self, wait=True, **node_args):
        """Start a node (the head if there is none yet); returns it once it is registered in the
        GCS (start_node returns once it is: `wait` is taken for Ray's signature). Arguments as
        Ray's: num_cpus, num_gpus, resources, object_store_memory, labels (port, gcs_shards and
        timeout go to start_node)."""
        args = {**_DEFAULTS, **node_args}
        resources = dict(args.pop("resources", None) or {})
        if args.pop("num_gpus"):
            resources["GPU"] = float(node_args["num_gpus"])
        unknown = set(args) - {"num_cpus", "object_store_memory", "labels", "port", "gcs_shards", "timeout"}
        if unknown:
            raise TypeError(f"add_node() got unsupported arguments: {sorted(unknown)}")
        head = self.head_node is None
        if head:
            args.setdefault("port", 0)   # (a free one: several clusters at once)
        record = _cluster.start_node(head=head, address=None if head else self.gcs_address, resources=resources,
                                     root=self._root, sys_path=True, **args)
        try:
            lifeline = _cluster.NodeClient(record["socket"], owner=True)
        except BaseException:
            _cluster.stop_nodes(records=[record], root=self._root, force=True)
            raise
        node = ClusterNode(record, lifeline, head)
        forget_nodes()
        if head:
            self.head_node = node
            self._gcs_tcp = record["gcs_tcp_addresses"]
        else:
            self.worker_nodes.add(node)
        return node

    def remove_node(self, node, allow_graceful=True):
        """Stop a node: SIGTERM (it stops its workers and cleans up) or, allow_graceful=False,
        SIGKILL, as a machine that crashes. Nothing of it is left either way."""
        import rayfast
        if _driver_session_dir() == node.session_dir:
            rayfast.shutdown()
            raise ValueError("Removing a node that is connected to this driver is not allowed because "
                             "it will break the driver; remove another node.")
        if node is self.head_node:
            self.head_node = None
        else:
            self.worker_nodes.discard(node)
        _cluster.stop_nodes(records=[node._record], root=self._root, force=not allow_graceful)
        node._lifeline.close()
        forget_nodes()
        if not allow_graceful and self.head_node is not None:
            self._mark_dead(node)

    def _mark_dead(self, node):
        """A killed node is marked dead in the GCS at once (Ray's GCS notices missed heartbeats;
        rayfast's nodes notice only when a link to it closes, and a node no one linked to would
        be listed alive until someone tries)."""
        from rayfast.gcs.tables import read_once
        try:
            read_once(self._gcs_tcp, lambda g: g.mark_node_dead(bytes.fromhex(node.node_id)), timeout=5.0,
                      connect_timeout=2.0)
        except Exception:
            pass   # the head is gone too: nobody is left to ask

    def _live_node_ids(self):
        from rayfast.gcs.tables import Gcs, read_once
        nodes = read_once(self._gcs_tcp, Gcs.get_nodes, timeout=5.0, connect_timeout=2.0)
        return {n["node_id"].hex() for n in nodes if n.get("alive")}

    def wait_for_nodes(self, timeout=30):
        """Wait until the GCS lists exactly the nodes added and not removed as alive."""
        expected = {n.node_id for n in self.list_all_nodes()}
        deadline = time.monotonic() + timeout
        while True:
            if self.head_node is None or self._live_node_ids() == expected:
                return
            if time.monotonic() > deadline:
                raise TimeoutError("Timed out while waiting for nodes to join.")
            time.sleep(0.1)

    def list_all_nodes(self):
        """All nodes, the head first."""
        nodes = sorted(self.worker_nodes, key=lambda n: n.pid)
        return ([self.head_node] if self.head_node is not None else []) + nodes

    def remaining_processes_alive(self):
        return all(n.remaining_processes_alive() for n in self.list_all_nodes())

    def shutdown(self):
        """Remove every node (worker nodes first, the head with the GCS last) and the records."""
        import rayfast
        if _driver_session_dir() in {n.session_dir for n in self.list_all_nodes()}:
            rayfast.shutdown()   # (a driver of ours left connected: a test that failed midway)
        self.connected = False
        for node in sorted(self.worker_nodes, key=lambda n: n.pid):
            self.remove_node(node)
        if self.head_node is not None:
            self.remove_node(self.head_node)
        shutil.rmtree(self._root, ignore_errors=True)
        atexit.unregister(self.shutdown)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()


def _driver_session_dir():
    """The session dir of the node this process is a driver of, or None."""
    from rayfast import core_worker
    cw = core_worker._current
    return cw.node_info.get("session_dir") if cw is not None else None


def _sweep():
    """Remove what Clusters of processes that died without shutdown() (SIGKILL) left: their nodes
    stopped with them (owner connections), but their records and logs remain."""
    for root in glob.glob(os.path.join(tempfile.gettempdir(), _ROOT_PREFIX + "*-*")):
        pid = os.path.basename(root)[len(_ROOT_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _cluster._pid_alive(int(pid)):
            _cluster.stop_nodes(records=_cluster.started_nodes(root), root=root, force=True)
            shutil.rmtree(root, ignore_errors=True)
