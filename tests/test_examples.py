"""The example programs run at small size (each as its own driver process) and give the right answers."""
import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")


def run_example(name, *args, timeout=90):
    proc = subprocess.run([sys.executable, os.path.join(EXAMPLES, name), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, f"{name} {args} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def load(name):
    spec = importlib.util.spec_from_file_location(f"_example_{name}", os.path.join(EXAMPLES, name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", ["quickstart.py", "map_reduce.py", "lcs.py"])
def test_help(name):
    out = run_example(name, "--help")
    assert "usage" in out.lower()


def test_quickstart():
    out = run_example("quickstart.py", "--num-cpus", "2")
    assert "g(f(3), f(1)) = 10" in out
    if "actors: skipped" not in out:
        assert "= 10, again = 10" in out


def test_map_reduce():
    out = run_example("map_reduce.py", "--docs", "4", "--words", "3000", "--num-cpus", "2")
    assert "single-process count: OK" in out
    assert "12,000 words" in out


def test_lcs():
    out = run_example("lcs.py", "--n", "250", "--block", "40", "--num-cpus", "2")   # ragged last tiles
    assert "single-process LCS" in out and "OK" in out
    assert "49 tasks" in out


def _lcs_python(a, b):
    """The textbook O(nm) DP, independent of the numpy code being checked."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


class _Inline:
    """A stand-in `ray` that runs tasks in this process, to check the tiling logic exactly."""

    class _Ref:
        def __init__(self, v):
            self.v = v

    @classmethod
    def remote(cls, fn=None, num_returns=1):
        if fn is not None:               # @ray.remote without options
            return cls.remote(num_returns=1)(fn)

        def deco(fn):
            class T:
                @staticmethod
                def remote(*args):
                    out = fn(*[a.v if isinstance(a, cls._Ref) else a for a in args])
                    return [cls._Ref(v) for v in out] if num_returns > 1 else cls._Ref(out)
            return T
        return deco

    @classmethod
    def get(cls, r):
        return r.v


@pytest.mark.parametrize("n,m,block", [(1, 1, 1), (13, 7, 3), (40, 40, 7), (97, 64, 16), (60, 60, 60)])
def test_lcs_tiles_match_textbook_dp(n, m, block):
    lcs = load("lcs")
    a, _ = lcs.random_strings(n, seed=n)
    b, _ = lcs.random_strings(m, seed=m + 1)
    want = _lcs_python(a.tolist(), b.tolist())
    assert lcs.lcs_local(a, b) == want
    assert lcs.lcs_blocked(_Inline, a, b, block)[0] == want


def test_map_reduce_partitions_against_local_count():
    mr = load("map_reduce")
    docs = mr.make_docs(5, 500, seed=3)
    mapper, reducer = mr.build(_Inline)
    assert mr.word_count(_Inline_put, docs, (mapper, reducer)) == mr.count_local(docs)


class _Inline_put(_Inline):
    @classmethod
    def put(cls, v):
        return cls._Ref(v)

    @classmethod
    def get(cls, r):
        return [x.v for x in r] if isinstance(r, list) else r.v
