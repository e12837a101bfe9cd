"""Maximum-likelihood fits of a flow to samples: `fit_to_samples` (e.g. MCMC chains mapped to
z) and `fit_maximum_likelihood`, the trainer behind it and behind the learned harmonic mean's
flow (`ptaflow.evidence`).

Training is flowjax's `fit_to_data` (Adam on minibatches, early stopping on a validation
split, the best parameters returned) with one optimiser and one loss object per setting and
process: optax and flowjax build closures, which JAX's compilation cache keys on, so equal
settings share their compiled epochs between fits.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flowjax.distributions import Transformed
from flowjax.train import fit_to_data
from flowjax.train.losses import MaximumLikelihoodLoss

from ..errors import ParameterError
from ..settings import FlowConfig
from .construction import make_flow

__all__ = ["fit_to_samples", "fit_maximum_likelihood"]


def fit_to_samples(
    key,
    samples,
    *,
    flow_config: FlowConfig | None = None,
    max_epochs: int = 200,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    val_fraction: float = 0.1,
    patience: int = 10,
    progress: bool = False,
) -> tuple[Transformed, dict]:
    """Fit a flow to existing samples (e.g. MCMC chains mapped to z) by maximum likelihood.

    The affine layer starts at the samples' mean and covariance; training stops on the
    validation loss (flowjax `fit_to_data`) and returns the best parameters.

    Args:
        key: JAX random key.
        samples: (n_samples, n_dim) points, or (n_chains, n_per_chain, n_dim).
        flow_config: architecture.
        max_epochs, batch_size, learning_rate, val_fraction, patience: training options.
        progress: show flowjax's progress bar.

    Returns:
        (flow, {"train": losses, "val": losses}).
    """
    x = jnp.asarray(samples, dtype=float)
    if x.ndim == 3:
        x = x.reshape(-1, x.shape[-1])
    if x.ndim != 2 or x.shape[0] < 10:
        raise ParameterError(
            f"samples have shape {jnp.shape(samples)}; expected (n_samples >= 10, n_dim) or "
            "(n_chains, n_per_chain, n_dim)"
        )
    if not bool(jnp.all(jnp.isfinite(x))):
        raise ParameterError("samples contain non-finite values")
    n_dim = x.shape[1]
    key_flow, key_fit = jax.random.split(key)
    cov = jnp.atleast_2d(jnp.cov(x, rowvar=False)) + 1e-12 * jnp.eye(n_dim)
    flow = make_flow(key_flow, n_dim, config=flow_config, loc=x.mean(0), cov=cov)
    flow, losses = fit_maximum_likelihood(
        key_fit,
        flow,
        x,
        learning_rate=learning_rate,
        max_epochs=max_epochs,
        patience=patience,
        batch_size=min(batch_size, x.shape[0]),
        val_fraction=val_fraction,
        progress=progress,
    )
    return flow, {k: np.asarray(v) for k, v in losses.items()}


def fit_maximum_likelihood(
    key,
    flow: Transformed,
    x,
    *,
    learning_rate: float,
    max_epochs: int,
    patience: int,
    batch_size: int,
    val_fraction: float,
    progress: bool = False,
) -> tuple[Transformed, dict]:
    """Maximum-likelihood training of `flow` on the rows of x (flowjax `fit_to_data`).

    Returns:
        (the flow at the lowest validation loss, {"train": losses, "val": losses} per epoch).
    """
    return fit_to_data(
        key,
        flow,
        x,
        loss_fn=_ml_loss(),
        optimizer=_adam(float(learning_rate)),
        max_epochs=max_epochs,
        max_patience=patience,
        batch_size=batch_size,
        val_prop=val_fraction,
        show_progress=progress,
    )


@functools.lru_cache(maxsize=16)
def _adam(learning_rate: float) -> optax.GradientTransformation:
    return optax.adam(learning_rate)


@functools.lru_cache(maxsize=1)
def _ml_loss() -> MaximumLikelihoodLoss:
    return MaximumLikelihoodLoss()
