"""``smooth-infomax analyze``: interpretability metrics of one trained encoder, as JSON plus figures.

For every conv module of the run (the GRU has no posterior and is analysed for total correlation and
disentanglement only), on the labelled syllable items of ``--data`` (synthetic or artificial speech):

* **Gaussianity** on frame-level latents (samples, plus the posterior means and log-variances): per-dimension
  moments, KL of the aggregate posterior to N(0, I), active dimensions (posterior-collapse check), histograms.
* **Total correlation** (nats) with the scale-invariant Gaussian estimator on all dimensions (debiased for the
  sample size) and the k-NN
  (KSG-style) estimator on the same random subsets of ``--knn-dims`` dimensions for every run (seeded), so
  runs are comparable.
* **Disentanglement** (MIG, DCI, SAP) of time-mean-pooled latents against the known factors (consonant, vowel,
  position, and speaker where the data has several).
* **Concentration** of a bias-free linear vowel probe's weights (trained on time-mean-pooled *samples*, as the
  paper's interpretability probes, with standardised inputs so scales are comparable between models):
  participation ratio, Gini, dimensions holding 90% of the weight energy; the weights are saved for the
  cross-model density figure.
* **t-SNE** of the pooled latents coloured by syllable.

Any feature source works (``--run RUN`` or ``--model SOURCE``, see :mod:`smooth_infomax.features`); latents come
from :func:`smooth_infomax.features.extract_features`. Metrics that assume a Gaussian posterior (KL of the aggregate
posterior to N(0, I), active dimensions) need a stochastic source (SIM) and are skipped with a note otherwise. The
JSON's ``standardization`` says, per metric, whether features are standardised per dimension (or the metric is
invariant to per-dimension scale), so models with latents of different scales compare.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..checkpoint import atomic_write_json
from ..errors import UserError
from ..features import extract_features, source_config
from ..probe import open_task_data, train_linear
from ..sources.resolve import add_source_arguments, resolve_source, source_spec
from . import concentration_metrics, dci, gaussianity_report, mig, sap, total_correlation
from .plots import latent_histograms, tsne_plot

FACTOR_TASKS = ("consonant", "vowel", "position", "speaker")
#: how each metric treats per-dimension scale (written into analysis.json)
STANDARDIZATION = {
    "gaussianity": "raw latents (compared with the N(0, I) prior, so not standardised)",
    "total_correlation": "scale-invariant estimators (correlation matrix; k-NN on standardised columns)",
    "disentanglement": "MIG / SAP per dimension (scale-invariant); DCI on standardised latents",
    "concentration": "vowel probe on latents standardised per dimension with their own statistics",
    "tsne": "raw pooled latents",
}
DETERMINISTIC_NOTE = ("deterministic source: no Gaussian posterior, so the KL to N(0, I), active dimensions and "
                      "posterior histograms are skipped")


def collect_latents(source: Any, dataset: Any, *, mode: str = "sample", seed: int = 0, max_items: Optional[int] = None,
                    batch_size: int = 32, device: str = "cpu") -> dict[str, Any]:
    """Encode labelled items once (:func:`extract_features`). Returns per output: pooled (N, C) time means of
    ``z``, frame ``z`` (samples for ``mode="sample"``, else means) / means / log-variances concatenated over
    items (None for deterministic sources and the GRU), and the item labels. A seeded random subset of
    ``max_items`` items is used when the split is larger."""
    n = len(dataset) if max_items is None else min(len(dataset), max_items)
    idx = np.random.default_rng(seed).permutation(len(dataset))[:n] if n < len(dataset) else np.arange(n)
    stochastic = bool(getattr(source, "stochastic", False))
    fs = extract_features(source, dataset, mode="stats" if stochastic else "mean", pool="none", seed=seed,
                          batch_size=batch_size, device=device, indices=idx)
    out = []
    for m, name in enumerate(fs.names):
        mu = fs.mu[m] if fs.mu is not None else None
        z = fs.features[m] if mode == "sample" or mu is None else mu
        cat = lambda parts: None if parts is None else np.concatenate(parts).astype(np.float32)  # noqa: E731
        out.append({"name": name, "pooled": np.stack([x.mean(axis=0) for x in z]).astype(np.float32),
                    "z": cat(z), "mu": cat(mu), "logvar": cat(fs.logvar[m] if fs.logvar is not None else None)})
    labels = {k: v for k, v in fs.labels.items() if k in ("syllable",) + FACTOR_TASKS}
    return {"outputs": out, "labels": labels, "stochastic": stochastic}


def _subsample(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    if len(x) <= n:
        return x
    return x[np.random.default_rng(seed).choice(len(x), n, replace=False)]


def _factor_matrix(labels: dict[str, np.ndarray]) -> tuple[np.ndarray, list[str]]:
    cols, names = [], []
    for key in FACTOR_TASKS:
        v = labels.get(key)
        if v is not None and len(np.unique(v)) > 1:
            cols.append(v)
            names.append(key)
    if not cols:
        raise UserError("the analysis data has no factor labels (consonant, vowel, position, speaker)")
    return np.stack(cols, axis=1), names


def vowel_probe_weights(pooled: np.ndarray, vowels: np.ndarray, seed: int = 0, epochs: int = 100) -> np.ndarray:
    """Bias-free linear vowel probe on standardised pooled samples; returns W (classes, D)."""
    n_classes = int(vowels.max()) + 1
    model = train_linear(pooled, vowels, n_classes, bias=False, epochs=epochs, lr=1e-2, batch_size=64, seed=seed,
                         standardize=True)
    return model["weight"]


def analyze_latents(lat: dict[str, Any], out_dir: str | Path, *, seed: int = 0, knn_dims: int = 8,
                    knn_draws: int = 3, max_frames: int = 4000, tsne: bool = True,
                    label_names: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """All metrics and per-run figures for latents from :func:`collect_latents`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    factors, factor_names = _factor_matrix(lat["labels"])
    results: dict[str, Any] = {"factors": factor_names, "n_items": int(len(factors)), "modules": {},
                               "standardization": dict(STANDARDIZATION), "notes": []}
    if not lat.get("stochastic", True):
        results["notes"].append(DETERMINISTIC_NOTE)
    weights: dict[str, np.ndarray] = {}
    for entry in lat["outputs"]:
        name = entry["name"]
        z_frames = _subsample(entry["z"], max_frames, seed)
        res: dict[str, Any] = {"dim": int(entry["pooled"].shape[1])}
        if entry["mu"] is not None:
            mu = _subsample(entry["mu"], max_frames, seed)
            lv = _subsample(entry["logvar"], max_frames, seed) if entry["logvar"] is not None else None
            res["gaussianity"] = gaussianity_report(z_frames, mu=mu, logvar=lv)
            latent_histograms(z_frames, out / f"histograms_{name}.png", dims=6)
        try:  # the plug-in estimate is biased upwards by about D(D-1)/(4N) nats: report the debiased one
            tc_gauss = float(total_correlation(z_frames, method="gaussian", debias=True))
        except ValueError as exc:  # singular covariance (collapsed dimensions)
            tc_gauss = None
            res["tc_gaussian_error"] = str(exc)
        rng = np.random.default_rng(seed)
        d = z_frames.shape[1]
        subsets = [np.sort(rng.choice(d, min(knn_dims, d), replace=False)) for _ in range(knn_draws)]
        knn = [float(total_correlation(z_frames[:, s], method="knn", seed=seed)) for s in subsets]
        res["total_correlation"] = {"gaussian_all_dims": tc_gauss, "knn_subsets_mean": float(np.mean(knn)),
                                    "knn_subsets": knn, "knn_dims": int(min(knn_dims, d))}
        pooled = entry["pooled"]
        res["disentanglement"] = {"mig": float(mig(pooled, factors)), "sap": float(sap(pooled, factors)),
                                  **{k: float(v) for k, v in dci(pooled, factors, seed=seed).items()}}
        if "vowel" in lat["labels"]:
            w = vowel_probe_weights(pooled, lat["labels"]["vowel"], seed=seed)
            weights[name] = w
            res["concentration"] = concentration_metrics(w)
        if tsne and "syllable" in lat["labels"]:
            names = (label_names or {}).get("syllable")
            tsne_plot(pooled, lat["labels"]["syllable"], names, out / f"tsne_{name}.png", seed=seed)
        results["modules"][name] = res
    if weights:
        np.savez(out / "vowel_probe_weights.npz", **weights)
    return results


def analyze_run(source: Any, data_path: str | Path, out_dir: str | Path, *, seed: int = 0,
                max_items: int | None = 2000, tsne: bool = True, split: str = "test", device: str = "cpu",
                split_scheme: Optional[str] = None) -> dict[str, Any]:
    """Collect latents of a feature source (a run directory, a ``--model`` spec or a FeatureSource) on the
    syllable items of ``data_path`` (opened with the run's config, ``data.split_scheme`` included) and analyse
    them. SIM is analysed on posterior samples, deterministic sources on their features."""
    src = resolve_source(source, device=device)
    cfg = source_config(src, data_path)
    dataset = open_task_data(data_path, "syllable", split, cfg=cfg, split_scheme=split_scheme)
    lat = collect_latents(src, dataset, mode="sample" if src.stochastic else "mean", seed=seed,
                          max_items=max_items, device=device)
    results = analyze_latents(lat, out_dir, seed=seed, tsne=tsne, label_names=getattr(dataset, "label_names", None))
    kind = cfg.model.kind if getattr(src, "config", None) is not None else None
    results.update({"run": str(source) if isinstance(source, (str, Path)) else src.name, "source": src.name,
                    "data": str(data_path), "split": split, "split_scheme": split_scheme or cfg.data.split_scheme,
                    "kind": kind, "stochastic": bool(src.stochastic)})
    atomic_write_json(Path(out_dir) / "analysis.json", results)
    return results


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("analyze", help="interpretability metrics of a trained encoder (JSON + figures)")
    add_source_arguments(p)
    p.add_argument("--data", required=True, help="synthetic or artificial speech dataset (syllable labels)")
    p.add_argument("--out", required=True)
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--split-scheme", choices=["reference", "leakage_free"], default=None,
                   help="artificial speech split (default: the run config's data.split_scheme)")
    p.add_argument("--max-items", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-tsne", action="store_true")
    p.set_defaults(func=_cmd_analyze)


def _cmd_analyze(args: Any) -> int:
    if args.max_items is not None and args.max_items < 2:
        raise UserError(f"--max-items must be at least 2, got {args.max_items}")
    res = analyze_run(source_spec(args), args.data, args.out, seed=args.seed, max_items=args.max_items,
                      tsne=not args.no_tsne, split=args.split, device=args.device, split_scheme=args.split_scheme)
    for name, m in res["modules"].items():
        d = m["disentanglement"]
        line = f"{name}: MIG {d['mig']:.3f} DCI-D {d['disentanglement']:.3f} SAP {d['sap']:.3f}"
        tc = m["total_correlation"]["gaussian_all_dims"]
        if tc is not None:
            line += f" TC(gauss) {tc:.2f} nats"
        if "gaussianity" in m and "active_dimensions" in m["gaussianity"]:
            line += f" active dims {m['gaussianity']['active_dimensions']}"
        print(line)
    for note in res.get("notes", []):
        print(f"note: {note}")
    print(f"-> {Path(args.out) / 'analysis.json'}")
    return 0
