"""The noise-only model: 2-D grid densities and the exact noise-only evidence.

Ground truth:
- `grid_density_2d` on a correlated 2-D Gaussian (ln f offset by +1234.5): its integral over
  a box that holds it to 8 sd is exp(1234.5) up to a bounded 4e-14; over a box that truncates
  it, the rectangle probability as a 1-D quadrature of the conditional normal CDF (SciPy
  `quad`, its own error ~1e-14), and the midpoint rule's leading error from the
  Euler-Maclaurin formula, so both the error and its estimate are predicted; moments of the
  draws against the Gaussian's (plus the cells' uniform jitter), with Monte Carlo standard
  errors;
- a narrow peak over a low plateau (the shape of a red-noise posterior with a no-signal
  tail) against a dense 2000 x 2000 midpoint quadrature over the whole box, with that
  quadrature's own error;
- the likelihood: the noise-only value equals the full CURN and HD likelihoods with the
  common amplitude switched off (log10_A = -40), and each pulsar's term equals that pulsar's
  own one-pulsar likelihood;
- ln Z_0 and the red-noise posterior means against plain Monte Carlo over the uniform prior
  (delta-method and self-normalised importance-sampling standard errors); the common-process
  draws against their uniform prior (Kolmogorov-Smirnov);
- `log_q_z` against the grid densities, the analytic uniform prior and a dense
  `jax.jacobian` of the prior's map, and its normalisation in z by Monte Carlo from N(0, I).
"""

from __future__ import annotations

import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special, stats

from ptaflow.errors import ParameterError
from ptaflow.noise_only import grid_density_2d, noise_only_posterior
from ptaflow.posterior import make_posterior, make_refit_posterior
from ptaflow.priors import Uniform

# Correlated 2-D Gaussian of the grid tests.
MU = np.array([0.3, -1.2])
SD = np.array([0.7, 1.5])
RHO = 0.8
COV = np.array([[SD[0] ** 2, RHO * SD[0] * SD[1]], [RHO * SD[0] * SD[1], SD[1] ** 2]])
MVN = stats.multivariate_normal(MU, COV)
OFFSET = 1234.5  # ln f = OFFSET + ln N(x; MU, COV): large logs, as for a likelihood
#: Absolute slack for floating-point rounding of ln values near OFFSET (ulp(1234.5) = 2.3e-13,
#: times the few operations and the logsumexp over 40 000 cells).
ROUND = 1e-10
#: Per-pulsar prior draws of the Monte Carlo ground truth.
N_MC = 200_000


def _log_f_gauss(xy):
    return OFFSET + MVN.logpdf(xy)


def _rectangle_probability(box) -> tuple[float, float]:
    """P(X in box) of the Gaussian: int phi(x) [Phi((b2 - m(x))/s) - Phi((a2 - m(x))/s)] dx."""
    (a1, b1), (a2, b2) = box
    s = SD[1] * np.sqrt(1.0 - RHO**2)

    def h(x):
        m = MU[1] + RHO * SD[1] / SD[0] * (x - MU[0])
        return stats.norm.pdf(x, MU[0], SD[0]) * (
            stats.norm.cdf((b2 - m) / s) - stats.norm.cdf((a2 - m) / s)
        )

    return integrate.quad(h, a1, b1, epsabs=0.0, epsrel=1e-13, limit=200)


def _midpoint_leading_error(box, hx: float, hy: float) -> float:
    """Leading relative error (I - M)/I of the 2-D midpoint rule for the normalised Gaussian.

    Euler-Maclaurin per axis: int_a^b g - h sum g(centres) = h^2/24 [g'(b) - g'(a)] + O(h^4),
    so for the product rule I - M = hx^2/24 int [df/dx]_x=a1^b1 dy + hy^2/24 int [df/dy] dx.
    """
    (a1, b1), (a2, b2) = box
    prec = np.linalg.inv(COV)

    def grad(x, y, axis):
        v = np.array([x, y]) - MU
        return -(prec @ v)[axis] * MVN.pdf([x, y])

    def quad(fn, lo, hi):
        return integrate.quad(fn, lo, hi, epsabs=0.0, epsrel=1e-12)[0]

    dx = quad(lambda y: grad(b1, y, 0) - grad(a1, y, 0), a2, b2)
    dy = quad(lambda x: grad(x, b2, 1) - grad(x, a2, 1), a1, b1)
    return (hx**2 * dx + hy**2 * dy) / 24.0 / _rectangle_probability(box)[0]


@pytest.fixture(scope="module")
def gauss_grid():
    """The Gaussian in a box reaching 8 sd below and 20-25 sd past it on one side per axis."""
    box = ((MU[0] - 8 * SD[0], MU[0] + 20 * SD[0]), (MU[1] - 25 * SD[1], MU[1] + 8 * SD[1]))
    return box, grid_density_2d(_log_f_gauss, box, n_grid=200)


def _centres(edges):
    return 0.5 * (edges[1:] + edges[:-1])


# --- grid_density_2d --------------------------------------------------------------------------


def test_grid_integral_of_untruncated_gaussian(gauss_grid):
    box, g = gauss_grid
    # The fine grid covers the coarse cells where ln f > max - 30, i.e. the Mahalanobis
    # ellipse of radius sqrt(60), whose bounding box is mu +- sqrt(60) sd ...
    r = np.sqrt(60.0)
    assert g.edges_x[0] <= MU[0] - r * SD[0] and g.edges_x[-1] >= MU[0] + r * SD[0]
    assert g.edges_y[0] <= MU[1] - r * SD[1] and g.edges_y[-1] >= MU[1] + r * SD[1]
    # ... and not the far sides of the box: nothing beyond 9 sd (the box reaches 20-25 sd).
    assert g.edges_x[-1] < MU[0] + 9 * SD[0] and g.edges_y[0] > MU[1] - 9 * SD[1]
    assert g.edges_x[0] >= box[0][0] and g.edges_y[-1] <= box[1][1]
    # Mass outside the grid <= P(|X - mu_x| > r sd_x) + P(|Y - mu_y| > r sd_y) = 4 Phi(-r).
    outside = 4 * stats.norm.cdf(-r)
    assert outside < 1e-13
    exact = OFFSET  # ln(1 - outside) = -outside, below ROUND
    err = abs(g.log_integral - exact)
    assert err <= g.log_integral_err + ROUND, (g.log_integral, exact, g.log_integral_err)
    # f and its derivatives vanish at the edges of the grid, so the midpoint rule's error is
    # spectrally small, ~exp(-2 pi^2 (sd/h)^2) with sd/h ~ 6 on the half grid: both the
    # error and its estimate are rounding.
    assert g.log_integral_err < ROUND, g.log_integral_err


def test_grid_integral_and_error_estimate_of_truncated_gaussian():
    # A box cutting the Gaussian at 1-2 sd: the midpoint rule's error is the O(h^2) boundary
    # term, predicted by Euler-Maclaurin.
    box = ((MU[0] - 1.0 * SD[0], MU[0] + 1.5 * SD[0]), (MU[1] - 2.0 * SD[1], MU[1] + 0.5 * SD[1]))
    prob, prob_err = _rectangle_probability(box)
    assert prob_err < 1e-13
    g = grid_density_2d(_log_f_gauss, box, n_grid=200)
    assert g.edges_x[0] == box[0][0] and g.edges_x[-1] == box[0][1]  # f > exp(-30) max inside
    error = g.log_integral - (OFFSET + np.log(prob))
    hx, hy = np.diff(g.edges_x)[0], np.diff(g.edges_y)[0]
    predicted = -_midpoint_leading_error(box, hx, hy)  # ln M - ln I = -(I - M)/I + O(err^2)
    # The next Euler-Maclaurin term is O((h/sd)^2) ~ 2e-4 of the leading one; 1% is 50x that.
    assert abs(error - predicted) < 0.01 * abs(predicted), (error, predicted)
    # The estimate |M_n - M_(n/2)| = (4 - 1) |I - M_n| to the same order: an upper bound with a
    # factor 3 to spare. Its size: (h/sd)^2/24 = 7e-6 per axis, times O(1) boundary factors,
    # times 3, ~2e-5.
    assert abs(error) <= g.log_integral_err + ROUND
    assert abs(g.log_integral_err / abs(error) - 3.0) < 0.03, (g.log_integral_err, error)
    assert g.log_integral_err < 1e-4


def test_grid_density_is_normalised_and_zero_outside(gauss_grid):
    _, g = gauss_grid
    xc, yc = _centres(g.edges_x), _centres(g.edges_y)
    gx, gy = np.meshgrid(xc, yc, indexing="ij")
    centres = np.stack([gx.ravel(), gy.ravel()], axis=1)
    log_p = g.log_prob(centres)
    area = np.diff(g.edges_x)[0] * np.diff(g.edges_y)[0]
    assert abs(np.exp(log_p).sum() * area - 1.0) < 1e-10  # rounding of 40 000 terms
    # At the centres the density is f / int f = the normal density (log_integral = 1234.5
    # to rounding, see above).
    np.testing.assert_allclose(log_p, MVN.logpdf(centres), rtol=0, atol=ROUND)
    # Cells are half-open [lo, hi) except the last, which includes the upper edge.
    x0, x1, y0, y1 = g.edges_x[0], g.edges_x[-1], g.edges_y[0], g.edges_y[-1]
    eps = 1e-9
    corners = np.array([[x0, y0], [x1, y1], [x0, y1], [x1, y0]])
    assert np.all(np.isfinite(g.log_prob(corners)))
    outside = np.array(
        [
            [x0 - eps, MU[1]],
            [x1 + eps, MU[1]],
            [MU[0], y0 - eps],
            [MU[0], y1 + eps],
            [x1 + 10.0, y1 + 10.0],
            [np.nan, MU[1]],
        ]
    )
    assert np.all(g.log_prob(outside) == -np.inf)


def test_grid_draws_have_the_gaussian_moments(gauss_grid):
    _, g = gauss_grid
    m = 200_000
    draws = g.sample(np.random.default_rng(20240611), m)
    assert draws.shape == (m, 2)
    assert np.all(np.isfinite(g.log_prob(draws)))
    # A cell is drawn with probability f(centre) x area / sum, then the point is uniform in it:
    # mean = mu and covariance = COV + diag(h^2/12) up to the (spectrally small) midpoint
    # error. h^2/12 is 5e-4 of each variance, 0.2 of its standard error here.
    h = np.array([np.diff(g.edges_x)[0], np.diff(g.edges_y)[0]])
    cov_expected = COV + np.diag(h**2 / 12.0)
    mean = draws.mean(axis=0)
    se_mean = draws.std(axis=0) / np.sqrt(m)
    # 4 standard errors for each of 2 means and 3 covariances: ~3e-4 false-alarm chance.
    assert np.all(np.abs(mean - MU) < 4 * se_mean), (mean, MU, se_mean)
    d = draws - mean
    for i, j in ((0, 0), (1, 1), (0, 1)):
        prod = d[:, i] * d[:, j]
        se = prod.std() / np.sqrt(m)
        assert abs(prod.mean() - cov_expected[i, j]) < 4 * se, (i, j, prod.mean(), se)


def test_grid_keeps_a_low_plateau():
    # A narrow correlated peak over a plateau 8 nats lower that covers the low-x part of the
    # box and falls off steeply (e-folding 0.05) past x = -15 + 0.3 y: the shape of a
    # red-noise posterior with a no-signal tail. The plateau holds ~8% of the integral, so
    # the fine grid must keep it while trimming the box where both parts are below exp(-30).
    box = ((-20.0, -11.0), (0.0, 7.0))
    peak = stats.multivariate_normal([-13.5, 4.0], [[0.15**2, -0.9 * 0.06], [-0.9 * 0.06, 0.4**2]])

    def log_f(xy):
        xy = np.asarray(xy)
        plateau = -8.0 + special.log_expit(-(xy[:, 0] + 15.0 - 0.3 * xy[:, 1]) / 0.05)
        return OFFSET + np.logaddexp(peak.logpdf(xy) - peak.logpdf(peak.mean), plateau)

    g = grid_density_2d(log_f, box, n_grid=200)

    def brute(n):
        xc = _centres(np.linspace(*box[0], n + 1))
        yc = _centres(np.linspace(*box[1], n + 1))
        gx, gy = np.meshgrid(xc, yc, indexing="ij")
        values = log_f(np.stack([gx.ravel(), gy.ravel()], axis=1))
        cell = (box[0][1] - box[0][0]) * (box[1][1] - box[1][0]) / n**2
        return special.logsumexp(values) + np.log(cell)

    dense = brute(2000)
    dense_err = abs(dense - brute(1000))  # the dense rule's own error bound, as in the module
    # The plateau's integral is e^-8 times its area, int_0^7 (5 + 0.3 y) dy = 42.35.
    plateau_share = np.exp(-8.0 + np.log(42.35) - (dense - OFFSET))
    assert plateau_share > 0.05  # the plateau matters at the precision asserted below
    assert g.edges_x[0] == box[0][0]  # the plateau's low edge is kept
    assert g.edges_x[-1] < box[0][1]  # the box is trimmed where f < exp(-30) max
    diff = abs(g.log_integral - dense)
    assert diff <= g.log_integral_err + dense_err + ROUND, (diff, g.log_integral_err, dense_err)
    assert g.log_integral_err < 1e-4  # both parts resolved by >= 3 cells per e-folding


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bounds", "n_grid", "needle"),
    [
        (((0.0, float("nan")), (0.0, 1.0)), 200, "bounds=((0.0, nan), (0.0, 1.0))"),
        (((0.0, 1.0), (-float("inf"), 1.0)), 200, "bounds=((0.0, 1.0), (-inf, 1.0))"),
        (((1.0, 1.0), (0.0, 1.0)), 200, "bounds=((1.0, 1.0), (0.0, 1.0))"),
        (((0.0, 1.0), (2.0, 1.0)), 200, "bounds=((0.0, 1.0), (2.0, 1.0))"),
        (((0.0, 1.0), (0.0, 1.0)), 201, "n_grid=201"),
        (((0.0, 1.0), (0.0, 1.0)), 2, "n_grid=2"),
    ],
)
def test_grid_rejects_bad_input(bounds, n_grid, needle):
    with pytest.raises(ParameterError, match=re.escape(needle)):
        grid_density_2d(lambda xy: np.zeros(len(xy)), bounds, n_grid=n_grid)


def test_grid_rejects_non_finite_log_f():
    with pytest.raises(ParameterError, match="not finite at 64 points"):
        grid_density_2d(lambda xy: np.where(xy[:, 0] < 1 / 64, -np.inf, 0.0), ((0, 1), (0, 1)))


def test_noise_only_needs_full_mode():
    refit = make_refit_posterior("powerlaw")
    with pytest.raises(ParameterError, match="full-mode posterior"):
        noise_only_posterior(refit)
    with pytest.raises(ParameterError, match="full-mode posterior"):
        noise_only_posterior(refit.likelihood)  # a likelihood, not a posterior


# --- the noise-only likelihood ------------------------------------------------------------------


@pytest.fixture(scope="module")
def posts3():
    return {c: make_posterior(model="powerlaw", pulsars=3, correlation=c) for c in ("curn", "hd")}


@pytest.mark.parametrize("correlation", ["curn", "hd"])
def test_noise_only_is_the_likelihood_without_common_process(posts3, correlation):
    post = posts3[correlation]
    like = post.likelihood
    theta = np.array(post.sample_prior(jax.random.key(7), 4))
    # A^2 = 1e-80: the common process changes no Phi entry by more than 1e-30 of itself.
    theta[:, post.param_names.index("log10_A")] = -40.0
    full, _ = post.evaluate(jnp.asarray(theta))
    noise = np.array([float(like.noise_only(jnp.asarray(t[:-2]))) for t in theta])
    # ln L ~ 2.5e5 summed over ~100 terms by different paths (CURN; HD's Schur complements):
    # rounding ~1e-15 relative. rtol 1e-12 is 2.5e-7 absolute, far below any physical effect.
    np.testing.assert_allclose(noise, np.asarray(full), rtol=1e-12, atol=0)
    terms = np.asarray(like.noise_only_terms(jnp.asarray(theta[:, :-2].reshape(4, 3, 2))))
    # The per-pulsar terms in theta's order add up to it (rounding of a 4-term sum).
    np.testing.assert_allclose(float(like.const) + terms.sum(axis=1), noise, rtol=1e-14, atol=0)
    if correlation == "hd":
        # No common process, no correlation: the same statistics, so the same numbers.
        curn = posts3["curn"].likelihood
        np.testing.assert_array_equal(noise, [float(curn.noise_only(t[:-2])) for t in theta])


def test_noise_only_terms_are_one_pulsar_likelihoods(posts3):
    like = posts3["curn"].likelihood
    theta = np.array(posts3["curn"].sample_prior(jax.random.key(8), 4))
    terms = np.asarray(like.noise_only_terms(jnp.asarray(theta[:, :-2].reshape(4, 3, 2))))
    for a, name in enumerate(like.psr_names):
        one = make_posterior(model="powerlaw", pulsars=[name], correlation="curn")
        t_one = theta[:, [2 * a, 2 * a + 1, -2, -1]].copy()
        t_one[:, 2] = -40.0
        full, _ = one.evaluate(jnp.asarray(t_one))
        # One pulsar's ln L ~ 1e5, its constant its own: rounding only, as above.
        np.testing.assert_allclose(
            terms[:, a] + float(one.likelihood.const), np.asarray(full), rtol=1e-12, atol=0
        )


# --- ln Z_0 and the noise-only posterior against Monte Carlo over the prior --------------------


@pytest.fixture(scope="module")
def post2():
    return make_posterior(model="powerlaw", pulsars=2, correlation="curn", n_rn=5, n_gw=3)


@pytest.fixture(scope="module")
def noise2(post2):
    return noise_only_posterior(post2)


@pytest.fixture(scope="module")
def prior_mc(post2):
    """Per pulsar a: N_MC uniform prior draws of (log10_A, gamma) and the terms t_a there."""
    like = post2.likelihood
    bounds = post2.prior.bounds()
    terms_fn = eqx.filter_jit(lambda rn: like.noise_only_terms(rn))
    rng = np.random.default_rng(5)
    out = []
    for a in range(like.n_psr):
        (a_lo, a_hi), (g_lo, g_hi) = bounds[2 * a], bounds[2 * a + 1]
        x = np.stack([rng.uniform(a_lo, a_hi, N_MC), rng.uniform(g_lo, g_hi, N_MC)], axis=1)
        rn = np.tile(np.array([-15.0, 3.0]), (N_MC, like.n_psr, 1))  # others: any fixed value
        rn[:, a] = x
        chunks = [jnp.asarray(rn[s : s + 50_000]) for s in range(0, N_MC, 50_000)]
        t = np.concatenate([np.asarray(terms_fn(c))[:, a] for c in chunks])
        out.append((x, t))
    return out


def test_log_evidence_matches_prior_monte_carlo(post2, noise2, prior_mc):
    # Z_a = int L_a pi_a = E_prior[exp(t_a)] (uniform priors); ln Z_0 = const + sum ln Z_a.
    log_z, var = float(post2.likelihood.const), 0.0
    for _, t in prior_mc:
        w = np.exp(t - t.max())
        log_z += t.max() + np.log(w.mean())
        var += w.var() / (w.mean() ** 2 * N_MC)  # delta method: se(ln mean) = se(mean)/mean
    se = np.sqrt(var)
    diff = noise2.log_evidence - log_z
    tol = 4 * se + noise2.log_evidence_err  # 4 se: ~6e-5 false-alarm chance
    assert abs(diff) < tol, (
        f"grid ln Z_0 = {noise2.log_evidence:.6f} (+-{noise2.log_evidence_err:.1e}), "
        f"Monte Carlo {log_z:.6f} +- {se:.4f}: diff {diff:.4f}, tol {tol:.4f}"
    )
    assert se < 0.05  # the comparison resolves ln Z_0 to better than 0.2 nats


def test_red_noise_draws_match_importance_weighted_means(noise2, prior_mc):
    m = 200_000
    theta = noise2.sample_theta(jax.random.key(3), m)
    assert np.all(np.isfinite(noise2.log_prob_rn(theta)))
    for a, (x, t) in enumerate(prior_mc):
        w = np.exp(t - t.max())
        w /= w.sum()
        mean_is = w @ x
        se_is = np.sqrt(w**2 @ (x - mean_is) ** 2)  # self-normalised IS, delta method
        draws = theta[:, 2 * a : 2 * a + 2]
        se_draws = draws.std(axis=0) / np.sqrt(m)
        se = np.sqrt(se_is**2 + se_draws**2)
        diff = draws.mean(axis=0) - mean_is
        # 4 se for each of 4 means (~3e-4 false alarm); the grid's midpoint-rule bias of a
        # mean is O(h^2) relative, ~1e-5 (cf. the truncated-Gaussian test), far below se.
        assert np.all(np.abs(diff) < 4 * se), (
            f"pulsar {a}: draws {draws.mean(axis=0)}, IS {mean_is} +- {se_is}, diff {diff}, se {se}"
        )


def test_common_process_draws_follow_the_prior(post2, noise2):
    theta = noise2.sample_theta(jax.random.key(4), 20_000)
    for i in (-2, -1):
        lo, hi = post2.prior.bounds()[i]
        p = stats.kstest(theta[:, i], stats.uniform(loc=lo, scale=hi - lo).cdf).pvalue
        assert p > 1e-3, (post2.param_names[i], p)  # 1e-3 false-alarm chance per column


def test_noise_only_evidence_is_the_same_for_curn_and_hd(posts3):
    z = {c: noise_only_posterior(p, n_grid=100) for c, p in posts3.items()}
    assert z["curn"].log_evidence == z["hd"].log_evidence


# --- log_q_z -----------------------------------------------------------------------------------


def test_log_q_z_is_the_noise_only_density_in_z(post2, noise2):
    m = 64
    theta0 = noise2.sample_theta(jax.random.key(5), m)
    z = post2.to_unconstrained(jnp.asarray(theta0))
    theta, log_det = post2.prior.from_unconstrained(z)
    log_prior_z = post2.log_prior(theta) + log_det
    theta = np.asarray(theta)
    got = noise2.log_q_z(theta, np.asarray(log_prior_z))
    # Independent: the grids' densities of the red noise, the analytic uniform density of the
    # common process, and ln |det dtheta/dz| from a dense Jacobian of the map.
    widths = np.array([hi - lo for lo, hi in post2.prior.bounds()])
    jac = jax.vmap(jax.jacobian(post2.to_theta))(z)
    log_det_dense = np.linalg.slogdet(np.asarray(jac))[1]
    expected = (
        sum(g.log_prob(theta[:, 2 * a : 2 * a + 2]) for a, g in enumerate(noise2.grids))
        - np.log(widths[-2:]).sum()
        + log_det_dense
    )
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)  # values O(10): rounding

    # Outside the grid (pulsar 1's grid starts above log10_A = -17) or the prior: -inf, not nan.
    assert noise2.grids[1].edges_x[0] > -19.5
    bad = np.repeat(theta[:1], 2, axis=0)
    bad[0, 2] = -19.5
    bad[1, 3] = 8.0  # gamma outside U(0, 7): ln pi = -inf
    lpz = np.asarray(post2.log_prior(jnp.asarray(bad))) + np.asarray(log_det[:1])
    assert np.all(noise2.log_q_z(bad, lpz) == -np.inf)


def test_log_q_z_integrates_to_one(post2, noise2):
    # z ~ N(0, I): for uniform priors and the probit map, ln pi(theta) + ln |det dtheta/dz| is
    # the standard normal log-density of z, so E[exp(log_q_z - ln N(z; 0, I))] = int q_0 dz = 1.
    n = 1_000_000
    z = np.random.default_rng(6).standard_normal((n, post2.n_dim))
    theta, log_det = post2.prior.from_unconstrained(jnp.asarray(z))
    log_prior_z = np.asarray(post2.log_prior(theta) + log_det)
    log_normal = stats.norm.logpdf(z).sum(axis=1)
    np.testing.assert_allclose(log_prior_z, log_normal, rtol=0, atol=1e-10)  # rounding
    ratio = np.exp(noise2.log_q_z(np.asarray(theta), log_normal) - log_normal)
    mean, se = ratio.mean(), ratio.std() / np.sqrt(n)
    assert abs(mean - 1.0) < 4 * se, (mean, se)  # 4 se: ~6e-5 false-alarm chance
    # A wrong width or Jacobian factor (a factor 7 at least) would be off by >> 4 se.
    assert se < 0.03


def test_noise_only_model_is_shared_by_sgwb_models_of_the_same_data(post2, noise2):
    other = make_posterior(model="smbhb", pulsars=2, correlation="hd", n_rn=5, n_gw=3)
    fresh = noise_only_posterior(other)
    shared = noise2.for_posterior(other)
    assert shared.posterior is other
    assert shared.log_evidence == fresh.log_evidence
    z = other.to_unconstrained(other.sample_prior(jax.random.key(11), 16))
    theta = np.asarray(other.to_theta(z))
    log_prior_z = np.asarray(jax.vmap(lambda x: other.log_prob_parts(x)[1])(z))
    # the same grids evaluated at the same points: identical numbers
    np.testing.assert_array_equal(
        shared.log_q_z(theta, log_prior_z), fresh.log_q_z(theta, log_prior_z)
    )
    draws = shared.sample_theta(jax.random.key(12), 8)
    np.testing.assert_array_equal(draws, fresh.sample_theta(jax.random.key(12), 8))


def test_noise_only_model_refuses_other_data(noise2):
    more = make_posterior(model="powerlaw", pulsars=3, correlation="curn", n_rn=5, n_gw=3)
    with pytest.raises(ParameterError, match="other pulsars or data"):
        noise2.for_posterior(more)
    narrower = make_posterior(
        model="powerlaw",
        pulsars=2,
        correlation="curn",
        n_rn=5,
        n_gw=3,
        rn_priors=(Uniform(-19.0, -11.0), Uniform(0.0, 7.0)),
    )
    with pytest.raises(ParameterError, match=r"red-noise prior .* differs"):
        noise2.for_posterior(narrower)
    with pytest.raises(ParameterError, match="full-mode posterior"):
        noise2.for_posterior(make_refit_posterior("powerlaw"))
