"""Decoders from latents back to audio, and the latent tools built on them.

* :mod:`.model`: architectures (the mirror of our encoder, a generic one for any feature source);
* :mod:`.losses`: ``mse``, ``mel``, ``mse+mel``;
* :mod:`.store`: the decoder file format (plain data + weights);
* :mod:`.cache`: latents of dataset items, encoded once;
* :mod:`.train`: :func:`train_decoder` on cached latents, :class:`DecoderSettings`;
* :mod:`.latent`: traversal, interpolation, prior samples, the ICS (pure maths);
* :mod:`.media`: WAV files and figures;
* :mod:`.cli`: the verbs ``decoder train``, ``traverse``, ``interpolate``, ``sample``, ``ics``.
"""

from .cache import LatentCache, cache_latents, encode_items, find_item, subset_indices
from .latent import (
                     TRAVERSAL_RANGE,
                     decode,
                     default_ds,
                     ics,
                     ics_naive,
                     ics_pairs,
                     ics_subset,
                     interpolate,
                     rank_dims,
                     sample_prior,
                     time_means,
                     top_dims,
                     traversal_latents,
                     traverse,
)
from .losses import LOSSES, decoder_loss, mel_loss, mel_settings
from .media import plot_ics, plot_mel_strip, plot_waves, write_wav, write_wavs
from .model import (
                     Decoder,
                     DecoderLayer,
                     EncoderStep,
                     GenericDecoder,
                     build_decoder,
                     encoder_lengths,
                     encoder_steps,
                     output_names,
                     plan_decoder,
                     plan_generic,
                     resolve_output,
                     upsampling_factors,
)
from .store import decoder_state, load_decoder, save_decoder
from .train import DecoderSettings, make_decoder, resolve_device, settings_with, train_decoder

__all__ = [
    "Decoder", "GenericDecoder", "DecoderLayer", "EncoderStep", "build_decoder", "plan_decoder", "plan_generic",
    "upsampling_factors", "encoder_steps", "encoder_lengths", "output_names", "resolve_output",
    "LOSSES", "decoder_loss", "mel_loss", "mel_settings",
    "decoder_state", "save_decoder", "load_decoder",
    "LatentCache", "cache_latents", "encode_items", "find_item", "subset_indices",
    "DecoderSettings", "settings_with", "train_decoder", "make_decoder", "resolve_device",
    "TRAVERSAL_RANGE", "decode", "default_ds", "ics", "ics_naive", "ics_pairs", "ics_subset", "interpolate",
    "rank_dims", "sample_prior", "time_means", "top_dims", "traversal_latents", "traverse",
    "plot_ics", "plot_mel_strip", "plot_waves", "write_wav", "write_wavs",
]
