"""Ray's ray.experimental.tqdm_ray: progress bars for tasks and actors.

`tqdm(iterable, desc=, total=, unit=, position=, flush_interval_s=)` counts as Ray's does
(iterating it, update(n), set_description(), refresh(), close(), `n`, `total`). Ray draws every
worker's bars at the driver; rayfast's workers write to the driver's terminal themselves, so a bar
reports as a line on stderr, `desc: n/total unit (pct%)`, at most every flush_interval_s, when its
iteration ends and when it closes: lines that concurrent tasks cannot garble (and that need no
`position`, which is accepted).
"""
from __future__ import annotations

import builtins
import sys
import time
from typing import Iterable, Optional

# Ray's print that keeps clear of its bars; these bars are whole lines, so print itself is safe
safe_print = builtins.print


class tqdm:
    DEFAULT_FLUSH_INTERVAL_SECONDS = 1.0

    def __init__(self, iterable: Optional[Iterable] = None, desc: Optional[str] = None,
                 total: Optional[int] = None, unit: Optional[str] = None, position: Optional[int] = None,
                 flush_interval_s: Optional[float] = None):
        if total is None and iterable is not None:
            try:
                total = len(iterable)
            except (TypeError, AttributeError):
                total = None
        self._iterable = iterable
        self._desc = desc or ""
        self._total = total
        self._unit = unit or "it"
        self._x = 0
        self._closed = False
        self._flush_interval_s = self.DEFAULT_FLUSH_INTERVAL_SECONDS if flush_interval_s is None \
            else flush_interval_s
        self._last_flush_time = 0.0
        self._last_line = None

    def set_description(self, desc):
        self._desc = desc
        self._report()

    def update(self, n=1):
        self._x += n
        self._report()

    def close(self):
        self._closed = True
        self._report(force=True)

    def refresh(self):
        self._report()

    @property
    def total(self) -> Optional[int]:
        return self._total

    @total.setter
    def total(self, total: int):
        self._total = total

    @property
    def n(self) -> int:
        return self._x

    @n.setter
    def n(self, n: int):
        self._x = n

    def __iter__(self):
        if self._iterable is None:
            raise ValueError("No iterable provided")
        for x in iter(self._iterable):
            self.update(1)
            yield x
        self._report(force=True)

    def _report(self, force=False):
        now = time.time()
        if not force and now - self._last_flush_time < self._flush_interval_s:
            return
        self._last_flush_time = now
        line = f"{self._desc}: " if self._desc else ""
        if self._total:
            line += f"{self._x}/{self._total} {self._unit} ({100 * self._x // self._total}%)"
        else:
            line += f"{self._x} {self._unit}"
        if line != self._last_line:   # (the end of an iteration, then close(): one line)
            self._last_line = line
            print(line, file=sys.stderr, flush=True)
