#!/usr/bin/env python
"""Word count by map-reduce: map tasks with num_returns=3 feed 3 reduce tasks.

Each map task counts the words of one document and splits its counts into one
partition per reducer (by a stable hash of the word), returned as 3 separate
objects (num_returns=3). Reducer r receives the r-th partition of every map
task as arguments (futures resolved before it runs) and merges them. The
result is checked against a count made in this one process.

    python examples/map_reduce.py --docs 8 --words 20000

The same functions take a `ray` module, so `bench/` runs them on Ray too.
"""
import argparse
import collections
import sys
import time

import numpy as np

NUM_REDUCERS = 3


def build(ray, reducers=NUM_REDUCERS):
    """(map task, reduce task) for the runtime `ray`; defined here so they pickle by value."""

    def map_words(doc):
        import zlib
        counts = collections.Counter(doc.split())
        parts = [{} for _ in range(reducers)]
        for word, c in counts.items():
            parts[zlib.crc32(word.encode()) % reducers][word] = c
        return tuple(parts)

    def reduce_words(*parts):
        total = collections.Counter()
        for p in parts:
            total.update(p)
        return dict(total)

    return ray.remote(num_returns=reducers)(map_words), ray.remote(reduce_words)


def word_count(ray, docs, tasks=None, reducers=NUM_REDUCERS):
    """Count the words of `docs` (list of str) with len(docs) map tasks and `reducers` reduce tasks."""
    mapper, reducer = tasks or build(ray, reducers)
    doc_refs = [ray.put(d) for d in docs]
    parts = [mapper.remote(d) for d in doc_refs]               # each: list of `reducers` refs
    outs = [reducer.remote(*[p[r] for p in parts]) for r in range(reducers)]
    result = {}
    for part in ray.get(outs):
        overlap = result.keys() & part.keys()
        if overlap:
            raise AssertionError(f"word(s) reduced twice: {sorted(overlap)[:5]}")
        result.update(part)
    return result


def make_docs(n_docs, n_words, seed=0, vocabulary=5000):
    """n_docs documents of n_words words each, drawn Zipf-like from a fixed vocabulary."""
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(vocabulary)])
    p = 1.0 / np.arange(1, vocabulary + 1)
    p /= p.sum()
    return [" ".join(vocab[rng.choice(vocabulary, size=n_words, p=p)]) for _ in range(n_docs)]


def count_local(docs):
    total = collections.Counter()
    for d in docs:
        total.update(d.split())
    return dict(total)


def main(argv=None):
    p = argparse.ArgumentParser(description="Word count: map tasks (num_returns=3) feeding 3 reduce tasks.")
    p.add_argument("--docs", type=int, default=6, help="documents, one map task each (default 6)")
    p.add_argument("--words", type=int, default=10000, help="words per document (default 10000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-cpus", type=int, default=None, help="workers (default: all cores)")
    args = p.parse_args(argv)
    if args.docs < 1 or args.words < 0:
        p.error("--docs must be positive and --words non-negative")

    import rayfast as ray

    docs = make_docs(args.docs, args.words, args.seed)
    ray.init(num_cpus=args.num_cpus)
    try:
        tasks = build(ray)
        t = time.perf_counter()
        counts = word_count(ray, docs, tasks)
        wall = time.perf_counter() - t
    finally:
        ray.shutdown()
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    print(f"{sum(counts.values()):,} words, {len(counts):,} distinct; top: "
          + ", ".join(f"{w}={c}" for w, c in top))
    print(f"wall {wall:.3f} s ({args.docs} map tasks, {NUM_REDUCERS} reduce tasks)")
    ok = counts == count_local(docs)
    print(f"single-process count: {'OK' if ok else 'MISMATCH'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
