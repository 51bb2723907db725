"""Stage records (wall time, peak memory) and the progress helper."""

import io
import json
import mmap
import time

import numpy as np
import pytest

from smooth_infomax.progress import Progress, eta_seconds, format_seconds, progress_line, track
from smooth_infomax.stages import MemoryWatch, Stages


def test_stage_records_time_and_peak_memory_in_marker_and_summary(tmp_path):
    logs, status = [], []
    stages = Stages(tmp_path, logs.append, total=2, status=status.append)

    def big():
        block = np.ones(64 * 2**20 // 8)  # 64 MiB touched, then freed
        return float(block.sum())

    assert stages.run("big", big) == float(64 * 2**20 // 8)
    assert stages.run("small", lambda: {"x": 1}) == {"x": 1}
    assert logs == ["[run ] big", "[run ] small"]
    assert status[0].startswith("[done] big in ") and "(stage 1/2, " in status[0]
    marker = json.loads((tmp_path / "stages" / "big.json").read_text())
    assert marker["seconds"] >= 0 and marker["memory_method"] in ("vmhwm-reset", "sampled")
    assert marker["peak_rss_mb"] - marker["start_rss_mb"] > 50  # the 64 MiB block, freed before the stage ended
    small = json.loads((tmp_path / "stages" / "small.json").read_text())
    assert small["peak_rss_mb"] - small["start_rss_mb"] < 20  # the mark was reset: the earlier peak is not counted
    summary = stages.summary()
    assert set(summary["stages"]) == {"big", "small"} and summary["peak_rss_mb"] >= marker["peak_rss_mb"]
    assert summary["seconds_this_call"] == pytest.approx(marker["seconds"] + small["seconds"], abs=1e-6)


def test_skipped_stages_keep_their_recorded_times(tmp_path):
    Stages(tmp_path, lambda _: None, status=lambda _: None).run("a", lambda: 1)
    again = Stages(tmp_path, lambda _: None, status=lambda _: None)
    assert again.run("a", lambda: 2) == 1
    recorded = json.loads((tmp_path / "stages" / "a.json").read_text())["seconds"]
    assert again.timings == {"a": recorded}
    assert again.stats["a"]["skipped"] is True and again.summary()["seconds_this_call"] == 0


def test_before_runs_ahead_of_each_stage_that_runs_only(tmp_path):
    order = []
    stages = Stages(tmp_path, lambda _: None, status=lambda _: None, before=lambda: order.append("before"))
    stages.run("a", lambda: order.append("a"))
    Stages(tmp_path, lambda _: None, status=lambda _: None, before=lambda: order.append("before")).run("a", int)
    assert order == ["before", "a"]  # the second call skipped the finished stage, and did not call before


def _fresh_pages(mb: int) -> mmap.mmap:
    """``mb`` MiB of newly mapped, touched memory: it raises the resident set whatever the allocator holds already
    (a numpy array of that size can be served from heap pages an earlier test left resident)."""
    block = mmap.mmap(-1, mb * 2**20)
    for offset in range(0, mb * 2**20, 4096):
        block[offset] = 1
    return block


def test_memory_watch_sampler_fallback(monkeypatch):
    from smooth_infomax import stages as mod

    class Unwritable:
        def write_text(self, _):
            raise OSError("read-only")

    monkeypatch.setattr(mod, "_CLEAR_REFS", Unwritable())
    with MemoryWatch(interval=0.01) as watch:
        block = _fresh_pages(32)
        time.sleep(0.05)
        block.close()
    assert watch.result["memory_method"] == "sampled"
    assert watch.result["peak_rss_mb"] - watch.result["start_rss_mb"] > 25


def test_format_and_eta():
    assert format_seconds(3.42) == "3.4s" and format_seconds(42) == "42s"
    assert format_seconds(75.2) == "1m15s" and format_seconds(4000) == "1h06m"
    assert eta_seconds(0, 10, 5.0) is None and eta_seconds(5, None, 5.0) is None
    assert eta_seconds(5, 20, 10.0) == pytest.approx(30.0)
    assert progress_line("epoch 1/3", 21, 50, 10.0) == "epoch 1/3: 21/50 (42%), 10s elapsed, ~14s left"
    assert progress_line("x", 50, 50, 10.0) == "x: 50/50 (100%), 10s elapsed"


def test_track_writes_plain_lines_when_not_a_terminal():
    out = io.StringIO()
    assert list(track(range(5), "probe", file=out, interval=0.0)) == [0, 1, 2, 3, 4]
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("probe: 1/5 (20%)") and lines[-1].startswith("probe: 5/5 (100%)")
    out = io.StringIO()
    assert list(track(iter("ab"), "gen", file=out, enabled=False)) == ["a", "b"] and out.getvalue() == ""


def test_progress_draws_a_bar_on_a_terminal():
    out = io.StringIO()
    with Progress(4, "train-sim epoch 1/2", file=out, tty=True) as bar:
        for _ in range(4):
            bar.update()
    text = out.getvalue()
    assert "train-sim epoch 1/2" in text and "0/4 [00:00<" in text  # drawn at the start: elapsed<remaining
    assert text.endswith("\r")  # cleared at the end (leave=False): the stage's [done] line follows


def test_outer_watch_keeps_a_sustained_peak_when_a_nested_watch_resets_the_mark():
    with MemoryWatch(interval=0.01) as outer:
        block = _fresh_pages(48)
        time.sleep(0.1)  # sustained: the sampler sees it
        block.close()
        with MemoryWatch() as inner:  # resets the kernel's mark (where possible)
            pass
    assert inner.result["peak_rss_mb"] - inner.result["start_rss_mb"] < 20
    assert outer.result["peak_rss_mb"] - outer.result["start_rss_mb"] > 40
