"""Ray's LoggingConfig: the root logger of a job's driver and of every task and actor process.

`init(logging_config=LoggingConfig(encoding="TEXT" | "JSON", log_level=...,
additional_log_standard_attrs=[...]))` gives each of those processes one
handler on the root logger, writing to stderr (which reaches the driver as
worker output does): TEXT lines `time\tLEVEL file:line -- message key=value...`
or one JSON object per record, both with the record's rayfast context (job,
worker, node, and the actor or task running) as Ray adds it. The config
travels with the job's runtime_env under a private key, so a worker sets its
logger up the first time it runs one of the job's tasks.
"""
from __future__ import annotations

import json
import logging
import time

_ENCODINGS = ("TEXT", "JSON")
# Python's own LogRecord attributes: what additional_log_standard_attrs may name (as Ray's list)
STANDARD_ATTRS = frozenset({
    "args", "asctime", "created", "exc_info", "exc_text", "filename", "funcName", "levelname", "levelno",
    "lineno", "message", "module", "msecs", "msg", "name", "pathname", "process", "processName",
    "relativeCreated", "stack_info", "thread", "threadName", "taskName"})


class LoggingConfig:
    def __init__(self, encoding: str = "TEXT", log_level: str = "INFO", additional_log_standard_attrs=None):
        if encoding not in _ENCODINGS:
            raise ValueError(f"Invalid encoding type: {encoding}. Valid encoding types are: {list(_ENCODINGS)}")
        attrs = list(additional_log_standard_attrs or [])
        for a in attrs:
            if a not in STANDARD_ATTRS:
                raise ValueError(f"Unknown python logging standard attribute: {a}. The valid attributes are: "
                                 f"{sorted(STANDARD_ATTRS)}")
        if not isinstance(log_level, (str, int)) or isinstance(log_level, bool):
            raise TypeError(f"log_level must be a level name or number, got {log_level!r}")
        self.encoding = encoding
        self.log_level = log_level
        self.additional_log_standard_attrs = attrs

    def _as_tuple(self):
        return (self.encoding, self.log_level, tuple(self.additional_log_standard_attrs))

    def __repr__(self):
        return (f"LoggingConfig(encoding={self.encoding!r}, log_level={self.log_level!r}, "
                f"additional_log_standard_attrs={self.additional_log_standard_attrs!r})")


def _context():
    """The rayfast fields of a record made now in this process (none outside a session)."""
    from rayfast import core_worker
    cw = core_worker._current
    if cw is None:
        return {}
    from rayfast.runtime_context import RuntimeContext
    ctx = RuntimeContext(cw)
    out = {"job_id": ctx.get_job_id(), "worker_id": ctx.get_worker_id(), "node_id": ctx.get_node_id()}
    try:
        aid = ctx.get_actor_id()
        if aid is not None:
            out["actor_id"] = aid
            name = ctx.get_actor_name()
            if name:
                out["actor_name"] = name
        tid = ctx.get_task_id()
        if tid is not None:
            out["task_id"] = tid
            out["task_name"] = ctx.get_task_name()
            out["task_func_name"] = ctx.get_task_function_name()
    except Exception:   # a record made while the process is between tasks or shutting down
        pass
    return out


class _Formatter(logging.Formatter):
    def __init__(self, encoding, attrs):
        super().__init__("%(asctime)s\t%(levelname)s %(filename)s:%(lineno)s -- %(message)s")
        self.encoding = encoding
        self.attrs = attrs

    def format(self, record):
        fields = {a: getattr(record, a, None) for a in self.attrs}
        fields.update(_context())
        fields["timestamp_ns"] = int(record.created * 1e9) if record.created else time.time_ns()
        if self.encoding == "TEXT":
            return super().format(record) + "".join(f" {k}={v}" for k, v in fields.items())
        record.message = record.getMessage()
        out = {"asctime": self.formatTime(record), "levelname": record.levelname, "message": record.message,
               "filename": record.filename, "lineno": record.lineno, "process": record.process}
        out.update(fields)
        if record.exc_info:
            out["exc_text"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


_applied = None   # the config this process's root logger has (a tuple), and its handler


def configure(config):
    """Give this process's root logger the config (a LoggingConfig or its tuple); once per config."""
    global _applied
    if isinstance(config, LoggingConfig):
        config = config._as_tuple()
    config = tuple(config)
    if _applied is not None and _applied[0] == config:
        return
    encoding, level, attrs = config
    root = logging.getLogger()
    if _applied is not None:
        root.removeHandler(_applied[1])
    handler = logging.StreamHandler()
    handler.setFormatter(_Formatter(encoding, attrs))
    handler.setLevel(level)
    root.addHandler(handler)
    root.setLevel(level)
    _applied = (config, handler)
