"""Published SGWB source spectra h^2 Omega_GW(f): the NANOGrav 15-yr new-physics set.

Pure JAX re-implementations of the NANOGrav NG15 new-physics model files v1.0.0
(arXiv:2306.16219, Sec. 3-5 and App. A; Zenodo 8084351, PTArcade 1.1.5 `models_utils`),
written from the formulas in the paper and checked against the official files' output
(`tests/test_models.py`). The model files in `models/` declare parameters and priors and call
these functions; keeping the physics here lets a full model and its two-parameter variant
share one implementation.

Every function takes f in Hz (any shape) and scalar or broadcastable parameters, returns the
dimensionless h^2 Omega_GW(f), and is traceable under jit, vmap and grad. Temperatures are in
GeV. Tabulated spectra are read on first use (`ptaflow.spectra.model_table`).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln

from .constants import (
    A_S,
    F_CMB_HZ,
    G_RHO_0,
    G_S_0,
    GEV_TO_HZ,
    H0_GEV,
    H_LITTLE,
    M_PL_GEV,
    OMEGA_R,
    T0_GEV,
    T_EQ_GEV,
)
from .spectra import freq_at_temp, g_rho, g_s, model_table

__all__ = [
    "broken_powerlaw_shape",
    "radiation_transfer",
    "igw_h2omega",
    "sigw_gauss_h2omega",
    "sigw_box_h2omega",
    "sigw_delta_h2omega",
    "pt_bubble_h2omega",
    "pt_sound_h2omega",
    "dw_h2omega",
    "dw_dr_h2omega",
    "cosmic_string_h2omega",
]

_LN10 = np.log(10.0)
_PI2 = np.pi**2


def broken_powerlaw_shape(x, a, b, c):
    """Peaked spectral shape S(x) = (a + b)^c / (b x^(-a/c) + a x^(b/c))^c, S(1) = 1.

    S ~ x^a below the peak and x^(-b) above it; c sets the width of the peak
    (arXiv:2306.16219, Eq. 20). Evaluated in log space so that it neither overflows nor
    loses gradients far from the peak.

    Args:
        x: f / f_peak, > 0.
        a, b, c: low- and high-frequency slopes and peak width, > 0.
    """
    log_x = jnp.log(x)
    log_den = jnp.logaddexp(jnp.log(b) - (a / c) * log_x, jnp.log(a) + (b / c) * log_x)
    return jnp.exp(c * (jnp.log(a + b) - log_den))


def _log_shape_norm(a, b, c):
    """log of the normalisation that makes the integral of S(x) over ln x equal to one.

    N = (b/a)^(a/n) (n c/b)^c Gamma(a/n) Gamma(b/n) / (n Gamma(c)), n = (a + b)/c
    (arXiv:2306.16219, below Eq. 20).
    """
    n = (a + b) / c
    return (
        (a / n) * jnp.log(b / a)
        + c * jnp.log(n * c / b)
        + gammaln(a / n)
        + gammaln(b / n)
        - jnp.log(n)
        - gammaln(c)
    )


def radiation_transfer(f):
    """h^2 Omega_r (g_rho(f)/g_rho0) (g_s0/g_s(f))^(4/3): redshifting of a GW that entered
    the horizon during radiation domination, with the degrees of freedom at horizon crossing.

    Args:
        f: present-day frequency [Hz].
    """
    return (
        H_LITTLE**2
        * OMEGA_R
        * (g_rho(f, is_freq=True) / G_RHO_0)
        * (G_S_0 / g_s(f, is_freq=True)) ** (4.0 / 3.0)
    )


# --- inflation --------------------------------------------------------------------------------


def igw_h2omega(f, n_t, log10_r, log10_T_rh):
    """IGW: blue-tilted inflationary tensor spectrum with reheating (arXiv:2306.16219, Sec. 3.1).

    h^2 Omega = h^2 Omega_r/24 (g_rho/g_rho0)(g_s0/g_s)^(4/3) r A_s (f/f_cmb)^n_t T(f/f_rh),
    with the degrees of freedom at min(f, f_rh), T(x) = 1/(1 - 0.22 x^1.5 + 0.65 x^2) and
    f_rh the horizon-crossing frequency of the reheating temperature T_rh.

    Args:
        f: frequency [Hz].
        n_t: tensor spectral index.
        log10_r: log10 of the tensor-to-scalar ratio at the CMB pivot scale.
        log10_T_rh: log10 of the reheating temperature [GeV].
    """
    f_rh = freq_at_temp(10.0**log10_T_rh)
    f_dof = jnp.minimum(f, f_rh)
    x = f / f_rh
    transfer = 1.0 / (1.0 - 0.22 * x**1.5 + 0.65 * x**2)
    log_tensor = log10_r * _LN10 + np.log(A_S) + n_t * jnp.log(f / F_CMB_HZ)
    return radiation_transfer(f_dof) / 24.0 * jnp.exp(log_tensor) * transfer


# --- scalar-induced GWs -----------------------------------------------------------------------


def sigw_gauss_h2omega(f, log10_fpeak, width, log10_A):
    """SIGW-GAUSS: GWs induced by a log-normal peak in the curvature power spectrum
    (arXiv:2306.16219, Sec. 3.2; kernel integral tabulated in sigw_gauss.h5).

    Args:
        f: frequency [Hz].
        log10_fpeak: log10 of the peak frequency [Hz].
        width: width Delta of the log-normal peak (in ln k).
        log10_A: log10 of the peak amplitude of the curvature spectrum.
    """
    kernel = model_table("sigw_gauss")(f, width=width, log10_fpeak=log10_fpeak)
    return radiation_transfer(f) * 10.0 ** (2.0 * log10_A + kernel)


def sigw_box_h2omega(f, log10_fmin, log10_fmax, log10_A):
    """SIGW-BOX: GWs induced by a flat curvature spectrum between f_min and f_max
    (arXiv:2306.16219, Sec. 3.2; kernel in sigw_box.h5, floor 10^-25 where f_min >= f_max).

    Args:
        f: frequency [Hz].
        log10_fmin, log10_fmax: log10 of the box edges [Hz].
        log10_A: log10 of the curvature-spectrum amplitude.
    """
    kernel = model_table("sigw_box")(f, log10_fmin=log10_fmin, log10_fmax=log10_fmax)
    return radiation_transfer(f) * 10.0 ** (2.0 * log10_A + kernel)


def sigw_delta_h2omega(f, log10_f_peak, log10_A):
    """SIGW-DELTA: GWs induced by a delta-function peak in the curvature spectrum
    (analytic kernel of Kohri & Terada 2018, arXiv:1804.08577; arXiv:2306.16219, Sec. 3.2).

    With x = f / f_peak:
    h^2 Omega = h^2 Omega_r (...)(...) A^2 (3/64) x^2 (1 - x^2/4)^2 (2 - 3x^2)^2 Theta(2 - x)
                [pi^2 (2 - 3x^2)^2 Theta(2 - sqrt(3) x) + ((2 - 3x^2) ln|1 - 4/(3x^2)| - 4)^2].
    Exactly zero for x >= 2 (momentum conservation). The logarithm diverges at the resonance
    x = 2/sqrt(3); its argument is floored at the float64 epsilon so that the value and its
    gradient stay finite there (the change is confined to |x - 2/sqrt(3)| ~ 1e-16).

    Args:
        f: frequency [Hz].
        log10_f_peak: log10 of the peak frequency [Hz].
        log10_A: log10 of the curvature-spectrum amplitude.
    """
    x = f / 10.0**log10_f_peak
    inside = x < 2.0
    x = jnp.where(inside, x, 1.0)  # the masked branch must stay finite for the gradient
    common = 2.0 - 3.0 * x**2
    factor1 = 3.0 / 64.0 * x**2 * (1.0 - x**2 / 4.0) ** 2 * common**2
    factor3 = jnp.where(np.sqrt(3.0) * x < 2.0, _PI2 * common**2, 0.0)
    log_arg = jnp.maximum(jnp.abs(1.0 - 4.0 / (3.0 * x**2)), np.finfo(np.float64).eps)
    factor4 = common * jnp.log(log_arg) - 4.0
    amplitude = 10.0 ** (2.0 * log10_A)
    value = radiation_transfer(f) * amplitude * factor1 * (factor3 + factor4**2)
    # Theta(2 - x) applied last, so that no cotangent reaches the zero region: gradients of
    # log S stay finite (zero) there.
    return jnp.where(inside, value, 0.0)


# --- first-order phase transitions ------------------------------------------------------------


def _redshift_factors(T_star):
    """g_rho(T*), (g_s(T_eq)/g_s(T*)): degrees of freedom at emission and their dilution."""
    g_star = g_rho(T_star)
    gs_ratio = g_s(T_EQ_GEV) / g_s(T_star)
    return g_star, gs_ratio


def _dilution(g_star, gs_ratio):
    """Energy-density dilution from emission to today, pi^2/90 g_* (g_s,eq/g_s,*)^(4/3)
    T0^4 / (M_pl H0)^2 (arXiv:2306.16219, Eq. 21)."""
    return _PI2 / 90.0 * g_star * gs_ratio ** (4.0 / 3.0) * T0_GEV**4 / (M_PL_GEV * H0_GEV) ** 2


def _pt_peak_today(g_star, gs_ratio, T_star, f_peak_emission, H_beta):
    """Peak frequency today [Hz] of a PT signal with peak f_peak_emission (in units of beta)."""
    return (
        np.pi
        / np.sqrt(90.0)
        * jnp.sqrt(g_star)
        * gs_ratio ** (1.0 / 3.0)
        * T0_GEV
        / M_PL_GEV
        * T_star
        * f_peak_emission
        / H_beta
        * GEV_TO_HZ
    )


def _pt_h2omega(f, log10_alpha, log10_T_star, log10_H_R, a, b, c, *, sound: bool):
    alpha = 10.0**log10_alpha
    T_star = 10.0**log10_T_star
    H_R = 10.0**log10_H_R
    H_beta = H_R * (8.0 * np.pi) ** (-1.0 / 3.0)  # H/beta for wall velocity v_w = 1
    g_star, gs_ratio = _redshift_factors(T_star)
    if sound:
        delta = 3.0 * 0.012 * (8.0 * np.pi) ** (1.0 / 3.0)  # arXiv:2005.10789
        f_peak = 0.54  # arXiv:1704.05871, Eq. 40
        q = 1.0
        kappa = alpha / (0.73 + 0.083 * jnp.sqrt(alpha) + alpha)  # arXiv:1004.4187, v_w = 1
        u_sq = 0.75 * kappa * alpha / (1.0 + alpha)
        tau_H = H_R / jnp.sqrt(u_sq)  # sound-wave lifetime, arXiv:2007.08537
        suppression = 1.0 - 1.0 / jnp.sqrt(1.0 + 2.0 * tau_H)
    else:
        delta = 0.48 / (1.0 + 5.3 + 5.0)  # envelope, v_w = 1, arXiv:1605.01403
        f_peak = 0.35 / (1.0 + 0.69 + 0.069)  # arXiv:1605.01403
        q = 2.0
        kappa = 1.0
        suppression = 1.0
    f_0 = _pt_peak_today(g_star, gs_ratio, T_star, f_peak, H_beta)
    log_amp = (
        _log_shape_norm(a, b, c)
        + jnp.log(H_LITTLE**2 * _dilution(g_star, gs_ratio) * delta)
        + q * jnp.log(H_beta)
        + 2.0 * jnp.log(kappa * alpha / (1.0 + alpha))
    )
    return suppression * jnp.exp(log_amp) * broken_powerlaw_shape(f / f_0, a, b, c)


def pt_bubble_h2omega(f, log10_alpha, log10_T_star, log10_H_R, a, b, c):
    """PT-BUBBLE: first-order phase transition, GWs from bubble collisions
    (envelope approximation, v_w = 1; arXiv:2306.16219, Sec. 4.1).

    h^2 Omega = N(a,b,c) h^2 D delta (H/beta)^2 (alpha/(1+alpha))^2 S(f/f_0; a, b, c),
    with H/beta = (8 pi)^(-1/3) H R, delta = 0.48/11.3, f_0 from the peak 0.35/1.759 beta.

    Args:
        f: frequency [Hz].
        log10_alpha: log10 of the transition strength alpha.
        log10_T_star: log10 of the percolation temperature [GeV].
        log10_H_R: log10 of the mean bubble separation times the Hubble rate, H R.
        a, b, c: spectral shape (see `broken_powerlaw_shape`).
    """
    return _pt_h2omega(f, log10_alpha, log10_T_star, log10_H_R, a, b, c, sound=False)


def pt_sound_h2omega(f, log10_alpha, log10_T_star, log10_H_R, a, b, c):
    """PT-SOUND: first-order phase transition, GWs from sound waves in the plasma
    (v_w = 1, with the finite sound-wave lifetime; arXiv:2306.16219, Sec. 4.1).

    h^2 Omega = N(a,b,c) h^2 D Upsilon delta (H/beta) (kappa alpha/(1+alpha))^2 S(f/f_0),
    kappa = alpha/(0.73 + 0.083 sqrt(alpha) + alpha), Upsilon = 1 - (1 + 2 H R/U)^(-1/2),
    U^2 = 3/4 kappa alpha/(1+alpha), delta = 0.036 (8 pi)^(1/3), peak at 0.54 beta.

    Args:
        f: frequency [Hz].
        log10_alpha, log10_T_star, log10_H_R: as in `pt_bubble_h2omega`.
        a, b, c: spectral shape.
    """
    return _pt_h2omega(f, log10_alpha, log10_T_star, log10_H_R, a, b, c, sound=True)


# --- domain walls -----------------------------------------------------------------------------


def _dw_from_alpha(f, alpha, T_star, g_star, gs_ratio, b, c):
    epsilon = 0.7  # efficiency from simulations, arXiv:2306.16219 Sec. 4.2
    f_0 = (
        gs_ratio ** (1.0 / 3.0)
        * jnp.sqrt(_PI2 * g_star / 90.0)
        * T0_GEV
        * T_star
        / M_PL_GEV
        * GEV_TO_HZ
    )
    amp = (
        H_LITTLE**2
        * epsilon
        * np.pi
        / 960.0
        * alpha**2
        * g_star
        * gs_ratio ** (4.0 / 3.0)
        * T0_GEV**4
        / (M_PL_GEV**2 * H0_GEV**2)
    )
    return amp * broken_powerlaw_shape(f / f_0, 3.0, b, c)


def dw_h2omega(f, log10_alpha, log10_T_star, b, c):
    """DW-SM: domain walls annihilating into Standard-Model particles (arXiv:2306.16219,
    Sec. 4.2): h^2 Omega = h^2 (epsilon pi/960) alpha^2 g_* (g_s,eq/g_s,*)^(4/3)
    T0^4/(M_pl H0)^2 S(f/f_0; 3, b, c), with f_0 the Hubble rate at T* redshifted to today.

    Args:
        f: frequency [Hz].
        log10_alpha: log10 of the wall energy fraction at annihilation, alpha_*.
        log10_T_star: log10 of the annihilation temperature [GeV].
        b, c: high-frequency slope and peak width (the low-frequency slope is 3).
    """
    T_star = 10.0**log10_T_star
    g_star, gs_ratio = _redshift_factors(T_star)
    return _dw_from_alpha(f, 10.0**log10_alpha, T_star, g_star, gs_ratio, b, c)


def dw_dr_h2omega(f, log10_N_eff, log10_T_star, b, c):
    """DW-DR: domain walls annihilating into dark radiation (arXiv:2306.16219, Sec. 4.2).

    As `dw_h2omega` with alpha_* = Delta N_eff / (13.6 g_* / g_s,*^(4/3)), where Delta N_eff
    is the dark radiation's contribution to the effective number of neutrinos.

    Args:
        f: frequency [Hz].
        log10_N_eff: log10 of Delta N_eff.
        log10_T_star: log10 of the annihilation temperature [GeV].
        b, c: high-frequency slope and peak width.
    """
    T_star = 10.0**log10_T_star
    g_star, gs_ratio = _redshift_factors(T_star)
    gs_star = g_s(T_star)
    alpha = 10.0**log10_N_eff / (13.6 * g_star / gs_star ** (4.0 / 3.0))
    return _dw_from_alpha(f, alpha, T_star, g_star, gs_ratio, b, c)


# --- cosmic strings ---------------------------------------------------------------------------


def cosmic_string_h2omega(table: str, f, **params):
    """Cosmic-string spectra tabulated in log10 h^2 Omega_GW (arXiv:2306.16219, Sec. 5):
    h^2 Omega = 10^table(log10 f, params), interpolated linearly in the table coordinates.

    Args:
        table: table name, e.g. "stable_c" or "meta_l" (data/ng15_model_tables/NAME.h5).
        f: frequency [Hz].
        **params: the table's axes, e.g. log10_Gmu (and sqrt_kappa for metastable strings).
    """
    return 10.0 ** model_table(table)(f, **params)
