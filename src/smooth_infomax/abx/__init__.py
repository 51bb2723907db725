"""The triphone ABX error rate (ZeroSpeech / Libri-light, "within context"), within and across speakers.

* :mod:`.metric`: pure functions on arrays (angular frame distance, DTW path mean, cells, aggregation).
* :mod:`.items`: ABX items (phone + neighbours + speaker) from 10 ms frame labels.
* :mod:`.evaluate`: a feature source on a dataset -> ``abx.json`` + ``abx.md`` (with log-mel and random-init).
* :mod:`.cli`: ``smooth-infomax abx``.

The maintained reference implementation is fastabx (Python >= 3.12); this package implements the same
definitions itself so that it runs wherever the project does.
"""

from .items import ItemTable, limit_cells, phone_items
from .metric import abx_error, aggregate, angular_distances, dtw_path_mean, pair_distances

__all__ = ["abx_error", "aggregate", "angular_distances", "dtw_path_mean", "pair_distances", "ItemTable",
           "phone_items", "limit_cells"]
