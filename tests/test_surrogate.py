"""Correlated posteriors trained on their CURN surrogate (`TrainConfig.surrogate`).

The reverse-KL stage of an HD fit runs on the CURN likelihood of the same data, and the
forward-KL refinement carries the flow to the correlated target. Ground truth is NUTS on the
correlated target itself. Two NG15 pulsars (ten red-noise and five common frequencies) with an
inter-pulsar correlation of -0.9 instead of Hellings-Downs' value for the pair, so that the
correlated posterior differs from the CURN one (by a 1-D Hellinger distance of about 0.25 in
B1855+09's red-noise amplitude; with Hellings-Downs' own value the two pulsars cannot tell the
difference): the test first checks that NUTS on the two targets disagrees beyond the
sampling-noise floor in some marginal (otherwise it could not tell a flow left at CURN from
one refined to the target), then that the flow agrees with the correlated target's NUTS
within that floor.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from ptaflow.baselines.mcmc import mcmc_result, nuts_baseline
from ptaflow.data.reduction import select_reduced
from ptaflow.diagnostics import hellinger_noise_floor
from ptaflow.errors import DataError, ParameterError
from ptaflow.flows import TrainConfig
from ptaflow.inference import fit_posterior, hellinger_table
from ptaflow.likelihood import make_likelihood
from ptaflow.posterior import Posterior, make_posterior, make_refit_posterior

BINS = 20
ORF = np.array([[1.0, -0.9], [-0.9, 1.0]])


@pytest.fixture(scope="module")
def curn():
    return make_posterior(model="powerlaw", pulsars=2, correlation="curn", n_rn=10, n_gw=5)


@pytest.fixture(scope="module")
def correlated(curn):
    reduced = select_reduced(None, 2)
    like = make_likelihood(
        reduced, curn.likelihood.common, correlation="hd", n_rn=10, n_gw=5, orf=ORF
    )
    return Posterior(like, curn.prior, "powerlaw")


def test_surrogate_is_the_curn_posterior_of_the_same_data(curn, correlated):
    twin = correlated.surrogate("curn")
    assert twin.correlation == "curn" and correlated.correlation == "hd"
    assert twin.param_names == correlated.param_names
    z = jax.random.normal(jax.random.key(3), (5, curn.n_dim))
    np.testing.assert_array_equal(jax.vmap(twin.log_prob)(z), jax.vmap(curn.log_prob)(z))
    assert not np.allclose(jax.vmap(correlated.log_prob)(z), jax.vmap(curn.log_prob)(z))
    # Nothing to replace: the posterior itself.
    assert correlated.surrogate("none") is correlated
    assert curn.surrogate("curn") is curn
    refit = make_refit_posterior("powerlaw")
    assert refit.surrogate("curn") is refit


def test_surrogate_option_is_checked():
    with pytest.raises(ParameterError, match="TrainConfig.surrogate='hd'"):
        TrainConfig(surrogate="hd")


@pytest.mark.slow
def test_flow_trained_on_the_surrogate_matches_nuts_on_the_target(curn, correlated):
    # Every refinement round (no early stop): they carry the flow from CURN to the target.
    cfg = TrainConfig(
        max_steps=1000, num_samples=128, learning_rate=5e-3, patience=200, refine_patience=0
    )
    fit = fit_posterior(correlated, seed=0, train_config=cfg, n_samples=20000, progress=False)
    assert fit.info.surrogate == "curn" and len(fit.info.refine_ess) >= 1
    # The importance weights are those of the correlated target.
    np.testing.assert_allclose(
        fit.log_likelihood[:3], [correlated.log_prob_parts(z)[0] for z in fit.z[:3]], rtol=1e-12
    )
    nuts_target = nuts_baseline(correlated, num_warmup=1000, num_samples=3000)
    nuts_curn = nuts_baseline(curn, num_warmup=1000, num_samples=3000)
    assert max(nuts_target.rhat.max(), nuts_curn.rhat.max()) < 1.02
    ref = mcmc_result(correlated, nuts_target)
    # 99.9 % chi-square quantile per marginal (six marginals together at ~0.994), as in
    # test_inference.
    ess_ref = float(nuts_target.ess.min())
    apart = hellinger_table(mcmc_result(curn, nuts_curn), ref, bins=BINS)
    floor_apart = hellinger_noise_floor(
        float(nuts_curn.ess.min()), ess_ref, n_bins=BINS, quantile=0.999
    )
    assert max(apart.values()) > floor_apart, (apart, floor_apart)
    h = hellinger_table(fit.to_result(), ref, bins=BINS)
    floor = hellinger_noise_floor(fit.ess, ess_ref, n_bins=BINS, quantile=0.999)
    assert max(h.values()) < floor, (h, floor)
    assert fit.khat < 0.7


def test_checkpoints_record_whether_the_surrogate_was_used(correlated, tmp_path):
    """A checkpoint written without the surrogate does not resume a run that uses it."""
    base = TrainConfig(
        max_steps=3,
        num_samples=16,
        refine_rounds=1,
        refine_pool=64,
        refine_batch=16,
        refine_steps=1,
        laplace_starts=2,
        laplace_steps=5,
    )
    ckpt = tmp_path / "fit.ckpt"
    fit_posterior(
        correlated,
        train_config=dataclasses.replace(base, surrogate="none"),
        n_samples=100,
        checkpoint=ckpt,
        progress=False,
    )
    with pytest.raises(DataError, match="other settings"):
        fit_posterior(correlated, train_config=base, n_samples=100, checkpoint=ckpt, progress=False)
