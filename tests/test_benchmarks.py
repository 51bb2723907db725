"""Pure parts of the benchmark (benchmarks/*.py): the pre-training check and the conv layer inventory."""

import sys
from pathlib import Path

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
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.setenv("SMOOTH_INFOMAX_THREADS", "3")
    env = job_env(Path("/x/src"))
    assert "OMP_WAIT_POLICY" not in env and "SMOOTH_INFOMAX_THREADS" not in env
    assert env["PYTHONPATH"].startswith("/x/src")


def test_conv_layer_inventory_follows_the_paper_encoder():
    layers = _conv_layers("paper", 8)
    names = [x["name"] for x in layers]
    assert names == ["module0/conv0", "module0/conv1", "module0/head", "module1/conv0", "module1/conv1",
                     "module1/head", "module2/conv0", "module2/head"]
    shapes = {x["name"]: x["shape"] for x in layers}
    assert shapes["module0/conv0"] == (8, 1, 10240) and shapes["module0/conv1"] == (8, 512, 2047)
    assert shapes["module1/conv0"] == (8, 512, 511) and shapes["module2/head"] == (8, 512, 64)
    assert [x["first"] for x in layers] == [True, False, False, True, False, False, True, False]
