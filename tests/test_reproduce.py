"""``smooth-infomax reproduce``: the committed results still build docs/results.md, the page aggregates encoder
seeds, the stages run the protocols' commands once per epoch count, the CUDA self-check refuses a machine without
CUDA, and (slow) the paper reproduction at tiny scale on the CPU, from a generated dataset through its compact copy."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from smooth_infomax.cli import main
from smooth_infomax.config import load_config, save_config
from smooth_infomax.errors import UserError
from smooth_infomax.reproduce import PAPER, THESIS, Plan, build_page, reproduce, runner, selfcheck, write_page
from smooth_infomax.reproduce.protocols import scale
from smooth_infomax.reproduce.summary import done_epochs, training_summary

ROOT = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------------------------- the results page


def test_committed_results_build_the_committed_page():
    """results/ was written by the shell scripts before the reproductions became a command: it still builds
    docs/results.md exactly (regenerate with `smooth-infomax reproduce page`)."""
    page = write_page(ROOT / "results", Path("/dev/null"), ROOT / "docs" / "results_discussion.md")
    assert page == (ROOT / "docs" / "results.md").read_text()
    generated = build_page(ROOT / "results")
    assert "scripts/" not in generated and "smooth-infomax reproduce page" in generated
    assert "| GIM (beta 0, sampling) | module0 (thesis module 1) | 54.44 ± 1.07 (3 encoder seeds) |" in generated


def _probe_json(accs: dict[str, float]) -> dict:
    return {"results": {"encoder": {m: {"accuracy_mean": a, "accuracy_std": 0.01} for m, a in accs.items()},
                        "log-mel": {"logmel": {"accuracy_mean": 0.5, "accuracy_std": 0.0}}}}


def _write(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def test_results_page_aggregates_encoder_seeds(tmp_path):
    for seed, acc in ((2, 0.50), (3, 0.54)):
        d = tmp_path / "thesis" / "reference" / f"gim-seed{seed}"
        _write(d / "syllable-flatten.json", _probe_json({"module0": acc, "module1": acc - 0.2}))
        _write(d / "train.json", {"epochs": 800, "train_seconds": 600.0, "final_val": {
            "module0": {"infonce": 0.7, "kl": 0.0, "accuracy": 0.7},
            "module1": {"infonce": 0.2, "kl": 0.0, "accuracy": 0.9}}})
        _write(d / "analysis.json", {"modules": {"module0": {
            "dim": 32, "concentration": {"participation_ratio_fraction": 0.2 + seed / 100, "gini": 0.5},
            "gaussianity": {"active_dimensions": 30}, "disentanglement": {"mig": 0.1, "disentanglement": 0.2}}}})
    for seed, rel in ((2, [0.9, 0.5, 0.0]), (3, [0.7, 0.3, 0.0])):
        _write(tmp_path / "thesis" / "reference" / f"gim-seed{seed}" / "ics.json",
               {"ds": [2, 16, 32], "relative": rel, "e_max": 1e-3})
    p = tmp_path / "paper" / "reference" / "sim-seed2"
    _write(p / "syllable-mean.json", _probe_json({"gru": 0.25}))
    _write(p / "syllable-mean-sample.json", _probe_json({"gru": 0.31}))
    _write(p / "train.json", {"epochs": 6, "train_seconds": 1800.0, "final_val": {}})
    _write(p / "ics.json", {"ds": [2, 512], "relative": [0.6, 0.0], "e_max": 2e-3, "n_pairs": 500,
                            "decoder": {"module": 2, "loss": "mse", "epochs": 12}})
    c = tmp_path / "paper" / "reference" / "cpc-seed2"
    _write(c / "syllable-mean.json", _probe_json({"cnn": 0.12, "gru": 0.14}))
    _write(c / "train.json", {"epochs": 40, "train_seconds": 3600.0, "final_val": {
        "cpc": {"infonce": 1.366, "kl": 0.0, "accuracy": 0.48}}})
    page = build_page(tmp_path)
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
    # samples next to means, only where sample probes exist; the CPU text without a machine.json
    assert "| reference | SIM (beta 0.01) (seed 2) | gru | 25.0 ± 1.0 | 31.0 ± 1.0 | – | – |" in page
    assert "CPC (one module) (seed 2) | cnn | 12.0" not in page[page.index("posterior samples"):]
    assert "Training time on this machine: 3.2 min per epoch" in page
    _write(tmp_path / "paper" / "machine.json", {"machine": "one NVIDIA H200 (CUDA)"})
    assert "Training time on one NVIDIA H200 (CUDA): 195.00 s per epoch" in build_page(tmp_path)


def test_page_command(tmp_path, capsys):
    out = tmp_path / "results.md"
    assert main(["reproduce", "page", "--results", str(ROOT / "results"), "--out", str(out), "--append",
                 str(tmp_path / "none.md")]) == 0
    assert out.read_text() == build_page(ROOT / "results")
    assert main(["reproduce", "page", "--results", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "--results" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ protocols and stages


def test_unknown_scale_and_arguments_are_refused(tmp_path, capsys):
    with pytest.raises(UserError, match="'thesis' or 'paper', not 'tiny'"):
        scale("tiny")
    with pytest.raises(SystemExit):
        main(["reproduce", "tiny"])
    with pytest.raises(SystemExit):
        main(["reproduce", "paper", "--data", "d", "--out", str(tmp_path), "--models", "gim,vae"])
    assert "vae not in gim, sim, cpc" in capsys.readouterr().err
    assert main(["reproduce", "paper", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    assert "--data" in capsys.readouterr().err and not (tmp_path / "runs").exists()


def _metrics(run: Path, epochs: int, modules=("module0", "module1")) -> None:
    rows = ["epoch,split,module,loss,infonce,kl,accuracy,lr,seconds"]
    for e in range(1, epochs + 1):
        for m in modules:
            rows.append(f"{e},train,{m},1.0,{2.0 / e},0.5,0.3,0.01,{10.0 * e}")
            rows.append(f"{e},val,{m},1.0,{1.5 / e},0.4,0.35,0.01,0")
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.csv").write_text("\n".join(rows) + "\n")


def test_training_summary_reads_metrics(tmp_path):
    assert done_epochs(tmp_path) == 0 and training_summary(tmp_path) is None
    _metrics(tmp_path, 3)
    s = training_summary(tmp_path)
    assert done_epochs(tmp_path) == 3 and s["epochs"] == 3
    assert s["train_seconds"] == pytest.approx(10 + 20 + 30)  # one train row per epoch counts
    assert s["final_val"]["module1"] == {"infonce": 0.5, "kl": 0.4, "accuracy": 0.35}


def _plan(tmp_path: Path, sc=THESIS, **kw) -> Plan:
    base = dict(scale=sc, data=tmp_path / "data", out=tmp_path / "out", results=tmp_path / "results" / sc.name,
                seeds=[2], schemes=["reference"], models=["gim", "sim"], epochs=3)
    base.update(kw)
    return Plan(**base)


def test_train_command_resumes_and_carries_overrides(tmp_path):
    plan = _plan(tmp_path, PAPER, overrides=["model.channels=8"], device="cuda")
    cmd = runner.train_command(plan, "reference", "sim", 2)
    assert cmd[1:5] == ["-m", "smooth_infomax", "train", "--config"] and cmd[5] == "sim-artificial-speech"
    sets = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--set"]
    assert "train.epochs=3" in sets and "train.device=cuda" in sets and sets[-1] == "model.channels=8"
    assert "--resume" not in cmd
    (plan.run_dir("reference", "sim", 2) / "checkpoints").mkdir(parents=True)
    (plan.run_dir("reference", "sim", 2) / "checkpoints" / "last.pt").write_bytes(b"")
    assert runner.train_command(plan, "reference", "sim", 2)[-1] == "--resume"
    assert runner.train_command(_plan(tmp_path), "reference", "gim", 2)[5] == "gim-artificial-speech-thesis"


def _fake_run(plan: Plan, model: str, epochs: int) -> Path:
    run = plan.run_dir("reference", model, 2)
    _metrics(run, epochs)
    save_config(load_config(plan.scale.config_name(model)), run / "config.yaml")
    (run / "encoder.pt").write_bytes(b"")
    return run


def _fake_commands(calls: list[list[str]]):
    """Stand-in for runner.run_command: records the verb and writes what the real verb writes."""
    def fake(cmd, log, env):
        calls.append(list(cmd[3:]))
        out = Path(cmd[cmd.index("--out") + 1])
        out.mkdir(parents=True, exist_ok=True)
        verb = cmd[3]
        if verb == "probe":
            (out / "probe_x.json").write_text(json.dumps({"args": cmd[4:]}))
        elif verb == "analyze":
            (out / "analysis.json").write_text("{}")
        elif verb == "decoder":
            (out / "decoder.pt").write_bytes(b"")
        elif verb == "ics":
            (out / "ics.json").write_text(json.dumps({"ds": [2, 32], "relative": [0.5, 0.0], "e_max": 1.0,
                                                      "n_pairs": 7}))
    return fake


def test_stages_run_the_thesis_protocol_once_per_epoch_count(tmp_path, monkeypatch):
    calls: list[list[str]] = []
    monkeypatch.setattr(runner, "run_command", _fake_commands(calls))
    plan = _plan(tmp_path, stages=["probes", "analysis", "ics"], decoder_epochs=5)
    _fake_run(plan, "gim", 3)
    _fake_run(plan, "sim", 3)
    reproduce(plan, log=lambda _: None)
    verbs = [c[0] for c in calls]
    # 3 protocol probes each, 3 more on samples (both thesis models have a Gaussian posterior), decoder + ICS + analysis
    assert verbs.count("probe") == 12 and verbs.count("decoder") == 2 and verbs.count("analyze") == 2
    res = plan.results / "reference" / "sim-seed2"
    names = sorted(p.name for p in res.iterdir())
    assert names == ["analysis.json", "epochs.txt", "ics.json", "syllable-flatten-sample.json",
                     "syllable-flatten.json", "syllable-mean-sample.json", "syllable-mean.json", "train.json",
                     "vowel-max-nobias-sample.json", "vowel-max-nobias.json"]
    flat = json.loads((res / "syllable-flatten.json").read_text())["args"]
    assert "--label-efficiency" in flat and flat[flat.index("--seeds") + 1] == "5"
    sample = json.loads((res / "vowel-max-nobias-sample.json").read_text())["args"]
    assert sample[-2:] == ["--mode", "sample"] and "--no-bias" in sample
    decoder = next(c for c in calls if c[0] == "decoder")
    assert decoder[decoder.index("--module") + 1] == "1" and decoder[decoder.index("--loss") + 1] == "mel"
    assert json.loads((res / "ics.json").read_text())["decoder"] == {"module": 1, "loss": "mel", "epochs": 5}
    assert json.loads((res / "train.json").read_text())["epochs"] == 3
    # again: nothing is redone
    calls.clear()
    reproduce(plan, log=lambda _: None)
    assert calls == []
    # a run that trained further is probed again, its stale results removed first
    (res / "ics.json").write_text("{}")
    _metrics(plan.run_dir("reference", "sim", 2), 4)
    reproduce(plan, log=lambda _: None)
    assert [c[0] for c in calls].count("probe") == 6 and (res / "epochs.txt").read_text() == "4\n"
    assert json.loads((res / "ics.json").read_text())["n_pairs"] == 7


def test_paper_protocol_baselines_and_unfinished_runs(tmp_path, monkeypatch):
    calls: list[list[str]] = []
    monkeypatch.setattr(runner, "run_command", _fake_commands(calls))
    plan = _plan(tmp_path, PAPER, models=["gim", "cpc"], stages=["probes"], device="cuda:1", parallel=2)
    run = _fake_run(plan, "gim", 2)
    (run / "encoder.pt").unlink()  # still training: probed from its checkpoint
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.pt").write_bytes(b"")
    _fake_run(plan, "cpc", 1)
    reproduce(plan, log=lambda _: None)
    probes = [c for c in calls if c[0] == "probe"]
    assert len(probes) == 4  # no sample probes: neither GIM (the mean) nor CPC has a posterior
    syl = next(c for c in probes if "syllable" in c)
    assert "--baselines" in syl and syl[syl.index("--device") + 1] == "cuda:1"
    assert syl[syl.index("--batch-size") + 1] == "64" and syl[syl.index("--seeds") + 1] == "3"
    calls.clear()
    late = _plan(tmp_path, PAPER, models=["gim"], stages=["probes", "ics"], results=tmp_path / "late",
                 deadline=time.time() - 1)
    reproduce(late, log=lambda _: None)
    assert calls == [] and sorted(p.name for p in (tmp_path / "late" / "reference" / "gim-seed2").iterdir()) == [
        "epochs.txt", "train.json"]  # past the time limit: nothing started, the training summary still written
    with pytest.raises(UserError, match="unknown stage"):
        reproduce(_plan(tmp_path, stages=["probes", "plots"]), log=lambda _: None)


@pytest.mark.slow
def test_training_time_limit_stops_the_runs_and_failures_are_named(tmp_path, monkeypatch):
    plan = _plan(tmp_path, PAPER, models=["gim", "sim"], parallel=2, train_time_limit=1.0)
    monkeypatch.setattr(runner, "train_command", lambda plan, scheme, model, seed: [
        sys.executable, "-c", f"import time; print('{model} started', flush=True); time.sleep(60)"])
    t0 = time.time()
    assert runner.train_all(plan, log=lambda _: None) == {"reference/gim-seed2": 0, "reference/sim-seed2": 0}
    assert time.time() - t0 < 30
    assert "sim started" in (plan.out / "logs" / "train-reference-sim-seed2.log").read_text()
    monkeypatch.setattr(runner, "train_command", lambda plan, scheme, model, seed: [
        sys.executable, "-c", f"import sys; print('{model} diverged'); sys.exit(3)"])
    with pytest.raises(runner.CommandFailed, match=r"train-reference-gim-seed2.log \(code 3: .*gim diverged"):
        runner.train_all(_plan(tmp_path, PAPER, models=["gim"]), log=lambda _: None)


@pytest.mark.slow
def test_failing_command_names_its_log(tmp_path):
    log = tmp_path / "x.log"
    with pytest.raises(runner.CommandFailed, match=str(log)):
        runner.run_command([sys.executable, "-c", "import sys; print('boom'); sys.exit(3)", "x"], log, {})
    assert "boom" in log.read_text()


# ------------------------------------------------------------------------------------------------ the GPU checks


def test_selfcheck_pieces_agree_on_the_cpu():
    rows = selfcheck.compare_infonce("cpu", B=2, T=40, C=8, K=3, n=4, window=32)
    assert {(r["sampling"], r["impl"]) for r in rows} == {("reference", "banked"), ("reference", "chunked"),
                                                          ("batch", "chunked")}
    assert all(r["loss_rel"] == 0 and r["grad_rel"] == 0 for r in rows)
    step = selfcheck.compare_step("cpu", batch=1, channels=8)
    assert step["loss_rel"] == 0 and step["grad_rel"] == 0 and step["modules"] == ["module0", "module1", "module2",
                                                                                  "gru"]
    assert step["bf16_finite"] and step["bf16_rel"] < 0.1
    t = selfcheck.time_step("cpu", batch=1, steps=1, warmup=0, channels=8)
    assert t["finite"] and t["step_seconds"] > 0 and t["items_per_second"] == pytest.approx(1 / t["step_seconds"])
    report = {"infonce": rows, "step": step, "timing": [t]}
    assert selfcheck.problems(report) == []
    bad = dict(rows[0], loss_device=rows[0]["loss_cpu"] + 1, loss_rel=0.3)
    assert "InfoNCE (reference, banked)" in selfcheck.problems({"infonce": [bad]})[0]
    assert "bf16" in selfcheck.problems({"step": dict(step, bf16_rel=0.5)})[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_the_gpu_commands_refuse_before_training(tmp_path, capsys, monkeypatch):
    assert main(["reproduce", "selfcheck", "--out", str(tmp_path / "s.json")]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    data = tmp_path / "data"
    data.mkdir()
    out = tmp_path / "out"
    assert main(["reproduce", "paper", "--data", str(data), "--out", str(out), "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert "no CUDA device" in json.loads((out / "selfcheck.json").read_text())["problems"][0]
    assert not (out / "runs").exists()
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--out", str(tmp_path / "g.json")])
    assert gpu_check.main() == 2
    assert "error: no CUDA device" in capsys.readouterr().err and not (tmp_path / "g.json").exists()


# ------------------------------------------------------------------------------------------- end to end (slow)


TINY = ("reproduce", "paper", "--device", "cpu", "--data", "compact", "--models", "sim", "--epochs", "1",
        "--set", "model.channels=8", "--set", "model.gru_hidden=8", "--set", "train.batch_size=4",
        "--decoder-epochs", "1", "--ics-pairs", "20", "--train-time-limit", "300")
BLOCKER = """import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('soundfile', 'soxr'):
            raise ImportError('not on the GPU image: ' + name)
sys.meta_path.insert(0, _Block())
"""


def _si(cwd: Path, *args: str, pythonpath: str | None = None) -> subprocess.CompletedProcess:
    env = {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "PATH": "/usr/bin:/bin"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    proc = subprocess.run([sys.executable, "-m", "smooth_infomax", *args], capture_output=True, text=True,
                          env=env, cwd=cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def tiny_reproduction(tmp_path_factory) -> Path:
    """Generated WAV folders -> compact copy -> the paper reproduction at tiny scale on the CPU (once)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_compact import fake_artificial

    root = tmp_path_factory.mktemp("tiny-reproduction")
    src = fake_artificial(root / "wav")
    assert "fits a 64 MiB carry" in _si(root, "reproduce", "compact", "--data", str(src), "--out", "compact").stdout
    _si(root, *TINY, "--out", "out")
    return root


@pytest.mark.slow
def test_paper_reproduction_at_tiny_scale_on_the_cpu(tiny_reproduction):
    """The prepared GPU command, tiny and on the CPU: training, probes (means and samples), decoder, ICS,
    analysis -> results JSON -> page; a second call redoes nothing."""
    root = tiny_reproduction
    res = root / "out" / "results" / "paper" / "reference" / "sim-seed2"
    assert sorted(p.name for p in res.glob("*.json")) == [
        "analysis.json", "ics.json", "syllable-mean-sample.json", "syllable-mean.json", "train.json",
        "vowel-mean-sample.json", "vowel-mean.json"]
    syl = json.loads((res / "syllable-mean.json").read_text())
    assert syl["settings"]["seeds"] == 3 and set(syl["results"]) >= {"encoder", "random-init", "log-mel"}
    assert json.loads((res / "syllable-mean-sample.json").read_text())["settings"]["mode"] == "sample"
    assert json.loads((res / "ics.json").read_text())["decoder"] == {"module": 2, "loss": "mse", "epochs": 1}
    again = _si(root, *TINY, "--out", "out")
    assert "[run ]" not in again.stdout and "done: " in again.stdout
    _si(root, "reproduce", "page", "--results", "out/results", "--out", "page.md")
    page = (root / "page.md").read_text()
    assert "| reference | SIM (beta 0.01) (seed 2) | 1 | gru |" in page and "posterior samples" in page


@pytest.mark.slow
def test_the_gpu_image_needs_neither_soundfile_nor_soxr(tiny_reproduction):
    """As on the device image: soundfile and soxr cannot be imported (in every process); the compact copy is
    enough for a probe stage of the reproduction."""
    root = tiny_reproduction
    (root / "block").mkdir(exist_ok=True)
    (root / "block" / "sitecustomize.py").write_text(BLOCKER)
    _si(root, *TINY, "--out", "out", "--results", "blocked", "--stages", "probes", "--no-samples",
        pythonpath=str(root / "block"))
    assert (root / "blocked" / "paper" / "reference" / "sim-seed2" / "vowel-mean.json").exists()
