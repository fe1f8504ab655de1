"""Which GPUs a task gets: the node's GPUs are ids 0..n-1, each with a capacity of 1.

A task asking for k whole GPUs gets k free ones; one asking for a fraction gets
one GPU with that much capacity left (the most used that fits, as Ray packs
fractional tasks). The worker sees its ids as `get_gpu_ids()` and
CUDA_VISIBLE_DEVICES (rayfast/node/worker.py).
"""
import math


class GpuIds:
    def __init__(self, total):
        self.free = [1.0] * int(total)   # capacity left per GPU id

    def take(self, shape):
        """The ids for a task of shape (sorted (resource, amount) pairs), or None if it asks for none."""
        if not self.free:   # a node without GPUs: every dispatch asks, so answer first
            return None
        amount = dict(shape).get("GPU", 0)
        if not amount:
            return None
        free = self.free
        if amount < 1:
            fits = [i for i, c in enumerate(free) if c >= amount - 1e-9]
            # the node's GPU count said it fits, but maybe only across GPUs: take the emptiest then
            i = min(fits, key=lambda i: free[i]) if fits else max(range(len(free)), key=free.__getitem__)
            free[i] -= amount
            return (i,)
        whole = [i for i, c in enumerate(free) if c >= 1 - 1e-9]
        ids = tuple(whole[:math.ceil(amount)])
        for i in ids:
            free[i] -= 1.0
        return ids

    def give(self, ids, shape):
        amount = dict(shape).get("GPU", 0)
        for i in ids:
            self.free[i] += amount if amount < 1 else 1.0
