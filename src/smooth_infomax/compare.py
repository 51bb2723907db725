"""``smooth-infomax compare``: SIM against any speech encoder, layer by layer, on one page.

``smooth-infomax compare --models runs/sim runs/gim hf:models/wav2vec2-base --data DATA --out OUT`` measures
every model the same way, on the same items with the same seeds, through the feature-source interface
(:mod:`smooth_infomax.features`; the adapters in :mod:`smooth_infomax.sources` are the only model-specific
code). Per model and output ("layer"):

* **Linear probes** (:mod:`smooth_infomax.probe`): accuracy mean +- std over seeds on the whole test split,
  with chance (1 / classes) and the majority rate; features standardised per dimension with training-set
  statistics. Tasks by data layout: vowel, syllable, consonant (syllable items), speaker and phone (utterances).
* **Concentration** of a bias-free probe's weights (vowel, else speaker; standardised inputs so scales are
  comparable): participation ratio, Gini, dimensions holding 90 % of the weight energy.
* **Total correlation** (nats): the Gaussian estimator on all non-constant dimensions (debiased;
  scale-invariant; dead units, e.g. ReLU channels that never fire, are dropped and counted) and the k-NN
  estimator on seeded subsets of 8 standardised non-constant dimensions, on frame-level features.
* **MIG / DCI / SAP** of time-mean-pooled features against the known factors (consonant, vowel, position,
  speaker; syllable items only).
* **Gaussian-posterior statistics** (active dimensions, KL of the aggregate posterior to N(0, I)) for
  stochastic sources only; deterministic ones are marked as such, not given invented numbers.
* **Decoders** (:mod:`smooth_infomax.decoding`; a mirror decoder for our encoders, the generic transposed-conv
  decoder for others) for the last output (``--decode last``) or every output (``--decode all``): the ICS curve,
  reconstructions, and a traversal of the dimension whose time means vary most, in steps of that dimension's
  standard deviation (so models of any scale are traversed alike). Prior samples for stochastic sources only.

Every stage is cached in ``OUT/stages`` (keyed by the model's fingerprint), so a re-run after adding a model
only does the new work. Writes ``OUT/results.json`` and the self-contained ``OUT/report.html``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from .analysis import concentration_metrics, dci, gaussianity_report, ics_dims_to_reach, mig, sap, total_correlation
from .checkpoint import atomic_write_json
from .compare_report import build_compare_report
from .data import detect_layout
from .decoding import (
    TRAVERSAL_RANGE,
    DecoderSettings,
    encode_items,
    ics,
    load_decoder,
    sample_prior,
    subset_indices,
    train_decoder,
    traverse,
    write_wav,
)
from .errors import UserError
from .features import EncoderSource, extract_features
from .probe import ProbeSettings, run_probe
from .runs import data_config, open_run_data
from .runtime import RuntimeSettings
from .sources.resolve import resolve_source
from .stages import Stages

SYLLABLE_LAYOUTS = ("artificial", "synthetic")
UTTERANCE_LAYOUTS = ("librispeech", "synthetic")
FACTORS = ("consonant", "vowel", "position", "speaker")
DECODE_CHOICES = ("last", "all", "none")


@dataclass
class CompareSettings:
    """What ``compare`` runs. tasks: probe tasks (None: every task the data layout has labels for)."""

    tasks: Optional[tuple[str, ...]] = None
    probe_seeds: int = 2
    probe_epochs: int = 30
    probe_lr: float = 1e-2
    analysis_items: int = 1000
    max_frames: int = 4000
    knn_dims: int = 8
    decode: str = "last"
    decoder_epochs: int = 10
    decoder_items: Optional[int] = 200
    decoder_loss: str = "mse+mel"
    crop: int = 10240
    ics_items: int = 32
    traversal_steps: int = 5
    seed: int = 0
    split_scheme: str = "reference"
    device: str = "cpu"

    def check(self) -> CompareSettings:
        if self.decode not in DECODE_CHOICES:
            raise UserError(f"--decode {self.decode!r}: choose {', '.join(DECODE_CHOICES)}")
        for key, low in (("probe_seeds", 1), ("probe_epochs", 0), ("analysis_items", 4), ("decoder_epochs", 0),
                         ("crop", 1), ("ics_items", 2), ("traversal_steps", 2), ("knn_dims", 1)):
            if getattr(self, key) < low:
                raise UserError(f"--{key.replace('_', '-')} must be >= {low}, got {getattr(self, key)}")
        return self


def default_tasks(layout: str) -> tuple[str, ...]:
    tasks: list[str] = []
    if layout in SYLLABLE_LAYOUTS:
        tasks += ["vowel", "syllable", "consonant"]
    if layout in UTTERANCE_LAYOUTS:
        tasks += ["speaker", "phone"]
    return tuple(tasks)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:48] or "model"


def display_names(specs: Sequence[str], sources: Sequence[Any]) -> list[str]:
    """One unique, readable name per model: a run's folder name, an external source's own name."""
    names: list[str] = []
    for spec, src in zip(specs, sources):
        base = Path(str(spec)).name if isinstance(src, EncoderSource) else str(src.name)
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def common_source(src: Any, name: str) -> Any:
    """``src`` without a run config: every model then opens the data with the same keys (same items)."""
    if isinstance(src, EncoderSource):
        return EncoderSource(src.encoder, src.sample_rate, name, config=None)
    src.name = name
    return src


def describe(src: Any, spec: str) -> dict[str, Any]:
    kind = src.encoder.kind if isinstance(src, EncoderSource) else str(src.name).split(":")[0]
    return {"spec": str(spec), "kind": kind, "outputs": list(src.output_names), "hops": [int(h) for h in src.hops],
            "dims": [int(d) for d in src.dims], "stochastic": bool(src.stochastic),
            "receptive_fields": list(src.receptive_fields), "sample_rate": int(src.sample_rate),
            "fingerprint": src.fingerprint()}


# --------------------------------------------------------------------------------------------------
# Probes, concentration
# --------------------------------------------------------------------------------------------------


def _slim(res: dict[str, Any]) -> dict[str, Any]:
    """The encoder's per-output probe entries without the bulky confusion matrices."""
    return {out: {k: v for k, v in e.items() if k != "confusion_seed0"} for out, e in res["results"]["encoder"].items()}


def probe_stage(src: Any, data: Path, out: Path, task: str, st: CompareSettings, *,
                bias: bool = True) -> dict[str, Any]:
    """One probe task on every output of ``src`` (``bias=False``: the bias-free probe of the concentration)."""
    epochs = st.probe_epochs if task != "phone" else max(3, st.probe_epochs // 3)
    settings = ProbeSettings(task=task, mode="mean", bias=bias, pool="none" if task == "phone" else "mean",
                             seeds=st.probe_seeds, epochs=epochs,
                             lr=st.probe_lr, batch_size=64 if task != "phone" else 512, standardize=True)
    res = run_probe(src, data, out, settings, split_scheme=st.split_scheme, device=st.device,
                    cache_dir=out.parent.parent / "features")
    entry = {"task": task, "classes": len(res["classes"]), "chance": res["chance"], "outputs": _slim(res),
             "notes": res.get("notes", [])}
    if not bias:  # concentration of the bias-free probe's weights (mean over seeds)
        with np.load(out / f"weights_{task}.npz") as z:
            entry["concentration"] = {o: concentration_metrics(np.abs(z[f"encoder/{o}"]).mean(0))
                                      for o in src.output_names if f"encoder/{o}" in z.files}
    return entry


# --------------------------------------------------------------------------------------------------
# Representation metrics (TC, MIG / DCI / SAP, Gaussianity)
# --------------------------------------------------------------------------------------------------


def _subsample(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    return x if len(x) <= n else x[np.random.default_rng(seed).choice(len(x), n, replace=False)]


def factor_matrix(labels: dict[str, np.ndarray]) -> tuple[Optional[np.ndarray], list[str]]:
    cols = [(k, labels[k]) for k in FACTORS if k in labels and len(np.unique(labels[k])) > 1]
    if not cols:
        return None, []
    return np.stack([v for _, v in cols], axis=1), [k for k, _ in cols]


def output_metrics(frames: np.ndarray, pooled: np.ndarray, factors: Optional[np.ndarray], st: CompareSettings,
                   mu: Optional[np.ndarray] = None, logvar: Optional[np.ndarray] = None,
                   samples: Optional[np.ndarray] = None) -> dict[str, Any]:
    """Metrics of one output: frames (F, C) and pooled (N, C) features; mu / logvar / samples for posteriors."""
    seed = st.seed
    z = _subsample(frames, st.max_frames, seed)
    res: dict[str, Any] = {"dim": int(frames.shape[1]), "n_frames": int(len(z)), "n_items": int(len(pooled))}
    live = np.flatnonzero(z.std(axis=0) > 1e-8 * (np.abs(z).max(axis=0) + 1e-12))  # drop dead (constant) dims
    res["constant_dims"] = int(z.shape[1] - len(live))
    try:
        res["tc_gaussian"] = (float(total_correlation(z[:, live], method="gaussian", debias=True))
                              if len(live) > 1 else 0.0)
    except ValueError as exc:  # still singular: exactly duplicated dimensions, or fewer frames than dims
        res["tc_gaussian"], res["tc_gaussian_error"] = None, str(exc)
    z = z[:, live] if len(live) else z
    rng = np.random.default_rng(seed)
    d = z.shape[1]
    subsets = [np.sort(rng.choice(d, min(st.knn_dims, d), replace=False)) for _ in range(3)]
    res["tc_knn"] = float(np.mean([total_correlation(z[:, s], method="knn", seed=seed) for s in subsets]))
    if factors is not None and len(pooled) >= 8:
        res["mig"] = float(mig(pooled, factors))
        res["sap"] = float(sap(pooled, factors, seed=seed))
        res.update({f"dci_{k}": float(v) for k, v in dci(pooled, factors, seed=seed).items()})
    if mu is not None and samples is not None:
        g = gaussianity_report(_subsample(samples, st.max_frames, seed), mu=_subsample(mu, st.max_frames, seed),
                               logvar=None if logvar is None else _subsample(logvar, st.max_frames, seed))
        res["active_dimensions"] = g.get("active_dimensions")
        res["kl_aggregate_posterior"] = g.get("kl_aggregate_posterior")
    return res


def analysis_stage(src: Any, data: Path, out: Path, st: CompareSettings, layout: str) -> dict[str, Any]:
    cfg = data_config(int(src.sample_rate), data, st.split_scheme)
    task = "syllable" if layout in SYLLABLE_LAYOUTS else "speaker"
    test = open_run_data(cfg, "test", task=task, data_path=data, split_scheme=st.split_scheme)
    idx = subset_indices(len(test), st.analysis_items, st.seed)
    common = dict(pool="none", seed=st.seed, device=st.device, indices=idx, cache_dir=out / "features")
    fs = extract_features(src, test, mode="mean", tag=f"{src.name}-analysis", **common)  # what every model gives
    stats = (extract_features(src, test, mode="stats", tag=f"{src.name}-analysis-stats", **common)
             if src.stochastic else None)  # posterior samples / means / log-variances (sampled at every module)
    factors, names = factor_matrix(fs.labels)
    cat = lambda items: np.concatenate([np.asarray(x) for x in items]).astype(np.float64)  # noqa: E731
    outputs: dict[str, Any] = {}
    for m, name in enumerate(fs.names):
        frames = cat(fs.features[m])
        pooled = np.stack([np.asarray(x).mean(0) for x in fs.features[m]]).astype(np.float64)
        post = {}
        if stats is not None and stats.mu is not None and stats.mu[m] is not None:
            post = {"mu": cat(stats.mu[m]), "samples": cat(stats.features[m]),
                    "logvar": None if stats.logvar is None or stats.logvar[m] is None else cat(stats.logvar[m])}
        outputs[name] = output_metrics(frames, pooled, factors, st, **post)
    return {"factors": names, "n_items": len(idx), "items_task": task, "outputs": outputs}


# --------------------------------------------------------------------------------------------------
# Decoders: ICS, reconstructions, traversals
# --------------------------------------------------------------------------------------------------


def decode_stage(src: Any, data: Path, out: Path, output: int, st: CompareSettings) -> dict[str, Any]:
    """Train a decoder for ``output``; write reconstructions, a traversal (and prior samples); compute the ICS."""
    name = src.output_names[output]
    settings = DecoderSettings(epochs=st.decoder_epochs, batch_size=16, loss=st.decoder_loss, mode="mean", seed=st.seed,
                               max_items=st.decoder_items, n_recon=2, crop=st.crop, device=st.device)
    summary = train_decoder(src, data, output, settings=settings, out_dir=out)
    decoder = load_decoder(out / "decoder.pt", device=st.device).eval()
    sr = int(src.sample_rate)
    cfg = data_config(sr, data, st.split_scheme)
    test = open_run_data(cfg, "test", data_path=data, crop=st.crop, random_crop=False, seed=st.seed,
                         split_scheme=st.split_scheme)
    idx = subset_indices(len(test), st.ics_items, st.seed)
    latents = encode_items(src, test, idx, output, "mean", seed=st.seed, device=st.device)  # (N, T, C)
    means = latents.mean(1)  # (N, C) time means
    dim = int(means.var(0).argmax())
    centre, spread = float(latents[..., dim].mean()), float(latents[..., dim].std().clamp_min(1e-8))
    steps = torch.linspace(-TRAVERSAL_RANGE, TRAVERSAL_RANGE, st.traversal_steps)
    audio = out / "audio"
    traversal = []
    with torch.no_grad():
        for j, wave in enumerate(traverse(decoder, latents[0], dim, centre + spread * steps)):
            path = audio / f"traverse_dim{dim}_{j}.wav"
            write_wav(path, wave, sr)
            traversal.append(str(path))
        prior = []
        if src.stochastic:
            for j, wave in enumerate(sample_prior(decoder, 2, latents.shape[1], latents.shape[2], seed=st.seed)):
                path = audio / f"prior_{j}.wav"
                write_wav(path, wave, sr)
                prior.append(str(path))
    score = ics(decoder, latents, n_items=st.ics_items, seed=st.seed)
    ds, rel = [int(d) for d in score["ds"]], [float(r) for r in score["relative"]]
    half = ics_dims_to_reach(ds, rel, level=0.5)
    recon = [(str(out / f"orig_{i}.wav"), str(out / f"recon_{i}.wav")) for i in range(2)
             if (out / f"recon_{i}.wav").is_file()]
    return {"output": name, "index": output, "architecture": summary.get("architecture"),
            "val_mse": summary.get("val_mse"), "epochs": summary.get("epochs"),
            "ics": {"ds": ds, "relative": rel, "e_max": float(score["e_max"]), "auc": float(score["auc"]),
                    "n_items": int(score["n_items"]), "dims_to_half": None if half == float("inf") else float(half)},
            "traversal": {"dim": dim, "steps": [float(s) for s in steps], "centre": centre, "std": spread,
                          "files": traversal},
            "prior": prior, "reconstructions": recon}


def decode_outputs(src: Any, mode: str) -> list[int]:
    """Outputs to decode: every one (``all``), none, or the last - for our encoders the last conv module's
    (the pipeline's choice: the GRU summarises the past rather than the local sound)."""
    n = len(src.output_names)
    if mode == "none":
        return []
    if mode == "all":
        return list(range(n))
    if isinstance(src, EncoderSource):
        convs = [i for i, f in enumerate(src.receptive_fields) if f is not None]
        return [convs[-1] if convs else n - 1]
    return [n - 1]


# --------------------------------------------------------------------------------------------------
# The whole comparison
# --------------------------------------------------------------------------------------------------


def compare_one(src: Any, spec: str, key: str, data: Path, out: Path, mdir: Path, tasks: Sequence[str], layout: str,
                st: CompareSettings, stages: Stages) -> dict[str, Any]:
    """Every stage of one model (each cached under ``key``): probes, concentration, metrics, decoders."""
    entry: dict[str, Any] = {"info": describe(src, spec), "probes": {}, "decoders": []}
    for task in tasks:
        entry["probes"][task] = stages.run(f"probe-{key}-{task}",
                                           lambda t=task: probe_stage(src, data, mdir / "probes" / t, t, st))
    conc_task = "vowel" if "vowel" in tasks else ("speaker" if "speaker" in tasks else None)
    if conc_task:
        conc = stages.run(f"concentration-{key}-{conc_task}", lambda: probe_stage(
            src, data, mdir / "probes" / f"{conc_task}-nobias", conc_task, st, bias=False))
        entry["concentration"] = {"task": conc_task, "outputs": conc["concentration"]}
    entry["analysis"] = stages.run(f"analysis-{key}", lambda: analysis_stage(src, data, out, st, layout))
    for i in decode_outputs(src, st.decode):
        folder = mdir / "decoders" / _slug(src.output_names[i])
        entry["decoders"].append(stages.run(f"decoder-{key}-{i}",
                                            lambda i=i, folder=folder: decode_stage(src, data, folder, i, st)))
    return entry


def compare_models(specs: Sequence[str], data: str | Path, out: str | Path, settings: Optional[CompareSettings] = None,
                   *, log: Callable[[str], None] = print, runtime: Optional[RuntimeSettings] = None
                   ) -> dict[str, Any]:
    """Run (or resume) the comparison of ``specs`` on ``data``; write ``out/results.json`` and ``out/report.html``.

    ``runtime``: what ``runtime.configure`` decided (the command line passes it); its ``rebalance`` runs before
    every stage (torch threads matched to the cores other jobs leave free)."""
    st = (settings or CompareSettings()).check()
    if len(specs) < 1:
        raise UserError("--models: give at least one model (run directory, exported model, hf:..., module:...)")
    data = Path(data)
    if not data.exists():
        raise UserError(f"--data {data} does not exist; pass a dataset folder")
    layout = detect_layout(data)
    tasks = tuple(st.tasks) if st.tasks else default_tasks(layout)
    if not tasks:
        raise UserError(f"--data {data} is a {layout} dataset with no labels the probes know; use the synthetic, "
                        f"artificial speech or LibriSpeech layout")
    out = Path(out)
    stages = Stages(out, log, before=runtime.rebalance if runtime is not None else None)
    raw = [resolve_source(s, device=st.device) for s in specs]
    names = display_names(specs, raw)
    sources = [common_source(src, name) for src, name in zip(raw, names)]
    models: dict[str, Any] = {}
    tag = hashlib.sha256(json.dumps([dataclasses.asdict(st), str(data.resolve()), list(tasks)],
                                    sort_keys=True).encode()).hexdigest()[:6]
    for spec, name, src in zip(specs, names, sources):
        key = f"{_slug(name)}-{src.fingerprint()[:8]}-{tag}"  # a stage is redone when the model or settings change
        models[name] = compare_one(src, spec, key, data, out, out / "models" / _slug(name), tasks, layout, st, stages)
    results = {"data": str(data), "layout": layout, "tasks": list(tasks), "settings": dataclasses.asdict(st),
               "models": models}
    atomic_write_json(out / "results.json", results)
    report = build_compare_report(out, results)
    log(f"report: {report}")
    return results


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("compare", help="SIM against other speech encoders, layer by layer, on one report page")
    p.add_argument("--models", nargs="+", required=True, metavar="SOURCE",
                   help="run directories, exported model folders, hf:<folder or repo id>[#layers=...], "
                        "module:package.path:factory")
    p.add_argument("--data", required=True, help="dataset folder (synthetic, artificial speech or LibriSpeech layout)")
    p.add_argument("--out", required=True)
    p.add_argument("--tasks", default=None, help="comma-separated probe tasks (default: every task the data has)")
    p.add_argument("--decode", choices=DECODE_CHOICES, default="last",
                   help="decoders (ICS, traversals) for the last output, every output, or none")
    defaults = CompareSettings()
    for key in ("probe_seeds", "probe_epochs", "analysis_items", "decoder_epochs", "decoder_items", "ics_items",
                "crop", "seed"):
        p.add_argument(f"--{key.replace('_', '-')}", type=int, default=getattr(defaults, key))
    p.add_argument("--split-scheme", default=defaults.split_scheme)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args: argparse.Namespace) -> int:
    keys = {f.name for f in dataclasses.fields(CompareSettings)}
    values = {k: v for k, v in vars(args).items() if k in keys and k != "tasks"}
    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip()) if args.tasks else None
    compare_models(args.models, args.data, args.out, CompareSettings(tasks=tasks, **values),
                   runtime=getattr(args, "runtime", None))
    return 0


__all__ = ["CompareSettings", "compare_models", "default_tasks", "output_metrics", "factor_matrix", "register"]
