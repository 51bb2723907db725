"""Interpretability analyses of learned latents: total correlation, disentanglement against known factors,
concentration of information in few dimensions, Gaussianity / posterior collapse, and figures.

Pure functions: numpy arrays in, floats or JSON-ready dicts out, no global state. Figures live in
:mod:`smooth_infomax.analysis.plots` and the ``analyze`` command in :mod:`smooth_infomax.analysis.cli`.
"""

from .concentration import (
    concentration_metrics,
    dims_for_energy,
    gini,
    ics_auc,
    ics_dims_to_reach,
    normalize_weights,
    participation_ratio,
    top_k_energy,
)
from .disentanglement import dci, discretize, factor_entropies, mig, mutual_info_matrix, sap
from .gaussianity import (
    active_dimensions,
    aggregate_kl_per_dim,
    aggregate_kl_to_standard_normal,
    gaussianity_report,
    per_dim_moments,
)
from .plots import ics_curves, latent_histograms, loss_curves, tsne_plot, weight_density_plot
from .total_correlation import (
    gaussian_total_correlation,
    knn_total_correlation,
    reference_total_correlation,
    total_correlation,
)

__all__ = [
    "total_correlation", "gaussian_total_correlation", "knn_total_correlation", "reference_total_correlation",
    "mig", "dci", "sap", "mutual_info_matrix", "discretize", "factor_entropies",
    "participation_ratio", "gini", "dims_for_energy", "top_k_energy", "concentration_metrics", "normalize_weights",
    "ics_dims_to_reach", "ics_auc",
    "aggregate_kl_to_standard_normal", "aggregate_kl_per_dim", "active_dimensions", "per_dim_moments",
    "gaussianity_report",
    "weight_density_plot", "latent_histograms", "tsne_plot", "loss_curves", "ics_curves",
]
