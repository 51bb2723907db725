"""Training loop: runs, logs, resumes bit-identically, stops on non-finite losses, names bad input."""

import csv
import math

import pytest
import torch

from conftest import encoder_weights, tiny_folder_config, write_vibrato_tones
from smooth_infomax.cli import main
from smooth_infomax.errors import TrainingDiverged, UserError
from smooth_infomax.runs import load_encoder as load
from smooth_infomax.training import train


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio")
    return write_vibrato_tones(root, n=10, samples=6400, f0=120, step=15, depth=0.2, rate=3,
                               noise=0.01, seed=0, prefix="utt")


def tiny_config(data, **train):
    return tiny_folder_config(data, seed=3, kind="sim", data_extra={"random_crop": True},
                              loss={"prediction_steps": 4, "negatives": 5}, train={"epochs": 3, "lr": 1e-3, **train})


weights = encoder_weights


def test_train_writes_run_dir_and_metrics(tmp_path, audio_dir):
    cfg = tiny_config(audio_dir)
    summary = train(cfg, tmp_path / "run")
    run = tmp_path / "run"
    for name in ("config.yaml", "encoder.pt", "metrics.csv", "checkpoints/last.pt"):
        assert (run / name).exists(), name
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    modules = {r["module"] for r in rows}
    assert modules == {"module0", "module1", "module2", "gru"}
    assert {r["split"] for r in rows} == {"train", "val"}
    assert max(int(r["epoch"]) for r in rows) == 3
    assert set(summary["val"]) == modules
    enc = load(run)
    out = enc.encode(torch.zeros(2, 1, 3200), mode="mean")
    assert [o.shape[1] for o in out] == enc.frame_counts(3200)


def test_resume_after_crash_is_bit_identical(tmp_path, audio_dir):
    cfg = tiny_config(audio_dir)
    train(cfg, tmp_path / "full")
    crashed = train(cfg, tmp_path / "resumed", stop_after_steps=4)  # dies in the middle of epoch 2 (3 steps/epoch)
    assert crashed == {"crashed_at_step": 4}
    train(cfg, tmp_path / "resumed", resume=True)
    a, b = weights(tmp_path / "full"), weights(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ra = list(csv.DictReader(open(tmp_path / "full" / "metrics.csv")))
    rb = list(csv.DictReader(open(tmp_path / "resumed" / "metrics.csv")))
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(ra) == strip(rb)


def test_refuses_to_overwrite_without_resume(tmp_path, audio_dir):
    cfg = tiny_config(audio_dir, epochs=1)
    train(cfg, tmp_path / "run")
    with pytest.raises(UserError, match="--resume"):
        train(cfg, tmp_path / "run")


def test_sequential_schedule_trains_each_module(tmp_path, audio_dir):
    cfg = tiny_config(audio_dir, epochs=1, schedule="sequential")
    summary = train(cfg, tmp_path / "run")
    assert summary["epochs"] == 4
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    trained = [r["module"] for r in rows if r["split"] == "train"]
    assert trained == ["module0", "module1", "module2", "gru"]


def test_non_finite_loss_stops_with_step_and_module(tmp_path, audio_dir):
    cfg = tiny_config(audio_dir, epochs=2, lr=1e30)
    with pytest.raises(TrainingDiverged, match=r"step \d+ .*module"):
        train(cfg, tmp_path / "run")


def test_cli_train_and_resume_extend_epochs(tmp_path, audio_dir, capsys):
    cfg_path = tmp_path / "c.yaml"
    from smooth_infomax.config import save_config

    save_config(tiny_config(audio_dir, epochs=1), cfg_path)
    assert main(["train", "--config", str(cfg_path), "--out", str(tmp_path / "run")]) == 0
    assert "trained 1 epochs" in capsys.readouterr().out
    assert main(["train", "--out", str(tmp_path / "run"), "--resume", "--set", "train.epochs=2"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert max(int(r["epoch"]) for r in rows) == 2


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "nope.yaml" in err and "\n" not in err
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {preset: paper}\ndata: {path: %s}\n" % (tmp_path / "missing"))
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "data.path" in err and "missing" in err
    assert main(["train", "--config", str(cfg), "--set", "train.epochz=1", "--out", str(tmp_path / "r")]) == 2
    assert "train.epochz" in capsys.readouterr().err


def test_chance_warnings_name_modules_at_chance_and_collapsed_posteriors():
    from smooth_infomax.training import chance_warnings

    chance = math.log(11)
    val = {"module0": {"infonce": chance + 0.001, "kl": 0.005}, "module1": {"infonce": 0.63, "kl": 3.0},
           "gru": {"infonce": chance - 0.01, "kl": 0.0}}
    betas = {"module0": 0.0035, "module1": 0.0035}
    assert chance_warnings(val, 10, betas, epochs_done=79, total_epochs=800) == {}  # too early to judge
    out = chance_warnings(val, 10, betas, epochs_done=80, total_epochs=800)
    assert set(out) == {"module0", "gru"}  # module1 learnt; gru within 1 % of chance
    assert "module0" in out["module0"] and "2.398" in out["module0"] and "collapsed onto the prior" in out["module0"]
    assert "loss.beta" in out["module0"] and "collapsed" not in out["gru"] and "train.lr" in out["gru"]
    # a module at chance whose KL is not ~0 is named without the collapse diagnosis
    val["module0"]["kl"] = 2.0
    assert "collapsed" not in chance_warnings(val, 10, betas, 80, 800)["module0"]
    assert chance_warnings(val, 10, betas, epochs_done=10, total_epochs=20)  # short runs: after 10 epochs
