"""The noise-only model: every pulsar's red noise without a common process, computed exactly.

With the common process switched off, the PTA likelihood factorises over pulsars (for CURN and
HD alike, see `PTALikelihood.noise_only_terms`):

    L_0(theta_rn) = exp(const) prod_a L_a(log10_A_a, gamma_a),

so the noise-only posterior is a product of 2-D posteriors, one per pulsar, and its evidence
Z_0 = exp(const) prod_a int L_a pi_a is a product of 2-D integrals. `noise_only_posterior`
computes each on a grid: the midpoint rule on n_grid x n_grid cells covering the part of the
pulsar's prior box where ln(L_a pi_a) is within `cut` nats of its maximum (found on a coarse
grid over the whole box). That gives

- ln Z_0, with a quadrature error estimate (the same rule on a grid half as fine);
- a normalised density, piecewise constant on the cells, with exact independent draws.

What it is for:

- the Bayes factor of a common process against noise alone, ln B = ln Z - ln Z_0;
- Savage-Dickey: where the common process is undetectable (amplitudes far below the noise),
  the posterior density of its parameters is pi(theta_gw) Z_0 / Z. The amplitude's marginal
  therefore has a plateau down to the prior's lower bound (a "no-signal tail"), of mass
  Pi(log10_A < a) Z_0 / Z below an amplitude a where the signal is undetectable;
- the defensive component of the importance-sampling proposal of
  `ptaflow.inference.fit_posterior`: q = (1 - alpha) q_flow + alpha q_0, with q_0 = (noise-only
  red-noise posterior) x (common-process prior). A flow fitted by reverse KL (mode seeking)
  puts almost no mass in that plateau, and no weight on flow draws can restore mass the flow
  never proposes. In the plateau p / q_0 = Z_0 / Z is constant, so the mixture's weights there
  are bounded and the plateau gets its exact mass (defensive importance sampling, Hesterberg
  1995, Technometrics 37, 185).

    noise = noise_only_posterior(make_posterior(pulsars=10, correlation="hd"))
    noise.log_evidence, noise.log_evidence_err     # ln Z_0 and its quadrature error
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import logsumexp

from .devices import fixed_chunks
from .errors import ParameterError
from .likelihood import PTALikelihood, _noise_only_terms
from .posterior import Posterior

__all__ = ["GridDensity2D", "grid_density_2d", "NoiseOnlyPosterior", "noise_only_posterior"]


@dataclasses.dataclass(frozen=True, eq=False)
class GridDensity2D:
    """A normalised 2-D density, piecewise constant on the cells of a regular grid.

    Attributes:
        edges_x, edges_y: cell edges, (n + 1,) each.
        log_cell_prob: (n, n) ln of each cell's probability (they sum to one).
        log_integral: ln of the integral of the function the grid was built from.
        log_integral_err: |difference| to the same rule on a grid half as fine, an upper bound
            of the quadrature error for a smooth integrand (the midpoint rule's error falls as
            the cell width squared, so the finer grid's error is about a third of it).
    """

    edges_x: np.ndarray
    edges_y: np.ndarray
    log_cell_prob: np.ndarray
    log_integral: float
    log_integral_err: float

    @property
    def n_grid(self) -> int:
        return self.log_cell_prob.shape[0]

    @property
    def log_cell_area(self) -> float:
        return float(
            np.log((self.edges_x[1] - self.edges_x[0]) * (self.edges_y[1] - self.edges_y[0]))
        )

    def log_prob(self, xy: np.ndarray) -> np.ndarray:
        """ln density at points (m, 2); -inf outside the grid."""
        xy = np.asarray(xy, dtype=np.float64)
        n = self.n_grid
        ix = np.searchsorted(self.edges_x, xy[:, 0], side="right") - 1
        iy = np.searchsorted(self.edges_y, xy[:, 1], side="right") - 1
        # the upper edges belong to the last cells
        ix = np.where(xy[:, 0] == self.edges_x[-1], n - 1, ix)
        iy = np.where(xy[:, 1] == self.edges_y[-1], n - 1, iy)
        inside = (ix >= 0) & (ix < n) & (iy >= 0) & (iy < n)
        out = np.full(xy.shape[0], -np.inf)
        out[inside] = self.log_cell_prob[ix[inside], iy[inside]] - self.log_cell_area
        return out

    def sample(self, rng: np.random.Generator, m: int) -> np.ndarray:
        """m independent draws, (m, 2): a cell by its probability, then uniform inside it."""
        n = self.n_grid
        p = np.exp(self.log_cell_prob.ravel() - logsumexp(self.log_cell_prob))
        ix, iy = np.divmod(rng.choice(n * n, size=m, p=p / p.sum()), n)
        dx = self.edges_x[1] - self.edges_x[0]
        dy = self.edges_y[1] - self.edges_y[0]
        x = self.edges_x[ix] + rng.random(m) * dx
        y = self.edges_y[iy] + rng.random(m) * dy
        return np.stack([x, y], axis=1)


def _centres(lo: float, hi: float, n: int) -> np.ndarray:
    edges = np.linspace(lo, hi, n + 1)
    return 0.5 * (edges[1:] + edges[:-1])


def _evaluate(log_f, xs, ys) -> np.ndarray:
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    values = np.asarray(log_f(np.stack([gx.ravel(), gy.ravel()], axis=1)), dtype=np.float64)
    return values.reshape(len(xs), len(ys))


def grid_density_2d(
    log_f: Callable[[np.ndarray], np.ndarray],
    bounds: tuple[tuple[float, float], tuple[float, float]],
    *,
    n_grid: int = 200,
    n_coarse: int = 64,
    cut: float = 30.0,
) -> GridDensity2D:
    """Integrate exp(log_f) over a box and keep it as a normalised piecewise-constant density.

    Args:
        log_f: vectorised ln f, (m, 2) -> (m,), finite inside the box.
        bounds: ((x_lo, x_hi), (y_lo, y_hi)), finite.
        n_grid: cells per axis of the fine grid (even).
        n_coarse: cells per axis of the coarse grid over the whole box that finds where f lives.
        cut: the fine grid covers the coarse cells where ln f > max - cut, plus one coarse cell
            on each side; what lies outside is below exp(-cut) of the peak.

    Returns:
        `GridDensity2D`.
    """
    (x_lo, x_hi), (y_lo, y_hi) = (tuple(map(float, b)) for b in bounds)
    if not all(np.isfinite([x_lo, x_hi, y_lo, y_hi])) or not (x_lo < x_hi and y_lo < y_hi):
        raise ParameterError(f"bounds={bounds}: expected a finite box ((x_lo, x_hi), (y_lo, y_hi))")
    if n_grid < 4 or n_grid % 2:
        raise ParameterError(f"n_grid={n_grid}: expected an even number >= 4")
    if n_coarse < 2:
        raise ParameterError(f"n_coarse={n_coarse}: expected >= 2")
    coarse = _evaluate(log_f, _centres(x_lo, x_hi, n_coarse), _centres(y_lo, y_hi, n_coarse))
    if not np.all(np.isfinite(coarse)):
        raise ParameterError(
            f"ln f is not finite at {int(np.sum(~np.isfinite(coarse)))} points of the box "
            f"{bounds}; expected a finite ln f inside it"
        )
    keep = np.argwhere(coarse > coarse.max() - cut)
    ex = np.linspace(x_lo, x_hi, n_coarse + 1)
    ey = np.linspace(y_lo, y_hi, n_coarse + 1)
    sub_x = (ex[max(keep[:, 0].min() - 1, 0)], ex[min(keep[:, 0].max() + 2, n_coarse)])
    sub_y = (ey[max(keep[:, 1].min() - 1, 0)], ey[min(keep[:, 1].max() + 2, n_coarse)])

    def rule(n):
        values = _evaluate(log_f, _centres(*sub_x, n), _centres(*sub_y, n))
        area = (sub_x[1] - sub_x[0]) * (sub_y[1] - sub_y[0]) / n**2
        return values, float(logsumexp(values) + np.log(area))

    fine, log_integral = rule(n_grid)
    _, log_integral_half = rule(n_grid // 2)
    return GridDensity2D(
        edges_x=np.linspace(*sub_x, n_grid + 1),
        edges_y=np.linspace(*sub_y, n_grid + 1),
        log_cell_prob=fine - logsumexp(fine),
        log_integral=log_integral,
        log_integral_err=abs(log_integral - log_integral_half),
    )


@dataclasses.dataclass(frozen=True, eq=False)
class NoiseOnlyPosterior:
    """The noise-only model of a full-mode posterior: its red-noise posterior and evidence.

    Attributes:
        posterior: the full-mode `ptaflow.posterior.Posterior` whose red noise it describes.
        grids: one `GridDensity2D` per pulsar over (log10_A, gamma), in the pulsars' order.
        log_evidence: ln Z_0 (normalised priors, the likelihood's constant included), on the
            same scale as the evidence of `posterior`.
        log_evidence_err: its quadrature error (the pulsars' errors added).
    """

    posterior: Posterior
    grids: tuple[GridDensity2D, ...]
    log_evidence: float
    log_evidence_err: float

    @property
    def psr_names(self) -> tuple[str, ...]:
        return tuple(self.posterior.likelihood.psr_names)

    def _rn(self, theta: np.ndarray) -> np.ndarray:
        return np.asarray(theta)[:, : 2 * len(self.grids)]

    def log_prob_rn(self, theta: np.ndarray) -> np.ndarray:
        """ln of the noise-only red-noise posterior density at theta (m, n_dim), (m,)."""
        rn = self._rn(theta)
        return sum(g.log_prob(rn[:, 2 * a : 2 * a + 2]) for a, g in enumerate(self.grids))

    def log_prior_rn(self, theta: np.ndarray) -> np.ndarray:
        """ln of the red-noise prior density at theta (m, n_dim), (m,)."""
        rn = jnp.asarray(self._rn(theta))
        total = np.zeros(rn.shape[0])
        for i, prior in enumerate(_red_noise_priors(self.posterior)):
            total += np.asarray(prior.log_prob(rn[:, i]))
        return total

    def log_q_z(self, theta: np.ndarray, log_prior_z: np.ndarray, z=None) -> np.ndarray:
        """ln q_0 on unconstrained z at points theta = theta(z), (m,) (`z` itself is not
        needed here; `ptaflow.proposal.PriorComponent` takes the same arguments).

        q_0 = (noise-only red-noise posterior) x (the common process's prior), carried to z by
        the prior's map; `log_prior_z` = ln pi(theta) + ln |det dtheta/dz| at the same points
        (`PosteriorFit.log_prior_z`), so that ln q_0(z) = ln p_0(theta_rn) - ln pi_rn(theta_rn)
        + ln pi(theta) + ln |det dtheta/dz|.
        """
        with np.errstate(invalid="ignore"):
            out = self.log_prob_rn(theta) - self.log_prior_rn(theta) + np.asarray(log_prior_z)
        return np.where(np.isnan(out), -np.inf, out)

    def for_posterior(self, posterior: Posterior) -> NoiseOnlyPosterior:
        """The same noise-only model for another full-mode posterior of the same data.

        The noise-only model depends on the pulsars' reduced data and their red-noise priors,
        not on the common process, so the SGWB models of one comparison share it: this re-binds
        it (for `log_q_z`, `sample_theta`) to `posterior` without recomputing the grids.

        Raises:
            ParameterError: `posterior` differs in its pulsars, red-noise frequencies, data or
                red-noise priors.
        """
        ours, theirs = self.posterior.likelihood, _full_likelihood(posterior)
        same = ours.psr_names == theirs.psr_names and all(
            np.array_equal(np.asarray(getattr(ours, f)), np.asarray(getattr(theirs, f)))
            for f in ("FNF", "FNr", "const", "freqs", "tspan")
        )
        if not same:
            raise ParameterError(
                "the noise-only model was computed for other pulsars or data ("
                f"{', '.join(ours.psr_names)}; {ours.FNF.shape[1] // 2} red-noise frequencies); "
                "compute it for this posterior with noise_only_posterior(posterior)"
            )
        pairs = zip(_red_noise_priors(self.posterior), _red_noise_priors(posterior), strict=True)
        for a, b in pairs:
            if a.describe() != b.describe():
                raise ParameterError(
                    f"red-noise prior {b.describe()} differs from the noise-only model's "
                    f"{a.describe()}; compute it for this posterior with "
                    "noise_only_posterior(posterior)"
                )
        return dataclasses.replace(self, posterior=posterior)

    def sample_theta(self, key, m: int) -> np.ndarray:
        """m draws of theta, (m, n_dim): red noise from the noise-only posterior, the common
        process's parameters from their prior."""
        key_prior, key_grid = jax.random.split(key)
        theta = np.array(self.posterior.sample_prior(key_prior, m), dtype=np.float64)
        rng = np.random.default_rng(np.asarray(jax.random.key_data(key_grid)).ravel())
        for a, g in enumerate(self.grids):
            theta[:, 2 * a : 2 * a + 2] = g.sample(rng, m)
        return theta


def _full_likelihood(posterior: Posterior) -> PTALikelihood:
    """The likelihood of a full-mode posterior, the one kind with per-pulsar red noise.

    Raises:
        ParameterError: `posterior` is not a full-mode `Posterior`.
    """
    if not isinstance(posterior, Posterior) or not isinstance(posterior.likelihood, PTALikelihood):
        raise ParameterError(
            f"posterior {posterior!r}: the noise-only model needs a full-mode posterior "
            "(make_posterior), with per-pulsar red noise"
        )
    return posterior.likelihood


def _red_noise_priors(posterior: Posterior) -> list:
    """The 2 n_psr scalar priors of the red-noise parameters, in theta order."""
    prior = posterior.prior
    by_name = {}
    for names, p in zip(prior.block_names, prior.priors, strict=True):
        if len(names) == 1:
            by_name[names[0]] = p
    out = []
    for name in posterior.likelihood.param_names[: 2 * posterior.likelihood.n_psr]:
        p = by_name.get(name)
        bounds = p.bounds() if p is not None else ((-np.inf, np.inf),)
        if p is None or not np.all(np.isfinite(bounds[0])):
            raise ParameterError(
                f"{name}: the noise-only model needs a scalar prior with finite bounds for "
                f"every red-noise parameter; got {p.describe() if p is not None else 'none'}"
            )
        out.append(p)
    return out


@eqx.filter_jit
def _pulsar_terms(likelihood, FNF, FNr, rn):
    return _noise_only_terms(FNF, FNr, likelihood.freqs, likelihood.tspan, rn[:, None, :])[:, 0]


def noise_only_posterior(
    posterior: Posterior,
    *,
    n_grid: int = 200,
    n_coarse: int = 64,
    cut: float = 30.0,
    chunk: int = 4096,
) -> NoiseOnlyPosterior:
    """The exact noise-only red-noise posterior and evidence of a full-mode posterior.

    One 2-D grid per pulsar over its red-noise prior box (see `grid_density_2d` for n_grid,
    n_coarse and cut); ln L with the common process switched off, so the result is the same for
    CURN and HD and for any source model.

    Args:
        posterior: a full-mode `ptaflow.posterior.Posterior` (`make_posterior`).
        n_grid, n_coarse, cut: grid options (`grid_density_2d`).
        chunk: grid points per likelihood call.

    Raises:
        ParameterError: a refit-mode posterior, or a red-noise prior without finite bounds.
    """
    like = _full_likelihood(posterior)
    priors = _red_noise_priors(posterior)
    grids = []
    for a in range(like.n_psr):
        prior_a, prior_g = priors[2 * a], priors[2 * a + 1]
        FNF, FNr = like.FNF[a : a + 1], like.FNr[a : a + 1]

        def log_f(xy, FNF=FNF, FNr=FNr, prior_a=prior_a, prior_g=prior_g):
            def terms(rn):
                t = _pulsar_terms(like, FNF, FNr, rn)
                return t + prior_a.log_prob(rn[:, 0]) + prior_g.log_prob(rn[:, 1])

            return fixed_chunks(terms, xy, chunk)[0]

        box = (priors[2 * a].bounds()[0], priors[2 * a + 1].bounds()[0])
        grids.append(grid_density_2d(log_f, box, n_grid=n_grid, n_coarse=n_coarse, cut=cut))
    log_z = float(like.const) + sum(g.log_integral for g in grids)
    return NoiseOnlyPosterior(
        posterior=posterior,
        grids=tuple(grids),
        log_evidence=log_z,
        log_evidence_err=float(sum(g.log_integral_err for g in grids)),
    )
