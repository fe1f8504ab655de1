"""@remote functions: `.remote()` builds a task spec and hands it to the core worker."""
import hashlib
import inspect


from rayfast import core_worker
from rayfast import protocol as P
from rayfast import runtime_env
from rayfast import serialization
from rayfast.config import INLINE_THRESHOLD
from rayfast._core.ids import ObjectRef, set_reported
from rayfast.options import TASK_OPTIONS, max_retries, resource_shape, validate, warn_infeasible
from rayfast.scheduling import captured, pick_node, placement_extras

_PROMOTE_BYTES = 16 * 1024
_SMALL = frozenset((int, float, str, bool, type(None), ObjectRef))


def describe_unpicklable(args, kwargs, error):
    """A TypeError naming the argument that failed to serialize."""
    for i, a in enumerate(args):
        try:
            serialization.dumps(a)
        except Exception as e:
            return TypeError(f"Could not serialize argument {i} ({type(a).__name__}) of the remote call: {e}")
    for k, a in kwargs.items():
        try:
            serialization.dumps(a)
        except Exception as e:
            return TypeError(f"Could not serialize keyword argument {k!r} ({type(a).__name__}) of the "
                             f"remote call: {e}")
    return TypeError(f"Could not serialize the arguments of the remote call: {error}")


def encode_args(args, kwargs):
    """(payload, arg_refs, borrowed): top-level refs are pulled out to be resolved before the call."""
    arg_refs = []
    for i, a in enumerate(args):
        if type(a) is ObjectRef:
            arg_refs.append((i, a.binary()))
    for k, a in kwargs.items():
        if type(a) is ObjectRef:
            arg_refs.append((k, a.binary()))
    args = list(args)
    if arg_refs:
        kwargs = dict(kwargs)
        for pos, _ in arg_refs:
            if type(pos) is int:
                args[pos] = None
            else:
                kwargs[pos] = None
        arg_refs = tuple(arg_refs)
    else:
        arg_refs = ()
    # The C pickler alone when it can: cloudpickle's Python-level hooks cost ~10x more.
    payload = serialization.dumps_args(args, kwargs)
    if payload is not None:
        return payload, arg_refs, ()
    try:
        payload, borrowed = serialization.dumps((args, kwargs))
    except Exception as e:
        raise describe_unpicklable(args, kwargs, e) from None
    return payload, arg_refs, borrowed


_NO_ARGS = serialization.dumps_args([], {})


def encode_call_args(cw, args, kwargs, keep=None):
    """encode_args, but large arguments go to the object store first and travel as refs.

    A big numpy array inlined in a spec would be copied through every message
    and into the GCS lineage; as a ref it is written once into shared memory
    and read by the actor as a zero-copy view. A ref of an earlier session is
    refused here: the call would wait for it forever.
    """
    out = _encode_call_args(cw, args, kwargs, keep)
    if cw.stale_keys and (out[1] or out[2]):
        cw.refuse_stale([k for _, k in out[1]] + list(out[2]))
    return out


def _encode_call_args(cw, args, kwargs, keep):
    if not args and not kwargs:
        return _NO_ARGS, (), ()   # (calls without arguments are common: encoded once)
    big = False
    for v in args:
        if type(v) not in _SMALL and (getattr(v, "nbytes", 0) or 0) >= _PROMOTE_BYTES:
            big = True
            break
    if not big:
        for v in kwargs.values():
            if type(v) not in _SMALL and (getattr(v, "nbytes", 0) or 0) >= _PROMOTE_BYTES:
                big = True
                break
    if not big:
        payload, arg_refs, borrowed = encode_args(args, kwargs)
        if len(payload) < INLINE_THRESHOLD:
            return payload, arg_refs, borrowed
    args = list(args)
    kwargs = dict(kwargs)
    for seq, keys in ((args, range(len(args))), (kwargs, list(kwargs))):
        for k in keys:
            v = seq[k]
            if type(v) is ObjectRef:
                continue
            size = getattr(v, "nbytes", None)
            if not isinstance(size, int):
                try:
                    size = len(serialization.dumps(v)[0])
                except Exception:
                    continue
            if size >= _PROMOTE_BYTES:
                seq[k] = cw.put(v)
                if keep is not None:   # the caller holds it until the call is done (actor_channel.py)
                    keep.append(seq[k])
    return encode_args(args, kwargs)



def _task_extras(options):
    """The spec's S_OPTIONS for a normal task: None unless an option the worker acts on is set."""
    extras = {}
    rx = options.get("retry_exceptions")
    if rx is True:
        extras["retry_exceptions"] = True
    elif isinstance(rx, (list, tuple)) and rx and all(
            isinstance(c, type) and issubclass(c, BaseException) for c in rx):
        # Classes travel cloudpickled: the node manager never unpickles them.
        extras["retry_exceptions"] = serialization.dumps_function(tuple(rx))
    elif rx is not None and rx is not False:
        raise TypeError("retry_exceptions must be either a boolean or a list of exceptions, "
                        f"got {rx!r}")
    env = runtime_env.validate(options.get("runtime_env"))
    if env is not None:
        extras["runtime_env"] = env
    for key in ("name", "max_calls"):
        if options.get(key):
            extras[key] = options[key]
    extras.update(placement_extras(options))
    return extras or None


class _Signature:
    """Checks call arguments against a function's signature at the call site, cheaply."""

    def __init__(self, fn, skip_first=False):
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            sig = None
        if sig is not None and skip_first:
            params = list(sig.parameters.values())[1:]
            sig = sig.replace(parameters=params)
        self.sig = sig
        self.fast = None
        if sig is not None:
            params = list(sig.parameters.values())
            if all(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params):
                required = sum(1 for p in params if p.default is p.empty)
                self.fast = (required, len(params))

    def check(self, name, args, kwargs):
        if self.sig is None:
            return
        if not kwargs and self.fast is not None and self.fast[0] <= len(args) <= self.fast[1]:
            return
        try:
            self.sig.bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{name}(): {e}") from None


class _OptionsCall:
    """What `f.options(...)` returns: `.remote()` with those options."""

    __slots__ = ("_parent", "_compiled")

    def __init__(self, parent, compiled):
        self._parent = parent
        self._compiled = compiled

    def remote(self, *args, **kwargs):
        return self._parent._remote(args, kwargs, self._compiled)

    def bind(self, *args, **kwargs):
        """A node of a lazy DAG (rayfast.dag) that calls .remote() with these options when executed."""
        from rayfast.dag import FunctionNode
        return FunctionNode(self, args, kwargs)

    def __call__(self, *args, **kwargs):
        return self._parent(*args, **kwargs)


class RemoteFunction:
    def __init__(self, function, options):
        if not callable(function):
            raise TypeError(f"@remote expects a function or class, got {type(function).__name__}")
        if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function):
            raise ValueError(f"'async def' should not be used for remote tasks ({function.__qualname__}): "
                             f"wrap the async function in a def that runs it with asyncio.run(), or make "
                             f"it a method of an async actor.")
        validate(options, TASK_OPTIONS, "a remote function")
        self._function = function
        self._name = f"{function.__module__}.{function.__qualname__}"
        self._options = options
        self._signature = _Signature(function)
        self._pickled = None
        self._function_id = None
        self._defaults = self._compile_now_or_later(options)
        self.__doc__ = function.__doc__
        self.__name__ = getattr(function, "__name__", "remote_function")
        self.__qualname__ = getattr(function, "__qualname__", self.__name__)
        self.__module__ = function.__module__
        self.__wrapped__ = function

    def _compile_now_or_later(self, options):
        """_compile(options), or options themselves when they need the node's labels and there is no
        cluster yet (decorated or .options() before init()): _remote compiles them then."""
        if core_worker._current is None and \
                type(options.get("scheduling_strategy")).__name__ == "NodeLabelSchedulingStrategy":
            return dict(options)
        return self._compile(options)

    def _compile(self, options):
        num_returns = options.get("num_returns")
        generator = None
        is_generator = inspect.isgeneratorfunction(self._function)
        if num_returns in ("dynamic", "streaming") and not is_generator:
            raise ValueError(f"num_returns={num_returns!r} can only be used with generator functions "
                             f"(functions that use 'yield'). {self._name} is not a generator function.")
        if num_returns in ("dynamic", "streaming") or (num_returns is None and is_generator):
            generator = "dynamic" if num_returns == "dynamic" else "streaming"
            num_returns = 1
        if num_returns is None:
            num_returns = 1
        if not isinstance(num_returns, int):
            raise ValueError(f"num_returns={num_returns!r} is not supported; use an integer, "
                             f"'dynamic' or 'streaming'")
        extras = _task_extras(options)
        if generator is not None:
            extras = dict(extras or {}, generator=generator)
        # As Ray: a task goes into its parent's captured placement group only when it says nothing
        # of where to run (scheduling_strategy="DEFAULT", or placement_group=None, keep it out)
        capturable = options.get("scheduling_strategy") is None and \
            options.get("placement_group", "default") == "default"
        return (num_returns, resource_shape(options, 1, self._name), max_retries(options), extras, capturable)

    def __call__(self, *args, **kwargs):
        raise TypeError(f"Remote functions cannot be called directly. Instead of running "
                        f"'{self.__name__}()', try '{self.__name__}.remote()'.")

    def __getstate__(self):
        return {"_function": self._function, "_options": self._options}

    def __setstate__(self, state):
        self.__init__(state["_function"], state["_options"])

    def _export(self, cw):
        if self._pickled is None:
            self._pickled = serialization.dumps_function(self._function)
            self._function_id = hashlib.blake2b(self._pickled, digest_size=16).digest()
        cw.export_function(self._function_id, self._pickled)
        return self._function_id

    def options(self, **options):
        validate(options, TASK_OPTIONS, f"{self.__name__}.options()")
        if "max_calls" in options:
            raise ValueError("Setting 'max_calls' is not supported in '.options()'; give it to "
                             "@remote(max_calls=...)")
        merged = dict(self._options)
        merged.update(options)
        return _OptionsCall(self, self._compile_now_or_later(merged))

    def remote(self, *args, **kwargs):
        return self._remote(args, kwargs, self._defaults)

    def bind(self, *args, **kwargs):
        """A node of a lazy DAG (rayfast.dag): the task is submitted when the DAG is executed."""
        from rayfast.dag import FunctionNode
        return FunctionNode(self, args, kwargs)

    def _remote(self, args, kwargs, compiled):
        cw = core_worker.current_or_init()
        if type(compiled) is dict:
            compiled = self._compile(compiled)
        num_returns, shape, retries, extras, capturable = compiled
        if cw.runtime_env is not None:   # the job's or the running task's: inherited
            extras = runtime_env.inherit(extras, cw.runtime_env)
        if cw.capture_pg is not None and capturable:   # the running task's group takes its children
            shape, extras = captured(shape, extras, cw.capture_pg, self._name)
        elif extras is not None and ("node_affinity" in extras or "spread" in extras):
            shape, extras = pick_node(cw, shape, extras)
        self._signature.check(self.__name__, args, kwargs)
        if shape not in cw.feasible_shapes:
            warn_infeasible(shape, cw, f"Task {self.__name__}")
            cw.feasible_shapes.add(shape)
        fid = self._export(cw)
        payload, arg_refs, borrowed = encode_call_args(cw, args, kwargs)
        tid = cw.next_task_id()
        tb = tid.binary()
        spec = (tb, P.TASK_NORMAL, fid, self._name, payload, arg_refs, borrowed, num_returns, shape,
                retries, None, None, extras)
        # The node manager counts the submitter as holding the results and
        # pushes them to it unasked: no ref announcement, no GET needed.
        # The refs exist before the spec is sent: a result that another
        # thread receives before then would be dropped as unreferenced.
        if num_returns == 1:
            key = P.return_id(tb, 1)
            cw._subscribed.add(key)
            ref = ObjectRef(key)
            set_reported(key)
            cw.submit_task(spec, self._pickled)
            if extras is not None and extras.get("generator") == "streaming":
                from rayfast.generator import ObjectRefGenerator
                return ObjectRefGenerator(ref)
            return ref
        if num_returns == 0:
            cw.send_batched((P.SUBMIT, spec))
            return None
        keys = P.return_ids(tb, num_returns)
        cw._subscribed.update(keys)
        refs = [ObjectRef(k) for k in keys]
        for k in keys:
            set_reported(k)
        cw.send_batched((P.SUBMIT, spec))
        return refs
