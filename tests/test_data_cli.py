import json

import pytest

from conftest import write_audio
from smooth_infomax.cli import main
from smooth_infomax.data import cli as data_cli


@pytest.fixture
def clips(tmp_path):
    root = tmp_path / "clips"
    write_audio(root / "a.wav", 16000)
    write_audio(root / "sub" / "b.flac", 8000, 8000)
    return root


def test_info_text_and_json(clips, capsys):
    assert main(["data", "info", str(clips)]) == 0
    out = capsys.readouterr().out
    assert "folder layout" in out and "2 files" in out and "16000 Hz (1)" in out and "8000 Hz (1)" in out
    assert main(["data", "info", str(clips), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["layout"] == "folder" and d["views"]["utterances"]["all"]["files"] == 2
    assert d["views"]["utterances"]["all"]["hours"] == pytest.approx(2 / 3600, abs=1e-4)


def test_truncated_wav_gives_exit_2_naming_it(clips, capsys):
    data = (clips / "a.wav").read_bytes()
    bad = clips / "sub" / "cut.wav"
    bad.write_bytes(data[: len(data) // 3])
    assert main(["data", "info", str(clips)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and str(bad) in err and "truncated" in err and len(err.splitlines()) == 1
    assert main(["data", "info", str(clips), "--skip-bad"]) == 0
    captured = capsys.readouterr()
    assert "skipped 1 unreadable file(s)" in captured.out


def test_info_missing_path(tmp_path, capsys):
    assert main(["data", "info", str(tmp_path / "nowhere")]) == 2
    assert "nowhere does not exist" in capsys.readouterr().err


def test_info_artificial_speech(artificial_root, capsys):
    assert main(["data", "info", str(artificial_root)]) == 0
    out = capsys.readouterr().out
    assert "artificial layout (851 words, 2541 syllables)" in out
    assert "words / train: 680 files" in out and "syllables / test: 360 files" in out
    assert "leakage_free: words 485 train / 366 test; syllables 1821 train / 360 test" in out


def test_synth_calls_generate(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(data_cli, "generate", lambda out, **kw: calls.append((out, kw)))
    assert main(["data", "synth", "--out", str(tmp_path / "s"), "--seed", "3", "--words", "5", "--voices", "2"]) == 0
    assert calls == [(str(tmp_path / "s"), {"seed": 3, "n_words": 5, "n_voices": 2})]


def test_data_without_subcommand(capsys):
    assert main(["data"]) == 2
    assert "info" in capsys.readouterr().out


def test_labels_import_needs_a_source_and_names_bad_input(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["data", "labels", "import", "--out", str(tmp_path / "o")])
    assert main(["data", "labels", "import", "--textgrid", str(tmp_path / "nothere"), "--out", str(tmp_path)]) == 2
    assert "is not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["data", "labels", "import", "--textgrid", str(tmp_path / "empty"), "--out", str(tmp_path)]) == 2
    assert "holds no .TextGrid files" in capsys.readouterr().err
    assert main(["data", "labels", "import", "--ctm", str(tmp_path / "x.ctm"), "--out", str(tmp_path)]) == 2
    assert "x.ctm does not exist" in capsys.readouterr().err
    assert main(["data", "labels", "import", "--ctm", str(tmp_path / "x.ctm"), "--silence", "a b",
                 "--out", str(tmp_path)]) == 2
    assert "silence mapping 'a b'" in capsys.readouterr().err


def test_labels_import_ctm_writes_cpc_files(tmp_path, capsys):
    ctm = tmp_path / "a.ctm"
    ctm.write_text("u1 1 0.00 0.03 sil\nu1 1 0.03 0.02 AH1\nu1 1 0.05 0.01 spn\nu2 1 0.01 0.02 B\n")
    assert main(["data", "labels", "import", "--ctm", str(ctm), "--out", str(tmp_path / "o"), "--spn", "drop"]) == 0
    assert "2 utterances, 9 frames of 10 ms, 41 phone classes" in capsys.readouterr().out
    names = [line.split()[1] for line in (tmp_path / "o" / "phones.txt").read_text().splitlines()]
    text = (tmp_path / "o" / "converted_aligned_phones.txt").read_text()
    lines = dict(line.split(" ", 1) for line in text.splitlines())
    assert [names[int(i)] if i != "-1" else None for i in lines["u1"].split()] == ["sil"] * 3 + ["AH"] * 2 + [None]
    assert [names[int(i)] for i in lines["u2"].split()] == ["sil", "B", "B"]
