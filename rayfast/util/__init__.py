"""`rayfast.util`: Ray's small utilities built on the public API (ActorPool, queue, named actors,
placement groups, metrics)."""
from rayfast.util.actor_pool import ActorPool
from rayfast.util.helpers import as_completed, map_unordered
from rayfast.serialization import deregister_serializer, register_serializer
# The functions, not the submodule of the same name, are rayfast.util.placement_group etc. (as Ray's)
from rayfast.util.placement_group import (PlacementGroup, get_current_placement_group, get_placement_group,
                                          placement_group, placement_group_table, remove_placement_group)


def list_named_actors(all_namespaces=False):
    """Names of the live named actors of this namespace (dicts with namespace if all_namespaces)."""
    from rayfast.actor import list_named_actors as _list
    return _list(all_namespaces)


def get_node_ip_address():
    return "127.0.0.1"


def inspect_serializability(base_obj, name=None):
    """(True, set()) if base_obj pickles as a task argument or value would; else (False, failures),
    failures naming what in it does not (as Ray's, which prints its search too)."""
    from rayfast import serialization
    try:
        serialization.dumps(base_obj)
        return True, set()
    except Exception as e:
        failures = set()
        for attr, value in _members(base_obj):
            try:
                serialization.dumps(value)
            except Exception:
                failures.add((attr, type(value).__name__))
        print(f"{name or base_obj!r} is not serializable: {e}")
        return False, failures or {(name or repr(base_obj), type(base_obj).__name__)}


def _members(obj):
    """What obj's pickling would reach first: a function's closure and globals it uses, an
    object's attributes."""
    import inspect
    if inspect.isfunction(obj):
        cv = inspect.getclosurevars(obj)
        return list(cv.nonlocals.items()) + list(cv.globals.items())
    return list(getattr(obj, "__dict__", {}).items())


def __getattr__(name):
    if name == "queue":
        import importlib
        return importlib.import_module("rayfast.util.queue")
    if name == "scheduling_strategies":
        import importlib
        return importlib.import_module("rayfast.util.scheduling_strategies")
    if name == "metrics":
        import importlib
        return importlib.import_module("rayfast.util.metrics")
    raise AttributeError(f"module 'rayfast.util' has no attribute {name!r}")


__all__ = ["ActorPool", "list_named_actors", "get_node_ip_address", "inspect_serializability",
           "placement_group", "remove_placement_group", "get_placement_group", "placement_group_table",
           "get_current_placement_group", "as_completed", "map_unordered",
           "register_serializer", "deregister_serializer"]
