"""Named, resumable stages: the mechanism behind ``smooth-infomax run`` and ``smooth-infomax reproduce``.

A finished stage leaves ``OUT/stages/<name>.json`` (its JSON result and wall time); running the same name again
returns that result without redoing the work. A stage killed half-way left no marker and is redone (its own
checkpoints make that cheap).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from .checkpoint import atomic_write_json


class Stages:
    """Runs named stages once; results are JSON files in ``OUT/stages``."""

    def __init__(self, out: Path, log: Callable[[str], None] = print):
        self.dir = out / "stages"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.timings: dict[str, float] = {}

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        marker = self.dir / f"{name}.json"
        if marker.exists():
            try:
                done = json.loads(marker.read_text())["result"]
            except (OSError, ValueError, KeyError, TypeError):  # damaged by hand or by a failing disk: redo it
                self.log(f"[redo] {name} (its marker {marker} is unreadable)")
            else:
                self.log(f"[skip] {name} (done)")
                return done
        self.log(f"[run ] {name}")
        t0 = time.time()
        result = fn()
        self.timings[name] = time.time() - t0
        atomic_write_json(marker, {"result": result, "seconds": self.timings[name]})
        return result
