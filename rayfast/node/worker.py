"""A worker process: receives tasks from its node manager and runs them one at a time.

Workers are forked by the node manager after it has imported everything a
worker needs, so starting one costs a fork, not an interpreter start.
"""
import collections
import contextlib
import os
import signal
import socket
import sys
import time
import types

from rayfast import protocol as P
from rayfast import runtime_env
from rayfast import serialization
from rayfast._core.ids import TaskID
from rayfast.config import INLINE_THRESHOLD
from rayfast.direct import WorkerChannels, failed_results, worker_socket_path
from rayfast.node.worker_pool import kill_children
from rayfast.core_worker import CoreWorker, decode_value, format_exception, set_current
from rayfast.exceptions import PortableCause, RayTaskError, TaskCancelledError, TaskUnschedulableError


# A task's DONE waits to share a frame with the next queued task's when that task's function has
# run briefly here on average (BRIEF_RUN), for HOLD_MAX at most: a run of queued tiny tasks costs
# one send, and no wakeup of the flush timer thread (a context switch or two per batch).
BRIEF_RUN = 0.0005
HOLD_MAX = 0.0002


class TaskExecutor:
    """Runs normal tasks; actor tasks are delegated to an ActorExecutor once one exists."""

    def __init__(self, cw):
        self.cw = cw
        self.functions = {}
        self.actor = None
        # Results of the last PIPELINE_DEPTH tasks, for tasks queued behind them that read
        # them (LOCAL arguments, see rayfast/node/manager.py _pipeline_dependents).
        self.recent = {}
        self.recent_order = collections.deque()
        self.runs = {}              # function id -> [tasks, total run time] of normal tasks run here
        self.held_since = None      # when the oldest DONE not sent yet was made

    def function(self, spec, pickled):
        fid = spec[P.S_FUNCTION_ID]
        if pickled is None and fid not in self.functions:
            pickled = self.cw.spare_functions.get(fid)
        if pickled is not None:
            self.functions[fid] = serialization.loads_inline(pickled)
            self.cw.spare_functions.pop(fid, None)   # (kept until loaded: see execute)
        return self.functions[fid]

    def resolve_args(self, spec, resolved):
        """The (args, kwargs) of a task with its top-level refs replaced by their values
        (resolved: a sequence of (oid, kind, data, ...))."""
        args, kwargs = serialization.loads_inline(spec[P.S_PAYLOAD])
        arg_refs = spec[P.S_ARG_REFS]
        if arg_refs:
            values = {r[0]: r for r in resolved}
            store = self.cw.store
            for pos, oid in arg_refs:
                r = values[oid]
                v = decode_value(store, oid, r[1], r[2])
                if type(pos) is int:
                    args[pos] = v
                else:
                    kwargs[pos] = v
        return args, kwargs

    def local_args(self, resolved):
        """resolved with LOCAL arguments filled in from recent results (their result tuples);
        None if one is gone."""
        recent = self.recent
        out = []
        for r in resolved:
            if r[1] == P.LOCAL:
                r = recent.get(r[0])
                if r is None:
                    return None
            out.append(r)
        return out

    def keep_recent(self, results):
        recent = self.recent
        order = self.recent_order
        order.append(results)
        for r in results:
            recent[r[0]] = r
        if len(order) > P.PIPELINE_DEPTH:
            for r in order.popleft():
                recent.pop(r[0], None)

    def execute(self, msg):
        _, handle, spec, resolved, pickled = msg[:5]
        reply = msg[5] if len(msg) > 5 else None   # a leasing driver's channel
        cw = self.cw
        if reply is None and resolved and spec[P.S_KIND] == P.TASK_NORMAL:
            resolved = self.local_args(resolved)
            if resolved is None:
                # queued behind a task that did not run here (handed back): the node re-files it
                cw._keep_function(msg)
                cw.send((P.RETURN, (handle,)))
                return
            for r in resolved:
                if r[1] == P.ERROR:   # an argument failed: so does this task, as the node would fail it
                    results = failed_results(spec, r[2])
                    self.keep_recent(results)
                    self.send_done(handle, results, time.time(), time.time(), None)
                    return
        cw.current_task_id = TaskID(spec[P.S_TASK_ID])
        cw.current_spec = spec
        cw._task_counter = 0
        cw._put_counter = 0
        start = time.time()
        if pickled is not None:
            # This worker's only copy of the function: a cancel's SIGINT may interrupt the task
            # before the copy is loaded, and the sender will not send it again.
            cw._keep_function(msg)
        cw.in_task = True
        try:
            if cw.interrupted:
                # A SIGINT came while no task ran here: cancel() sends it after a CANCEL_CALL naming
                # the task, so that message has arrived; read it in case it names this one.
                cw.interrupted = False
                cw.poll()
            if spec[P.S_TASK_ID] in cw.cancelled:   # cancel() reached it before it started
                raise KeyboardInterrupt("task cancelled")
            if spec[P.S_KIND] == P.TASK_NORMAL:
                fn = self.function(spec, pickled)
                if spec[P.S_OPTIONS]:
                    results = self.run_with_options(spec, fn, resolved)
                else:
                    args, kwargs = self.resolve_args(spec, resolved)
                    results = self.pack_results(spec, fn(*args, **kwargs))
            else:
                results = self.pack_results(spec, self.actor_call(spec, resolved, pickled))
        except BaseException as e:  # KeyboardInterrupt too: that is how cancel() reaches a task
            cw.in_task = False   # (a second cancel's SIGINT must not interrupt the error's making)
            if isinstance(e, SystemExit):
                raise   # the worker exits, as Ray's does: the task fails with WorkerCrashedError
            results = self.error_results(spec, e)
        finally:
            cw.in_task = False
            cw.cancelled.pop(spec[P.S_TASK_ID], None)
        # Drop the task's values now: refs in them are released with this flush, not the next task's.
        args = kwargs = None
        end = time.time()
        hold = False
        if reply is None and spec[P.S_KIND] == P.TASK_NORMAL:
            self.keep_recent(results)
            run = self.runs.get(spec[P.S_FUNCTION_ID])
            if run is None:
                self.runs[spec[P.S_FUNCTION_ID]] = [1, end - start]
            else:
                run[0] += 1
                run[1] += end - start
            hold = self.next_is_brief(end)
        self.send_done(handle, results, start, end, reply, hold)

    def next_is_brief(self, now):
        """Whether the next queued task is a normal one of a function that ran briefly here, and
        the DONEs held so far have not waited HOLD_MAX yet."""
        held = self.held_since
        if held is not None and now - held > HOLD_MAX:
            return False
        inbox = self.cw._inbox
        if not inbox:
            return False
        m = inbox[0]
        if m[0] != P.TASK or len(m) != 5 or m[2][P.S_KIND] != P.TASK_NORMAL:
            return False
        run = self.runs.get(m[2][P.S_FUNCTION_ID])
        return run is not None and run[1] < BRIEF_RUN * run[0]

    def send_done(self, handle, results, start, end, reply, hold=False):
        cw = self.cw
        done = (P.DONE, handle, results, start, end)
        if hold:
            with cw._send_lock:
                cw.conn._out.append(done)
            if self.held_since is None:
                self.held_since = end
            return
        self.held_since = None
        if reply is not None:
            # Refs inside the results are pinned at the node before this worker's
            # own refs to them are released there (same socket, in order); the
            # driver's record of the task (DIRECT_DONE) then takes the pins over.
            # The releases leave before the reply, as they would in the frame of a
            # DONE to the node: an object the task made and dropped (one whose ref it
            # pickled itself, say) is gone before the driver can ask for it.
            contained = tuple(c for r in results for c in r[3])
            if contained:
                cw.conn.send((P.PIN, contained))
            cw.flush()
            if cw.channels.reply(reply, done):
                cw._arm_timer(0.001)   # the socket is full: the flush timer pushes the rest
        elif cw._inbox:
            cw.send_batched(done)   # more queued here: let the results of a run share a frame
        else:
            cw.send(done)

    def run_with_options(self, spec, fn, resolved):
        """A task with extras: run in its runtime_env (which the calls it makes inherit), on the
        GPUs the node gave it and, if it captures them, with its calls put in its placement group;
        retried on application errors if it says so; its results packed there too (a generator
        runs then)."""
        opts = spec[P.S_OPTIONS]
        if "unschedulable" in opts:   # e.g. hard node affinity to a node this cluster does not have
            raise TaskUnschedulableError(opts["unschedulable"])
        env = opts.get("runtime_env")
        gpu_ids = opts.get("gpu_ids")
        capture = opts.get("capture_pg")
        if env is None and gpu_ids is None and capture is None:
            return self.pack_results(spec, self.run_with_retries(spec, fn, resolved))
        cw = self.cw
        with contextlib.ExitStack() as undo:
            if capture is not None:   # its calls go into its placement group (scheduling.captured)
                undo.callback(setattr, cw, "capture_pg", cw.capture_pg)
                cw.capture_pg = capture
            if env is not None:
                undo.callback(setattr, cw, "runtime_env", cw.runtime_env)
                cw.runtime_env = env
                undo.enter_context(runtime_env.applied(env))
            if gpu_ids is not None:   # not inherited: a nested task gets GPUs of its own
                undo.callback(setattr, cw, "gpu_ids", cw.gpu_ids)
                cw.gpu_ids = gpu_ids
                visible = ",".join(str(i) for i in gpu_ids)
                undo.enter_context(runtime_env.applied({"env_vars": {"CUDA_VISIBLE_DEVICES": visible}}))
            return self.pack_results(spec, self.run_with_retries(spec, fn, resolved))

    def run_with_retries(self, spec, fn, resolved, left=None):
        """Run a task whose application errors are retried (Ray's retry_exceptions), up to max_retries
        (left: the number of retries when the spec does not say, as for actor calls).

        Retries run here, in the same worker, each with freshly decoded arguments."""
        rx = spec[P.S_OPTIONS].get("retry_exceptions")
        if isinstance(rx, bytes):
            rx = serialization.loads_inline(rx)
        if spec[P.S_MAX_RETRIES] is not None:
            left = spec[P.S_MAX_RETRIES]
        while True:
            args, kwargs = self.resolve_args(spec, resolved)
            try:
                return fn(*args, **kwargs)
            except Exception as e:
                if left == 0 or not rx or (rx is not True and not isinstance(e, rx)):
                    raise
                if left > 0:
                    left -= 1
            finally:
                args = kwargs = None

    def actor_call(self, spec, resolved, pickled):
        raise NotImplementedError("actor tasks need rayfast.actor")

    def pack_results(self, spec, out):
        n = spec[P.S_NUM_RETURNS]
        if type(out) is types.GeneratorType:
            if n == 1 and spec[P.S_OPTIONS] and spec[P.S_OPTIONS].get("generator"):
                from rayfast.generator import run_generator
                out = run_generator(self.cw, spec, out, lambda e: self.error_data(spec, e))
            elif n > 1:
                return self.pack_yielded(spec, out, n)
            elif n == 1:   # num_returns=1 given: its one value (Ray's rule: the first, warning if more)
                items = tuple(out)
                if not items:
                    raise ValueError(f"Task {spec[P.S_NAME]} is a generator with num_returns=1 that "
                                     f"yielded nothing")
                if len(items) > 1:
                    print(f"Task {spec[P.S_NAME]} returned more than num_returns=1 objects: the first "
                          f"is its value", file=sys.stderr, flush=True)
                out = items[0]
        if n == 1:
            values = (out,)
        elif n == 0:
            return ()
        else:
            if not isinstance(out, (tuple, list)):
                raise TypeError(f"Task {spec[P.S_NAME]} returned a {type(out).__name__}, but "
                                f"num_returns={n}: return a tuple or list of exactly {n} values.")
            if len(out) != n:
                got = len(out)
                raise ValueError(
                    f"Task {spec[P.S_NAME]} returned {got} values, but num_returns={n}: return a tuple "
                    f"or list of exactly {n} values.")
            values = out
        return tuple(self.pack_value(oid, v) for oid, v in zip(P.return_ids(spec[P.S_TASK_ID], n), values))

    def pack_value(self, oid, v):
        inline, parts, contained = serialization.serialize(v, INLINE_THRESHOLD)
        if inline is not None:
            return oid, P.INLINE, inline, contained
        self.cw.write_to_store(oid, parts, replace=True)
        return oid, P.STORE, parts[3], contained

    def pack_yielded(self, spec, gen, n):
        """The results of a generator task with num_returns=n > 1, each packed (stored) as it is
        yielded, so this process holds one value at a time: Ray's pattern for large values. As in
        Ray, an error in the generator, or too few values, fails the results not yielded yet,
        and values past the n-th are left unread (with a message)."""
        ids = P.return_ids(spec[P.S_TASK_ID], n)
        results = []
        try:
            for v in gen:
                if len(results) == n:
                    print(f"Task {spec[P.S_NAME]} returned more than num_returns={n} objects: the "
                          f"first {n} are its results", file=sys.stderr, flush=True)
                    break
                results.append(self.pack_value(ids[len(results)], v))
                v = None   # (stored: not held while the generator makes the next one)
            if len(results) < n:
                raise ValueError(f"Task {spec[P.S_NAME]} returned {len(results)} objects, but "
                                 f"num_returns={n}.")
        except Exception as e:
            data = self.error_data(spec, e)
            results += [(oid, P.ERROR, data, ()) for oid in ids[len(results):]]
        except BaseException:   # cancelled: every result fails, so what was stored goes
            for r in results:
                if r[1] == P.STORE:
                    self.cw.store.delete(r[0])
            raise
        finally:
            gen.close()
        return tuple(results)

    def error_results(self, spec, exc, cancelled=False):
        data = self.error_data(spec, exc, cancelled)
        tid = spec[P.S_TASK_ID]
        n = max(spec[P.S_NUM_RETURNS], 1) if spec[P.S_KIND] != P.TASK_ACTOR_CREATE else 1
        return tuple((oid, P.ERROR, data, ()) for oid in P.return_ids(tid, n))

    def error_data(self, spec, exc, cancelled=False):
        """exc as the pickled RayTaskError that get() raises (cancelled: exc is how cancel()
        stopped the run)."""
        # A RayTaskError from a nested get travels on unchanged: its cause is the original error.
        err = exc if isinstance(exc, RayTaskError) else None
        if err is None:
            tb = format_exception(exc)
            # how cancel() reaches a running task (SIGINT), or what an async actor's call stopped
            # by it raised: as Ray, the call fails with RayTaskError(TaskCancelledError)
            if cancelled or isinstance(exc, KeyboardInterrupt):
                exc = TaskCancelledError(spec[P.S_TASK_ID].hex())
            err = RayTaskError(spec[P.S_NAME], tb, exc, os.getpid(), "127.0.0.1")
        try:
            data, _ = serialization.dumps(err)
            try:  # an exception whose __init__ does not match its args pickles but cannot unpickle
                serialization.loads_inline(data)
            except Exception:
                err = RayTaskError(spec[P.S_NAME], err.traceback_str, PortableCause(err.cause), os.getpid(),
                                   "127.0.0.1")
                data, _ = serialization.dumps(err)
        except Exception:
            # the exception itself does not pickle: keep its text, lose its class
            err = RayTaskError(spec[P.S_NAME], format_exception(exc), None, os.getpid(), "127.0.0.1")
            data, _ = serialization.dumps(err)
        return data


def _on_sigint(cw):
    # cancel() of a running task: a CANCEL_CALL naming it, then SIGINT to interrupt its code. One
    # that arrives before the task has started is remembered, and execute() reads the message.
    def handler(signum, frame):
        if cw.in_task:
            raise KeyboardInterrupt("task cancelled")
        cw.interrupted = True
    return handler


def worker_main(sock_fd, worker_id, store_name, node_info):
    """Entry point of a forked worker; never returns."""
    code = 0
    pid = os.getpid()
    try:
        from rayfast._core.store import ObjectStore

        conn = P.Connection(socket.socket(fileno=sock_fd))
        store = ObjectStore.attach(store_name)
        cw = CoreWorker(conn, "worker", store, node_info, worker_id=worker_id)
        cw.channels = WorkerChannels(worker_socket_path(node_info["session_dir"], worker_id))
        set_current(cw)
        signal.signal(signal.SIGINT, _on_sigint(cw))
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        executor = make_executor(cw)
        cw.send((P.HELLO, "worker", os.getpid(), worker_id))
        while True:
            msg = cw.next_task()
            if msg[0] == P.EXIT:
                drain = getattr(executor, "drain_direct", None)
                if drain is not None:
                    drain()   # an actor ending: calls its direct callers already sent still run
                break
            executor.execute(msg)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 0
    except BaseException:
        import traceback
        traceback.print_exc()
        code = 1
    finally:
        if os.getpid() != pid:
            # a process a task forked, leaving by sys.exit(): the worker's socket and its channels
            # are the parent's, which lives on
            os._exit(code)
        try:
            cw.channels.close()
        except Exception:
            pass
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            pass
        kill_children((os.getpid(),))
        os._exit(code)


def make_executor(cw):
    try:
        from rayfast.actor import ActorTaskExecutor
    except ImportError:
        return TaskExecutor(cw)
    return ActorTaskExecutor(cw)
