"""The HTML report is self-contained and renders in a real headless browser."""

import json
import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from smooth_infomax.report import (
    Section,
    audio,
    figure,
    pre,
    render,
    spectrogram_file,
    table,
    traversal_strip,
    write_report,
)


def tiny_png(path, w=64, h=48):
    raw = b"".join(b"\x00" + bytes(
        sum(([(x * 4) % 256, (y * 5) % 256, 128] for x in range(w)), [])) for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(
        b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    Path(path).write_bytes(png)
    return path


def test_render_escapes_and_embeds(tmp_path):
    png = tiny_png(tmp_path / "f.png")
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(1600, dtype=np.float32), 16000)
    page = render("T <1>", [Section("S", [table(["a", "b"], [["<x>", 1.5]]), figure(png, "fig"), audio(wav, "clip"),
                                          pre("k: v")])])
    assert "&lt;x&gt;" in page and "<x>" not in page
    assert "data:image/png;base64," in page and "data:audio/wav;base64," in page
    assert "http://" not in page and "https://" not in page
    assert "figure not available" in render("t", [Section("s", [figure(tmp_path / "missing.png")])])
    assert page.count("data:image/png;base64,") == 2  # the figure and the clip's spectrogram
    assert "log-mel spectrogram of clip" in page
    assert "data:image/png" not in audio(wav, "plain", spectrogram=False)


def test_spectrogram_file_is_cached_and_refreshed(tmp_path):
    wav = tmp_path / "a.wav"
    sf.write(wav, (0.2 * np.sin(np.arange(4000) / 3)).astype(np.float32), 16000)
    png = spectrogram_file(wav)
    assert png == tmp_path / "a.spec.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    first = png.read_bytes()
    assert spectrogram_file(wav).read_bytes() == first
    os.utime(png, (1, 1))  # older than the WAV: made again
    sf.write(wav, (0.2 * np.sin(np.arange(4000) / 9)).astype(np.float32), 16000)
    assert spectrogram_file(wav).read_bytes() != first


def test_traversal_strip(tmp_path):
    wavs = []
    for j in range(3):
        wavs.append(tmp_path / f"t{j}.wav")
        sf.write(wavs[-1], (0.2 * np.sin(np.arange(3200) * (j + 1) / 8)).astype(np.float32), 16000)
    html_part = traversal_strip(wavs, [-1.0, 0.0, 1.0], tmp_path / "strip.png", "dim 2", value_name="z2")
    assert (tmp_path / "strip.png").is_file() and "data:image/png;base64," in html_part and "dim 2" in html_part
    assert "not available" in traversal_strip([tmp_path / "gone.wav"], [0.0], tmp_path / "s2.png")


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def browser_check(html_path: Path, tmp_path: Path) -> dict:
    """Open the page in headless Chromium; return console errors, element counts and a screenshot."""
    exe = _chromium()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
             f"--user-data-dir={tmp_path / 'profile'}"]
    shot = tmp_path / "shot.png"
    subprocess.run([exe, *flags, f"--screenshot={shot}", "--window-size=1200,1600", html_path.as_uri()],
                   check=True, capture_output=True, timeout=120)
    # the DOM after load, with a probe script that reports every image/audio and whether it decoded
    probe = tmp_path / "probe.html"
    probe.write_text(html_path.read_text().replace("</body>", """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || e.target.src)), true);
window.addEventListener('load', async () => {
  const imgs = [...document.images].map(i => i.complete && i.naturalWidth > 0);
  const auds = await Promise.all([...document.querySelectorAll('audio')].map(a => new Promise(res => {
    if (a.readyState >= 1) return res(a.duration > 0);
    a.addEventListener('loadedmetadata', () => res(a.duration > 0)); a.addEventListener('error', () => res(false));
    setTimeout(() => res(false), 5000); })));
  const out = document.createElement('pre'); out.id = 'result';
  out.textContent = JSON.stringify({images: imgs, audios: auds, errors: window.__errors});
  document.body.appendChild(out);
});
</script></body>"""))
    dom = subprocess.run([exe, *flags, "--virtual-time-budget=8000", "--enable-logging=stderr", "--v=0", "--dump-dom",
                          probe.as_uri()], check=True, capture_output=True, text=True, timeout=120)
    marker = '<pre id="result">'
    start = dom.stdout.index(marker) + len(marker)
    result = json.loads(dom.stdout[start:dom.stdout.index("</pre>", start)].replace("&quot;", '"'))
    console_errors = [l for l in dom.stderr.splitlines() if "CONSOLE" in l and ("ERROR" in l or "Uncaught" in l)]
    result["console"] = console_errors
    result["screenshot"] = shot
    return result


def screenshot_is_blank(path: Path) -> bool:
    import matplotlib.image as mpimg

    img = mpimg.imread(str(path))
    return float(np.asarray(img)[..., :3].std()) < 1e-3


@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed (.ci/run installs it)")
def test_report_loads_in_headless_chromium(tmp_path):
    png = tiny_png(tmp_path / "f.png")
    wav = tmp_path / "a.wav"
    sf.write(wav, (0.2 * np.sin(np.arange(8000) / 5)).astype(np.float32), 16000)
    page = write_report(tmp_path / "report.html", "browser test",
                        [Section("Results", [table(["model", "acc"], [["SIM", "90.0"]]), figure(png, "a figure"),
                                             audio(wav, "a clip")])])
    result = browser_check(page, tmp_path)
    assert result["images"] == [True, True] and result["audios"] == [True]  # figure + the clip's spectrogram
    assert result["errors"] == [] and result["console"] == []
    assert not screenshot_is_blank(result["screenshot"])


@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed (.ci/run installs it)")
def test_browser_check_detects_broken_media_and_script_errors(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text(render("broken", []).replace(
        "</body>", "<img src='data:image/png;base64,AAAA'><audio controls src='data:audio/wav;base64,AAAA'></audio>"
                   "<script>undefinedFunction()</script></body>"))
    result = browser_check(page, tmp_path)
    assert result["images"] == [False] and result["audios"] == [False]
    assert any("undefinedFunction" in line for line in result["console"])


def test_chromium_present_in_ci():
    if os.environ.get("CI") and _chromium() is None:
        pytest.fail("CI must have chromium for the report browser test (scripts/setup.sh installs it as root)")
