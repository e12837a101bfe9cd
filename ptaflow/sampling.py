"""Exact posterior samples: flow-preconditioned NUTS (NeuTra), importance resampling.

The steps that turn approximate flow samples into exact ones (docs/design.md, section 3), and
the compiled NUTS chains that the plain-NUTS reference runs of `ptaflow.baselines.mcmc` share.
Every sampler works on a target `log_prob: (n_dim,) -> scalar`, a pure JAX function of an
unconstrained point z in R^n_dim (for a PTA model, ln L + ln prior + the log-Jacobian of the
map to R^n, as `ptaflow.posterior.Posterior.log_prob`).

- `run_neutra`: NeuTra (Hoffman et al. 2019, arXiv:1903.03704): the No-U-Turn Sampler
  (Hoffman & Gelman 2014, JMLR 15, 1593) from numpyro, with step size and (dense or diagonal)
  mass matrix adapted during warmup, on the latent space u of a normalizing flow z = T(u), on
  the density log p(u) = log_prob(T(u)) + ln|det dT/du|. The chain targets exactly the
  push-back of the posterior for any bijection T, so the flow only preconditions: a good flow
  makes the latent posterior close to N(0, I), and NUTS then needs few leapfrog steps per
  effectively independent sample.
- `importance_resample`: multinomial resampling of weighted draws (e.g. flow samples weighted
  by posterior / flow density).

Chains run as one compiled program: every NUTS transition of warmup and sampling is one step
of a `lax.scan`, all chains advance together (`jax.vmap`, "vectorized") or one after another
(`lax.map`, "sequential"). The program is cached: a second call with the same `log_prob`
object, flow structure, shapes and options does not compile again.

Every result reports the rank-normalised split R-hat and bulk effective sample size of
Vehtari et al. 2021 (Bayesian Analysis 16, 667; arXiv:1903.08008), from
`ptaflow.diagnostics.rhat_and_ess`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec
from numpyro.infer.hmc import hmc

from .devices import AXIS, device_mesh
from .diagnostics import rhat_and_ess
from .errors import ParameterError

__all__ = [
    "McmcResult",
    "run_neutra",
    "importance_resample",
]

_CHAIN_METHODS = ("vectorized", "sequential", "parallel")


@dataclasses.dataclass(frozen=True, eq=False)
class McmcResult:
    """Samples and diagnostics of an MCMC run, in the target's space z.

    Attributes:
        samples: Draws after warmup, shape (n_chains, n_samples, n_dim).
        log_prob: Target log-density log_prob(z) at each draw, shape (n_chains, n_samples).
        rhat: Rank-normalised split R-hat per coordinate, the larger of the bulk and
            folded (tail) versions (Vehtari et al. 2021), shape (n_dim,). Below 1.01 when
            the chains agree.
        ess: Bulk effective sample size per coordinate (Vehtari et al. 2021), shape (n_dim,).
        n_divergent: Number of divergent transitions after warmup, all chains.
        mean_accept_prob: Mean NUTS acceptance statistic after warmup, all chains.
        num_steps: Total leapfrog steps (= gradient evaluations of log_prob), warmup
            included, all chains.
        num_steps_warmup: The part of `num_steps` spent in warmup.
        wall_time_s: Wall-clock duration of the call [s], compilation included.
        method: "nuts" (`ptaflow.baselines.mcmc.run_nuts`) or "neutra".
        settings: The options the sampler ran with.
    """

    samples: np.ndarray
    log_prob: np.ndarray
    rhat: np.ndarray
    ess: np.ndarray
    n_divergent: int
    mean_accept_prob: float
    num_steps: int
    num_steps_warmup: int
    wall_time_s: float
    method: str
    settings: dict

    def __post_init__(self):
        for name in ("samples", "log_prob", "rhat", "ess"):
            getattr(self, name).setflags(write=False)

    @property
    def n_chains(self) -> int:
        return self.samples.shape[0]

    @property
    def n_samples(self) -> int:
        """Draws per chain after warmup."""
        return self.samples.shape[1]

    @property
    def n_dim(self) -> int:
        return self.samples.shape[2]

    @property
    def flat_samples(self) -> np.ndarray:
        """All chains' draws concatenated, shape (n_chains * n_samples, n_dim)."""
        return self.samples.reshape(-1, self.n_dim)

    @property
    def flat_log_prob(self) -> np.ndarray:
        """log_prob of `flat_samples`, shape (n_chains * n_samples,)."""
        return self.log_prob.reshape(-1)

    @property
    def steps_per_sample(self) -> float:
        """Mean leapfrog steps per draw after warmup."""
        return (self.num_steps - self.num_steps_warmup) / (self.n_chains * self.n_samples)

    def to_dict(self) -> dict:
        """JSON-ready summary (no samples): diagnostics, cost and settings."""
        min_ess = float(self.ess.min())
        return {
            "method": self.method,
            "n_chains": self.n_chains,
            "n_samples": self.n_samples,
            "n_dim": self.n_dim,
            "max_rhat": float(self.rhat.max()),
            "min_ess": min_ess,
            "rhat": self.rhat.tolist(),
            "ess": self.ess.tolist(),
            "n_divergent": self.n_divergent,
            "mean_accept_prob": self.mean_accept_prob,
            "num_steps": self.num_steps,
            "num_steps_warmup": self.num_steps_warmup,
            "steps_per_sample": self.steps_per_sample,
            "steps_per_effective_sample": self.num_steps / min_ess if min_ess > 0 else math.inf,
            "wall_time_s": self.wall_time_s,
            "settings": dict(self.settings),
        }


@dataclasses.dataclass(frozen=True)
class _Options:
    """NUTS options; hashable, so that it is a static argument of the compiled run."""

    num_chains: int
    num_warmup: int
    num_samples: int
    target_accept: float
    dense_mass: bool
    max_tree_depth: int
    chain_method: str
    progress_bar: bool


class _Draws(NamedTuple):
    """What is kept of the NUTS state at every transition (leading axes: chain, iteration)."""

    z: jax.Array
    potential_energy: jax.Array
    num_steps: jax.Array
    accept_prob: jax.Array
    diverging: jax.Array


class _LatentLogDensity(eqx.Module):
    """NeuTra's latent density log p(u) = log_prob(T(u)) + ln|det dT/du| (arXiv:1903.03704)."""

    log_prob: Callable
    bijection: Any

    def __call__(self, u):
        z, log_det = self.bijection.transform_and_log_det(u)
        return self.log_prob(z) + log_det


class _Progress:
    """tqdm bar fed by a host callback from inside the compiled run.

    The compiled program is cached across calls, so the callback looks up the bar of the run in
    progress here instead of capturing one.
    """

    bar = None

    @classmethod
    def tick(cls, _):
        if cls.bar is not None:
            cls.bar.update(1)


def _run_chains_impl(log_density, keys, init, opts: _Options):
    """All chains' NUTS transitions, warmup then sampling; leaves (n_chains, n_iter, ...)."""
    init_kernel, sample_kernel = hmc(potential_fn=lambda u: -log_density(u), algo="NUTS")
    n_iter = opts.num_warmup + opts.num_samples

    def init_one(u0, key):
        return init_kernel(
            u0,
            opts.num_warmup,
            dense_mass=opts.dense_mass,
            target_accept_prob=opts.target_accept,
            max_tree_depth=opts.max_tree_depth,
            rng_key=key,
        )

    def keep(state):
        return _Draws(
            state.z, state.potential_energy, state.num_steps, state.accept_prob, state.diverging
        )

    def scan_chains(step, state):
        def body(state, i):
            state = step(state)
            if opts.progress_bar:
                jax.debug.callback(_Progress.tick, i)
            return state, keep(state)

        return jax.lax.scan(body, state, jnp.arange(n_iter))[1]

    if opts.chain_method == "vectorized":
        draws = scan_chains(jax.vmap(sample_kernel), jax.vmap(init_one)(init, keys))
        return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), draws)

    def one_by_one(init, keys):
        return jax.lax.map(lambda a: scan_chains(sample_kernel, init_one(*a)), (init, keys))

    if opts.chain_method == "sequential":
        return one_by_one(init, keys)
    # "parallel": the chains in equal shares over the most devices that divide their number,
    # one after another on each device (each chain takes only the tree depth it needs).
    n_dev = max(d for d in range(1, len(jax.local_devices()) + 1) if opts.num_chains % d == 0)
    mesh = device_mesh(n_dev, what="devices")
    spec = PartitionSpec(AXIS)
    # check_vma=False: chains are independent; numpyro's kernels build constants per device.
    split = jax.shard_map(one_by_one, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)
    return split(init, keys)


_run_chains = eqx.filter_jit(_run_chains_impl)


@eqx.filter_jit
def _log_density_batch(log_density, points):
    return jax.vmap(log_density)(points)


@eqx.filter_jit
def _transform_batch(bijection, u):
    return jax.vmap(bijection.transform_and_log_det)(u)


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ParameterError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    return int(value)


def _make_options(
    num_chains,
    num_warmup,
    num_samples,
    target_accept,
    dense_mass,
    max_tree_depth,
    chain_method,
    progress_bar,
) -> _Options:
    if not 0.0 < float(target_accept) < 1.0:
        raise ParameterError(f"target_accept must lie in (0, 1); got {target_accept!r}.")
    if chain_method not in _CHAIN_METHODS:
        raise ParameterError(
            f"chain_method must be one of {_CHAIN_METHODS}; got {chain_method!r}. On one device "
            "'vectorized' runs all chains at once; 'sequential' runs them one after another; "
            "'parallel' spreads them over the local devices (GPUs, or CPU cores presented as "
            "devices, see ptaflow.devices)."
        )
    return _Options(
        num_chains=_check_int("num_chains", num_chains, 1),
        num_warmup=_check_int("num_warmup", num_warmup, 0),
        # split R-hat halves each chain and needs at least two draws per half
        num_samples=_check_int("num_samples", num_samples, 4),
        target_accept=float(target_accept),
        dense_mass=bool(dense_mass),
        max_tree_depth=_check_int("max_tree_depth", max_tree_depth, 1),
        chain_method=chain_method,
        progress_bar=bool(progress_bar),
    )


def _check_log_prob(log_prob, n_dim: int, dtype) -> None:
    """Raise ParameterError unless log_prob maps shape (n_dim,) to a scalar."""
    if not callable(log_prob):
        raise ParameterError(f"log_prob must be a callable (n_dim,) -> scalar; got {log_prob!r}.")
    try:
        out = jax.eval_shape(log_prob, jax.ShapeDtypeStruct((n_dim,), dtype))
    except Exception as err:
        raise ParameterError(
            f"log_prob must accept an array of shape ({n_dim},); calling it on one raised "
            f"{type(err).__name__}: {err}"
        ) from err
    if getattr(out, "shape", None) != ():
        raise ParameterError(
            f"log_prob must return a scalar for a point of shape ({n_dim},); got "
            f"{getattr(out, 'shape', out)!r}."
        )


def _check_finite_start(log_density, points, what: str) -> None:
    values = np.asarray(_log_density_batch(log_density, points))
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise ParameterError(
            f"the log-density must be finite at every chain's starting point; {what} gives "
            f"{values[bad[0]]} for chain {bad[0]} (of {bad.size} bad chains) at "
            f"{np.asarray(points[bad[0]])}. Start inside the support of the target."
        )


def _sample(key, log_density, init, opts: _Options):
    """Run the compiled chains and split warmup from sampling; numpy arrays."""
    if opts.progress_bar:
        from tqdm.auto import tqdm

        _Progress.bar = tqdm(
            total=(opts.num_warmup + opts.num_samples)
            * (opts.num_chains if opts.chain_method != "vectorized" else 1),
            desc="NUTS",
        )
    try:
        keys = jax.random.split(key, opts.num_chains)
        draws = jax.tree.map(np.asarray, _run_chains(log_density, keys, init, opts))
    finally:
        if _Progress.bar is not None:
            _Progress.bar.close()
            _Progress.bar = None
    w = opts.num_warmup
    return {
        "z": draws.z[:, w:],
        "log_density": -draws.potential_energy[:, w:],
        "n_divergent": int(draws.diverging[:, w:].sum()),
        "mean_accept_prob": float(draws.accept_prob[:, w:].mean()),
        "num_steps": int(draws.num_steps.sum()),
        "num_steps_warmup": int(draws.num_steps[:, :w].sum()),
    }


def _result(run: dict, samples, log_prob, t0: float, method: str, settings: dict) -> McmcResult:
    rhat, ess = rhat_and_ess(samples)
    return McmcResult(
        samples=samples,
        log_prob=log_prob,
        rhat=rhat,
        ess=ess,
        n_divergent=run["n_divergent"],
        mean_accept_prob=run["mean_accept_prob"],
        num_steps=run["num_steps"],
        num_steps_warmup=run["num_steps_warmup"],
        wall_time_s=time.perf_counter() - t0,
        method=method,
        settings=settings,
    )


def run_neutra(
    key: jax.Array,
    log_prob: Callable[[jax.Array], jax.Array],
    flow,
    *,
    num_chains: int = 4,
    num_warmup: int = 1000,
    num_samples: int = 1000,
    target_accept: float = 0.8,
    dense_mass: bool = True,
    max_tree_depth: int = 10,
    chain_method: str = "vectorized",
    progress_bar: bool = False,
) -> McmcResult:
    """Sample a target with NUTS preconditioned by a normalizing flow (NeuTra).

    Hoffman et al. 2019 (arXiv:1903.03704): with the flow's bijection z = T(u)
    (`flow.bijection.transform_and_log_det`), NUTS samples the latent density
    log p(u) = log_prob(T(u)) + ln|det dT/du|, starting from draws of `flow.base_dist`, and
    every draw is mapped back to z = T(u). The latent chain is an exact sampler of the
    target for any bijection; the closer the flow is to the target, the closer p(u) is to the
    base N(0, I) and the fewer leapfrog steps each draw costs.

    Args:
        key: JAX PRNG key; the same key gives identical samples.
        log_prob: Pure JAX target log-density over z, (n_dim,) -> scalar, up to a constant.
        flow: An unconditional flowjax `Transformed` distribution of shape (n_dim,) (a base
            distribution and a bijection), e.g. one trained by `ptaflow.flows`.
        num_chains: Number of independent chains.
        num_warmup: Adaptation transitions per chain (discarded).
        num_samples: Kept transitions per chain (at least 4, for split R-hat).
        target_accept: Target mean acceptance statistic of step-size adaptation, in (0, 1).
        dense_mass: Adapt a dense (True) or diagonal (False) mass matrix on u.
        max_tree_depth: Largest NUTS tree depth (at most 2^depth - 1 leapfrog steps/draw).
        chain_method: "vectorized" (all chains in one vmapped program: every transition
            costs the deepest tree of any chain), "sequential", or "parallel" (over the local
            devices, sequential on each; see `ptaflow.devices` for CPU cores).
        progress_bar: Show a tqdm progress bar.

    Returns:
        An `McmcResult` with method "neutra"; samples, log_prob, R-hat and ESS are those of
        z = T(u), in the target's space.

    Raises:
        ParameterError: For a bad option, a flow without bijection/base distribution, a
            conditional flow or one of a non-vector shape, a `log_prob` that does not map
            (n_dim,) to a scalar, or a start where the latent density is not finite.
    """
    t0 = time.perf_counter()
    opts = _make_options(
        num_chains,
        num_warmup,
        num_samples,
        target_accept,
        dense_mass,
        max_tree_depth,
        chain_method,
        progress_bar,
    )
    bijection = getattr(flow, "bijection", None)
    base_dist = getattr(flow, "base_dist", None)
    if bijection is None or base_dist is None:
        raise ParameterError(
            "flow must be a flowjax Transformed distribution with `bijection` and `base_dist`; "
            f"got {type(flow).__name__}."
        )
    shape = tuple(getattr(flow, "shape", ()))
    if len(shape) != 1 or getattr(flow, "cond_shape", None) is not None:
        raise ParameterError(
            "flow must be unconditional with shape (n_dim,); got shape "
            f"{shape} and cond_shape {getattr(flow, 'cond_shape', None)}."
        )
    n_dim = shape[0]
    dtype = jnp.result_type(float)
    _check_log_prob(log_prob, n_dim, dtype)
    latent = _LatentLogDensity(log_prob, bijection)
    key_init, key_run = jax.random.split(key)
    init = jnp.asarray(base_dist.sample(key_init, (opts.num_chains,)), dtype=dtype)
    _check_finite_start(latent, init, "log_prob(T(u)) + ln|det dT/du| at u ~ base_dist")

    run = _sample(key_run, latent, init, opts)
    u = run["z"]
    z, log_det = _transform_batch(bijection, jnp.asarray(u.reshape(-1, n_dim)))
    samples = np.asarray(z, dtype=u.dtype).reshape(u.shape)
    log_prob_z = run["log_density"] - np.asarray(log_det).reshape(u.shape[:2])
    return _result(run, samples, log_prob_z, t0, "neutra", dataclasses.asdict(opts))


def importance_resample(key: jax.Array, samples, log_weights, n: int) -> jax.Array:
    """Draw n of the samples with replacement, with probability proportional to their weights.

    Multinomial resampling (sampling-importance-resampling, Rubin 1988), by inverting the
    cumulative weights at n uniform variates: draws theta_i ~ q
    with weights w_i = p(theta_i) / q(theta_i) become, as the number of draws grows, draws
    from p. The result holds repeats; its information content is bounded by the importance
    effective sample size (sum w)^2 / sum w^2 (Kish), whatever n is, and it is only as good
    as q's coverage of p (heavy-tailed weights mean missed regions).

    Args:
        key: JAX PRNG key.
        samples: Draws, shape (n_draws, ...) (e.g. (n_draws, n_dim)).
        log_weights: Natural-log weights up to a constant, shape (n_draws,); -inf marks a draw
            of weight zero. NaN and +inf are refused.
        n: Number of draws to return.

    Returns:
        The resampled draws, shape (n, ...).

    Raises:
        ParameterError: For mismatched shapes, NaN or +inf weights, all weights -inf, or n < 1.
    """
    n = _check_int("n", n, 1)
    samples = jnp.asarray(samples)
    log_weights = np.asarray(log_weights, dtype=np.float64)
    if log_weights.ndim != 1 or samples.ndim == 0 or samples.shape[0] != log_weights.shape[0]:
        raise ParameterError(
            "log_weights must have shape (n_draws,) matching samples' leading axis; got "
            f"log_weights {log_weights.shape} and samples {samples.shape}."
        )
    bad = np.flatnonzero(np.isnan(log_weights) | (log_weights == np.inf))
    if bad.size:
        raise ParameterError(
            f"log_weights must be finite or -inf; got {log_weights[bad[0]]} at index {bad[0]} "
            f"({bad.size} such weights)."
        )
    if not np.isfinite(log_weights).any():
        raise ParameterError(
            f"log_weights are all -inf ({log_weights.size} draws): no draw has positive "
            "weight, so there is nothing to resample."
        )
    # inverse-CDF draws, O(n_draws + n log n_draws) time and memory, in float64 on the host
    cdf = np.cumsum(np.exp(log_weights - log_weights.max()))
    bits = np.asarray(jax.random.bits(key, (n, 2), dtype=jnp.uint32)).astype(np.uint64)
    u = ((bits[:, 0] >> 5) * 67108864 + (bits[:, 1] >> 6)) / 9007199254740992.0  # [0, 1), 53 bits
    index = np.searchsorted(cdf, u * cdf[-1], side="right")
    # u * cdf[-1] may round up to cdf[-1]: give that draw to the last positive weight
    index = np.minimum(index, np.flatnonzero(np.isfinite(log_weights))[-1])
    return samples[jnp.asarray(index)]
