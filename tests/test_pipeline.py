"""`smooth-infomax run`: every stage on a tiny preset, the report in a real browser, caching and resume."""

import json
import re

import pytest

from smooth_infomax.pipeline import PRESETS, Preset, run_pipeline
from smooth_infomax.runtime import RuntimeSettings

TINY = Preset(models=PRESETS["quick"].models, synth={"n_words": 48, "n_voices": 2}, probe_seeds=2, probe_epochs=3,
              decoder_epochs=1, ics_items=6, analysis_items=60)
TINY_OVERRIDES = ["train.epochs=1", "model.channels=16", "model.gru_hidden=16", "train.log_tensorboard=false"]


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    pytest.importorskip("espeakng_loader")
    out = tmp_path_factory.mktemp("pipeline")
    logs, calls = [], []

    class Recording(RuntimeSettings):
        def rebalance(self, *args):  # a spy: what the pipeline hands to the threading balancer, and when
            calls.append(args)

    settings = Recording("fixed", 2, notes=["2 torch threads (set by the user)"])
    results = run_pipeline("quick", out, overrides=TINY_OVERRIDES, preset=TINY, log=logs.append, runtime=settings)
    return out, results, logs, calls


@pytest.mark.slow
def test_pipeline_writes_report_and_results(tiny_pipeline):
    out, results, logs, calls = tiny_pipeline
    # threads re-matched to the free cores before every stage (no args) and after every training epoch
    stages_run = [line for line in logs if line.startswith("[run ]")]
    assert calls.count(()) == len(stages_run) > 10
    epochs = [c for c in calls if c]
    assert len(epochs) == 2 and all(len(c) == 2 and c[0] == 0 for c in epochs)  # on_epoch(epoch, rows), 1 per model
    page = (out / "report.html").read_text()
    assert len(re.findall(r"<audio ", page)) >= 3
    assert len(re.findall(r"<img ", page)) >= 4
    assert "figure not available" not in page and "audio not available" not in page
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["probes"]) == {"SIM", "GIM"}
    assert set(saved["probes"]["SIM"]) == {"vowel", "syllable", "consonant", "speaker", "phone"}
    assert set(saved["analysis"]) == {"SIM", "GIM"}
    assert saved["decoders"]["SIM"]["ics"]["relative"][-1] == 0
    assert logs[0] == "[runtime] 2 torch threads (set by the user)"
    assert all(line.startswith("[run ]") for line in logs[1:-1])
    assert saved["timings"]["runtime"] == {"mode": "fixed", "threads": 2, "wait_policy": None,
                                           "notes": ["2 torch threads (set by the user)"], "thread_changes": []}
    assert "Threading and memory settings of the last call: 2 torch threads (set by the user)" in page


@pytest.mark.slow
def test_rerun_skips_finished_stages_and_redoes_missing_ones(tiny_pipeline):
    out, _, _, _ = tiny_pipeline
    (out / "stages" / "probe-gim-vowel.json").unlink()
    logs = []
    run_pipeline("quick", out, overrides=TINY_OVERRIDES, preset=TINY, log=logs.append)
    ran = [line for line in logs if line.startswith("[run ]")]
    assert ran == ["[run ] probe-gim-vowel"]
    assert any(line.startswith("[skip] train-sim") for line in logs)


@pytest.mark.slow
def test_report_renders_in_headless_chromium(tiny_pipeline, tmp_path):
    from test_report import _chromium, browser_check, screenshot_is_blank

    if _chromium() is None:
        pytest.skip("chromium is not installed (scripts/setup.sh installs it as root)")
    out, _, _, _ = tiny_pipeline
    result = browser_check(out / "report.html", tmp_path)
    assert result["images"] and all(result["images"])
    assert len(result["audios"]) >= 3 and all(result["audios"])
    assert result["errors"] == [] and result["console"] == []
    assert not screenshot_is_blank(result["screenshot"])


def test_paper_presets_need_data(tmp_path):
    from smooth_infomax.errors import UserError

    with pytest.raises(UserError, match="needs --data"):
        run_pipeline("thesis", tmp_path)


@pytest.mark.slow
def test_run_with_leakage_free_probes_and_analyses_on_the_leakage_free_split(tmp_path):
    """`run --set data.split_scheme=leakage_free` on the artificial layout: every stage reads that split."""
    from test_runs import make_artificial

    data = make_artificial(tmp_path / "art")
    preset = Preset(models={"SIM": PRESETS["quick"].models["SIM"]}, needs_data=True,
                    probe_tasks=("vowel", "consonant"), probe_seeds=1, probe_epochs=1, decoder_epochs=1,
                    ics_items=4, analysis_items=60)
    overrides = [*TINY_OVERRIDES, "data.split_scheme=leakage_free", "model.channels=8", "model.gru_hidden=8"]
    results = run_pipeline("thesis", tmp_path / "out", data=data, overrides=overrides, preset=preset,
                           log=lambda line: None)
    for task in ("vowel", "consonant"):
        res = results["probes"]["SIM"][task]
        assert res["split_scheme"] == "leakage_free"
        for model in ("encoder", "random-init", "log-mel"):
            for entry in res["results"][model].values():
                assert (entry["n_train"], entry["n_test"]) == (21, 9)  # the reference split has 30 train items
    assert results["analysis"]["SIM"]["split_scheme"] == "leakage_free"
