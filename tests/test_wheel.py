"""Complete from a wheel: build it, install it into a fresh virtual environment, and run the pipeline from an
empty folder outside the checkout; the configs come from the wheel's package data.

The fresh venv reuses the test environment's third-party packages (torch etc.) without network: its
``--system-site-packages`` is the base interpreter's, so a ``.pth`` file adds this environment's
site-packages directory as a plain path (its editable-install hook for the checkout is not run), and the
wheel itself goes in with ``pip install --no-deps --no-index``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.name for p in (ROOT / "src" / "smooth_infomax" / "configs").glob("*.yaml"))


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    tail = f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    assert out.returncode == 0, f"{' '.join(cmd)} failed ({out.returncode}):\n{tail}"
    return out


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    """(venv python, venv bin dir, env, wheel path): the built wheel installed into a fresh venv."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src-copy"  # build from a copy: no build/ or egg-info left in the checkout
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", str(tmp / "dist"), str(src)], tmp, env)
    (wheel,) = (tmp / "dist").glob("smooth_infomax-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], tmp, env)
    py = venv / "bin" / "python"
    purelib = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp,
                        env).stdout.strip())
    ours = sysconfig.get_paths()["purelib"]
    (purelib / "zz_test_env.pth").write_text(ours + "\n")  # a plain path: .pth files inside it are not run
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q", str(wheel)],
         tmp, env)
    return py, venv / "bin", env, wheel


@pytest.mark.slow
def test_wheel_ships_every_config(wheel_venv):
    _, _, _, wheel = wheel_venv
    with zipfile.ZipFile(wheel) as z:
        names = sorted(Path(n).name for n in z.namelist() if n.startswith("smooth_infomax/configs/"))
    assert names == SHIPPED


@pytest.mark.slow
def test_installed_package_is_the_wheel_and_lists_its_configs(wheel_venv, tmp_path):
    py, bin_dir, env, _ = wheel_venv
    where = _run([str(py), "-c", "import smooth_infomax; print(smooth_infomax.__file__)"], tmp_path, env).stdout
    assert str(ROOT) not in where and str(bin_dir.parent) in where
    listed = _run([str(bin_dir / "smooth-infomax"), "configs"], tmp_path, env).stdout
    assert sorted(line.split()[0] + ".yaml" for line in listed.splitlines()) == SHIPPED


@pytest.mark.slow
def test_run_from_an_empty_folder_outside_the_checkout(wheel_venv, tmp_path):
    pytest.importorskip("espeakng_loader")
    py, _, env, _ = wheel_venv
    work = tmp_path / "empty"
    work.mkdir()
    # the installed CLI, on a tiny version of the quick preset (its configs still come from the wheel)
    code = (
        "import sys\n"
        "from smooth_infomax import pipeline\n"
        "from smooth_infomax.cli import main\n"
        "q = pipeline.PRESETS['quick']\n"
        "pipeline.PRESETS['quick'] = pipeline.Preset(models=q.models, synth={'n_words': 48, 'n_voices': 2},\n"
        "    probe_tasks=('vowel',), probe_seeds=1, probe_epochs=2, decoder_epochs=1, ics_items=4,\n"
        "    analysis_items=40)\n"
        "sys.exit(main(['run', '--preset', 'quick', '--out', 'X', '--set', 'train.epochs=1',\n"
        "               '--set', 'model.channels=8', '--set', 'model.gru_hidden=8',\n"
        "               '--set', 'train.log_tensorboard=false', '--set', 'train.progress=false']))\n")
    _run([str(py), "-c", code], work, env, timeout=900)
    assert (work / "X" / "report.html").is_file()
    assert (work / "X" / "results.json").is_file()
    assert sorted(p.name for p in work.iterdir()) == ["X"]  # nothing written outside --out
