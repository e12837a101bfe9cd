"""Where a fit starts: a new flow at the Laplace approximation or at prior-draw moments."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..diagnostics import importance_ess
from ..errors import ParameterError
from ..posterior import AbstractPosterior
from ..settings import TrainConfig
from .construction import laplace_approximation, make_flow
from .targets import target_parts

__all__ = ["initial_flow"]


def _prior_init(key, target, config: TrainConfig):
    """Weighted mean/cov of prior draws at the largest beta with `prior_ess` effective draws."""
    if not isinstance(target, AbstractPosterior):
        raise ParameterError("TrainConfig.init='prior' needs a ptaflow Posterior as the target")
    z = target.to_unconstrained(target.sample_prior(key, config.prior_draws))
    # Over the training's devices, as the refinement pools and importance samples are: one
    # compiled evaluation serves all three.
    log_like = target_parts(target, np.asarray(z), devices=config.devices)[0]
    finite = np.isfinite(log_like)  # a draw where ln L is not finite has weight 0
    log_like = np.where(finite, log_like, 0.0)

    def log_weights(beta):
        return np.where(finite, beta * log_like, -np.inf)

    def ess(beta):
        return importance_ess(log_weights(beta))

    lo, hi = 0.0, 1.0
    if ess(1.0) >= config.prior_ess:
        lo = 1.0
    else:
        for _ in range(40):  # bisection on beta for ESS = prior_ess
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if ess(mid) >= config.prior_ess else (lo, mid)
    loc, cov = weighted_moments(np.asarray(z), log_weights(lo))
    return jnp.asarray(loc), jnp.asarray(cov), lo


def weighted_moments(z: np.ndarray, log_w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (plus 1e-9 on the diagonal) of draws z (n, n_dim) weighted by
    exp(log_w) (-inf: weight 0)."""
    w = np.exp(log_w - np.max(log_w))
    w = w / w.sum()
    loc = w @ z
    d = z - loc
    return loc, (d * w[:, None]).T @ d + 1e-9 * np.eye(z.shape[1])


def initial_flow(key_init, key_laplace, target, n_dim, flow_config, config, init_points):
    """A new flow at the Laplace approximation or the tempered prior-draw moments; returns
    (flow, the tempering beta the prior-draw start reached, 0 for Laplace)."""
    beta_init = 0.0
    if config.init == "prior":
        loc, cov, beta_init = _prior_init(key_laplace, target, config)
    else:
        if init_points is None:
            if isinstance(target, AbstractPosterior):
                init_points = target.to_unconstrained(
                    target.sample_prior(key_laplace, config.laplace_starts)
                )
            else:
                init_points = jax.random.normal(key_laplace, (config.laplace_starts, n_dim))
        log_p = target.log_prob if isinstance(target, AbstractPosterior) else target
        loc, cov, _ = laplace_approximation(
            key_laplace, log_p, init_points, steps=config.laplace_steps
        )
        sd = jnp.sqrt(jnp.diag(cov))
        scale = jnp.maximum(sd, config.init_min_sd) / sd
        cov = cov * jnp.outer(scale, scale)
    return make_flow(key_init, n_dim, config=flow_config, loc=loc, cov=cov), beta_init
