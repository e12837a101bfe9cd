"""Bayesian evidence estimates with error bars and diagnostics.

Two estimators, each returning an immutable `EvidenceResult`:

* `estimate_evidence_harmonic`: the learned harmonic mean with a concentrated normalizing
  flow, described in "Learned harmonic mean" below.
* `estimate_evidence_importance`: importance sampling Z = mean(L pi / q) over theta_i ~ q
  (e.g. a variational flow), with the Pareto-k and effective-sample-size diagnostics of
  `ptaflow.diagnostics`.

Both need the prior to be normalised and, when the samples live in an unconstrained space,
the log target to include the log-Jacobian of the map (as `Posterior.log_prob` does); then
the evidence is the same in either space. All logs are natural. The estimators never
switch JAX's float64 mode on; bookkeeping is done in NumPy float64 whatever JAX's mode.

Learned harmonic mean
---------------------
McEwen et al. 2021, arXiv:2111.12720, Sec. 3-4; Polanska et al. 2024, arXiv:2405.05969,
Sec. 2-3. From samples theta_i of the true posterior and their unnormalised log posterior
ln(L pi), with a normalised density phi that is contained in the posterior,

    1/Z = E_post[phi(theta) / (L(theta) pi(theta))] ~ (1/N) sum_i phi(theta_i) / (L pi)(theta_i).

phi is a rational-quadratic-spline flow (flowjax; masked autoregressive by default,
`HARMONIC_FLOW`) fitted by maximum likelihood to one part of the samples and evaluated on
the other, with its standard-normal base concentrated to variance T < 1 ("temperature") so
that its tails are lighter than the posterior's. `estimate_evidence_harmonic` takes five
steps:

1. Split the samples: with chains (3-D `samples` or `chain_ids`) the first
   round(train_fraction * n_chains) chains train and the others evaluate, one block per
   chain; otherwise the first train_fraction of the samples (a contiguous part, so
   correlated MCMC draws stay apart) trains and the rest is cut into `n_blocks` contiguous
   blocks.
2. Standardise with the training part: u = C^-1 (x - m), m its mean and C the Cholesky
   factor of its covariance (whiten=True; the flow then only has to learn departures from a
   unit Gaussian, which halves the error in 30-D tests) or diag(standard deviations)
   (whiten=False).
3. Fit the flow (spline on [-interval, interval] in standardised units, identity outside)
   to the training part by maximum likelihood (`flowjax.train.fit_to_data`, early stopping
   on a validation fraction `val_prop`, keeping the best validation loss).
4. Concentrate it: the standard normal base becomes N(0, T I). Then
   ln phi(x) = ln phi_u(C^-1 (x - m)) - ln|det C| is normalised in the samples' space.
5. With ln r_i = ln phi(x_i) - log_target_i on the evaluation samples, each block j gives
   rho_j = mean_j(r) and the estimate is rho = sum_j w_j rho_j = mean(r), w_j = n_j / N,
   computed with logsumexp. Its variance is sum_j w_j (rho_j - rho)^2 / (n_eff - 1) with
   n_eff = N^2 / sum_j n_j^2 (the papers' formula), and the error on ln Z = -ln rho is
   sqrt(var) / rho.

With `flow` given (a normalised flowjax flow on the samples' space with a standard-normal
base, e.g. the variational posterior flow of `ptaflow.inference.fit_posterior`), steps 1-3
are skipped: that flow, concentrated to temperature T, is phi, and every sample (chain)
evaluates. The estimator stays valid as long as the samples are independent of how the flow
was trained (e.g. chains whose proposals are fresh draws of the flow); a flow that matches
the posterior well makes the terms nearly constant (for an exact flow their relative
variance is (2T - T^2)^(-n_dim/2) - 1, 0.5 % per dimension at T = 0.9).

Reliability checks (each failing one adds a warning; numbers go to `diagnostics`): n_eff
(blocks) < min_blocks; Kish ESS of the terms r_i < min_ess; Pareto khat of the terms r_i
above 0.5 (the terms have infinite variance: phi's tails reach beyond the posterior's); an
extreme upper spread of ln r, max - median > ln N (one term outweighs N median ones; the low
side of the range is harmless, since samples where phi is tiny contribute nothing, and it is
wide whenever the posterior has heavier tails than the flow, e.g. near a prior boundary in
unconstrained coordinates); and, when `log_target_fn` is given, containment:
`n_containment` draws from phi must not fall below the evaluation samples' 1 % log_target
quantile more often than 1 % (beyond a 3-sigma binomial allowance).
"""

from __future__ import annotations

import dataclasses
import math
import time
import types
from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from flowjax.distributions import Normal, StandardNormal, Transformed
from scipy import special

from .diagnostics import importance_ess, psis, psis_khat, psis_khat_threshold
from .errors import ParameterError
from .flows.construction import density_flow
from .flows.maximum_likelihood import fit_maximum_likelihood
from .settings import FlowConfig

__all__ = [
    "EvidenceResult",
    "estimate_evidence_importance",
    "estimate_evidence_harmonic",
    "HARMONIC_FLOW",
]

# The evaluation samples' log-target quantile that draws from phi are compared with in the
# containment check: a phi inside the posterior puts at most this fraction below it.
_CONTAINMENT_QUANTILE = 0.01
_LOG_PROB_CHUNK = 32768  # samples per flow evaluation (bounds memory for large sample sets)

#: Architecture of the learned harmonic mean's flow phi when `estimate_evidence_harmonic` is
#: given no `flow_config` (spline interval in standardised units). The small flow (2 layers of
#: width 32) generalises better from a few thousand samples: in the 30-D Gaussian test a
#: 4 x 64 flow overfitted and doubled the error.
HARMONIC_FLOW = FlowConfig(
    family="maf", flow_layers=2, nn_width=32, nn_depth=1, knots=8, interval=5.0
)


@dataclasses.dataclass(frozen=True)
class EvidenceResult:
    """An evidence estimate with its error, diagnostics and warnings.

    Attributes:
        log_evidence: ln Z (natural log of the evidence).
        log_evidence_err: Standard error of ln Z (1 sigma).
        method: "harmonic" (learned harmonic mean), "importance" (importance sampling) or
            "quadrature" (a grid, `ptaflow.quadrature`).
        n_samples: Number of samples the estimate averages over (for "harmonic": the
            evaluation part; the training part is in diagnostics["n_train"]).
        n_eff: Effective number of samples behind the estimate: the Kish ESS of the
            importance weights, or of the harmonic-mean terms phi / (L pi).
        diagnostics: Named numbers describing the estimate's reliability (read-only).
        warnings: Human-readable warnings; empty when every check passed.
        wall_time_s: Wall-clock time of the estimate, s.
    """

    log_evidence: float
    log_evidence_err: float
    method: str
    n_samples: int
    n_eff: float
    diagnostics: Mapping[str, Any]
    warnings: tuple[str, ...] = ()
    wall_time_s: float = 0.0

    def __post_init__(self):
        if self.method not in ("harmonic", "importance", "quadrature"):
            raise ParameterError(
                f"method must be 'harmonic', 'importance' or 'quadrature', got {self.method!r}"
            )
        object.__setattr__(self, "diagnostics", types.MappingProxyType(dict(self.diagnostics)))
        object.__setattr__(self, "warnings", tuple(self.warnings))

    @property
    def ok(self) -> bool:
        """True when no diagnostic raised a warning."""
        return not self.warnings

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict of every field (for JSON / HDF5 attributes)."""
        return {
            "log_evidence": float(self.log_evidence),
            "log_evidence_err": float(self.log_evidence_err),
            "method": self.method,
            "n_samples": int(self.n_samples),
            "n_eff": float(self.n_eff),
            "diagnostics": {k: _plain(v) for k, v in self.diagnostics.items()},
            "warnings": list(self.warnings),
            "wall_time_s": float(self.wall_time_s),
        }

    def __str__(self) -> str:
        flag = "" if self.ok else f" [{len(self.warnings)} warning(s)]"
        return (
            f"ln Z = {self.log_evidence:.4f} +- {self.log_evidence_err:.4f} "
            f"({self.method}, n = {self.n_samples}, n_eff = {self.n_eff:.0f}){flag}"
        )


def _plain(value):
    if isinstance(value, (np.generic, jax.Array)):
        return np.asarray(value).item()
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------
# Importance sampling
# ---------------------------------------------------------------------------------------


def _khat_warnings(khat: float, n: int, what: str) -> list[str]:
    threshold = psis_khat_threshold(n)
    if khat == math.inf:
        return [f"{what}: too few samples ({n}) to estimate the Pareto k of the tail"]
    if khat > threshold:
        return [
            f"{what}: Pareto khat = {khat:.2f} exceeds the reliability threshold "
            f"{threshold:.2f} for n = {n} (Vehtari et al. 2024): the estimate is dominated "
            "by a few samples and its error bar is not trustworthy"
        ]
    if khat > 0.5:
        return [
            f"{what}: Pareto khat = {khat:.2f} > 0.5: the terms have infinite variance, so "
            "the error bar may be underestimated"
        ]
    return []


def estimate_evidence_importance(
    log_target, log_q, *, min_ess: float = 100.0, strata=None
) -> EvidenceResult:
    """Evidence by importance sampling, Z = E_q[L pi / q].

    With theta_i ~ q, the log weights are lw_i = log_target_i - log_q_i and
    ln Z = logsumexp(lw) - ln n. The estimate of Z is unbiased; its relative standard error
    by the delta method is std(w) / (sqrt(n) mean(w)) = sqrt(1/ESS - 1/n), which is the
    error quoted on ln Z. It is meaningful only when the weights have a finite variance
    (Pareto khat < 0.5); khat is estimated with PSIS (Vehtari et al., arXiv:1507.02646).

    A mixture q = sum_j (n_j / n) q_j sampled with fixed counts, n_j draws from each q_j
    (`strata`), has the variance sum_j n_j var_j(w) / n^2, var_j within block j (Owen &
    Zhou 2000, JASA 95, 135): the spread of random counts, which the formula above counts,
    is absent. With a component whose draws mostly fall where the posterior is not (weights
    near 0), that spread is most of the variance: the two-parameter refit proposals'
    errors are about half as large this way.

    Args:
        log_target: Unnormalised log posterior ln L + ln pi (normalised prior, including
            the log-Jacobian of q's parametrisation) at the samples, shape (n_samples,);
            -inf where the prior vanishes.
        log_q: Normalised log density of the proposal at the same samples, shape
            (n_samples,), finite.
        min_ess: Warn when the Kish effective sample size is below this.
        strata: sizes of consecutive blocks of the samples, each drawn with a fixed count
            from one of q's components (they sum to n), or None (one block: the samples are
            independent draws of q).

    Returns:
        EvidenceResult with method "importance"; diagnostics: khat, khat_threshold, ess,
        ess_fraction, log_evidence_psis (from the Pareto-smoothed weights), n_zero_weight,
        log_weight_max.

    Raises:
        ParameterError: shapes differ, log_q is not finite, or log_target is NaN or +inf.
    """
    start = time.perf_counter()
    lt = np.asarray(log_target, dtype=np.float64)
    lq = np.asarray(log_q, dtype=np.float64)
    if lt.ndim != 1 or lt.shape != lq.shape or lt.size == 0:
        raise ParameterError(
            "log_target and log_q must be 1-D arrays of one length, got shapes "
            f"{lt.shape} and {lq.shape}"
        )
    if not np.all(np.isfinite(lq)):
        raise ParameterError(
            f"log_q must be finite at every sample drawn from q, got {np.sum(~np.isfinite(lq))} "
            "non-finite values"
        )
    if np.any(np.isnan(lt)) or np.any(lt == np.inf):
        raise ParameterError("log_target holds NaN or +inf values; only -inf is allowed")
    n = lt.size
    lw = lt - lq
    if np.all(lw == -np.inf):
        raise ParameterError(
            "every importance weight is zero (log_target is -inf at all samples): q puts no "
            "mass where the posterior is"
        )
    log_evidence = float(special.logsumexp(lw) - math.log(n))
    ess = importance_ess(lw)
    blocks = _blocks(strata, n)
    if len(blocks) == 1:
        err = math.sqrt(max(1.0 / ess - 1.0 / n, 0.0))
    else:  # sum_j n_j var_j(w) / (n mean(w))^2, weights scaled by their largest
        w = np.exp(lw - np.max(lw))
        parts = np.split(w, np.cumsum(blocks)[:-1])
        err = math.sqrt(sum(b.size * float(np.var(b)) for b in parts)) / float(np.sum(w))
    smoothed, khat = psis(lw)
    diagnostics = {
        "khat": khat,
        "khat_threshold": psis_khat_threshold(n),
        "ess": ess,
        "ess_fraction": ess / n,
        "log_evidence_psis": float(special.logsumexp(smoothed) - math.log(n)),
        "n_zero_weight": int(np.sum(lw == -np.inf)),
        "log_weight_max": float(np.max(lw)),
        "strata": list(blocks),
    }
    warnings = _khat_warnings(khat, n, "importance weights")
    if ess < min_ess:
        warnings.append(
            f"importance weights: effective sample size {ess:.1f} of {n} is below {min_ess:g}; "
            "the proposal matches the posterior poorly"
        )
    return EvidenceResult(
        log_evidence=log_evidence,
        log_evidence_err=err,
        method="importance",
        n_samples=n,
        n_eff=ess,
        diagnostics=diagnostics,
        warnings=tuple(warnings),
        wall_time_s=time.perf_counter() - start,
    )


def _blocks(strata, n: int) -> tuple[int, ...]:
    """`estimate_evidence_importance`'s strata, checked: positive counts that sum to n."""
    if strata is None:
        return (n,)
    blocks = tuple(int(b) for b in strata)
    if any(b < 1 for b in blocks) or sum(blocks) != n:
        raise ParameterError(
            f"strata={list(strata)}: expected positive block sizes that sum to the {n} samples"
        )
    return blocks


# ---------------------------------------------------------------------------------------
# Learned harmonic mean
# ---------------------------------------------------------------------------------------


def _split(samples, log_target, chain_ids, n_blocks: int, train_fraction: float | None):
    """Flatten the inputs and split them into training samples and evaluation blocks
    (train_fraction None: no training part, every sample evaluates)."""
    x = np.asarray(samples, dtype=np.float64)
    lt = np.asarray(log_target, dtype=np.float64)
    if x.ndim == 3:
        if chain_ids is not None:
            raise ParameterError(
                "chain_ids must be None for samples of shape (n_chains, n_per_chain, n_dim)"
            )
        if lt.shape != x.shape[:2]:
            raise ParameterError(
                f"log_target must have shape {x.shape[:2]} (n_chains, n_per_chain), got {lt.shape}"
            )
        chain_ids = np.repeat(np.arange(x.shape[0]), x.shape[1])
        x = x.reshape(-1, x.shape[-1])
        lt = lt.reshape(-1)
    elif x.ndim == 2:
        if lt.shape != x.shape[:1]:
            raise ParameterError(
                f"log_target must have shape ({x.shape[0]},), matching samples {x.shape}, "
                f"got {lt.shape}"
            )
    else:
        raise ParameterError(
            "samples must have shape (n_samples, n_dim) or (n_chains, n_per_chain, n_dim), "
            f"got {x.shape}"
        )
    if not np.all(np.isfinite(x)):
        raise ParameterError("samples hold non-finite values")
    if not np.all(np.isfinite(lt)):
        raise ParameterError(
            f"log_target must be finite at every posterior sample, got "
            f"{int(np.sum(~np.isfinite(lt)))} non-finite values"
        )
    if train_fraction is not None and not 0.0 < train_fraction < 1.0:
        raise ParameterError(f"train_fraction must lie in (0, 1), got {train_fraction}")

    if chain_ids is not None:
        ids = np.asarray(chain_ids)
        if ids.shape != (x.shape[0],):
            raise ParameterError(
                f"chain_ids must have shape ({x.shape[0]},), one id per sample, got {ids.shape}"
            )
        chains = list(dict.fromkeys(ids.tolist()))  # in order of first appearance
        if train_fraction is None:
            n_train_chains = 0
        else:
            n_train_chains = min(max(round(train_fraction * len(chains)), 1), len(chains) - 1)
        if len(chains) - n_train_chains < 2:
            raise ParameterError(
                f"{len(chains)} chains leave {len(chains) - n_train_chains} for evaluation; the "
                "error needs at least 2 evaluation chains (use more chains, or pass flat "
                "samples without chain_ids to split them into blocks)"
            )
        train_mask = np.isin(ids, chains[:n_train_chains])
        blocks = [np.flatnonzero(ids == c) for c in chains[n_train_chains:]]
        return x[train_mask], x, lt, blocks
    n = x.shape[0]
    n_train = 0 if train_fraction is None else round(train_fraction * n)
    if int(n_blocks) != n_blocks or n_blocks < 2:
        raise ParameterError(f"n_blocks must be an integer >= 2, got {n_blocks!r}")
    if n - n_train < n_blocks or (train_fraction is not None and n_train < 2):
        raise ParameterError(
            f"{n} samples with train_fraction={train_fraction} leave {n_train} for training "
            f"and {n - n_train} for evaluation, fewer than n_blocks={n_blocks} (or < 2 to "
            "train on); use more samples"
        )
    blocks = np.array_split(np.arange(n_train, n), int(n_blocks))
    return x[:n_train], x, lt, blocks


def _standardisation(x_train: np.ndarray, whiten: bool):
    """Affine map u = C^-1 (x - m) from the training samples; returns (m, C, ln|det C|).

    whiten=True: C is the Cholesky factor of the sample covariance (u has unit covariance);
    whiten=False: C = diag(standard deviations).
    """
    shift = x_train.mean(axis=0)
    if whiten:
        cov = np.atleast_2d(np.cov(x_train, rowvar=False))
        try:
            chol = np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            chol = None
        if chol is None or not np.all(np.diag(chol) > 0):
            raise ParameterError(
                "the training samples' covariance is singular (a fixed or linearly dependent "
                "parameter); drop fixed parameters or pass whiten=False"
            )
    else:
        std = x_train.std(axis=0)
        if np.any(std == 0):
            raise ParameterError(
                f"parameter(s) {np.flatnonzero(std == 0).tolist()} have zero spread in the "
                "training samples; drop fixed parameters before estimating the evidence"
            )
        chol = np.diag(std)
    return shift, chol, float(np.sum(np.log(np.diag(chol))))


def _to_standard(x: np.ndarray, shift: np.ndarray, chol: np.ndarray) -> np.ndarray:
    return scipy.linalg.solve_triangular(chol, (x - shift).T, lower=True).T


@eqx.filter_jit
def _flow_log_prob(flow, u):
    return flow.log_prob(u)


@eqx.filter_jit
def _flow_sample(flow, key, n: int):
    return flow.sample(key, (n,))


@eqx.filter_jit
def _vmapped(fn, x):
    return jax.vmap(fn)(x)


@eqx.filter_jit
def _concentrated_log_prob(flow, x, temperature):
    """ln of the flow with its standard-normal base replaced by N(0, T I), at the rows of x."""

    def one(xi):
        u, log_det = flow.bijection.inverse_and_log_det(xi)
        return jnp.sum(jax.scipy.stats.norm.logpdf(u, 0.0, jnp.sqrt(temperature))) + log_det

    return jax.vmap(one)(x)


def _log_prob_chunked(flow, u: np.ndarray) -> np.ndarray:
    out = [
        np.asarray(_flow_log_prob(flow, jnp.asarray(u[i : i + _LOG_PROB_CHUNK])))
        for i in range(0, u.shape[0], _LOG_PROB_CHUNK)
    ]
    return np.concatenate(out).astype(np.float64)


def estimate_evidence_harmonic(
    key,
    samples,
    log_target,
    *,
    chain_ids=None,
    n_blocks: int = 20,
    temperature: float = 0.9,
    train_fraction: float = 0.5,
    whiten: bool = True,
    flow_config: FlowConfig | None = None,
    learning_rate: float = 1e-3,
    max_epochs: int = 200,
    max_patience: int = 10,
    batch_size: int = 256,
    val_prop: float = 0.1,
    log_target_fn: Callable | None = None,
    n_containment: int = 4000,
    min_ess: float = 200.0,
    min_blocks: float = 10.0,
    flow: Transformed | None = None,
) -> EvidenceResult:
    """Evidence by the learned harmonic mean with a concentrated normalizing flow.

    The method (McEwen et al. 2021; Polanska et al. 2024), its five steps, the variant with a
    given `flow` and the reliability checks: module docstring, "Learned harmonic mean".

    Args:
        key: JAX PRNG key; the result is deterministic for a given key.
        samples: Draws from the true posterior, shape (n_samples, n_dim) or
            (n_chains, n_per_chain, n_dim), in the space where log_target is a density.
        log_target: ln L + ln pi (normalised prior, with the log-Jacobian of any map to an
            unconstrained space) at the samples, shape samples.shape[:-1], finite.
        chain_ids: Optional chain label per sample for 2-D samples, shape (n_samples,);
            chains may have different lengths.
        n_blocks: Number of contiguous evaluation blocks when no chains are given.
        temperature: Variance T of the flow's base distribution (T < 1 concentrates phi).
        train_fraction: Fraction of the samples (or chains) used to fit the flow.
        whiten: Standardise with the full covariance (True) or per parameter (False).
        flow_config: Architecture of the fitted flow (`FlowConfig`; its spline interval is in
            standardised units); None: `HARMONIC_FLOW`, 2 autoregressive layers of width 32.
        learning_rate, max_epochs, max_patience, batch_size, val_prop: Adam learning rate,
            maximum training epochs, epochs without validation improvement before stopping,
            batch size, and the fraction of the training part held out for early stopping.
        log_target_fn: Optional pure-JAX callable (n_dim,) -> scalar giving log_target at a
            point, for the containment check.
        n_containment: Number of draws from phi for the containment check (sampling the
            autoregressive flow costs n_dim sequential passes: ~n_dim times a log_prob).
        min_ess: Warn when the Kish ESS of the terms r_i is below this.
        min_blocks: Warn when n_eff (chains or blocks) is below this.
        flow: Optional normalised flow to concentrate instead of fitting one; train_fraction,
            whiten and the flow and training options are then unused.

    Returns:
        EvidenceResult with method "harmonic". diagnostics: temperature, n_train, n_eval,
        n_blocks, n_eff_blocks, log_inverse_evidence, khat and ess_fraction (of the terms),
        log_ratio_min/_max/_range/_upper_spread, flow_epochs and flow_val_loss (fitted flow)
        or flow="given", and, with log_target_fn, containment_fraction and containment_limit.

    Raises:
        ParameterError: inconsistent shapes, non-finite inputs, too few samples or chains for
            the split, a parameter with zero spread (singular covariance), invalid options.
    """
    start = time.perf_counter()
    if not temperature > 0:
        raise ParameterError(f"temperature must be positive, got {temperature}")
    if log_target_fn is not None and (int(n_containment) != n_containment or n_containment < 1):
        raise ParameterError(f"n_containment must be a positive integer, got {n_containment}")
    x_train, x_all, lt_all, blocks = _split(
        samples, log_target, chain_ids, n_blocks, None if flow is not None else train_fraction
    )
    x_eval, lt_eval = x_all[np.concatenate(blocks)], lt_all[np.concatenate(blocks)]
    keys = jax.random.split(key, 3)  # flow initialisation, its fit, draws from phi
    if flow is not None:
        log_phi, draws = _given_phi(flow, x_eval, temperature, keys[2], int(n_containment))
        n_train, extra = 0, {"flow": "given"}
    else:
        log_phi, draws, extra = _fitted_phi(
            keys, x_train, x_eval, temperature, whiten, flow_config or HARMONIC_FLOW,
            int(n_containment), learning_rate=learning_rate, max_epochs=max_epochs,
            patience=max_patience, batch_size=batch_size, val_fraction=val_prop,
        )  # fmt: skip
        n_train = int(x_train.shape[0])
    diagnostics, warnings = _harmonic_checks(log_phi - lt_eval, blocks, min_ess, min_blocks)
    if log_target_fn is not None:
        _containment(diagnostics, warnings, lt_eval, draws(), log_target_fn, n_containment)
    return EvidenceResult(
        log_evidence=-diagnostics["log_inverse_evidence"],
        log_evidence_err=diagnostics.pop("log_evidence_err"),
        method="harmonic",
        n_samples=int(diagnostics["n_eval"]),
        n_eff=diagnostics.pop("ess"),
        diagnostics={"temperature": float(temperature), "n_train": n_train, **diagnostics, **extra},
        warnings=tuple(warnings),
        wall_time_s=time.perf_counter() - start,
    )


def _given_phi(flow, x_eval: np.ndarray, temperature: float, key, n_containment: int):
    """ln phi at the evaluation samples for a given flow concentrated to `temperature`, and a
    function drawing `n_containment` points from phi (x = bijection(u), u ~ N(0, T I))."""
    n_dim = x_eval.shape[1]
    if not isinstance(flow, Transformed) or not isinstance(flow.base_dist, StandardNormal):
        raise ParameterError(
            f"flow={type(flow).__name__}: expected a flowjax Transformed flow with a "
            "StandardNormal base (its base is what the temperature concentrates)"
        )
    if flow.shape != (n_dim,):
        raise ParameterError(f"flow has shape {flow.shape}; the samples have {n_dim} dimensions")
    log_phi = np.concatenate(
        [
            np.asarray(
                _concentrated_log_prob(
                    flow, jnp.asarray(x_eval[i : i + _LOG_PROB_CHUNK]), temperature
                ),
                dtype=np.float64,
            )
            for i in range(0, x_eval.shape[0], _LOG_PROB_CHUNK)
        ]
    )

    def draws():
        u = jax.random.normal(key, (n_containment, n_dim)) * math.sqrt(temperature)
        return _vmapped(flow.bijection.transform, u)

    return log_phi, draws


def _fitted_phi(keys, x_train, x_eval, temperature, whiten, config, n_containment, **training):
    """ln phi at the evaluation samples for a flow of `config` fitted by maximum likelihood
    (`training`: keywords of `fit_maximum_likelihood`) to the standardised training part and
    concentrated to `temperature`; a function drawing `n_containment` points from phi; the
    fit's numbers."""
    key_flow, key_fit, key_check = keys
    n_dim = x_eval.shape[1]
    shift, chol, log_jac = _standardisation(x_train, whiten)
    dtype = jnp.asarray(0.0).dtype  # float64 when the caller enabled it, else float32
    flow = density_flow(key_flow, n_dim, config, dtype)
    u_train = jnp.asarray(_to_standard(x_train, shift, chol), dtype=dtype)
    flow, losses = fit_maximum_likelihood(key_fit, flow, u_train, **training)
    scale = jnp.full((n_dim,), math.sqrt(temperature), dtype=dtype)
    phi = Transformed(Normal(jnp.zeros((n_dim,), dtype=dtype), scale), flow.bijection)
    log_phi = _log_prob_chunked(phi, _to_standard(x_eval, shift, chol)) - log_jac
    fitted = {"flow_epochs": len(losses["val"]), "flow_val_loss": float(np.min(losses["val"]))}

    def draws():
        u = np.asarray(_flow_sample(phi, key_check, n_containment), dtype=np.float64)
        return jnp.asarray(shift + u @ chol.T, dtype=dtype)

    return log_phi, draws, fitted


def _harmonic_checks(log_ratio: np.ndarray, blocks, min_ess: float, min_blocks: float):
    """The estimate from ln r = ln phi - ln(L pi) at the evaluation samples (in block order),
    its error from the blocks' spread, and the checks on the terms: (diagnostics, warnings).
    diagnostics carries "log_evidence_err" and "ess" for the result's own fields."""
    if not np.all(np.isfinite(log_ratio)):
        raise ParameterError(
            "the flow density is not finite at some evaluation samples; "
            "check the samples for extreme outliers"
        )
    sizes = np.array([b.size for b in blocks], dtype=np.float64)
    n_eval = int(sizes.sum())
    bounds = np.concatenate([[0], np.cumsum(sizes).astype(int)])
    log_rho = float(special.logsumexp(log_ratio) - math.log(n_eval))
    log_rho_j = np.array(
        [
            special.logsumexp(log_ratio[a:b]) - math.log(b - a)
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]
    )
    n_eff_blocks = float(n_eval**2 / np.sum(sizes**2))
    weights = sizes / n_eval
    rel_var = float(np.sum(weights * np.expm1(log_rho_j - log_rho) ** 2) / (n_eff_blocks - 1))

    khat = psis_khat(log_ratio)
    ess = importance_ess(log_ratio)
    upper_spread = float(np.max(log_ratio) - np.median(log_ratio))
    diagnostics: dict[str, Any] = {
        "n_eval": n_eval,
        "n_blocks": len(blocks),
        "n_eff_blocks": n_eff_blocks,
        "log_inverse_evidence": log_rho,
        "khat": khat,
        "ess_fraction": ess / n_eval,
        "log_ratio_min": float(np.min(log_ratio)),
        "log_ratio_max": float(np.max(log_ratio)),
        "log_ratio_range": float(np.ptp(log_ratio)),
        "log_ratio_upper_spread": upper_spread,
        "log_evidence_err": math.sqrt(rel_var),
        "ess": ess,
    }
    warnings: list[str] = []
    if n_eff_blocks < min_blocks:
        warnings.append(
            f"only {n_eff_blocks:.1f} effective evaluation chains/blocks (< {min_blocks:g}): "
            f"the error bar is itself uncertain by ~{1 / math.sqrt(2 * (n_eff_blocks - 1)):.0%}"
        )
    if ess < min_ess:
        warnings.append(
            f"harmonic-mean terms: effective sample size {ess:.1f} of {n_eval} is below "
            f"{min_ess:g}; use more posterior samples"
        )
    if khat == math.inf:
        warnings.append(f"harmonic-mean terms: too few samples ({n_eval}) for a Pareto-k check")
    elif khat > 0.5:
        warnings.append(
            f"harmonic-mean terms phi/(L pi): Pareto khat = {khat:.2f} > 0.5, so their variance "
            "is infinite: the flow's tails reach beyond the posterior's (lower the "
            "temperature or refit the flow); ln Z and its error are unreliable"
        )
    if upper_spread > math.log(n_eval):
        warnings.append(
            f"the largest term phi/(L pi) is e^{upper_spread:.1f} times the median one, more "
            f"than the number of evaluation samples ({n_eval}): one sample dominates the "
            "estimate; the flow is not contained in the posterior"
        )
    return diagnostics, warnings


def _containment(diagnostics, warnings, lt_eval, draws, log_target_fn, n_containment) -> None:
    """Containment check (adds to `diagnostics` and `warnings`): the draws from phi must not
    fall below the evaluation samples' `_CONTAINMENT_QUANTILE` log_target quantile more often
    than that fraction, beyond a 3-sigma binomial allowance."""
    lt_draws = np.asarray(_vmapped(log_target_fn, draws), dtype=np.float64)
    lt_draws = np.where(np.isnan(lt_draws), -np.inf, lt_draws)
    level = float(np.quantile(lt_eval, _CONTAINMENT_QUANTILE))
    fraction = float(np.mean(lt_draws < level))
    q = _CONTAINMENT_QUANTILE
    n_eval = lt_eval.shape[0]
    limit = q + 3.0 * math.sqrt(q * (1 - q) * (1.0 / n_containment + 1.0 / n_eval))
    diagnostics["containment_fraction"] = fraction
    diagnostics["containment_limit"] = limit
    if fraction > limit:
        warnings.append(
            f"the concentrated flow is not contained in the posterior: {fraction:.1%} of "
            f"its draws fall below the posterior's {q:.0%} ln(L pi) quantile (allowed "
            f"{limit:.1%}); lower the temperature or refit the flow"
        )
