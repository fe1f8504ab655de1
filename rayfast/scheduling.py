"""What a task's or actor's scheduling options (scheduling_strategy, placement_group...) carry:
the placement group it runs in, and the extras its spec takes to its worker."""


def placement(options):
    """(placement group, bundle index, capture child tasks) the options schedule into, or (None, -1, False)."""
    from rayfast.util.scheduling_strategies import PlacementGroupSchedulingStrategy
    strategy = options.get("scheduling_strategy")
    if isinstance(strategy, PlacementGroupSchedulingStrategy):
        pg, index = strategy.placement_group, strategy.placement_group_bundle_index
        capture = strategy.placement_group_capture_child_tasks
    else:
        pg = options.get("placement_group")
        if pg == "default":
            pg = None
        index = options.get("placement_group_bundle_index", -1)
        capture = options.get("placement_group_capture_child_tasks")
    if pg is None:
        return None, -1, False
    from rayfast.util.placement_group import PlacementGroup
    if not isinstance(pg, PlacementGroup):
        raise TypeError(f"placement_group must be a PlacementGroup, got {type(pg).__name__}")
    return pg, index, bool(capture)


def captured(shape, extras, capture_pg, what):
    """A child task's (shape, extras) inside its parent's placement group (a task that says
    nothing of where to run: RemoteFunction._compile)."""
    from rayfast.util.placement_group import PlacementGroup, PlacementGroupID, group_shape
    pg_hex, bundles = capture_pg
    shape = group_shape(shape, PlacementGroup(PlacementGroupID.from_hex(pg_hex), bundles), -1, what)
    return shape, dict(extras or {}, placement_group=pg_hex, capture_pg=capture_pg)


def placement_extras(options):
    """What of the scheduling options a task's spec carries (S_OPTIONS) for its worker."""
    from rayfast import core_worker
    from rayfast.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    out = {}
    pg, _, capture = placement(options)
    if pg is not None:
        out["placement_group"] = pg.id.hex()
        if capture:   # the task's own calls go into the group too (CoreWorker.capture_pg)
            out["capture_pg"] = (pg.id.hex(), pg.bundle_specs)
    strategy = options.get("scheduling_strategy")
    cw = core_worker._current   # not known before init(): the check waits for the next options()
    if isinstance(strategy, NodeAffinitySchedulingStrategy) and not strategy.soft and cw is not None \
            and strategy.node_id != cw.node_info["node_id"].hex():
        out["unschedulable"] = (f"The node specified via NodeAffinitySchedulingStrategy "
                                f"({strategy.node_id}) does not exist or is dead, and soft=False.")
    return out
