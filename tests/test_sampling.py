"""Exact samplers against analytic targets: NUTS and NeuTra moments within Monte-Carlo standard
errors from the effective sample size, importance resampling of Gaussians, determinism and
error messages.

Every moment check is |mean_f - E[f]| < 4 MCSE with MCSE = sd(f) / sqrt(ESS(f)) and ESS(f)
the (Stan/Geyer) effective sample size of f's own chains (blackjax's MCSE test); with fixed
keys the runs are deterministic, and a 4-sigma bound fails by chance with probability ~6e-5
per check.
"""

from __future__ import annotations

import json

import flowjax.bijections as fb
import flowjax.distributions as fd
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flowjax.flows import masked_autoregressive_flow
from numpyro.diagnostics import effective_sample_size
from scipy import special

from ptaflow.baselines.mcmc import run_nuts
from ptaflow.errors import ParameterError
from ptaflow.sampling import McmcResult, importance_resample, run_neutra

N_DIM = 5
N_CHAINS = 4
N_WARMUP = 300
N_SAMPLES = 500


def _gaussian():
    """Correlated 5-D Gaussian: random rotation of standard deviations 0.1 .. 3 (cond 900)."""
    rng = np.random.default_rng(42)
    rotation, _ = np.linalg.qr(rng.normal(size=(N_DIM, N_DIM)))
    cov = rotation @ np.diag(np.geomspace(0.1, 3.0, N_DIM) ** 2) @ rotation.T
    return np.linspace(-2.0, 2.0, N_DIM), cov


MEAN, COV = _gaussian()
PRECISION = jnp.asarray(np.linalg.inv(COV))


def gaussian_log_prob(z):
    r = z - MEAN
    return -0.5 * r @ PRECISION @ r


# Non-Gaussian target: a 2-D banana z1 | z0 ~ N(B (z0^2 - 1), 1), z0 ~ N(0, 1), times three
# independent log-Gamma coordinates z = ln x, x ~ Gamma(a, 1).
B = 0.5
GAMMA_SHAPES = np.array([0.5, 2.0, 10.0])


def banana_gamma_log_prob(z):
    banana = -0.5 * z[0] ** 2 - 0.5 * (z[1] - B * (z[0] ** 2 - 1.0)) ** 2
    log_gamma = GAMMA_SHAPES * z[2:] - jnp.exp(z[2:])
    return banana + log_gamma.sum()


# E[z], Var[z]: banana Var z1 = 1 + B^2 Var(z0^2) = 1 + 2 B^2; ln Gamma: digamma, trigamma.
BANANA_GAMMA_MEAN = np.concatenate([[0.0, 0.0], special.digamma(GAMMA_SHAPES)])
BANANA_GAMMA_VAR = np.concatenate([[1.0, 1.0 + 2 * B**2], special.polygamma(1, GAMMA_SHAPES)])
# A third moment the banana's curvature sets: E[z0^2 z1] = B E[z0^2 (z0^2 - 1)] = 2 B.
BANANA_Z0SQ_Z1 = 2 * B


def assert_expectations(f, truth, label):
    """|mean(f) - truth| < 4 MCSE for draws f of shape (n_chains, n_samples, k)."""
    f = np.asarray(f)
    ess = effective_sample_size(f)
    mcse = f.reshape(-1, f.shape[-1]).std(axis=0) / np.sqrt(ess)
    error = f.mean(axis=(0, 1)) - truth
    assert np.all(np.abs(error) < 4 * mcse), f"{label}: error {error}, 4 MCSE {4 * mcse}"


def assert_moments(samples, mean, var, label):
    """Means and variances per coordinate; variances through f = (z - true mean)^2."""
    assert_expectations(samples, mean, f"{label} mean")
    assert_expectations((samples - mean) ** 2, var, f"{label} variance")


def assert_log_prob_consistent(result, log_prob):
    """The stored log_prob is the target's log-density at the stored samples."""
    expected = jax.vmap(log_prob)(jnp.asarray(result.flat_samples))
    np.testing.assert_allclose(result.flat_log_prob, expected, rtol=0, atol=1e-9)


@pytest.fixture(scope="module")
def nuts_gaussian():
    return run_nuts(
        jax.random.key(0),
        gaussian_log_prob,
        jnp.zeros(N_DIM),
        num_chains=N_CHAINS,
        num_warmup=N_WARMUP,
        num_samples=N_SAMPLES,
    )


def test_nuts_gaussian_moments(nuts_gaussian):
    res = nuts_gaussian
    assert isinstance(res, McmcResult) and res.method == "nuts"
    assert res.samples.shape == (N_CHAINS, N_SAMPLES, N_DIM)
    assert res.log_prob.shape == (N_CHAINS, N_SAMPLES)
    assert res.flat_samples.shape == (N_CHAINS * N_SAMPLES, N_DIM)
    assert_moments(res.samples, MEAN, np.diag(COV), "NUTS Gaussian")
    # the full covariance: f = (z_i - mu_i)(z_j - mu_j) for i < j
    r = res.samples - MEAN
    i, j = np.triu_indices(N_DIM, k=1)
    assert_expectations(r[..., i] * r[..., j], COV[i, j], "NUTS Gaussian covariance")
    assert np.all(res.rhat < 1.01), res.rhat
    assert res.n_divergent == 0
    assert_log_prob_consistent(res, gaussian_log_prob)


def test_nuts_result_summary(nuts_gaussian):
    res = nuts_gaussian
    summary = json.loads(json.dumps(res.to_dict()))  # JSON-ready
    assert summary["method"] == "nuts" and summary["n_dim"] == N_DIM
    assert summary["max_rhat"] == pytest.approx(res.rhat.max())
    assert summary["min_ess"] == pytest.approx(res.ess.min())
    assert summary["settings"]["num_warmup"] == N_WARMUP
    # every transition takes at least one leapfrog step, at most 2^max_tree_depth - 1
    n_transitions = N_CHAINS * (N_WARMUP + N_SAMPLES)
    assert n_transitions <= res.num_steps <= n_transitions * (2**10 - 1)
    assert 0 < res.num_steps_warmup < res.num_steps
    assert 0.0 < res.mean_accept_prob <= 1.0 and res.wall_time_s > 0
    with pytest.raises(ValueError):  # read-only arrays: the result is immutable
        res.samples[0, 0, 0] = 1.0


def test_nuts_is_deterministic(nuts_gaussian):
    kwargs = dict(num_chains=N_CHAINS, num_warmup=N_WARMUP, num_samples=N_SAMPLES)
    same = run_nuts(jax.random.key(0), gaussian_log_prob, jnp.zeros(N_DIM), **kwargs)
    np.testing.assert_array_equal(same.samples, nuts_gaussian.samples)
    np.testing.assert_array_equal(same.log_prob, nuts_gaussian.log_prob)
    assert same.num_steps == nuts_gaussian.num_steps
    other = run_nuts(jax.random.key(1), gaussian_log_prob, jnp.zeros(N_DIM), **kwargs)
    assert not np.array_equal(other.samples, nuts_gaussian.samples)


def test_nuts_non_gaussian_moments():
    # one starting point per chain, run chain after chain
    init = jnp.asarray(np.random.default_rng(3).normal(size=(N_CHAINS, N_DIM)))
    res = run_nuts(
        jax.random.key(2),
        banana_gamma_log_prob,
        init,
        num_chains=N_CHAINS,
        num_warmup=N_WARMUP,
        num_samples=N_SAMPLES,
        chain_method="sequential",
    )
    assert_moments(res.samples, BANANA_GAMMA_MEAN, BANANA_GAMMA_VAR, "NUTS banana/log-Gamma")
    z = res.samples
    assert_expectations((z[..., 0] ** 2 * z[..., 1])[..., None], BANANA_Z0SQ_Z1, "E[z0^2 z1]")
    assert np.all(res.rhat < 1.01), res.rhat
    assert_log_prob_consistent(res, banana_gamma_log_prob)


def test_neutra_untrained_flow_is_exact():
    """A randomly initialised spline flow is far from the target; NeuTra must stay exact."""
    flow = masked_autoregressive_flow(
        jax.random.key(5),
        base_dist=fd.StandardNormal((N_DIM,)),
        transformer=fb.RationalQuadraticSpline(knots=4, interval=4.0),
        flow_layers=1,
        nn_width=16,
        invert=False,  # T = the flow's fast (one-pass) direction, as NeuTra evaluates it
    )
    res = run_neutra(
        jax.random.key(6),
        banana_gamma_log_prob,
        flow,
        num_chains=N_CHAINS,
        num_warmup=N_WARMUP,
        num_samples=N_SAMPLES,
        chain_method="sequential",
    )
    assert res.method == "neutra" and res.samples.shape == (N_CHAINS, N_SAMPLES, N_DIM)
    assert_moments(res.samples, BANANA_GAMMA_MEAN, BANANA_GAMMA_VAR, "NeuTra untrained flow")
    assert np.all(res.rhat < 1.01), res.rhat
    assert_log_prob_consistent(res, banana_gamma_log_prob)


def test_neutra_whitening_flow_needs_few_steps():
    """z = mu + L u with L L^T = cov turns the Gaussian into N(0, I) in u."""
    flow = fd.Transformed(
        fd.StandardNormal((N_DIM,)),
        fb.TriangularAffine(jnp.asarray(MEAN), jnp.linalg.cholesky(jnp.asarray(COV))),
    )
    res = run_neutra(
        jax.random.key(7),
        gaussian_log_prob,
        flow,
        num_chains=N_CHAINS,
        num_warmup=N_WARMUP,
        num_samples=N_SAMPLES,
        dense_mass=False,  # no mass-matrix help: the flow alone removes the correlations
    )
    assert_moments(res.samples, MEAN, np.diag(COV), "NeuTra whitening flow")
    assert np.all(res.rhat < 1.01), res.rhat
    n_draws = N_CHAINS * N_SAMPLES
    # independent draws would give ESS = n_draws; NUTS on N(0, I) is about as good
    assert res.ess.min() > 0.5 * n_draws, res.ess
    # on N(0, I) the adapted step is ~1 and trajectories U-turn within tree depth 3
    # (<= 7 leapfrog steps); unwhitened, diagonal-mass NUTS needs ~40 on this cond-900 target
    assert res.steps_per_sample <= 7, res.steps_per_sample
    assert_log_prob_consistent(res, gaussian_log_prob)


def test_progress_bar(capfd):
    res = run_nuts(
        jax.random.key(0),
        lambda z: -0.5 * z @ z,
        jnp.zeros(1),
        num_chains=2,
        num_warmup=20,
        num_samples=20,
        chain_method="sequential",
        progress_bar=True,
    )
    assert res.samples.shape == (2, 20, 1)
    assert "80/80" in capfd.readouterr().err  # 2 chains x 40 transitions, one after another


def _resample_mcse(x, weights, f, n):
    """Standard error of the mean of f over n resampled draws.

    Self-normalised importance sampling (delta method, sum w_i^2 (f_i - mean)^2 with
    normalised weights) plus the multinomial resampling noise Var_p(f) / n.
    """
    w = weights / weights.sum()
    fx = f(x)
    mean = np.sum(w * fx)
    var_p = np.sum(w * (fx - mean) ** 2)
    return np.sqrt(np.sum(w**2 * (fx - mean) ** 2) + var_p / n)


def test_importance_resample_gaussian():
    """Draws of q = N(0, 2^2) weighted by p / q, p = N(1, 1), resample to p."""
    n_draws = n = 20_000
    x = 2.0 * np.asarray(jax.random.normal(jax.random.key(10), (n_draws,)))
    log_p = -0.5 * (x - 1.0) ** 2 - 0.5 * np.log(2 * np.pi)
    log_q = -0.5 * (x / 2.0) ** 2 - 0.5 * np.log(2 * np.pi * 4.0)
    log_w = log_p - log_q
    y = np.asarray(importance_resample(jax.random.key(11), x[:, None], log_w, n))
    assert y.shape == (n, 1)
    assert np.all(np.isin(y, x))
    weights = np.exp(log_w)
    for f, truth, label in [(lambda v: v, 1.0, "mean"), (lambda v: (v - 1.0) ** 2, 1.0, "var")]:
        error = f(y[:, 0]).mean() - truth
        mcse = _resample_mcse(x, weights, f, n)
        assert abs(error) < 4 * mcse, f"{label}: error {error}, 4 MCSE {4 * mcse}"


def test_importance_resample_frequencies():
    """Zero weights (-inf) are never drawn; the rest in proportion to their weights."""
    samples = jnp.arange(5.0)
    log_w = np.array([0.0, -np.inf, 0.0, -np.inf, np.log(2.0)])
    n = 8000
    y = np.asarray(importance_resample(jax.random.key(12), samples, log_w, n))
    counts = np.bincount(y.astype(int), minlength=5)
    assert counts[1] == counts[3] == 0
    p = np.array([0.25, 0.0, 0.25, 0.0, 0.5])
    # multinomial counts: sd sqrt(n p (1 - p))
    assert np.all(np.abs(counts - n * p) <= 4 * np.sqrt(n * p * (1 - p))), counts
    again = importance_resample(jax.random.key(12), samples, log_w, n)
    np.testing.assert_array_equal(np.asarray(again), y)


@pytest.mark.parametrize(
    "log_w, n, match",
    [
        ([0.0, np.nan, 0.0], 3, r"finite or -inf; got nan at index 1"),
        ([0.0, np.inf, 0.0], 3, r"finite or -inf; got inf at index 1"),
        ([-np.inf] * 3, 3, r"all -inf"),
        ([0.0, 0.0], 3, r"shape \(n_draws,\).*log_weights \(2,\) and samples \(3,\)"),
        ([0.0, 0.0, 0.0], 0, r"n must be an integer >= 1; got 0"),
    ],
)
def test_importance_resample_errors(log_w, n, match):
    with pytest.raises(ParameterError, match=match):
        importance_resample(jax.random.key(0), jnp.zeros(3), np.asarray(log_w), n)


@pytest.mark.parametrize(
    "init, kwargs, match",
    [
        (np.zeros((3, 2)), {}, r"init must have shape .* \(4, n_dim\); got \(3, 2\)"),
        (np.zeros((4, 2, 1)), {}, r"init must have shape .*; got \(4, 2, 1\)"),
        (np.array([0.0, np.nan]), {}, r"init must be finite"),
        (np.zeros(2), {"chain_method": "pmap"}, r"chain_method must be one of .*'pmap'"),
        (np.zeros(2), {"num_samples": 3}, r"num_samples must be an integer >= 4; got 3"),
        (np.zeros(2), {"num_chains": 0}, r"num_chains must be an integer >= 1; got 0"),
        (np.zeros(2), {"target_accept": 1.0}, r"target_accept must lie in \(0, 1\); got 1.0"),
        (np.zeros(2), {"init_jitter": -1.0}, r"init_jitter must be finite and >= 0"),
    ],
)
def test_run_nuts_errors(init, kwargs, match):
    with pytest.raises(ParameterError, match=match):
        run_nuts(jax.random.key(0), lambda z: -0.5 * z @ z, init, **kwargs)


def test_run_nuts_log_prob_errors():
    with pytest.raises(ParameterError, match=r"must return a scalar .* got \(2,\)"):
        run_nuts(jax.random.key(0), lambda z: -0.5 * z**2, jnp.zeros(2))
    with pytest.raises(ParameterError, match=r"must accept an array of shape \(2,\)"):
        run_nuts(jax.random.key(0), lambda z: z @ jnp.ones(3), jnp.zeros(2))
    # log-Gamma coordinates written for x > 0 instead of z = ln x: -inf/NaN at z <= 0
    with pytest.raises(ParameterError, match=r"finite at every chain's starting point"):
        run_nuts(jax.random.key(0), lambda z: jnp.sum(jnp.log(z) - z), -jnp.ones((4, 2)))


def test_run_neutra_errors():
    with pytest.raises(ParameterError, match=r"flowjax Transformed .* got StandardNormal"):
        run_neutra(jax.random.key(0), lambda z: -0.5 * z @ z, fd.StandardNormal((2,)))
    flow = fd.Transformed(fd.StandardNormal((2, 2)), fb.Identity((2, 2)))
    with pytest.raises(ParameterError, match=r"shape \(n_dim,\); got shape \(2, 2\)"):
        run_neutra(jax.random.key(0), lambda z: -0.5 * z @ z, flow)
    flow = fd.Transformed(fd.StandardNormal((2,)), fb.Identity((2,)))
    with pytest.raises(ParameterError, match=r"must accept an array of shape \(2,\)"):
        run_neutra(jax.random.key(0), lambda z: z @ jnp.ones(3), flow)
