"""Placement groups on a node: bundles of resources reserved together (Ray's `placement_group`).

A group is created PENDING and placed, all bundles at once, as soon as the
node's free resources hold them (a STRICT_SPREAD group of several bundles
needs several nodes and stays PENDING). Placing it moves the bundles'
resources out of the node's free pool and adds, as Ray does, resources named
after the group: `<R>_group_<pg>` (the whole group) and `<R>_group_<i>_<pg>`
(bundle i) for each resource R, plus `bundle_group_<pg>` /
`bundle_group_<i>_<pg>` (1000 each per bundle). A task placed in the group
asks for those names instead of R (rayfast/util/placement_group.py), so it
runs only inside the reservation. Removing the group gives the reservation
back and takes the names away; as in Ray, its tasks end: those still waiting
fail with TaskPlacementGroupRemovedError (as do tasks submitted into it later,
where Ray's would wait forever), running ones are killed (as by
cancel(force=True)), and what they held never comes back to the node.

Lifetime, as Ray's: a group that is not `lifetime="detached"` is removed when
the driver that created it leaves, or the detached actor that created it dies.
One made by another task or actor lives as long as the node (Ray scopes it to
the job, whose driver a worker here does not know).
"""
from rayfast import protocol as P
from rayfast.exceptions import TaskPlacementGroupRemovedError

STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
BUNDLE_UNIT = 1000.0


def group_resources(pg_hex, bundles):
    """The resource names and amounts a placed group adds to the node."""
    out = {f"bundle_group_{pg_hex}": BUNDLE_UNIT * len(bundles)}
    for i, bundle in enumerate(bundles):
        out[f"bundle_group_{i}_{pg_hex}"] = BUNDLE_UNIT
        for name, amount in bundle.items():
            whole = f"{name}_group_{pg_hex}"
            out[whole] = out.get(whole, 0.0) + amount
            out[f"{name}_group_{i}_{pg_hex}"] = amount
    return out


class PlacementGroups:
    def __init__(self, nm):
        self.nm = nm
        self.groups = {}       # pg hex -> record dict (the table row)
        self.pending = []      # pg hexes waiting for resources, in creation order
        self.scoped = {}       # client whose end removes the group -> [pg hex] (see lifetime above)

    def answer(self, what, args, c):
        if what == "pg_create":
            pg_hex, bundles, strategy, name, detached = args
            self.create(pg_hex, bundles, strategy, name)
            if not detached and self._scopes(c):
                self.scoped.setdefault(c, []).append(pg_hex)
            return True
        if what == "pg_remove":
            return self.remove(args[0])
        if what == "pg_table":
            if args[0] is None:
                return {k: dict(v) for k, v in self.groups.items()}
            row = self.groups.get(args[0])
            return dict(row) if row is not None else None
        if what == "pg_by_name":
            for row in self.groups.values():
                if row["name"] == args[0] and row["state"] != "REMOVED":
                    return dict(row)
            return None
        raise ValueError(f"unknown request {what!r}")

    def create(self, pg_hex, bundles, strategy, name):
        if name and self.answer("pg_by_name", (name,), None) is not None:
            raise ValueError(f"A placement group named {name!r} already exists")
        self.groups[pg_hex] = {"placement_group_id": pg_hex, "name": name, "strategy": strategy,
                               "bundles": dict(enumerate(bundles)), "state": "PENDING",
                               "bundles_to_node_id": {}}
        self.pending.append(pg_hex)
        self.schedule()
        return True

    def _scopes(self, c):
        """Whether c's end ends the non-detached groups it creates: a driver's, a detached actor's."""
        w = c.worker
        if w is None:
            return c.kind == "driver"
        actors = self.nm.actors
        a = actors.actors.get(w.actor_id) if actors is not None and w.actor_id is not None else None
        return a is not None and a.detached

    def creator_gone(self, c):
        for pg_hex in self.scoped.pop(c, ()):
            self.remove(pg_hex)

    def schedule(self):
        """Place the pending groups that fit now (called from the node's scheduling pass).
        True if one still waits for resources that are in use (not for more than the node has)."""
        nm = self.nm
        waiting = False
        for pg_hex in list(self.pending):
            row = self.groups[pg_hex]
            bundles = list(row["bundles"].values())
            if row["strategy"] == "STRICT_SPREAD" and len(bundles) > 1:
                continue   # one bundle per node: this node can hold one
            need = {}
            for b in bundles:
                for k, v in b.items():
                    need[k] = need.get(k, 0.0) + v
            need = tuple(need.items())
            if not nm._fits(need):
                waiting = waiting or nm._fits_total(need)
                continue
            for k, v in need:
                nm.avail[k] -= v
            for k, v in group_resources(pg_hex, bundles).items():
                nm.total[k] = nm.avail[k] = v
            row["state"] = "CREATED"
            row["bundles_to_node_id"] = {i: nm.node_id.hex() for i in range(len(bundles))}
            self.pending.remove(pg_hex)
        return waiting

    def remove(self, pg_hex):
        row = self.groups.get(pg_hex)
        if row is None or row["state"] == "REMOVED":
            return False
        nm = self.nm
        if row["state"] == "CREATED":
            bundles = list(row["bundles"].values())
            for k in group_resources(pg_hex, bundles):
                nm.total.pop(k, None)
                nm.avail.pop(k, None)
            for b in bundles:
                for k, v in b.items():
                    nm.avail[k] = nm.avail.get(k, 0.0) + v
        else:
            self.pending.remove(pg_hex)
        row["state"] = "REMOVED"
        self._end_tasks(pg_hex)
        return True

    def _end_tasks(self, pg_hex):
        nm = self.nm
        for rec in [r for r in nm.tasks.values() if not r.done and r.spec[P.S_KIND] == P.TASK_NORMAL
                    and r.spec[P.S_OPTIONS] and r.spec[P.S_OPTIONS].get("placement_group") == pg_hex]:
            if rec.worker is None:
                nm.unqueue(rec)
                nm.fail_task(rec, _removed_error(pg_hex, rec))
            else:
                nm._cancel(rec.returns[0], True, False)

    def removed_for(self, rec):
        """Fail a task just submitted into a group removed already (True then). Ray's would wait
        forever for the group's resources; a clear error is kinder than a hang."""
        pg_hex = rec.spec[P.S_OPTIONS].get("placement_group")
        row = self.groups.get(pg_hex) if pg_hex is not None else None
        if row is None or row["state"] != "REMOVED":
            return False
        self.nm.fail_task(rec, _removed_error(pg_hex, rec))
        return True


def _removed_error(pg_hex, rec):
    return TaskPlacementGroupRemovedError(f"The placement group {pg_hex} of task {rec.spec[P.S_NAME]} was removed.")
