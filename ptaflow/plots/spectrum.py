"""Posterior SGWB spectra against the free-spectrum densities (NANOGrav-style violins)."""

from __future__ import annotations

import math
import pathlib
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ..errors import ParameterError
from ..spectra import psd_to_log10_rho
from .style import DPI, _colour, _named_sets, _plain, _save, _title

if TYPE_CHECKING:
    from ..data.free_spectrum import FreeSpectrumDensities

__all__ = ["SPECTRUM_PERCENTILES", "spectrum_draws", "plot_spectrum"]

#: Percentiles of the posterior spectrum drawn: 95% band, 68% band, median.
SPECTRUM_PERCENTILES = (2.5, 16.0, 50.0, 84.0, 97.5)
#: Colour of the free-spectrum violins.
_GREY = "0.55"


def spectrum_draws(model: Any, thetas: Any, freqs: Any, tspan: float) -> np.ndarray:
    """Free-spectrum amplitudes log10 rho_k = 0.5 log10(S(f_k; theta) / T) at posterior draws.

    Args:
        model: any object with `param_names` and a pure-JAX `psd(f, theta)` returning the
            timing-residual PSD S [s^3] (`ptaflow.models.SourceModel`,
            `ptaflow.likelihood.PowerLawProcess`); theta holds its parameters only.
        thetas: (n_samples, n_dim) parameter draws, columns in `model.param_names` order.
        freqs: (n_freq,) frequencies f_k [Hz].
        tspan: T [s].

    Returns:
        (n_samples, n_freq) log10(rho / s), evaluated with one jit-compiled `jax.vmap`.
    """
    n_dim = len(model.param_names)
    thetas = jnp.asarray(thetas)
    if thetas.ndim != 2 or thetas.shape[1] != n_dim:
        raise ParameterError(
            f"thetas: expected shape (n_samples, n_dim={n_dim}) for {tuple(model.param_names)}; "
            f"got {thetas.shape}"
        )
    f = jnp.asarray(freqs)
    if f.ndim != 1 or f.shape[0] == 0 or not bool(jnp.all(f > 0)):
        raise ParameterError(f"freqs: expected a 1-D array of positive frequencies [Hz], got {f}")
    if not np.isfinite(tspan) or tspan <= 0:
        raise ParameterError(f"tspan={tspan!r}: expected a positive time span [s]")

    @jax.jit
    def draws(th):
        return jax.vmap(lambda t: psd_to_log10_rho(model.psd(f, t), tspan))(th)

    return np.asarray(draws(thetas))


def plot_spectrum(
    draws: Any,
    densities: FreeSpectrumDensities,
    *,
    n_freq: int = 14,
    ylim: tuple[float, float] | None = None,
    ncols: int | None = None,
    context: str = "",
    path: str | pathlib.Path | None = None,
) -> Figure:
    """Posterior SGWB spectra against the free-spectrum densities (NANOGrav-style violins).

    One panel per model (small multiples on a grid with shared axes, titled with the model's
    label), so that ten or more models stay readable. In every panel the free-spectrum
    density p_k(log10 rho) at each f_k is drawn as a violin (grey, width proportional to the
    density, the top 0.1%-of-peak tail cut), and the model's draws of log10 rho_k
    (`spectrum_draws`) as the median line with 68% and 95% bands (percentiles
    `SPECTRUM_PERCENTILES`). The band edges are lines too, with gid "{label}/p{percentile}"
    (e.g. "SMBHB/p2.5"). One legend, below the panels, explains the symbols.

    Args:
        draws: (n_samples, n_freq) log10(rho / s) draws, or {label: draws} for several models.
        densities: free-spectrum densities (`ptaflow.likelihood.load_free_spectrum_densities`).
        n_freq: frequencies shown, the lowest n_freq of the densities.
        ylim: log10 rho range; default from the bands and the violins.
        ncols: panels per row; default ceil(sqrt(n_models)), at most 4.
        context: second title line: the data, mode and pulsars shown (`figure_context`).
        path: image file to write, or None.

    Returns:
        The figure: `fig.axes` holds one axes per model, in the order of `draws` (x =
        log10(f / Hz), y = log10(rho / s)).
    """
    sets = _checked_draws(draws, densities, n_freq)
    n_models = len(sets)
    ncols, nrows = _grid_shape(n_models, ncols)
    x = np.log10(np.asarray(densities.freqs)[:n_freq])
    violins, top = _violins(densities, x, n_freq)
    quantiles = {label: np.percentile(d, SPECTRUM_PERCENTILES, axis=0) for label, d in sets.items()}
    if ylim is None:
        ylim = _default_ylim(quantiles, np.asarray(densities.log10_rho_grid), top)

    size = (7.0, 5.0) if n_models == 1 else (3.2 * ncols, 2.5 * nrows + 1.3)
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    panels = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
    for ax, (label, q) in zip(panels, quantiles.items(), strict=False):
        _draw_panel(ax, label, q, x, violins)
    for i in range(n_models, nrows * ncols):  # empty grid cells
        fig.delaxes(panels[i])
    for i in range(max(0, n_models - ncols), n_models):  # the lowest panel of each column
        panels[i].xaxis.set_tick_params(which="both", labelbottom=True)
        panels[i].set_xlabel(r"$\log_{10}(f\,/\,\mathrm{Hz})$")
    panels[0].set_ylim(*ylim)
    fig.supylabel(r"$\log_{10}(\rho\,/\,\mathrm{s})$", fontsize="medium")
    _spectrum_legend(fig, wide=size[0] >= 8)
    _title(fig, "Posterior spectra against the free-spectrum densities", context)
    _save(fig, path)
    return fig


def _checked_draws(
    draws: Any, densities: FreeSpectrumDensities, n_freq: int
) -> dict[str, np.ndarray]:
    """The draws as {label: (n_samples, n_freq) array}, checked against the densities."""
    sets = _named_sets(draws, "draws", "posterior")
    n_avail = np.asarray(densities.freqs).shape[0]
    if not 1 <= n_freq <= n_avail:
        raise ParameterError(f"n_freq={n_freq}: expected 1..{n_avail} (the densities' count)")
    for label, d in sets.items():
        if d.ndim != 2 or d.shape[1] != n_freq or d.shape[0] == 0:
            raise ParameterError(
                f"draws {label!r}: expected shape (n_samples, n_freq={n_freq}) of log10 rho; "
                f"got {d.shape}"
            )
    return sets


def _grid_shape(n_models: int, ncols: int | None) -> tuple[int, int]:
    """(columns, rows) of the panel grid: `ncols` (default ceil(sqrt(n_models)), at most 4),
    no more than there are models."""
    if ncols is None:
        ncols = min(4, math.ceil(math.sqrt(n_models)))
    elif ncols < 1:
        raise ParameterError(f"ncols={ncols!r}: expected a positive number of columns or None")
    ncols = min(ncols, n_models)
    return ncols, math.ceil(n_models / ncols)


def _violins(
    densities: FreeSpectrumDensities, x: np.ndarray, n_freq: int
) -> tuple[list[tuple[np.ndarray, np.ndarray, np.ndarray]], float]:
    """The violin outline of each frequency's density and the highest log10 rho drawn.

    Each violin is centred on its log10 f_k, with half-width 0.4 of the distance to the
    nearer neighbour (0.15 for a single frequency) at the density's peak, and cut where the
    density falls below 0.1% of its peak at the top.

    Returns:
        ([(log10 rho values, left edges, right edges) per frequency], highest log10 rho).
    """
    grid = np.asarray(densities.log10_rho_grid)
    log_dens = np.asarray(densities.log_density)[:n_freq]
    gaps = np.diff(x)
    half = 0.4 * np.minimum(np.append(gaps, np.inf), np.insert(gaps, 0, np.inf))
    half = np.where(np.isfinite(half), half, 0.15)
    violins = []
    top = -np.inf
    for k in range(n_freq):
        vals = np.exp(log_dens[k] - np.max(log_dens[k]))
        keep = np.flatnonzero(vals >= 1e-3)
        sl = slice(0, keep[-1] + 1)
        top = max(top, grid[keep[-1]])
        violins.append((grid[sl], x[k] - half[k] * vals[sl], x[k] + half[k] * vals[sl]))
    return violins, top


def _default_ylim(quantiles: dict[str, np.ndarray], grid: np.ndarray, top: float):
    """log10 rho range: 1 below the lowest band and 0.3 above the highest band or violin,
    within the densities' grid."""
    bottom = min(float(np.min(q[0])) for q in quantiles.values())
    top = max(top, max(float(np.max(q[-1])) for q in quantiles.values()))
    return (max(float(grid[0]), bottom - 1.0), min(float(grid[-1]), top + 0.3))


def _draw_panel(ax, label: str, q: np.ndarray, x: np.ndarray, violins: list) -> None:
    """One model's panel: the violins, its 95% and 68% bands and its percentile lines."""
    colour = _colour(0)
    for y_k, left, right in violins:
        ax.fill_betweenx(y_k, left, right, color=_GREY, alpha=0.45, linewidth=0)
    ax.fill_between(x, q[0], q[4], color=colour, alpha=0.2, linewidth=0)
    ax.fill_between(x, q[1], q[3], color=colour, alpha=0.35, linewidth=0)
    for p, row in zip(SPECTRUM_PERCENTILES, q, strict=True):
        median = p == 50.0
        ax.plot(x, row, color=colour, linewidth=1.8 if median else 0.6, gid=f"{label}/p{p:g}")
    ax.set_title(_plain(label), fontsize="medium")


def _spectrum_legend(fig: Figure, *, wide: bool) -> None:
    """The legend below the panels: violins, median and bands (four columns if `wide`)."""
    colour = _colour(0)
    handles = [
        Patch(color=_GREY, alpha=0.45, linewidth=0),
        Line2D([], [], color=colour, linewidth=1.8),
        Patch(color=colour, alpha=0.35 + 0.2 * 0.65, linewidth=0),
        Patch(color=colour, alpha=0.2, linewidth=0),
    ]
    names = ["free-spectrum density", "posterior median", "68% credible band", "95% credible band"]
    fig.legend(handles, names, loc="outside lower center", ncols=4 if wide else 2, frameon=False)
