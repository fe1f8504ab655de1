"""Starting, tracking and stopping a node's worker processes.

Workers are forked from the node manager, which has already imported
numpy, cloudpickle and rayfast: a new worker is ready in milliseconds. Each
gets one end of a socketpair as its channel; the child closes every other
inherited descriptor and asks the kernel to kill it if the node manager
dies, so a crashed node manager never leaves workers behind.
"""
import collections
import ctypes
import gc
import os
import signal
import socket
import warnings

_PR_SET_PDEATHSIG = 1
IDLE, BUSY, ACTOR, DEAD, LEASED = "idle", "busy", "actor", "dead", "leased"


def set_pdeathsig(sig=signal.SIGKILL):
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def kill_children(parents, sig=signal.SIGKILL):
    """Send sig to the direct children of the processes `parents` (pids): what a worker's tasks
    started and left running. Ray's workers kill theirs when they exit
    (RAY_kill_child_processes_on_worker_exit, on by default). One pass over /proc."""
    parents = set(parents)
    try:
        names = os.listdir("/proc")
    except OSError:
        return
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid in parents:
            try:
                os.kill(int(name), sig)
            except OSError:
                pass


class WorkerState:
    __slots__ = ("worker_id", "pid", "client", "state", "task", "functions", "blocked", "pipeline", "shape",
                 "actor_id", "started", "calls", "retiring")

    def __init__(self, worker_id, pid):
        self.worker_id = worker_id
        self.pid = pid
        self.client = None
        self.state = IDLE
        self.task = None
        self.functions = set()
        self.blocked = False
        self.actor_id = None
        self.started = False
        self.pipeline = collections.deque()   # tasks sent to it, in order; [0] is running
        self.shape = ()                       # the resources its current run of tasks holds
        self.calls = None                     # function id -> runs, for functions with max_calls
        self.retiring = False                 # max_calls reached: no more tasks; exits when idle


class WorkerPool:
    def __init__(self, store_name, node_info, keep_fds=()):
        self.store_name = store_name
        self.node_info = node_info
        self.workers = {}          # worker_id -> WorkerState
        self.by_pid = {}
        self._next_id = 0
        self.started_total = 0
        self.died_total = 0

    def spawn(self, close_fds):
        """Fork a worker; returns (WorkerState, parent-side socket)."""
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._next_id += 1
        worker_id = self._next_id
        # The child's collector must not walk the node manager's objects it inherits
        # (its tables grow with the session): that costs time in every new worker and
        # copies every page it touches. Frozen objects are left alone; the parent's
        # own collections see them again right after the fork.
        gc.freeze()
        pid = -1
        try:
            with warnings.catch_warnings():
                # Python >= 3.12 warns about fork() with threads running; ours (the
                # store warm-up) hold no locks the child could need.
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
        finally:
            if pid != 0:
                gc.unfreeze()
        if pid == 0:  # child
            try:
                set_pdeathsig()
                gc.enable()   # the node manager's loop collects cycles itself (NodeManager.run); user code needs it
                parent.close()
                for fd in close_fds():
                    try:
                        os.close(fd)
                    except OSError:
                        pass
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                from rayfast.node.worker import worker_main
                worker_main(child.detach(), worker_id, self.store_name, self.node_info)
            finally:
                os._exit(1)
        child.close()
        w = WorkerState(worker_id, pid)
        self.workers[worker_id] = w
        self.by_pid[pid] = w
        self.started_total += 1
        return w, parent

    def remove(self, w):
        w.state = DEAD
        self.workers.pop(w.worker_id, None)
        self.by_pid.pop(w.pid, None)
        self.died_total += 1

    def reap(self):
        """Collect exited children without blocking."""
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return

    def kill(self, w, sig=signal.SIGKILL):
        try:
            os.kill(w.pid, sig)
        except ProcessLookupError:
            pass

    def statistics(self):
        states = {}
        for w in self.workers.values():
            states[w.state] = states.get(w.state, 0) + 1
        return {"workers": len(self.workers), "states": states, "started_total": self.started_total,
                "died_total": self.died_total}
