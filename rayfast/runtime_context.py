"""`rayfast.get_runtime_context()`: who and where the calling code is (driver, task or actor)."""
from __future__ import annotations

JOB_ID = "01000000"


class RuntimeContext:
    def __init__(self, cw):
        self._cw = cw

    def _executor(self):
        from rayfast import actor
        ex = actor._executor
        if ex is not None and ex.cw is self._cw:
            return ex
        return None

    def get_job_id(self):
        return JOB_ID

    @property
    def job_id(self):
        return JOB_ID

    def get_node_id(self):
        nid = self._cw.node_info.get("node_id")
        return nid.hex() if isinstance(nid, bytes) else nid

    @property
    def node_id(self):
        return self.get_node_id()

    def get_task_id(self):
        """The running task's id (hex); None in the driver."""
        if self._cw.mode == "driver":
            return None
        return self._cw.current_task_id.hex()

    @property
    def task_id(self):
        return self.get_task_id()

    def get_worker_id(self):
        return None if self._cw.worker_id is None else str(self._cw.worker_id)

    def get_actor_id(self):
        """This actor's id (hex); None outside an actor."""
        ex = self._executor()
        if ex is None or ex.actor_id is None:
            return None
        return ex.actor_id.hex()

    @property
    def actor_id(self):
        return self.get_actor_id()

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
        return ns if ns is not None else "default"

    def get_namespace(self):
        return self.namespace

    @property
    def was_current_actor_reconstructed(self):
        ex = self._executor()
        return ex is not None and ex.actor_id is not None and ex.restarts > 0

    def get_assigned_resources(self):
        """The resources the running task holds, e.g. {"CPU": 1.0}; {} in the driver."""
        if self._cw.mode == "driver":
            return {}
        return dict(getattr(self._cw, "current_resources", None) or ())

    def get(self):
        return {"job_id": JOB_ID, "node_id": self.get_node_id(), "task_id": self.get_task_id(),
                "actor_id": self.get_actor_id(), "namespace": self.namespace}
