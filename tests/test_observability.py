"""Looking inside: rayfast.timeline(), rayfast.summary() and its granularity warning, get(progress=True)."""
import json
import time

import pytest

import rayfast
from rayfast import observability
from rayfast.exceptions import GetTimeoutError

pytestmark = pytest.mark.usefixtures("cluster")


@rayfast.remote
def obs_span(i):
    return i


@rayfast.remote
def obs_tiny():
    return None


@rayfast.remote
def obs_sleepy(x):
    time.sleep(0.02)
    return x


@rayfast.remote
def obs_progress(x):
    time.sleep(0.005)
    return x * 2


def _spans(events, suffix):
    return [e for e in events if e.get("ph") == "X" and e["name"].endswith(suffix)]


def check_trace_event(e):
    """The fields chrome://tracing and Perfetto need, with the types they need."""
    assert e["ph"] in ("X", "M"), e
    assert isinstance(e["name"], str) and e["name"]
    assert isinstance(e["pid"], int) and isinstance(e["tid"], int)
    assert isinstance(e.get("args", {}), dict)
    if e["ph"] == "X":
        assert e["cat"] == "task"
        assert isinstance(e["ts"], (int, float)) and e["ts"] > 0
        assert isinstance(e["dur"], (int, float)) and e["dur"] >= 0
        tid = e["args"]["task_id"]
        assert isinstance(tid, str) and len(tid) == 32 and int(tid, 16) >= 0
    else:
        assert e["name"] in ("process_name", "thread_name", "process_sort_index", "thread_sort_index")


def test_timeline_one_valid_event_per_task(tmp_path):
    t0 = time.time()
    refs = [obs_span.remote(i) for i in range(200)]
    assert rayfast.get(refs) == list(range(200))
    t1 = time.time()
    events = rayfast.timeline()
    assert isinstance(events, list)
    for e in events:
        check_trace_event(e)
    spans = _spans(events, "obs_span")
    ids = sorted(e["args"]["task_id"] for e in spans)
    assert ids == sorted(r.task_id().hex() for r in refs)  # exactly one span per task, no duplicates
    for e in spans:
        assert t0 * 1e6 - 1e3 <= e["ts"] <= e["ts"] + e["dur"] <= t1 * 1e6 + 1e3  # µs, wall clock
    # One row per worker: every span's (pid, tid) row is named by a thread_name metadata event,
    # and a worker runs one task at a time, so spans on a row never overlap.
    named = {(e["pid"], e["tid"]) for e in events if e["name"] == "thread_name"}
    rows = {}
    for e in spans:
        assert (e["pid"], e["tid"]) in named
        rows.setdefault((e["pid"], e["tid"]), []).append((e["ts"], e["ts"] + e["dur"]))
    assert 1 <= len(rows) <= 2  # num_cpus=2
    for spans_on_row in rows.values():
        spans_on_row.sort()
        for (s0, e0), (s1, _) in zip(spans_on_row, spans_on_row[1:]):
            assert s1 >= e0 - 1.0

    path = tmp_path / "trace.json"
    assert rayfast.timeline(str(path)) is None
    loaded = json.loads(path.read_text())
    assert isinstance(loaded, list)
    for e in loaded:
        check_trace_event(e)
    assert sorted(e["args"]["task_id"] for e in _spans(loaded, "obs_span")) == ids


def test_trace_events_rows_per_node_and_worker():
    rows = [("aa" * 16, "f", "11" * 16, 1, 100, 10.0, 10.5),
            ("aa" * 16, "g", "22" * 16, 2, 101, 10.1, 10.2),
            ("bb" * 16, "f", "33" * 16, 1, 200, 10.3, 10.4)]
    ev = observability.trace_events(rows)
    for e in ev:
        check_trace_event(e)
    x = [e for e in ev if e["ph"] == "X"]
    assert [(e["pid"], e["tid"]) for e in x] == [(1, 1), (1, 2), (2, 1)]
    assert x[0]["ts"] == 10.0e6 and x[0]["dur"] == pytest.approx(0.5e6)
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in ev if e["name"] == "thread_name"}
    assert names[(1, 2)] == "worker 2 (pid 101)"
    procs = {e["pid"]: e["args"]["name"] for e in ev if e["name"] == "process_name"}
    assert procs == {1: "node aaaaaaaa", 2: "node bbbbbbbb"}


def test_summary_fields_and_granularity_warning():
    rayfast.get([obs_tiny.remote() for _ in range(2000)])
    # Long tasks submitted in bulk: each waits in the queue far longer than it runs, which is
    # contention, not overhead, and must not be reported as a granularity problem.
    rayfast.get([obs_sleepy.remote(i) for i in range(12)])
    s = rayfast.summary()
    assert isinstance(s, dict)
    for key in ("nodes", "resources", "cpus", "object_store", "queues", "functions", "granularity_warnings"):
        assert key in s
    assert len(s["nodes"]) == 1
    assert s["cpus"]["total"] == 2
    assert 0 <= s["cpus"]["used"] <= 2
    assert s["object_store"]["capacity"] > 0 and "bytes_used" in s["object_store"]
    for key in ("queued", "waiting_for_arguments", "in_flight"):
        assert s["queues"][key] >= 0

    tiny = next(v for k, v in s["functions"].items() if k.endswith("obs_tiny"))
    assert tiny["submitted"] >= 2000 and tiny["finished"] >= 2000
    for key in ("mean_run_s", "mean_overhead_s", "mean_queue_s"):
        assert tiny[key] >= 0
    assert tiny["mean_overhead_s"] > tiny["mean_run_s"]
    w = tiny["granularity_warning"]
    assert w and "obs_tiny" in w and "too small" in w and "granularity" in w
    assert w in s["granularity_warnings"]

    sleepy = next(v for k, v in s["functions"].items() if k.endswith("obs_sleepy"))
    assert sleepy["finished"] == 12
    assert 0.015 < sleepy["mean_run_s"] < 0.5
    assert sleepy["mean_queue_s"] > sleepy["mean_run_s"]   # 12 tasks on 2 CPUs: they queued
    assert sleepy["mean_overhead_s"] < sleepy["mean_run_s"]
    assert sleepy["granularity_warning"] is None

    text = str(s)
    assert "Nodes: 1 alive" in text and "CPU:" in text and "Object store:" in text and "Queues:" in text
    assert "WARNING" in text
    line = next(ln for ln in text.splitlines() if "obs_tiny" in ln and "too small" in ln)
    assert line
    assert not any("obs_sleepy" in ln and "too small" in ln for ln in text.splitlines())


@rayfast.remote
def obs_short(x):
    time.sleep(0.0008)
    return x


def test_no_warning_for_sub_millisecond_tasks_that_are_big_enough():
    # ~0.9 ms each: small enough for a node to queue several on one worker at once, yet the
    # system's share per task is well under the run time. Time spent queued behind other
    # tasks on the worker is not overhead.
    assert rayfast.get([obs_short.remote(i) for i in range(300)]) == list(range(300))
    row = next(v for k, v in rayfast.summary()["functions"].items() if k.endswith("obs_short"))
    assert row["finished"] == 300
    assert row["mean_overhead_s"] < row["mean_run_s"], row
    assert row["granularity_warning"] is None


def test_granularity_rule():
    f = observability.granularity_warning
    assert f("f", 1000, 2e-6, 50e-6) is not None            # overhead 25x run
    assert f("f", 1000, 1e-3, 50e-6) is None                # run 20x overhead
    assert f("f", 3, 2e-6, 50e-6) is None                   # too few tasks to matter
    msg = f("mod.f", 1000, 5e-6, 50e-6)
    assert "mod.f" in msg and "100 calls" in msg            # 50 µs / 10% = 500 µs = 100 x 5 µs
    row = observability.function_row("g", {"finished": 100, "mean_run_s": 1e-6, "mean_overhead_s": 3e-6})
    assert row["overhead_fraction"] == pytest.approx(0.75)
    assert row["granularity_warning"]


def test_get_progress_returns_values(capsys):
    refs = [obs_progress.remote(i) for i in range(60)]
    refs.append(refs[0])  # duplicates are fine, as for get
    values = rayfast.get(refs, progress=True)
    assert values == [2 * i for i in range(60)] + [0]
    err = capsys.readouterr().err
    assert "100%" in err and "60/60" in err
    # Already-ready refs: no waiting, same values.
    assert rayfast.get(refs[:5], progress=True) == [0, 2, 4, 6, 8]


def test_get_progress_timeout():
    refs = [obs_sleepy.remote(i) for i in range(6)]
    with pytest.raises(GetTimeoutError):
        rayfast.get(refs, progress=True, timeout=0.01)
    assert rayfast.get(refs, progress=True) == list(range(6))
