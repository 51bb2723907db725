"""The two reproductions as data: which runs to train, which probes to fit, which decoder to train for ICS.

* ``thesis`` (METHOD.md §2.3, RESULTS.md §1): GIM (beta 0, still sampling, as the thesis) vs SIM / V-GIM
  (beta 0.0035); 32 channels, 2 modules, Adam 0.01 with gamma 0.995, batch 171, 800 epochs; encoder seeds
  2, 3, 4 on the ``reference`` and ``leakage_free`` splits.
  Probes: ``syllable-flatten`` (the thesis protocol: the flattened 32 x T module output, bias, 100 epochs,
  Adam 1e-3, batch 171, 5 probe seeds, label-efficiency curve), ``syllable-mean`` (time-mean pooling, 50
  epochs, 5 seeds), ``vowel-max-nobias`` (the thesis vowel probe: max-pooled over time, no bias).
  ICS: a log-mel decoder of module 2 (index 1), 100 epochs (as the thesis).
* ``paper`` (METHOD.md §2.1, §15): GIM, SIM (beta 0.01) and CPC; 512 channels, 3 modules + GRU, Adam 2e-4
  constant, batch 64, 1000 epochs, encoder seed 2 on the ``reference`` split.
  Probes: ``syllable-mean`` with random-init and log-mel baselines and ``vowel-mean`` (the paper's protocol:
  time-mean of every module's posterior mean, bias, Adam 1e-3, 50 epochs, batch 64, 3 probe seeds).
  ICS: a waveform-MSE decoder of the last conv module (index 2), 200 epochs (as the paper).

Both: every probe is also fitted on posterior **samples** (tag ``<tag>-sample``) for encoders with a Gaussian
posterior (``model.kind: sim``), and ``analysis.json`` (concentration, Gaussianity, total correlation,
disentanglement) on the test syllables.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError


@dataclass(frozen=True)
class ProbeSpec:
    """One probe of a reproduction: its results file is ``<tag>.json``; ``args`` go to ``smooth-infomax probe``."""

    tag: str
    args: tuple[str, ...]

    def sampled(self) -> ProbeSpec:
        """The same probe on posterior samples (no baselines: they do not depend on the encoder's mode)."""
        args = tuple(a for a in self.args if a != "--baselines")
        return ProbeSpec(f"{self.tag}-sample", (*args, "--mode", "sample"))


@dataclass(frozen=True)
class Scale:
    """Defaults of one reproduction (every one can be overridden on the command line)."""

    name: str
    config_suffix: str  # configs: <model>-artificial-speech<suffix>
    seeds: tuple[int, ...]
    schemes: tuple[str, ...]
    epochs: int
    models: tuple[str, ...]
    probes: tuple[ProbeSpec, ...]
    decoder_module: int
    decoder_loss: str
    decoder_epochs: int
    ics_pairs: int = 4000
    ics_models: tuple[str, ...] = ("gim", "sim")
    ics_schemes: tuple[str, ...] = ("reference",)
    #: probe runs that are still training (the paper's runs take days on a CPU); the thesis waits for encoder.pt
    probe_unfinished: bool = False

    def config_name(self, model: str) -> str:
        return f"{model}-artificial-speech{self.config_suffix}"


THESIS = Scale(
    name="thesis", config_suffix="-thesis", seeds=(2, 3, 4), schemes=("reference", "leakage_free"), epochs=800,
    models=("gim", "sim"),
    probes=(ProbeSpec("syllable-flatten", ("--task", "syllable", "--pool", "flatten", "--epochs", "100",
                                           "--batch-size", "171", "--seeds", "5", "--label-efficiency")),
            ProbeSpec("syllable-mean", ("--task", "syllable", "--pool", "mean", "--epochs", "50", "--seeds", "5")),
            ProbeSpec("vowel-max-nobias", ("--task", "vowel", "--pool", "max", "--no-bias", "--epochs", "100",
                                           "--batch-size", "171", "--seeds", "5"))),
    decoder_module=1, decoder_loss="mel", decoder_epochs=100)

PAPER = Scale(
    name="paper", config_suffix="", seeds=(2,), schemes=("reference",), epochs=1000, models=("gim", "sim", "cpc"),
    probes=(ProbeSpec("syllable-mean", ("--task", "syllable", "--pool", "mean", "--epochs", "50", "--batch-size",
                                        "64", "--seeds", "3", "--baselines")),
            ProbeSpec("vowel-mean", ("--task", "vowel", "--pool", "mean", "--epochs", "50", "--batch-size", "64",
                                     "--seeds", "3"))),
    decoder_module=2, decoder_loss="mse", decoder_epochs=200, probe_unfinished=True)

SCALES = {"thesis": THESIS, "paper": PAPER}
MODELS = ("gim", "sim", "cpc")
SCHEMES = ("reference", "leakage_free")


def scale(name: str) -> Scale:
    try:
        return SCALES[name]
    except KeyError:
        raise UserError(f"the reproduction must be 'thesis' or 'paper', not {name!r}") from None


__all__ = ["ProbeSpec", "Scale", "THESIS", "PAPER", "SCALES", "MODELS", "SCHEMES", "scale"]
