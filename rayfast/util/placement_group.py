"""`rayfast.util.placement_group`: reserve bundles of resources and run tasks inside them (Ray's API).

The node keeps the groups (rayfast/node/placement_groups.py); this module is
the caller's side: creating, waiting for, looking up and removing groups, and
turning a task's resource request into one on a group's reserved resources.
"""
from __future__ import annotations

import os

from rayfast import core_worker
from rayfast.id_types import BinaryID
from rayfast.node.placement_groups import STRATEGIES
from rayfast.remote_function import RemoteFunction


class PlacementGroupID(BinaryID):
    __slots__ = ()


class PlacementGroup:
    """A handle to a placement group (picklable: tasks can take it as an argument)."""

    def __init__(self, id, bundle_specs):
        self.id = id
        self.bundle_specs = [dict(b) for b in bundle_specs]

    @staticmethod
    def empty():
        """Ray's "no placement group": an id of zeros and no bundles."""
        return PlacementGroup(PlacementGroupID(bytes(18)), [])

    @property
    def is_empty(self):
        return not any(self.id.binary())

    @property
    def bundle_count(self):
        return len(self.bundle_specs)

    def ready(self):
        """A ref that becomes ready, with this group as its value, once the group is placed."""
        return placement_group_ready.options(num_cpus=0, resources={f"bundle_group_{self.id.hex()}": 0.001}).remote(self)

    def wait(self, timeout_seconds=30):
        """True once the group is placed, False if timeout_seconds pass first."""
        row = core_worker.current().request("pg_table", self.id.hex())
        if row is None or row["state"] == "REMOVED":
            raise ValueError(f"Placement group {self.id!r} does not exist (it was removed).")
        if row["state"] == "CREATED":
            return True
        import rayfast
        ready, _ = rayfast.wait([self.ready()], timeout=timeout_seconds)
        return bool(ready)

    def __eq__(self, other):
        return isinstance(other, PlacementGroup) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return f"PlacementGroup({self.id.hex()}, bundles={self.bundle_specs})"


def _placement_group_ready(pg):
    return pg


# Module-level, so that workers import it by name rather than unpickle a copy.
placement_group_ready = RemoteFunction(_placement_group_ready, {"max_retries": 0})


def placement_group(bundles, strategy="PACK", name="", lifetime=None, _soft_target_node_id=None,
                    bundle_label_selector=None):
    """Reserve bundles (a list of {resource: amount}) on the cluster; placed as soon as they fit."""
    if strategy is None:
        strategy = "PACK"
    if strategy not in STRATEGIES:
        raise ValueError(f"Invalid placement group strategy {strategy!r}. Supported strategies are: "
                         f"{', '.join(STRATEGIES)}.")
    if not isinstance(bundles, list) or not bundles:
        raise ValueError("Bundles must be a non-empty list of resource dictionaries, "
                         'e.g. [{"CPU": 1.0}, {"GPU": 1.0}].')
    specs = []
    for b in bundles:
        if not isinstance(b, dict) or not any(v > 0 for v in b.values() if isinstance(v, (int, float))):
            raise ValueError(f"Bundles cannot be an empty dictionary or resources with only 0 values. "
                             f"Bundles: {bundles}")
        for k, v in b.items():
            if not isinstance(k, str) or not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                raise ValueError(f"Bundle resources must be name -> non-negative number, got {k!r}: {v!r}")
        specs.append({k: float(v) for k, v in b.items() if v > 0})
    if lifetime not in (None, "detached"):
        raise ValueError(f"lifetime must be None or 'detached', got {lifetime!r}")
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}")
    cw = core_worker.current_or_init()
    pg_hex = os.urandom(18).hex()
    cw.request("pg_create", pg_hex, specs, strategy, name, lifetime == "detached")
    return PlacementGroup(PlacementGroupID.from_hex(pg_hex), specs)


def remove_placement_group(placement_group):
    """Give the group's reservation back; tasks waiting to run in it never will."""
    if not isinstance(placement_group, PlacementGroup):
        raise TypeError(f"remove_placement_group() expects a PlacementGroup, got "
                        f"{type(placement_group).__name__}")
    core_worker.current().request("pg_remove", placement_group.id.hex())


def get_placement_group(placement_group_name):
    """The live placement group created with that name (ValueError if there is none)."""
    row = core_worker.current().request("pg_by_name", placement_group_name)
    if row is None:
        raise ValueError(f"Failed to look up placement group with name: {placement_group_name}")
    return _from_row(row)


def placement_group_table(placement_group=None):
    """The group's state (PENDING, CREATED, REMOVED), bundles, strategy...; all groups by id if None."""
    cw = core_worker.current()
    if placement_group is None:
        return cw.request("pg_table", None)
    return cw.request("pg_table", placement_group.id.hex()) or {}


def get_current_placement_group():
    """The group the running task runs in (None in the driver, or outside any group)."""
    from rayfast import get_runtime_context
    pg_hex = get_runtime_context().get_placement_group_id()
    if pg_hex is None:
        return None
    row = core_worker.current().request("pg_table", pg_hex)
    return _from_row(row) if row is not None else None


def _from_row(row):
    return PlacementGroup(PlacementGroupID.from_hex(row["placement_group_id"]),
                          [row["bundles"][i] for i in sorted(row["bundles"])])


def group_shape(shape, pg, index, what):
    """shape (sorted (resource, amount) pairs) as asked of pg's reservation (bundle index, or -1: any)."""
    if index != -1 and not (isinstance(index, int) and 0 <= index < pg.bundle_count):
        raise ValueError(f"placement group bundle index {index} is invalid. Valid placement group "
                         f"indexes: 0-{pg.bundle_count - 1}")
    bundles = pg.bundle_specs if index == -1 else [pg.bundle_specs[index]]
    for name, amount in shape:
        if not any(b.get(name, 0) >= amount - 1e-9 for b in bundles):
            raise ValueError(f"Cannot schedule {what} with the placement group because the resource "
                             f"request {dict(shape)} cannot fit into any bundles for the placement group, "
                             f"{bundles}.")
    pg_hex = pg.id.hex()
    suffix = pg_hex if index == -1 else f"{index}_{pg_hex}"
    out = {f"{name}_group_{suffix}": amount for name, amount in shape}
    out[f"bundle_group_{suffix}"] = 0.001   # waits for the group to be placed, even with no resources
    if index != -1:
        # also take from the whole group's pool, which bounds tasks with and without an index
        for name, amount in shape:
            out[f"{name}_group_{pg_hex}"] = amount
    return tuple(sorted(out.items()))
