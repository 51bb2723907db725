"""Module-wise training on cached activations: equals train.py's sequential schedule for GIM with fixed crops,
memory and disk caches agree, SIM resamples its cached inputs, random crops are refused, runs resume."""

import csv

import pytest
import torch

from conftest import encoder_weights, tiny_folder_config, write_vibrato_tones
from smooth_infomax.cli import main
from smooth_infomax.errors import ConfigError
from smooth_infomax.runs import load_encoder as load
from smooth_infomax.training import ActivationCache, choose_storage, train, train_modulewise


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio")
    return write_vibrato_tones(root, n=9, samples=4000, f0=110, step=20, depth=0.3, rate=5,
                               noise=0.02, seed=1, prefix="w")


def tiny(data, kind="gim", **train):
    return tiny_folder_config(data, seed=5, kind=kind, train={"epochs": 2, "schedule": "sequential", **train})


weights = encoder_weights


def rows(run):
    with open(run / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def test_gim_fixed_crop_matches_sequential_train_bitwise(tmp_path, audio_dir):
    # 9 items at batch 3: every batch has the same size, so the frozen convolutions run the same kernels as in
    # train.py and the two schedules are the same computation, bit for bit
    cfg = tiny(audio_dir, batch_size=3)
    train(cfg, tmp_path / "seq")
    summary = train_modulewise(cfg, tmp_path / "mw", cache="memory")
    assert summary["epochs"] == 8 and set(summary["caches"]) == {"module0", "module1", "module2"}
    a, b = weights(tmp_path / "seq"), weights(tmp_path / "mw")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the same losses epoch by epoch (train and validation), module by module
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert strip(rows(tmp_path / "seq")) == strip(rows(tmp_path / "mw"))
    for name in ("config.yaml", "encoder.pt", "metrics.csv", "checkpoints/last.pt"):
        assert (tmp_path / "mw" / name).exists()
    assert not (tmp_path / "mw" / "activation-cache").exists()


def test_gim_uneven_batches_match_sequential_to_rounding(tmp_path, audio_dir):
    # 9 items at batch 4: the last batch has one item; oneDNN picks its convolution kernel by batch size, so a
    # frozen module's output for an item can differ in the last bit between the cache and train.py's batches
    cfg = tiny(audio_dir, epochs=1)
    train(cfg, tmp_path / "seq")
    train_modulewise(cfg, tmp_path / "mw", cache="memory")
    a, b = weights(tmp_path / "seq"), weights(tmp_path / "mw")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    for x, y in zip(rows(tmp_path / "seq"), rows(tmp_path / "mw")):
        assert (x["epoch"], x["split"], x["module"]) == (y["epoch"], y["split"], y["module"])
        assert float(x["loss"]) == pytest.approx(float(y["loss"]), rel=1e-4, abs=1e-5)


def test_disk_cache_equals_memory_cache_and_is_removed(tmp_path, audio_dir):
    cfg = tiny(audio_dir, epochs=1)
    train_modulewise(cfg, tmp_path / "mem", cache="memory")
    summary = train_modulewise(cfg, tmp_path / "disk", cache="auto", memory_limit=0)
    assert {v["storage"] for v in summary["caches"].values()} == {"disk"}
    a, b = weights(tmp_path / "mem"), weights(tmp_path / "disk")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not (tmp_path / "disk" / "activation-cache").exists()


def test_sim_resamples_cached_inputs_every_epoch(tmp_path, audio_dir, monkeypatch):
    seen = {}
    original = ActivationCache.inputs

    def spy(self, idx, device, generator=None):
        x = original(self, idx, device, generator)
        if self.logvar is not None and 0 in idx.tolist():
            pos = idx.tolist().index(0)
            seen.setdefault(self.frames, []).append(x[pos].clone())
        return x

    monkeypatch.setattr(ActivationCache, "inputs", spy)
    cfg = tiny(audio_dir, kind="sim", epochs=2)
    train_modulewise(cfg, tmp_path / "sim", cache="memory")
    enc = load(tmp_path / "sim")
    assert [o.shape[1] for o in enc.encode(torch.zeros(1, 3200))] == enc.frame_counts(3200)
    # item 0's input to each later module: a fresh posterior sample in each epoch (plus the validation draws)
    assert seen and all(len(v) >= 2 for v in seen.values())
    for samples in seen.values():
        assert not torch.equal(samples[0], samples[1])
    # reproducible: the same run again gives the same weights
    train_modulewise(cfg, tmp_path / "sim2", cache="memory")
    a, b = weights(tmp_path / "sim"), weights(tmp_path / "sim2")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sim_fixed_sample_cache(tmp_path, audio_dir):
    cfg = tiny(audio_dir, kind="sim", epochs=1)
    summary = train_modulewise(cfg, tmp_path / "run", cache="memory", resample=False)
    assert summary["steps"] == 4 * 3  # 9 items at batch 4 -> 3 steps per epoch, 4 modules
    with_lv = train_modulewise(cfg, tmp_path / "run2", cache="memory")["caches"]
    assert with_lv["module0"]["bytes"] == 2 * summary["caches"]["module0"]["bytes"]  # mu + logvar vs one sample


def test_resume_after_interruption_is_bit_identical(tmp_path, audio_dir):
    cfg = tiny(audio_dir, kind="sim", epochs=2)
    train_modulewise(cfg, tmp_path / "full", cache="memory")

    class Stop(Exception):
        pass

    def stop_after(epoch, _rows):
        if epoch == 4:  # module 2's first epoch finished (checkpoint written), then "crash"
            raise Stop

    with pytest.raises(Stop):
        train_modulewise(cfg, tmp_path / "resumed", cache="memory", on_epoch=stop_after)
    train_modulewise(cfg, tmp_path / "resumed", cache="memory", resume=True)
    a, b = weights(tmp_path / "full"), weights(tmp_path / "resumed")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert strip(rows(tmp_path / "full")) == strip(rows(tmp_path / "resumed"))


def test_refuses_random_crops_and_bad_cache(tmp_path, audio_dir):
    cfg = tiny(audio_dir)
    cfg.data.random_crop = True
    with pytest.raises(ConfigError, match="data.random_crop"):
        train_modulewise(cfg, tmp_path / "r")
    with pytest.raises(ConfigError, match="cache"):
        train_modulewise(tiny(audio_dir), tmp_path / "r2", cache="gpu")
    assert choose_storage("auto", 10, 100) == "memory" and choose_storage("auto", 1000, 100) == "disk"
    assert choose_storage("disk", 10, None) == "disk"


def test_command_line(tmp_path, audio_dir, capsys):
    from smooth_infomax.config import save_config

    save_config(tiny(audio_dir, epochs=1), tmp_path / "c.yaml")
    assert main(["train-modulewise", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run"),
                 "--cache", "disk"]) == 0
    out = capsys.readouterr().out
    assert "trained 4 epochs" in out and "disk" in out and "validation:" in out
    assert (tmp_path / "run" / "encoder.pt").exists()
    assert main(["train-modulewise", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "bad"),
                 "--set", "data.random_crop=true"]) == 2
    err = capsys.readouterr().err
    assert "data.random_crop" in err and len(err.strip().splitlines()) == 1
    # --resume reads the run's saved config; a finished run has nothing left to train
    assert main(["train-modulewise", "--out", str(tmp_path / "run"), "--resume", "--cache", "memory"]) == 0
    assert "trained 4 epochs (12 steps)" in capsys.readouterr().out
