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
* torch's intra-op threads matched to the cores other jobs leave free, among those this process may run on
  (``os.sched_getaffinity``: a ``taskset``, cpuset or scheduler limit counts, and so does a cgroup CPU quota such
  as ``docker --cpus``; the machine's core count does not). ``auto`` (the default) measures the other jobs' use of
  those cores at start-up (the same 50 ms measurement) and uses the rest, at least 1 (:func:`threads_for`); a long
  command (the pipeline between its stages, training after every epoch) re-checks with a :class:`ThreadBalancer`,
  so threads come back when the other job ends and go when one starts. Measured on 2 cores beside a 2-thread
  matmul process, the whole quick main job took 1.80x its idle time with 1 thread and 2.35x with 2 (the threads of
  one parallel region wait for each other, and one of them is always descheduled). ``SMOOTH_INFOMAX_THREADS=all``
  uses every usable core whatever the load; ``free`` is ``auto`` (an older name); ``=N`` (or ``--threads N``)
  fixes N; a user-set ``OMP_NUM_THREADS`` is respected (and not re-balanced). Applied by :func:`configure` (the
  command line calls it; call it yourself from Python, before your work starts).

Nothing here imports torch: if torch is already loaded, :func:`configure` calls ``torch.set_num_threads``;
otherwise it sets ``OMP_NUM_THREADS`` for the torch this process will load (and its child processes), only
where the count differs from torch's own default (one thread per usable core).
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, MutableMapping, Optional, Sequence

from .errors import UserError

ENV_VAR = "SMOOTH_INFOMAX_THREADS"
OFF_VALUES = ("off", "0", "none", "no", "false")


class ThreadsError(UserError):
    """A bad ``SMOOTH_INFOMAX_THREADS`` / ``--threads`` value."""


@dataclass
class RuntimeSettings:
    """What :func:`configure` decided (``notes``: one line per choice, for logs and benchmark JSON)."""

    mode: str  # "auto", "all", "fixed" or "off"
    threads: Optional[int] = None
    wait_policy: Optional[str] = None
    notes: list[str] = field(default_factory=list)
    balancer: Optional[ThreadBalancer] = None  # auto mode: re-checks the free cores when asked

    def rebalance(self, *_: Any) -> None:
        """Re-match the threads to the free cores now (a no-op outside auto mode); takes and ignores any
        arguments, so it can be passed as a callback (e.g. training's ``on_epoch``)."""
        if self.balancer is not None:
            self.balancer.update()

    def describe(self) -> dict[str, Any]:
        """For results files: the mode, threads at start, wait policy, the notes and every re-balancing since."""
        return {"mode": self.mode, "threads": self.threads, "wait_policy": self.wait_policy,
                "notes": list(self.notes),
                "thread_changes": list(self.balancer.changes) if self.balancer is not None else []}


def parse_setting(value: Optional[str], source: str = ENV_VAR) -> tuple[str, Optional[int]]:
    """``None``/``''``/``auto``/``free`` -> ("auto", None); ``all`` -> ("all", None); ``off`` -> ("off", None);
    ``"3"`` -> ("fixed", 3)."""
    text = (value or "auto").strip().lower()
    if text in ("auto", "free"):
        return "auto", None
    if text == "all":
        return "all", None
    if text in OFF_VALUES:
        return "off", None
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 1:
        raise ThreadsError(f"{source}={value!r}: use auto, all, off or a number of threads >= 1")
    return "fixed", n


def parse_cpu_quota(quota: str, period: Optional[str] = None) -> Optional[float]:
    """Cores a cgroup CPU limit allows (pure): cgroup v2 ``cpu.max`` text ("200000 100000", "max 100000"), or
    cgroup v1 ``cpu.cfs_quota_us`` with ``period`` (``cpu.cfs_period_us``; a quota of -1 is no limit).
    None: no limit, or text it cannot read."""
    parts = quota.split()
    if period is None and len(parts) == 2:
        quota_text, period_text = parts
    elif period is not None and len(parts) == 1:
        quota_text, period_text = parts[0], period.strip()
    else:
        return None
    try:
        q, per = int(quota_text), int(period_text)
    except ValueError:  # "max": no limit
        return None
    return q / per if q > 0 and per > 0 else None


def _cgroup_cpu_limit() -> Optional[float]:
    """Cores this process's cgroup may use (``docker --cpus``, Kubernetes limits); None where unlimited/unknown."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        rel = path.strip().lstrip("/")
        if controllers == "":  # cgroup v2
            for base in (Path("/sys/fs/cgroup") / rel, Path("/sys/fs/cgroup")):
                try:
                    return parse_cpu_quota((base / "cpu.max").read_text())
                except OSError:
                    continue
        elif "cpu" in controllers.split(","):  # cgroup v1
            for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
                for base in (Path("/sys/fs/cgroup") / mount / rel, Path("/sys/fs/cgroup") / mount):
                    try:
                        return parse_cpu_quota((base / "cpu.cfs_quota_us").read_text(),
                                               (base / "cpu.cfs_period_us").read_text())
                    except OSError:
                        continue
    return None


def usable_cores() -> int:
    """Cores this process may run on, at least 1: its CPU affinity (``taskset``, cpusets), capped by a cgroup CPU
    quota rounded up (``docker --cpus=2`` on a 16-core machine: 2)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = _cgroup_cpu_limit()
    if limit is not None:
        n = min(n, math.ceil(limit - 1e-9))
    return max(1, n)


def threads_for(usable: int, others: Optional[float]) -> int:
    """Threads that fit beside other jobs keeping ``others`` of the ``usable`` cores busy (pure): ``usable``
    minus ``others`` rounded half up, in ``[1, usable]``; ``others`` None (unknown) -> ``usable``."""
    usable = max(1, int(usable))
    if others is None or others <= 0:
        return usable
    return int(min(usable, max(1, usable - math.floor(others + 0.5))))


BUSY_THRESHOLD = 0.5  # cores used by other jobs from which threads wait passively
SPIN_COUNT = "100000"  # GOMP_SPINCOUNT on a quiet machine (libgomp's default is 300000)
_WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def _cpu_times(cpus: Optional[set[int]]) -> Optional[tuple[float, float]]:
    """(busy, total) jiffies of the given CPUs from /proc/stat (None where unreadable)."""
    try:
        lines = Path("/proc/stat").read_text(encoding="ascii").splitlines()
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


def _affinity() -> Optional[set[int]]:
    return set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def _own_cpu_seconds() -> float:
    """CPU seconds this process has used so far (every thread, user + system)."""
    t = os.times()
    return t.user + t.system


def _busy_between(first: Optional[tuple[float, float]], second: Optional[tuple[float, float]],
                  n_cpus: int) -> Optional[float]:
    """Cores (of ``n_cpus``) busy between two :func:`_cpu_times` readings; None when either is missing or no
    time passed."""
    if first is None or second is None or second[1] <= first[1]:
        return None
    return n_cpus * (second[0] - first[0]) / (second[1] - first[1])


def cpu_busy_cores(interval: float = 0.05) -> Optional[float]:
    """Cores of this process's affinity kept busy by other processes over ``interval`` seconds (this process
    sleeps meanwhile); None where /proc/stat is unavailable."""
    cpus = _affinity()
    first = _cpu_times(cpus)
    if first is None:
        return None
    time.sleep(interval)
    return _busy_between(first, _cpu_times(cpus), len(cpus) if cpus else (os.cpu_count() or 1))


def wait_policy_default(environ: Mapping[str, str], busy_cores: Optional[float]) -> dict[str, str]:
    """The OpenMP wait variables to set (pure): ``{}`` when the user set one of them or opted out,
    ``{"OMP_WAIT_POLICY": "PASSIVE"}`` when other jobs keep >= :data:`BUSY_THRESHOLD` cores busy, else
    ``{"GOMP_SPINCOUNT": SPIN_COUNT}`` (``busy_cores`` None: unknown, treated as quiet)."""
    if any(environ.get(k) for k in _WAIT_VARS) or setting_is_off(None, environ):  # a bad value: configure()
        return {}
    if busy_cores is not None and busy_cores >= BUSY_THRESHOLD:
        return {"OMP_WAIT_POLICY": "PASSIVE"}
    return {"GOMP_SPINCOUNT": SPIN_COUNT}


CHOSEN_VAR = "SMOOTH_INFOMAX_CHOSEN"  # "PID KEY=VALUE ...": variables a smooth-infomax process set for itself


def forget_inherited_choices(environ: MutableMapping[str, str]) -> None:
    """Remove the variables a *parent* smooth-infomax process chose for itself (they are in ``CHOSEN_VAR`` with
    the parent's pid and still hold its value), so that this process decides them again instead of taking them
    for the user's settings; the user's own values are never touched."""
    mark = environ.get(CHOSEN_VAR, "").split()
    if not mark or mark[0] == str(os.getpid()):
        return
    for item in mark[1:]:
        key, _, value = item.partition("=")
        if environ.get(key) == value:
            del environ[key]
    del environ[CHOSEN_VAR]


def _set_chosen(environ: MutableMapping[str, str], values: Mapping[str, str]) -> None:
    """Set ``values`` and remember them (with this pid) as this process's own choice."""
    mark = environ.get(CHOSEN_VAR, "").split()
    if not mark or mark[0] != str(os.getpid()):
        mark = [str(os.getpid())]
    for key, value in values.items():
        environ[key] = value
        mark = [m for m in mark if not m.startswith(key + "=")] + [f"{key}={value}"]
    environ[CHOSEN_VAR] = " ".join(mark)


def apply_env_defaults(environ: Optional[MutableMapping[str, str]] = None,
                       busy_cores: Optional[float] = None) -> dict[str, str]:
    """Set the OpenMP wait variables of :func:`wait_policy_default` in ``environ`` (default ``os.environ``);
    ``busy_cores`` None measures it (:func:`cpu_busy_cores`, 50 ms) unless nothing is to be decided.

    Returns the variables set. Has an effect on torch only if torch is not loaded yet.
    """
    env = os.environ if environ is None else environ
    forget_inherited_choices(env)
    if not wait_policy_default(env, 0.0):
        return {}
    values = wait_policy_default(env, cpu_busy_cores() if busy_cores is None else busy_cores)
    _set_chosen(env, values)
    return values


class ThreadBalancer:
    """Re-matches torch's intra-op threads to the cores other jobs leave free, whenever :meth:`update` is called
    (between pipeline stages, after training epochs; never inside a parallel region).

    Other jobs' use of this process's cores since the previous look = all busy time on those cores
    (``/proc/stat``) minus this process's own CPU time (``os.times``), over the wall time between; the threads
    become :func:`threads_for` of it. Looks are at least ``min_interval`` seconds apart (a shorter call returns
    the current count and keeps measuring over the longer window). ``changes`` lists every change made (for
    logs); ``log`` gets one line per change. ``stat`` / ``own`` / ``clock`` / ``torch_module``: injectable
    readers and torch (tests); the default torch is the loaded one, looked up at each change.
    """

    def __init__(self, usable: int, threads: int, *, min_interval: float = 2.0,
                 log: Optional[Callable[[str], None]] = None, cpus: Optional[set[int]] = None,
                 stat: Callable[[Optional[set[int]]], Optional[tuple[float, float]]] = _cpu_times,
                 own: Callable[[], float] = _own_cpu_seconds, clock: Callable[[], float] = time.monotonic,
                 ticks_per_second: Optional[float] = None, torch_module: object = None):
        self.usable = max(1, int(usable))
        self.threads = max(1, int(threads))
        self.min_interval = min_interval
        self.log = log
        self.changes: list[dict[str, Any]] = []
        self._cpus = _affinity() if cpus is None else cpus
        self._n_cpus = len(self._cpus) if self._cpus else (os.cpu_count() or 1)
        self._stat, self._own, self._clock, self._torch = stat, own, clock, torch_module
        if ticks_per_second is None:
            try:
                ticks_per_second = float(os.sysconf("SC_CLK_TCK"))
            except (ValueError, OSError, AttributeError):
                ticks_per_second = 100.0
        self._hz = ticks_per_second
        self._last = self._sample()

    def _sample(self) -> tuple[float, Optional[tuple[float, float]], float]:
        return self._clock(), self._stat(self._cpus), self._own()

    def others_busy(self) -> Optional[float]:
        """Cores of this process's set that other processes kept busy since the previous look (None: unknown);
        starts a new window."""
        t0, stat0, own0 = self._last
        self._last = now = self._sample()
        t1, stat1, own1 = now
        busy_cores = _busy_between(stat0, stat1, self._n_cpus)
        if busy_cores is None or t1 <= t0:
            return None
        return max(0.0, busy_cores - (own1 - own0) / (t1 - t0))

    def update(self) -> int:
        """Look again (if ``min_interval`` has passed) and set the thread count; returns the count in use."""
        if self._clock() - self._last[0] < self.min_interval:
            return self.threads
        others = self.others_busy()
        if others is None:
            return self.threads
        n = threads_for(self.usable, others * self.usable / max(self.usable, self._n_cpus))
        if n != self.threads:
            torch = self._torch if self._torch is not None else sys.modules.get("torch")
            if torch is None:
                return self.threads
            torch.set_num_threads(n)  # type: ignore[attr-defined]
            self.changes.append({"threads": n, "before": self.threads, "others_busy_cores": round(others, 2)})
            if self.log is not None:
                self.log(f"threads: {self.threads} -> {n} (other jobs keep {others:.1f} of {self._n_cpus} "
                         f"cores busy)")
            self.threads = n
        return self.threads


def choose_threads(setting: Optional[str], environ: Mapping[str, str], usable: int,
                   busy_cores: Optional[float]) -> RuntimeSettings:
    """Decide the thread count (pure): ``setting`` (the ``--threads`` value) wins over ``SMOOTH_INFOMAX_THREADS``;
    a user-set ``OMP_NUM_THREADS`` is kept in auto mode. ``busy_cores``: other jobs' use of the usable cores
    (:func:`cpu_busy_cores`; None: unknown). The balancer is not created here."""
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
            return RuntimeSettings("fixed", None, notes=["OMP_NUM_THREADS is set but not a number: left alone"])
        return RuntimeSettings("fixed", max(1, user), notes=[f"{user} torch threads (OMP_NUM_THREADS)"])
    busy_txt = "unknown" if busy_cores is None else f"{busy_cores:.1f}"
    if mode == "all":
        return RuntimeSettings("all", usable, notes=[f"{usable} torch threads (all): {usable} usable cores"])
    n = threads_for(usable, busy_cores)
    return RuntimeSettings("auto", n, notes=[f"{n} torch threads (auto): {usable} usable cores, other jobs keep "
                                             f"{busy_txt} of them busy"])


def configure(threads: Optional[str] = None, environ: Optional[MutableMapping[str, str]] = None,
              torch_module: object = None, log: Optional[Callable[[str], None]] = None) -> RuntimeSettings:
    """Apply both defaults to this process; returns what was decided (in auto mode with a ``balancer``:
    call ``settings.rebalance()`` between pieces of work to follow the other jobs; ``log`` gets its changes).

    ``threads``: ``auto`` / ``all`` / ``off`` / ``N`` (None: ``SMOOTH_INFOMAX_THREADS`` or auto). ``torch_module``:
    the torch to configure (default: the loaded one, ``sys.modules['torch']``; when torch is not loaded yet,
    ``OMP_NUM_THREADS`` is set instead, so that the torch loaded later starts with that many threads).
    """
    env = os.environ if environ is None else environ
    forget_inherited_choices(env)  # a parent smooth-infomax process's choices are not the user's settings
    usable = usable_cores()
    if setting_is_off(threads, env):
        return choose_threads(threads, env, usable, None)
    busy = cpu_busy_cores()
    mark = env.get(CHOSEN_VAR, "").split()  # this process's own earlier choice of OMP_NUM_THREADS is not the user's
    own = f"OMP_NUM_THREADS={env.get('OMP_NUM_THREADS')}" in mark[1:]
    view = {k: v for k, v in env.items() if not (own and k == "OMP_NUM_THREADS")}
    decided = choose_threads(threads, view, usable, busy)
    torch = torch_module if torch_module is not None else sys.modules.get("torch")
    values = apply_env_defaults(env, busy_cores=busy)
    decided.wait_policy = env.get("OMP_WAIT_POLICY") or (f"spin {env['GOMP_SPINCOUNT']}"
                                                         if env.get("GOMP_SPINCOUNT") else None)
    if values and torch is not None:
        decided.notes.append(f"{values} set after torch was loaded: no effect in this process")
    if decided.threads is not None:
        if torch is not None:
            torch.set_num_threads(decided.threads)  # type: ignore[attr-defined]
        else:
            if own:  # this process's own earlier choice: replaced below where still needed
                del env["OMP_NUM_THREADS"]
            if not env.get("OMP_NUM_THREADS") and (decided.mode == "fixed" or decided.threads < usable):
                # torch's own default is one thread per usable core: set the variable only to change that
                _set_chosen(env, {"OMP_NUM_THREADS": str(decided.threads)})
    if decided.mode == "auto" and decided.threads is not None:
        decided.balancer = ThreadBalancer(usable, decided.threads, log=log, torch_module=torch_module)
    return decided


def setting_is_off(threads: Optional[str], environ: Mapping[str, str]) -> bool:
    """Whether ``--threads`` / ``SMOOTH_INFOMAX_THREADS`` turn the defaults off (a bad value is not off)."""
    try:
        mode, _ = parse_setting(threads, "--threads") if threads is not None else parse_setting(environ.get(ENV_VAR))
    except ThreadsError:
        return False
    return mode == "off"


MALLOC_ENV_VAR = "SMOOTH_INFOMAX_MALLOC"
_MALLOC_USER_VARS = ("MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


@functools.cache
def _glibc() -> Optional[ctypes.CDLL]:
    """The process's GNU C library (None elsewhere: macOS, Windows, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        lib = ctypes.CDLL(None)
    except OSError:  # pragma: no cover - no dynamic loader
        return None
    return lib if hasattr(lib, "gnu_get_libc_version") and hasattr(lib, "mallopt") else None


def allocator_defaults(environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """Keep freed memory in the process for reuse (glibc only); returns a note, or None where nothing was set.

    glibc hands every block over 32 MiB straight back to the kernel when it is freed, so a training step that
    allocates and frees its activations page-faults them in again, zero-filled, every step: at paper scale,
    batch 64, that doubled the step (10.6 s against 5.7 s with the setting, one run, 2 cores). This sets
    ``mallopt(M_MMAP_MAX, 0)`` (large blocks come from the heap) and ``mallopt(M_TRIM_THRESHOLD, -1)``
    (freed heap stays mapped), the effect of ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<huge>``; the
    pipeline hands the free memory back between its stages (:func:`release_memory`). Left alone where the user
    set one of those variables, a ``glibc.malloc`` tunable or another allocator (``LD_PRELOAD``), or
    ``SMOOTH_INFOMAX_MALLOC=off``. Affects the whole process: the command line calls it; call it from Python only
    for work of the same kind.
    """
    env = os.environ if environ is None else environ
    if (env.get(MALLOC_ENV_VAR, "").strip().lower() in OFF_VALUES or any(env.get(v) for v in _MALLOC_USER_VARS)
            or "glibc.malloc" in env.get("GLIBC_TUNABLES", "") or "malloc" in env.get("LD_PRELOAD", "")):
        return None
    lib = _glibc()
    if lib is None:
        return None
    if not (lib.mallopt(_M_MMAP_MAX, 0) and lib.mallopt(_M_TRIM_THRESHOLD, -1)):
        return None  # pragma: no cover - refused by this C library
    return "allocator: freed memory kept for reuse (mallopt M_MMAP_MAX=0, M_TRIM_THRESHOLD=-1)"


def release_memory() -> bool:
    """Return the process's free heap memory to the kernel (glibc ``malloc_trim(0)``); False where unsupported."""
    lib = _glibc()
    if lib is None or not hasattr(lib, "malloc_trim"):
        return False
    lib.malloc_trim(0)
    return True


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


__all__ = ["CHOSEN_VAR", "ENV_VAR", "MALLOC_ENV_VAR", "RuntimeSettings", "ThreadBalancer", "ThreadsError",
           "allocator_defaults", "apply_env_defaults", "choose_threads", "configure", "cpu_busy_cores",
           "forget_inherited_choices", "parse_cpu_quota", "parse_setting", "release_memory", "setting_is_off",
           "threads_for", "threads_option", "usable_cores", "wait_policy_default"]
