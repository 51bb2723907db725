#!/usr/bin/env python
"""Speed and memory benchmarks of smooth-infomax, written to one JSON file.

    python benchmarks/run.py --quick --out bench.json                   # every section, quick settings
    python benchmarks/run.py --quick --sections main_job --out job.json  # the main job alone (idle + shared)
    python benchmarks/run.py --out bench.json                           # more repetitions, more shapes

Every measurement runs in its own subprocess (``--worker SPEC``), so its peak memory is the growth of the
process's resident-set high-water mark (``ru_maxrss``) during the measured work over the mark after set-up
(on a GPU: ``torch.cuda.max_memory_allocated``). Timings inside a worker are interleaved (A, B, A, B, ...) and
the median is reported, so the ratios survive a machine that is shared with other jobs; the absolute numbers
do not. Sections (``--sections``, comma-separated):

* ``main_job``: ``smooth-infomax run --preset quick`` from this .venv in a clean environment (no threading
  variables: the package's defaults are measured), idle, then beside a competing 2-thread matmul process.
  Keys ``main_job_seconds``, ``main_job_shared_cpu_ratio``, ``probe_stage_seconds_max`` (from results.json's
  stage times) and ``pretraining_beats_random_init`` (every model, task and module above its random-init twin).
  Run it on an otherwise idle machine; ``--main-job-set KEY=VALUE`` passes overrides (smoke tests).
* ``train``: one SIM training step (forward, InfoNCE + KL of every module, backward, Adam) against the
  gradient-isolated conv/GRU stack alone and against its floor: the step's multiply-accumulates
  (``flop_floor``: stack + InfoNCE predictors and scores) at the GEMM rate measured in the same process
  (a 2048^3 float32 matmul, interleaved). Paper scale (512 channels, 3 modules + GRU) and thesis scale,
  batch 8 and 64, 10240-sample crops. Keys ``train_step_ratio_vs_floor`` (paper, batch 8 and 64),
  ``train_step_ratio_vs_stack``, ``paper_b64_step_peak_mb``.
* ``conv``: forward + backward of every conv layer of the paper-scale encoder against the same GEMM, batch 8
  and 64: ``rate_vs_gemm`` per layer (the waveform layer also against a plain ``F.conv1d``) and
  ``bandwidth_vs_copy``, its least memory traffic per second over a 256 MiB copy's (key ``conv_bandwidth_vs_copy``).
* ``infonce``: InfoNCE forward + backward per implementation against the per-step loop on identical draws.
  Key ``infonce_speedup_vs_loop``.
* ``data``: items/s of the artificial speech words loader against training items/s. Key ``data_rate_ratio``.
* ``probe``, ``ics``, ``omp``: probe training, batched ICS, and a GRU under both OpenMP wait policies.

The workers keep freed memory for reuse as the command line does (``runtime.allocator_defaults``: glibc's
``M_MMAP_MAX=0``, ``M_TRIM_THRESHOLD=-1``; ``--malloc-defaults off`` measures glibc's default instead).
The workers and the main job get the package's own OpenMP wait policy (smooth_infomax/runtime.py: passive on a
busy CPU, a bounded spin on a quiet one) unless ``--omp-wait-policy PASSIVE|ACTIVE`` or the environment sets one.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
sys.path.insert(0, str(SRC))  # the checkout's package, before anything imports it

import smooth_infomax  # noqa: E402  (first: it chooses the OpenMP wait policy before torch loads; runtime.py)

# isort: split
import torch  # noqa: E402

from bench_common import flop_floor  # noqa: E402
from bench_main_job import main_job_section  # noqa: E402
from bench_misc import worker_data, worker_ics, worker_omp, worker_probe  # noqa: E402
from bench_train import worker_conv, worker_infonce, worker_infonce_memory, worker_train, worker_train_memory  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "artificial-speech"
SECTIONS = ("main_job", "train", "conv", "infonce", "data", "probe", "ics", "omp")

WORKERS = {"train": worker_train, "train_memory": worker_train_memory, "infonce": worker_infonce,
           "infonce_memory": worker_infonce_memory, "conv": worker_conv, "data": worker_data, "probe": worker_probe,
           "ics": worker_ics, "omp": worker_omp}


def run_worker(spec: dict[str, Any]) -> None:
    # the allocator setting of the command line (runtime.allocator_defaults), unless --malloc-defaults off
    allocator = smooth_infomax.runtime.allocator_defaults() if spec.get("malloc_defaults", True) else None
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    device = torch.device(spec.get("device", "cpu"))
    result = WORKERS[spec["kind"]](spec, device)
    result["threads"] = torch.get_num_threads()
    result["allocator"] = allocator
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
                         ["banked", "chunked", "loop", "predictor"],
        "infonce_memory_impls": ["banked", "loop"] if quick else ["banked", "chunked", "loop"],
        "conv_cases": [("paper", 8), ("paper", 64)],
        "conv_reps": 3 if quick else 7,
        "data_epochs": 2,
        "probe_epochs": 50,
        "ics": {"scale": "paper", "module": 2, "items": 10 if quick else 20, "pairs": 16 if quick else 60},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="fewer repetitions and shapes (about 25 minutes on 2 idle cores with every section, "
                         "of which the main job, idle + shared, is about 15)")
    ap.add_argument("--out", help="JSON file to write")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (train and infonce sections)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads in the workers (0: torch's default)")
    ap.add_argument("--malloc-defaults", choices=("on", "off"), default="on",
                    help="workers keep freed memory for reuse as the command line does (runtime.allocator_defaults; "
                         "default on); off measures glibc's default allocator")
    ap.add_argument("--omp-wait-policy", default="inherit",
                    help="OMP_WAIT_POLICY for the workers: PASSIVE, ACTIVE, or 'inherit' (default: the environment's, "
                         "else the package's own choice, smooth_infomax/runtime.py)")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="artificial speech dataset for the data section")
    ap.add_argument("--main-job-preset", default="quick", help="preset of the main_job section")
    ap.add_argument("--main-job-set", action="append", default=[], metavar="KEY=VALUE",
                    help="training overrides for the main job (e.g. train.epochs=1 for a smoke test)")
    ap.add_argument("--main-job-keep", default=None, metavar="DIR", help="keep the main job's output folders here")
    ap.add_argument("--no-shared", action="store_true", help="main_job: skip the run beside the competing process")
    ap.add_argument("--competitor-threads", type=int, default=2, help="threads of the competing process")
    ap.add_argument("--python", default=sys.executable, help="the .venv python that runs the main job")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        run_worker(json.loads(args.worker))
        return 0
    if not args.out:
        ap.error("--out FILE.json is required")
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        ap.error(f"--sections: unknown {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    p = plan(args.quick)
    env = {} if args.omp_wait_policy == "inherit" else {"OMP_WAIT_POLICY": args.omp_wait_policy}
    base = {"device": args.device, "threads": args.threads, "malloc_defaults": args.malloc_defaults == "on"}
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.0f}s] {msg}", file=sys.stderr, flush=True)

    report: dict[str, Any] = {
        "schema": 1,
        "command": " ".join([Path(sys.executable).name, "benchmarks/run.py"]
                            + (argv if argv is not None else sys.argv[1:])),
        "quick": args.quick,
        "started": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": machine_info(),
        "settings": {"omp_wait_policy": args.omp_wait_policy,
                     "openmp_env": {k: os.environ.get(k)
                                    for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")},
                     "threads": args.threads or "torch default",
                     "malloc_defaults": args.malloc_defaults,
                     "device": args.device, "plan": p},
        "load_average_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "notes": [],
        "complete": False,
    }
    notes = report["notes"]
    out = Path(args.out)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)

    if "main_job" in sections:
        job = main_job_section(args.python, args.main_job_preset, args.main_job_set, SRC,
                               Path(args.main_job_keep) if args.main_job_keep else None, args.competitor_threads, log,
                               shared=not args.no_shared)
        report["main_job"] = job
        if job["idle"].get("exit_code") == 0:
            report["main_job_seconds"] = job["idle"]["seconds"]
            report["probe_stage_seconds_max"] = job["idle"].get("probe_stage_seconds_max")
            report["pretraining_beats_random_init"] = job["idle"]["pretraining"]["all_above"]
            report["pretraining_min_margin_points"] = job["idle"]["pretraining"]["min_margin_points"]
        if "shared_cpu_ratio" in job:
            report["main_job_shared_cpu_ratio"] = job["shared_cpu_ratio"]
        if args.main_job_set:
            notes.append(f"main_job ran with overrides {args.main_job_set}: not the preset's timing")

    save(report, out)

    if "omp" in sections and args.device == "cpu":
        log("omp: GRU forward under both OpenMP wait policies")
        report["omp"] = {policy: _spawn({**base, "kind": "omp", "name": policy, "reps": 5},
                                        {"OMP_WAIT_POLICY": policy}, log) for policy in ("ACTIVE", "PASSIVE")}

    save(report, out)

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
            report["paper_b64_step_peak_mb"] = paper64.get("peak_mb_step")
        report["train_step_ratio_vs_floor"] = {f"b{r['batch']}": r["step_ratio_vs_floor"] for r in rows
                                               if r.get("scale") == "paper" and "step_ratio_vs_floor" in r}
        report["gemm_gmac_per_second"] = {f"{r['scale']}/b{r['batch']}": r["gemm_gmac_per_second"] for r in rows
                                          if "gemm_gmac_per_second" in r}

    save(report, out)

    if "conv" in sections:
        log("conv: every paper-scale conv layer against the GEMM rate")
        report["conv"] = [_spawn({**base, "kind": "conv", "name": f"{scale}/b{batch}", "scale": scale,
                                  "batch": batch, "reps": p["conv_reps"]}, env, log)
                          for scale, batch in p["conv_cases"]]
        report["conv_rate_vs_gemm"] = {f"{r['scale']}/b{r['batch']}": {layer["name"]: round(layer["rate_vs_gemm"], 3)
                                                                        for layer in r["layers"]}
                                       for r in report["conv"] if "layers" in r}
        report["conv_bandwidth_vs_copy"] = {f"{r['scale']}/b{r['batch']}": {
            layer["name"]: round(layer["bandwidth_vs_copy"], 3) for layer in r["layers"]}
            for r in report["conv"] if "layers" in r and all("bandwidth_vs_copy" in x for x in r["layers"])}

    save(report, out)

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

    save(report, out)

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

    save(report, out)

    if "probe" in sections:
        log("probe: train_linear")
        cases = [{"name": "syllables, GRU mean-pooled", "n": 2181, "dim": 256, "classes": 9,
                  "epochs": p["probe_epochs"],
                  "batch": 64},
                 {"name": "syllables, thesis module 1 flattened", "n": 2181, "dim": 32 * 52, "classes": 9,
                  "epochs": p["probe_epochs"], "batch": 64}]
        report["probe"] = _spawn({**base, "kind": "probe", "name": "linear", "cases": cases}, env, log)

    save(report, out)

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
    report["complete"] = True
    save(report, out)
    log(f"wrote {out}")
    for k, v in report["summary"].items():
        print(f"{k}: {v:.3f}" if isinstance(v, float) and math.isfinite(v) else f"{k}: {v}")
    return 0


TARGETS = {"main_job_seconds": "<= 300 (idle machine)", "main_job_shared_cpu_ratio": "<= 2.2",
           "probe_stage_seconds_max": "<= 10", "train_step_ratio_vs_floor": "<= 1.5 at b8 and b64",
           "pretraining_beats_random_init": "true", "infonce_speedup_vs_loop": ">= 3", "data_rate_ratio": ">= 5"}
SUMMARY_KEYS = ["main_job_seconds", "main_job_shared_cpu_ratio", "probe_stage_seconds_max",
                "pretraining_beats_random_init", "pretraining_min_margin_points", "train_step_ratio_vs_floor",
                "gemm_gmac_per_second", "paper_b64_step_peak_mb", "conv_rate_vs_gemm", "conv_bandwidth_vs_copy",
                "train_step_ratio_vs_stack",
                "infonce_speedup_vs_loop", "infonce_speedup_vs_loop_beyond_predictor",
                "infonce_speedup_vs_loop_thesis", "infonce_share_of_step", "data_rate_ratio", "data_rate_ratio_cached",
                "ics_speedup_vs_naive"]


def save(report: dict[str, Any], out: Path) -> None:
    """Write the report so far (after every section: an interrupted run keeps what it measured;
    ``complete`` is true only once every section ran)."""
    report["targets"] = TARGETS
    report["summary"] = {k: report[k] for k in SUMMARY_KEYS if k in report}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    tmp.replace(out)


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds: running ``finally`` blocks stop the competing process


if __name__ == "__main__":
    sys.exit(main())
