"""The test oracle for InfoNCE: the loss of METHOD §4 written as a plain loop over the prediction steps.

Slow and obvious on purpose. ``smooth_infomax.model.infonce.info_nce`` (every ``impl``) must agree with it on the
same draws (``draw_infonce_sample``); the benchmarks time the package against it as well.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smooth_infomax.model.infonce import InfoNCEOutput, InfoNCESample, draw_infonce_sample


def info_nce_loop(c: Tensor, z: Tensor, predictor: nn.Linear, K: int, n_negatives: int = 10,
                  window: Optional[int] = 128, negative_sampling: str = "reference",
                  generator: Optional[torch.Generator] = None,
                  sample: Optional[InfoNCESample] = None) -> InfoNCEOutput:
    """c (B, T, D_c), z (B, T, C) -> the mean over steps k of the cross-entropy of [positive, negatives]."""
    B, T, C = z.shape
    if sample is None:
        sample = draw_infonce_sample(B, T, K, n_negatives, window, negative_sampling, generator, device=z.device)
    s, L = sample.start, sample.length
    dev = z.device
    c_w, z_w = c[:, s:s + L], z[:, s:s + L]
    N = B * T
    z_flat = z.reshape(N, C)
    bank = sample.negatives.to(dev)
    losses, accs = [], []
    for k in range(1, K + 1):
        Lk = L - k
        Rk = B * Lk
        W_k = predictor.weight[(k - 1) * C:k * C]
        b_k = None if predictor.bias is None else predictor.bias[(k - 1) * C:k * C]
        pred = F.linear(c_w[:, :Lk], W_k, b_k).reshape(Rk, C)
        pos = z_w[:, k:].reshape(Rk, C)
        if sample.scheme == "reference":
            idx = bank[:, N - Rk:].t()  # (R_k, n): row r takes bank row N - R_k + r of every permutation
        else:
            idx = bank[k - 1, :, :Lk].reshape(Rk, -1)
        neg = z_flat[idx]  # (R_k, n, C)
        pos_logit = (pred * pos).sum(-1, keepdim=True)
        neg_logit = torch.bmm(neg, pred.unsqueeze(-1)).squeeze(-1)
        logits = torch.cat([pos_logit, neg_logit], 1)
        losses.append(F.cross_entropy(logits, torch.zeros(Rk, dtype=torch.long, device=dev)))
        with torch.no_grad():
            own = (torch.arange(B, device=dev).view(B, 1) * T + s + k + torch.arange(Lk, device=dev)).reshape(Rk)
            correct = torch.ones(Rk, dtype=torch.bool, device=dev)
            for j in range(idx.shape[1]):  # a negative drawn at the positive's own frame does not count
                correct &= (logits[:, 0] > logits[:, 1 + j]) | (idx[:, j] == own)
            accs.append(correct.to(logits.dtype).mean())
    per_step = torch.stack(losses)
    return InfoNCEOutput(per_step.mean(), per_step, torch.stack(accs))
