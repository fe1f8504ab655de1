"""The public face: init, shutdown, get, put, wait, cancel and cluster queries."""
from __future__ import annotations

import atexit
import numbers
import os
import threading
import time
import uuid

from rayfast import core_worker
from rayfast import protocol as P
from rayfast import runtime_env
from rayfast import serialization
from rayfast._core.ids import ObjectRef, wait_split
from rayfast.config import DEFAULT_GCS_SHARDS
from rayfast.core_worker import CoreWorker
from rayfast.direct import DriverChannel
from rayfast.exceptions import GetTimeoutError, _TypeOrValueError
from rayfast.generator import ObjectRefGenerator

_lock = threading.RLock()
_state = {"node": None, "cw": None, "namespace": None}

_INIT_KWARGS = {"include_dashboard", "dashboard_host", "dashboard_port", "log_to_driver", "logging_level",
                "logging_format", "configure_logging", "runtime_env", "local_mode", "job_config",
                "_system_config", "_temp_dir", "_node_ip_address", "num_gpus", "storage",
                "_enable_object_reconstruction", "_plasma_directory", "_metrics_export_port", "logging_config"}


class RayContext(dict):
    """What init() returns; a dict of addresses, as Ray's is."""

    def __init__(self, info):
        super().__init__(info)
        self.address_info = dict(info)
        self.dashboard_url = None

    @classmethod
    def of(cls, node_info):
        """From the node's WELCOME info, with Ray's address_info keys."""
        gcs = ",".join(node_info["gcs_addresses"])
        return cls({"node_id": node_info["node_id"].hex(), "session_dir": node_info["session_dir"],
                    "gcs_address": gcs, "redis_address": gcs, "address": node_info["socket"],
                    "object_store_address": node_info["store_name"], "raylet_socket_name": node_info["socket"],
                    "node_ip_address": "127.0.0.1", "webui_url": None,
                    "metrics_export_port": node_info.get("metrics_export_port", -1),
                    "dashboard_agent_listen_port": -1})

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        shutdown()

    def disconnect(self):
        """Leave the cluster: shutdown() (Ray's namespaces guide ends a connection this way)."""
        shutdown()


def is_initialized():
    """True in a driver after init() and in every task and actor (a worker is connected from
    birth, as Ray's); a forked child has no CoreWorker (core_worker forgets it at the fork)."""
    cw = core_worker._current
    return cw is not None and (cw is _state["cw"] or cw.mode != "driver")


def init(address=None, *, num_cpus=None, resources=None, object_store_memory=None,
         gcs_shards=DEFAULT_GCS_SHARDS, ignore_reinit_error=False, namespace=None,
         object_spilling_directory=None, labels=None, **kwargs):
    """Start a local cluster (or connect to one) and make this process its driver.

    address: None (as Ray's: the cluster RAYFAST_ADDRESS names, else the latest one `rayfast start`
    left running on this machine, else a new local one), "local" (always a new local one), "auto"
    (a running one, else ConnectionError), "HOST:PORT" (the head's GCS) or a node's socket path.
    labels: the new node's labels (str -> str), for NodeLabelSchedulingStrategy."""
    unknown = set(kwargs) - _INIT_KWARGS
    if unknown:
        raise RuntimeError(f"Unknown keyword argument(s): {', '.join(sorted(unknown))}")   # as Ray
    if isinstance(address, str) and address.startswith("ray://"):
        # Ray's docs connect with ray:// (Ray Client); a rayfast driver joins the cluster itself
        raise ValueError(f"{address!r}: rayfast has no Ray Client (ray:// addresses). Connect as a driver: "
                         f"init(address='HOST:PORT') with the head's address, or 'auto' on its machine.")
    from rayfast.session import default_object_store_memory, start_local_node

    with _lock:
        if is_initialized():
            if ignore_reinit_error:
                return RayContext.of(core_worker._current.node_info)
            raise RuntimeError("Maybe you called rayfast.init twice by accident? This error can be "
                               "suppressed by passing in 'ignore_reinit_error=True' or by calling "
                               "'rayfast.shutdown()' prior to 'rayfast.init()'.")
        if address is None:
            address = _running_cluster()
        if address not in (None, "local"):
            given = [k for k, v in (("num_cpus", num_cpus), ("resources", resources),
                                    ("object_store_memory", object_store_memory)) if v is not None]
            if given:
                raise ValueError(f"When connecting to an existing cluster, {', '.join(given)} must not be "
                                 f"given: they belong to the node (`rayfast start --num-cpus ...`).")
        if kwargs.get("local_mode"):
            raise RuntimeError("local_mode is not supported (nor by Ray since 2.x): run with a local "
                               "cluster, e.g. init(num_cpus=1), and debug tasks there.")
        job_config = kwargs.get("job_config")
        job_env = kwargs.get("runtime_env")
        if job_config is not None:   # as Ray: init's own runtime_env and namespace come first
            from rayfast.job_config import JobConfig
            if not isinstance(job_config, JobConfig):
                raise TypeError(f"job_config must be a rayfast.job_config.JobConfig, got {type(job_config).__name__}")
            job_env = job_env if job_env is not None else job_config.runtime_env
            namespace = namespace if namespace is not None else job_config.ray_namespace
        job_env = runtime_env.validate(job_env, job_level=True)
        if job_config is not None and job_config.default_actor_lifetime == "detached":
            # with the job's runtime_env, every task and actor of the job knows it (actor.py)
            job_env = dict(job_env or {}, **{runtime_env.LIFETIME_KEY: "detached"})
        logging_config = kwargs.get("logging_config")
        if logging_config is None and job_config is not None:
            logging_config = job_config.py_logging_config
        if logging_config is not None:
            from rayfast import logging_config as lc
            if not isinstance(logging_config, lc.LoggingConfig):
                raise TypeError(f"logging_config must be a rayfast.LoggingConfig, got {type(logging_config).__name__}")
            lc.configure(logging_config)   # the driver's now; each worker's with the job's first task there
            job_env = dict(job_env or {}, **{runtime_env.LOGGING_KEY: logging_config._as_tuple()})
        if num_cpus is None:
            num_cpus = os.cpu_count() or 1
        if not isinstance(num_cpus, numbers.Integral) or isinstance(num_cpus, bool) or num_cpus < 0:
            raise ValueError(f"num_cpus must be a non-negative integer, got {num_cpus!r}")
        if resources is not None and not isinstance(resources, dict):
            raise TypeError("resources must be a dict of name -> amount")
        for k, v in (resources or {}).items():
            if k in ("CPU", "GPU"):
                raise ValueError(f"Use num_cpus/num_gpus instead of resources={{'{k}': ...}}")
            if not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"resource {k!r} must be a non-negative number, got {v!r}")
        res = dict(resources or {})
        gpus = kwargs.get("num_gpus")
        if gpus is not None:
            if not isinstance(gpus, numbers.Real) or isinstance(gpus, bool) or gpus < 0 or gpus != int(gpus):
                raise ValueError(f"num_gpus must be a non-negative whole number, got {gpus!r}")
            if gpus:
                res["GPU"] = float(gpus)
        metrics_port = kwargs.get("_metrics_export_port")
        if metrics_port is None:
            metrics_port = 0   # a free port, in the context's metrics_export_port
        elif not isinstance(metrics_port, numbers.Integral) or isinstance(metrics_port, bool) or not 0 <= metrics_port <= 65535:
            raise ValueError(f"_metrics_export_port must be a port number (0: a free one), got {metrics_port!r}")
        if object_store_memory is None:
            object_store_memory = default_object_store_memory()
        elif (not isinstance(object_store_memory, numbers.Real) or isinstance(object_store_memory, bool)
              or not object_store_memory >= 1):
            # Ray takes a float (100e6) and uses its whole bytes
            raise ValueError(f"object_store_memory must be a positive number of bytes, got {object_store_memory!r}")
        if not isinstance(gcs_shards, int) or gcs_shards < 1:
            raise ValueError(f"gcs_shards must be a positive integer, got {gcs_shards!r}")
        if labels is not None and (not isinstance(labels, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in labels.items())):
            raise ValueError(f"labels must be a dict of str -> str, got {labels!r}")
        if address not in (None, "local"):
            if labels is not None:   # as Ray: they are the new node's
                raise ValueError("When connecting to an existing cluster, labels must not be provided.")
            from rayfast.cluster import connect_driver
            node, conn, info = connect_driver(address)
        else:
            system_config = kwargs.get("_system_config") or {}
            spill = object_spilling_directory
            if system_config.get("automatic_object_spilling_enabled") is False:
                spill = False   # Ray's switch: a full store raises ObjectStoreFullError
            node = start_local_node(int(num_cpus), res, int(object_store_memory), spill,
                                    gcs_shards, kwargs.get("_temp_dir"), kwargs.get("log_to_driver", True),
                                    labels, int(metrics_port))
            try:
                conn, info = _hello(node.socket_path)
            except BaseException:
                node.stop()
                raise
        from rayfast._core.store import ObjectStore

        store = ObjectStore.attach(info["store_name"])
        cw = CoreWorker(conn, "driver", store, info)
        cw.direct = DriverChannel(cw)
        # Without one, a job gets an anonymous namespace of its own (Ray's: a UUID), so the
        # named actors of two such jobs never collide or see each other.
        cw.namespace = namespace if namespace is not None else str(uuid.uuid4())
        cw.runtime_env = job_env
        cw.request("job_namespace", cw.namespace)
        _state.update(node=node, cw=cw, namespace=cw.namespace)
        core_worker.set_current(cw)
        return RayContext.of(info)


def _hello(socket_path, owner=True):
    conn = P.connect(socket_path)
    conn.send((P.HELLO, "driver", os.getpid(), None, owner))
    conn.flush()
    while True:
        for m in conn.recv(30.0):
            if m[0] == P.WELCOME:
                return conn, m[1]
        raise RuntimeError("the rayfast node did not answer")


def shutdown(_exiting_interpreter=False):
    """Stop the driver's connection and, for a cluster it started, the whole cluster."""
    with _lock:
        cw = _state["cw"]
        node = _state["node"]
        _state.update(cw=None, node=None)
        if cw is None or core_worker._current is not cw:   # (a forked child's is its parent's)
            return
        core_worker.set_current(None)
        serialization.unpin_out_of_band()   # (their objects end with the session)
        try:
            cw.flush()
        except Exception:
            pass
        cw.close()
        try:
            cw.store.close()
        except Exception:
            pass
        if node is not None:
            node.stop()


atexit.register(shutdown, True)


def _running_cluster():
    """What init() without an address joins, as Ray's: the cluster RAYFAST_ADDRESS names, else the
    latest one `rayfast start` left running on this machine; None: start a local one."""
    env = os.environ.get("RAYFAST_ADDRESS")
    if env:
        return env
    from rayfast.cluster import live_session
    return "auto" if live_session() is not None else None


def _check_refs(object_refs, what):
    if isinstance(object_refs, ObjectRef):
        return [object_refs], True
    if isinstance(object_refs, list):
        for r in object_refs:
            if not isinstance(r, ObjectRef):
                raise TypeError(f"{what} expects an ObjectRef or a list of ObjectRefs, but the list "
                                f"holds a {type(r).__name__}: {r!r}")
        return object_refs, False
    # Ray raises ValueError here, for a tuple too ("'object_refs' must either be an ObjectRef or a
    # list of ObjectRefs"); earlier rayfast raised TypeError, so the error is both.
    raise _TypeOrValueError(f"{what} expects an ObjectRef or a list of ObjectRefs, got {type(object_refs).__name__}")


def _check_timeout(timeout, negative_blocks=False):
    """timeout in seconds as a float, or None. A negative one is an error, except for get(),
    where Ray waits without a limit."""
    if timeout is None:
        return None
    if not isinstance(timeout, numbers.Real) or isinstance(timeout, bool):
        raise ValueError(f"timeout must be None or a number of seconds, got {timeout!r}")
    if timeout < 0:
        if negative_blocks:
            return None
        raise ValueError(f"The 'timeout' argument must be nonnegative, got {timeout!r}")
    return float(timeout)


def get(object_refs, *, timeout=None, progress=False):
    """The value(s) of object_refs, waiting for them; raises the task's error if one failed."""
    # No auto-init here: refs without a cluster are from one that is gone (Ray raises too)
    cw = core_worker.current()
    if type(object_refs) is ObjectRef:  # the hot path
        timeout = _check_timeout(timeout, True)
        deadline = None if timeout is None else time.monotonic() + timeout
        key = object_refs.binary()
        if key not in cw._results:
            if not cw.wait_objects([key], 1, deadline):
                raise GetTimeoutError(f"get timed out after {timeout} s: the object is not ready")
        return cw.value_of(key)
    if isinstance(object_refs, ObjectRefGenerator):
        return object_refs   # as Ray does: its items are what one gets
    refs, single = _check_refs(object_refs, "get()")
    timeout = _check_timeout(timeout, True)
    if progress and len(refs) > 1:
        from rayfast.progress import get_with_progress
        return get_with_progress(cw, refs, timeout)
    values = cw.get(refs, timeout)
    return values[0] if single else values


def put(value, *, _owner=None):
    """Store value in the cluster and return a ref to it.

    _owner (Ray's, an actor handle) is checked but changes nothing: the node, not a worker, owns
    objects here, and keeps one as long as anything refers to it."""
    if _owner is not None:
        from rayfast.actor import ActorHandle
        if not isinstance(_owner, ActorHandle):
            raise TypeError(f"put(_owner=) expects an ActorHandle, got {type(_owner).__name__}")
    return core_worker.current_or_init().put(value)


def wait(object_refs, *, num_returns=1, timeout=None, fetch_local=True):
    """(ready, not_ready): the first num_returns refs to be ready, in the order given.

    An ObjectRefGenerator in the list is ready when its next item is (or it has ended)."""
    if not isinstance(object_refs, list):
        raise TypeError(f"wait() expects a list of ObjectRefs or ObjectRefGenerators, "
                        f"got {type(object_refs).__name__}")
    if not object_refs:
        return [], []
    cw = core_worker.current()   # no auto-init, as for get()
    if not isinstance(num_returns, int) or isinstance(num_returns, bool) or num_returns < 1:
        raise ValueError(f"num_returns must be a positive integer, got {num_returns!r}")
    # A loop of wait() calls over a shrinking list is a common pattern: the list is
    # checked and split in one C pass (duplicates refused there too); anything but
    # ObjectRefs in it (None) takes the slower way.
    split = wait_split(object_refs, cw._results, num_returns)
    if split is None:
        bad = next((r for r in object_refs if not isinstance(r, (ObjectRef, ObjectRefGenerator))), None)
        if bad is not None:
            raise TypeError(f"wait() expects a list of ObjectRefs or ObjectRefGenerators, "
                            f"got a list holding {type(bad).__name__}")
        if len(set(object_refs)) != len(object_refs):
            raise ValueError("wait() requires a list of unique ObjectRefs: the list has duplicates")
    if num_returns > len(object_refs):
        raise ValueError(f"num_returns ({num_returns}) cannot be greater than the number of refs "
                         f"({len(object_refs)})")
    timeout = _check_timeout(timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    if split is not None:
        ready, not_ready, missing = split
        if len(ready) < num_returns:
            cw.wait_objects(missing, num_returns - len(ready), deadline)
            ready, not_ready, _ = wait_split(object_refs, cw._results, num_returns)
        return ready, not_ready
    is_ready = _wait_with_generators(cw, object_refs, num_returns, deadline)
    ready, not_ready = [], []
    for r, ok in zip(object_refs, is_ready):
        if ok and len(ready) < num_returns:
            ready.append(r)
        else:
            not_ready.append(r)
    return ready, not_ready


def _wait_with_generators(cw, object_refs, num_returns, deadline):
    """Readiness of each of object_refs, some of them ObjectRefGenerators."""
    results = cw._results
    # per entry, the keys any of which makes it ready (none: a generator whose next item is known)
    held = [(r,) if type(r) is ObjectRef else r._wait_refs() for r in object_refs]
    keys = [tuple(x.binary() for x in h) for h in held]

    def ready():
        return [not k or any(x in results for x in k) for k in keys]

    flat = [x for k in keys for x in k]
    while True:
        now = ready()
        if sum(now) >= num_returns:
            return now
        # one more key: a generator counts once however many of its keys arrive
        if not cw.wait_objects(flat, sum(x in results for x in flat) + 1, deadline):
            return ready()


def cancel(object_ref, *, force=False, recursive=True):
    """Cancel the task that produces object_ref (or an ObjectRefGenerator's task); its get raises
    TaskCancelledError."""
    if isinstance(object_ref, ObjectRefGenerator):
        object_ref = object_ref._task_ref()
    if not isinstance(object_ref, ObjectRef):
        raise TypeError(f"cancel() expects an ObjectRef or an ObjectRefGenerator, got "
                        f"{type(object_ref).__name__} (for actors, use kill())")
    cw = core_worker.current()
    key = object_ref.binary()
    if cw.actor_channels is not None and cw.actor_channels.cancel(key[:16], bool(force)):
        return
    if cw.direct is not None and cw.direct.cancel(key, bool(force)):
        return
    if force and cw.request("is_actor_call", key[:16]):
        raise ValueError("force=True is not supported for actor tasks.")
    cw.send((P.CANCEL, key, bool(force), bool(recursive)))


def nodes():
    """One dict per node, with Ray's keys (ports rayfast does not have are -1)."""
    out = []
    for n in core_worker.current().request("nodes"):
        n = dict(n)
        for k, v in (("NodeName", n.get("NodeManagerAddress")), ("Labels", {"ray.io/node-id": n.get("NodeID")}),
                     ("DeathReason", 0), ("DeathReasonMessage", ""), ("ObjectManagerPort", -1),
                     ("RayletSocketName", None), ("DashboardAgentListenPort", -1), ("MetricsAgentPort", -1),
                     ("RuntimeEnvAgentPort", -1)):
            n.setdefault(k, v)
        out.append(n)
    return out


def cluster_resources():
    return _shown(core_worker.current().request("cluster_resources"))


def available_resources():
    cw = core_worker.current()
    avail = cw.request("available_resources")
    # The node counts a worker leased to this driver as free (it idles between the driver's
    # calls); while it runs one of them, it is not (rayfast/direct.py).
    lease = cw.direct.lease if cw.direct is not None else None
    if lease is not None and lease.inflight is not None:
        for name, amount in lease.shape:
            avail[name] = avail.get(name, 0) - amount
    return _shown(avail)


def _shown(resources):
    # As Ray: nothing the cluster has none of (init(num_cpus=0): no "CPU" key), and not the
    # resources a placed placement group adds (rayfast/node/placement_groups.py)
    return {k: v for k, v in resources.items() if v > 0 and "_group_" not in k}


def get_runtime_context():
    from rayfast.runtime_context import RuntimeContext
    return RuntimeContext(core_worker.current_or_init())


def _auto_init():
    """Ray starts a local cluster on the first remote() or put() without init()."""
    with _lock:
        if not is_initialized():
            init()


core_worker.auto_init = _auto_init
