"""Posterior targets: names, the z-space density and its Jacobian, normalisation, errors.

Ground truth: the likelihood and prior modules evaluated directly; the Jacobian of the map
z -> theta by `jax.jacobian`; and the evidence of a refit-mode posterior computed twice by
dense quadrature, once over theta (L x prior on a grid over the prior box) and once over z
(exp(log_prob) on a grid over R^2): equal integrals prove that the prior is normalised and the
Jacobian is included.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from ptaflow.errors import ModelError, ParameterError, PulsarNotFoundError
from ptaflow.likelihood import PowerLawProcess, make_likelihood
from ptaflow.posterior import Posterior, make_posterior, make_refit_posterior, select_reduced
from ptaflow.priors import Uniform


@pytest.fixture(scope="module")
def post3():
    return make_posterior(model="powerlaw", pulsars=3, correlation="curn", n_rn=10, n_gw=5)


def test_names_follow_enterprise_and_the_ranking_rule(post3):
    reduced = select_reduced(None)
    best3 = [name for name, _ in reduced.ranking()[:3]]
    expected = []
    for psr in best3:
        expected += [f"{psr}_red_noise_log10_A", f"{psr}_red_noise_gamma"]
    assert post3.param_names == (*expected, "log10_A", "gamma")
    assert post3.n_dim == 8 and post3.common_names == ("log10_A", "gamma")
    named = make_posterior(model="powerlaw", pulsars=best3[::-1], n_rn=10, n_gw=5)
    assert named.param_names[0] == f"{best3[2]}_red_noise_log10_A"


def test_log_prob_is_likelihood_plus_prior_plus_jacobian(post3):
    theta = post3.sample_prior(jax.random.key(3), 5)
    z = post3.to_unconstrained(theta)
    np.testing.assert_allclose(post3.to_theta(z), theta, rtol=1e-10, atol=1e-10)
    like = make_likelihood(select_reduced(None, 3), correlation="curn", n_rn=10, n_gw=5)
    jacobian = eqx.filter_jit(lambda x: jax.jacobian(post3.to_theta)(x))
    like = eqx.filter_jit(like)
    log_prob, parts = eqx.filter_jit(post3.log_prob), eqx.filter_jit(post3.log_prob_parts)
    for zi, ti in zip(z, theta, strict=True):
        log_det = np.linalg.slogdet(np.asarray(jacobian(zi)))[1]
        expected = like(ti) + post3.prior.log_prob(ti) + log_det
        np.testing.assert_allclose(log_prob(zi), expected, rtol=1e-12)
        np.testing.assert_allclose(parts(zi)[0], like(ti), rtol=1e-12)
    np.testing.assert_allclose(post3.log_prob_batch(z), jax.vmap(post3.log_prob)(z), rtol=1e-12)


def test_prior_is_normalised_in_theta():
    post = make_posterior(model="powerlaw", pulsars=2, n_rn=5, n_gw=3)
    # U(-20, -11) x U(0, 7) per pulsar, U(-18, -11) x U(0, 7) common: ln pi = -sum ln(width)
    expected = -2 * np.log(9 * 7) - np.log(7 * 7)
    theta = post.sample_prior(jax.random.key(0), 4)
    np.testing.assert_allclose(post.log_prior(theta), expected, rtol=1e-12)


def test_evidence_quadrature_agrees_in_theta_and_in_z():
    post = make_refit_posterior("powerlaw")
    # theta grid over the prior box U(-18, -11) x U(0, 7); the posterior sits well inside.
    a = np.linspace(-18.0, -11.0, 701)
    g = np.linspace(0.0, 7.0, 701)
    grid = np.stack(np.meshgrid(a, g, indexing="ij"), -1).reshape(-1, 2)
    log_like = np.asarray(jax.jit(jax.vmap(post.log_likelihood))(jnp.asarray(grid)))
    log_prior = -np.log(7.0 * 7.0)
    cell = (a[1] - a[0]) * (g[1] - g[0])
    log_z_theta = logsumexp(log_like + log_prior) + np.log(cell)
    # z cells: the images of the theta cells (the two end cells, at infinite z, hold a
    # negligible share), each evaluated at its midpoint in z and weighted by its exact
    # width in z. Without the Jacobian term in log_prob this sum would not equal Z.
    edges = [
        np.asarray(post.prior.priors[i].to_unconstrained(jnp.asarray(x[1:-1])))
        for i, x in enumerate((a, g))
    ]
    mids = [0.5 * (e[1:] + e[:-1]) for e in edges]
    zgrid = np.stack(np.meshgrid(*mids, indexing="ij"), -1).reshape(-1, 2)
    log_p = np.asarray(jax.jit(jax.vmap(post.log_prob))(jnp.asarray(zgrid)))
    log_dz = np.add.outer(np.log(np.diff(edges[0])), np.log(np.diff(edges[1]))).ravel()
    log_z_z = logsumexp(log_p + log_dz)
    assert abs(log_z_theta - log_z_z) < 1e-3, (log_z_theta, log_z_z)


def test_refit_posterior_names_and_value():
    post = make_refit_posterior("smbhb")
    assert post.param_names == ("log10_A", "gamma") and post.mode == "refit"
    theta = jnp.array([-15.0, 4.5])
    z = post.to_unconstrained(theta)
    log_det = np.linalg.slogdet(np.asarray(jax.jacobian(post.to_theta)(z)))[1]
    expected = post.likelihood(theta) + post.prior.log_prob(theta) + log_det
    np.testing.assert_allclose(post.log_prob(z), expected, rtol=1e-12)


def test_custom_common_process_needs_priors():
    with pytest.raises(ParameterError, match="common_priors"):
        make_refit_posterior(PowerLawProcess())
    post = make_refit_posterior(
        PowerLawProcess(),
        common_priors={"gw_log10_A": Uniform(-18, -14), "gw_gamma": Uniform(0, 7)},
    )
    assert post.param_names == ("gw_log10_A", "gw_gamma")


def test_bad_arguments_are_named():
    with pytest.raises(ModelError, match="no_such_model"):
        make_posterior(model="no_such_model", pulsars=2)
    with pytest.raises(ParameterError, match="list of names"):
        make_posterior(pulsars="J1909-3744")
    with pytest.raises(PulsarNotFoundError, match="J1909-3745"):
        make_posterior(pulsars=["J1909-3745"])
    with pytest.raises(ParameterError, match="correlation"):
        make_posterior(pulsars=2, correlation="dipole")
    with pytest.raises(ParameterError, match="expected a model name.*no param_names and no psd"):
        make_posterior(model=3.0, pulsars=2)


def test_mode_and_correlation_are_the_likelihoods(post3):
    assert (post3.mode, post3.correlation) == ("full", "curn")
    hd = make_posterior(model="powerlaw", pulsars=2, correlation="hd", n_rn=10, n_gw=5)
    assert (hd.mode, hd.correlation) == ("full", "hd")
    assert hd.describe() == "powerlaw (2 pulsars, HD; 6 parameters)"
    refit = make_refit_posterior("powerlaw")
    assert (refit.mode, refit.correlation) == ("refit", "refit")
    assert refit.describe() == "powerlaw (free-spectrum refit; 2 parameters)"


def test_a_posterior_needs_a_ptaflow_likelihood(post3):
    with pytest.raises(ParameterError, match="expected a ptaflow.likelihood.AbstractLikelihood"):
        Posterior(post3.log_likelihood, post3.prior, "powerlaw")
