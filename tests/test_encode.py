"""`smooth-infomax encode` and the Python API (`smooth_infomax.load`, `Encoder.from_config`)."""

from pathlib import Path

import numpy as np
import soundfile as sf
import torch

import smooth_infomax
from smooth_infomax.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "smooth_infomax" / "configs"


def test_encoder_from_config_paper_and_thesis_shapes():
    enc = smooth_infomax.Encoder.from_config(CONFIGS / "sim-artificial-speech-thesis.yaml")
    outs = enc.eval().encode(torch.zeros(1, 1, 10240), mode="mean")
    assert [tuple(o.shape) for o in outs] == [(1, 52, 32), (1, 13, 32)]
    paper = smooth_infomax.Encoder.from_config({"preset": "paper", "channels": 8})
    assert paper.frame_counts(10240) == [511, 129, 64, 64]


def test_encode_file_and_folder(quick_run, tmp_path, capsys):
    run, data = quick_run
    wavs = sorted(Path(data).rglob("*.wav"))[:2]
    assert main(["encode", "--run", str(run), "--input", str(wavs[0]), "--out", str(tmp_path / "one.npz")]) == 0
    enc = smooth_infomax.load(run)
    with np.load(tmp_path / "one.npz") as z:
        assert sorted(z.files) == sorted(enc.module_names)
        n = sf.info(str(wavs[0])).frames
        assert [z[name].shape[0] for name in enc.module_names] == enc.frame_counts(n)
        expected = enc.encode(torch.from_numpy(sf.read(str(wavs[0]), dtype="float32")[0]).view(1, 1, -1))[0][0].detach()
        assert np.allclose(z["module0"], expected.numpy(), atol=1e-5)
    folder = tmp_path / "in"
    folder.mkdir()
    for w in wavs:
        (folder / w.name).write_bytes(w.read_bytes())
    assert main(["encode", "--run", str(run), "--input", str(folder), "--out", str(tmp_path / "many.npz"),
                 "--max-seconds", "0.5"]) == 0
    with np.load(tmp_path / "many.npz") as z:
        assert len(z.files) == 2 * len(enc.module_names)
        assert z[f"{wavs[0].name}/gru"].shape[0] == enc.frame_counts(8000)[-1]


def test_encode_refuses_too_short_and_missing(quick_run, tmp_path, capsys):
    run, _ = quick_run
    sf.write(tmp_path / "tiny.wav", np.zeros(10, dtype=np.float32), 16000)
    tiny, out = str(tmp_path / "tiny.wav"), str(tmp_path / "x.npz")
    assert main(["encode", "--run", str(run), "--input", tiny, "--out", out]) == 2
    err = capsys.readouterr().err
    assert "tiny.wav" in err and "too short" in err and "Traceback" not in err
    assert main(["encode", "--run", str(tmp_path), "--input", tiny, "--out", out]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_encode_batches_files_exactly_and_takes_a_model_source(tmp_path, capsys):
    from test_runs import make_run

    run = make_run(tmp_path / "run", tmp_path)
    enc = smooth_infomax.load(run)
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    lengths = [3000, 5321, 8000]
    for i, n in enumerate(lengths):
        sf.write(folder / f"f{i}.wav", rng.uniform(-0.5, 0.5, n).astype(np.float32), 16000, subtype="FLOAT")
    assert main(["encode", "--model", str(run), "--input", str(folder), "--out", str(tmp_path / "x.npz")]) == 0
    with np.load(tmp_path / "x.npz") as z:
        for i in range(len(lengths)):
            x = torch.from_numpy(sf.read(folder / f"f{i}.wav", dtype="float32")[0]).view(1, 1, -1)
            for name, ref in zip(enc.module_names, enc.encode(x)):
                assert z[f"f{i}.wav/{name}"].shape == tuple(ref[0].shape)
                assert np.allclose(z[f"f{i}.wav/{name}"], ref[0].detach().numpy(), atol=1e-5)
    assert "encoded 3 file(s)" in capsys.readouterr().out
