"""Free-spectrum densities: the per-frequency posteriors of a free-spectrum analysis (ceffyl).

The refit likelihood (`ptaflow.likelihood.make_refit_likelihood`) evaluates a source model's
spectrum on these densities. The shipped set is the NANOGrav 15-yr HD free spectrum
(`data/ng15_ceffyl_hd`, 67 pulsars, 30 frequencies; provenance in `data/README.md`).
"""

from __future__ import annotations

import pathlib

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._paths import DATA_DIR
from ..errors import DataError

__all__ = ["FreeSpectrumDensities", "load_free_spectrum_densities"]


class FreeSpectrumDensities(eqx.Module):
    """Per-frequency posterior densities of a free-spectrum analysis on a regular log10 rho grid.

    rho_k^2 = S(f_k)/T with S the one-sided timing-residual PSD [s^3] (ceffyl convention,
    Lamb, Taylor & van Haasteren 2023, arXiv:2303.15442).

    Attributes:
        log10_rho_grid: (n_grid,) regular grid of log10(rho / s).
        log_density: (n_freq, n_grid) natural-log density of log10 rho at each frequency.
        freqs: (n_freq,) f_k = k/T [Hz].
        tspan: T [s].
    """

    log10_rho_grid: jax.Array
    log_density: jax.Array
    freqs: jax.Array
    tspan: float
    source: str = eqx.field(static=True, default="")


def load_free_spectrum_densities(
    path: str | pathlib.Path | None = None, *, tspan: float | None = None
) -> FreeSpectrumDensities:
    """Read ceffyl-format densities: `freqs.npy`, `log10rhogrid.npy`, `density.npy`.

    Args:
        path: the folder; default the shipped NG15 HD free spectrum (`data/ng15_ceffyl_hd`,
            67 pulsars, 30 frequencies).
        tspan: T [s]; default 1/f_1 from `freqs.npy`.
    """
    folder = pathlib.Path(path) if path is not None else DATA_DIR / "ng15_ceffyl_hd"
    files = {k: folder / f"{k}.npy" for k in ("freqs", "log10rhogrid", "density")}
    for key, file in files.items():
        if not file.is_file():
            raise DataError(
                f"free-spectrum densities: {file} is missing (expected {key}.npy in {folder})"
            )
    try:
        freqs = np.load(files["freqs"])
        grid = np.load(files["log10rhogrid"])
        dens = np.load(files["density"])
    except (ValueError, OSError) as exc:
        raise DataError(f"free-spectrum densities in {folder} could not be read: {exc}") from exc
    dens = dens.reshape(-1, dens.shape[-1]) if dens.ndim == 3 else dens
    if grid.ndim != 1 or dens.shape != (freqs.shape[0], grid.shape[0]):
        raise DataError(
            f"{folder}: density shape {dens.shape}, expected (n_freq={freqs.shape[0]}, "
            f"n_grid={grid.shape[0]}) matching freqs.npy and log10rhogrid.npy"
        )
    step = np.diff(grid)
    if not np.allclose(step, step[0], rtol=1e-6, atol=0):
        raise DataError(f"{folder}: log10rhogrid.npy is not a regular grid")
    if not np.isfinite(dens).all():
        raise DataError(f"{folder}: density.npy holds non-finite log-densities")
    return FreeSpectrumDensities(
        log10_rho_grid=jnp.asarray(grid),
        log_density=jnp.asarray(dens),
        freqs=jnp.asarray(freqs),
        tspan=float(1.0 / freqs[0] if tspan is None else tspan),
        source=str(folder),
    )
