"""Long-lived nodes started by `rayfast start`, and drivers that connect to them.

`rayfast start --head` runs a node manager (with the GCS shards) detached
from the terminal. Each such node is recorded in a file under the session
root (`/tmp/rayfast_clusters` unless `RAYFAST_SESSION_ROOT` says otherwise; not `/tmp/rayfast`,
which `import rayfast` run from /tmp would take for the package):

    <root>/nodes/<pid>.json     one per node started by `rayfast start`
    <root>/session_latest.json  the last head node started: what address="auto" finds

A node started this way has no owner: drivers connect with `owner=False`
and leave it running when they disconnect. Only `rayfast stop` (SIGTERM to
the node, which then stops its workers and shards and removes its segment
and session directory) ends it.
"""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time

DEFAULT_PORT = 6380
_SHARDS_KEY = "rayfast:gcs_shards"


# --- where things are -------------------------------------------------------
def session_root():
    return os.environ.get("RAYFAST_SESSION_ROOT") or os.path.join(tempfile.gettempdir(), "rayfast_clusters")


def _nodes_dir(root=None):
    return os.path.join(root or session_root(), "nodes")


def latest_session_file(root=None):
    return os.path.join(root or session_root(), "session_latest.json")


def _write_json(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _is_our_node(info):
    """The pid in the record is still that node manager (not a recycled pid)."""
    pid = info.get("pid")
    if not isinstance(pid, int) or not _pid_alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().split(b"\0")
    except OSError:
        return True  # no /proc: trust the pid
    return b"rayfast.node.main" in cmd and info.get("session_dir", "").encode() in cmd


def started_nodes(root=None):
    """Records of the nodes `rayfast start` started on this machine (alive or not; those
    recorded under root if given)."""
    out = []
    nodes_dir = _nodes_dir(root)
    try:
        names = sorted(os.listdir(nodes_dir))
    except OSError:
        return out
    for name in names:
        if name.endswith(".json"):
            info = _read_json(os.path.join(nodes_dir, name))
            if isinstance(info, dict):
                info["_record"] = os.path.join(nodes_dir, name)
                out.append(info)
    return out


def live_session():
    """The session record of the running head that address="auto" means, or None."""
    info = _read_json(latest_session_file())
    if isinstance(info, dict) and _is_our_node(info) and os.path.exists(info.get("socket", "")):
        return info
    for info in reversed(started_nodes()):  # the latest file is stale: any live head will do
        if info.get("head") and _is_our_node(info) and os.path.exists(info.get("socket", "")):
            return info
    return None


# --- starting and stopping ----------------------------------------------------
def _port_free(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def parse_host_port(address):
    host, sep, port = str(address).strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected an address of the form HOST:PORT, got {address!r}")
    return host, int(port)


def start_node(*, head=True, address=None, num_cpus=None, resources=None, object_store_memory=None,
               port=DEFAULT_PORT, gcs_shards=None, timeout=None, labels=None, root=None, sys_path=False,
               metrics_export_port=0):
    """Start a detached node manager; returns its session record (also written to disk, under
    root: the session root unless given; cluster_utils gives one of its own, so that its nodes
    are not what `init()` or `rayfast stop` find). sys_path: its workers import what this process
    can (a test's own modules), as those of an `init()` node do."""
    from rayfast.config import DEFAULT_GCS_SHARDS
    from rayfast.session import (_package_root, _remove_leftovers, default_object_store_memory, read_start_line,
                                 start_error)

    if num_cpus is None:
        num_cpus = os.cpu_count() or 1
    if object_store_memory is None:
        object_store_memory = default_object_store_memory()
    gcs_shards = gcs_shards or DEFAULT_GCS_SHARDS
    if head:
        if port and not _port_free("127.0.0.1", port):
            raise RuntimeError(f"port {port} is already in use (another rayfast head, or a Redis/Valkey "
                               f"server?); choose another with --port")
        gcs_unix = None
    else:
        if address is None:
            info = live_session()
            if info is None:
                raise ConnectionError("no head node to join: give --address=HOST:PORT, or start one "
                                      "with `rayfast start --head`")
            address = info["gcs_address"]
        gcs_unix = ",".join(_shard_addresses(address))
    root = root or session_root()
    os.makedirs(_nodes_dir(root), exist_ok=True)
    session_dir = tempfile.mkdtemp(prefix="rayfast-")
    spill_dir = os.path.join(session_dir, "spill")
    os.makedirs(spill_dir, exist_ok=True)
    log_path = os.path.join(root, f"node-{os.path.basename(session_dir)}.log")
    cmd = [sys.executable, "-m", "rayfast.node.main", "--session-dir", session_dir,
           "--num-cpus", str(int(num_cpus)), "--resources", json.dumps(resources or {}),
           "--object-store-memory", str(int(object_store_memory)), "--spill-dir", spill_dir,
           "--gcs-shards", str(gcs_shards), "--labels", json.dumps(labels or {}), "--remove-session-dir",
           "--metrics-export-port", str(int(metrics_export_port))]
    if head:
        cmd += ["--head", "--gcs-port", str(int(port or 0))]
    else:
        cmd += ["--gcs-address", gcs_unix]
    r, w = os.pipe()
    cmd += ["--ready-fd", str(w)]
    env = dict(os.environ)
    path = [_package_root(), os.getcwd()] + [p for p in (sys.path if sys_path else []) if p] + \
        [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(path))
    with open(log_path, "ab") as log:
        # A session of its own: no terminal, no SIGINT/SIGHUP from it, nothing that dies with us.
        proc = subprocess.Popen(cmd, pass_fds=(w,), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                env=env, cwd=os.getcwd(), start_new_session=True)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        line = read_start_line(f) if timeout is None else read_start_line(f, timeout)
    if line != b"ready\n":
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        err = ""
        try:
            with open(log_path) as fh:
                err = fh.read()[-4000:].strip()
        except OSError:
            pass
        _remove_leftovers(session_dir)
        _unlink(log_path)
        raise start_error(line, proc.returncode, err)
    gcs_file = _read_json(os.path.join(session_dir, "gcs_addresses")) or {}
    tcp = gcs_file.get("tcp") or ([address] if address else [])
    info = {"pid": proc.pid, "head": bool(head), "session_dir": session_dir,
            "socket": os.path.join(session_dir, "node.sock"),
            "gcs_address": tcp[0] if tcp else address, "gcs_tcp_addresses": tcp,
            "gcs_addresses": gcs_file.get("unix") or (gcs_unix.split(",") if gcs_unix else []),
            "num_cpus": int(num_cpus), "resources": resources or {},
            "object_store_memory": int(object_store_memory), "log": log_path, "started": time.time()}
    _write_json(os.path.join(_nodes_dir(root), f"{proc.pid}.json"), info)
    if head:
        _write_json(latest_session_file(root), info)
    info["_record"] = os.path.join(_nodes_dir(root), f"{proc.pid}.json")
    return info


def _unlink(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def stop_nodes(timeout=10.0, out=None, force=False, records=None, root=None):
    """Stop every node `rayfast start` started on this machine (or those of `records`, recorded
    under root); returns how many were running. force: SIGKILL at once (`ray stop --force`)
    instead of letting each node clean up after SIGTERM; what it leaves is removed here either way."""
    from rayfast.session import _remove_leftovers

    records = started_nodes() if records is None else records
    # Worker nodes first, heads (and their GCS) last.
    records.sort(key=lambda i: bool(i.get("head")))
    stopped = 0
    alive = {}
    for info in records:
        pid = info.get("pid")
        alive[pid] = _is_our_node(info)
        if alive[pid]:
            try:
                os.kill(pid, signal.SIGKILL if force else signal.SIGTERM)
            except ProcessLookupError:
                alive[pid] = False
    deadline = time.monotonic() + timeout
    for info in records:
        pid = info.get("pid")
        if not isinstance(pid, int):
            continue
        if alive.get(pid):
            stopped += 1
        while alive.get(pid) and _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if _pid_alive(pid) and _is_our_node(info):
            if out:
                print(f"node {pid} did not stop within {timeout:.0f} s: killing it", file=out)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            while _pid_alive(pid):
                time.sleep(0.01)
        # Its workers and GCS shards die with it (parent-death signal); anything left in its
        # process group (the session it was started in) goes now.
        if alive.get(pid):
            _kill_group(pid)
        session_dir = info.get("session_dir")
        if session_dir:
            _remove_leftovers(session_dir)
        _unlink(info.get("log", ""))
        _unlink(info["_record"])
        if out and alive.get(pid):
            print(f"Stopped rayfast {'head' if info.get('head') else 'worker'} node (pid {pid}, "
                  f"session {session_dir}).", file=out)
    root = root or session_root()
    latest = _read_json(latest_session_file(root))
    if latest is None or not _is_our_node(latest):
        _unlink(latest_session_file(root))
    for d in (_nodes_dir(root), root):
        try:
            os.rmdir(d)
        except OSError:
            pass
    return stopped


def wait_for_node(info):
    """Block until the node of record `info` has exited (`rayfast start --block`)."""
    pid = info["pid"]
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except OSError:   # no pidfd (old kernel)
        while _pid_alive(pid):
            time.sleep(0.5)
        return
    try:
        select.select([fd], [], [])
    finally:
        os.close(fd)


def _group_members(pgid):
    """Live (non-zombie) processes in process group pgid."""
    out = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            out.append(int(name))
    return out


def _kill_group(pgid):
    """Kill what is left of a node's process group (its session): stragglers only, by pid."""
    end = time.monotonic() + 2.0
    while True:
        pids = _group_members(pgid)
        if not pids or time.monotonic() > end:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.01)


# --- connecting ------------------------------------------------------------------
def _shard_addresses(address, timeout=2.0):
    """All GCS shard addresses of the cluster whose shard 0 listens on address (HOST:PORT)."""
    from rayfast.gcs.client import GcsClient

    host, port = parse_host_port(address)
    client = None
    try:
        client = GcsClient([f"{host}:{port}"], timeout=timeout, connect_timeout=timeout,
                           background_flush=False)
        raw = client.execute(0, "GET", _SHARDS_KEY)
    except Exception as e:
        raise ConnectionError(f"could not reach a rayfast cluster at {host}:{port} ({e}); is one "
                              f"running? Start one with `rayfast start --head --port {port}`.") from None
    finally:
        if client is not None:
            try:
                client.close()
            except Exception:
                pass
    if not raw:
        raise ConnectionError(f"{host}:{port} answers like a Redis/Valkey server but is not the GCS of a "
                              f"rayfast cluster (no {_SHARDS_KEY} key)")
    return json.loads(raw)


def find_local_node(address):
    """Socket path of a live node of the cluster at address (HOST:PORT) that runs on this machine."""
    from rayfast.gcs.tables import Gcs, read_once

    shards = _shard_addresses(address)
    try:
        nodes = read_once(shards, Gcs.get_nodes, timeout=5.0, connect_timeout=2.0)
    except Exception as e:
        raise ConnectionError(f"could not read the node table of the cluster at {address}: {e}") from None
    candidates = []
    for n in nodes:
        sdir = n.get("session_dir")
        if not n.get("alive") or not sdir:
            continue
        sock = os.path.join(sdir, "node.sock")
        pid = n.get("pid")
        if os.path.exists(sock) and (not isinstance(pid, int) or _pid_alive(pid)):
            candidates.append((not n.get("head"), n.get("last_heartbeat") or 0.0, sock))
    if not candidates:
        raise ConnectionError(f"the rayfast cluster at {address} has no live node on this machine to "
                              f"connect a driver to; start one with `rayfast start --address={address}`")
    candidates.sort(key=lambda c: (c[0], -c[1]))
    return candidates[0][2]


def connect_driver(address):
    """Connect this process as a driver (not owner) to a running cluster: (None, conn, info).

    address: "auto" (the latest `rayfast start` head on this machine), "HOST:PORT" (the head's GCS
    address), or the path of a node's socket.
    """
    from rayfast.api import _hello

    if address == "auto":
        env = os.environ.get("RAYFAST_ADDRESS")
        if env and env != "auto":
            return connect_driver(env)
        info = live_session()
        if info is None:
            raise ConnectionError("Could not find a running rayfast cluster on this machine (no live "
                                  f"session in {session_root()}). Start one with `rayfast start --head`, "
                                  "or call rayfast.init() without an address to start a local one.")
        sock = info["socket"]
    elif isinstance(address, str) and address.startswith("/") and os.path.exists(address):
        sock = address
    else:
        if not isinstance(address, str):
            raise TypeError(f"address must be a string such as 'auto' or 'HOST:PORT', got {address!r}")
        try:
            parse_host_port(address)
        except ValueError as e:
            raise ValueError(f"{e}; use address='auto' or the head's GCS address, e.g. "
                             f"'127.0.0.1:{DEFAULT_PORT}'") from None
        sock = find_local_node(address)
    try:
        conn, info = _hello(sock, owner=False)
    except (OSError, RuntimeError) as e:
        raise ConnectionError(f"could not connect to the rayfast node at {sock}: {e}") from None
    return None, conn, info


class NodeClient:
    """A light connection to a node for the CLI: requests only, no object store, no ownership."""

    def __init__(self, socket_path, timeout=10.0, owner=False):
        """owner: the node stops when this connection closes, as an `init()` node with its driver
        (cluster_utils holds one per node, so its nodes end with the process that made them)."""
        from rayfast import protocol as P

        self._P = P
        self.timeout = timeout
        try:
            self.conn = P.connect(socket_path)
        except OSError as e:
            raise ConnectionError(f"could not connect to the rayfast node at {socket_path}: {e}") from None
        self._send((P.HELLO, "cli", os.getpid(), None, bool(owner)))
        self.info = self._wait(lambda m: m[0] == P.WELCOME)[1]
        self._next = 0

    _CLOSED = "the rayfast node closed the connection (was it stopped?)"

    def _send(self, msg):
        # A node that closed first shows up as EPIPE/ECONNRESET on the write, not on the read.
        try:
            self.conn.send(msg)
            self.conn.flush()
        except (BrokenPipeError, ConnectionResetError, self._P.ConnectionClosed):
            raise ConnectionError(self._CLOSED) from None

    def _wait(self, pred):
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            try:
                msgs = self.conn.recv(max(0.0, deadline - time.monotonic()))
            except (self._P.ConnectionClosed, ConnectionResetError):
                raise ConnectionError(self._CLOSED) from None
            for m in msgs:
                if pred(m):
                    return m
        raise TimeoutError(f"the rayfast node did not answer within {self.timeout:.0f} s")

    def request(self, what, *args):
        P = self._P
        self._next += 1
        rid = self._next
        self._send((P.REQUEST, rid, what, args))
        value = self._wait(lambda m: m[0] == P.REPLY and m[1] == rid)[2]
        if isinstance(value, BaseException):
            raise value
        return value

    def close(self):
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def connect_cli(address=None):
    """A NodeClient for `rayfast status` / `rayfast timeline`."""
    if address in (None, "auto"):
        info = live_session()
        if info is None:
            raise ConnectionError("No running rayfast cluster found on this machine. Start one with "
                                  "`rayfast start --head`.")
        return NodeClient(info["socket"])
    if address.startswith("/"):
        return NodeClient(address)
    return NodeClient(find_local_node(address))
