"""Ray's scheduling strategies: `.options(scheduling_strategy=...)` of tasks and actors.

"DEFAULT" and "SPREAD" are the string forms (on one node both place a task on
that node). A PlacementGroupSchedulingStrategy runs the task inside a
placement group's reservation; a NodeAffinitySchedulingStrategy pins it to a
node (rayfast/scheduling.py and rayfast/options.py turn both into what the task asks of the node).
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
            raise TypeError(f"node_id must be a hex string (get_runtime_context().get_node_id()), "
                            f"got {type(node_id).__name__}")
        self.node_id = node_id
        self.soft = bool(soft)
        self._spill_on_unavailable = _spill_on_unavailable
        self._fail_on_unavailable = _fail_on_unavailable

    def __repr__(self):
        return f"NodeAffinitySchedulingStrategy(node_id={self.node_id!r}, soft={self.soft})"
