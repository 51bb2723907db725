"""The facts an exported model carries about its training run, and its model card (``README.md``).

:func:`run_summary` collects them from a run directory (data, epochs, final losses per module from
``metrics.csv``, probe results when the run has them, licences); they travel in the exported ``config.json``
(key ``training``) so that :func:`model_card` can rebuild the card from the model folder alone (``save_pretrained``
and ``push_to_hub`` of a loaded model write the same card). Pure functions of their inputs, no torch.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from huggingface_hub import ModelCard, ModelCardData

from .config import RunConfig
from .data import detect_layout
from .errors import UserError

#: the licence of the data each layout ships with (an SPDX-like id for the card's ``license`` field)
DATA_LICENCES = {
    "artificial": ("cc-by-nc-sa-4.0", "the artificial speech dataset (Bart de Boer), CC-BY-NC-SA-4.0: "
                   "non-commercial, share-alike"),
    "librispeech": ("cc-by-4.0", "LibriSpeech (openslr.org/12), CC BY 4.0"),
    "synthetic": ("mit", "smooth-infomax's synthetic speech, generated with espeak-ng (GPL-3.0-or-later program; "
                  "the recordings are its output)"),
}
CODE_LICENCE = "MIT"


def data_layout(cfg: RunConfig) -> str:
    """The layout of the run's training data: the config's, else detected from ``data.path``, else unknown."""
    if cfg.data.layout != "auto":
        return cfg.data.layout
    if cfg.data.path and Path(cfg.data.path).exists():
        try:
            return detect_layout(cfg.data.path)
        except UserError:
            return "unknown"
    return "unknown"


def final_losses(metrics_csv: Path) -> list[dict[str, Any]]:
    """The last epoch's rows of ``metrics.csv`` (one per split and module: loss, infonce, kl, accuracy)."""
    if not metrics_csv.is_file():
        return []
    try:
        with open(metrics_csv, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise UserError(f"{metrics_csv} cannot be read ({type(exc).__name__}); fix or delete it and export "
                        f"again") from None
    if not rows or "epoch" not in rows[0]:
        return []
    try:
        last = max(int(r["epoch"]) for r in rows)
    except (TypeError, ValueError):
        raise UserError(f"{metrics_csv}: the epoch column is not a number; fix or delete the file") from None
    keep = ("split", "module", "loss", "infonce", "kl", "accuracy")
    out = []
    for r in rows:
        if int(r["epoch"]) == last:
            entry: dict[str, Any] = {"epoch": last}
            for k in keep:
                if k in r and r[k] not in (None, ""):
                    entry[k] = r[k] if k in ("split", "module") else float(r[k])
            out.append(entry)
    return out


def _probe_files(run_dir: Path, extra: Sequence[Path]) -> list[Path]:
    """``probe_*.json`` files: those given (files or folders), then the run's own ``probes/`` folder and a
    pipeline's ``OUT/probes/<run name>/`` next to ``OUT/runs/<run name>``."""
    found: list[Path] = []
    for p in extra:
        if p.is_dir():
            found += sorted(p.rglob("probe_*.json"))
        elif p.is_file():
            found.append(p)
        else:
            raise UserError(f"--probes {p} does not exist; pass probe_*.json files or the folders holding them")
    for folder in (run_dir / "probes", run_dir.parent.parent / "probes" / run_dir.name):
        if not extra and folder.is_dir():
            found += sorted(folder.rglob("probe_*.json"))
    return found


def probe_results(run_dir: Path, extra: Sequence[Path] = ()) -> list[dict[str, Any]]:
    """Probe accuracies of the run: ``[{task, model, output, accuracy_mean, accuracy_std, chance}]``."""
    out: list[dict[str, Any]] = []
    for path in _probe_files(run_dir, extra):
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"{path} is not a probe result (JSON: {type(exc).__name__}); pass probe_*.json "
                            f"files written by 'smooth-infomax probe'") from None
        if not isinstance(result, Mapping) or not isinstance(result.get("results"), Mapping):
            raise UserError(f"{path} is not a probe result (no 'results'); pass probe_*.json files written by "
                            f"'smooth-infomax probe'")
        for model, per_output in result["results"].items():
            if not isinstance(per_output, Mapping):
                continue
            for output, entry in per_output.items():
                if isinstance(entry, Mapping) and "accuracy_mean" in entry:
                    out.append({"task": result.get("task", path.stem), "model": model, "output": output,
                                "accuracy_mean": float(entry["accuracy_mean"]),
                                "accuracy_std": float(entry.get("accuracy_std", 0.0)),
                                "chance": result.get("chance")})
    return out


def run_summary(run_dir: Path, cfg: RunConfig, *, licence: Optional[str] = None,
                probes: Sequence[Path] = ()) -> dict[str, Any]:
    """The training facts of a run, JSON-ready (stored as ``training`` in the exported config.json)."""
    layout = data_layout(cfg)
    data_licence, data_note = DATA_LICENCES.get(layout, ("other", "not known: pass --license when exporting"))
    losses = final_losses(run_dir / "metrics.csv")
    return {
        "run": run_dir.name,
        "data": {"name": Path(cfg.data.path).name if cfg.data.path else None, "layout": layout,
                 "sample_rate": int(cfg.data.sample_rate), "crop": int(cfg.data.crop),
                 "split_scheme": cfg.data.split_scheme, "licence": data_note},
        "epochs": int(cfg.train.epochs), "epochs_completed": max((r["epoch"] for r in losses), default=0),
        "schedule": cfg.train.schedule, "batch_size": int(cfg.train.batch_size), "lr": float(cfg.train.lr),
        "beta": cfg.loss.beta, "seed": int(cfg.seed),
        "final_losses": losses, "probes": probe_results(run_dir, probes),
        "license": licence or data_licence, "code_license": CODE_LICENCE,
    }


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))  # noqa: E731
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]]


def model_card(config: Mapping[str, Any], version: str) -> ModelCard:
    """The model card of an exported model from its ``config.json`` content (see :mod:`smooth_infomax.hub`)."""
    model, training = config["model"], config.get("training") or {}
    name = config.get("name", "smooth-infomax")
    licence = training.get("license", config.get("license", "other"))
    data = training.get("data", {})
    card_data = ModelCardData(license=licence, library_name="smooth-infomax",
                              tags=["audio", "speech", "self-supervised-learning", "smooth-infomax", model["kind"]])
    sr = int(config["sample_rate"])
    lines = [f"# {name}", "",
             f"A {model['kind'].upper()} speech encoder (Smooth InfoMax / Greedy InfoMax / CPC family) trained with "
             f"smooth-infomax {version}. Input: mono waveform at {sr} Hz; output: one feature sequence per module.",
             "", "## Architecture", "",
             f"kind `{model['kind']}`, {model['channels']} channels, {len(model['modules'])} conv module(s), "
             f"GRU {model.get('gru_hidden')}, BatchNorm {model.get('batch_norm')}, input normalisation "
             f"`{model.get('input_norm', 'none')}`.", ""]
    rows = [(n, h, f"{1000 * h / sr:.2f}", d, rf) for n, h, d, rf in
            zip(config["output_names"], config["hops"], config["dims"], config["receptive_fields"])]
    lines += _table(["output", "hop (samples)", "hop (ms)", "dims", "receptive field (samples)"], rows)
    for i, mod in enumerate(model["modules"]):
        layers = ", ".join(f"{l.get('type', 'conv')} k{l['kernel']} s{l.get('stride', 1)} p{l.get('padding', 0)}"
                           for l in mod["layers"])
        lines.append(f"{'' if i else chr(10)}- module {i}: {layers}; heads k{mod.get('head_kernel', 1)}")
    lines += ["", "## Training", ""]
    if training:
        lines += [f"Data: {data.get('name')} ({data.get('layout')} layout, split `{data.get('split_scheme')}`, "
                  f"crops of {data.get('crop')} samples). Epochs: {training.get('epochs_completed')} of "
                  f"{training.get('epochs')} ({training.get('schedule')} schedule), "
                  f"batch {training.get('batch_size')}, "
                  f"lr {training.get('lr')}, beta {training.get('beta')}, seed {training.get('seed')}.", ""]
        if training.get("final_losses"):
            lines += ["Final losses per module (last epoch):", ""]
            lines += _table(["split", "module", "loss", "InfoNCE", "KL", "accuracy"],
                            [(r.get("split"), r.get("module"), r.get("loss"), r.get("infonce"), r.get("kl"),
                              r.get("accuracy")) for r in training["final_losses"]])
            lines.append("")
        if training.get("probes"):
            lines += ["Linear probe accuracy (mean ± std over seeds):", ""]
            lines += _table(["task", "features", "output", "accuracy", "std", "chance"],
                            [(p["task"], p["model"], p["output"], p["accuracy_mean"], p["accuracy_std"],
                              p.get("chance")) for p in training["probes"]])
            lines.append("")
    else:
        lines += ["No training record was exported with this model.", ""]
    lines += ["## Use", "", "```python", "import smooth_infomax", "",
              "model = smooth_infomax.from_pretrained(\"PATH_OR_REPO_ID\")  # eval mode, on the CPU",
              f"features = model.extract_features(wave)  # wave (B, T) at {sr} Hz -> one (B, T_m, C_m) per output",
              "```", "", "SUPERB / s3prl: see `docs/interop.md` of smooth-infomax (`smooth_infomax.upstream`).", "",
              "## Licences", "",
              f"- weights: `{licence}`", f"- training data: {data.get('licence', 'not recorded')}",
              f"- code (smooth-infomax): {training.get('code_license', CODE_LICENCE)}", ""]
    return ModelCard("---\n" + card_data.to_yaml() + "\n---\n\n" + "\n".join(lines))


__all__ = ["run_summary", "model_card", "final_losses", "probe_results", "data_layout", "DATA_LICENCES"]
