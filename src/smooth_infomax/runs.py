"""The run directory format, and the one place that opens a run's data with its config.

A run directory (``smooth-infomax train --out RUN_DIR``, layout in :mod:`smooth_infomax.checkpoint`) holds the
resolved ``config.yaml``, ``checkpoints/last.pt`` while training and ``encoder.pt`` when done.

* :func:`run_config` reads the config, :func:`load_encoder` the trained encoder (``smooth_infomax.load``),
  :func:`save_encoder` writes ``encoder.pt``.
* :func:`open_run_data` opens a split of the run's dataset (or of another dataset, ``data_path``) with every
  data key of the config: ``split_scheme``, ``layout``, ``sample_rate``, ``crop_grid``, ``cache_dir`` and the
  seed. Training, probes, decoders, latent tools, ABX, analysis and the pipeline all open data through it, so
  ``--set data.split_scheme=leakage_free`` reaches every stage.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Optional, Union

from .checkpoint import atomic_torch_save, load_state, run_paths, torch_load
from .config import RunConfig, load_config
from .data import detect_layout, open_dataset
from .errors import ConfigError, UserError
from .model import Encoder, SmoothInfoMax

PathLike = Union[str, "os.PathLike[str]"]

#: probe / analysis tasks and the dataset view each one reads
TASKS = ("phone", "speaker", "syllable", "vowel", "consonant", "position")
SYLLABLE_TASKS = ("syllable", "vowel", "consonant", "position")
UTTERANCE_TASKS = ("phone", "speaker")


def run_config(run_dir: PathLike) -> RunConfig:
    """The resolved config saved with a run (UserError when ``run_dir`` is not a run directory)."""
    path = run_paths(run_dir)["config"]
    if not path.exists():
        raise UserError(f"{run_dir} is not a run directory (no config.yaml); pass the --out of a training run")
    return load_config(path)


def is_run_dir(path: PathLike) -> bool:
    """True when ``path`` looks like a run directory (a config plus an encoder or a checkpoint)."""
    paths = run_paths(path)
    return paths["config"].is_file() and (paths["encoder"].is_file() or paths["checkpoint"].is_file())


def load_encoder(run_dir: PathLike, device: str = "cpu") -> Encoder:
    """The trained encoder of a run directory, in eval mode (falls back to the last checkpoint while training)."""
    paths = run_paths(run_dir)
    if paths["encoder"].exists():
        state = torch_load(paths["encoder"])
        encoder = Encoder(load_config({"model": state["model_config"]}).model)
        load_state(encoder, state["state_dict"], paths["encoder"])
    elif paths["checkpoint"].exists():
        cfg = load_config(paths["config"])
        sim = SmoothInfoMax(cfg.model, cfg.loss)
        load_state(sim, torch_load(paths["checkpoint"])["model"], paths["checkpoint"])
        encoder = sim.encoder
    else:
        raise UserError(f"{run_dir} holds no trained encoder (no encoder.pt or checkpoints/last.pt); "
                        f"train one with 'smooth-infomax train --out {run_dir}'")
    return encoder.to(device).eval()


def save_encoder(encoder: Any, cfg: RunConfig, path: PathLike) -> None:
    """Write ``encoder.pt``: ``{"model_config", "run_config", "state_dict"}`` (tensors on the CPU), atomically."""
    atomic_torch_save({"model_config": dataclasses.asdict(cfg.model), "run_config": cfg.to_dict(),
                       "state_dict": {k: v.detach().cpu() for k, v in encoder.state_dict().items()}}, path)


def data_view(cfg: RunConfig, layout: str) -> Optional[str]:
    """Pre-training view of a dataset: whole words for the artificial speech dataset, utterances otherwise."""
    return "words" if layout == "artificial" else None


def task_view(task: Optional[str]) -> Optional[str]:
    """The view a probe task reads: syllable items for syllable/vowel/consonant/position, utterances otherwise."""
    return "syllables" if task in SYLLABLE_TASKS else None


def config_data_path(cfg: RunConfig) -> Path:
    """``data.path``, checked to exist (ConfigError naming the key otherwise)."""
    if not cfg.data.path:
        raise ConfigError("config key 'data.path' is not set; pass --set data.path=DIR (or use a config that sets it)")
    path = Path(cfg.data.path)
    if not path.exists():
        raise ConfigError(f"config key 'data.path': {path} does not exist; generate data with "
                          f"'smooth-infomax data synth --out {path}' or point it at a dataset")
    return path


def _same_path(a: Path, b: Optional[str]) -> bool:
    if not b:
        return False
    try:
        return a.resolve() == Path(b).resolve()
    except OSError:  # pragma: no cover
        return False


def check_task_layout(task: str, layout: str, path: PathLike) -> None:
    """UserError when dataset ``path`` (of ``layout``) has no labels for probe ``task``."""
    if task not in TASKS:
        raise UserError(f"task {task!r} is not a probe task; choose from {', '.join(TASKS)}")
    if task in UTTERANCE_TASKS and layout == "artificial":
        raise UserError(f"--task {task} needs LibriSpeech-layout data with speakers/phones; {path} is the artificial "
                        f"speech dataset (use --task syllable, vowel or consonant)")
    if task in SYLLABLE_TASKS and layout not in ("artificial", "synthetic"):
        raise UserError(f"--task {task} needs syllable labels (the artificial speech or synthetic dataset); "
                        f"{path} is a {layout} dataset")


def open_run_data(cfg: RunConfig, split: str, *, task: Optional[str] = None, data_path: Optional[PathLike] = None,
                  view: Optional[str] = None, crop: Union[int, None, str] = "auto", random_crop: bool = False,
                  split_scheme: Optional[str] = None, seed: Optional[int] = None) -> Any:
    """Open ``split`` (``train`` / ``test``) of the run's dataset with every data key of ``cfg``.

    data_path: another dataset than ``cfg.data.path`` (its layout is then detected, unless it is the same path).
    task: a probe task; picks its view (syllables for syllable/vowel/consonant/position, utterances for
        phone/speaker), checks the data has its labels and defaults to whole items.
    view: an explicit view (default: the task's, else the pre-training view of :func:`data_view`).
    crop: ``"auto"`` (whole items for a task, else ``cfg.data.crop``), ``"config"`` (``cfg.data.crop``),
        None (whole items) or a number of samples. random_crop: draw crop offsets (training only).
    split_scheme: overrides ``cfg.data.split_scheme`` (an explicit ``--split-scheme``); None keeps the config's.
    seed: crop seed (default ``cfg.seed``).
    Returns a torch Dataset of :class:`~smooth_infomax.data.records.Utterance`.
    """
    if data_path is None:
        path = config_data_path(cfg)
        layout = cfg.data.layout if cfg.data.layout != "auto" else detect_layout(path)
    else:
        path = Path(data_path)
        if not path.exists():
            raise UserError(f"--data {path} does not exist; pass a dataset folder")
        same = _same_path(path, cfg.data.path) and cfg.data.layout != "auto"
        layout = cfg.data.layout if same else detect_layout(path)
    if task is not None:
        check_task_layout(task, layout, path)
    if view is None:
        view = task_view(task) if task is not None else data_view(cfg, layout)
    if crop == "auto":
        crop = None if task is not None else int(cfg.data.crop)
    elif crop == "config":
        crop = int(cfg.data.crop)
    elif isinstance(crop, str):
        raise UserError(f"crop must be 'auto', 'config', None or a number of samples, got {crop!r}")
    scheme = cfg.data.split_scheme if split_scheme is None else split_scheme
    return open_dataset(path, split=split, view=view, layout=layout, sample_rate=int(cfg.data.sample_rate),
                        crop=crop, random_crop=random_crop, crop_grid=int(cfg.data.crop_grid),
                        seed=int(cfg.seed if seed is None else seed), split_scheme=scheme,
                        cache_dir=cfg.data.cache_dir)


def open_training_data(cfg: RunConfig) -> tuple[Any, Any]:
    """(train, validation) datasets for pre-training, as the config describes (random crops on train only)."""
    train_set = open_run_data(cfg, "train", crop="config", random_crop=cfg.data.random_crop)
    val_set = open_run_data(cfg, "test", crop="config", random_crop=False)
    if len(train_set) == 0:
        path = cfg.data.path
        raise UserError(f"{path}: the training split is empty; check the dataset layout with "
                        f"'smooth-infomax data info {path}'")
    return train_set, val_set


def data_config(sample_rate: int = 16000, data_path: Optional[PathLike] = None,
                split_scheme: str = "reference") -> RunConfig:
    """A default run config holding only data keys, for feature sources that are not runs (``--model hf:...``)."""
    data: dict[str, Any] = {"sample_rate": int(sample_rate), "split_scheme": split_scheme}
    if data_path is not None:
        data["path"] = str(data_path)
    return load_config({"data": data})


__all__ = ["run_config", "is_run_dir", "load_encoder", "save_encoder", "open_run_data", "open_training_data",
           "data_view", "task_view", "config_data_path", "check_task_layout", "data_config", "TASKS",
           "SYLLABLE_TASKS"]
