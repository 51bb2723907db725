"""ABX: the fast batched implementation against a slow literal one, and its behaviour on constructed data."""

import itertools
import math
from collections import defaultdict

import numpy as np
import pytest
import torch

from smooth_infomax.abx.items import context_ids, item_features, limit_cells, phone_items, silence_ids
from smooth_infomax.abx.metric import abx_error, angular_distances, dtw_path_mean, pair_distances

# ----------------------------------------------------------------------------------------------------
# The slow literal implementation (plain Python, one triplet at a time)
# ----------------------------------------------------------------------------------------------------


def literal_angle(u, v):
    nu, nv = math.sqrt(sum(a * a for a in u)), math.sqrt(sum(b * b for b in v))
    if nu == 0 or nv == 0:
        return 0.5
    c = sum(a * b for a, b in zip(u, v)) / (nu * nv)
    return math.acos(max(-1.0, min(1.0, c))) / math.pi


def literal_dtw(x, y):
    """Minimum summed cost, then backtrack (diagonal, left, up on ties) to count the path's cells."""
    n, m = len(x), len(y)
    d = [[literal_angle(x[i], y[j]) for j in range(m)] for i in range(n)]
    cost = [[0.0] * m for _ in range(n)]
    for i in range(n):
        for j in range(m):
            if i == 0 and j == 0:
                cost[i][j] = d[0][0]
            elif i == 0:
                cost[i][j] = d[i][j] + cost[i][j - 1]
            elif j == 0:
                cost[i][j] = d[i][j] + cost[i - 1][j]
            else:
                cost[i][j] = d[i][j] + min(cost[i - 1][j - 1], cost[i][j - 1], cost[i - 1][j])
    i, j, steps = n - 1, m - 1, 1
    while i > 0 and j > 0:
        diag, left, up = cost[i - 1][j - 1], cost[i][j - 1], cost[i - 1][j]
        if diag <= left and diag <= up:
            i, j = i - 1, j - 1
        elif left <= up:
            j -= 1
        else:
            i -= 1
        steps += 1
    steps += i + j
    return cost[n - 1][m - 1] / steps


def literal_abx(feats, phone, context, speaker):
    """Enumerate every triplet, score cells, average contexts -> speakers -> phone pairs."""
    dist = {}

    def d(i, j):
        if (i, j) not in dist:
            dist[(i, j)] = literal_dtw(feats[i].tolist(), feats[j].tolist())
        return dist[(i, j)]

    def err(a, b, x):
        dax, dbx = d(a, x), d(b, x)
        return 1.0 if dax > dbx else 0.5 if dax == dbx else 0.0

    n = len(phone)
    within, across = defaultdict(list), defaultdict(list)
    for a, b, x in itertools.product(range(n), repeat=3):
        if context[a] != context[b] or context[a] != context[x] or phone[a] == phone[b] or phone[x] != phone[a]:
            continue
        if speaker[a] != speaker[b]:
            continue
        if speaker[x] == speaker[a] and x != a:
            within[(context[a], phone[a], phone[b], speaker[a])].append(err(a, b, x))
        elif speaker[x] != speaker[a]:
            across[(context[a], phone[a], phone[b], speaker[a], speaker[x])].append(err(a, b, x))

    def reduce(cells):
        level = defaultdict(list)
        for key, errs in cells.items():
            level[key[1:]].append(sum(errs) / len(errs))  # contexts out
        pairs = defaultdict(list)
        for key, vals in level.items():
            pairs[key[:2]].append(sum(vals) / len(vals))  # speakers out
        if not pairs:
            return None
        return sum(sum(v) / len(v) for v in pairs.values()) / len(pairs)  # phone pairs out

    return reduce(within), reduce(across)


def random_items(rng, n, dim=3, n_phones=3, n_contexts=2, n_speakers=2, max_len=5):
    feats = [rng.normal(size=(int(rng.integers(1, max_len + 1)), dim)).astype(np.float32) for _ in range(n)]
    return (feats, rng.integers(0, n_phones, n), rng.integers(0, n_contexts, n), rng.integers(0, n_speakers, n))


# ----------------------------------------------------------------------------------------------------


def test_dtw_matches_the_literal_one_and_ignores_padding():
    rng = np.random.default_rng(0)
    pairs = [(rng.normal(size=(int(rng.integers(1, 7)), 4)), rng.normal(size=(int(rng.integers(1, 7)), 4)))
             for _ in range(30)]
    N, M = max(len(x) for x, _ in pairs), max(len(y) for _, y in pairs)
    X, Y = np.zeros((30, N, 4)), np.zeros((30, M, 4))
    for k, (x, y) in enumerate(pairs):
        X[k, : len(x)], Y[k, : len(y)] = x, y
    dist = angular_distances(torch.from_numpy(X), torch.from_numpy(Y))
    fast = dtw_path_mean(dist, torch.tensor([len(x) for x, _ in pairs]), torch.tensor([len(y) for _, y in pairs]))
    slow = [literal_dtw(x.tolist(), y.tolist()) for x, y in pairs]
    np.testing.assert_allclose(fast.numpy(), slow, rtol=1e-9, atol=1e-12)
    # a distance is symmetric and 0 to itself
    feats = [x for x, _ in pairs[:5]]
    d = pair_distances(feats, np.array([[0, 1], [1, 0], [2, 2]]))
    assert d[0] == pytest.approx(d[1]) and d[2] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_abx_agrees_with_the_literal_implementation(seed):
    rng = np.random.default_rng(seed)
    feats, phone, context, speaker = random_items(rng, 26)
    fast = abx_error(feats, phone, context, speaker, batch_pairs=7)  # small batches: several length buckets
    within, across = literal_abx(feats, phone.tolist(), context.tolist(), speaker.tolist())
    assert within is not None and across is not None
    assert fast["within"] == pytest.approx(within, abs=1e-9)
    assert fast["across"] == pytest.approx(across, abs=1e-9)


def test_ties_count_half():
    # X is equidistant from A and B (identical features): every triplet is a tie
    same = np.ones((2, 3), dtype=np.float32)
    res = abx_error([same] * 4, np.array([0, 0, 1, 1]), np.zeros(4), np.zeros(4))
    assert res["within"] == pytest.approx(0.5) and res["across"] is None


def constructed(rng, kind, n_utts=24, n_phones=5, n_speakers=3, dim=8):
    """Items of 3..8 frames; features a one-hot of the phone plus small noise, or pure noise."""
    feats, phone, context, speaker = [], [], [], []
    for u in range(n_utts):
        for k in range(6):
            p = int(rng.integers(0, n_phones))
            n = int(rng.integers(3, 9))
            if kind == "onehot":
                x = np.zeros((n, dim), dtype=np.float32)
                x[:, p] = 1.0
                x += 0.05 * rng.normal(size=x.shape).astype(np.float32)
            else:
                x = rng.normal(size=(n, dim)).astype(np.float32)
            feats.append(x)
            phone.append(p)
            context.append(k % 2)
            speaker.append(u % n_speakers)
    return feats, np.array(phone), np.array(context), np.array(speaker)


def test_one_hot_features_give_about_zero_error():
    res = abx_error(*constructed(np.random.default_rng(0), "onehot"))
    assert res["within"] < 0.01 and res["across"] < 0.01
    assert res["n_triplets_within"] > 1000 and res["n_triplets_across"] > 1000
    assert set(res["within_by_speaker"]) == {0, 1, 2}


def test_pure_noise_gives_about_fifty_percent():
    res = abx_error(*constructed(np.random.default_rng(1), "noise", n_utts=40))
    assert 0.42 < res["within"] < 0.58 and 0.42 < res["across"] < 0.58


def test_items_from_frame_labels():
    # sil sil b b a a a d sil | -1 breaks the context
    lab = np.array([0, 0, 1, 1, 2, 2, 2, 3, 0, -1, -1, 2, 2, 1, 0])
    items = phone_items([lab], [7], exclude=silence_ids(["sil", "b", "a", "d"]))
    got = list(zip(items.start.tolist(), items.end.tolist(), items.phone.tolist(), items.prev.tolist(),
                   items.next.tolist()))
    assert got == [(2, 4, 1, 0, 2), (4, 7, 2, 1, 3), (7, 8, 3, 2, 0), (13, 14, 1, 2, 0)]
    assert items.speaker.tolist() == [7, 7, 7, 7]
    assert context_ids(items.prev, items.next).tolist() == items.context.tolist()
    frames = np.arange(15 * 2, dtype=np.float32).reshape(15, 2)
    f = item_features([frames], items)
    assert [len(x) for x in f] == [2, 3, 1, 1] and f[1][0].tolist() == [8.0, 9.0]


def test_limit_cells_caps_each_cell_reproducibly():
    labs = [np.array([0, 1, 2, 1, 0] * 4) for _ in range(6)]
    items = phone_items(labs, [0, 0, 0, 1, 1, 1], exclude={0})
    small = limit_cells(items, 3, seed=5)
    keys = list(zip(small.context.tolist(), small.phone.tolist(), small.speaker.tolist()))
    assert max(keys.count(k) for k in set(keys)) == 3
    again = limit_cells(items, 3, seed=5)
    assert small.start.tolist() == again.start.tolist() and small.utt.tolist() == again.utt.tolist()
    assert limit_cells(items, None) is items


def test_group_distances_bunched_and_split_agree_with_pair_distances():
    from smooth_infomax.abx.metric import group_distances, group_matrices, group_pairs

    rng = np.random.default_rng(4)
    feats, phone, context, _ = random_items(rng, 40, n_contexts=3, max_len=6)
    groups, pairs = group_pairs(phone, context)
    ref = group_matrices(groups, pair_distances(feats, pairs))
    for max_entries in (10, 400, 2 ** 24):  # every group split, a few per bunch, all in one bunch
        got = group_distances(feats, groups, batch_pairs=5, max_entries=max_entries)
        for c in groups:
            np.testing.assert_allclose(got[c], ref[c], rtol=1e-9, atol=1e-12)
