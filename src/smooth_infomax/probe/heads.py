"""Linear probe heads: multinomial logistic regression with Adam, mini-batched, and the metrics.

:func:`train_heads` trains many heads in one go: every (feature matrix, seed) pair of a task, e.g. all
modules of a model, its random-init twin and log-mel, for every seed. Each head follows exactly the
single-head protocol of :func:`train_linear` (initialisation ``torch.manual_seed(seed)`` then
``nn.Linear(D, K)``; shuffling with ``torch.Generator().manual_seed(seed)``; Adam per parameter element), so
the numbers equal separate training up to float rounding; the heads are stacked into one batched matmul
(feature matrices zero-padded to the widest; zero inputs get zero gradients, so padding changes nothing).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn


def _standardizer(x: np.ndarray, standardize: bool) -> tuple[np.ndarray, np.ndarray]:
    if standardize:
        return x.mean(0), x.std(0) + 1e-8
    return np.zeros(x.shape[1], dtype=np.float32), np.ones(x.shape[1], dtype=np.float32)


def train_heads(features: Sequence[np.ndarray], y: np.ndarray, n_classes: int, seeds: Sequence[int], *,
                rows: Optional[Sequence[np.ndarray]] = None, bias: bool = True, epochs: int = 50, lr: float = 1e-3,
                batch_size: int = 64, weight_decay: float = 0.0,
                standardize: bool = False) -> list[list[dict[str, Any]]]:
    """Train one head per (feature matrix f, seed s); returns ``heads[f][s]`` = {weight (K, D_f), bias (K,),
    mean (D_f,), std (D_f,)}.

    features: F matrices (N, D_f) of the same N items; y: (N,) labels. rows: per seed the training rows (all
    of equal length; default all N), e.g. the label-efficiency subsets; standardisation statistics come
    from those rows.
    """
    F, S = len(features), len(seeds)
    n_all = len(y)
    shared = rows is None
    rows = [np.arange(n_all)] * S if rows is None else [np.asarray(r, dtype=np.int64) for r in rows]
    n = len(rows[0])
    if any(len(r) != n for r in rows):
        raise ValueError("train_heads needs the same number of training rows for every seed")
    D = max(int(x.shape[1]) for x in features)
    # standardised inputs, zero-padded to D, item-major so that a batch is one row gather: one (N, F, D) tensor
    # shared by every seed, or per seed its own rows (with their own statistics)
    stats = [[_standardizer(x[r], standardize) for x in features] for r in (rows[:1] if shared else rows)]
    Xs = torch.zeros(len(stats), n_all if shared else n, F, D)
    for s, per_f in enumerate(stats):
        for f, (x, (m, sd)) in enumerate(zip(features, per_f)):
            part = x if shared else x[rows[s]]
            Xs[s, :, f, : x.shape[1]] = torch.from_numpy(((part - m) / sd).astype(np.float32))
    Y = torch.from_numpy(np.asarray(y, dtype=np.int64))
    Ys = torch.stack([Y[torch.from_numpy(r)] for r in rows]) if not shared else None
    # heads in (seed, feature) order: weights (G, D, K) for one batched matmul, G = S * F
    W = torch.zeros(S, F, D, n_classes)
    B = torch.zeros(S, F, 1, n_classes)
    for f, x in enumerate(features):
        for s, seed in enumerate(seeds):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed))
                head = nn.Linear(x.shape[1], n_classes, bias=bias)
            W[s, f, : x.shape[1]] = head.weight.detach().T
            if bias:
                B[s, f, 0] = head.bias.detach()
    W = W.reshape(S * F, D, n_classes).requires_grad_()
    B = B.reshape(S * F, 1, n_classes).requires_grad_(bias)
    opt = torch.optim.Adam([W, B] if bias else [W], lr=lr, weight_decay=weight_decay)
    gens = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
    flat = Xs.reshape(-1, F, D)  # (len(stats) * rows, F, D)
    offsets = torch.arange(S)[:, None] * (0 if shared else n)
    for _ in range(epochs):
        perms = [torch.randperm(n, generator=g) for g in gens]
        for start in range(0, n, batch_size):
            pos = torch.stack([p[start:start + batch_size] for p in perms])  # (S, b) positions in the rows
            b = pos.shape[1]
            xb = flat.index_select(0, (pos + offsets).reshape(-1)).view(S, b, F, D).transpose(1, 2)
            xb = xb.reshape(S * F, b, D)
            yb = Y[pos] if shared else torch.gather(Ys, 1, pos)  # (S, b)
            logits = torch.baddbmm(B, xb, W) if bias else torch.bmm(xb, W)
            target = yb.unsqueeze(1).expand(S, F, b).reshape(-1)
            # the sum of every head's batch-mean loss: each head gets exactly its own gradient
            loss = nn.functional.cross_entropy(logits.reshape(-1, n_classes), target, reduction="sum") / b
            opt.zero_grad()
            loss.backward()
            opt.step()
    Wf = W.detach().reshape(S, F, D, n_classes)
    Bf = B.detach().reshape(S, F, n_classes)
    heads: list[list[dict[str, Any]]] = []
    for f, x in enumerate(features):
        d = x.shape[1]
        heads.append([{"weight": Wf[s, f, :d].T.numpy().copy(),
                       "bias": Bf[s, f].numpy().copy() if bias else np.zeros(n_classes, dtype=np.float32),
                       "mean": stats[0 if shared else s][f][0], "std": stats[0 if shared else s][f][1]}
                      for s in range(S)])
    return heads


def train_linear(x: np.ndarray, y: np.ndarray, n_classes: int, *, bias: bool = True, epochs: int = 50,
                 lr: float = 1e-3, batch_size: int = 64, weight_decay: float = 0.0, seed: int = 0,
                 standardize: bool = False) -> dict[str, Any]:
    """One multinomial logistic-regression head (x (N, D), y (N,)); returns weights and the preprocessing."""
    return train_heads([x], y, n_classes, [seed], bias=bias, epochs=epochs, lr=lr, batch_size=batch_size,
                       weight_decay=weight_decay, standardize=standardize)[0][0]


def predict(model: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """Class predictions (N,) of a head for features x (N, D)."""
    logits = ((x - model["mean"]) / model["std"]) @ model["weight"].T + model["bias"]
    return logits.argmax(axis=1)


def evaluate(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, Any]:
    """Accuracy over items, macro-F1 over the classes present, the confusion matrix and the test size."""
    conf = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(conf, (y_true, y_pred), 1)
    tp = np.diag(conf).astype(float)
    precision = tp / np.maximum(conf.sum(0), 1)
    recall = tp / np.maximum(conf.sum(1), 1)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    present = conf.sum(1) > 0
    return {"accuracy": float(tp.sum() / max(1, conf.sum())),
            "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
            "confusion": conf.tolist(), "n_test": int(conf.sum())}


def subsample_per_class(y: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of at most ``per_class`` items of every class (a seeded draw)."""
    rng = np.random.default_rng(seed)
    idx = [rng.permutation(np.flatnonzero(y == c))[:per_class] for c in np.unique(y)]
    return np.sort(np.concatenate(idx))


__all__ = ["train_heads", "train_linear", "predict", "evaluate", "subsample_per_class"]
