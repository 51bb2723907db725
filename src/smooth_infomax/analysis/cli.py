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
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..checkpoint import atomic_write_json
from ..errors import UserError

FACTOR_TASKS = ("consonant", "vowel", "position", "speaker")


def collect_latents(encoder: Any, dataset: Any, *, mode: str = "sample", seed: int = 0, max_items: int | None = None,
                    batch_size: int = 32) -> dict[str, Any]:
    """Encode labelled items once. Returns per output: pooled (N, C) samples, frame samples / means / log-variances
    (concatenated over items), and the item labels."""
    import torch

    from ..data.records import collate

    torch.manual_seed(seed)
    n = len(dataset) if max_items is None else min(len(dataset), max_items)
    idx = np.random.default_rng(seed).permutation(len(dataset))[:n] if n < len(dataset) else np.arange(n)
    names = list(encoder.module_names)
    pooled: list[list[np.ndarray]] = [[] for _ in names]
    frames: list[dict[str, list[np.ndarray]]] = [{"z": [], "mu": [], "logvar": []} for _ in names]
    labels: dict[str, list[int]] = {}
    encoder.eval()
    with torch.no_grad():
        for s in range(0, n, batch_size):
            batch = collate([dataset[int(i)] for i in idx[s:s + batch_size]])
            stats = encoder.encode(batch["wave"], mode=mode, return_stats=True)
            for m, st in enumerate(stats):
                z = st["z"].cpu().numpy()
                pooled[m].append(z.mean(axis=1))
                frames[m]["z"].append(z.reshape(-1, z.shape[-1]))
                if st.get("mu") is not None:
                    frames[m]["mu"].append(st["mu"].cpu().numpy().reshape(-1, z.shape[-1]))
                if st.get("logvar") is not None:
                    frames[m]["logvar"].append(st["logvar"].cpu().numpy().reshape(-1, z.shape[-1]))
            for key in ("syllable",) + FACTOR_TASKS:
                if key in batch and hasattr(batch[key], "tolist"):
                    labels.setdefault(key, []).extend(int(v) for v in batch[key].tolist())
    out = []
    for m, name in enumerate(names):
        entry = {"name": name, "pooled": np.concatenate(pooled[m]).astype(np.float32)}
        for k, v in frames[m].items():
            entry[k] = np.concatenate(v).astype(np.float32) if v else None
        out.append(entry)
    return {"outputs": out, "labels": {k: np.asarray(v, dtype=np.int64) for k, v in labels.items()}}


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
    from ..probe import train_linear

    n_classes = int(vowels.max()) + 1
    model = train_linear(pooled, vowels, n_classes, bias=False, epochs=epochs, lr=1e-2, batch_size=64, seed=seed,
                         standardize=True)
    return model["weight"]


def analyze_latents(lat: dict[str, Any], out_dir: str | Path, *, seed: int = 0, knn_dims: int = 8,
                    knn_draws: int = 3, max_frames: int = 4000, tsne: bool = True,
                    label_names: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """All metrics and per-run figures for latents from :func:`collect_latents`."""
    from . import (concentration_metrics, dci, gaussianity_report, mig, sap, total_correlation)
    from .plots import latent_histograms, tsne_plot

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    factors, factor_names = _factor_matrix(lat["labels"])
    results: dict[str, Any] = {"factors": factor_names, "n_items": int(len(factors)), "modules": {}}
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


def analyze_run(run_dir: str | Path, data_path: str | Path, out_dir: str | Path, *, seed: int = 0,
                max_items: int | None = 2000, tsne: bool = True, split: str = "test") -> dict[str, Any]:
    """Collect latents of ``run_dir`` on the syllable items of ``data_path`` and analyse them."""
    from ..probe import open_task_data
    from ..train import load, run_config

    cfg = run_config(run_dir)
    encoder = load(run_dir)
    dataset = open_task_data(data_path, "syllable", split, sample_rate=cfg.data.sample_rate)
    lat = collect_latents(encoder, dataset, mode="sample" if cfg.model.kind == "sim" else "mean", seed=seed,
                          max_items=max_items)
    results = analyze_latents(lat, out_dir, seed=seed, tsne=tsne, label_names=getattr(dataset, "label_names", None))
    results.update({"run": str(run_dir), "data": str(data_path), "split": split, "kind": cfg.model.kind})
    atomic_write_json(Path(out_dir) / "analysis.json", results)
    return results


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("analyze", help="interpretability metrics of a trained encoder (JSON + figures)")
    p.add_argument("--run", required=True, help="run directory of a trained encoder")
    p.add_argument("--data", required=True, help="synthetic or artificial speech dataset (syllable labels)")
    p.add_argument("--out", required=True)
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--max-items", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-tsne", action="store_true")
    p.set_defaults(func=_cmd_analyze)


def _cmd_analyze(args: Any) -> int:
    res = analyze_run(args.run, args.data, args.out, seed=args.seed, max_items=args.max_items,
                      tsne=not args.no_tsne, split=args.split)
    for name, m in res["modules"].items():
        d = m["disentanglement"]
        line = f"{name}: MIG {d['mig']:.3f} DCI-D {d['disentanglement']:.3f} SAP {d['sap']:.3f}"
        tc = m["total_correlation"]["gaussian_all_dims"]
        if tc is not None:
            line += f" TC(gauss) {tc:.2f} nats"
        if "gaussianity" in m and "active_dimensions" in m["gaussianity"]:
            line += f" active dims {m['gaussianity']['active_dimensions']}"
        print(line)
    print(f"-> {Path(args.out) / 'analysis.json'}")
    return 0
