"""Feature sources and THE feature-extraction function every analysis uses.

* :mod:`.sources`: the :class:`FeatureSource` protocol (``name``, ``sample_rate``, ``output_names``, ``hops``
  in samples per frame, ``dims``, ``stochastic``, ``receptive_fields``, ``encode(wave (B, 1, T), mode) ->
  list[(B, T_m, C_m)]``, ``frame_counts(n_samples)``, ``fingerprint()``), :class:`EncoderSource` (our
  encoders), :class:`LogMelSource` (the baseline). Specs (run dir, exported model folder, ``hf:...``,
  ``module:...``) and the ``--run`` / ``--model`` arguments of every verb: :mod:`smooth_infomax.sources.resolve`.
* :mod:`.extract`: :func:`extract_features` -> :class:`FeatureSet` (one seeding rule, exact batching of
  variable-length items, the 10 ms label-frame alignment, an optional npz cache).

Sources that are not ours implement the protocol in :mod:`smooth_infomax.sources` (``hf.load_hf_source``,
``module.load_module_source``); nothing here knows which model it has.
"""

from .extract import (
                      POOLS,
                      FeatureSet,
                      align_to_label_frames,
                      dataset_identity,
                      extract_features,
                      extract_pooled,
                      load_feature_set,
                      repool,
                      save_feature_set,
                      standardize,
)
from .sources import (
                      LABEL_FRAME,
                      MODES,
                      EncoderSource,
                      FeatureSource,
                      LogMelSource,
                      as_source,
                      source_config,
)

__all__ = ["FeatureSource", "EncoderSource", "LogMelSource", "FeatureSet", "as_source",
           "source_config", "extract_features", "extract_pooled", "repool", "align_to_label_frames", "standardize",
           "dataset_identity", "save_feature_set", "load_feature_set", "LABEL_FRAME", "POOLS", "MODES"]
