"""The label-frame rule (features.align_to_label_frames, used by the phone probe and ABX) against what each
encoder frame actually sees: its receptive field and padding, measured by back-propagation."""

import numpy as np
import pytest
import torch

from smooth_infomax.config import model_config
from smooth_infomax.features import LABEL_FRAME, align_to_label_frames
from smooth_infomax.model import Encoder


def analytic_windows(cfg):
    """Per conv module: (hop, left offset, receptive field) -- frame t sees samples
    [t * hop - offset, t * hop - offset + field), derived layer by layer from kernel, stride and padding."""
    out, hop, offset, field = [], 1, 0, 1
    for mod in cfg.modules:
        for layer in [*mod.layers, type(mod.layers[0])(kernel=mod.head_kernel, stride=1, padding=mod.head_padding)]:
            offset += layer.padding * hop
            field += (layer.kernel - 1) * hop
            hop *= layer.stride
        out.append((hop, offset, field))
    return out


def positive(encoder):
    """All weights positive and the input all ones: every ReLU is active and a max-pool passes any increase,
    so raising one input sample changes exactly the frames whose receptive field holds it."""
    for p in encoder.parameters():
        p.data.fill_(0.01)
    return encoder.eval()


def frame_changes(encoder, n_samples, module, t, sample):
    """Whether raising input ``sample`` changes frame ``t`` of conv output ``module``."""
    wave = torch.ones(1, 1, n_samples)
    with torch.no_grad():
        base = encoder.encode(wave, upto=module)[module][0, t]
        wave[0, 0, sample] += 10.0
        moved = encoder.encode(wave, upto=module)[module][0, t]
    return not torch.equal(base, moved)


PRESETS = {
    "paper": {"preset": "paper", "kind": "sim", "channels": 8, "gru_hidden": 8},
    "thesis": {"preset": "thesis", "kind": "sim"},
}


@pytest.mark.parametrize("name", list(PRESETS))
def test_receptive_fields_and_padding_match_the_analytic_windows(name):
    cfg = model_config(PRESETS[name])
    enc = Encoder(cfg)
    n = 16000
    windows = analytic_windows(cfg)
    assert [h for h, _, _ in windows] == enc.hops[: len(windows)]
    assert [f for _, _, f in windows] == enc.receptive_fields[: len(windows)]
    enc = positive(enc)
    counts = enc.frame_counts(n)
    for m, (hop, offset, field) in enumerate(windows):
        for t in (counts[m] // 3, counts[m] // 2):  # interior frames
            lo, hi = t * hop - offset, t * hop - offset + field - 1
            assert frame_changes(enc, n, m, t, lo) and frame_changes(enc, n, m, t, hi), (name, m, t)
            assert not frame_changes(enc, n, m, t, lo - 1) and not frame_changes(enc, n, m, t, hi + 1), (name, m, t)
            assert frame_changes(enc, n, m, t, (lo + hi) // 2)


def assigned_frames(hop, n_frames, n_labels):
    """Which encoder frames the rule puts into each label frame: align one-hot features of the frame index."""
    eye = np.eye(n_frames, dtype=np.float32)
    out = align_to_label_frames(eye, hop, n_labels)
    return [np.flatnonzero(row > 0).tolist() for row in out]


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_label_frame_is_inside_what_its_encoder_frames_see(name):
    """For every conv module of both presets: each encoder frame the rule assigns to label frame f sees part
    of f's samples [160 f, 160 f + 160), and together they see all of them (interior frames; the first and
    last frames also see zero padding)."""
    cfg = model_config(PRESETS[name])
    enc = Encoder(cfg)
    n = 16000
    n_labels = n // LABEL_FRAME
    for m, (hop, offset, field) in enumerate(analytic_windows(cfg)):
        T = enc.frame_counts(n)[m]
        groups = assigned_frames(hop, T, n_labels)
        assert len(groups) >= n_labels - (hop // LABEL_FRAME + 3)
        for f, ts in enumerate(groups[2:-2], start=2):
            a, b = LABEL_FRAME * f, LABEL_FRAME * (f + 1)
            assert ts, (name, m, f)
            for t in ts:
                lo, hi = t * hop - offset, t * hop - offset + field
                assert lo < b and hi > a, (name, m, f, t)  # overlaps label frame f
            if field - offset >= hop:  # the frames' windows tile the label frame without gaps
                union_lo = min(t * hop - offset for t in ts)
                union_hi = max(t * hop - offset + field for t in ts)
                assert union_lo <= a and union_hi >= b, (name, m, f)


def test_paper_encoder_windows_documented_in_real_speech_md():
    """The numbers docs/real-speech.md gives for the paper encoder."""
    windows = analytic_windows(model_config(PRESETS["paper"]))
    assert windows == [(20, 12, 45), (80, 132, 225), (160, 212, 465)]
    # the last conv module: frame t sees [160 t - 212, 160 t + 253): label frame t and ~1.3 / 1.6 frames around
    hop, offset, field = windows[-1]
    centre = -offset + (field - 1) / 2
    assert centre == 20.0  # the window centre is 60 samples (3.75 ms) before label frame t's centre (80)
