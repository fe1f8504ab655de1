"""Actors: @remote classes, their handles and methods, and the actor side of a worker.

    @rayfast.remote
    class Counter:
        def __init__(self, start): self.n = start
        def add(self, k): self.n += k; return self.n

    c = Counter.remote(10)          # ActorHandle; the actor starts in a process of its own
    ref = c.add.remote(5)           # ObjectRef; methods of one caller run in submission order
    assert rayfast.get(ref) == 15

Creation is a task (TASK_ACTOR_CREATE) whose id is the actor's id; each method
call is a task (TASK_ACTOR_METHOD) that the node manager forwards to the
actor's process as soon as its arguments are ready (rayfast/node/actors.py).

Handle lifetime: every handle holds an ObjectRef to the creation task's return
object (the actor's *liveness object*), and a pickled handle carries that ref
too, so the ordinary object reference counting — per process, in task specs and
inside stored objects — counts handles everywhere for free. When the liveness
object is freed, no handle is left anywhere and the node manager ends the actor
(unless it is detached). Dropping a handle arms the flush timer, so the release
reaches the node manager within a millisecond without another API call.
"""
from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextvars
import functools
import hashlib
import inspect
import os
import threading
import time
import traceback
import types
import typing

import cloudpickle

from rayfast import core_worker
from rayfast.actor_channel import channels_of
from rayfast.direct import cancelled_results, failed_results
from rayfast import protocol as P
from rayfast import runtime_env
from rayfast import serialization
from rayfast._core.ids import ObjectRef, TaskID, local_ref_count
from rayfast.generator import ObjectRefGenerator
from rayfast.id_types import BinaryID
from rayfast.exceptions import ActorUnschedulableError, PendingCallsLimitExceeded, RayActorError, _TypeOrValueError
from rayfast.node.actors import EXITED_BY_USER, dead_error_data
from rayfast.node.worker import TaskExecutor
from rayfast.options import ACTOR_OPTIONS, METHOD_OPTIONS, label_requirement, resource_shape, validate, warn_infeasible
from rayfast.scheduling import captured_strategy, pick_node, placement_extras
from rayfast.remote_function import _task_extras, encode_call_args as _encode

_RESOURCE_KEYS = ("num_cpus", "num_gpus", "resources", "memory")
DEFAULT_ASYNC_CONCURRENCY = 1000
# every actor has them (ActorTaskExecutor.actor_call); __ray_call__(fn, ...) runs fn(actor, ...) there
_BUILTIN_METHODS = ("__ray_ready__", "__ray_terminate__", "__ray_call__")
PUSH_DELAY = 0.001           # how soon replies the socket could not take are pushed again
CANCEL_CHECK_AFTER = 0.01   # after a call this long, read what came meanwhile before taking a queued call


class ActorID(BinaryID):
    """An actor's 16-byte id (the id of its creation task)."""

    __slots__ = ()


# --- call-site signature checks ---------------------------------------------

class _Check:
    """Binds call arguments against a signature at the call site; a fast path for plain positionals."""

    __slots__ = ("sig", "fast")

    def __init__(self, sig):
        self.sig = sig
        self.fast = None
        if sig is not None:
            params = list(sig.parameters.values())
            if all(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params):
                self.fast = (sum(1 for p in params if p.default is p.empty), len(params))

    def check(self, what, args, kwargs):
        if self.sig is None:
            return
        fast = self.fast
        if not kwargs and fast is not None and fast[0] <= len(args) <= fast[1]:
            return
        try:
            self.sig.bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{what}(): {e}") from None


def _method_signature(cls, name):
    """The signature a caller must satisfy (without self), or None when it cannot be known."""
    try:
        raw = inspect.getattr_static(cls, name)
    except AttributeError:
        return None
    try:
        if isinstance(raw, staticmethod):
            return inspect.signature(raw.__func__)
        if isinstance(raw, classmethod):
            return inspect.signature(getattr(cls, name))
        sig = inspect.signature(raw)
    except (TypeError, ValueError):
        return None
    params = list(sig.parameters.values())
    if params and params[0].kind in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
        params = params[1:]
    elif params and params[0].kind == params[0].VAR_POSITIONAL:
        return None
    try:
        return sig.replace(parameters=params)
    except ValueError:
        return None


class _Meta:
    """What a handle knows of its actor's class: name and per-method (num_returns, is_async, check)."""

    __slots__ = ("class_name", "methods", "is_async", "blob", "task_names")

    def __init__(self, class_name, methods, is_async):
        self.class_name = class_name
        self.methods = methods          # name -> (num_returns, is_async, _Check, _CallOptions)
        # a call's task name, as Ray's: Class.method (timeline, statistics, errors)
        self.task_names = {n: f"{class_name}.{n}" for n in methods}
        self.is_async = is_async
        self.blob = None

    def dumps(self):
        if self.blob is None:
            plain = {n: (nr, ia, c.sig, o) for n, (nr, ia, c, o) in self.methods.items()}
            try:
                self.blob = cloudpickle.dumps((self.class_name, plain, self.is_async), protocol=5)
            except Exception:  # an unpicklable default value: the remote side skips arg checks
                plain = {n: (nr, ia, None, o) for n, (nr, ia, _, o) in plain.items()}
                self.blob = cloudpickle.dumps((self.class_name, plain, self.is_async), protocol=5)
        return self.blob


_metas = {}   # blob -> _Meta, so every handle of one class shares one


def _meta_from_blob(blob):
    m = _metas.get(blob)
    if m is None:
        class_name, plain, is_async = cloudpickle.loads(blob)
        m = _Meta(class_name, {n: (nr, ia, _Check(sig), o) for n, (nr, ia, sig, o) in plain.items()}, is_async)
        m.blob = blob
        if len(_metas) > 4096:
            _metas.clear()
        _metas[blob] = m
    return m


def _class_meta(cls):
    methods = {}
    any_async = inspect.iscoroutinefunction(cls.__init__)   # as Ray's: an async constructor counts
    for name, member in inspect.getmembers(cls):
        if not callable(member) or inspect.isclass(member):
            continue
        fn = getattr(member, "__func__", member)
        # As Ray's: dunder methods the class defines are remote methods too (__ray_shutdown__,
        # __len__...); object's own are not, nor is the constructor.
        if name.startswith("__") and (name == "__init__" or not inspect.isfunction(fn)):
            continue
        is_async = inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)
        any_async = any_async or is_async
        nr = getattr(fn, "__rayfast_num_returns__", None)
        if nr is None:   # Ray: a generator method streams its values by default
            nr = "streaming" if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn) else 1
        opts = _call_options(getattr(fn, "__rayfast_method_options__", {}))
        methods[name] = (nr, is_async, _Check(_method_signature(cls, name)), opts)
    no_args = _Check(inspect.Signature())
    methods["__ray_ready__"] = (1, False, no_args, _NO_OPTIONS)
    methods["__ray_terminate__"] = (1, False, no_args, _NO_OPTIONS)
    methods["__ray_call__"] = (1, False, _Check(inspect.signature(lambda fn, *args, **kwargs: None)), _NO_OPTIONS)
    return _Meta(cls.__name__, methods, any_async)


_NO_OPTIONS = (None, None)


def _call_options(options):
    """(max_task_retries, spec extras) of a method's call options; (None, None) when none are set.

    max_task_retries None: the actor's. The extras carry retry_exceptions
    as tasks do (remote_function._task_extras), and the concurrency group."""
    retries = options.get("max_task_retries")
    extras = _task_extras(options)
    group = options.get("concurrency_group")
    if group is not None:
        if not isinstance(group, str) or not group:
            raise TypeError(f"concurrency_group must be a non-empty string, got {group!r}")
        extras = dict(extras or {}, concurrency_group=group)
    return _NO_OPTIONS if retries is None and extras is None else (retries, extras)


# --- @rayfast.method -----------------------------------------------------------

def method(*args, **options):
    """Options for one actor method: `@rayfast.method(num_returns=2)`; bare `@rayfast.method`
    (Ray's type-hints pattern) marks a method with the defaults."""
    if len(args) == 1 and callable(args[0]) and not options:
        return method()(args[0])
    if args:
        raise TypeError("@rayfast.method takes only keyword options, e.g. @rayfast.method(num_returns=2)")
    validate(options, METHOD_OPTIONS, "@rayfast.method")

    def decorator(fn):
        if not callable(fn):
            raise TypeError(f"@rayfast.method decorates a method, not {fn!r}")
        nr = options.get("num_returns")
        if nr is not None:
            fn.__rayfast_num_returns__ = _check_num_returns(nr)
        fn.__rayfast_method_options__ = dict(options)
        return fn
    return decorator


def _check_num_returns(nr):
    if nr in ("streaming", "dynamic") or (isinstance(nr, int) and not isinstance(nr, bool) and nr >= 0):
        return nr
    raise ValueError(f"num_returns must be a non-negative integer, 'streaming' or 'dynamic', got {nr!r}")


# --- classes -----------------------------------------------------------------

def make_actor_class(cls, options):
    validate(options, ACTOR_OPTIONS, f"actor class {cls.__name__}")
    return ActorClass(cls, options)


def _namespace(cw):
    return getattr(cw, "namespace", None)


class ActorClass:
    """What `@rayfast.remote` makes of a class: `.remote()` starts an actor, `.options()` configures one."""

    def __init__(self, cls, options):
        self._setup(cls, options)
        self._meta   # (made now, so that bad method options fail at the decorator)

    def _setup(self, cls, options):
        self._cls = cls
        self._options = dict(options)
        self._pickled = None
        self._class_id = None
        self.__doc__ = cls.__doc__
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__module__ = cls.__module__
        self.__wrapped__ = cls

    def __call__(self, *args, **kwargs):
        raise TypeError(f"Actors cannot be instantiated directly. Instead of '{self.__name__}()', "
                        f"use '{self.__name__}.remote()'.")

    # Ray's type hints: ActorClass[MyClass] (the annotation of ray.remote(MyClass))
    __class_getitem__ = classmethod(types.GenericAlias)

    def __getstate__(self):
        return {"cls": self._cls, "options": self._options}

    def __setstate__(self, state):
        # _meta waits for first use: a class whose methods name its own actor class is
        # unpickled in a cycle, and runs this before all its methods are in place.
        self._setup(state["cls"], state["options"])

    @functools.cached_property
    def _meta(self):
        return _class_meta(self._cls)

    @functools.cached_property
    def _init_check(self):
        try:
            return _Check(inspect.signature(self._cls))
        except (TypeError, ValueError):
            return _Check(None)

    def __repr__(self):
        return f"ActorClass({self.__module__}.{self.__qualname__})"

    def options(self, **options):
        validate(options, ACTOR_OPTIONS, f"{self.__name__}.options()")
        merged = dict(self._options)
        merged.update(options)
        parent = self

        class _Opts:
            def remote(self, *args, **kwargs):
                return parent._remote(args, kwargs, merged)

            def bind(self, *args, **kwargs):
                from rayfast.dag import ClassNode
                return ClassNode(self, args, kwargs, merged)

            def __call__(self, *args, **kwargs):
                return parent(*args, **kwargs)

        return _Opts()

    def remote(self, *args, **kwargs):
        return self._remote(args, kwargs, self._options)

    def bind(self, *args, **kwargs):
        """A node of a lazy DAG (rayfast.dag): the actor is made when the DAG is executed."""
        from rayfast.dag import ClassNode
        return ClassNode(self, args, kwargs)

    def _export(self, cw):
        if self._pickled is None:
            self._pickled = serialization.dumps_function(self._cls)
            self._class_id = hashlib.blake2b(self._pickled, digest_size=16).digest()
        cw.export_function(self._class_id, self._pickled)
        return self._class_id

    def _remote(self, args, kwargs, opts):
        cw = core_worker.current_or_init()   # as Ray: creating an actor starts a cluster if need be
        name = opts.get("name")
        if name is not None and not name:
            raise ValueError("Actor name must be a non-empty string")
        if opts.get("get_if_exists") and name is None:
            raise ValueError("get_if_exists=True needs a name: .options(name=..., get_if_exists=True)")
        namespace = opts.get("namespace")
        if namespace is not None and not isinstance(namespace, str):
            raise TypeError(f"namespace must be a string, got {type(namespace).__name__}")
        self._init_check.check(self.__name__, args, kwargs)
        if cw.capture_pg is not None and opts.get("scheduling_strategy") is None and \
                opts.get("placement_group", "default") == "default":
            # as Ray: a capturing task's actors go into its group too, unless they say where to run
            opts = dict(opts, scheduling_strategy=captured_strategy(cw.capture_pg))
        explicit = any(opts.get(k) is not None for k in _RESOURCE_KEYS)
        # Ray's rule: an actor with no resources given needs 1 CPU to be placed and holds none.
        hold = resource_shape(opts, 0)
        placement = hold if explicit else (("CPU", 1.0),) + label_requirement(opts)
        where = placement_extras(opts)
        if "node_affinity" in where or "spread" in where:
            placement, where = pick_node(cw, placement, where)
        if placement not in cw.feasible_shapes:
            warn_infeasible(placement, cw, f"Actor {self.__name__}")
            cw.feasible_shapes.add(placement)
        max_concurrency = opts.get("max_concurrency")
        if max_concurrency is None:
            max_concurrency = DEFAULT_ASYNC_CONCURRENCY if self._meta.is_async else 1
        groups = _check_groups(opts.get("concurrency_groups"))
        detached = (opts.get("lifetime") or (cw.runtime_env or {}).get(runtime_env.LIFETIME_KEY)) == "detached"
        fid = self._export(cw)
        payload, arg_refs, borrowed = _encode(cw, args, kwargs)
        tb = cw.next_task_id().binary()
        extras = {
            "placement": placement,
            "max_restarts": opts.get("max_restarts") or 0,
            "max_task_retries": opts.get("max_task_retries") or 0,
            "max_concurrency": max_concurrency,
            "concurrency_groups": groups,
            "is_async": self._meta.is_async,
            "out_of_order": bool(opts.get("allow_out_of_order_execution")),
            "name": name,
            "namespace": namespace if namespace is not None else _namespace(cw),
            "detached": detached,
            "get_if_exists": bool(opts.get("get_if_exists")),
            "meta": self._meta.dumps(),
            "class_name": self.__name__,
            # its own over the creator's (the job's, or the creating task's), applied for its life
            "runtime_env": runtime_env.merge(cw.runtime_env, runtime_env.validate(opts.get("runtime_env"))),
            "placement_group": where.get("placement_group"),
            "capture_pg": where.get("capture_pg"),   # its calls' children go into the group too
            "node_affinity": where.get("node_affinity"),   # (soft or not: a restart after that node died)
        }
        if "unschedulable" in where:   # hard node affinity to a node that cannot have it: its creation fails
            extras["unschedulable"] = where["unschedulable"]
        spec = (tb, P.TASK_ACTOR_CREATE, fid, f"{self.__name__}.__init__", payload, arg_refs, borrowed, 1,
                hold, 0, tb, None, extras)
        max_pending = opts.get("max_pending_calls")
        if max_pending is None:
            max_pending = -1
        elif not isinstance(max_pending, int) or isinstance(max_pending, bool) or max_pending == 0 \
                or max_pending < -1:
            raise ValueError(f"max_pending_calls must be a positive integer or -1 (no limit), got {max_pending!r}")
        if name is None:
            cw.send_batched((P.SUBMIT, spec))
            return ActorHandle(tb, self._meta, ObjectRef(P.return_id(tb, 1)), detached, max_pending)
        # Named: the node manager claims the name and submits in one step, so a clash is
        # reported here, at the call site.
        aid, blob, was_detached = cw.request("actor_create", spec)
        meta = self._meta if blob == self._meta.blob else _meta_from_blob(blob)
        return ActorHandle(aid, meta, ObjectRef(P.return_id(aid, 1)), was_detached, max_pending)


def _check_groups(groups):
    """concurrency_groups={"io": 2, ...}: names to how many of their calls may run at once."""
    if groups is None:
        return None
    if not isinstance(groups, dict):
        raise TypeError(f"concurrency_groups must be a dict of group name -> max concurrency, got {groups!r}")
    for g, n in groups.items():
        if not isinstance(g, str) or not g:
            raise TypeError(f"concurrency group names must be non-empty strings, got {g!r}")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"concurrency group {g!r} needs a positive integer limit, got {n!r}")
    return dict(groups)


# --- handles ------------------------------------------------------------------

class ActorHandle:
    """A reference to an actor: its methods are attributes, called with `.remote()`."""

    __slots__ = ("_aid", "_meta", "_ref", "_detached", "_max_pending", "__weakref__")

    def __init__(self, aid, meta, ref, detached=False, max_pending=-1):
        self._aid = aid
        self._meta = meta
        self._ref = ref            # the liveness ref; None for a process's handle to itself
        self._detached = detached
        self._max_pending = max_pending   # max_pending_calls: calls without results at most (-1: any)

    __class_getitem__ = classmethod(types.GenericAlias)   # ActorHandle[MyClass], as Ray's

    def __getattr__(self, name):
        # Not cached on the handle: a method holds its handle, and a cycle would keep the
        # handle (and so the actor) alive until the garbage collector ran.
        try:
            meta = object.__getattribute__(self, "_meta")
        except AttributeError:  # half-built (unpickling)
            raise AttributeError(name) from None
        info = meta.methods.get(name)
        if info is None:
            raise AttributeError(f"'{meta.class_name}' actor has no method '{name}'")
        return ActorMethod(self, name, info[0], info[2], info[3])

    @property
    def _actor_id(self):
        return ActorID(self._aid)

    def __repr__(self):
        return f"Actor({self._meta.class_name}, {self._aid.hex()})"

    def __eq__(self, other):
        return isinstance(other, ActorHandle) and other._aid == self._aid

    def __hash__(self):
        return hash(self._aid)

    def __reduce__(self):
        # The liveness ref travels inside the pickle: the serializer records it, so the
        # node manager counts a handle in flight (in a spec or a stored object) as a holder.
        return (_rebuild_handle, (self._aid, self._meta.dumps(), ObjectRef(P.return_id(self._aid, 1)), self._detached,
                                  self._max_pending))

    def __del__(self):
        ref = self._ref
        if ref is None:
            return
        self._ref = None
        del ref
        # Let the release reach the node manager now, not at this process's next message.
        try:
            cw = core_worker._current
            if cw is not None and not cw._closed:
                cw._arm_timer()
        except Exception:
            pass

    def _submit(self, name, args, kwargs, num_returns, check, options=_NO_OPTIONS):
        cw = core_worker.current()
        check.check(name, args, kwargs)
        generator = None
        if type(num_returns) is str:   # a generator method: one result, its items stored as it yields
            generator, num_returns = num_returns, 1
            options = (options[0], dict(options[1] or {}, generator=generator))
        # A call on a channel holds the actor's liveness ref until its result is back: the
        # actor cannot be ended (last handle dropped) while calls of ours are still on the way.
        keep = [] if self._ref is None else [self._ref]
        payload, arg_refs, borrowed = _encode(cw, args, kwargs, keep)
        tb = cw.next_task_id().binary()
        # retries None: the actor's max_task_retries (filled in by the node manager, known to the actor)
        spec = (tb, P.TASK_ACTOR_METHOD, b"", self._meta.task_names.get(name, name), payload, arg_refs, borrowed,
                num_returns, (), options[0], self._aid, name, options[1])
        # The refs exist before the call is sent (a result received first would be dropped), and
        # we are subscribed: the results come to us either way, get() asks for nothing.
        if self._max_pending > 0 and num_returns > 0:
            _check_pending(cw, self, name, P.return_id(tb, 1))
        if num_returns == 1:
            key = P.return_id(tb, 1)
            cw._subscribed.add(key)
            out = ObjectRef(key)
        elif num_returns == 0:
            out = None
        else:
            out = [ObjectRef(k) for k in P.return_ids(tb, num_returns)]
            cw._subscribed.update(r.binary() for r in out)
        ac = cw.actor_channels
        if ac is None:
            ac = channels_of(cw)
        if ac is None:
            cw.send_batched((P.SUBMIT, spec))
        else:
            ac.submit(self._aid, spec, keep)   # straight to the actor once it can (actor_channel.py)
        if generator == "streaming":
            return ObjectRefGenerator(out)
        return out


_T = typing.TypeVar("_T")
# Ray's annotation for a handle to an actor of class T: `actor: ActorProxy[MyClass] = A.remote()`
ActorProxy = typing.Union["ActorHandle[_T]", typing.Type[_T]]


def _check_pending(cw, handle, name, first_return):
    """max_pending_calls: refuse a call while the handle has that many without results here.

    A call counts until its first result reaches this process (CoreWorker.deliver),
    or its refs are all dropped (then no one can wait for it)."""
    pending = cw.pending_calls.setdefault(handle._aid, set())
    if len(pending) >= handle._max_pending:
        for oid in [o for o in pending if local_ref_count(o) == 0]:
            pending.discard(oid)
            cw.pending_of.pop(oid, None)
        if len(pending) >= handle._max_pending:
            raise PendingCallsLimitExceeded(
                f"The task {name} could not be submitted to {handle!r} because more than "
                f"{handle._max_pending} tasks are queued on the actor. This limit can be adjusted with "
                f"the `max_pending_calls` actor option.")
    pending.add(first_return)
    cw.pending_of[first_return] = pending


def _rebuild_handle(aid, blob, ref, detached, max_pending=-1):
    return ActorHandle(aid, _meta_from_blob(blob), ref, detached, max_pending)


class ActorMethod:
    """`handle.method`: call it with `.remote(...)`, or `.options(num_returns=N).remote(...)`."""

    __slots__ = ("_handle", "_name", "_num_returns", "_check", "_options")

    def __init__(self, handle, name, num_returns, check, options=_NO_OPTIONS):
        self._handle = handle
        self._name = name
        self._num_returns = num_returns
        self._check = check
        self._options = options     # (max_task_retries, spec extras): _call_options

    def remote(self, *args, **kwargs):
        return self._handle._submit(self._name, args, kwargs, self._num_returns, self._check, self._options)

    def options(self, **options):
        validate(options, METHOD_OPTIONS, f"{self._name}.options()")
        nr = _check_num_returns(options.get("num_returns", self._num_returns))
        retries, extras = self._options
        given = _call_options(options)
        if "max_task_retries" in options:
            retries = given[0]
        if "retry_exceptions" in options or "concurrency_group" in options:
            extras = dict(extras or {}, **(given[1] or {}))
            if "retry_exceptions" in options and "retry_exceptions" not in (given[1] or {}):
                extras.pop("retry_exceptions", None)   # retry_exceptions=False
        return ActorMethod(self._handle, self._name, nr, self._check, (retries, extras or None))

    def bind(self, *args, **kwargs):
        """A node of a lazy DAG (rayfast.dag) that calls this method (with these options) when executed."""
        from rayfast.dag import ClassMethodNode
        return ClassMethodNode(self, self._name, args, kwargs)

    def __call__(self, *args, **kwargs):
        raise TypeError(f"Actor methods cannot be called directly. Instead of running "
                        f"'{self._name}()', try '{self._name}.remote()'.")

    def __repr__(self):
        return f"ActorMethod({self._handle._meta.class_name}.{self._name})"


# --- the API -------------------------------------------------------------------

def get_actor(name, namespace=None):
    """A handle to the live actor registered under name (in namespace, default: this job's)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"get_actor() needs a non-empty actor name, got {name!r}")
    if namespace is not None and not isinstance(namespace, str):
        raise TypeError(f"namespace must be a string, got {type(namespace).__name__}")
    cw = core_worker.current()
    aid, blob, detached = cw.request("get_actor", namespace if namespace is not None else _namespace(cw), name)
    return ActorHandle(aid, _meta_from_blob(blob), ObjectRef(P.return_id(aid, 1)), detached)


def kill(actor, *, no_restart=True):
    """End an actor now: its process is killed; pending and later calls raise RayActorError."""
    if not isinstance(actor, ActorHandle):
        raise _TypeOrValueError(f"kill() expects an ActorHandle, got {type(actor).__name__}. "
                        f"(To cancel a task, use rayfast.cancel(object_ref).)")
    cw = core_worker.current()
    if cw.actor_channels is not None:
        cw.actor_channels.on_kill(actor._aid, bool(no_restart))
    cw.send((P.KILL_ACTOR, actor._aid, bool(no_restart)))


def exit_actor():
    """Called inside an actor method: end this actor (no restart) after the current call."""
    ex = _executor
    if ex is None or ex.actor_id is None:
        raise TypeError("exit_actor() can only be called inside an actor")
    raise SystemExit(0)   # the executor tells the node manager (ActorTaskExecutor._exiting)


def list_named_actors(all_namespaces=False):
    return core_worker.current().request("list_named_actors", _namespace(core_worker.current()),
                                         bool(all_namespaces))


# --- the actor side of a worker -------------------------------------------------

_executor = None
# The call a thread of a threaded actor, or a coroutine of an async one, is running: several run
# at once, so the process-wide current task (CoreWorker.current_spec) cannot say (runtime context).
current_call = contextvars.ContextVar("rayfast_current_call", default=None)


class ActorTaskExecutor(TaskExecutor):
    """Runs normal tasks like its base; once it has run a creation task it hosts that actor."""

    def __init__(self, cw):
        super().__init__(cw)
        global _executor
        _executor = self
        self.actor_id = None
        self.meta_blob = None
        self.max_task_retries = 0
        self.restarts = 0
        self.namespace = None
        self.name = None        # its name= option ("" if it has none), for get_actor_name()
        self.placement_group = None   # the placement group it was created in (hex)
        self.pool = None        # ThreadPoolExecutor of the default group (max_concurrency > 1, or groups)
        self.loop = None        # asyncio loop in its own thread (async actors)
        self.sem = None         # the default group's asyncio.Semaphore (async actors)
        self.groups = {}        # concurrency group -> its pool (threaded) or semaphore (async)
        self._running_lock = threading.Lock()
        self._async_running = 0
        self._calls = {}           # task id -> (asyncio.Task running it, or the pool's Future; its message)
        self._handed = set()       # task ids handed to the event loop, not started yet
        self._handoff = []         # (call, semaphore) for the event loop to start, in arrival order
        self._cancelled = set()    # of those, the ones cancel() reached first
        self._shut_down = False    # run_shutdown_hooks has run
        self._ended = None         # a threaded or async actor ending: the error of calls it will not run
        cw.cancel_hook = self.cancel_call

    def execute(self, msg):
        kind = msg[2][P.S_KIND]
        if kind == P.TASK_NORMAL:
            return super().execute(msg)
        if kind == P.TASK_ACTOR_METHOD:
            if self._ended is not None:
                self._reply_now(msg, failed_results(msg[2], self._ended))
                return
            group = self._group_of(msg)
            if group is False:
                return
            if self.loop is not None:
                with self._running_lock:
                    self._async_running += 1
                    self._handed.add(msg[2][P.S_TASK_ID])
                    self._handoff.append((msg, group or self.sem))
                    wake = len(self._handoff) == 1
                if wake:   # one wakeup of the loop for the calls a batch brings, not one a call
                    self.loop.call_soon_threadsafe(self._start_handed)
                return
            if self.pool is not None:
                tid = msg[2][P.S_TASK_ID]
                fut = (group or self.pool).submit(self._run, msg, False)
                self._calls[tid] = (fut, msg)
                fut.add_done_callback(lambda _, tid=tid: self._calls.pop(tid, None))
                return
            return self._run(msg, True)
        return self._run(msg, True)

    def _group_of(self, msg):
        """The pool or semaphore of the call's concurrency group (None: the default group);
        False when the group does not exist (the call has failed)."""
        opts = msg[2][P.S_OPTIONS]
        name = opts.get("concurrency_group") if opts else None
        if name is None:
            return None
        group = self.groups.get(name)
        if group is None:
            err = ValueError(f"The concurrency group {name!r} does not exist on this actor; its groups are "
                             f"{sorted(self.groups)} (concurrency_groups= when the actor is created).")
            self._reply_now(msg, self.error_results(msg[2], err))
            return False
        return group

    def _run(self, msg, sequential):
        _, handle, spec, resolved, pickled = msg[:5]
        cw = self.cw
        if not sequential and self._ended is not None:
            self._reply_now(msg, failed_results(spec, self._ended))
            return
        if sequential:
            cw.current_task_id = TaskID(spec[P.S_TASK_ID])
            cw.current_spec = spec   # for the runtime context (task name)
            cw._task_counter = 0
            cw._put_counter = 0
        start = time.time()
        cw.in_task = True
        token = None if sequential else current_call.set(spec)
        tid = spec[P.S_TASK_ID]
        try:
            if tid in cw.cancelled:   # taken from the inbox when cancel() came: it never starts
                raise KeyboardInterrupt
            out = self.actor_call(spec, resolved, pickled)
            # Ray: a call cancelled while it ran (it could see is_canceled()) fails with
            # TaskCancelledError whatever it returns
            results = cancelled_results(spec) if tid in cw.cancelled else self.pack_results(spec, out)
        except SystemExit as e:
            if sequential:
                self._exiting(e)
                raise
            self._exit_when_idle(e, msg)
            return
        except BaseException as e:
            results = self.error_results(spec, e)
        finally:
            cw.in_task = False
            cw.cancelled.pop(tid, None)
            if token is not None:
                current_call.reset(token)
        end = time.time()
        self._reply(msg, (P.DONE, handle, results, start, end))
        if sequential and cw._inbox and end - start > CANCEL_CHECK_AFTER:
            cw.poll()   # a cancel() of a queued call may have come while this one ran

    def _reply(self, msg, done):
        if len(msg) > 5:   # the call came over a direct channel (rayfast/actor_channel.py): answer there
            cw = self.cw
            conn = msg[5]
            results = done[2]
            if len(results) == 1:   # (the common case, without a generator per call)
                contained = results[0][3]
            else:
                contained = tuple(c for r in results for c in r[3])
            if contained or msg[2][P.S_BORROWED]:
                # Refs in the results are pinned, and refs we kept from the arguments
                # announced, at the node before the caller can drop its own.
                if contained:
                    cw.conn.send((P.PIN, contained))
                cw.flush()
            if cw.channels.reply(conn, done):
                cw._arm_timer(PUSH_DELAY)   # the socket is full: push the rest soon, whoever reads
        else:
            self.cw.send_batched(done)

    def drain_direct(self):
        """Before exiting (every handle dropped): run the calls already sent to us over channels,
        then end gracefully (run_shutdown_hooks)."""
        if self.actor_id is None:
            return
        cw = self.cw
        channels = cw.channels
        if channels is not None and channels.conns:
            self._drain_channels(channels)
        self.run_shutdown_hooks()

    def run_shutdown_hooks(self):
        """A graceful end (exit_actor(), __ray_terminate__, every handle dropped) runs, as Ray's, the
        actor's __ray_shutdown__() if it has one, then the process's atexit handlers; kill() runs
        neither. (The worker then leaves with os._exit, which would run no handlers.)"""
        if self._shut_down or self.actor_id is None:
            return
        self._shut_down = True
        hook = getattr(getattr(self, "actor", None), "__ray_shutdown__", None)
        if callable(hook):
            try:
                hook()
            except Exception:
                traceback.print_exc()
        atexit._run_exitfuncs()

    def _exiting(self, e):
        """A call raised SystemExit: the process ends. As in Ray, exit code 0 (exit_actor(),
        sys.exit(0)) is the actor's own end: dead, no restart; any other is a crash, and
        max_restarts applies."""
        if e.code == 0:
            self.cw.send((P.KILL_ACTOR, self.actor_id, True, True))
        self.run_shutdown_hooks()

    def _exit_when_idle(self, e, msg):
        """SystemExit in call msg of a threaded or async actor. Code 0 (exit_actor(),
        __ray_terminate__) as in Ray: that call and every call not started yet fail at once with
        the actor's end, the calls already running finish and are answered, then the process
        ends. Any other code is a crash (max_restarts applies): the process ends now."""
        if e.code != 0:
            self._leave(e)
        self._ended = dead_error_data(self.actor_id, type(self.actor).__name__, os.getpid(), self.namespace,
                                      EXITED_BY_USER)
        self._reply_now(msg, failed_results(msg[2], self._ended))
        for call, m in list(self._calls.values()):
            if isinstance(call, concurrent.futures.Future) and call.cancel():   # queued in a pool
                self._reply_now(m, failed_results(m[2], self._ended))
        threading.Thread(target=self._leave_when_idle, args=(e,), name="rayfast-actor-exit", daemon=True).start()

    def _leave_when_idle(self, e):
        while self._calls or self._async_running:   # (the exiting call among them, until it returns)
            time.sleep(0.001)
        self._leave(e)

    def _leave(self, e):
        self._exiting(e)
        cw = self.cw
        try:
            cw.flush()
            if cw.channels is not None:
                cw.channels.close()   # writes replies still batched for direct callers
        except Exception:
            pass
        os._exit(0)

    def _drain_channels(self, channels):
        cw = self.cw
        channels.read_pending(cw)
        while cw._inbox:
            m = cw._inbox.popleft()
            if m[0] == P.TASK and len(m) > 5:
                self.execute(m)
        if self.pool is not None:
            for pool in (self.pool, *self.groups.values()):
                pool.shutdown(wait=True)
        deadline = time.monotonic() + 30
        while self.loop is not None and self._async_running and time.monotonic() < deadline:
            time.sleep(0.001)

    def _start_handed(self):
        """In the event loop: start the calls handed over since the last wakeup, in their order."""
        with self._running_lock:
            calls, self._handoff = self._handoff, []
        create_task = self.loop.create_task
        for msg, sem in calls:
            create_task(self._run_async(msg, sem))

    async def _run_async(self, msg, sem):
        tid = msg[2][P.S_TASK_ID]
        try:
            with self._running_lock:
                self._handed.discard(tid)
                cancelled = tid in self._cancelled
                if cancelled:
                    self._cancelled.discard(tid)
                else:
                    self._calls[tid] = (asyncio.current_task(), msg)
            if cancelled:
                self._reply_now(msg, cancelled_results(msg[2]))
            else:
                await self._run_async_inner(msg, sem)
        finally:
            with self._running_lock:
                self._async_running -= 1
                self._calls.pop(tid, None)

    async def _run_async_inner(self, msg, sem):
        _, handle, spec, resolved, pickled = msg[:5]
        current_call.set(spec)   # (this coroutine's own context: asyncio runs each in a copy)
        start = time.time()
        started = False
        try:
            async with sem:
                if self._ended is not None:
                    self._reply_now(msg, failed_results(spec, self._ended))
                    return
                start = time.time()
                started = True
                try:
                    if spec[P.S_METHOD] in _BUILTIN_METHODS:
                        out = self.actor_call(spec, resolved, pickled)
                    else:
                        fn = getattr(self.actor, spec[P.S_METHOD])
                        args, kwargs = self.resolve_args(spec, resolved)
                        out = fn(*args, **kwargs)
                    if inspect.isasyncgen(out):
                        results = await _pack_async_gen(self, spec, out)
                    else:
                        if inspect.isawaitable(out):
                            out = await out
                        if spec[P.S_TASK_ID] in self.cw.cancelled:   # it caught the CancelledError
                            raise asyncio.CancelledError
                        results = self.pack_results(spec, out)
                except asyncio.CancelledError:
                    raise
                except SystemExit as e:
                    self._exit_when_idle(e, msg)
                    return
                except BaseException as e:
                    results = self.error_results(spec, e)
        except asyncio.CancelledError as e:   # cancel() of this call (cancel_call)
            if not started:
                results = cancelled_results(spec)
            else:   # stopped while it ran: RayTaskError(TaskCancelledError), as Ray
                results = self.error_results(spec, e, cancelled=True)
        finally:
            self.cw.cancelled.pop(spec[P.S_TASK_ID], None)
        self._reply(msg, (P.DONE, handle, results, start, time.time()))

    def cancel_call(self, tid):
        """cancel() of a call to this actor (Ray's rules): one not started yet is dropped and
        fails with TaskCancelledError, a running call of an async actor is cancelled, a running
        call of any other actor runs on, seeing is_canceled(), and fails with TaskCancelledError.
        Runs in the reader, as the message arrives. (Also a normal task's cancel: see node/worker.py.)"""
        inbox = self.cw._inbox
        for m in inbox:
            if m[0] == P.TASK and m[2][P.S_TASK_ID] == tid:
                inbox.remove(m)
                self.cw._keep_function(m)   # a normal task's may be this worker's first copy
                self._reply_now(m, cancelled_results(m[2]))
                return
        with self._running_lock:
            call, msg = self._calls.get(tid, (None, None))
            if call is None and tid in self._handed:
                self._cancelled.add(tid)
        if isinstance(call, asyncio.Task):
            self.cw.note_cancelled(tid)   # is_canceled(); and it fails as cancelled whatever it returns
            self.loop.call_soon_threadsafe(call.cancel)
        elif call is not None and call.cancel():   # still queued in the thread pool
            self._reply_now(msg, cancelled_results(msg[2]))
        elif self.loop is None:   # running, or taken from the inbox and not started yet
            self.cw.note_cancelled(tid)

    def _reply_now(self, msg, results):
        """Answer a call that does not run (cancelled, or failed before it could)."""
        now = time.time()
        self._reply(msg, (P.DONE, msg[1], results, now, now))

    def actor_call(self, spec, resolved, pickled):
        if spec[P.S_KIND] == P.TASK_ACTOR_CREATE:
            return self._create(spec, resolved, pickled)
        name = spec[P.S_METHOD]
        if name == "__ray_ready__":
            return True
        if name == "__ray_terminate__":   # Ray's graceful end: after the calls before it, like exit_actor()
            exit_actor()
        if name == "__ray_call__":
            args, kwargs = self.resolve_args(spec, resolved)
            return args[0](self.actor, *args[1:], **kwargs)
        fn = getattr(self.actor, name)
        opts = spec[P.S_OPTIONS]
        if opts and opts.get("retry_exceptions"):
            return self.run_with_retries(spec, fn, resolved, self.max_task_retries)
        args, kwargs = self.resolve_args(spec, resolved)
        return fn(*args, **kwargs)

    def _start_loop(self):
        """Run the actor's event loop on a thread of its own, from now on."""
        ready = threading.Event()

        def run_loop():
            asyncio.set_event_loop(self.loop)
            self.loop.call_soon(ready.set)
            self.loop.run_forever()

        threading.Thread(target=run_loop, name="rayfast-actor-loop", daemon=True).start()
        ready.wait()

    def _create(self, spec, resolved, pickled):
        extras = spec[P.S_OPTIONS]
        if "unschedulable" in extras:
            raise ActorUnschedulableError(extras["unschedulable"])
        self.actor_id = spec[P.S_ACTOR_ID]
        self.meta_blob = extras["meta"]
        self.max_task_retries = extras.get("max_task_retries", 0)
        self.restarts = extras.get("restarts", 0)
        self.namespace = extras.get("namespace")
        self.name = extras.get("name") or ""
        if self.namespace is not None:
            self.cw.namespace = self.namespace
        env = extras.get("runtime_env")
        if env:
            runtime_env.enter(env)
            self.cw.runtime_env = env   # what its calls inherit
        self.placement_group = extras.get("placement_group")   # for get_current_placement_group()
        if extras.get("capture_pg") is not None:   # (for its life: every call's children)
            self.cw.capture_pg = extras["capture_pg"]
        gpu_ids = extras.get("gpu_ids")
        if gpu_ids is not None:   # the node's choice (node/gpus.py), for the actor's life
            self.cw.gpu_ids = gpu_ids
            runtime_env.enter({"env_vars": {"CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in gpu_ids)}})
        cls = self.function(spec, pickled)
        args, kwargs = self.resolve_args(spec, resolved)
        if extras.get("is_async"):
            # The constructor sees the actor's loop as the current one, as in Ray: tasks it starts
            # (asyncio.get_event_loop().create_task(...)) run once the loop does.
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
        mc = extras.get("max_concurrency") or 1
        groups = extras.get("concurrency_groups") or {}
        if extras.get("is_async"):
            self.sem = asyncio.Semaphore(mc)
            self.groups = {g: asyncio.Semaphore(n) for g, n in groups.items()}
        if inspect.iscoroutinefunction(cls.__init__):
            # as Ray: an async constructor runs on the actor's loop, running already, so that it
            # can await and the tasks it starts run alongside it and after it
            self._start_loop()
            new = cls.__new__
            self.actor = new(cls) if new is object.__new__ else new(cls, *args, **kwargs)
            asyncio.run_coroutine_threadsafe(cls.__init__(self.actor, *args, **kwargs), self.loop).result()
            return None
        self.actor = cls(*args, **kwargs)
        if extras.get("is_async"):
            self._start_loop()
        elif mc > 1 or groups:
            # A sync actor with groups is threaded: each group runs on a pool of its own size
            # (the default group's is max_concurrency, 1 by default: its calls stay in order).
            from concurrent.futures import ThreadPoolExecutor
            self.pool = ThreadPoolExecutor(mc, thread_name_prefix="rayfast-actor")
            self.groups = {g: ThreadPoolExecutor(n, thread_name_prefix=f"rayfast-actor-{g}")
                           for g, n in groups.items()}
        return None


async def _pack_async_gen(executor, spec, agen):
    """An async generator method's results, stored as it yields them like a sync generator's: a
    thread of the call's own runs pack_results over a sync generator that takes each value from
    the event loop, which runs on meanwhile. Cancelling the call stops the generator."""
    loop = asyncio.get_running_loop()
    step = [None]   # the __anext__ running in the loop, for a cancel
    stopped = threading.Event()

    async def anext_in_call():
        current_call.set(spec)   # (each step is a task of its own: the call's runtime context)
        try:
            return True, await agen.__anext__()
        except SystemExit as e:   # exit_actor() in it: raised in pull(), not out of the loop's task
            return False, e

    def pull():
        while not stopped.is_set():
            step[0] = asyncio.run_coroutine_threadsafe(anext_in_call(), loop)
            try:
                ok, value = step[0].result()
            except (StopAsyncIteration, concurrent.futures.CancelledError):
                return
            if not ok:
                raise value
            yield value

    done = loop.create_future()

    def settle(result, error):
        if done.done():   # (cancelled)
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)

    def run():
        try:
            results = executor.pack_results(spec, pull())
        except BaseException as e:
            loop.call_soon_threadsafe(settle, None, e)
        else:
            loop.call_soon_threadsafe(settle, results, None)

    threading.Thread(target=run, name="rayfast-actor-agen", daemon=True).start()
    try:
        return await done
    except asyncio.CancelledError:
        stopped.set()
        if step[0] is not None:
            step[0].cancel()
        raise


__all__ = ["ActorClass", "ActorHandle", "ActorMethod", "ActorID", "ActorProxy", "method", "get_actor", "kill",
           "exit_actor", "make_actor_class", "ActorTaskExecutor", "RayActorError", "list_named_actors"]
