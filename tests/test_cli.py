"""The `rayfast` command and drivers that connect to a cluster it started.

One head node is started with `rayfast start --head` for the module (its own
session root and a free port, so it never meets another test's cluster), used
by drivers in subprocesses and by `status` / `timeline`, and stopped at the
end with `rayfast stop`, which must leave nothing behind.
"""
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from conftest import alive, descendants, run_driver, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _env(session_root):
    env = dict(os.environ)
    env["RAYFAST_SESSION_ROOT"] = str(session_root)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("RAYFAST_ADDRESS", None)
    return env


def cli(session_root, *args, timeout=60, check=True):
    p = subprocess.run([sys.executable, "-m", "rayfast.cli", *args], capture_output=True, text=True,
                       timeout=timeout, env=_env(session_root))
    if check:
        assert p.returncode == 0, f"rayfast {' '.join(args)} failed:\n{p.stdout}\n{p.stderr}"
    return p


def driver(session_root, code, timeout=60):
    old = os.environ.get("RAYFAST_SESSION_ROOT")
    os.environ["RAYFAST_SESSION_ROOT"] = str(session_root)
    try:
        p = run_driver(code, timeout=timeout)
    finally:
        if old is None:
            del os.environ["RAYFAST_SESSION_ROOT"]
        else:
            os.environ["RAYFAST_SESSION_ROOT"] = old
    assert p.returncode == 0, f"driver failed:\n{p.stdout}\n{p.stderr}"
    return p.stdout


def _shm_segment(session_dir):
    return "/dev/shm/rayfast-" + os.path.basename(session_dir.rstrip("/"))


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    root = tmp_path_factory.mktemp("rf-root")
    port, metrics_port = free_port(), free_port()
    p = cli(root, "start", "--head", "--port", str(port), "--num-cpus", "2",
            "--object-store-memory", "128M", "--resources", '{"foo": 3}',
            "--metrics-export-port", str(metrics_port))
    info = json.loads((root / "session_latest.json").read_text())
    info["root"] = root
    info["port"] = port
    info["metrics_port"] = metrics_port
    info["start_output"] = p.stdout
    yield info
    # Whatever happened, leave nothing running.
    cli(root, "stop", check=False)


def node_alive(info):
    return alive(info["pid"]) and os.path.exists(info["socket"])


def test_help():
    for args in (["--help"], ["start", "--help"], ["status", "--help"], ["timeline", "--help"], ["stop", "--help"]):
        p = subprocess.run([sys.executable, "-m", "rayfast.cli", *args], capture_output=True, text=True,
                           env=_env("/nonexistent"))
        assert p.returncode == 0 and "usage: rayfast" in p.stdout
    exe = shutil.which("rayfast")
    if exe:
        p = subprocess.run([exe, "--help"], capture_output=True, text=True)
        assert p.returncode == 0 and "start" in p.stdout and "timeline" in p.stdout


def test_start_head_is_detached_and_says_how_to_connect(head):
    assert node_alive(head)
    assert os.getsid(head["pid"]) == head["pid"]          # its own session: no terminal, no SIGHUP
    out = head["start_output"]
    assert f"127.0.0.1:{head['port']}" in out and "address='auto'" in out and "rayfast stop" in out
    assert head["gcs_address"] == f"127.0.0.1:{head['port']}"
    assert os.path.exists(_shm_segment(head["session_dir"]))
    # The start command has returned; the node is not its child and keeps serving.
    assert (head["root"] / "nodes" / f"{head['pid']}.json").exists()


def test_start_on_a_used_port_fails_clearly(head, tmp_path):
    p = cli(tmp_path, "start", "--head", "--port", str(head["port"]), "--num-cpus", "1", check=False)
    assert p.returncode != 0 and "already in use" in p.stderr


def test_driver_auto_runs_tasks_and_leaves_cluster_up(head):
    out = driver(head["root"], """
        import rayfast
        ctx = rayfast.init(address="auto")
        @rayfast.remote
        def f(x):
            return x * x
        @rayfast.remote
        def g(a, b):
            return a + b
        assert rayfast.get(g.remote(f.remote(3), f.remote(1))) == 10
        @rayfast.remote
        def cli_tiny():
            return None
        rayfast.get([cli_tiny.remote() for _ in range(2000)])
        print(rayfast.cluster_resources()["CPU"], rayfast.cluster_resources()["foo"], ctx["session_dir"])
        rayfast.shutdown()
    """)
    cpus, foo, sdir = out.split()
    assert float(cpus) == 2 and float(foo) == 3 and sdir == head["session_dir"]
    assert node_alive(head)


def test_driver_host_port_then_another_driver(head):
    code = """
        import numpy as np, rayfast
        rayfast.init(address="127.0.0.1:%d")
        @rayfast.remote
        def total(a):
            return float(a.sum())
        big = rayfast.put(np.ones(1_000_000))
        assert rayfast.get(total.remote(big)) == 1e6
        print(sum(rayfast.get([total.remote(np.ones(10)) for _ in range(50)])))
        rayfast.shutdown()
        assert not rayfast.is_initialized()
    """ % head["port"]
    assert driver(head["root"], code).strip() == "500.0"
    assert node_alive(head)
    # The cluster is still usable by the next driver, and a driver that just exits (no shutdown)
    # leaves it running too.
    assert driver(head["root"], code.replace("rayfast.shutdown()", "pass").replace(
        "assert not rayfast.is_initialized()", "")).strip() == "500.0"
    assert node_alive(head)


def test_metrics_on_the_port_start_was_given(head):
    code = """
        import urllib.request, time, rayfast
        from rayfast.util.metrics import Counter
        rayfast.init(address="auto")
        port = rayfast.nodes()[0]["MetricsExportPort"]
        Counter("cli_started_requests", description="from a driver of a started node").inc(3)
        rayfast.shutdown()   # (sends what it recorded)
        url = "http://127.0.0.1:%d/metrics" % port
        deadline = time.monotonic() + 10
        while "ray_cli_started_requests_total" not in (text := urllib.request.urlopen(url).read().decode()):
            assert time.monotonic() < deadline, text
            time.sleep(0.05)
        print(port, [l for l in text.splitlines() if l.startswith("ray_cli_started_requests_total")][0].split()[-1])
    """
    port, value = driver(head["root"], code).split()
    assert int(port) == head["metrics_port"] and float(value) == 3.0


def test_start_refuses_a_bad_metrics_port(tmp_path):
    p = cli(tmp_path, "start", "--head", "--metrics-export-port", "70000", check=False)
    assert p.returncode != 0 and "not a port number" in p.stderr


def test_status(head):
    driver(head["root"], """
        import time, rayfast
        rayfast.init(address="auto")
        @rayfast.remote
        def cli_sleepy(x):
            time.sleep(0.02)
            return x
        rayfast.get([cli_sleepy.remote(i) for i in range(12)])
    """)
    p = cli(head["root"], "status")
    out = p.stdout
    assert "Nodes: 1 alive" in out
    assert "CPU: 0 / 2 used" in out
    assert "foo: 0 / 3 used" in out
    assert "Object store:" in out and "128.0 MiB" in out
    assert "Queues: 0 ready tasks queued" in out
    lines = out.splitlines()
    tiny = next(ln for ln in lines if "cli_tiny" in ln and "2,000" in ln)
    assert "too small" in tiny
    sleepy = next(ln for ln in lines if "cli_sleepy" in ln)
    assert "too small" not in sleepy and " 12 " in sleepy
    assert "WARNING" in out and "larger granularity" in out and "batch about" in out
    js = json.loads(cli(head["root"], "status", "--json").stdout)
    assert js["cpus"]["total"] == 2
    assert any(k.endswith("cli_tiny") and v["granularity_warning"] for k, v in js["functions"].items())
    # The same by the GCS address.
    p = cli(head["root"], "status", "--address", f"127.0.0.1:{head['port']}")
    assert "Nodes: 1 alive" in p.stdout


def test_timeline_cli(head, tmp_path):
    out = tmp_path / "trace.json"
    p = cli(head["root"], "timeline", "--output", str(out))
    assert str(out) in p.stdout
    events = json.loads(out.read_text())
    spans = [e for e in events if e["ph"] == "X"]
    for e in spans:
        assert e["cat"] == "task" and isinstance(e["ts"], (int, float)) and e["dur"] >= 0
        assert isinstance(e["pid"], int) and isinstance(e["tid"], int) and len(e["args"]["task_id"]) == 32
    assert sum(1 for e in spans if e["name"].endswith("cli_tiny")) == 2000
    assert len({e["args"]["task_id"] for e in spans}) == len(spans)


def test_connect_errors(tmp_path):
    out = run_driver("""
        import os, rayfast
        os.environ["RAYFAST_SESSION_ROOT"] = %r
        for addr in ("auto", "127.0.0.1:%d"):
            try:
                rayfast.init(address=addr)
            except ConnectionError as e:
                print("ConnectionError", "rayfast start --head" in str(e))
        try:
            rayfast.init(address="nonsense")
        except ValueError as e:
            print("ValueError")
        try:
            rayfast.init(address="auto", num_cpus=4)
        except ValueError as e:
            print("ValueError", "num_cpus" in str(e))
    """ % (str(tmp_path), free_port()))
    assert out.stdout.split("\n")[:4] == ["ConnectionError True", "ConnectionError True", "ValueError",
                                          "ValueError True"], out
    p = cli(tmp_path, "status", check=False)
    assert p.returncode == 1 and "rayfast start --head" in p.stderr


def test_stop_leaves_nothing(head):
    procs = descendants(head["pid"]) + [head["pid"]]
    assert len(procs) >= 1 + 2 + 2       # node, 2 GCS shards, 2 workers
    p = cli(head["root"], "stop")
    assert "Stopped rayfast head node" in p.stdout
    assert wait_for(lambda: not any(alive(x) for x in procs), timeout=5), [x for x in procs if alive(x)]
    assert not os.path.exists(head["session_dir"])
    assert not os.path.exists(_shm_segment(head["session_dir"]))
    assert not os.path.exists(head["root"] / "session_latest.json")
    assert not os.path.exists(head["root"] / "nodes")
    assert not os.path.exists(head["log"])
    p = cli(head["root"], "stop")
    assert "No running rayfast nodes" in p.stdout
