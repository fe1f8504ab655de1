#!/usr/bin/env python
"""Longest common subsequence by blocked dynamic programming, one task per block.

The (n+1) x (m+1) DP table D[i][j] = LCS length of a[:i] and b[:j] is cut into
block x block tiles. The task for tile (I, J) needs the row of D just above the
tile (the bottom row of tile (I-1, J)), the column just left of it (the right
column of tile (I, J-1)) and the corner D[i0-1][j0-1] (the bottom-right cell of
tile (I-1, J-1)); it returns its own bottom row, right column and bottom-right
cell as three objects (num_returns=3), which are passed on as refs. So every
tile depends on its left, top and top-left tiles and the tiles of one
anti-diagonal run in parallel.

Inside a tile the DP is computed one row at a time with numpy:
    D[i][j] = max(D[i-1][j], D[i-1][j-1] + (a[i] == b[j]), D[i][j-1])
the last term is a running maximum along the row (np.maximum.accumulate).

    python examples/lcs.py --n 3000 --block 60

The same functions take a `ray` module, so `bench/` runs them on Ray too.
"""
import argparse
import sys
import time

import numpy as np


def build(ray):
    """Remote tile task (num_returns=3) for the runtime `ray` (rayfast or Ray)."""
    return ray.remote(num_returns=3)(tile_function())


def tile_function():
    """The tile computation as a plain function.

    Defined inside a function so that it is pickled by value: workers need
    nothing but numpy to run it.
    """

    def tile(a, b, top, left, corner):
        # a: this tile's row characters (h,), b: its column characters (w,),
        # top = D[i0-1][j0:j1], left = D[i0:i1][j0-1], corner = D[i0-1][j0-1].
        # Returns the tile's bottom row, right column and bottom-right cell.
        h, w = len(a), len(b)
        eq = list((a[:, None] == b[None, :]).astype(np.int32))
        D = np.empty((h + 1, w + 1), np.int32)   # D[0] is the row above, D[:, 0] the column to the left
        D[0, 0] = corner
        D[0, 1:] = top
        D[1:, 0] = left
        rows, heads, tails = list(D), list(D[:, :-1]), list(D[:, 1:])
        add, maximum, running_max = np.add, np.maximum, np.maximum.accumulate
        for i in range(h):
            t = tails[i + 1]
            add(heads[i], eq[i], out=t)                 # D[i-1][j-1] + (a[i] == b[j])
            maximum(t, tails[i], out=t)                 # vs. D[i-1][j]
            running_max(rows[i + 1], out=rows[i + 1])   # vs. D[i][j-1]: running max along the row
        return D[h, 1:].copy(), D[1:, w].copy(), int(D[h, w])

    return tile


def lcs_blocked(ray, a, b, block, tile_task=None):
    """LCS length of uint8 arrays a, b with one `ray` task per block x block tile.
    Returns (length, number of tasks)."""
    tile_task = tile_task or build(ray)
    n, m = len(a), len(b)
    rows = [(i, min(i + block, n)) for i in range(0, n, block)]
    cols = [(j, min(j + block, m)) for j in range(0, m, block)]
    zero_row = {j0: np.zeros(j1 - j0, np.int32) for j0, j1 in cols}
    above = None   # refs of the tile row above: list of (bottom, right, corner)
    for i0, i1 in rows:
        this = []
        for J, (j0, j1) in enumerate(cols):
            top = above[J][0] if above else zero_row[j0]
            left = this[J - 1][1] if J else np.zeros(i1 - i0, np.int32)
            corner = above[J - 1][2] if (above and J) else 0
            this.append(tile_task.remote(a[i0:i1], b[j0:j1], top, left, corner))
        above = this
    return ray.get(above[-1][2]), len(rows) * len(cols)


def lcs_local(a, b):
    """Single-process LCS length: the same recurrence over the whole table, one numpy row at a time."""
    m = len(b)
    prev = np.zeros(m + 1, np.int32)
    cur = np.zeros(m + 1, np.int32)
    for ch in a:
        cur[0] = 0
        np.add(prev[:-1], (b == ch), out=cur[1:], casting="unsafe")
        np.maximum(cur[1:], prev[1:], out=cur[1:])
        np.maximum.accumulate(cur, out=cur)
        prev, cur = cur, prev
    return int(prev[m])


def random_strings(n, seed=0, alphabet=4):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, alphabet, n, dtype=np.uint8), rng.integers(0, alphabet, n, dtype=np.uint8))


def main(argv=None):
    p = argparse.ArgumentParser(description="LCS of two random strings by blocked DP, one task per block.")
    p.add_argument("--n", type=int, default=1200, help="length of each string (default 1200)")
    p.add_argument("--block", type=int, default=100, help="block (tile) side (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-cpus", type=int, default=None, help="workers (default: all cores)")
    p.add_argument("--no-check", action="store_true", help="skip the single-process verification")
    args = p.parse_args(argv)
    if args.n < 1 or args.block < 1:
        p.error("--n and --block must be positive")

    import rayfast as ray

    a, b = random_strings(args.n, args.seed)
    ray.init(num_cpus=args.num_cpus)
    try:
        tile_task = build(ray)
        lcs_blocked(ray, a[:args.block], b[:args.block], args.block, tile_task)   # warm the workers
        t = time.perf_counter()
        length, ntasks = lcs_blocked(ray, a, b, args.block, tile_task)
        wall = time.perf_counter() - t
    finally:
        ray.shutdown()
    print(f"LCS length {length}  (n={args.n}, block={args.block}: {ntasks} tasks)")
    print(f"wall {wall:.3f} s, {ntasks / wall:,.0f} tasks/s")
    if not args.no_check:
        expect = lcs_local(a, b)
        ok = expect == length
        print(f"single-process LCS {expect}: {'OK' if ok else 'MISMATCH'}")
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
