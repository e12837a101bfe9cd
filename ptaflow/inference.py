"""Posterior inference for one model: flow fit, exact samples, baselines, saved results.

    fit = fit_posterior(make_posterior(model="powerlaw", pulsars=10, correlation="hd"))
    fit.diagnostics()          # importance ESS, Pareto khat, training summary
    result = fit.to_result()   # ptaflow.results.PosteriorResult; save_posterior(result, path)
    chains = neutra_samples(fit)          # exact MCMC preconditioned by the flow
    ref = nuts_baseline(fit.posterior)    # plain NUTS on the same target

Flow samples are made exact by importance weights w = L pi |J| / q (their Pareto khat says
whether that is reliable, Vehtari et al. arXiv:1507.02646) and importance resampling, or by
NeuTra (NUTS in the flow's latent space, Hoffman et al. arXiv:1903.03704).
"""

from __future__ import annotations

import dataclasses
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .diagnostics import importance_ess, max_hellinger, psis_khat, psis_khat_threshold
from .errors import ParameterError
from .flows import FitInfo, FlowConfig, TrainConfig, draw_with_log_q, fit_variational
from .posterior import Posterior
from .results import PosteriorResult, provenance, serialise_flow
from .sampling import McmcResult, importance_resample, run_neutra, run_nuts

__all__ = [
    "PosteriorFit",
    "fit_posterior",
    "flow_draws",
    "neutra_samples",
    "independence_samples",
    "IndependenceChains",
    "nuts_baseline",
    "hellinger_table",
    "mcmc_result",
]


@eqx.filter_jit
def _parts(posterior: Posterior, z):
    return jax.vmap(posterior.log_prob_parts)(z)


def flow_draws(posterior: Posterior, flow, key, n: int, *, chunk: int = 4096):
    """n flow samples z with ln q, ln L and ln pi + ln|J| (host arrays), in fixed-size chunks."""
    zs, log_qs, lls, lps = [], [], [], []
    n_chunks = -(-n // chunk)
    for i in range(n_chunks):
        z, log_q = draw_with_log_q(flow, jax.random.fold_in(key, i), chunk)
        ll, lp = _parts(posterior, z)
        zs.append(np.asarray(z))
        log_qs.append(np.asarray(log_q))
        lls.append(np.asarray(ll))
        lps.append(np.asarray(lp))
    cat = [np.concatenate(a)[:n] for a in (zs, log_qs, lls, lps)]
    return tuple(cat)


@dataclasses.dataclass(frozen=True, eq=False)
class PosteriorFit:
    """A trained flow for one posterior and its importance-weighted samples.

    Attributes:
        posterior: the target.
        flow: the trained flow on unconstrained z.
        flow_config, train_config: how it was built and trained.
        info: training record.
        z: (n, n_dim) flow samples in z; log_q: their flow log-density.
        log_likelihood: (n,) ln L; log_prior_z: (n,) ln pi + ln |det dtheta/dz|.
        seed: the run's seed.
        wall_time_s: seconds from the call to the weighted samples (compilation included).
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
        return {
            "n_samples": n,
            "ess": self.ess,
            "ess_fraction": self.ess / n,
            "khat": self.khat,
            "khat_threshold": psis_khat_threshold(n),
            "n_nonfinite": int(np.sum(~np.isfinite(self.log_target))),
            "wall_time_s": self.wall_time_s,
            **{f"train_{k}": v for k, v in self.info.to_dict().items()},
        }

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
            flow_bytes=serialise_flow(self.flow),
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
    checkpoint=None,
    progress: bool = True,
) -> PosteriorFit:
    """Train a flow on the posterior and draw importance-weighted samples from it.

    Args:
        posterior: the target (`ptaflow.posterior.make_posterior` / `make_refit_posterior`).
        seed: the whole run is a deterministic function of it.
        flow_config, train_config: see `ptaflow.flows`.
        n_samples: flow samples drawn after training.
        checkpoint: training checkpoint file (resumes when present).
        progress: show the training progress bar.
    """
    if not isinstance(posterior, Posterior):
        raise ParameterError(
            f"posterior={posterior!r}: expected a ptaflow.posterior.Posterior (make_posterior)"
        )
    if n_samples < 100:
        raise ParameterError(f"n_samples={n_samples}: draw at least 100 flow samples")
    flow_config = flow_config or FlowConfig()
    train_config = train_config or TrainConfig()
    t0 = time.perf_counter()
    key_fit, key_draw = jax.random.split(jax.random.key(seed))
    flow, info = fit_variational(
        key_fit,
        posterior,
        posterior.n_dim,
        flow_config=flow_config,
        config=train_config,
        checkpoint=checkpoint,
        progress=progress,
    )
    z, log_q, ll, lp = flow_draws(posterior, flow, key_draw, n_samples)
    return PosteriorFit(
        posterior=posterior,
        flow=flow,
        flow_config=flow_config,
        train_config=train_config,
        info=info,
        z=z,
        log_q=log_q,
        log_likelihood=ll,
        log_prior_z=lp,
        seed=seed,
        wall_time_s=time.perf_counter() - t0,
    )


@dataclasses.dataclass(frozen=True, eq=False)
class IndependenceChains:
    """Independence Metropolis-Hastings chains with the flow as proposal (samples in z).

    Attributes:
        samples: (n_chains, n_per_chain, n_dim); log_prob: (n_chains, n_per_chain) target.
        acceptance: mean acceptance rate; rhat, ess: split R-hat and bulk ESS per dimension.
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

    Proposals z' ~ q (fresh flow draws, not those behind `fit`'s importance weights) are
    accepted with probability min(1, w(z')/w(z)), w = p/q (Tierney 1994): the chains target
    the exact posterior whatever the flow, and mix in a few steps when q is close to it.
    Costs one target evaluation per draw and no gradients.
    """
    from numpyro.diagnostics import effective_sample_size, split_gelman_rubin

    t0 = time.perf_counter()
    n = num_chains * num_samples
    z, log_q, ll, lp = flow_draws(fit.posterior, fit.flow, jax.random.key(seed), n)
    log_p = ll + lp
    lw = np.where(np.isfinite(log_p - log_q), log_p - log_q, -np.inf)
    z = z.reshape(num_chains, num_samples, -1)
    lw = lw.reshape(num_chains, num_samples)
    log_p = log_p.reshape(num_chains, num_samples)
    log_u = np.log(np.random.default_rng(seed).uniform(size=(num_chains, num_samples)))
    idx = np.zeros((num_chains, num_samples), dtype=int)
    current = np.zeros(num_chains, dtype=int)
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
    return IndependenceChains(
        samples=samples,
        log_prob=chains_log_p,
        acceptance=accepted / n,
        rhat=np.asarray(split_gelman_rubin(samples)),
        ess=np.asarray(effective_sample_size(samples)),
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
    `chain_method` as in `ptaflow.sampling.run_nuts` ("parallel": over the local devices)."""
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


def nuts_baseline(
    posterior: Posterior,
    *,
    seed: int = 2,
    num_chains: int = 4,
    num_warmup: int = 1000,
    num_samples: int = 2000,
    init=None,
    chain_method: str = "vectorized",
    progress: bool = False,
) -> McmcResult:
    """Plain NUTS (dense mass matrix) on the same z-space target: the MCMC reference.

    Chains start from independent prior draws (or `init`, (num_chains, n_dim) in z).
    `chain_method` as in `ptaflow.sampling.run_nuts` ("parallel": over the local devices).
    """
    key_init, key_run = jax.random.split(jax.random.key(seed))
    if init is None:
        init = posterior.to_unconstrained(posterior.sample_prior(key_init, num_chains))
    return run_nuts(
        key_run,
        posterior.log_prob,
        jnp.asarray(init),
        num_chains=num_chains,
        num_warmup=num_warmup,
        num_samples=num_samples,
        chain_method=chain_method,
        progress_bar=progress,
    )


def mcmc_result(posterior: Posterior, chains: McmcResult, **extra_provenance) -> PosteriorResult:
    """Equally weighted MCMC samples (in z) as a `PosteriorResult` in physical parameters."""
    theta = np.asarray(posterior.to_theta(jnp.asarray(chains.flat_samples)))
    log_like, log_prior = posterior.evaluate(jnp.asarray(theta))
    return PosteriorResult(
        param_names=posterior.param_names,
        samples=theta,
        log_likelihood=np.asarray(log_like),
        log_prior=np.asarray(log_prior),
        diagnostics={
            "rhat_max": float(np.max(chains.rhat)),
            "ess_min": float(np.min(chains.ess)),
            "n_divergent": int(chains.n_divergent),
            "wall_time_s": chains.wall_time_s,
        },
        settings={"model": posterior.model_name, "method": chains.method, **chains.settings},
        provenance=provenance(**extra_provenance),
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
