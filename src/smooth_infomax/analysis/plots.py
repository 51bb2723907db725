"""Analysis figures as PNG files.

Every function draws on its own ``matplotlib.figure.Figure`` rendered by the Agg canvas, so it works headless,
never touches pyplot's global state or the user's selected backend, and leaks no open figures. Each writes the PNG
atomically (temp file + rename) and returns the path as a :class:`pathlib.Path`.

* :func:`weight_density_plot` - the paper's classifier-weight density figure (METHOD.md section 12).
* :func:`latent_histograms` - per-dimension histograms with the N(0, 1) density overlaid (section 14).
* :func:`tsne_plot` - 2-D t-SNE of latents coloured by label (section 14).
* :func:`loss_curves` - per-module train/validation InfoNCE (and KL) against epoch from a metrics CSV.
* :func:`ics_curves` - interpolation-contribution-score curves on a log2 axis (section 11).
* :func:`spectrogram_png` - the log-mel spectrogram of one waveform (shown beside every audio player).
* :func:`spectrogram_strip` - a row of log-mel spectrograms along a traversal, one per traversed value.
"""

from __future__ import annotations

import csv
import inspect
import io
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from scipy.stats import gaussian_kde
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits

from ..checkpoint import atomic_write_bytes
from ..mel import log_mel
from .concentration import normalize_weights

__all__ = ["weight_density_plot", "latent_histograms", "tsne_plot", "loss_curves", "ics_curves",
           "spectrogram_png", "spectrogram_strip", "log_mel_image", "layer_profile_plot"]


def _figure(width: float, height: float):
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path) -> Path:
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
    return path


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def weight_density_plot(weights_by_model: Mapping[str, Any], path, title: str | None = None, *,
                        normalize: str | None = None, grid: int = 512) -> Path:
    """Kernel density of the flattened classifier weights of each model, on x in [-1, 1].

    For each model the weights are (optionally row-normalised first with
    :func:`~smooth_infomax.analysis.concentration.normalize_weights`, ``normalize="maxabs"`` or ``"reference"``),
    flattened and divided by their max |w|, then smoothed with a Gaussian KDE (``scipy.stats.gaussian_kde``) at
    half of Scott's bandwidth - the paper's seaborn ``bw_adjust=0.5``. A peak at 0 with heavy tails means few
    large weights ("information in few dimensions"). A model whose weights are all equal is drawn as a vertical
    line.
    """
    if not weights_by_model:
        raise ValueError("weights_by_model is empty; pass at least one model's weights")
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    xs = np.linspace(-1.0, 1.0, grid)
    for name, w in weights_by_model.items():
        arr = _to_numpy(w).astype(np.float64)
        if normalize is not None:
            arr = normalize_weights(arr if arr.ndim <= 2 else arr.reshape(arr.shape[0], -1), normalize)
        flat = arr.reshape(-1)
        flat = flat[np.isfinite(flat)]
        if flat.size == 0:
            raise ValueError(f"weights of model {name!r} are empty or not finite")
        peak = np.abs(flat).max()
        if peak > 0:
            flat = flat / peak
        if flat.size < 2 or np.ptp(flat) == 0:
            ax.axvline(float(flat[0]), label=f"{name} (constant)")
            continue
        kde = gaussian_kde(flat, bw_method=lambda k: 0.5 * k.scotts_factor())
        ax.plot(xs, kde(xs), label=str(name))
    ax.set_xlim(-1.0, 1.0)
    ax.set_xlabel("weight / max |weight|")
    ax.set_ylabel("density")
    ax.set_title(title or "Classifier weight density")
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def latent_histograms(z, path, dims: int | Sequence[int] = 6, bins: int = 100, *, title: str | None = None) -> Path:
    """Density histograms of latent dimensions with the N(0, 1) pdf overlaid in red.

    ``z`` (N, D); ``dims`` is the number of leading dimensions to show, or an explicit list of indices.
    """
    x = _to_numpy(z).astype(np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"z must have shape (N, D), got {x.shape}")
    idx = list(range(min(int(dims), x.shape[1]))) if np.isscalar(dims) else [int(i) for i in dims]
    if not idx or any(i < 0 or i >= x.shape[1] for i in idx):
        raise ValueError(f"dims must select dimensions in 0..{x.shape[1] - 1}, got {dims}")
    cols = min(3, len(idx))
    rows = (len(idx) + cols - 1) // cols
    fig = _figure(3.2 * cols, 2.6 * rows)
    grid = np.linspace(-4.0, 4.0, 400)
    pdf = np.exp(-0.5 * grid ** 2) / np.sqrt(2 * np.pi)
    for p, d in enumerate(idx):
        ax = fig.add_subplot(rows, cols, p + 1)
        col = x[:, d][np.isfinite(x[:, d])]
        lo, hi = min(-4.0, float(col.min(initial=0.0))), max(4.0, float(col.max(initial=0.0)))
        ax.hist(col, bins=bins, range=(lo, hi), density=True, color="tab:blue", alpha=0.7)
        ax.plot(grid, pdf, color="red", linewidth=1.2)
        ax.set_title(f"dim {d}  (std {col.std():.2f})" if col.size else f"dim {d}", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def tsne_plot(x, labels, label_names: Sequence[str] | Mapping[Any, str] | None, path, seed: int = 0,
              perplexity: float = 30.0, *, max_iter: int = 1000, title: str | None = None,
              n_threads: int | None = 1) -> Path:
    """2-D t-SNE (scikit-learn, PCA init, automatic learning rate, seeded) of ``x`` (N, D) coloured by label.

    ``label_names`` maps label values to legend names (a sequence indexed by integer label, or a dict);
    None shows the raw labels. The perplexity is clamped below (N - 1) / 3 so that small sets work.
    ``n_threads`` caps the OpenMP threads of the optimisation (None: library default). The default of 1 is
    deliberate: scikit-learn's Barnes-Hut gradient with all cores can stall for seconds per iteration on a busy
    machine (observed: 15 s instead of 0.1 s for 60 points), while one thread handles N = 2000 in seconds.
    """
    data = _to_numpy(x).astype(np.float64)
    if data.ndim == 1:
        data = data[:, None]
    lab = _to_numpy(labels).reshape(-1)
    if data.ndim != 2 or data.shape[0] != lab.shape[0]:
        raise ValueError(f"x must be (N, D) with one label per row; got x {data.shape} and {lab.shape[0]} labels")
    n = data.shape[0]
    if n < 4:
        raise ValueError(f"t-SNE needs at least 4 points, got {n}")
    perp = float(min(perplexity, max(1.0, (n - 1) / 3.0 - 1e-6)))
    iter_key = "max_iter" if "max_iter" in inspect.signature(TSNE).parameters else "n_iter"
    tsne = TSNE(n_components=2, perplexity=perp, init="pca", learning_rate="auto", random_state=seed,
                **{iter_key: int(max(250, max_iter))})
    with threadpool_limits(limits=n_threads) if n_threads is not None else nullcontext():
        emb = tsne.fit_transform(data)
    fig = _figure(6.4, 5.2)
    ax = fig.add_subplot(1, 1, 1)
    values = list(dict.fromkeys(lab.tolist()))
    try:
        values.sort()
    except TypeError:
        pass
    cmap = _colormap("tab10" if len(values) <= 10 else "tab20")
    for i, v in enumerate(values):
        sel = lab == v
        ax.scatter(emb[sel, 0], emb[sel, 1], s=10, color=cmap(i % cmap.N), label=_label_name(v, label_names))
    if len(values) <= 30:
        ax.legend(fontsize=7, markerscale=1.5, ncol=2 if len(values) > 12 else 1)
    ax.set_title(title or f"t-SNE (perplexity {perp:.0f})")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    return _save(fig, path)


def _colormap(name: str):
    return matplotlib.colormaps[name]


def _label_name(value, names) -> str:
    if names is None:
        return str(value)
    if isinstance(names, Mapping):
        return str(names.get(value, value))
    try:
        return str(names[int(value)])
    except (ValueError, TypeError, IndexError):
        return str(value)


def _read_records(source) -> list[dict[str, Any]]:
    if isinstance(source, (str, Path)):
        with open(source, newline="") as fh:
            return list(csv.DictReader(fh))
    return [dict(r) for r in source]


def _float(v) -> float | None:
    if v is None or v == "":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


def loss_curves(csv_path_or_records: str | Path | Iterable[Mapping[str, Any]], path, *,
                title: str | None = None) -> Path:
    """Per-module train/validation InfoNCE against epoch from a training metrics CSV (or a list of dicts).

    Expected columns: epoch, split, module, infonce, kl, loss, accuracy; missing ones are tolerated (no
    ``infonce`` -> ``loss`` is plotted, no ``split`` -> "train", no ``module`` -> "all", no ``epoch`` -> row
    order). A second panel shows the KL term when any row has a non-zero one. Empty and non-numeric cells are
    skipped.
    """
    records = _read_records(csv_path_or_records)
    metric = "infonce" if any(_float(r.get("infonce")) is not None for r in records) else "loss"
    series: dict[tuple[str, str], list[tuple[float, float]]] = {}
    kl_series: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for i, r in enumerate(records):
        epoch = _float(r.get("epoch"))
        epoch = float(i) if epoch is None else epoch
        key = (str(r.get("module") or "all"), str(r.get("split") or "train"))
        y = _float(r.get(metric))
        if y is not None:
            series.setdefault(key, []).append((epoch, y))
        kl = _float(r.get("kl"))
        if kl is not None:
            kl_series.setdefault(key, []).append((epoch, kl))
    show_kl = any(v != 0 for pts in kl_series.values() for _, v in pts)
    fig = _figure(10.0 if show_kl else 6.4, 4.2)
    axes = [fig.add_subplot(1, 2 if show_kl else 1, 1)]
    if show_kl:
        axes.append(fig.add_subplot(1, 2, 2))
    modules = sorted({m for m, _ in series} | {m for m, _ in kl_series})
    cmap = _colormap("tab10")
    for ax, data, ylabel in [(axes[0], series, metric)] + ([(axes[1], kl_series, "kl")] if show_kl else []):
        for (module, split), pts in sorted(data.items()):
            pts.sort()
            style = "-" if split == "train" else "--"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="." if len(pts) < 30 else None,
                    color=cmap(modules.index(module) % cmap.N), label=f"{module} {split}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        if data:
            ax.legend(fontsize=7)
    if not series:
        axes[0].text(0.5, 0.5, "no loss values", ha="center", va="center", transform=axes[0].transAxes)
    axes[0].set_title(title or f"{metric} per module")
    fig.tight_layout()
    return _save(fig, path)


def ics_curves(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], path, *, title: str | None = None,
               level: float | None = 0.5) -> Path:
    """Relative ICS error against the number of interpolated dimensions d (log2 x axis), one line per model.

    ``curves`` maps a model name to ``(ds, relative_errors)``; points with d <= 0 are not drawn (no log). A dotted
    horizontal line marks ``level`` (None: no line).
    """
    if not curves:
        raise ValueError("curves is empty; pass at least one (ds, relative_errors) pair")
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    for name, (ds, rel) in curves.items():
        d = np.asarray(ds, dtype=np.float64).reshape(-1)
        r = np.asarray(rel, dtype=np.float64).reshape(-1)
        if d.shape != r.shape:
            raise ValueError(f"curve {name!r}: {d.size} d values but {r.size} relative errors")
        keep = d > 0
        order = np.argsort(d[keep])
        ax.plot(d[keep][order], r[keep][order], marker="o", label=str(name))
    ax.set_xscale("log", base=2)
    if level is not None:
        ax.axhline(level, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("interpolated dimensions d")
    ax.set_ylabel("relative error E_d / E_0")
    ax.set_title(title or "Interpolation contribution score")
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


# --------------------------------------------------------------------------------------------------
# Spectrograms: look, not only listen
# --------------------------------------------------------------------------------------------------

SPEC_FLOOR_DB = 80.0  # dynamic range shown below the loudest bin


def log_mel_image(wave, sample_rate: int = 16000, n_mels: int = 64) -> np.ndarray:
    """The package's log-mel (dB) of one waveform ((T,), (1, T) or (1, 1, T)) -> (n_mels, frames) float64.

    25 ms Hann window (FFT size the next power of two), 10 ms hop, Slaney-normalised HTK mel filters up to
    sample_rate / 2 (:func:`smooth_infomax.mel.log_mel`). Waveforms shorter than a window are zero-padded to one.
    """
    w = torch.as_tensor(_to_numpy(wave), dtype=torch.float32).reshape(-1)
    if w.numel() == 0 or not bool(torch.isfinite(w).all()):
        raise ValueError(f"need a non-empty, finite waveform, got {w.numel()} samples")
    win = max(16, int(round(0.025 * sample_rate)))
    n_fft = 1 << (win - 1).bit_length()
    hop = max(1, int(round(0.010 * sample_rate)))
    if w.numel() < n_fft:
        w = torch.nn.functional.pad(w, (0, n_fft - w.numel()))
    spec = log_mel(w, n_fft=n_fft, hop=hop, n_mels=n_mels, sample_rate=int(sample_rate), win_length=win, scale="db")
    return spec[0].double().numpy()


def _draw_spec(ax, db: np.ndarray, duration: float, sample_rate: int, vmax: float, label_axes: bool) -> Any:
    img = ax.imshow(db, origin="lower", aspect="auto", cmap="magma", vmin=vmax - SPEC_FLOOR_DB, vmax=vmax,
                    extent=(0.0, max(duration, 1e-9), 0.0, db.shape[0]), interpolation="nearest")
    ticks = [0, db.shape[0] // 2, db.shape[0]]
    ax.set_yticks(ticks)
    ax.set_yticklabels(["0", "", f"{sample_rate / 2000:g}k"] if label_axes else ["", "", ""], fontsize=7)
    ax.tick_params(axis="x", labelsize=7)
    ax.xaxis.set_major_locator(MaxNLocator(4))
    return img


def spectrogram_png(wave, path, sample_rate: int = 16000, *, title: str | None = None, n_mels: int = 64,
                    width: float = 3.4, height: float = 1.7) -> Path:
    """A small log-mel spectrogram image (dB, 80 dB range, mel bins up to Nyquist) of one waveform (T,)."""
    db = log_mel_image(wave, sample_rate, n_mels)
    n = int(np.asarray(_to_numpy(wave)).size)
    fig = _figure(width, height)
    ax = fig.add_subplot(1, 1, 1)
    _draw_spec(ax, db, n / sample_rate, sample_rate, float(db.max()), True)
    ax.set_xlabel("s", fontsize=7, labelpad=1)
    if title:
        ax.set_title(title, fontsize=8)
    fig.tight_layout(pad=0.3)
    return _save(fig, path)


def spectrogram_strip(waves: Sequence[Any], values: Sequence[Any], path, sample_rate: int = 16000, *,
                      title: str | None = None, value_name: str = "value", n_mels: int = 64) -> Path:
    """Log-mel spectrograms side by side, one per traversed value, on one shared colour scale.

    ``waves``: the decoded waveforms (each (T,)); ``values``: the traversed value of each (labels the panels).
    A shared scale (80 dB below the loudest bin of all panels) makes level changes along the strip visible.
    """
    if len(waves) == 0 or len(waves) != len(values):
        raise ValueError(f"need one traversed value per waveform and at least one, got {len(waves)} waveforms "
                         f"and {len(values)} values")
    dbs = [log_mel_image(w, sample_rate, n_mels) for w in waves]
    durations = [int(np.asarray(_to_numpy(w)).size) / sample_rate for w in waves]
    vmax = max(float(d.max()) for d in dbs)
    fig = _figure(min(16.0, 1.9 * len(dbs) + 0.4), 2.0)
    axes = fig.subplots(1, len(dbs), squeeze=False)[0]
    for i, (ax, db, v) in enumerate(zip(axes, dbs, values)):
        _draw_spec(ax, db, durations[i], sample_rate, vmax, i == 0)
        label = f"{v:+.2f}" if isinstance(v, (float, np.floating)) else str(v)
        ax.set_title(f"{value_name} {label}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(pad=0.3)
    return _save(fig, path)


def layer_profile_plot(series: Mapping[str, Sequence[float | None]], path, *, title: str | None = None,
                       ylabel: str = "accuracy", chance: float | None = None) -> Path:
    """One line per model of a per-output number against relative depth (output i of n at i / (n - 1)).

    Models with different numbers of layers share the x axis this way; None values are gaps. ``chance`` draws a
    dotted horizontal line.
    """
    if not series:
        raise ValueError("series is empty; pass at least one model's per-output values")
    fig = _figure(6.4, 3.8)
    ax = fig.add_subplot(1, 1, 1)
    for name, values in series.items():
        y = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
        x = np.linspace(0.0, 1.0, len(y)) if len(y) > 1 else np.zeros(1)
        ax.plot(x, y, marker="o", label=str(name))
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle=":", linewidth=1, label="chance")
    ax.set_xlabel("relative depth (first output 0, last 1)")
    ax.set_ylabel(ylabel)
    ax.set_title(title or ylabel)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)
