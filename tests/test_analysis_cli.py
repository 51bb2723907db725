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
