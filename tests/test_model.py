"""Encoders (SIM, GIM, CPC) and the training wrapper: shapes, modes, gradient isolation, betas."""

import copy

import pytest
import torch

from smooth_infomax.config import LayerSpec, ModelConfig, ModuleSpec, model_config
from smooth_infomax.model import Encoder, ModuleLoss, SmoothInfoMax

PAPER = {"preset": "paper", "channels": 8, "gru_hidden": 6}
THESIS = {"preset": "thesis", "channels": 8}
LOSS = {"prediction_steps": 3, "negatives": 4, "window": 32}


def wave(B=2, T=3200, seed=0):
    return torch.randn(B, 1, T, generator=torch.Generator().manual_seed(seed))


def seeded(cfg, seed=0, loss=LOSS):
    torch.manual_seed(seed)
    return SmoothInfoMax(cfg, loss)


# ---------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("n,expected", [(10240, [511, 129, 64, 64]), (20480, [1023, 257, 128, 128]),
                                        (8821, [441, 111, 55, 55])])
def test_paper_frame_counts_and_shapes(n, expected):
    torch.manual_seed(0)
    enc = Encoder(PAPER).eval()
    assert enc.module_names == ["module0", "module1", "module2", "gru"]
    assert enc.output_dims == [8, 8, 8, 6]
    assert enc.frame_counts(n) == expected
    with torch.no_grad():
        outs = enc.encode(torch.randn(1, n))
    assert [tuple(o.shape) for o in outs] == [(1, t, d) for t, d in zip(expected, enc.output_dims)]


def test_paper_hops_and_receptive_fields():
    enc = Encoder(PAPER)
    assert enc.hops == [20, 80, 160, 160]
    assert enc.receptive_fields == [45, 225, 465, None]


@pytest.mark.parametrize("n,expected", [(10240, [52, 13]), (8800, [44, 11])])
def test_thesis_frame_counts_and_shapes(n, expected):
    torch.manual_seed(0)
    enc = Encoder(THESIS).eval()
    assert enc.module_names == ["module0", "module1"]
    assert enc.frame_counts(n) == expected
    with torch.no_grad():
        outs = enc.encode(torch.randn(2, 1, n), mode="sample")
    assert [tuple(o.shape) for o in outs] == [(2, t, 8) for t in expected]
    assert enc.hops == [192, 768] and enc.receptive_fields == [870, 5286]


def test_thesis_head_padding_two_gives_54_frames():
    cfg = model_config({"preset": "thesis", "channels": 4})
    cfg.modules[0].head_padding = 2
    enc = Encoder(cfg)
    assert enc.frame_counts(10240)[0] == 54
    with torch.no_grad():
        assert enc.encode(torch.randn(1, 10240), upto=0)[0].shape == (1, 54, 4)


def test_cpc_encoder():
    torch.manual_seed(0)
    enc = Encoder({**PAPER, "kind": "cpc"}).eval()
    assert enc.module_names == ["cnn", "gru"] and enc.output_dims == [8, 6]
    assert enc.frame_counts(10240) == [64, 64] and enc.hops == [160, 160]
    assert enc.stages[0].logvar_head is None
    n_conv = sum(isinstance(m, torch.nn.Conv1d) for m in enc.stages[0].body)
    assert n_conv == 5
    with torch.no_grad():
        a = enc.encode(torch.randn(2, 10240, generator=torch.Generator().manual_seed(0)), mode="sample")
        b = enc.encode(torch.randn(2, 10240, generator=torch.Generator().manual_seed(0)), mode="mean")
    assert [tuple(o.shape) for o in a] == [(2, 64, 8), (2, 64, 6)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_batch_norm_layers_follow_config():
    with_bn = Encoder({**PAPER, "batch_norm": True})
    without = Encoder(PAPER)
    count = lambda e: sum(isinstance(m, torch.nn.BatchNorm1d) for m in e.modules())  # noqa: E731
    assert count(with_bn) == 5 and count(without) == 0


def test_too_short_input_and_bad_shapes():
    enc = Encoder(PAPER)
    with pytest.raises(ValueError, match="too short"):
        enc.encode(torch.randn(1, 40))
    with pytest.raises(ValueError, match="waveform"):
        enc.encode(torch.randn(1, 2, 3200))
    with pytest.raises(ValueError, match="mode"):
        enc.encode(torch.randn(1, 3200), mode="median")


# ---------------------------------------------------------------------------------------------- modes


def test_mean_is_deterministic_and_sample_is_not():
    torch.manual_seed(0)
    enc = Encoder(PAPER).eval()
    x = wave()
    with torch.no_grad():
        m1, m2 = enc.encode(x, mode="mean"), enc.encode(x)
        s1, s2 = enc.encode(x, mode="sample"), enc.encode(x, mode="sample")
        g1 = enc.encode(x, mode="sample", generator=torch.Generator().manual_seed(3))
        g2 = enc.encode(x, mode="sample", generator=torch.Generator().manual_seed(3))
        stats = enc.encode(x, mode="mean", return_stats=True)
        stats_s = enc.encode(x, mode="sample", return_stats=True)
    assert all(torch.equal(a, b) for a, b in zip(m1, m2))
    assert all(not torch.equal(a, b) for a, b in zip(s1, s2))  # every output, the GRU included (its input differs)
    assert all(not torch.equal(a, b) for a, b in zip(m1, s1))
    assert all(torch.equal(a, b) for a, b in zip(g1, g2))
    assert [sorted(d) for d in stats] == [["logvar", "mu", "z"]] * 4
    assert all(torch.equal(d["z"], d["mu"]) for d in stats[:3])
    assert stats[3]["mu"] is None and stats[3]["logvar"] is None and torch.equal(stats[3]["z"], m1[3])
    assert not torch.equal(stats_s[0]["z"], stats_s[0]["mu"])
    lo, hi = enc.config.logvar_min, enc.config.logvar_max
    assert all(bool(((d["logvar"] >= lo) & (d["logvar"] <= hi)).all()) for d in stats_s[:3])


def test_sample_at_one_module_only_and_upto():
    torch.manual_seed(0)
    enc = Encoder(PAPER).eval()
    x = wave()
    with torch.no_grad():
        mean = enc.encode(x)
        mixed = enc.encode(x, mode=["mean", "sample", "mean", "mean"])
        part = enc.encode(x, upto=1)
        by_name = enc.encode(x, upto="module1")
    assert torch.equal(mixed[0], mean[0]) and not torch.equal(mixed[1], mean[1])
    assert len(part) == 2 and all(torch.equal(a, b) for a, b in zip(part, mean))
    assert len(by_name) == 2


def test_gim_ignores_mode():
    torch.manual_seed(0)
    enc = Encoder({**PAPER, "kind": "gim"}).eval()
    x = wave()
    with torch.no_grad():
        a, b = enc.encode(x, mode="mean"), enc.encode(x, mode="sample")
    assert all(torch.equal(u, v) for u, v in zip(a, b))


def test_encoder_trains_mode_and_forward_alias():
    torch.manual_seed(0)
    enc = Encoder({**PAPER, "batch_norm": True})
    x = wave(B=3)
    out = enc(x)  # train mode, with autograd
    assert len(out) == 4 and out[0].requires_grad
    enc.eval()
    with torch.no_grad():
        a = enc(x)
        b = enc.encode(x[:1])
    torch.testing.assert_close(a[2][:1], b[2])  # eval BN: independent of the rest of the batch


def test_from_config(tmp_path):
    full = tmp_path / "run.yaml"
    full.write_text("model:\n  preset: thesis\n  channels: 4\nloss:\n  beta: 0.0035\ndata:\n  crop: 10240\n")
    section = tmp_path / "model.yaml"
    section.write_text("preset: paper\nchannels: 4\ngru_hidden: null\nkind: gim\n")
    a = Encoder.from_config(full)
    assert a.module_names == ["module0", "module1"] and a.output_dims == [4, 4]
    b = Encoder.from_config(str(section))
    assert b.module_names == ["module0", "module1", "module2"] and b.kind == "gim"
    c = Encoder.from_config({"model": {"preset": "paper", "channels": 4, "kind": "cpc"}})
    assert c.module_names == ["cnn", "gru"]
    cfg = ModelConfig(kind="sim", channels=4, gru_hidden=None,
                      modules=[ModuleSpec(layers=[LayerSpec(kernel=4, stride=2, padding=1)])])
    d = Encoder.from_config(cfg)
    assert d.frame_counts(100) == [50] and d.config == cfg and d.config is not cfg


# ---------------------------------------------------------------------------------------------- losses


def test_sim_losses_and_names():
    sim = seeded(PAPER)
    losses = sim(wave())
    assert [ml.name for ml in losses] == sim.module_names == ["module0", "module1", "module2", "gru"]
    assert all(isinstance(ml, ModuleLoss) for ml in losses)
    assert [ml.n_frames for ml in losses] == sim.encoder.frame_counts(3200)
    for ml in losses:
        assert ml.loss.shape == () and ml.accuracy.shape == (3,) and torch.isfinite(ml.loss)
    for ml in losses[:3]:
        assert float(ml.kl.detach()) > 0 and ml.beta == 0.01
        torch.testing.assert_close(ml.loss, ml.infonce + 0.01 * ml.kl)
    assert float(losses[3].kl) == 0 and torch.equal(losses[3].loss, losses[3].infonce)
    assert [c.predictor.weight.shape for c in sim.criteria] == [(24, 8)] * 3 + [(24, 6)]


def test_single_example_batch():
    sim = seeded({**PAPER, "batch_norm": True})
    losses = sim(wave(B=1))
    assert all(torch.isfinite(ml.loss) for ml in losses)


def test_per_module_beta_and_mean_reduction():
    sim = seeded(PAPER, loss={**LOSS, "beta": [0.1, 0.2, 0.3], "kl_reduction": "mean"})
    losses = sim(wave())
    assert [ml.beta for ml in losses] == [0.1, 0.2, 0.3, 0.0]
    for ml in losses:
        torch.testing.assert_close(ml.loss, ml.infonce + ml.beta * ml.kl)
    gim = seeded({**PAPER, "kind": "gim"}, loss={**LOSS, "beta": 0.5})
    assert all(ml.beta == 0 and float(ml.kl) == 0 and torch.equal(ml.loss, ml.infonce) for ml in gim(wave()))


def test_kl_reduction_is_reference_by_default():
    sim = seeded(PAPER)
    x = wave()
    torch.manual_seed(5)
    ref = sim(x)
    sim.kl_reduction = "mean"
    torch.manual_seed(5)
    mean = sim(x)
    for r, m in zip(ref[:3], mean[:3]):
        torch.testing.assert_close(r.kl, m.kl * r.n_frames)


def _grad_norms(params):
    return [0.0 if p.grad is None else float(p.grad.abs().sum()) for p in params]


def test_gradient_isolation():
    sim = seeded(PAPER)
    losses = sim(wave())
    losses[1].loss.backward()
    assert all(g == 0 for g in _grad_norms(sim.parameters_of(0)))
    assert all(g == 0 for g in _grad_norms(sim.parameters_of(2)))
    assert all(g == 0 for g in _grad_norms(sim.parameters_of(3)))
    assert sum(_grad_norms(sim.parameters_of(1))) > 0
    sim.zero_grad(set_to_none=True)
    losses = sim(wave())
    losses[3].loss.backward()  # the GRU loss trains only the GRU and its predictor
    assert all(sum(_grad_norms(sim.parameters_of(i))) == 0 for i in range(3))
    assert all(g > 0 for g in _grad_norms(sim.parameters_of(3)))


def test_joint_backward_equals_per_module_backward():
    sim = seeded(PAPER)
    x = wave()
    torch.manual_seed(1)
    sum(ml.loss for ml in sim(x)).backward()
    joint = [p.grad.clone() for i in range(4) for p in sim.parameters_of(i)]
    sim.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    losses = sim(x)
    for ml in losses:
        ml.loss.backward()
    separate = [p.grad.clone() for i in range(4) for p in sim.parameters_of(i)]
    for a, b in zip(joint, separate):
        torch.testing.assert_close(a, b)


def test_gim_logvar_head_gets_no_gradient():
    sim = seeded({**PAPER, "kind": "gim"})
    sum(ml.loss for ml in sim(wave())).backward()
    for stage in list(sim.encoder.stages)[:3]:
        assert all(p.grad is None for p in stage.logvar_head.parameters())
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in stage.mu_head.parameters())


def test_sim_logvar_head_gets_gradient_from_kl_and_infonce():
    sim = seeded(PAPER)
    sum(ml.loss for ml in sim(wave())).backward()
    assert all(p.grad.abs().sum() > 0 for p in sim.encoder.stages[0].logvar_head.parameters())


def test_cpc_trains_end_to_end():
    sim = seeded({**PAPER, "kind": "cpc"})
    assert sim.module_names == ["cpc"] and len(sim.criteria) == 1
    assert sim.criteria[0].predictor.weight.shape == (24, 6)
    losses = sim(wave())
    assert len(losses) == 1 and losses[0].name == "cpc" and float(losses[0].kl) == 0
    assert losses[0].n_frames == 20
    losses[0].loss.backward()
    convs = [m for m in sim.encoder.stages[0].body if isinstance(m, torch.nn.Conv1d)]
    assert all(c.weight.grad is not None and c.weight.grad.abs().sum() > 0 for c in convs)
    assert all(p.grad.abs().sum() > 0 for p in sim.encoder.stages[1].parameters())
    assert len(sim.parameters_of(0)) == len(list(sim.parameters()))


def test_two_samples_option():
    seen = {}

    def hook(module, args, output):
        seen["c"], seen["z"] = args[0], args[1]

    for two in (True, False):
        sim = seeded({**PAPER, "two_samples": two})
        sim.criteria[0].register_forward_hook(hook)
        sim(wave(), train_modules=[0])
        assert (seen["c"] is seen["z"]) is (not two)
        if two:
            assert not torch.equal(seen["c"], seen["z"])


def test_train_modules_sequential():
    sim = seeded(PAPER)
    losses = sim(wave(), train_modules=[1])
    assert [ml.name for ml in losses] == ["module1"]
    losses[0].loss.backward()
    assert all(g == 0 for g in _grad_norms(sim.parameters_of(0)))
    assert sum(_grad_norms(sim.parameters_of(1))) > 0
    assert [ml.name for ml in sim(wave(), train_modules=[3])] == ["gru"]
    assert [ml.name for ml in sim(wave(), train_modules=[0, 2])] == ["module0", "module2"]
    with pytest.raises(ValueError, match="out of range"):
        sim(wave(), train_modules=[4])


def test_module_forward_with_cached_inputs_matches_forward():
    sim = seeded(PAPER)
    x = wave()
    torch.manual_seed(3)
    full = sim(x)
    torch.manual_seed(3)
    h, chained = x, []
    for i in range(4):
        ml, h = sim.module_forward(i, h)
        chained.append(ml)
        assert not h.requires_grad
    assert h.shape == (2, 6, 20)  # the GRU context, conv layout
    for a, b in zip(full, chained):
        assert a.name == b.name
        torch.testing.assert_close(a.loss, b.loss)


def test_parameters_of_partition_the_model():
    sim = seeded(PAPER)
    groups = [{id(p) for p in sim.parameters_of(i)} for i in range(sim.n_modules)]
    assert sum(len(g) for g in groups) == len(set().union(*groups)) == len(list(sim.parameters()))
    for i, g in enumerate(groups):
        assert {id(p) for p in sim.criteria[i].parameters()} <= g


def test_logvar_clamp_keeps_the_loss_finite():
    sim = seeded(PAPER)
    with torch.no_grad():
        sim.encoder.stages[0].logvar_head.bias.fill_(1e4)
    losses = sim(wave())
    assert all(torch.isfinite(ml.loss) for ml in losses)
    assert float(losses[0].kl.detach()) > 0


def test_eval_no_grad_validation_and_state_dict_roundtrip():
    sim = seeded({**PAPER, "batch_norm": True})
    sim.eval()
    with torch.no_grad():
        losses = sim(wave())
    assert all(not ml.loss.requires_grad for ml in losses)
    enc = Encoder(sim.encoder.config)
    enc.load_state_dict(sim.encoder.state_dict())
    copy = SmoothInfoMax(sim.encoder.config, LOSS)
    copy.load_state_dict(sim.state_dict())


def test_input_norm_rms_makes_encoding_gain_invariant():
    from smooth_infomax.config import model_config
    from smooth_infomax.model import Encoder

    cfg = model_config({"preset": "paper", "channels": 8, "gru_hidden": 8, "input_norm": "rms"})
    torch.manual_seed(0)
    enc = Encoder(cfg).eval()
    wave = torch.randn(2, 1, 3200) * 0.05
    a = enc.encode(wave, mode="mean")
    b = enc.encode(wave * 20.0, mode="mean")
    for x, y in zip(a, b):
        assert torch.allclose(x, y, atol=1e-5)
    raw = Encoder(model_config({"preset": "paper", "channels": 8, "gru_hidden": 8}))
    raw.load_state_dict(enc.state_dict())
    assert not torch.allclose(raw.eval().encode(wave)[0], raw.encode(wave * 20.0)[0])


def test_logvar_bias_init_sets_the_initial_posterior_noise():
    from smooth_infomax.config import model_config
    from smooth_infomax.model import Encoder

    enc = Encoder(model_config({"preset": "paper", "channels": 8, "gru_hidden": None, "logvar_bias_init": -4.0}))
    for stage in enc.stages:
        assert torch.equal(stage.logvar_head.bias.detach(), torch.full((8,), -4.0))
    default = Encoder(model_config({"preset": "paper", "channels": 8, "gru_hidden": None}))
    assert not torch.equal(default.stages[0].logvar_head.bias.detach(), torch.full((8,), -4.0))


# ---- speed paths (model/modules.py): same results as the plain layers, to float rounding ----


@pytest.mark.parametrize("batch, channels, n, kernel, stride, padding, bias", [
    (2, 8, 400, 10, 5, 2, True), (5, 16, 333, 10, 5, 0, True), (3, 4, 97, 7, 3, 1, False), (4, 6, 50, 1, 1, 0, True)])
def test_frame_conv1d_matches_conv1d_forward_and_backward(batch, channels, n, kernel, stride, padding, bias):
    from smooth_infomax.model.modules import frame_conv1d

    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, n, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(channels, 1, kernel, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(channels, generator=g, dtype=torch.float64, requires_grad=True) if bias else None
    ref = torch.nn.functional.conv1d(x, w, b, stride=stride, padding=padding)
    out = frame_conv1d(x, w, b, stride, padding)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    grad = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    params = [x, w] + ([b] if bias else [])
    ref_grads = torch.autograd.grad(ref, params, grad)
    out_grads = torch.autograd.grad(out, params, grad)
    for r, o in zip(ref_grads, out_grads):
        torch.testing.assert_close(o, r, rtol=1e-12, atol=1e-12)


def test_wave_conv_is_a_conv1d_with_the_same_state_dict_and_outputs():
    from smooth_infomax.model.modules import WaveConv1d

    torch.manual_seed(0)
    wave = WaveConv1d(1, 16, 10, stride=5, padding=2)
    plain = torch.nn.Conv1d(1, 16, 10, stride=5, padding=2)
    plain.load_state_dict(wave.state_dict())
    assert isinstance(wave, torch.nn.Conv1d) and set(wave.state_dict()) == {"weight", "bias"}
    for batch in (1, 3):  # batch 1 takes the plain convolution, batch 3 the matmul
        x = torch.randn(batch, 1, 640)
        torch.testing.assert_close(wave(x), plain(x), rtol=1e-5, atol=1e-5)


def test_speed_paths_leave_a_training_step_unchanged():
    """The encoder's first layer as WaveConv1d and in-place ReLUs vs plain Conv1d / ReLU: same loss and
    gradients (float32 rounding) for SIM with and without batch norm."""
    from smooth_infomax.model.modules import WaveConv1d

    for batch_norm in (False, True):
        cfg = {"preset": "paper", "kind": "sim", "channels": 16, "gru_hidden": 8, "batch_norm": batch_norm}
        torch.manual_seed(0)
        fast = SmoothInfoMax(model_config(cfg), {"prediction_steps": 3, "negatives": 2, "window": 16})
        plain = copy.deepcopy(fast)
        assert isinstance(fast.encoder.stages[0].body[0], WaveConv1d)
        for stage in plain.encoder.stages:
            for i, layer in enumerate(getattr(stage, "body", [])):
                if isinstance(layer, WaveConv1d):
                    conv = torch.nn.Conv1d(1, layer.out_channels, layer.kernel_size, layer.stride, layer.padding)
                    conv.load_state_dict(layer.state_dict())
                    stage.body[i] = conv
                elif isinstance(layer, torch.nn.ReLU):
                    assert layer.inplace
                    stage.body[i] = torch.nn.ReLU()
        wave = 0.1 * torch.randn(4, 1, 3200)
        results = []
        for model in (fast, plain):
            torch.manual_seed(1)
            total = sum(ml.loss for ml in model(wave))
            model.zero_grad()
            total.backward()
            results.append((total.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
        torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-6)
        assert len(results[0][1]) == len(results[1][1]) > 0
        for a, b in zip(results[0][1], results[1][1]):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)
