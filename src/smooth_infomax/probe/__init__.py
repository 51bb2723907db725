"""Linear probes on a frozen feature source: phones, speakers, syllables, vowels, consonants.

* :mod:`.tasks`: the tasks, what data each reads, :class:`ProbeSettings`;
* :mod:`.heads`: logistic-regression heads (mini-batch Adam; many heads in one go) and the metrics;
* :mod:`.protocol`: the protocol of one task (:func:`run_probe`), baselines, the Markdown table;
* :mod:`.cli`: ``smooth-infomax probe``.
"""

from ..features import align_to_label_frames
from .cli import register
from .heads import evaluate, predict, subsample_per_class, train_heads, train_linear
from .protocol import markdown_table, probe_models, run_probe, task_features
from .tasks import (
                    DEFAULT_EFFICIENCY,
                    SYLLABLE_TASKS,
                    TASKS,
                    ProbeSettings,
                    class_names,
                    label_key,
                    n_classes,
                    open_task_data,
)

__all__ = ["ProbeSettings", "run_probe", "probe_models", "task_features", "train_linear", "train_heads", "evaluate",
           "predict", "subsample_per_class", "align_to_label_frames", "markdown_table", "open_task_data", "label_key",
           "class_names", "n_classes", "register", "TASKS", "SYLLABLE_TASKS", "DEFAULT_EFFICIENCY"]
