"""``smooth-infomax run``: from nothing to a report in one command.

Stages (each cached: a finished stage leaves ``OUT/stages/<name>.json`` and is skipped on re-run; a killed
training resumes from its last checkpoint):

1. ``data``      the built-in synthetic dataset (unless ``--data`` is given)
2. ``train-*``   SIM and GIM (and CPC where the preset says)
3. ``probe-*``   linear probes on every module: vowel, syllable, consonant (+ speaker and phone on
                 LibriSpeech-layout data), with each model's random-init twin and log-mel; features are encoded
                 once per source and dataset (``OUT/features``), so only a model's first task of a dataset encodes
   ``abx-*``     triphone ABX error (within / across speaker) where the data has phone alignments
4. ``decoder-*`` a decoder for the last CNN module of each model, with reconstructions, a latent traversal,
                 full and partial interpolations, prior samples and the interpolation contribution score
5. ``analysis-*`` Gaussianity, total correlation, disentanglement, concentration, t-SNE per model
6. ``report``    ``OUT/report.html`` (self-contained) and ``OUT/results.json``
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .abx.evaluate import pipeline_abx
from .analysis import ics_dims_to_reach
from .analysis.cli import analyze_run
from .checkpoint import atomic_write_json, run_paths
from .config import load_config, shipped_config
from .data import detect_layout
from .data.synth import generate
from .decoding import ics, interpolate, load_decoder, sample_prior, train_decoder, traverse, write_wav
from .errors import UserError
from .features import EncoderSource, extract_features
from .probe import ProbeSettings, run_probe
from .report import build_pipeline_report
from .runs import open_run_data, run_config
from .runtime import RuntimeSettings
from .stages import Stages
from .training import train


@dataclass
class Preset:
    models: dict[str, tuple[str, list[str]]]  # name -> (config file, overrides)
    synth: dict[str, Any] = field(default_factory=dict)
    needs_data: bool = False
    probe_tasks: tuple[str, ...] = ("vowel", "syllable", "consonant", "speaker", "phone")
    probe_seeds: int = 2
    probe_epochs: int = 30
    decoder_epochs: int = 10
    decoder_loss: str = "mse+mel"
    decoder_items: int | None = None
    ics_items: int = 60
    analysis_items: int = 1000


PRESETS: dict[str, Preset] = {
    "quick": Preset(
        models={"SIM": ("quick.yaml", []), "GIM": ("quick.yaml", ["model.kind=gim", "loss.beta=0.0"])},
        synth={"n_words": 300, "n_voices": 4},
    ),
    "thesis": Preset(
        models={"SIM": ("sim-artificial-speech-thesis.yaml", []), "GIM": ("gim-artificial-speech-thesis.yaml", [])},
        needs_data=True, probe_tasks=("vowel", "syllable", "consonant"), probe_seeds=3, probe_epochs=100,
        decoder_epochs=50, decoder_loss="mel", ics_items=128,
    ),
    "paper": Preset(
        models={"SIM": ("sim-artificial-speech.yaml", []), "GIM": ("gim-artificial-speech.yaml", []),
                "CPC": ("cpc-artificial-speech.yaml", [])},
        needs_data=True, probe_tasks=("vowel", "syllable", "consonant"), probe_seeds=3, probe_epochs=50,
        decoder_epochs=200, decoder_loss="mse", ics_items=200,
    ),
}


def _config_file(name: str) -> Any:
    """A preset's config: the shipped config file ``name`` (package data, never a same-named file in the cwd)."""
    entry = shipped_config(name)
    if entry is None:
        raise UserError(f"preset config {name} is missing from the installed package; reinstall smooth-infomax")
    return entry


def run_pipeline(preset_name: str, out_dir: str | Path, *, data: str | Path | None = None,
                 overrides: list[str] | None = None, log: Callable[[str], None] = print,
                 preset: Preset | None = None, runtime: RuntimeSettings | None = None) -> dict[str, Any]:
    """Run (or resume) every stage of a preset; ``preset`` replaces the named preset's settings (tests).

    ``runtime``: what ``runtime.configure`` decided (the command line passes it): its notes are logged first and
    saved in ``results.json`` (``timings.runtime``), and its ``rebalance`` is called before every stage and after
    every training epoch (torch threads matched to the cores other jobs leave free).
    """
    rebalance = runtime.rebalance if runtime is not None else None
    for note in runtime.notes if runtime is not None else []:
        log(f"[runtime] {note}")
    if preset is None:
        if preset_name not in PRESETS:
            raise UserError(f"--preset {preset_name!r}: choose from {', '.join(PRESETS)}")
        preset = PRESETS[preset_name]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stages = Stages(out, log, before=rebalance)
    t_start = time.time()

    if data is None:
        if preset.needs_data:
            raise UserError(f"--preset {preset_name} needs --data (the artificial speech dataset; "
                            f"'smooth-infomax data fetch artificial-speech --to data/')")
        data_path = out / "data"

        def make_data() -> dict[str, Any]:
            generate(data_path, seed=0, **preset.synth)
            return {"path": str(data_path)}

        stages.run("data", make_data)
    else:
        data_path = Path(data)
        if not data_path.exists():
            raise UserError(f"--data {data_path} does not exist")
    layout = detect_layout(data_path)

    # ---- training ----
    runs: dict[str, Path] = {}
    configs: dict[str, Any] = {}
    for name, (cfg_file, extra) in preset.models.items():
        cfg = load_config(_config_file(cfg_file), [*extra, f"data.path={data_path}", *(overrides or [])])
        configs[name] = cfg
        run_dir = out / "runs" / name.lower()
        runs[name] = run_dir

        def do_train(cfg: Any = cfg, run_dir: Path = run_dir) -> dict[str, Any]:
            resume = run_paths(run_dir)["checkpoint"].exists()
            summary = train(cfg, run_dir, resume=resume, on_epoch=rebalance)
            return {"run": str(run_dir), "seconds": summary["seconds"], "val": summary["val"]}

        stages.run(f"train-{name.lower()}", do_train)

    # ---- probes ----
    tasks = [t for t in preset.probe_tasks
             if (t in ("speaker", "phone") and layout in ("librispeech", "synthetic"))
             or (t not in ("speaker", "phone") and layout in ("artificial", "synthetic"))]
    probes: dict[str, dict[str, Any]] = {}
    for name, run_dir in runs.items():
        for task in tasks:
            # every model gets its random-init twin; features (log-mel included) are encoded once per source and
            # dataset into the shared OUT/features cache, so later tasks of the same items reuse them
            def do_probe(task: str = task, run_dir: Path = run_dir, name: str = name) -> dict[str, Any]:
                settings = probe_settings(preset, task)
                res = run_probe(run_dir, data_path, out / "probes" / name.lower(), settings, baselines=True,
                                cache_dir=out / "features")
                return _strip_confusions(res)

            probes.setdefault(name, {})[task] = stages.run(f"probe-{name.lower()}-{task}", do_probe)

    # ---- ABX (triphone, within / across speaker) on the phone-aligned utterances, beside the phone probe ----
    abx: dict[str, Any] = {}
    if "phone" in tasks:
        for name, run_dir in runs.items():
            def do_abx(run_dir: Path = run_dir, name: str = name) -> dict[str, Any]:
                return pipeline_abx(run_dir, data_path, out / "abx" / name.lower(), cache_dir=out / "features")

            abx[name] = stages.run(f"abx-{name.lower()}", do_abx)

    # ---- decoders, latent tools, ICS ----
    decoders: dict[str, Any] = {}
    for name, run_dir in runs.items():
        module = len(configs[name].model.modules) - 1 if configs[name].model.kind != "cpc" else 0

        def do_decoder(name: str = name, run_dir: Path = run_dir, module: int = module) -> dict[str, Any]:
            return decoder_stage(run_dir, data_path, out / "decoders" / name.lower(), module, preset,
                                 mode="sample" if configs[name].model.kind == "sim" else "mean")

        decoders[name] = stages.run(f"decoder-{name.lower()}", do_decoder)

    # ---- analysis ----
    analyses: dict[str, Any] = {}
    if layout in ("artificial", "synthetic"):
        for name, run_dir in runs.items():
            def do_analysis(run_dir: Path = run_dir, name: str = name) -> dict[str, Any]:
                return analyze_run(run_dir, data_path, out / "analysis" / name.lower(),
                                   max_items=preset.analysis_items)

            analyses[name] = stages.run(f"analysis-{name.lower()}", do_analysis)

    results = {"preset": preset_name, "data": str(data_path), "layout": layout,
               "configs": {n: c.to_dict() for n, c in configs.items()}, "probes": probes, "abx": abx,
               "decoders": decoders, "analysis": analyses, "timings": stages.summary()}
    if runtime is not None:
        results["timings"]["runtime"] = runtime.describe()
    atomic_write_json(out / "results.json", results)
    report = build_pipeline_report(out, results, runs)
    log(f"report: {report}  ({time.time() - t_start:.0f}s this call)")
    return results


def probe_settings(preset: Preset, task: str) -> ProbeSettings:
    """The pipeline's probe protocol for ``task``: standardised inputs; phones per label frame, fewer epochs of
    larger batches (many more training rows)."""
    phone = task == "phone"
    return ProbeSettings(task=task, pool="none" if phone else "mean", seeds=preset.probe_seeds, standardize=True,
                         epochs=max(5, preset.probe_epochs // 3) if phone else preset.probe_epochs,
                         batch_size=512 if phone else 64)


def _strip_confusions(res: dict[str, Any]) -> dict[str, Any]:
    """Probe results without the bulky per-item arrays (the full JSON stays in the probe folder)."""
    slim = {k: v for k, v in res.items() if k != "results"}
    slim["results"] = {model: {mod: {k: v for k, v in e.items() if k != "confusion_seed0"} for mod, e in r.items()}
                       for model, r in res["results"].items()}
    return slim


def decoder_stage(run_dir: Path, data_path: Path, out: Path, module: int, preset: Preset, *,
                  mode: str) -> dict[str, Any]:
    """Train a decoder, then write reconstructions, traversals, interpolations, prior samples and the ICS."""
    cfg = run_config(run_dir)
    summary = train_decoder(run_dir, data_path, module, loss=preset.decoder_loss, mode=mode,
                            epochs=preset.decoder_epochs, batch_size=16, seed=0, out_dir=out,
                            max_items=preset.decoder_items, progress=True)
    decoder = load_decoder(out / "decoder.pt").eval()
    source = EncoderSource.from_run(run_dir)
    # the run's own test split at its training crop (data.split_scheme and every other data key of its config)
    test = open_run_data(cfg, "test", data_path=data_path, crop="config", seed=0)
    n = min(len(test), preset.ics_items)
    fs = extract_features(source, test, outputs=[module], mode=mode, pool="none", seed=0, indices=range(n))
    latents = torch.from_numpy(np.stack(fs.features[0]))  # (N, T, C)
    sr = cfg.data.sample_rate
    audio_dir = out / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, list[str]] = {"traversal": [], "interpolation": [], "partial": [], "prior": []}
    with torch.no_grad():
        # traversal of the dimension with the largest variance of time-means, around the first item's latent
        var = latents.mean(1).var(0)
        dim = int(var.argmax())
        values = torch.linspace(-2.68, 2.68, 5)
        base = latents[0]
        for j, w in enumerate(traverse(decoder, base, dim, values)):
            p = audio_dir / f"traverse_dim{dim}_{j}.wav"
            write_wav(p, np.asarray(w, dtype=np.float32).reshape(-1), sr)
            files["traversal"].append(str(p))
        lambdas = torch.linspace(0, 1, 5)
        z1, z2 = latents[0], latents[min(1, n - 1)]
        for kind, dims in (("interpolation", None), ("partial", max(1, latents.shape[-1] // 8))):
            zs = interpolate(z1, z2, lambdas, dims=dims)
            dec = decoder(torch.as_tensor(zs))
            for j in range(dec.shape[0]):
                p = audio_dir / f"{kind}_{j}.wav"
                write_wav(p, dec[j].reshape(-1).numpy().astype(np.float32), sr)
                files[kind].append(str(p))
        prior = sample_prior(decoder, 3, latents.shape[1], latents.shape[2], seed=0)
        for j, w in enumerate(prior):
            p = audio_dir / f"prior_{j}.wav"
            write_wav(p, np.asarray(w, dtype=np.float32).reshape(-1), sr)
            files["prior"].append(str(p))
    score = ics(decoder, latents, n_items=preset.ics_items, seed=0)
    score = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in score.items()}
    half = ics_dims_to_reach(score["ds"], score["relative"], level=0.5)
    score["dims_to_half"] = None if half == float("inf") else float(half)
    atomic_write_json(out / "ics.json", score)
    return {"module": module, "mode": mode, "train": _jsonable(summary), "audio": files, "ics": score,
            "traversal_dim": dim}


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("run", help="the whole pipeline: data -> SIM & GIM (& CPC) -> probes -> decoders -> "
                                          "analysis -> report.html")
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    p.add_argument("--data", default=None, help="dataset (default: generate the built-in synthetic data)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a training config value for every model (e.g. train.epochs=2)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_run)


def _cmd_run(args: Any) -> int:
    run_pipeline(args.preset, args.out, data=args.data, overrides=args.overrides,
                 runtime=getattr(args, "runtime", None))
    return 0
