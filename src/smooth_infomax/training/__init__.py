"""Pre-training SIM, GIM and CPC encoders: one loop (:mod:`.loop`) for every schedule, fed by a batch source.

* :func:`train`: waveforms, ``train.schedule`` ``joint`` or ``sequential`` (:class:`~.batches.WaveBatches`);
  under torchrun each process trains on its shares of every global batch (:mod:`.distributed`).
* :func:`train_modulewise`: module by module on cached activations (:class:`~.batches.CachedBatches`,
  :class:`~.cache.ActivationCache` in memory or on disk).
* :mod:`.logs`: statistics, ``metrics.csv``, TensorBoard, the progress bar and chance warnings.
* :mod:`.cli`: the ``train`` and ``train-modulewise`` commands.
"""

from .batches import CachedBatches, WaveBatches, module_plan
from .cache import ActivationCache, choose_storage
from .logs import EpochStats, chance_warnings
from .loop import resolve_device, run, seed_everything, train, train_modulewise

__all__ = ["train", "train_modulewise", "run", "WaveBatches", "CachedBatches", "module_plan", "ActivationCache",
           "choose_storage", "EpochStats", "chance_warnings", "seed_everything", "resolve_device"]
