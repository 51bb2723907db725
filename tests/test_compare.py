"""`smooth-infomax compare`: its metrics and settings, and SIM vs GIM vs a saved tiny wav2vec 2.0 end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from smooth_infomax.cli import build_parser, main
from smooth_infomax.compare import (
    CompareSettings,
    compare_models,
    decode_outputs,
    default_tasks,
    display_names,
    factor_matrix,
    output_metrics,
)
from smooth_infomax.errors import UserError
from smooth_infomax.sources.module import ModuleSource


def test_default_tasks_follow_the_layout():
    assert default_tasks("artificial") == ("vowel", "syllable", "consonant")
    assert default_tasks("librispeech") == ("speaker", "phone")
    assert default_tasks("synthetic") == ("vowel", "syllable", "consonant", "speaker", "phone")
    assert default_tasks("folder") == ()


def test_factor_matrix_keeps_varying_factors_in_order():
    labels = {"vowel": np.array([0, 1, 2, 0]), "speaker": np.zeros(4, int), "consonant": np.array([1, 1, 0, 0]),
              "syllable": np.arange(4)}
    f, names = factor_matrix(labels)
    assert names == ["consonant", "vowel"] and f.shape == (4, 2)
    assert factor_matrix({"speaker": np.zeros(3, int)}) == (None, [])


def test_output_metrics_tell_entangled_from_factorised_features():
    rng = np.random.default_rng(0)
    n = 400
    factors = np.stack([rng.integers(0, 3, n), rng.integers(0, 4, n)], axis=1)
    clean = np.concatenate([factors + 0.05 * rng.standard_normal((n, 2)), rng.standard_normal((n, 2))], axis=1)
    mixed = rng.standard_normal((n, 4))
    mixed[:, 1] = mixed[:, 0] + 0.1 * rng.standard_normal(n)  # two nearly equal dims: high total correlation
    st = CompareSettings(max_frames=400, knn_dims=4)
    good = output_metrics(clean, clean, factors, st)
    bad = output_metrics(mixed, mixed, factors, st)
    assert good["mig"] > 0.5 > bad["mig"]
    assert good["dci_disentanglement"] > bad["dci_disentanglement"]
    assert bad["tc_gaussian"] > 1.0 > good["tc_gaussian"]
    assert "active_dimensions" not in good  # no posterior given: no Gaussian-posterior statistics
    post = output_metrics(mixed, mixed, None, st, mu=mixed, logvar=np.zeros_like(mixed), samples=mixed)
    assert post["active_dimensions"] == 4 and "mig" not in post


class _Frames(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 3, kernel_size=160, stride=160)

    def forward(self, wave):
        a = self.conv(wave.unsqueeze(1)).transpose(1, 2)
        return [a, a * 2, a * 3]


def test_decode_outputs_and_names():
    src = ModuleSource(_Frames(), name="frames")
    assert decode_outputs(src, "last") == [2] and decode_outputs(src, "all") == [0, 1, 2]
    assert decode_outputs(src, "none") == []
    other = ModuleSource(_Frames(), name="frames")
    assert display_names(["module:a:b", "module:c:d"], [src, other]) == ["frames", "frames-2"]


def test_settings_and_inputs_are_checked(tmp_path):
    with pytest.raises(UserError, match="--decode"):
        CompareSettings(decode="some").check()
    with pytest.raises(UserError, match="--probe-seeds"):
        CompareSettings(probe_seeds=0).check()
    with pytest.raises(UserError, match="does not exist"):
        compare_models(["hf:x"], tmp_path / "nope", tmp_path / "out")
    assert "compare" in build_parser()._subparsers._group_actions[0].choices
    assert main(["compare", "--models", str(tmp_path), "--data", str(tmp_path / "nope"), "--out",
                 str(tmp_path / "o")]) == 2


# --------------------------------------------------------------------------------------------------
# End to end: a quick SIM run, a quick GIM run and a saved tiny wav2vec 2.0
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gim_run(synth_data, tmp_path_factory):
    from conftest import QUICK_OVERRIDES
    from smooth_infomax.config import load_config
    from smooth_infomax.training import train

    threads = torch.get_num_threads()
    cfg = load_config(Path(__file__).resolve().parents[1] / "src" / "smooth_infomax" / "configs" / "quick.yaml",
                      [*QUICK_OVERRIDES, "train.epochs=2", "model.kind=gim", "loss.beta=0.0",
                       f"data.path={synth_data}"])
    run = tmp_path_factory.mktemp("quick-gim") / "gim"
    try:
        train(cfg, run)
    finally:
        torch.set_num_threads(threads)
    return run


def _tables(page: str) -> list[list[list[str]]]:
    """Every <table> of the page as rows of cell texts (body rows only)."""
    out = []
    for body in re.findall(r"<tbody>(.*?)</tbody>", page, flags=re.S):
        rows = re.findall(r"<tr>(.*?)</tr>", body, flags=re.S)
        out.append([re.findall(r"<td>(.*?)</td>", row, flags=re.S) for row in rows])
    return out


@pytest.mark.slow
def test_compare_sim_gim_and_tiny_wav2vec2_end_to_end(quick_run, gim_run, tmp_path):
    transformers = pytest.importorskip("transformers")  # noqa: F841
    from smooth_infomax.sources.hf import save_tiny_model
    from test_report import _chromium, browser_check, screenshot_is_blank

    sim_run, data = quick_run
    w2v = save_tiny_model(tmp_path / "tiny-w2v", "wav2vec2", layers=2)
    out = tmp_path / "cmp"
    module = "module:test_sources:build_pooling#dim=4,name=pooling"  # any nn.Module factory (tests/ is on sys.path)
    args = ["compare", "--models", str(sim_run), str(gim_run), f"hf:{w2v}", module, "--data", str(data),
            "--out", str(out),
            "--decode", "all", "--probe-seeds", "2", "--probe-epochs", "3", "--analysis-items", "60",
            "--decoder-epochs", "1", "--decoder-items", "8", "--ics-items", "4", "--crop", "3200"]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    models = results["models"]
    assert list(models) == [sim_run.name, gim_run.name, "wav2vec2:tiny-w2v", "pooling"]
    n_rows = sum(len(m["info"]["outputs"]) for m in models.values())
    assert [len(m["info"]["outputs"]) for m in models.values()] == [4, 4, 3, 2]
    assert models["wav2vec2:tiny-w2v"]["info"]["hops"] == [20, 20, 20]
    assert models["pooling"]["info"]["hops"] == [160, 320]
    assert models[sim_run.name]["info"]["stochastic"] and not models[gim_run.name]["info"]["stochastic"]
    for m in models.values():
        assert set(m["probes"]) == set(results["tasks"]) == {"vowel", "syllable", "consonant", "speaker", "phone"}
        for p in m["probes"].values():
            assert set(p["outputs"]) == set(m["info"]["outputs"])
            assert all(0.0 <= e["accuracy_mean"] <= 1.0 for e in p["outputs"].values())
        assert [d["output"] for d in m["decoders"]] == m["info"]["outputs"]
        for d in m["decoders"]:
            assert d["ics"]["relative"][-1] == pytest.approx(0.0, abs=1e-6)
            assert len(d["traversal"]["files"]) == 5 and all(Path(f).is_file() for f in d["traversal"]["files"])
        assert bool(m["decoders"][0]["prior"]) == m["info"]["stochastic"]  # prior samples only with a posterior

    page = (out / "report.html").read_text()
    tables = _tables(page)
    assert len(tables) >= 1 + 5 + 2 + 1  # models, 5 probe tasks, metrics + posterior, ICS
    for rows in tables[1:]:
        assert len(rows) == n_rows, rows  # every layer of every model, in every table
        for row in rows:
            assert all(cell.strip() not in ("", "–", "None", "nan") for cell in row), row
    # a spectrogram beside every player, a strip per traversal
    assert page.count("<audio") == page.count("class='spec'") > 0
    assert page.count("class='strip'") == n_rows
    assert "deterministic model: no posterior" in page  # GIM, wav2vec 2.0, the module
    assert "deterministic output: no posterior" in page  # SIM's GRU
    if _chromium() is None:
        pytest.skip("chromium is not installed (.ci/run installs it)")
    result = browser_check(out / "report.html", tmp_path)
    assert result["images"] and all(result["images"]) and result["audios"] and all(result["audios"])
    assert result["errors"] == [] and result["console"] == []
    assert not screenshot_is_blank(result["screenshot"])
