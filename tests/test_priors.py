"""Priors against SciPy: normalised densities, samplers, and unconstrained maps whose
log-Jacobians agree with jax.jacobian (so evidences in unconstrained space are exact)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from ptaflow.errors import ParameterError, PriorError
from ptaflow.priors import (
    Fixed,
    LogUniform,
    MultivariateNormal,
    Normal,
    TruncatedNormal,
    Uniform,
    make_joint_prior,
)

SMBHB_MEAN = (-15.61492963, 4.70709637)
SMBHB_COV = ((0.27871359, -0.00263617), (-0.00263617, 0.12415383))

# Scalar priors with their SciPy equivalents.
SCALAR = {
    "uniform": (Uniform(-18.0, -11.0), stats.uniform(-18.0, 7.0)),
    "loguniform": (LogUniform(1e-3, 10.0), stats.loguniform(1e-3, 10.0)),
    "normal": (Normal(1.5, 0.3), stats.norm(1.5, 0.3)),
    "truncnorm": (
        TruncatedNormal(0.5, 2.0, -1.0, 3.0),
        stats.truncnorm((-1.0 - 0.5) / 2.0, (3.0 - 0.5) / 2.0, 0.5, 2.0),
    ),
    "truncnorm_lower": (
        TruncatedNormal(0.0, 1.0, 0.5, math.inf),
        stats.truncnorm(0.5, math.inf, 0.0, 1.0),
    ),
    "truncnorm_upper": (
        TruncatedNormal(0.0, 1.0, -math.inf, 0.2),
        stats.truncnorm(-math.inf, 0.2, 0.0, 1.0),
    ),
}


@pytest.fixture(params=list(SCALAR), ids=list(SCALAR))
def scalar(request):
    return SCALAR[request.param]


def test_log_prob_matches_scipy(scalar):
    prior, dist = scalar
    x = dist.ppf(np.linspace(0.01, 0.99, 25))
    assert np.allclose(prior.log_prob(jnp.asarray(x)), dist.logpdf(x), rtol=1e-10, atol=1e-12)


def test_density_is_normalised(scalar):
    prior, _ = scalar
    lo, hi = prior.bounds()[0] if prior.bounds() else (-math.inf, math.inf)
    total, _ = integrate.quad(lambda x: math.exp(float(prior.log_prob(x))), lo, hi, limit=200)
    assert total == pytest.approx(1.0, abs=1e-8)


def test_zero_density_outside_support(scalar):
    prior, _ = scalar
    lo, hi = prior.bounds()[0] if prior.bounds() else (-math.inf, math.inf)
    for x in (lo - 1.0, hi + 1.0):
        if math.isfinite(x):
            assert prior.log_prob(x) == -np.inf


def test_samples_follow_scipy(scalar):
    prior, dist = scalar
    draws = np.asarray(prior.sample(jax.random.key(7), 4000))
    assert draws.shape == (4000,)
    # Fixed seed, so deterministic; p > 1e-3 rejects only a wrong distribution.
    assert stats.kstest(draws, dist.cdf).pvalue > 1e-3


def test_bijection_inverse_and_jacobian(scalar):
    prior, dist = scalar
    x = jnp.asarray(dist.ppf(np.linspace(0.02, 0.98, 11)))
    z = prior.to_unconstrained(x)
    x_back, log_det = prior.from_unconstrained(z)
    assert np.allclose(x_back, x, rtol=1e-10, atol=1e-12)
    dxdz = jax.vmap(jax.grad(lambda zi: prior.from_unconstrained(zi)[0]))(z)
    assert np.allclose(log_det, np.log(np.abs(dxdz)), rtol=1e-10, atol=1e-10)


def test_density_in_unconstrained_space_is_normalised(scalar):
    prior, _ = scalar

    def p_z(z):
        x, log_det = prior.from_unconstrained(jnp.asarray(z))
        return math.exp(float(prior.log_prob(x) + log_det))

    total, _ = integrate.quad(p_z, -math.inf, math.inf, limit=200)
    assert total == pytest.approx(1.0, abs=1e-7)


def test_scalar_prior_under_jit(scalar):
    prior, dist = scalar
    x = jnp.asarray(dist.ppf([0.3, 0.6]))
    assert np.allclose(jax.jit(prior.log_prob)(x), prior.log_prob(x))


# --- multivariate normal (the SMBHB prior) ------------------------------------------------------


def test_multivariate_normal_against_scipy():
    prior = MultivariateNormal(SMBHB_MEAN, SMBHB_COV)
    dist = stats.multivariate_normal(SMBHB_MEAN, SMBHB_COV)
    x = dist.rvs(size=20, random_state=1)
    assert np.allclose(prior.log_prob(jnp.asarray(x)), dist.logpdf(x), rtol=1e-12)
    draws = np.asarray(prior.sample(jax.random.key(3), 20000))
    assert draws.shape == (20000, 2)
    # mean: 5 standard errors; covariance: 5% (relative error of a variance ~ sqrt(2/n) = 1%)
    se = np.sqrt(np.diag(SMBHB_COV) / 20000)
    assert np.all(np.abs(draws.mean(0) - SMBHB_MEAN) < 5 * se)
    assert np.allclose(np.cov(draws.T), SMBHB_COV, rtol=0.05, atol=0.005)
    z = prior.to_unconstrained(jnp.asarray(x))
    x_back, log_det = prior.from_unconstrained(z)
    assert np.allclose(x_back, x) and np.all(log_det == 0.0)


# --- fixed values ---------------------------------------------------------------------------------


def test_fixed_prior():
    prior = Fixed(2.8)
    assert prior.n_free == 0 and prior.bounds() == ()
    assert prior.log_prob(2.8) == 0.0 and prior.log_prob(2.7) == -np.inf
    assert np.all(prior.sample(jax.random.key(0), 5) == 2.8)
    x, log_det = prior.from_unconstrained(jnp.zeros((4, 0)))
    assert x.shape == (4,) and np.all(x == 2.8) and np.all(log_det == 0.0)


# --- joint prior ----------------------------------------------------------------------------------


@pytest.fixture
def joint():
    return make_joint_prior(
        {
            "log10_alpha": Uniform(-2.0, 1.0),
            "a": Fixed(3.0),
            ("log10_A", "gamma"): MultivariateNormal(SMBHB_MEAN, SMBHB_COV),
            "x": LogUniform(0.1, 10.0, unit="GeV", latex=r"x_*"),
            "t": TruncatedNormal(0.0, 1.0, -1.0, 2.0),
        }
    )


def test_joint_names_and_metadata(joint):
    assert joint.names == ("log10_alpha", "log10_A", "gamma", "x", "t")
    assert joint.n_dim == 5 and joint.fixed == {"a": 3.0}
    assert joint.units()["x"] == "GeV" and joint.latex_labels()["x"] == "x_*"
    assert joint.bounds()[0] == (-2.0, 1.0) and joint.bounds()[3] == (0.1, 10.0)


def test_joint_log_prob_is_sum_of_parts(joint):
    theta = joint.sample(jax.random.key(1), 64)
    assert theta.shape == (64, 5)
    expected = (
        stats.uniform(-2, 3).logpdf(theta[:, 0])
        + stats.multivariate_normal(SMBHB_MEAN, SMBHB_COV).logpdf(np.asarray(theta[:, 1:3]))
        + stats.loguniform(0.1, 10).logpdf(theta[:, 3])
        + stats.truncnorm(-1, 2).logpdf(theta[:, 4])
    )
    assert np.allclose(joint.log_prob(theta), expected, rtol=1e-12)


def test_joint_bijection_log_det_matches_jacobian(joint):
    theta = joint.sample(jax.random.key(2), 8)
    z = joint.to_unconstrained(theta)
    back, log_det = joint.from_unconstrained(z)
    assert np.allclose(back, theta, rtol=1e-10, atol=1e-12)
    jac = jax.vmap(jax.jacobian(lambda zi: joint.from_unconstrained(zi)[0]))(z)
    assert np.allclose(log_det, np.linalg.slogdet(np.asarray(jac))[1], rtol=1e-10, atol=1e-10)
    assert np.allclose(jax.jit(joint.from_unconstrained)(z)[1], log_det)


def test_joint_dict_round_trip(joint):
    theta = joint.sample(jax.random.key(4), 1)[0]
    values = joint.to_dict(theta)
    assert values["a"] == 3.0
    assert np.allclose(joint.from_dict(values), theta)


def test_joint_errors(joint):
    with pytest.raises(ParameterError, match=r"shape \(\.\.\., 5\).*got shape \(4,\)"):
        joint.log_prob(jnp.zeros(4))
    with pytest.raises(ParameterError, match="Did you mean 'gamma'"):
        joint.from_dict({"log10_alpha": 0, "log10_A": 0, "gama": 0, "x": 1, "t": 0})


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Uniform(1.0, 0.0), "lower < upper"),
        (lambda: Uniform(0.0, math.inf), "finite bounds"),
        (lambda: LogUniform(0.0, 1.0), "0 < lower"),
        (lambda: Normal(0.0, -1.0), "scale > 0"),
        (lambda: TruncatedNormal(0.0, 1.0, -math.inf, math.inf), "at least one finite bound"),
        (lambda: MultivariateNormal((0.0, 0.0), ((1.0, 2.0), (2.0, 1.0))), "positive definite"),
        (lambda: MultivariateNormal((0.0, 0.0), ((1.0,),)), r"must be 2x2"),
        (lambda: Fixed(math.nan), "finite value"),
        (lambda: make_joint_prior({"a": Uniform(0, 1), ("a",): Normal(0, 1)}), "declared twice"),
        (lambda: make_joint_prior({"a": (0, 1)}), "expected a prior"),
        (lambda: make_joint_prior({"a b": Uniform(0, 1)}), "without spaces"),
        (
            lambda: make_joint_prior({"A": MultivariateNormal(SMBHB_MEAN, SMBHB_COV)}),
            "tuple of 2 names",
        ),
        (lambda: make_joint_prior({}), "non-empty dict"),
    ],
)
def test_invalid_priors_raise(make, match):
    with pytest.raises(PriorError, match=match):
        make()
