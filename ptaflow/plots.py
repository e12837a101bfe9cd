"""Figures for posteriors, spectra, Bayes factors and flow training, written as image files.

Every function builds its own `matplotlib.figure.Figure` (never pyplot's global state, so it
is safe in scripts, threads and on machines without a display) and returns it; with `path`
it is also saved (format from the suffix: .png, .pdf, .svg) atomically. PNGs are
`figure size [in] x dpi` pixels. Axis labels are matplotlib mathtext (no LaTeX installation
needed). Every figure has a title: what it shows, and on a second line the `context` the
caller passes (data, mode, pulsars; `figure_context` writes one).
"""

from __future__ import annotations

import io
import math
import pathlib
import textwrap
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, MaxNLocator

from .errors import ParameterError, close_matches
from .results import write_bytes_atomic
from .spectra import psd_to_log10_rho

if TYPE_CHECKING:
    from .data.free_spectrum import FreeSpectrumDensities

__all__ = [
    "DPI",
    "figure_context",
    "ess_bins",
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
#: Model statuses `plot_bayes_factors` draws (those of `ptaflow.compare.ModelOutcome`).
STATUSES = ("ok", "flagged", "failed")


def _colour(i: int) -> str:
    return f"C{i % 10}"


def _plain(text: str) -> str:
    """`text` shown literally: its dollar signs do not start mathtext."""
    return text.replace("$", r"\$")


def _title(fig: Figure, what: str, context: str) -> int:
    """Set the figure title: `what` and, below it, the caller's `context` wrapped to the
    figure's width. Returns the number of title lines."""
    text = what
    if context:
        width = max(30, int(12 * fig.get_figwidth()))  # ~12 characters per inch at 10 pt
        text += "\n" + textwrap.fill(_plain(context), width)
    fig.suptitle(text, fontsize="medium")
    return text.count("\n") + 1


def figure_context(
    data: str,
    *,
    mode: str | None = None,
    correlation: str | None = None,
    pulsars: Sequence[str] | None = None,
    max_names: int = 8,
) -> str:
    """A one-line description of the data a figure shows, for the `context=` of the plots.

    Example: ``figure_context("NG15 reduced", mode="full", correlation="hd",
    pulsars=["J1909-3744", "J2317+1439"])`` is
    ``"data: NG15 reduced; mode: full; correlation: HD; 2 pulsars: J1909-3744, J2317+1439"``.

    Args:
        data: the data set (name or file).
        mode: the comparison mode ("refit", "full"), or None.
        correlation: the common process's correlation ("curn", "hd"), or None.
        pulsars: the pulsar names, or None; more than `max_names` are cut to the first
            `max_names` and a count of the rest.
        max_names: pulsar names written at most.

    Returns:
        The description, parts separated by "; ".
    """
    parts = [f"data: {data}"]
    if mode:
        parts.append(f"mode: {mode}")
    if correlation:
        parts.append(f"correlation: {correlation.upper()}")
    if pulsars is not None:
        names = [str(p) for p in pulsars]
        shown = ", ".join(names[:max_names])
        if len(names) > max_names:
            shown += f" and {len(names) - max_names} more"
        parts.append(f"{len(names)} pulsar{'s' if len(names) != 1 else ''}: {shown}")
    return "; ".join(parts)


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

#: Corner-plot layout [in]: panel side, gap between panels, left and bottom margins (tick
#: labels and axis label), right margin, and the x and y axis labels' distances from the axes
#: (outside the horizontal tick labels).
_PANEL_IN, _GAP_IN, _LEFT_IN, _BOTTOM_IN, _RIGHT_IN = 2.0, 0.1, 0.85, 0.65, 0.2
_XLABEL_IN, _YLABEL_IN = 0.3, 0.5
#: Title height [in]: a margin plus one line of 10 pt text per title line.
_TITLE_IN, _TITLE_LINE_IN = 0.2, 0.2
#: Tail mass left out of the plotted range on each side, per sample set.
_RANGE_TAIL = 1e-3


def ess_bins(n_eff: float) -> int:
    """Histogram bins for `n_eff` effective samples: the Rice rule 2 n_eff^(1/3), in 5..50.

    For weighted samples `n_eff` is Kish's effective sample size (sum w)^2 / sum w^2, not the
    raw count, so that a set with few effective samples still gets smooth histograms.
    """
    if not n_eff > 0:
        raise ParameterError(f"n_eff={n_eff!r}: expected a positive effective sample size")
    return int(np.clip(round(2.0 * n_eff ** (1.0 / 3.0)), 5, 50))


def _kish_ess(n: int, w: np.ndarray | None) -> float:
    return float(n) if w is None else float(w.sum() ** 2 / np.sum(w**2))


def _weighted_quantiles(x: np.ndarray, w: np.ndarray | None, q: np.ndarray) -> np.ndarray:
    """Quantiles `q` of each column of `x` (n_samples, n_dim) under weights `w` (or equal)."""
    w = np.ones(x.shape[0]) if w is None else w
    out = []
    for col in x.T:
        order = np.argsort(col)
        cdf = np.cumsum(w[order])
        out.append(np.interp(q * cdf[-1], cdf, col[order]))
    return np.asarray(out).T


def _interior_ticks(lo: float, hi: float, n_ticks: int) -> np.ndarray:
    """At least two round tick values in [lo, hi], none within 8% of its ends (where a label
    would meet the neighbouring panel's), from at most `n_ticks` + 2 intervals."""
    edge = 0.08 * (hi - lo)
    for n in range(n_ticks, n_ticks + 3):
        ticks = MaxNLocator(n).tick_values(lo, hi)
        ticks = ticks[(ticks >= lo + edge) & (ticks <= hi - edge)]
        if ticks.size >= 2:
            break
    return ticks


def _math_label(label: str | None, name: str) -> str:
    """A mathtext axis label `$...$` from a LaTeX label (with or without `$`) or the name."""
    if not label:
        return r"$\mathrm{" + name.replace("_", r"\_") + "}$"
    label = label.strip()
    if not (label.startswith("$") and label.endswith("$") and len(label) > 1):
        label = f"${label}$"
    from matplotlib.mathtext import MathTextParser

    try:
        MathTextParser("path").parse(label)
    except ValueError as exc:
        raise ParameterError(
            f"latex_labels[{name!r}] = {label!r} is not valid matplotlib mathtext "
            f"({str(exc).strip().splitlines()[-1]}); write it without the unsupported command"
        ) from None
    return label


def plot_corner(
    sample_sets: Sequence[Any],
    *,
    param_names: Sequence[str],
    labels: Sequence[str],
    weights: Sequence[Any | None] | None = None,
    latex_labels: Mapping[str, str] | None = None,
    truths: Sequence[float | None] | Mapping[str, float] | None = None,
    bins: int | None = None,
    context: str = "",
    path: str | pathlib.Path | None = None,
) -> Figure:
    """Overlay several posterior sample sets (flow, NUTS, PTMCMC, ...) in one corner plot.

    Diagonal: 1-D histograms normalised to unit area (so sets of different size compare);
    off-diagonal: the 1- and 2-sigma contours of the 2-D histograms (39.3% and 86.5% mass),
    smoothed by a Gaussian of one bin, each set in its own colour (C0, C1, ...) with a legend.
    All sets share the bins: by default `ess_bins` of the smallest effective sample size
    among the sets, over the union of the sets' central 99.8% (weighted quantiles) and the
    truths, padded by 5%. Axis labels are mathtext; at most four ticks per axis.

    Args:
        sample_sets: arrays of shape (n_samples_i, n_dim), n_samples_i > n_dim.
        param_names: the n_dim parameter names (column order).
        labels: legend label of each set.
        weights: per set, None or non-negative weights (n_samples_i,) (e.g.
            `PosteriorResult.weights`); None for all sets unweighted.
        latex_labels: axis labels by parameter name, LaTeX with or without the enclosing `$`
            (e.g. r"\\log_{10} A"); must be valid matplotlib mathtext. Default: the name in
            \\mathrm{}.
        truths: reference values, (n_dim,) (None entries allowed) or {name: value}.
        bins: histogram bins per parameter, or None for `ess_bins` (see above).
        context: second title line: the data, mode and pulsars shown (`figure_context`).
        path: image file to write, or None.

    Returns:
        The figure (n_dim x n_dim axes, `fig.axes` in row-major order).

    Raises:
        ParameterError: shapes, lengths or names that do not match; a label that is not
            mathtext.
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
    axis_labels = [_math_label(latex.get(n), n) for n in names]
    truth_values = _truths(truths, names)
    if bins is None:
        bins = ess_bins(min(_kish_ess(s.shape[0], w) for s, w in zip(sets, ws, strict=True)))
    elif not bins >= 1:
        raise ParameterError(f"bins={bins!r}: expected a positive number of bins or None")

    q = np.array([_RANGE_TAIL, 1.0 - _RANGE_TAIL])
    ends = np.concatenate([_weighted_quantiles(s, w, q) for s, w in zip(sets, ws, strict=True)])
    if truth_values is not None:
        ends = np.vstack([ends, [np.nan if t is None else t for t in truth_values]])
    lo, hi = np.nanmin(ends, axis=0), np.nanmax(ends, axis=0)
    pad = 0.05 * np.where(hi > lo, hi - lo, 1.0)
    ranges = [(float(a), float(b)) for a, b in zip(lo - pad, hi + pad, strict=True)]

    n_ticks = 4 if n_dim <= 3 else 3
    grid_in = n_dim * _PANEL_IN + (n_dim - 1) * _GAP_IN
    legend_in = 0.0 if n_dim > 1 else 2.0  # n_dim > 1: legend in the empty upper triangle
    width = _LEFT_IN + grid_in + _RIGHT_IN + legend_in
    fig = Figure(figsize=(width, width), dpi=DPI)
    n_title = _title(fig, "Posterior: " + ", ".join(_plain(lab) for lab in labels), context)
    height = _BOTTOM_IN + grid_in + _TITLE_IN + _TITLE_LINE_IN * n_title
    fig.set_size_inches(width, height)
    fig.subplots(n_dim, n_dim, squeeze=False)
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
            max_n_ticks=n_ticks,
            use_math_text=True,
            smooth=1.0,
            levels=(1.0 - np.exp(-0.5), 1.0 - np.exp(-2.0)),
            plot_datapoints=False,
            plot_density=False,
            no_fill_contours=True,
            hist_kwargs={"density": True, "color": colour},
            truths=truth_values if i == len(sets) - 1 else None,
            truth_color="k",
        )
    # corner's margins assume no title: the layout is set in inches once all sets are drawn
    fig.subplots_adjust(
        left=_LEFT_IN / width,
        bottom=_BOTTOM_IN / height,
        right=(_LEFT_IN + grid_in) / width,
        top=(_BOTTOM_IN + grid_in) / height,
        wspace=_GAP_IN / _PANEL_IN,
        hspace=_GAP_IN / _PANEL_IN,
    )
    axes = np.asarray(fig.axes).reshape(n_dim, n_dim)
    for i in range(n_dim):
        # horizontal tick labels; none at a panel's edges, where they would meet the next
        # panel's; the axis labels just outside them
        for j in range(i + 1):
            axes[i, j].xaxis.set_major_locator(FixedLocator(_interior_ticks(*ranges[j], n_ticks)))
            if j < i:
                axes[i, j].yaxis.set_major_locator(
                    FixedLocator(_interior_ticks(*ranges[i], n_ticks))
                )
        axes[-1, i].tick_params(axis="x", labelrotation=0, labelsize="small")
        axes[-1, i].xaxis.set_label_coords(0.5, -_XLABEL_IN / _PANEL_IN)
        if i > 0:
            axes[i, 0].tick_params(axis="y", labelrotation=0, labelsize="small")
            axes[i, 0].yaxis.set_label_coords(-_YLABEL_IN / _PANEL_IN, 0.5)
        ax = axes[i, i]  # every set's histogram fits, not only the last one drawn
        top = max(float(np.max(p.get_xy()[:, 1])) for p in ax.patches)
        ax.set_ylim(0.0, 1.1 * top)
    handles = [Line2D([], [], color=_colour(i)) for i in range(len(sets))]
    corner_box = axes[0, -1].get_position()  # upper right: an empty panel, or the margin
    fig.legend(
        handles,
        labels,
        loc="upper right" if n_dim > 1 else "upper left",
        bbox_to_anchor=(corner_box.x1, corner_box.y1),
        frameon=False,
    )
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
    n_models = len(sets)
    if ncols is None:
        ncols = min(4, math.ceil(math.sqrt(n_models)))
    elif ncols < 1:
        raise ParameterError(f"ncols={ncols!r}: expected a positive number of columns or None")
    ncols = min(ncols, n_models)
    nrows = math.ceil(n_models / ncols)
    x = np.log10(freqs[:n_freq])
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
    quantiles = {label: np.percentile(d, SPECTRUM_PERCENTILES, axis=0) for label, d in sets.items()}
    if ylim is None:
        bottom = min(float(np.min(q[0])) for q in quantiles.values())
        top = max(top, max(float(np.max(q[-1])) for q in quantiles.values()))
        ylim = (max(float(grid[0]), bottom - 1.0), min(float(grid[-1]), top + 0.3))

    size = (7.0, 5.0) if n_models == 1 else (3.2 * ncols, 2.5 * nrows + 1.3)
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    panels = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
    colour, grey = _colour(0), "0.55"
    for ax, (label, q) in zip(panels, quantiles.items(), strict=False):
        for y_k, left, right in violins:
            ax.fill_betweenx(y_k, left, right, color=grey, alpha=0.45, linewidth=0)
        ax.fill_between(x, q[0], q[4], color=colour, alpha=0.2, linewidth=0)
        ax.fill_between(x, q[1], q[3], color=colour, alpha=0.35, linewidth=0)
        for p, row in zip(SPECTRUM_PERCENTILES, q, strict=True):
            median = p == 50.0
            ax.plot(x, row, color=colour, linewidth=1.8 if median else 0.6, gid=f"{label}/p{p:g}")
        ax.set_title(_plain(label), fontsize="medium")
    for i in range(n_models, nrows * ncols):  # empty grid cells
        fig.delaxes(panels[i])
    for i in range(max(0, n_models - ncols), n_models):  # the lowest panel of each column
        panels[i].xaxis.set_tick_params(which="both", labelbottom=True)
        panels[i].set_xlabel(r"$\log_{10}(f\,/\,\mathrm{Hz})$")
    panels[0].set_ylim(*ylim)
    fig.supylabel(r"$\log_{10}(\rho\,/\,\mathrm{s})$", fontsize="medium")
    handles = [
        Patch(color=grey, alpha=0.45, linewidth=0),
        Line2D([], [], color=colour, linewidth=1.8),
        Patch(color=colour, alpha=0.35 + 0.2 * 0.65, linewidth=0),
        Patch(color=colour, alpha=0.2, linewidth=0),
    ]
    names = ["free-spectrum density", "posterior median", "68% credible band", "95% credible band"]
    fig.legend(
        handles, names, loc="outside lower center", ncols=2 if size[0] < 8 else 4, frameon=False
    )
    _title(fig, "Posterior spectra against the free-spectrum densities", context)
    _save(fig, path)
    return fig


# --- Bayes factors and training ----------------------------------------------------------------


def _finite(
    values: Any, what: str, status: Sequence[str], *, non_negative: bool = False
) -> np.ndarray:
    """One value per model: finite (and >= 0) where `status` is "ok"; elsewhere a non-finite
    value becomes NaN, and a failed model's value is ignored (NaN)."""
    n = len(status)
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (n,):
        raise ParameterError(f"{what}: expected shape ({n},) (one per model), got {arr.shape}")
    status = np.asarray(status)
    used = np.isfinite(arr) & (status != "failed")
    if not np.isfinite(arr[status == "ok"]).all() or (non_negative and (arr[used] < 0).any()):
        kind = "finite non-negative" if non_negative else "finite"
        raise ParameterError(
            f'{what}: expected {kind} values for the models of status "ok", got {arr.tolist()}'
        )
    return np.where(used, arr, np.nan)


#: How `plot_bayes_factors` marks a flagged model's bars.
FLAGGED_HATCH = "////"


def plot_bayes_factors(
    names: Sequence[str],
    log_bf: Any,
    log_bf_err: Any,
    *,
    reference: str,
    second: tuple[Any, Any] | None = None,
    estimators: tuple[str, str] = ("learned harmonic mean", "importance sampling"),
    status: Sequence[str] | None = None,
    sort: bool = True,
    context: str = "",
    path: str | pathlib.Path | None = None,
) -> Figure:
    """Horizontal bars of ln B (each model against `reference`) with 1-sigma error bars.

    Models are sorted by the first estimator's ln B, largest at the top, failed models last.
    A flagged model's bars are hatched (`FLAGGED_HATCH`, black edge); a failed model has no
    bar but a grey cross at ln B = 0 and the word "failed". The legend (estimators, flagged,
    failed: the entries that occur) lies below the axes, never over the bars. Values must be
    finite for models of status "ok"; a flagged model's NaN draws no bar for that estimator
    ("no estimate" where it has none at all), and a failed model's values are ignored.

    Args:
        names: model names.
        log_bf: (n_models,) ln B = ln Z_model - ln Z_reference.
        log_bf_err: (n_models,) standard errors of ln B (>= 0).
        reference: the reference model's name (axis label; a line marks ln B = 0).
        second: (log_bf, log_bf_err) of a second estimator, drawn beside each bar, or None.
        estimators: legend labels of the first and second estimator.
        status: (n_models,) "ok", "flagged" or "failed" (`ptaflow.compare.ModelOutcome`'s
            status); None for all "ok".
        sort: sort by ln B (True) or keep the order of `names`, top to bottom (False).
        context: second title line: the data, mode and pulsars compared (`figure_context`).
        path: image file to write, or None.

    Returns:
        The figure; among `fig.axes[0].containers` is one `BarContainer` per estimator (its
        drawn bars, top to bottom, each with gid "{name}/{estimator}"), with its error bars in
        `.errorbar`.
    """
    names = [str(n) for n in names]
    m = len(names)
    if m == 0:
        raise ParameterError("names: expected at least one model name")
    status = ["ok"] * m if status is None else [str(s) for s in status]
    if len(status) != m:
        raise ParameterError(f"status: expected {m} entries (one per model), got {len(status)}")
    for name, s in zip(names, status, strict=True):
        if s not in STATUSES:
            raise ParameterError(
                f"status of model {name!r}: {s!r}; expected one of {STATUSES}."
                + close_matches(s, STATUSES)
            )
    failed = np.array([s == "failed" for s in status])
    series = [
        (
            _finite(log_bf, "log_bf", status),
            _finite(log_bf_err, "log_bf_err", status, non_negative=True),
        )
    ]
    if second is not None:
        if len(second) != 2:
            raise ParameterError(f"second: expected (log_bf, log_bf_err), got {len(second)} items")
        series.append(
            (
                _finite(second[0], "second log_bf", status),
                _finite(second[1], "second log_bf_err", status, non_negative=True),
            )
        )
    order = np.arange(m)
    if sort:  # by ln B, largest first; then models without it; failed ones last
        first = series[0][0]
        order = np.lexsort((np.where(np.isnan(first), 0.0, -first), np.isnan(first), failed))
    row = np.empty(m)
    row[order] = np.arange(m)  # row of each model, 0 at the top

    fig = Figure(figsize=(6.4, 2.0 + 0.45 * m), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    height = 0.8 / len(series)
    for i, (value, err) in enumerate(series):
        offset = (i - 0.5 * (len(series) - 1)) * height
        drawn = order[np.isfinite(value[order] + err[order])]
        bars = ax.barh(
            row[drawn] + offset,
            value[drawn],
            xerr=err[drawn],
            height=height,
            color=_colour(i),
            capsize=3,
        )
        for bar, j in zip(bars, drawn, strict=True):
            bar.set_gid(f"{names[j]}/{estimators[i]}")
            if status[j] == "flagged":
                bar.set(hatch=FLAGGED_HATCH, edgecolor="k", linewidth=0.8)
    for j in range(m):
        if failed[j]:
            ax.plot(0.0, row[j], "x", color="0.4", markersize=8, mew=2, gid=f"{names[j]}/failed")
        if failed[j] or all(np.isnan(value[j]) for value, _ in series):
            ax.annotate(
                "failed" if failed[j] else "no estimate",
                (0.0, row[j]),
                xytext=(8, 0),
                textcoords="offset points",
                va="center",
                color="0.3",
            )
    ax.axvline(0.0, color="k", linewidth=0.8)
    ax.set_yticks(np.arange(m), [_plain(names[j]) for j in order])
    ax.set_ylim(m - 0.5, -0.5)  # first row at the top
    ax.set_xlabel(rf"$\ln B$ against {_plain(reference)} (error bars: $\pm 1\sigma$)")
    handles, texts = [], []
    if len(series) > 1:
        handles += [Patch(color=_colour(i)) for i in range(len(series))]
        texts += list(estimators[: len(series)])
    if "flagged" in status:
        handles.append(Patch(facecolor="white", edgecolor="k", hatch=FLAGGED_HATCH))
        texts.append("flagged (unreliable estimate)")
    if failed.any():
        handles.append(Line2D([], [], ls="", marker="x", color="0.4", markersize=8, mew=2))
        texts.append("failed (no estimate)")
    if handles:
        fig.legend(handles, texts, loc="outside lower center", ncols=2, frameon=False)
    _title(fig, f"Bayes factors against {_plain(reference)}", context)
    _save(fig, path)
    return fig


def plot_losses(
    losses: Any, path: str | pathlib.Path | None = None, *, context: str = ""
) -> Figure:
    """Flow training curves: loss against optimisation step.

    Args:
        losses: (n_steps,) losses (flowjax `fit_to_key_based_loss`), or {label: (n_steps,)}
            (e.g. flowjax `fit_to_data`'s {"train": ..., "val": ...}).
        path: image file to write, or None.
        context: second title line: the model and data the flow was trained on.

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
    _title(fig, "Flow training", context)
    _save(fig, path)
    return fig
