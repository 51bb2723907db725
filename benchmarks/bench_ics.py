"""Runtime of the batched ICS (smooth_infomax.decoding.latent.ics) against the per-pair loop (ics_naive).

Paper-scale shapes by default: a randomly initialised decoder for module 2 of the paper encoder (512 channels,
64 frames -> 10240 samples) and N = 200 random latents, d in {2, 4, ..., 512}: 39,800 ordered pairs.

The full score takes hours on a CPU, so both versions are timed on the same seeded subset of ``--pairs`` ordered
pairs (``max_pairs``; the two results are compared for agreement) and extrapolated linearly to all pairs:

* naive: time per pair x all pairs (it has no per-item work shared between pairs);
* batched: time to decode every item once (measured per item) + time per pair (without that decoding) x all pairs.

``--pairs 0`` times the batched version on all pairs instead (sensible on a GPU); the naive one is always a subset.
Usage: python benchmarks/bench_ics.py --out bench_ics.json [--items 200] [--pairs 24] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from smooth_infomax.config import model_config
from smooth_infomax.decoding import build_decoder, decode, default_ds, ics, ics_naive, ics_pairs


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device):
    _sync(device)
    t0 = time.perf_counter()
    result = fn()
    _sync(device)
    return result, time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--items", type=int, default=200, help="N latents (all ordered pairs of them)")
    p.add_argument("--pairs", type=int, default=24, help="pairs timed for both versions (0: batched on all pairs)")
    p.add_argument("--channels", type=int, default=512)
    p.add_argument("--n-samples", type=int, default=10240)
    p.add_argument("--module", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    cfg = model_config({"preset": "paper", "channels": args.channels})
    decoder = build_decoder(cfg, args.module, args.n_samples).to(device).eval()
    g = torch.Generator().manual_seed(args.seed)
    latents = torch.randn(args.items, decoder.n_frames, decoder.in_channels, generator=g)
    ds = default_ds(decoder.in_channels)
    n = args.items
    pairs_full = n * (n - 1)
    sub = min(args.pairs, pairs_full) if args.pairs > 0 else min(24, pairs_full)

    # warm-up (allocator, kernels), then the per-item cost of batched decoding
    k = min(n, args.batch_size)
    decode(decoder, latents[:k], args.batch_size)
    _, t_batch = _timed(lambda: decode(decoder, latents[:k], args.batch_size), device)
    per_item = t_batch / k

    naive, t_naive = _timed(lambda: ics_naive(decoder, latents, ds=ds, n_items=n, seed=args.seed, max_pairs=sub),
                            device)
    fast_sub, t_fast_sub = _timed(lambda: ics(decoder, latents, ds=ds, n_items=n, seed=args.seed, max_pairs=sub,
                                              batch_size=args.batch_size), device)
    # items decoded once by the batched run on the subset: those appearing in its pairs
    ii, jj = ics_pairs(n, sub, args.seed)
    n_used = int(torch.unique(torch.cat([ii, jj])).numel())
    per_pair_fast = max(0.0, t_fast_sub - n_used * per_item) / sub
    per_pair_naive = t_naive / sub
    agreement = max(abs(a - b) for a, b in zip(fast_sub["relative"], naive["relative"]))

    result = {
        "benchmark": "ICS batched (smooth_infomax.decoding.ics) vs per-pair loop (ics_naive)",
        "shapes": {"preset": "paper", "module": args.module, "channels": decoder.in_channels,
                   "frames": decoder.n_frames, "n_samples": args.n_samples, "items": n, "ds": ds,
                   "decoder_parameters": sum(p.numel() for p in decoder.parameters())},
        "pairs_full": pairs_full,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1min_at_end": None,
        "decode_seconds_per_item_batched": per_item,
        "subset": {"pairs": sub, "naive_seconds": t_naive, "batched_seconds": t_fast_sub,
                   "batched_items_decoded_once": n_used,
                   "speedup_on_subset": t_naive / t_fast_sub if t_fast_sub > 0 else None,
                   "max_abs_diff_relative": agreement},
    }
    if args.pairs == 0:
        full, t_full = _timed(lambda: ics(decoder, latents, ds=ds, n_items=n, seed=args.seed,
                                          batch_size=args.batch_size), device)
        naive_est = per_pair_naive * pairs_full
        result["full"] = {"batched_seconds": t_full, "batched_measured": True,
                          "naive_seconds": naive_est, "naive_measured": False,
                          "speedup": naive_est / t_full if t_full > 0 else None,
                          "note": f"batched timed on all {pairs_full} pairs; naive timed on {sub} pairs and "
                                  f"extrapolated linearly (time per pair x {pairs_full})"}
    else:
        fast_est = n * per_item + per_pair_fast * pairs_full
        naive_est = per_pair_naive * pairs_full
        result["full"] = {"batched_seconds": fast_est, "batched_measured": False,
                          "naive_seconds": naive_est, "naive_measured": False,
                          "speedup": naive_est / fast_est if fast_est > 0 else None,
                          "note": f"both extrapolated from the same {sub} timed pairs to all {pairs_full}: "
                                  f"naive = time "
                                  f"per pair x pairs; batched = {n} items x decode time per item + time per pair "
                                  f"(after decoding) x pairs"}
    if hasattr(os, "getloadavg"):
        result["load_average_1min_at_end"] = os.getloadavg()[0]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    f = result["full"]
    print(f"ICS, {n} items ({pairs_full} pairs), {decoder.n_frames} x {decoder.in_channels} -> {args.n_samples} on "
          f"{device} ({torch.get_num_threads()} threads): batched {f['batched_seconds']:.0f} s, naive "
          f"{f['naive_seconds']:.0f} s, speedup {f['speedup']:.2f}x (subset of {sub} pairs: "
          f"{result['subset']['speedup_on_subset']:.2f}x, max |diff| {agreement:.2e}); written to {out}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
