"""Spectra of Gaussian processes in pulsar timing: power laws and SGWB conversions.

All functions are pure JAX, traceable under jit, vmap and grad. Frequencies are in Hz and
power spectral densities are one-sided timing-residual PSDs S(f) in s^3.
"""

from __future__ import annotations

import jax.numpy as jnp

from .constants import FYR_HZ

__all__ = ["powerlaw_psd"]


def powerlaw_psd(f, log10_A, gamma):
    """Power-law timing-residual PSD.

    S(f) = A^2 / (12 pi^2) f_yr^(gamma - 3) f^(-gamma)  [s^3]
    (e.g. enterprise `utils.powerlaw` without the frequency-bin width).

    Args:
        f: frequencies [Hz], any shape.
        log10_A: log10 of the characteristic-strain amplitude at f_yr (dimensionless).
        gamma: spectral index of the timing-residual PSD.

    Returns:
        S(f) [s^3], broadcast over the inputs.
    """
    log10_S = (
        2.0 * log10_A
        - jnp.log10(12.0 * jnp.pi**2)
        + (gamma - 3.0) * jnp.log10(FYR_HZ)
        - gamma * jnp.log10(f)
    )
    return 10.0**log10_S
