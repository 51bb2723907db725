#!/usr/bin/env python
"""Speed and memory benchmarks of smooth-infomax, written to one JSON file.

    python benchmarks/run.py --quick --out bench.json      # 6-9 minutes on a 2-core CPU
    python benchmarks/run.py --out bench.json              # more repetitions, more shapes

Every measurement runs in its own subprocess (``--worker SPEC``), so its peak memory is the growth of the
process's resident-set high-water mark (``ru_maxrss``) during the measured work over the mark after set-up
(on a GPU: ``torch.cuda.max_memory_allocated``). Timings inside a worker are interleaved (A, B, A, B, ...) and
the median is reported, so the ratios survive a machine that is shared with other jobs; the absolute numbers
do not. Sections:

* ``train``: one SIM training step (forward, InfoNCE + KL of every module, backward, Adam) against the
  gradient-isolated conv/GRU stack alone (forward + backward of the sum of every module's output: the compute
  floor), paper scale (512 channels, 3 modules + GRU) and thesis scale (32 channels, 2 modules), batch 8 and 64,
  10240-sample crops (the artificial speech words). Key ``train_step_ratio_vs_stack`` (paper scale, batch 64).
* ``infonce``: InfoNCE forward + backward per implementation (``banked``, ``chunked``, ``gather``) against the
  plain per-step loop on identical draws, at the shapes of every paper-scale module and the thesis modules.
  Key ``infonce_speedup_vs_loop``: loop time / banked time summed over the four paper-scale modules of one step.
* ``data``: items/s of the default pre-training dataset and loader (artificial speech words, crop 10240, batch
  64, ``num_workers`` 0) against the training step's items/s. Key ``data_rate_ratio`` (first epoch, which
  decodes and resamples every file; the in-memory cache makes later epochs faster, also reported).
* ``probe``: :func:`smooth_infomax.probe.train_linear` on random features of the size of the syllable probes;
  ``ics``: :func:`smooth_infomax.latent.ics` against :func:`~smooth_infomax.latent.ics_naive` on random latents.

``OMP_WAIT_POLICY`` is set to ``PASSIVE`` in the workers unless ``--omp-wait-policy`` says otherwise: with the
default (active) policy a GRU step on a 2-core machine that other processes also use is 30x slower (the
``omp`` section measures this).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "artificial-speech"
CROP = 10240
SAMPLE_RATE = 16000

# ---------------------------------------------------------------------------------------------------------
# Worker side: one measurement per process
# ---------------------------------------------------------------------------------------------------------


def _rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / 2**20


class _Memory:
    """Peak memory of a phase: ru_maxrss growth on the CPU, max_memory_allocated on a GPU."""

    def __init__(self, device: Any):
        import torch

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
    import torch

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
    from smooth_infomax.config import load_config

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


def _stack_step(sim: Any, wave: Any) -> Callable[[], None]:
    """Forward + backward of the gradient-isolated encoder alone (loss: the sum of every module's output)."""
    from smooth_infomax.model.modules import ConvModule, reparameterize

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

    def __enter__(self) -> "_NoInfoNCE":
        import torch

        from smooth_infomax.model.infonce import InfoNCEOutput

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
    import torch

    from smooth_infomax.model import SmoothInfoMax

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
    """Interleaved timing of the training step and the stack alone (each repeated ``inner`` times per sample so
    that one sample takes >= 0.3 s)."""
    stack, step, sim = _setup_train(spec, device)
    no_infonce = _NoInfoNCE(sim)

    def step_without_infonce() -> None:
        with no_infonce:
            step()

    warm = _timed(step, device)
    _timed(stack, device)
    step_without_infonce()
    inner = max(1, math.ceil(0.3 / max(warm, 1e-6)))
    times = _interleave({"stack": _repeat(stack, inner), "step": _repeat(step, inner),
                         "step_without_infonce": _repeat(step_without_infonce, inner)}, spec["reps"], device)
    times = {k: [t / inner for t in v] for k, v in times.items()}
    step_s, stack_s = _median(times["step"]), _median(times["stack"])
    rest_s = _median(times["step_without_infonce"])
    B = spec["batch"]
    audio = B * CROP / SAMPLE_RATE
    return {"scale": spec["scale"], "model_kind": spec.get("model_kind", "sim"), "batch": B, "crop": CROP,
            "step_seconds": step_s, "stack_seconds": stack_s, "step_ratio_vs_stack": step_s / stack_s,
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
    import torch
    from torch import nn

    from smooth_infomax.model.infonce import draw_infonce_sample

    g = torch.Generator().manual_seed(0)
    B, T, D, C, K, n = (shape[k] for k in ("B", "T", "D", "C", "K", "n"))
    c = torch.randn(B, T, D, generator=g).to(device).requires_grad_()
    z = torch.randn(B, T, C, generator=g).to(device).requires_grad_()
    pred = nn.Linear(D, C * K, bias=False).to(device)
    sample = draw_infonce_sample(B, T, K, n, shape.get("window", 128), "reference",
                                 torch.Generator().manual_seed(1), device=device)
    return c, z, pred, sample


def _infonce_fn(impl: str, c: Any, z: Any, pred: Any, sample: Any, shape: dict[str, int]) -> Callable[[], None]:
    from smooth_infomax.model.infonce import info_nce, info_nce_loop

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


def _synth_folder(root: Path, n: int = 680, rate: int = 44100) -> None:
    """Word-like test audio (0.7-1.1 s at 44.1 kHz, so the loader resamples as for the real dataset)."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    for i in range(n):
        secs = 0.7 + 0.4 * rng.random()
        t = np.arange(int(secs * rate)) / rate
        f0 = 100 + 100 * rng.random()
        wave = 0.3 * np.sin(2 * np.pi * f0 * t * (1 + 0.1 * np.sin(2 * np.pi * 4 * t))) + 0.01 * rng.standard_normal(t.size)
        sf.write(root / f"w{i:04d}.wav", wave.astype(np.float32), rate)


def worker_data(spec: dict[str, Any], device: Any) -> dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader

    from smooth_infomax.data import open_dataset
    from smooth_infomax.data.records import collate

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
    import numpy as np

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
        from smooth_infomax import latent
        ics, ics_naive = latent.ics, latent.ics_naive
        from smooth_infomax.decoder import build_decoder
    except (ImportError, AttributeError) as exc:
        return {"skipped": f"smooth_infomax.latent.ics / ics_naive or the decoder are not available ({exc})"}
    import torch

    torch.manual_seed(0)
    cfg = _scale_config(spec["scale"])
    module = spec["module"]
    decoder = build_decoder(cfg.model, module, CROP).to(device)
    from smooth_infomax.model import Encoder

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
    import torch

    gru = torch.nn.GRU(512, 256, batch_first=True)
    x = torch.randn(64, 64, 512)
    with torch.no_grad():
        gru(x)
        times = [_timed(lambda: gru(x), torch.device("cpu")) for _ in range(spec["reps"])]
    return {"gru_forward_seconds": _median(times)}


WORKERS = {"train": worker_train, "train_memory": worker_train_memory, "infonce": worker_infonce, "infonce_memory": worker_infonce_memory,
           "data": worker_data, "probe": worker_probe, "ics": worker_ics, "omp": worker_omp}


def run_worker(spec: dict[str, Any]) -> None:
    import torch

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    device = torch.device(spec.get("device", "cpu"))
    result = WORKERS[spec["kind"]](spec, device)
    result["threads"] = torch.get_num_threads()
    print("RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------------------------
# Parent side: plan, spawn, collect, summarise
# ---------------------------------------------------------------------------------------------------------


def _spawn(spec: dict[str, Any], env_extra: dict[str, str], log: Callable[[str], None],
           timeout: float = 3600) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for key, value in env_extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                          env=env, capture_output=True, text=True, timeout=timeout)
    secs = time.perf_counter() - t
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
            log(f"  {spec['kind']} {spec.get('name', '')} done in {secs:.0f}s")
            return result
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    log(f"  {spec['kind']} {spec.get('name', '')} FAILED (exit {proc.returncode}): {' | '.join(tail)}")
    return {"error": f"worker exited with {proc.returncode}: {' | '.join(tail)}"}


def machine_info() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu_model": cpu,
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "mkl": torch.backends.mkl.is_available(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "cuda": torch.cuda.is_available(),
    }
    try:
        info["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


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
    from smooth_infomax.model import Encoder

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


PAPER_SHAPES = [
    ("paper/module0", {"B": 64, "T": 511, "D": 512, "C": 512, "K": 12, "n": 10}),
    ("paper/module1", {"B": 64, "T": 129, "D": 512, "C": 512, "K": 12, "n": 10}),
    ("paper/module2", {"B": 64, "T": 64, "D": 512, "C": 512, "K": 12, "n": 10}),
    ("paper/gru", {"B": 64, "T": 64, "D": 256, "C": 512, "K": 12, "n": 10}),
]
THESIS_SHAPES = [
    ("thesis/module1", {"B": 171, "T": 52, "D": 32, "C": 32, "K": 12, "n": 10}),
    ("thesis/module2", {"B": 171, "T": 13, "D": 32, "C": 32, "K": 12, "n": 10}),
]


def plan(quick: bool) -> dict[str, Any]:
    train_cases = [("paper", 64), ("paper", 8), ("thesis", 64), ("thesis", 8)]
    if not quick:
        train_cases += [("thesis", 171)]
    return {
        "train_cases": train_cases,
        "train_reps": {"paper": 3 if quick else 5, "thesis": 5 if quick else 11},
        "infonce_reps": 3 if quick else 7,
        "infonce_impls": ["banked", "loop", "predictor"] if quick else
                         ["banked", "chunked", "gather", "loop", "predictor"],
        "infonce_memory_impls": ["banked", "loop"] if quick else ["banked", "chunked", "gather", "loop"],
        "data_epochs": 2,
        "probe_epochs": 50,
        "ics": {"scale": "paper", "module": 2, "items": 10 if quick else 20, "pairs": 16 if quick else 60},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and shapes (under 10 minutes on 2 cores)")
    ap.add_argument("--out", help="JSON file to write")
    ap.add_argument("--sections", default="train,infonce,data,probe,ics,omp",
                    help="comma-separated subset of train,infonce,data,probe,ics,omp")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (train and infonce sections)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads in the workers (0: torch's default)")
    ap.add_argument("--omp-wait-policy", default="PASSIVE",
                    help="OMP_WAIT_POLICY for the workers (PASSIVE, ACTIVE, or 'inherit' to leave it alone)")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="artificial speech dataset for the data section")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        sys.path.insert(0, str(SRC))
        run_worker(json.loads(args.worker))
        return 0
    if not args.out:
        ap.error("--out FILE.json is required")
    sys.path.insert(0, str(SRC))
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    p = plan(args.quick)
    env = {} if args.omp_wait_policy == "inherit" else {"OMP_WAIT_POLICY": args.omp_wait_policy}
    base = {"device": args.device, "threads": args.threads}
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.0f}s] {msg}", file=sys.stderr, flush=True)

    report: dict[str, Any] = {
        "schema": 1,
        "command": " ".join([Path(sys.executable).name, "benchmarks/run.py"] + (argv if argv is not None else sys.argv[1:])),
        "quick": args.quick,
        "started": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": machine_info(),
        "settings": {"omp_wait_policy": args.omp_wait_policy, "threads": args.threads or "torch default",
                     "device": args.device, "plan": p},
        "load_average_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "notes": [],
    }
    notes = report["notes"]

    if "omp" in sections and args.device == "cpu":
        log("omp: GRU forward under both OpenMP wait policies")
        report["omp"] = {policy: _spawn({**base, "kind": "omp", "name": policy, "reps": 5},
                                        {"OMP_WAIT_POLICY": policy}, log) for policy in ("ACTIVE", "PASSIVE")}

    if "train" in sections:
        log("train: step vs stack")
        rows = []
        for scale, batch in p["train_cases"]:
            spec = {**base, "kind": "train", "name": f"{scale}/b{batch}", "scale": scale, "batch": batch,
                    "reps": p["train_reps"][scale]}
            row = _spawn(spec, env, log)
            for phase in ("step", "stack"):
                mres = _spawn({**spec, "kind": "train_memory", "name": f"{scale}/b{batch}/{phase}", "phase": phase},
                              env, log)
                row[f"peak_mb_{phase}"] = mres.get("peak_mb")
            rows.append(row)
        report["train"] = rows
        report["flop_floor"] = {f"{s}/b{b}": flop_floor(s, b) for s, b in [("paper", 64), ("thesis", 64)]}
        paper64 = next((r for r in rows if r.get("scale") == "paper" and r.get("batch") == 64), None)
        if paper64 and "step_seconds" in paper64:
            report["train_step_ratio_vs_stack"] = paper64["step_ratio_vs_stack"]
            report["paper_b64_audio_seconds_per_second"] = paper64["audio_seconds_per_second"]

    if "infonce" in sections:
        log("infonce: implementations vs the per-step loop")
        rows = []
        for name, shape in PAPER_SHAPES + THESIS_SHAPES:
            spec = {**base, "kind": "infonce", "name": name, "shape": shape, "impls": p["infonce_impls"],
                    "reps": p["infonce_reps"]}
            res = _spawn(spec, env, log)
            row: dict[str, Any] = {"name": name, "shape": shape, **res}
            if "seconds" in res:
                sec = res["seconds"]
                row["speedup_vs_loop"] = {k: sec["loop"] / v for k, v in sec.items() if k != "predictor"}
                if "predictor" in sec:  # how much of each implementation is the irreducible predictor matmul
                    row["beyond_predictor_seconds"] = {k: v - sec["predictor"] for k, v in sec.items()
                                                       if k != "predictor"}
            row["peak_mb"] = {}
            for impl in p["infonce_memory_impls"]:
                mres = _spawn({**base, "kind": "infonce_memory", "name": f"{name}/{impl}", "shape": shape,
                               "impl": impl}, env, log)
                row["peak_mb"][impl] = mres.get("peak_mb")
            rows.append(row)
        report["infonce"] = rows
        paper = [r for r in rows if r["name"].startswith("paper/") and "seconds" in r]
        if len(paper) == len(PAPER_SHAPES):
            loop = sum(r["seconds"]["loop"] for r in paper)
            banked = sum(r["seconds"]["banked"] for r in paper)
            report["infonce_speedup_vs_loop"] = loop / banked
            report["infonce_step_seconds"] = {"banked": banked, "loop": loop}
            if "predictor" in paper[0]["seconds"]:
                pred = sum(r["seconds"]["predictor"] for r in paper)
                report["infonce_step_seconds"]["predictor_only"] = pred
                report["infonce_speedup_vs_loop_beyond_predictor"] = (loop - pred) / max(banked - pred, 1e-9)
            tr = next((r for r in report.get("train", []) if r.get("scale") == "paper" and r.get("batch") == 64), None)
            if tr and "step_seconds" in tr:
                report["infonce_share_of_step"] = banked / tr["step_seconds"]
                notes.append("infonce_share_of_step: the banked InfoNCE time of the four paper-scale modules "
                             "(infonce section, separate processes) over the paper batch-64 step time (train section)")
        thesis = [r for r in rows if r["name"].startswith("thesis/") and "seconds" in r]
        if thesis:
            report["infonce_speedup_vs_loop_thesis"] = (sum(r["seconds"]["loop"] for r in thesis)
                                                        / sum(r["seconds"]["banked"] for r in thesis))

    if "data" in sections:
        log("data: loader rate")
        res = _spawn({**base, "kind": "data", "name": "words", "path": args.data, "batch": 64,
                      "epochs": p["data_epochs"]}, env, log)
        report["data"] = res
        tr = next((r for r in report.get("train", []) if r.get("scale") == "paper" and r.get("batch") == 64), None)
        if "epochs" in res and tr and "items_per_second" in tr:
            first, last = res["epochs"][0]["items_per_second"], res["epochs"][-1]["items_per_second"]
            report["data_rate_ratio"] = first / tr["items_per_second"]
            report["data_rate_ratio_cached"] = last / tr["items_per_second"]
            report["train_items_per_second"] = tr["items_per_second"]

    if "probe" in sections:
        log("probe: train_linear")
        cases = [{"name": "syllables, GRU mean-pooled", "n": 2181, "dim": 256, "classes": 9, "epochs": p["probe_epochs"],
                  "batch": 64},
                 {"name": "syllables, thesis module 1 flattened", "n": 2181, "dim": 32 * 52, "classes": 9,
                  "epochs": p["probe_epochs"], "batch": 64}]
        report["probe"] = _spawn({**base, "kind": "probe", "name": "linear", "cases": cases}, env, log)

    if "ics" in sections:
        log("ics: batched vs naive")
        res = _spawn({**base, "kind": "ics", "name": p["ics"]["scale"], **p["ics"]}, env, log)
        report["ics"] = res
        if "speedup" in res:
            report["ics_speedup_vs_naive"] = res["speedup"]
        elif "skipped" in res:
            notes.append(f"ics skipped: {res['skipped']}")

    report["load_average_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    report["seconds"] = time.perf_counter() - t_start
    report["targets"] = {"train_step_ratio_vs_stack": "<= 1.25", "infonce_speedup_vs_loop": ">= 3",
                         "data_rate_ratio": ">= 5"}
    keys = ["train_step_ratio_vs_stack", "infonce_speedup_vs_loop", "infonce_speedup_vs_loop_beyond_predictor",
            "infonce_speedup_vs_loop_thesis", "infonce_share_of_step", "data_rate_ratio", "data_rate_ratio_cached",
            "ics_speedup_vs_naive"]
    report["summary"] = {k: report[k] for k in keys if k in report}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    log(f"wrote {out}")
    for k, v in report["summary"].items():
        print(f"{k}: {v:.3f}" if isinstance(v, float) and math.isfinite(v) else f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
