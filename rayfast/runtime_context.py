"""`rayfast.get_runtime_context()`: who and where the calling code is (driver, task or actor)."""
from __future__ import annotations

import hashlib
import json
import os

from rayfast import protocol as P
from rayfast._core.ids import TaskID
from rayfast.id_types import BinaryID

JOB_ID = "01000000"


class JobID(BinaryID):
    __slots__ = ()


class NodeID(BinaryID):
    __slots__ = ()


def worker_id_hex(node_id, worker_id):
    """A process's worker id as Ray shows it (56 hex digits), from its node's id and its number
    there (None: a driver)."""
    who = b"driver" if worker_id is None else str(worker_id).encode()
    return hashlib.blake2b(bytes(node_id or b"") + who, digest_size=28).hexdigest()


def ref_job_id(ref):
    """ObjectRef.job_id(): the JobID of the job that made it (every ref here is the one job's)."""
    if ref.is_nil():
        raise ValueError("TaskID is nil")   # Ray's words
    return JobID.from_hex(JOB_ID)


def ref_owner_address(ref):
    """ObjectRef.owner_address(): the owner's address as Ray gives it, an rpc::Address in protobuf
    wire form (node_id = 1, ip_address = 2; Ray's decodes it). The owner of an object, in Ray the
    process that keeps its references and lineage, is here the node manager for every object
    (object table, lineage), so the address is its node's; it has no port or worker id."""
    from rayfast import core_worker
    node = bytes(core_worker.current().node_info["node_id"])
    ip = b"127.0.0.1"
    return b"\x0a" + bytes((len(node),)) + node + b"\x12" + bytes((len(ip),)) + ip


class RuntimeContext:
    def __init__(self, cw):
        self._cw = cw

    def _executor(self):
        from rayfast import actor
        ex = actor._executor
        if ex is not None and ex.cw is self._cw:
            return ex
        return None

    def _in_driver(self):
        return self._cw.mode == "driver"

    def _driver_only_assert(self, what):
        # Ray asserts this (AssertionError) when called from the driver
        if self._in_driver():
            raise AssertionError(f"{what} is only available when the process is a worker, not the driver.")

    def _spec(self):
        """The spec of the task running here (None in the driver); in a threaded or async
        actor, which runs several calls at once, the calling thread's or coroutine's."""
        from rayfast.actor import current_call
        spec = current_call.get()
        if spec is not None:
            return spec
        cw = self._cw
        spec = getattr(cw, "current_spec", None)
        if self._in_driver() or spec is None or spec[P.S_TASK_ID] != cw.current_task_id.binary():
            return None
        return spec

    # --- ids ------------------------------------------------------------------
    def get_job_id(self):
        return JOB_ID

    @property
    def job_id(self):
        """The job's id as an object (Ray's deprecated property); get_job_id() gives the hex."""
        return JobID.from_hex(JOB_ID)

    def get_node_id(self):
        nid = self._cw.node_info.get("node_id")
        return nid.hex() if isinstance(nid, bytes) else nid

    # Ray's deprecated properties give id objects (hex() of them is what get_*_id() returns).
    @property
    def node_id(self):
        return NodeID.from_hex(self.get_node_id())

    def get_task_id(self):
        """The running task's id (hex); None in the driver."""
        if self._in_driver():
            return None
        spec = self._spec()
        return spec[P.S_TASK_ID].hex() if spec is not None else self._cw.current_task_id.hex()

    @property
    def task_id(self):
        tid = self.get_task_id()
        return None if tid is None else TaskID.from_hex(tid)

    def get_worker_id(self):
        """This process's worker id: 56 hex digits, as Ray's (the driver has one too)."""
        cw = self._cw
        return worker_id_hex(cw.node_info.get("node_id"), cw.worker_id)

    def get_actor_id(self):
        """This actor's id (hex); None outside an actor."""
        ex = self._executor()
        if ex is None or ex.actor_id is None:
            return None
        return ex.actor_id.hex()

    @property
    def actor_id(self):
        from rayfast.actor import ActorID
        aid = self.get_actor_id()
        return None if aid is None else ActorID.from_hex(aid)

    def get_actor_name(self):
        """This actor's name ("" if it has none); None outside an actor (as Ray's)."""
        ex = self._executor()
        if ex is None or ex.actor_id is None:
            return None
        return ex.name

    def is_canceled(self):
        """True once cancel() has reached the running task or sync/threaded actor call, which may
        then end early (a task also gets a KeyboardInterrupt). RuntimeError in the driver or an
        async actor, as Ray's."""
        if self._in_driver():
            raise RuntimeError("This method is only available when the process is a worker.")
        ex = self._executor()
        if ex is not None and ex.loop is not None:
            raise RuntimeError("This method is not supported in an async actor.")
        spec = self._spec()
        return spec is not None and self._cw.is_cancelled(spec[P.S_TASK_ID])

    def get_node_labels(self):
        """The node's labels: Ray's default one (its node id) and init(labels=)'s."""
        return dict(self._cw.node_info["labels"])

    def get_session_name(self):
        """The session's name: its directory's."""
        return os.path.basename(self._cw.node_info["session_dir"].rstrip("/"))

    # --- names ----------------------------------------------------------------
    def get_task_name(self):
        """The running task's name: its name= option, else the function's name; None in the driver."""
        if self._in_driver():
            return None
        spec = self._spec()
        if spec is None:
            return None
        opts = spec[P.S_OPTIONS]
        if spec[P.S_KIND] != P.TASK_NORMAL:   # Ray's Class.method
            return (opts and opts.get("name")) or self._actor_qualname(spec)
        return (opts and opts.get("name")) or spec[P.S_NAME].rsplit(".", 1)[-1]

    def get_task_function_name(self):
        """The running task's function as module.qualname; None in the driver."""
        spec = self._spec()
        if spec is None:
            return None
        if spec[P.S_KIND] != P.TASK_NORMAL:
            return self._actor_qualname(spec, True)
        return spec[P.S_NAME]

    def _actor_qualname(self, spec, with_module=False):
        ex = self._executor()
        method = spec[P.S_METHOD] or spec[P.S_NAME]
        if ex is None or getattr(ex, "actor", None) is None:
            return method
        cls = type(ex.actor)
        return f"{cls.__module__}.{cls.__qualname__}.{method}" if with_module else f"{cls.__name__}.{method}"

    @property
    def current_actor(self):
        """A handle to the actor this code runs in (RuntimeError outside an actor)."""
        ex = self._executor()
        if ex is None or ex.actor_id is None:
            raise RuntimeError("current_actor is only available inside an actor")
        from rayfast.actor import ActorHandle, _meta_from_blob
        # No liveness ref: an actor's handle to itself must not keep it alive. A copy
        # pickled out of the actor carries one, like any other handle.
        return ActorHandle(ex.actor_id, _meta_from_blob(ex.meta_blob), None)

    @property
    def namespace(self):
        ns = getattr(self._cw, "namespace", None)
        if ns is None:   # a task's worker: the job's, as its driver set it at init
            ns = self._cw.request("job_namespace")
        return ns if ns is not None else "default"

    def get_namespace(self):
        return self.namespace

    @property
    def was_current_actor_reconstructed(self):
        self._driver_only_assert("was_current_actor_reconstructed")
        ex = self._executor()
        return ex is not None and ex.actor_id is not None and ex.restarts > 0

    # --- resources and environment --------------------------------------------
    def get_assigned_resources(self):
        """The resources the running task holds, e.g. {"CPU": 1.0} (AssertionError in the driver)."""
        self._driver_only_assert("get_assigned_resources()")
        spec = self._spec()
        if spec is None:
            return {}
        pg_hex = spec[P.S_OPTIONS].get("placement_group") if spec[P.S_OPTIONS] else None
        if pg_hex is None:
            return dict(spec[P.S_RESOURCES])
        # In a group the spec asks for the group's resources (util/placement_group.group_shape):
        # what the task asked for is each "<name>_group_<pg>", as Ray answers.
        suffix = "_group_" + pg_hex
        return {k[:-len(suffix)]: v for k, v in spec[P.S_RESOURCES]
                if k.endswith(suffix) and k != "bundle" + suffix}

    def get_accelerator_ids(self):
        """The accelerator ids the running task was given, as strings (Ray's form)."""
        return {"GPU": [str(i) for i in self._cw.gpu_ids]}

    def get_resource_ids(self):
        """Ray's deprecated name for get_accelerator_ids()."""
        return self.get_accelerator_ids()

    @property
    def runtime_env(self):
        """The runtime_env this code runs in (the job's in the driver)."""
        return {k: v for k, v in (self._cw.runtime_env or {}).items() if not k.startswith("_")}

    def get_runtime_env_string(self):
        return json.dumps(self.runtime_env)

    @property
    def gcs_address(self):
        addrs = self._cw.node_info.get("gcs_addresses") or []
        return addrs[0] if addrs else None

    def get_placement_group_id(self):
        """The placement group the running task or actor is in (hex), else None."""
        ex = self._executor()
        if ex is not None and ex.actor_id is not None:   # an actor's: the group it was created in
            return ex.placement_group
        spec = self._spec()
        return spec[P.S_OPTIONS].get("placement_group") if spec is not None and spec[P.S_OPTIONS] else None

    @property
    def current_placement_group_id(self):
        """Ray's deprecated name for get_placement_group_id()."""
        return self.get_placement_group_id()

    @property
    def should_capture_child_tasks_in_placement_group(self):
        spec = self._spec()
        return bool(spec is not None and spec[P.S_OPTIONS] and spec[P.S_OPTIONS].get("capture_pg"))

    def get(self):
        """Ray's (deprecated) summary dict, with id objects as its values."""
        out = {"job_id": self.job_id, "node_id": self.node_id, "namespace": self.namespace}
        if not self._in_driver():
            out["task_id"] = self.task_id
        if self.get_actor_id() is not None:
            out["actor_id"] = self.actor_id
        return out
