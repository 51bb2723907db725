"""``smooth-infomax reproduce thesis|paper|page|compact|selfcheck``: the reproductions as commands.

    smooth-infomax reproduce thesis --data DATA --out OUT --results results          # 12 runs, probes, ICS
    smooth-infomax reproduce paper --data DATA --out OUT --results results --epochs 1000
    smooth-infomax reproduce page --results results --out docs/results.md --append docs/results_discussion.md
    smooth-infomax reproduce compact --data ../shared/data/artificial-speech --out data/compact
    smooth-infomax reproduce selfcheck --out selfcheck.json                          # CUDA against the CPU

Everything resumes: training from its checkpoints, the other stages from ``OUT/stages``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable

from ..checkpoint import atomic_write_json
from ..data.compact import write_compact
from ..errors import UserError
from . import results_page, selfcheck
from .protocols import MODELS, SCHEMES, scale
from .runner import STAGE_NAMES, Plan, reproduce

CARRY_LIMIT = 64 * 2**20


def _list(kind: Callable[[str], Any], choices: tuple[str, ...] | None = None) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        items = [t for t in text.replace(",", " ").split() if t]
        if not items:
            raise argparse.ArgumentTypeError("expected a comma-separated list")
        try:
            values = [kind(t) for t in items]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of {kind.__name__}") from None
        bad = [v for v in values if choices is not None and v not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"{', '.join(map(str, bad))} not in {', '.join(choices or ())}")
        return values
    return parse


def _add_reproduction(sub: Any, name: str) -> None:
    sc = scale(name)
    p = sub.add_parser(name, help=f"the {name}-scale reproduction (training, probes, analysis, ICS)",
                       description=f"The {name}-scale reproduction on the artificial speech dataset (see "
                                   f"smooth_infomax.reproduce.protocols). Resumable: run it again to continue.")
    p.add_argument("--data", required=True, help="the artificial speech dataset, or its compact copy")
    p.add_argument("--out", required=True, type=Path, help="folder for runs, work files, logs and stage markers")
    p.add_argument("--results", type=Path, help=f"results root; JSON goes to RESULTS/{name}/ (default OUT/results)")
    p.add_argument("--seeds", type=_list(int), default=list(sc.seeds), help=f"encoder seeds (default "
                   f"{','.join(map(str, sc.seeds))})")
    p.add_argument("--schemes", type=_list(str, SCHEMES), default=list(sc.schemes),
                   help=f"split schemes (default {','.join(sc.schemes)})")
    p.add_argument("--models", type=_list(str, MODELS), default=list(sc.models),
                   help=f"models (default {','.join(sc.models)})")
    p.add_argument("--epochs", type=int, default=sc.epochs, help=f"target epochs of every run (default {sc.epochs}; "
                   "a later call with more continues)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N for training, probes, decoders and ICS")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a training config key for every run, e.g. --set train.precision=bf16")
    p.add_argument("--parallel", type=int, help="training processes at once (default: all runs on a GPU, 1 on "
                                                "the CPU)")
    p.add_argument("--train-time-limit", type=float, help="stop training after this many seconds (the runs keep "
                                                          "their last epoch and resume next time), then go on")
    p.add_argument("--time-limit", type=float, help="start no command after this many seconds of the whole "
                                                    "reproduction (what is done stays; run again for the rest)")
    p.add_argument("--stages", type=_list(str, STAGE_NAMES), default=list(STAGE_NAMES),
                   help=f"stages to run (default {','.join(STAGE_NAMES)})")
    p.add_argument("--decoder-epochs", type=int, help=f"ICS decoder epochs (default {sc.decoder_epochs})")
    p.add_argument("--ics-pairs", type=int, help=f"ICS ordered pairs (default {sc.ics_pairs})")
    p.add_argument("--ics-models", type=_list(str, MODELS), help=f"models with ICS (default "
                   f"{','.join(sc.ics_models)})")
    p.add_argument("--ics-schemes", type=_list(str, SCHEMES), help=f"splits with ICS (default "
                   f"{','.join(sc.ics_schemes)})")
    p.add_argument("--no-samples", action="store_true", help="skip the probes on posterior samples")
    p.add_argument("--no-selfcheck", action="store_true", help="skip the CUDA self-check (--device cuda)")
    p.set_defaults(func=_reproduce, scale=name)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("reproduce", help="the thesis and paper reproductions, the results page, the compact "
                                                "dataset copy, the GPU self-check",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="reproduce_command", metavar="WHAT")
    _add_reproduction(sub, "thesis")
    _add_reproduction(sub, "paper")
    pg = sub.add_parser("page", help="build docs/results.md from the results JSON")
    pg.add_argument("--results", type=Path, default=Path("results"), help="folder holding thesis/ and paper/")
    pg.add_argument("--out", type=Path, default=Path("docs/results.md"))
    pg.add_argument("--append", type=Path, default=Path("docs/results_discussion.md"),
                    help="hand-written Markdown appended when it exists (default docs/results_discussion.md)")
    pg.set_defaults(func=_page)
    pc = sub.add_parser("compact", help="write the compact copy of the artificial speech dataset (int16, 16 kHz)")
    pc.add_argument("--data", required=True, type=Path, help="the artificial speech dataset (WAV folders)")
    pc.add_argument("--out", required=True, type=Path, help="folder for the copy, e.g. data/compact")
    pc.set_defaults(func=_compact)
    ps = sub.add_parser("selfcheck", help="CUDA against the CPU: InfoNCE, a training step, bf16, step times")
    ps.add_argument("--device", default="cuda")
    ps.add_argument("--out", type=Path, help="write the report as JSON here")
    ps.set_defaults(func=_selfcheck)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _page(args: argparse.Namespace) -> int:
    if not args.results.is_dir():
        raise UserError(f"--results {args.results} is not a folder; pass the folder holding thesis/ and paper/")
    results_page.write_page(args.results, args.out, args.append)
    print(f"wrote {args.out}")
    return 0


def _compact(args: argparse.Namespace) -> int:
    summary = write_compact(args.data, args.out)
    mib = summary["bytes"] / 2**20
    fits = "fits" if summary["bytes"] < CARRY_LIMIT else "does NOT fit"
    print(f"wrote {args.out}: {summary['items']['words']} words, {summary['items']['syllables']} syllables, "
          f"{mib:.1f} MiB ({fits} a 64 MiB carry)")
    return 0


def _run_selfcheck(device: str, path: Path) -> dict:
    try:
        report = selfcheck.cuda_selfcheck(device)
    except selfcheck.SelfCheckFailed as exc:
        atomic_write_json(path, {"problems": [str(exc)]})
        raise
    atomic_write_json(path, report)
    if report["problems"]:
        raise selfcheck.SelfCheckFailed(f"CUDA self-check failed, nothing trained ({path}): "
                                        + "; ".join(report["problems"]))
    fp32, bf16 = report["timing"]
    print(f"CUDA self-check passed in {report['seconds']:.0f} s on {report['device']}: SIM step at batch "
          f"{fp32['batch']} {1000 * fp32['step_seconds']:.1f} ms fp32, {1000 * bf16['step_seconds']:.1f} ms bf16, "
          f"peak {fp32.get('peak_memory_gib', 0):.1f} GiB")
    return report


def _selfcheck(args: argparse.Namespace) -> int:
    report = _run_selfcheck(args.device, args.out or Path("selfcheck.json"))
    print(json.dumps({k: report[k] for k in ("device", "seconds", "problems")}))
    return 0


def _gpu_precheck(device: str, plan: Plan) -> None:
    """The CUDA self-check before training (raises SelfCheckFailed); names the GPU for the results page."""
    report = _run_selfcheck(device, plan.out / "selfcheck.json")
    plan.results.mkdir(parents=True, exist_ok=True)
    atomic_write_json(plan.results / "machine.json", {"machine": f"one {report['device']} (CUDA)"})


def _reproduce(args: argparse.Namespace) -> int:
    sc = scale(args.scale)
    if args.epochs < 1:
        raise UserError(f"--epochs must be >= 1, got {args.epochs}")
    data = Path(args.data)
    if not data.exists():
        raise UserError(f"--data {data} does not exist; pass the artificial speech dataset or its compact copy "
                        f"(smooth-infomax reproduce compact)")
    cuda = args.device.startswith("cuda")
    out = args.out
    results_root = args.results if args.results is not None else out / "results"
    n_runs = len(args.seeds) * len(args.schemes) * len(args.models)
    plan = Plan(scale=sc, data=data.resolve(), out=out.resolve(), results=(results_root / sc.name).resolve(),
                seeds=args.seeds, schemes=args.schemes, models=args.models, epochs=args.epochs, device=args.device,
                overrides=args.overrides, parallel=args.parallel or (n_runs if cuda else 1),
                train_time_limit=args.train_time_limit, stages=args.stages, decoder_epochs=args.decoder_epochs,
                ics_pairs=args.ics_pairs, ics_models=args.ics_models, ics_schemes=args.ics_schemes,
                samples=not args.no_samples,
                deadline=None if args.time_limit is None else time.time() + args.time_limit)
    check = cuda and not args.no_selfcheck and "train" in args.stages  # every start checks the machine it is on
    summary = reproduce(plan, before_training=(lambda _stages: _gpu_precheck(args.device, plan)) if check else None)
    print(f"{sc.name} reproduction: results in {plan.results}; build the page with 'smooth-infomax reproduce page "
          f"--results {results_root}'")
    print(json.dumps(summary["trained"]))
    return 0


__all__ = ["register"]
