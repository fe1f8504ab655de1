"""The node's side of the state API (rayfast/util/state.py): rows of its own tables, made when asked.

Rows are plain dicts under Ray's column names. They are built from what the
node keeps anyway (task records, the actor table, the worker pool, the object
table, the timeline's finished-task events), so the hot paths pay nothing for
them; the only records kept just for this are two bounded ones, filled off
the fast path: the tasks that failed (`nm.failed_tasks`, their error is the
reason) and the actors that died (`actors.dead_list`: Ray lists dead actors).
"""
import pickle

from rayfast import protocol as P
from rayfast.runtime_context import JOB_ID, worker_id_hex

KEEP_FAILED = 10_000   # failed tasks remembered

# rayfast's actor states -> Ray's ActorState.state
_ACTOR_STATES = {"PENDING": "PENDING_CREATION", "CREATING": "PENDING_CREATION", "ALIVE": "ALIVE",
                 "RESTARTING": "RESTARTING", "DEAD": "DEAD"}
_TASK_TYPES = {P.TASK_NORMAL: "NORMAL_TASK", P.TASK_ACTOR_CREATE: "ACTOR_CREATION_TASK",
               P.TASK_ACTOR_METHOD: "ACTOR_TASK"}


def task_failed(nm, task_id, error_data):
    """Remember a failed task's error (called as it fails; a bounded, oldest-first table)."""
    failed = nm.failed_tasks
    failed[task_id] = error_data
    if len(failed) > KEEP_FAILED:
        failed.popitem(last=False)


def snapshot(nm, kind):
    fn = _KINDS.get(kind)
    if fn is None:
        raise ValueError(f"unknown state kind {kind!r}; known: {', '.join(sorted(_KINDS))}")
    return fn(nm)


def _error_text(data):
    """(error type name, message) of a pickled task or actor error."""
    try:
        err = pickle.loads(data)
    except Exception:
        return "RayTaskError", None
    cause = getattr(err, "cause", None)
    kind = type(cause).__name__ if isinstance(cause, BaseException) else type(err).__name__
    return kind, str(err)


def _actor_rows(nm):
    ax = nm.actors
    if ax is None:
        return []
    by_id = {a.aid: a for a in ax.dead_list}
    by_id.update(ax.actors)
    node = nm.node_id.hex()
    rows = []
    for a in by_id.values():
        state = _ACTOR_STATES.get(a.state, a.state)
        if state == "PENDING_CREATION" and a.create.handle in nm.deps:
            state = "DEPENDENCIES_UNREADY"
        death = None
        if a.state == "DEAD" and a.dead_data is not None:
            kind, message = _error_text(a.dead_data)
            death = {"error_type": kind, "error_message": message}
        rows.append({"actor_id": a.aid.hex(), "class_name": a.class_name, "state": state, "job_id": JOB_ID,
                     "name": a.name or "", "node_id": node, "pid": a.pid,
                     "ray_namespace": ax.actor_namespace(a),
                     "serialized_runtime_env": None, "required_resources": dict(a.hold), "death_cause": death,
                     "is_detached": a.detached, "placement_group_id": None,
                     "repr_name": "", "num_restarts": a.num_restarts, "call_site": None})
    return rows


def _task_rows(nm):
    node = nm.node_id.hex()
    rows = {}
    actor_classes = set()
    if nm.actors is not None:
        actor_classes = {a.class_name for a in nm.actors.actors.values()}
        actor_classes.update(a.class_name for a in nm.actors.dead_list)
    failed = nm.failed_tasks
    # finished ones first: a retried task that runs again shows its latest attempt
    for name, tid, wid, pid, start, end in list(nm.timeline) + nm.events:
        ttype = "ACTOR_TASK" if name.split(".", 1)[0] in actor_classes else "NORMAL_TASK"
        if name.endswith(".__init__"):
            ttype = "ACTOR_CREATION_TASK"
        row = _task_row(tid, name, "FAILED" if tid in failed else "FINISHED", ttype, node, pid)
        row.update(start_time_ms=int(start * 1000), end_time_ms=int(end * 1000),
                   worker_id=worker_id_hex(nm.node_id, wid) if wid else None)
        if tid in failed:
            row["error_type"], row["error_message"] = _error_text(failed[tid])
        rows[tid] = row
    for rec in list(nm.tasks.values()):
        spec = rec.spec
        w = rec.worker
        if w is not None:
            state = "RUNNING" if w.pipeline and w.pipeline[0] is rec else "SUBMITTED_TO_WORKER"
        elif rec.handle in nm.deps:
            state = "PENDING_ARGS_AVAIL"
        else:
            state = "PENDING_NODE_ASSIGNMENT"
        row = _task_row(spec[P.S_TASK_ID], spec[P.S_NAME], state, _TASK_TYPES.get(spec[P.S_KIND], "NORMAL_TASK"),
                        node if w is not None else None, w.pid if w is not None else None)
        row["required_resources"] = dict(rec.shape)
        if w is not None:
            row["worker_id"] = worker_id_hex(nm.node_id, w.worker_id)
        row["creation_time_ms"] = int(rec.submitted * 1000)
        if spec[P.S_ACTOR_ID]:
            row["actor_id"] = spec[P.S_ACTOR_ID].hex()
        rows[spec[P.S_TASK_ID]] = row
    for tid, data in failed.items():   # failed before they ran (a dependency failed, cancelled, ...)
        if tid not in rows:
            row = _task_row(tid, None, "FAILED", "NORMAL_TASK", None, None)
            row["error_type"], row["error_message"] = _error_text(data)
            rows[tid] = row
    return list(rows.values())


def _task_row(tid, name, state, ttype, node, pid):
    return {"task_id": tid.hex(), "attempt_number": 0, "name": name, "state": state, "job_id": JOB_ID,
            "actor_id": None, "type": ttype, "func_or_class_name": name, "parent_task_id": None,
            "node_id": node, "worker_id": None, "worker_pid": pid, "error_type": None, "error_message": None,
            "language": "PYTHON", "required_resources": None, "placement_group_id": None,
            "creation_time_ms": None, "start_time_ms": None, "end_time_ms": None}


def _worker_rows(nm):
    node = nm.node_id.hex()
    rows = []
    for w in list(nm.pool.workers.values()):
        rows.append({"worker_id": worker_id_hex(nm.node_id, w.worker_id), "is_alive": w.state != "dead", "worker_type": "WORKER",
                     "exit_type": None if w.state != "dead" else "SYSTEM_ERROR", "node_id": node,
                     "ip": "127.0.0.1", "pid": w.pid, "exit_detail": None,
                     "actor_id": w.actor_id.hex() if w.actor_id is not None else None})
    for c in list(nm.clients.values()):
        if c.kind == "driver" and not c.closed:
            rows.append({"worker_id": worker_id_hex(nm.node_id, None), "is_alive": True, "worker_type": "DRIVER",
                         "exit_type": None, "node_id": node, "ip": "127.0.0.1", "pid": c.pid,
                         "exit_detail": None, "actor_id": None})
    return rows


def _object_rows(nm):
    rows = []
    node = nm.node_id.hex()
    for oid, e in list(nm.objects.entries.items()):
        if e.state == 0:
            status, size = "PENDING", None
        else:
            status = "FINISHED" if e.kind != P.ERROR else "FAILED"
            size = e.data if e.kind == P.STORE else (len(e.data) if isinstance(e.data, (bytes, bytearray)) else None)
        ref_type = "LOCAL_REFERENCE" if e.holders else ("USED_BY_PENDING_TASK" if e.task_refs else
                                                      ("CAPTURED_IN_OBJECT" if e.contained_in else "PINNED_IN_MEMORY"))
        rows.append({"object_id": oid.hex(), "object_size": size, "task_status": status,
                     "reference_type": ref_type, "call_site": "disabled", "type": "DRIVER", "pid": None,
                     "ip": "127.0.0.1", "node_id": node, "in_store": e.kind == P.STORE})
    return rows


_KINDS = {"actors": _actor_rows, "tasks": _task_rows, "workers": _worker_rows, "objects": _object_rows}
