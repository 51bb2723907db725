"""Every figure function writes a valid, non-empty PNG from tiny inputs."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from smooth_infomax.analysis import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path, min_bytes: int = 2000):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > min_bytes
    assert b"IEND" in data[-16:]


def test_weight_density_plot(tmp_path):
    rng = np.random.default_rng(0)
    weights = {"GIM": rng.standard_normal((3, 32)), "SIM": rng.laplace(size=(3, 32)) * (rng.random((3, 32)) < 0.3),
               "flat": np.ones((3, 4))}
    out = plots.weight_density_plot(weights, tmp_path / "sub" / "density.png", "Module 1")
    assert out == tmp_path / "sub" / "density.png"
    assert_png(out)
    assert_png(plots.weight_density_plot(weights, tmp_path / "ref.png", normalize="reference"))
    with pytest.raises(ValueError, match="empty"):
        plots.weight_density_plot({}, tmp_path / "x.png")


def test_latent_histograms(tmp_path):
    z = np.random.default_rng(0).standard_normal((200, 8))
    z[:, 1] = 0.0  # a collapsed dimension must not break the plot
    assert_png(plots.latent_histograms(z, tmp_path / "hist.png", dims=6, bins=20))
    assert_png(plots.latent_histograms(z, tmp_path / "hist2.png", dims=[7, 0], bins=10))
    with pytest.raises(ValueError, match="dims"):
        plots.latent_histograms(z, tmp_path / "bad.png", dims=[9])


def test_tsne_plot(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    x = rng.standard_normal((60, 5)) + 4.0 * labels[:, None]
    out = plots.tsne_plot(x, labels, ["ba", "bi", "bu"], tmp_path / "tsne.png", seed=0, perplexity=30)
    assert_png(out)
    # tiny set (perplexity clamped), no names
    assert_png(plots.tsne_plot(x[:9], labels[:9], None, tmp_path / "tiny.png", max_iter=250))
    with pytest.raises(ValueError, match="label"):
        plots.tsne_plot(x, labels[:5], None, tmp_path / "bad.png")


def test_loss_curves_from_csv_and_records(tmp_path):
    path = tmp_path / "metrics.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["epoch", "split", "module", "loss", "infonce", "kl", "accuracy"])
        w.writeheader()
        for epoch in range(1, 6):
            for module in ("conv1", "conv2"):
                for split in ("train", "val"):
                    w.writerow({"epoch": epoch, "split": split, "module": module, "loss": 3.0 / epoch,
                                "infonce": 2.5 / epoch + (split == "val") * 0.1, "kl": 0.1 * epoch,
                                "accuracy": 0.1 * epoch})
    assert_png(plots.loss_curves(path, tmp_path / "loss.png"))
    # missing columns and empty cells are tolerated
    records = [{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": ""}, {"epoch": 3, "loss": 1.0}]
    assert_png(plots.loss_curves(records, tmp_path / "loss2.png"))
    assert_png(plots.loss_curves([{"accuracy": 0.5}], tmp_path / "loss3.png"), min_bytes=500)


def test_ics_curves(tmp_path):
    ds = [0, 2, 4, 8, 16, 32]
    curves = {"GIM": (ds, [1.0, 0.95, 0.9, 0.7, 0.4, 0.0]), "SIM": (ds, [1.0, 0.6, 0.3, 0.1, 0.05, 0.0])}
    assert_png(plots.ics_curves(curves, tmp_path / "ics.png"))
    with pytest.raises(ValueError, match="empty"):
        plots.ics_curves({}, tmp_path / "x.png")


def test_no_pyplot_figures_left_open(tmp_path):
    import sys

    z = np.random.default_rng(0).standard_normal((50, 2))
    plots.latent_histograms(z, tmp_path / "h.png", dims=2, bins=10)
    if "matplotlib.pyplot" in sys.modules:  # another test may have imported pyplot; ours must not add figures
        assert not sys.modules["matplotlib.pyplot"].get_fignums()


def _tone(freq, seconds=0.5, sr=16000):
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_log_mel_image_puts_a_tone_in_its_band():
    low, high = plots.log_mel_image(_tone(500)), plots.log_mel_image(_tone(4000))
    assert low.shape == (64, 51) and high.shape == (64, 51)  # 10 ms hop, centred frames
    lo_bin, hi_bin = int(low.mean(1).argmax()), int(high.mean(1).argmax())
    assert lo_bin < hi_bin
    # a tone an octave up moves up the mel axis, and 8 kHz sample rate halves the band per bin
    assert int(plots.log_mel_image(_tone(1000)).mean(1).argmax()) > lo_bin
    assert plots.log_mel_image(np.zeros(100, dtype=np.float32)).shape[0] == 64  # shorter than a window: padded
    with pytest.raises(ValueError, match="finite"):
        plots.log_mel_image(np.array([np.nan] * 500))


def test_spectrogram_png_and_strip(tmp_path):
    assert_png(plots.spectrogram_png(_tone(800), tmp_path / "spec.png", 16000, title="tone"))
    waves = [_tone(f, 0.3) for f in (300, 600, 1200, 2400)]
    out = plots.spectrogram_strip(waves, [-2.68, -0.9, 0.9, 2.68], tmp_path / "strip.png", 16000,
                                  title="dim 3", value_name="z3")
    assert_png(out)
    import matplotlib.image as mpimg

    strip, single = mpimg.imread(str(out)), mpimg.imread(str(tmp_path / "spec.png"))
    assert strip.shape[1] > 2 * single.shape[1]  # one panel per value, side by side
    with pytest.raises(ValueError, match="one traversed value per waveform"):
        plots.spectrogram_strip(waves, [0.0], tmp_path / "bad.png")
