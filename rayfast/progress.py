"""`rayfast.get(refs, progress=True)`: the same values as get, with a progress bar while waiting.

Uses tqdm when it is importable; otherwise draws a plain bar on stderr
(redrawn in place on a terminal, a few lines in total otherwise).
"""
from __future__ import annotations

import sys
import time

from rayfast.exceptions import GetTimeoutError

_STEP = 0.1          # redraw at least this often while waiting (s)


class _TextBar:
    def __init__(self, total, initial=0, desc="rayfast.get", file=None, width=30):
        self.total = total
        self.n = initial
        self.desc = desc
        self.file = file or sys.stderr
        self.width = width
        self.t0 = time.monotonic()
        self._tty = hasattr(self.file, "isatty") and self.file.isatty()
        self._last_pct = -1
        self._draw()

    def update(self, k):
        if k:
            self.n += k
            self._draw()

    def _draw(self, final=False):
        total = max(self.total, 1)
        frac = min(self.n / total, 1.0)
        pct = int(frac * 100)
        if not self._tty and not final and pct // 25 == self._last_pct // 25 and self._last_pct >= 0:
            return  # not a terminal: a line at 0, 25, 50, 75 and 100 % only
        self._last_pct = pct
        filled = int(frac * self.width)
        el = time.monotonic() - self.t0
        rate = self.n / el if el > 0 else 0.0
        line = (f"{self.desc}: {pct:3d}%|{'#' * filled}{' ' * (self.width - filled)}| "
                f"{self.n}/{self.total} [{el:.1f}s, {rate:,.0f} objects/s]")
        try:
            self.file.write(("\r" + line) if self._tty else (line + "\n"))
            self.file.flush()
        except (OSError, ValueError):
            pass

    def close(self):
        if self._tty:
            try:
                self.file.write("\n")
                self.file.flush()
            except (OSError, ValueError):
                pass
        elif self._last_pct != 100 and self.n >= self.total:
            self._draw(final=True)


def _make_bar(total, initial):
    try:
        from tqdm.auto import tqdm
    except Exception:  # not installed (it is optional), or broken
        return _TextBar(total, initial)
    return tqdm(total=total, initial=initial, desc="rayfast.get", unit="obj", file=sys.stderr)


def get_with_progress(cw, refs, timeout=None):
    """The values of refs (a list), showing how many are ready while waiting."""
    keys = [r.binary() for r in refs]
    if cw.in_task:  # inside a task a bar is noise, and each wait would report BLOCKED again
        return cw.get(refs, timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    results = cw._results
    pending = list(dict.fromkeys(k for k in keys if k not in results))
    distinct = len(set(keys))
    bar = _make_bar(distinct, distinct - len(pending))
    try:
        while pending:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise GetTimeoutError(f"get timed out after {timeout} s: {len(pending)} of {distinct} "
                                      "objects not ready")
            step = now + _STEP if deadline is None else min(deadline, now + _STEP)
            # Wake when a further ~2% are ready (or after a step), so the rescans stay cheap.
            cw.wait_objects(pending, max(1, len(pending) // 50), step)
            still = [k for k in pending if k not in results]
            bar.update(len(pending) - len(still))
            pending = still
    finally:
        bar.close()
    return [cw.value_of(k) for k in keys]
