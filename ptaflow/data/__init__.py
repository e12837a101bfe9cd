"""Pulsar data: readers, white noise, selection, reduction to likelihood statistics, caches.

The submodules `free_spectrum` (the densities of the refit likelihood) and `tables` (the
tabulated spectra of source models and g_star) need JAX and are not imported here."""

from .pulsars import (
    Pulsar,
    WhiteNoise,
    array_span,
    file_sha256,
    from_enterprise,
    load_feather,
    load_noise_dict,
    load_pulsars,
    rank_pulsars,
    select_pulsars,
    white_noise_values,
)
from .reduction import (
    DEFAULT_REDUCED,
    ReducedPTA,
    epoch_index,
    fourier_basis,
    load_reduced,
    reduce_pta,
    reduce_pulsar,
    save_reduced,
    select_reduced,
    whiten,
)

__all__ = [
    "DEFAULT_REDUCED",
    "select_reduced",
    "Pulsar",
    "WhiteNoise",
    "ReducedPTA",
    "array_span",
    "epoch_index",
    "file_sha256",
    "fourier_basis",
    "from_enterprise",
    "load_feather",
    "load_noise_dict",
    "load_pulsars",
    "load_reduced",
    "rank_pulsars",
    "reduce_pta",
    "reduce_pulsar",
    "save_reduced",
    "select_pulsars",
    "white_noise_values",
    "whiten",
]
