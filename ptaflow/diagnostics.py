"""Sample-quality measures: Pareto-smoothed importance sampling, R-hat/ESS, Hellinger distances.

Three families of checks used throughout ptaflow:

* **Importance weights.** `psis` / `psis_khat` fit a generalized Pareto distribution (GPD) to
  the largest importance weights (Vehtari, Simpson, Gelman, Yao & Gabry, "Pareto smoothed
  importance sampling", arXiv:1507.02646, v9 2024). The fitted shape khat estimates the tail
  index of the weight distribution: the weights have a finite variance only for k < 1/2, and
  importance-sampling estimates are reliable for khat below `psis_khat_threshold(n)` =
  min(1 - 1/log10(n), 0.7). `importance_ess` is Kish's effective sample size.
* **MCMC convergence.** `rhat_and_ess`: rank-normalised split R-hat (the larger of the bulk
  and folded, tail, versions) and bulk effective sample size of a set of chains (Vehtari,
  Gelman, Simpson, Carpenter & Buerkner 2021, Bayesian Analysis 16, 667; arXiv:1903.08008).
  It is the one R-hat of ptaflow: every sampler's result (NUTS, NeuTra, independence
  Metropolis-Hastings, pooled reference chains) reports it.
* **Posterior agreement.** `hellinger_1d` / `hellinger_2d` estimate the Hellinger distance
  H = sqrt(1 - integral sqrt(p q)) between two sample sets (H, not H^2, in [0, 1]) from
  histograms on a common grid; `hellinger_noise_floor` gives the value that sampling noise
  alone produces for identical distributions; `max_hellinger` evaluates every 1-D marginal.

Everything here is host-side NumPy/SciPy on already-drawn samples and weights; arrays from
JAX are accepted. Log weights are natural logs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin
from scipy import special, stats

from .errors import ParameterError

__all__ = [
    "psis",
    "psis_khat",
    "psis_khat_threshold",
    "importance_ess",
    "rhat_and_ess",
    "hellinger_1d",
    "hellinger_2d",
    "hellinger_noise_floor",
    "max_hellinger",
]

# Zhang & Stephens (2009) estimator settings used by Vehtari et al. (and ArviZ / loo):
# the prior on theta is centred with scale 3 on the first quartile of the exceedances, and
# khat is shrunk towards 0.5 by a weakly informative prior worth 10 pseudo-observations.
_ZS_PRIOR_SCALE = 3.0
_K_PRIOR_WEIGHT = 10.0
_K_PRIOR_VALUE = 0.5
_MIN_TAIL = 5  # fewer exceedances cannot support a two-parameter GPD fit
# Largest mean contribution of one histogram cell to 8 H^2 / (1/n_x + 1/n_y) for identical
# distributions with Poisson cell counts: 1 for well-populated cells, 1.650 at most for
# n_x = n_y (cell mean ~1.3), 1.820 for n_x >> n_y (smaller sample's cell mean ~1.1),
# rounded up. See hellinger_noise_floor.
_SPARSE_CELL_INFLATION = 1.83


# ---------------------------------------------------------------------------------------
# Pareto-smoothed importance sampling
# ---------------------------------------------------------------------------------------


def _as_log_weights(log_weights, name: str = "log_weights") -> np.ndarray:
    lw = np.asarray(log_weights, dtype=np.float64)
    if lw.ndim != 1 or lw.size == 0:
        raise ParameterError(f"{name} must be a non-empty 1-D array, got shape {lw.shape}")
    if np.any(np.isnan(lw)) or np.any(lw == np.inf):
        bad = int(np.sum(np.isnan(lw) | (lw == np.inf)))
        raise ParameterError(
            f"{name} must be finite or -inf (zero weight), got {bad} NaN/+inf values; "
            "check the target and proposal log-densities at those samples"
        )
    if np.all(lw == -np.inf):
        raise ParameterError(f"{name}: every weight is zero (all log weights are -inf)")
    return lw


def _gpd_fit(exceedances: np.ndarray) -> tuple[float, float]:
    """Fit a GPD to positive exceedances sorted ascending; returns (k, sigma).

    Zhang & Stephens (2009, Technometrics 51, 316) empirical-Bayes estimator: the profile
    likelihood of theta = -k/sigma is averaged over a grid of m = 30 + floor(sqrt(n)) values
    placed by the quantiles of a prior centred on the sample, giving theta_hat; then
    k = mean(log(1 - theta_hat x)) (the shape in the convention where k > 0 is a heavy
    tail) and sigma = -k / theta_hat. Finally k is shrunk towards 0.5 with the weakly
    informative prior of Vehtari et al. (arXiv:1507.02646, Appendix C): weight 10 / (n + 10).
    """
    x = exceedances
    n = x.size
    m = 30 + int(math.sqrt(n))
    quartile = x[int(n / 4 + 0.5) - 1]
    j = np.arange(1, m + 1, dtype=np.float64)
    theta = 1.0 / x[-1] + (1.0 - np.sqrt(m / (j - 0.5))) / (_ZS_PRIOR_SCALE * quartile)
    k = np.mean(np.log1p(-theta[:, None] * x[None, :]), axis=1)
    profile = n * (np.log(-theta / k) - k - 1.0)  # profile log-likelihood of each theta
    weights = np.exp(profile - special.logsumexp(profile))
    theta_hat = float(np.sum(theta * weights))
    k_hat = float(np.mean(np.log1p(-theta_hat * x)))
    sigma = -k_hat / theta_hat
    k_hat = (n * k_hat + _K_PRIOR_WEIGHT * _K_PRIOR_VALUE) / (n + _K_PRIOR_WEIGHT)
    return k_hat, sigma


def _gpd_quantile(p: np.ndarray, k: float, sigma: float) -> np.ndarray:
    """Quantile function of the GPD with shape k and scale sigma (location 0)."""
    if abs(k) < np.finfo(np.float64).eps:
        return -sigma * np.log1p(-p)
    return sigma * np.expm1(-k * np.log1p(-p)) / k


def _tail_length(n: int, r_eff: float) -> int:
    return int(math.ceil(min(0.2 * n, 3.0 * math.sqrt(n / r_eff))))


def psis(log_weights, *, r_eff: float = 1.0) -> tuple[np.ndarray, float]:
    """Pareto-smoothed importance sampling (Vehtari et al., arXiv:1507.02646, Sec. 3).

    The M = ceil(min(n/5, 3 sqrt(n / r_eff))) largest weights are replaced by the expected
    order statistics of a generalized Pareto distribution fitted to their exceedances over
    the (M+1)-th largest weight, F^-1((z - 1/2)/M), z = 1..M, and capped at the largest raw
    weight. The GPD is fitted with the Zhang & Stephens (2009) estimator including the
    paper's weakly informative prior on k.

    Args:
        log_weights: Natural-log importance weights ln(p/q), shape (n_samples,), finite or
            -inf (zero weight). Any additive constant is allowed.
        r_eff: Relative efficiency (ESS / n) of correlated draws, e.g. from MCMC; 1 for
            independent draws. Enters only the tail length M.

    Returns:
        (smoothed_log_weights, khat): smoothed log weights of shape (n_samples,) on the
        same scale as the input (only the tail changes; normalise with
        `w - logsumexp(w)` for self-normalised estimates), and the estimated Pareto shape.
        khat = inf when there are too few samples for a fit (M < 5, i.e. n < 25: the
        weights cannot be judged), and -inf when the M + 1 largest weights are all equal
        (bounded weights with no tail at all, e.g. a proposal equal to the target).
        Neither the weights nor khat are smoothed in those two cases.

    Raises:
        ParameterError: log_weights is not 1-D, holds NaN or +inf, or is all -inf.
    """
    lw = _as_log_weights(log_weights)
    if not r_eff > 0:
        raise ParameterError(f"r_eff must be positive, got {r_eff}")
    n = lw.size
    m = _tail_length(n, r_eff)
    if m < _MIN_TAIL or m >= n:
        return lw.copy(), math.inf
    lw_max = float(np.max(lw))
    x = lw - lw_max  # largest weight is 1: no overflow
    order = np.argsort(x, kind="stable")
    cutoff = max(float(x[order[-(m + 1)]]), math.log(np.finfo(np.float64).tiny))
    tail_idx = order[-m:]
    tail_idx = tail_idx[x[tail_idx] > cutoff]  # ties with the cutoff stay in the body
    if tail_idx.size == 0:
        return lw.copy(), -math.inf
    if tail_idx.size < _MIN_TAIL:
        return lw.copy(), math.inf
    exp_cutoff = math.exp(cutoff)
    exceedances = np.exp(x[tail_idx]) - exp_cutoff  # ascending, since tail_idx is sorted
    if exceedances[int(exceedances.size / 4 + 0.5) - 1] <= 0:  # rounding at the cutoff
        return lw.copy(), math.inf
    k, sigma = _gpd_fit(exceedances)
    if not (np.isfinite(k) and sigma > 0):
        return lw.copy(), math.inf
    probs = (np.arange(1, tail_idx.size + 1) - 0.5) / tail_idx.size
    smoothed = np.log(_gpd_quantile(probs, k, sigma) + exp_cutoff)
    out = x.copy()
    out[tail_idx] = np.minimum(smoothed, 0.0)  # truncate at the largest raw weight
    return out + lw_max, float(k)


def psis_khat(log_weights, *, r_eff: float = 1.0) -> float:
    """Estimated Pareto shape khat of the importance-weight tail (see `psis`).

    k < 0: bounded weights; 0 <= k < 1/2: finite variance; 1/2 <= k < 0.7: infinite
    variance but PSIS estimates still usable; k >= 0.7 (or above `psis_khat_threshold`):
    unreliable (Vehtari et al., arXiv:1507.02646, Sec. 3.2).

    Args:
        log_weights: Natural-log importance weights, shape (n_samples,).
        r_eff: Relative efficiency of correlated draws (1 for independent draws).

    Returns:
        khat (float; inf when n is too small to judge, -inf for bounded equal top weights).
    """
    return psis(log_weights, r_eff=r_eff)[1]


def psis_khat_threshold(n_samples: int) -> float:
    """Sample-size dependent reliability threshold min(1 - 1/log10(n), 0.7).

    From Vehtari et al. (arXiv:1507.02646, v9, Sec. 3.2.4): below it, PSIS estimates have
    a small relative error with n samples; e.g. 0.5 at n = 100, 0.67 at n = 1000.
    """
    if n_samples <= 1:
        return -math.inf
    return min(1.0 - 1.0 / math.log10(n_samples), 0.7)


def importance_ess(log_weights) -> float:
    """Kish effective sample size (sum w)^2 / sum w^2 of importance weights.

    Args:
        log_weights: Natural-log (unnormalised) weights, shape (n_samples,).

    Returns:
        ESS in [1, n_samples] (n_samples for equal weights).
    """
    lw = _as_log_weights(log_weights)
    return float(np.exp(2.0 * special.logsumexp(lw) - special.logsumexp(2.0 * lw)))


# ---------------------------------------------------------------------------------------
# MCMC convergence
# ---------------------------------------------------------------------------------------


def _rank_normalise(x: np.ndarray) -> np.ndarray:
    """Rank-normalised draws (Vehtari et al. 2021, eq. 14), same shape (n_chains, n_draws, ...)."""
    n_chains, n_draws = x.shape[:2]
    ranks = stats.rankdata(x.reshape((n_chains * n_draws,) + x.shape[2:]), axis=0)
    z = special.ndtri((ranks - 0.375) / (n_chains * n_draws + 0.25))
    return z.reshape(x.shape)


def _split(x: np.ndarray) -> np.ndarray:
    """Each chain's first and last halves as separate chains (odd middle draw dropped)."""
    half = x.shape[1] // 2
    return np.concatenate([x[:, :half], x[:, -half:]], axis=0)


def rhat_and_ess(samples) -> tuple[np.ndarray, np.ndarray]:
    """Rank-normalised split R-hat and bulk ESS of each coordinate of a set of chains.

    Vehtari et al. 2021: numpyro's `split_gelman_rubin` and `effective_sample_size` on
    rank-normalised draws. R-hat is the larger of the bulk and folded (tail) versions; the
    folded draws are |x - median|, so a chain with the right centre but the wrong spread is
    caught too. Both use ranks, so the bulk ESS is the same in any monotone
    reparametrisation of a coordinate (z or the physical parameter); the folded R-hat, which
    folds about the median, can differ slightly. Ties (repeated draws of a
    Metropolis-Hastings chain) get their average rank.

    Args:
        samples: Draws, shape (n_chains, n_draws, n_dim), n_draws >= 4.

    Returns:
        (rhat, ess), each of shape (n_dim,). R-hat below 1.01 when the chains agree.

    Raises:
        ParameterError: Another shape, fewer than 4 draws per chain, or non-finite draws.
    """
    samples = np.asarray(samples, dtype=float)
    if samples.ndim != 3 or samples.shape[1] < 4 or samples.shape[2] < 1:
        raise ParameterError(
            f"samples must have shape (n_chains, n_draws >= 4, n_dim); got {samples.shape}."
        )
    if not np.all(np.isfinite(samples)):
        raise ParameterError("samples must be finite.")
    folded = np.abs(samples - np.median(samples, axis=(0, 1)))
    rhat_bulk = split_gelman_rubin(_rank_normalise(samples))
    rhat_tail = split_gelman_rubin(_rank_normalise(folded))
    # numpyro's effective_sample_size is the paper's estimator (Geyer's initial positive,
    # monotone sequence). Stan and ArviZ also add the first truncated autocorrelation and cap
    # ESS at S log10 S: on 4 x 1000 AR(1) chains numpyro's ESS is the same as theirs or up to
    # 5% higher for rho in [-0.3, 0.9], and 10-70% higher at rho = -0.6, where the cap binds.
    ess_bulk = effective_sample_size(_split(_rank_normalise(samples)))
    return np.maximum(rhat_bulk, rhat_tail), np.asarray(ess_bulk)


# ---------------------------------------------------------------------------------------
# Hellinger distances
# ---------------------------------------------------------------------------------------


def _samples_and_weights(samples, weights, name: str, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(samples, dtype=np.float64)
    if ndim == 1 and x.ndim != 1:
        raise ParameterError(f"{name} must be 1-D samples of shape (n,), got shape {x.shape}")
    if ndim == 2 and (x.ndim != 2 or x.shape[1] != 2):
        raise ParameterError(f"{name} must have shape (n, 2) for a pair, got shape {x.shape}")
    if x.shape[0] == 0:
        raise ParameterError(f"{name} is empty")
    if weights is None:
        w = np.ones(x.shape[0])
    else:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (x.shape[0],):
            raise ParameterError(
                f"weights for {name} must have shape ({x.shape[0]},), got {w.shape}"
            )
        if np.any(~np.isfinite(w)) or np.any(w < 0) or not np.any(w > 0):
            raise ParameterError(
                f"weights for {name} must be finite, non-negative and not all zero"
            )
    if not np.all(np.isfinite(x[w > 0])):
        raise ParameterError(f"{name} holds non-finite samples with positive weight")
    return x, w


def _edges(values: Sequence[np.ndarray], bins: int, value_range) -> np.ndarray:
    if value_range is None:
        lo = min(float(np.min(v)) for v in values)
        hi = max(float(np.max(v)) for v in values)
    else:
        lo, hi = (float(r) for r in value_range)
        if not hi > lo:
            raise ParameterError(f"range must satisfy lower < upper, got {value_range}")
    if hi == lo:  # every sample identical: one bin around the common value
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, bins + 1)


def _bhattacharyya_to_h(p: np.ndarray, q: np.ndarray, what: str) -> float:
    sp, sq = p.sum(), q.sum()
    if sp <= 0 or sq <= 0:
        raise ParameterError(f"{what}: no sample weight falls inside the histogram range")
    bc = float(np.sum(np.sqrt(p / sp * q / sq)))
    return math.sqrt(max(0.0, 1.0 - bc))


def _check_bins(bins: int, name: str = "bins") -> int:
    if int(bins) != bins or bins < 1:
        raise ParameterError(f"{name} must be a positive integer, got {bins!r}")
    return int(bins)


def hellinger_1d(
    x,
    y,
    *,
    weights_x=None,
    weights_y=None,
    bins: int = 50,
    range: tuple[float, float] | None = None,  # noqa: A002  (numpy's name)
) -> float:
    """Hellinger distance H = sqrt(1 - sum_b sqrt(p_b q_b)) between two 1-D sample sets.

    Both sample sets are binned on one common grid of `bins` equal bins (by default spanning
    all samples of both sets); p_b and q_b are the (weighted) fractions per bin. Returns H,
    not H^2, in [0, 1].

    Finite-sample behaviour of this histogram estimator (derivation: H^2 = 1/2 sum_b
    (sqrt(p_b) - sqrt(q_b))^2, expanded to second order in the multinomial fluctuations):
    binning can only lower H (coarse-graining never increases a Hellinger distance), by
    O(bin width^2) for smooth densities; sampling noise raises it: for two samples of one
    distribution, 8 H^2 / (1/n_x + 1/n_y) is approximately chi^2 with (bins - 1) degrees of
    freedom when the bins are well populated, so E[H^2] ~ (bins - 1)(1/n_x + 1/n_y)/8 (n:
    the effective sample size for weighted or correlated samples); sparsely populated bins
    add up to 1.83 times more each; see `hellinger_noise_floor`. For two
    different distributions the spread of H^2 is about sqrt((1 - BC^2)(1/n_x + 1/n_y)/4),
    BC = 1 - H^2.

    Args:
        x: Samples of the first distribution, shape (n_x,).
        y: Samples of the second distribution, shape (n_y,).
        weights_x: Optional non-negative weights of x, shape (n_x,) (linear, not log).
        weights_y: Optional non-negative weights of y, shape (n_y,).
        bins: Number of equal-width bins.
        range: (lower, upper) of the grid; samples outside it are dropped and each
            histogram is renormalised inside it. Default: the extent of both sets.

    Returns:
        H in [0, 1].

    Raises:
        ParameterError: bad shapes, weights or range, or no weight inside the range.
    """
    bins = _check_bins(bins)
    x, wx = _samples_and_weights(x, weights_x, "x", 1)
    y, wy = _samples_and_weights(y, weights_y, "y", 1)
    edges = _edges([x[wx > 0], y[wy > 0]], bins, range)
    p, _ = np.histogram(x, bins=edges, weights=wx)
    q, _ = np.histogram(y, bins=edges, weights=wy)
    return _bhattacharyya_to_h(p, q, "hellinger_1d")


def hellinger_2d(
    x,
    y,
    *,
    weights_x=None,
    weights_y=None,
    bins: int | tuple[int, int] = 30,
    range: tuple[tuple[float, float], tuple[float, float]] | None = None,  # noqa: A002
) -> float:
    """Hellinger distance between two sample sets of a pair of parameters.

    The 2-D analogue of `hellinger_1d`: both sets are binned on one common rectangular grid
    (bins per axis; by default spanning all samples of both sets). The same finite-sample
    behaviour holds with (bins_0 * bins_1) cells in place of bins: the noise floor grows with
    the number of cells, so 2-D grids need coarser bins or more samples than 1-D ones.

    Args:
        x: Samples of the first distribution, shape (n_x, 2).
        y: Samples of the second distribution, shape (n_y, 2).
        weights_x: Optional non-negative weights of x, shape (n_x,).
        weights_y: Optional non-negative weights of y, shape (n_y,).
        bins: Bins per axis, an int or (bins_0, bins_1).
        range: ((lower_0, upper_0), (lower_1, upper_1)); samples outside are dropped and
            each histogram is renormalised inside. Default: the extent of both sets.

    Returns:
        H in [0, 1].

    Raises:
        ParameterError: bad shapes, weights or range, or no weight inside the range.
    """
    nb = (bins, bins) if np.ndim(bins) == 0 else tuple(bins)
    if len(nb) != 2:
        raise ParameterError(f"bins must be an int or a pair of ints, got {bins!r}")
    nb = tuple(_check_bins(b) for b in nb)
    x, wx = _samples_and_weights(x, weights_x, "x", 2)
    y, wy = _samples_and_weights(y, weights_y, "y", 2)
    if range is not None and len(range) != 2:
        raise ParameterError(f"range must be a pair of (lower, upper) pairs, got {range!r}")
    edges = [
        _edges([x[wx > 0, axis], y[wy > 0, axis]], nb[axis], None if range is None else range[axis])
        for axis in (0, 1)
    ]
    p, _, _ = np.histogram2d(x[:, 0], x[:, 1], bins=edges, weights=wx)
    q, _, _ = np.histogram2d(y[:, 0], y[:, 1], bins=edges, weights=wy)
    return _bhattacharyya_to_h(p, q, "hellinger_2d")


def hellinger_noise_floor(n_x: float, n_y: float, *, n_bins: int, quantile: float = 0.99) -> float:
    """Upper bound on the H that sampling noise alone gives for one distribution.

    For two sample sets of one distribution binned into B well-populated cells, the
    histogram estimate satisfies S = 8 H^2 / (1/n_x + 1/n_y) ~ chi^2_(B-1) to leading order
    (Pearson's statistic in disguise: H^2 ~ sum_b (p^_b - q^_b)^2 / (8 p_b)). Sparse cells
    break that expansion: with Poisson counts of mean lambda in a cell and n_x = n_y, the
    cell's exact contribution to E[S] is 4 (lambda - (E sqrt(N_lambda))^2), which is 1 for
    large lambda but peaks at 1.65 near lambda ~ 1.3 (and tends to 0 for empty cells); for
    n_x >> n_y the peak is 1.82. The bound returned here is therefore
    sqrt(1.83 chi^2_(B-1)(quantile) (1/n_x + 1/n_y) / 8), whatever the occupancy of the
    cells; the plain chi^2 value (typical for well-populated grids) is this over sqrt(1.83).

    Args:
        n_x: (Effective) number of samples of the first set (Kish ESS for weighted samples,
            the autocorrelation ESS for MCMC chains).
        n_y: (Effective) number of samples of the second set.
        n_bins: Number of histogram cells (bins, or bins_0 * bins_1 in 2-D).
        quantile: Quantile of the chi^2 distribution.

    Returns:
        The bound on H (at most 1).

    Raises:
        ParameterError: non-positive sizes, bins, or a quantile outside (0, 1).
    """
    if not (n_x > 0 and n_y > 0):
        raise ParameterError(f"sample sizes must be positive, got n_x={n_x}, n_y={n_y}")
    n_bins = _check_bins(n_bins, "n_bins")
    if not 0 < quantile < 1:
        raise ParameterError(f"quantile must lie in (0, 1), got {quantile}")
    if n_bins == 1:
        return 0.0
    chi2 = float(stats.chi2.ppf(quantile, n_bins - 1))
    h2 = _SPARSE_CELL_INFLATION * chi2 * (1.0 / n_x + 1.0 / n_y) / 8.0
    return math.sqrt(min(1.0, h2))


def max_hellinger(
    samples_a,
    samples_b,
    names: Sequence[str],
    *,
    weights_a=None,
    weights_b=None,
    bins: int = 50,
) -> dict[str, float]:
    """Hellinger distance of every 1-D marginal between two posterior sample sets.

    Take `max(result.values())` for the worst-matching parameter (the summary used by Lai &
    Li, arXiv:2504.04211, who quote H <~ 0.3 against MCMC).

    Args:
        samples_a: Samples of the first posterior, shape (n_a, n_dim).
        samples_b: Samples of the second posterior, shape (n_b, n_dim).
        names: Parameter names, length n_dim, in column order.
        weights_a: Optional non-negative weights of samples_a, shape (n_a,).
        weights_b: Optional non-negative weights of samples_b, shape (n_b,).
        bins: Bins per marginal (see `hellinger_1d`).

    Returns:
        {name: H} in column order.

    Raises:
        ParameterError: shapes disagree with each other or with names.
    """
    a = np.asarray(samples_a, dtype=np.float64)
    b = np.asarray(samples_b, dtype=np.float64)
    names = tuple(names)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ParameterError(
            f"samples must have shapes (n_a, n_dim) and (n_b, n_dim), got {a.shape} and {b.shape}"
        )
    if len(names) != a.shape[1]:
        raise ParameterError(f"got {len(names)} names for {a.shape[1]} columns: {names}")
    if len(set(names)) != len(names):
        raise ParameterError(f"parameter names must be unique, got {names}")
    return {
        name: hellinger_1d(a[:, i], b[:, i], weights_x=weights_a, weights_y=weights_b, bins=bins)
        for i, name in enumerate(names)
    }
