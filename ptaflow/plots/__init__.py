"""Figures for posteriors, spectra, Bayes factors and flow training, written as image files.

Every function builds its own `matplotlib.figure.Figure` (never pyplot's global state, so it
is safe in scripts, threads and on machines without a display) and returns it; with `path`
it is also saved (format from the suffix: .png, .pdf, .svg) atomically. PNGs are
`figure size [in] x dpi` pixels. Axis labels are matplotlib mathtext (no LaTeX installation
needed). Every figure has a title: what it shows, and on a second line the `context` the
caller passes (data, mode, pulsars; `figure_context` writes one).

Modules:

- `ptaflow.plots.style`: resolution, colours, titles and saving, which every figure shares;
  `figure_context`.
- `ptaflow.plots.corner`: `plot_corner`, several posterior sample sets in one corner plot.
- `ptaflow.plots.spectrum`: `spectrum_draws` and `plot_spectrum`, posterior spectra against
  the free-spectrum densities.
- `ptaflow.plots.bayes_factors`: `plot_bayes_factors`, ln B bars against a reference model.
- `ptaflow.plots.losses`: `plot_losses`, flow training curves.
- `ptaflow.plots.comparison`: `model_figure`, one model's corner plot and spectrum draws in a
  comparison (run by its helper process, `ptaflow.sidecar`).

Import the functions from `ptaflow.plots` itself.
"""

from __future__ import annotations

from .bayes_factors import FLAGGED_HATCH as FLAGGED_HATCH
from .bayes_factors import STATUSES as STATUSES
from .bayes_factors import plot_bayes_factors
from .corner import ess_bins, plot_corner
from .losses import plot_losses
from .spectrum import SPECTRUM_PERCENTILES as SPECTRUM_PERCENTILES
from .spectrum import plot_spectrum, spectrum_draws
from .style import DPI, figure_context

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
