"""GPU checks before GPU time is spent: CUDA against CPU for InfoNCE and a training step, bf16, step times, memory.

:func:`cuda_selfcheck` (about a minute; the start of ``smooth-infomax reproduce paper --device cuda``) raises
:class:`SelfCheckFailed` with a one-line reason when CUDA is missing or disagrees with the CPU, so a broken
GPU stack never trains 1000 epochs. ``benchmarks/gpu_check.py`` uses the same pieces at more sizes.

* :func:`compare_infonce`: InfoNCE loss, accuracy and gradients (c, z, predictor) on ``device`` against the
  CPU, from the same inputs and the same pre-drawn negatives, for every implementation and sampling scheme.
* :func:`compare_step`: a GIM training step (every module's InfoNCE from the same waveforms, same negatives)
  on ``device`` against the CPU in float32 (TF32 off), and bf16 autocast against float32 on ``device``.
* :func:`time_step`: the full SIM training step (forward, backward, Adam) at a batch size: median step time,
  items per second, peak memory.
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import time
from typing import Any, Iterator

import torch

from ..config import load_config
from ..errors import UserError
from ..model import SmoothInfoMax
from ..model.infonce import draw_infonce_sample, info_nce
from ..model.modules import GRUModule

#: tolerances of CUDA against the CPU (float32, TF32 off): relative loss difference, gradient difference
#: relative to the largest gradient entry
LOSS_RTOL, GRAD_RTOL = 1e-4, 1e-3
#: bf16 autocast against float32, relative loss difference
BF16_RTOL = 5e-2


class SelfCheckFailed(UserError):
    """The GPU check found CUDA missing or disagreeing with the CPU."""


@contextlib.contextmanager
def exact_fp32() -> Iterator[None]:
    """TF32 off for matmuls and convolutions inside the block (restored afterwards)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def require_cuda() -> str:
    """The CUDA device's name; SelfCheckFailed when torch sees none."""
    if not torch.cuda.is_available():
        raise SelfCheckFailed(f"no CUDA device is visible to torch {torch.__version__} (built for CUDA "
                              f"{torch.version.cuda}); run on a GPU machine or pass --device cpu")
    return torch.cuda.get_device_name(0)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max(max |b|, 1e-12)."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def compare_infonce(device: str = "cuda", B: int = 8, T: int = 160, C: int = 64, K: int = 12, n: int = 10,
                    window: int = 128, seed: int = 0) -> list[dict[str, Any]]:
    """One row per (sampling, impl): loss, accuracy and gradient differences of ``device`` against the CPU.

    Inputs c, z (B, T, C) and the predictor are drawn on the CPU from ``seed`` (scaled to logits of order 1),
    the negatives once on the CPU.
    """
    rows = []
    for sampling, impls in (("reference", ("banked", "chunked")), ("batch", ("chunked",))):
        gen = torch.Generator().manual_seed(seed)
        # scaled so that the logits are O(1): a saturated softmax would hide gradient differences
        c0, z0 = (torch.randn(B, T, C, generator=gen) / C ** 0.25 for _ in range(2))
        pred0 = torch.nn.Linear(C, C * K, bias=False)
        with torch.no_grad():
            pred0.weight.copy_(torch.randn(pred0.weight.shape, generator=gen) / C ** 0.5)
        sample = draw_infonce_sample(B, T, K, n, window, sampling, generator=gen)
        for impl in impls:
            results = {}
            for dev in ("cpu", device):
                c, z = c0.clone().to(dev).requires_grad_(), z0.clone().to(dev).requires_grad_()
                pred = copy.deepcopy(pred0).to(dev)
                s = sample._replace(negatives=sample.negatives.to(dev))
                with exact_fp32():
                    out = info_nce(c, z, pred, K, n, window, sampling, sample=s, impl=impl)
                    out.loss.backward()
                results[dev] = (out.loss.detach().cpu(), out.accuracy.detach().cpu(), c.grad, z.grad, pred.weight.grad)
            cpu, gpu = results["cpu"], results[device]
            rows.append({"sampling": sampling, "impl": impl, "loss_cpu": float(cpu[0]), "loss_device": float(gpu[0]),
                         "loss_rel": _rel(gpu[0], cpu[0]), "accuracy_abs": float((gpu[1] - cpu[1]).abs().max()),
                         "grad_rel": max(_rel(g, h) for g, h in zip(gpu[2:], cpu[2:]))})
    return rows


def paper_model(kind: str = "gim", channels: int | None = None) -> SmoothInfoMax:
    """The paper-scale model of ``kind`` (the shipped ``<kind>-artificial-speech`` config), optionally narrower."""
    overrides = [] if channels is None else [f"model.channels={channels}"]
    cfg = load_config(f"{kind}-artificial-speech", overrides)
    return SmoothInfoMax(cfg.model, cfg.loss)


def _gim_losses(model: SmoothInfoMax, wave: torch.Tensor, samples: list[Any] | None,
                gen: torch.Generator | None) -> tuple[list[torch.Tensor], list[Any]]:
    """Every module's InfoNCE of a GIM model (the mean passed on), with given or freshly drawn negatives."""
    enc, losses, drawn = model.encoder, [], []
    x = enc.prepare(wave)
    for i, crit in enumerate(model.criteria):
        stage = enc.stages[i]
        if isinstance(stage, GRUModule):
            seq = x.detach().transpose(1, 2)
            c, z = stage(seq), seq
        else:
            mu, _ = stage(x.detach(), need_logvar=False)
            c = z = mu.transpose(1, 2)
            x = mu
        s = samples[i] if samples is not None else crit.draw(z.shape[0], z.shape[1], generator=gen)
        drawn.append(s)
        s = s._replace(negatives=s.negatives.to(z.device))
        losses.append(crit(c, z, sample=s).loss)
    return losses, drawn


def compare_step(device: str = "cuda", batch: int = 8, channels: int | None = None, seed: int = 0) -> dict[str, Any]:
    """A GIM training step on ``device`` against the CPU (float32, TF32 off) and bf16 against float32 on ``device``.

    Returns per-module loss differences, the largest relative gradient difference and the bf16 differences.
    """
    torch.manual_seed(seed)
    model_cpu = paper_model("gim", channels)
    model_dev = copy.deepcopy(model_cpu).to(device)
    gen = torch.Generator().manual_seed(seed)
    wave = torch.randn(batch, 1, 10240, generator=gen) * 0.1
    with exact_fp32():
        loss_cpu, samples = _gim_losses(model_cpu, wave, None, gen)
        torch.stack(loss_cpu).sum().backward()
        loss_dev, _ = _gim_losses(model_dev, wave.to(device), samples, None)
        torch.stack(loss_dev).sum().backward()
    grads = [_rel(pd.grad, pc.grad) for pc, pd in zip(model_cpu.parameters(), model_dev.parameters())
             if pc.grad is not None]
    with torch.no_grad(), torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
        loss_bf16, _ = _gim_losses(model_dev, wave.to(device), samples, None)
    return {"batch": batch, "channels": model_cpu.config.channels, "modules": model_cpu.module_names,
            "loss_cpu": [float(v.detach()) for v in loss_cpu], "loss_device": [float(v.detach()) for v in loss_dev],
            "loss_rel": max(_rel(a, b) for a, b in zip(loss_dev, loss_cpu)), "grad_rel": max(grads),
            "loss_bf16": [float(v) for v in loss_bf16],
            "bf16_rel": max(_rel(a.float(), b) for a, b in zip(loss_bf16, loss_dev)),
            "bf16_finite": bool(all(torch.isfinite(v) for v in loss_bf16))}


def time_step(device: str = "cuda", batch: int = 64, precision: str = "fp32", kind: str = "sim", steps: int = 10,
              warmup: int = 3, channels: int | None = None) -> dict[str, Any]:
    """Median seconds of the full training step (forward, backward, Adam) of the paper-scale ``kind`` model."""
    torch.manual_seed(0)
    model = paper_model(kind, channels).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    wave = torch.randn(batch, 1, 10240, device=device) * 0.1
    dev_type = torch.device(device).type
    cuda = dev_type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        ctx = torch.autocast(dev_type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
        with ctx:
            losses = model(wave)
        loss = torch.stack([m.loss for m in losses]).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    out = {"kind": kind, "batch": batch, "precision": precision, "channels": model.config.channels,
           "step_seconds": step, "items_per_second": batch / step, "loss": float(loss.detach()),
           "finite": bool(torch.isfinite(loss).item())}
    if cuda:
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def cuda_selfcheck(device: str = "cuda", batch: int = 64) -> dict[str, Any]:
    """The check at the start of a GPU reproduction; returns its report, raises SelfCheckFailed when it fails."""
    t0 = time.time()
    report: dict[str, Any] = {"device": require_cuda(), "torch": torch.__version__, "cuda": torch.version.cuda}
    free, total = torch.cuda.mem_get_info()
    report["memory_gib"] = {"free": free / 2**30, "total": total / 2**30}
    report["infonce"] = compare_infonce(device)
    report["step"] = compare_step(device, batch=4)
    report["timing"] = [time_step(device, batch, p, steps=5, warmup=2) for p in ("fp32", "bf16")]
    report["seconds"] = time.time() - t0
    report["problems"] = problems(report)
    return report


def problems(report: dict[str, Any]) -> list[str]:
    """One line per check of a self-check report that is off (empty when all pass)."""
    out = []
    for row in report.get("infonce", []):
        if not (row["loss_rel"] <= LOSS_RTOL and row["grad_rel"] <= GRAD_RTOL and row["accuracy_abs"] <= 1e-6):
            out.append(f"InfoNCE ({row['sampling']}, {row['impl']}): loss {row['loss_device']:.6g} on the GPU vs "
                       f"{row['loss_cpu']:.6g} on the CPU (relative {row['loss_rel']:.2g}, gradients "
                       f"{row['grad_rel']:.2g}, accuracy {row['accuracy_abs']:.2g}; tolerances {LOSS_RTOL:g} / "
                       f"{GRAD_RTOL:g} / 1e-6)")
    step = report.get("step")
    if step is not None:
        if not (step["loss_rel"] <= LOSS_RTOL and step["grad_rel"] <= 10 * GRAD_RTOL):
            out.append(f"training step: GPU losses {step['loss_device']} vs CPU {step['loss_cpu']} (relative "
                       f"{step['loss_rel']:.2g}, gradients {step['grad_rel']:.2g}; tolerances {LOSS_RTOL:g} / "
                       f"{10 * GRAD_RTOL:g})")
        if not (step["bf16_finite"] and step["bf16_rel"] <= BF16_RTOL):
            out.append(f"bf16 step: losses {step['loss_bf16']} vs float32 {step['loss_device']} (relative "
                       f"{step['bf16_rel']:.2g}, tolerance {BF16_RTOL:g})")
    for t in report.get("timing", []):
        if not t["finite"]:
            out.append(f"{t['precision']} training step at batch {t['batch']}: the loss is not finite")
    return out


__all__ = ["SelfCheckFailed", "require_cuda", "compare_infonce", "compare_step", "time_step", "cuda_selfcheck",
           "problems", "exact_fp32", "paper_model"]
