"""The reproductions as commands: ``smooth-infomax reproduce thesis|paper|page|compact|selfcheck``.

* :mod:`.protocols` — what each reproduction trains and probes (data, no code paths);
* :mod:`.runner` — training runs side by side, then probes, analysis, decoders and ICS as resumable stages;
* :mod:`.summary` — a run's progress and ``train.json`` from its ``metrics.csv``;
* :mod:`.results_page` — ``docs/results.md`` from the results JSON;
* :mod:`.selfcheck` — CUDA against the CPU before GPU time is spent;
* :mod:`.cli` — the sub-commands.
"""

from .protocols import PAPER, SCALES, THESIS, ProbeSpec, Scale
from .results_page import build_page, write_page
from .runner import Plan, reproduce

__all__ = ["PAPER", "THESIS", "SCALES", "Scale", "ProbeSpec", "Plan", "reproduce", "build_page", "write_page"]
