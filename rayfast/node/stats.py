"""Per-function counters: how many tasks, how long they ran, what the system added.

This is what lets `rayfast status` tell a user that their tasks are too
small. Three times are kept per function:

- run: the worker's own clock from taking the task to having its results
  packed (start..end as the worker reports them);
- overhead: what the system adds while the task holds a worker, i.e. the
  node manager's round trip from dispatching the task to reading its DONE,
  minus the run time (sending the spec, decoding it in the worker, sending
  the results back, the node's own loop). Per task, this is the cost that
  does not shrink with more CPUs and does not depend on how many tasks are
  queued: when it exceeds the run time, tasks are too small;
- queue: from submission to dispatch (waiting for arguments and for a free
  worker). It grows with a backlog of perfectly good long tasks, so it is
  shown but never taken as a sign of bad granularity.
"""
from time import time as _time


class FunctionStats:
    def __init__(self):
        # name -> [submitted, started, finished, run_total, queue_total, overhead_total, timed]
        self._f = {}
        self._last_end = {}   # worker key -> end of the last task it finished

    def _row(self, name):
        row = self._f.get(name)
        if row is None:
            row = self._f[name] = [0, 0, 0, 0.0, 0.0, 0.0, 0]
        return row

    def submitted(self, name):
        self._row(name)[0] += 1

    def started(self, name, waited):
        row = self._row(name)
        row[1] += 1
        row[4] += waited

    def finished(self, name, start, end, dispatched=None, worker=None):
        """dispatched: when the node sent the task (its clock); worker: a key for the worker that ran it.

        A task sent to a worker that was still running others (pipelined) only begins to cost
        the system when the worker is done with the one before it, so the round trip counts
        from the later of its dispatch and that worker's previous end.
        """
        row = self._row(name)
        row[2] += 1
        run = end - start
        row[3] += run
        if dispatched is not None:
            now = _time()
            if worker is not None:
                last = self._last_end
                prev = last.get(worker, 0.0)
                last[worker] = end
                if prev > dispatched:
                    dispatched = prev
            over = (now - dispatched) - run
            row[5] += over if over > 0.0 else 0.0
            row[6] += 1

    def is_short(self, name, limit):
        """Whether name's tasks have finished and ran shorter than limit seconds on average."""
        row = self._f.get(name)
        return row is not None and row[2] > 0 and row[3] < limit * row[2]

    def summary(self):
        out = {}
        for name, (sub, started, fin, run, wait, over, timed) in self._f.items():
            out[name] = {"submitted": sub, "started": started, "finished": fin,
                         "mean_run_s": run / fin if fin else 0.0,
                         "mean_overhead_s": over / timed if timed else 0.0,
                         "mean_queue_s": wait / started if started else 0.0,
                         "total_run_s": run, "total_overhead_s": over}
        return out
