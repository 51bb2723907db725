"""Crash safety: SIGKILL at random points, resume, and end exactly where an uninterrupted run ends.

* ``python -m smooth_infomax train`` is killed (SIGKILL) at seeded random points (before its first checkpoint
  and inside later epochs), resumed with ``--resume`` each time, and ends with the encoder weights (torch.equal)
  and metrics of an uninterrupted run (CPU, one thread, seeded).
* ``probe`` killed after its feature cache exists: the re-run writes the same JSON.
* ``decoder.train_decoder`` interrupted after an epoch (and by a failed checkpoint write) resumes to the same
  weights; pipeline stages (``pipeline.Stages``) redo exactly the unfinished ones.
* A failed write (a full disk: ``os.fsync`` or the write itself raising ENOSPC) keeps the previous file intact,
  leaves no temporary file behind and reaches the command line as one ``error:`` line.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from smooth_infomax import checkpoint
from smooth_infomax.checkpoint import atomic_torch_save, atomic_write_bytes, atomic_write_json, atomic_write_text
from smooth_infomax.errors import UserError

SR = 16000
EPOCHS = 10
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}

# utterance -> samples, LibriSpeech layout (4 speakers) so that the same folder serves training and probes
UTTS = {f"{spk}-1-{u:04d}": 6400 + 320 * u for spk in (11, 12, 13, 14) for u in range(3)}
TRAIN_IDS = [u for u in UTTS if not u.endswith("2")]
TEST_IDS = [u for u in UTTS if u.endswith("2")]


@contextmanager
def one_thread():
    """Run in-process references with the thread count the subprocesses get (OMP_NUM_THREADS=1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("libri") / "LibriSpeech"
    rng = np.random.default_rng(0)
    for i, (utt, n) in enumerate(UTTS.items()):
        spk, chap, _ = utt.split("-")
        folder = root / "train-clean-100" / spk / chap
        folder.mkdir(parents=True, exist_ok=True)
        t = np.arange(n) / SR
        f0 = 110 + 30 * (int(spk) - 11) + 5 * i
        wave = 0.3 * np.sin(2 * np.pi * f0 * t * (1 + 0.1 * np.sin(2 * np.pi * 3 * t))) + 0.01 * rng.standard_normal(n)
        sf.write(str(folder / f"{utt}.wav"), wave.astype(np.float32), SR)
    (root / "train_split.txt").write_text("\n".join(TRAIN_IDS) + "\n")
    (root / "test_split.txt").write_text("\n".join(TEST_IDS) + "\n")
    return root


def tiny_config(data: Path, epochs: int = EPOCHS) -> dict:
    return {
        "seed": 5,
        "data": {"path": str(data), "layout": "librispeech", "crop": 3200, "random_crop": True},
        "model": {"preset": "paper", "kind": "sim", "channels": 8, "gru_hidden": 8},
        "loss": {"beta": 0.01, "prediction_steps": 4, "negatives": 5, "window": 64},
        "train": {"epochs": epochs, "batch_size": 2, "lr": 1e-3, "progress": False, "log_tensorboard": False},
    }


@pytest.fixture(scope="module")
def config_file(dataset, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config(dataset)))
    return path


@pytest.fixture(scope="module")
def reference_run(config_file, tmp_path_factory) -> Path:
    """The uninterrupted run (in-process, one thread)."""
    from smooth_infomax.config import load_config
    from smooth_infomax.training import train

    run = tmp_path_factory.mktemp("reference") / "run"
    with one_thread():
        train(load_config(config_file), run)
    return run


def encoder_state(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "encoder.pt", map_location="cpu", weights_only=False)["state_dict"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def metrics_without_time(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as fh:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]


def launch(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as fh:
        return subprocess.Popen([sys.executable, "-m", "smooth_infomax", *args], env=ENV, stdout=fh,
                                stderr=subprocess.STDOUT)


def wait_until(cond, proc: subprocess.Popen, timeout: float = 120.0) -> bool:
    """Poll ``cond`` every 5 ms; False when the process ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    proc.kill()
    raise AssertionError("timed out waiting for the subprocess")


def kill(proc: subprocess.Popen) -> bool:
    """SIGKILL the process if it is still running; True when it was."""
    alive = proc.poll() is None
    if alive:
        os.kill(proc.pid, signal.SIGKILL)
    code = proc.wait(timeout=60)
    if alive:
        assert code == -signal.SIGKILL
    return alive


def epochs_done(run: Path) -> int:
    try:
        lines = (run / "metrics.csv").read_text().splitlines()[1:]
    except FileNotFoundError:
        return 0
    return max((int(line.split(",", 1)[0]) for line in lines if line), default=0)


# --------------------------------------------------------------------------------------------------
# Training: SIGKILL at random points, --resume, identical weights
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_training_killed_at_random_points_resumes_to_identical_weights(config_file, reference_run, tmp_path):
    rng = random.Random(1729)
    run = tmp_path / "run"
    log = tmp_path / "train.log"
    argv = ["train", "--config", str(config_file), "--out", str(run), "--resume"]
    kills = []
    # 1: during start-up, before any checkpoint; 2-4: inside later epochs, at a random time after a checkpoint
    proc = launch(argv, log)
    time.sleep(rng.uniform(0.2, 1.0))
    kills.append(("start-up", epochs_done(run), kill(proc)))
    for _ in range(3):
        start = epochs_done(run)
        target = min(EPOCHS - 2, start + rng.randint(1, 3))
        proc = launch(argv, log)
        wait_until(lambda target=target: epochs_done(run) >= target, proc)
        time.sleep(rng.uniform(0.0, 0.12))
        kills.append((f"epoch {target}", epochs_done(run), kill(proc)))
    assert all(alive for _, _, alive in kills), kills
    assert not (run / "encoder.pt").exists(), "the run finished before the last kill"
    assert sum(done > 0 for _, done, _ in kills) >= 3
    final = subprocess.run([sys.executable, "-m", "smooth_infomax", *argv], env=ENV, capture_output=True, text=True,
                           timeout=300)
    assert final.returncode == 0, final.stderr + log.read_text()
    assert f"trained {EPOCHS} epochs" in final.stdout
    assert_same_weights(encoder_state(reference_run), encoder_state(run))
    assert metrics_without_time(reference_run) == metrics_without_time(run)
    state = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    ref_state = torch.load(reference_run / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert state["step"] == ref_state["step"] and state["plan_index"] == EPOCHS - 1
    assert_same_weights(ref_state["model"], state["model"])


@pytest.mark.slow
def test_a_damaged_checkpoint_is_named_not_a_traceback(reference_run, tmp_path, capsys):
    import shutil

    from smooth_infomax.cli import main

    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    ckpt = run / "checkpoints" / "last.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    assert main(["train", "--out", str(run), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and str(ckpt) in err


# --------------------------------------------------------------------------------------------------
# Probe: killed mid-run, the re-run gives the same JSON
# --------------------------------------------------------------------------------------------------


def test_probe_killed_mid_run_then_rerun_gives_the_same_json(reference_run, dataset, tmp_path):
    from smooth_infomax.probe import ProbeSettings, run_probe

    args = ["--task", "speaker", "--seeds", "3", "--epochs", "400", "--batch-size", "4", "--standardize"]
    with one_thread():
        ref = run_probe(reference_run, dataset, tmp_path / "ref",
                        ProbeSettings(task="speaker", seeds=3, epochs=400, batch_size=4, standardize=True))
    assert ref["results"]["encoder"]["gru"]["n_test"] == len(TEST_IDS)
    out = tmp_path / "killed"
    argv = ["probe", "--run", str(reference_run), "--data", str(dataset), "--out", str(out), *args]
    proc = launch(argv, tmp_path / "probe.log")
    features = out / "features"
    wait_until(lambda: features.is_dir() and len(list(features.glob("encoder_*.npz"))) >= 2, proc)
    time.sleep(random.Random(7).uniform(0.0, 0.3))
    was_running = kill(proc)
    assert was_running, "the probe finished before it could be killed"
    assert not (out / "probe_speaker.json").exists()
    done = subprocess.run([sys.executable, "-m", "smooth_infomax", *argv], env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    again = json.loads((out / "probe_speaker.json").read_text())
    expected = json.loads((tmp_path / "ref" / "probe_speaker.json").read_text())
    assert again == expected
    assert not list(out.rglob("*.tmp"))


# --------------------------------------------------------------------------------------------------
# Decoder: resumes per epoch, also after a checkpoint write that failed
# --------------------------------------------------------------------------------------------------


class Crash(Exception):
    """Stands for a kill between two epochs."""


def decoder_state(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "decoder.pt", map_location="cpu", weights_only=False)["state_dict"]


def test_decoder_training_resumes_per_epoch_to_identical_weights(reference_run, dataset, tmp_path, monkeypatch):
    from smooth_infomax.decoding import train as dec

    kw = dict(loss="mse", mode="sample", epochs=4, batch_size=3, lr=1e-3, seed=0, n_recon=0)
    with one_thread():
        straight = dec.train_decoder(reference_run, dataset, 1, out_dir=tmp_path / "straight", **kw)
        out = tmp_path / "resumed"
        real_history = dec._write_history
        calls = []

        def crash_after_two_epochs(path, rows):
            real_history(path, rows)
            calls.append(len(rows))
            if len(rows) == 2:
                raise Crash

        monkeypatch.setattr(dec, "_write_history", crash_after_two_epochs)
        with pytest.raises(Crash):
            dec.train_decoder(reference_run, dataset, 1, out_dir=out, **kw)
        monkeypatch.setattr(dec, "_write_history", real_history)
        assert torch.load(out / "checkpoint.pt", weights_only=False)["epoch"] == 2
        # the epoch-3 checkpoint cannot be written (disk full): epoch 2 stays, nothing else is left behind
        before = (out / "checkpoint.pt").read_bytes()
        real_fsync = os.fsync

        def full_disk(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(checkpoint.os, "fsync", full_disk)
        with pytest.raises(UserError, match="No space left"):
            dec.train_decoder(reference_run, dataset, 1, out_dir=out, **kw)
        monkeypatch.setattr(checkpoint.os, "fsync", real_fsync)
        assert (out / "checkpoint.pt").read_bytes() == before
        assert not list(out.glob(".*.tmp"))
        resumed = dec.train_decoder(reference_run, dataset, 1, out_dir=out, **kw)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3, 4]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(resumed["history"]) == strip(straight["history"])
    assert_same_weights(decoder_state(tmp_path / "straight"), decoder_state(out))


# --------------------------------------------------------------------------------------------------
# Pipeline stages
# --------------------------------------------------------------------------------------------------


def test_pipeline_stages_redo_only_what_did_not_finish(tmp_path):
    from smooth_infomax.stages import Stages

    ran: list[str] = []

    def stage(name, fail=False):
        def fn():
            ran.append(name)
            if fail:
                raise Crash(name)
            return {"name": name, "value": len(ran)}
        return fn

    logs: list[str] = []
    first = Stages(tmp_path, logs.append)
    assert first.run("data", stage("data")) == {"name": "data", "value": 1}
    assert first.run("train-sim", stage("train-sim")) == {"name": "train-sim", "value": 2}
    with pytest.raises(Crash):
        first.run("probe-sim-vowel", stage("probe-sim-vowel", fail=True))
    assert sorted(p.name for p in (tmp_path / "stages").iterdir()) == ["data.json", "train-sim.json"]

    logs.clear()
    again = Stages(tmp_path, logs.append)
    assert again.run("data", stage("data")) == {"name": "data", "value": 1}  # from the marker, not re-run
    assert again.run("train-sim", stage("train-sim")) == {"name": "train-sim", "value": 2}
    assert again.run("probe-sim-vowel", stage("probe-sim-vowel"))["name"] == "probe-sim-vowel"
    assert ran == ["data", "train-sim", "probe-sim-vowel", "probe-sim-vowel"]
    assert logs == ["[skip] data (done)", "[skip] train-sim (done)", "[run ] probe-sim-vowel"]

    # a marker damaged by hand (or by a failing disk) means "not done": the stage runs again
    (tmp_path / "stages" / "train-sim.json").write_text('{"result": {"name": "tra')
    logs.clear()
    assert Stages(tmp_path, logs.append).run("train-sim", stage("train-sim"))["name"] == "train-sim"
    assert logs[0].startswith("[redo] train-sim") and logs[1] == "[run ] train-sim"
    assert json.loads((tmp_path / "stages" / "train-sim.json").read_text())["result"]["name"] == "train-sim"


def test_a_stage_whose_marker_cannot_be_written_is_not_marked_done(tmp_path, monkeypatch):
    from smooth_infomax.stages import Stages

    monkeypatch.setattr(checkpoint.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space")))
    with pytest.raises(UserError, match="train-sim.json"):
        Stages(tmp_path, lambda s: None).run("train-sim", lambda: {"ok": True})
    assert list((tmp_path / "stages").iterdir()) == []


# --------------------------------------------------------------------------------------------------
# A failed write never damages the previous file and leaves no temporary file
# --------------------------------------------------------------------------------------------------


def _full_disk_on_fsync(monkeypatch):
    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint.os, "fsync", fsync)


def _full_disk_half_way(monkeypatch):
    real_fdopen = os.fdopen

    class HalfWriter:
        def __init__(self, fh):
            self.fh = fh

        def write(self, data):
            self.fh.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    monkeypatch.setattr(checkpoint.os, "fdopen", lambda fd, mode: HalfWriter(real_fdopen(fd, mode)))


@pytest.mark.parametrize("failure", [_full_disk_on_fsync, _full_disk_half_way], ids=["fsync", "write"])
@pytest.mark.parametrize("writer", ["bytes", "text", "json", "torch"])
def test_a_full_disk_keeps_the_previous_file(tmp_path, monkeypatch, failure, writer):
    target = tmp_path / "ckpt" / f"last.{writer}"
    write = {
        "bytes": lambda v: atomic_write_bytes(target, bytes([v]) * 5000),
        "text": lambda v: atomic_write_text(target, str(v) * 5000),
        "json": lambda v: atomic_write_json(target, {"epoch": v, "pad": "x" * 5000}),
        "torch": lambda v: atomic_torch_save({"epoch": v, "w": torch.full((500,), float(v))}, target),
    }[writer]
    write(1)
    before = target.read_bytes()
    failure(monkeypatch)
    with pytest.raises(UserError) as exc:
        write(2)
    msg = str(exc.value)
    assert str(target) in msg and "No space left on device" in msg and "\n" not in msg
    assert isinstance(exc.value.__cause__, OSError) and exc.value.__cause__.errno == errno.ENOSPC
    assert target.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]
    monkeypatch.undo()
    write(3)
    assert target.read_bytes() != before


def test_a_write_that_is_interrupted_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "m.json"
    atomic_write_json(target, {"v": 1})

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_json(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


@pytest.mark.slow
def test_training_on_a_full_disk_keeps_the_last_checkpoint_and_resumes(dataset, reference_run, tmp_path,
                                                                         monkeypatch, capsys):
    from smooth_infomax.cli import main
    from smooth_infomax.config import load_config
    from smooth_infomax.training import train

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd to tell which file an fsync is for")
    cfg = load_config(tiny_config(dataset, epochs=EPOCHS))
    run = tmp_path / "run"
    with one_thread():
        train(cfg, run, stop_after_steps=9)  # epochs 1 and 2 are checkpointed (4 steps each), then a "crash"
        ckpt = run / "checkpoints" / "last.pt"
        before = ckpt.read_bytes()
        real_fsync = os.fsync

        def full_disk_for_checkpoints(fd):  # config.yaml still fits; the epoch-3 checkpoint does not
            if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".last.pt."):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real_fsync(fd)

        monkeypatch.setattr(checkpoint.os, "fsync", full_disk_for_checkpoints)
        code = main(["--threads", "off", "train", "--config", str(run / "config.yaml"), "--out", str(run), "--resume"])
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err and str(ckpt) in err and "No space left" in err
        assert ckpt.read_bytes() == before
        assert sorted(p.name for p in ckpt.parent.iterdir()) == ["last.pt"]
        monkeypatch.undo()
        train(cfg, run, resume=True)
    assert_same_weights(encoder_state(reference_run), encoder_state(run))
