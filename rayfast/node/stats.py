"""Per-function counters: how many tasks, how long they ran, how long they waited.

This is what lets `rayfast status` tell a user that their tasks are too
small: when the mean scheduling overhead of a function exceeds its mean
run time, the system is spending more time moving the task than running it.
"""


class FunctionStats:
    def __init__(self):
        self._f = {}   # name -> [submitted, started, finished, run_total, wait_total]

    def _row(self, name):
        row = self._f.get(name)
        if row is None:
            row = self._f[name] = [0, 0, 0, 0.0, 0.0]
        return row

    def submitted(self, name):
        self._row(name)[0] += 1

    def started(self, name, waited):
        row = self._row(name)
        row[1] += 1
        row[4] += waited

    def finished(self, name, start, end):
        row = self._row(name)
        row[2] += 1
        row[3] += end - start

    def summary(self):
        out = {}
        for name, (sub, started, fin, run, wait) in self._f.items():
            out[name] = {"submitted": sub, "started": started, "finished": fin,
                         "mean_run_s": run / fin if fin else 0.0,
                         "mean_overhead_s": wait / started if started else 0.0}
        return out
