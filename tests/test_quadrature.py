"""Evidence by quadrature on a grid, against analytic evidences and a refit model's grid in
its physical parameters.

The trapezoid rule integrates a Gaussian to near machine precision on these grids, so the
quoted error (|Z_h - Z_2h| between the grid and its every other point, plus the edge mass, the
cut-off and rounding) must bound the true error; a density with kinks converges at order h^2,
where that difference is about three times the error.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_compare import _quadrature_log_z

from ptaflow.errors import ParameterError
from ptaflow.posterior import make_refit_posterior
from ptaflow.quadrature import estimate_evidence_quadrature

jax.config.update("jax_enable_x64", True)


def _gaussian(mean, cov, log_z):
    """ln of exp(log_z) times a normalised Gaussian density, and draws from it."""
    mean, cov = np.asarray(mean, float), np.asarray(cov, float)
    prec, (_, logdet) = np.linalg.inv(cov), np.linalg.slogdet(cov)
    norm = log_z - 0.5 * (mean.size * math.log(2 * math.pi) + logdet)

    def log_target(z):
        d = z - mean
        return norm - 0.5 * d @ jnp.asarray(prec) @ d

    draws = np.random.default_rng(0).multivariate_normal(mean, cov, 4000)
    return log_target, draws


@pytest.mark.parametrize(
    ("mean", "cov"),
    [
        ([0.3], [[0.2]]),
        ([1.0, -2.0], [[1.0, 0.6], [0.6, 0.5]]),
        ([0.0, 0.5, -0.5], [[1.0, 0.3, 0.0], [0.3, 0.4, -0.1], [0.0, -0.1, 0.2]]),
    ],
)
def test_gaussians_of_one_to_three_dimensions(mean, cov):
    log_target, draws = _gaussian(mean, cov, log_z=-7.5)
    result = estimate_evidence_quadrature(log_target, draws, max_dim=3)
    assert result.method == "quadrature" and result.ok, result.warnings
    assert abs(result.log_evidence + 7.5) <= result.log_evidence_err
    assert result.log_evidence_err < 1e-3
    assert result.diagnostics["edge_fraction"] <= 1e-4


def test_a_density_with_kinks_converges_as_its_error_says():
    """A triangle density (1 - |z|)_+ / 1 times e^2: the trapezoid rule is off at order h^2
    where the grid misses the kinks, and the quoted error is of that size."""

    def log_target(z):
        tri = jnp.maximum(1.0 - jnp.abs(z[0]), 0.0)
        return jnp.where(tri > 0, 2.0 + jnp.log(jnp.where(tri > 0, tri, 1.0)), -jnp.inf)

    draws = np.random.default_rng(1).triangular(-1, 0, 1, (3000, 1)) * 0.9
    result = estimate_evidence_quadrature(log_target, draws, max_points=301)
    error = abs(result.log_evidence - 2.0)
    assert 0 < error <= result.log_evidence_err < 5 * error + 1e-4


def test_the_box_widens_until_the_edge_holds_no_mass():
    # Samples four times narrower than the target: the first box cuts off most of the mass.
    log_target, _ = _gaussian([0.0, 0.0], np.eye(2), log_z=0.0)
    narrow = np.random.default_rng(2).normal(0.0, 0.25, (4000, 2))
    result = estimate_evidence_quadrature(log_target, narrow)
    assert result.diagnostics["widenings"] >= 1 and result.ok
    assert abs(result.log_evidence) <= result.log_evidence_err < 1e-3


def test_a_refit_posterior_agrees_with_a_grid_in_its_physical_parameters():
    """powerlaw on the NG15 free-spectrum densities: ln Z in the unconstrained space (prior
    Jacobian included), in z and through a bijection, against ln Z on a trapezoid grid over
    the uniform prior box, whose own error is its change from 601^2 to 1201^2 points."""
    from flowjax.bijections import Affine

    post = make_refit_posterior("powerlaw")
    physical = _quadrature_log_z("powerlaw", 1201)
    physical_err = abs(physical - _quadrature_log_z("powerlaw", 601))
    draws = np.asarray(post.to_unconstrained(post.sample_prior(jax.random.key(0), 4000)))
    # A bijection that centres and scales the posterior roughly (any bijection is exact).
    mean, sd = draws.mean(0), draws.std(0)
    for bijection in (None, Affine(jnp.asarray(mean), jnp.asarray(sd))):
        result = estimate_evidence_quadrature(post, draws, bijection=bijection)
        assert result.ok, result.warnings
        assert abs(result.log_evidence - physical) < 3 * (result.log_evidence_err + physical_err)


def test_a_bijection_changes_the_variables_but_not_the_integral():
    from flowjax.bijections import Affine

    log_target, draws = _gaussian([0.4, -0.3], [[0.01, 0.0], [0.0, 4.0]], log_z=3.0)
    bijection = Affine(jnp.asarray([0.4, -0.3]), jnp.asarray([0.1, 2.0]))
    result = estimate_evidence_quadrature(log_target, draws, bijection=bijection)
    assert result.ok and abs(result.log_evidence - 3.0) <= result.log_evidence_err < 1e-3


def test_bad_inputs_are_refused_with_a_message():
    log_target, draws = _gaussian(np.zeros(3), np.eye(3), 0.0)
    with pytest.raises(ParameterError, match="1 to 2 parameters; the samples have 3"):
        estimate_evidence_quadrature(log_target, draws)
    with pytest.raises(ParameterError, match="max_points=20: a grid in 2 dimensions"):
        estimate_evidence_quadrature(log_target, draws[:, :2], max_points=20)
    with pytest.raises(ParameterError, match="NaN at"):
        estimate_evidence_quadrature(lambda z: jnp.nan * z[0], draws[:, :1])
    with pytest.raises(ParameterError, match="not finite at any"):
        estimate_evidence_quadrature(lambda z: -jnp.inf + 0 * z[0], draws[:, :1])
    with pytest.raises(ParameterError, match="shape"):
        estimate_evidence_quadrature(log_target, draws[0])


def _ridge_target(draws, mass=0.05, sd=0.015):
    """A unit Gaussian plus a ridge of `mass` (x ~ N(5, 1), y ~ N(y0, sd^2)) that lies midway
    between two lines of the locating grid that `draws` set (the box the quadrature first
    searches: the draws' range widened by its span on each side, 65 points per axis)."""
    lo, hi = draws.min(0), draws.max(0)
    span = hi - lo
    lines = np.linspace(lo[1] - span[1], hi[1] + span[1], 65)
    y0 = 0.5 * (lines[33] + lines[34])
    log_ridge = math.log(mass) - 0.5 * math.log(2 * math.pi) - math.log(2 * math.pi * sd**2) / 2

    def log_target(z):
        main = -0.5 * jnp.sum(z**2) - math.log(2 * math.pi)
        ridge = log_ridge - 0.5 * (z[0] - 5.0) ** 2 - 0.5 * ((z[1] - y0) / sd) ** 2
        return jnp.logaddexp(main, ridge)

    return log_target, y0


def test_the_grid_grows_beyond_a_face_that_carries_a_ridge_the_locating_grid_missed():
    """The ridge is 11 of its widths from the nearest locating-grid line, so the first fine
    box holds only the Gaussian and cuts the ridge at its face; the box then grows until
    the face is empty, and ln Z = ln(1 + 0.05) is recovered within its quoted error."""
    draws = np.random.default_rng(3).normal(0.0, 1.0, (4000, 2))
    log_target, _ = _ridge_target(draws)
    result = estimate_evidence_quadrature(log_target, draws, max_points=2**20)
    assert result.diagnostics["growths"] >= 1 and result.ok, result.warnings
    truth = math.log(1.05)
    assert abs(result.log_evidence - truth) <= result.log_evidence_err < 0.01


def test_the_grid_as_a_density_is_normalised_and_an_unbiased_proposal():
    """GridDensity: its cell masses sum to one; draws from it fall inside the box with finite
    density; as an importance-sampling proposal for the ridge target (in z, and through a
    bijection) its weights stay bounded and ln Z agrees with the truth within 4 sigma."""
    from flowjax.bijections import Affine

    from ptaflow.quadrature import quadrature_grid

    draws = np.random.default_rng(3).normal(0.0, 1.0, (4000, 2))
    log_target, _ = _ridge_target(draws)
    truth = math.log(1.05)
    for bijection in (None, Affine(jnp.asarray([0.5, 0.0]), jnp.asarray([1.5, 1.2]))):
        _, grid = quadrature_grid(log_target, draws, bijection=bijection, max_points=2**20)
        assert abs(float(np.exp(grid.log_mass).sum()) - 1.0) < 1e-12
        z = grid.sample(jax.random.key(0), 20000)
        log_q = grid.log_prob(z)
        assert np.all(np.isfinite(log_q))
        log_w = np.asarray(jax.vmap(log_target)(jnp.asarray(z))) - log_q
        w = np.exp(log_w - log_w.max())
        log_z = float(np.log(np.mean(np.exp(log_w))))
        err = float(np.std(w) / np.mean(w) / math.sqrt(w.size))
        assert abs(log_z - truth) < 4 * err + 1e-4, (log_z, err)
        assert np.max(np.exp(log_w - truth)) < 10  # p / q_grid: near 1 everywhere
        # Outside the box the density is zero.
        far = np.array([[1e3, 1e3]])
        assert grid.log_prob(far)[0] == -np.inf


def test_a_grid_in_the_prior_cube_integrates_a_posterior_that_runs_into_a_prior_edge():
    """Uniform priors on [0, 1]^2 mapped to z by the probit (as `ptaflow.priors` maps a finite
    interval), a likelihood whose peak lies on the edge theta_1 = 1: in z the posterior has a
    tail towards z_1 -> inf; in the unit cube (`ProbitMap`) it ends on the face s_1 = 1, which
    is the integrand's own edge, not a cut (no edge mass, no warning). ln Z is analytic, and
    the grid's density as a proposal keeps p / q near 1 up to the edge."""
    from ptaflow.quadrature import UNIT_CUBE, ProbitMap, quadrature_grid

    sig1, mu2, sig2 = 0.05, 0.4, 0.03

    def log_target(z):
        theta = jax.scipy.special.ndtr(z)
        log_like = -0.5 * ((theta[0] - 1.0) / sig1) ** 2 - 0.5 * ((theta[1] - mu2) / sig2) ** 2
        return log_like + jnp.sum(jax.scipy.stats.norm.logpdf(z))  # prior 1, |dtheta/dz|

    def integral(mu, sig):  # of exp(-(t - mu)^2 / 2 sig^2) over [0, 1]
        cdf = jax.scipy.special.ndtr
        return sig * math.sqrt(2 * math.pi) * float(cdf((1 - mu) / sig) - cdf(-mu / sig))

    truth = math.log(integral(1.0, sig1) * integral(mu2, sig2))
    rng = np.random.default_rng(5)
    theta = np.stack([1 - np.abs(rng.normal(0, sig1, 4000)), rng.normal(mu2, sig2, 4000)], 1)
    draws = np.asarray(jax.scipy.special.ndtri(np.clip(theta, 1e-9, 1 - 1e-9)))
    result, grid = quadrature_grid(log_target, draws, bijection=ProbitMap(), bounds=UNIT_CUBE)
    assert result.ok and result.diagnostics["edge_fraction"] == 0.0, result.warnings
    assert result.diagnostics["box_upper"][0] == UNIT_CUBE[1]
    assert abs(result.log_evidence - truth) <= result.log_evidence_err < 1e-3
    z = grid.sample(jax.random.key(1), 20000)
    log_w = np.asarray(jax.vmap(log_target)(jnp.asarray(z))) - grid.log_prob(z) - truth
    assert np.all(np.isfinite(log_w))
    # The cells' mass is the trapezoid rule's: p / q within a few per cent in the core, and
    # within a factor 1.5 in the cells of the steepest slopes.
    w = np.exp(log_w)
    assert np.max(w) < 1.5
    # As an importance-sampling proposal: ln Z within 3 standard errors.
    assert abs(math.log(np.mean(w))) < 3 * float(np.std(w)) / math.sqrt(w.size)
