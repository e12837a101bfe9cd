"""Posterior inference for one model: flow fit, exact samples, saved results.

    fit = fit_posterior(make_posterior(model="powerlaw", pulsars=10, correlation="hd"))
    fit.diagnostics()          # importance ESS, Pareto khat, training summary
    result = fit.to_result()   # ptaflow.results.PosteriorResult; save_posterior(result, path)
    chains = independence_samples(fit)    # exact chains, flow proposals (Metropolis-Hastings)
    chains = neutra_samples(fit)          # exact MCMC preconditioned by the flow

Flow samples are made exact by importance weights w = L pi |J| / q (their Pareto khat says
whether that is reliable, Vehtari et al. arXiv:1507.02646) and importance resampling, by
independence Metropolis-Hastings with the flow as proposal, or by NeuTra (NUTS in the flow's
latent space, Hoffman et al. arXiv:1903.03704). The MCMC references they are checked against
(plain NUTS on the same target) are in `ptaflow.baselines.mcmc`.

The importance-sampling proposal, the flow with a defensive component where one applies, is
built in `ptaflow.proposal`.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
from flowjax.distributions import Transformed

from .diagnostics import (
    importance_ess,
    max_hellinger,
    psis_khat,
    psis_khat_threshold,
    rhat_and_ess,
)
from .errors import ParameterError
from .evidence import EvidenceResult, estimate_evidence_importance
from .flows import (
    FitInfo,
    FlowConfig,
    TrainConfig,
    fit_variational,
    flow_to_bytes,
)
from .noise_only import NoiseOnlyPosterior
from .posterior import Posterior
from .profiling import PhaseTimes
from .proposal import (
    PriorComponent,
    default_defensive,
    defensive_draws,
    flow_draws,
    importance_draws,
)
from .results import PosteriorResult, provenance
from .sampling import McmcResult, importance_resample, run_neutra

__all__ = [
    "PosteriorFit",
    "fit_posterior",
    "neutra_samples",
    "independence_samples",
    "IndependenceChains",
    "hellinger_table",
]


@dataclasses.dataclass(frozen=True, eq=False)
class PosteriorFit:
    """A trained flow for one posterior and its importance-weighted samples.

    Attributes:
        posterior: the target.
        flow: the trained flow on unconstrained z.
        flow_config, train_config: how it was built and trained.
        info: training record (of the training; in refit mode up to two parameters the
            flow was then carried on to the defensive component, `ptaflow.proposal`).
        z: (n, n_dim) importance samples in z: the flow's draws, then (with a defensive
            component) the component's draws; log_q: the proposal's log-density at them (the
            defensive mixture's when there is one).
        log_likelihood: (n,) ln L; log_prior_z: (n,) ln pi + ln |det dtheta/dz|.
        seed: the run's seed.
        wall_time_s: seconds from the call to the weighted samples (compilation included).
        n_flow: how many of the samples are flow draws (the first n_flow; default all).
        noise_only: the noise-only model behind the defensive component, or None.
        prior_component: refit mode's defensive component (the prior, with the quadrature
            grid's density where there is one), or None.
        quadrature: refit mode, one or two parameters: ln Z by quadrature on the grid behind
            the defensive component (`ptaflow.quadrature`), else None;
            quadrature_failure: why there is none where one was tried (the grid's error).
        strata: sizes of the blocks of samples drawn with fixed counts (refit mode with the
            prior component: flow, prior, grid), whose variances make the importance error
            (`ptaflow.evidence.estimate_evidence_importance`), or None (one sample).
    """

    posterior: Posterior
    flow: object
    flow_config: FlowConfig
    train_config: TrainConfig
    info: FitInfo
    z: np.ndarray
    log_q: np.ndarray
    log_likelihood: np.ndarray
    log_prior_z: np.ndarray
    seed: int
    wall_time_s: float
    n_flow: int | None = None
    noise_only: NoiseOnlyPosterior | None = None
    prior_component: PriorComponent | None = None
    quadrature: EvidenceResult | None = None
    quadrature_failure: str = ""
    strata: tuple[int, ...] | None = None

    @property
    def defensive_component(self) -> NoiseOnlyPosterior | PriorComponent | None:
        """The defensive mixture's component q_0 (noise-only posterior or prior), or None."""
        return self.noise_only if self.noise_only is not None else self.prior_component

    @property
    def n_flow_draws(self) -> int:
        """How many of the samples are flow draws (they come first)."""
        return self.z.shape[0] if self.n_flow is None else int(self.n_flow)

    @property
    def defensive_fraction(self) -> float:
        """Share of the samples drawn from the defensive component."""
        return 1.0 - self.n_flow_draws / self.z.shape[0]

    @property
    def log_evidence(self) -> tuple[float, float]:
        """ln Z by importance sampling and its standard error (sqrt(1/ESS - 1/n), or from the
        variances of the `strata`: `ptaflow.evidence.estimate_evidence_importance`;
        meaningful when khat < 0.7)."""
        result = estimate_evidence_importance(self.log_target, self.log_q, strata=self.strata)
        return result.log_evidence, result.log_evidence_err

    @property
    def theta(self) -> np.ndarray:
        """Flow samples in physical parameters, (n, n_dim)."""
        return np.asarray(self.posterior.to_theta(jnp.asarray(self.z)))

    @property
    def log_target(self) -> np.ndarray:
        """ln L + ln pi + ln|J| at the samples (the z-space posterior, unnormalised)."""
        return self.log_likelihood + self.log_prior_z

    @property
    def log_weights(self) -> np.ndarray:
        """Importance log-weights ln(L pi |J| / q), unnormalised."""
        lw = self.log_target - self.log_q
        return np.where(np.isfinite(lw), lw, -np.inf)

    @property
    def khat(self) -> float:
        """Pareto-smoothed importance-sampling shape of the weights (< 0.7: reliable)."""
        return psis_khat(self.log_weights)

    @property
    def ess(self) -> float:
        """Kish effective sample size of the importance weights."""
        return importance_ess(self.log_weights)

    def resample(self, key, n: int | None = None) -> np.ndarray:
        """Importance-resampled posterior draws of theta, (n, n_dim) (default n = ESS)."""
        n = int(self.ess) if n is None else int(n)
        return np.asarray(importance_resample(key, self.theta, self.log_weights, n))

    def diagnostics(self) -> dict:
        """Importance ESS (absolute and fraction), khat and its threshold, training summary."""
        n = self.z.shape[0]
        out = {
            "n_samples": n,
            "n_flow_draws": self.n_flow_draws,
            "defensive_fraction": self.defensive_fraction,
            "ess": self.ess,
            "ess_fraction": self.ess / n,
            "khat": self.khat,
            "khat_threshold": psis_khat_threshold(n),
            "n_nonfinite": int(np.sum(~np.isfinite(self.log_target))),
            "wall_time_s": self.wall_time_s,
        }
        if self.noise_only is not None:
            log_z, log_z_err = self.log_evidence
            log_z0, log_z0_err = self.noise_only.log_evidence, self.noise_only.log_evidence_err
            out.update(
                {
                    "log_evidence_importance": log_z,
                    "log_evidence_importance_err": log_z_err,
                    "noise_only_log_evidence": log_z0,
                    "noise_only_log_evidence_err": log_z0_err,
                    "log_bayes_factor_vs_noise_only": log_z - log_z0,
                    "log_bayes_factor_vs_noise_only_err": float(np.hypot(log_z_err, log_z0_err)),
                }
            )
        out.update({f"train_{k}": v for k, v in self.info.to_dict().items()})
        return out

    def to_result(self, **extra_provenance) -> PosteriorResult:
        """The weighted samples, diagnostics, settings, flow and provenance as a result."""
        theta = self.theta
        log_prior = np.asarray(self.posterior.log_prior(jnp.asarray(theta)))
        labels = self.posterior.prior.latex_labels()
        settings = {
            "model": self.posterior.model_name,
            "mode": self.posterior.mode,
            "correlation": self.posterior.correlation,
            "seed": self.seed,
            "flow": dataclasses.asdict(self.flow_config),
            "train": dataclasses.asdict(self.train_config),
            "defensive_fraction": self.defensive_fraction,
        }
        return PosteriorResult(
            param_names=self.posterior.param_names,
            samples=theta,
            log_likelihood=self.log_likelihood,
            log_prior=log_prior,
            log_weights=self.log_weights,
            diagnostics=self.diagnostics(),
            settings=settings,
            provenance=provenance(**extra_provenance),
            flow_bytes=flow_to_bytes(self.flow),
            flow_config={**dataclasses.asdict(self.flow_config), "n_dim": self.posterior.n_dim},
            latex_labels={n: labels[n] for n in self.posterior.param_names},
        )


def fit_posterior(
    posterior: Posterior,
    *,
    seed: int = 0,
    flow_config: FlowConfig | None = None,
    train_config: TrainConfig | None = None,
    n_samples: int = 20000,
    defensive: float | None = None,
    checkpoint=None,
    progress: bool = True,
    timings: PhaseTimes | None = None,
    noise_only: NoiseOnlyPosterior | None = None,
    init_flow: Transformed | None = None,
) -> PosteriorFit:
    """Train a flow on the posterior and draw importance-weighted samples from it.

    Args:
        posterior: the target (`ptaflow.posterior.make_posterior` / `make_refit_posterior`).
        seed: the whole run is a deterministic function of it.
        flow_config, train_config: see `ptaflow.settings`. The target values of the
            importance samples are split over `train_config.devices` as the training's are.
        n_samples: importance samples drawn after training (flow and component draws).
        defensive: share of them drawn from the defensive component (`ptaflow.proposal`):
            the exact noise-only posterior in full mode (default `DEFENSIVE_FRACTION`), the
            prior and the quadrature grid in refit mode (default `REFIT_DEFENSIVE_FRACTION`,
            only up to `REFIT_DEFENSIVE_MAX_DIM` parameters, else 0; all three in
            `ptaflow.proposal`). 0 weights flow draws alone.
        checkpoint: training checkpoint file (resumes when present).
        progress: show the training progress bar.
        timings: a `ptaflow.profiling.PhaseTimes` to record the phases in: those of
            `fit_variational`, then "samples" (the importance samples and their target values) and,
            in refit mode up to two parameters, "evidence_quadrature" and "component_fit" (the
            trained flow carried on to the defensive component: `ptaflow.proposal`).
        noise_only: the noise-only model of the same pulsars, data and red-noise priors, if
            already computed (e.g. `fit.noise_only` of another SGWB model's fit): it is
            re-bound to this posterior (`NoiseOnlyPosterior.for_posterior`, which checks that
            it matches) instead of integrated again.
        init_flow: a flow to start the training from instead of a new one at the Laplace
            approximation (e.g. `warm_start_flow` of another model's fit); `flow_config`
            must describe its architecture.
    """
    if not isinstance(posterior, Posterior):
        raise ParameterError(
            f"posterior={posterior!r}: expected a ptaflow.posterior.Posterior (make_posterior)"
        )
    if n_samples < 100:
        raise ParameterError(f"n_samples={n_samples}: draw at least 100 flow samples")
    defensive = default_defensive(posterior) if defensive is None else defensive
    if not 0.0 <= defensive < 1.0:
        raise ParameterError(f"defensive={defensive}: expected a share in [0, 1)")
    flow_config = flow_config or FlowConfig()
    train_config = train_config or TrainConfig()
    t0 = time.perf_counter()
    key_fit, key_draw = jax.random.split(jax.random.key(seed))
    flow, info = fit_variational(
        key_fit,
        posterior,
        posterior.n_dim,
        flow=init_flow,
        flow_config=flow_config,
        config=train_config,
        checkpoint=checkpoint,
        progress=progress,
        timings=timings,
    )
    draws = importance_draws(
        posterior,
        flow,
        key_draw,
        n_samples,
        defensive,
        devices=train_config.devices,
        noise_only=noise_only,
        timings=timings,
        flow_config=flow_config,
        train_config=train_config,
    )
    return PosteriorFit(
        posterior=posterior,
        flow=draws.flow,
        flow_config=flow_config,
        train_config=train_config,
        info=info,
        z=draws.z,
        log_q=draws.log_q,
        log_likelihood=draws.log_likelihood,
        log_prior_z=draws.log_prior_z,
        seed=seed,
        wall_time_s=time.perf_counter() - t0,
        n_flow=draws.n_flow,
        noise_only=draws.noise_only,
        prior_component=draws.prior_component,
        quadrature=draws.quadrature,
        quadrature_failure=draws.quadrature_failure,
        strata=draws.strata,
    )


@dataclasses.dataclass(frozen=True, eq=False)
class IndependenceChains:
    """Independence Metropolis-Hastings chains with the flow as proposal (samples in z).

    Attributes:
        samples: (n_chains, n_per_chain, n_dim); log_prob: (n_chains, n_per_chain) target.
        acceptance: mean acceptance rate.
        rhat, ess: rank-normalised split R-hat (the larger of bulk and tail) and bulk ESS per
            dimension, (n_dim,) each (`ptaflow.diagnostics.rhat_and_ess`).
        wall_time_s: seconds (flow draws and target evaluations included).
    """

    samples: np.ndarray
    log_prob: np.ndarray
    acceptance: float
    rhat: np.ndarray
    ess: np.ndarray
    wall_time_s: float

    @property
    def flat_samples(self) -> np.ndarray:
        return self.samples.reshape(-1, self.samples.shape[-1])


def independence_samples(
    fit: PosteriorFit, *, seed: int = 1, num_chains: int = 8, num_samples: int = 2000
) -> IndependenceChains:
    """Exact posterior chains by independence Metropolis-Hastings with the flow as proposal.

    Proposals z' ~ q (fresh draws, not those behind `fit`'s importance weights) are accepted
    with probability min(1, w(z')/w(z)), w = p/q (Tierney 1994): the chains target the exact
    posterior whatever the flow, and mix in a few steps when q is close to it. q is the fit's
    proposal: the flow, or the flow with its defensive component (the same share of draws,
    in random order). Costs one target evaluation per draw and no gradients.

    Raises:
        ParameterError: num_chains < 1 or num_samples < 4 (split R-hat needs two draws per
            half-chain).
    """
    if num_chains < 1 or num_samples < 4:
        raise ParameterError(
            f"num_chains={num_chains}, num_samples={num_samples}: expected num_chains >= 1 "
            "and num_samples >= 4 (split R-hat needs two draws per half-chain)"
        )
    t0 = time.perf_counter()
    n = num_chains * num_samples
    key = jax.random.key(seed)
    devices = fit.train_config.devices
    if fit.defensive_component is None or fit.defensive_fraction == 0:
        z, log_q, ll, lp = flow_draws(fit.posterior, fit.flow, key, n, devices=devices)
    else:
        n_noise = max(1, round(fit.defensive_fraction * n))
        key_flow, key_noise = jax.random.split(key)
        part = flow_draws(fit.posterior, fit.flow, key_flow, n - n_noise, devices=devices)
        part = defensive_draws(
            fit.posterior,
            fit.flow,
            fit.defensive_component,
            part,
            key_noise,
            n_noise,
            devices=devices,
        )
        order = np.random.default_rng(seed + 1).permutation(n)
        z, log_q, ll, lp = (a[order] for a in part)
    log_p = ll + lp
    lw = np.where(np.isfinite(log_p - log_q), log_p - log_q, -np.inf)
    z = z.reshape(num_chains, num_samples, -1)
    lw = lw.reshape(num_chains, num_samples)
    log_p = log_p.reshape(num_chains, num_samples)
    log_u = np.log(np.random.default_rng(seed).uniform(size=(num_chains, num_samples)))
    idx = np.zeros((num_chains, num_samples), dtype=int)
    # Start each chain at its highest-weight draw among the first 100 (a draw from ~p).
    current = np.argmax(lw[:, :100], axis=1)
    accepted = 0
    for t in range(num_samples):
        cur_lw = lw[np.arange(num_chains), current]
        accept = log_u[:, t] < lw[:, t] - cur_lw
        current = np.where(accept, t, current)
        accepted += int(accept.sum())
        idx[:, t] = current
    rows = np.arange(num_chains)[:, None]
    samples = z[rows, idx]
    chains_log_p = log_p[rows, idx]
    rhat, ess = rhat_and_ess(samples)
    return IndependenceChains(
        samples=samples,
        log_prob=chains_log_p,
        acceptance=accepted / n,
        rhat=rhat,
        ess=ess,
        wall_time_s=time.perf_counter() - t0,
    )


def neutra_samples(
    fit: PosteriorFit,
    *,
    seed: int = 1,
    num_chains: int = 4,
    num_warmup: int = 500,
    num_samples: int = 1000,
    chain_method: str = "vectorized",
    progress: bool = False,
) -> McmcResult:
    """Exact posterior samples by NUTS in the trained flow's latent space (samples in z);
    `chain_method` as in `ptaflow.sampling.run_neutra` ("parallel": over the local devices)."""
    return run_neutra(
        jax.random.key(seed),
        fit.posterior.log_prob,
        fit.flow,
        num_chains=num_chains,
        num_warmup=num_warmup,
        num_samples=num_samples,
        chain_method=chain_method,
        progress_bar=progress,
    )


def hellinger_table(
    result: PosteriorResult, reference: PosteriorResult, *, bins: int = 50
) -> dict[str, float]:
    """1-D Hellinger distances H (not H^2) of every parameter between two results."""
    if tuple(result.param_names) != tuple(reference.param_names):
        raise ParameterError(
            f"results have different parameters: {result.param_names} vs {reference.param_names}"
        )
    return max_hellinger(
        result.samples,
        reference.samples,
        result.param_names,
        weights_a=result.weights,
        weights_b=reference.weights,
        bins=bins,
    )
