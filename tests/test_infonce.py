"""InfoNCE: the vectorised loss equals the per-step reference loop; window and bank semantics; limits."""

import math

import pytest
import torch
from torch import nn

from infonce_oracle import info_nce_loop
from smooth_infomax.model import InfoNCE, info_nce
from smooth_infomax.model.infonce import draw_infonce_sample


def _inputs(B, T, D, C, K, seed=0, dtype=torch.float64, bias=False):
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(B, T, D, generator=g, dtype=dtype, requires_grad=True)
    z = torch.randn(B, T, C, generator=g, dtype=dtype, requires_grad=True)
    pred = nn.Linear(D, C * K, bias=bias).to(dtype)
    with torch.no_grad():
        pred.weight.copy_(0.3 * torch.randn(pred.weight.shape, generator=g, dtype=dtype))
        if bias:
            pred.bias.copy_(0.1 * torch.randn(pred.bias.shape, generator=g, dtype=dtype))
    return c, z, pred


def _grads(out, c, z, pred):
    # weight the per-step losses differently so that every step's gradient is checked
    w = torch.linspace(0.5, 1.5, out.per_step_loss.numel(), dtype=out.per_step_loss.dtype)
    total = out.loss + (w * out.per_step_loss).sum()
    return torch.autograd.grad(total, [c, z, pred.weight])


@pytest.mark.parametrize("sampling", ["reference", "batch"])
@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("T,window", [(40, 16), (17, 16), (20, None), (12, 32)])
def test_vectorised_matches_loop(sampling, B, T, window):
    K, n_neg = 4, 5
    c, z, pred = _inputs(B, T, 6, 5, K, seed=B * 100 + T)
    sample = draw_infonce_sample(B, T, K, n_neg, window, sampling, torch.Generator().manual_seed(7))
    fast = info_nce(c, z, pred, K, n_neg, window, sampling, sample=sample)
    slow = info_nce_loop(c, z, pred, K, n_neg, window, sampling, sample=sample)
    torch.testing.assert_close(fast.loss, slow.loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast.per_step_loss, slow.per_step_loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast.accuracy, slow.accuracy)
    for a, b in zip(_grads(fast, c, z, pred), _grads(slow, c, z, pred)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_vectorised_matches_loop_float32_with_bias_and_generator():
    K, n_neg, B, T = 3, 4, 2, 30
    c, z, pred = _inputs(B, T, 4, 6, K, seed=5, dtype=torch.float32, bias=True)
    fast = info_nce(c, z, pred, K, n_neg, 20, generator=torch.Generator().manual_seed(1))
    slow = info_nce_loop(c, z, pred, K, n_neg, 20, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(fast.loss, slow.loss, rtol=1e-5, atol=1e-5)
    for a, b in zip(_grads(fast, c, z, pred), _grads(slow, c, z, pred)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_gradients_reach_c_and_both_positive_and_negative_frames():
    K, B, T = 2, 1, 10
    c, z, pred = _inputs(B, T, 3, 3, K)
    # window covers frames 0..4 only: frames >= 5 are never positives, only (bank) negatives
    sample = draw_infonce_sample(B, T, K, 8, 5, "reference", torch.Generator().manual_seed(0))
    sample = sample._replace(start=0)
    out = info_nce(c, z, pred, K, 8, 5, sample=sample)
    gc, gz = torch.autograd.grad(out.loss, [c, z])
    assert gc[0, :3].abs().sum() > 0  # contexts of rows t < L_w - 1
    assert gz[0, 1:5].abs().sum() > 0  # positives
    used = set(sample.negatives[:, T - B * (5 - K):].flatten().tolist())  # bank rows read by step k = K
    outside = [r for r in used if r >= 5]
    assert outside and all(gz[0, r].abs().sum() > 0 for r in outside)  # negatives outside the window


def test_reference_bank_rows():
    # the negatives of row r at step k are bank row N - R_k + r (same bank for every k, truncated from the front)
    B, T, K, n = 2, 6, 2, 3
    sample = draw_infonce_sample(B, T, K, n, None, "reference", torch.Generator().manual_seed(3))
    assert sample.negatives.shape == (n, B * T)
    for perm in sample.negatives:
        assert sorted(perm.tolist()) == list(range(B * T))
    from smooth_infomax.model.infonce import _step_negatives

    idx = _step_negatives(sample, B, T, K)  # (K, R_1, n): step k's row r sits at q = r + B (k - 1)
    N = B * T
    for k in range(1, K + 1):
        Lk = T - k
        for r in range(B * Lk):
            assert idx[k - 1, r + B * (k - 1)].tolist() == sample.negatives[:, N - B * Lk + r].tolist()


def test_window_start_range():
    starts = {draw_infonce_sample(2, 20, 3, 2, 16, generator=torch.Generator().manual_seed(s)).start
              for s in range(200)}
    assert starts == {0, 1, 2, 3}  # {0 .. T - window - 1}: the last start T - window is never drawn
    assert {draw_infonce_sample(2, 17, 3, 2, 16, generator=torch.Generator().manual_seed(s)).start
            for s in range(20)} == {0}
    short = draw_infonce_sample(2, 10, 3, 2, 16)
    assert (short.start, short.length) == (0, 10)
    batch = draw_infonce_sample(2, 30, 3, 4, 16, "batch")
    assert batch.negatives.shape == (3, 2, 16, 4) and batch.negatives.max() < 60


def test_chance_level_with_zero_predictor():
    B, T, C, K, n = 3, 30, 8, 4, 10
    c, z, pred = _inputs(B, T, C, C, K)
    with torch.no_grad():
        pred.weight.zero_()
    out = info_nce(c, z, pred, K, n, None)
    torch.testing.assert_close(out.loss, torch.tensor(math.log(n + 1), dtype=out.loss.dtype))
    torch.testing.assert_close(out.per_step_loss, torch.full((K,), math.log(n + 1), dtype=out.loss.dtype))
    # random predictions of random targets: accuracy near 1 / (n + 1)
    g = torch.Generator().manual_seed(1)
    crit = InfoNCE(16, 16, K=3, n_negatives=n, window=None).double()
    zz = torch.randn(8, 200, 16, generator=g, dtype=torch.float64)
    acc = crit(torch.randn(8, 200, 16, generator=g, dtype=torch.float64), zz, generator=g).accuracy
    assert abs(float(acc.mean()) - 1 / (n + 1)) < 0.03


def test_perfectly_predictable_targets_analytic():
    # c[b, t] stacks z[b, t + k] for k = 1..K, and W_k selects block k: the prediction equals the positive.
    B, T, C, K, n = 3, 200, 64, 3, 10
    g = torch.Generator().manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(B, T + K, C, generator=g, dtype=torch.float64), dim=-1) * 8.0
    c = torch.cat([z[:, k:k + T] for k in range(1, K + 1)], dim=-1)
    z = z[:, :T]
    pred = nn.Linear(K * C, C * K, bias=False).double()
    with torch.no_grad():
        pred.weight.copy_(torch.eye(K * C, dtype=torch.float64))
    out = info_nce(c, z, pred, K, n, 128, generator=g)
    # the only loss left comes from negatives drawn at the positive's own frame (a tie: log 2 each)
    assert out.loss.item() < 0.05
    assert torch.equal(out.accuracy, torch.ones(K, dtype=out.accuracy.dtype))


def test_learns_a_predictable_sequence():
    # z follows a fixed rotation, z_{t+1} = A z_t: the predictor can learn W_k = A^k from c = z.
    torch.manual_seed(0)
    C, K, B, T = 8, 2, 4, 40
    A = torch.linalg.qr(torch.randn(C, C))[0]
    z0 = torch.randn(B, C)
    zs = [z0]
    for _ in range(T - 1):
        zs.append(zs[-1] @ A.T)
    z = 3.0 * torch.nn.functional.normalize(torch.stack(zs, 1), dim=-1)
    crit = InfoNCE(C, C, K=K, n_negatives=10, window=None)
    opt = torch.optim.Adam(crit.parameters(), lr=0.05)
    first = None
    for _ in range(300):
        out = crit(z, z)
        first = out.loss.item() if first is None else first
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    out = crit(z, z)
    assert first > 1.5 and out.loss.item() < 0.15
    assert float(out.accuracy.min()) > 0.95


def test_any_batch_size_and_errors():
    crit = InfoNCE(4, 4, K=3, n_negatives=2, window=8)
    for B in (1, 2, 5):
        out = crit(torch.randn(B, 11, 4), torch.randn(B, 11, 4))
        assert out.loss.shape == () and out.per_step_loss.shape == (3,) and out.accuracy.shape == (3,)
    with pytest.raises(ValueError, match="more than K"):
        crit(torch.randn(2, 3, 4), torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="predictor"):
        crit(torch.randn(2, 11, 5), torch.randn(2, 11, 4))


# ------------------------------------------------------------------------------------------------------
# The implementations (banked, chunked) against the per-step loop
# ------------------------------------------------------------------------------------------------------

IMPL_CASES = [("reference", "banked"), ("reference", "chunked"), ("batch", "chunked")]


@pytest.mark.parametrize("sampling,impl", IMPL_CASES)
@pytest.mark.parametrize("B,T,window,K", [(2, 40, 16, 4), (3, 9, None, 8), (1, 13, 12, 11), (4, 25, 24, 1)])
def test_every_impl_matches_loop(sampling, impl, B, T, window, K):
    n_neg, D, C = 3, 5, 4
    c, z, pred = _inputs(B, T, D, C, K, seed=B * 31 + T + K, bias=True)
    sample = draw_infonce_sample(B, T, K, n_neg, window, sampling, torch.Generator().manual_seed(B + K))
    fast = info_nce(c, z, pred, K, n_neg, window, sampling, sample=sample, impl=impl)
    slow = info_nce_loop(c, z, pred, K, n_neg, window, sampling, sample=sample)
    torch.testing.assert_close(fast.per_step_loss, slow.per_step_loss, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(fast.accuracy, slow.accuracy)
    w = torch.linspace(0.5, 1.5, K, dtype=torch.float64)
    params = [c, z, pred.weight, pred.bias]
    grads_fast = torch.autograd.grad(fast.loss + (w * fast.per_step_loss).sum(), params)
    grads_slow = torch.autograd.grad(slow.loss + (w * slow.per_step_loss).sum(), params)
    for a, b in zip(grads_fast, grads_slow):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("impl", ["banked", "chunked"])
def test_targets_without_gradient_and_shared_c_z(impl):
    # GRU module: z is the detached input (no gradient); GIM: c and z are the same tensor
    B, T, K, n = 2, 20, 3, 4
    c, z, pred = _inputs(B, T, 6, 6, K, seed=4)
    sample = draw_infonce_sample(B, T, K, n, 16, "reference", torch.Generator().manual_seed(2))
    zd = z.detach()
    fast = info_nce(c, zd, pred, K, n, 16, sample=sample, impl=impl)
    slow = info_nce_loop(c, zd, pred, K, n, 16, sample=sample)
    torch.testing.assert_close(torch.autograd.grad(fast.loss, c), torch.autograd.grad(slow.loss, c))
    fast = info_nce(z, z, pred, K, n, 16, sample=sample, impl=impl)
    slow = info_nce_loop(z, z, pred, K, n, 16, sample=sample)
    torch.testing.assert_close(torch.autograd.grad(fast.loss, z), torch.autograd.grad(slow.loss, z))


def test_gradcheck_banked_and_chunked_functions():
    from smooth_infomax.model.infonce import _BankedLogits, _ChunkedLogits

    g = torch.Generator().manual_seed(0)
    B, L, D, C, K, n = 2, 6, 3, 2, 3, 2
    R1 = B * (L - 1)
    args = [torch.randn(B, L, D, generator=g, dtype=torch.float64, requires_grad=True),
            torch.randn(K * C, D, generator=g, dtype=torch.float64, requires_grad=True),
            torch.randn(K * C, generator=g, dtype=torch.float64, requires_grad=True),
            torch.randn(B, L, C, generator=g, dtype=torch.float64, requires_grad=True)]
    G = torch.randn(R1, n, C, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_BankedLogits.apply, (*args, G))
    z_flat = torch.randn(B * L, C, generator=g, dtype=torch.float64, requires_grad=True)
    idx = torch.randint(0, B * L, (K, R1, n), generator=g)
    assert torch.autograd.gradcheck(_ChunkedLogits.apply, (*args, z_flat, idx))


def test_impl_errors_and_module_setting():
    c, z, pred = _inputs(2, 12, 3, 3, 2)
    with pytest.raises(ValueError, match="impl"):
        info_nce(c, z, pred, 2, 3, None, impl="fast")
    with pytest.raises(ValueError, match="banked"):
        info_nce(c, z, pred, 2, 3, None, "batch", impl="banked")
    with pytest.raises(ValueError, match="impl"):
        InfoNCE(3, 3, K=2, impl="nope")
    crit = InfoNCE(3, 3, K=2, n_negatives=3, window=None, impl="chunked").double()
    sample = crit.draw(2, 12, torch.Generator().manual_seed(0))
    a = crit(c, z, sample=sample)
    crit.impl = "banked"
    b = crit(c, z, sample=sample)
    torch.testing.assert_close(a.per_step_loss, b.per_step_loss)
