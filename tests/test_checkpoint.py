"""Atomic writes produce ordinary files: readable by others as the umask allows (not mkstemp's private 0600)."""

import os
import stat

from smooth_infomax.checkpoint import atomic_write_json, atomic_write_text


def test_atomic_writes_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "report.html", "<html></html>")
        atomic_write_json(tmp_path / "r.json", {"a": 1})
        os.umask(0o077)
        atomic_write_text(tmp_path / "private.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "report.html").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "private.txt").stat().st_mode) == 0o600
    assert (tmp_path / "report.html").read_text() == "<html></html>"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_torch_load_errors_are_one_line_and_name_the_file(tmp_path):
    import pytest

    from smooth_infomax.checkpoint import SAFE_GLOBALS, torch_load
    from smooth_infomax.errors import UserError

    with pytest.raises(UserError, match="missing.pt does not exist"):
        torch_load(tmp_path / "missing.pt")
    (tmp_path / "garbage.pt").write_bytes(b"\x00not a checkpoint")
    with pytest.raises(UserError, match="garbage.pt is not a readable checkpoint") as info:
        torch_load(tmp_path / "garbage.pt")
    assert "\n" not in str(info.value)
    # the allow-list is only numpy's array pieces (the RNG state of training checkpoints)
    names = {(g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}") for g in SAFE_GLOBALS}
    assert all(n.startswith("numpy") for n in names) and len(names) <= 5, names


def test_atomic_torch_save_refuses_what_torch_load_would_refuse(tmp_path):
    import pathlib
    import random

    import numpy as np
    import pytest
    import torch

    from smooth_infomax.checkpoint import atomic_torch_save, torch_load

    ok = {"w": torch.ones(2), "rng": np.random.get_state(), "py": random.getstate(), "h": [{"loss": 1.5}]}
    atomic_torch_save(ok, tmp_path / "ok.pt")
    assert torch.equal(torch_load(tmp_path / "ok.pt")["w"], ok["w"])
    with pytest.raises(TypeError, match="refusing to write .*bad.pt.*pathlib"):
        atomic_torch_save({"where": pathlib.Path("x")}, tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists()
