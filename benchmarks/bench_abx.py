"""Runtime of the ABX error (smooth_infomax.abx.metric.abx_error): time per 10,000 triplets.

Items are shaped like LibriSpeech phone items: lengths of 3..15 label frames (30-150 ms), ``--dim`` channels
(256, the paper encoder's width), ``--phones`` central phones in ``--contexts`` contexts, ``--speakers``
speakers; features are random (the runtime does not depend on the values). The batched implementation is
timed on the whole item set; the same DTW distances computed one pair at a time (``batch_pairs=1``) are timed
on a seeded subset of pairs and extrapolated, as the reference point of an unbatched implementation. fastabx
(the maintained ABX library, Python >= 3.12) is the external anchor: it is not installed here, so no number
for it is recorded.

Usage: python benchmarks/bench_abx.py --out bench_abx.json [--items 3000] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from smooth_infomax.abx.metric import abx_error, group_pairs, pair_distances


def make_items(n: int, dim: int, phones: int, contexts: int, speakers: int, seed: int):
    rng = np.random.default_rng(seed)
    feats = [rng.normal(size=(int(rng.integers(3, 16)), dim)).astype(np.float32) for _ in range(n)]
    return feats, rng.integers(0, phones, n), rng.integers(0, contexts, n), rng.integers(0, speakers, n)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=3000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--phones", type=int, default=8)
    ap.add_argument("--contexts", type=int, default=40)
    ap.add_argument("--speakers", type=int, default=4)
    ap.add_argument("--naive-pairs", type=int, default=200, help="pairs timed one at a time")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    feats, phone, context, speaker = make_items(args.items, args.dim, args.phones, args.contexts, args.speakers,
                                                args.seed)
    abx_error(feats[:50], phone[:50], context[:50], speaker[:50], device=args.device)  # warm-up
    t0 = time.perf_counter()
    res = abx_error(feats, phone, context, speaker, device=args.device)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    batched = time.perf_counter() - t0
    triplets = res["n_triplets_within"] + res["n_triplets_across"]

    _, pairs = group_pairs(phone, context)
    rng = np.random.default_rng(args.seed)
    sub = pairs[rng.choice(len(pairs), size=min(args.naive_pairs, len(pairs)), replace=False)]
    t0 = time.perf_counter()
    pair_distances(feats, sub, batch_pairs=1, device=args.device)
    naive_per_pair = (time.perf_counter() - t0) / max(1, len(sub))
    naive = naive_per_pair * len(pairs)

    out = {
        "benchmark": "abx", "python": sys.version.split()[0], "torch": torch.__version__,
        "machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "device": args.device, "settings": vars(args),
        "items": args.items, "pairs": int(len(pairs)), "triplets": int(triplets),
        "triplets_within": res["n_triplets_within"], "triplets_across": res["n_triplets_across"],
        "seconds_batched": round(batched, 3),
        "seconds_per_10k_triplets": round(batched / max(1, triplets) * 1e4, 5),
        "seconds_per_1k_pairs": round(batched / max(1, len(pairs)) * 1e3, 4),
        "naive_seconds_per_pair": round(naive_per_pair, 6),
        "naive_seconds_extrapolated": round(naive, 2),
        "speedup_vs_one_pair_at_a_time": round(naive / max(batched, 1e-9), 2),
        "within": res["within"], "across": res["across"],
        "anchor": "fastabx (Python >= 3.12) not installed here; no number recorded",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("items", "pairs", "triplets", "seconds_batched",
                                          "seconds_per_10k_triplets", "speedup_vs_one_pair_at_a_time")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
