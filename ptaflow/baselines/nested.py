"""Nested-sampling evidence baseline (dynesty) on a ptaflow posterior.

Nested sampling (Skilling 2006) integrates the likelihood over the prior directly, using the
prior as a transform of the unit cube, and is independent of every flow in ptaflow: it is the
ground truth the flow evidences are compared with. dynesty (Speagle 2020, arXiv:1904.02180)
is an optional dependency (`pip install ptaflow[test]`).
"""

from __future__ import annotations

import dataclasses
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtri

from ..errors import ParameterError
from ..posterior import Posterior
from ..priors import (
    Fixed,
    LogUniform,
    MultivariateNormal,
    Normal,
    TruncatedNormal,
    Uniform,
)

__all__ = ["NestedResult", "prior_transform", "nested_sampling_evidence"]


@dataclasses.dataclass(frozen=True)
class NestedResult:
    """ln Z from nested sampling with dynesty's error estimate.

    Attributes:
        log_evidence, log_evidence_err: ln Z and its 1-sigma error.
        n_calls: likelihood evaluations; n_live: live points; wall_time_s: seconds.
    """

    log_evidence: float
    log_evidence_err: float
    n_calls: int
    n_live: int
    wall_time_s: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _block_transform(prior, u):
    if isinstance(prior, Uniform):
        return prior.lower + (prior.upper - prior.lower) * u
    if isinstance(prior, LogUniform):
        lo, hi = jnp.log(prior.lower), jnp.log(prior.upper)
        return jnp.exp(lo + (hi - lo) * u)
    if isinstance(prior, Normal):
        return prior.loc + prior.scale * ndtri(u)
    if isinstance(prior, TruncatedNormal):
        a, b = prior._std_bounds()
        cdf_a, cdf_b = jax.scipy.stats.norm.cdf(a), jax.scipy.stats.norm.cdf(b)
        return prior.loc + prior.scale * ndtri(cdf_a + (cdf_b - cdf_a) * u)
    if isinstance(prior, MultivariateNormal):
        chol = jnp.linalg.cholesky(jnp.asarray(prior.cov))
        return jnp.asarray(prior.mean) + chol @ ndtri(u)
    raise ParameterError(f"no unit-cube transform for prior {prior.describe()}")


def prior_transform(posterior: Posterior):
    """u in [0, 1]^n_dim -> theta distributed as the posterior's prior (pure JAX)."""
    blocks = []
    start = 0
    for prior in posterior.prior.priors:
        if isinstance(prior, Fixed):
            continue
        k = prior.n_free
        _block_transform(prior, jnp.full(k if prior.shape else (), 0.5))  # fails early if unknown
        blocks.append((prior, start, k))
        start += k

    def transform(u):
        parts = []
        for prior, s, k in blocks:
            if prior.shape == ():
                parts.append(_block_transform(prior, u[s])[None])
            else:
                parts.append(_block_transform(prior, u[s : s + k]))
        return jnp.concatenate(parts)

    return transform


def nested_sampling_evidence(
    posterior: Posterior,
    *,
    n_live: int = 500,
    dlogz: float = 0.05,
    seed: int = 0,
    sample: str = "auto",
) -> NestedResult:
    """ln Z of a posterior by dynesty's static nested sampler.

    Args:
        posterior: the target (its prior and likelihood; the z-space flow machinery is unused).
        n_live: live points.
        dlogz: stopping criterion on the remaining evidence [nat].
        seed: dynesty's random generator seed.
        sample: dynesty sampling method.
    """
    try:
        import dynesty
    except ImportError as exc:  # pragma: no cover - dynesty ships with the test extra
        raise ImportError("nested sampling needs dynesty: pip install 'ptaflow[test]'") from exc
    transform = jax.jit(prior_transform(posterior))
    log_like = eqx.filter_jit(posterior.log_likelihood)

    def loglike(theta):
        value = float(log_like(jnp.asarray(theta)))
        return value if np.isfinite(value) else -1e300

    def ptform(u):
        return np.asarray(transform(jnp.asarray(u)))

    t0 = time.perf_counter()
    sampler = dynesty.NestedSampler(
        loglike,
        ptform,
        posterior.n_dim,
        nlive=n_live,
        sample=sample,
        rstate=np.random.default_rng(seed),
    )
    sampler.run_nested(dlogz=dlogz, print_progress=False)
    res = sampler.results
    return NestedResult(
        log_evidence=float(res.logz[-1]),
        log_evidence_err=float(res.logzerr[-1]),
        n_calls=int(np.sum(res.ncall)),
        n_live=n_live,
        wall_time_s=time.perf_counter() - t0,
    )
