"""Figures for posteriors, spectra, Bayes factors and flow training, written as image files.

Every function builds its own `matplotlib.figure.Figure` (never pyplot's global state, so it
is safe in scripts, threads and on machines without a display) and returns it; with `path`
it is also saved (format from the suffix: .png, .pdf, .svg) atomically. PNGs are
`figure size [in] x dpi` pixels.
"""

from __future__ import annotations

import io
import pathlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .errors import ParameterError, close_matches
from .results import write_bytes_atomic
from .spectra import psd_to_log10_rho

if TYPE_CHECKING:
    from .likelihood import FreeSpectrumDensities

__all__ = [
    "DPI",
    "plot_corner",
    "spectrum_draws",
    "plot_spectrum",
    "plot_bayes_factors",
    "plot_losses",
]

#: Resolution of saved raster images [dots per inch].
DPI = 100
#: Percentiles of the posterior spectrum drawn: 95% band, 68% band, median.
SPECTRUM_PERCENTILES = (2.5, 16.0, 50.0, 84.0, 97.5)


def _colour(i: int) -> str:
    return f"C{i % 10}"


def _save(fig: Figure, path: str | pathlib.Path | None) -> None:
    """Save `fig` to `path` atomically (format from the suffix, PNG without one)."""
    if path is None:
        return
    path = pathlib.Path(path)
    fmt = path.suffix[1:].lower() or "png"
    if fmt not in fig.canvas.get_supported_filetypes():
        raise ParameterError(
            f"path {path}: unknown image format {fmt!r}; expected one of "
            f"{sorted(fig.canvas.get_supported_filetypes())}"
        )
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=DPI)
    write_bytes_atomic(path, buf.getvalue())


def _named_sets(values: Any, what: str, default: str) -> dict[str, np.ndarray]:
    """A mapping label -> array, or one array under the `default` label."""
    if isinstance(values, Mapping):
        if not values:
            raise ParameterError(f"{what}: expected at least one entry, got an empty mapping")
        return {str(k): np.asarray(v, dtype=np.float64) for k, v in values.items()}
    return {default: np.asarray(values, dtype=np.float64)}


# --- corner plots ------------------------------------------------------------------------------


def plot_corner(
    sample_sets: Sequence[Any],
    *,
    param_names: Sequence[str],
    labels: Sequence[str],
    weights: Sequence[Any | None] | None = None,
    latex_labels: Mapping[str, str] | None = None,
    truths: Sequence[float | None] | Mapping[str, float] | None = None,
    bins: int = 30,
    path: str | pathlib.Path | None = None,
) -> Figure:
    """Overlay several posterior sample sets (flow, NUTS, PTMCMC, ...) in one corner plot.

    Diagonal: 1-D histograms normalised to unit area (so sets of different size compare);
    off-diagonal: the 1- and 2-sigma contours of the 2-D histograms (39.3% and 86.5% mass),
    each set in its own colour (C0, C1, ...) with a legend. All sets share the bins, spanning
    the union of their samples (with positive weight).

    Args:
        sample_sets: arrays of shape (n_samples_i, n_dim), n_samples_i > n_dim.
        param_names: the n_dim parameter names (column order).
        labels: legend label of each set.
        weights: per set, None or non-negative weights (n_samples_i,) (e.g.
            `PosteriorResult.weights`); None for all sets unweighted.
        latex_labels: axis labels by parameter name (default: the names).
        truths: reference values, (n_dim,) (None entries allowed) or {name: value}.
        bins: histogram bins per parameter.
        path: image file to write, or None.

    Returns:
        The figure (n_dim x n_dim axes, `fig.axes` in row-major order).

    Raises:
        ParameterError: shapes, lengths or names that do not match.
    """
    import corner

    names = tuple(param_names)
    n_dim = len(names)
    if n_dim == 0:
        raise ParameterError("param_names: expected at least one parameter name")
    sets = [np.asarray(s, dtype=np.float64) for s in sample_sets]
    if not sets:
        raise ParameterError("sample_sets: expected at least one sample set, got none")
    labels = [str(lab) for lab in labels]
    if len(labels) != len(sets):
        raise ParameterError(
            f"labels: expected {len(sets)} (one per sample set), got {len(labels)}"
        )
    for lab, s in zip(labels, sets, strict=True):
        if s.ndim != 2 or s.shape[1] != n_dim or s.shape[0] <= n_dim:
            raise ParameterError(
                f"sample set {lab!r}: expected shape (n_samples > {n_dim}, n_dim={n_dim}) for "
                f"{names}; got {s.shape}"
            )
        if not np.isfinite(s).all():
            raise ParameterError(f"sample set {lab!r} holds non-finite values")
    weights = [None] * len(sets) if weights is None else list(weights)
    if len(weights) != len(sets):
        raise ParameterError(
            f"weights: expected {len(sets)} entries (one per sample set, None allowed), got "
            f"{len(weights)}"
        )
    ws: list[np.ndarray | None] = []
    for lab, s, w in zip(labels, sets, weights, strict=True):
        if w is None:
            ws.append(None)
            continue
        w = np.asarray(w, dtype=np.float64)
        if w.shape != (s.shape[0],) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ParameterError(
                f"weights of sample set {lab!r}: expected finite non-negative values of shape "
                f"({s.shape[0]},) with a positive sum; got shape {w.shape}"
            )
        ws.append(w)
    latex = dict(latex_labels or {})
    for key in latex:
        if key not in names:
            raise ParameterError(
                f"latex_labels: {key!r} is not a parameter of {names}." + close_matches(key, names)
            )
    truth_values = _truths(truths, names)

    used = [s if w is None else s[w > 0] for s, w in zip(sets, ws, strict=True)]
    lo = np.min([u.min(axis=0) for u in used], axis=0)
    hi = np.max([u.max(axis=0) for u in used], axis=0)
    pad = 0.02 * np.where(hi > lo, hi - lo, 1.0)
    ranges = [(float(a), float(b)) for a, b in zip(lo - pad, hi + pad, strict=True)]

    # corner's own layout: 2 in per panel, margins 1.0 in (left/bottom) and 0.4 in.
    side = 2.0 * n_dim + 2.0 * (n_dim - 1) * 0.05 + 1.4
    fig = Figure(figsize=(side, side), dpi=DPI)
    fig.subplots(n_dim, n_dim, squeeze=False)
    axis_labels = [latex.get(n, n) for n in names]
    for i, (s, w) in enumerate(zip(sets, ws, strict=True)):
        colour = _colour(i)
        corner.corner(
            s,
            weights=w,
            fig=fig,
            bins=bins,
            range=ranges,
            color=colour,
            labels=axis_labels,
            smooth=1.0,
            levels=(1.0 - np.exp(-0.5), 1.0 - np.exp(-2.0)),
            plot_datapoints=False,
            plot_density=False,
            no_fill_contours=True,
            hist_kwargs={"density": True, "color": colour},
            truths=truth_values if i == len(sets) - 1 else None,
            truth_color="k",
        )
    axes = np.asarray(fig.axes).reshape(n_dim, n_dim)
    for k in range(n_dim):  # every set's histogram fits, not only the last one drawn
        ax = axes[k, k]
        top = max(float(np.max(p.get_xy()[:, 1])) for p in ax.patches)
        ax.set_ylim(0.0, 1.1 * top)
    handles = [Line2D([], [], color=_colour(i)) for i in range(len(sets))]
    fig.legend(handles, labels, loc="upper right", frameon=False)
    _save(fig, path)
    return fig


def _truths(truths: Any, names: tuple[str, ...]) -> list[float | None] | None:
    if truths is None:
        return None
    if isinstance(truths, Mapping):
        for key in truths:
            if key not in names:
                raise ParameterError(
                    f"truths: {key!r} is not a parameter of {names}." + close_matches(key, names)
                )
        return [None if truths.get(n) is None else float(truths[n]) for n in names]
    values = list(truths)
    if len(values) != len(names):
        raise ParameterError(f"truths: expected {len(names)} values for {names}, got {len(values)}")
    return [None if v is None else float(v) for v in values]


# --- spectra -----------------------------------------------------------------------------------


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
    path: str | pathlib.Path | None = None,
) -> Figure:
    """Posterior SGWB spectra against the free-spectrum densities (NANOGrav-style violins).

    At each f_k the free-spectrum density p_k(log10 rho) is drawn as a violin (grey, width
    proportional to the density, the top 0.1%-of-peak tail cut). Each model's draws of
    log10 rho_k (`spectrum_draws`) are drawn as the median line with 68% and 95% bands
    (percentiles `SPECTRUM_PERCENTILES`); several models overlay in colours C0, C1, ...
    The band edges are lines too, with gid "{label}/p{percentile}" (e.g. "SMBHB/p2.5").

    Args:
        draws: (n_samples, n_freq) log10(rho / s) draws, or {label: draws} for several models.
        densities: free-spectrum densities (`ptaflow.likelihood.load_free_spectrum_densities`).
        n_freq: frequencies shown, the lowest n_freq of the densities.
        ylim: log10 rho range; default from the bands and the violins.
        path: image file to write, or None.

    Returns:
        The figure (one axes: x = log10(f / Hz), y = log10(rho / s)).
    """
    sets = _named_sets(draws, "draws", "posterior")
    freqs = np.asarray(densities.freqs)
    if not 1 <= n_freq <= freqs.shape[0]:
        raise ParameterError(
            f"n_freq={n_freq}: expected 1..{freqs.shape[0]} (the densities' count)"
        )
    for label, d in sets.items():
        if d.ndim != 2 or d.shape[1] != n_freq or d.shape[0] == 0:
            raise ParameterError(
                f"draws {label!r}: expected shape (n_samples, n_freq={n_freq}) of log10 rho; "
                f"got {d.shape}"
            )
    x = np.log10(freqs[:n_freq])
    grid = np.asarray(densities.log10_rho_grid)
    log_dens = np.asarray(densities.log_density)[:n_freq]
    gaps = np.diff(x)
    half = 0.4 * np.minimum(np.append(gaps, np.inf), np.insert(gaps, 0, np.inf))
    half = np.where(np.isfinite(half), half, 0.15)

    fig = Figure(figsize=(7.0, 4.5), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    top = -np.inf
    for k in range(n_freq):
        vals = np.exp(log_dens[k] - np.max(log_dens[k]))
        keep = np.flatnonzero(vals >= 1e-3)
        sl = slice(0, keep[-1] + 1)
        top = max(top, grid[keep[-1]])
        ax.fill_betweenx(
            grid[sl],
            x[k] - half[k] * vals[sl],
            x[k] + half[k] * vals[sl],
            color="0.55",
            alpha=0.45,
            linewidth=0,
            label="free spectrum" if k == 0 else None,
        )
    bottom = np.inf
    for i, (label, d) in enumerate(sets.items()):
        colour = _colour(i)
        q = np.percentile(d, SPECTRUM_PERCENTILES, axis=0)
        ax.fill_between(x, q[0], q[4], color=colour, alpha=0.2, linewidth=0)
        ax.fill_between(x, q[1], q[3], color=colour, alpha=0.35, linewidth=0)
        for p, row in zip(SPECTRUM_PERCENTILES, q, strict=True):
            median = p == 50.0
            ax.plot(
                x,
                row,
                color=colour,
                linewidth=1.8 if median else 0.6,
                label=label if median else None,
                gid=f"{label}/p{p:g}",
            )
        bottom = min(bottom, float(np.min(q[0])))
        top = max(top, float(np.max(q[4])))
    if ylim is None:
        ylim = (max(float(grid[0]), bottom - 1.0), min(float(grid[-1]), top + 0.3))
    ax.set_ylim(*ylim)
    ax.set_xlabel(r"$\log_{10}(f\,/\,\mathrm{Hz})$")
    ax.set_ylabel(r"$\log_{10}(\rho\,/\,\mathrm{s})$")
    ax.legend(loc="lower left", frameon=False)
    _save(fig, path)
    return fig


# --- Bayes factors and training ----------------------------------------------------------------


def _finite(values: Any, n: int, what: str, *, non_negative: bool = False) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (n,):
        raise ParameterError(f"{what}: expected shape ({n},) (one per model), got {arr.shape}")
    if not np.isfinite(arr).all() or (non_negative and (arr < 0).any()):
        kind = "finite non-negative" if non_negative else "finite"
        raise ParameterError(f"{what}: expected {kind} values, got {arr.tolist()}")
    return arr


def plot_bayes_factors(
    names: Sequence[str],
    log_bf: Any,
    log_bf_err: Any,
    *,
    reference: str,
    second: tuple[Any, Any] | None = None,
    estimators: tuple[str, str] = ("learned harmonic mean", "importance sampling"),
    path: str | pathlib.Path | None = None,
) -> Figure:
    """Horizontal bars of ln B (each model against `reference`) with error bars.

    Args:
        names: model names, drawn top to bottom.
        log_bf: (n_models,) ln B = ln Z_model - ln Z_reference.
        log_bf_err: (n_models,) standard errors of ln B (>= 0).
        reference: the reference model's name (axis label; a line marks ln B = 0).
        second: (log_bf, log_bf_err) of a second estimator, drawn beside each bar, or None.
        estimators: legend labels of the first and second estimator.
        path: image file to write, or None.

    Returns:
        The figure; among `fig.axes[0].containers` is one `BarContainer` per estimator, with
        its error bars in `.errorbar`.
    """
    names = [str(n) for n in names]
    m = len(names)
    if m == 0:
        raise ParameterError("names: expected at least one model name")
    series = [
        (_finite(log_bf, m, "log_bf"), _finite(log_bf_err, m, "log_bf_err", non_negative=True))
    ]
    if second is not None:
        if len(second) != 2:
            raise ParameterError(f"second: expected (log_bf, log_bf_err), got {len(second)} items")
        series.append(
            (
                _finite(second[0], m, "second log_bf"),
                _finite(second[1], m, "second log_bf_err", non_negative=True),
            )
        )
    fig = Figure(figsize=(6.4, 1.2 + 0.45 * m), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(m, dtype=np.float64)
    height = 0.8 / len(series)
    for i, (value, err) in enumerate(series):
        offset = (i - 0.5 * (len(series) - 1)) * height
        ax.barh(
            y + offset,
            value,
            xerr=err,
            height=height,
            color=_colour(i),
            capsize=3,
            label=estimators[i] if len(series) > 1 else None,
        )
    ax.axvline(0.0, color="k", linewidth=0.8)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel(rf"$\ln B$ against {reference}")
    if len(series) > 1:
        ax.legend(loc="best", frameon=False)
    _save(fig, path)
    return fig


def plot_losses(losses: Any, path: str | pathlib.Path | None = None) -> Figure:
    """Flow training curves: loss against optimisation step.

    Args:
        losses: (n_steps,) losses (flowjax `fit_to_key_based_loss`), or {label: (n_steps,)}
            (e.g. flowjax `fit_to_data`'s {"train": ..., "val": ...}).
        path: image file to write, or None.

    Returns:
        The figure. The y range covers the losses after the first 5% of the steps, so that the
        large initial losses do not flatten the rest of the curve.
    """
    curves = _named_sets(losses, "losses", "loss")
    for label, c in curves.items():
        if c.ndim != 1 or c.shape[0] == 0:
            raise ParameterError(f"losses {label!r}: expected shape (n_steps,), got {c.shape}")
    fig = Figure(figsize=(6.4, 4.0), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    tail = []
    for i, (label, c) in enumerate(curves.items()):
        ax.plot(np.arange(c.shape[0]), c, color=_colour(i), linewidth=1.0, label=label)
        tail.append(c[c.shape[0] // 20 :])
    tail_values = np.concatenate(tail)
    tail_values = tail_values[np.isfinite(tail_values)]
    if tail_values.size and tail_values.max() > tail_values.min():
        lo, hi = tail_values.min(), tail_values.max()
        ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if len(curves) > 1:
        ax.legend(frameon=False)
    _save(fig, path)
    return fig
