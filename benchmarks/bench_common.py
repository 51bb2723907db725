"""Shared pieces of the benchmark workers: timing, memory, the benchmark model configs, the GEMM rate and the
multiply-accumulate count of a training step (the floor ``train_step_ratio_vs_floor`` divides by)."""

from __future__ import annotations

import resource
import statistics
import sys
import time
from typing import Any, Callable

import torch

from smooth_infomax.config import load_config
from smooth_infomax.model import Encoder

CROP = 10240
SAMPLE_RATE = 16000
GEMM_SHAPE = (2048, 2048, 2048)  # (M, K, N): 8.6 GMAC, large enough to run at the machine's sgemm rate


def _rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / 2**20


class _Memory:
    """Peak memory of a phase: ru_maxrss growth on the CPU, max_memory_allocated on a GPU."""

    def __init__(self, device: Any):
        self.torch = torch
        self.cuda = device.type == "cuda"

    def start(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
            self.base = self.torch.cuda.memory_allocated()
        else:
            self.base = _rss_mb()

    def peak_mb(self) -> float:
        if self.cuda:
            self.torch.cuda.synchronize()
            return (self.torch.cuda.max_memory_allocated() - self.base) / 2**20
        return _rss_mb() - self.base


def _timed(fn: Callable[[], Any], device: Any) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def _interleave(fns: dict[str, Callable[[], Any]], reps: int, device: Any) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            times[name].append(_timed(fn, device))
    return times


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _scale_config(scale: str, kind: str = "sim") -> Any:
    if scale == "paper":
        raw = {"model": {"preset": "paper", "kind": kind, "batch_norm": False},
               "loss": {"beta": 0.01, "prediction_steps": 12, "negatives": 10, "window": 128}}
    elif scale == "thesis":
        raw = {"model": {"preset": "thesis", "kind": kind},
               "loss": {"beta": 0.0035, "prediction_steps": 12, "negatives": 10, "window": 128}}
    else:
        raise ValueError(f"unknown scale {scale!r}")
    raw["data"] = {"crop": CROP, "random_crop": False}
    return load_config(raw)


def gemm_fn(device: Any) -> tuple[Callable[[], None], float]:
    """A float32 GEMM of :data:`GEMM_SHAPE` and its multiply-accumulates (the machine's compute rate)."""
    M, K, N = GEMM_SHAPE
    g = torch.Generator().manual_seed(0)
    a = torch.randn(M, K, generator=g).to(device)
    b = torch.randn(K, N, generator=g).to(device)
    out = torch.empty(M, N, device=device)

    def run() -> None:
        torch.mm(a, b, out=out)

    return run, float(M * K * N)


def _conv_macs(model: Any, n_samples: int, batch: int) -> dict[str, float]:
    """Multiply-accumulates of one forward pass, per module (conv layers, heads, GRU), for the FLOP floor."""
    out: dict[str, float] = {}
    length, ch_in = n_samples, 1
    C = model.channels
    heads = 2 if model.kind == "sim" else 1
    first = 0.0
    for i, mod in enumerate(model.modules):
        macs = 0.0
        for j, layer in enumerate(mod.layers):
            length = (length + 2 * layer.padding - layer.kernel) // layer.stride + 1
            if layer.type == "conv":
                macs += length * C * ch_in * layer.kernel
                if j == 0:  # a module's input is detached: no input gradient for its first layer
                    first += batch * length * C * ch_in * layer.kernel
                ch_in = C
        length = (length + 2 * mod.head_padding - mod.head_kernel) + 1
        macs += heads * length * C * C * mod.head_kernel
        out[f"module{i}"] = batch * macs
    if model.gru_hidden is not None:
        H = model.gru_hidden
        out["gru"] = batch * length * 3 * (C + H) * H
        first += batch * length * 3 * C * H
    out["_first_layers"] = first
    return out


def flop_floor(scale: str, batch: int) -> dict[str, Any]:
    """Analytic step / stack ratio if every multiply-accumulate ran at the same speed (an ideal lower bound
    given the exact math): stack = forward + backward (weight and input gradients; no input gradient for the
    first layer of a module) of the isolated modules; the step adds InfoNCE's predictor (sum over k of R_k x C x D,
    forward + 2 backward) and its negative scores (R_1 x K x n x C, x3). Element-wise work is not counted."""
    cfg = _scale_config(scale)
    fwd = _conv_macs(cfg.model, CROP, batch)
    first = fwd.pop("_first_layers")
    frames = Encoder(cfg.model).frame_counts(CROP)
    lo = cfg.loss
    stack = 3 * sum(fwd.values()) - first
    infonce = 0.0
    dims = [cfg.model.channels] * len(cfg.model.modules) + ([cfg.model.gru_hidden] if cfg.model.gru_hidden else [])
    for T, D in zip(frames, dims):
        L = min(T, lo.window) if lo.window else T
        rows = sum(batch * (L - k) for k in range(1, lo.prediction_steps + 1))
        C = cfg.model.channels
        infonce += 3 * rows * C * D + 3 * batch * (L - 1) * lo.prediction_steps * lo.negatives * C
    return {"stack_gmac": stack / 1e9, "infonce_gmac": infonce / 1e9, "ratio_floor": (stack + infonce) / stack}


