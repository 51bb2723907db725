"""Done-when of issue 18: a LibriSpeech-layout corpus whose phone file covers one speaker of four trains,
probes speakers on all four and phones on the aligned one, and reports ABX, without an error."""

import json
import shutil
from pathlib import Path

import pytest

from smooth_infomax.abx.evaluate import abx_report_rows, pipeline_abx, run_abx
from smooth_infomax.cli import main
from smooth_infomax.config import load_config
from smooth_infomax.data import detect_layout, open_dataset
from smooth_infomax.probe import ProbeSettings, run_probe
from smooth_infomax.training import train

QUICK = Path(__file__).resolve().parents[1] / "src" / "smooth_infomax" / "configs" / "quick.yaml"


@pytest.fixture(scope="module")
def partial_corpus(synth_data, tmp_path_factory):
    """The synthetic set as a plain LibriSpeech-layout corpus with phone labels for speaker 100 only."""
    root = tmp_path_factory.mktemp("partial") / "corpus"
    shutil.copytree(synth_data, root)
    (root / "factors.csv").unlink()
    lines = (root / "converted_aligned_phones.txt").read_text().splitlines()
    (root / "converted_aligned_phones.txt").write_text("\n".join(x for x in lines if x.startswith("100-")) + "\n")
    return root


@pytest.fixture(scope="module")
def partial_run(partial_corpus, tmp_path_factory):
    cfg = load_config(QUICK, ["train.epochs=1", "train.progress=false", "train.log_tensorboard=false",
                              "model.channels=16", "model.gru_hidden=16", f"data.path={partial_corpus}"])
    run = tmp_path_factory.mktemp("partial_run") / "sim"
    train(cfg, run)
    return run


def test_partial_corpus_trains_probes_and_reports_abx(partial_corpus, partial_run, tmp_path, capsys):
    assert detect_layout(partial_corpus) == "librispeech"
    test_set = open_dataset(partial_corpus, split="test")
    aligned = test_set.aligned_indices()
    assert len(test_set) == 32 and len(aligned) == 8  # one speaker of four has phone labels
    assert {test_set.items[i].key.split("-")[0] for i in aligned} == {"100"}

    speaker = run_probe(partial_run, partial_corpus, tmp_path / "probes", ProbeSettings(task="speaker", seeds=1,
                                                                                       epochs=5))
    phone = run_probe(partial_run, partial_corpus, tmp_path / "probes",
                      ProbeSettings(task="phone", pool="none", seeds=1, epochs=2))
    spk_entry = next(iter(speaker["results"]["encoder"].values()))
    assert spk_entry["n_test"] == 32 and speaker["chance"] == pytest.approx(0.25)  # all four speakers
    frames_aligned = sum(int((test_set[i].labels["phones"] >= 0).sum()) for i in aligned)
    phone_entry = next(iter(phone["results"]["encoder"].values()))
    assert 0 < phone_entry["n_test"] <= frames_aligned  # only the aligned speaker's frames

    res = run_abx(partial_run, partial_corpus, tmp_path / "abx", split="all")
    assert res["n_speakers"] == 1 and res["n_utterances"] == 40
    for model in ("encoder", "random-init", "log-mel"):
        for r in res["results"][model].values():
            assert 0.0 <= r["within"] <= 0.5 and r["across"] is None and r["n_triplets_within"] > 0
    assert json.loads((tmp_path / "abx" / "abx.json").read_text())["n_items"] == res["n_items"]
    assert "| encoder | module0 |" in (tmp_path / "abx" / "abx.md").read_text()

    # the pipeline's stage and the report's rows
    stage = pipeline_abx(partial_run, partial_corpus, tmp_path / "abx2", cache_dir=tmp_path / "features")
    headers, rows = abx_report_rows({"SIM": stage})
    assert headers[2] == "within speaker %" and rows[0][0] == "SIM" and rows[-1][0] == "log-mel"
    assert all(r[3] == "n/a" for r in rows)  # one speaker: no across-speaker triplet

    # and the verb
    assert main(["abx", "--run", str(partial_run), "--data", str(partial_corpus), "--module", "2",
                 "--no-baselines", "--split", "all", "--out", str(tmp_path / "abx3")]) == 0
    out = capsys.readouterr().out
    assert "| encoder | module2 |" in out and "random-init" not in out
    # any feature source: --model (here the same run given as a source spec); --out is then needed
    assert main(["abx", "--model", str(partial_run), "--data", str(partial_corpus), "--split", "all"]) == 2
    assert "pass --out" in capsys.readouterr().err
    assert main(["abx", "--model", str(partial_run), "--data", str(partial_corpus), "--split", "all",
                 "--no-baselines", "--out", str(tmp_path / "abx4")]) == 0
    assert json.loads((tmp_path / "abx4" / "abx.json").read_text())["results"]["encoder"]["gru"]["within"] >= 0


def test_abx_stage_skips_data_without_alignments(partial_corpus, partial_run, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(partial_corpus, bare)
    (bare / "converted_aligned_phones.txt").unlink()
    stage = pipeline_abx(partial_run, bare, tmp_path / "abx")
    assert "skipped" in stage and "phone labels" in stage["skipped"]
    assert abx_report_rows({"SIM": stage})[1] == []


def test_run_pipeline_on_the_partial_corpus_reports_abx(partial_corpus, tmp_path):
    """`smooth-infomax run` on the corpus: its ABX stage, its results.json and the ABX table of report.html."""
    from smooth_infomax.pipeline import PRESETS, Preset, run_pipeline

    preset = Preset(models={"SIM": PRESETS["quick"].models["SIM"]}, probe_tasks=("speaker", "phone"), probe_seeds=1,
                    probe_epochs=3, decoder_epochs=1, ics_items=6, analysis_items=60)
    overrides = ["train.epochs=1", "model.channels=16", "model.gru_hidden=16", "train.log_tensorboard=false"]
    results = run_pipeline("quick", tmp_path, data=partial_corpus, overrides=overrides, preset=preset,
                           log=lambda line: None)
    assert set(results["probes"]["SIM"]) == {"speaker", "phone"}
    abx = results["abx"]["SIM"]
    assert abx["n_speakers"] == 1 and abx["results"]["encoder"]["module0"]["within"] is not None
    assert (tmp_path / "stages" / "abx-sim.json").exists()
    page = (tmp_path / "report.html").read_text()
    assert "ABX error" in page and "within speaker %" in page
