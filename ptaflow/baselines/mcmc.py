"""MCMC reference runs on a ptaflow posterior: plain NUTS, pooled chains, chains as a result.

The flow posteriors of `ptaflow.inference` are checked against MCMC that shares nothing with
the flow but the target, in the same unconstrained coordinates z:

    ref = nuts_baseline(posterior)              # plain NUTS, dense mass matrix
    both = combine_chains([ref, more])          # parts of one long run, R-hat over all chains
    result = mcmc_result(posterior, both)       # ptaflow.results.PosteriorResult in theta

The sampler is `run_nuts` (numpyro's NUTS, Hoffman & Gelman 2014), on the compiled chains
that NeuTra (`ptaflow.sampling.run_neutra`) runs too; R-hat and ESS are the rank-normalised
ones of `ptaflow.diagnostics.rhat_and_ess` (Vehtari et al. 2021).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ..diagnostics import rhat_and_ess
from ..errors import ParameterError
from ..posterior import Posterior
from ..results import PosteriorResult, provenance
from ..sampling import (
    McmcResult,
    _check_finite_start,
    _check_log_prob,
    _make_options,
    _result,
    _sample,
)

__all__ = ["run_nuts", "nuts_baseline", "combine_chains", "mcmc_result"]


def run_nuts(
    key: jax.Array,
    log_prob: Callable[[jax.Array], jax.Array],
    init,
    *,
    num_chains: int = 4,
    num_warmup: int = 1000,
    num_samples: int = 1000,
    target_accept: float = 0.8,
    dense_mass: bool = True,
    max_tree_depth: int = 10,
    chain_method: str = "vectorized",
    init_jitter: float = 0.1,
    progress_bar: bool = False,
) -> McmcResult:
    """Sample a target density over R^n_dim with NUTS (Hoffman & Gelman 2014).

    numpyro's NUTS kernel on the potential energy -log_prob(z). Warmup adapts the step size
    (dual averaging to `target_accept`) and the mass matrix (windowed, as Stan).

    Args:
        key: JAX PRNG key; the same key gives identical samples.
        log_prob: Pure JAX target log-density, (n_dim,) -> scalar, up to a constant.
        init: Starting point(s): shape (num_chains, n_dim), one per chain, or (n_dim,),
            which is copied to every chain with N(0, init_jitter^2) noise drawn from `key`.
        num_chains: Number of independent chains.
        num_warmup: Adaptation transitions per chain (discarded).
        num_samples: Kept transitions per chain (at least 4, for split R-hat).
        target_accept: Target mean acceptance statistic of step-size adaptation, in (0, 1).
        dense_mass: Adapt a dense (True) or diagonal (False) mass matrix.
        max_tree_depth: Largest NUTS tree depth (at most 2^depth - 1 leapfrog steps/draw).
        chain_method: "vectorized" (all chains in one vmapped program: every transition
            costs the deepest tree of any chain), "sequential", or "parallel" (over the local
            devices, sequential on each; see `ptaflow.devices` for CPU cores).
        init_jitter: Standard deviation of the jitter added to a single `init` (units of z).
        progress_bar: Show a tqdm progress bar.

    Returns:
        An `McmcResult` with method "nuts".

    Raises:
        ParameterError: For a bad option, an `init` of the wrong shape or non-finite, a
            `log_prob` that does not map (n_dim,) to a scalar, or a start where it is not
            finite.
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
    if not (math.isfinite(init_jitter) and init_jitter >= 0):
        raise ParameterError(f"init_jitter must be finite and >= 0; got {init_jitter!r}.")
    dtype = jnp.result_type(float)
    init = jnp.asarray(init, dtype=dtype)
    if init.ndim not in (1, 2) or (init.ndim == 2 and init.shape[0] != opts.num_chains):
        raise ParameterError(
            f"init must have shape (n_dim,) or (num_chains, n_dim) = ({opts.num_chains}, "
            f"n_dim); got {init.shape}."
        )
    if init.shape[-1] == 0:
        raise ParameterError("init must have at least one dimension (n_dim >= 1); got 0.")
    if not bool(jnp.all(jnp.isfinite(init))):
        raise ParameterError(f"init must be finite; got {np.asarray(init)}.")
    n_dim = init.shape[-1]
    _check_log_prob(log_prob, n_dim, dtype)
    key_jitter, key_run = jax.random.split(key)
    if init.ndim == 1:
        init = init + init_jitter * jax.random.normal(key_jitter, (opts.num_chains, n_dim), dtype)
    _check_finite_start(log_prob, init, "log_prob(init)")

    run = _sample(key_run, log_prob, init, opts)
    settings = dataclasses.asdict(opts) | {"init_jitter": float(init_jitter)}
    return _result(run, run["z"], run["log_density"], t0, "nuts", settings)


def nuts_baseline(
    posterior: Posterior,
    *,
    seed: int = 2,
    num_chains: int = 4,
    num_warmup: int = 1000,
    num_samples: int = 2000,
    init=None,
    chain_method: str = "vectorized",
    progress: bool = False,
) -> McmcResult:
    """Plain NUTS (dense mass matrix) on the same z-space target: the MCMC reference.

    Chains start from independent prior draws (or `init`, (num_chains, n_dim) in z).
    `chain_method` as in `run_nuts` ("parallel": over the local devices).
    """
    key_init, key_run = jax.random.split(jax.random.key(seed))
    if init is None:
        init = posterior.to_unconstrained(posterior.sample_prior(key_init, num_chains))
    return run_nuts(
        key_run,
        posterior.log_prob,
        jnp.asarray(init),
        num_chains=num_chains,
        num_warmup=num_warmup,
        num_samples=num_samples,
        chain_method=chain_method,
        progress_bar=progress,
    )


# Options that may differ between runs whose chains are combined: how the chains were laid
# out over devices and whether a progress bar showed do not change what the chains sample.
_COMBINE_FREE = ("num_chains", "chain_method", "progress_bar")


def combine_chains(results) -> McmcResult:
    """The chains of several MCMC runs of one target as one result.

    Long reference runs are often split into parts: a few chains per machine or per batch
    job, or more chains added later with another seed. Pooling their draws is only sound
    when the chains agree, so R-hat and ESS are recomputed over all chains together (an
    R-hat near 1 over the combined chains is the check that the parts sampled one
    distribution), not averaged or summed from the parts.

    Args:
        results: Two or more `McmcResult` of one method, with the same number of draws per
            chain, dimension and sampler options (the number of chains, the chain method
            and the progress bar aside). Run them with different keys: chains that share a
            key repeat each other's draws.

    Returns:
        An `McmcResult` with the chains in the given order. Divergences and leapfrog steps
        are totals over the parts, the acceptance statistic is their chain-weighted mean,
        and `wall_time_s` is the sum of the parts' wall times (the cost of running them
        one after another on the same hardware). `settings["num_chains"]` is the total.

    Raises:
        ParameterError: Fewer than two results, or parts that differ in method, shape or
            options.
    """
    results = list(results)
    if len(results) < 2 or not all(isinstance(r, McmcResult) for r in results):
        raise ParameterError(
            "combine_chains needs two or more McmcResult; got "
            f"{[type(r).__name__ for r in results]}."
        )
    first = results[0]

    def options(r):
        return {k: v for k, v in r.settings.items() if k not in _COMBINE_FREE}

    base = options(first)
    for i, r in enumerate(results[1:], start=1):
        if r.method != first.method:
            raise ParameterError(f"result {i} is {r.method!r}, result 0 is {first.method!r}.")
        if r.samples.shape[1:] != first.samples.shape[1:]:
            raise ParameterError(
                f"result {i} has (draws per chain, n_dim) = {r.samples.shape[1:]}, result 0 "
                f"has {first.samples.shape[1:]}; R-hat compares chains of equal length."
            )
        opts = options(r)
        if opts != base:
            diff = sorted(k for k in opts.keys() | base.keys() if opts.get(k) != base.get(k))
            raise ParameterError(
                f"result {i} ran with other sampler options than result 0: {diff}."
            )
    samples = np.concatenate([r.samples for r in results], axis=0)
    log_prob = np.concatenate([r.log_prob for r in results], axis=0)
    rhat, ess = rhat_and_ess(samples)
    n_chains = [r.n_chains for r in results]
    return McmcResult(
        samples=samples,
        log_prob=log_prob,
        rhat=rhat,
        ess=ess,
        n_divergent=sum(r.n_divergent for r in results),
        mean_accept_prob=float(np.average([r.mean_accept_prob for r in results], weights=n_chains)),
        num_steps=sum(r.num_steps for r in results),
        num_steps_warmup=sum(r.num_steps_warmup for r in results),
        wall_time_s=sum(r.wall_time_s for r in results),
        method=first.method,
        settings={**first.settings, "num_chains": sum(n_chains)},
    )


def mcmc_result(posterior: Posterior, chains: McmcResult, **extra_provenance) -> PosteriorResult:
    """Equally weighted MCMC samples (in z) as a `PosteriorResult` in physical parameters."""
    theta = np.asarray(posterior.to_theta(jnp.asarray(chains.flat_samples)))
    log_like, log_prior = posterior.evaluate(jnp.asarray(theta))
    return PosteriorResult(
        param_names=posterior.param_names,
        samples=theta,
        log_likelihood=np.asarray(log_like),
        log_prior=np.asarray(log_prior),
        diagnostics={
            "rhat_max": float(np.max(chains.rhat)),
            "ess_min": float(np.min(chains.ess)),
            "n_divergent": int(chains.n_divergent),
            "wall_time_s": chains.wall_time_s,
        },
        settings={"model": posterior.model_name, "method": chains.method, **chains.settings},
        provenance=provenance(**extra_provenance),
    )
