"""Data-parallel training under torchrun (2 CPU processes, gloo), the sharded sampler, module-parallel placement
(CPU fallback only: no GPUs here) and bf16 autocast."""

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from conftest import encoder_weights, tiny_folder_config, write_vibrato_tones
from smooth_infomax.config import save_config
from smooth_infomax.data.records import collate
from smooth_infomax.errors import ConfigError
from smooth_infomax.runs import open_training_data
from smooth_infomax.training import distributed as D
from smooth_infomax.training import seed_everything, train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio")
    return write_vibrato_tones(root, n=10, samples=4000, f0=100, step=25, depth=0.3, rate=4,
                               noise=0.02, seed=2, prefix="u")


def tiny(data, kind="gim", **train):
    return tiny_folder_config(data, seed=11, kind=kind, train={"epochs": 2, **train})


weights = encoder_weights


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------------------
# The sharded sampler
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,batch,world", [(10, 4, 2), (11, 4, 3), (9, 3, 2), (13, 4, 2), (8, 8, 4)])
def test_shards_partition_the_single_process_batches(n, batch, world):
    ref = [b.tolist() for b in DataLoader(list(range(n)), batch_size=batch, shuffle=True,
                                          generator=torch.Generator().manual_seed(5))]
    loaders = [DataLoader(list(range(n)), batch_sampler=D.ShardedBatchSampler(n, batch, g, r, world), generator=g)
               for r, g in ((r, torch.Generator().manual_seed(5)) for r in range(world))]
    shards = [list(dl) for dl in loaders]
    assert all(len(s) == len(shards[0]) for s in shards)
    got = [sum((s[j].tolist() for s in shards), []) for j in range(len(shards[0]))]
    kept = [b for b in ref if len(b) >= world]  # a tail batch with fewer items than processes is dropped
    assert got == kept
    assert len(loaders[0].batch_sampler) == len(kept)
    for j in range(len(kept)):
        sizes = [len(s[j]) for s in shards]
        assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


def test_context_and_seeds():
    ctx = D.from_env({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"})
    assert (ctx.enabled, ctx.is_main, ctx.rank, ctx.local_rank) == (True, False, 2, 0)
    assert not D.from_env({}).enabled
    seeds = {D.epoch_seed(3, r, e) for r in range(4) for e in range(50)}
    assert len(seeds) == 200
    with pytest.raises(ConfigError, match="batch_size"):
        D.ShardedBatchSampler(10, 1, torch.Generator(), 0, 2)
    assert D.resolve_device_map(None, 4) is None
    assert D.resolve_device_map("auto", 3) == (["cpu"] * 3 if not torch.cuda.is_available() else
                                              D.resolve_device_map("auto", 3))
    with pytest.raises(ConfigError):
        D.resolve_device_map(["cpu"], 4)


# ------------------------------------------------------------------------------------------------------
# torchrun, 2 CPU processes
# ------------------------------------------------------------------------------------------------------


def _sharded_reference(cfg, world):
    """One process doing what `world` DDP processes do together: every global batch split into the same shares,
    share r run with rank r's random stream, one Adam step on the item-weighted sum of the shares' losses."""
    from smooth_infomax.model import SmoothInfoMax

    seed_everything(cfg.seed)
    train_set, _ = open_training_data(cfg)
    sim = SmoothInfoMax(cfg.model, cfg.loss)
    optims = [torch.optim.Adam(sim.parameters_of(i), lr=cfg.train.lr) for i in range(sim.n_modules)]
    epoch_losses = []
    for epoch in range(cfg.train.epochs):
        loaders = []
        for r in range(world):
            g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
            sampler = D.ShardedBatchSampler(len(train_set), cfg.train.batch_size, g, r, world)
            loaders.append(DataLoader(train_set, batch_sampler=sampler, generator=g, collate_fn=collate))
        rngs = [torch.Generator().manual_seed(D.epoch_seed(cfg.seed, r, epoch)) for r in range(world)]
        sums, items = {}, 0
        for shares in zip(*loaders):
            n = sum(b["wave"].shape[0] for b in shares)
            total = 0.0
            for r, b in enumerate(shares):
                losses = sim(b["wave"], generator=rngs[r])
                total = total + (b["wave"].shape[0] / n) * sum(ml.loss for ml in losses)
                for ml in losses:
                    sums[ml.name] = sums.get(ml.name, 0.0) + float(ml.loss.detach()) * b["wave"].shape[0]
                items += b["wave"].shape[0]
            for o in optims:
                o.zero_grad(set_to_none=True)
            total.backward()
            for o in optims:
                o.step()
        epoch_losses.append({k: v / items for k, v in sums.items()})
    return sim.encoder.state_dict(), epoch_losses


@pytest.mark.slow
def test_torchrun_two_processes_follow_the_sharded_trajectory(tmp_path, audio_dir):
    cfg = tiny(audio_dir)  # GIM, fixed crops: no sampling noise; 10 items, global batch 4 -> shares of 2 (and 1)
    cfg_path = tmp_path / "c.yaml"
    save_config(cfg, cfg_path)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "smooth_infomax", "train", "--config", str(cfg_path), "--out", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "trained 2 epochs" in proc.stdout
    ref_state, ref_losses = _sharded_reference(cfg, 2)
    got = weights(tmp_path / "ddp")
    for k, v in ref_state.items():
        torch.testing.assert_close(got[k], v, rtol=1e-4, atol=1e-5, msg=k)
    rows = [r for r in csv.DictReader(open(tmp_path / "ddp" / "metrics.csv")) if r["split"] == "train"]
    for r in rows:
        assert float(r["loss"]) == pytest.approx(ref_losses[int(r["epoch"]) - 1][r["module"]], rel=1e-4, abs=1e-5)
    # rank 0 alone wrote the run directory, with validation rows
    assert {r["split"] for r in csv.DictReader(open(tmp_path / "ddp" / "metrics.csv"))} == {"train", "val"}
    # and it is not the single-process run on the same global batches (negatives come from each share only)
    single = train(cfg, tmp_path / "single")
    assert single["steps"] == 2 * 3
    differs = any(not torch.allclose(weights(tmp_path / "single")[k], got[k], atol=1e-6) for k in got)
    assert differs


# ------------------------------------------------------------------------------------------------------
# Module-parallel placement (CPU fallback) and bf16
# ------------------------------------------------------------------------------------------------------


def test_device_map_cpu_fallback_is_the_same_run(tmp_path, audio_dir):
    cfg = tiny(audio_dir, epochs=1, device="cpu")
    train(cfg, tmp_path / "plain")
    mapped = tiny(audio_dir, epochs=1, device="cpu", device_map=["cpu", "cpu", "cpu", "cpu"])
    train(mapped, tmp_path / "mapped")
    a, b = weights(tmp_path / "plain"), weights(tmp_path / "mapped")
    assert all(torch.equal(a[k], b[k]) for k in a)
    auto = tiny(audio_dir, epochs=1, device="cpu", device_map="auto")
    if not torch.cuda.is_available():
        train(auto, tmp_path / "auto")
        c = weights(tmp_path / "auto")
        assert all(torch.equal(a[k], c[k]) for k in a)


def test_apply_device_map_moves_inputs_between_modules():
    from smooth_infomax.model import SmoothInfoMax

    sim = SmoothInfoMax({"preset": "paper", "kind": "sim", "channels": 8, "gru_hidden": 8},
                        {"prediction_steps": 3, "negatives": 4})
    dev = D.apply_device_map(sim, ["cpu"] * 4)
    assert dev == torch.device("cpu")
    losses = sim(torch.randn(2, 1, 3200))
    assert len(losses) == 4 and all(torch.isfinite(ml.loss) for ml in losses)
    with pytest.raises(ConfigError, match="device_map"):
        D.apply_device_map(sim, ["cpu"] * 3)


def test_bf16_autocast_trains(tmp_path, audio_dir):
    cfg = tiny(audio_dir, kind="sim", epochs=1, precision="bf16", device="cpu")
    summary = train(cfg, tmp_path / "bf16")
    ref = train(tiny(audio_dir, kind="sim", epochs=1, device="cpu"), tmp_path / "fp32")
    for name, m in summary["val"].items():
        assert np.isfinite(m["loss"])
        assert m["infonce"] == pytest.approx(ref["val"][name]["infonce"], rel=0.1)
    with pytest.raises(ConfigError, match="precision"):
        tiny(audio_dir, precision="fp16")
