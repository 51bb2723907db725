"""The one feature-extraction function: a feature source over a dataset, once, pooled, optionally cached.

Rules (shared by probes, analysis, decoders, latent tools, ABX and the pipeline):

* **Seeding**: posterior samples of item ``i`` (its dataset index) come from a ``torch.Generator`` seeded
  with ``(seed, i)``, so they do not depend on the batch size or on which items share a batch (for sources
  without ``padding_exact``, the global RNG is seeded with ``seed`` inside a forked RNG state).
* **Batching**: sources with ``padding_exact = True`` (ours, log-mel) take variable-length items zero-padded
  to one batch together with their ``lengths`` and give every item exactly the frames it gets alone; items
  are sorted by length and a batch holds at most ``batch_size`` items and ``max_batch_samples`` padded
  samples. Other sources batch items of equal length only.
* **Label frames** (``pool="label-frames"``, phones): see :func:`align_to_label_frames`. Label frames beyond
  the last aligned frame of any selected output, and frames labelled -1, are dropped.
* **Cache** (``cache_dir``): one ``.npz`` (``allow_pickle=False``) per source fingerprint, dataset identity
  and settings (not the batch size); a retrained run re-encodes because its fingerprint changes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch

from ..checkpoint import atomic_write_bytes, open_npz
from ..errors import UserError
from .sources import LABEL_FRAME, MODES, FeatureSource, as_source

POOLS = ("mean", "max", "flatten", "none", "label-frames")
CACHE_VERSION = 1
CHUNK_ITEMS = 1024


@dataclass
class FeatureSet:
    """Features of N dataset items for the selected outputs of one source.

    features: per output, ``(N, C_m)`` float32 (pools mean / max; flatten gives ``(N, T_m * C_m)``), a list of
        N ``(T_i, C_m)`` arrays (pool ``none``) or ``(F, C_m)`` label frames of all items (``label-frames``).
    labels: every integer label the items carry, each ``(N,)``; for ``label-frames`` each ``(F,)``: ``phones``,
        ``item`` (row of the item) and the item labels repeated per frame.
    frame_labels: frame-level labels per item (e.g. ``phones``: N arrays ``(F_i,)``), other pools only.
    mu / logvar: like ``features`` for ``mode="stats"`` of a stochastic source (logvar None where absent).
    """

    source: str
    names: list[str]
    hops: list[int]
    dims: list[int]
    pool: str
    mode: str
    stochastic: bool
    features: list[Any]
    labels: dict[str, np.ndarray]
    frame_labels: dict[str, list[np.ndarray]] = field(default_factory=dict)
    items: list[str] = field(default_factory=list)
    indices: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    label_names: dict[str, list[str]] = field(default_factory=dict)
    mu: Optional[list[Any]] = None
    logvar: Optional[list[Any]] = None

    def index(self, output: Union[int, str]) -> int:
        if isinstance(output, str):
            if output not in self.names:
                raise UserError(f"output {output!r} is not among {', '.join(self.names)}")
            return self.names.index(output)
        if not -len(self.names) <= int(output) < len(self.names):
            raise UserError(f"output {output} does not exist; the source has outputs 0..{len(self.names) - 1} "
                            f"({', '.join(self.names)})")
        return int(output) % len(self.names)

    def select(self, outputs: Sequence[Union[int, str]]) -> FeatureSet:
        """The same set restricted to ``outputs`` (indices or names)."""
        idx = [self.index(o) for o in outputs]
        pick = lambda xs: None if xs is None else [xs[i] for i in idx]  # noqa: E731
        return replace(self, names=pick(self.names), hops=pick(self.hops), dims=pick(self.dims),
                       features=pick(self.features), mu=pick(self.mu), logvar=pick(self.logvar))


def align_to_label_frames(feats: np.ndarray, hop: int, n_labels: int) -> np.ndarray:
    """Map encoder frames (T, C) with hop ``hop`` samples onto ``n_labels`` 10 ms label frames -> (n, C).

    Encoder frame t starts at sample t*hop; label frame f covers samples [160 f, 160 f + 160). Each label frame
    takes the mean of the encoder frames that start inside it (n = label frames receiving at least one); when
    the hop exceeds 160 samples, label frame f takes encoder frame floor(160 f / hop) (while it exists)."""
    T = feats.shape[0]
    if hop == LABEL_FRAME:
        return feats[: min(n_labels, T)].astype(np.float32)
    if hop < LABEL_FRAME:
        owner = (np.arange(T) * hop) // LABEL_FRAME  # label frame each encoder frame starts in (non-decreasing)
        n = min(n_labels, int(owner[-1]) + 1) if T else 0
        if n == 0:
            return np.zeros((0, feats.shape[1]), dtype=np.float32)
        # every label frame up to owner[-1] holds a frame start (hop < 160): sum each run of equal owners
        starts = np.searchsorted(owner, np.arange(n))
        ends = np.append(starts[1:], np.searchsorted(owner, n))
        sums = np.add.reduceat(feats[: ends[-1]].astype(np.float32), starts, axis=0)
        return sums / (ends - starts).astype(np.float32)[:, None]
    idx = (np.arange(n_labels) * LABEL_FRAME) // hop
    idx = idx[idx < T]
    return feats[idx].astype(np.float32)


def standardize(x: np.ndarray, mean: Optional[np.ndarray] = None,
                std: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-dimension z-scores of x (N, D) with the given (or x's own) statistics -> (z, mean, std)."""
    mean = x.mean(0) if mean is None else mean
    std = x.std(0) + 1e-8 if std is None else std
    return ((x - mean) / std).astype(np.float32), mean, std


def dataset_identity(dataset: Any) -> str:
    """A short hash of what a dataset holds: its class, length, plain settings and its item list."""
    parts: list[Any] = [f"{type(dataset).__module__}.{type(dataset).__qualname__}", len(dataset)]
    for key, value in sorted(vars(dataset).items()):
        if isinstance(value, (str, int, float, bool, Path)) or value is None:
            parts.append([key, str(value)])
    h = hashlib.sha256(json.dumps(parts).encode())
    items = getattr(dataset, "items", None)
    if isinstance(items, (list, tuple)):
        for it in items:
            h.update(repr((getattr(it, "path", it), getattr(it, "frames", None), getattr(it, "key", None))).encode())
    return h.hexdigest()[:16]


def _item_seed(seed: int, salt: int, index: int) -> int:
    """The posterior-noise seed of item ``index`` of a dataset: independent of the batch it is encoded in, and
    different between datasets (``salt`` = the dataset's identity), so that train item i and test item i never
    share their noise (a shared draw would correlate the probes' train and test features)."""
    return (int(seed) * 1_000_003 + int(salt) * 7_919 + int(index)) % (2 ** 62)


def _plan_batches(lengths: Sequence[int], batch_size: int, max_samples: int, padded: bool) -> list[list[int]]:
    """Positions grouped into batches: by decreasing length (padded) or by equal length."""
    order = sorted(range(len(lengths)), key=lambda j: (-lengths[j], j))
    batches: list[list[int]] = []
    for j in order:
        last = batches[-1] if batches else None
        fits = (last is not None and len(last) < batch_size
                and (padded or lengths[last[0]] == lengths[j])
                and (len(last) + 1) * lengths[last[0]] <= max(max_samples, lengths[last[0]]))
        if fits:
            last.append(j)
        else:
            batches.append([j])
    return batches


def _pool_item(x: np.ndarray, pool: str) -> np.ndarray:
    if pool == "mean":
        return x.mean(axis=0)
    if pool == "max":
        return x.max(axis=0)
    if pool == "flatten":
        return x.reshape(-1)
    return x


def _as_int(value: Any) -> Optional[int]:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point():
        return int(value)
    return None


def _frame_label(value: Any) -> Optional[np.ndarray]:
    if isinstance(value, (torch.Tensor, np.ndarray)) and np.ndim(value) >= 1:
        return np.asarray(value).reshape(-1).astype(np.int64)
    return None


def _select(source: FeatureSource, outputs: Optional[Sequence[Union[int, str]]]) -> list[int]:
    names = list(source.output_names)
    if outputs is None:
        return list(range(len(names)))
    sel = []
    for o in outputs:
        if isinstance(o, str) and o in names:
            sel.append(names.index(o))
        elif not isinstance(o, str) and -len(names) <= int(o) < len(names):
            sel.append(int(o) % len(names))
        else:
            raise UserError(f"output {o!r} does not exist; {source.name} has outputs 0..{len(names) - 1} "
                            f"({', '.join(names)})")
    return sel


def extract_features(source: Any, dataset: Any, *, outputs: Optional[Sequence[Union[int, str]]] = None,
                     mode: str = "mean", pool: str = "mean", seed: int = 0, batch_size: int = 32,
                     device: str = "cpu", indices: Optional[Sequence[int]] = None,
                     cache_dir: Optional[Union[str, os.PathLike[str]]] = None, max_batch_samples: int = 32 * 20480,
                     progress: Optional[Callable[[int, int], None]] = None, tag: Optional[str] = None) -> FeatureSet:
    """Encode ``dataset`` items (all, or ``indices``) once with ``source`` (eval, no_grad) and pool them.

    source: a FeatureSource or an Encoder. outputs: indices or names (default all). mode: ``mean``,
    ``sample`` or ``stats`` (samples plus mu / logvar; deterministic sources give their features for every
    mode). pool: ``mean`` / ``max`` / ``flatten`` over each item's frames, ``none`` (frames per item) or
    ``label-frames`` (phones, 10 ms label frames). progress(done, total) is called after every batch.
    cache_dir: keep / reuse the result as ``<tag or source name>_<pool>_<mode>_<key>.npz`` there.
    """
    return extract_pooled(source, dataset, [pool], outputs=outputs, mode=mode, seed=seed, batch_size=batch_size,
                          device=device, indices=indices, cache_dir=cache_dir, max_batch_samples=max_batch_samples,
                          progress=progress, tag=tag)[pool]


def extract_pooled(source: Any, dataset: Any, pools: Sequence[str], *,
                   outputs: Optional[Sequence[Union[int, str]]] = None, mode: str = "mean", seed: int = 0,
                   batch_size: int = 32, device: str = "cpu", indices: Optional[Sequence[int]] = None,
                   cache_dir: Optional[Union[str, os.PathLike[str]]] = None, max_batch_samples: int = 32 * 20480,
                   progress: Optional[Callable[[int, int], None]] = None,
                   tag: Optional[str] = None) -> dict[str, FeatureSet]:
    """:func:`extract_features` for several pools from one encoding: ``{pool: FeatureSet}``; each pool is cached
    on its own (so e.g. a phone probe's encoding also leaves the mean-pooled set a speaker probe reads)."""
    source = as_source(source, sample_rate=int(getattr(dataset, "sample_rate", 16000)))
    pools = list(dict.fromkeys(pools))
    for pool in pools:
        if pool not in POOLS:
            raise UserError(f"pool {pool!r}: choose {', '.join(POOLS)}")
    if mode not in MODES:
        raise UserError(f"mode {mode!r}: choose {', '.join(MODES)}")
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    sel = _select(source, outputs)
    idx = np.arange(len(dataset), dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64)
    paths: dict[str, Path] = {}
    if cache_dir is not None:
        base = [CACHE_VERSION, source.fingerprint(), dataset_identity(dataset), sel, mode, int(seed),
                hashlib.sha256(idx.tobytes()).hexdigest()]
        for pool in pools:
            key = hashlib.sha256(json.dumps(base + [pool]).encode()).hexdigest()[:16]
            paths[pool] = Path(cache_dir) / f"{_safe(tag or source.name)}_{pool}_{mode}_{key}.npz"
    found = {pool: load_feature_set(paths[pool]) for pool in pools if pool in paths and paths[pool].exists()}
    missing = [pool for pool in pools if pool not in found]
    if not missing:
        return found
    if len(idx) == 0:
        raise UserError("the dataset is empty: nothing to encode; check --data with 'smooth-infomax data info'")
    encode_pool = missing[0] if len(missing) == 1 else "none"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        fs = _extract(source, dataset, idx, sel, mode, encode_pool, int(seed), batch_size, device, max_batch_samples,
                      progress)
    for pool in missing:
        found[pool] = fs if pool == encode_pool else repool(fs, pool)
        if pool in paths:
            save_feature_set(found[pool], paths[pool])
    return {pool: found[pool] for pool in pools}


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:40] or "source"


def _extract(source: Any, dataset: Any, idx: np.ndarray, sel: list[int], mode: str, pool: str, seed: int,
             batch_size: int, device: str, max_samples: int, progress: Any) -> FeatureSet:
    dev = torch.device(device)
    if hasattr(source, "to"):
        source.to(dev)
    exact = bool(getattr(source, "padding_exact", False))
    sampling = source.stochastic and mode in ("sample", "stats")
    salt = int(dataset_identity(dataset), 16) % (2 ** 40) if sampling else 0
    enc_mode = mode if source.stochastic else "mean"
    kinds = ("z", "mu", "logvar") if mode == "stats" and source.stochastic else ("z",)
    per: dict[str, list[list[np.ndarray]]] = {k: [[] for _ in sel] for k in kinds}
    item_labels: list[dict[str, int]] = []
    frame_labels: list[dict[str, np.ndarray]] = []
    ids: list[str] = []
    rows: list[int] = []
    done = 0
    for c0 in range(0, len(idx), CHUNK_ITEMS):
        chunk = [dataset[int(i)] for i in idx[c0:c0 + CHUNK_ITEMS]]
        lengths = [int(u.wave.shape[-1]) for u in chunk]
        for u, n in zip(chunk, lengths):
            counts = source.frame_counts(n)
            if min(counts[i] for i in sel) < 1:
                raise UserError(f"item {u.path} has {n} samples, too short for {source.name} (frames per output "
                                f"{counts}); drop it or use longer clips")
        results: list[Optional[dict[str, list[np.ndarray]]]] = [None] * len(chunk)
        for batch in _plan_batches(lengths, batch_size, max_samples, exact):
            T = max(lengths[j] for j in batch)
            wave = torch.zeros(len(batch), 1, T)
            for b, j in enumerate(batch):
                wave[b, 0, :lengths[j]] = chunk[j].wave.reshape(-1)
            wave = wave.to(dev)
            equal = len({lengths[j] for j in batch}) == 1
            with torch.no_grad():
                if exact and (sampling or not equal):
                    gens = [torch.Generator(device=dev).manual_seed(_item_seed(seed, salt, idx[c0 + j]))
                            for j in batch] \
                        if sampling else None
                    outs = source.encode(wave, enc_mode, lengths=[lengths[j] for j in batch], generators=gens)
                else:
                    outs = source.encode(wave, enc_mode)
            for b, j in enumerate(batch):
                counts = source.frame_counts(lengths[j])
                res: dict[str, list[np.ndarray]] = {k: [] for k in kinds}
                for m in sel:
                    out = outs[m]
                    for k in kinds:
                        t = out[k] if isinstance(out, dict) else out
                        n_frames = counts[m] if exact or not equal else t.shape[1]
                        res[k].append(None if t is None else t[b, :n_frames].float().cpu().numpy())
                results[j] = res
            done += len(batch)
            if progress is not None:
                progress(done, len(idx))
        for j, u in enumerate(chunk):
            ints, frames = {}, {}
            for key, value in u.labels.items():
                v = _as_int(value)
                if v is not None:
                    ints[key] = v
                elif (f := _frame_label(value)) is not None:
                    frames[key] = f
            res = results[j]
            assert res is not None
            pooled, frames, n_rows = _pool_outputs(res, frames, pool, [source.hops[m] for m in sel], u.path)
            for k in kinds:
                for s, a in enumerate(pooled[k]):
                    per[k][s].append(a)
            item_labels.append(ints)
            frame_labels.append(frames)
            ids.append(u.path if not getattr(u, "offset", 0) else f"{u.path}@{u.offset}")
            rows.append(n_rows)
    meta = dict(source=source.name, names=[source.output_names[m] for m in sel],
                hops=[int(source.hops[m]) for m in sel], dims=[int(source.dims[m]) for m in sel], mode=mode,
                stochastic=bool(source.stochastic), items=ids, indices=idx,
                label_names={k: list(v) for k, v in dict(getattr(dataset, "label_names", None) or {}).items()})
    return _assemble(meta, pool, kinds, per, item_labels, frame_labels, rows)


def _pool_outputs(res: dict[str, list[Optional[np.ndarray]]], frames: dict[str, np.ndarray], pool: str,
                  hops: Sequence[int], where: str) -> tuple[dict[str, list[Any]], dict[str, np.ndarray], int]:
    """One item's frames (per kind, per output (T_m, C_m)) pooled -> (pooled, frame labels kept, rows)."""
    if pool != "label-frames":
        return ({k: [None if a is None else _pool_item(a, pool).astype(np.float32) for a in v]
                 for k, v in res.items()}, frames, 1)
    if "phones" not in frames:
        raise UserError(f"item {where} has no frame labels (phones): pool 'label-frames' needs "
                        f"LibriSpeech-layout data with phone labels")
    lab = frames["phones"]
    aligned = {k: [None if a is None else align_to_label_frames(a, h, len(lab)) for a, h in zip(v, hops)]
               for k, v in res.items()}
    n_keep = min(len(a) for a in aligned["z"])
    valid = lab[:n_keep] >= 0
    out = {k: [None if a is None else a[:n_keep][valid] for a in v] for k, v in aligned.items()}
    return out, {"phones": lab[:n_keep][valid]}, int(valid.sum())


def repool(fs: FeatureSet, pool: str) -> FeatureSet:
    """A ``pool="none"`` FeatureSet pooled another way (mean, max, flatten, label-frames), item by item exactly
    as :func:`extract_features` would have pooled it: one encoding serves several probe tasks."""
    if fs.pool != "none":
        raise UserError(f"repool needs frames per item (pool 'none'), got pool {fs.pool!r}")
    if pool not in POOLS:
        raise UserError(f"pool {pool!r}: choose {', '.join(POOLS)}")
    kinds = ["z"] + [k for k in ("mu", "logvar") if getattr(fs, k) is not None]
    by_kind = {"z": fs.features, "mu": fs.mu, "logvar": fs.logvar}
    per: dict[str, list[list[Any]]] = {k: [[] for _ in fs.names] for k in kinds}
    item_labels, frame_labels, rows = [], [], []
    for i, where in enumerate(fs.items):
        res = {k: [None if out is None else out[i] for out in by_kind[k]] for k in kinds}
        frames = {k: v[i] for k, v in fs.frame_labels.items()}
        pooled, frames, n_rows = _pool_outputs(res, frames, pool, fs.hops, where)
        for k in kinds:
            for s, a in enumerate(pooled[k]):
                per[k][s].append(a)
        item_labels.append({k: int(v[i]) for k, v in fs.labels.items()})
        frame_labels.append(frames)
        rows.append(n_rows)
    meta = {k: getattr(fs, k) for k in ("source", "names", "hops", "dims", "mode", "stochastic", "items", "indices",
                                        "label_names")}
    return _assemble(meta, pool, kinds, per, item_labels, frame_labels, rows)


def _assemble(meta: dict[str, Any], pool: str, kinds: Sequence[str], per: Any,
              item_labels: list[dict[str, int]], frame_labels: list[dict[str, np.ndarray]],
              rows: list[int]) -> FeatureSet:
    def stack(parts: list[Any]) -> Any:
        if parts and parts[0] is None:
            return None
        if pool == "none":
            return parts
        if pool == "label-frames":
            return np.concatenate(parts).astype(np.float32)
        if len({p.shape for p in parts}) > 1:
            raise UserError("pool 'flatten' needs items of equal length; use --pool mean or max")
        return np.stack(parts).astype(np.float32)

    stacked = {k: [stack(parts) for parts in per[k]] for k in kinds}
    common = set.intersection(*(set(d) for d in item_labels)) if item_labels else set()
    labels = {k: np.array([d[k] for d in item_labels], dtype=np.int64) for k in sorted(common)}
    frames: dict[str, list[np.ndarray]] = {}
    if pool == "label-frames":
        reps = np.asarray(rows, dtype=np.int64)
        labels = {k: np.repeat(v, reps) for k, v in labels.items()}
        labels["item"] = np.repeat(np.arange(len(rows), dtype=np.int64), reps)
        labels["phones"] = (np.concatenate([f["phones"] for f in frame_labels]) if frame_labels
                            else np.zeros(0, dtype=np.int64))
    else:
        common_f = set.intersection(*(set(d) for d in frame_labels)) if frame_labels else set()
        frames = {k: [d[k] for d in frame_labels] for k in sorted(common_f)}
    return FeatureSet(**meta, pool=pool, features=stacked["z"], labels=labels, frame_labels=frames,
                      mu=stacked.get("mu"), logvar=stacked.get("logvar"))


# --------------------------------------------------------------------------------------------------
# Cache files (npz, no pickles)
# --------------------------------------------------------------------------------------------------


def _put(arrays: dict[str, np.ndarray], key: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, list):
        arrays[key] = np.concatenate(value) if value else np.zeros((0,), dtype=np.float32)
        arrays[f"{key}__len"] = np.array([len(v) for v in value], dtype=np.int64)
    else:
        arrays[key] = value


def _get(z: Any, key: str) -> Any:
    if key not in z.files:
        return None
    data = z[key]
    if f"{key}__len" in z.files:
        ends = np.cumsum(z[f"{key}__len"])
        return [data[a:b] for a, b in zip(np.concatenate([[0], ends[:-1]]), ends)]
    return data


def save_feature_set(fs: FeatureSet, path: Union[str, os.PathLike[str]]) -> None:
    """Write a FeatureSet as one ``.npz`` (atomically)."""
    meta = {k: getattr(fs, k) for k in ("source", "names", "hops", "dims", "pool", "mode", "stochastic", "items",
                                        "label_names")}
    arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(meta)), "indices": fs.indices,
                                     "label_keys": np.array(sorted(fs.labels), dtype=str),
                                     "frame_keys": np.array(sorted(fs.frame_labels), dtype=str)}
    for m in range(len(fs.names)):
        for kind, values in (("f", fs.features), ("mu", fs.mu), ("logvar", fs.logvar)):
            _put(arrays, f"{kind}{m}", None if values is None else values[m])
    for k, v in fs.labels.items():
        arrays[f"label_{k}"] = v
    for k, v in fs.frame_labels.items():
        _put(arrays, f"frame_{k}", v)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(Path(path), buf.getvalue())


def load_feature_set(path: Union[str, os.PathLike[str]]) -> FeatureSet:
    """Read a FeatureSet written by :func:`save_feature_set`."""
    with open_npz(path) as z:  # never unpickles: a planted object array raises UnsafeFileError
        meta = json.loads(str(z["meta"]))
        n = len(meta["names"])
        mu = [_get(z, f"mu{m}") for m in range(n)]
        lv = [_get(z, f"logvar{m}") for m in range(n)]
        return FeatureSet(**meta, features=[_get(z, f"f{m}") for m in range(n)],
                          labels={str(k): z[f"label_{k}"] for k in z["label_keys"]},
                          frame_labels={str(k): _get(z, f"frame_{k}") for k in z["frame_keys"]},
                          indices=z["indices"], mu=mu if any(x is not None for x in mu) else None,
                          logvar=lv if any(x is not None for x in lv) else None)


__all__ = ["FeatureSet", "extract_features", "extract_pooled", "repool", "align_to_label_frames", "standardize",
           "dataset_identity", "save_feature_set", "load_feature_set", "POOLS", "LABEL_FRAME"]
