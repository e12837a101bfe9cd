"""Normalizing flows (flowjax) for PTA posteriors: construction and training.

A ptaflow flow lives on the posterior's unconstrained space z in R^n_dim
(`ptaflow.posterior.Posterior`): a standard-normal base, a rational-quadratic-spline flow
(masked autoregressive or coupling; Durkan et al. 2019, arXiv:1906.04032) and a final
lower-triangular affine map that carries the scale of the problem. The affine map starts at a
Laplace approximation (multi-start MAP + Hessian, widened to at least the prior's width in z),
or, for cheap non-smooth likelihoods such as the free-spectrum refit, at the importance-
weighted moments of prior draws; the spline layers then only learn the non-Gaussian shape.

Training (`fit_variational`) minimises the reverse KL divergence (negative ELBO,
Ranganath et al. 2014) with reparameterised samples, a tempering schedule on the
likelihood (target beta ln L + ln pi, beta rising to 1), warm-up + cosine learning-rate
decay, gradient clipping, skipping of non-finite updates, and early stopping once the
exponentially smoothed loss stops improving.

Reverse KL is mode-seeking: the fitted flow is slightly too narrow and misses thin tails (for
a PTA power law, the low-amplitude, steep-spectrum end of the log10_A-gamma banana, about 1 %
of the mass). A second stage therefore refines the flow on the forward (mass-covering) KL
divergence KL(p || q) by importance sampling from the flow itself (Mueller et al. 2019,
arXiv:1808.03856; Jerfel et al. 2021, arXiv:2106.15980): each round draws a pool of flow
samples, evaluates the target there (values only, no gradients), Pareto-smooths the weights
p/q (Vehtari et al., arXiv:1507.02646), and takes maximum-likelihood steps of the flow on
minibatches resampled from the pool by weight. Samples far out where q is too thin carry
large weights and pull the flow out to them, round by round.

Every step is one compiled function called with the same shapes (no recompilation;
`STEP_TRACES` and `REFINE_TRACES` count traces), random keys are
`fold_in(key, step)`, so an interrupted run resumed from its checkpoint gives the same flow as
an uninterrupted one. `fit_to_samples` fits a flow to existing chains by maximum likelihood.

On a node with several accelerators, `TrainConfig(devices=n)` (or "all") splits each step's
batch of flow draws, and so the likelihood evaluations that dominate its cost, over n devices
(data parallelism with `jax.sharding`); the draws and the result do not depend on n.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import pathlib
import time
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import paramax
from flowjax.bijections import Chain, RationalQuadraticSpline, TriangularAffine
from flowjax.distributions import StandardNormal, Transformed
from flowjax.flows import coupling_flow, masked_autoregressive_flow
from jax.sharding import NamedSharding, PartitionSpec

from .devices import AXIS, device_mesh, fixed_chunks, map_rows
from .errors import DataError, ParameterError
from .posterior import Posterior
from .profiling import PhaseTimes, _phase
from .results import write_bytes_atomic
from .settings import FlowConfig, TrainConfig  # re-exported: their home is ptaflow.settings

__all__ = [
    "FlowConfig",
    "TrainConfig",
    "FitInfo",
    "make_flow",
    "laplace_approximation",
    "fit_variational",
    "fit_to_samples",
    "draw_with_log_q",
    "save_flow",
    "load_flow",
    "STEP_TRACES",
    "REFINE_TRACES",
]

#: Number of times the variational training step has been traced (compiled), for tests.
STEP_TRACES = {"count": 0}
#: The same for the forward-KL refinement step.
REFINE_TRACES = {"count": 0}

_CHECKPOINT_FORMAT = 2


@dataclasses.dataclass(frozen=True)
class FitInfo:
    """What happened during training.

    Attributes:
        losses: negative ELBO per step [nat] (at the step's beta).
        betas: tempering parameter per step.
        steps: steps taken in total (including any before a resume).
        converged: True when early stopping fired, False when `max_steps` ran out.
        final_loss: lowest smoothed loss at beta = 1 [nat]; the returned flow has the
            parameters of that point (the last ones if tempering never finished).
        skipped_steps: steps whose loss or gradient was not finite (update skipped).
        wall_time_s: seconds spent in this call (compilation included).
        resumed_from: step the run resumed from (0 for a fresh run).
        devices: number of devices each step's batch was split over.
        refine_ess, refine_khat: per refinement round, the importance ESS fraction and the
            Pareto khat of that round's pool (drawn from the flow before the round's steps),
            for that round's target.
        refine_beta: per refinement round, the tempering beta of its target (1 unless
            `TrainConfig.refine_anneal_ess` is set).
        surrogate: the likelihood the initialisation and the reverse-KL steps (`losses`,
            `final_loss`) ran on when it was not the target's: "curn" for an HD target (see
            `TrainConfig.surrogate`); None when every stage ran on the target.
    """

    losses: np.ndarray
    betas: np.ndarray
    steps: int
    converged: bool
    final_loss: float
    skipped_steps: int
    wall_time_s: float
    resumed_from: int = 0
    devices: int = 1
    refine_ess: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    refine_khat: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    refine_beta: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    surrogate: str | None = None

    def to_dict(self) -> dict:
        """JSON-able summary (without the per-step arrays).

        The refinement is summarised by the medians over its last ten rounds: one pool's ESS
        fraction scatters widely (a single heavy weight can take it to a few per cent).
        """

        def late_median(a):
            return float(np.median(a[-10:])) if len(a) else None

        return {
            "refine_rounds": len(self.refine_ess),
            "refine_tempered_rounds": int(np.sum(np.asarray(self.refine_beta) < 1.0)),
            "refine_ess_fraction_median": late_median(self.refine_ess),
            "refine_khat_median": late_median(self.refine_khat),
            "steps": self.steps,
            "converged": self.converged,
            "final_loss": self.final_loss,
            "skipped_steps": self.skipped_steps,
            "wall_time_s": self.wall_time_s,
            "resumed_from": self.resumed_from,
            "devices": self.devices,
            "surrogate": self.surrogate,
        }


# --- construction -----------------------------------------------------------------------------


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
    base = StandardNormal((n_dim,))
    transformer = RationalQuadraticSpline(knots=config.knots, interval=config.interval)
    # One dimension has no coupling split: a masked autoregressive layer is a plain spline there.
    build = masked_autoregressive_flow if config.family == "maf" or n_dim == 1 else coupling_flow
    # invert=False: sampling (the ELBO's direction) is one pass; log_prob is the slow one.
    spline = build(
        key,
        base_dist=base,
        transformer=transformer,
        flow_layers=config.flow_layers,
        nn_width=config.nn_width,
        nn_depth=config.nn_depth,
        invert=False,
    )
    return Transformed(base, Chain([spline.bijection, TriangularAffine(loc, chol)]))


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

    z, vals = run(starts)
    vals = jnp.where(jnp.isfinite(vals), vals, -jnp.inf)
    best = int(jnp.argmax(vals))
    loc = z[best]
    if not bool(jnp.isfinite(vals[best])):
        raise ParameterError("the target is not finite at any of the starting points")
    hess = jax.hessian(lambda x: -log_prob(x))(loc)
    hess = 0.5 * (hess + hess.T)
    evals, evecs = jnp.linalg.eigh(jnp.where(jnp.isfinite(hess), hess, 0.0))
    var = jnp.clip(1.0 / jnp.clip(evals, 1.0 / max_var, None), None, max_var)
    cov = (evecs * var) @ evecs.T
    return loc, 0.5 * (cov + cov.T), vals[best]


# --- variational training ---------------------------------------------------------------------


def _split_target(target) -> Callable:
    """z -> (tempered part, untempered part); a Posterior tempers only its likelihood."""
    if hasattr(target, "log_prob_parts"):
        return target.log_prob_parts
    if callable(target):
        return lambda z: (target(z), jnp.zeros(()))
    raise ParameterError(
        f"target {target!r}: expected a ptaflow Posterior or a function z -> ln p(z)"
    )


def _optimizer(config: TrainConfig, learning_rate=None):
    """Clipped Adam that skips non-finite updates; the rate defaults to the training schedule.

    One optimizer object per setting and process: optax builds closures, which JAX's
    compilation cache keys on, so equal settings must give the same object for the compiled
    steps to be shared between fits.
    """
    if learning_rate is not None:
        return _cached_optimizer(config.clip_norm, float(learning_rate))
    schedule = (
        config.learning_rate,
        config.warmup_steps,
        max(config.max_steps, 1),
        config.final_lr_fraction,
    )
    return _cached_optimizer(config.clip_norm, schedule)


@functools.lru_cache(maxsize=32)
def _cached_optimizer(clip_norm: float, rate: float | tuple):
    if isinstance(rate, tuple):
        peak, warmup, max_steps, final = rate
        rate = optax.warmup_cosine_decay_schedule(
            init_value=peak * 0.1,
            peak_value=peak,
            warmup_steps=max(warmup, 1),
            decay_steps=max(max_steps - warmup, 1) + max(warmup, 1),
            end_value=peak * final,
        )
    return optax.apply_if_finite(
        optax.chain(optax.clip_by_global_norm(clip_norm), optax.adam(rate)),
        max_consecutive_errors=50,
    )


def _beta(config: TrainConfig, step: int, beta_init: float = 0.0) -> float:
    """Geometric tempering from max(beta0, beta_init) to 1 over temper_steps."""
    start = max(config.beta0, beta_init)
    if config.temper_steps <= 0 or step >= config.temper_steps or start >= 1.0:
        return 1.0
    frac = step / config.temper_steps
    return float(start ** (1.0 - frac))


def _prior_init(key, target, config: TrainConfig):
    """Weighted mean/cov of prior draws at the largest beta with `prior_ess` effective draws."""
    if not hasattr(target, "sample_prior"):
        raise ParameterError("TrainConfig.init='prior' needs a ptaflow Posterior as the target")
    z = target.to_unconstrained(target.sample_prior(key, config.prior_draws))
    log_like = target_parts(target, np.asarray(z))[0]
    log_like = np.where(np.isfinite(log_like), log_like, -np.inf)

    def ess(beta):
        lw = beta * log_like
        w = np.exp(lw - lw.max())
        return w.sum() ** 2 / (w**2).sum(), w

    lo, hi = 0.0, 1.0
    if ess(1.0)[0] >= config.prior_ess:
        lo = 1.0
    else:
        for _ in range(40):  # bisection on beta for ESS = prior_ess
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if ess(mid)[0] >= config.prior_ess else (lo, mid)
    _, w = ess(lo)
    w = w / w.sum()
    zz = np.asarray(z)
    loc = w @ zz
    d = zz - loc
    cov = (d * w[:, None]).T @ d + 1e-9 * np.eye(zz.shape[1])
    return jnp.asarray(loc), jnp.asarray(cov), lo


#: Rows per compiled target evaluation: every evaluation of a target at many points (prior
#: draws, refinement pools, importance samples, chains) goes through one function of this
#: shape, compiled once per target.
TARGET_CHUNK = 4096


@eqx.filter_jit
def _target_parts_chunk(target, z, devices=None):
    split = _split_target(target)
    if devices is None:
        return jax.vmap(split)(z)
    return map_rows(split, z, None, devices)


def target_parts(
    target, z, *, chunk: int = TARGET_CHUNK, devices: int | str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(tempered part, untempered part) of the target at the rows of z (host arrays).

    For a `Posterior`, (ln L, ln pi + ln |det dtheta/dz|); for a function, (ln p, 0). Rows
    go through one compiled function of `chunk` rows (the last chunk padded), so a target
    compiles once whatever the number of points: prior draws, refinement pools and
    importance samples share it. With `devices` (as `TrainConfig.devices`), each chunk is
    split into one equal block per device (`ptaflow.devices.map_rows`); the values do not
    depend on it.
    """
    # As a device count, so that "all" and its number share one compiled function.
    mesh = None if devices is None else device_mesh(devices, what="devices")
    n_dev = None if mesh is None or mesh.size == 1 else mesh.size
    return fixed_chunks(lambda x: _target_parts_chunk(target, x, n_dev), np.asarray(z), chunk)


def _partition(flow):
    return eqx.partition(
        flow, eqx.is_inexact_array, is_leaf=lambda leaf: isinstance(leaf, paramax.NonTrainable)
    )


def _batch_sharding(config: TrainConfig) -> NamedSharding | None:
    """The sharding of the ELBO batch over `config.devices` local devices (None: one device).

    Raises:
        ParameterError: when the machine has fewer devices than asked for, or "all" of them
            do not divide `num_samples`.
    """
    mesh = device_mesh(
        config.devices, what="TrainConfig.devices", divides=("num_samples", config.num_samples)
    )
    return None if mesh is None else NamedSharding(mesh, PartitionSpec(AXIS))


def _place(tree, sharding):
    """Arrays of `tree` replicated over the devices of `sharding`'s mesh (others unchanged)."""
    replicated = NamedSharding(sharding.mesh, PartitionSpec())
    return jax.tree.map(lambda x: jax.device_put(x, replicated) if eqx.is_array(x) else x, tree)


def _elbo_loss(params, static, target, key, beta, num_samples, sharding=None):
    flow = eqx.combine(params, static)
    z, log_q = flow.sample_and_log_prob(key, (num_samples,))
    if sharding is not None:
        # The full batch is drawn from one key (the numbers do not depend on the device
        # count); split along the sample axis, XLA propagates the split back into the flow's
        # forward pass and on into the likelihood; the mean becomes a cross-device sum.
        z = jax.lax.with_sharding_constraint(z, sharding)
        log_q = jax.lax.with_sharding_constraint(log_q, sharding)
    tempered, rest = jax.vmap(_split_target(target))(z)
    return jnp.mean(log_q - beta * tempered - rest)


@eqx.filter_jit
def _train_step(params, static, target, opt_state, key, beta, optimizer, num_samples, sharding):
    STEP_TRACES["count"] += 1  # runs only while tracing
    loss, grads = eqx.filter_value_and_grad(_elbo_loss)(
        params, static, target, key, beta, num_samples, sharding
    )
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return eqx.apply_updates(params, updates), opt_state, loss


@eqx.filter_jit
def draw_with_log_q(flow, key, n: int):
    """n flow samples and their flow log-density (one compiled call per flow structure and n)."""
    return flow.sample_and_log_prob(key, (n,))


@eqx.filter_jit
def _refine_steps(params, static, opt_state, batches, optimizer, mesh):
    """Maximum-likelihood steps of the flow (forward KL), one per batch of points resampled
    from p; batches: (n_steps, batch, n_dim), all steps in one compiled call.

    With a mesh, each device takes an equal block of every batch and the gradients are
    averaged across devices (explicit data parallelism: XLA's automatic partitioning of the
    flow's autoregressive inverse pass was slower than one device on CPU).
    """
    REFINE_TRACES["count"] += 1  # runs only while tracing

    def loss_fn(p, x):
        return -jnp.mean(eqx.combine(p, static).log_prob(x))

    def value_and_grad(p, z):
        if mesh is None:
            return eqx.filter_value_and_grad(loss_fn)(p, z)

        def local(p, x):
            loss, grads = eqx.filter_value_and_grad(loss_fn)(p, x)
            return jax.lax.pmean((loss, grads), AXIS)

        return jax.shard_map(
            local,
            mesh=mesh,
            in_specs=(PartitionSpec(), PartitionSpec(AXIS)),
            out_specs=PartitionSpec(),
            check_vma=False,
        )(p, z)

    def step(carry, z):
        p, state = carry
        loss, grads = value_and_grad(p, z)
        updates, state = optimizer.update(grads, state, p)
        return (eqx.apply_updates(p, updates), state), loss

    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), batches)
    return params, opt_state, losses


def _progress(total: int, initial: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, leave=False, disable=None)


#: The annealed refinement raises beta only while its pool keeps at least this importance ESS
#: fraction at the new beta (400 of the default 8192 points): below it the resampled batches
#: repeat a few points and the fit chases them.
ANNEAL_MIN_ESS = 0.05


def _anneal_beta(log_like, log_rest, log_q, beta: float, ratio: float) -> float:
    """The largest beta' in [beta, 1] at which the pool's importance ESS for prior x L^beta'
    is at least `ratio` times its ESS at beta and at least `ANNEAL_MIN_ESS` of the pool
    (beta itself where no larger value qualifies)."""
    from .diagnostics import importance_ess

    n = log_like.shape[0]

    def ess(b):
        lw = np.where(np.isfinite(log_like), log_rest + b * log_like - log_q, -np.inf)
        return importance_ess(np.where(np.isfinite(lw), lw, -np.inf)) / n

    now = ess(beta)
    floor = max(ratio * now, ANNEAL_MIN_ESS)
    if ess(1.0) >= floor:
        return 1.0
    if now < floor:
        return beta
    lo, hi = beta, 1.0
    for _ in range(30):  # bisection; the ESS falls as beta rises past the flow's own target
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if ess(mid) >= floor else (lo, mid)
    return lo


def _refine_round(key, params, static, target, opt_state, optimizer, config, mesh, beta=1.0):
    """One round of forward-KL refinement towards prior x L^beta (beta raised first when
    `refine_anneal_ess` is set); returns (params, opt_state, pool ESS fraction, khat, beta)."""
    from .diagnostics import importance_ess, psis

    key_pool, key_pick = jax.random.split(key)
    z, log_q = draw_with_log_q(eqx.combine(params, static), key_pool, config.refine_pool)
    log_q = np.asarray(log_q)
    log_like, log_rest = target_parts(target, z, devices=None if mesh is None else mesh.size)
    if beta < 1.0:
        beta = _anneal_beta(log_like, log_rest, log_q, beta, config.refine_anneal_ess)
    log_p = log_rest + beta * log_like if beta < 1.0 else log_rest + log_like
    log_w = log_p - log_q
    log_w = np.where(np.isfinite(log_w), log_w, -np.inf)
    if not np.any(np.isfinite(log_w)):
        raise ParameterError("the target is not finite at any flow sample of a refinement pool")
    smoothed, khat = psis(log_w)
    prob = np.exp(smoothed - smoothed.max())
    picks = jax.random.choice(
        key_pick,
        config.refine_pool,
        (config.refine_steps, config.refine_batch),
        p=jnp.asarray(prob / prob.sum()),
    )
    params, opt_state, _ = _refine_steps(params, static, opt_state, z[picks], optimizer, mesh)
    return params, opt_state, importance_ess(log_w) / config.refine_pool, khat, beta


def _refine_done(ess: list[float], config: TrainConfig, betas: list[float] | None = None) -> bool:
    """Whether the refinement may stop before `refine_rounds` (see `TrainConfig`): the rules
    look at the rounds at beta = 1 only."""
    if betas is not None:
        ess = [e for e, b in zip(ess, betas, strict=True) if b >= 1.0]
    target = config.refine_target_ess
    if target is not None and len(ess) >= 2 and min(ess[-2:]) >= target:
        return True
    patience = config.refine_patience
    return patience > 0 and len(ess) > patience and max(ess[-patience:]) <= max(ess[:-patience])


def _initial_flow(key_init, key_laplace, target, n_dim, flow_config, config, init_points):
    """A new flow at the Laplace approximation or the tempered prior-draw moments; returns
    (flow, the tempering beta the prior-draw start reached, 0 for Laplace)."""
    beta_init = 0.0
    if config.init == "prior":
        loc, cov, beta_init = _prior_init(key_laplace, target, config)
    else:
        if init_points is None:
            if hasattr(target, "sample_prior"):
                init_points = target.to_unconstrained(
                    target.sample_prior(key_laplace, config.laplace_starts)
                )
            else:
                init_points = jax.random.normal(key_laplace, (config.laplace_starts, n_dim))
        log_p = target.log_prob if hasattr(target, "log_prob_parts") else target
        loc, cov, _ = laplace_approximation(
            key_laplace, log_p, init_points, steps=config.laplace_steps
        )
        sd = jnp.sqrt(jnp.diag(cov))
        scale = jnp.maximum(sd, config.init_min_sd) / sd
        cov = cov * jnp.outer(scale, scale)
    return make_flow(key_init, n_dim, config=flow_config, loc=loc, cov=cov), beta_init


#: Training options added after checkpoints were first written, with their defaults: left out
#: of a checkpoint's settings hash while at the default.
_LATER_OPTIONS = {
    "refine_patience": 0,
    "refine_target_ess": None,
    "refine_anneal_ess": None,
    "refine_keep_best": False,
}


def _config_hash(*parts: Any) -> str:
    text = json.dumps([dataclasses.asdict(p) if dataclasses.is_dataclass(p) else p for p in parts])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _pack(header: dict, tree) -> bytes:
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, tree)
    head = json.dumps(header).encode()
    return len(head).to_bytes(8, "little") + head + buf.getvalue()


def _unpack(path: pathlib.Path) -> tuple[dict, bytes]:
    try:
        raw = path.read_bytes()
        n = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + n])
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable ptaflow flow/checkpoint file ({exc})") from exc
    return header, raw[8 + n :]


def fit_variational(
    key,
    target,
    n_dim: int,
    *,
    flow: Transformed | None = None,
    flow_config: FlowConfig | None = None,
    config: TrainConfig | None = None,
    init_points=None,
    checkpoint: str | pathlib.Path | None = None,
    progress: bool = True,
    callback: Callable[[int, float], None] | None = None,
    timings: PhaseTimes | None = None,
) -> tuple[Transformed, FitInfo]:
    """Fit a flow to a posterior by minimising the reverse KL divergence.

    Args:
        key: JAX random key (the whole run is a deterministic function of it).
        target: a `ptaflow.posterior.Posterior` (tempering acts on its likelihood) or any
            function z -> ln p(z) on R^n_dim (tempering scales all of it).
        n_dim: dimension of z.
        flow: a flow to start from (skips the Laplace initialisation).
        flow_config: architecture for a new flow.
        config: training options (`TrainConfig.devices` splits each step's batch over the
            GPUs of a multi-GPU node).
        init_points: (n_starts, n_dim) starting points for the Laplace search (default
            prior draws when target is a Posterior, else standard-normal draws).
        checkpoint: file to save the training state to every `checkpoint_every` steps and to
            resume from when it exists with the same settings.
        progress: show a progress bar with the current loss.
        callback: called as callback(step, loss) after every step (e.g. logging).
        timings: a `ptaflow.profiling.PhaseTimes` to record the phases in: "initialise"
            (Laplace or prior-draw start), "train" (reverse KL; `steps`) and "refine"
            (forward KL; `rounds`, `steps`).

    Returns:
        (trained flow on z, FitInfo).
    """
    config = config or TrainConfig()
    flow_config = flow_config or FlowConfig()
    t0 = time.perf_counter()
    # The refinement pools evaluate the target as given (not replicated): the same compiled
    # values then serve the importance samples after the fit. The initialisation and the
    # reverse-KL steps may run on a surrogate that is cheaper to differentiate.
    pool_target = target
    if isinstance(target, Posterior) and config.refine_rounds:
        target = target.surrogate(config.surrogate)
    surrogate = None if target is pool_target else config.surrogate
    key_init, key_laplace, key_train = jax.random.split(key, 3)
    key_refine = jax.random.fold_in(key, 1)
    optimizer = _optimizer(config)
    sharding = _batch_sharding(config)
    refine_mesh = None
    if sharding is not None and config.refine_rounds:  # checked now, not after the training
        refine_mesh = device_mesh(
            config.devices,
            what="TrainConfig.devices",
            divides=("refine_batch", config.refine_batch),
        )
    # Without `devices`, so that checkpoints resume on any device count, and without options
    # added later while they keep their defaults (so that older checkpoints still resume).
    train_settings = {
        k: v
        for k, v in dataclasses.asdict(config).items()
        if k != "devices"
        and not (k in _LATER_OPTIONS and v == _LATER_OPTIONS[k])
        and not (k == "surrogate" and surrogate is None)  # where it changes nothing
    }
    settings_hash = _config_hash(flow_config, train_settings, int(n_dim))
    ckpt_path = pathlib.Path(checkpoint) if checkpoint is not None else None

    state = None
    if ckpt_path is not None and ckpt_path.exists():
        header, payload = _unpack(ckpt_path)
        if header.get("settings_hash") != settings_hash or header.get("format") != (
            _CHECKPOINT_FORMAT
        ):
            raise DataError(
                f"{ckpt_path}: checkpoint was written with other settings (or format); delete "
                "it or pass another checkpoint path to start afresh"
            )
        state = header, payload

    beta_init = 0.0
    if flow is None:
        if state is not None:
            # Skeleton only: the checkpoint supplies every parameter value.
            flow = make_flow(key_init, n_dim, config=flow_config)
        else:
            with _phase(timings, "initialise"):
                flow, beta_init = _initial_flow(
                    key_init, key_laplace, target, n_dim, flow_config, config, init_points
                )
    if flow.shape != (n_dim,):
        raise ParameterError(f"flow has shape {flow.shape}; expected ({n_dim},)")

    params, static = _partition(flow)
    opt_state = optimizer.init(params)
    refine_optimizer = _optimizer(config, config.refine_learning_rate)
    losses: list[float] = []
    betas: list[float] = []
    step0, ema, best, since_best, skipped = 0, None, np.inf, 0, 0
    raw, n_avg = 0.0, 0
    best_params = params
    # Stage "variational" (reverse KL), then "refine" (forward KL) from `refine_round` on.
    stage, converged, refine_round = "variational", False, 0
    refine_ess: list[float] = []
    refine_khat: list[float] = []
    refine_beta: list[float] = []
    refine_state = None
    if state is not None:
        header, payload = state
        stage = header.get("stage", "variational")
        if stage == "variational":
            params, opt_state, best_params = eqx.tree_deserialise_leaves(
                io.BytesIO(payload), (params, opt_state, params)
            )
        else:
            params, refine_state, best_params = eqx.tree_deserialise_leaves(
                io.BytesIO(payload), (params, refine_optimizer.init(params), params)
            )
        losses, betas = list(header["losses"]), list(header["betas"])
        step0, skipped = int(header["step"]), int(header["skipped"])
        ema, best, since_best = header["ema"], header["best"], int(header["since_best"])
        beta_init = float(header.get("beta_init", 0.0))
        raw, n_avg = float(header["ema_raw"]), int(header["n_avg"])
        best = np.inf if best is None else best
        converged = bool(header.get("converged", False))
        refine_round = int(header.get("refine_round", 0))
        refine_ess = list(header.get("refine_ess", []))
        refine_khat = list(header.get("refine_khat", []))
        refine_beta = list(header.get("refine_beta", [1.0] * len(refine_ess)))
    if sharding is not None:
        params, opt_state, best_params, target, refine_state = _place(
            (params, opt_state, best_params, target, refine_state), sharding
        )

    def save(step):
        header = {
            "format": _CHECKPOINT_FORMAT,
            "settings_hash": settings_hash,
            "stage": stage,
            "step": step,
            "losses": losses,
            "betas": betas,
            "ema": ema,
            "best": None if not np.isfinite(best) else best,
            "since_best": since_best,
            "skipped": skipped,
            "beta_init": beta_init,
            "ema_raw": raw,
            "n_avg": n_avg,
            "converged": converged,
            "refine_round": refine_round,
            "refine_ess": refine_ess,
            "refine_khat": refine_khat,
            "refine_beta": refine_beta,
        }
        tree = (
            (params, opt_state, best_params)
            if stage == "variational"
            else (params, refine_state, best_params)
        )
        write_bytes_atomic(ckpt_path, _pack(header, tree))

    with _phase(timings, "train"):
        bar = None
        if progress and stage == "variational" and step0 < config.max_steps:
            bar = _progress(config.max_steps, step0, "flow fit")
        step = step0
        try:
            while stage == "variational" and step < config.max_steps:
                beta = _beta(config, step, beta_init)
                params, opt_state, loss = _train_step(
                    params,
                    static,
                    target,
                    opt_state,
                    jax.random.fold_in(key_train, step),
                    jnp.asarray(beta),
                    optimizer,
                    config.num_samples,
                    sharding,
                )
                loss = float(loss)
                step += 1
                losses.append(loss)
                betas.append(beta)
                if not np.isfinite(loss):
                    skipped += 1
                elif beta == 1.0:
                    # Exponential moving average started at zero and bias-corrected (as Adam's
                    # moments); patience counts only once it spans ~1/smoothing steps.
                    n_avg += 1
                    raw = (1 - config.smoothing) * raw + config.smoothing * loss
                    ema = raw / (1 - (1 - config.smoothing) ** n_avg)
                    if n_avg * config.smoothing >= 1.0:
                        if ema < best - config.min_delta:
                            since_best = 0
                        else:
                            since_best += 1
                        if ema < best:
                            best, best_params = ema, params
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.3f}", beta=f"{beta:.2f}")
                if callback is not None:
                    callback(step, loss)
                if ckpt_path is not None and step % config.checkpoint_every == 0:
                    save(step)
                if since_best >= config.patience:
                    converged = True
                    break
        finally:
            if bar is not None:
                bar.close()
    if timings is not None:
        timings.count("train", steps=step - step0)
    if stage == "variational":
        # The parameters at the lowest smoothed loss: a run that drifted off after its best
        # point (e.g. into a likelihood plateau) does not return the drifted flow.
        params = best_params if np.isfinite(best) else params
        stage, refine_state = "refine", refine_optimizer.init(params)
        if refine_mesh is not None:  # as the refinement steps return them: one compilation
            params, refine_state = _place((params, refine_state), sharding)
        best_params = params  # from here on: the flow of the best refinement pool
        if ckpt_path is not None:
            save(step)
    round0 = refine_round
    # The annealed refinement continues from the prior-draw start's beta (or the last round's).
    anneal = config.refine_anneal_ess is not None and config.max_steps == 0
    beta_refine = (refine_beta[-1] if refine_beta else beta_init) if anneal else 1.0
    with _phase(timings, "refine"):
        bar = None
        if progress and refine_round < config.refine_rounds:
            bar = _progress(config.refine_rounds, refine_round, "flow refine")
        try:
            while refine_round < config.refine_rounds and not _refine_done(
                refine_ess, config, refine_beta
            ):
                start = params
                params, refine_state, ess, khat, beta_refine = _refine_round(
                    jax.random.fold_in(key_refine, refine_round),
                    params,
                    static,
                    pool_target,
                    refine_state,
                    refine_optimizer,
                    config,
                    refine_mesh,
                    beta_refine,
                )
                refine_round += 1
                at_one = [e for e, b in zip(refine_ess, refine_beta, strict=True) if b >= 1.0]
                if beta_refine >= 1.0 and float(ess) > max(at_one, default=-1.0):
                    best_params = start
                refine_beta.append(float(beta_refine))
                refine_ess.append(float(ess))
                refine_khat.append(float(khat))
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(ess=f"{ess:.2f}", khat=f"{khat:.2f}")
                if ckpt_path is not None:
                    save(step)
        finally:
            if bar is not None:
                bar.close()
    if config.refine_keep_best and any(b >= 1.0 for b in refine_beta):
        params = best_params
    if timings is not None:
        rounds = refine_round - round0
        timings.count("refine", rounds=rounds, steps=rounds * config.refine_steps)
    info = FitInfo(
        losses=np.asarray(losses),
        betas=np.asarray(betas),
        steps=step,
        converged=converged,
        final_loss=float(best) if np.isfinite(best) else float("nan"),
        skipped_steps=skipped,
        wall_time_s=time.perf_counter() - t0,
        resumed_from=step0,
        devices=1 if sharding is None else len(sharding.mesh.devices),
        refine_ess=np.asarray(refine_ess),
        refine_khat=np.asarray(refine_khat),
        refine_beta=np.asarray(refine_beta),
        surrogate=surrogate,
    )
    if sharding is not None:  # back to the default device, as a one-device fit leaves it
        params = jax.tree.map(
            lambda x: jnp.asarray(np.asarray(x)) if eqx.is_array(x) else x, params
        )
    return eqx.combine(params, static), info


# --- fit to samples -----------------------------------------------------------------------------


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
    from flowjax.train import fit_to_data

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
    flow, losses = fit_to_data(
        key_fit,
        flow,
        x,
        max_epochs=max_epochs,
        max_patience=patience,
        batch_size=min(batch_size, x.shape[0]),
        val_prop=val_fraction,
        learning_rate=learning_rate,
        show_progress=progress,
    )
    return flow, {k: np.asarray(v) for k, v in losses.items()}


# --- saving -------------------------------------------------------------------------------------


def save_flow(flow: Transformed, path: str | pathlib.Path, config: FlowConfig) -> None:
    """Write a flow (parameters + the architecture needed to rebuild it) atomically."""
    header = {"format": _CHECKPOINT_FORMAT, "n_dim": int(flow.shape[0])}
    header["flow_config"] = dataclasses.asdict(config)
    write_bytes_atomic(pathlib.Path(path), _pack(header, flow))


def flow_from_bytes(data: bytes, n_dim: int, config: FlowConfig) -> Transformed:
    """Rebuild a flow from `ptaflow.results.serialise_flow` output and its architecture."""
    skeleton = make_flow(jax.random.key(0), n_dim, config=config)
    return eqx.tree_deserialise_leaves(io.BytesIO(data), skeleton)


def load_flow(path: str | pathlib.Path) -> tuple[Transformed, FlowConfig]:
    """Read a flow written by `save_flow`; returns (flow, its FlowConfig)."""
    path = pathlib.Path(path)
    header, payload = _unpack(path)
    if header.get("format") != _CHECKPOINT_FORMAT or "flow_config" not in header:
        raise DataError(f"{path}: not a ptaflow flow file (format {header.get('format')})")
    config = FlowConfig(**header["flow_config"])
    return flow_from_bytes(payload, int(header["n_dim"]), config), config
