"""Terminal progress a person can read: what runs, a bar, the time elapsed and an estimate of what is left.

``track(iterable, desc, total=None)`` wraps any loop. On a terminal it draws a tqdm bar
(``train-sim epoch 3/12  42%|████      | 21/50 [00:10<00:14, 2.05it/s]``); when standard error is not a
terminal (a log file, CI) it writes a plain line at most every ``interval`` seconds and one at the end
(``train-sim epoch 3/12: 21/50 (42%), 10s elapsed, ~14s left``), so a log shows progress without carriage
returns. ``enabled=False`` returns the iterable untouched.

Plugging it into a loop::

    from smooth_infomax.progress import track
    for batch in track(loader, f"epoch {epoch + 1}/{epochs}", enabled=cfg.train.progress):
        ...

``Progress(total, desc)`` is the same for work that is not a loop over one iterable (``update(n)``,
``close()``; a context manager).
"""

from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Iterator, Optional, TextIO, TypeVar

from tqdm import tqdm

T = TypeVar("T")

BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]"


def format_seconds(seconds: float) -> str:
    """``75.2`` -> ``'1m15s'``, ``3.4`` -> ``'3.4s'``, ``4000`` -> ``'1h06m'``."""
    s = max(0.0, float(seconds))
    if s < 10:
        return f"{s:.1f}s"
    if s < 60:
        return f"{s:.0f}s"
    m, sec = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m}m{sec:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


def eta_seconds(done: float, total: Optional[float], elapsed: float) -> Optional[float]:
    """Seconds left at the mean rate so far (None when unknown: nothing done yet or no total)."""
    if not total or done <= 0 or elapsed <= 0:
        return None
    return max(0.0, (total - done) * elapsed / done)


def progress_line(desc: str, done: int, total: Optional[int], elapsed: float) -> str:
    """One plain status line: ``desc: 21/50 (42%), 10s elapsed, ~14s left``."""
    if total:
        head = f"{desc}: {done}/{total} ({100.0 * done / total:.0f}%)"
    else:
        head = f"{desc}: {done}"
    eta = eta_seconds(done, total, elapsed)
    tail = "" if eta is None or done >= (total or 0) else f", ~{format_seconds(eta)} left"
    return f"{head}, {format_seconds(elapsed)} elapsed{tail}"


class Progress:
    """Progress of ``total`` units of work (``None``: unknown), drawn on ``file`` (default standard error)."""

    def __init__(self, total: Optional[int], desc: str, *, file: Optional[TextIO] = None, interval: float = 30.0,
                 enabled: bool = True, tty: Optional[bool] = None):
        self.total = total
        self.desc = desc
        self.file = file if file is not None else sys.stderr
        self.interval = interval
        self.enabled = enabled
        self.n = 0
        self._t0 = time.perf_counter()
        self._last = self._t0
        self._closed = False
        is_tty = bool(getattr(self.file, "isatty", lambda: False)()) if tty is None else tty
        self._bar: Any = None
        if enabled and is_tty:
            self._bar = tqdm(total=total, desc=desc, file=self.file, leave=False, dynamic_ncols=True,
                             bar_format=BAR_FORMAT if total else None)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._t0

    def update(self, n: int = 1) -> None:
        self.n += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.perf_counter()
        if now - self._last >= self.interval:
            self._last = now
            self._write(progress_line(self.desc, self.n, self.total, now - self._t0))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            self._write(progress_line(self.desc, self.n, self.total, self.elapsed))

    def _write(self, line: str) -> None:
        print(line, file=self.file, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def track(iterable: Iterable[T], desc: str, total: Optional[int] = None, *, enabled: bool = True,
          file: Optional[TextIO] = None, interval: float = 30.0, tty: Optional[bool] = None) -> Iterator[T]:
    """Yield from ``iterable`` while showing its progress (``total`` defaults to ``len(iterable)``)."""
    if not enabled:
        yield from iterable
        return
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    with Progress(total, desc, file=file, interval=interval, tty=tty) as bar:
        for item in iterable:
            yield item
            bar.update(1)


__all__ = ["Progress", "eta_seconds", "format_seconds", "progress_line", "track"]
