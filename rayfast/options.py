"""Validating `.options()` / `@remote(...)` arguments and turning them into a resource shape."""
import math
import sys

from rayfast.config import DEFAULT_MAX_RETRIES
from rayfast.exceptions import _TypeOrValueError
from rayfast.scheduling import AFFINITY, placement

TASK_OPTIONS = {
    "num_returns", "num_cpus", "num_gpus", "resources", "max_retries", "retry_exceptions", "name",
    "scheduling_strategy", "runtime_env", "memory", "accelerator_type", "max_calls",
    "placement_group", "placement_group_bundle_index", "placement_group_capture_child_tasks",
    "_metadata", "label_selector", "enable_task_events",
}
ACTOR_OPTIONS = {
    "num_cpus", "num_gpus", "resources", "max_restarts", "max_task_retries", "max_concurrency",
    "name", "namespace", "lifetime", "get_if_exists", "scheduling_strategy", "runtime_env", "memory",
    "accelerator_type", "placement_group", "placement_group_bundle_index",
    "placement_group_capture_child_tasks", "max_pending_calls", "concurrency_groups", "_metadata",
    "label_selector", "enable_task_events", "allow_out_of_order_execution",
}
METHOD_OPTIONS = {"num_returns", "name", "concurrency_group", "max_task_retries", "retry_exceptions",
                  "enable_task_events", "_metadata"}


def validate(options, allowed, what):
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(f"Invalid option keyword(s) {sorted(unknown)} for {what}. "
                         f"Valid ones are: {', '.join(sorted(allowed))}.")
    for key in ("num_cpus", "num_gpus", "memory"):
        v = options.get(key)
        if v is not None:
            _check_quantity(key, v)
    gpus = options.get("num_gpus")
    if gpus is not None and gpus > 1 and gpus != int(gpus):
        raise ValueError(f"num_gpus above 1 must be a whole number, got {gpus!r}")
    res = options.get("resources")
    if res is not None:
        if not isinstance(res, dict):
            raise TypeError(f"resources must be a dict of name -> amount, got {type(res).__name__}")
        for k, v in res.items():
            if not isinstance(k, str):
                raise TypeError(f"resource names must be strings, got {k!r}")
            if k in ("CPU", "GPU"):
                raise ValueError(f"Use the num_cpus/num_gpus options for {k}, not resources={{'{k}': ...}}")
            _check_quantity(f"resource {k!r}", v)
    nr = options.get("num_returns")
    if nr is not None and nr != "dynamic" and nr != "streaming":
        if not isinstance(nr, int) or isinstance(nr, bool):
            raise _TypeOrValueError(f"num_returns must be a non-negative integer, 'streaming' or "
                                    f"'dynamic', got {type(nr).__name__}: {nr!r}")
        if nr < 0:
            raise ValueError(f"num_returns must be a non-negative integer, got {nr!r}")
    for key in ("max_retries", "max_restarts", "max_task_retries"):
        v = options.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
            raise _TypeOrValueError(f"{key} must be an integer >= -1 (-1: forever), got "
                                    f"{type(v).__name__}: {v!r}")
        if v is not None and v < -1:
            raise ValueError(f"{key} must be an integer >= -1 (-1: forever), got {v!r}")
    if options.get("label_selector"):
        raise NotImplementedError("label_selector is not supported by rayfast (its nodes have no labels "
                                  "to select on); use custom resources, e.g. resources={'my_label': 0.01}")
    strategy = options.get("scheduling_strategy")
    if strategy is not None and not isinstance(strategy, str) and type(strategy).__name__ not in (
            "PlacementGroupSchedulingStrategy", "NodeAffinitySchedulingStrategy", "NodeLabelSchedulingStrategy"):
        raise TypeError(f"scheduling_strategy must be 'DEFAULT', 'SPREAD' or a strategy object of "
                        f"rayfast.util.scheduling_strategies, got {type(strategy).__name__}")
    if isinstance(strategy, str) and strategy not in ("DEFAULT", "SPREAD"):
        raise ValueError(f"Invalid scheduling_strategy value {strategy!r}. Valid values are "
                         f"['DEFAULT' | 'SPREAD' | PlacementGroupSchedulingStrategy | "
                         f"NodeAffinitySchedulingStrategy | NodeLabelSchedulingStrategy]")
    for key, low, what in (("max_calls", 0, "None, 0 or a positive integer"),
                           ("max_concurrency", 1, "a positive integer")):
        v = options.get(key)
        if v is None:
            continue
        if not isinstance(v, int) or isinstance(v, bool):   # Ray: TypeError for the type
            raise _TypeOrValueError(f"{key} must be {what}, got {type(v).__name__} {v!r}")
        if v < low:
            raise ValueError(f"{key} must be {what}, got {v!r}")
    lt = options.get("lifetime")
    if lt is not None and lt not in ("detached", "non_detached"):
        raise ValueError(f"lifetime must be 'detached' or 'non_detached', got {lt!r}")
    name = options.get("name")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}")
    return options


def _check_quantity(what, v):
    """A resource amount, as Ray checks it: a number (TypeError, as Ray), not negative, and not
    finer than Ray's resource unit of 0.0001."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        raise _TypeOrValueError(f"{what} must be a non-negative number, got {type(v).__name__}: {v!r}")
    if v < 0 or math.isnan(v):
        raise ValueError(f"{what} must be a non-negative number, got {v!r}")
    if 0 < v < 0.0001:
        raise ValueError(f"The precision of the fractional quantity of {what} cannot go beyond 0.0001, "
                         f"got {v!r}")


def resource_shape(options, default_cpus, what="the task"):
    """The sorted (name, amount) tuple a task or actor asks of a node (of a placement group's
    reservation if it is scheduled in one)."""
    shape = _own_shape(options, default_cpus) + label_requirement(options)
    pg, index, _ = placement(options)
    if pg is None:
        return shape
    from rayfast.util.placement_group import group_shape
    return group_shape(shape, pg, index, what)


def _own_shape(options, default_cpus):
    cpus = options.get("num_cpus")
    shape = {"CPU": float(default_cpus if cpus is None else cpus)}
    gpus = options.get("num_gpus")
    if gpus:
        shape["GPU"] = float(gpus)
    mem = options.get("memory")
    if mem:
        shape["memory"] = float(mem)
    acc = options.get("accelerator_type")
    if acc:   # Ray's rule: a node of that type has the resource accelerator_type:<type>
        shape[f"accelerator_type:{acc}"] = 0.001
    for k, v in (options.get("resources") or {}).items():
        shape[k] = float(v)
    return tuple(sorted((k, v) for k, v in shape.items() if v > 0))


LABELS = "node_labels:"   # the resource name prefix of hard label expressions the node does not meet


def label_requirement(options):
    """What a NodeLabelSchedulingStrategy asks beyond resources: () if the node's labels meet its
    hard expressions, else a resource named after the unmet ones, which no node has (so the task
    or actor stays pending, as an infeasible one; util/scheduling_strategies.py)."""
    strategy = options.get("scheduling_strategy")
    if type(strategy).__name__ != "NodeLabelSchedulingStrategy":
        return ()
    from rayfast import core_worker
    unmet = strategy.unmet(core_worker.current().node_info["labels"])
    return ((LABELS + unmet, 0.0001),) if unmet else ()


def warn_infeasible(shape, cw, what):
    """Warn, as Ray does, when no node has what shape asks for: the task or actor stays pending
    until one joins (or it is cancelled or killed); get(timeout=) and wait() see it as not ready.
    The cluster's totals are asked for only when the local node lacks something (once per shape)."""
    if _missing(shape, cw.node_info["resources"]) is None:
        return
    missing = _missing(shape, cw.request("cluster_resources"))
    if missing is not None:
        print(f"Warning: {what} asks for {missing}: it stays pending until a node with the resources "
              f"joins (cancel() it to give up).", file=sys.stderr, flush=True)


def _missing(shape, total):
    """What of shape no node has, as text; None if it fits. A placement group's resources exist
    only once it is placed: they are not checked."""
    for name, amount in shape:
        if name.startswith(LABELS):
            return f"a node whose labels meet {{{name[len(LABELS):]}}} but the cluster has none"
        have = total.get(name, 0)
        # (a node-id resource is checked when the node is chosen: scheduling.pick_node)
        if amount > have + 1e-9 and "_group_" not in name and not name.startswith(AFFINITY):
            listed = ", ".join(f"{k}: {v:g}" for k, v in sorted(total.items()) if ":" not in k)
            return f"{amount:g} {name} but the cluster has {have:g} in total ({listed})"
    return None


def max_retries(options):
    v = options.get("max_retries")
    return DEFAULT_MAX_RETRIES if v is None else v
