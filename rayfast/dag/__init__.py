"""Ray's DAG API: `.bind()` builds a lazy graph of tasks and actor calls, `.execute()` runs it.

`f.bind(x)`, `Actor.bind(...)`, `node.method.bind(...)` and
`handle.method.bind(...)` return nodes instead of submitting anything; a node
may be the argument of another (also inside lists, tuples and dicts). An
`InputNode` stands for what `execute()` is given. `execute()` walks the graph
from the node it is called on and submits each node once, in dependency
order, with `.remote()`: a function node gives an ObjectRef, a class node a
new actor (one per `execute()`, as in Ray), a method node an ObjectRef, a
`MultiOutputNode` the list of its nodes' results. As in Ray, the method calls
bound on one class node form a chain in bind order: executing a call submits
the calls bound before it first, so `a.inc.bind(1); a.get.bind()` increments
before it reads, though nothing passes the first call's result on. Results pass between nodes as
refs, so nothing waits in the driver.

`experimental_compile()` returns a graph with Ray's compiled-graph calls
(`execute`, `teardown`) that runs the same way: rayfast has no separate
accelerated path for it.
"""
from __future__ import annotations

from typing import Any

__all__ = ["DAGNode", "FunctionNode", "ClassNode", "ClassMethodNode", "InputNode", "InputAttributeNode",
           "MultiOutputNode"]


class DAGNode:
    """A node of the graph: what to call, with which (possibly lazy) arguments and options."""

    def __init__(self, args=(), kwargs=None, options=None):
        self._bound_args = tuple(args)
        self._bound_kwargs = dict(kwargs or {})
        self._bound_options = dict(options or {})

    def get_args(self):
        return self._bound_args

    def get_kwargs(self):
        return self._bound_kwargs

    def get_options(self):
        return self._bound_options

    def get_other_args_to_resolve(self):
        return {}

    def execute(self, *args, **kwargs):
        """Run the graph that ends here with these inputs (what an InputNode stands for)."""
        return self._resolve({}, (args, kwargs))

    def experimental_compile(self, **_ignored):
        return CompiledDAG(self)

    def _resolve(self, cache, inputs):
        key = id(self)
        if key not in cache:
            args = _resolve_value(self._bound_args, cache, inputs)
            kwargs = _resolve_value(self._bound_kwargs, cache, inputs)
            cache[key] = self._run(args, kwargs, cache, inputs)
        return cache[key]

    def _run(self, args, kwargs, cache, inputs):
        raise NotImplementedError

    def __reduce__(self):
        raise TypeError(f"a {type(self).__name__} is part of a DAG to execute(), not a value to pass to "
                        f"a task or put in the object store")

    def __repr__(self):
        return f"{type(self).__name__}({self._describe()})"

    def _describe(self):
        return ""


def _resolve_value(value, cache, inputs):
    """value with every DAG node in it (also inside lists, tuples and dicts) replaced by its result."""
    if isinstance(value, DAGNode):
        return value._resolve(cache, inputs)
    t = type(value)
    if t is tuple or t is list:
        return t(_resolve_value(v, cache, inputs) for v in value)
    if t is dict:
        return {k: _resolve_value(v, cache, inputs) for k, v in value.items()}
    return value


class _CallNode(DAGNode):
    """A node whose execution is `target.remote(*args, **kwargs)`."""

    def __init__(self, target, args, kwargs, options=None):
        super().__init__(args, kwargs, options)
        self._target = target

    def _run(self, args, kwargs, cache, inputs):
        return self._target.remote(*args, **kwargs)

    def _describe(self):
        return getattr(self._target, "__name__", "") or repr(self._target)


class FunctionNode(_CallNode):
    """`f.bind(...)` (or `f.options(...).bind(...)`): a task, submitted by execute()."""


class ClassNode(_CallNode):
    """`Actor.bind(...)` (or with `.options(...)`): an actor made by execute(); `node.method.bind(...)`
    calls it."""

    def __init__(self, target, args, kwargs, options=None):
        super().__init__(target, args, kwargs, options)
        self._last_call = None   # the latest method call bound on it (ClassMethodNode._prev)

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return _MethodBinder(self, name, {})


class _MethodBinder:
    """`class_node.method`: `.bind(...)` or `.options(...).bind(...)`."""

    __slots__ = ("_node", "_name", "_options")

    def __init__(self, node, name, options):
        self._node, self._name, self._options = node, name, options

    def options(self, **options):
        return _MethodBinder(self._node, self._name, dict(self._options, **options))

    def bind(self, *args, **kwargs):
        node = ClassMethodNode(self._node, self._name, args, kwargs, self._options, prev=self._node._last_call)
        self._node._last_call = node
        return node


class ClassMethodNode(DAGNode):
    """A method call on a ClassNode's actor, or on an actor that exists (`handle.method.bind(...)`)."""

    def __init__(self, actor, method_name, args, kwargs, options=None, prev=None):
        super().__init__(args, kwargs, options)
        self._actor = actor           # a ClassNode, or the ActorMethod of an actor that exists
        self._method_name = method_name
        self._prev = prev             # the call bound before this one on the same ClassNode

    def _run(self, args, kwargs, cache, inputs):
        # the calls bound before this one go first, oldest first (a loop: chains can be long)
        earlier, prev = [], self._prev
        while prev is not None and id(prev) not in cache:
            earlier.append(prev)
            prev = prev._prev
        for prev in reversed(earlier):
            prev._resolve(cache, inputs)
        if isinstance(self._actor, DAGNode):
            method = getattr(self._actor._resolve(cache, inputs), self._method_name)
            if self._bound_options:
                method = method.options(**self._bound_options)
        else:
            method = self._actor   # its options are in it already
        return method.remote(*args, **kwargs)

    def _describe(self):
        return self._method_name


class _Indexable:
    """`node[key]` and `node.name` of an input: InputAttributeNodes."""

    def __getitem__(self, key):
        return InputAttributeNode(self, key)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return InputAttributeNode(self, name)


class InputNode(_Indexable, DAGNode):
    """What execute() is given: `execute(x)` makes it x; with several arguments, `inp[i]` is the
    i-th and `inp.name` the keyword one. `inp[k]` / `inp.name` of a single argument index it or take
    its attribute (or key, for a dict). Used as `with InputNode() as inp: ...`."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def _run(self, args, kwargs, cache, inputs):
        given, named = inputs
        if len(given) == 1 and not named:
            return given[0]
        if not given and not named:
            raise ValueError("this DAG reads its InputNode: give execute() an input")
        raise ValueError(f"execute() was given {len(given)} positional and {len(named)} keyword inputs: "
                         f"use inp[i] or inp.name in the DAG for each one")


class InputAttributeNode(_Indexable, DAGNode):
    """`inp[key]` or `inp.name`."""

    def __init__(self, input_node, key):
        super().__init__()
        self._input = input_node
        self._key = key

    def _run(self, args, kwargs, cache, inputs):
        key = self._key
        if isinstance(self._input, InputNode):
            given, named = inputs
            if not (len(given) == 1 and not named):   # several inputs: pick one of them
                try:
                    return given[key] if isinstance(key, int) else named[key]
                except (IndexError, KeyError):
                    raise ValueError(f"execute() was given no input {key!r}") from None
            value = given[0]
        else:
            value = self._input._resolve(cache, inputs)
        if isinstance(key, str) and not isinstance(value, dict) and hasattr(value, key):
            return getattr(value, key)
        return value[key]

    def _describe(self):
        return repr(self._key)


class MultiOutputNode(DAGNode):
    """Several nodes' results at once: execute() gives their list."""

    def __init__(self, args, other_args_to_resolve=None):
        if isinstance(args, tuple):
            args = list(args)
        if not isinstance(args, list):
            raise ValueError(f"Invalid input type for `args`, {type(args)}.")
        super().__init__(args)

    def _run(self, args, kwargs, cache, inputs):
        return list(args)


class CompiledDAG:
    """What experimental_compile() gives: execute() and teardown() as Ray's compiled graph, run
    the same way as the plain DAG."""

    def __init__(self, dag: DAGNode):
        self._dag = dag
        self._torn_down = False

    def execute(self, *args: Any, **kwargs: Any):
        if self._torn_down:
            raise RuntimeError("this compiled DAG was torn down")
        return self._dag.execute(*args, **kwargs)

    def teardown(self, kill_actors: bool = False):
        self._torn_down = True
