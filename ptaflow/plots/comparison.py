"""The per-model figures of a model comparison: a corner plot and the spectrum draws.

`ptaflow.compare` writes one corner plot per model, from the posterior file it saved in
`out/models/`, and overlays the posterior spectra of all models on the free-spectrum
densities (`ptaflow.plots.plot_spectrum`). `model_figure` is the per-model part; the
comparison runs it in its helper process (`ptaflow.sidecar`) while the next model fits, or
in its own process where there is none.
"""

from __future__ import annotations

import os
import pathlib

import jax
import numpy as np

from ..data.free_spectrum import load_free_spectrum_densities
from ..models import load_model
from ..results import load_posterior
from .corner import plot_corner
from .spectrum import spectrum_draws

__all__ = ["SPECTRUM_DRAWS", "model_figure"]

#: Posterior draws per model for its corner plot and its spectrum band.
SPECTRUM_DRAWS = 4000


def model_figure(
    out: str | os.PathLike, name: str, model: str, key: str, context: str, n_freq: int
) -> np.ndarray | str:
    """Corner plot `out/corner_{name}.png` of the posterior saved in `out/models/{name}.h5`
    (model file `model`), and the model's spectrum draws log10 rho at its first `n_freq`
    free-spectrum frequencies ((SPECTRUM_DRAWS, n_freq), for `plot_spectrum`); or a message
    saying why nothing was drawn (no posterior file, or one that holds another run: its
    comparison key is not `key`). `context` is the figure's second title line."""
    out = pathlib.Path(out)
    path = out / "models" / f"{name}.h5"
    with jax.enable_x64(True):
        result = load_posterior(path) if path.is_file() else None
        if result is None or result.provenance.get("comparison_key") != key:
            return f"{path} does not hold this model's posterior; not plotted"
        source = load_model(model, validate=False)
        theta = result.resampled(jax.random.key(0), SPECTRUM_DRAWS).samples
        theta = theta[:, [result.param_names.index(n) for n in source.param_names]]
        labels = result.latex_labels or {}
        plot_corner(
            [theta],
            param_names=source.param_names,
            labels=[name],
            latex_labels={n: labels[n] for n in source.param_names if n in labels},
            context=context,
            path=out / f"corner_{name}.png",
        )
        dens = load_free_spectrum_densities()
        return spectrum_draws(source, theta, dens.freqs[:n_freq], dens.tspan)
