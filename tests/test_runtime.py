"""Threading defaults for shared CPUs (smooth_infomax.runtime): pure decisions, then their effect."""

import os
import subprocess
import sys
import threading

import pytest

from smooth_infomax import runtime
from smooth_infomax.runtime import (
    ThreadBalancer,
    ThreadsError,
    choose_threads,
    parse_setting,
    threads_for,
    threads_option,
)


def _visible(env):
    """The environment without the package's own bookkeeping variable (runtime.CHOSEN_VAR)."""
    return {k: v for k, v in env.items() if k != runtime.CHOSEN_VAR}


class FakeTorch:
    def __init__(self):
        self.threads = None

    def set_num_threads(self, n):
        self.threads = n


def test_parse_setting():
    assert parse_setting(None) == ("auto", None)
    assert parse_setting(" Auto ") == ("auto", None)
    assert parse_setting("free") == ("auto", None)  # the older name of auto
    assert parse_setting("all") == ("all", None)
    assert parse_setting("off") == ("off", None)
    assert parse_setting("3") == ("fixed", 3)
    for bad in ("-1", "zero", "1.5"):
        with pytest.raises(ThreadsError, match="SMOOTH_INFOMAX_THREADS"):
            parse_setting(bad)


@pytest.mark.parametrize("usable, others, expected", [
    (2, 0.0, 2), (2, None, 2), (2, 0.4, 2), (2, 0.5, 1), (2, 1.3, 1), (2, 2.0, 1), (2, 9.0, 1),
    (8, 3.0, 5), (8, 2.6, 5), (4, -0.1, 4), (1, 0.0, 1), (1, 5.0, 1)])
def test_threads_for(usable, others, expected):
    assert threads_for(usable, others) == expected


@pytest.mark.parametrize("quota, period, cores", [
    ("200000 100000\n", None, 2.0), ("150000 100000", None, 1.5), ("max 100000", None, None),
    ("-1\n", "100000\n", None), ("50000", "100000", 0.5), ("garbage", None, None), ("", None, None),
    ("0 100000", None, None)])
def test_parse_cpu_quota(quota, period, cores):
    assert runtime.parse_cpu_quota(quota, period) == cores


def test_usable_cores_caps_the_affinity_by_a_cgroup_quota(monkeypatch):
    monkeypatch.setattr(runtime, "_cgroup_cpu_limit", lambda: 1.5)
    assert runtime.usable_cores() == min(2, len(os.sched_getaffinity(0)))  # 1.5 cores of quota: 2 threads
    monkeypatch.setattr(runtime, "_cgroup_cpu_limit", lambda: 0.5)
    assert runtime.usable_cores() == 1
    monkeypatch.setattr(runtime, "_cgroup_cpu_limit", lambda: None)
    assert runtime.usable_cores() == len(os.sched_getaffinity(0))


def test_choose_threads_precedence():
    assert choose_threads(None, {}, 2, 0.0).threads == 2
    assert choose_threads(None, {}, 2, None).threads == 2  # unknown load: every core
    assert choose_threads(None, {}, 2, 2.0).threads == 1  # auto: the cores other jobs leave free, at least 1
    assert choose_threads("free", {}, 2, 2.0).threads == 1
    assert choose_threads("all", {}, 2, 2.0).threads == 2  # all: every usable core, whatever the load
    assert choose_threads(None, {}, 8, 3.0).threads == 5
    assert choose_threads(None, {"OMP_NUM_THREADS": "3"}, 2, 2.0).threads == 3  # the user's setting wins
    assert choose_threads(None, {"OMP_NUM_THREADS": "3"}, 2, 2.0).mode == "fixed"  # ... and is not re-balanced
    assert choose_threads("4", {"OMP_NUM_THREADS": "3"}, 2, 0.0).threads == 4  # --threads wins over all
    assert choose_threads(None, {"SMOOTH_INFOMAX_THREADS": "5"}, 2, 0.0).threads == 5
    assert choose_threads(None, {"SMOOTH_INFOMAX_THREADS": "off"}, 2, 0.0).mode == "off"
    with pytest.raises(ThreadsError, match="--threads"):
        choose_threads("many", {}, 2, 0.0)


class FakeMachine:
    """/proc/stat and os.times of a 2-core machine, advanced by hand: ``run(seconds, own=..., others=...)``."""

    def __init__(self, hz=100.0):
        self.hz, self.t, self.busy, self.total, self.own = hz, 0.0, 0.0, 0.0, 0.0

    def run(self, seconds, own, others, cores=2):
        self.t += seconds
        self.total += cores * seconds * self.hz
        self.busy += min(cores, own + others) * seconds * self.hz
        self.own += own * seconds

    def balancer(self, threads=2, **kw):
        return ThreadBalancer(2, threads, cpus={0, 1}, stat=lambda cpus: (self.busy, self.total),
                              own=lambda: self.own, clock=lambda: self.t, ticks_per_second=self.hz, **kw)


def test_thread_balancer_follows_other_jobs():
    machine, torch, lines = FakeMachine(), FakeTorch(), []
    bal = machine.balancer(torch_module=torch, log=lines.append)
    machine.run(10, own=1.0, others=1.0)  # a competitor took one core from our two threads
    assert bal.others_busy() == pytest.approx(1.0)
    machine.run(10, own=1.0, others=1.0)
    assert bal.update() == 1 and torch.threads == 1
    assert bal.changes == [{"threads": 1, "before": 2, "others_busy_cores": 1.0}]
    assert lines == ["threads: 2 -> 1 (other jobs keep 1.0 of 2 cores busy)"]
    machine.run(10, own=0.7, others=1.3)  # one thread beside the 2-thread competitor: stays at one
    assert bal.update() == 1 and len(bal.changes) == 1
    machine.run(10, own=1.0, others=0.05)  # the competitor ended
    assert bal.update() == 2 and torch.threads == 2
    machine.run(1.0, own=0.1, others=1.9)  # a look less than min_interval after the last one: no change yet
    assert bal.update() == 2
    machine.run(1.5, own=0.1, others=1.9)  # the window now spans both pieces
    assert bal.update() == 1


def test_thread_balancer_without_proc_stat_keeps_the_threads():
    torch = FakeTorch()
    clock = iter(range(0, 100, 5)).__next__
    bal = ThreadBalancer(2, 2, cpus={0, 1}, stat=lambda cpus: None, own=lambda: 0.0, clock=clock, torch_module=torch)
    assert bal.update() == 2 and bal.others_busy() is None and torch.threads is None


def test_rebalance_is_a_callback_and_a_no_op_without_balancer():
    machine, torch = FakeMachine(), FakeTorch()
    settings = runtime.RuntimeSettings("auto", 2, balancer=machine.balancer(torch_module=torch))
    machine.run(5, own=0.0, others=2.0)
    settings.rebalance(3, {"m0": {}})  # the on_epoch signature
    assert torch.threads == 1
    runtime.RuntimeSettings("fixed", 2).rebalance()  # nothing to do


def test_wait_policy_depends_on_the_load_and_respects_the_user():
    env = {}
    assert runtime.apply_env_defaults(env, busy_cores=1.5) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert _visible(env) == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {}
    assert runtime.apply_env_defaults(env, busy_cores=0.1) == {"GOMP_SPINCOUNT": runtime.SPIN_COUNT}
    assert _visible(env) == {"GOMP_SPINCOUNT": runtime.SPIN_COUNT}
    for user in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "5"}, {"SMOOTH_INFOMAX_THREADS": "off"}):
        env = dict(user)
        assert runtime.apply_env_defaults(env, busy_cores=2.0) == {} and env == user
    assert runtime.wait_policy_default({}, None) == {"GOMP_SPINCOUNT": runtime.SPIN_COUNT}  # unknown: quiet


def test_cpu_busy_cores_sees_a_busy_thread():
    busy = runtime.cpu_busy_cores(0.05)
    if busy is None:
        pytest.skip("no /proc/stat here")
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            sum(range(1000))

    worker = threading.Thread(target=spin)
    worker.start()
    try:
        loaded = runtime.cpu_busy_cores(0.2)
    finally:
        stop.set()
        worker.join()
    assert 0.0 <= busy <= runtime.usable_cores() + 0.01
    assert loaded >= 0.5  # the spinning thread is another "job" while the caller sleeps


def test_configure_sets_torch_threads_when_torch_is_loaded(monkeypatch):
    fake, env = FakeTorch(), {}
    monkeypatch.setattr(runtime, "cpu_busy_cores", lambda interval=0.05: 2.0)
    decided = runtime.configure("1", environ=env, torch_module=fake)
    assert fake.threads == 1 and decided.threads == 1 and decided.wait_policy == "PASSIVE"
    assert decided.balancer is None  # fixed by the user: never re-balanced
    assert any("after torch was loaded" in n for n in decided.notes)
    fake, env = FakeTorch(), {"SMOOTH_INFOMAX_THREADS": "off"}
    assert runtime.configure(None, environ=env, torch_module=fake).mode == "off"
    assert fake.threads is None and env == {"SMOOTH_INFOMAX_THREADS": "off"}


def test_configure_before_torch_sets_the_variable_only_to_change_the_default(monkeypatch):
    monkeypatch.setattr(runtime, "usable_cores", lambda: 2)
    monkeypatch.setattr(runtime.sys, "modules", {k: v for k, v in sys.modules.items() if k != "torch"})
    monkeypatch.setattr(runtime, "cpu_busy_cores", lambda interval=0.05: 0.1)
    env = {}
    decided = runtime.configure(None, environ=env)
    assert _visible(env) == {"GOMP_SPINCOUNT": runtime.SPIN_COUNT}  # 2 free cores: torch's own default, nothing to set
    assert decided.threads == 2 and isinstance(decided.balancer, ThreadBalancer)
    monkeypatch.setattr(runtime, "cpu_busy_cores", lambda interval=0.05: 2.0)
    env = {}
    decided = runtime.configure(None, environ=env)
    assert decided.threads == 1 and _visible(env) == {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    env = {}
    assert runtime.configure("all", environ=env).threads == 2 and _visible(env) == {"OMP_WAIT_POLICY": "PASSIVE"}


def test_a_parent_processs_own_choices_are_decided_again_but_the_users_are_kept(monkeypatch):
    monkeypatch.setattr(runtime, "usable_cores", lambda: 2)
    monkeypatch.setattr(runtime.sys, "modules", {k: v for k, v in sys.modules.items() if k != "torch"})
    monkeypatch.setattr(runtime, "cpu_busy_cores", lambda interval=0.05: 2.0)
    env = {}
    runtime.configure(None, environ=env)  # a busy machine: PASSIVE and 1 thread, remembered as our own
    assert env["OMP_NUM_THREADS"] == "1" and env[runtime.CHOSEN_VAR].split()[0] == str(os.getpid())
    child = dict(env, **{runtime.CHOSEN_VAR: env[runtime.CHOSEN_VAR].replace(str(os.getpid()), "1", 1)})
    monkeypatch.setattr(runtime, "cpu_busy_cores", lambda interval=0.05: 0.0)  # the child starts on a quiet one
    decided = runtime.configure(None, environ=child)
    assert decided.threads == 2 and decided.mode == "auto" and decided.balancer is not None
    assert _visible(child) == {"GOMP_SPINCOUNT": runtime.SPIN_COUNT}
    # the same variables set by the user (no marker, or a marker that no longer matches) are kept
    user = {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", runtime.CHOSEN_VAR: "1 OMP_NUM_THREADS=3"}
    decided = runtime.configure(None, environ=user)
    assert decided.threads == 1 and decided.mode == "fixed" and user["OMP_WAIT_POLICY"] == "PASSIVE"
    same = dict(env)  # this process's own marker: the wait policy stands, the threads are its own to re-decide
    decided = runtime.configure(None, environ=same)
    assert decided.mode == "auto" and decided.threads == 2 and same["OMP_WAIT_POLICY"] == "PASSIVE"
    assert "OMP_NUM_THREADS" not in same  # torch, loaded later, takes its own default: every usable core


def test_threads_option_reads_only_the_global_flag():
    assert threads_option(["--threads", "2", "run", "--out", "x"]) == "2"
    assert threads_option(["--debug", "--threads=off", "train"]) == "off"
    assert threads_option(["train", "--threads", "3"]) is None
    assert threads_option([]) is None


def test_cli_reports_a_bad_threads_value(capsys):
    from smooth_infomax.cli import main

    assert main(["--threads", "nope", "--help"]) == 2
    assert "--threads='nope'" in capsys.readouterr().err


@pytest.mark.slow
def test_importing_the_package_sets_the_wait_policy_before_torch_loads():
    code = ("import os, smooth_infomax, torch; e = os.environ; "
            "print(e.get('OMP_WAIT_POLICY') or e.get('GOMP_SPINCOUNT'), 'torch' in __import__('sys').modules)")
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "SMOOTH_INFOMAX_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    policy, loaded = out.stdout.split()
    assert policy in ("PASSIVE", runtime.SPIN_COUNT) and loaded == "True"
    env["SMOOTH_INFOMAX_THREADS"] = "off"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["None", "True"]


def _allocator_note(**env_extra):
    """runtime.allocator_defaults() in a fresh process (it changes that process's allocator), without torch."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != runtime.MALLOC_ENV_VAR}
    env.update(env_extra)
    code = "from smooth_infomax import runtime; print(runtime.allocator_defaults()); print(runtime.release_memory())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.split("\n")[:2]


def test_allocator_defaults_keep_freed_memory_unless_the_user_chose():
    note, released = _allocator_note()
    if runtime._glibc() is None:
        assert (note, released) == ("None", "False")
        return
    assert "M_MMAP_MAX=0" in note and released == "True"
    for user in ({"MALLOC_MMAP_MAX_": "65536"}, {"MALLOC_TRIM_THRESHOLD_": "1"}, {"SMOOTH_INFOMAX_MALLOC": "off"},
                 {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"}, {"LD_PRELOAD": "/nonexistent/libjemalloc.so"}):
        assert _allocator_note(**user)[0] == "None", user


def test_the_run_command_hands_the_settings_to_the_pipeline(monkeypatch, tmp_path):
    from smooth_infomax import pipeline
    from smooth_infomax.cli import main

    seen = {}
    monkeypatch.setattr(pipeline, "run_pipeline", lambda *args, **kwargs: seen.update(kwargs))
    assert main(["--threads", "off", "run", "--out", str(tmp_path)]) == 0
    assert isinstance(seen["runtime"], runtime.RuntimeSettings) and seen["runtime"].mode == "off"
