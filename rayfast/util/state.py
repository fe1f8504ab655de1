"""Ray's state API (`ray.util.state`): list, get and summarize the cluster's actors, tasks, objects,
workers, nodes, placement groups and jobs.

Each call asks the node for rows of its own tables (rayfast/node/state.py) and
returns Ray's schema objects: dataclasses with Ray's column names that also
read like dicts (`row.state` or `row["state"]`). Filters are Ray's
`[(column, "=" | "!=", value)]`, on the columns the object has; strings compare
without case, as Ray's CLI does. `limit` keeps the first rows (Ray's default:
100). The rows are this node's view: tasks it ran or queued (finished ones as
long as the timeline keeps them), the actors it holds and the latest dead ones,
the objects in its table.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

from rayfast import core_worker
from rayfast import protocol as P
from rayfast.runtime_context import RuntimeContext, worker_id_hex

DEFAULT_LIMIT = 100
DEFAULT_RPC_TIMEOUT = 30
_PREDICATES = ("=", "!=")


class StateSchema:
    """Ray's row objects: dataclasses that can also be read like dicts."""

    def __getitem__(self, key):
        return getattr(self, key)

    def __setitem__(self, key, value):
        setattr(self, key, value)

    def asdict(self):
        return dataclasses.asdict(self)


def _schema(name, columns):
    return dataclasses.make_dataclass(name, [(c, Any, dataclasses.field(default=None)) for c in columns],
                                      bases=(StateSchema,))


ActorState = _schema("ActorState", (
    "actor_id", "class_name", "state", "job_id", "name", "node_id", "pid", "ray_namespace",
    "serialized_runtime_env", "required_resources", "death_cause", "is_detached", "placement_group_id",
    "repr_name", "num_restarts", "call_site"))
TaskState = _schema("TaskState", (
    "task_id", "attempt_number", "name", "state", "job_id", "actor_id", "type", "func_or_class_name",
    "parent_task_id", "node_id", "worker_id", "worker_pid", "error_type", "error_message", "language",
    "required_resources", "placement_group_id", "creation_time_ms", "start_time_ms", "end_time_ms"))
WorkerState = _schema("WorkerState", (
    "worker_id", "is_alive", "worker_type", "exit_type", "node_id", "ip", "pid", "exit_detail", "actor_id"))
ObjectState = _schema("ObjectState", (
    "object_id", "object_size", "task_status", "reference_type", "call_site", "type", "pid", "ip", "node_id",
    "in_store"))
NodeState = _schema("NodeState", (
    "node_id", "node_ip", "is_head_node", "state", "state_message", "node_name", "resources_total", "labels",
    "start_time_ms", "end_time_ms"))
PlacementGroupState = _schema("PlacementGroupState", (
    "placement_group_id", "name", "creator_job_id", "state", "bundles", "is_detached", "stats"))
JobState = _schema("JobState", (
    "job_id", "submission_id", "type", "status", "entrypoint", "message", "error_type", "start_time",
    "end_time", "metadata", "runtime_env", "driver_info"))


def _rows(kind):
    return core_worker.current().request("state", kind)


def _task_rows():
    """The node's tasks, and the one this driver runs over its lease right now (rayfast/direct.py),
    which the node hears of only when it is done."""
    cw = core_worker.current()
    rows = cw.request("state", "tasks")
    lease = cw.direct.lease if cw.direct is not None else None
    inflight = lease.inflight if lease is not None else None
    if inflight is not None:
        _, spec, submitted = inflight
        tid = spec[P.S_TASK_ID].hex()
        if not any(r["task_id"] == tid for r in rows):
            rows.append({"task_id": tid, "attempt_number": 0, "name": spec[P.S_NAME], "state": "RUNNING",
                         "job_id": _job_id(), "type": "NORMAL_TASK", "func_or_class_name": spec[P.S_NAME],
                         "node_id": cw.node_info["node_id"].hex(), "worker_pid": lease.pid,
                         "worker_id": worker_id_hex(cw.node_info["node_id"], lease.worker_id),
                         "language": "PYTHON", "required_resources": dict(spec[P.S_RESOURCES]),
                         "creation_time_ms": int(submitted * 1000)})
    return rows


def _node_rows():
    out = []
    for n in core_worker.current().request("nodes"):
        res = dict(n.get("Resources") or {})
        out.append({"node_id": n["NodeID"], "node_ip": n.get("NodeManagerAddress"),
                    "is_head_node": "node:__internal_head__" in res,
                    "state": "ALIVE" if n.get("Alive") else "DEAD", "state_message": None,
                    "node_name": n.get("NodeManagerHostname") or n.get("NodeManagerAddress"),
                    "resources_total": res, "labels": dict(n.get("Labels") or {}),
                    "start_time_ms": None, "end_time_ms": None})
    return out


def _placement_group_rows():
    out = []
    for row in core_worker.current().request("pg_table", None).values():
        out.append({"placement_group_id": row["placement_group_id"], "name": row["name"],
                    "creator_job_id": _job_id(), "state": row["state"],
                    "bundles": [{"bundle_id": {"placement_group_id": row["placement_group_id"], "bundle_index": i},
                                 "node_id": row["bundles_to_node_id"].get(i), "unit_resources": dict(b)}
                                for i, b in sorted(row["bundles"].items())],
                    "is_detached": None, "stats": None})
    return out


def _job_id():
    from rayfast.runtime_context import JOB_ID
    return JOB_ID


def _job_rows():
    import os
    cw = core_worker.current()
    return [{"job_id": _job_id(), "submission_id": None, "type": "DRIVER", "status": "RUNNING",
             "entrypoint": "", "message": None, "error_type": None, "start_time": None, "end_time": None,
             "metadata": {}, "runtime_env": RuntimeContext(cw).runtime_env,
             "driver_info": {"id": _job_id(), "node_ip_address": "127.0.0.1", "pid": str(os.getpid())}}]


_SOURCES = {
    "actors": (ActorState, lambda: _rows("actors")),
    "tasks": (TaskState, _task_rows),
    "workers": (WorkerState, lambda: _rows("workers")),
    "objects": (ObjectState, lambda: _rows("objects")),
    "nodes": (NodeState, _node_rows),
    "placement_groups": (PlacementGroupState, _placement_group_rows),
    "jobs": (JobState, _job_rows),
}


def _matches(value, want):
    if value is None:
        return str(want).lower() in ("none", "null", "")
    if isinstance(value, bool):
        return str(want).lower() == str(value).lower()
    if isinstance(value, str):
        return value.lower() == str(want).lower()
    try:
        return type(value)(want) == value
    except (TypeError, ValueError):
        return str(value) == str(want)


def _check_filters(schema, filters):
    columns = {f.name for f in dataclasses.fields(schema)}
    out = []
    for f in filters or ():
        if not isinstance(f, (tuple, list)) or len(f) != 3:
            raise ValueError(f"a filter is (column, predicate, value), got {f!r}")
        column, predicate, value = f
        if column not in columns:
            raise ValueError(f"Given filter column {column!r} is not supported for {schema.__name__}; "
                             f"columns: {sorted(columns)}")
        if predicate not in _PREDICATES:
            raise ValueError(f"Unsupported filter predicate {predicate!r}; use one of {list(_PREDICATES)}")
        out.append((column, predicate == "=", value))
    return out


def _list(resource, filters, limit, detail=False):
    schema, source = _SOURCES[resource]
    checks = _check_filters(schema, filters)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise ValueError(f"limit must be a non-negative integer, got {limit!r}")
    out = []
    for row in source():
        if all(_matches(row.get(c), v) == eq for c, eq, v in checks):
            out.append(schema(**{k: v for k, v in row.items() if k in schema.__dataclass_fields__}))
            if len(out) >= limit:
                break
    return out


def _lister(resource):
    def list_resource(address: Optional[str] = None, filters=None, limit: int = DEFAULT_LIMIT,
                      timeout: int = DEFAULT_RPC_TIMEOUT, detail: bool = False, raise_on_missing_output: bool = True,
                      _explain: bool = False):
        return _list(resource, filters, limit, detail)
    list_resource.__name__ = f"list_{resource}"
    list_resource.__doc__ = f"The cluster's {resource.replace('_', ' ')} (Ray's list_{resource})."
    return list_resource


list_actors = _lister("actors")
list_tasks = _lister("tasks")
list_workers = _lister("workers")
list_objects = _lister("objects")
list_nodes = _lister("nodes")
list_placement_groups = _lister("placement_groups")
list_jobs = _lister("jobs")


def _getter(resource, column):
    def get_resource(id: str, address: Optional[str] = None, timeout: int = DEFAULT_RPC_TIMEOUT,
                     _explain: bool = False):
        if not isinstance(id, str):
            raise TypeError(f"id must be a hex string, got {type(id).__name__}")
        rows = _list(resource, [(column, "=", id)], 1 << 30)
        if resource == "tasks":   # Ray: every attempt of the task
            return rows
        return rows[0] if rows else None
    get_resource.__name__ = f"get_{resource[:-1]}"
    get_resource.__doc__ = f"One of the cluster's {resource.replace('_', ' ')} by its id (None if unknown)."
    return get_resource


get_actor = _getter("actors", "actor_id")
get_task = _getter("tasks", "task_id")
get_worker = _getter("workers", "worker_id")
get_node = _getter("nodes", "node_id")
get_placement_group = _getter("placement_groups", "placement_group_id")
get_job = _getter("jobs", "job_id")


def get_objects(id: str, address: Optional[str] = None, timeout: int = DEFAULT_RPC_TIMEOUT, _explain: bool = False):
    return _list("objects", [("object_id", "=", id)], 1 << 30)


def summarize_tasks(address: Optional[str] = None, timeout: int = DEFAULT_RPC_TIMEOUT,
                    raise_on_missing_output: bool = True, _explain: bool = False):
    """Task counts per function (or Class.method) and state, under "cluster" as Ray's."""
    summary, total, actor_tasks, scheduled = {}, 0, 0, 0
    for t in _list("tasks", None, 1 << 30):
        key = t.func_or_class_name or "<unknown>"
        s = summary.setdefault(key, {"func_or_class_name": key, "type": t.type, "state_counts": {}})
        s["state_counts"][t.state] = s["state_counts"].get(t.state, 0) + 1
        total += 1
        actor_tasks += t.type == "ACTOR_TASK"
        scheduled += t.type == "ACTOR_CREATION_TASK"
    return {"cluster": {"summary": summary, "total_tasks": total, "total_actor_tasks": actor_tasks,
                        "total_actor_scheduled": scheduled, "summary_by": "func_name"}}


def summarize_actors(address: Optional[str] = None, timeout: int = DEFAULT_RPC_TIMEOUT,
                     raise_on_missing_output: bool = True, _explain: bool = False):
    """Actor counts per class and state, under "cluster" as Ray's."""
    summary = {}
    actors = _list("actors", None, 1 << 30)
    for a in actors:
        s = summary.setdefault(a.class_name, {"class_name": a.class_name, "state_counts": {}})
        s["state_counts"][a.state] = s["state_counts"].get(a.state, 0) + 1
    return {"cluster": {"summary": summary, "total_actors": len(actors), "summary_by": "class"}}


def summarize_objects(address: Optional[str] = None, timeout: int = DEFAULT_RPC_TIMEOUT,
                      raise_on_missing_output: bool = True, _explain: bool = False):
    """Object counts and sizes by reference type, under "cluster"."""
    objects = _list("objects", None, 1 << 30)
    by_type = {}
    for o in objects:
        s = by_type.setdefault(o.reference_type, {"total_objects": 0, "total_size_mb": 0.0})
        s["total_objects"] += 1
        s["total_size_mb"] += (o.object_size or 0) / (1 << 20)
    return {"cluster": {"summary": by_type, "total_objects": len(objects),
                        "total_size_mb": sum(s["total_size_mb"] for s in by_type.values()),
                        "summary_by": "reference_type"}}
