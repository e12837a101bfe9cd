"""Bayes factors of several models against a reference: horizontal bars with error bars."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ..errors import ParameterError, close_matches
from .style import DPI, _colour, _plain, _save, _title

__all__ = ["STATUSES", "FLAGGED_HATCH", "plot_bayes_factors"]

#: Model statuses `plot_bayes_factors` draws (those of `ptaflow.evaluation.ModelOutcome`).
STATUSES = ("ok", "flagged", "failed")
#: How `plot_bayes_factors` marks a flagged model's bars.
FLAGGED_HATCH = "////"
#: A failed model's cross at ln B = 0: colour, size and width.
_CROSS = {"color": "0.4", "markersize": 8, "mew": 2}


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
        status: (n_models,) "ok", "flagged" or "failed" (`ptaflow.evaluation.ModelOutcome`'s
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
    status = _checked_status(names, status)
    failed = np.array([s == "failed" for s in status])
    series = _estimates(log_bf, log_bf_err, second, status)
    order = np.arange(m)
    if sort:  # by ln B, largest first; then models without it; failed ones last
        first = series[0][0]
        order = np.lexsort((np.where(np.isnan(first), 0.0, -first), np.isnan(first), failed))
    row = np.empty(m)
    row[order] = np.arange(m)  # row of each model, 0 at the top

    fig = Figure(figsize=(6.4, 2.0 + 0.45 * m), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    _draw_bars(ax, series, order, row, names, estimators, status)
    _mark_missing(ax, series, failed, row, names)
    ax.axvline(0.0, color="k", linewidth=0.8)
    ax.set_yticks(np.arange(m), [_plain(names[j]) for j in order])
    ax.set_ylim(m - 0.5, -0.5)  # first row at the top
    ax.set_xlabel(rf"$\ln B$ against {_plain(reference)} (error bars: $\pm 1\sigma$)")
    _bayes_factor_legend(fig, len(series), estimators, status, failed)
    _title(fig, f"Bayes factors against {_plain(reference)}", context)
    _save(fig, path)
    return fig


def _checked_status(names: list[str], status: Sequence[str] | None) -> list[str]:
    """Each model's status, one of `STATUSES` ("ok" for all when `status` is None)."""
    m = len(names)
    status = ["ok"] * m if status is None else [str(s) for s in status]
    if len(status) != m:
        raise ParameterError(f"status: expected {m} entries (one per model), got {len(status)}")
    for name, s in zip(names, status, strict=True):
        if s not in STATUSES:
            raise ParameterError(
                f"status of model {name!r}: {s!r}; expected one of {STATUSES}."
                + close_matches(s, STATUSES)
            )
    return status


def _estimates(
    log_bf: Any, log_bf_err: Any, second: tuple[Any, Any] | None, status: list[str]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(ln B, its error) per estimator, the first and, if given, the second (`_finite`)."""
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
    return series


def _draw_bars(
    ax,
    series: list[tuple[np.ndarray, np.ndarray]],
    order: np.ndarray,
    row: np.ndarray,
    names: list[str],
    estimators: tuple[str, str],
    status: list[str],
) -> None:
    """One bar per model and estimator with a finite value and error, side by side within
    the model's row; a flagged model's bars hatched."""
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


def _mark_missing(
    ax,
    series: list[tuple[np.ndarray, np.ndarray]],
    failed: np.ndarray,
    row: np.ndarray,
    names: list[str],
) -> None:
    """A cross at ln B = 0 for each failed model, and the words "failed" or "no estimate"
    beside the models without any value."""
    for j in range(len(names)):
        if failed[j]:
            ax.plot(0.0, row[j], "x", **_CROSS, gid=f"{names[j]}/failed")
        if failed[j] or all(np.isnan(value[j]) for value, _ in series):
            ax.annotate(
                "failed" if failed[j] else "no estimate",
                (0.0, row[j]),
                xytext=(8, 0),
                textcoords="offset points",
                va="center",
                color="0.3",
            )


def _bayes_factor_legend(
    fig: Figure,
    n_series: int,
    estimators: tuple[str, str],
    status: list[str],
    failed: np.ndarray,
) -> None:
    """The legend below the axes: the estimators (when two are drawn), and the flagged and
    failed markings where they occur; none when there is nothing to explain."""
    handles, texts = [], []
    if n_series > 1:
        handles += [Patch(color=_colour(i)) for i in range(n_series)]
        texts += list(estimators[:n_series])
    if "flagged" in status:
        handles.append(Patch(facecolor="white", edgecolor="k", hatch=FLAGGED_HATCH))
        texts.append("flagged (unreliable estimate)")
    if failed.any():
        handles.append(Line2D([], [], ls="", marker="x", **_CROSS))
        texts.append("failed (no estimate)")
    if handles:
        fig.legend(handles, texts, loc="outside lower center", ncols=2, frameon=False)
