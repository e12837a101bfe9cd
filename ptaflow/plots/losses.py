"""Flow training curves: loss against optimisation step."""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..errors import ParameterError
from .style import DPI, _colour, _named_sets, _save, _title

__all__ = ["plot_losses"]


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
