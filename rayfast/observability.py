"""Looking inside a running cluster: the task timeline and the summary behind `rayfast status`.

`timeline()` is Chrome trace-event JSON: one "X" (complete) event per task
or actor method that finished, with pid = the node, tid = the worker, so
Perfetto (https://ui.perfetto.dev) and chrome://tracing draw one row per
worker. "M" (metadata) events name the rows ("node 1a2b3c4d",
"worker 3 (pid 4242)").

`summary()` gathers nodes, resources, object-store use, queue lengths and,
per function, the task counts, mean run time and mean scheduling overhead,
and warns about functions whose tasks are too small to be worth
scheduling: see `rayfast/node/stats.py` for what the times measure.
"""
from __future__ import annotations

import json
import math
import os

# A function's tasks get a granularity warning when, on average, the system spends longer
# moving a task than the task spends running, and there are enough of them to matter.
GRANULARITY_MIN_TASKS = 10
# What to aim for: overhead at most a tenth of the run time.
TARGET_OVERHEAD_FRACTION = 0.1


def _client_of(client):
    """What to ask: the given client (the CLI's NodeClient) or this driver's core worker.

    Either has .request(what, *args) and a node-info dict (.info / .node_info).
    """
    if client is not None:
        return client
    from rayfast import core_worker
    from rayfast.api import is_initialized

    if not is_initialized():
        raise RuntimeError("rayfast is not initialized: call rayfast.init() (or "
                           "rayfast.init(address='auto') to look at a running cluster) first")
    return core_worker.current()


def _node_info(client):
    info = getattr(client, "node_info", None) or getattr(client, "info", None)
    return info if isinstance(info, dict) else {}


# --- timeline ---------------------------------------------------------------------
def timeline(filename=None, *, _client=None):
    """Chrome trace events of every task run so far (the list); written to filename if given."""
    client = _client_of(_client)
    events = trace_events(_gather_events(client))
    if filename is None:
        return events
    write_trace(events, filename)
    return None


def write_trace(events, filename):
    tmp = f"{filename}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(events, f, separators=(",", ":"))
    os.replace(tmp, filename)


def _gather_events(client):
    """(node_id_hex, name, task_id_hex, worker_id, pid, start, end) of every finished task."""
    raw = client.request("timeline")
    info = _node_info(client)
    node_id = info.get("node_id")
    node_hex = node_id.hex() if isinstance(node_id, (bytes, bytearray)) else str(node_id or "0" * 32)
    out = []
    seen = set()
    for ev in raw:
        name, tid, wid, pid, start, end = ev[:6]
        tid = tid.hex() if isinstance(tid, (bytes, bytearray)) else str(tid)
        key = (tid, start)
        if key in seen:
            continue
        seen.add(key)
        out.append((node_hex, name, tid, wid, pid, start, end))
    # Other nodes' events reach the driver's node only through the GCS event log.
    for ev in _remote_events(client, node_hex):
        key = (ev[2], ev[5])
        if key not in seen:
            seen.add(key)
            out.append(ev)
    out.sort(key=lambda e: e[5])
    return out


def _remote_events(client, local_hex):
    """Events the GCS holds from nodes other than this one (empty on a one-node cluster)."""
    from rayfast.gcs.tables import Gcs, read_once

    try:
        nodes = client.request("nodes")
    except Exception:
        return []
    if not any(isinstance(n, dict) and n.get("NodeID") not in (None, local_hex) for n in nodes):
        return []
    addrs = list(_node_info(client).get("gcs_addresses") or [])
    if not addrs:
        return []
    try:
        evs = read_once(addrs, Gcs.get_events, timeout=10.0)
    except Exception:
        return []
    out = []
    for e in evs:
        if not isinstance(e, dict) or e.get("node") == local_hex:
            continue
        out.append((e.get("node", "?"), e.get("name", "?"), e.get("task_id", ""), e.get("worker", 0),
                    e.get("pid", 0), float(e.get("start", 0.0)), float(e.get("end", 0.0))))
    return out


def trace_events(rows):
    """Chrome trace-event dicts for rows of (node_hex, name, task_id_hex, worker_id, pid, start, end)."""
    nodes = {}
    workers = {}
    meta = []
    spans = []
    for node_hex, name, tid, wid, wpid, start, end in rows:
        npid = nodes.get(node_hex)
        if npid is None:
            npid = nodes[node_hex] = len(nodes) + 1
            meta.append({"name": "process_name", "ph": "M", "pid": npid, "tid": 0,
                         "args": {"name": f"node {node_hex[:8]}"}})
            meta.append({"name": "process_sort_index", "ph": "M", "pid": npid, "tid": 0,
                         "args": {"sort_index": npid}})
        wid = int(wid) if isinstance(wid, int) or str(wid).isdigit() else 0
        if (npid, wid) not in workers:
            workers[(npid, wid)] = wpid
            label = f"worker {wid} (pid {wpid})" if wid else f"node manager / driver (pid {wpid})"
            meta.append({"name": "thread_name", "ph": "M", "pid": npid, "tid": wid, "args": {"name": label}})
            meta.append({"name": "thread_sort_index", "ph": "M", "pid": npid, "tid": wid,
                         "args": {"sort_index": wid}})
        ts = start * 1e6
        spans.append({"name": str(name), "cat": "task", "ph": "X", "ts": round(ts, 3),
                      "dur": round(max(end - start, 0.0) * 1e6, 3), "pid": npid, "tid": wid,
                      "args": {"task_id": tid, "node_id": node_hex, "worker_id": wid, "worker_pid": wpid}})
    return meta + spans


# --- summary ----------------------------------------------------------------------
class Summary(dict):
    """What summary() returns: a plain dict whose str() is the text `rayfast status` prints."""

    def __str__(self):
        return format_summary(self)

    def _repr_pretty_(self, p, cycle):  # IPython
        p.text(str(self))


def _cluster_nodes(client):
    """Every node in the GCS node table (Ray-style records); this node's own answer as a fallback."""
    import socket

    from rayfast.gcs.tables import Gcs, read_once

    addrs = list(_node_info(client).get("gcs_addresses") or [])
    try:
        table = read_once(addrs, Gcs.get_nodes, timeout=5.0, connect_timeout=2.0)
    except Exception:
        table = None
    if not table:
        try:
            return list(client.request("nodes"))
        except Exception:
            return []
    here = socket.gethostname()
    out = []
    for n in table:
        alive = bool(n.get("alive"))
        pid = n.get("pid")
        if alive and n.get("hostname") == here and isinstance(pid, int):
            try:
                os.kill(pid, 0)       # a node on this machine that died without saying so
            except ProcessLookupError:
                alive = False
            except PermissionError:
                pass
        nid = n.get("node_id")
        out.append({"NodeID": nid.hex() if isinstance(nid, (bytes, bytearray)) else str(nid),
                    "Alive": alive, "Resources": dict(n.get("resources") or {}),
                    "NodeManagerHostname": n.get("hostname", ""), "head": bool(n.get("head")),
                    "pid": pid, "session_dir": n.get("session_dir")})
    out.sort(key=lambda r: (not r["head"], not r["Alive"], r["NodeID"]))
    return out


def summary(*, _client=None):
    """Nodes, resources, object-store use, queue lengths and per-function task statistics."""
    client = _client_of(_client)
    st = client.request("statistics")
    nodes = _cluster_nodes(client)
    total = dict(st.get("resources_total", {}))
    avail = dict(st.get("resources_available", {}))
    used = {k: max(0.0, v - avail.get(k, 0.0)) for k, v in total.items()}
    store = dict(st.get("store", {}))
    functions = {name: function_row(name, row) for name, row in sorted(st.get("functions", {}).items())}
    return Summary({
        "nodes": nodes,
        "node_id": st.get("node_id"),
        "resources": {"total": total, "available": avail, "used": used},
        "cpus": {"total": total.get("CPU", 0.0), "used": used.get("CPU", 0.0)},
        "object_store": store,
        "queues": {"queued": st.get("tasks_queued", 0), "waiting_for_arguments": st.get("tasks_waiting_for_args", 0),
                   "in_flight": st.get("tasks_in_flight", 0), "by_shape": st.get("queues", {})},
        "workers": st.get("workers", {}),
        "functions": functions,
        "granularity_warnings": [f["granularity_warning"] for f in functions.values()
                                 if f["granularity_warning"]],
    })


def function_row(name, row):
    """One function's statistics with its overhead fraction and granularity warning (or None)."""
    fin = row.get("finished", 0)
    run = float(row.get("mean_run_s", 0.0))
    over = float(row.get("mean_overhead_s", 0.0))
    out = dict(row)
    out["overhead_fraction"] = over / (over + run) if over + run > 0 else 0.0
    out["granularity_warning"] = granularity_warning(name, fin, run, over)
    return out


def granularity_warning(name, finished, mean_run, mean_overhead):
    if finished < GRANULARITY_MIN_TASKS or mean_overhead <= mean_run:
        return None
    frac = mean_overhead / (mean_overhead + mean_run)
    # Batching k calls per task keeps the overhead per task and multiplies the run time by k:
    # overhead <= TARGET * run needs k >= overhead / (TARGET * run).
    target_run = mean_overhead / TARGET_OVERHEAD_FRACTION
    k = math.ceil(target_run / mean_run - 1e-9) if mean_run > 0 else None
    batch = (f"batch about {k:,} calls' worth of work into each task" if k and k < 10**7 else
             "give each task much more work (batch many items per task)")
    return (f"{name}: tasks are too small. Each spends {_t(mean_overhead)} in scheduling overhead but only "
            f"{_t(mean_run)} running ({frac:.0%} of its time is overhead). Use larger granularity: {batch}, "
            f"so each runs for at least ~{_t(target_run)}.")


def _t(s):
    if s >= 1.0:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} µs"


def _b(n):
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def format_summary(s):
    lines = []
    nodes = s.get("nodes") or []
    alive = [n for n in nodes if n.get("Alive", n.get("alive", True))]
    lines.append(f"Nodes: {len(alive)} alive" + (f", {len(nodes) - len(alive)} dead" if len(nodes) > len(alive)
                                                 else ""))
    for n in nodes:
        res = ", ".join(f"{k} {v:g}" for k, v in sorted((n.get("Resources") or {}).items()))
        tags = [t for t, on in (("head", n.get("head")), ("dead", not n.get("Alive", n.get("alive", True))))
                if on]
        lines.append(f"  {n.get('NodeID', '?')[:16]}  {n.get('NodeManagerHostname', '')}  {res}"
                     + (f"  ({', '.join(tags)})" if tags else ""))
    cpus = s["cpus"]
    lines.append("")
    lines.append("Resources (this node):")
    lines.append(f"  CPU: {cpus['used']:g} / {cpus['total']:g} used")
    for k, v in sorted(s["resources"]["total"].items()):
        if k != "CPU":
            lines.append(f"  {k}: {s['resources']['used'].get(k, 0.0):g} / {v:g} used")
    st = s.get("object_store") or {}
    if st:
        cap = st.get("capacity", 0) or 0
        used = st.get("bytes_used", 0) or 0
        pct = f" ({used / cap:.1%})" if cap else ""
        fallback = (f", {st['num_fallback']} larger than the store in files ({_b(st['bytes_fallback'])})"
                    if st.get("num_fallback") else "")
        lines.append(f"  Object store: {_b(used)} / {_b(cap)} used{pct}, {st.get('num_objects', 0)} objects"
                     f", {st.get('num_spilled', 0)} spilled, {st.get('evictions', 0)} evictions{fallback}")
    q = s["queues"]
    lines.append("")
    lines.append(f"Queues: {q['queued']} ready tasks queued, {q['waiting_for_arguments']} waiting for arguments, "
                 f"{q['in_flight']} in flight (not yet finished)")
    fns = s.get("functions") or {}
    lines.append("")
    if not fns:
        lines.append("Functions: no tasks yet")
    else:
        lines.append("Functions:")
        w = max(8, min(40, max(len(n) for n in fns)))
        lines.append(f"  {'name':<{w}} {'submitted':>10} {'finished':>10} {'mean run':>10} "
                     f"{'mean overhead':>14} {'mean queued':>12}")
        for name, f in fns.items():
            flag = "  <- tasks too small" if f.get("granularity_warning") else ""
            lines.append(f"  {name[:w]:<{w}} {f.get('submitted', 0):>10,} {f.get('finished', 0):>10,} "
                         f"{_t(f.get('mean_run_s', 0.0)):>10} {_t(f.get('mean_overhead_s', 0.0)):>14} "
                         f"{_t(f.get('mean_queue_s', 0.0)):>12}{flag}")
        lines.append("  (overhead: what the system adds per task while it holds a worker, i.e. sending it, "
                     "starting it, returning its results; queued: submission to start, i.e. waiting for "
                     "arguments and a free worker)")
    warnings = s.get("granularity_warnings") or []
    if warnings:
        lines.append("")
        lines.append("WARNING: " + ("some functions' tasks" if len(warnings) > 1 else "a function's tasks")
                     + " spend longer in scheduling overhead than running:")
        for wmsg in warnings:
            lines.append("  - " + wmsg)
    return "\n".join(lines)
