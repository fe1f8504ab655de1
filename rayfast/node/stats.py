"""Per-function counters: how many tasks, how long they ran, what the system added.

This is what lets `rayfast status` tell a user that their tasks are too
small. Three times are kept per function:

- run: the worker's own clock from taking the task to having its results
  packed (start..end as the worker reports them);
- overhead: what the system adds while the task holds a worker: from the
  dispatch (or, for a task queued on a busy worker, the end of the task
  before it) to the worker starting it, plus the return of its results to
  the node unless the worker already had its next task by then (sending
  the spec, decoding it, sending results, the node's own loop). This cost
  does not shrink with more CPUs and does not depend on how many tasks are
  queued: when it exceeds the run time, tasks are too small;
- queue: from submission to dispatch (waiting for arguments and for a free
  worker). It grows with a backlog of perfectly good long tasks, so it is
  shown but never taken as a sign of bad granularity.
"""
from time import time as _time


class FunctionStats:
    """Rows of counters per function name. The node manager looks a task's row up
    once, at submission, and keeps it on the task record (the `row` methods);
    callers that only have the name use the name methods."""

    def __init__(self):
        # name -> [submitted, started, finished, run_total, queue_total, overhead_total, timed]
        self._f = {}
        self._last_end = {}   # worker key -> end of the last task it finished

    def row(self, name):
        row = self._f.get(name)
        if row is None:
            row = self._f[name] = [0, 0, 0, 0.0, 0.0, 0.0, 0]
        return row

    def submitted(self, name):
        """Count a submission; returns the function's row for the task record."""
        row = self.row(name)
        row[0] += 1
        return row

    def started(self, name, waited):
        self.start_row(self.row(name), waited)

    def finished(self, name, start, end, dispatched=None, worker=None, overlapped=False):
        self.finish_row(self.row(name), start, end, dispatched, worker, overlapped)

    @staticmethod
    def start_row(row, waited):
        row[1] += 1
        row[4] += waited

    def finish_row(self, row, start, end, dispatched=None, worker=None, overlapped=False):
        """Count a finished task.

        dispatched: when the node sent it (the node's clock; same machine as the worker's);
        worker: a key for the worker that ran it; overlapped: the worker already had its next
        task when this one ended, so returning these results cost it no idle time.

        Overhead = (start - acquired) + (now - end unless overlapped), where acquired is the
        later of the dispatch and the end of the worker's previous task: a task queued on a
        busy worker (pipelined) only begins to cost when the one before it is done.
        """
        row[2] += 1
        row[3] += end - start
        if dispatched is not None:
            if worker is not None:
                last = self._last_end
                prev = last.get(worker, 0.0)
                last[worker] = end
                if prev > dispatched:
                    dispatched = prev
            over = start - dispatched
            if over < 0.0:
                over = 0.0
            if not overlapped:
                now = _time()
                if now > end:
                    over += now - end
            row[5] += over
            row[6] += 1

    @staticmethod
    def is_short(row, limit):
        """Whether the row's tasks have finished and ran shorter than limit seconds on average."""
        return row[2] > 0 and row[3] < limit * row[2]

    def summary(self):
        out = {}
        for name, (sub, started, fin, run, wait, over, timed) in self._f.items():
            out[name] = {"submitted": sub, "started": started, "finished": fin,
                         "mean_run_s": run / fin if fin else 0.0,
                         "mean_overhead_s": over / timed if timed else 0.0,
                         "mean_queue_s": wait / started if started else 0.0,
                         "total_run_s": run, "total_overhead_s": over}
        return out
