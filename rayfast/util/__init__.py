"""`rayfast.util`: Ray's small utilities built on the public API (ActorPool, queue, named actors)."""
from rayfast.util.actor_pool import ActorPool


def list_named_actors(all_namespaces=False):
    """Names of the live named actors of this namespace (dicts with namespace if all_namespaces)."""
    from rayfast.actor import list_named_actors as _list
    return _list(all_namespaces)


def get_node_ip_address():
    return "127.0.0.1"


def __getattr__(name):
    if name == "queue":
        import importlib
        return importlib.import_module("rayfast.util.queue")
    if name in ("placement_group", "remove_placement_group", "get_placement_group",
                "placement_group_table", "get_current_placement_group", "PlacementGroup"):
        from rayfast.util import placement_group
        return getattr(placement_group, name)
    if name == "scheduling_strategies":
        import importlib
        return importlib.import_module("rayfast.util.scheduling_strategies")
    raise AttributeError(f"module 'rayfast.util' has no attribute {name!r}")


__all__ = ["ActorPool", "list_named_actors", "get_node_ip_address"]
