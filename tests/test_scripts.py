"""The reproduction scripts: argument checks, a one-epoch thesis run that resumes/skips, and the results page
builder's aggregation over encoder seeds."""

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _builder():
    spec = importlib.util.spec_from_file_location("build_results", ROOT / "scripts" / "build_results.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("script, args", [("reproduce.sh", ["tiny", "d", "o"]), ("probes.sh", ["tiny", "d", "r", "w"])])
def test_scripts_refuse_an_unknown_scale(script, args):
    proc = subprocess.run(["bash", str(ROOT / "scripts" / script), *args], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "'thesis' or 'paper'" in proc.stderr and "tiny" in proc.stderr


def _probe_json(accs: dict[str, float]) -> dict:
    return {"results": {"encoder": {m: {"accuracy_mean": a, "accuracy_std": 0.01} for m, a in accs.items()},
                        "log-mel": {"logmel": {"accuracy_mean": 0.5, "accuracy_std": 0.0}}}}


def test_results_page_aggregates_encoder_seeds(tmp_path, monkeypatch):
    b = _builder()
    monkeypatch.setattr(b, "RESULTS", tmp_path / "thesis")
    monkeypatch.setattr(b, "PAPER_RESULTS", tmp_path / "paper")
    for seed, acc in ((2, 0.50), (3, 0.54)):
        d = tmp_path / "thesis" / "reference" / f"gim-seed{seed}"
        d.mkdir(parents=True)
        (d / "syllable-flatten.json").write_text(json.dumps(_probe_json({"module0": acc, "module1": acc - 0.2})))
        (d / "train.json").write_text(json.dumps({"epochs": 800, "train_seconds": 600.0, "final_val": {
            "module0": {"infonce": 0.7, "kl": 0.0, "accuracy": 0.7}, "module1": {"infonce": 0.2, "kl": 0.0,
                                                                               "accuracy": 0.9}}}))
        (d / "analysis.json").write_text(json.dumps({"modules": {"module0": {
            "dim": 32, "concentration": {"participation_ratio_fraction": 0.2 + seed / 100, "gini": 0.5},
            "gaussianity": {"active_dimensions": 30}, "disentanglement": {"mig": 0.1, "disentanglement": 0.2}}}}))
    for seed, rel in ((2, [0.9, 0.5, 0.0]), (3, [0.7, 0.3, 0.0])):
        (tmp_path / "thesis" / "reference" / f"gim-seed{seed}" / "ics.json").write_text(json.dumps(
            {"ds": [2, 16, 32], "relative": rel, "e_max": 1e-3}))
    p = tmp_path / "paper" / "reference" / "sim-seed2"
    p.mkdir(parents=True)
    (p / "syllable-mean.json").write_text(json.dumps(_probe_json({"gru": 0.25})))
    (p / "train.json").write_text(json.dumps({"epochs": 6, "train_seconds": 1800.0, "final_val": {}}))
    (p / "ics.json").write_text(json.dumps({"ds": [2, 512], "relative": [0.6, 0.0], "e_max": 2e-3, "n_pairs": 500,
                                            "decoder": {"module": 2, "loss": "mse", "epochs": 12}}))
    c = tmp_path / "paper" / "reference" / "cpc-seed2"
    c.mkdir(parents=True)
    (c / "syllable-mean.json").write_text(json.dumps(_probe_json({"cnn": 0.12, "gru": 0.14})))
    (c / "train.json").write_text(json.dumps({"epochs": 40, "train_seconds": 3600.0, "final_val": {
        "cpc": {"infonce": 1.366, "kl": 0.0, "accuracy": 0.48}}}))
    page = b.build()
    # CPC's one end-to-end module is scored on its last output (the GRU), not on the conv features
    assert "| reference | CPC (one module) (seed 2) | 40 | cnn | – |" in page
    assert "| reference | CPC (one module) (seed 2) | 40 | gru | 1.366 |" in page
    # (50 + 54) / 2 = 52.00, population std 2.00; module1: 30 and 34
    assert "| 52.00 ± 2.00 (2 encoder seeds) | 53.68 ± 1.82 |" in page
    assert "| 32.00 ± 2.00 (2 encoder seeds) | 30.09 ± 1.87 |" in page
    assert "| 10 min |" in page and "0.700" in page
    assert "| reference | GIM (beta 0, sampling) | module0 | 2 | 0.225 ± 0.005 | 0.500 ± 0.000 |" in page
    assert "| reference | SIM (beta 0.01) (seed 2) | 6 | gru | – | 25.0 ± 1.0 |" in page
    assert "| 50.0 |" in page and "44.53 ± 1.77 / 92.58 ± 2.06" in page
    assert "Split `leakage_free`: no finished runs yet" in page
    assert "| reference | GIM (beta 0, sampling) | 2 | 0.800 ± 0.100 | 0.400 ± 0.100 | 0.000 ± 0.000 | 0.001 |" in page
    paper = page[page.index("Interpolation contribution score, paper scale"):]
    assert "**12 epochs**" in paper and "500 ordered pairs" in paper
    assert "| reference | SIM (beta 0.01) | 1 | 0.600 | 0.000 | 0.002 |" in paper


def test_reproduce_thesis_one_epoch_then_skips(tmp_path, artificial_root):
    data = artificial_root
    cmd = ["bash", str(ROOT / "scripts" / "reproduce.sh"), "thesis", str(data), str(tmp_path), "2", "reference", "1",
           "sim"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "reference" / "sim-seed2"
    assert (run / "encoder.pt").exists() and "trained 1 epochs" in proc.stdout
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[-1].startswith("1,val,module1,")
    again = subprocess.run(cmd, capture_output=True, text=True, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert again.returncode == 0 and "done: " in again.stdout and "(1 epochs)" in again.stdout
