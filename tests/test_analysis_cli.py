"""`smooth-infomax analyze` end to end on a briefly trained SIM encoder."""

import json

from smooth_infomax.cli import main


def test_analyze_writes_json_and_figures(quick_run, tmp_path, capsys):
    run, data = quick_run
    assert main(["analyze", "--run", str(run), "--data", str(data), "--out", str(tmp_path), "--max-items", "300"]) == 0
    res = json.loads((tmp_path / "analysis.json").read_text())
    assert set(res["modules"]) == {"module0", "module1", "module2", "gru"}
    assert res["factors"] == ["consonant", "vowel", "position", "speaker"]
    for name in ("module0", "module1", "module2"):
        m = res["modules"][name]
        g = m["gaussianity"]
        assert 0 <= g["active_dimensions"] <= m["dim"]
        d = m["disentanglement"]
        assert 0 <= d["mig"] <= 1 and 0 <= d["disentanglement"] <= 1 and 0 <= d["sap"] <= 1
        assert m["concentration"]["participation_ratio"] >= 1
        assert (tmp_path / f"histograms_{name}.png").stat().st_size > 1000
        assert (tmp_path / f"tsne_{name}.png").stat().st_size > 1000
    assert "gaussianity" not in res["modules"]["gru"]
    assert "MIG" in capsys.readouterr().out


def test_analyze_needs_factor_labels(quick_run, tmp_path, capsys):
    run, _ = quick_run
    (tmp_path / "a.wav").write_bytes(b"")
    assert main(["analyze", "--run", str(run), "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "syllable labels" in capsys.readouterr().err


def test_analyze_any_source_and_skips_posterior_metrics_for_deterministic_ones(tmp_path, capsys):
    from test_runs import make_artificial, make_run

    data = make_artificial(tmp_path / "art")
    gim = make_run(tmp_path / "gim", data, ("model.kind=gim", "loss.beta=0.0", "data.split_scheme=leakage_free"))
    assert main(["analyze", "--model", str(gim), "--data", str(data), "--out", str(tmp_path / "g"), "--split",
                 "train", "--no-tsne"]) == 0
    res = json.loads((tmp_path / "g" / "analysis.json").read_text())
    assert not res["stochastic"] and res["split_scheme"] == "leakage_free" and res["n_items"] == 21
    assert all("gaussianity" not in m for m in res["modules"].values())
    assert any("deterministic" in n for n in res["notes"]) and "deterministic" in capsys.readouterr().out
    assert set(res["standardization"]) >= {"total_correlation", "concentration", "disentanglement"}
    sim = make_run(tmp_path / "sim", data)
    assert main(["analyze", "--run", str(sim), "--data", str(data), "--out", str(tmp_path / "s"), "--no-tsne"]) == 0
    res = json.loads((tmp_path / "s" / "analysis.json").read_text())
    assert res["stochastic"] and "active_dimensions" in res["modules"]["module0"]["gaussianity"]
    assert res["n_items"] == 9 and res["notes"] == []
