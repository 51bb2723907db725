"""Linear probes on a frozen encoder: phones, speakers, syllables, vowels, consonants.

The protocol (METHOD.md §8, with the reference's defects fixed):

* Features are encoded **once** per (run, data, task, mode, pooling) with the encoder in eval mode under
  ``no_grad`` and cached as ``.npz`` in ``OUT/features/``; every probe (all modules, all seeds, label
  efficiency, baselines) trains on the cache, mini-batched.
* Utterance- and syllable-level tasks pool each module's frames: ``mean`` or ``max`` over time, ``flatten``
  (the thesis protocol: all T x C values; needs equal-length items) or, for phones, ``none``.
* Phones are per 10 ms label frame. Encoder frame t of a module with hop h samples starts at sample t*h;
  label frame f covers samples [160 f, 160 f + 160). Each label frame takes the mean of the encoder frames
  that start inside it; when the hop exceeds 160 samples (no frame starts inside), the frame floor(160 f / h)
  is used. Label frames beyond the last encoder frame, and frames labelled -1, are dropped. For the paper
  encoder's last module and GRU (hop 160) this is the identity: frame t <-> label t.
* Evaluation uses the **whole** fixed test split (no random subset, no dropped batch): accuracy over items,
  macro-F1, confusion matrix, mean +- std over seeds (population std, ``numpy.std``), with chance (1/classes)
  and the majority-class rate beside every number.
* Baselines in the same table: the same architecture with random weights (seeded), and log-mel features
  (80 bands, 25 ms / 10 ms, the project's own code in :mod:`smooth_infomax.mel`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .checkpoint import atomic_write_bytes, atomic_write_json, atomic_write_text
from .errors import UserError

TASKS = ("phone", "speaker", "syllable", "vowel", "consonant")
SYLLABLE_TASKS = ("syllable", "vowel", "consonant")
LABEL_FRAME = 160  # 10 ms at 16 kHz
DEFAULT_EFFICIENCY = (1, 2, 4, 8, 16, 32, 64, 128)


@dataclass
class ProbeSettings:
    task: str = "vowel"
    mode: str = "mean"
    bias: bool = True
    pool: str = "mean"
    seeds: int = 3
    epochs: int = 50
    lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 0.0
    standardize: bool = False

    def check(self) -> None:
        if self.task not in TASKS:
            raise UserError(f"--task {self.task!r} is not a probe task; choose from {', '.join(TASKS)}")
        if self.pool not in ("mean", "max", "flatten", "none"):
            raise UserError(f"--pool {self.pool!r}: choose mean, max, flatten or none")
        if self.task == "phone" and self.pool != "none":
            raise UserError("--task phone is a per-frame probe: use --pool none")
        if self.task != "phone" and self.pool == "none":
            raise UserError(f"--task {self.task} needs one vector per item: use --pool mean, max or flatten")
        if self.mode not in ("mean", "sample"):
            raise UserError(f"--mode {self.mode!r}: choose mean or sample")
        if self.seeds < 1:
            raise UserError("--seeds must be >= 1")


# --------------------------------------------------------------------------------------------------
# Data for a task
# --------------------------------------------------------------------------------------------------


def task_view(task: str) -> str | None:
    return "syllables" if task in SYLLABLE_TASKS else None


def open_task_data(data_path: str | Path, task: str, split: str, *, sample_rate: int = 16000,
                   split_scheme: str = "reference") -> Any:
    """The dataset a probe task reads: syllable items for syllable/vowel/consonant, whole utterances otherwise."""
    from .data import detect_layout, open_dataset

    path = Path(data_path)
    if not path.exists():
        raise UserError(f"--data {path} does not exist")
    layout = detect_layout(path)
    if task in ("phone", "speaker") and layout == "artificial":
        raise UserError(f"--task {task} needs LibriSpeech-layout data with speakers/phones; {path} is the artificial "
                        f"speech dataset (use --task syllable, vowel or consonant)")
    if task in SYLLABLE_TASKS and layout not in ("artificial", "synthetic"):
        raise UserError(f"--task {task} needs syllable labels (the artificial speech or synthetic dataset); "
                        f"{path} is a {layout} dataset")
    kwargs: dict[str, Any] = dict(split=split, view=task_view(task), sample_rate=sample_rate, crop=None,
                                  random_crop=False)
    if layout == "artificial":
        kwargs["split_scheme"] = split_scheme
    return open_dataset(path, **kwargs)


def label_key(task: str) -> str:
    return "phones" if task == "phone" else task


# --------------------------------------------------------------------------------------------------
# Feature extraction (encoded once, cached)
# --------------------------------------------------------------------------------------------------


def align_to_label_frames(feats: np.ndarray, hop: int, n_labels: int) -> np.ndarray:
    """Map encoder frames (T, C) with hop ``hop`` samples onto ``n_labels`` 10 ms label frames -> (n, C).

    n = number of label frames that receive at least one encoder frame (see the module docstring)."""
    T = feats.shape[0]
    if hop <= LABEL_FRAME:
        owner = (np.arange(T) * hop) // LABEL_FRAME  # label frame each encoder frame starts in
        n = min(n_labels, int(owner[-1]) + 1) if T else 0
        out = np.zeros((n, feats.shape[1]), dtype=np.float32)
        counts = np.zeros(n, dtype=np.float32)
        keep = owner < n
        np.add.at(out, owner[keep], feats[keep])
        np.add.at(counts, owner[keep], 1.0)
        return out / np.maximum(counts, 1.0)[:, None]
    idx = (np.arange(n_labels) * LABEL_FRAME) // hop
    idx = idx[idx < T]
    return feats[idx].astype(np.float32)


def _pool(x: np.ndarray, pool: str) -> np.ndarray:
    if pool == "mean":
        return x.mean(axis=0)
    if pool == "max":
        return x.max(axis=0)
    if pool == "flatten":
        return x.reshape(-1)
    return x


def extract_features(encoder: Any, dataset: Any, task: str, pool: str, *, mode: str = "mean", seed: int = 0,
                     batch_size: int = 32, device: str = "cpu") -> dict[str, Any]:
    """Encode every item once. Returns {"features": [per output: (N, D) float32], "labels": (N,) int64,
    "names": output names}. For phones N counts label frames over all utterances."""
    import torch

    from .data.records import collate

    torch.manual_seed(seed)
    key = label_key(task)
    hops = list(encoder.hops)
    names = list(encoder.module_names)
    per_out: list[list[np.ndarray]] = [[] for _ in names]
    labels: list[np.ndarray] = []
    extra: dict[str, list[np.ndarray]] = {}
    encoder = encoder.to(device).eval()
    frame_level = task == "phone"
    items = range(len(dataset))
    lengths_equal = not frame_level and _equal_lengths(dataset)
    step = batch_size if lengths_equal else 1
    with torch.no_grad():
        for start in range(0, len(dataset), step):
            batch = collate([dataset[i] for i in items[start:start + step]])
            outs = encoder.encode(batch["wave"].to(device), mode=mode)
            if frame_level:
                lab = batch[key][0].numpy() if torch.is_tensor(batch[key]) else np.asarray(batch[key][0])
                lab = lab.reshape(-1)
                n_keep = None
                aligned = []
                for m, out in enumerate(outs):
                    a = align_to_label_frames(out[0].cpu().numpy(), hops[m], len(lab))
                    aligned.append(a)
                    n_keep = len(a) if n_keep is None else min(n_keep, len(a))
                lab = lab[:n_keep]
                valid = lab >= 0
                for m, a in enumerate(aligned):
                    per_out[m].append(a[:n_keep][valid])
                labels.append(lab[valid].astype(np.int64))
            else:
                for m, out in enumerate(outs):
                    arr = out.cpu().numpy()
                    per_out[m].append(np.stack([_pool(a, pool) for a in arr]).astype(np.float32))
                labels.append(np.asarray(batch[key]).reshape(-1).astype(np.int64))
                for other in SYLLABLE_TASKS + ("speaker", "position"):
                    if other in batch and torch.is_tensor(batch[other]):
                        extra.setdefault(other, []).append(batch[other].numpy().astype(np.int64))
    if not labels:
        raise UserError("the probe dataset is empty; check --data with 'smooth-infomax data info'")
    out = {"features": [np.concatenate(p) for p in per_out], "labels": np.concatenate(labels), "names": names}
    out["all_labels"] = {k: np.concatenate(v) for k, v in extra.items() if len(v) == len(labels)}
    return out


def _equal_lengths(dataset: Any) -> bool:
    n = min(len(dataset), 4)
    return len({dataset[i].wave.shape[-1] for i in range(n)}) <= 1


def log_mel_features(dataset: Any, task: str, pool: str) -> dict[str, Any]:
    """The non-learned baseline: 80 log-mel bands, 25 ms windows every 10 ms (frame f <-> label frame f)."""
    import torch

    from .mel import log_mel

    feats, labels = [], []
    key = label_key(task)
    for i in range(len(dataset)):
        item = dataset[i]
        wave = item.wave.reshape(1, -1)
        n = wave.shape[-1]
        # a 400-sample window centred every 160 samples: pad so that frame f is centred at 160 f + 80
        with torch.no_grad():
            lm = log_mel(wave, n_fft=400, hop=LABEL_FRAME, n_mels=80, sample_rate=item.sample_rate)[0].T.numpy()
        lm = lm[: max(1, n // LABEL_FRAME)]
        if task == "phone":
            lab = np.asarray(item.labels[key]).reshape(-1)
            k = min(len(lab), len(lm))
            valid = lab[:k] >= 0
            feats.append(lm[:k][valid].astype(np.float32))
            labels.append(lab[:k][valid].astype(np.int64))
        else:
            feats.append(_pool(lm, pool)[None].astype(np.float32))
            labels.append(np.array([int(item.labels[key])], dtype=np.int64))
    return {"features": [np.concatenate(feats)], "labels": np.concatenate(labels), "names": ["log-mel"]}


def weights_fingerprint(module: Any) -> str:
    """A short hash of a module's parameters and buffers, so cached features follow the weights: probing a run
    again after it trained further (same run directory) re-encodes instead of reusing stale features."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _cache_key(parts: Sequence[Any]) -> str:
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:16]


def cached(path: Path, compute: Any, task: str | None = None) -> dict[str, Any]:
    """Load ``path`` (npz) if present, else compute, save atomically and return.

    The file keeps every item-level label column (``label_<task>``), so syllable, vowel and consonant probes
    share one encoding of the syllable items; ``task`` picks the labels returned."""
    if not path.exists():
        result = compute()
        import io

        buf = io.BytesIO()
        arrays = {f"f{i}": f for i, f in enumerate(result["features"])}
        arrays.update({f"label_{k}": v for k, v in result.get("all_labels", {}).items()})
        np.savez(buf, labels=result["labels"], names=np.array(result["names"]), n_outputs=len(result["features"]),
                 **arrays)
        atomic_write_bytes(path, buf.getvalue())
    with np.load(path, allow_pickle=False) as z:
        n = int(z["n_outputs"])
        labels = z[f"label_{task}"] if task is not None and f"label_{task}" in z.files else z["labels"]
        return {"features": [z[f"f{i}"] for i in range(n)], "labels": labels,
                "names": [str(s) for s in z["names"]]}


# --------------------------------------------------------------------------------------------------
# Linear probe training and evaluation
# --------------------------------------------------------------------------------------------------


def train_linear(x: np.ndarray, y: np.ndarray, n_classes: int, *, bias: bool = True, epochs: int = 50,
                 lr: float = 1e-3, batch_size: int = 64, weight_decay: float = 0.0, seed: int = 0,
                 standardize: bool = False) -> dict[str, Any]:
    """Multinomial logistic regression with Adam, mini-batched; returns weights and the preprocessing."""
    import torch

    g = torch.Generator().manual_seed(seed)
    mean = x.mean(0) if standardize else np.zeros(x.shape[1], dtype=np.float32)
    std = x.std(0) + 1e-8 if standardize else np.ones(x.shape[1], dtype=np.float32)
    X = torch.from_numpy(((x - mean) / std).astype(np.float32))
    Y = torch.from_numpy(y.astype(np.int64))
    torch.manual_seed(seed)
    head = torch.nn.Linear(X.shape[1], n_classes, bias=bias)
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    n = len(X)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for s in range(0, n, batch_size):
            idx = perm[s:s + batch_size]
            loss = torch.nn.functional.cross_entropy(head(X[idx]), Y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return {"weight": head.weight.detach().numpy().copy(),
            "bias": head.bias.detach().numpy().copy() if bias else np.zeros(n_classes, dtype=np.float32),
            "mean": mean, "std": std}


def predict(model: dict[str, Any], x: np.ndarray) -> np.ndarray:
    logits = ((x - model["mean"]) / model["std"]) @ model["weight"].T + model["bias"]
    return logits.argmax(axis=1)


def evaluate(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, Any]:
    conf = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(conf, (y_true, y_pred), 1)
    tp = np.diag(conf).astype(float)
    precision = tp / np.maximum(conf.sum(0), 1)
    recall = tp / np.maximum(conf.sum(1), 1)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    present = conf.sum(1) > 0
    return {"accuracy": float(tp.sum() / max(1, conf.sum())), "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
            "confusion": conf.tolist(), "n_test": int(conf.sum())}


def subsample_per_class(y: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    idx = [rng.permutation(np.flatnonzero(y == c))[:per_class] for c in np.unique(y)]
    return np.sort(np.concatenate(idx))


def probe_features(train: dict[str, Any], test: dict[str, Any], n_classes: int, settings: ProbeSettings,
                   *, label_efficiency: Sequence[int] = ()) -> dict[str, Any]:
    """Train and evaluate a probe on every output of cached features, for every seed."""
    results: dict[str, Any] = {}
    y_tr, y_te = train["labels"], test["labels"]
    majority = float(np.bincount(y_te, minlength=n_classes).max() / max(1, len(y_te)))
    for m, name in enumerate(train["names"]):
        x_tr, x_te = train["features"][m], test["features"][m]
        runs, weights = [], []
        for s in range(settings.seeds):
            model = train_linear(x_tr, y_tr, n_classes, bias=settings.bias, epochs=settings.epochs, lr=settings.lr,
                                 batch_size=settings.batch_size, weight_decay=settings.weight_decay, seed=s,
                                 standardize=settings.standardize)
            runs.append(evaluate(y_te, predict(model, x_te), n_classes))
            weights.append(model["weight"])
        accs = np.array([r["accuracy"] for r in runs])
        f1s = np.array([r["macro_f1"] for r in runs])
        entry: dict[str, Any] = {
            "accuracy_mean": float(accs.mean()), "accuracy_std": float(accs.std()), "accuracies": accs.tolist(),
            "macro_f1_mean": float(f1s.mean()), "macro_f1_std": float(f1s.std()),
            "chance": 1.0 / n_classes, "majority": majority, "n_train": int(len(y_tr)), "n_test": int(len(y_te)),
            "dim": int(x_tr.shape[1]), "confusion_seed0": runs[0]["confusion"],
        }
        if label_efficiency:
            curve = []
            for k in label_efficiency:
                accs_k = []
                for s in range(settings.seeds):
                    idx = subsample_per_class(y_tr, k, seed=1000 * k + s)
                    model = train_linear(x_tr[idx], y_tr[idx], n_classes, bias=settings.bias, epochs=settings.epochs,
                                         lr=settings.lr, batch_size=min(settings.batch_size, len(idx)), seed=s,
                                         standardize=settings.standardize)
                    accs_k.append(evaluate(y_te, predict(model, x_te), n_classes)["accuracy"])
                curve.append({"per_class": k, "accuracy_mean": float(np.mean(accs_k)),
                              "accuracy_std": float(np.std(accs_k))})
            entry["label_efficiency"] = curve
        results[name] = entry
        results[name]["_weights"] = np.stack(weights)
    return results


def run_probe(run_dir: str | Path, data_path: str | Path, out_dir: str | Path, settings: ProbeSettings, *,
              modules: Sequence[int] | None = None, baselines: bool = False, label_efficiency: Sequence[int] = (),
              split_scheme: str = "reference", device: str = "cpu") -> dict[str, Any]:
    """The whole probe protocol for one task; writes ``probe_<task>.json``, ``.md`` and ``weights_<task>.npz``."""
    from .model import Encoder
    from .train import load, run_config

    settings.check()
    cfg = run_config(run_dir)
    out = Path(out_dir)
    (out / "features").mkdir(parents=True, exist_ok=True)
    sr = cfg.data.sample_rate
    train_set = open_task_data(data_path, settings.task, "train", sample_rate=sr, split_scheme=split_scheme)
    test_set = open_task_data(data_path, settings.task, "test", sample_rate=sr, split_scheme=split_scheme)
    key = label_key(settings.task)
    names_map = getattr(train_set, "label_names", {}) or {}
    if settings.task == "phone":
        class_names = names_map.get("phones") or names_map.get("phone")
    else:
        class_names = names_map.get(key)
    encoder = load(run_dir)
    n_out = len(encoder.module_names)
    wanted = list(range(n_out)) if modules is None else list(modules)
    for m in wanted:
        if not 0 <= m < n_out:
            raise UserError(f"--module {m} does not exist; this encoder has modules 0..{n_out - 1} "
                            f"({', '.join(encoder.module_names)})")

    def feats(enc: Any, tag: str, split: str, ds: Any) -> dict[str, Any]:
        unit = "syllables" if settings.task in SYLLABLE_TASKS else settings.task  # one encoding per item set
        k = _cache_key([Path(run_dir).resolve(), Path(data_path).resolve(), unit, settings.mode,
                        settings.pool, split, tag, split_scheme, weights_fingerprint(enc)])
        return cached(out / "features" / f"{tag}_{unit}_{split}_{k}.npz",
                      lambda: extract_features(enc, ds, settings.task, settings.pool, mode=settings.mode,
                                               device=device), task=settings.task)

    tr, te = feats(encoder, "encoder", "train", train_set), feats(encoder, "encoder", "test", test_set)
    n_classes = _n_classes(class_names, tr["labels"], te["labels"])
    sel = lambda d: {"features": [d["features"][m] for m in wanted], "labels": d["labels"],  # noqa: E731
                     "names": [d["names"][m] for m in wanted]}
    models: dict[str, Any] = {"encoder": probe_features(sel(tr), sel(te), n_classes, settings,
                                                        label_efficiency=label_efficiency)}
    if baselines:
        import torch

        torch.manual_seed(12345)
        random_enc = Encoder(cfg.model).eval()
        rtr, rte = feats(random_enc, "random", "train", train_set), feats(random_enc, "random", "test", test_set)
        models["random-init"] = probe_features(sel(rtr), sel(rte), n_classes, settings)
        pool = "mean" if settings.pool == "flatten" else settings.pool
        mk = _cache_key([Path(data_path).resolve(), split_scheme])
        mtr = cached(out / "features" / f"logmel_{settings.task}_{pool}_train_{mk}.npz",
                     lambda: log_mel_features(train_set, settings.task, pool))
        mte = cached(out / "features" / f"logmel_{settings.task}_{pool}_test_{mk}.npz",
                     lambda: log_mel_features(test_set, settings.task, pool))
        models["log-mel"] = probe_features(mtr, mte, n_classes, settings)

    weights = {f"{model}/{name}": entry.pop("_weights") for model, res in models.items() for name, entry in res.items()}
    import io

    buf = io.BytesIO()
    np.savez(buf, **weights)
    atomic_write_bytes(out / f"weights_{settings.task}.npz", buf.getvalue())
    result = {"task": settings.task, "run": str(run_dir), "data": str(data_path), "settings": settings.__dict__,
              "split_scheme": split_scheme, "classes": class_names or [str(i) for i in range(n_classes)],
              "chance": 1.0 / n_classes, "results": models}
    atomic_write_json(out / f"probe_{settings.task}.json", result)
    atomic_write_text(out / f"probe_{settings.task}.md", markdown_table(result))
    return result


def _n_classes(names: Sequence[str] | None, *labels: np.ndarray) -> int:
    top = max(int(l.max()) for l in labels if len(l)) + 1
    return max(top, len(names)) if names else top


def markdown_table(result: dict[str, Any]) -> str:
    lines = [f"### {result['task']} probe ({result['settings']['seeds']} seeds, chance {100 * result['chance']:.1f}%)", "",
             "| model | output | accuracy % | macro-F1 % | majority % | n test |", "|---|---|---|---|---|---|"]
    for model, res in result["results"].items():
        for name, e in res.items():
            lines.append(f"| {model} | {name} | {100 * e['accuracy_mean']:.2f} ± {100 * e['accuracy_std']:.2f} | "
                         f"{100 * e['macro_f1_mean']:.2f} ± {100 * e['macro_f1_std']:.2f} | {100 * e['majority']:.1f} | "
                         f"{e['n_test']} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("probe", help="linear probes on a frozen encoder (phone, speaker, syllable, vowel, consonant)")
    p.add_argument("--run", required=True, help="run directory of a trained encoder")
    p.add_argument("--data", required=True, help="dataset with the task's labels")
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--module", default="all", help="module index or 'all' (default)")
    p.add_argument("--mode", choices=["mean", "sample"], default="mean")
    p.add_argument("--bias", action=argparse.BooleanOptionalAction, default=True,
                   help="linear head with or without bias (default: with)")
    p.add_argument("--pool", choices=["mean", "max", "flatten", "none"], default=None,
                   help="time pooling (default: none for phones, mean otherwise)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--standardize", action="store_true", help="z-score features with train statistics first")
    p.add_argument("--baselines", action="store_true", help="add random-init encoder and log-mel rows")
    p.add_argument("--label-efficiency", action="store_true",
                   help="also train on 1, 2, 4, ..., 128 labelled items per class")
    p.add_argument("--split-scheme", choices=["reference", "leakage_free"], default="reference")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_probe)


def _cmd_probe(args: Any) -> int:
    pool = args.pool or ("none" if args.task == "phone" else "mean")
    settings = ProbeSettings(task=args.task, mode=args.mode, bias=args.bias, pool=pool, seeds=args.seeds,
                             epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, standardize=args.standardize)
    if args.module == "all":
        modules = None
    else:
        try:
            modules = [int(args.module)]
        except ValueError:
            raise UserError(f"--module {args.module!r}: pass a module index or 'all'") from None
    result = run_probe(args.run, args.data, args.out, settings, modules=modules, baselines=args.baselines,
                       label_efficiency=DEFAULT_EFFICIENCY if args.label_efficiency else (),
                       split_scheme=args.split_scheme, device=args.device)
    print(markdown_table(result), end="")
    print(f"-> {Path(args.out) / f'probe_{args.task}.json'}")
    return 0


__all__ = ["ProbeSettings", "run_probe", "extract_features", "train_linear", "evaluate", "align_to_label_frames",
           "probe_features", "markdown_table"]
