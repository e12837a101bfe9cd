"""Conventions every figure shares: resolution, colours, titles with the data shown, saving.

Every figure has a title: what it shows, and on a second line the `context` the caller
passes (data, mode, pulsars; `figure_context` writes one). Figures are saved atomically, in
the format their file suffix names.
"""

from __future__ import annotations

import io
import pathlib
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..errors import ParameterError
from ..results import write_bytes_atomic

__all__ = ["DPI", "figure_context"]

#: Resolution of saved raster images [dots per inch].
DPI = 100


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
