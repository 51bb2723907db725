"""The probe protocol for one task (METHOD.md §8, with the reference's defects fixed).

* Features are encoded **once** per (source, dataset, mode, pool) by :func:`smooth_infomax.features.extract_pooled`
  and cached in the cache folder (default ``OUT/features``); every task of the same items (syllable, vowel,
  consonant; speaker and phone: one encoding leaves both the label frames and the mean-pooled set), every
  output, seed, label-efficiency subset and baseline reads that cache. Items pool each output's frames: ``mean``
  or ``max`` over time, ``flatten`` (the thesis protocol: all T x C values; equal-length items) or, for phones,
  10 ms label frames (the alignment rule of :func:`smooth_infomax.features.align_to_label_frames`).
* All heads of a task (every output of the model and its baselines, every seed) train in one go on the cached
  features (:func:`~smooth_infomax.probe.heads.train_heads`: mini-batch Adam as the protocol says, numbers
  equal to head-by-head training up to float rounding).
* Evaluation uses the **whole** fixed test split: accuracy over items, macro-F1, confusion matrix, mean +- std
  over seeds (population std), with chance (1/classes) and the majority-class rate beside every number.
* Baselines in the same table: the same architecture with random weights (seeded, our encoders only) and
  log-mel features (80 bands, 25 ms / 10 ms, :mod:`smooth_infomax.mel`).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from ..checkpoint import atomic_write_bytes, atomic_write_json, atomic_write_text
from ..errors import UserError
from ..features import FeatureSet, LogMelSource, extract_pooled, source_config
from ..sources.resolve import resolve_source
from .heads import evaluate, predict, subsample_per_class, train_heads
from .tasks import ProbeSettings, class_names, feature_pool, label_key, n_classes, open_task_data


def task_features(source: Any, dataset: Any, task: str, pool: str, *, mode: str = "mean", device: str = "cpu",
                  cache_dir: Optional[Union[str, os.PathLike[str]]] = None, tag: Optional[str] = None,
                  batch_size: int = 32) -> tuple[FeatureSet, np.ndarray]:
    """(features pooled for ``task``, labels), cached. Utterances with phone labels are encoded once for both
    utterance tasks: the phone probe's label frames and the speaker probe's mean-pooled vectors."""
    want = feature_pool(task, pool)
    pools = [want]
    if task in ("phone", "speaker") and len(dataset) and "phones" in dataset[0].labels:
        pools += ["label-frames", "mean"]
    fs = extract_pooled(source, dataset, pools, mode=mode, seed=0, batch_size=batch_size, device=device,
                        cache_dir=cache_dir, tag=tag)[want]
    key = label_key(task)
    if key not in fs.labels:
        raise UserError(f"the probe data has no {key!r} labels for --task {task}; check it with "
                        f"'smooth-infomax data info'")
    return fs, fs.labels[key]


def _entry(runs: list[dict[str, Any]], n_cls: int, majority: float, n_train: int, dim: int) -> dict[str, Any]:
    accs = np.array([r["accuracy"] for r in runs])
    f1s = np.array([r["macro_f1"] for r in runs])
    return {"accuracy_mean": float(accs.mean()), "accuracy_std": float(accs.std()), "accuracies": accs.tolist(),
            "macro_f1_mean": float(f1s.mean()), "macro_f1_std": float(f1s.std()), "chance": 1.0 / n_cls,
            "majority": majority, "n_train": int(n_train), "n_test": int(runs[0]["n_test"]), "dim": int(dim),
            "confusion_seed0": runs[0]["confusion"]}


def probe_models(data: dict[str, tuple[FeatureSet, np.ndarray, FeatureSet, np.ndarray]], n_cls: int,
                 settings: ProbeSettings, *, label_efficiency: Sequence[int] = (),
                 efficiency_models: Sequence[str] = ("encoder",)) -> dict[str, dict[str, Any]]:
    """Train and evaluate a probe on every output of every model's cached features, for every seed.

    data: model -> (train features, train labels, test features, test labels). Models with the same labels
    train together in one :func:`train_heads` call. Returns model -> output -> entry (with ``_weights``)."""
    seeds = list(range(settings.seeds))
    groups: list[tuple[np.ndarray, np.ndarray, list[tuple[str, int]]]] = []
    for model, (tr, y_tr, _, y_te) in data.items():
        for g in groups:
            if np.array_equal(g[0], y_tr) and np.array_equal(g[1], y_te):
                g[2].extend((model, m) for m in range(len(tr.names)))
                break
        else:
            groups.append((y_tr, y_te, [(model, m) for m in range(len(tr.names))]))
    results: dict[str, dict[str, Any]] = {model: {} for model in data}
    for y_tr, y_te, members in groups:
        majority = float(np.bincount(y_te, minlength=n_cls).max() / max(1, len(y_te)))
        xs_tr = [data[model][0].features[m] for model, m in members]
        heads = train_heads(xs_tr, y_tr, n_cls, seeds, bias=settings.bias, epochs=settings.epochs, lr=settings.lr,
                            batch_size=settings.batch_size, weight_decay=settings.weight_decay,
                            standardize=settings.standardize)
        for (model, m), per_seed in zip(members, heads):
            tr, te = data[model][0], data[model][2]
            x_te = te.features[m]
            runs = [evaluate(y_te, predict(h, x_te), n_cls) for h in per_seed]
            entry = _entry(runs, n_cls, majority, len(y_tr), tr.features[m].shape[1])
            entry["_weights"] = np.stack([h["weight"] for h in per_seed])
            results[model][tr.names[m]] = entry
    for model in efficiency_models:
        if not label_efficiency or model not in data:
            continue
        tr, y_tr, te, y_te = data[model]
        curves: list[list[dict[str, Any]]] = [[] for _ in tr.names]
        for k in label_efficiency:
            rows = [subsample_per_class(y_tr, k, seed=1000 * k + s) for s in seeds]
            heads = train_heads(tr.features, y_tr, n_cls, seeds, rows=rows, bias=settings.bias,
                                epochs=settings.epochs, lr=settings.lr,
                                batch_size=min(settings.batch_size, len(rows[0])), standardize=settings.standardize)
            for m, per_seed in enumerate(heads):
                accs = [evaluate(y_te, predict(h, te.features[m]), n_cls)["accuracy"] for h in per_seed]
                curves[m].append({"per_class": k, "accuracy_mean": float(np.mean(accs)),
                                  "accuracy_std": float(np.std(accs))})
        for m, name in enumerate(tr.names):
            results[model][name]["label_efficiency"] = curves[m]
    return results


def run_probe(source: Any, data_path: Union[str, os.PathLike[str]], out_dir: Union[str, os.PathLike[str]],
              settings: ProbeSettings, *, modules: Optional[Sequence[int]] = None, baselines: bool = False,
              label_efficiency: Sequence[int] = (), split_scheme: Optional[str] = None, device: str = "cpu",
              cache_dir: Optional[Union[str, os.PathLike[str]]] = None) -> dict[str, Any]:
    """The whole probe protocol for one task; writes ``probe_<task>.json``, ``.md`` and ``weights_<task>.npz``.

    source: a run directory, any feature-source spec (``--model``) or a FeatureSource. split_scheme: None keeps
    the run config's ``data.split_scheme`` (``reference`` for sources that are not runs)."""
    settings.check()
    src = resolve_source(source, device=device, name="encoder")
    cfg = source_config(src, data_path)
    scheme = split_scheme or cfg.data.split_scheme
    out = Path(out_dir)
    cache = Path(cache_dir) if cache_dir is not None else out / "features"
    task = settings.task
    train_set = open_task_data(data_path, task, "train", cfg=cfg, split_scheme=scheme)
    test_set = open_task_data(data_path, task, "test", cfg=cfg, split_scheme=scheme)
    n_out = len(src.output_names)
    wanted = list(range(n_out)) if modules is None else list(modules)
    for m in wanted:
        if not 0 <= m < n_out:
            raise UserError(f"--module {m} does not exist; this encoder has modules 0..{n_out - 1} "
                            f"({', '.join(src.output_names)})")
    notes: list[str] = []
    if settings.mode == "sample" and not src.stochastic:
        notes.append(f"{src.name} is deterministic: --mode sample gives its mean features")

    def pair(s: Any, tag: str, pool: str, outputs: Optional[list[int]]) -> tuple[Any, ...]:
        kw = dict(mode=settings.mode, device=device, cache_dir=cache, tag=tag)
        tr, y_tr = task_features(s, train_set, task, pool, **kw)
        te, y_te = task_features(s, test_set, task, pool, **kw)
        if outputs is not None:
            tr, te = tr.select(outputs), te.select(outputs)
        return tr, y_tr, te, y_te

    data = {"encoder": pair(src, "encoder", settings.pool, wanted)}
    if baselines:
        if hasattr(src, "random_twin"):
            data["random-init"] = pair(src.random_twin(), "random", settings.pool, wanted)
        else:
            notes.append(f"no random-init twin for {src.name} (not one of our encoders)")
        mel_pool = "mean" if settings.pool == "flatten" else settings.pool
        data["log-mel"] = pair(LogMelSource(int(src.sample_rate)), "logmel", mel_pool, None)
    names = class_names(train_set, task)
    n_cls = n_classes(names, data["encoder"][1], data["encoder"][3])
    models = probe_models(data, n_cls, settings, label_efficiency=label_efficiency)

    weights = {f"{model}/{name}": entry.pop("_weights") for model, res in models.items() for name, entry in res.items()}
    buf = io.BytesIO()
    np.savez(buf, **weights)
    atomic_write_bytes(out / f"weights_{task}.npz", buf.getvalue())
    result = {"task": task, "run": str(source) if isinstance(source, (str, os.PathLike)) else src.name,
              "source": src.name, "data": str(data_path), "settings": dict(settings.__dict__),
              "split_scheme": scheme, "features_standardized": bool(settings.standardize),
              "classes": names or [str(i) for i in range(n_cls)], "chance": 1.0 / n_cls, "notes": notes,
              "results": models}
    atomic_write_json(out / f"probe_{task}.json", result)
    atomic_write_text(out / f"probe_{task}.md", markdown_table(result))
    return result


def markdown_table(result: dict[str, Any]) -> str:
    """The task's results as a Markdown table (one row per model and output)."""
    seeds, chance = result["settings"]["seeds"], 100 * result["chance"]
    lines = [f"### {result['task']} probe ({seeds} seeds, chance {chance:.1f}%)", "",
             "| model | output | accuracy % | macro-F1 % | majority % | n test |", "|---|---|---|---|---|---|"]
    for model, res in result["results"].items():
        for name, e in res.items():
            lines.append(f"| {model} | {name} | {100 * e['accuracy_mean']:.2f} ± {100 * e['accuracy_std']:.2f} | "
                         f"{100 * e['macro_f1_mean']:.2f} ± {100 * e['macro_f1_std']:.2f} | "
                         f"{100 * e['majority']:.1f} | {e['n_test']} |")
    notes = result.get("notes") or []
    return "\n".join(lines + ([""] + [f"Note: {n}" for n in notes] if notes else [])) + "\n"


__all__ = ["run_probe", "probe_models", "task_features", "markdown_table"]
