"""Benchmark workers for data loading, probes, ICS and the OpenMP wait policy (run.py spawns each)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from bench_common import CROP, _median, _scale_config, _timed
from smooth_infomax.data import open_dataset
from smooth_infomax.data.records import collate
from smooth_infomax.model import Encoder


def _synth_folder(root: Path, n: int = 680, rate: int = 44100) -> None:
    """Word-like test audio (0.7-1.1 s at 44.1 kHz, so the loader resamples as for the real dataset)."""
    import soundfile as sf  # only here: writing the stand-in dataset

    rng = np.random.default_rng(0)
    for i in range(n):
        secs = 0.7 + 0.4 * rng.random()
        t = np.arange(int(secs * rate)) / rate
        f0 = 100 + 100 * rng.random()
        vibrato = 1 + 0.1 * np.sin(2 * np.pi * 4 * t)
        wave = 0.3 * np.sin(2 * np.pi * f0 * t * vibrato) + 0.01 * rng.standard_normal(t.size)
        sf.write(root / f"w{i:04d}.wav", wave.astype(np.float32), rate)


def worker_data(spec: dict[str, Any], device: Any) -> dict[str, Any]:
    path = spec.get("path")
    tmp = None
    if path and Path(path).exists():
        ds = open_dataset(path, split="train", view="words", crop=CROP)
        source = "artificial-speech"
    else:
        tmp = tempfile.TemporaryDirectory(prefix="sim-bench-data-")
        _synth_folder(Path(tmp.name))
        ds = open_dataset(tmp.name, split="train", layout="folder", crop=CROP)
        source = "generated 44.1 kHz folder (artificial speech not found)"
    epochs = []
    for epoch in range(spec["epochs"]):
        gen = torch.Generator().manual_seed(epoch)
        loader = DataLoader(ds, batch_size=spec["batch"], shuffle=True, drop_last=False, generator=gen,
                            collate_fn=collate, num_workers=spec.get("num_workers", 0))
        t = time.perf_counter()
        items = sum(int(batch["wave"].shape[0]) for batch in loader)
        secs = time.perf_counter() - t
        epochs.append({"epoch": epoch + 1, "items": items, "seconds": secs, "items_per_second": items / secs})
    if tmp is not None:
        tmp.cleanup()
    return {"source": source, "items": len(ds), "batch": spec["batch"], "num_workers": spec.get("num_workers", 0),
            "epochs": epochs}


def worker_probe(spec: dict[str, Any], device: Any) -> dict[str, Any]:
    from smooth_infomax.probe import train_linear

    rng = np.random.default_rng(0)
    out = []
    for case in spec["cases"]:
        x = rng.standard_normal((case["n"], case["dim"])).astype(np.float32)
        y = rng.integers(0, case["classes"], case["n"])
        t = time.perf_counter()
        train_linear(x, y, case["classes"], epochs=case["epochs"], batch_size=case["batch"], lr=1e-3)
        out.append({**case, "seconds": time.perf_counter() - t})
    return {"cases": out}


def worker_ics(spec: dict[str, Any], device: Any) -> dict[str, Any]:
    try:
        from smooth_infomax.decoding import build_decoder, ics, ics_naive
    except (ImportError, AttributeError) as exc:
        return {"skipped": f"smooth_infomax.decoding.ics / ics_naive or the decoder are not available ({exc})"}
    torch.manual_seed(0)
    cfg = _scale_config(spec["scale"])
    module = spec["module"]
    decoder = build_decoder(cfg.model, module, CROP).to(device)
    frames = Encoder(cfg.model).frame_counts(CROP)[module]
    C = cfg.model.channels
    z = torch.randn(spec["items"], frames, C)
    kw = dict(n_items=spec["items"], seed=0, max_pairs=spec["pairs"])
    t = time.perf_counter()
    fast = ics(decoder, z, batch_size=64, **kw)
    t_fast = time.perf_counter() - t
    t = time.perf_counter()
    slow = ics_naive(decoder, z, **kw)
    t_slow = time.perf_counter() - t
    diff = max(abs(a - b) for a, b in zip(fast["relative"], slow["relative"]))
    return {"scale": spec["scale"], "module": module, "frames": frames, "channels": C, "items": spec["items"],
            "pairs": fast["n_pairs"], "ds": len(fast["ds"]), "seconds_ics": t_fast, "seconds_ics_naive": t_slow,
            "speedup": t_slow / t_fast, "max_abs_diff_relative": diff}


def worker_omp(spec: dict[str, Any], device: Any) -> dict[str, Any]:
    """GRU forward (paper GRU module, batch 64, 64 frames): sensitive to the OpenMP wait policy."""
    gru = torch.nn.GRU(512, 256, batch_first=True)
    x = torch.randn(64, 64, 512)
    with torch.no_grad():
        gru(x)
        times = [_timed(lambda: gru(x), torch.device("cpu")) for _ in range(spec["reps"])]
    return {"gru_forward_seconds": _median(times)}


