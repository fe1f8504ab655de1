"""Ray's scheduling strategies: `.options(scheduling_strategy=...)` of tasks and actors.

"DEFAULT" and "SPREAD" are the string forms ("SPREAD" takes the live nodes that
can run the task in turn). A PlacementGroupSchedulingStrategy runs the task inside a
placement group's reservation; a NodeAffinitySchedulingStrategy pins it to a
node (rayfast/scheduling.py and rayfast/options.py turn these into what the task asks of the nodes);
a NodeLabelSchedulingStrategy asks for a node whose labels match (see below).
"""
from __future__ import annotations


class PlacementGroupSchedulingStrategy:
    def __init__(self, placement_group, placement_group_bundle_index=-1,
                 placement_group_capture_child_tasks=None):
        self.placement_group = placement_group
        self.placement_group_bundle_index = placement_group_bundle_index
        self.placement_group_capture_child_tasks = placement_group_capture_child_tasks

    def __repr__(self):
        return (f"PlacementGroupSchedulingStrategy({self.placement_group!r}, "
                f"bundle_index={self.placement_group_bundle_index})")


class NodeAffinitySchedulingStrategy:
    def __init__(self, node_id, soft, _spill_on_unavailable=False, _fail_on_unavailable=False):
        if not isinstance(node_id, str):
            # as Ray: a NodeID (get_runtime_context().node_id, as Ray's docs pass it) stands for its hex
            if not callable(getattr(node_id, "hex", None)):
                raise TypeError(f"node_id must be a hex string (get_runtime_context().get_node_id()), "
                                f"got {type(node_id).__name__}")
            node_id = node_id.hex()
        self.node_id = node_id
        self.soft = bool(soft)
        self._spill_on_unavailable = _spill_on_unavailable
        self._fail_on_unavailable = _fail_on_unavailable

    def __repr__(self):
        return f"NodeAffinitySchedulingStrategy(node_id={self.node_id!r}, soft={self.soft})"


# --- node labels ---------------------------------------------------------------------------------
# A task or actor whose hard label expressions its node does not meet asks for a resource named
# after them (options.resource_shape), which no node offers: it stays pending like any infeasible
# request. With one node, the caller decides that against the node's labels; soft expressions are
# preferences and change nothing there.
def _check_values(values, operator):
    if not values:
        raise ValueError(f"The variadic parameter of the {operator} operator must be a non-empty tuple: "
                         f'e.g. {operator}("value1", "value2").')
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise ValueError(f'Type of value in position {i} for the {operator} operator must be str '
                             f'(e.g. {operator}("value1", "value2")) but got {v!r} of type {type(v).__name__}.')


class In:
    """The label exists and has one of these values."""

    def __init__(self, *values):
        _check_values(values, "In")
        self.values = list(values)

    def matches(self, labels, key):
        return labels.get(key) in self.values

    def __repr__(self):
        return f"In({', '.join(map(repr, self.values))})"


class NotIn:
    """The label is missing or has none of these values."""

    def __init__(self, *values):
        _check_values(values, "NotIn")
        self.values = list(values)

    def matches(self, labels, key):
        return labels.get(key) not in self.values

    def __repr__(self):
        return f"NotIn({', '.join(map(repr, self.values))})"


class Exists:
    def matches(self, labels, key):
        return key in labels

    def __repr__(self):
        return "Exists()"


class DoesNotExist:
    def matches(self, labels, key):
        return key not in labels

    def __repr__(self):
        return "DoesNotExist()"


def _expressions(expressions, param):
    """{key: operator} checked as Ray checks it."""
    if expressions is None:
        return {}
    if not isinstance(expressions, dict):
        raise ValueError(f'The {param} parameter must be a map (e.g. {{"key1": In("value1")}}) but got type '
                         f'{type(expressions).__name__}.')
    for key, op in expressions.items():
        if not isinstance(key, str):
            raise ValueError(f'The map key of the {param} parameter must be of type str (e.g. '
                             f'{{"key1": In("value1")}}) but got {key!r} of type {type(key).__name__}.')
        if not isinstance(op, (In, NotIn, Exists, DoesNotExist)):
            raise ValueError(f"The map value for key {key} of the {param} parameter must be one of the `In`, "
                             f'`NotIn`, `Exists` or `DoesNotExist` operator (e.g. {{"key1": In("value1")}}) '
                             f"but got {op!r} of type {type(op).__name__}.")
    return dict(expressions)


class NodeLabelSchedulingStrategy:
    """Run on a node whose labels meet every `hard` expression (preferring one that also meets
    `soft`): `NodeLabelSchedulingStrategy({"region": In("us"), "gpu": Exists()})`."""

    def __init__(self, hard, *, soft=None):
        self.hard = _expressions(hard, "hard")
        self.soft = _expressions(soft, "soft")
        if not (self.hard or self.soft):
            raise ValueError("The `hard` and `soft` parameter of NodeLabelSchedulingStrategy cannot both be "
                             "empty.")

    def unmet(self, labels):
        """The hard expressions labels do not meet, as text ("" if they meet all)."""
        return ", ".join(f"{k}: {op!r}" for k, op in sorted(self.hard.items()) if not op.matches(labels, k))

    def __repr__(self):
        return f"NodeLabelSchedulingStrategy(hard={self.hard!r}, soft={self.soft!r})"
