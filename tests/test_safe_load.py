"""Nothing untrusted is unpickled: a planted pickle whose payload would create a file is refused everywhere a
user-givable file is loaded (encoder.pt, training checkpoint, decoder and its training checkpoint, feature
caches), with a one-line error naming the file, and the payload never runs."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import smooth_infomax
from smooth_infomax.checkpoint import UnsafeFileError, load_npz, torch_load
from smooth_infomax.cli import main
from smooth_infomax.config import load_config, save_config
from smooth_infomax.decoding.store import load_decoder
from smooth_infomax.decoding.train import train_decoder
from smooth_infomax.errors import UserError
from smooth_infomax.features import extract_features, load_feature_set
from smooth_infomax.model import Encoder
from smooth_infomax.runs import load_encoder, open_run_data, save_encoder
from smooth_infomax.training.loop import train


class Payload:
    """Unpickling this calls ``open(marker, "w")``: the marker file appears iff the pickle was executed."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant_torch(path: Path, marker: Path, wrap: bool = True) -> Path:
    """A torch file shaped like ours (a dict with a state_dict) carrying the payload."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shaped = {"model_config": {}, "state_dict": {"w": torch.zeros(2)}, "extra": Payload(marker)}
    obj = shaped if wrap else Payload(marker)
    torch.save(obj, path)
    return path


def plant_npz(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, meta=np.array("{}"), f0=np.array([Payload(marker)], dtype=object))
    path.write_bytes(buf.getvalue())
    return path


def assert_refused(exc_info: pytest.ExceptionInfo, path: Path, marker: Path) -> None:
    message = str(exc_info.value)
    assert isinstance(exc_info.value, UnsafeFileError), message
    assert str(path) in message and "\n" not in message and "not loaded" in message
    assert not marker.exists(), "the payload ran"


def make_run(root: Path) -> tuple[Path, Path]:
    """(run_dir, data_dir): a folder dataset of tones and an untrained tiny encoder."""
    data = root / "audio"
    data.mkdir(parents=True)
    t = np.arange(4000) / 16000
    for i in range(6):
        sf.write(data / f"tone{i}.wav", (0.4 * np.sin(2 * np.pi * (150 + 40 * i) * t)).astype(np.float32), 16000)
    cfg = load_config({"seed": 0, "data": {"path": str(data), "layout": "folder", "crop": 3200, "random_crop": False},
                       "model": {"preset": "paper", "kind": "sim", "channels": 8, "gru_hidden": 6},
                       "loss": {"prediction_steps": 4, "negatives": 4, "window": 32},
                       "train": {"epochs": 1, "batch_size": 3, "progress": False, "log_tensorboard": False}})
    run = root / "run"
    run.mkdir()
    save_config(cfg, run / "config.yaml")
    torch.manual_seed(0)
    save_encoder(Encoder(cfg.model), cfg, run / "encoder.pt")
    return run, data


def test_the_payload_runs_when_unpickled_unsafely(tmp_path):
    """The control: the same file, loaded the unsafe way, does create the marker."""
    marker = tmp_path / "pwned"
    path = plant_torch(tmp_path / "evil.pt", marker)
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()
    plant_npz(tmp_path / "evil.npz", marker)
    np.load(tmp_path / "evil.npz", allow_pickle=True)["f0"]
    assert marker.exists()


@pytest.mark.parametrize("wrap", [True, False], ids=["inside-a-dict", "bare"])
def test_torch_load_refuses(tmp_path, wrap):
    marker = tmp_path / "pwned"
    path = plant_torch(tmp_path / "x.pt", marker, wrap)
    with pytest.raises(UserError) as info:
        torch_load(path)
    assert_refused(info, path, marker)
    protocol2 = tmp_path / "p2.pt"
    protocol2.write_bytes(pickle.dumps(Payload(marker), protocol=2))
    with pytest.raises(UserError) as info:
        torch_load(protocol2)
    assert_refused(info, protocol2, marker)



def test_encoder_pt_is_refused_by_load_and_encode(tmp_path, capsys):
    run, data = make_run(tmp_path)
    marker = tmp_path / "pwned"
    plant_torch(run / "encoder.pt", marker)
    with pytest.raises(UserError) as info:
        load_encoder(run)
    assert_refused(info, run / "encoder.pt", marker)
    with pytest.raises(UserError) as info:
        smooth_infomax.load(run)
    assert_refused(info, run / "encoder.pt", marker)
    code = main(["encode", "--run", str(run), "--input", str(data / "tone0.wav"), "--out", str(tmp_path / "f.npz")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and str(run / "encoder.pt") in err and len(err.splitlines()) == 1, err
    assert not marker.exists() and not (tmp_path / "f.npz").exists()


def test_training_checkpoint_is_refused_by_load_and_resume(tmp_path):
    run, _ = make_run(tmp_path)
    marker = tmp_path / "pwned"
    (run / "encoder.pt").unlink()
    ckpt = plant_torch(run / "checkpoints" / "last.pt", marker)
    with pytest.raises(UserError) as info:
        load_encoder(run)  # falls back to the checkpoint while training
    assert_refused(info, ckpt, marker)
    with pytest.raises(UserError) as info:
        train(load_config(run / "config.yaml"), run, resume=True)
    assert_refused(info, ckpt, marker)


def test_decoder_files_are_refused(tmp_path):
    run, data = make_run(tmp_path)
    marker = tmp_path / "pwned"
    dec = plant_torch(tmp_path / "dec" / "decoder.pt", marker)
    with pytest.raises(UserError) as info:
        load_decoder(dec)
    assert_refused(info, dec, marker)
    ckpt = plant_torch(tmp_path / "dec" / "checkpoint.pt", marker)  # the decoder's training checkpoint (resume)
    with pytest.raises(UserError) as info:
        train_decoder(run, data, 2, epochs=1, batch_size=3, out_dir=tmp_path / "dec", max_items=4)
    assert_refused(info, ckpt, marker)


def test_feature_caches_are_refused(tmp_path):
    run, _ = make_run(tmp_path)
    marker = tmp_path / "pwned"
    dataset = open_run_data(load_config(run / "config.yaml"), "train", crop="config")
    first = extract_features(load_encoder(run), dataset, pool="mean", cache_dir=tmp_path / "cache")
    (cache,) = (tmp_path / "cache").glob("*.npz")
    with np.load(cache) as z:  # the genuine cache file, one array swapped for a pickled object
        arrays = {k: z[k] for k in z.files}
    arrays["f0"] = np.array([Payload(marker)], dtype=object)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    cache.write_bytes(buf.getvalue())
    with pytest.raises(UserError) as info:
        extract_features(load_encoder(run), dataset, pool="mean", cache_dir=tmp_path / "cache")
    assert_refused(info, cache, marker)
    with pytest.raises(UserError) as info:
        load_feature_set(cache)
    assert_refused(info, cache, marker)
    with pytest.raises(UserError) as info:
        load_npz(cache)
    assert_refused(info, cache, marker)
    npy = tmp_path / "x.npy"
    np.save(npy, np.array([Payload(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(UserError) as info:
        load_npz(npy)
    assert_refused(info, npy, marker)
    assert len(first.features[0]) == len(dataset)


def test_files_written_by_0_1_still_load(tmp_path):
    """0.1's training checkpoint holds the numpy RNG state (an ndarray): the one allow-listed type."""
    import random

    sim_state = {"w": torch.randn(3)}
    state = {"model": sim_state, "optimizers": [{"state": {}, "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999)}]}],
             "schedulers": [{"gamma": 1.0, "base_lrs": [0.1], "last_epoch": 2}],
             "history": [{"epoch": 1, "module": "module0", "loss": 2.5}], "plan_index": 0, "step": 3,
             "rng": {"torch": torch.get_rng_state(), "cuda": None, "numpy": np.random.get_state(),
                     "python": random.getstate()}}
    torch.save(state, tmp_path / "last.pt")
    loaded = torch_load(tmp_path / "last.pt")
    assert torch.equal(loaded["model"]["w"], sim_state["w"])
    assert loaded["rng"]["numpy"][0] == "MT19937"
    assert np.array_equal(loaded["rng"]["numpy"][1], state["rng"]["numpy"][1])
    assert loaded["rng"]["python"] == state["rng"]["python"]
    run, _ = make_run(tmp_path / "r")
    assert isinstance(load_encoder(run), Encoder)  # 0.1's encoder.pt: dicts and tensors only
