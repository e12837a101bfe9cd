"""Corner plots: several posterior sample sets (flow, NUTS, PTMCMC, ...) overlaid.

The panels are drawn by the `corner` package; the layout (panel size, margins, title lines)
is set in inches afterwards, so that figures of any dimension look alike.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, MaxNLocator

from ..diagnostics import importance_ess
from ..errors import ParameterError, close_matches
from .style import DPI, _colour, _plain, _save, _title

__all__ = ["ess_bins", "plot_corner"]

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


def _n_eff(samples: np.ndarray, w: np.ndarray | None) -> float:
    """Kish's effective sample size of a set of samples (their number when unweighted)."""
    if w is None:
        return float(samples.shape[0])
    with np.errstate(divide="ignore"):  # a zero weight is a log weight of -inf
        return importance_ess(np.log(w))


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
    sets, labels, ws = _checked_sets(sample_sets, names, labels, weights)
    axis_labels = _axis_labels(latex_labels, names)
    truth_values = _truths(truths, names)
    if bins is None:
        bins = ess_bins(min(_n_eff(s, w) for s, w in zip(sets, ws, strict=True)))
    elif not bins >= 1:
        raise ParameterError(f"bins={bins!r}: expected a positive number of bins or None")
    ranges = _shared_ranges(sets, ws, truth_values)

    n_dim = len(names)
    n_ticks = 4 if n_dim <= 3 else 3
    fig, width, height = _corner_figure(n_dim, labels, context)
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
    axes = _arrange_panels(fig, n_dim, width, height, ranges, n_ticks)
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


def _checked_sets(
    sample_sets: Sequence[Any],
    names: tuple[str, ...],
    labels: Sequence[str],
    weights: Sequence[Any | None] | None,
) -> tuple[list[np.ndarray], list[str], list[np.ndarray | None]]:
    """The sample sets as float arrays, their labels as strings and their weights (None or a
    float array per set), each checked against the parameter names and the others."""
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
    return sets, labels, ws


def _axis_labels(latex_labels: Mapping[str, str] | None, names: tuple[str, ...]) -> list[str]:
    """The mathtext axis label of each parameter (`_math_label`), after checking that every
    key of `latex_labels` names a parameter."""
    latex = dict(latex_labels or {})
    for key in latex:
        if key not in names:
            raise ParameterError(
                f"latex_labels: {key!r} is not a parameter of {names}." + close_matches(key, names)
            )
    return [_math_label(latex.get(n), n) for n in names]


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


def _shared_ranges(
    sets: list[np.ndarray],
    ws: list[np.ndarray | None],
    truth_values: list[float | None] | None,
) -> list[tuple[float, float]]:
    """Each parameter's plotted range: the union of the sets' central 1 - 2 `_RANGE_TAIL`
    mass (weighted quantiles) and the truths, padded by 5% (by 0.05 when it is one point)."""
    q = np.array([_RANGE_TAIL, 1.0 - _RANGE_TAIL])
    ends = np.concatenate([_weighted_quantiles(s, w, q) for s, w in zip(sets, ws, strict=True)])
    if truth_values is not None:
        ends = np.vstack([ends, [np.nan if t is None else t for t in truth_values]])
    lo, hi = np.nanmin(ends, axis=0), np.nanmax(ends, axis=0)
    pad = 0.05 * np.where(hi > lo, hi - lo, 1.0)
    return [(float(a), float(b)) for a, b in zip(lo - pad, hi + pad, strict=True)]


def _grid_in(n_dim: int) -> float:
    """Side of the n_dim x n_dim panel grid [in]."""
    return n_dim * _PANEL_IN + (n_dim - 1) * _GAP_IN


def _corner_figure(n_dim: int, labels: list[str], context: str) -> tuple[Figure, float, float]:
    """An empty figure with the title and an n_dim x n_dim grid of axes, sized for the panels,
    the margins, the title lines and (one parameter) the legend beside the panel.

    Returns:
        (the figure, its width [in], its height [in]).
    """
    grid_in = _grid_in(n_dim)
    legend_in = 0.0 if n_dim > 1 else 2.0  # n_dim > 1: legend in the empty upper triangle
    width = _LEFT_IN + grid_in + _RIGHT_IN + legend_in
    fig = Figure(figsize=(width, width), dpi=DPI)
    n_title = _title(fig, "Posterior: " + ", ".join(_plain(lab) for lab in labels), context)
    height = _BOTTOM_IN + grid_in + _TITLE_IN + _TITLE_LINE_IN * n_title
    fig.set_size_inches(width, height)
    fig.subplots(n_dim, n_dim, squeeze=False)
    return fig, width, height


def _arrange_panels(
    fig: Figure,
    n_dim: int,
    width: float,
    height: float,
    ranges: list[tuple[float, float]],
    n_ticks: int,
) -> np.ndarray:
    """Place the panels in inches, set their ticks, axis labels and histogram heights.

    Returns:
        The axes as an (n_dim, n_dim) array.
    """
    grid_in = _grid_in(n_dim)
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
    return axes
