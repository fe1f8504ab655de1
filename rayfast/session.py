"""Starting a local node from a driver, and finding the pieces of a session on disk.

`init()` forks nothing from the user's process: it starts the node manager
with a fresh interpreter (`python -m rayfast.node.main`) and blocks on a
pipe until the node says it is serving. The node lives exactly as long as
the driver's connection to it: when the driver exits or is killed, the
kernel closes the socket, and the node stops its workers and GCS shards and
removes its shared memory and session files.
"""
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile

from rayfast.config import OBJECT_STORE_MEMORY_FRACTION

START_TIMEOUT = 60.0   # a node that has not said it is ready by then is taken for hung


def default_object_store_memory():
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        total = 8 << 30
    want = max(int(total * OBJECT_STORE_MEMORY_FRACTION), 64 << 20)
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return want
    # Never more than /dev/shm can hold, even below the 64 MiB floor: a container's /dev/shm is
    # often 64 MB, and a smaller store beats an init() that fails.
    return min(want, int(st.f_bavail * st.f_frsize * 0.8))


class LocalNode:
    def __init__(self, proc, session_dir, socket_path, spill_dir=""):
        self.proc = proc
        self.session_dir = session_dir
        self.socket_path = socket_path
        self.spill_dir = spill_dir   # this session's spill directory (it may be outside session_dir)

    def stop(self, timeout=10.0):
        """Wait for the node to finish its own cleanup; make sure of it if it doesn't."""
        proc = self.proc
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        _remove_leftovers(self.session_dir)
        if self.spill_dir:   # (a killed node leaves its spilled objects there)
            shutil.rmtree(self.spill_dir, ignore_errors=True)


def _remove_leftovers(session_dir):
    """After a node died without cleaning up: its segment and files."""
    name = "rayfast-" + os.path.basename(session_dir.rstrip("/"))
    try:
        os.unlink(os.path.join("/dev/shm", name))
    except OSError:
        pass
    shutil.rmtree(session_dir, ignore_errors=True)


def start_local_node(num_cpus, resources, object_store_memory, spill_dir, gcs_shards, temp_dir=None,
                     log_to_driver=True, labels=None, metrics_export_port=0):
    """spill_dir: None = inside the session dir; False = spilling off; a path =
    a directory of this session's own below it (only that is removed at the end).
    log_to_driver=False: the node's and its workers' output goes to <session_dir>/logs/, not
    to the driver's stdout/stderr (Ray's init(log_to_driver=False))."""
    if temp_dir:
        os.makedirs(temp_dir, exist_ok=True)   # (as Ray's _temp_dir: made if missing, kept after)
    session_dir = tempfile.mkdtemp(prefix="rayfast-", dir=temp_dir)
    # The node's and workers' Unix sockets live in it ("w<id>.sock"; 107 bytes at most a path).
    if len(os.path.join(session_dir, "w1000000.sock").encode()) > 107:
        os.rmdir(session_dir)
        raise ValueError(f"_temp_dir={temp_dir!r} is too long: the session's Unix socket paths below it "
                         f"would pass the system's 107-byte limit; give a shorter directory")
    if spill_dir is None:
        spill_dir = os.path.join(session_dir, "spill")
    elif spill_dir is False:
        spill_dir = ""
    else:
        spill_dir = os.path.join(os.path.abspath(spill_dir), os.path.basename(session_dir))
    if spill_dir:
        os.makedirs(spill_dir, exist_ok=True)
    r, w = os.pipe()
    cmd = [sys.executable, "-m", "rayfast.node.main", "--session-dir", session_dir,
           "--num-cpus", str(num_cpus), "--resources", json.dumps(resources or {}),
           "--object-store-memory", str(object_store_memory), "--spill-dir", spill_dir,
           "--gcs-shards", str(gcs_shards), "--head", "--remove-session-dir", "--ready-fd", str(w),
           "--labels", json.dumps(labels or {}), "--metrics-export-port", str(metrics_export_port)]
    env = dict(os.environ)
    # Workers unpickle functions by reference to the driver's modules: give them its path.
    path = [_package_root()] + [p or os.getcwd() for p in sys.path]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in path if p))
    out = None
    if not log_to_driver:
        os.makedirs(os.path.join(session_dir, "logs"))
        out = open(os.path.join(session_dir, "logs", "node.out"), "wb")
    try:
        # A session of its own: a Ctrl-C at the driver's terminal goes to the terminal's process
        # group, and must interrupt the driver only, not stop the node and cancel its tasks (Ray
        # blocks SIGINT in its processes for the same reason). The node still ends with the
        # driver's connection.
        proc = subprocess.Popen(cmd, pass_fds=(w,), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                env=env, cwd=os.getcwd(), start_new_session=True)
    finally:
        if out is not None:
            out.close()
    os.close(w)
    node = LocalNode(proc, session_dir, os.path.join(session_dir, "node.sock"), spill_dir)
    f = os.fdopen(r, "rb")
    try:
        line = read_start_line(f)
    except BaseException:   # (a Ctrl-C while it starts: it is in a session of its own)
        node.stop(timeout=0)
        raise
    finally:
        f.close()
    if line != b"ready\n":
        node.stop(timeout=0 if line is None else 10.0)
        raise start_error(line, proc.returncode)
    return node


def read_start_line(f, timeout=START_TIMEOUT):
    """The line a starting node writes on its ready pipe f (node/launch.py): b"ready\\n", why it
    could not start, b"" if it died first, or None if it said nothing within timeout (hung)."""
    if not select.select([f], [], [], timeout)[0]:
        return None
    return f.readline()


def start_error(line, returncode, output=""):
    """The exception for a node that did not start, from the line it wrote on its ready pipe
    ("invalid ...": a value the caller gave, "error ...": anything else; see node/launch.py)."""
    if line is None:
        return RuntimeError("rayfast could not start its node: it did not get ready in time (hung?)")
    kind, _, message = line.decode(errors="replace").strip().partition(" ")
    if kind == "invalid":
        return ValueError(message)
    return RuntimeError("rayfast could not start its node: " + (message or output or f"exit code {returncode}"))


def _package_root():
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
