"""What a task's or actor's scheduling options (scheduling_strategy, placement_group...) carry:
the placement group it runs in, the extras its spec takes to its worker, and the node it must
run on (node affinity, SPREAD).

A node offers one unit of a resource named after its id (AFFINITY + hex id, hidden from
cluster_resources() and the like: `visible`). A task pinned to a node asks for a sliver of it,
so the ordinary shape-based scheduling does the rest: its origin runs it if it is that node,
else spills it there (rayfast/node/peers.py). When that node dies, a soft or SPREAD pin is
dropped (`unpinned`) and a hard one makes the task unschedulable. Which node is decided at the
call, from the caller's copy of the node table (refreshed after NODES_TTL, or at once for a node
it does not know)."""
import itertools
import time

AFFINITY = "node_id:"
AFFINITY_AMOUNT = 0.0001
NODES_TTL = 1.0
_nodes = [None, 0.0, {}]   # (core worker, when read, hex node id -> its resources) of the live nodes
_spread = itertools.count()


def fits_in(shape, have):
    """Whether resources `have` (name -> amount) cover shape ((name, amount), ...)."""
    for name, amount in shape:
        if have.get(name, 0) < amount - 1e-9:
            return False
    return True


def visible(resources):
    """resources without the node-id resources (Ray shows none)."""
    return {k: v for k, v in resources.items() if not k.startswith(AFFINITY)}


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


def captured_strategy(capture_pg):
    """The strategy an actor made in a capturing task's placement group gets: that group, still
    capturing (what `captured` does to a child task's shape and extras)."""
    from rayfast.util.placement_group import PlacementGroup, PlacementGroupID
    from rayfast.util.scheduling_strategies import PlacementGroupSchedulingStrategy
    pg_hex, bundles = capture_pg
    return PlacementGroupSchedulingStrategy(PlacementGroup(PlacementGroupID.from_hex(pg_hex), bundles),
                                            placement_group_capture_child_tasks=True)


def placement_extras(options):
    """What of the scheduling options a task's spec carries (S_OPTIONS) for its worker."""
    from rayfast.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    out = {}
    pg, _, capture = placement(options)
    if pg is not None:
        out["placement_group"] = pg.id.hex()
        if capture:   # the task's own calls go into the group too (CoreWorker.capture_pg)
            out["capture_pg"] = (pg.id.hex(), pg.bundle_specs)
    strategy = options.get("scheduling_strategy")
    if isinstance(strategy, NodeAffinitySchedulingStrategy):
        out["node_affinity"] = (strategy.node_id, strategy.soft)
    elif strategy == "SPREAD":
        out["spread"] = True
    return out


def _live_nodes(cw, fresh=False):
    cached_by, at, nodes = _nodes
    if fresh or cached_by is not cw or time.monotonic() - at > NODES_TTL:
        nodes = {n["NodeID"]: n["Resources"] for n in cw.request("nodes") if n["Alive"]}
        _nodes[:] = [cw, time.monotonic(), nodes]
    return nodes


def forget_nodes():
    """The nodes changed (cluster_utils added or removed one): read them again at the next call."""
    _nodes[0] = None


def pinned_to(shape, node_hex):
    """Whether shape asks for node node_hex's node-id resource (node affinity or SPREAD)."""
    key = AFFINITY + node_hex
    return any(name == key for name, _ in shape)


def unpinned(shape, extras):
    """shape once the node it was pinned to has died: free of the pin for soft affinity and SPREAD
    (any node will do, as in Ray); None for hard affinity (it can run nowhere)."""
    affinity = extras.get("node_affinity") if extras else None
    if affinity is not None and not affinity[1]:
        return None
    return tuple(x for x in shape if not x[0].startswith(AFFINITY))


def pick_node(cw, shape, extras):
    """(shape, extras) of one call of a task or actor whose extras say node_affinity or spread:
    the shape asks for the chosen node's node-id resource. Hard affinity to a node that is dead,
    unknown or lacks the resources makes it fail with TaskUnschedulableError (extras say so);
    soft affinity then leaves it free. SPREAD takes the live nodes that could run it in turn."""
    affinity = extras.get("node_affinity")
    if affinity is not None:
        node_id, soft = affinity
        resources = _live_nodes(cw).get(node_id)
        if resources is None:
            resources = _live_nodes(cw, fresh=True).get(node_id)
        if resources is None or not fits_in(shape, resources):
            if soft:
                return shape, extras
            return shape, dict(extras, unschedulable=(
                f"The node specified via NodeAffinitySchedulingStrategy ({node_id}) does not exist or is "
                f"dead, or cannot run it (it asks for {dict(shape)}), and soft=False."))
    else:
        fits = sorted(n for n, r in _live_nodes(cw).items() if fits_in(shape, r))
        if len(fits) < 2:
            return shape, extras
        node_id = fits[next(_spread) % len(fits)]
    return tuple(sorted(shape + ((AFFINITY + node_id, AFFINITY_AMOUNT),))), extras
