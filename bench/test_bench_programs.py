"""Programs: blocked-DP LCS (3000x3000 at blocks 30..300), map-reduce word count, parameter server."""
import pytest

from bench import workloads as W


@pytest.fixture(scope="module")
def lcs_input(sizes):
    mod = W._load_example("lcs")
    a, b = mod.random_strings(sizes["lcs_n"], seed=1)
    return mod, a, b, mod.lcs_local(a, b)


@pytest.mark.parametrize("block", W.LCS_BLOCKS)
def test_lcs(benchmark, cluster, cx, lcs_input, block):
    mod, a, b, want = lcs_input
    _, tile = cx.lcs
    length, ntasks = benchmark.pedantic(lambda: mod.lcs_blocked(cluster, a, b, block, tile),
                                        rounds=3, warmup_rounds=1)
    assert length == want
    benchmark.extra_info.update(n=len(a), block=block, tasks=ntasks,
                                tasks_per_s=ntasks / benchmark.stats.stats.median)


def test_map_reduce(benchmark, cluster, cx, sizes):
    mod, tasks = cx.map_reduce
    docs = mod.make_docs(sizes["docs"], sizes["words"], seed=2)
    counts = benchmark.pedantic(lambda: mod.word_count(cluster, docs, tasks), rounds=5, warmup_rounds=1)
    assert counts == mod.count_local(docs)
    benchmark.extra_info.update(docs=len(docs), words=sum(counts.values()))


def test_parameter_server(benchmark, cluster, quick):
    """The actors' own workload (bench/bench_actors.py), when that module provides it."""
    fn, why = W._actor_fn("parameter_server")
    if fn is None:
        pytest.skip(why)
    run = W._actor_workload("parameter_server")
    rate = benchmark.pedantic(lambda: run(cluster, W.Context(cluster, quick))["parameter_server"], rounds=3)
    benchmark.extra_info["updates_per_s"] = rate
