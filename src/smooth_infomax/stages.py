"""Named, resumable stages: the mechanism behind ``smooth-infomax run`` and ``smooth-infomax reproduce``.

A finished stage leaves ``OUT/stages/<name>.json`` (its JSON result, wall time and peak memory); running the
same name again returns that result without redoing the work. A stage killed half-way left no marker and is
redone (its own checkpoints make that cheap).

Peak memory of a stage (``peak_rss_mb``) is the resident-set high-water mark of this process *during the
stage*: on Linux the kernel's mark (``VmHWM``) is reset to the current RSS when the stage starts (writing ``5``
to ``/proc/self/clear_refs``) and read when it ends (``memory_method: vmhwm-reset``). A sampler thread also
reads the RSS once a second; its maximum is the measure where the mark cannot be reset (``sampled``) and a lower
bound for an outer stage whose mark a nested stage (a stage run inside another) has reset. Not more often:
each wake-up asks the training thread for the GIL, and on a CPU shared with another process the hand-over waits
for a scheduler slot: a 50 ms sampler made the quick SIM training 7x slower beside a 2-thread competitor.
Before each stage the process's free heap memory is handed back to the kernel (``runtime.release_memory``: the
command line keeps freed memory for reuse within a stage), so a stage's mark does not include what earlier
stages freed. Child processes (e.g. data-loader workers) are reported apart as ``children_peak_rss_mb``: the largest
high-water mark of a child that ended during the stage (``getrusage(RUSAGE_CHILDREN)``), 0 when none did.
"""

from __future__ import annotations

import datetime as _dt
import json
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from .checkpoint import atomic_write_json
from .progress import format_seconds
from .runtime import release_memory

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_mb(field: str) -> Optional[float]:
    """A ``kB`` field of /proc/self/status in MiB (None where there is no such file)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        return None
    return None


def _maxrss_mb(who: int) -> float:
    peak = resource.getrusage(who).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024.0


class MemoryWatch:
    """Peak resident memory of this process (and of children that ended) between ``start()`` and ``stop()``.

    Use as a context manager; after exit, :attr:`result` is ``{"peak_rss_mb", "start_rss_mb",
    "children_peak_rss_mb", "memory_method"}``.
    """

    def __init__(self, interval: float = 1.0):
        self.interval = interval
        self.result: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._sampled = 0.0

    def _rss_now(self) -> float:
        rss = _status_mb("VmRSS")
        return rss if rss is not None else _maxrss_mb(resource.RUSAGE_SELF)

    def start(self) -> MemoryWatch:
        self._start_rss = self._rss_now()
        self._children0 = _maxrss_mb(resource.RUSAGE_CHILDREN)
        self.method = "sampled"
        try:
            _CLEAR_REFS.write_text("5")  # reset VmHWM to the current RSS (Linux >= 4.0)
            if _status_mb("VmHWM") is not None:
                self.method = "vmhwm-reset"
        except OSError:
            pass
        # the sampler runs in both cases: where a nested watch (a stage inside a stage) resets the kernel's mark,
        # the outer watch still sees every peak that lasted longer than ``interval``
        self._sampled = self._start_rss
        self._thread = threading.Thread(target=self._sample, name="stage-memory", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._sampled = max(self._sampled, self._rss_now())

    def stop(self) -> dict[str, Any]:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        peak = max(self._sampled, self._rss_now())
        if self.method == "vmhwm-reset":
            peak = max(peak, _status_mb("VmHWM") or 0.0)
        children = _maxrss_mb(resource.RUSAGE_CHILDREN)
        self.result = {"peak_rss_mb": round(peak, 1), "start_rss_mb": round(self._start_rss, 1),
                       "children_peak_rss_mb": round(children, 1) if children > self._children0 else 0.0,
                       "memory_method": self.method}
        return self.result

    def __enter__(self) -> MemoryWatch:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class Stages:
    """Runs named stages once; results are JSON files in ``OUT/stages``.

    ``log`` gets one line per stage as it starts (``[run ] NAME``, ``[skip] NAME (done)``, ``[redo] ...``);
    ``status`` (default: standard error) gets a line as each stage ends, with its wall time, peak memory, the
    stage count (``3/14`` when ``total``, the number of stages planned, is given) and the time elapsed.
    ``timings`` maps every stage met in this call (run or skipped) to its wall seconds; ``stats`` holds the
    full record of each (seconds, peak memory, whether it was skipped, when it started). ``before`` is called
    before each stage that runs (e.g. ``RuntimeSettings.rebalance``: threads matched to the free cores).
    """

    def __init__(self, out: Path, log: Callable[[str], None] = print, total: Optional[int] = None,
                 status: Optional[Callable[[str], None]] = None, before: Optional[Callable[[], Any]] = None):
        self.dir = Path(out) / "stages"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.status = status if status is not None else _to_stderr
        self.total = total
        self.before = before
        self.timings: dict[str, float] = {}
        self.stats: dict[str, dict[str, Any]] = {}
        self._t0 = time.perf_counter()

    def _count(self) -> str:
        return f"{len(self.stats)}/{self.total}" if self.total else f"{len(self.stats)}"

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        marker = self.dir / f"{name}.json"
        if marker.exists():
            try:
                saved = json.loads(marker.read_text())
                done = saved["result"]
            except (OSError, ValueError, KeyError, TypeError):  # damaged by hand or by a failing disk: redo it
                self.log(f"[redo] {name} (its marker {marker} is unreadable)")
            else:
                self.log(f"[skip] {name} (done)")
                info = {k: saved[k] for k in ("seconds", "peak_rss_mb", "children_peak_rss_mb", "started")
                        if k in saved}
                self.timings[name] = float(info.get("seconds", 0.0))
                self.stats[name] = {**info, "skipped": True}
                return done
        self.log(f"[run ] {name}")
        if self.before is not None:
            self.before()
        release_memory()  # the free heap earlier stages kept (runtime.allocator_defaults) goes back to the kernel
        started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        t0 = time.perf_counter()
        with MemoryWatch() as watch:
            result = fn()
        seconds = time.perf_counter() - t0
        record = {"seconds": round(seconds, 3), **watch.result, "started": started}
        atomic_write_json(marker, {"result": result, **record})
        self.timings[name] = record["seconds"]
        self.stats[name] = {**record, "skipped": False}
        self.status(f"[done] {name} in {format_seconds(seconds)}, peak {record['peak_rss_mb']:.0f} MB "
                    f"(stage {self._count()}, {format_seconds(time.perf_counter() - self._t0)} elapsed)")
        return result

    def summary(self) -> dict[str, Any]:
        """For ``results.json``: ``{"stages": {name: record}, "seconds_total": sum of stage seconds,
        "seconds_this_call": seconds of the stages that ran now, "peak_rss_mb": the largest stage peak}``."""
        ran = [s for s in self.stats.values() if not s.get("skipped")]
        peaks = [s["peak_rss_mb"] for s in self.stats.values() if isinstance(s.get("peak_rss_mb"), (int, float))]
        return {"stages": {k: dict(v) for k, v in self.stats.items()},
                "seconds_total": round(sum(self.timings.values()), 3),
                "seconds_this_call": round(sum(s["seconds"] for s in ran), 3),
                "peak_rss_mb": max(peaks) if peaks else None}


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


__all__ = ["MemoryWatch", "Stages", "format_seconds"]
