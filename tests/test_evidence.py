"""Evidence estimators against closed-form evidences of Gaussian and truncated models."""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from ptaflow.errors import ParameterError
from ptaflow.evidence import (
    HARMONIC_FLOW,
    EvidenceResult,
    estimate_evidence_harmonic,
    estimate_evidence_importance,
)

# One sample size per dimension keeps each flow's compiled code shared between tests.
N_2D = 4000
N_10D = 6000
N_30D = 8000


# ---------------------------------------------------------------------------------------
# Analytic problems
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GaussianProblem:
    """Likelihood N(mu_l; x, cov_l) x prior N(x; 0, cov_p): posterior and Z in closed form.

    Z = N(mu_l; 0, cov_l + cov_p); the posterior is N(m, S), S^-1 = cov_l^-1 + cov_p^-1,
    m = S cov_l^-1 mu_l.
    """

    mu_l: np.ndarray
    cov_l: np.ndarray
    cov_p: np.ndarray

    @property
    def n_dim(self) -> int:
        return self.mu_l.size

    @property
    def log_evidence(self) -> float:
        return stats.multivariate_normal(np.zeros(self.n_dim), self.cov_l + self.cov_p).logpdf(
            self.mu_l
        )

    def posterior(self) -> tuple[np.ndarray, np.ndarray]:
        cov = np.linalg.inv(np.linalg.inv(self.cov_l) + np.linalg.inv(self.cov_p))
        return cov @ np.linalg.solve(self.cov_l, self.mu_l), cov

    def log_target(self, x: np.ndarray) -> np.ndarray:
        return stats.multivariate_normal(self.mu_l, self.cov_l).logpdf(
            x
        ) + stats.multivariate_normal(np.zeros(self.n_dim), self.cov_p).logpdf(x)

    def log_target_fn(self):
        mu_l, cov_l, cov_p = (jnp.asarray(a) for a in (self.mu_l, self.cov_l, self.cov_p))
        mvn = jax.scipy.stats.multivariate_normal.logpdf

        def fn(x):
            return mvn(x, mu_l, cov_l) + mvn(x, jnp.zeros_like(mu_l), cov_p)

        return fn

    def draw(self, rng, n: int) -> tuple[np.ndarray, np.ndarray]:
        mean, cov = self.posterior()
        x = rng.multivariate_normal(mean, cov, size=n)
        return x, self.log_target(x)


def correlated_gaussian(n_dim: int, seed: int = 0) -> GaussianProblem:
    """A likelihood with random correlations (condition number ~100) and a N(0, 4 I) prior."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n_dim, n_dim))
    cov_l = 0.3 * (a @ a.T / n_dim + 0.1 * np.eye(n_dim))
    return GaussianProblem(rng.normal(size=n_dim), cov_l, 4.0 * np.eye(n_dim))


def linear_gaussian(n_dim: int = 10, n_data: int = 40, sigma: float = 0.5, seed: int = 3):
    """y = A x + noise, noise ~ N(0, sigma^2 I), prior x ~ N(mu0, cov0).

    Z = N(y; A mu0, A cov0 A^T + sigma^2 I); the posterior is Gaussian with precision
    A^T A / sigma^2 + cov0^-1 and mean S (A^T y / sigma^2 + cov0^-1 mu0).
    Returns (log_evidence, posterior mean, posterior cov, log_target(x)).
    """
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n_data, n_dim))
    mu0 = rng.normal(size=n_dim)
    cov0 = np.diag(rng.uniform(0.5, 2.0, n_dim))
    y = a @ rng.multivariate_normal(mu0, cov0) + sigma * rng.normal(size=n_data)
    log_z = stats.multivariate_normal(a @ mu0, a @ cov0 @ a.T + sigma**2 * np.eye(n_data)).logpdf(y)
    prec = a.T @ a / sigma**2 + np.linalg.inv(cov0)
    cov = np.linalg.inv(prec)
    mean = cov @ (a.T @ y / sigma**2 + np.linalg.solve(cov0, mu0))

    def log_target(x):
        resid = y[None, :] - x @ a.T
        log_l = -0.5 * np.sum(resid**2, axis=1) / sigma**2 - n_data * math.log(
            sigma * math.sqrt(2 * math.pi)
        )
        return log_l + stats.multivariate_normal(mu0, cov0).logpdf(x)

    return log_z, mean, cov, log_target


def _assert_within_3_sigma(result: EvidenceResult, truth: float):
    pull = (result.log_evidence - truth) / result.log_evidence_err
    assert abs(pull) < 3.0, f"{result}, truth {truth:.4f}, pull {pull:.2f}"


# ---------------------------------------------------------------------------------------
# Importance sampling
# ---------------------------------------------------------------------------------------


def test_importance_student_t_proposal_recovers_evidence():
    problem = correlated_gaussian(5, seed=1)
    mean, cov = problem.posterior()
    proposal = stats.multivariate_t(mean, 1.5 * cov, df=5)
    rng = np.random.default_rng(31)
    pulls = []
    for _ in range(40):
        x = proposal.rvs(size=4000, random_state=rng)
        result = estimate_evidence_importance(problem.log_target(x), proposal.logpdf(x))
        pulls.append((result.log_evidence - problem.log_evidence) / result.log_evidence_err)
        # t tails are heavier than the Gaussian posterior's: bounded weights, k < 0
        assert result.diagnostics["khat"] < 0.5
        assert result.ok, result.warnings
    assert abs(pulls[0]) < 3.0
    # The delta-method error is calibrated: the pulls have mean 0 and sd 1 (40 repeats:
    # standard errors 0.16 and 0.11).
    assert abs(np.mean(pulls)) < 3 / math.sqrt(40)
    assert abs(np.std(pulls, ddof=1) - 1.0) < 3 / math.sqrt(2 * 39)
    assert result.method == "importance" and result.n_samples == 4000
    assert 0.3 < result.diagnostics["ess_fraction"] <= 1.0  # t(5), 1.5 cov in 5-D: ~0.5


def test_importance_narrow_proposal_is_flagged():
    # Proposal N(m, s^2 S) against posterior N(m, S) in 2-D: with u the whitened offset,
    # w = s^2 exp(|u|^2 (1/s^2 - 1)/2) and |u|^2 ~ s^2 chi2_2, so P(w > t) = (t/s^2)^(-1/(1 - s^2))
    # exactly: Pareto weights with k = 1 - s^2 = 0.84 (infinite variance) at any threshold.
    problem = correlated_gaussian(2, seed=1)
    mean, cov = problem.posterior()
    s, n = 0.4, 20_000
    proposal = stats.multivariate_normal(mean, s**2 * cov)
    x = proposal.rvs(size=n, random_state=np.random.default_rng(32))
    result = estimate_evidence_importance(problem.log_target(x), proposal.logpdf(x))
    m_tail = math.ceil(min(0.2 * n, 3 * math.sqrt(n)))
    k = 1 - s**2
    expected = (m_tail * k + 5) / (m_tail + 10)  # PSIS shrinks k with 10 pseudo-draws at 0.5
    # 3 sd of a GPD shape fitted to m_tail exceedances, sd ~ (1 + k)/sqrt(m_tail)
    assert result.diagnostics["khat"] == pytest.approx(
        expected, abs=3 * (1 + k) / math.sqrt(m_tail)
    )
    assert any("khat" in w for w in result.warnings)
    assert not result.ok


def test_importance_from_fixed_counts_takes_its_error_from_each_block():
    """A standard normal (Z = e^-2) against a mixture of three components drawn in fixed
    counts, in the refit proposal's proportions: a flow-like normal (20 %), a wide uniform
    "prior" whose draws mostly land where the target is not (8 %), and a near-exact "grid"
    (72 %). The estimate's spread over 200 repeats is the blocks' variance (the pulls have
    sd 1, standard error 0.05); the one-sample formula, which counts the spread of random
    counts that fixed counts do not have, quotes about three times as much."""
    log_z = -2.0
    counts = (1400, 560, 5040)
    parts = (stats.norm(0.0, 1.2), stats.uniform(-50.0, 100.0), stats.norm(0.02, 0.99))
    rng = np.random.default_rng(41)
    pulls, ratios = [], []
    for _ in range(200):
        x = np.concatenate(
            [q.rvs(size=m, random_state=rng) for q, m in zip(parts, counts, strict=True)]
        )
        log_q = special.logsumexp(
            [np.log(m / sum(counts)) + q.logpdf(x) for q, m in zip(parts, counts, strict=True)],
            axis=0,
        )
        log_target = log_z + stats.norm.logpdf(x)
        blocks = estimate_evidence_importance(log_target, log_q, strata=counts)
        one = estimate_evidence_importance(log_target, log_q)
        assert blocks.log_evidence == one.log_evidence
        assert blocks.diagnostics["strata"] == list(counts)
        pulls.append((blocks.log_evidence - log_z) / blocks.log_evidence_err)
        ratios.append(one.log_evidence_err / blocks.log_evidence_err)
    assert abs(np.mean(pulls)) < 3 / math.sqrt(200)
    assert abs(np.std(pulls, ddof=1) - 1.0) < 3 / math.sqrt(2 * 199)
    assert np.mean(ratios) > 2.0
    with pytest.raises(ParameterError, match="sum to the 7000 samples"):
        estimate_evidence_importance(log_target, log_q, strata=(1400, 560))
    with pytest.raises(ParameterError, match="positive block sizes"):
        estimate_evidence_importance(log_target, log_q, strata=(7000, 0))


def test_importance_input_errors():
    with pytest.raises(ParameterError, match="one length"):
        estimate_evidence_importance(np.zeros(3), np.zeros(4))
    with pytest.raises(ParameterError, match="log_q must be finite"):
        estimate_evidence_importance(np.zeros(3), np.array([0.0, -np.inf, 0.0]))
    with pytest.raises(ParameterError, match="every importance weight is zero"):
        estimate_evidence_importance(np.full(3, -np.inf), np.zeros(3))


# ---------------------------------------------------------------------------------------
# Learned harmonic mean
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_dim", "n_samples"),
    [(2, N_2D), (10, N_10D), pytest.param(30, N_30D, marks=pytest.mark.slow)],
)
def test_harmonic_correlated_gaussian(n_dim, n_samples):
    problem = correlated_gaussian(n_dim)
    x, log_target = problem.draw(np.random.default_rng(41), n_samples)
    fn = problem.log_target_fn() if n_dim <= 10 else None  # 30-D sampling of phi is slow
    result = estimate_evidence_harmonic(jax.random.key(0), x, log_target, log_target_fn=fn)
    _assert_within_3_sigma(result, problem.log_evidence)
    assert result.log_evidence_err < 0.05
    assert result.ok, result.warnings
    assert result.method == "harmonic"
    assert result.n_samples == n_samples // 2
    assert result.diagnostics["n_eff_blocks"] == pytest.approx(20.0)


def test_harmonic_linear_gaussian_model():
    log_z, mean, cov, log_target = linear_gaussian()
    x = np.random.default_rng(42).multivariate_normal(mean, cov, size=N_10D)
    result = estimate_evidence_harmonic(jax.random.key(1), x, log_target(x))
    _assert_within_3_sigma(result, log_z)
    assert result.log_evidence_err < 0.05
    assert result.ok, result.warnings


def test_harmonic_uniform_prior_in_unconstrained_space():
    # Prior U(-1, 1)^2, likelihood N(y; x, 0.3^2 I) with y near the boundary, so the
    # posterior is a truncated Gaussian. Z = prod_i [Phi((1 - y_i)/s) - Phi((-1 - y_i)/s)]/2.
    # Samples are mapped to z = logit((x + 1)/2) and the target includes ln|dx/dz|.
    y, s = np.array([0.8, -0.5]), 0.3
    a, b = (-1 - y) / s, (1 - y) / s
    log_z = float(np.sum(np.log(stats.norm.cdf(b) - stats.norm.cdf(a)) - math.log(2.0)))
    rng = np.random.default_rng(43)
    x = stats.truncnorm.rvs(a, b, loc=y, scale=s, size=(N_2D, 2), random_state=rng)
    z = special.logit((x + 1) / 2)

    def log_target_np(z):
        x = -1 + 2 * special.expit(z)
        log_jac = np.sum(math.log(2.0) + special.log_expit(z) + special.log_expit(-z), axis=-1)
        return np.sum(stats.norm.logpdf(y, x, s), axis=-1) - 2 * math.log(2.0) + log_jac

    def log_target_fn(z):
        x = -1 + 2 * jax.nn.sigmoid(z)
        log_jac = jnp.sum(math.log(2.0) + jax.nn.log_sigmoid(z) + jax.nn.log_sigmoid(-z))
        return jnp.sum(jax.scipy.stats.norm.logpdf(y, x, s)) - 2 * math.log(2.0) + log_jac

    result = estimate_evidence_harmonic(
        jax.random.key(2), z, log_target_np(z), log_target_fn=log_target_fn
    )
    _assert_within_3_sigma(result, log_z)
    assert result.log_evidence_err < 0.05
    assert result.ok, result.warnings


def test_harmonic_with_a_given_flow():
    # phi is a flow fitted to draws independent of the evaluation samples (as the posterior
    # flow is of the exact chains drawn afterwards); concentrated to T = 0.5 it is contained.
    from ptaflow.flows import FlowConfig, fit_to_samples

    problem = correlated_gaussian(2)
    rng = np.random.default_rng(45)
    train, _ = problem.draw(rng, N_2D)
    flow, _ = fit_to_samples(
        jax.random.key(3), train, flow_config=FlowConfig(family="coupling", flow_layers=2)
    )
    x, log_target = problem.draw(rng, N_2D)
    result = estimate_evidence_harmonic(
        jax.random.key(0),
        x,
        log_target,
        temperature=0.5,
        flow=flow,
        log_target_fn=problem.log_target_fn(),
    )
    _assert_within_3_sigma(result, problem.log_evidence)
    assert result.ok, result.warnings
    assert result.n_samples == N_2D and result.diagnostics["n_train"] == 0
    with pytest.raises(ParameterError, match="dimensions"):
        estimate_evidence_harmonic(jax.random.key(0), x[:, :1], log_target, flow=flow)
    with pytest.raises(ParameterError, match="StandardNormal"):
        estimate_evidence_harmonic(jax.random.key(0), x, log_target, flow=flow.bijection)


def test_harmonic_too_wide_flow_is_flagged():
    # T = 3 makes phi wider than the posterior: for a Gaussian, phi/posterior ~
    # exp(|u|^2 (1 - 1/T)/2), a tail shape 1 - 1/T = 2/3 > 1/2 (infinite variance), and a
    # fraction P(chi2_2 > 9.21/3) = exp(-9.21/6) = 0.215 of phi's draws lies below the
    # posterior's 1 % log-density quantile (chi2_2 = 9.21).
    problem = correlated_gaussian(2)
    x, log_target = problem.draw(np.random.default_rng(41), N_2D)
    result = estimate_evidence_harmonic(
        jax.random.key(0), x, log_target, temperature=3.0, log_target_fn=problem.log_target_fn()
    )
    # tolerance: 3 sd of the binomial fraction of 4000 draws (0.02) plus 3 sd of the
    # fraction's shift from estimating the 1 % quantile with 2000 samples (0.047)
    assert result.diagnostics["containment_fraction"] == pytest.approx(0.215, abs=0.07)
    assert any("not contained" in w for w in result.warnings)
    assert any("khat" in w for w in result.warnings)


def test_harmonic_too_few_samples_is_flagged():
    problem = correlated_gaussian(2)
    x, log_target = problem.draw(np.random.default_rng(44), 200)
    result = estimate_evidence_harmonic(jax.random.key(0), x, log_target)
    assert any("effective sample size" in w for w in result.warnings)


def test_harmonic_chains_blocks_and_determinism():
    problem = correlated_gaussian(2)
    x, log_target = problem.draw(np.random.default_rng(41), N_2D)
    # 16 chains of 250: 8 train, 8 evaluate, one block each: too few blocks for the error.
    result = estimate_evidence_harmonic(
        jax.random.key(0), x.reshape(16, 250, 2), log_target.reshape(16, 250)
    )
    assert result.diagnostics["n_blocks"] == 8
    assert any("effective evaluation chains/blocks" in w for w in result.warnings)
    _assert_within_3_sigma(result, problem.log_evidence)
    # chain_ids with unequal chain lengths: n_eff = N^2 / sum n_j^2 over evaluation chains
    lengths = np.array([500, 500, 300, 700, 1000, 400, 600])
    ids = np.repeat(np.arange(lengths.size), lengths)
    result = estimate_evidence_harmonic(jax.random.key(0), x, log_target, chain_ids=ids)
    evaluation = lengths[4:]  # round(0.5 * 7) = 4 chains train
    assert result.diagnostics["n_eff_blocks"] == pytest.approx(
        evaluation.sum() ** 2 / np.sum(evaluation**2)
    )
    assert result.n_samples == evaluation.sum()
    # the same key gives the same answer, and no flow_config means HARMONIC_FLOW
    again = estimate_evidence_harmonic(
        jax.random.key(0), x, log_target, chain_ids=ids, flow_config=HARMONIC_FLOW
    )
    assert again.log_evidence == result.log_evidence
    assert again.log_evidence_err == result.log_evidence_err


def test_harmonic_input_errors():
    x = np.zeros((100, 2))
    with pytest.raises(ParameterError, match="log_target must have shape"):
        estimate_evidence_harmonic(jax.random.key(0), x, np.zeros(99))
    with pytest.raises(ParameterError, match="at least 2 evaluation chains"):
        estimate_evidence_harmonic(jax.random.key(0), x.reshape(2, 50, 2), np.zeros((2, 50)))
    with pytest.raises(ParameterError, match="singular"):
        estimate_evidence_harmonic(jax.random.key(0), x, np.zeros(100))
    with pytest.raises(ParameterError, match="temperature"):
        estimate_evidence_harmonic(jax.random.key(0), x, np.zeros(100), temperature=0.0)


def test_evidence_result_is_immutable_and_serialisable():
    result = EvidenceResult(
        log_evidence=-3.2,
        log_evidence_err=0.01,
        method="importance",
        n_samples=10,
        n_eff=np.float64(8.5),
        diagnostics={"khat": np.float64(0.1), "n_zero_weight": np.int64(0)},
        warnings=["w"],
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.log_evidence = 0.0
    with pytest.raises(TypeError):
        result.diagnostics["khat"] = 1.0
    as_dict = json.loads(json.dumps(result.to_dict()))
    assert as_dict["diagnostics"] == {"khat": 0.1, "n_zero_weight": 0}
    assert as_dict["warnings"] == ["w"] and not result.ok
    with pytest.raises(ParameterError, match="method"):
        dataclasses.replace(result, method="nested")
