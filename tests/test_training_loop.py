"""The one training loop: the same resume path, logging, chance warnings and stops for every batch source."""

import csv
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import encoder_weights, tiny_folder_config, write_vibrato_tones
from smooth_infomax.config import save_config
from smooth_infomax.errors import TrainingDiverged, UserError
from smooth_infomax.model.sim import ModuleLoss
from smooth_infomax.training import EpochStats, module_plan, train, train_modulewise
from smooth_infomax.training.loop import module_epochs

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio")
    return write_vibrato_tones(root, n=8, samples=4000, f0=105, step=20, depth=0.3, rate=4,
                               noise=0.02, seed=4, prefix="v")


def tiny(data, kind="gim", **train):
    return tiny_folder_config(data, seed=7, kind=kind, train={"epochs": 1, "schedule": "sequential", **train})


weights = encoder_weights


def rows(run):
    with open(run / "metrics.csv") as fh:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(fh)]


TRAINERS = {"waves": lambda cfg, out, **kw: train(cfg, out, **kw),
            "cached": lambda cfg, out, **kw: train_modulewise(cfg, out, cache="memory", **kw)}


# ------------------------------------------------------------------------------------------------ pure parts


def test_epoch_stats_equal_python_float_sums():
    rng = np.random.default_rng(0)
    stats, ref, count = EpochStats(), {"loss": 0.0, "infonce": 0.0, "kl": 0.0, "accuracy": 0.0}, 0
    for n in (4, 4, 1, 3):
        v = torch.tensor(rng.normal(size=3), dtype=torch.float32)
        acc = torch.tensor(rng.uniform(size=5), dtype=torch.float32)
        ml = ModuleLoss("m", loss=v[0].requires_grad_(), infonce=v[1], kl=v[2], accuracy=acc, n_frames=10)
        stats.add([ml], n)
        for key, x in (("loss", v[0]), ("infonce", v[1]), ("kl", v[2]), ("accuracy", acc.mean())):
            ref[key] += float(x.detach()) * n  # what the loop summed before (one host sync per value and step)
        count += n
    assert stats.means()["m"] == {k: s / count for k, s in ref.items()}  # exactly, not approximately


def test_module_epochs_count_each_modules_own_epochs():
    seq = module_plan("sequential", 10, 3)
    assert module_epochs(seq, 0, [0]) == (1, 10)
    assert module_epochs(seq, 10, [1]) == (1, 10)  # module 1's first epoch is the plan's 11th
    assert module_epochs(seq, 29, [2]) == (10, 10)
    joint = module_plan("joint", 5, 3)
    assert module_epochs(joint, 3, None) == (4, 5)


# ------------------------------------------------------------------------------------------------ every source


@pytest.mark.parametrize("source", sorted(TRAINERS))
def test_progress_bar_and_statistics_emit_no_requires_grad_warning(tmp_path, audio_dir, source):
    cfg = tiny(audio_dir, kind="sim", progress=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*requires_grad.*")
        TRAINERS[source](cfg, tmp_path / "run")
    assert (tmp_path / "run" / "encoder.pt").exists()


@pytest.mark.parametrize("source", sorted(TRAINERS))
def test_chance_warnings_for_every_source_count_the_modules_own_epochs(tmp_path, audio_dir, source, capsys):
    # a learning rate too small to learn anything: every module stays at chance, log(4 + 1)
    cfg = tiny(audio_dir, epochs=10, lr=1e-9, max_steps_per_epoch=1, batch_size=8)
    cfg.model.gru_hidden = None
    TRAINERS[source](cfg, tmp_path / "run")
    err = capsys.readouterr().err
    for name in ("module0", "module1", "module2"):
        assert f"warning: module {name}: held-out InfoNCE" in err
        assert err.count(f"warning: module {name}:") == 1  # once per module and run
    # module 1 is judged after its own 10 epochs, not after the 11 of the plan
    assert "module1: held-out InfoNCE" in err and "after 10 epochs" in err and "after 11 epochs" not in err


@pytest.mark.parametrize("source", sorted(TRAINERS))
def test_a_refused_resume_leaves_the_run_directory_as_it_was(tmp_path, audio_dir, source):
    TRAINERS[source](tiny(audio_dir), tmp_path / "run")
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    other = tiny(audio_dir)
    other.model.channels = 16  # does not fit the checkpoint
    with pytest.raises(UserError, match=r"last\.pt does not match"):
        TRAINERS[source](other, tmp_path / "run", resume=True)
    after = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    assert after == before  # config.yaml included: it is written only once the checkpoint fits


@pytest.mark.parametrize("source", sorted(TRAINERS))
def test_crash_mid_epoch_resumes_bit_identically(tmp_path, audio_dir, source):
    cfg = tiny(audio_dir, kind="sim", epochs=2)  # 8 items at batch 4: 2 steps per epoch, 16 in all
    TRAINERS[source](cfg, tmp_path / "full")
    crashed = TRAINERS[source](cfg, tmp_path / "resumed", stop_after_steps=7)  # inside module 1's 2nd epoch
    assert crashed == {"crashed_at_step": 7}
    summary = TRAINERS[source](cfg, tmp_path / "resumed", resume=True)
    assert summary["steps"] == 16
    a, b = weights(tmp_path / "full"), weights(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert rows(tmp_path / "full") == rows(tmp_path / "resumed")
    assert not (tmp_path / "resumed" / "activation-cache").exists()


@pytest.mark.parametrize("source", sorted(TRAINERS))
def test_non_finite_loss_stops_before_the_step(tmp_path, audio_dir, source):
    with pytest.raises(TrainingDiverged, match=r"step \d+ \(epoch \d+\) in module \w+.*last\.pt"):
        TRAINERS[source](tiny(audio_dir, kind="sim", epochs=2, lr=1e30), tmp_path / "run")


@pytest.mark.parametrize("source", sorted(TRAINERS))
def test_tensorboard_logs_for_every_source(tmp_path, audio_dir, source):
    pytest.importorskip("tensorboard")
    TRAINERS[source](tiny(audio_dir, log_tensorboard=True), tmp_path / "run")
    events = list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


# ------------------------------------------------------------------------------------------------ torchrun


def _torchrun(verb, cfg_path, out, port):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           "-m", "smooth_infomax", verb, "--config", str(cfg_path), "--out", str(out)]
    if verb == "train-modulewise":
        cmd += ["--cache", "memory"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=out.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_torchrun_modulewise_follows_the_distributed_sequential_run(tmp_path, audio_dir):
    import socket

    # the same loop shards the cached source as it shards waveforms: 2 processes, GIM, fixed crops
    save_config(tiny(audio_dir, epochs=2), tmp_path / "c.yaml")
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    _torchrun("train", tmp_path / "c.yaml", tmp_path / "seq", ports[0])
    _torchrun("train-modulewise", tmp_path / "c.yaml", tmp_path / "mw", ports[1])
    a, b = weights(tmp_path / "seq"), weights(tmp_path / "mw")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    ra, rb = rows(tmp_path / "seq"), rows(tmp_path / "mw")
    assert [(r["epoch"], r["split"], r["module"]) for r in ra] == [(r["epoch"], r["split"], r["module"]) for r in rb]
    for x, y in zip(ra, rb):
        assert float(x["loss"]) == pytest.approx(float(y["loss"]), rel=1e-4, abs=1e-5)
