"""Benchmark workers for training: the SIM step against its floor (stack alone, GEMM rate), InfoNCE
implementations, the per-layer convolution rates and peak memory. Each runs in its own process (run.py)."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from bench_common import CROP, SAMPLE_RATE, _interleave, _median, _Memory, _scale_config, _timed, flop_floor, gemm_fn
from smooth_infomax.model import Encoder, SmoothInfoMax
from smooth_infomax.model.infonce import InfoNCEOutput, draw_infonce_sample, info_nce
from smooth_infomax.model.modules import ConvModule, reparameterize


def _stack_step(sim: Any, wave: Any) -> Callable[[], None]:
    """Forward + backward of the gradient-isolated encoder alone (loss: the sum of every module's output)."""

    enc = sim.encoder
    sample = enc.kind == "sim"

    def run() -> None:
        x = enc.prepare(wave) if hasattr(enc, "prepare") else enc.as_batch(wave)
        total = 0.0
        for stage in enc.stages:
            x = x.detach()
            if isinstance(stage, ConvModule):
                mu, logvar = stage(x, need_logvar=sample)
                x = reparameterize(mu, logvar) if sample else mu
            else:
                x = stage(x.transpose(1, 2)).transpose(1, 2)
            total = total + x.sum()
        enc.zero_grad(set_to_none=True)
        total.backward()

    return run


def _train_step(sim: Any, optims: list[Any], wave: Any) -> Callable[[], None]:
    def run() -> None:
        losses = sim(wave)
        total = sum(ml.loss for ml in losses)
        for o in optims:
            o.zero_grad(set_to_none=True)
        total.backward()
        for o in optims:
            o.step()

    return run


class _NoInfoNCE:
    """Stand-in for every InfoNCE criterion (a near-free loss that still sends gradients into c and z), so that
    a training step without InfoNCE can be timed: stack + SIM sampling / KL / layout copies + Adam."""

    def __init__(self, sim: Any):
        self.sim = sim

    def __enter__(self) -> _NoInfoNCE:

        def cheap(c: Any, z: Any, generator: Any = None, sample: Any = None, K: int = 1) -> Any:
            loss = 1e-6 * (c.sum() + z.sum())
            return InfoNCEOutput(loss, loss.detach().expand(K), torch.zeros(K))

        for crit in self.sim.criteria:
            crit.forward = (lambda K: lambda c, z, generator=None, sample=None: cheap(c, z, K=K))(crit.K)
        return self

    def __exit__(self, *exc: Any) -> None:
        for crit in self.sim.criteria:
            del crit.forward


def _setup_train(spec: dict[str, Any], device: Any) -> tuple[Callable[[], None], Callable[[], None], Any]:

    torch.manual_seed(0)
    cfg = _scale_config(spec["scale"], spec.get("model_kind", "sim"))
    sim = SmoothInfoMax(cfg.model, cfg.loss).to(device).train()
    optims = [torch.optim.Adam(sim.parameters_of(i), lr=2e-4) for i in range(sim.n_modules)]
    wave = (0.1 * torch.randn(spec["batch"], 1, CROP)).to(device)
    return _stack_step(sim, wave), _train_step(sim, optims, wave), sim


def _repeat(fn: Callable[[], None], times: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(times):
            fn()

    return run


def worker_train(spec: dict[str, Any], device: Any) -> dict[str, Any]:
    """Interleaved timing of the training step, the stack alone, the step without InfoNCE and a GEMM (each
    repeated ``inner`` times per sample so that one sample takes >= 0.3 s). The step over its floor (the
    step's multiply-accumulates, :func:`flop_floor`, at the GEMM rate of this process) is
    ``step_ratio_vs_floor``."""
    stack, step, sim = _setup_train(spec, device)
    no_infonce = _NoInfoNCE(sim)
    gemm, gemm_macs = gemm_fn(device)

    def step_without_infonce() -> None:
        with no_infonce:
            step()

    warm = _timed(step, device)
    _timed(stack, device)
    step_without_infonce()
    gemm()
    inner = max(1, math.ceil(0.3 / max(warm, 1e-6)))
    inner_gemm = max(1, math.ceil(0.3 / max(_timed(gemm, device), 1e-6)))
    times = _interleave({"stack": _repeat(stack, inner), "step": _repeat(step, inner),
                         "step_without_infonce": _repeat(step_without_infonce, inner),
                         "gemm": _repeat(gemm, inner_gemm)}, spec["reps"], device)
    times = {k: [t / (inner_gemm if k == "gemm" else inner) for t in v] for k, v in times.items()}
    step_s, stack_s = _median(times["step"]), _median(times["stack"])
    rest_s = _median(times["step_without_infonce"])
    gemm_rate = gemm_macs / _median(times["gemm"])  # MAC/s
    floor = flop_floor(spec["scale"], spec["batch"])
    floor_s = (floor["stack_gmac"] + floor["infonce_gmac"]) * 1e9 / gemm_rate
    B = spec["batch"]
    audio = B * CROP / SAMPLE_RATE
    return {"scale": spec["scale"], "model_kind": spec.get("model_kind", "sim"), "batch": B, "crop": CROP,
            "step_seconds": step_s, "stack_seconds": stack_s, "step_ratio_vs_stack": step_s / stack_s,
            "gemm_gmac_per_second": gemm_rate / 1e9, "flop_floor": floor, "floor_seconds": floor_s,
            "step_ratio_vs_floor": step_s / floor_s,
            "stack_ratio_vs_floor": stack_s / (floor["stack_gmac"] * 1e9 / gemm_rate),
            "step_without_infonce_seconds": rest_s,
            "breakdown_seconds": {"stack": stack_s, "sampling_kl_layout_adam": rest_s - stack_s,
                                  "infonce": step_s - rest_s},
            "audio_seconds_per_second": audio / step_s, "items_per_second": B / step_s,
            "stack_audio_seconds_per_second": audio / stack_s, "times": times, "reps": spec["reps"],
            "inner": inner, "parameters": sum(p.numel() for p in sim.parameters())}


def worker_train_memory(spec: dict[str, Any], device: Any) -> dict[str, Any]:
    """Peak memory of ``spec['phase']`` in a fresh process: two training steps (the second sees Adam's state and
    the gradients kept from the first, as in training) or one stack pass."""
    stack, step, _ = _setup_train(spec, device)
    fn = step if spec["phase"] == "step" else stack
    mem = _Memory(device)
    mem.start()
    for _ in range(2 if spec["phase"] == "step" else 1):
        fn()
    return {"peak_mb": mem.peak_mb()}


def _infonce_inputs(shape: dict[str, int], device: Any) -> tuple[Any, Any, Any, Any]:

    g = torch.Generator().manual_seed(0)
    B, T, D, C, K, n = (shape[k] for k in ("B", "T", "D", "C", "K", "n"))
    c = torch.randn(B, T, D, generator=g).to(device).requires_grad_()
    z = torch.randn(B, T, C, generator=g).to(device).requires_grad_()
    pred = nn.Linear(D, C * K, bias=False).to(device)
    sample = draw_infonce_sample(B, T, K, n, shape.get("window", 128), "reference",
                                 torch.Generator().manual_seed(1), device=device)
    return c, z, pred, sample


def _infonce_fn(impl: str, c: Any, z: Any, pred: Any, sample: Any, shape: dict[str, int]) -> Callable[[], None]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from infonce_oracle import info_nce_loop  # the tests' per-step loop: the reference the speed-up is against

    K, n, window = shape["K"], shape["n"], shape.get("window", 128)

    def run() -> None:
        c.grad = z.grad = pred.weight.grad = None
        if impl == "loop":
            out = info_nce_loop(c, z, pred, K, n, window, sample=sample)
        elif impl == "predictor":  # the predictor's matmuls alone: the floor of any implementation
            L = sample.length
            out = pred(c[:, sample.start:sample.start + L])
            out.sum().backward()
            return
        else:
            out = info_nce(c, z, pred, K, n, window, sample=sample, impl=impl)
        out.loss.backward()

    return run


def worker_infonce(spec: dict[str, Any], device: Any) -> dict[str, Any]:
    """Interleaved timing of several implementations on identical inputs and draws."""
    shape = spec["shape"]
    c, z, pred, sample = _infonce_inputs(shape, device)
    fns = {impl: _infonce_fn(impl, c, z, pred, sample, shape) for impl in spec["impls"]}
    for fn in fns.values():  # warm-up
        fn()
    times = _interleave(fns, spec["reps"], device)
    return {"times": times, "seconds": {k: _median(v) for k, v in times.items()}}


def worker_infonce_memory(spec: dict[str, Any], device: Any) -> dict[str, Any]:
    shape = spec["shape"]
    c, z, pred, sample = _infonce_inputs(shape, device)
    fn = _infonce_fn(spec["impl"], c, z, pred, sample, shape)
    mem = _Memory(device)
    mem.start()
    fn()
    return {"peak_mb": mem.peak_mb()}




def _conv_layers(scale: str, batch: int) -> list[dict[str, Any]]:
    """Every Conv1d of the benchmark encoder with the shape of its input (B, C_in, T)."""

    cfg = _scale_config(scale)
    enc = Encoder(cfg.model)
    length, ch, out = CROP, 1, []
    for si, stage in enumerate(enc.stages):
        if not isinstance(stage, ConvModule):
            break
        convs = 0
        for layer in list(stage.body) + [stage.mu_head]:
            if isinstance(layer, nn.Conv1d):
                name = f"module{si}/{'head' if layer is stage.mu_head else f'conv{convs}'}"
                out.append({"name": name, "layer": layer, "shape": (batch, ch, length), "first": convs == 0})
                convs += 1
                length = (length + 2 * layer.padding[0] - layer.kernel_size[0]) // layer.stride[0] + 1
                ch = layer.out_channels
            elif hasattr(layer, "kernel_size"):  # max-pooling
                k, st = int(layer.kernel_size), int(layer.stride)
                length = (length + 2 * int(layer.padding) - k) // st + 1
    return out


def worker_conv(spec: dict[str, Any], device: Any) -> dict[str, Any]:
    """Forward + backward of every conv layer of the paper-scale encoder (as in training: no input gradient for a
    module's first layer, whose input is detached) interleaved with the GEMM; the rate of each layer (MAC/s)
    over the GEMM rate. The waveform layer is also timed as a plain ``F.conv1d`` (``plain_seconds``).

    Memory side: ``min_bytes`` is the least traffic of the layer's forward + backward in float32 (read the input,
    write the output; read the output gradient and the input again for the weight gradient; write the input
    gradient where it is needed), and ``bandwidth_vs_copy`` its rate over a 256 MiB ``copy_`` (read + write)
    interleaved with the rest: a layer near 1 there is bound by memory traffic, not arithmetic, and cannot reach
    the GEMM rate whatever its formulation (the waveform layer: 10 multiply-accumulates per output value)."""

    gemm, gemm_macs = gemm_fn(device)
    src = torch.randn(64 * 2**20, device=device)
    dst = torch.empty_like(src)
    copy_bytes = 2 * src.numel() * 4
    fns: dict[str, Callable[[], None]] = {}
    info: dict[str, dict[str, Any]] = {}
    g = torch.Generator().manual_seed(0)
    for item in _conv_layers(spec["scale"], spec["batch"]):
        layer = item["layer"].to(device)
        x = torch.randn(item["shape"], generator=g).to(device).requires_grad_(not item["first"])
        with torch.no_grad():
            y0 = layer(x)
        grad = torch.randn(y0.shape, generator=g).to(device)
        k, c_out = layer.kernel_size[0], layer.out_channels
        macs = y0.shape[0] * y0.shape[2] * c_out * item["shape"][1] * k * (2 if item["first"] else 3)

        def run(layer: Any = layer, x: Any = x, grad: Any = grad) -> None:
            layer.zero_grad(set_to_none=True)
            x.grad = None
            layer(x).backward(grad)

        fns[item["name"]] = run
        n_in, n_out = x.numel(), y0.numel()
        min_bytes = 4 * (2 * n_in + 2 * n_out + (0 if item["first"] else n_in))
        info[item["name"]] = {"input_shape": list(item["shape"]), "kernel": k, "stride": layer.stride[0],
                              "out_channels": c_out, "macs": macs, "min_bytes": min_bytes,
                              "class": type(layer).__name__}
        if item["shape"][1] == 1:
            def plain(layer: Any = layer, x: Any = x, grad: Any = grad) -> None:
                layer.zero_grad(set_to_none=True)
                F.conv1d(x, layer.weight, layer.bias, stride=layer.stride, padding=layer.padding).backward(grad)

            fns[item["name"] + "/plain_conv1d"] = plain
    fns["gemm"] = gemm
    fns["copy"] = lambda: dst.copy_(src)
    for fn in fns.values():
        fn()
    times = _interleave(fns, spec["reps"], device)
    med = {k: _median(v) for k, v in times.items()}
    rate = gemm_macs / med["gemm"]
    bandwidth = copy_bytes / med["copy"]
    layers = []
    for name, row in info.items():
        row = {"name": name, **row, "seconds": med[name], "gmac_per_second": row["macs"] / med[name] / 1e9,
               "rate_vs_gemm": row["macs"] / med[name] / rate,
               "bandwidth_vs_copy": row["min_bytes"] / med[name] / bandwidth}
        if name + "/plain_conv1d" in med:
            row["plain_conv1d_seconds"] = med[name + "/plain_conv1d"]
            row["speedup_vs_plain_conv1d"] = med[name + "/plain_conv1d"] / med[name]
        layers.append(row)
    return {"scale": spec["scale"], "batch": spec["batch"], "gemm_gmac_per_second": rate / 1e9,
            "copy_gb_per_second": bandwidth / 1e9, "layers": layers, "times": times}
