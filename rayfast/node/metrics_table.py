"""The node's aggregate of the application metrics its processes record (rayfast.util.metrics).

Every driver, task worker and actor process sums its own updates and sends
them in batches (METRICS); this table adds them up per metric and tag set,
as Ray's metrics agent does once it drops the per-worker label: a counter's
increments are summed, a gauge keeps the last value set, a histogram adds
its bucket counts, sum and count. `text()` is the Prometheus text
exposition of the whole table, which node/metrics_http.py serves.

A batch record is (kind, name, description, boundaries, tags, value):
kind "counter" | "gauge" | "histogram", tags a sorted tuple of (key, value)
pairs, boundaries a tuple (histograms) or None, and value a float, or for a
histogram (bucket counts, sum, count) with one count more than boundaries
(the last is the +Inf bucket).
"""
import math
import re
import sys

PREFIX = "ray_"     # as Ray exports application metrics: what dashboards and queries look for
_BAD_LABEL_CHAR = re.compile(r"[^a-zA-Z0-9_]")


class _Family:
    __slots__ = ("kind", "description", "boundaries", "series")

    def __init__(self, kind, description, boundaries):
        self.kind = kind
        self.description = description
        self.boundaries = boundaries
        self.series = {}            # tags -> float, or [bucket counts, sum, count] for a histogram


class MetricsTable:
    def __init__(self, labels):
        self.labels = dict(labels)  # on every series (Ray's Component, SessionName, ...); a tag of the same key wins
        self.families = {}          # metric name -> _Family
        self.dropped = 0            # records whose name was taken by a metric of another kind or buckets
        self._warned = set()

    def record(self, batch):
        families = self.families
        for kind, name, description, boundaries, tags, value in batch:
            fam = families.get(name)
            if fam is None:
                fam = families[name] = _Family(kind, description, boundaries)
            elif fam.kind != kind or fam.boundaries != boundaries:
                self._conflict(name, kind, fam)
                continue
            elif description and not fam.description:
                fam.description = description
            series = fam.series
            if kind == "counter":
                series[tags] = series.get(tags, 0.0) + value
            elif kind == "gauge":
                series[tags] = value
            else:
                counts, total, n = value
                acc = series.get(tags)
                if acc is None:
                    series[tags] = [list(counts), total, n]
                else:
                    buckets = acc[0]
                    for i, k in enumerate(counts):
                        buckets[i] += k
                    acc[1] += total
                    acc[2] += n

    def _conflict(self, name, kind, fam):
        """Two metrics of one name must agree on kind (and buckets): the first recorded keeps the
        name, as one Prometheus family; the other's records are dropped, said once on stderr
        (the driver's terminal, unless log_to_driver=False)."""
        self.dropped += 1
        if (name, kind) not in self._warned:
            self._warned.add((name, kind))
            what = kind if fam.kind != kind else "histogram with other boundaries"
            print(f"rayfast metrics: {name!r} is a {fam.kind} here already; the records of a {what} "
                  f"of that name are dropped", file=sys.stderr, flush=True)

    def text(self):
        """The table in Prometheus text exposition format (version 0.0.4)."""
        out = []
        for name in sorted(self.families):
            fam = self.families[name]
            full = PREFIX + name + ("_total" if fam.kind == "counter" else "")
            out.append(f"# HELP {full} {_escape_help(fam.description)}")
            out.append(f"# TYPE {full} {fam.kind}")
            for tags in sorted(fam.series):
                value = fam.series[tags]
                labels = self._labels(tags)
                if fam.kind != "histogram":
                    out.append(f"{full}{{{_join(labels)}}} {_number(value)}")
                    continue
                counts, total, n = value
                cumulative = 0
                for bound, k in zip(fam.boundaries + (math.inf,), counts):
                    cumulative += k
                    out.append(f"{full}_bucket{{{_join(labels + [('le', _number(float(bound)))])}}} "
                               f"{_number(float(cumulative))}")
                out.append(f"{full}_count{{{_join(labels)}}} {_number(float(n))}")
                out.append(f"{full}_sum{{{_join(labels)}}} {_number(total)}")
        return "\n".join(out) + "\n" if out else ""

    def _labels(self, tags):
        merged = dict(self.labels)
        merged.update((_label_name(k), v) for k, v in tags)
        return sorted(merged.items())

    def statistics(self):
        return {"metrics": len(self.families), "series": sum(len(f.series) for f in self.families.values()),
                "dropped": self.dropped}


def _label_name(key):
    """A tag key as a Prometheus label name (letters, digits, _; not a digit first), as Ray's
    exporter makes it: other characters become _."""
    key = _BAD_LABEL_CHAR.sub("_", key)
    return "_" + key if not key or key[0].isdigit() else key


def _join(labels):
    return ",".join(f'{k}="{_escape_value(v)}"' for k, v in labels)


def _escape_value(v):
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text):
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(v):
    if v != v:
        return "NaN"
    if v in (math.inf, -math.inf):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))
