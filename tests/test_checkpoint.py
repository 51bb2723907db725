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
