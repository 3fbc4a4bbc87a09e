"""Progress output that reads well on a terminal and in a log file.

On a terminal: a tqdm bar. Otherwise (``nohup ... > log``, CI): one plain line every ``interval`` seconds and one
at the end, instead of hundreds of carriage-return updates. Keras' ``fit`` gets the same choice through
:func:`keras_verbose` (a bar per epoch on a terminal, one line per epoch otherwise).
"""
from __future__ import annotations

import sys
import time

LOG_INTERVAL_SECONDS = 30.0


def on_terminal(stream=None) -> bool:
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


def keras_verbose(enabled: bool = True) -> int:
    """``verbose`` for ``keras.Model.fit``: 0 when disabled, 1 (bar) on a terminal, 2 (a line per epoch) else."""
    if not enabled:
        return 0
    return 1 if on_terminal(sys.stdout) else 2


class LineProgress:
    """The subset of tqdm's interface the package uses (update, set_postfix_str, close, context manager),
    printing ``desc: n/total unit (pct%), elapsed`` every ``interval`` seconds and once when closed."""

    def __init__(self, total: int | None, desc: str = "", unit: str = "it", initial: int = 0,
                 interval: float = LOG_INTERVAL_SECONDS, stream=None):
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.interval, self.stream = interval, stream or sys.stderr
        self.start = self.last = time.monotonic()
        self.postfix = ""
        self.closed = False

    def _line(self) -> str:
        elapsed = time.monotonic() - self.start
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        pct = f" ({100.0 * self.n / self.total:.0f}%)" if self.total else ""
        extra = f", {self.postfix}" if self.postfix else ""
        return f"{self.desc}: {count} {self.unit}{pct}, {elapsed:.0f} s{extra}"

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            print(self._line(), file=self.stream, flush=True)

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix = text

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            print(self._line(), file=self.stream, flush=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class _Silent(LineProgress):
    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        self.closed = True


def progress_bar(total: int | None, desc: str = "", unit: str = "it", initial: int = 0, enabled: bool = True):
    """A tqdm bar on a terminal, a :class:`LineProgress` otherwise, a silent counter when not ``enabled``."""
    if not enabled:
        return _Silent(total, desc, unit, initial)
    if on_terminal():
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, initial=initial, dynamic_ncols=True)
    return LineProgress(total, desc, unit, initial)
