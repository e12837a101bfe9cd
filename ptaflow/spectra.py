"""Spectra of Gaussian processes in pulsar timing: power laws and SGWB conversions.

The chain from a source model to the PTA likelihood is

    h^2 Omega_GW(f)  ->  h_c(f)  ->  S(f) [s^3]  ->  phi_k = S(f_k) / T  (= rho_k^2)

with h_c = (H0/h) / (pi f) sqrt(3/2 h^2 Omega_GW) and S = h_c^2 / (12 pi^2 f^3)
(e.g. PTArcade `models_utils.omega2cross`; arXiv:2306.16219, Sec. 2). The module also holds
the cosmology helpers the NANOGrav 15-yr new-physics models need (the degrees of freedom
g_rho, g_s of Saikawa & Shirai 2020, frequency <-> temperature at horizon crossing). The
tabulated NG15 model spectra and the g_star table are read, and interpolated, by
`ptaflow.data.tables` (re-exported here).

All spectral functions are pure JAX, traceable under jit, vmap and grad. Frequencies are in
Hz, temperatures in GeV, power spectral densities are one-sided timing-residual PSDs S(f)
in s^3. Tables are read lazily on first use and cached; nothing is read at import.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .constants import (
    FYR_HZ,
    G_RHO_0,
    G_S_0,
    H0_HZ,
    H0_OVER_H_HZ,
    OMEGA_M,
    OMEGA_R,
    OMEGA_V,
    T0_GEV,
)

# The readers of tabulated spectra live in the data layer (re-exported here).
from .data.tables import (
    MODEL_TABLES_DIR,
    SpectrumTable,
    g_star_table,
    load_spectrum_table,
    model_table,
)

__all__ = [
    "MODEL_TABLES_DIR",
    "powerlaw_psd",
    "powerlaw_h2omega",
    "h2omega_to_hc",
    "hc_to_psd",
    "h2omega_to_psd",
    "psd_to_h2omega",
    "psd_to_variance",
    "psd_to_log10_rho",
    "log10_rho_to_psd",
    "fourier_frequencies",
    "g_rho",
    "g_s",
    "freq_at_temp",
    "temp_at_freq",
    "SpectrumTable",
    "load_spectrum_table",
    "model_table",
]

_PI = np.pi


# --- power laws --------------------------------------------------------------------------------


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


def powerlaw_h2omega(f, log10_A, gamma):
    """The power law of `powerlaw_psd` as an energy density.

    h^2 Omega_GW(f) = 2 pi^2 A^2 f_yr^2 / (3 (H0/h)^2) (f / f_yr)^(5 - gamma)
    (h_c = A (f/f_yr)^((3 - gamma)/2); e.g. arXiv:2306.16219, Eq. 6).

    Args:
        f: frequencies [Hz], any shape.
        log10_A: log10 of the characteristic-strain amplitude at f_yr.
        gamma: spectral index of the timing-residual PSD (13/3 for circular SMBHBs).

    Returns:
        h^2 Omega_GW(f), dimensionless, broadcast over the inputs.
    """
    log10_pref = np.log10(2.0 * _PI**2 * FYR_HZ**2 / (3.0 * H0_OVER_H_HZ**2))
    log10_h2omega = log10_pref + 2.0 * log10_A + (5.0 - gamma) * (jnp.log10(f) - np.log10(FYR_HZ))
    return 10.0**log10_h2omega


# --- unit conversions --------------------------------------------------------------------------


def h2omega_to_hc(f, h2omega):
    """Characteristic strain h_c(f) = (H0/h) / (pi f) sqrt(3/2 h^2 Omega_GW(f)).

    Args:
        f: frequencies [Hz].
        h2omega: h^2 Omega_GW(f), dimensionless, >= 0.

    Returns:
        h_c(f), dimensionless.
    """
    return H0_OVER_H_HZ / (_PI * f) * jnp.sqrt(1.5 * h2omega)


def hc_to_psd(f, hc):
    """Timing-residual PSD S(f) = h_c(f)^2 / (12 pi^2 f^3) [s^3].

    Args:
        f: frequencies [Hz].
        hc: characteristic strain, dimensionless.
    """
    return hc**2 / (12.0 * _PI**2 * f**3)


def h2omega_to_psd(f, h2omega):
    """Timing-residual PSD S(f) [s^3] of an SGWB with energy density h^2 Omega_GW(f).

    S = (H0/h)^2 h^2 Omega_GW / (8 pi^4 f^5), i.e. `hc_to_psd(f, h2omega_to_hc(f, h2omega))`
    written without the square root so that gradients stay finite where Omega_GW = 0, and
    grouped as (H0/(h f))^2 / f^3 so that no intermediate underflows in float32.

    Args:
        f: frequencies [Hz].
        h2omega: h^2 Omega_GW(f), dimensionless.

    Returns:
        S(f) [s^3].
    """
    return h2omega * (H0_OVER_H_HZ / f) ** 2 / (8.0 * _PI**4 * f**3)


def psd_to_h2omega(f, psd):
    """Inverse of `h2omega_to_psd`: h^2 Omega_GW = 8 pi^4 f^5 S / (H0/h)^2 (dimensionless)."""
    return (8.0 * _PI**4 / H0_OVER_H_HZ**2) * f**5 * psd


def psd_to_variance(psd, tspan):
    """Prior variance of each sin/cos Fourier coefficient, phi_k = S(f_k) Delta f [s^2].

    With Delta f = 1/T this is also the free-spectrum rho_k^2 = S(f_k) / T.

    Args:
        psd: S(f_k) [s^3].
        tspan: T, the time span of the array [s].
    """
    return psd / tspan


def psd_to_log10_rho(psd, tspan):
    """Free-spectrum amplitude log10(rho_k / s) = 0.5 log10(S(f_k) / T).

    Args:
        psd: S(f_k) [s^3].
        tspan: T [s].
    """
    return 0.5 * jnp.log10(psd / tspan)


def log10_rho_to_psd(log10_rho, tspan):
    """Inverse of `psd_to_log10_rho`: S(f_k) = T 10^(2 log10_rho) [s^3]."""
    return tspan * 10.0 ** (2.0 * log10_rho)


def fourier_frequencies(tspan, n_freq: int):
    """The PTA Fourier frequencies f_k = k / T, k = 1..n_freq [Hz], shape (n_freq,)."""
    return jnp.arange(1, n_freq + 1) / tspan


# --- degrees of freedom and horizon crossing ---------------------------------------------------


def _g_interp(x, is_freq: bool, column: int):
    table = g_star_table()
    xp = table[:, 1] if is_freq else table[:, 0]
    return jnp.interp(x, jnp.asarray(xp), jnp.asarray(table[:, column]))


def g_rho(x, *, is_freq: bool = False):
    """Relativistic degrees of freedom of the energy density, g_rho.

    Linear interpolation (in T or f, not in log) of the Saikawa & Shirai (2020,
    arXiv:2005.03544) table, clamped to the end values outside it, exactly as PTArcade's
    `models_utils.g_rho` (which uses `np.interp`).

    Args:
        x: temperature T [GeV], or present-day frequency f [Hz] of a GW that was of
            horizon size at T when `is_freq` is True.
        is_freq: interpret x as a frequency.

    Returns:
        g_rho, dimensionless, same shape as x.
    """
    return _g_interp(x, is_freq, 3)


def g_s(x, *, is_freq: bool = False):
    """Relativistic degrees of freedom of the entropy density, g_s (see `g_rho`)."""
    return _g_interp(x, is_freq, 2)


def freq_at_temp(T):
    """Present-day frequency [Hz] of a GW that was of horizon size at temperature T [GeV].

    f = H0/(2 pi) (g_s0/g_s)^(1/3) (T0/T) sqrt(Omega_v + Omega_m (g_s/g_s0) (T/T0)^3
    + Omega_r (g_rho/g_rho0) (T/T0)^4), as PTArcade `models_utils.freq_at_temp`.

    Args:
        T: temperature [GeV], any shape.
    """
    t_ratio = T0_GEV / T
    g_ratio = G_RHO_0 / g_rho(T)
    gs_ratio = G_S_0 / g_s(T)
    prefactor = H0_HZ / (2.0 * _PI) * gs_ratio ** (1.0 / 3.0) * t_ratio
    return prefactor * jnp.sqrt(
        OMEGA_V + OMEGA_M / (gs_ratio * t_ratio**3) + OMEGA_R / (g_ratio * t_ratio**4)
    )


def temp_at_freq(f):
    """Temperature [GeV] at which a GW of present-day frequency f [Hz] was of horizon size.

    Linear interpolation of the g_star.dat (f, T) columns; NaN outside the table
    (as PTArcade `models_utils.temp_at_freq`).
    """
    table = g_star_table()
    return jnp.interp(
        f, jnp.asarray(table[:, 1]), jnp.asarray(table[:, 0]), left=jnp.nan, right=jnp.nan
    )
