"""Log-mel code: filterbank and spectrogram against an independent numpy computation, and basic properties."""

import math

import numpy as np
import pytest
import torch

from smooth_infomax.mel import hz_to_mel, log_mel, mel_bin_centres, mel_filterbank, mel_to_hz, power_spectrogram


def np_hz_to_mel(f, scale):
    f = np.asarray(f, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + f / 700.0)
    out = f / (200.0 / 3.0)
    hi = f >= 1000.0
    out[hi] = 15.0 + np.log(f[hi] / 1000.0) * 27.0 / np.log(6.4)
    return out


def np_mel_to_hz(m, scale):
    m = np.asarray(m, dtype=np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    out = m * (200.0 / 3.0)
    hi = m >= 15.0
    out[hi] = 1000.0 * np.exp((m[hi] - 15.0) * np.log(6.4) / 27.0)
    return out


def np_filterbank(n_fft, n_mels, sr, fmin, fmax, scale, norm):
    """Filter by filter, bin by bin: the textbook construction."""
    freqs = np.arange(n_fft // 2 + 1) * sr / n_fft
    edges = np_mel_to_hz(np.linspace(np_hz_to_mel(np.array([fmin]), scale)[0], np_hz_to_mel(np.array([fmax]), scale)[0],
                                     n_mels + 2), scale)
    fb = np.zeros((n_mels, freqs.size))
    for m in range(n_mels):
        lo, c, hi = edges[m], edges[m + 1], edges[m + 2]
        for k, f in enumerate(freqs):
            if lo < f <= c:
                fb[m, k] = (f - lo) / (c - lo)
            elif c < f < hi:
                fb[m, k] = (hi - f) / (hi - c)
        if norm == "slaney":
            fb[m] *= 2.0 / (hi - lo)
    return fb


def np_log_mel(x, n_fft, hop, n_mels, sr, db=False):
    pad = n_fft // 2
    xp = np.pad(x, pad, mode="reflect")
    n_frames = 1 + len(x) // hop
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    frames = np.stack([xp[t * hop:t * hop + n_fft] * win for t in range(n_frames)], axis=1)  # (n_fft, frames)
    power = np.abs(np.fft.rfft(frames, axis=0)) ** 2
    mel = np_filterbank(n_fft, n_mels, sr, 0.0, sr / 2, "htk", "slaney") @ power
    out = np.log10(np.maximum(mel, 1e-10))
    return 10 * out if db else out


@pytest.mark.parametrize("scale", ["htk", "slaney"])
def test_mel_scale_roundtrip_and_reference_points(scale):
    f = torch.tensor([0.0, 200.0, 999.0, 1000.0, 4000.0, 8000.0], dtype=torch.float64)
    assert torch.allclose(mel_to_hz(hz_to_mel(f, scale), scale), f, atol=1e-9)
    assert np.allclose(hz_to_mel(f, scale).numpy(), np_hz_to_mel(f.numpy(), scale), atol=1e-9)
    if scale == "slaney":
        assert float(hz_to_mel(torch.tensor(1000.0), "slaney")) == pytest.approx(15.0)
    else:
        assert float(hz_to_mel(torch.tensor(700.0), "htk")) == pytest.approx(2595 * math.log10(2))


@pytest.mark.parametrize("scale,norm", [("htk", "slaney"), ("htk", None), ("slaney", "slaney"), ("slaney", None)])
def test_filterbank_matches_numpy(scale, norm):
    fb = mel_filterbank(512, 40, 16000, f_min=20.0, f_max=7600.0, mel_scale=scale, norm=norm)
    ref = np_filterbank(512, 40, 16000, 20.0, 7600.0, scale, norm)
    assert fb.shape == (40, 257) and fb.dtype == torch.float32
    assert np.allclose(fb.numpy(), ref, rtol=1e-5, atol=1e-7)
    assert (fb >= 0).all()
    if norm is None:
        assert fb.max() <= 1.0 + 1e-6


def test_log_mel_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(4000).astype(np.float32) * 0.1
    got = log_mel(torch.from_numpy(x), n_fft=512, hop=128, n_mels=40, sample_rate=16000)
    ref = np_log_mel(x.astype(np.float64), 512, 128, 40, 16000)
    assert got.shape == (1, 40, 1 + 4000 // 128)
    assert np.allclose(got[0].numpy(), ref, atol=2e-4)
    db = log_mel(torch.from_numpy(x), n_fft=512, hop=128, n_mels=40, scale="db")
    assert torch.allclose(db, 10 * got, atol=1e-4)


def test_shapes_and_batch_layouts():
    x = torch.randn(3, 1, 2048)
    a = log_mel(x)
    assert a.shape == (3, 80, 1 + 2048 // 256)
    assert torch.allclose(a, log_mel(x[:, 0]))
    assert torch.allclose(a[1:2], log_mel(x[1, 0]))
    # too short to reflect-pad: still works (zero padding)
    assert log_mel(torch.randn(2, 300)).shape == (2, 80, 2)
    assert power_spectrogram(torch.randn(2, 1000), n_fft=64, hop=16, win_length=32).shape == (2, 33, 1 + 1000 // 16)


@pytest.mark.parametrize("freq", [300.0, 1000.0, 3000.0])
def test_pure_tone_peaks_in_the_right_mel_bin(freq):
    t = torch.arange(16000, dtype=torch.float32) / 16000
    lm = log_mel(torch.sin(2 * math.pi * freq * t), n_fft=1024, hop=256, n_mels=80)
    peak = int(lm[0].mean(-1).argmax())
    centres = mel_bin_centres(80, 16000)
    nearest = int((centres - freq).abs().argmin())
    assert abs(peak - nearest) <= 1


def test_silence_hits_the_floor_and_gradients_flow():
    assert torch.allclose(log_mel(torch.zeros(1, 2048)), torch.full((1, 80, 9), -10.0))
    x = torch.randn(1, 2048, requires_grad=True)
    log_mel(x).mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_bad_arguments():
    with pytest.raises(ValueError):
        mel_filterbank(512, 40, 16000, mel_scale="bark")
    with pytest.raises(ValueError):
        mel_filterbank(512, 40, 16000, f_min=9000.0)
    with pytest.raises(ValueError):
        log_mel(torch.zeros(2, 2, 100))
    with pytest.raises(ValueError):
        log_mel(torch.zeros(1, 2048), scale="ln")
