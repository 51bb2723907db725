"""The codebase is clean under the project's ruff configuration (pyproject.toml, [tool.ruff])."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff() -> list[str]:
    exe = Path(sys.executable).with_name("ruff")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("ruff")
    if found:
        return [found]
    pytest.fail("ruff is not installed: it is part of the dev extra (pip install -e '.[dev]')")


@pytest.mark.slow
def test_ruff_check_is_clean():
    proc = subprocess.run([*_ruff(), "check", "--output-format", "concise", "src", "tests", "benchmarks", "scripts"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
