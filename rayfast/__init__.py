"""rayfast: a fast distributed futures runtime for Python, in the model of Ray.

    import rayfast
    rayfast.init()

    @rayfast.remote
    def f(x):
        return x * x

    assert rayfast.get(f.remote(3)) == 9
"""
from rayfast import exceptions
from rayfast._core.ids import ObjectID, ObjectRef, TaskID
from rayfast.api import (available_resources, cancel, cluster_resources, get, get_runtime_context, init,
                         is_initialized, nodes, put, shutdown, wait)
from rayfast.remote_function import RemoteFunction

__version__ = "0.1.0"


def remote(*args, **options):
    """Make a function a remote task, or a class an actor: `@remote` or `@remote(num_cpus=..)`."""
    if len(args) == 1 and not options and callable(args[0]):
        return _make_remote(args[0], {})
    if args:
        raise TypeError("The @rayfast.remote decorator takes either a function/class, or only keyword "
                        "options, e.g. @rayfast.remote(num_cpus=2)")

    def decorator(obj):
        return _make_remote(obj, options)
    return decorator


def get_gpu_ids():
    """The ids of the GPUs the running task was given (num_gpus); [] in the driver."""
    from rayfast import core_worker
    cw = core_worker._current
    return list(cw.gpu_ids) if cw is not None else []


def _make_remote(obj, options):
    import inspect

    if inspect.isclass(obj):
        from rayfast.actor import make_actor_class
        return make_actor_class(obj, options)
    if not inspect.isfunction(obj):
        # as Ray: not builtins, partials or callable objects (wrap them in a def)
        raise TypeError(f"The @rayfast.remote decorator must be applied to either a function or a class, "
                        f"not {obj!r}")
    return RemoteFunction(obj, options)


def __getattr__(name):
    # Actor and observability APIs live in their own modules; load them on first use.
    if name in ("get_actor", "kill", "method", "ActorHandle", "ActorClass"):
        from rayfast import actor
        return getattr(actor, name)
    if name == "LoggingConfig":
        from rayfast.logging_config import LoggingConfig
        return LoggingConfig
    if name in ("JobID", "NodeID"):
        from rayfast import runtime_context
        return getattr(runtime_context, name)
    if name == "ActorID":
        from rayfast.actor import ActorID
        return ActorID
    if name == "PlacementGroupID":
        from rayfast.util.placement_group import PlacementGroupID
        return PlacementGroupID
    if name in ("util", "actor", "job_config", "runtime_env", "dag"):
        import importlib
        return importlib.import_module(f"rayfast.{name}")
    if name == "cloudpickle":   # Ray's ray.cloudpickle (`from ray import cloudpickle`)
        import importlib
        return importlib.import_module("rayfast.cloudpickle")
    if name in ("ObjectRefGenerator", "DynamicObjectRefGenerator"):
        from rayfast import generator
        return getattr(generator, name)
    if name in ("timeline", "summary"):
        from rayfast import observability
        return getattr(observability, name)
    raise AttributeError(f"module 'rayfast' has no attribute {name!r}")


__all__ = ["init", "shutdown", "is_initialized", "remote", "get", "put", "wait", "cancel", "kill",
           "get_actor", "method", "nodes", "cluster_resources", "available_resources", "timeline",
           "ObjectRef", "ObjectID", "TaskID", "ActorHandle", "exceptions", "get_runtime_context",
           "get_gpu_ids"]
