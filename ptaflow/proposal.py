"""The importance-sampling proposal of a fitted flow: its draws, joined by a defensive
component where one applies, with the mixture's density at every draw.

In full mode the importance-sampling proposal is a defensive mixture q = (1 - alpha) q_flow +
alpha q_0 (alpha = `DEFENSIVE_FRACTION` by default), q_0 the exact noise-only red-noise
posterior times the common process's prior (`ptaflow.noise_only`). It gives the no-signal
plateau of the common amplitude, which a flow fitted by reverse KL leaves out, its exact mass,
and the fit reports ln Z_0 and the Bayes factor of the common process against noise alone.
In refit mode, up to `REFIT_DEFENSIVE_MAX_DIM` parameters, q_0 is a mixture of the prior
(in z) and the integrand of the quadrature grid that gives the third ln Z (`PriorComponent`,
`ptaflow.quadrature.GridDensity`), and q_0 draws most of the samples
(`REFIT_DEFENSIVE_FRACTION`): the grid holds every region that it resolved, the prior bounds
the weights p / q by L / (alpha Z) outside it. With two parameters whose priors are finite
intervals the grid lies in the prior's box (the unit cube of theta rescaled,
`ptaflow.quadrature.ProbitMap`): a posterior that runs into a prior edge ends there on a face
of the box, where in z it has a tail that the flow's splines do not reach, and in the flow's
latent space a sliver that the flow's far tail maps erratically, thinner than the grid's
cells. The flow that draws the rest is carried on by forward KL to the component's weighted
draws (`ptaflow.flows.refine.fit_to_weighted_draws`).
"""

from __future__ import annotations

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .devices import fixed_chunks
from .errors import ParameterError
from .evidence import EvidenceResult
from .flows import TARGET_CHUNK, draw_with_log_q, target_parts
from .flows.refine import fit_to_weighted_draws
from .noise_only import NoiseOnlyPosterior, noise_only_posterior
from .posterior import Posterior
from .profiling import PhaseTimes, _phase
from .quadrature import MAX_DIM as QUADRATURE_MAX_DIM
from .quadrature import UNIT_CUBE, GridDensity, ProbitMap, quadrature_grid
from .settings import FlowConfig, TrainConfig

__all__ = [
    "COMPONENT_FIT_ROUNDS",
    "COMPONENT_GRID_SHARE",
    "COMPONENT_POOL",
    "DEFENSIVE_FRACTION",
    "REFIT_DEFENSIVE_FRACTION",
    "REFIT_DEFENSIVE_MAX_DIM",
    "Draws",
    "PriorComponent",
    "default_defensive",
    "defensive_draws",
    "flow_draws",
    "importance_draws",
]


#: Default share of the importance-sampling draws from the defensive component in full mode
#: (the noise-only posterior).
DEFENSIVE_FRACTION = 0.05


#: Refit mode takes the prior component up to this many parameters: a one-parameter posterior
#: that reaches a prior edge has a Gaussian tail in z that the flow misses (importance khat
#: 1.25 for stable_k without it, 0.41 with it). From three parameters on the annealed training
#: covers the tails (khat 0.18-0.49 on the NG15 models), and the component's own compilations
#: would cost 2-5 s per model.
REFIT_DEFENSIVE_MAX_DIM = 2
#: Refit mode's share of draws from the defensive component, and the grid's share of the
#: component (the rest: the prior). Where the flow is thinner than the posterior, p / q is at
#: most about 1 / (share x grid share) (1.4 here), against about 1 in the core. With the grid
#: in the flow's latent space, half of the draws from the component and half of those from the
#: grid, the largest weights reached 11-127 times the mean where the flow and that grid both
#: missed a prior edge, and khat was >= 0.5 in 22 of 280 fits (20 seeds of the 14 built-in
#: models of one and two parameters, `benchmarks/calibration.py`). With the grid in the prior's
#: box and these shares: khat < 0.5 in all 200 fits of two parameters and 78 of 80 of one
#: (largest weights at most 4.7 times the mean), importance errors 2-6 times smaller with the
#: draws in fixed counts (`PriorComponent.strata`), RMS of (ln Z - truth) / sigma 1.00.
REFIT_DEFENSIVE_FRACTION = 0.8
COMPONENT_GRID_SHARE = 0.9
#: The refit flow's fit to its defensive component (one and two parameters): draws of the
#: component (one evaluation of the target), and rounds of `TrainConfig.refine_steps` steps on
#: batches resampled from them, carrying on the trained flow. Over 8 seeds of the 14 built-in
#: models of one and two parameters, 6 rounds from the trained flow gave importance khat
#: < 0.5 in as many fits as 30 rounds of a new flow from the pool's moments (103 and 104 of
#: 112) at a fifth of the steps (0.3 s per model on two CPU cores against 1.2-1.5 s), and
#: no fit flagged; 10 rounds of a new flow gave 98 and two flagged. Over 20 seeds: 258 of 280
#: below 0.5 (253 with 30 rounds of a new flow), one flagged (`benchmarks/calibration.py`;
#: measured with the latent-space grid and half of the draws from the component).
COMPONENT_POOL = 16384
COMPONENT_FIT_ROUNDS = 6


#: Times `PriorComponent.sample_theta` draws again the rows that fell on a prior edge.
_MAX_REDRAWS = 10


@dataclasses.dataclass(frozen=True, eq=False)
class PriorComponent:
    """Refit mode's defensive component (`defensive_draws`): the prior, whose density in z is
    ln pi + ln|J| (the target's own prior part), and, where the quadrature grid is at hand,
    a mixture of the prior and the grid's integrand (`ptaflow.quadrature.GridDensity`), the
    grid's share `COMPONENT_GRID_SHARE`.

    The prior bounds the weights where the flow has no mass. It is not enough where the flow
    leaves out a small region that the prior rarely reaches: pt_sound_2p's posterior runs
    along a thin ridge into the prior edge log10_alpha -> 1 (0.5-0.8 % of its mass, 5-16
    sigma out in the flow's base), which 1000 prior draws hit a few times or not at all, so
    importance ln Z came out 0.006-0.012 nat low with a quoted error of 0.003, and the exact
    chains, proposing from the same mixture, missed it too. The grid resolves that ridge (the
    quadrature agrees with an independent grid in z to 1e-4 nat), and its draws land there in
    proportion to its mass."""

    posterior: Posterior
    grid: GridDensity | None = None

    def sample_theta(self, key, n: int) -> np.ndarray:
        """n draws in theta, each with a finite z: a grid draw far out in a prior's tail can
        round to the prior's edge in theta, where z is infinite (a point of probability zero
        but for the rounding, whose density in z is zero); such rows are drawn again."""
        return self._finite_draws(key, n)[0]

    def _finite_draws(self, key, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(theta, z) of `sample_theta`'s draws."""
        theta = self._draw(key, n)
        for attempt in range(1, _MAX_REDRAWS + 1):
            z = np.asarray(self.posterior.to_unconstrained(jnp.asarray(theta)))
            edge = ~np.all(np.isfinite(z), axis=1)
            if not edge.any():
                return theta, z
            theta = np.where(edge[:, None], self._draw(jax.random.fold_in(key, attempt), n), theta)
        raise ParameterError(
            f"the defensive component drew {int(edge.sum())} points on a prior edge, where z is "
            f"not finite, {_MAX_REDRAWS} times in a row"
        )

    def strata(self, n: int) -> tuple[int, ...]:
        """How many of n draws made together come from the prior and from the grid, in that
        order (fixed counts: the estimate's variance is then the strata's, without the
        spread of a random count; `ptaflow.evidence.estimate_evidence_importance`)."""
        if self.grid is None:
            return (n,)
        n_prior = round((1.0 - COMPONENT_GRID_SHARE) * n)
        return (n_prior, n - n_prior)

    def _draw(self, key, n: int) -> np.ndarray:
        key_prior, key_grid = jax.random.split(key)
        theta = np.array(self.posterior.sample_prior(key_prior, n))
        if self.grid is None:
            return theta
        # n draws of each, then the first rows from the prior, the rest from the grid: arrays
        # of one shape, so nothing compiles anew from one call to the next.
        from_grid = np.arange(n) >= self.strata(n)[0]
        theta_grid = np.asarray(self.posterior.to_theta(jnp.asarray(self.grid.sample(key_grid, n))))
        return np.where(from_grid[:, None], theta_grid, theta)

    def log_q_z(self, theta, log_prior_z, z=None, n_draws: int | None = None) -> np.ndarray:
        """ln density in z at points theta = theta(z) (z: the same points, if at hand) of the
        mixture that n_draws draws made together sample: the prior and the grid in the
        shares of `strata(n_draws)` (`COMPONENT_GRID_SHARE` for the grid where None)."""
        log_prior_z = np.asarray(log_prior_z)
        if self.grid is None:
            return log_prior_z  # the prior part of the target is this density already
        if z is None:
            z = np.asarray(self.posterior.to_unconstrained(jnp.asarray(theta)))
        share = COMPONENT_GRID_SHARE if n_draws is None else self.strata(n_draws)[1] / n_draws
        with np.errstate(divide="ignore"):
            return np.logaddexp(
                np.log1p(-share) + log_prior_z, np.log(share) + self.grid.log_prob(z)
            )

    def weighted_draws(self, key, n: int, devices=None) -> tuple[np.ndarray, np.ndarray]:
        """n draws in z and their ln p - ln q (-inf where the target is not finite), p the
        unnormalised posterior, q this component."""
        theta, z = self._finite_draws(key, n)
        ll, lp = target_parts(self.posterior, z, devices=devices)
        with np.errstate(invalid="ignore"):
            log_w = ll + lp - self.log_q_z(theta, lp, z, n_draws=n)
        return z, np.where(np.isfinite(log_w), log_w, -np.inf)


@eqx.filter_jit
def _flow_log_prob(flow, z):
    return jax.vmap(flow.log_prob)(z)


def flow_draws(posterior: Posterior, flow, key, n: int, *, chunk: int = TARGET_CHUNK, devices=None):
    """n flow samples z with ln q, ln L and ln pi + ln|J| (host arrays), in fixed-size chunks
    (the target's values split over `devices` as in `ptaflow.flows.target_parts`)."""
    zs, log_qs, lls, lps = [], [], [], []
    for z, log_q in _flow_chunks(flow, key, n, chunk):
        ll, lp = target_parts(posterior, z, chunk=chunk, devices=devices)
        zs.append(np.asarray(z))
        log_qs.append(np.asarray(log_q))
        lls.append(np.asarray(ll))
        lps.append(np.asarray(lp))
    cat = [np.concatenate(a)[:n] for a in (zs, log_qs, lls, lps)]
    return tuple(cat)


def _flow_chunks(flow, key, n: int, chunk: int):
    """Flow draws (z, ln q) in -(-n // chunk) chunks of `chunk` (one compiled shape)."""
    for i in range(-(-n // chunk)):
        yield draw_with_log_q(flow, jax.random.fold_in(key, i), chunk)


def defensive_draws(
    posterior: Posterior,
    flow,
    noise: NoiseOnlyPosterior | PriorComponent,
    flow_part: tuple,
    key,
    n_noise: int,
    *,
    chunk: int = TARGET_CHUNK,
    devices=None,
):
    """Flow draws joined by n_noise draws of a defensive component, with mixture densities.

    The proposal is q = (n_flow / n) q_flow + (n_noise / n) q_0 with q_0 = (noise-only
    red-noise posterior) x (common prior) on z (`NoiseOnlyPosterior.log_q_z`), or the prior
    (`PriorComponent`, refit mode); every draw, of either component, is weighted by p / q
    (deterministic-mixture weights), which keeps the weights unbiased and bounds them by
    p / (alpha q_0) where the flow has no mass.

    Args:
        posterior: the target.
        flow: the flow whose draws `flow_part` holds (its density is evaluated at q_0's draws).
        noise: the component: `ptaflow.noise_only.noise_only_posterior(posterior)` (full mode)
            or `PriorComponent(posterior)`.
        flow_part: (z, ln q_flow, ln L, ln pi + ln|J|) of n_flow flow draws (`flow_draws`).
        key: JAX key of the noise-only draws.
        n_noise: how many noise-only draws.
        chunk, devices: as in `flow_draws`.

    Returns:
        (z, ln q, ln L, ln pi + ln|J|), n_flow + n_noise rows, the flow draws first.
    """
    z_f, log_q_f, ll_f, lp_f = (np.asarray(a) for a in flow_part)
    if n_noise < 1:
        raise ParameterError(f"n_noise={n_noise}: expected at least one noise-only draw")
    theta_0 = noise.sample_theta(key, n_noise)
    z_0 = np.asarray(posterior.to_unconstrained(jnp.asarray(theta_0)))
    ll_0, lp_0 = target_parts(posterior, z_0, chunk=chunk, devices=devices)
    (log_q_f0,) = fixed_chunks(lambda z: _flow_log_prob(flow, z), z_0, chunk)
    z = np.concatenate([z_f, z_0])
    lp = np.concatenate([lp_f, lp_0])
    theta = np.asarray(posterior.to_theta(jnp.asarray(z)))
    if isinstance(noise, PriorComponent):
        log_q0 = noise.log_q_z(theta, lp, z, n_draws=n_noise)
    else:
        log_q0 = noise.log_q_z(theta, lp, z)
    n_flow, n = z_f.shape[0], z.shape[0]
    log_q = np.logaddexp(
        np.log(n_flow / n) + np.concatenate([log_q_f, log_q_f0]), np.log(n_noise / n) + log_q0
    )
    return z, log_q, np.concatenate([ll_f, ll_0]), lp


def refit_quadrature(posterior: Posterior, flow, z_flow: np.ndarray):
    """(ln Z by quadrature, the grid's density, "") or (None, None, why not): none where the
    posterior has more than `QUADRATURE_MAX_DIM` parameters ("") or the grid fails. One
    parameter: the grid in z. Two: in the unit cube of the prior's box (`ProbitMap`) where
    every prior is a finite interval, else in the flow's latent space, where the integrand is
    close to a standard normal. The flow's draws set where the grid looks first."""
    if posterior.n_dim > QUADRATURE_MAX_DIM:
        return None, None, ""
    options = {}
    if posterior.n_dim > 1:
        finite = all(math.isfinite(b) for pair in posterior.prior.bounds() for b in pair)
        if finite:
            options = {"bijection": ProbitMap(), "bounds": UNIT_CUBE}
        else:
            options = {"bijection": flow.bijection}
    try:
        return (*quadrature_grid(posterior, z_flow, **options), "")
    except ParameterError as exc:
        return None, None, str(exc)


def default_defensive(posterior: Posterior) -> float:
    """The default share of defensive draws: `DEFENSIVE_FRACTION` in full mode,
    `REFIT_DEFENSIVE_FRACTION` in refit mode up to `REFIT_DEFENSIVE_MAX_DIM` parameters, else 0."""
    if posterior.mode == "full":
        return DEFENSIVE_FRACTION
    return REFIT_DEFENSIVE_FRACTION if posterior.n_dim <= REFIT_DEFENSIVE_MAX_DIM else 0.0


@dataclasses.dataclass(frozen=True, eq=False)
class Draws:
    """Importance samples in z (the flow's draws first, then the component's), the proposal's
    ln density at them, ln L and ln pi + ln|J|; how many are flow draws; the flow they came
    from (in refit mode, one or two parameters, the one carried on to the component); the
    defensive component (noise-only posterior or `PriorComponent`, else None); in refit
    mode, one or two parameters, the quadrature behind the component or why there is none;
    and where the samples are blocks drawn with fixed counts whose variance the importance
    estimate takes block by block (refit mode with the prior component: the flow's, the
    prior's and the grid's draws, `PriorComponent.strata`), the blocks' sizes, else None."""

    z: np.ndarray
    log_q: np.ndarray
    log_likelihood: np.ndarray
    log_prior_z: np.ndarray
    n_flow: int
    flow: object = None
    noise_only: NoiseOnlyPosterior | None = None
    prior_component: PriorComponent | None = None
    quadrature: EvidenceResult | None = None
    quadrature_failure: str = ""
    strata: tuple[int, ...] | None = None


def importance_draws(
    posterior: Posterior,
    flow,
    key,
    n_samples: int,
    defensive: float,
    *,
    devices=None,
    noise_only: NoiseOnlyPosterior | None = None,
    timings: PhaseTimes | None = None,
    flow_config: FlowConfig | None = None,
    train_config: TrainConfig | None = None,
) -> Draws:
    """n_samples importance samples: round(defensive * n_samples) (at least one where
    defensive > 0) from the defensive component, the rest from the flow (see the module).
    Full mode: the noise-only posterior (`noise_only` re-bound to this posterior where given,
    else computed); refit mode: `PriorComponent`, with the quadrature grid up to
    `QUADRATURE_MAX_DIM` parameters, and there, given `flow_config` and `train_config`, the
    flow drawn from is `flow` carried on by forward KL to `COMPONENT_POOL` draws of the
    component (`COMPONENT_FIT_ROUNDS` rounds). Phases "samples", "evidence_quadrature" and
    "component_fit" go to `timings`."""
    n_noise = max(1, round(defensive * n_samples)) if defensive > 0 else 0
    n_flow = n_samples - n_noise
    noise = prior = quadrature = None
    failure = ""
    if n_noise and posterior.mode == "full":
        with _phase(timings, "samples"):
            if noise_only is None:
                noise = noise_only_posterior(posterior)
            else:
                noise = noise_only.for_posterior(posterior)
    elif n_noise:
        with _phase(timings, "evidence_quadrature"):
            chunks = _flow_chunks(flow, key, n_flow, TARGET_CHUNK)
            z_flow = np.concatenate([np.asarray(z) for z, _ in chunks])[:n_flow]
            quadrature, grid, failure = refit_quadrature(posterior, flow, z_flow)
        prior = PriorComponent(posterior, grid)
        if grid is not None and flow_config is not None and train_config is not None:
            with _phase(timings, "component_fit"):
                key_fit = jax.random.fold_in(key, 2**31 - 2)
                z_pool, log_w = prior.weighted_draws(key_fit, COMPONENT_POOL, devices=devices)
                flow = fit_to_weighted_draws(
                    key_fit,
                    z_pool,
                    log_w,
                    flow_config,
                    train_config,
                    COMPONENT_FIT_ROUNDS,
                    init=flow,
                )
    with _phase(timings, "samples"):
        parts = flow_draws(posterior, flow, key, n_flow, devices=devices)
        if not n_noise:
            return Draws(*parts, n_flow=n_samples, flow=flow)
        key_noise = jax.random.fold_in(key, 2**31 - 1)
        parts = defensive_draws(
            posterior, flow, noise or prior, parts, key_noise, n_noise, devices=devices
        )
    strata = None if prior is None else tuple(b for b in (n_flow, *prior.strata(n_noise)) if b)
    return Draws(*parts, n_flow, flow, noise, prior, quadrature, failure, strata)
