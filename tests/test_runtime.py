"""Threading defaults for shared CPUs (smooth_infomax.runtime): pure decisions, then their effect."""

import os
import subprocess
import sys
import threading

import pytest

from smooth_infomax import runtime
from smooth_infomax.runtime import ThreadsError, choose_threads, free_cores, parse_setting, threads_option


class FakeTorch:
    def __init__(self):
        self.threads = None

    def set_num_threads(self, n):
        self.threads = n


def test_parse_setting():
    assert parse_setting(None) == ("auto", None)
    assert parse_setting(" Auto ") == ("auto", None)
    assert parse_setting("free") == ("free", None)
    assert parse_setting("off") == ("off", None)
    assert parse_setting("3") == ("fixed", 3)
    for bad in ("-1", "zero", "1.5"):
        with pytest.raises(ThreadsError, match="SMOOTH_INFOMAX_THREADS"):
            parse_setting(bad)


@pytest.mark.parametrize("usable, load, machine, expected", [
    (2, 0.0, 2, 2), (2, None, 2, 2), (2, 0.4, 2, 2), (2, 0.6, 2, 1), (2, 2.0, 2, 1), (2, 9.0, 2, 1),
    (8, 3.0, 8, 5), (4, 16.0, 64, 3), (4, 0.0, 64, 4), (1, 0.0, 1, 1)])
def test_free_cores(usable, load, machine, expected):
    assert free_cores(usable, load, machine) == expected


def test_choose_threads_precedence():
    assert choose_threads(None, {}, 2, 0.0, 2).threads == 2
    assert choose_threads(None, {}, 2, 2.0, 2).threads == 2  # auto: every usable core, whatever the load
    assert choose_threads("free", {}, 2, 2.0, 2).threads == 1  # free: minus the other jobs' load
    assert choose_threads(None, {}, 3, 0.0, 64).threads == 3
    assert choose_threads(None, {"OMP_NUM_THREADS": "3"}, 2, 2.0, 2).threads == 3  # the user's setting wins
    assert choose_threads("4", {"OMP_NUM_THREADS": "3"}, 2, 0.0, 2).threads == 4  # --threads wins over all
    assert choose_threads(None, {"SMOOTH_INFOMAX_THREADS": "5"}, 2, 0.0, 2).threads == 5
    assert choose_threads(None, {"SMOOTH_INFOMAX_THREADS": "off"}, 2, 0.0, 2).mode == "off"
    with pytest.raises(ThreadsError, match="--threads"):
        choose_threads("many", {}, 2, 0.0, 2)


def test_wait_policy_depends_on_the_load_and_respects_the_user():
    env = {}
    assert runtime.apply_env_defaults(env, busy_cores=1.5) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {}
    assert runtime.apply_env_defaults(env, busy_cores=0.1) == {"GOMP_SPINCOUNT": runtime.SPIN_COUNT}
    assert env == {"GOMP_SPINCOUNT": runtime.SPIN_COUNT}
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
    monkeypatch.setattr(runtime, "load_average", lambda: 0.0)
    fake, env = FakeTorch(), {}
    monkeypatch.setattr(runtime, "cpu_busy_cores", lambda interval=0.05: 2.0)
    decided = runtime.configure("1", environ=env, torch_module=fake)
    assert fake.threads == 1 and decided.threads == 1 and decided.wait_policy == "PASSIVE"
    assert any("after torch was loaded" in n for n in decided.notes)
    fake, env = FakeTorch(), {"SMOOTH_INFOMAX_THREADS": "off"}
    assert runtime.configure(None, environ=env, torch_module=fake).mode == "off"
    assert fake.threads is None and env == {"SMOOTH_INFOMAX_THREADS": "off"}


def test_configure_before_torch_sets_the_variable_only_to_change_the_default(monkeypatch):
    monkeypatch.setattr(runtime, "usable_cores", lambda: 2)
    monkeypatch.setattr(runtime.sys, "modules", {k: v for k, v in sys.modules.items() if k != "torch"})
    monkeypatch.setattr(runtime, "load_average", lambda: 0.0)
    monkeypatch.setattr(runtime, "cpu_busy_cores", lambda interval=0.05: 2.0)
    env = {}
    runtime.configure(None, environ=env)
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}  # 2 usable cores: torch's own default, nothing to set
    monkeypatch.setattr(runtime, "load_average", lambda: 2.0)
    env = {}
    assert runtime.configure(None, environ=env).threads == 2 and "OMP_NUM_THREADS" not in env
    env = {}
    assert runtime.configure("free", environ=env).threads == 1
    assert env == {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}


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
