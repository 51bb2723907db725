"""Pure parts of the benchmark (benchmarks/*.py): the pre-training check and the conv layer inventory."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

from bench_main_job import job_env, pretraining_check  # noqa: E402
from bench_train import _conv_layers  # noqa: E402


def _res(enc, twin=None):
    out = {"encoder": {m: {"accuracy_mean": a} for m, a in enc.items()}}
    if twin is not None:
        out["random-init"] = {m: {"accuracy_mean": a} for m, a in twin.items()}
    return {"results": out}


def test_pretraining_check_margins_and_shared_twin():
    probes = {"SIM": {"vowel": _res({"module0": 0.9, "gru": 0.8}, {"module0": 0.85, "gru": 0.7})},
              "GIM": {"vowel": _res({"module0": 0.84, "gru": 0.75})}}  # no twin of its own: the first model's
    check = pretraining_check(probes)
    assert check["margin_points"] == {"SIM": {"vowel": {"module0": 5.0, "gru": 10.0}},
                                      "GIM": {"vowel": {"module0": -1.0, "gru": 5.0}}}
    assert check["min_margin_points"] == -1.0 and check["all_above"] is False
    probes["GIM"]["vowel"] = _res({"module0": 0.86, "gru": 0.75})
    assert pretraining_check(probes)["all_above"] is True
    probes["GIM"]["vowel"] = _res({"module0": 0.86, "cnn": 0.75})  # a module without a twin entry
    check = pretraining_check(probes)
    assert check["missing"] == ["GIM/vowel/cnn"] and check["all_above"] is False
    assert pretraining_check({})["all_above"] is False


def test_job_env_drops_threading_variables(monkeypatch):
    for name, value in (("OMP_WAIT_POLICY", "ACTIVE"), ("SMOOTH_INFOMAX_THREADS", "3"),
                        ("SMOOTH_INFOMAX_MALLOC", "off"), ("MALLOC_MMAP_MAX_", "0")):
        monkeypatch.setenv(name, value)
    env = job_env(Path("/x/src"))
    assert not {"OMP_WAIT_POLICY", "SMOOTH_INFOMAX_THREADS", "SMOOTH_INFOMAX_MALLOC", "MALLOC_MMAP_MAX_"} & set(env)
    assert env["PYTHONPATH"].startswith("/x/src")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has stopped working (a container's init may never reap it)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_competitor_stops_when_the_benchmark_that_started_it_is_gone():
    """An interrupted or killed benchmark must not leave its competing process loading the machine."""
    code = (f"import sys; sys.path.insert(0, {str(BENCH)!r}); from bench_main_job import start_competitor; "
            "print(start_competitor(sys.executable, 1).pid, flush=True)")  # exits without stopping it
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    pid = int(out.stdout.split()[-1])
    deadline = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    alive = _alive(pid)
    if alive:
        os.kill(pid, signal.SIGKILL)
    assert not alive, "the competing process outlived its parent"


def test_conv_layer_inventory_follows_the_paper_encoder():
    layers = _conv_layers("paper", 8)
    names = [x["name"] for x in layers]
    assert names == ["module0/conv0", "module0/conv1", "module0/head", "module1/conv0", "module1/conv1",
                     "module1/head", "module2/conv0", "module2/head"]
    shapes = {x["name"]: x["shape"] for x in layers}
    assert shapes["module0/conv0"] == (8, 1, 10240) and shapes["module0/conv1"] == (8, 512, 2047)
    assert shapes["module1/conv0"] == (8, 512, 511) and shapes["module2/head"] == (8, 512, 64)
    assert [x["first"] for x in layers] == [True, False, False, True, False, False, True, False]
