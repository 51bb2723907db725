"""GPU check in one device call (<= 5 minutes): CUDA against the CPU, bf16, paper-scale step times, NCCL torchrun.

    python benchmarks/gpu_check.py --out benchmarks/results/gpu_check.json [--data data/compact] [--budget 270]
    bash benchmarks/gpu_check.sh          # the same, with PYTHONPATH=src (the device image has no install)

Writes the JSON after every part, so a run cut short still reports what it measured:

* ``environment``: torch, CUDA, cuDNN, the GPU, its memory;
* ``infonce``: loss, accuracy and gradients of every InfoNCE implementation and sampling on CUDA against the
  CPU (same inputs, same negatives; float32 with TF32 off), at a small and at the paper's size;
* ``step``: a paper-scale GIM training step (all four modules) on CUDA against the CPU, and bf16 against fp32;
* ``timing``: the full paper-scale SIM training step (forward, backward, Adam) at batch 64 and 256, fp32 and
  bf16 (median step seconds, items per second, peak memory, seconds per epoch of the 680 training words);
* ``nccl``: a 1-GPU torchrun launch that joins an NCCL process group and all-reduces; with ``--data`` (the
  compact dataset copy) also 3 steps of ``smooth-infomax train`` under torchrun on the GPU.

Without CUDA it exits with code 2 and a one-line message.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from smooth_infomax.reproduce import selfcheck  # noqa: E402  (the checkout's package, installed or not)

TRAIN_WORDS = 680


def nccl_worker(out: Path) -> None:
    """Run under torchrun: join an NCCL group, all-reduce a known tensor, write what came back."""
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    x = torch.full((1024,), float(rank + 1), device="cuda")
    dist.all_reduce(x)
    expected = world * (world + 1) / 2
    out.write_text(json.dumps({"rank": rank, "world_size": world, "backend": dist.get_backend(),
                               "all_reduce_ok": bool(torch.allclose(x, torch.full_like(x, expected)))}))
    dist.destroy_process_group()


def _torchrun(args: list[str], timeout: float, env: dict[str, str]) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", *args]
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout:.0f} s", "seconds": time.time() - t0}
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
    return {"ok": proc.returncode == 0, "returncode": proc.returncode, "seconds": time.time() - t0, "tail": tail}


def check_nccl(data: Path | None, work: Path, deadline: float) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    result_file = work / "nccl.json"
    out = {"launch": _torchrun([__file__, "--nccl-worker", str(result_file)], min(120, deadline - time.time()), env)}
    if result_file.exists():
        out["launch"].update(json.loads(result_file.read_text()))
    if data is not None and data.exists() and deadline - time.time() > 60:
        run = work / "train-run"
        sets = [f"data.path={data}", "train.epochs=1", "train.max_steps_per_epoch=3", "train.device=cuda",
                "train.progress=false", "train.log_tensorboard=false", "train.batch_size=64"]
        args = ["-m", "smooth_infomax", "train", "--config", "sim-artificial-speech", "--out", str(run)]
        for s in sets:
            args += ["--set", s]
        out["train"] = _torchrun(args, min(150, deadline - time.time() - 5), env)
        metrics = run / "metrics.csv"
        out["train"]["metrics_tail"] = metrics.read_text().splitlines()[-2:] if metrics.exists() else None
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu_check.json")
    ap.add_argument("--data", type=Path, help="compact dataset copy for the torchrun training launch")
    ap.add_argument("--budget", type=float, default=270.0, help="seconds for the whole check (default 270)")
    ap.add_argument("--nccl-worker", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.nccl_worker is not None:
        nccl_worker(args.nccl_worker)
        return 0
    t0 = time.time()
    deadline = t0 + args.budget
    try:
        name = selfcheck.require_cuda()
    except selfcheck.SelfCheckFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    free, total = torch.cuda.mem_get_info()
    report: dict = {"environment": {"device": name, "torch": torch.__version__, "cuda": torch.version.cuda,
                                    "cudnn": torch.backends.cudnn.version(),
                                    "capability": list(torch.cuda.get_device_capability()),
                                    "bf16_supported": torch.cuda.is_bf16_supported(),
                                    "memory_gib": {"free": free / 2**30, "total": total / 2**30}}}
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save(part: str) -> None:
        report["seconds"] = time.time() - t0
        report["problems"] = selfcheck.problems({"infonce": report.get("infonce", []), "step": report.get("step"),
                                                 "timing": report.get("timing", [])})
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"[{time.time() - t0:5.0f} s] {part} done", flush=True)

    report["infonce"] = (selfcheck.compare_infonce("cuda") +
                         selfcheck.compare_infonce("cuda", B=64, T=64, C=512, K=12, n=10, window=128))
    save("infonce")
    report["step"] = selfcheck.compare_step("cuda", batch=8)
    save("training step, CUDA vs CPU and bf16")
    report["timing"] = []
    for batch in (64, 256):
        for precision in ("fp32", "bf16"):
            if time.time() > deadline - 45:  # keep time for the NCCL launch
                break
            t = selfcheck.time_step("cuda", batch, precision, steps=10, warmup=3)
            t["epoch_seconds"] = t["step_seconds"] * math.ceil(TRAIN_WORDS / batch)
            report["timing"].append(t)
            torch.cuda.empty_cache()
            save(f"SIM step, batch {batch}, {precision}")
    with tempfile.TemporaryDirectory() as work:
        report["nccl"] = check_nccl(args.data, Path(work), deadline)
    save("NCCL torchrun")
    print(json.dumps({"device": name, "problems": report["problems"], "seconds": round(report["seconds"], 1),
                      "timing": [(t["batch"], t["precision"], round(1000 * t["step_seconds"], 2))
                                 for t in report["timing"]]}))
    return 1 if report["problems"] or not report["nccl"]["launch"]["ok"] else 0


if __name__ == "__main__":
    sys.exit(main())
