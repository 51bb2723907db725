"""The main job as a new user runs it (``smooth-infomax run --preset quick`` from a ready .venv), idle and beside
a competing 2-thread process, plus what its results.json says: stage times and whether pre-training beats the
random-init twins.

The job runs in a clean environment: the threading and allocator variables (``OMP_WAIT_POLICY``,
``OMP_NUM_THREADS``, ``SMOOTH_INFOMAX_THREADS``, ``SMOOTH_INFOMAX_MALLOC``, glibc's ``MALLOC_*_``) are removed, so
the package's own defaults (smooth_infomax/runtime.py) are what is measured.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

CLEAN_ENV = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "SMOOTH_INFOMAX_THREADS", "SMOOTH_INFOMAX_MALLOC",
             "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")

# The competitor stops by itself once the benchmark that started it is gone (its parent changes: an
# interrupted or killed benchmark must not leave it loading the machine), and after ``max_seconds``.
COMPETITOR = """
import os, time, torch
torch.set_num_threads({threads})
parent, t0 = os.getppid(), time.monotonic()
a = torch.randn(1024, 1024)
b = torch.randn(1024, 1024)
print("ready", flush=True)
while os.getppid() == parent and time.monotonic() - t0 < {max_seconds}:
    torch.mm(a, b)
"""


def job_env(src: Optional[Path] = None) -> dict[str, str]:
    """The user's environment without any threading settings (and with ``src`` first on PYTHONPATH)."""
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    if src is not None:
        env["PYTHONPATH"] = str(src) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def start_competitor(python: str, threads: int = 2, max_seconds: float = 7200) -> subprocess.Popen:
    """A process that keeps ``threads`` threads busy with float32 matmuls until it is stopped, its parent
    exits, or ``max_seconds`` pass (whichever comes first)."""
    env = job_env()
    code = COMPETITOR.format(threads=threads, max_seconds=float(max_seconds))
    proc = subprocess.Popen([python, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("ready"):
        proc.kill()
        raise RuntimeError("the competing process did not start")
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_main_job(python: str, out_dir: Path, preset: str, overrides: list[str], src: Optional[Path],
                 timeout: float) -> dict[str, Any]:
    """Run the job once into ``out_dir``; wall seconds, exit code, the stage timings and the probe check."""
    cmd = [python, "-m", "smooth_infomax", "run", "--preset", preset, "--out", str(out_dir)]
    for item in overrides:
        cmd += ["--set", item]
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=job_env(src), capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - t
    row: dict[str, Any] = {"command": " ".join(cmd[1:]), "seconds": seconds, "exit_code": proc.returncode}
    if proc.returncode != 0:
        row["error_tail"] = (proc.stderr or proc.stdout).strip().splitlines()[-8:]
        return row
    results_file = out_dir / "results.json"
    try:
        results = json.loads(results_file.read_text())
    except (OSError, ValueError) as exc:
        row["error_tail"] = [f"cannot read {results_file}: {exc}"]
        return row
    timings = results.get("timings", {})
    stages = {name: rec.get("seconds") for name, rec in timings.get("stages", {}).items()}
    row["stage_seconds"] = stages
    row["stage_peak_rss_mb"] = {name: rec.get("peak_rss_mb") for name, rec in timings.get("stages", {}).items()}
    probe = [v for k, v in stages.items() if k.startswith("probe") and isinstance(v, (int, float))]
    row["probe_stage_seconds_max"] = max(probe) if probe else None
    row["pretraining"] = pretraining_check(results.get("probes", {}))
    return row


def _accuracy(entry: Any) -> Optional[float]:
    if isinstance(entry, dict):
        for key in ("accuracy_mean", "accuracy"):
            if isinstance(entry.get(key), (int, float)):
                return float(entry[key])
    return None


def pretraining_check(probes: dict[str, Any]) -> dict[str, Any]:
    """For every model, task and module: encoder accuracy minus its random-init twin's (percentage points).

    ``probes``: results.json's ``probes`` ({model: {task: {"results": {"encoder" | "random-init" | ...:
    {module: {"accuracy_mean": ...}}}}}}). The twin of a model is its own ``random-init`` entry, else the first
    model's (older layouts computed the baselines once). ``all_above``: every margin > 0.
    """
    margins: dict[str, dict[str, dict[str, float]]] = {}
    shared_twin: dict[str, Any] = {}
    for tasks in probes.values():
        for task, res in (tasks or {}).items():
            twin = (res or {}).get("results", {}).get("random-init")
            if twin and task not in shared_twin:
                shared_twin[task] = twin
    missing = []
    for model, tasks in probes.items():
        for task, res in (tasks or {}).items():
            results = (res or {}).get("results", {})
            enc, twin = results.get("encoder", {}), results.get("random-init") or shared_twin.get(task, {})
            for module, entry in enc.items():
                a, b = _accuracy(entry), _accuracy(twin.get(module))
                if a is None or b is None:
                    missing.append(f"{model}/{task}/{module}")
                    continue
                margins.setdefault(model, {}).setdefault(task, {})[module] = round(100 * (a - b), 2)
    flat = [v for t in margins.values() for m in t.values() for v in m.values()]
    return {"margin_points": margins, "min_margin_points": min(flat) if flat else None,
            "all_above": bool(flat) and all(v > 0 for v in flat) and not missing, "missing": missing}


def main_job_section(python: str, preset: str, overrides: list[str], src: Optional[Path], keep: Optional[Path],
                     competitor_threads: int, log: Callable[[str], None], timeout: float = 3600,
                     shared: bool = True) -> dict[str, Any]:
    """Idle run, then (``shared``) the same run beside the competing process; ``shared_cpu_ratio``."""
    tmp = None
    if keep is None:
        tmp = tempfile.TemporaryDirectory(prefix="sim-bench-main-")
        root = Path(tmp.name)
    else:
        root = keep
        root.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"preset": preset, "overrides": overrides, "load_average_before": os.getloadavg()}
    try:
        log(f"main job: {preset} preset, idle")
        out["idle"] = run_main_job(python, root / "idle", preset, overrides, src, timeout)
        log(f"  idle: {out['idle']['seconds']:.0f}s (exit {out['idle']['exit_code']})")
        if shared:
            log(f"main job: beside a competing {competitor_threads}-thread process")
            comp = start_competitor(python, competitor_threads)
            try:
                time.sleep(2.0)
                out["shared"] = run_main_job(python, root / "shared", preset, overrides, src, timeout)
            finally:
                stop(comp)
            log(f"  shared: {out['shared']['seconds']:.0f}s (exit {out['shared']['exit_code']})")
            if out["idle"]["exit_code"] == 0 and out["shared"]["exit_code"] == 0:
                out["shared_cpu_ratio"] = out["shared"]["seconds"] / out["idle"]["seconds"]
    finally:
        if tmp is not None:
            tmp.cleanup()
    out["competitor"] = {"threads": competitor_threads, "work": "float32 1024x1024 matmuls in a loop"}
    return out


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(pretraining_check(json.loads(Path(sys.argv[1]).read_text()).get("probes", {})), indent=2))
