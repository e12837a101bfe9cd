"""CURN, HD and free-spectrum refit likelihoods against independent NumPy ground truth.

Ground truth:
- the full multivariate Gaussian of the timing residuals, built as an explicit dense
  covariance (white noise with ECORR blocks, Fourier GP, timing model) and evaluated with
  Cholesky factorisation in SciPy, for one and three NANOGrav 15-yr pulsars shipped in
  `data/ng15_pulsars/`;
- `np.interp` on the published NG15 free-spectrum densities for the refit likelihood;
- internal identities: HD with an identity ORF is CURN, CURN is a sum over pulsars, jit /
  vmap / chunking do not change values, gradients equal central finite differences.
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from ptaflow._paths import DATA_DIR
from ptaflow.compare import CompareSettings, comparison_posterior
from ptaflow.data import array_span, load_feather, load_noise_dict, load_reduced, reduce_pta
from ptaflow.errors import DataError, ParameterError, PulsarNotFoundError
from ptaflow.likelihood import (
    AbstractLikelihood,
    FreeSpectrumDensities,
    PowerLawProcess,
    PTALikelihood,
    RefitLikelihood,
    hellings_downs,
    load_free_spectrum_densities,
    make_likelihood,
    make_refit_likelihood,
)

PSR_DIR = DATA_DIR / "ng15_pulsars"
SMALL = ("J0605+3757", "J0557+1551", "J1012-4235")  # 554, 525, 797 TOAs
YEAR_S = 365.25 * 86400.0  # Julian year [s], enterprise.constants.yr
#: Prior variance [s^2] of the timing-model coefficients in the dense oracle (see `_dense_lnl`).
LAM = 1e-2


# --- independent dense oracle ---------------------------------------------------------------------


def _powerlaw_psd(f, log10_A, gamma):
    """S(f) = A^2/(12 pi^2) f_yr^(gamma-3) f^-gamma [s^3] (enterprise `utils.powerlaw` / df)."""
    return 10.0 ** (2 * log10_A) / (12 * np.pi**2) * (1 / YEAR_S) ** (gamma - 3) * f ** (-gamma)


def _epochs(toas, flags, backends):
    """ECORR epochs as lists of TOA indices: per backend, in time order, a TOA joins the open
    epoch when it is less than 1 s after that epoch's first TOA; only epochs of >= 2 TOAs."""
    groups = []
    for be in backends:
        members = [i for i in np.argsort(toas, kind="stable") if flags[i] == be]
        current = [members[0]]
        for i in members[1:]:
            if toas[i] - toas[current[0]] < 1.0:
                current.append(i)
            else:
                groups.append(current)
                current = [i]
        groups.append(current)
    return [g for g in groups if len(g) >= 2]


def _white_cov(psr, nd):
    """Dense N: efac^2 (err^2 + 10^(2 log10_t2equad)) on the diagonal plus ECORR blocks."""
    key = [f"{psr.name}_{b}" for b in psr.backend_flags]
    efac = np.array([nd[k + "_efac"] for k in key])
    equad = np.array([10.0 ** nd[k + "_log10_t2equad"] for k in key])
    N = np.diag(efac**2 * (psr.toaerrs**2 + equad**2))
    with_ecorr = sorted(b for b in psr.backends if f"{psr.name}_{b}_log10_ecorr" in nd)
    for g in _epochs(psr.toas, psr.backend_flags, with_ecorr):
        N[np.ix_(g, g)] += 10.0 ** (2 * nd[f"{psr.name}_{psr.backend_flags[g[0]]}_log10_ecorr"])
    return N


def _fourier(toas, n_freq, tspan):
    f = np.arange(1, n_freq + 1) / tspan
    arg = 2 * np.pi * np.outer(toas, f)
    F = np.empty((toas.size, 2 * n_freq))
    F[:, 0::2], F[:, 1::2] = np.sin(arg), np.cos(arg)
    return F, f


def _dense_lnl(psrs, nd, rn, gw, orf=None, lam=LAM, n_rn=30, n_gw=14):
    """ln L with the timing model marginalised under a flat prior, from one dense Gaussian.

    With Mn the column-normalised design matrix (flat prior of unit density on its
    coefficients e) and C0 = N + F Phi F^T, the flat-prior marginal is
    L = int N(r - Mn e; 0, C0) de. Give e instead the Gaussian prior N(0, lam (Mn^T Mn)^-1),
    i.e. Mn e has covariance lam Q Q^T (Mn = Q R, Q orthonormal). Its density near the
    likelihood peak is (2 pi lam)^(-m/2) |det R|, so for lam -> infinity

        ln L = ln N(r; 0, C) + (m/2) ln(2 pi lam) - ln|det R|,  C = C0 + lam Q Q^T,

    with m = n_tm per pulsar, up to a correction ~ sum_i 1 / (2 lam a_i), a_i the eigenvalues
    of Q^T C0^-1 Q. (A prior lam I on e itself, covariance lam Mn Mn^T, converges far too
    slowly here: J0605+3757's last two design-matrix columns are nearly collinear, smallest
    singular value of Mn 2.5e-5, which leaves a correction of ~4 in ln L at lam = 1e-4 s^2.)
    lam = 1e-2 s^2 is > 10 x the largest eigenvalue of C0 (8e-4 s^2 for red noise at
    log10_A = -11, gamma = 7, the worst case in the prior); the remaining correction falls as
    1/lam and is <= 2.3e-4 in ln L at the tested points (checked by
    `test_dense_oracle_has_reached_its_flat_prior_limit`), while cond(C) stays < 1e10,
    harmless for a float64 Cholesky.

    For several pulsars C is block diagonal except for the common process, which adds
    Gamma_ab F_a Phi_gw F_b^T between pulsars a and b (CURN: Gamma = identity).

    Args:
        psrs: pulsars; rn: (log10_A, gamma) per pulsar; gw: (log10_A, gamma);
        orf: (n_psr, n_psr) correlation, or None for CURN.
    """
    tspan = array_span(psrs)
    orf = np.eye(len(psrs)) if orf is None else orf
    blocks, F_gw, log_det_R = [], [], 0.0
    for psr, (log10_A, gamma) in zip(psrs, rn, strict=True):
        F, f = _fourier(psr.toas, n_rn, tspan)
        phi = np.repeat(_powerlaw_psd(f, log10_A, gamma) / tspan, 2)
        Q, R = np.linalg.qr(psr.Mmat / np.linalg.norm(psr.Mmat, axis=0))
        log_det_R += np.sum(np.log(np.abs(np.diag(R))))
        blocks.append(_white_cov(psr, nd) + (F * phi) @ F.T + lam * Q @ Q.T)
        F_gw.append(F[:, : 2 * n_gw])
    C = scipy.linalg.block_diag(*blocks)
    phi_gw = np.repeat(_powerlaw_psd(np.arange(1, n_gw + 1) / tspan, *gw) / tspan, 2)
    edges = np.cumsum([0] + [p.n_toa for p in psrs])
    for a in range(len(psrs)):
        for b in range(len(psrs)):
            block = orf[a, b] * (F_gw[a] * phi_gw) @ F_gw[b].T
            C[edges[a] : edges[a + 1], edges[b] : edges[b + 1]] += block
    r = np.concatenate([p.residuals for p in psrs])
    n_tm = sum(p.Mmat.shape[1] for p in psrs)
    cf = scipy.linalg.cho_factor(C, lower=True)
    log_gauss = (
        -0.5 * r @ scipy.linalg.cho_solve(cf, r)
        - np.sum(np.log(np.diag(cf[0])))
        - 0.5 * r.size * np.log(2 * np.pi)
    )
    return log_gauss + 0.5 * n_tm * np.log(2 * np.pi * lam) - log_det_R


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def noisedict():
    return load_noise_dict(PSR_DIR / "noise_dict_15yr.json")


@pytest.fixture(scope="module")
def psrs():
    return [load_feather(PSR_DIR / f"{name}.feather") for name in SMALL]


@pytest.fixture(scope="module")
def reduced3(psrs, noisedict):
    return reduce_pta(psrs, noisedict)


@pytest.fixture(scope="module")
def likes3(reduced3):
    return {c: make_likelihood(reduced3, correlation=c) for c in ("curn", "hd")}


def _draws(n_psr, n, seed):
    """Prior draws: red noise log10_A ~ U(-20, -11), gamma ~ U(0, 7); gw U(-18, -11), U(0, 7)."""
    rng = np.random.default_rng(seed)
    rn = np.stack([rng.uniform(-20, -11, (n, n_psr)), rng.uniform(0, 7, (n, n_psr))], axis=-1)
    gw = np.stack([rng.uniform(-18, -11, n), rng.uniform(0, 7, n)], axis=-1)
    return np.concatenate([rn.reshape(n, 2 * n_psr), gw], axis=1)


# --- dense Gaussian -------------------------------------------------------------------------------

# (rn log10_A, rn gamma, gw log10_A, gw gamma): the prior box's corners and its middle.
CURN_POINTS = [
    (-14.0, 4.0, -15.0, 3.0),
    (-11.0, 7.0, -11.0, 7.0),
    (-11.0, 7.0, -18.0, 0.0),
    (-20.0, 0.0, -11.0, 0.0),
    (-12.5, 5.0, -14.0, 13 / 3),
    (-19.0, 6.0, -17.5, 2.0),
]


@pytest.mark.parametrize("point", CURN_POINTS)
def test_curn_matches_dense_gaussian_one_pulsar(psrs, noisedict, point):
    psr = psrs[0]
    like = make_likelihood(reduce_pta([psr], noisedict), correlation="curn")
    ours = float(like(jnp.asarray(point)))
    dense = _dense_lnl([psr], noisedict, [point[:2]], point[2:])
    # ln L ~ 5e3 (1e-6: 5e-3); the oracle's finite-lam correction measures <= 2.3e-4.
    np.testing.assert_allclose(ours, dense, rtol=1e-6, atol=0)


def test_dense_oracle_has_reached_its_flat_prior_limit(psrs, noisedict):
    point = CURN_POINTS[1]  # strongest red noise: the slowest convergence in lam
    lnl = [
        _dense_lnl([psrs[0]], noisedict, [point[:2]], point[2:], lam=lam) for lam in (1e-2, 1e-1)
    ]
    # the correction falls as 1/lam: measured 1.9e-4 between lam = 1e-2 and 1e-1
    assert abs(lnl[0] - lnl[1]) < 3e-4


@pytest.mark.parametrize(
    "theta",
    [
        (-14.0, 4.0, -15.0, 3.0, -13.5, 2.0, -14.5, 13 / 3),
        (-15.0, 1.0, -19.0, 5.0, -14.0, 6.0, -14.0, 2.0),
        (-11.5, 6.5, -16.0, 0.5, -12.0, 3.0, -12.0, 5.0),
        (-16.0, 3.0, -17.0, 2.0, -18.0, 3.0, -12.5, 13 / 3),  # common process dominates
    ],
)
def test_hd_matches_dense_gaussian_three_pulsars(psrs, noisedict, reduced3, likes3, theta):
    rn, gw = [theta[0:2], theta[2:4], theta[4:6]], theta[6:]
    hd = float(likes3["hd"](jnp.asarray(theta)))
    curn = float(likes3["curn"](jnp.asarray(theta)))
    dense_hd = _dense_lnl(psrs, noisedict, rn, gw, orf=hellings_downs(reduced3.pos))
    dense_curn = _dense_lnl(psrs, noisedict, rn, gw)
    # ln L ~ 1.9e4 (1e-6: 2e-2); the oracle's finite-lam correction measures <= 8e-4.
    np.testing.assert_allclose([hd, curn], [dense_hd, dense_curn], rtol=1e-6, atol=0)
    # The correlation's effect alone (small for these 3-4 yr pulsars): the oracle's
    # finite-lam corrections nearly cancel in the difference (measured <= 8e-6).
    assert hd - curn == pytest.approx(dense_hd - dense_curn, abs=2e-5)
    if gw[0] >= -12.5:  # here the coupling is 100 x that tolerance, so the check has teeth
        assert abs(dense_hd - dense_curn) > 2e-3


def test_hellings_downs_values():
    # pulsars along +x, +y, -x and a copy of +x: zeta = 90 deg, 180 deg, 0 deg
    pos = np.array([[1.0, 0, 0], [0, 1.0, 0], [-1.0, 0, 0], [1.0, 0, 0]])
    gamma = hellings_downs(pos)
    x90 = 0.5
    assert gamma[0, 1] == pytest.approx(1.5 * x90 * np.log(x90) - x90 / 4 + 0.5, rel=1e-14)
    assert gamma[0, 2] == pytest.approx(1.5 * np.log(1.0) - 0.25 + 0.5, rel=1e-14)  # x = 1
    assert gamma[0, 3] == 0.5  # two distinct pulsars in the same direction (x ln x -> 0)
    np.testing.assert_array_equal(np.diag(gamma), 1.0)
    np.testing.assert_array_equal(gamma, gamma.T)


# --- identities between likelihoods ---------------------------------------------------------------


def test_hd_with_identity_orf_equals_curn(reduced3, likes3):
    like_id = make_likelihood(reduced3, correlation="hd", orf=np.eye(3))
    thetas = jnp.asarray(_draws(3, 20, seed=1))
    # two different factorisations (Schur complement + coupled system vs per-pulsar
    # Cholesky) of ln L ~ 1.9e4: round-off ~1e-9 absolute.
    np.testing.assert_allclose(like_id.batch(thetas), likes3["curn"].batch(thetas), rtol=1e-12)


def test_curn_is_a_sum_over_pulsars(reduced3, likes3):
    thetas = _draws(3, 10, seed=2)
    total = np.zeros(len(thetas))
    for a, name in enumerate(reduced3.names):
        one = make_likelihood(reduced3.select([name]), correlation="curn")
        total += np.asarray(one.batch(jnp.asarray(thetas[:, [2 * a, 2 * a + 1, 6, 7]])))
    np.testing.assert_allclose(likes3["curn"].batch(jnp.asarray(thetas)), total, rtol=1e-13)


@pytest.mark.parametrize("corr", ["curn", "hd"])
def test_jit_equals_eager(likes3, corr):
    like = likes3[corr]
    theta = jnp.asarray(_draws(3, 1, seed=3)[0])
    with jax.disable_jit():
        eager = float(like(theta))
    # XLA may fuse and reorder float64 sums: relative 1e-12 of ln L ~ 1.9e4
    np.testing.assert_allclose(float(eqx.filter_jit(like)(theta)), eager, rtol=1e-12)


@pytest.mark.parametrize("corr", ["curn", "hd"])
def test_vmap_and_chunked_batch_equal_loop(likes3, corr):
    like = likes3[corr]
    thetas = jnp.asarray(_draws(3, 10, seed=4))
    loop = np.array([float(like(t)) for t in thetas])
    batched = np.asarray(like.batch(thetas))
    # vmapped Cholesky kernels may sum in another order: relative 1e-12 of ln L ~ 1.9e4
    np.testing.assert_allclose(batched, loop, rtol=1e-12)
    for chunk in (1, 3, 10, 64):  # 3 does not divide 10: the remainder chunk is exercised
        np.testing.assert_allclose(like.batch(thetas, chunk_size=chunk), batched, rtol=1e-12)


@pytest.mark.parametrize("corr", ["curn", "hd"])
def test_grad_matches_central_finite_differences(likes3, corr):
    like = likes3[corr]
    theta = np.array([-12.5, 4.0, -12.8, 3.0, -13.0, 2.0, -13.0, 4.0])  # data-informed region
    grad = np.asarray(jax.grad(like)(jnp.asarray(theta)))
    f = eqx.filter_jit(like)
    h = 1e-4
    fd = np.array(
        [(float(f(theta + h * e)) - float(f(theta - h * e))) / (2 * h) for e in np.eye(theta.size)]
    )
    # round-off of ln L ~ 1.9e4 over 2h and the h^2 truncation are each ~1e-8; measured 3.4e-8
    np.testing.assert_allclose(grad, fd, rtol=0, atol=2e-7)
    assert np.all(np.abs(grad) > 1e-3)  # a zero gradient would pass vacuously


def test_batch_rejects_wrong_shape(likes3):
    with pytest.raises(
        ParameterError, match=r"thetas has shape \(8,\); expected \(n_samples, n_dim\)"
    ):
        likes3["curn"].batch(jnp.zeros(8))


def test_make_likelihood_rejects_bad_arguments(reduced3):
    with pytest.raises(ParameterError, match="correlation='dipole': expected 'curn' or 'hd'"):
        make_likelihood(reduced3, correlation="dipole")
    with pytest.raises(ParameterError, match=r"n_gw=20, n_rn=14: expected 1 <= n_gw <= n_rn <= 30"):
        make_likelihood(reduced3, n_rn=14, n_gw=20)
    with pytest.raises(ParameterError, match=r"n_rn=31.*reduce again with a larger n_freq"):
        make_likelihood(reduced3, n_rn=31)
    with pytest.raises(ParameterError, match="not positive definite"):
        make_likelihood(reduced3, correlation="hd", orf=np.ones((3, 3)))
    with pytest.raises(ParameterError, match=r"orf has shape \(2, 2\), expected \(3, 3\)"):
        make_likelihood(reduced3, correlation="hd", orf=np.eye(2))
    with pytest.raises(ParameterError, match=r"common=.*it has no psd\(f, theta\)$"):
        make_likelihood(reduced3, _NoSpectrum())


# --- one interface, final classes -----------------------------------------------------------------


class _NoSpectrum:
    """A common process missing its spectrum."""

    param_names = ("log10_rho",)


def test_both_likelihoods_are_final_classes_of_the_abstract_likelihood(likes3):
    refit = make_refit_likelihood()
    cases = [(likes3["curn"], "full", "curn"), (likes3["hd"], "full", "hd")]
    cases.append((refit, "refit", "refit"))
    for like, mode, correlation in cases:
        assert isinstance(like, AbstractLikelihood)
        assert (like.mode, like.correlation) == (mode, correlation)
        assert like.n_dim == len(like.param_names)
        assert like.param_names[-2:] == like.common.param_names == ("gw_log10_A", "gw_gamma")
    assert (PTALikelihood.mode, RefitLikelihood.mode) == ("full", "refit")


class _Named(AbstractLikelihood):
    """The names and the common process of a likelihood, still abstract: no mode, no ln L."""

    common: PowerLawProcess

    @property
    def param_names(self):
        return self.common.param_names

    @property
    def correlation(self):
        return "refit"


class _NoValue(_Named):
    """Everything a likelihood declares except ln L itself (`__call__`)."""

    mode: ClassVar[str] = "refit"


class _NoMode(_Named):
    """A likelihood that does not say whether it is full or refit."""

    def __call__(self, theta):
        return jnp.sum(theta)


def test_an_incomplete_likelihood_cannot_be_built():
    with pytest.raises(TypeError, match="abstract"):
        AbstractLikelihood()
    with pytest.raises(TypeError, match="abstract method __call__"):
        _NoValue(PowerLawProcess())
    with pytest.raises(TypeError, match="abstract class attributes {'mode'}"):
        _NoMode(PowerLawProcess())


# --- the shipped 48-pulsar reduced statistics -----------------------------------------------------


@pytest.fixture(scope="module")
def cache48():
    return load_reduced(DATA_DIR / "ng15_48psr_reduced_k30.h5")


def test_shipped_cache_contents(cache48):
    assert cache48.n_psr == 48 and cache48.n_freq == 30
    assert cache48.FNF.shape == (48, 60, 60) and cache48.FNr.shape == (48, 60)
    np.testing.assert_allclose(cache48.freqs, np.arange(1, 31) / cache48.tspan, rtol=1e-15)
    np.testing.assert_allclose(np.linalg.norm(cache48.pos, axis=1), 1.0, rtol=1e-12)
    assert cache48.tspan / YEAR_S == pytest.approx(16.01, abs=0.01)  # NG15 48-pulsar span


def test_shipped_cache_best_and_select(cache48):
    score = cache48.wrms / (cache48.span / YEAR_S)  # the documented rule, by hand
    by_hand = [cache48.names[i] for i in np.lexsort((np.array(cache48.names), score))]
    best = cache48.best(10)
    assert best.names == tuple(by_hand[:10])
    i = cache48.names.index(by_hand[3])
    np.testing.assert_array_equal(best.FNF[3], cache48.FNF[i])
    np.testing.assert_array_equal(best.FNr[3], cache48.FNr[i])
    assert best.const[3] == cache48.const[i] and best.tspan == cache48.tspan
    assert list(best.provenance["inputs"]["pulsars"]) == list(by_hand[:10])
    # select keeps the order asked for
    sub = cache48.select(["J0605+3757", "B1855+09"])
    assert sub.names == ("J0605+3757", "B1855+09")
    np.testing.assert_array_equal(sub.pos[1], cache48.pos[cache48.names.index("B1855+09")])
    with pytest.raises(PulsarNotFoundError, match="Did you mean 'J0605\\+3757'"):
        cache48.select(["J0605+3758"])
    with pytest.raises(
        DataError, match="asked for the 49 best pulsars, but the reduced data hold 48"
    ):
        cache48.best(49)


def test_shipped_cache_matches_reducing_the_shipped_raw_pulsar(cache48, psrs, noisedict):
    """The cached J0605+3757 statistics are those of data/ng15_pulsars/J0605+3757.feather."""
    mine = reduce_pta([psrs[0]], noisedict, n_freq=30, tspan=cache48.tspan)
    cached = cache48.select(["J0605+3757"])
    assert mine.provenance["inputs"]["pulsars"] == cached.provenance["inputs"]["pulsars"]
    # the same arithmetic on the same numbers: relative 1e-12 allows for BLAS threading
    np.testing.assert_allclose(
        mine.FNF, cached.FNF, rtol=1e-12, atol=1e-12 * np.abs(mine.FNF).max()
    )
    np.testing.assert_allclose(
        mine.FNr, cached.FNr, rtol=1e-12, atol=1e-12 * np.abs(mine.FNr).max()
    )
    np.testing.assert_allclose(mine.const, cached.const, rtol=1e-12)


@pytest.mark.parametrize("corr", ["curn", "hd"])
def test_shipped_cache_likelihood_on_best_pulsars(cache48, corr):
    best = cache48.best(5)
    like = make_likelihood(best, correlation=corr)
    assert like.param_names[:2] == (
        f"{best.names[0]}_red_noise_log10_A",
        f"{best.names[0]}_red_noise_gamma",
    )
    assert like.param_names[-2:] == ("gw_log10_A", "gw_gamma") and like.n_dim == 12
    thetas = jnp.asarray(_draws(5, 8, seed=5))
    values = np.asarray(like.batch(thetas))
    assert np.all(np.isfinite(values))
    if corr == "curn":  # CURN is separable: the sum of one-pulsar likelihoods
        total = sum(
            np.asarray(
                make_likelihood(best.select([n]), correlation="curn").batch(
                    thetas[:, jnp.array([2 * a, 2 * a + 1, 10, 11])]
                )
            )
            for a, n in enumerate(best.names)
        )
        np.testing.assert_allclose(values, total, rtol=1e-13)
    else:  # HD with the identity ORF is CURN on the same data
        curn = make_likelihood(best, correlation="hd", orf=np.eye(5))
        # two factorisations of ln L ~ 3.3e5 with strong prior draws: measured 4e-12
        np.testing.assert_allclose(
            curn.batch(thetas), make_likelihood(best).batch(thetas), rtol=1e-10
        )


# --- common-process variances beyond double precision ---------------------------------------------

#: igw_2p along a ray of growing tensor tilt n_t at log10_r = -0.01 (near its prior bound of 0),
#: red noise at the prior medians: h^2 Omega_GW, and with it the common variance, grows from
#: ~1e-3 s^2 (n_t = 2) to ~4e27 s^2 (n_t = 6), ln L falling ~2000 per unit of n_t.
HUGE_RAY_NT = np.arange(2.0, 6.01, 0.25)
HUGE_LOG10_R = -0.01


@pytest.fixture(scope="module")
def igw_10psr():
    return {
        c: comparison_posterior("igw_2p", CompareSettings(mode="full", pulsars=10, correlation=c))
        for c in ("curn", "hd")
    }


@pytest.mark.parametrize("corr", ["curn", "hd"])
def test_ln_l_falls_to_minus_infinity_as_the_common_variance_outgrows_double_precision(
    igw_10psr, corr
):
    """ln L of a common variance without bound tends to -inf (-1/2 ln det C dominates). Where the
    variance is so large that the whitened system I + D FNF D is no longer positive definite in
    double precision (phi FNF ~ 1e16 and more, n_t >~ 2.6 here), ln L is -inf, never NaN, with a
    finite gradient; along the ray it falls monotonically from the data's preferred region on.
    A factorisation that fails for another reason, here a NaN parameter, still gives NaN."""
    like = igw_10psr[corr].likelihood
    assert like.correlation == corr
    rn = np.tile([-15.5, 3.5], like.n_psr)  # red-noise prior medians
    nts = (*HUGE_RAY_NT, 5.99, np.nan)
    thetas = jnp.asarray([np.concatenate([rn, [nt, HUGE_LOG10_R]]) for nt in nts])
    n_ray = len(HUGE_RAY_NT)
    batched = np.asarray(eqx.filter_jit(like.batch)(thetas))  # CPU: the blocked factorisation
    value, grad = eqx.filter_jit(lambda lk_, t: jax.vmap(jax.value_and_grad(lk_))(t))(like, thetas)
    assert np.isnan(batched[-1]) and np.isnan(value[-1])
    batched, value, grad = batched[:-1], np.asarray(value[:-1]), np.asarray(grad[:-1])
    one_value = eqx.filter_jit(like)
    one_grad = eqx.filter_jit(lambda lk_, t: jax.value_and_grad(lk_)(t))
    for i in (n_ray - 1, n_ray):  # n_t = 6 and 5.99, one vector at a time (LAPACK on a CPU)
        v1, g1 = one_grad(like, thetas[i])
        assert float(one_value(thetas[i])) == float(v1) == -np.inf
        assert np.all(np.isfinite(np.asarray(g1)))
    for values in (batched, value):
        assert not np.any(np.isnan(values))
        assert not np.any(values == np.inf)
        assert values[-1] == values[n_ray - 1] == -np.inf  # the limit, at the prior bound
        ray = values[:n_ray]
        assert np.isfinite(ray[0]) and np.all(ray[1:] <= ray[:-1])  # -inf stays -inf
        finite = ray[np.isfinite(ray)]  # n_t <= 2.5 here; close to the breakdown (t ~ 1e15)
        # round-off makes paths differ, by 1e-4 at n_t = 2.5, but ln L falls ~500 per step
        assert len(finite) >= 2 and np.all(np.diff(finite) < -100.0)
    assert np.all(np.isfinite(grad))
    # ray[0] lies beyond the preferred tilt: ln L is larger at smaller n_t
    back = jnp.asarray(np.concatenate([rn, [HUGE_RAY_NT[0] - 0.5, HUGE_LOG10_R]]))
    assert float(one_value(back)) > batched[0]


# --- free-spectrum refit likelihood ---------------------------------------------------------------


@pytest.fixture(scope="module")
def ceffyl_numpy():
    folder = DATA_DIR / "ng15_ceffyl_hd"
    freqs = np.load(folder / "freqs.npy")
    grid = np.load(folder / "log10rhogrid.npy")
    dens = np.load(folder / "density.npy")[0]  # (1, 30, n_grid) -> (30, n_grid)
    return freqs, grid, dens


def _refit_numpy(ceffyl, log10_rho_fn, n_freq):
    """sum_k ln p_k(log10 rho_k), np.interp (edge values beyond the grid)."""
    freqs, grid, dens = ceffyl
    log10_rho = log10_rho_fn(freqs[:n_freq], 1.0 / freqs[0])
    return sum(np.interp(log10_rho[k], grid, dens[k]) for k in range(n_freq))


REFIT_POINTS = [
    (-14.5, 13 / 3),
    (-14.2, 3.2),  # near the NG15 posterior peak
    (-15.0, 5.0),
    (-17.9, 0.3),
    (-11.1, 6.9),
    (-3.0, 0.0),  # log10 rho above the grid (-0.9) at every frequency
    (-22.0, 7.0),  # log10 rho below the grid (-15.1) at the higher frequencies
]


@pytest.mark.parametrize("n_freq", [14, 30])
def test_refit_power_law_matches_numpy(ceffyl_numpy, n_freq):
    like = make_refit_likelihood(n_freq=n_freq)
    assert like.param_names == ("gw_log10_A", "gw_gamma")
    freqs, grid, _ = ceffyl_numpy
    ours = np.asarray(like.batch(jnp.asarray(REFIT_POINTS)))
    for (log10_A, gamma), value in zip(REFIT_POINTS, ours, strict=True):

        def rho(f, tspan, log10_A=log10_A, gamma=gamma):
            return 0.5 * np.log10(_powerlaw_psd(f, log10_A, gamma) / tspan)

        expected = _refit_numpy(ceffyl_numpy, rho, n_freq)
        # 15 interpolations and pow/log10 in float64: relative 1e-12 of |ln L| ~ 10-1e3
        assert value == pytest.approx(expected, rel=1e-12, abs=1e-10)
    # the out-of-grid points really leave the grid (else clamping is untested)
    tspan = 1.0 / freqs[0]
    f = freqs[:n_freq]
    assert (0.5 * np.log10(_powerlaw_psd(f, -3.0, 0.0) / tspan) > grid[-1]).all()
    assert (0.5 * np.log10(_powerlaw_psd(f, -22.0, 7.0) / tspan) < grid[0]).any()


class _FlatSpectrum:
    """A free-spectrum process: log10 rho_k = c for every k (test double of CommonProcess)."""

    param_names = ("log10_rho",)

    def psd(self, f, theta):
        return jnp.full(f.shape, 10.0 ** (2 * theta[0])) / f[0]  # S = rho^2 T with T = 1/f_1


@pytest.mark.parametrize("log10_rho", [-30.0, -15.1, -9.0, -7.3, -6.01, -0.9, 5.0])
def test_refit_custom_process_and_grid_edges(ceffyl_numpy, log10_rho):
    like = make_refit_likelihood(_FlatSpectrum(), n_freq=30)
    _, grid, dens = ceffyl_numpy
    expected = _refit_numpy(ceffyl_numpy, lambda f, t: np.full(f.size, log10_rho), 30)
    assert float(like(jnp.array([log10_rho]))) == pytest.approx(expected, rel=1e-11, abs=1e-9)
    if log10_rho < grid[0]:  # clamped to the first grid value
        assert expected == pytest.approx(dens[:, 0].sum(), rel=1e-14)
    if log10_rho > grid[-1]:
        assert expected == pytest.approx(dens[:, -1].sum(), rel=1e-14)


def test_refit_on_synthetic_densities():
    """A three-point grid: values and linear interpolation worked out by hand."""
    densities = FreeSpectrumDensities(
        log10_rho_grid=jnp.array([-8.0, -7.0, -6.0]),
        log_density=jnp.array([[0.0, 1.0, 3.0], [-1.0, -2.0, -4.0]]),
        freqs=jnp.array([1e-8, 2e-8]),
        tspan=1e8,
    )
    like = make_refit_likelihood(_FlatSpectrum(), densities, n_freq=2)
    assert float(like(jnp.array([-7.5]))) == pytest.approx(0.5 + -1.5, rel=1e-13)
    assert float(like(jnp.array([-6.25]))) == pytest.approx(2.5 + -3.5, rel=1e-13)
    assert float(like(jnp.array([-9.0]))) == pytest.approx(0.0 + -1.0, abs=1e-13)
    assert float(like(jnp.array([0.0]))) == pytest.approx(3.0 + -4.0, rel=1e-13)
    with pytest.raises(ParameterError, match=r"n_freq=3: expected 1\.\.2"):
        make_refit_likelihood(_FlatSpectrum(), densities, n_freq=3)


def test_refit_grad_matches_finite_differences():
    like = make_refit_likelihood()
    theta = np.array([-14.3, 3.7])
    grad = np.asarray(jax.grad(like)(jnp.asarray(theta)))
    h = 1e-6
    fd = np.array(
        [(float(like(theta + h * e)) - float(like(theta - h * e))) / (2 * h) for e in np.eye(2)]
    )
    # piecewise-linear in log10 rho: FD is exact unless a grid node (spacing 1.4e-3) lies
    # within h; round-off of ln L ~ 10 over 2h gives ~1e-9
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-6)


def test_free_spectrum_densities_errors(tmp_path):
    with pytest.raises(DataError, match=r"freqs\.npy is missing"):
        load_free_spectrum_densities(tmp_path)
    folder = DATA_DIR / "ng15_ceffyl_hd"
    for name in ("freqs", "log10rhogrid"):
        np.save(tmp_path / f"{name}.npy", np.load(folder / f"{name}.npy"))
    np.save(tmp_path / "density.npy", np.zeros((29, 10000)))
    with pytest.raises(DataError, match=r"density shape \(29, 10000\), expected \(n_freq=30"):
        load_free_spectrum_densities(tmp_path)
    dens = np.load(folder / "density.npy")
    dens[0, 3, 7] = np.nan
    np.save(tmp_path / "density.npy", dens)
    with pytest.raises(DataError, match="non-finite log-densities"):
        load_free_spectrum_densities(tmp_path)
    default = load_free_spectrum_densities()
    assert default.tspan == pytest.approx(1.0 / float(np.load(folder / "freqs.npy")[0]), rel=1e-15)


def test_refit_likelihood_refuses_float32():
    # Without float64 a refit fit used to fail much later ("cov is not a positive-definite
    # covariance matrix"); the builder now says what is missing, as make_likelihood does.
    import subprocess
    import sys

    code = (
        "from ptaflow.errors import DataError\n"
        "from ptaflow.likelihood import make_refit_likelihood\n"
        "try:\n    make_refit_likelihood()\nexcept DataError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "need float64" in out.stdout and "jax_enable_x64" in out.stdout
