"""Pareto-k, effective sample sizes, R-hat and Hellinger distances against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpyro.diagnostics import split_gelman_rubin
from scipy import special, stats

from ptaflow.diagnostics import (
    hellinger_1d,
    hellinger_2d,
    hellinger_noise_floor,
    importance_ess,
    max_hellinger,
    psis,
    psis_khat,
    psis_khat_threshold,
    rhat_and_ess,
)
from ptaflow.errors import ParameterError

N = 10_000
M_TAIL = math.ceil(min(0.2 * N, 3 * math.sqrt(N)))  # 300 tail weights for n = 10^4
N_REPEAT = 40


def _shrunk(k: float) -> float:
    """khat's expectation after the weakly informative prior (10 pseudo-draws at 0.5)."""
    return (M_TAIL * k + 5.0) / (M_TAIL + 10.0)


def _khat_tolerance(k: float) -> float:
    """3 standard errors of a mean of N_REPEAT khats; sd(khat) ~ (1 + k)/sqrt(M) (GPD MLE)."""
    return 3.0 * (1.0 + k) / math.sqrt(M_TAIL * N_REPEAT)


# ---------------------------------------------------------------------------------------
# PSIS
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [0.2, 0.5, 0.8])
def test_khat_recovers_generalized_pareto_shape(k):
    # The exceedances of GPD(k) draws over any threshold are GPD(k) again, so khat must
    # estimate k itself.
    rng = np.random.default_rng(11)
    khats = [
        psis_khat(np.log(stats.genpareto.rvs(k, size=N, random_state=rng))) for _ in range(N_REPEAT)
    ]
    assert np.mean(khats) == pytest.approx(_shrunk(k), abs=_khat_tolerance(k))


def _narrow_proposal_bracket(s: float) -> tuple[float, float]:
    """Where khat must lie for target N(0,1) and proposal N(0, s^2), s < 1.

    w(x) = s exp(x^2 (1/s^2 - 1)/2) with x ~ N(0, s^2): P(w > t) = 2 Phi_bar(u),
    u = sqrt(2 ln(t/s)/(1/s^2 - 1))/s. The local tail index -dlnP/dln t = h(u)/((1 - s^2) u),
    h = phi/Phi_bar, tends to 1/(1 - s^2): the asymptotic shape is k = 1 - s^2. At the PSIS
    threshold (the top M/n of the weights) the local shape is (1 - s^2) u/h(u) < 1 - s^2;
    the fitted tail spans both, so khat lies between the two.
    """
    u = stats.norm.isf(M_TAIL / N / 2)
    hazard = math.exp(stats.norm.logpdf(u) - stats.norm.logsf(u))
    return (1 - s**2) * u / hazard, 1 - s**2


@pytest.mark.parametrize("s", [0.5, 0.7])
def test_khat_for_gaussian_proposal_narrower_than_target(s):
    rng = np.random.default_rng(12)
    khats = []
    for _ in range(N_REPEAT):
        x = rng.normal(0.0, s, N)
        khats.append(psis_khat(stats.norm.logpdf(x) - stats.norm.logpdf(x, 0.0, s)))
    low, high = _narrow_proposal_bracket(s)
    mean = np.mean(khats)
    assert _shrunk(low) - _khat_tolerance(low) < mean < _shrunk(high) + _khat_tolerance(high)
    if s == 0.5:  # k = 0.75: infinite-variance weights must read as such
        assert mean > 0.5


def test_khat_for_bounded_weights():
    # q = p: every weight equal, no tail at all.
    log_w = np.zeros(N)
    smoothed, khat = psis(log_w)
    assert khat == -math.inf
    np.testing.assert_array_equal(smoothed, log_w)
    # Proposal N(0, 1.5^2) wider than the target N(0, 1): weights bounded by 1.5 and
    # P(w > 1.5 - e) ~ sqrt(e) near the bound, a GPD shape of -2; khat must be negative.
    rng = np.random.default_rng(13)
    for _ in range(10):
        x = rng.normal(0.0, 1.5, N)
        assert psis_khat(stats.norm.logpdf(x) - stats.norm.logpdf(x, 0.0, 1.5)) < 0.0


def test_psis_smoothing_replaces_only_the_tail():
    rng = np.random.default_rng(14)
    log_w = np.log(stats.genpareto.rvs(0.8, size=N, random_state=rng)) + 123.0
    smoothed, khat = psis(log_w)
    assert khat > 0.5
    changed = smoothed != log_w
    assert changed.sum() <= M_TAIL
    order = np.argsort(log_w)
    tail = order[-M_TAIL:]
    assert not changed[order[:-M_TAIL]].any()  # the body is untouched
    assert np.all(np.diff(smoothed[tail]) >= 0)  # GPD quantiles keep the ranking
    assert smoothed.max() <= log_w.max()  # truncated at the largest raw weight
    assert smoothed[tail].min() >= log_w[order[-M_TAIL - 1]]  # above the threshold


@pytest.mark.filterwarnings("ignore:Estimated shape parameter:UserWarning")  # ArviZ: khat > 0.7
def test_psis_agrees_with_arviz():
    # ArviZ's psislw implements the same definition: tail length ceil(min(n/5, 3 sqrt(n))),
    # Zhang & Stephens fit with the same prior, shrinkage towards 0.5, truncation at the
    # largest weight; it normalises the smoothed weights, psis keeps their scale. Both are
    # float64 in a different order of operations and agree to ~1e-13 on these sets, so
    # 1e-10 leaves room for rounding and still catches any change of definition.
    az = pytest.importorskip("arviz")
    rng = np.random.default_rng(16)
    sets = {
        "lognormal": rng.normal(0.0, 2.0, N),
        "student-t, 3 dof": np.log(np.abs(rng.standard_t(3.0, N))),
        "n = 2 10^4, 3 sqrt(n) not an integer": rng.normal(0.0, 2.0, 2 * N),
        "zero weights": np.append(rng.normal(0.0, 2.0, N), [-np.inf] * 10),
    }
    for k in (0.3, 0.6, 0.9):
        sets[f"GPD({k})"] = np.log(stats.genpareto.rvs(k, size=N, random_state=rng))
    for name, log_w in sets.items():
        smoothed, khat = psis(log_w)
        smoothed_az, khat_az = az.psislw(log_w.copy(), reff=1.0)
        assert khat == pytest.approx(float(khat_az), abs=1e-10), name
        np.testing.assert_allclose(
            smoothed - special.logsumexp(smoothed), smoothed_az, rtol=0, atol=1e-10, err_msg=name
        )
    # Where they differ: tied largest weights (no tail at all) are bounded weights here, khat
    # = -inf; ArviZ gives inf.
    ties = np.append(np.zeros(200), rng.normal(-5.0, 1.0, 800))
    assert psis_khat(ties) == -math.inf and float(az.psislw(ties.copy(), reff=1.0)[1]) == math.inf


def test_psis_edge_cases_and_errors():
    assert psis_khat(np.zeros(20)) == math.inf  # M = 4 < 5: cannot judge
    assert psis_khat_threshold(100) == pytest.approx(0.5)
    assert psis_khat_threshold(1000) == pytest.approx(2 / 3)
    assert psis_khat_threshold(10**6) == 0.7
    with pytest.raises(ParameterError, match="NaN"):
        psis_khat(np.array([0.0, np.nan] * 50))
    with pytest.raises(ParameterError, match="1-D"):
        psis(np.zeros((10, 10)))


def test_importance_ess_is_kish():
    rng = np.random.default_rng(15)
    log_w = rng.normal(size=1000) * 2.0
    w = np.exp(log_w)
    expected = w.sum() ** 2 / (w**2).sum()
    assert importance_ess(log_w + 800.0) == pytest.approx(expected, rel=1e-12)
    assert importance_ess(np.zeros(57)) == pytest.approx(57.0, rel=1e-12)
    assert importance_ess(np.array([3.0] + [-np.inf] * 9)) == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------
# MCMC convergence
# ---------------------------------------------------------------------------------------


def test_rhat_and_ess_of_ar1_chains():
    """AR(1) chains x_t = rho x_(t-1) + e_t: ESS = N (1 - rho) / (1 + rho) analytically."""
    rng = np.random.default_rng(11)
    n_chains, n_draws, rho = 4, 5000, np.array([0.0, 0.5, 0.9])
    x = np.empty((n_chains, n_draws, rho.size))
    x[:, 0] = rng.normal(size=(n_chains, rho.size)) / np.sqrt(1 - rho**2)  # stationary start
    for t in range(1, n_draws):
        x[:, t] = rho * x[:, t - 1] + rng.normal(size=(n_chains, rho.size))
    rhat, ess = rhat_and_ess(x)
    expected = n_chains * n_draws * (1 - rho) / (1 + rho)
    # relative sd of the ESS estimate ~ sqrt(2 tau / N) <~ 0.1 for rho = 0.9, N = 20000
    np.testing.assert_allclose(ess, expected, rtol=0.25)
    assert np.all(rhat < 1.01), rhat
    # ranks: the bulk ESS is the same for a monotone map of each coordinate
    np.testing.assert_allclose(rhat_and_ess(np.exp(x))[1], ess, rtol=1e-12)
    # one chain offset by 1 sd of its coordinate: R-hat flags it
    x[0] += 1.0 / np.sqrt(1 - rho**2)
    assert np.all(rhat_and_ess(x)[0] > 1.05)
    with pytest.raises(
        ParameterError, match=r"shape \(n_chains, n_draws >= 4, n_dim\); got \(4, 3\)"
    ):
        rhat_and_ess(np.zeros((4, 3)))
    with pytest.raises(ParameterError, match="must be finite"):
        rhat_and_ess(np.full((2, 10, 1), np.nan))


def test_rhat_flags_a_chain_of_the_wrong_spread():
    """Equal centres, one chain 3x wider: the plain split R-hat misses it, the folded (tail)
    R-hat of rhat_and_ess does not."""
    rng = np.random.default_rng(12)
    x = rng.normal(size=(4, 2000, 1))
    x[0] *= 3.0
    assert split_gelman_rubin(x)[0] < 1.01
    assert rhat_and_ess(x)[0][0] > 1.05


def _vehtari_2021(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rank-normalised split R-hat (larger of bulk and folded) and bulk ESS of Vehtari et al.
    2021 written out: Blom scores of the average ranks over all draws, chains cut in halves
    (odd middle draw dropped), R-hat = sqrt(var+ / W), and tau = -1 + 2 sum_t P_t with the
    pair sums P_t = rho_2t + rho_2t+1 of Geyer's initial positive, monotone sequence; the
    autocovariances are direct sums over lags."""

    def z(a):
        flat = a.reshape(-1, a.shape[2])
        r = np.column_stack([stats.rankdata(col) for col in flat.T])
        return stats.norm.ppf((r - 0.375) / (flat.shape[0] + 0.25)).reshape(a.shape)

    def split(a):
        half = a.shape[1] // 2
        return np.concatenate([a[:, :half], a[:, a.shape[1] - half :]])

    def var_plus_and_w(a):  # a: (m, n) split chains of one coordinate
        n = a.shape[1]
        w = a.var(axis=1, ddof=1).mean()
        return (n - 1) / n * w + a.mean(axis=1).var(ddof=1), w

    def rhat(a):
        a = split(a)
        return np.array([np.sqrt(np.divide(*var_plus_and_w(a[..., d]))) for d in range(a.shape[2])])

    def ess(a):
        a = split(a)
        m, n = a.shape[:2]
        out = []
        for d in range(a.shape[2]):
            c = a[..., d] - a[..., d].mean(axis=1, keepdims=True)
            acov = np.mean([np.correlate(ci, ci, "full")[n - 1 :] / n for ci in c], axis=0)
            var_plus, w = var_plus_and_w(a[..., d])
            rho = 1.0 - (w - acov) / var_plus
            rho[0] = 1.0
            tau, bound = -1.0, np.inf
            for t in range(0, n - 1, 2):
                pair = rho[t] + rho[t + 1]
                if t > 0 and pair <= 0:
                    break
                bound = min(bound, pair)
                tau += 2.0 * bound
            out.append(m * n / tau)
        return np.array(out)

    folded = np.abs(x - np.median(x, axis=(0, 1)))
    return np.maximum(rhat(z(x)), rhat(z(folded))), ess(z(x))


@pytest.mark.parametrize(
    "n_chains, n_draws, rho, decimals",
    [
        (4, 400, (0.0, 0.5, 0.9), None),
        (3, 251, (0.3, 0.8), None),  # odd draw count: the middle draw is left out of the halves
        (2, 64, (0.7,), 1),  # rounded: tied draws get their average rank
        (5, 120, (-0.4, 0.95), None),
    ],
)
def test_rhat_and_ess_are_the_formulas_of_vehtari_et_al_2021(n_chains, n_draws, rho, decimals):
    """numpyro's split_gelman_rubin and effective_sample_size on rank-normalised (and
    folded) draws give the R-hat and ESS of the paper, to rounding."""
    rng = np.random.default_rng(n_draws)
    rho = np.asarray(rho)
    x = np.empty((n_chains, n_draws, rho.size))
    x[:, 0] = rng.normal(size=(n_chains, rho.size))
    for t in range(1, n_draws):
        x[:, t] = rho * x[:, t - 1] + rng.standard_t(3, size=(n_chains, rho.size))
    x[0] += 0.3  # one chain off centre: R-hat away from 1
    if decimals is not None:
        x = np.round(x, decimals)
    rhat, ess = rhat_and_ess(x)
    rhat_ref, ess_ref = _vehtari_2021(x)
    np.testing.assert_allclose(rhat, rhat_ref, rtol=1e-12, atol=0)
    np.testing.assert_allclose(ess, ess_ref, rtol=1e-12, atol=0)


# ---------------------------------------------------------------------------------------
# Hellinger distances
# ---------------------------------------------------------------------------------------


def _h2_gauss_1d(m1, s1, m2, s2) -> float:
    return 1 - math.sqrt(2 * s1 * s2 / (s1**2 + s2**2)) * math.exp(
        -((m1 - m2) ** 2) / (4 * (s1**2 + s2**2))
    )


def _h2_binned_1d(edges, m1, s1, m2, s2) -> float:
    p = np.diff(stats.norm.cdf(edges, m1, s1))
    q = np.diff(stats.norm.cdf(edges, m2, s2))
    return 1 - np.sum(np.sqrt(p / p.sum() * q / q.sum()))


def _h2_tolerance(h2, n_x, n_y, cells) -> float:
    """4 sd of the H^2 estimate plus its largest sampling bias (see hellinger_1d)."""
    inv_n = 1 / n_x + 1 / n_y
    sd = math.sqrt((1 - (1 - h2) ** 2) / 4 * inv_n)
    return 4 * sd + 1.83 * (cells - 1) * inv_n / 8


def test_hellinger_1d_gaussians_against_closed_form():
    rng = np.random.default_rng(21)
    n, bins, lo_hi = 20_000, 50, (-7.0, 9.0)
    x = rng.normal(0.0, 1.0, n)
    y = rng.normal(1.0, 1.5, n)
    h_est = hellinger_1d(x, y, bins=bins, range=lo_hi)
    h2_exact = _h2_gauss_1d(0.0, 1.0, 1.0, 1.5)
    h2_binned = _h2_binned_1d(np.linspace(*lo_hi, bins + 1), 0.0, 1.0, 1.0, 1.5)
    # The ground truth for a finite grid is the closed-form densities binned on it;
    # coarse-graining can only lower H (data-processing inequality).
    assert h2_binned <= h2_exact
    assert h_est**2 == pytest.approx(h2_binned, abs=_h2_tolerance(h2_binned, n, n, bins))
    assert h_est == pytest.approx(math.sqrt(h2_exact), abs=0.02)  # H from the tolerance above
    # the default grid (spanning all samples) agrees within the same tolerance
    assert hellinger_1d(x, y, bins=bins) == pytest.approx(h_est, abs=0.02)


def test_hellinger_1d_weighted_samples():
    # N(0, 2^2) draws weighted by N(1, 1.5^2)/N(0, 2^2) represent N(1, 1.5^2).
    rng = np.random.default_rng(22)
    n, bins, lo_hi = 40_000, 50, (-7.0, 9.0)
    x = rng.normal(0.0, 1.0, n)
    z = rng.normal(0.0, 2.0, n)
    w = np.exp(stats.norm.logpdf(z, 1.0, 1.5) - stats.norm.logpdf(z, 0.0, 2.0))
    h_est = hellinger_1d(x, z, weights_y=w, bins=bins, range=lo_hi)
    h2_binned = _h2_binned_1d(np.linspace(*lo_hi, bins + 1), 0.0, 1.0, 1.0, 1.5)
    n_eff = importance_ess(np.log(w))
    assert h_est**2 == pytest.approx(h2_binned, abs=_h2_tolerance(h2_binned, n, n_eff, bins))


def _bvn_logpdf(x, y, mean, cov):
    return stats.multivariate_normal(mean, cov).logpdf(np.stack([x, y], axis=-1))


def test_hellinger_2d_correlated_gaussians_against_closed_form():
    # Same marginal widths, opposite correlations: the 1-D marginals barely differ while
    # the joint distributions clearly do.
    m1, c1 = np.zeros(2), np.array([[1.0, 0.8], [0.8, 1.0]])
    m2, c2 = np.array([0.5, 0.0]), np.array([[1.0, -0.5], [-0.5, 1.0]])
    cbar = (c1 + c2) / 2
    dm = m2 - m1
    bc = (
        np.linalg.det(c1) ** 0.25
        * np.linalg.det(c2) ** 0.25
        / np.linalg.det(cbar) ** 0.5
        * math.exp(-dm @ np.linalg.solve(cbar, dm) / 8)
    )
    h2_exact = 1 - bc
    bins, lim = 20, 5.5
    # binned densities by 10 x 10 midpoint sub-cells per cell
    sub = np.linspace(-lim, lim, bins * 10 + 1)
    mid = (sub[:-1] + sub[1:]) / 2
    gx, gy = np.meshgrid(mid, mid, indexing="ij")
    p = np.exp(_bvn_logpdf(gx, gy, m1, c1)).reshape(bins, 10, bins, 10).sum(axis=(1, 3))
    q = np.exp(_bvn_logpdf(gx, gy, m2, c2)).reshape(bins, 10, bins, 10).sum(axis=(1, 3))
    h2_binned = 1 - np.sum(np.sqrt(p / p.sum() * q / q.sum()))
    assert h2_binned <= h2_exact  # coarse-graining can only lower H

    rng = np.random.default_rng(23)
    n = 40_000
    a = rng.multivariate_normal(m1, c1, n)
    b = rng.multivariate_normal(m2, c2, n)
    h_est = hellinger_2d(a, b, bins=bins, range=((-lim, lim), (-lim, lim)))
    assert h_est**2 == pytest.approx(h2_binned, abs=_h2_tolerance(h2_binned, n, n, bins**2))
    # the marginals nearly agree, so 1-D distances are far smaller
    assert hellinger_1d(a[:, 1], b[:, 1]) < 0.5 * h_est


def test_hellinger_noise_floor_for_one_distribution():
    rng = np.random.default_rng(24)
    n, bins = 10_000, 50
    # Well-populated cells: 8 H^2 / (2/n) ~ chi^2_(bins - 1).
    stat = [
        8
        * hellinger_1d(rng.uniform(size=n), rng.uniform(size=n), bins=bins, range=(0, 1)) ** 2
        / (2 / n)
        for _ in range(200)
    ]
    assert np.mean(stat) == pytest.approx(bins - 1, abs=3 * math.sqrt(2 * (bins - 1) / 200))
    # Gaussian samples (sparse tail cells) stay below the 99.9 % bound, in 1-D and 2-D.
    bound_1d = hellinger_noise_floor(n, n, n_bins=bins, quantile=0.999)
    bound_2d = hellinger_noise_floor(n, n, n_bins=15 * 15, quantile=0.999)
    for _ in range(20):
        assert hellinger_1d(rng.normal(size=n), rng.normal(size=n), bins=bins) < bound_1d
        a, b = rng.normal(size=(n, 2)), rng.normal(size=(n, 2))
        assert hellinger_2d(a, b, bins=15) < bound_2d


def test_hellinger_limits_and_errors():
    x = np.random.default_rng(25).normal(size=1000)
    assert hellinger_1d(x, x) == pytest.approx(0.0, abs=1e-7)
    assert hellinger_1d(x, x + 100.0) == 1.0
    with pytest.raises(ParameterError, match="weights for x"):
        hellinger_1d(x, x, weights_x=-np.ones(1000))
    with pytest.raises(ParameterError, match="no sample weight"):
        hellinger_1d(x, x, range=(50.0, 60.0))
    with pytest.raises(ParameterError, match=r"shape \(n, 2\)"):
        hellinger_2d(x, x)


def test_max_hellinger_per_parameter():
    rng = np.random.default_rng(26)
    a = rng.normal(size=(5000, 3))
    b = rng.normal(size=(5000, 3)) + np.array([0.0, 0.0, 1.0])
    names = ("gw_log10_A", "gw_gamma", "J1909-3744_red_noise_gamma")
    result = max_hellinger(a, b, names)
    assert tuple(result) == names
    for i, name in enumerate(names):
        assert result[name] == hellinger_1d(a[:, i], b[:, i])
    assert max(result, key=result.get) == names[2]
    h2_shift = _h2_gauss_1d(0, 1, 1, 1)
    assert result[names[2]] ** 2 == pytest.approx(
        h2_shift, abs=_h2_tolerance(h2_shift, 5000, 5000, 50)
    )
    with pytest.raises(ParameterError, match="2 names for 3 columns"):
        max_hellinger(a, b, names[:2])
