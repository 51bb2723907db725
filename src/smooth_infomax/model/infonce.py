"""InfoNCE exactly as the reference computes it (METHOD §4), vectorised over the prediction steps.

Inputs: a context sequence c (B, T, D_c) that feeds a linear predictor and a target sequence z (B, T, C).
The predictor ``Linear(D_c, C * K, bias=False)`` holds K blocks: output features ``[k * C, (k + 1) * C)``
(k = 0 .. K-1) predict the target k + 1 frames ahead, i.e. its output is viewed as (..., K, C).

Algorithm (``negative_sampling="reference"``):

1. Window: if T > window, one start s is drawn uniformly from {0, ..., T - window - 1} for the whole batch
   (the last possible start T - window is never drawn, as in the reference) and c, z are cropped to
   [s, s + window); otherwise the whole sequence is used. L_w is the window length.
2. Negative bank: ``n_negatives`` independent random permutations of the N = B * T rows of the *full,
   un-windowed* z (flattened batch-major). Negatives may come from any utterance and frame of the batch and
   can coincide with the positive.
3. For step k = 1..K the rows are (b, t) with t < L_w - k, numbered r = b * (L_w - k) + t, R_k = B (L_w - k).
   The prediction is W_k c_w[b, t], the positive z_w[b, t + k], negative j of row r is bank row N - R_k + r of
   permutation j (the same bank, truncated from the front, serves every k). The logits are raw dot products
   [<pred, pos>, <pred, neg_1>, ...] (no temperature), and loss_k is the mean cross-entropy with target 0.
4. The loss is the mean of loss_k over k.

``negative_sampling="batch"`` replaces step 2-3's bank by an independent uniform draw over all N frames for
every (row, negative) pair.

The randomness (window start and negative indices) is drawn by :func:`draw_infonce_sample`, so that the
vectorised :func:`info_nce` and the plain per-step :func:`info_nce_loop` can be fed identical draws.
Gradients flow into c and into z (positives and negatives).

Accuracy (per step) is the fraction of rows where the positive logit is strictly larger than the logit of
every negative that is a *different* frame (a negative drawn at the positive's own frame is ignored).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SAMPLING = ("reference", "batch")


class InfoNCEOutput(NamedTuple):
    """loss: scalar; per_step_loss: (K,), loss_k for k = 1..K; accuracy: (K,) (no gradient)."""

    loss: Tensor
    per_step_loss: Tensor
    accuracy: Tensor


class InfoNCESample(NamedTuple):
    """The random choices of one InfoNCE evaluation.

    start, length: the window [start, start + length) of the T frames.
    negatives: ``reference``: (n_negatives, B * T) long, one permutation of the flattened rows per negative
        (the bank); ``batch``: (K, B, length, n_negatives) long, the flattened frame index of every negative of
        step k + 1 and window row (b, t) (entries with t >= length - k - 1 are unused).
    """

    scheme: str
    start: int
    length: int
    negatives: Tensor


def _check_sizes(batch: int, frames: int, K: int, n_negatives: int, window: Optional[int], scheme: str) -> int:
    if scheme not in SAMPLING:
        raise ValueError(f"unknown negative_sampling {scheme!r}; choose reference or batch")
    if K < 1 or n_negatives < 1 or batch < 1:
        raise ValueError(f"need K >= 1, n_negatives >= 1 and a non-empty batch (got K={K}, "
                         f"n_negatives={n_negatives}, batch={batch})")
    length = frames if window is None or frames <= window else window
    if length <= K:
        raise ValueError(f"InfoNCE needs more than K={K} frames per sequence, got {length} "
                         f"(use longer inputs or fewer prediction steps)")
    return length


def draw_infonce_sample(batch: int, frames: int, K: int, n_negatives: int, window: Optional[int] = 128,
                        negative_sampling: str = "reference", generator: Optional[torch.Generator] = None,
                        device: Optional[torch.device | str] = None) -> InfoNCESample:
    """Draw the window start and the negatives for z of shape (batch, frames, C); see :class:`InfoNCESample`.

    With a ``generator`` everything is drawn from it (on its device); otherwise from the global RNG, the window
    start on the CPU and the negatives on ``device``. The result is moved to ``device``.
    """
    length = _check_sizes(batch, frames, K, n_negatives, window, negative_sampling)
    draw_dev = generator.device if generator is not None else torch.device(device or "cpu")
    if frames > length:
        start_dev = draw_dev if generator is not None else torch.device("cpu")
        start = int(torch.randint(0, frames - length, (), generator=generator, device=start_dev))
    else:
        start = 0
    n_rows = batch * frames
    if negative_sampling == "reference":
        negatives = torch.stack([torch.randperm(n_rows, generator=generator, device=draw_dev)
                                 for _ in range(n_negatives)])
    else:
        negatives = torch.randint(0, n_rows, (K, batch, length, n_negatives), generator=generator, device=draw_dev)
    if device is not None:
        negatives = negatives.to(device)
    return InfoNCESample(negative_sampling, start, length, negatives)


def _negative_index(sample: InfoNCESample, batch: int, frames: int, K: int) -> Tensor:
    """(B, L_w, K, n_negatives) flattened row of z for every window position, step and negative (0 where
    t >= L_w - k)."""
    L = sample.length
    dev = sample.negatives.device
    if sample.scheme == "batch":
        return sample.negatives.permute(1, 2, 0, 3)
    n_rows = batch * frames
    b = torch.arange(batch, device=dev).view(batch, 1, 1)
    t = torch.arange(L, device=dev).view(1, L, 1)
    steps = torch.arange(1, K + 1, device=dev).view(1, 1, K)
    # row r = b (L - k) + t of R_k = B (L - k) rows reads bank row N - R_k + r = N - (B - b)(L - k) + t
    bank_row = n_rows - (batch - b) * (L - steps) + t
    bank_row = torch.where(t < L - steps, bank_row, torch.zeros_like(bank_row))
    return sample.negatives[:, bank_row].permute(1, 2, 3, 0)


def _check_inputs(c: Tensor, z: Tensor, predictor: nn.Linear, K: int) -> tuple[int, int, int]:
    if c.dim() != 3 or z.dim() != 3 or c.shape[:2] != z.shape[:2]:
        raise ValueError(f"InfoNCE needs c (B, T, D_c) and z (B, T, C) with equal B and T, got "
                         f"{tuple(c.shape)} and {tuple(z.shape)}")
    B, T, C = z.shape
    if predictor.in_features != c.shape[2] or predictor.out_features != C * K:
        raise ValueError(f"predictor maps {predictor.in_features} -> {predictor.out_features} features, "
                         f"expected {c.shape[2]} -> {C * K} (C={C} times K={K})")
    return B, T, C


def info_nce(c: Tensor, z: Tensor, predictor: nn.Linear, K: int, n_negatives: int = 10,
             window: Optional[int] = 128, negative_sampling: str = "reference",
             generator: Optional[torch.Generator] = None, sample: Optional[InfoNCESample] = None) -> InfoNCEOutput:
    """Vectorised InfoNCE (see the module docstring): c (B, T, D_c), z (B, T, C) -> :class:`InfoNCEOutput`.

    ``sample`` supplies pre-drawn randomness (from :func:`draw_infonce_sample`); otherwise it is drawn here.
    All K steps are computed at once: predictions (B, L_w, K, C) from one matmul, positives and negatives
    gathered with index tensors, one log-softmax, and a mask for the rows t >= L_w - k. Memory: the gathered
    negatives take B * L_w * K * n_negatives * C values (as the reference's per-step tensors together).
    """
    B, T, C = _check_inputs(c, z, predictor, K)
    if sample is None:
        sample = draw_infonce_sample(B, T, K, n_negatives, window, negative_sampling, generator, device=z.device)
    s, L = sample.start, sample.length
    dev = z.device
    c_w = c[:, s:s + L]
    z_w = z[:, s:s + L]
    pred = predictor(c_w).view(B, L, K, C)

    steps = torch.arange(1, K + 1, device=dev)
    t_pos = torch.arange(L, device=dev).view(L, 1) + steps.view(1, K)  # (L, K)
    valid = t_pos < L
    t_pos = t_pos.clamp(max=L - 1)
    positives = z_w.index_select(1, t_pos.reshape(-1)).view(B, L, K, C)
    pos_logit = (pred * positives).sum(-1, keepdim=True)  # (B, L, K, 1)

    neg_idx = _negative_index(sample, B, T, K).to(dev)  # (B, L, K, n)
    n = neg_idx.shape[-1]
    M = B * L * K
    negatives = z.reshape(B * T, C).index_select(0, neg_idx.reshape(-1)).view(M, n, C)
    neg_logit = torch.bmm(negatives, pred.reshape(M, C, 1)).view(B, L, K, n)
    logits = torch.cat([pos_logit, neg_logit], dim=-1)
    nll = -F.log_softmax(logits, dim=-1)[..., 0]  # (B, L, K)

    mask = valid.unsqueeze(0).expand(B, L, K)
    rows = (B * (L - steps)).to(nll.dtype)  # R_k
    per_step = torch.where(mask, nll, torch.zeros_like(nll)).sum(dim=(0, 1)) / rows

    with torch.no_grad():
        pos_row = (torch.arange(B, device=dev).view(B, 1, 1) * T + s + t_pos.unsqueeze(0))  # (B, L, K)
        same = neg_idx == pos_row.unsqueeze(-1)
        neg_best = torch.where(same, torch.full_like(neg_logit, -math.inf), neg_logit).amax(-1)
        correct = (pos_logit[..., 0] > neg_best) & mask
        accuracy = correct.sum(dim=(0, 1)).to(nll.dtype) / rows
    return InfoNCEOutput(per_step.mean(), per_step, accuracy)


def info_nce_loop(c: Tensor, z: Tensor, predictor: nn.Linear, K: int, n_negatives: int = 10,
                  window: Optional[int] = 128, negative_sampling: str = "reference",
                  generator: Optional[torch.Generator] = None,
                  sample: Optional[InfoNCESample] = None) -> InfoNCEOutput:
    """The same loss as :func:`info_nce`, written as a plain loop over the steps k (a readable check; slower)."""
    B, T, C = _check_inputs(c, z, predictor, K)
    if sample is None:
        sample = draw_infonce_sample(B, T, K, n_negatives, window, negative_sampling, generator, device=z.device)
    s, L = sample.start, sample.length
    dev = z.device
    c_w, z_w = c[:, s:s + L], z[:, s:s + L]
    z_flat = z.reshape(B * T, C)
    N = B * T
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
            idx = bank[:, N - Rk:].t()  # (R_k, n): row r takes bank row N - R_k + r
        else:
            idx = bank[k - 1, :, :Lk].reshape(Rk, -1)
        neg = z_flat[idx]  # (R_k, n, C)
        logits = torch.cat([(pred * pos).sum(-1, keepdim=True), torch.bmm(neg, pred.unsqueeze(-1)).squeeze(-1)], 1)
        losses.append(F.cross_entropy(logits, torch.zeros(Rk, dtype=torch.long, device=dev)))
        with torch.no_grad():
            pos_row = (torch.arange(B, device=dev).view(B, 1) * T + s + k + torch.arange(Lk, device=dev)).reshape(Rk)
            correct = torch.ones(Rk, dtype=torch.bool, device=dev)
            for j in range(idx.shape[1]):
                beaten = (logits[:, 0] > logits[:, 1 + j]) | (idx[:, j] == pos_row)
                correct &= beaten
            accs.append(correct.to(logits.dtype).mean())
    per_step = torch.stack(losses)
    return InfoNCEOutput(per_step.mean(), per_step, torch.stack(accs))


class InfoNCE(nn.Module):
    """One module's InfoNCE criterion: the predictor ``Linear(in_dim, out_dim * K, bias=False)`` and settings.

    ``forward(c (B, T, in_dim), z (B, T, out_dim), generator=None, sample=None) -> InfoNCEOutput``.
    """

    def __init__(self, in_dim: int, out_dim: int, K: int = 12, n_negatives: int = 10, window: Optional[int] = 128,
                 negative_sampling: str = "reference"):
        super().__init__()
        if negative_sampling not in SAMPLING:
            raise ValueError(f"unknown negative_sampling {negative_sampling!r}; choose reference or batch")
        self.in_dim, self.out_dim, self.K = in_dim, out_dim, K
        self.n_negatives, self.window, self.negative_sampling = n_negatives, window, negative_sampling
        self.predictor = nn.Linear(in_dim, out_dim * K, bias=False)

    def forward(self, c: Tensor, z: Tensor, generator: Optional[torch.Generator] = None,
                sample: Optional[InfoNCESample] = None) -> InfoNCEOutput:
        return info_nce(c, z, self.predictor, self.K, self.n_negatives, self.window, self.negative_sampling,
                        generator=generator, sample=sample)

    def draw(self, batch: int, frames: int, generator: Optional[torch.Generator] = None,
             device: Optional[torch.device | str] = None) -> InfoNCESample:
        """The randomness of one evaluation on z of shape (batch, frames, out_dim)."""
        return draw_infonce_sample(batch, frames, self.K, self.n_negatives, self.window, self.negative_sampling,
                                   generator, device)

    def extra_repr(self) -> str:
        return (f"in_dim={self.in_dim}, out_dim={self.out_dim}, K={self.K}, n_negatives={self.n_negatives}, "
                f"window={self.window}, negative_sampling={self.negative_sampling!r}")


__all__ = ["InfoNCE", "InfoNCEOutput", "InfoNCESample", "info_nce", "info_nce_loop", "draw_infonce_sample"]
