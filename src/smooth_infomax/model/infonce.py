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
vectorised :func:`info_nce` and the plain per-step loop of the tests (``tests/infonce_oracle.py``, the test
oracle) can be fed identical draws.
Gradients flow into c and into z (positives and negatives).

Accuracy (per step) is the fraction of rows where the positive logit is strictly larger than the logit of
every negative that is a *different* frame (a negative drawn at the positive's own frame is ignored).

Implementations (:func:`info_nce` ``impl``; all give the same values, see docs/performance.md for timings):
``banked`` (the default for ``reference`` sampling) uses that step k's row r reads bank position N - R_k + r:
with q = r + B (k - 1) every step reads the same position q, so the bank rows are gathered once, (R_1, n, C),
and all negative scores are one batched matmul of those rows with the K predictions that read them;
``chunked`` (the default for ``batch`` sampling) works step by step with bounded memory. Under ``torch.autocast``
the scores are computed in the autocast dtype and the loss in float32.
"""

from __future__ import annotations

import contextlib
import math
from typing import NamedTuple, Optional

import torch
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


def _check_inputs(c: Tensor, z: Tensor, predictor: nn.Linear, K: int) -> tuple[int, int, int]:
    if c.dim() != 3 or z.dim() != 3 or c.shape[:2] != z.shape[:2]:
        raise ValueError(f"InfoNCE needs c (B, T, D_c) and z (B, T, C) with equal B and T, got "
                         f"{tuple(c.shape)} and {tuple(z.shape)}")
    B, T, C = z.shape
    if predictor.in_features != c.shape[2] or predictor.out_features != C * K:
        raise ValueError(f"predictor maps {predictor.in_features} -> {predictor.out_features} features, "
                         f"expected {c.shape[2]} -> {C * K} (C={C} times K={K})")
    return B, T, C


IMPLS = ("auto", "banked", "chunked")


def info_nce(c: Tensor, z: Tensor, predictor: nn.Linear, K: int, n_negatives: int = 10,
             window: Optional[int] = 128, negative_sampling: str = "reference",
             generator: Optional[torch.Generator] = None, sample: Optional[InfoNCESample] = None,
             impl: str = "auto") -> InfoNCEOutput:
    """Vectorised InfoNCE (see the module docstring): c (B, T, D_c), z (B, T, C) -> :class:`InfoNCEOutput`.

    ``sample`` supplies pre-drawn randomness (from :func:`draw_infonce_sample`); otherwise it is drawn here.
    ``impl`` chooses how the scores are computed; every choice gives the same loss, accuracy and gradients
    (up to float rounding):

    * ``banked`` (``reference`` sampling only): uses that the negatives of row r at step k are bank position
      N - R_k + r, so with q = r + B (k - 1) every step reads the *same* bank position q. The R_1 x n bank
      rows are gathered once, G (R_1, n, C), and all scores come from one batched matmul of G[q] (n, C) with
      the K predictions that read position q, (K, C). Memory O(B L (n + K) C); the predictions are computed
      step by step for the rows that use them only.
    * ``chunked``: step by step, gathering that step's negatives, (R_k, n, C), in the forward and again in the
      backward (nothing of size n is kept). Works for both samplings; the default for ``batch``.
    * ``auto``: ``banked`` for ``reference`` sampling, ``chunked`` for ``batch``.
    """
    B, T, C = _check_inputs(c, z, predictor, K)
    if impl not in IMPLS:
        raise ValueError(f"unknown InfoNCE impl {impl!r}; choose {', '.join(IMPLS)}")
    if sample is None:
        sample = draw_infonce_sample(B, T, K, n_negatives, window, negative_sampling, generator, device=z.device)
    if impl == "auto":
        impl = "banked" if sample.scheme == "reference" else "chunked"
    if impl == "banked" and sample.scheme != "reference":
        raise ValueError("impl 'banked' needs negative_sampling='reference'; use 'chunked' or 'auto'")
    s, L = sample.start, sample.length
    dev = z.device
    N, R1 = B * T, B * (L - 1)
    # one copy into (B, L, .) row-major order: the per-step slices below are then cheap to read (the encoder
    # hands over transposed conv outputs, whose per-step copies would otherwise be strided gathers)
    c_w, z_w = c[:, s:s + L].contiguous(), z[:, s:s + L].contiguous()
    bank = sample.negatives.to(dev)
    n = bank.shape[0] if sample.scheme == "reference" else bank.shape[-1]
    weight, bias, z_flat = predictor.weight, predictor.bias, z.reshape(N, C)
    amp = _autocast_dtype(dev)
    if amp is not None:  # the custom functions run in one dtype: the autocast dtype (the loss is float32)
        c_w, z_w, z_flat, weight = c_w.to(amp), z_w.to(amp), z_flat.to(amp), weight.to(amp)
        bias = None if bias is None else bias.to(amp)
    with torch.autocast(dev.type, enabled=False) if amp is not None else contextlib.nullcontext():
        if impl == "banked":
            neg_rows = bank[:, N - R1:].t()  # (R_1, n): bank position q, shared by every step
            G = z_flat.index_select(0, neg_rows.reshape(-1)).view(R1, n, C)
            logits = _BankedLogits.apply(c_w, weight, bias, z_w, G)
            neg_rows = neg_rows.unsqueeze(1)  # (R_1, 1, n)
        else:
            idx = _step_negatives(sample, B, T, K)  # (K, R_1, n), row q of step k (q >= B (k - 1))
            logits = _ChunkedLogits.apply(c_w, weight, bias, z_w, z_flat, idx)
            neg_rows = idx.transpose(0, 1)  # (R_1, K, n)
    if amp is not None:
        logits = logits.float()
    return _finish(logits, neg_rows, B, T, s, L, K)


def _autocast_dtype(device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype when autocast is on for ``device``'s type, else None."""
    kind = device.type
    try:
        if torch.is_autocast_enabled(kind):
            return torch.get_autocast_dtype(kind)
    except (TypeError, RuntimeError):  # pragma: no cover - older torch or an unknown device type
        return None
    return None


def _step_rows(B: int, L: int, K: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Bookkeeping of the step-major layout used by ``banked`` and ``chunked``.

    Row q in [0, R_1) of step k (1-based) holds the rows r = q - B (k - 1) of that step, r = b (L - k) + t, when
    q >= B (k - 1) (``valid``). Returns ``(valid, b, t, steps)``, the first three of shape (R_1, K).
    """
    R1 = B * (L - 1)
    q = torch.arange(R1, device=device).view(R1, 1)
    steps = torch.arange(1, K + 1, device=device).view(1, K)
    r = q - B * (steps - 1)
    valid = r >= 0
    r = r.clamp(min=0)
    return valid, r // (L - steps), r % (L - steps), steps


def _step_negatives(sample: InfoNCESample, batch: int, frames: int, K: int) -> Tensor:
    """(K, R_1, n) flattened z row of every negative in the step-major layout (0 in unused rows)."""
    L, dev = sample.length, sample.negatives.device
    R1, N = batch * (L - 1), batch * frames
    if sample.scheme == "reference":
        bank = sample.negatives[:, N - R1:].t()  # (R_1, n)
        return bank.unsqueeze(0).expand(K, R1, bank.shape[1])
    n = sample.negatives.shape[-1]
    out = torch.zeros(K, R1, n, dtype=torch.long, device=dev)
    for k in range(1, K + 1):
        Rk = batch * (L - k)
        out[k - 1, R1 - Rk:] = sample.negatives[k - 1, :, :L - k].reshape(Rk, n)
    return out


def _finish(logits: Tensor, neg_rows: Tensor, B: int, T: int, s: int, L: int, K: int) -> InfoNCEOutput:
    """Loss and accuracy from step-major logits (R_1, K, 1 + n) (column 0: the positive) and the flattened z row
    of every negative, ``neg_rows`` (R_1, K or 1, n)."""
    valid, b, t, steps = _step_rows(B, L, K, logits.device)
    nll = torch.logsumexp(logits, dim=-1) - logits[..., 0]  # (R_1, K)
    nll = torch.where(valid, nll, torch.zeros_like(nll))
    rows = (B * (L - steps.view(K))).to(nll.dtype)  # R_k
    per_step = nll.sum(0) / rows
    with torch.no_grad():
        pos_row = b * T + s + t + steps  # (R_1, K)
        same = neg_rows == pos_row.unsqueeze(-1)
        neg_best = logits[..., 1:].masked_fill(same, -math.inf).amax(-1)
        correct = (logits[..., 0] > neg_best) & valid
        accuracy = correct.sum(0).to(nll.dtype) / rows
    return InfoNCEOutput(per_step.mean(), per_step, accuracy)


def _predict_step(c_w: Tensor, weight: Tensor, bias: Optional[Tensor], k: int, C: int, out: Tensor) -> Tensor:
    """Write W_k c_w[b, t] (+ b_k) for t < L - k, flattened to (R_k, C), into ``out`` and return it."""
    B, L, D = c_w.shape
    ck = c_w[:, :L - k].reshape(B * (L - k), D)
    Wk = weight[(k - 1) * C:k * C]
    if bias is None:
        return torch.mm(ck, Wk.t(), out=out)
    return torch.addmm(bias[(k - 1) * C:k * C], ck, Wk.t(), out=out)


def _positive_logits(Q: Tensor, z_w: Tensor, R1: int) -> Tensor:
    """(R_1, K) <W_k c_w[b, t], z_w[b, t + k]> in the step-major layout (0 in unused rows)."""
    K, _, C = Q.shape
    B, L, _ = z_w.shape
    pos = Q.new_zeros(R1, K)
    for k in range(1, K + 1):
        Rk = B * (L - k)
        pos[R1 - Rk:, k - 1] = torch.linalg.vecdot(Q[k - 1, R1 - Rk:].view(B, L - k, C), z_w[:, k:]).reshape(Rk)
    return pos


def _step_backward(ctx_needs: tuple[bool, ...], c_w: Tensor, weight: Tensor, z_w: Tensor, Q: Tensor, gQ_all: Tensor,
                   gpos: Tensor) -> tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """Gradients of c_w, weight, bias and z_w (through the positives) from the gradient of the step-major
    predictions ``gQ_all`` (R_1, K, C) (negatives only; the positives' share is added here) and ``gpos`` (R_1, K)."""
    need_c, need_w, need_b, need_z = ctx_needs[:4]
    B, L, D = c_w.shape
    K, R1, C = Q.shape
    gc = torch.zeros_like(c_w) if need_c else None
    gW = torch.zeros_like(weight) if need_w else None
    gb = weight.new_zeros(weight.shape[0]) if need_b else None
    gz = torch.zeros_like(z_w) if need_z else None
    for k in range(1, K + 1):
        Lk = L - k
        Rk, off = B * Lk, R1 - B * Lk
        block = slice((k - 1) * C, k * C)
        zk = z_w[:, k:]
        gpk = gpos[off:, k - 1].view(B, Lk, 1)
        gQk = torch.addcmul(gQ_all[off:, k - 1].view(B, Lk, C), gpk, zk).view(Rk, C)
        if gz is not None:
            gz[:, k:].addcmul_(gpk, Q[k - 1, off:].view(B, Lk, C))
        if gW is not None:
            torch.mm(gQk.t(), c_w[:, :Lk].reshape(Rk, D), out=gW[block])
        if gb is not None:
            gb[block] = gQk.sum(0)
        if gc is not None:
            gc[:, :Lk] += torch.mm(gQk, weight[block]).view(B, Lk, D)
    return gc, gW, gb, gz


class _BankedLogits(torch.autograd.Function):
    """(c_w (B, L, D), weight (K C, D), bias (K C) or None, z_w (B, L, C), G (R_1, n, C)) -> logits (R_1, K, 1 + n).

    Q[k, q] = W_k c_w[b, t] (+ b_k) for the row (b, t) of step k at bank position q (0 where unused); the logits
    are [<Q[k, q], z_w[b, t + k]>, <Q[k, q], G[q, j]> for j < n]. One batched matmul (over q) of (K, C) by (C, n)
    gives every negative score; the backward uses two more. The predictor's matmuls run step by step on the
    R_k rows that step uses.
    """

    @staticmethod
    def forward(ctx, c_w, weight, bias, z_w, G):  # type: ignore[override]
        B, L, D = c_w.shape
        C = z_w.shape[2]
        K = weight.shape[0] // C
        R1 = B * (L - 1)
        Q = c_w.new_empty(K, R1, C)
        for k in range(1, K + 1):
            off = R1 - B * (L - k)
            Q[k - 1, :off].zero_()
            _predict_step(c_w, weight, bias, k, C, Q[k - 1, off:])
        pos = _positive_logits(Q, z_w, R1)
        neg = torch.bmm(Q.transpose(0, 1), G.transpose(1, 2))  # (R_1, K, n)
        ctx.save_for_backward(c_w, weight, z_w, G, Q)
        return torch.cat([pos.unsqueeze(-1), neg], dim=-1)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        c_w, weight, z_w, G, Q = ctx.saved_tensors
        gS = g[..., 1:]
        gG = torch.bmm(gS.transpose(1, 2), Q.transpose(0, 1)) if ctx.needs_input_grad[4] else None
        gQ_all = torch.bmm(gS, G)  # (R_1, K, C)
        gc, gW, gb, gz = _step_backward(ctx.needs_input_grad, c_w, weight, z_w, Q, gQ_all, g[..., 0])
        return gc, gW, gb, gz, gG


class _ChunkedLogits(torch.autograd.Function):
    """Like :class:`_BankedLogits` with per-step negatives: (c_w, weight, bias, z_w, z_flat (N, C), idx (K, R_1, n))
    -> logits (R_1, K, 1 + n). Step k's negatives z_flat[idx[k, q]] are gathered in the forward and again in the
    backward, so at most (R_1, n, C) of them exist at any time."""

    @staticmethod
    def forward(ctx, c_w, weight, bias, z_w, z_flat, idx):  # type: ignore[override]
        B, L, D = c_w.shape
        C = z_w.shape[2]
        K, R1, n = idx.shape
        Q = c_w.new_empty(K, R1, C)
        neg = c_w.new_zeros(R1, K, n)
        for k in range(1, K + 1):
            off = R1 - B * (L - k)
            Q[k - 1, :off].zero_()
            Qk = _predict_step(c_w, weight, bias, k, C, Q[k - 1, off:])
            Gk = z_flat.index_select(0, idx[k - 1, off:].reshape(-1)).view(-1, n, C)
            neg[off:, k - 1] = torch.bmm(Gk, Qk.unsqueeze(-1)).squeeze(-1)
        pos = _positive_logits(Q, z_w, R1)
        ctx.save_for_backward(c_w, weight, z_w, z_flat, idx, Q)
        return torch.cat([pos.unsqueeze(-1), neg], dim=-1)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        c_w, weight, z_w, z_flat, idx, Q = ctx.saved_tensors
        B, L, _ = c_w.shape
        K, R1, n = idx.shape
        C = z_w.shape[2]
        need_flat = ctx.needs_input_grad[4]
        gflat = torch.zeros_like(z_flat) if need_flat else None
        gQ_all = Q.new_zeros(R1, K, C)
        for k in range(1, K + 1):
            off = R1 - B * (L - k)
            rows = idx[k - 1, off:].reshape(-1)
            gSk = g[off:, k - 1, 1:]  # (R_k, n)
            Gk = z_flat.index_select(0, rows).view(-1, n, C)
            gQ_all[off:, k - 1] = torch.bmm(gSk.unsqueeze(1), Gk).squeeze(1)
            if gflat is not None:
                gflat.index_add_(0, rows, (gSk.unsqueeze(-1) * Q[k - 1, off:].unsqueeze(1)).view(-1, C))
        gc, gW, gb, gz = _step_backward(ctx.needs_input_grad, c_w, weight, z_w, Q, gQ_all, g[..., 0])
        return gc, gW, gb, gz, gflat, None


class InfoNCE(nn.Module):
    """One module's InfoNCE criterion: the predictor ``Linear(in_dim, out_dim * K, bias=False)`` and settings.

    ``forward(c (B, T, in_dim), z (B, T, out_dim), generator=None, sample=None) -> InfoNCEOutput``.
    ``impl`` selects the score computation (see :func:`info_nce`; all give the same values).
    """

    def __init__(self, in_dim: int, out_dim: int, K: int = 12, n_negatives: int = 10, window: Optional[int] = 128,
                 negative_sampling: str = "reference", impl: str = "auto"):
        super().__init__()
        if negative_sampling not in SAMPLING:
            raise ValueError(f"unknown negative_sampling {negative_sampling!r}; choose reference or batch")
        if impl not in IMPLS:
            raise ValueError(f"unknown InfoNCE impl {impl!r}; choose {', '.join(IMPLS)}")
        self.impl = impl
        self.in_dim, self.out_dim, self.K = in_dim, out_dim, K
        self.n_negatives, self.window, self.negative_sampling = n_negatives, window, negative_sampling
        self.predictor = nn.Linear(in_dim, out_dim * K, bias=False)

    def forward(self, c: Tensor, z: Tensor, generator: Optional[torch.Generator] = None,
                sample: Optional[InfoNCESample] = None) -> InfoNCEOutput:
        return info_nce(c, z, self.predictor, self.K, self.n_negatives, self.window, self.negative_sampling,
                        generator=generator, sample=sample, impl=self.impl)

    def draw(self, batch: int, frames: int, generator: Optional[torch.Generator] = None,
             device: Optional[torch.device | str] = None) -> InfoNCESample:
        """The randomness of one evaluation on z of shape (batch, frames, out_dim)."""
        return draw_infonce_sample(batch, frames, self.K, self.n_negatives, self.window, self.negative_sampling,
                                   generator, device)

    def extra_repr(self) -> str:
        return (f"in_dim={self.in_dim}, out_dim={self.out_dim}, K={self.K}, n_negatives={self.n_negatives}, "
                f"window={self.window}, negative_sampling={self.negative_sampling!r}")


__all__ = ["InfoNCE", "InfoNCEOutput", "InfoNCESample", "info_nce", "draw_infonce_sample"]
