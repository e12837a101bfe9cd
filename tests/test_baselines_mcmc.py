"""Pooled reference chains: `combine_chains` on NUTS runs of the Gaussian target of
test_sampling, whose moments it must keep (within 4 MCSE from the ESS) and whose R-hat over
all chains must expose parts that sampled different targets."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_sampling import COV, MEAN, N_DIM, N_SAMPLES, N_WARMUP, assert_moments, gaussian_log_prob

from ptaflow.baselines.mcmc import combine_chains, run_nuts
from ptaflow.errors import ParameterError


def _two_chain_run(seed, log_prob=gaussian_log_prob, **kwargs):
    return run_nuts(
        jax.random.key(seed),
        log_prob,
        jnp.zeros(N_DIM),
        num_chains=2,
        num_warmup=N_WARMUP,
        num_samples=N_SAMPLES,
        **kwargs,
    )


def test_combine_chains_pools_runs_of_one_target():
    a, b = _two_chain_run(5), _two_chain_run(6)
    both = combine_chains([a, b])
    np.testing.assert_array_equal(both.samples, np.concatenate([a.samples, b.samples]))
    np.testing.assert_array_equal(both.log_prob, np.concatenate([a.log_prob, b.log_prob]))
    assert both.n_chains == 4 and both.settings["num_chains"] == 4
    assert both.settings["num_warmup"] == N_WARMUP and both.method == "nuts"
    assert both.num_steps == a.num_steps + b.num_steps
    assert both.num_steps_warmup == a.num_steps_warmup + b.num_steps_warmup
    assert both.n_divergent == a.n_divergent + b.n_divergent
    assert both.wall_time_s == pytest.approx(a.wall_time_s + b.wall_time_s)
    assert_moments(both.samples, MEAN, np.diag(COV), "combined NUTS Gaussian")
    assert np.all(both.rhat < 1.01), both.rhat
    # Independent chains of one target: ESS adds up. The ratio's spread is the ESS
    # estimator's (~10 % for 1000 draws of each part), so 0.7-1.3 is a loose band.
    ratio = both.ess / (a.ess + b.ess)
    assert np.all((0.7 < ratio) & (ratio < 1.3)), ratio


def test_combine_chains_flags_parts_that_disagree():
    """Each part converged, but to different targets: R-hat over all chains shows it."""
    shift = 2.0 * np.sqrt(np.diag(COV))  # 2 sd in every coordinate

    def shifted(z):
        return gaussian_log_prob(z - shift)

    a, b = _two_chain_run(5), _two_chain_run(7, shifted)
    # two chains of 500 draws: R-hat of a converged part scatters to ~1.01
    assert np.all(a.rhat < 1.03) and np.all(b.rhat < 1.03)
    both = combine_chains([a, b])
    assert np.all(both.rhat > 1.2), both.rhat


def test_combine_chains_errors():
    a = _two_chain_run(5)
    with pytest.raises(ParameterError, match=r"two or more McmcResult; got \['McmcResult'\]"):
        combine_chains([a])
    with pytest.raises(ParameterError, match=r"result 1 is 'neutra', result 0 is 'nuts'"):
        combine_chains([a, dataclasses.replace(a, method="neutra")])
    shorter = run_nuts(
        jax.random.key(8), gaussian_log_prob, jnp.zeros(N_DIM), num_chains=2, num_samples=100
    )
    with pytest.raises(ParameterError, match=r"\(draws per chain, n_dim\) = \(100, 5\)"):
        combine_chains([a, shorter])
    other = _two_chain_run(9, target_accept=0.9)
    with pytest.raises(ParameterError, match=r"other sampler options .*\['target_accept'\]"):
        combine_chains([a, other])
    # the chain layout is free: vectorized and sequential parts combine
    combine_chains([a, _two_chain_run(10, chain_method="sequential")])
