"""Exported model folders: export -> from_pretrained gives the run's features exactly; hub repo ids resolve
through huggingface_hub's cache offline; bad folders give one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from safetensors.torch import load_file

import smooth_infomax
from smooth_infomax.cli import main
from smooth_infomax.config import load_config, save_config
from smooth_infomax.errors import UserError
from smooth_infomax.hub import PretrainedEncoder, export_run, from_pretrained
from smooth_infomax.model import Encoder
from smooth_infomax.runs import load_encoder, save_encoder

METRICS = ("epoch,split,module,loss,infonce,kl,accuracy,lr,seconds\n"
           "1,train,module0,2.7,2.6,4.4,0.18,0.001,0.07\n"
           "2,train,module0,2.5,2.4,4.0,0.25,0.001,0.07\n"
           "2,test,module0,2.6,2.5,4.1,0.22,0.001,0.07\n"
           "2,train,gru,1.9,1.9,0.0,0.3,0.001,0.07\n")


def make_run(root: Path, overrides: tuple[str, ...] = (), seed: int = 0) -> Path:
    """A run directory (config.yaml, encoder.pt, metrics.csv) of a small, randomly initialised encoder."""
    run = root / "sim-run"
    run.mkdir(parents=True)
    cfg = load_config("quick", ["model.channels=16", "model.gru_hidden=8", "data.path=/nonexistent/data",
                                "train.epochs=12",
                                "data.layout=artificial", *overrides])
    torch.manual_seed(seed)
    encoder = Encoder(cfg.model)
    with torch.no_grad():  # non-default buffers / biases, so a missed tensor would show
        for p in encoder.parameters():
            p.add_(0.01 * torch.randn_like(p))
    save_config(cfg, run / "config.yaml")
    save_encoder(encoder, cfg, run / "encoder.pt")
    (run / "metrics.csv").write_text(METRICS)
    return run


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def waves() -> torch.Tensor:
    return torch.randn(3, 1, 4000, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("overrides", [(), ("model.batch_norm=true",), ("model.kind=cpc",), ("model.kind=gim",)],
                         ids=["sim", "batchnorm", "cpc", "gim"])
def test_export_then_from_pretrained_gives_identical_features(tmp_path, overrides):
    run = make_run(tmp_path, overrides)
    export_run(run, tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    reference = load_encoder(run)
    model = from_pretrained(tmp_path / "model")
    assert isinstance(model, PretrainedEncoder) and not model.training
    assert set(load_file(str(tmp_path / "model" / "model.safetensors"))) == set(reference.state_dict())
    x = waves()
    for a, b, c in zip(reference.encode(x), model.encode(x), model.extract_features(x[:, 0])):
        assert torch.equal(a, b) and torch.equal(a, c)
    assert smooth_infomax.from_pretrained is from_pretrained


def test_config_json_has_what_encoding_needs(tmp_path):
    run = make_run(tmp_path)
    export_run(run, tmp_path / "model")
    cfg = json.loads((tmp_path / "model" / "config.json").read_text())
    enc = load_encoder(run)
    assert cfg["format"] == "smooth-infomax" and cfg["format_version"] == 1
    assert cfg["sample_rate"] == 16000
    assert cfg["output_names"] == enc.module_names == ["module0", "module1", "module2", "gru"]
    assert cfg["hops"] == enc.hops == [20, 80, 160, 160]
    assert cfg["dims"] == [16, 16, 16, 8]
    assert cfg["model"]["channels"] == 16 and cfg["model"]["kind"] == "sim"
    assert cfg["training"]["epochs_completed"] == 2
    assert cfg["training"]["license"] == "cc-by-nc-sa-4.0"  # the artificial speech data's licence


def test_model_card_reports_architecture_losses_probes_and_licences(tmp_path):
    run = make_run(tmp_path)
    probes = tmp_path / "probes"
    probes.mkdir()
    (probes / "probe_vowel.json").write_text(json.dumps({
        "task": "vowel", "chance": 1 / 3,
        "results": {"encoder": {"module2": {"accuracy_mean": 0.8125, "accuracy_std": 0.01}}}}))
    export_run(run, tmp_path / "model", probes=[probes], licence="cc-by-nc-4.0")
    card = (tmp_path / "model" / "README.md").read_text()
    assert card.startswith("---\n") and "license: cc-by-nc-4.0" in card and "library_name: smooth-infomax" in card
    assert "| module2 | 160 | 10.00 | 16 |" in card                      # architecture: outputs, hops, dims
    assert "Epochs: 2 of 12" in card                                      # epochs completed / configured
    assert "| test | module0 | 2.6 | 2.5 | 4.1 | 0.22 |" in card          # last epoch's losses per module
    assert "| vowel | encoder | module2 | 0.8125 |" in card                # probe results
    assert "CC-BY-NC-SA-4.0" in card and "MIT" in card                    # data and code licences
    assert "1,train" not in card and "| train | module0 | 2.7" not in card  # only the last epoch


def test_save_pretrained_writes_the_same_folder(tmp_path):
    run = make_run(tmp_path)
    export_run(run, tmp_path / "a")
    model = from_pretrained(tmp_path / "a")
    model.save_pretrained(tmp_path / "b")
    for name in ("config.json", "README.md"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text(), name
    x = waves()
    for a, b in zip(model.encode(x), from_pretrained(tmp_path / "b").encode(x)):
        assert torch.equal(a, b)


def _fake_hub_cache(cache: Path, repo_id: str, folder: Path) -> None:
    """huggingface_hub's cache layout: models--owner--name/{refs/main, snapshots/<commit>/<files>}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(folder, repo / "snapshots" / commit)


def test_repo_id_resolves_through_the_hub_cache_offline(tmp_path):
    run = make_run(tmp_path)
    export_run(run, tmp_path / "model")
    _fake_hub_cache(tmp_path / "hub", "someone/sim-tiny", tmp_path / "model")
    model = from_pretrained("someone/sim-tiny", cache_dir=tmp_path / "hub")
    x = waves()
    for a, b in zip(load_encoder(run).encode(x), model.encode(x)):
        assert torch.equal(a, b)
    with pytest.raises(UserError, match="someone/absent.*not found.*offline"):
        from_pretrained("someone/absent", cache_dir=tmp_path / "hub")


@pytest.mark.slow
def test_repo_id_with_hf_hub_cache_env_in_a_fresh_process(tmp_path):
    run = make_run(tmp_path)
    export_run(run, tmp_path / "model")
    _fake_hub_cache(tmp_path / "hub", "someone/sim-tiny", tmp_path / "model")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "OMP_NUM_THREADS": "1"}
    code = ("import smooth_infomax, torch; m = smooth_infomax.from_pretrained('someone/sim-tiny'); "
            "print(m.module_names, m.hops)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "['module0', 'module1', 'module2', 'gru'] [20, 80, 160, 160]" in out.stdout


def test_bad_folders_give_one_line_errors(tmp_path):
    run = make_run(tmp_path)
    export_run(run, tmp_path / "model")
    with pytest.raises(UserError, match="not a folder nor a hub repo id"):
        from_pretrained(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="has no config.json"):
        from_pretrained(empty)
    broken = tmp_path / "broken"
    shutil.copytree(tmp_path / "model", broken)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="config.json is not valid JSON"):
        from_pretrained(broken)
    lying = tmp_path / "lying"
    shutil.copytree(tmp_path / "model", lying)
    cfg = json.loads((lying / "config.json").read_text())
    cfg["hops"] = [1, 2, 3, 4]
    (lying / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="'hops' is \\[1, 2, 3, 4\\]"):
        from_pretrained(lying)
    wider = tmp_path / "wider"
    shutil.copytree(tmp_path / "model", wider)
    cfg = json.loads((wider / "config.json").read_text())
    cfg["model"]["channels"] = 32
    for key in ("dims", "hops", "output_names", "receptive_fields"):
        cfg.pop(key)
    (wider / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="model.safetensors cannot be loaded into the model config.json describes"):
        from_pretrained(wider)
    nothing = tmp_path / "no-weights"
    shutil.copytree(tmp_path / "model", nothing)
    (nothing / "model.safetensors").unlink()
    with pytest.raises(UserError, match="has no model.safetensors"):
        from_pretrained(nothing)
    newer = tmp_path / "newer"
    shutil.copytree(tmp_path / "model", newer)
    cfg = json.loads((newer / "config.json").read_text())
    cfg["format_version"] = 99
    (newer / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="upgrade smooth-infomax"):
        from_pretrained(newer)


def test_export_cli_and_model_source(tmp_path, capsys):
    run = make_run(tmp_path)
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "model")]) == 0
    assert "module0, module1, module2, gru" in capsys.readouterr().out
    from smooth_infomax.sources.resolve import resolve_source

    source = resolve_source(str(tmp_path / "model"))
    x = waves()
    for a, b in zip(load_encoder(run).encode(x), source.encode(x)):
        assert torch.equal(a, b)
    assert main(["export", "--run", str(tmp_path / "nope"), "--out", str(tmp_path / "m2")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_push_to_hub_uploads_the_exported_folder(tmp_path, monkeypatch):
    """push_to_hub goes through huggingface_hub's HfApi (stubbed here: no network) with the same three files."""
    import huggingface_hub.hub_mixin as mixin

    uploaded = {}

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, private=None, exist_ok=False):
            return type("Repo", (), {"repo_id": repo_id})()

        def upload_folder(self, *, repo_id, folder_path, **kwargs):
            uploaded.update({p.name: p.read_bytes() for p in Path(folder_path).iterdir()})
            return f"https://huggingface.co/{repo_id}/commit/0"

    monkeypatch.setattr(mixin, "HfApi", FakeApi)
    run = make_run(tmp_path)
    model = export_run(run, tmp_path / "model")
    assert model.push_to_hub("someone/sim-tiny").endswith("/commit/0")
    assert sorted(uploaded) == ["README.md", "config.json", "model.safetensors"]
    for name in ("README.md", "config.json"):
        assert uploaded[name] == (tmp_path / "model" / name).read_bytes(), name
