"""Spectra of Gaussian processes in pulsar timing: power laws and SGWB conversions.

The chain from a source model to the PTA likelihood is

    h^2 Omega_GW(f)  ->  h_c(f)  ->  S(f) [s^3]  ->  phi_k = S(f_k) / T  (= rho_k^2)

with h_c = (H0/h) / (pi f) sqrt(3/2 h^2 Omega_GW) and S = h_c^2 / (12 pi^2 f^3)
(e.g. PTArcade `models_utils.omega2cross`; arXiv:2306.16219, Sec. 2). The module also holds
the cosmology helpers the NANOGrav 15-yr new-physics models need (the degrees of freedom
g_rho, g_s of Saikawa & Shirai 2020, frequency <-> temperature at horizon crossing) and the
linear interpolation of the tabulated NG15 model spectra.

All spectral functions are pure JAX, traceable under jit, vmap and grad. Frequencies are in
Hz, temperatures in GeV, power spectral densities are one-sided timing-residual PSDs S(f)
in s^3. Tables are read lazily on first use and cached; nothing is read at import.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import pathlib

import jax.numpy as jnp
import numpy as np

from ._paths import DATA_DIR
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
from .errors import DataError, ParameterError, close_matches

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

#: Folder of the tabulated NG15 new-physics spectra and g_star.dat shipped with the repo.
MODEL_TABLES_DIR = DATA_DIR / "ng15_model_tables"

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


@functools.cache
def _g_star_table() -> np.ndarray:
    """g_star.dat as an (n, 4) array: T [GeV], f [Hz], g_s, g_rho (read once)."""
    path = MODEL_TABLES_DIR / "g_star.dat"
    if not path.is_file():
        raise DataError(
            f"{path} is missing; it holds g_rho(T) and g_s(T) (Saikawa & Shirai 2020). "
            "Restore it from the repository (data/ng15_model_tables/)."
        )
    table = np.loadtxt(path)
    if table.ndim != 2 or table.shape[1] != 4:
        raise DataError(f"{path}: expected 4 columns (T, f, g_s, g_rho), got shape {table.shape}")
    return table


def _g_interp(x, is_freq: bool, column: int):
    table = _g_star_table()
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
    table = _g_star_table()
    return jnp.interp(
        f, jnp.asarray(table[:, 1]), jnp.asarray(table[:, 0]), left=jnp.nan, right=jnp.nan
    )


# --- tabulated spectra -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class SpectrumTable:
    """A spectrum tabulated on a regular grid, interpolated multilinearly in JAX.

    Layout of the NG15 new-physics tables (PTArcade `fast_interpolate`): `names` are the
    grid axes, the last one being the frequency as log10(f/Hz); axis k holds the values
    `starts[k] + i * steps[k]`, i = 0..shape[k]-1; `values` is the tabulated quantity
    (log10 h^2 Omega_GW for cosmic strings, log10 of the kernel integral for SIGW).

    Interpolation is linear along each axis in the table's own coordinates (the same
    arithmetic as PTArcade's `fast_interpolate.interp`), exact on grid nodes. Inputs
    outside the grid are clamped to its edge (PTArcade does no bounds checking there).

    Attributes:
        path: file the table was read from.
        names: axis names; the last is "f".
        starts: first grid value of each axis, shape (n_axes,).
        steps: grid spacing of each axis, shape (n_axes,).
        values: tabulated values, shape (n_0, ..., n_f).
    """

    path: str
    names: tuple[str, ...]
    starts: np.ndarray
    steps: np.ndarray
    values: np.ndarray

    @property
    def param_names(self) -> tuple[str, ...]:
        """The non-frequency axes, in table order."""
        return self.names[:-1]

    def __call__(self, f, **params):
        """Interpolate the table at frequencies f [Hz] and the given parameter values.

        Args:
            f: frequencies [Hz] (the table axis is log10 f).
            **params: one value per non-frequency axis, by name.

        Returns:
            The interpolated table value, broadcast over f and the parameters.
        """
        missing = [n for n in self.param_names if n not in params]
        extra = [n for n in params if n not in self.param_names]
        if missing or extra:
            hint = close_matches(extra[0], self.param_names) if extra else ""
            raise ParameterError(
                f"table {self.path} has axes {self.param_names} (plus f); got "
                f"{tuple(params)}: missing {missing}, unexpected {extra}.{hint}"
            )
        coords = [jnp.asarray(params[n]) for n in self.param_names] + [jnp.log10(f)]
        coords = jnp.broadcast_arrays(*coords)
        shape = self.values.shape
        index, weight = [], []
        for x, x0, dx, n in zip(coords, self.starts, self.steps, shape, strict=True):
            t = jnp.clip((x - x0) / dx, 0.0, n - 1.0)
            i = jnp.clip(jnp.floor(t), 0, n - 2).astype(jnp.int32)
            index.append(i)
            weight.append(t - i)
        values = jnp.asarray(self.values)
        out = 0.0
        for corner in itertools.product((0, 1), repeat=len(shape)):
            w = 1.0
            for c, wk in zip(corner, weight, strict=True):
                w = w * (wk if c else 1.0 - wk)
            out = out + w * values[tuple(i + c for i, c in zip(index, corner, strict=True))]
        return out


@functools.cache
def load_spectrum_table(path: str | pathlib.Path) -> SpectrumTable:
    """Read an HDF5 spectrum table in the NG15 new-physics layout (cached per path).

    The file holds `parameter_names` (the last one is the frequency, log10 Hz), one dataset
    per name with (start, step) of its regular grid, and `spectrum`, the N-D array over
    (params..., frequency).

    Raises:
        DataError: the file is missing or does not have that layout.
    """
    import h5py

    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f"spectrum table {path} not found")
    try:
        with h5py.File(path, "r") as h5:
            names = tuple(h5["parameter_names"].asstr()[()])
            grid = np.array([h5[n][()] for n in names], dtype=np.float64)
            values = np.array(h5["spectrum"], dtype=np.float64)
    except (KeyError, OSError) as exc:
        raise DataError(
            f"{path}: expected datasets 'parameter_names', one (start, step) per name and "
            f"'spectrum' (NG15 model-table layout); reading failed: {exc}"
        ) from exc
    if names[-1] != "f" or grid.shape != (len(names), 2) or values.ndim != len(names):
        raise DataError(
            f"{path}: expected the last axis to be 'f' and one (start, step) per axis for a "
            f"{len(names)}-D spectrum; got names {names}, spectrum shape {values.shape}"
        )
    if np.any(np.array(values.shape) < 2):
        raise DataError(f"{path}: every axis needs at least 2 nodes, got {values.shape}")
    return SpectrumTable(str(path), names, grid[:, 0].copy(), grid[:, 1].copy(), values)


def model_table(name: str) -> SpectrumTable:
    """A shipped NG15 model table by name, e.g. "stable_c" -> data/ng15_model_tables/stable_c.h5."""
    return load_spectrum_table(MODEL_TABLES_DIR / f"{name}.h5")
