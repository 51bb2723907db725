"""The ABX error rate: pure functions on arrays (no files, no models).

Definitions (ZeroSpeech 2017/2021 and Libri-light "within context" phone ABX):

* An **item** is one occurrence of a phone with its left and right neighbours (its *context*) and its speaker;
  its features are the (n, C) frames of the central phone.
* **Distance** between two items: the frame-wise angular distance ``arccos(cos(x_i, y_j)) / pi`` (in [0, 1]),
  averaged along the DTW path: the path minimising the summed distance (steps right, down, diagonal), whose sum
  is divided by the number of cells on it (ties between predecessors: diagonal, then left, then up, as in
  Libri-light's implementation).
* A **triplet** (A, B, X): A and X have the same central phone, B another one, all three the same context.
  Its error is 1 when d(A, X) > d(B, X), 1/2 on a tie, else 0.
* **Within speaker**: A, B, X from one speaker, X != A. **Across speaker**: A and B from one speaker, X from
  another.
* A **cell** is (context, phone of A, phone of B, speaker[s]); its score is the mean error of all its triplets.
  Cells are averaged over contexts, then over speakers (within) or (A/B speaker, X speaker) pairs (across),
  then over the ordered phone pairs (a, b): the reported error rate.

Fast path: distances of all item pairs that share a context are computed in length-bucketed batches (torch,
the DTW vectorised over the pairs of a batch and the anti-diagonals of the cost matrix); triplets then only
index the distance matrix of their context group.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Sequence

import numpy as np
import torch


def angular_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Frame-wise angular distances ``arccos(cos) / pi``: x (B, N, C), y (B, M, C) -> (B, N, M) in [0, 1].

    A zero frame has distance 1/2 to everything (cosine 0)."""
    xn = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    yn = y / y.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    cos = torch.bmm(xn, yn.transpose(1, 2)).clamp(-1.0, 1.0)
    return torch.arccos(cos) / math.pi


def dtw_path_mean(dist: torch.Tensor, n: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Mean frame distance along the DTW path of each pair: dist (B, N, M) zero-padded, n / m (B,) the real
    lengths (>= 1) -> (B,). Cells beyond (n, m) never feed cells inside, so padding does not change results.

    The recursion runs over anti-diagonals d = i + j of the 1-based cost matrix, keeping the last two
    diagonals as (B, N + 1) rows indexed by i (diagonal (i-1, j-1) and up (i-1, j) are at i - 1, left (i, j-1)
    at i): every step is a few element-wise operations on the whole batch."""
    B, N, M = dist.shape
    dev, dt = dist.device, dist.dtype
    n, m = n.to(dev).long(), m.to(dev).long()
    inf = torch.tensor(float("inf"), dtype=dt, device=dev)
    ii = torch.arange(1, N + 1, device=dev)
    prev2 = torch.full((B, N + 1), float("inf"), dtype=dt, device=dev)  # diagonal 0: only (0, 0) = 0
    prev2[:, 0] = 0.0
    prev1 = torch.full((B, N + 1), float("inf"), dtype=dt, device=dev)  # diagonal 1: (0, 1), (1, 0)
    len2 = torch.zeros((B, N + 1), dtype=dt, device=dev)
    len1 = torch.zeros((B, N + 1), dtype=dt, device=dev)
    out = torch.zeros(B, dtype=dt, device=dev)
    rows = torch.arange(B, device=dev)
    target = n + m
    for d in range(2, N + M + 1):
        j = d - ii
        valid = (j >= 1) & (j <= M)
        local = dist[:, ii - 1, (j - 1).clamp(0, M - 1)]  # (B, N): cell (i, d - i)
        best, blen = prev2[:, :-1], len2[:, :-1]  # diagonal predecessor first: it wins ties
        left, llen = prev1[:, 1:], len1[:, 1:]
        take = left < best
        best, blen = torch.where(take, left, best), torch.where(take, llen, blen)
        up, ulen = prev1[:, :-1], len1[:, :-1]
        take = up < best
        best, blen = torch.where(take, up, best), torch.where(take, ulen, blen)
        cur = torch.full((B, N + 1), float("inf"), dtype=dt, device=dev)
        cur[:, 1:] = torch.where(valid, best + local, inf)
        curlen = torch.zeros((B, N + 1), dtype=dt, device=dev)
        curlen[:, 1:] = blen + 1.0
        done = target == d
        if bool(done.any()):
            r = rows[done]
            out[r] = cur[r, n[r]] / curlen[r, n[r]]
        prev2, len2, prev1, len1 = prev1, len1, cur, curlen
    return out


def pair_distances(feats: Sequence[np.ndarray], pairs: np.ndarray, *, batch_pairs: int = 2048,
                   device: str = "cpu") -> np.ndarray:
    """DTW-averaged angular distance of every pair ``(i, j)`` of items: feats[i] (n_i, C); pairs (P, 2) ->
    (P,) float64. Frames are unit-normalised once (float64: arccos is steep near cos = 1, where float32
    rounding would show as distance); pairs are sorted by their lengths and computed in batches of at most
    ``batch_pairs``, each batch gathering its padded (B, n, C) frames from the one frame table."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    out = np.zeros(len(pairs), dtype=np.float64)
    if not len(pairs):
        return out
    lens = np.array([len(f) for f in feats], dtype=np.int64)
    if (lens[np.unique(pairs)] < 1).any():
        raise ValueError("every item needs at least one frame")
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    table = torch.from_numpy(np.concatenate([np.asarray(f, dtype=np.float64) for f in feats])).to(device)
    table = table / table.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    order = np.lexsort((lens[pairs[:, 1]], lens[pairs[:, 0]]))
    for s in range(0, len(order), batch_pairs):
        sel = order[s:s + batch_pairs]
        a, b = pairs[sel, 0], pairs[sel, 1]
        N, M = int(lens[a].max()), int(lens[b].max())
        # frame k of item i is row starts[i] + k; padding repeats the last frame (DTW never reads it)
        rows = starts[a][:, None] + np.minimum(np.arange(N)[None, :], lens[a][:, None] - 1)
        cols = starts[b][:, None] + np.minimum(np.arange(M)[None, :], lens[b][:, None] - 1)
        x = table[torch.from_numpy(rows).to(device)]
        y = table[torch.from_numpy(cols).to(device)]
        d = torch.arccos(torch.bmm(x, y.transpose(1, 2)).clamp(-1.0, 1.0)) / math.pi
        res = dtw_path_mean(d, torch.from_numpy(lens[a]).to(device), torch.from_numpy(lens[b]).to(device))
        out[sel] = res.cpu().numpy()
    return out


def triplet_error(d_ax: np.ndarray, d_bx: np.ndarray) -> np.ndarray:
    """Error of triplets from their distances: 1 if d(A,X) > d(B,X), 1/2 on a tie, else 0 (same shapes)."""
    return (d_ax > d_bx).astype(np.float64) + 0.5 * (d_ax == d_bx)


def _context_groups(phone: np.ndarray, context: np.ndarray) -> dict[int, np.ndarray]:
    groups: dict[int, list[int]] = defaultdict(list)
    for k, c in enumerate(context.tolist()):
        groups[int(c)].append(k)
    return {c: np.asarray(v, dtype=np.int64) for c, v in groups.items() if len(set(phone[v].tolist())) > 1}


def group_pairs(phone: np.ndarray, context: np.ndarray) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Context groups with at least two central phones (context id -> item indices) and every item pair
    (i < j by position in the group, groups in order) inside one of them, (P, 2): the distances the ABX scores
    need. :func:`group_matrices` turns the pairs' distances back into one matrix per group."""
    groups = _context_groups(np.asarray(phone), np.asarray(context))
    parts = []
    for idx in groups.values():
        ii, jj = np.triu_indices(len(idx), k=1)
        parts.append(np.stack([idx[ii], idx[jj]], axis=1))
    pairs = np.concatenate(parts) if parts else np.zeros((0, 2), dtype=np.int64)
    return groups, pairs


def group_matrices(groups: dict[int, np.ndarray], dist: np.ndarray) -> dict[int, np.ndarray]:
    """The symmetric (n, n) distance matrix of every group from :func:`group_pairs`' pair distances (P,)."""
    out, pos = {}, 0
    for c, idx in groups.items():
        n = len(idx)
        D = np.zeros((n, n), dtype=np.float64)
        ii, jj = np.triu_indices(n, k=1)
        D[ii, jj] = dist[pos: pos + len(ii)]
        D[jj, ii] = D[ii, jj]
        out[c] = D
        pos += len(ii)
    return out


def group_distances(feats: Sequence[np.ndarray], groups: dict[int, np.ndarray], *, batch_pairs: int = 4096,
                    max_entries: int = 2 ** 24, device: str = "cpu") -> dict[int, np.ndarray]:
    """The (n, n) item distance matrix of every group (as :func:`pair_distances` computes them, faster).

    A group's frames (T_g, C) give one (T_g, T_g) angular distance matrix; every item pair of the group reads
    its block from it, and the DTW runs over length-sorted batches of pairs from several groups at once (groups
    are bunched while their matrices hold at most ``max_entries`` values; a larger group is split into pair
    batches through :func:`pair_distances`)."""
    lens = np.array([len(f) for f in feats], dtype=np.int64)
    out: dict[int, np.ndarray] = {}
    bunch: list[int] = []
    size = 0

    def flush() -> None:
        if bunch:
            out.update(_bunch_distances(feats, lens, {c: groups[c] for c in bunch}, batch_pairs, device))
        bunch.clear()

    for c, idx in groups.items():
        t = int(lens[idx].sum())
        if t * t > max_entries:
            ii, jj = np.triu_indices(len(idx), k=1)
            d = pair_distances(feats, np.stack([idx[ii], idx[jj]], axis=1), batch_pairs=batch_pairs, device=device)
            out[c] = group_matrices({c: idx}, d)[c]
            continue
        if size + t * t > max_entries:
            flush()
            size = 0
        bunch.append(c)
        size += t * t
    flush()
    return out


def _bunch_distances(feats: Sequence[np.ndarray], lens: np.ndarray, groups: dict[int, np.ndarray],
                     batch_pairs: int, device: str) -> dict[int, np.ndarray]:
    flats, offset = [], 0
    desc = []  # per pair: group offset, group frames, first frame of i and j, lengths, group, positions u < v
    for c, idx in groups.items():
        x = torch.from_numpy(np.concatenate([np.asarray(feats[i], dtype=np.float64) for i in idx])).to(device)
        x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        flats.append((torch.arccos((x @ x.T).clamp(-1.0, 1.0)) / math.pi).reshape(-1))
        t = x.shape[0]
        first = np.concatenate([[0], np.cumsum(lens[idx])[:-1]])
        u, v = np.triu_indices(len(idx), k=1)
        desc.append(np.stack([np.full(len(u), offset), np.full(len(u), t), first[u], first[v], lens[idx][u],
                              lens[idx][v], np.full(len(u), c), u, v], axis=1))
        offset += t * t
    table = torch.cat(flats)
    pairs = np.concatenate(desc) if desc else np.zeros((0, 9), dtype=np.int64)
    out = {c: np.zeros((len(idx), len(idx)), dtype=np.float64) for c, idx in groups.items()}
    order = np.lexsort((pairs[:, 5], pairs[:, 4]))
    for s in range(0, len(order), batch_pairs):
        p = pairs[order[s:s + batch_pairs]]
        N, M = int(p[:, 4].max()), int(p[:, 5].max())
        r = p[:, 2:3] + np.minimum(np.arange(N)[None, :], p[:, 4:5] - 1)  # (B, N) frame rows in the group
        q = p[:, 3:4] + np.minimum(np.arange(M)[None, :], p[:, 5:6] - 1)  # (B, M) frame columns
        flat = p[:, 0, None, None] + r[:, :, None] * p[:, 1, None, None] + q[:, None, :]
        d = table[torch.from_numpy(flat).to(device)]
        res = dtw_path_mean(d, torch.from_numpy(p[:, 4]).to(device), torch.from_numpy(p[:, 5]).to(device))
        res = res.cpu().numpy()
        for c in np.unique(p[:, 6]):
            m = p[:, 6] == c
            out[int(c)][p[m, 7], p[m, 8]] = res[m]
            out[int(c)][p[m, 8], p[m, 7]] = res[m]
    return out


def cell_scores(phone: np.ndarray, speaker: np.ndarray, groups: dict[int, np.ndarray],
                matrices: dict[int, np.ndarray]) -> dict[str, list[tuple[Any, ...]]]:
    """Every within and across cell of the item table with its mean error and triplet count.

    groups / matrices: context id -> item indices / their (n, n) distances (:func:`group_pairs`,
    :func:`group_matrices`). Returns ``{"within": [(context, a, b, speaker, error,
    n_triplets)], "across": [(context, a, b, speaker_ab, speaker_x, error, n_triplets)]}``."""
    within: list[tuple[Any, ...]] = []
    across: list[tuple[Any, ...]] = []
    for c, idx in groups.items():
        D = matrices[c]  # (n, n) distances inside the group
        ph, spk = phone[idx], speaker[idx]
        cells: dict[tuple[int, int], np.ndarray] = {}
        for p in np.unique(ph):
            for s in np.unique(spk):
                members = np.flatnonzero((ph == p) & (spk == s))
                if len(members):
                    cells[(int(p), int(s))] = members
        phones = sorted({p for p, _ in cells})
        speakers = sorted({s for _, s in cells})
        for a in phones:
            for b in phones:
                if a == b:
                    continue
                for s in speakers:
                    A, B = cells.get((a, s)), cells.get((b, s))
                    if A is None or B is None:
                        continue
                    if len(A) >= 2:  # within: X from A's cell, X != A
                        d_ax = D[np.ix_(A, A)]  # [A, X]
                        d_bx = D[np.ix_(B, A)]  # [B, X]
                        err = triplet_error(d_ax[:, None, :], d_bx[None, :, :])  # (A, B, X)
                        keep = ~np.eye(len(A), dtype=bool)[:, None, :].repeat(len(B), axis=1)
                        within.append((c, a, b, s, float(err[keep].mean()), int(keep.sum())))
                    for t in speakers:
                        X = cells.get((a, t)) if t != s else None
                        if X is None:
                            continue
                        err = triplet_error(D[np.ix_(A, X)][:, None, :], D[np.ix_(B, X)][None, :, :])
                        across.append((c, a, b, s, t, float(err.mean()), int(err.size)))
    return {"within": within, "across": across}


def _mean_over(rows: list[tuple[Any, ...]], keep: Sequence[int], value: int) -> dict[tuple[Any, ...], float]:
    acc: dict[tuple[Any, ...], list[float]] = defaultdict(list)
    for r in rows:
        acc[tuple(r[k] for k in keep)].append(r[value])
    return {k: float(np.mean(v)) for k, v in acc.items()}


def aggregate(cells: dict[str, list[tuple[Any, ...]]]) -> dict[str, Any]:
    """ABX error rates from cell scores: mean over contexts, then speakers, then ordered phone pairs.

    Returns ``{"within": rate or None, "across": ..., "within_by_speaker": {speaker: rate}, "n_cells",
    "n_triplets"}`` (None when there is no cell)."""
    out: dict[str, Any] = {}
    for kind, spk_cols, value in (("within", (3,), 4), ("across", (3, 4), 5)):
        rows = cells.get(kind, [])
        # contexts out: (a, b, speakers...) -> mean
        by_speakers = _mean_over(rows, (1, 2, *spk_cols), value)
        # speakers out: (a, b) -> mean
        by_pair = _mean_over([(*k, v) for k, v in by_speakers.items()], (0, 1), 2 + len(spk_cols))
        out[kind] = float(np.mean(list(by_pair.values()))) if by_pair else None
        out[f"n_cells_{kind}"] = len(rows)
        out[f"n_triplets_{kind}"] = int(sum(r[-1] for r in rows))
        if kind == "within":
            per_spk = _mean_over([(k[2], k[0], k[1], v) for k, v in by_speakers.items()], (0,), 3)
            out["within_by_speaker"] = {int(k[0]): v for k, v in sorted(per_spk.items())}
    return out


def abx_error(feats: Sequence[np.ndarray], phone: np.ndarray, context: np.ndarray, speaker: np.ndarray, *,
              batch_pairs: int = 4096, device: str = "cpu") -> dict[str, Any]:
    """Within- and across-speaker ABX error of items: feats[i] (n_i, C) frames of item i; phone, context
    (an id per distinct (previous, next) pair) and speaker (N,) ints. See :func:`aggregate` for the result."""
    phone, context, speaker = (np.asarray(v, dtype=np.int64) for v in (phone, context, speaker))
    if not (len(feats) == len(phone) == len(context) == len(speaker)):
        raise ValueError("feats, phone, context and speaker need one entry per item")
    groups, pairs = group_pairs(phone, context)
    matrices = group_distances(feats, groups, batch_pairs=batch_pairs, device=device)
    result = aggregate(cell_scores(phone, speaker, groups, matrices))
    result["n_items"] = int(len(phone))
    result["n_pairs"] = int(len(pairs))
    return result


__all__ = ["angular_distances", "dtw_path_mean", "pair_distances", "triplet_error", "group_pairs", "group_matrices",
           "group_distances", "cell_scores", "aggregate", "abx_error"]
