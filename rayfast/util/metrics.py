"""`rayfast.util.metrics`: application metrics, as Ray's `ray.util.metrics` (Counter, Gauge, Histogram).

A metric may be made and recorded in any process of the cluster: the driver,
a task, an actor. Each process sums its own updates per metric and tag set
(counters add, a gauge keeps its last value, a histogram counts per bucket)
and a thread of its own, started by its first record, sends them to its node
manager every FLUSH_DELAY at most, with whatever else is going out (one
METRICS message: no message per record, and nothing at all in a process that
records nothing). The rest are sent when the process's session ends
(`shutdown()`, an actor's graceful exit). The node manager sums what its
processes send and serves it in Prometheus text format on the node's metrics
export port, `init()`'s `metrics_export_port` (`_metrics_export_port=` picks
it; by default a free one), with Ray's names: `ray_<name>`, a counter
`ray_<name>_total` (rayfast/node/metrics_table.py).

Records made where no cluster is connected (before `init()`, after
`shutdown()`) are checked, then dropped.
"""
import atexit
import bisect
import math
import numbers
import re
import threading
import warnings
from collections.abc import Mapping

from rayfast import core_worker
from rayfast import protocol as P

__all__ = ["Counter", "Gauge", "Histogram"]

FLUSH_DELAY = 0.05   # seconds a process's updates wait for more before they are sent, at most

# Prometheus's metric names: what does not match cannot be exported (Ray discards it with a warning)
_VALID_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


class Metric:
    """What Counter, Gauge and Histogram share: a name, a description, the tag keys every record
    must give a value for, and default values for some of them."""

    _kind = None

    def __init__(self, name, description="", tag_keys=None):
        if not isinstance(name, str):
            raise TypeError(f"a metric's name must be a str, got {type(name).__name__}")
        if not name:
            raise ValueError("a metric's name must not be empty")
        if not isinstance(description, str):
            raise TypeError(f"description must be a str, got {type(description).__name__}")
        tag_keys = () if tag_keys is None else tag_keys
        if not isinstance(tag_keys, tuple):
            raise TypeError(f"tag_keys must be a tuple of str, got {type(tag_keys).__name__}: {tag_keys!r}")
        for key in tag_keys:
            if not isinstance(key, str):
                raise TypeError(f"tag keys must be str, got {type(key).__name__}: {key!r}")
        # As Ray: a name Prometheus would refuse is kept for info, but nothing is recorded
        self._discarded = not _VALID_NAME.match(name)
        level = 2 if type(self).__init__ is Metric.__init__ else 3   # (the warning names the caller's line)
        if self._discarded:
            warnings.warn(f"metric name {name!r} is not a valid Prometheus name (letters, digits, _ and :, "
                          "not starting with a digit): nothing recorded under it is exported", UserWarning,
                          stacklevel=level)
        elif ":" in name:
            warnings.warn(f"metric name {name!r} contains ':', which Ray is phasing out of metric names",
                          FutureWarning, stacklevel=level)
        self._name = name
        self._description = description
        self._tag_keys = tag_keys
        self._default_tags = {}
        self._ident = (self._kind, name, description, None)   # what the node manager files records under

    def set_default_tags(self, default_tags):
        """Values for tag keys that records leave out (a record's own tags win). Returns the metric,
        so `Counter(...).set_default_tags({...})` makes and sets at once."""
        if not isinstance(default_tags, Mapping):
            raise TypeError(f"default_tags must be a dict of str -> str, got {type(default_tags).__name__}")
        for key, value in default_tags.items():
            if key not in self._tag_keys:
                raise ValueError(f"default tag {key!r} is not one of the metric's tag_keys {self._tag_keys}")
            if not isinstance(value, str):
                raise TypeError(f"tag values must be str, got {type(value).__name__} for {key!r}")
        self._default_tags = dict(default_tags)
        return self

    @property
    def info(self):
        """The metric's name, description, tag_keys and default_tags (a histogram adds boundaries)."""
        return {"name": self._name, "description": self._description, "tag_keys": self._tag_keys,
                "default_tags": dict(self._default_tags)}

    def _record(self, value, tags):
        if self._discarded:
            return
        tags = self._final_tags(tags)
        cw = core_worker._current
        if cw is None:
            return
        updates = cw.metrics
        if updates is None:
            updates = _updates_of(cw)
        updates.add(self._ident, tags, float(value))

    def _final_tags(self, tags):
        """The record's tags over the defaults, as a sorted tuple of pairs; every tag key must have a
        value. Keys beyond tag_keys are allowed and exported too, as in Ray."""
        if tags:
            if not isinstance(tags, Mapping):
                raise TypeError(f"tags must be a dict of str -> str, got {type(tags).__name__}")
            for key, value in tags.items():
                if not isinstance(key, str):
                    raise TypeError(f"tag keys must be str, got {type(key).__name__}: {key!r}")
                if not isinstance(value, str):
                    raise TypeError(f"tag values must be str, got {type(value).__name__} for {key!r}")
            merged = {**self._default_tags, **tags}
        elif tags is None or isinstance(tags, Mapping):
            merged = self._default_tags
        else:
            raise TypeError(f"tags must be a dict of str -> str, got {type(tags).__name__}")
        missing = [key for key in self._tag_keys if key not in merged]
        if missing:
            raise ValueError(f"Missing value for tag key(s) {', '.join(missing)} of metric {self._name!r}: give "
                             "it in tags= or with set_default_tags()")
        return tuple(sorted(merged.items()))


def _check_number(value):
    if not isinstance(value, numbers.Real):
        raise TypeError(f"value must be an int or a float, got {type(value).__name__}: {value!r}")


class Counter(Metric):
    """A total that only goes up (a Prometheus counter, exported as ray_<name>_total): the sum of
    every inc() of every process, per tag set."""

    _kind = "counter"

    def inc(self, value=1.0, tags=None):
        """Add value (> 0; 1 by default) to the count of this tag set."""
        _check_number(value)
        if not value > 0:
            raise ValueError(f"a Counter only goes up: inc() takes a value > 0, got {value!r}")
        self._record(value, tags)


class Gauge(Metric):
    """A value that goes up and down (a Prometheus gauge): the last one set, per tag set."""

    _kind = "gauge"

    def set(self, value, tags=None):
        """Set the gauge of this tag set to value; None leaves it as it is."""
        if value is None:
            return
        _check_number(value)
        self._record(value, tags)


class Histogram(Metric):
    """The distribution of observed values (a Prometheus histogram): how many fell at or below each
    of `boundaries` (and in all), and their sum, per tag set."""

    _kind = "histogram"

    def __init__(self, name, description="", boundaries=None, tag_keys=None):
        super().__init__(name, description, tag_keys)
        if boundaries is None or len(boundaries) == 0:
            raise ValueError("a Histogram needs its bucket boundaries, e.g. Histogram(name, boundaries=[0.1, 1, 10])")
        for i, b in enumerate(boundaries):
            if not isinstance(b, numbers.Real):
                raise TypeError(f"boundaries must be numbers, got {type(b).__name__} at index {i}: {list(boundaries)}")
            if not 0 < b < math.inf:
                raise ValueError(f"boundaries must be positive finite numbers, got {b!r} at index {i}: "
                                 f"{list(boundaries)}")
            if i and not b > boundaries[i - 1]:
                raise ValueError(f"boundaries must be in increasing order without repeats, got {b!r} after "
                                 f"{boundaries[i - 1]!r} at index {i}: {list(boundaries)}")
        self.boundaries = list(boundaries)
        self._ident = (self._kind, name, description, tuple(float(b) for b in boundaries))

    def observe(self, value, tags=None):
        """Count value in the first bucket whose boundary is >= value (or the last, +Inf, one)."""
        _check_number(value)
        self._record(value, tags)

    @property
    def info(self):
        info = super().info
        info["boundaries"] = self.boundaries
        return info


class _Updates:
    """A process's metric updates since they were last sent, summed per (metric, tag set), and the
    thread that sends them."""

    def __init__(self, cw):
        self.cw = cw
        self.cond = threading.Condition(threading.Lock())
        self.pending = {}    # (ident, tags) -> float, or [bucket counts, sum, count] for a histogram
        self.closed = False
        self.thread = threading.Thread(target=self._run, name="rayfast-metrics", daemon=True)
        self.thread.start()

    def add(self, ident, tags, value):
        key = (ident, tags)
        kind = ident[0]
        with self.cond:
            pending = self.pending
            if not pending:
                self.cond.notify()   # (the thread sleeps while there is nothing to send)
            if kind == "counter":
                pending[key] = pending.get(key, 0.0) + value
            elif kind == "gauge":
                pending[key] = value
            else:
                bounds = ident[3]
                acc = pending.get(key)
                if acc is None:
                    acc = pending[key] = [[0] * (len(bounds) + 1), 0.0, 0]
                acc[0][bisect.bisect_left(bounds, value)] += 1
                acc[1] += value
                acc[2] += 1

    def _take(self):
        """The pending updates as METRICS records (node/metrics_table.py); with self.cond held."""
        batch = tuple((ident[0], ident[1], ident[2], ident[3], tags,
                       (tuple(v[0]), v[1], v[2]) if ident[0] == "histogram" else v)
                      for (ident, tags), v in self.pending.items())
        self.pending = {}
        return batch

    def _run(self):
        cond = self.cond
        while True:
            with cond:
                while not self.pending and not self.closed:
                    cond.wait()
                if not self.closed:
                    cond.wait(FLUSH_DELAY)   # let updates gather (only close() wakes it early)
                if self.closed:
                    return
                batch = self._take()
            try:
                self.cw.send_later((P.METRICS, batch))
            except Exception:   # the connection is gone: so is the session
                return

    def send_now(self):
        with self.cond:
            batch = self._take()
        if batch:
            self.cw.send((P.METRICS, batch))

    def close(self):
        """The session ends: the last updates go out now, after any the thread is sending."""
        with self.cond:
            if self.closed:
                return
            self.closed = True
            self.cond.notify()
        if self.thread is not threading.current_thread():
            self.thread.join(1.0)
        try:
            self.send_now()
        except Exception:
            pass


_attach_lock = threading.Lock()


def _updates_of(cw):
    with _attach_lock:
        if cw.metrics is None:
            cw.metrics = _Updates(cw)
    return cw.metrics


@atexit.register
def _send_at_exit():
    """An actor's graceful exit runs the atexit handlers, then leaves with os._exit: its last
    updates go out here. (A driver's go with shutdown(), which atexit runs after this.)"""
    cw = core_worker._current
    if cw is not None and cw.metrics is not None:
        try:
            cw.metrics.send_now()
        except Exception:
            pass
