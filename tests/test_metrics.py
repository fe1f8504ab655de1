"""rayfast.util.metrics (Ray's ray.util.metrics): checks at the call site, and records from the
driver, tasks and actors summed by the node manager and scraped from its metrics export port."""
import pickle
import re
import socket
import urllib.error
import urllib.request
import warnings

import pytest

import rayfast
from rayfast import core_worker
from rayfast.util import metrics
from rayfast.util.metrics import Counter, Gauge, Histogram

from conftest import assert_no_leftovers, run_driver, wait_for

_CONSTANT = {"Component", "NodeAddress", "SessionName", "Version"}   # labels on every series
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def _unescape(v):
    return re.sub(r'\\(.)', lambda m: "\n" if m.group(1) == "n" else m.group(1), v)


def scrape(port):
    """The exposition as ({(sample name, frozenset of labels but the constant ones): value}, {family: type})."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(" ")
            types[family] = kind
            continue
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        labels = {k: _unescape(v) for k, v in _LABEL.findall(m.group(2) or "")}
        assert _CONSTANT <= set(labels), line
        user = frozenset((k, v) for k, v in labels.items() if k not in _CONSTANT)
        samples[(m.group(1), user)] = float(m.group(3))
    return samples, types


def value_of(port, name, **labels):
    return scrape(port)[0].get((name, frozenset(labels.items())))


def eventually(port, expected, timeout=5.0):
    """Wait until every (name, labels) -> value of expected is scraped; the last scrape otherwise."""
    def ok():
        samples = scrape(port)[0]
        return all(samples.get(k) == v for k, v in expected.items())
    wait_for(ok, timeout=timeout)
    return scrape(port)


def key(name, **labels):
    return (name, frozenset(labels.items()))


# --- checks at the call site (no cluster needed) ---------------------------------------------------

def test_names_and_tag_keys_are_checked():
    with pytest.raises(ValueError, match="empty"):
        Counter("")
    with pytest.raises(TypeError, match="str"):
        Gauge(5)
    with pytest.raises(TypeError, match="tuple"):
        Counter("c", tag_keys=["a"])
    with pytest.raises(TypeError, match="tuple"):
        Counter("c", tag_keys="a")
    with pytest.raises(TypeError, match="tag keys must be str"):
        Counter("c", tag_keys=("a", 1))
    with pytest.raises(TypeError, match="description"):
        Counter("c", description=None)
    with pytest.warns(UserWarning, match="not a valid Prometheus name"):
        bad = Counter("1-bad")
    bad.inc()   # discarded, as Ray's: recording does nothing
    with pytest.warns(FutureWarning):
        Counter("a:b")


def test_records_are_checked():
    c = Counter("c", tag_keys=("a", "b"))
    with pytest.raises(ValueError, match="Missing value for tag key.*a, b"):
        c.inc()
    with pytest.raises(ValueError, match="Missing value for tag key.* b "):
        c.inc(tags={"a": "x"})
    with pytest.raises(ValueError, match="> 0"):
        c.inc(0, tags={"a": "x", "b": "y"})
    with pytest.raises(ValueError, match="> 0"):
        c.inc(-1.5, tags={"a": "x", "b": "y"})
    with pytest.raises(ValueError, match="> 0"):
        c.inc(float("nan"), tags={"a": "x", "b": "y"})
    with pytest.raises(TypeError, match="int or a float"):
        c.inc("1", tags={"a": "x", "b": "y"})
    with pytest.raises(TypeError, match="tag values must be str"):
        c.inc(tags={"a": 1, "b": "y"})
    with pytest.raises(TypeError, match="dict"):
        c.inc(tags=[("a", "x"), ("b", "y")])
    with pytest.raises(TypeError, match="tag keys must be str"):
        c.inc(tags={"a": "x", "b": "y", 3: "z"})
    g = Gauge("g")
    g.set(None)   # a no-op, as Ray's
    with pytest.raises(TypeError, match="int or a float"):
        g.set("3")
    h = Histogram("h", boundaries=[1, 2])
    with pytest.raises(TypeError, match="int or a float"):
        h.observe(None)


def test_histogram_boundaries_are_checked():
    for bad in (None, []):
        with pytest.raises(ValueError, match="boundaries"):
            Histogram("h", boundaries=bad)
    for bad, what in (([0, 1], "positive"), ([1, -2], "positive"), ([1, float("inf")], "finite"),
                      ([2, 1], "increasing"), ([1, 1], "repeats")):
        with pytest.raises(ValueError, match=what):
            Histogram("h", boundaries=bad)
    with pytest.raises(TypeError, match="numbers"):
        Histogram("h", boundaries=["a"])


def test_default_tags_and_info():
    c = Counter("requests", description="served", tag_keys=("route", "code"))
    assert c.info == {"name": "requests", "description": "served", "tag_keys": ("route", "code"),
                      "default_tags": {}}
    assert c.set_default_tags({"route": "/"}) is c
    assert c.info["default_tags"] == {"route": "/"}
    with pytest.raises(ValueError, match="'method' is not one of the metric's tag_keys"):
        c.set_default_tags({"method": "GET"})
    with pytest.raises(TypeError, match="tag values must be str"):
        c.set_default_tags({"code": 200})
    with pytest.raises(TypeError, match="dict"):
        c.set_default_tags([("code", "200")])
    assert c.info["default_tags"] == {"route": "/"}   # a refused call changes nothing
    with pytest.raises(ValueError, match="code"):
        c.inc()
    h = Histogram("latency", boundaries=(0.1, 1), tag_keys=("x",))
    assert h.info == {"name": "latency", "description": "", "tag_keys": ("x",), "default_tags": {},
                      "boundaries": [0.1, 1]}
    assert metrics.__all__ == ["Counter", "Gauge", "Histogram"]
    assert rayfast.util.metrics is metrics


def test_records_without_a_cluster_are_dropped():
    if rayfast.is_initialized():
        rayfast.shutdown()
    Counter("nowhere").inc(3)
    Gauge("nowhere_g").set(1)
    assert core_worker._current is None


# --- records reach the node's export port --------------------------------------------------------

@rayfast.remote
def count_in_task(n, tags):
    c = Counter("app_events", description="events seen", tag_keys=("source",))
    for _ in range(n):
        c.inc(tags=tags)
    return True


@rayfast.remote
class Recorder:
    def __init__(self):
        self.c = Counter("app_events", description="events seen", tag_keys=("source",))
        self.c.set_default_tags({"source": "actor"})
        self.g = Gauge("app_level", tag_keys=("who",))
        self.h = Histogram("app_latency", boundaries=[1, 10], tag_keys=("who",))

    def record(self, n, level, observations):
        self.c.inc(n)
        self.g.set(level, tags={"who": "shared"})
        for v in observations:
            self.h.observe(v, tags={"who": "shared"})
        return True


def test_driver_task_and_actor_records_are_summed(cluster):
    port = cluster["metrics_export_port"]
    assert isinstance(port, int) and port > 0
    assert rayfast.nodes()[0]["MetricsExportPort"] == port
    c = Counter("app_events", description="events seen", tag_keys=("source",))
    c.inc(2.5, tags={"source": "driver"})
    c.inc(tags={"source": "shared"})
    assert rayfast.get([count_in_task.remote(100, {"source": "task"}),
                        count_in_task.remote(100, {"source": "task"}),
                        count_in_task.remote(4, {"source": "shared"})]) == [True] * 3
    a = Recorder.remote()
    assert rayfast.get(a.record.remote(7, 1.0, [])) is True
    samples, types = eventually(port, {key("ray_app_events_total", source="driver"): 2.5,
                                       key("ray_app_events_total", source="task"): 200.0,
                                       key("ray_app_events_total", source="shared"): 5.0,
                                       key("ray_app_events_total", source="actor"): 7.0})
    assert samples.get(key("ray_app_events_total", source="task")) == 200.0
    assert samples.get(key("ray_app_events_total", source="shared")) == 5.0
    assert samples.get(key("ray_app_events_total", source="actor")) == 7.0
    assert samples.get(key("ray_app_events_total", source="driver")) == 2.5
    assert types["ray_app_events_total"] == "counter"
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
    assert "# HELP ray_app_events_total events seen\n" in text   # (any path serves the metrics)


def test_gauge_keeps_the_last_value_set_by_any_process(cluster):
    port = cluster["metrics_export_port"]
    g = Gauge("app_level", tag_keys=("who",))
    g.set(3, tags={"who": "driver"})
    g.set(-4.5, tags={"who": "driver"})
    eventually(port, {key("ray_app_level", who="driver"): -4.5})
    g.set(10, tags={"who": "shared"})
    eventually(port, {key("ray_app_level", who="shared"): 10.0})
    a = Recorder.remote()
    rayfast.get(a.record.remote(1, 2.0, []))
    samples, types = eventually(port, {key("ray_app_level", who="shared"): 2.0})
    assert samples.get(key("ray_app_level", who="shared")) == 2.0
    assert samples.get(key("ray_app_level", who="driver")) == -4.5
    assert types["ray_app_level"] == "gauge"


def test_histogram_buckets(cluster):
    port = cluster["metrics_export_port"]
    h = Histogram("app_latency", description="ms", boundaries=[1, 10], tag_keys=("who",))
    for v in (0.5, 1, 3):          # 1 falls in the le="1.0" bucket (at or below its boundary)
        h.observe(v, tags={"who": "shared"})
    a = Recorder.remote()
    rayfast.get(a.record.remote(1, 0.0, [10, 11, 200]))
    bucket = "ray_app_latency_bucket"
    expected = {key(bucket, who="shared", le="1.0"): 2.0, key(bucket, who="shared", le="10.0"): 4.0,
                key(bucket, who="shared", le="+Inf"): 6.0, key("ray_app_latency_count", who="shared"): 6.0,
                key("ray_app_latency_sum", who="shared"): 225.5}
    samples, types = eventually(port, expected)
    assert {k: samples.get(k) for k in expected} == expected
    assert types["ray_app_latency"] == "histogram"


def test_tags_defaults_extra_keys_and_escaping(cluster):
    port = cluster["metrics_export_port"]
    c = Counter("app_tagged", tag_keys=("route",)).set_default_tags({"route": "/home"})
    c.inc()
    c.inc(tags={"route": "/api"})
    c.inc(tags={"extra": "kept"})          # keys beyond tag_keys are exported too, as in Ray
    c.inc(tags={"route": 'say "hi"\\\n'})   # quotes, backslashes and newlines are escaped

    @rayfast.remote
    def in_task(counter):
        counter.inc(5)                     # a metric passed to a task keeps its default tags
        return True
    assert rayfast.get(in_task.remote(c))
    assert pickle.loads(pickle.dumps(c)).info == c.info
    samples, _ = eventually(port, {key("ray_app_tagged_total", route="/home"): 6.0,
                                   key("ray_app_tagged_total", route="/api"): 1.0,
                                   key("ray_app_tagged_total", route="/home", extra="kept"): 1.0,
                                   key("ray_app_tagged_total", route='say "hi"\\\n'): 1.0})
    assert samples.get(key("ray_app_tagged_total", route="/home")) == 6.0
    assert samples.get(key("ray_app_tagged_total", route='say "hi"\\\n')) == 1.0


def test_a_name_of_two_kinds_keeps_the_first(cluster):
    port = cluster["metrics_export_port"]
    Counter("app_twice").inc(2)
    eventually(port, {key("ray_app_twice_total"): 2.0})
    Gauge("app_twice").set(9)
    Counter("app_twice").inc(1)
    samples, _ = eventually(port, {key("ray_app_twice_total"): 3.0})
    assert key("ray_app_twice") not in samples
    assert core_worker.current().request("statistics")["metrics"]["dropped"] >= 1


def test_actor_updates_go_out_as_it_exits(cluster):
    port = cluster["metrics_export_port"]

    @rayfast.remote
    class Brief:
        def work_and_leave(self):
            Counter("app_last_words").inc(4)
            rayfast.actor.exit_actor()

    b = Brief.remote()
    with pytest.raises(rayfast.exceptions.RayActorError):
        rayfast.get(b.work_and_leave.remote())
    samples, _ = eventually(port, {key("ray_app_last_words_total"): 4.0})
    assert samples.get(key("ray_app_last_words_total")) == 4.0


def test_a_driver_that_leaves_sends_its_last_updates(cluster):
    port = cluster["metrics_export_port"]
    out = run_driver(f"""
        import rayfast
        from rayfast.util.metrics import Counter
        rayfast.init(address={cluster["address"]!r})
        Counter("app_from_other_driver").inc(6)
        """, timeout=30)   # (exits at once: atexit's shutdown() sends them)
    assert out.returncode == 0, out.stderr
    samples, _ = eventually(port, {key("ray_app_from_other_driver_total"): 6.0})
    assert samples.get(key("ray_app_from_other_driver_total")) == 6.0


def test_only_get_and_head_are_served(cluster):
    port = cluster["metrics_export_port"]
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 405
    head = urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/metrics", method="HEAD"),
                                  timeout=5)
    assert head.status == 200 and head.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert head.read() == b""


# --- the port: chosen at init, gone at shutdown ----------------------------------------------------

def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_port_chosen_at_init_and_closed_at_shutdown(fresh):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        with pytest.raises(RuntimeError, match="cannot serve metrics"):   # a port in use: said at init
            rayfast.init(num_cpus=1, _metrics_export_port=taken.getsockname()[1])
    assert_no_leftovers()
    for bad in (-1, 70000, "8080", 1.5, True):
        with pytest.raises(ValueError, match="_metrics_export_port"):
            rayfast.init(num_cpus=1, _metrics_export_port=bad)
    assert not rayfast.is_initialized()
    port = _free_port()
    ctx = rayfast.init(num_cpus=1, _metrics_export_port=port)
    assert ctx["metrics_export_port"] == port
    Counter("app_session").inc()
    eventually(port, {key("ray_app_session_total"): 1.0})
    rayfast.shutdown()
    assert_no_leftovers(ctx["session_dir"])
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Counter("app_session").inc()   # after shutdown: dropped, silently
