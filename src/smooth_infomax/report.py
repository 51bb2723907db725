"""A self-contained HTML report: tables, figures and audio players in one file that needs no network.

Figures (PNG) and audio (WAV) are embedded as base64 ``data:`` URIs, styles are inline, and there is no
script, so the page opens from disk in any browser, offline. Every audio player comes with the clip's log-mel
spectrogram beside it (:func:`audio`), and traversals get a strip of spectrograms along the traversed values
(:func:`traversal_strip`), so a reader sees what a dimension changes without pressing play. Build it from
:class:`Section` objects::

    sections = [Section("Probes", [table(["model", "acc"], [["SIM", "91.2"]]), figure("loss.png", "Loss")])]
    write_report("out/report.html", "smooth-infomax quick run", sections)
"""

from __future__ import annotations

import base64
import html
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import yaml

from .abx.evaluate import abx_report_rows
from .analysis.plots import (
    ics_curves,
    loss_curves,
    spectrogram_png,
    spectrogram_strip,
    weight_density_plot,
)
from .audio import read_audio
from .checkpoint import atomic_write_text

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#1d2330;
line-height:1.45;padding:0 1rem}
h1{font-size:1.7rem;margin-bottom:.2rem}h2{border-bottom:2px solid #e3e7ef;padding-bottom:.2rem;margin-top:2.2rem}
table{border-collapse:collapse;margin:.8rem 0;font-size:.92rem}th,td{border:1px solid #d5dae4;padding:.3rem .6rem;
text-align:right}th{background:#f1f4f9}td:first-child,th:first-child{text-align:left}
figure{display:inline-block;margin:.6rem 1rem .6rem 0;vertical-align:top}
figure img{max-width:520px;border:1px solid #e3e7ef}
figcaption{font-size:.85rem;color:#4a5368;max-width:520px}.audio{display:inline-block;margin:.4rem 1rem .4rem 0;
font-size:.85rem}.audio audio{display:block;width:260px}
pre{background:#f6f8fb;padding:.8rem;overflow:auto;font-size:.8rem}
.note{color:#4a5368;font-size:.9rem}
.clip{display:inline-flex;align-items:center;gap:.4rem;margin:.4rem 1rem .4rem 0;vertical-align:top;
border:1px solid #e3e7ef;padding:.3rem}.clip .audio{margin:0}.clip img.spec{height:110px;display:block}
.strip img{max-width:100%;border:1px solid #e3e7ef}
"""


@dataclass
class Section:
    title: str
    parts: list[str] = field(default_factory=list)
    note: str = ""


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], caption: str = "") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _data_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def figure(path: str | Path, caption: str = "") -> str:
    """An embedded PNG figure (missing files are reported in the page instead of a broken image)."""
    path = Path(path)
    if not path.is_file():
        return f"<p class='note'>figure not available: {esc(path.name)}</p>"
    return (f"<figure><img alt='{esc(caption or path.stem)}' src='{_data_uri(path, 'image/png')}'>"
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def _read_wave(path: Path) -> tuple[np.ndarray, int]:
    """A WAV file as mono float32 (T,) and its sample rate. The package writes 16-bit PCM WAV with the standard
    library (decoding/media.py), read back the same way, so a report needs no soundfile (GPU images lack it);
    other files go through :func:`smooth_infomax.audio.read_audio`."""
    try:
        with wave.open(str(path), "rb") as fh:
            if fh.getsampwidth() == 2:
                raw = np.frombuffer(fh.readframes(fh.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
                return raw.reshape(-1, fh.getnchannels()).mean(axis=1), int(fh.getframerate())
    except (wave.Error, EOFError):
        pass
    return read_audio(path)


def spectrogram_file(wav: str | Path) -> Path:
    """``x.wav`` -> ``x.spec.png`` beside it: its log-mel spectrogram (made when missing or older than the WAV)."""
    wav = Path(wav)
    png = wav.with_name(wav.stem + ".spec.png")
    if not png.is_file() or png.stat().st_mtime < wav.stat().st_mtime:
        wave, sr = _read_wave(wav)
        spectrogram_png(wave, png, sr)
    return png


def audio(path: str | Path, caption: str = "", *, spectrogram: bool = True) -> str:
    """An embedded WAV player, with the clip's log-mel spectrogram beside it (``spectrogram=False``: player only)."""
    path = Path(path)
    if not path.is_file():
        return f"<p class='note'>audio not available: {esc(path.name)}</p>"
    player = (f"<div class='audio'>{esc(caption or path.stem)}<audio controls preload='auto' "
              f"src='{_data_uri(path, 'audio/wav')}'></audio></div>")
    if not spectrogram:
        return player
    png = spectrogram_file(path)
    return (f"<div class='clip'>{player}<img class='spec' alt='log-mel spectrogram of {esc(caption or path.stem)}' "
            f"src='{_data_uri(png, 'image/png')}'></div>")


def traversal_strip(wavs: Sequence[str | Path], values: Sequence[float], png: str | Path, caption: str = "", *,
                    value_name: str = "value") -> str:
    """Log-mel spectrograms of a traversal's decoded clips side by side (one per value), as an embedded figure.

    The strip is written to ``png``; a missing WAV gives a note instead of the figure.
    """
    paths = [Path(w) for w in wavs]
    missing = [p.name for p in paths if not p.is_file()]
    if missing or not paths:
        return f"<p class='note'>traversal strip not available: {esc(', '.join(missing) or 'no clips')}</p>"
    waves = [_read_wave(p) for p in paths]
    spectrogram_strip([w for w, _ in waves], list(values), png, waves[0][1], value_name=value_name)
    return f"<div class='strip'>{figure(png, caption)}</div>"


def pre(text: str) -> str:
    return f"<pre>{esc(text)}</pre>"


def paragraph(text: str) -> str:
    return f"<p>{esc(text)}</p>"


def render(title: str, sections: Sequence[Section], subtitle: str = "") -> str:
    body = []
    for s in sections:
        body.append(f"<section><h2>{esc(s.title)}</h2>")
        if s.note:
            body.append(f"<p class='note'>{esc(s.note)}</p>")
        body.extend(s.parts)
        body.append("</section>")
    sub = f"<p class='note'>{esc(subtitle)}</p>" if subtitle else ""
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<link rel='icon' href='data:,'><style>{CSS}</style></head><body><h1>{esc(title)}</h1>{sub}"
            + "".join(body) + "</body></html>\n")


def write_report(path: str | Path, title: str, sections: Sequence[Section], subtitle: str = "") -> Path:
    path = Path(path)
    atomic_write_text(path, render(title, sections, subtitle))
    return path


def fmt_pct(mean: float, std: float | None = None) -> str:
    if std is None:
        return f"{100 * mean:.1f}"
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def fmt(x: Any, digits: int = 3) -> str:
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) < 1e4 else f"{x:.3e}"
    return str(x)


# --------------------------------------------------------------------------------------------------
# The pipeline's report
# --------------------------------------------------------------------------------------------------


def _stage_times_section(timings: dict[str, Any]) -> Section:
    """Wall time and peak memory of every pipeline stage (``results.json['timings']``, from stages.py)."""
    rows = [[name, f"{rec.get('seconds', 0.0):.1f}", fmt(rec.get("peak_rss_mb", "–")),
             "earlier call" if rec.get("skipped") else "this call"] for name, rec in timings["stages"].items()]
    rows.append(["total", f"{timings.get('seconds_total', 0.0):.1f}", fmt(timings.get("peak_rss_mb", "–")), ""])
    parts = [table(["stage", "seconds", "peak memory (MB)", "ran in"], rows)]
    runtime = timings.get("runtime") or {}
    lines = list(runtime.get("notes") or [])
    lines += [f"threads {c.get('before')} -> {c.get('threads')} (other jobs kept {c.get('others_busy_cores')} cores "
              f"busy)" for c in runtime.get("thread_changes") or []]
    if lines:  # how this machine was set up for the last call: explains a slow table on a busy machine
        parts.append("<p>Threading and memory settings of the last call: " + "; ".join(esc(x) for x in lines) + "</p>")
    return Section("Stage times", parts,
                   note="Wall time of each stage and the resident-memory high-water mark of the process during it.")


def _probe_table(probes: dict[str, Any]) -> str:
    """One row per (task, model); one column per encoder output; accuracy mean ± std over seeds."""
    outputs: list[str] = []
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for model, tasks in probes.items():
        for task, res in tasks.items():
            for kind, per_module in res["results"].items():
                label = model if kind == "encoder" else f"random-init {model}" if kind == "random-init" else kind
                for module, e in per_module.items():
                    if module not in outputs:
                        outputs.append(module)
                    rows.setdefault((task, label), {})[module] = e
    body = []
    for (task, label), cells in sorted(rows.items()):
        any_e = next(iter(cells.values()))
        body.append([task, label, *[fmt_pct(cells[o]["accuracy_mean"], cells[o]["accuracy_std"]) if o in cells else "–"
                                    for o in outputs], fmt_pct(any_e["chance"]), fmt_pct(any_e["majority"]),
                     str(any_e["n_test"])])
    return table(["task", "model", *outputs, "chance %", "majority %", "n test"], body)


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _analysis_rows(analyses: dict[str, Any]) -> list[list[str]]:
    rows = []
    for model, res in analyses.items():
        for module, m in res.get("modules", {}).items():
            g = m.get("gaussianity", {})
            rows.append([model, module, fmt(_get(g, "active_dimensions")), fmt(_get(g, "kl_aggregate_posterior")),
                         fmt(_get(m, "total_correlation", "gaussian_all_dims")),
                         fmt(_get(m, "total_correlation", "knn_subsets_mean")),
                         fmt(_get(m, "disentanglement", "mig")), fmt(_get(m, "disentanglement", "disentanglement")),
                         fmt(_get(m, "disentanglement", "completeness")), fmt(_get(m, "disentanglement", "sap")),
                         fmt(_get(m, "concentration", "participation_ratio")), fmt(_get(m, "concentration", "gini")),
                         fmt(_get(m, "concentration", "dims_for_energy"))])
    return rows


TRAVERSAL_RANGE = 2.68  # the traversal's default span, about 99 % of N(0, 1) (METHOD section 10)


def traversal_values(d: dict[str, Any], n: int) -> list[float]:
    """The traversed values of a decoder result (``traversal_values`` when recorded, else the default span)."""
    values = d.get("traversal_values")
    if values is not None and len(values) == n:
        return [float(v) for v in values]
    return [float(v) for v in np.linspace(-TRAVERSAL_RANGE, TRAVERSAL_RANGE, n)] if n else []


def build_pipeline_report(out: Path, results: dict[str, Any], runs: dict[str, Path]) -> Path:
    """Figures from the pipeline's outputs, then ``out/report.html``."""

    out = Path(out)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    sections: list[Section] = []

    summary = [[name, results["configs"][name]["model"]["kind"], str(len(results["configs"][name]["model"]["modules"])),
                str(results["configs"][name]["model"]["channels"]), str(results["configs"][name]["train"]["epochs"]),
                str(results["configs"][name]["loss"]["beta"])] for name in runs]
    sections.append(Section("Models", [table(["model", "kind", "CNN modules", "channels", "epochs", "beta"], summary)],
                            note=f"Data: {results['data']} ({results['layout']} layout). Preset: {results['preset']}."))

    curves = []
    for name, run in runs.items():
        png = fig_dir / f"loss_{name.lower()}.png"
        loss_curves(run / "metrics.csv", png)
        curves.append(figure(png, f"{name}: per-module InfoNCE, train and validation"))
    sections.append(Section("Training", curves))

    if results["probes"]:
        sections.append(Section("Linear probes (accuracy %)", [_probe_table(results["probes"])],
                                note="Mean ± std over seeds on the whole test split; features are "
                                                   "posterior means, standardised with training-set statistics; "
                                                   "time-mean pooling (phones: per 10 ms frame)."))

    abx_headers, abx_rows = abx_report_rows(results.get("abx") or {})
    if abx_rows:
        sections.append(Section("ABX error (%)", [table(abx_headers, abx_rows)],
                                note="Triphone ABX, within context (ZeroSpeech / Libri-light): frame-wise angular "
                                     "distance averaged along the DTW path; mean over contexts, speakers, phone "
                                     "pairs; lower is better, chance 50 %. Utterances with phone labels only."))

    parts = []
    if results["analysis"]:
        parts.append(table(["model", "module", "active dims", "aggregate KL", "TC gauss (nats)", "TC kNN (nats)", "MIG",
                            "DCI dis.", "DCI comp.", "SAP", "part. ratio", "Gini", "dims for 90%"],
                           _analysis_rows(results["analysis"])))
        modules = sorted({m for res in results["analysis"].values() for m in res.get("modules", {})})
        for module in modules:
            weights = {}
            for name in runs:
                path = out / "analysis" / name.lower() / "vowel_probe_weights.npz"
                if path.exists():
                    with np.load(path) as z:
                        if module in z.files:
                            weights[name] = z[module]
            if weights:
                png = fig_dir / f"weights_{module}.png"
                weight_density_plot(weights, png, f"Vowel-probe weight density, {module}")
                parts.append(figure(png, f"Bias-free vowel probe weights / max|w|, {module}: a peak at 0 means "
                                         f"the vowel information sits in few dimensions"))
        for name in runs:
            adir = out / "analysis" / name.lower()
            for png in sorted(adir.glob("histograms_*.png"))[-1:]:
                parts.append(figure(png, f"{name}: latent histograms against N(0, 1), {png.stem.split('_', 1)[1]}"))
            for png in sorted(adir.glob("tsne_*.png"))[-1:]:
                parts.append(figure(png, f"{name}: t-SNE of time-mean latents by syllable, "
                                         f"{png.stem.split('_', 1)[1]}"))
    ics_data = {name: (d["ics"]["ds"], d["ics"]["relative"]) for name, d in results["decoders"].items() if d.get("ics")}
    if ics_data:
        parts.append(table(["model", "module", "items", "E_max", "dims to halve the error",
                            "area under relative curve"],
                           [[name, str(d["module"]), str(d["ics"].get("n_items")), fmt(d["ics"].get("e_max")),
                             fmt(d["ics"].get("dims_to_half")), fmt(d["ics"].get("auc"))]
                            for name, d in results["decoders"].items() if d.get("ics")],
                           caption="Interpolation contribution score "
                                   "(fewer dimensions / lower area = more concentrated)"))
        png = fig_dir / "ics.png"
        ics_curves(ics_data, png)
        parts.append(figure(png, "Interpolation contribution score: relative error after replacing the top-d "
                                 "dimensions (lower at small d = more concentrated)"))
    sections.append(Section("Inside the representations", parts))

    audio_parts = []
    for name, d in results["decoders"].items():
        ddir = out / "decoders" / name.lower()
        audio_parts.append(f"<h3>{esc(name)} (decoder for module {d['module']}, {d['mode']} latents)</h3>")
        for wav in sorted(ddir.glob("orig_*.wav"))[:2]:
            audio_parts.append(audio(wav, f"original {wav.stem.split('_')[-1]}"))
            audio_parts.append(audio(ddir / wav.name.replace("orig_", "recon_"),
                                     f"reconstruction {wav.stem.split('_')[-1]}"))
        travs = d["audio"].get("traversal", [])
        values = traversal_values(d, len(travs))
        if travs:
            audio_parts.append(traversal_strip(
                travs, values, fig_dir / f"traversal_{name.lower()}.png",
                f"{name}: log-mel spectrograms along the traversal of dim {d.get('traversal_dim')} (left to right: "
                f"the traversed values)", value_name=f"z{d.get('traversal_dim')}"))
        for j, wav in enumerate(travs):
            audio_parts.append(audio(wav, f"traversal of dim {d.get('traversal_dim')} = {values[j]:+.2f}"))
        for kind, label in (("interpolation", "interpolation"), ("partial", "partial interpolation (top C/8 dims)"),
                            ("prior", "N(0, I) sample")):
            for j, wav in enumerate(d["audio"].get(kind, [])):
                audio_parts.append(audio(wav, f"{label} {j}"))
    sections.append(Section("Listen", audio_parts))
    if results.get("timings", {}).get("stages"):
        sections.append(_stage_times_section(results["timings"]))
    sections.append(Section("Configuration", [pre(yaml.safe_dump(results["configs"], sort_keys=False))]))
    return write_report(out / "report.html", "smooth-infomax report", sections,
                        subtitle=f"preset {results['preset']}; SIM vs baselines on {results['layout']} data")

