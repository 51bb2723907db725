"""Safe threading defaults for CPUs that other jobs share (laptops, cluster nodes, CI runners).

Two settings, both skipped entirely with ``SMOOTH_INFOMAX_THREADS=off`` (or ``--threads off``):

* How OpenMP threads wait, unless the user set ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``. With the default
  policy, threads spin for a while before they sleep; on a CPU that other jobs use, a spinning thread waits
  for a peer that is descheduled (the quick main job took 5.1x its idle time beside one other 2-thread
  process). ``OMP_WAIT_POLICY=PASSIVE`` (sleep at once) fixes that but costs every small parallel region a
  wake-up: on an idle 2-core VM it made a quick-preset training step 2.4x *slower* (95-116 vs 40-48 ms; the
  GRU's per-frame matmuls pay it 40 times per pass). So the choice depends on the machine at start-up
  (:func:`cpu_busy_cores`, CPU time of the usable cores over 50 ms): other jobs using >= 0.5 core ->
  ``OMP_WAIT_POLICY=PASSIVE``; otherwise a bounded spin, ``GOMP_SPINCOUNT=100000`` (as fast as the default
  when idle, 2x faster than it if a competitor appears later: 105 vs 205 ms per step). OpenMP reads these
  once, when torch loads, so this must happen *before the first* ``import torch`` of the process:
  ``import smooth_infomax`` does it (:func:`apply_env_defaults`, no torch import), and so does the command
  line before it imports any command module.
* torch's intra-op threads matched to the cores this process may run on (``os.sched_getaffinity``: a
  ``taskset``, cpuset or scheduler limit counts, the machine's core count does not). ``auto`` uses them all:
  with passive waiting, fewer threads than cores only lose CPU time to the other jobs (measured on 2 cores at
  load 8-11: a quick-preset training step took 494-580 ms with 2 threads, 550-637 ms with 1).
  ``SMOOTH_INFOMAX_THREADS=free`` instead subtracts the other jobs' load (the 1-minute load average, scaled to
  those cores; at least 1); ``=N`` (or ``--threads N``) fixes N; a user-set ``OMP_NUM_THREADS`` is respected.
  Applied by :func:`configure` (the command line calls it; call it yourself from Python, before your work
  starts).

Nothing here imports torch: if torch is already loaded, :func:`configure` calls ``torch.set_num_threads``;
otherwise it sets ``OMP_NUM_THREADS`` for the torch this process will load (and its child processes), only
where the count differs from torch's own default (one thread per usable core).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Mapping, MutableMapping, Optional, Sequence

from .errors import UserError

ENV_VAR = "SMOOTH_INFOMAX_THREADS"
OFF_VALUES = ("off", "0", "none", "no", "false")


class ThreadsError(UserError):
    """A bad ``SMOOTH_INFOMAX_THREADS`` / ``--threads`` value."""


@dataclass
class RuntimeSettings:
    """What :func:`configure` decided (``notes``: one line per choice, for logs and benchmark JSON)."""

    mode: str  # "auto", "free", "fixed" or "off"
    threads: Optional[int] = None
    wait_policy: Optional[str] = None
    notes: list[str] = field(default_factory=list)


def parse_setting(value: Optional[str], source: str = ENV_VAR) -> tuple[str, Optional[int]]:
    """``None``/``''``/``auto`` -> ("auto", None); ``free`` -> ("free", None); ``off`` -> ("off", None);
    ``"3"`` -> ("fixed", 3)."""
    text = (value or "auto").strip().lower()
    if text in ("auto", "free"):
        return text, None
    if text in OFF_VALUES:
        return "off", None
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 1:
        raise ThreadsError(f"{source}={value!r}: use auto, free, off or a number of threads >= 1")
    return "fixed", n


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def load_average() -> Optional[float]:
    """The 1-minute load average of the machine (None where the platform has none)."""
    try:
        return float(os.getloadavg()[0])
    except (OSError, AttributeError):
        return None


def free_cores(usable: int, load: Optional[float], machine_cores: Optional[int] = None) -> int:
    """Cores of ``usable`` not taken by other jobs: ``usable - load * usable / machine_cores``, rounded, in
    ``[1, usable]`` (pure). ``load`` is the machine-wide load average (None: assume all free); it is scaled to
    the usable cores when the process may use only part of the machine."""
    usable = max(1, int(usable))
    if load is None or load <= 0:
        return usable
    share = usable / max(usable, int(machine_cores or usable))
    return int(min(usable, max(1, round(usable - load * share))))


BUSY_THRESHOLD = 0.5  # cores used by other jobs from which threads wait passively
SPIN_COUNT = "100000"  # GOMP_SPINCOUNT on a quiet machine (libgomp's default is 300000)
_WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def _cpu_times(cpus: Optional[set[int]]) -> Optional[tuple[float, float]]:
    """(busy, total) jiffies of the given CPUs from /proc/stat (None where unreadable)."""
    try:
        lines = open("/proc/stat", encoding="ascii").read().splitlines()
    except OSError:
        return None
    busy = total = 0.0
    for line in lines:
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu" or (cpus is not None and int(name[3:]) not in cpus):
            continue
        values = [float(v) for v in rest.split()[:8]]  # user nice system idle iowait irq softirq steal
        total += sum(values)
        busy += sum(values) - values[3] - values[4]
    return (busy, total) if total > 0 else None


def cpu_busy_cores(interval: float = 0.05) -> Optional[float]:
    """Cores of this process's affinity kept busy by other processes over ``interval`` seconds (this process
    sleeps meanwhile); None where /proc/stat is unavailable."""
    cpus = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    first = _cpu_times(cpus)
    if first is None:
        return None
    time.sleep(interval)
    second = _cpu_times(cpus)
    if second is None or second[1] <= first[1]:
        return None
    n = len(cpus) if cpus else (os.cpu_count() or 1)
    return n * (second[0] - first[0]) / (second[1] - first[1])


def wait_policy_default(environ: Mapping[str, str], busy_cores: Optional[float]) -> dict[str, str]:
    """The OpenMP wait variables to set (pure): ``{}`` when the user set one of them or opted out,
    ``{"OMP_WAIT_POLICY": "PASSIVE"}`` when other jobs keep >= :data:`BUSY_THRESHOLD` cores busy, else
    ``{"GOMP_SPINCOUNT": SPIN_COUNT}`` (``busy_cores`` None: unknown, treated as quiet)."""
    if any(environ.get(k) for k in _WAIT_VARS):
        return {}
    try:
        mode, _ = parse_setting(environ.get(ENV_VAR))
    except ThreadsError:
        mode = "auto"  # the bad value is reported by configure()
    if mode == "off":
        return {}
    if busy_cores is not None and busy_cores >= BUSY_THRESHOLD:
        return {"OMP_WAIT_POLICY": "PASSIVE"}
    return {"GOMP_SPINCOUNT": SPIN_COUNT}


def apply_env_defaults(environ: Optional[MutableMapping[str, str]] = None,
                       busy_cores: Optional[float] = None) -> dict[str, str]:
    """Set the OpenMP wait variables of :func:`wait_policy_default` in ``environ`` (default ``os.environ``);
    ``busy_cores`` None measures it (:func:`cpu_busy_cores`, 50 ms) unless nothing is to be decided.

    Returns the variables set. Has an effect on torch only if torch is not loaded yet.
    """
    env = os.environ if environ is None else environ
    if not wait_policy_default(env, 0.0):
        return {}
    values = wait_policy_default(env, cpu_busy_cores() if busy_cores is None else busy_cores)
    env.update(values)
    return values


def choose_threads(setting: Optional[str], environ: Mapping[str, str], usable: int, load: Optional[float],
                   machine_cores: Optional[int] = None) -> RuntimeSettings:
    """Decide the thread count (pure): ``setting`` (the ``--threads`` value) wins over ``SMOOTH_INFOMAX_THREADS``;
    a user-set ``OMP_NUM_THREADS`` is kept in auto mode."""
    if setting is not None:
        mode, n = parse_setting(setting, "--threads")
    else:
        mode, n = parse_setting(environ.get(ENV_VAR))
    if mode == "off":
        return RuntimeSettings("off", notes=[f"threading defaults off ({ENV_VAR}=off or --threads off)"])
    if mode == "fixed":
        return RuntimeSettings("fixed", n, notes=[f"{n} torch threads (set by the user)"])
    if environ.get("OMP_NUM_THREADS"):
        try:
            user = int(environ["OMP_NUM_THREADS"].split(",")[0])
        except ValueError:
            return RuntimeSettings(mode, None, notes=["OMP_NUM_THREADS is set but not a number: left alone"])
        return RuntimeSettings(mode, max(1, user), notes=[f"{user} torch threads (OMP_NUM_THREADS)"])
    load_txt = "unknown" if load is None else f"{load:.2f}"
    n = free_cores(usable, load, machine_cores) if mode == "free" else usable
    return RuntimeSettings(mode, n, notes=[f"{n} torch threads ({mode}): {usable} usable cores, load average "
                                           f"{load_txt} on {machine_cores or usable} cores"])


def configure(threads: Optional[str] = None, environ: Optional[MutableMapping[str, str]] = None,
              torch_module: object = None) -> RuntimeSettings:
    """Apply both defaults to this process; returns what was decided.

    ``threads``: ``auto`` / ``free`` / ``off`` / ``N`` (None: ``SMOOTH_INFOMAX_THREADS`` or auto). ``torch_module``: the
    torch to configure (default: the loaded one, ``sys.modules['torch']``; when torch is not loaded yet,
    ``OMP_NUM_THREADS`` is set instead, so that the torch loaded later starts with that many threads).
    """
    env = os.environ if environ is None else environ
    decided = choose_threads(threads, env, usable_cores(), load_average(), os.cpu_count())
    if decided.mode == "off":
        return decided
    torch = torch_module if torch_module is not None else sys.modules.get("torch")
    values = apply_env_defaults(env)
    decided.wait_policy = env.get("OMP_WAIT_POLICY") or (f"spin {env['GOMP_SPINCOUNT']}"
                                                         if env.get("GOMP_SPINCOUNT") else None)
    if values and torch is not None:
        decided.notes.append(f"{values} set after torch was loaded: no effect in this process")
    if decided.threads is not None:
        if torch is not None:
            torch.set_num_threads(decided.threads)  # type: ignore[attr-defined]
        elif not env.get("OMP_NUM_THREADS") and (decided.mode == "fixed" or decided.threads < usable_cores()):
            # torch's own default is one thread per usable core: set the variable only to change that
            env["OMP_NUM_THREADS"] = str(decided.threads)
    return decided


def threads_option(argv: Sequence[str]) -> Optional[str]:
    """The value of a global ``--threads X`` / ``--threads=X`` given before the sub-command (None if absent)."""
    args = list(argv)
    for i, arg in enumerate(args):
        if arg == "--threads":
            return args[i + 1] if i + 1 < len(args) else ""
        if arg.startswith("--threads="):
            return arg.split("=", 1)[1]
        if not arg.startswith("-"):
            return None  # the sub-command: anything after it is its own
    return None


__all__ = ["ENV_VAR", "RuntimeSettings", "ThreadsError", "apply_env_defaults", "choose_threads", "configure",
           "cpu_busy_cores",
           "free_cores", "load_average", "parse_setting", "threads_option", "usable_cores", "wait_policy_default"]
