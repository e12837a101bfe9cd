"""Flow construction: the architecture, its initial affine map, and the Laplace start.

A ptaflow flow lives on the posterior's unconstrained space z in R^n_dim
(`ptaflow.posterior.Posterior`): a standard-normal base, a rational-quadratic-spline flow
(masked autoregressive or coupling; Durkan et al. 2019, arXiv:1906.04032) and a final
lower-triangular affine map that carries the scale of the problem. The affine map starts at a
Laplace approximation (multi-start MAP + Hessian, widened to at least the prior's width in z),
or, for cheap non-smooth likelihoods such as the free-spectrum refit, at the importance-
weighted moments of prior draws (`ptaflow.flows.initial`); the spline layers then only learn
the non-Gaussian shape.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import paramax
from flowjax.bijections import Chain, RationalQuadraticSpline, TriangularAffine
from flowjax.distributions import StandardNormal, Transformed
from flowjax.flows import coupling_flow, masked_autoregressive_flow

from ..errors import ParameterError
from ..settings import FlowConfig

__all__ = [
    "make_flow",
    "density_flow",
    "reset_coordinates",
    "laplace_approximation",
    "draw_with_log_q",
    "partition",
]


def make_flow(
    key,
    n_dim: int,
    *,
    config: FlowConfig | None = None,
    loc=None,
    cov=None,
) -> Transformed:
    """A spline flow on R^n_dim followed by the affine map z = loc + chol(cov) x.

    Args:
        key: JAX random key.
        n_dim: dimension.
        config: architecture (default `FlowConfig()`).
        loc: (n_dim,) initial location (default 0).
        cov: (n_dim, n_dim) initial covariance (default identity).
    """
    config = config or FlowConfig()
    if n_dim < 1:
        raise ParameterError(f"n_dim={n_dim}: a flow needs at least one dimension")
    loc = jnp.zeros(n_dim) if loc is None else jnp.asarray(loc, dtype=float)
    cov = jnp.eye(n_dim) if cov is None else jnp.asarray(cov, dtype=float)
    if loc.shape != (n_dim,) or cov.shape != (n_dim, n_dim):
        raise ParameterError(
            f"loc {loc.shape} / cov {cov.shape}: expected ({n_dim},) and ({n_dim}, {n_dim})"
        )
    chol = jnp.linalg.cholesky(cov)
    if not bool(jnp.all(jnp.isfinite(chol))):
        raise ParameterError("cov is not a positive-definite covariance matrix")
    fresh = _new_flow(key, n_dim, config, loc, chol)
    # Its arrays (parameters, and fixed ones such as the random permutations between layers),
    # with the Python functions of one flow built earlier of this architecture.
    return jax.tree.map(
        lambda new, old: new if eqx.is_array(new) else old, fresh, _flow_functions(n_dim, config)
    )


def _new_flow(key, n_dim: int, config: FlowConfig, loc, chol) -> Transformed:
    # invert=False: sampling (the ELBO's direction) is one pass; log_prob is the slow one.
    spline = _spline_flow(key, n_dim, config, invert=False)
    return Transformed(spline.base_dist, Chain([spline.bijection, TriangularAffine(loc, chol)]))


def _spline_flow(key, n_dim: int, config: FlowConfig, *, invert: bool) -> Transformed:
    """The spline layers of `config` on a standard-normal base; `invert` as flowjax's."""
    # One dimension has no coupling split: a masked autoregressive layer is a plain spline there.
    build = masked_autoregressive_flow if config.family == "maf" or n_dim == 1 else coupling_flow
    return build(
        key,
        base_dist=StandardNormal((n_dim,)),
        transformer=RationalQuadraticSpline(knots=config.knots, interval=config.interval),
        flow_layers=config.flow_layers,
        nn_width=config.nn_width,
        nn_depth=config.nn_depth,
        invert=invert,
    )


@functools.lru_cache(maxsize=32)
def _flow_functions(n_dim: int, config: FlowConfig):
    """A flow of one architecture, built once per process for its Python functions.

    flowjax builds new Python closures into every flow, and JAX's compilation cache keys on
    them: with one set of functions per (n_dim, architecture), the compiled training,
    sampling and density functions serve every flow of that shape (e.g. every two-parameter
    model of a comparison) instead of compiling again for each.
    """
    return _new_flow(jax.random.key(0), n_dim, config, jnp.zeros(n_dim), jnp.eye(n_dim))


def reset_coordinates(flow: Transformed, indices) -> Transformed:
    """The flow with the final affine map's rows of `indices` reset to the identity (location
    0, scale 1, no coupling to earlier coordinates): those coordinates come out of the
    spline layers unscaled, about as wide as a uniform prior under the probit map of
    `ptaflow.priors`, while every other coordinate keeps its fitted map.

    Used to start a model's flow from another model's fit where only the source parameters
    differ: the red-noise part is kept, the new source parameters start prior-wide (a
    reverse-KL fit narrows a too-wide start quickly, but rarely widens a too-narrow one).
    The flow keeps its structure (compiled code is shared with it).
    """
    affine = flow.bijection.bijections[-1]
    if not isinstance(affine, TriangularAffine):
        raise ParameterError("expected a ptaflow flow (make_flow) ending in its affine map")
    idx = np.asarray(indices, dtype=int)
    raw = affine.triangular.args[0]  # lower triangle, diagonal before softplus
    raw = raw.at[idx, :].set(0.0).at[idx, idx].set(_INV_SOFTPLUS_ONE)
    return eqx.tree_at(
        lambda f: (f.bijection.bijections[-1].loc, f.bijection.bijections[-1].triangular.args),
        flow,
        (affine.loc.at[idx].set(0.0), (raw,)),
    )


#: softplus^-1(1): the unconstrained diagonal entry of TriangularAffine for a scale of 1.
_INV_SOFTPLUS_ONE = float(np.log(np.expm1(1.0)))


def laplace_approximation(
    key,
    log_prob: Callable,
    init_points,
    *,
    steps: int = 400,
    learning_rate: float = 0.05,
    max_var: float = 25.0,
):
    """Multi-start MAP search (vectorised Adam) and the Gaussian at the best mode.

    Args:
        key: unused except to keep the signature of a random function (reserved).
        log_prob: z -> ln p(z) for one point (n_dim,), pure JAX.
        init_points: (n_starts, n_dim) starting points (e.g. prior draws mapped to z).
        steps: Adam steps from each start.
        learning_rate: Adam step size.
        max_var: cap on the covariance eigenvalues (directions the data leave flat).

    Returns:
        (loc (n_dim,), cov (n_dim, n_dim), log_prob at loc).
    """
    del key
    starts = jnp.asarray(init_points, dtype=float)
    if starts.ndim != 2:
        raise ParameterError(f"init_points has shape {starts.shape}; expected (n_starts, n_dim)")
    value_grad = jax.vmap(jax.value_and_grad(lambda z: -log_prob(z)))
    opt = optax.chain(optax.clip_by_global_norm(10.0), optax.adam(learning_rate))

    @jax.jit
    def run(z0):
        def body(carry, _):
            z, state = carry
            val, grad = value_grad(z)
            grad = jnp.where(jnp.isfinite(grad), grad, 0.0)
            updates, state = opt.update(grad, state, z)
            return (z + updates, state), val

        (z, _), _ = jax.lax.scan(body, (z0, opt.init(z0)), None, length=steps)
        return z, -value_grad(z)[0]

    @jax.jit
    def gaussian_at(loc):  # compiled as one function: op by op it took hundreds of compilations
        hess = jax.hessian(lambda x: -log_prob(x))(loc)
        hess = 0.5 * (hess + hess.T)
        evals, evecs = jnp.linalg.eigh(jnp.where(jnp.isfinite(hess), hess, 0.0))
        var = jnp.clip(1.0 / jnp.clip(evals, 1.0 / max_var, None), None, max_var)
        cov = (evecs * var) @ evecs.T
        return 0.5 * (cov + cov.T)

    z, vals = run(starts)
    vals = np.asarray(vals)
    vals = np.where(np.isfinite(vals), vals, -np.inf)
    best = int(np.argmax(vals))
    if not np.isfinite(vals[best]):
        raise ParameterError("the target is not finite at any of the starting points")
    loc = z[best]
    return loc, gaussian_at(loc), jnp.asarray(vals[best])


@eqx.filter_jit
def draw_with_log_q(flow, key, n: int):
    """n flow samples and their flow log-density (one compiled call per flow structure and n)."""
    return flow.sample_and_log_prob(key, (n,))


def partition(flow):
    """(trainable arrays, the rest) of a flow, as equinox.partition splits it."""
    return eqx.partition(
        flow, eqx.is_inexact_array, is_leaf=lambda leaf: isinstance(leaf, paramax.NonTrainable)
    )


def density_flow(key, n_dim: int, config: FlowConfig, dtype=None) -> Transformed:
    """A spline flow on R^n_dim without the affine map, whose density takes one pass
    (flowjax's invert=True; sampling is the slow direction): for samples already
    standardised, such as the learned harmonic mean's phi (`ptaflow.evidence`).

    Args:
        key: JAX random key.
        n_dim: dimension.
        config: architecture (`family` "maf" or "coupling"; one dimension builds "maf").
        dtype: of its arrays (default JAX's default float: float64 once x64 is enabled).
    """
    dtype = jnp.asarray(0.0).dtype if dtype is None else jnp.dtype(dtype)
    params = partition(_new_density_flow(key, n_dim, config))[0]
    params = jax.tree.map(lambda a: jnp.asarray(a, dtype=dtype), params)
    return eqx.combine(params, _density_flow_static(n_dim, config, jnp.dtype(dtype).name))


def _new_density_flow(key, n_dim: int, config: FlowConfig) -> Transformed:
    return _spline_flow(key, n_dim, config, invert=True)


@functools.lru_cache(maxsize=16)
def _density_flow_static(n_dim: int, config: FlowConfig, dtype_name: str):
    """The non-array part of a density flow, built once per configuration and process (as
    `_flow_functions`: flowjax's closures key JAX's compilation cache)."""
    del dtype_name  # part of the key: the static part goes with arrays of one dtype
    return partition(_new_density_flow(jax.random.key(0), n_dim, config))[1]
