"""Evidence by quadrature on a grid: a deterministic third estimate for posteriors of one or
two parameters whose target is cheap (refit mode).

ln Z = ln int L pi dz over the unconstrained space z (`ptaflow.posterior.Posterior.log_prob`,
prior Jacobian included), by the trapezoid rule on a regular grid, in z or, given a flow's
bijection z = T(u), in u (the integrand then is L pi (T(u)) |det dT/du|: a change of
variables, exact whatever T, and close to a standard normal where T is close to the
posterior's transport map, so that a coarse grid resolves a posterior that is narrow, curved
or skewed in z), or in the unit cube of the priors' box (`ProbitMap`, priors on finite
intervals, `bounds=UNIT_CUBE`: a posterior that runs into a prior edge ends on a face of the
cube, the integrand's own edge, instead of in a tail). In two passes:

1. locate: a coarse grid over the range of samples that cover the posterior (the flow's
   draws, or prior draws), widened by its span on each side, finds the cells within e^-25 of
   the largest value; where such cells touch the box's edge the box widens (up to twice);
2. integrate: a fine grid (up to 2^17 points: 20 001 in 1-D, 361 per axis in 2-D, 49 in
   3-D) over those cells and two more on each side gives ln Z, and the grid of every other
   point gives the error |ln Z_h - ln Z_2h|, an upper bound for a rule that converges (the
   trapezoid rule's own error is about a third of it at order h^2).

A grid that does not resolve the integrand (a feature narrower than a few cells) shows as a
large difference between the two grids, hence a large error and a warning. Measured on refit
models: in 2-D the latent-space grid gives errors of 1e-5 to 1.5e-3 nat in 0.4-0.5 s (2^18
points: at most 5e-4 nat, in 0.8-0.9 s), but where the posterior runs into a prior edge the
flow's far tail can map the edge erratically: on sigw_gauss_2p that grid was 3.5-16.5 of its
quoted errors from a 2^22-point grid at three of four seeds, the grid in the prior's box
within 0.2 of them at each. In 3-D (2^18 points) the errors were 0.01-0.08 nat and not always
trustworthy (`MAX_DIM`); the grid in z did not resolve those posteriors at all.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from .devices import fixed_chunks
from .errors import ParameterError
from .evidence import EvidenceResult
from .flows.targets import TARGET_CHUNK, target_parts
from .posterior import AbstractPosterior

__all__ = [
    "MAX_POINTS",
    "MAX_DIM",
    "UNIT_CUBE",
    "GridDensity",
    "ProbitMap",
    "estimate_evidence_quadrature",
    "quadrature_grid",
]

#: Largest grid (points) `estimate_evidence_quadrature` takes by default.
MAX_POINTS = 2**17
#: Largest dimension it accepts by default (three on request, `max_dim=3`). In three
#: dimensions the grid (49 points per axis in a flow's latent space) did not resolve every NG15
#: refit posterior, and its two resolutions can agree by chance: igw gave -19.074 +- 0.0004
#: there, -19.081 +- 0.04 with 63 and -19.067 +- 0.017 with 101 points per axis (nested
#: sampling: -19.09 +- 0.09), so its error is not trustworthy there.
MAX_DIM = 2
#: Cells below the largest log-integrand by more than this are left out of the fine grid: a
#: region of such cells adds less than e^-25 (its volume / the core's volume) to Z, below 1e-6
#: for a region 10^4 times the posterior's core.
_LOG_RANGE = 25.0
_MAX_WIDENINGS = 2
#: Times the fine grid's box may grow beyond a face that carries more than `_EDGE_TOLERANCE`
#: of the integral (each time doubling its span there).
_MAX_GROWTHS = 3
_EDGE_TOLERANCE = 1e-6
#: The bounds of a grid in the unit cube (`ProbitMap`): its faces s = 0 and 1 are z = -inf and
#: inf; at 1e-12 (|z| = 7.03) the part left out holds 1e-12 of the prior's range per face.
UNIT_CUBE = (1e-12, 1.0 - 1e-12)
#: Points per axis of the locating grid, by dimension.
_COARSE = {1: 2001, 2: 65, 3: 33}


def _axis_points(n_dim: int, max_points: int) -> int:
    """Grid points per axis: odd (every other point is the coarse grid), at most 20001."""
    n = min(20001, int(math.floor(max_points ** (1.0 / n_dim) + 1e-9)))
    return n if n % 2 else n - 1


def _trapezoid_log_sum(lt: np.ndarray, step: int) -> float:
    """ln of the trapezoid-weighted sum of exp(lt) over the sub-grid of every `step`-th point
    of each axis (lt: the grid's values, shape (n,) * n_dim), without the cell volume."""
    sub = lt[tuple(slice(None, None, step) for _ in range(lt.ndim))]
    log_w = np.zeros(sub.shape)
    for axis in range(sub.ndim):  # half weight on each axis's two end points
        index = [slice(None)] * sub.ndim
        for end in (0, -1):
            index[axis] = end
            log_w[tuple(index)] -= math.log(2.0)
    return float(special.logsumexp(sub + log_w))


def _edge_fraction(lt: np.ndarray, log_total: float, free: np.ndarray | None = None) -> float:
    """Fraction of exp(lt)'s sum on the grid's outermost layer: on its faces that `free`
    ((n_dim, 2): lower, upper) marks, all faces by default (a face on a bound of the grid's
    space is the integrand's own edge, not a cut)."""
    free = np.ones((lt.ndim, 2), dtype=bool) if free is None else free
    inner = lt[tuple(slice(int(lo), -1 if hi else None) for lo, hi in free)]
    log_inner = float(special.logsumexp(inner)) if inner.size else -math.inf
    return float(-np.expm1(min(0.0, log_inner - log_total)))


def _face_fractions(lt: np.ndarray, log_total: float) -> np.ndarray:
    """Fraction of exp(lt)'s sum on each face of the grid, shape (n_dim, 2): lower, upper."""
    out = np.empty((lt.ndim, 2))
    for axis in range(lt.ndim):
        for side, end in enumerate((0, -1)):
            face = np.take(lt, end, axis=axis)
            out[axis, side] = math.exp(min(0.0, float(special.logsumexp(face)) - log_total))
    return out


def _checked(lt: np.ndarray) -> np.ndarray:
    if np.isnan(lt).any():
        raise ParameterError(
            f"the target is NaN at {int(np.isnan(lt).sum())} of {lt.size} quadrature grid "
            "points; check the model's spectrum and priors there"
        )
    if not np.isfinite(lt).any():
        raise ParameterError("the target is not finite at any quadrature grid point")
    return lt


def _locate(evaluate, lo, hi, n_coarse: int, clip):
    """The box of the coarse-grid cells within `_LOG_RANGE` of the largest value, two cells
    wider on each side, after widening the search box while those cells touch its edge;
    returns (lower, upper, widenings)."""
    lo, hi = clip(lo, hi)
    for widenings in range(_MAX_WIDENINGS + 1):
        axes = [np.linspace(a, b, n_coarse) for a, b in zip(lo, hi, strict=True)]
        lt = _checked(_grid_values(evaluate, axes))
        keep = lt > np.max(lt) - _LOG_RANGE
        edge = [np.take(keep, [0, -1], axis=k).any() for k in range(keep.ndim)]
        if not any(edge) or widenings == _MAX_WIDENINGS:
            break
        span = hi - lo
        wider = clip(lo - 0.5 * span, hi + 0.5 * span)
        if np.array_equal(wider[0], lo) and np.array_equal(wider[1], hi):
            break  # the box fills its bounds
        lo, hi = wider
    idx = np.nonzero(keep)
    step = (hi - lo) / (n_coarse - 1)
    lower = np.array([ax[i.min()] for ax, i in zip(axes, idx, strict=True)]) - 2 * step
    upper = np.array([ax[i.max()] for ax, i in zip(axes, idx, strict=True)]) + 2 * step
    return (*clip(lower, upper), widenings)


def estimate_evidence_quadrature(
    log_target,
    samples,
    *,
    bijection=None,
    max_points: int = MAX_POINTS,
    max_dim: int = MAX_DIM,
    bounds: tuple[float, float] | None = None,
) -> EvidenceResult:
    """ln Z of a low-dimensional target by the trapezoid rule on a grid (see the module).

    Args:
        log_target: a `ptaflow.posterior.Posterior` (ln L + ln pi + ln|J| in z, through its
            compiled target evaluation), or a pure-JAX callable z (n_dim,) -> ln(L pi).
        samples: (n, n_dim) points that cover the posterior (the flow's draws, or prior
            draws), whose range sets where the grid looks first.
        bijection: optional flowjax bijection z = T(u) (a fitted flow's, `flow.bijection`):
            the grid then lies in u, and the integrand is the target at T(u) times |det dT/du|
            (a change of variables, exact whatever T): where T is close to the posterior's
            transport map the integrand is close to a standard normal in u, which a coarse
            grid resolves although the posterior in z is narrow, curved or skewed.
        max_points: the fine grid's size limit (points).
        max_dim: the largest dimension accepted.
        bounds: (lower, upper) that every box stays within, on every axis of the grid's
            space, for a space that spans the unit interval on each axis (`UNIT_CUBE` with
            `ProbitMap`), or None (no bounds). A face of the box on a bound is the
            integrand's edge (no edge warning); the error counts the mass of the strips
            between the bounds and 0 or 1, from the integrand on that face.

    Returns:
        EvidenceResult with method "quadrature"; diagnostics: n_points, points_per_axis,
        box_lower, box_upper (the fine grid's box, per axis), widenings (of the locating
        box), growths (of the fine grid's box beyond a face that carried mass),
        edge_fraction (of the integral on the fine grid's outermost layer),
        log_evidence_coarse (every other point), non_finite_fraction (fine-grid points where
        the target is -inf, outside the support: they count as zero).

    Raises:
        ParameterError: too many dimensions, too few or non-finite samples, a NaN target on
            a grid, or no grid point with a finite target.
    """
    return quadrature_grid(
        log_target,
        samples,
        bijection=bijection,
        max_points=max_points,
        max_dim=max_dim,
        bounds=bounds,
    )[0]


def quadrature_grid(
    log_target,
    samples,
    *,
    bijection=None,
    max_points: int = MAX_POINTS,
    max_dim: int = MAX_DIM,
    bounds: tuple[float, float] | None = None,
) -> tuple[EvidenceResult, GridDensity]:
    """`estimate_evidence_quadrature`'s estimate and the grid's integrand as a density
    (`GridDensity`: a proposal that holds whatever mass the grid resolved). Same arguments
    and errors."""
    start = time.perf_counter()
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ParameterError(f"samples must have shape (n >= 2, n_dim); got {x.shape}")
    n_dim = x.shape[1]
    if not 1 <= n_dim <= max_dim:
        raise ParameterError(
            f"quadrature takes 1 to {max_dim} parameters; the samples have {n_dim}"
        )
    if not np.all(np.isfinite(x)):
        raise ParameterError("the samples that set the quadrature box are not all finite")
    if int(max_points) < 5**n_dim:
        raise ParameterError(
            f"max_points={max_points}: a grid in {n_dim} dimensions needs at least "
            f"{5**n_dim} points (5 per axis)"
        )
    evaluate = _evaluator(log_target, bijection)
    if bijection is not None:
        # (the inverse that GridDensity.log_prob compiles too; its log-determinant unused here)
        x = fixed_chunks(lambda z: _inverse_and_log_det(bijection, z), x, TARGET_CHUNK)[0]
    lo, hi = x.min(axis=0), x.max(axis=0)
    span = np.maximum(hi - lo, 1e-6)

    def clip(lower, upper):
        if bounds is None:
            return lower, upper
        return np.clip(lower, *bounds), np.clip(upper, *bounds)

    lo, hi, widenings = _locate(evaluate, lo - span, hi + span, _COARSE.get(n_dim, 41), clip)
    n_axis = _axis_points(n_dim, int(max_points))
    for growths in range(_MAX_GROWTHS + 1):
        axes = [np.linspace(a, b, n_axis) for a, b in zip(lo, hi, strict=True)]
        lt = _checked(_grid_values(evaluate, axes))
        log_volume = float(np.sum(np.log((hi - lo) / (n_axis - 1))))
        log_z = _trapezoid_log_sum(lt, 1) + log_volume
        free = np.ones((n_dim, 2), dtype=bool)
        if bounds is not None:  # a face on a bound is the integrand's own edge
            free = np.stack([lo > bounds[0], hi < bounds[1]], axis=1)
        fractions = _face_fractions(lt, log_z - log_volume)
        faces = np.where(free, fractions, 0.0)
        if not (faces > _EDGE_TOLERANCE).any() or growths == _MAX_GROWTHS:
            break
        # Mass on a face: the locating grid missed part of the posterior (a ridge thinner
        # than its cells); the box doubles its span beyond each such face.
        span = hi - lo
        lo = np.where(faces[:, 0] > _EDGE_TOLERANCE, lo - span, lo)
        hi = np.where(faces[:, 1] > _EDGE_TOLERANCE, hi + span, hi)
        lo, hi = clip(lo, hi)
    log_z_coarse = _trapezoid_log_sum(lt, 2) + log_volume + n_dim * math.log(2.0)
    edge = _edge_fraction(lt, log_z - log_volume, free)
    # The two grids' difference, the edge's share, what the box leaves out (about e^-25 per
    # core volume of cells below e^-25 of the peak), and the rounding of a sum of n terms.
    err = abs(log_z_coarse - log_z) + edge + math.exp(-_LOG_RANGE)
    err += math.sqrt(lt.size) * np.finfo(float).eps
    if bounds is not None:  # the strips between the bounds and the unit interval's ends
        gaps = np.array([bounds[0], 1.0 - bounds[1]]) / ((hi - lo) / (n_axis - 1))[:, None]
        err += float(np.sum(np.where(free, 0.0, fractions * gaps)))
    warnings = []
    if edge > _EDGE_TOLERANCE:
        warnings.append(
            f"quadrature: {edge:.1e} of the integral lies on the grid's edge after "
            f"{widenings} widenings of the search box and {growths} growths of the grid: it "
            "may cut off posterior mass"
        )
    if err > 0.05:
        warnings.append(
            f"quadrature: the grids of {n_axis} and {(n_axis + 1) // 2} points per axis differ "
            f"by {abs(log_z_coarse - log_z):.3f} in ln Z: the grid does not resolve the posterior"
        )
    result = EvidenceResult(
        log_evidence=log_z,
        log_evidence_err=err,
        method="quadrature",
        n_samples=int(lt.size),
        n_eff=float(lt.size),
        diagnostics={
            "n_points": int(lt.size),
            "points_per_axis": n_axis,
            "box_lower": [float(v) for v in lo],
            "box_upper": [float(v) for v in hi],
            "widenings": widenings,
            "growths": growths,
            "edge_fraction": edge,
            "log_evidence_coarse": log_z_coarse,
            "non_finite_fraction": float(np.mean(~np.isfinite(lt))),
        },
        warnings=tuple(warnings),
        wall_time_s=time.perf_counter() - start,
    )
    return result, GridDensity.from_grid(lo, hi, lt, bijection)


@dataclasses.dataclass(frozen=True, eq=False)
class GridDensity:
    """The integrand of a quadrature grid as a normalised density: piecewise constant on the
    grid's cells in its space u (each cell's mass the mean of exp(integrand) at its 2^n_dim
    corners, the trapezoid rule's), zero outside the grid's box, pushed to z through the
    bijection z = T(u) when the grid lies in a flow's latent space. As an importance-sampling
    component it holds every region the grid resolved, such as a thin ridge that a flow left
    out: its weights p / q_grid stay near 1 there.

    Attributes:
        lower, step: the box's lower corner and the cell widths, (n_dim,) each.
        log_mass: (n_cells,) * n_dim normalised ln cell probabilities (-inf: empty).
        bijection: the flowjax bijection z = T(u), or None (the grid lies in z).
    """

    lower: np.ndarray
    step: np.ndarray
    log_mass: np.ndarray
    bijection: object = None

    @classmethod
    def from_grid(cls, lower, upper, lt: np.ndarray, bijection=None) -> GridDensity:
        n_dim = lt.ndim
        corners = []
        for offset in itertools.product((0, 1), repeat=n_dim):
            index = tuple(slice(o, lt.shape[k] - 1 + o) for k, o in enumerate(offset))
            corners.append(lt[index])
        with np.errstate(invalid="ignore"):
            log_cell = special.logsumexp(np.stack(corners), axis=0)
        log_cell = np.where(np.isfinite(log_cell), log_cell, -np.inf)
        log_mass = log_cell - special.logsumexp(log_cell)
        step = (np.asarray(upper) - np.asarray(lower)) / (np.array(lt.shape) - 1)
        return cls(np.asarray(lower, dtype=np.float64), step, log_mass, bijection)

    def sample(self, key, n: int) -> np.ndarray:
        """n draws in z (host array, (n, n_dim)): a cell by its mass, a uniform point in it."""
        # NumPy draws (seeded by the key): n changes from call to call, and a JAX draw would
        # compile anew for each n.
        rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel())
        flat = np.exp(self.log_mass.ravel())
        cells = rng.choice(flat.size, size=n, p=flat / flat.sum())
        index = np.stack(np.unravel_index(cells, self.log_mass.shape), axis=-1)
        offset = rng.uniform(size=(n, self.lower.size))
        u = self.lower + (index + offset) * self.step
        if self.bijection is None:
            return u
        return fixed_chunks(lambda v: _transform(self.bijection, v)[0], u, TARGET_CHUNK)[0]

    def log_prob(self, z) -> np.ndarray:
        """ln density at the rows of z (host array; -inf outside the box)."""
        z = np.asarray(z, dtype=np.float64)
        if self.bijection is None:
            u, log_det = z, np.zeros(z.shape[0])
        else:
            u, log_det = fixed_chunks(
                lambda v: _inverse_and_log_det(self.bijection, v), z, TARGET_CHUNK
            )
        position = (u - self.lower) / self.step
        index = np.floor(position).astype(np.int64)
        shape = np.array(self.log_mass.shape)
        inside = np.all((position >= 0) & (index < shape), axis=1)
        index = np.clip(index, 0, shape - 1)
        log_cell = self.log_mass[tuple(index.T)] - float(np.sum(np.log(self.step)))
        return np.where(inside, log_cell + log_det, -np.inf)


@eqx.filter_jit
def _transform(bijection, u):
    return jax.vmap(bijection.transform_and_log_det)(u)


@eqx.filter_jit
def _inverse_and_log_det(bijection, z):
    return jax.vmap(bijection.inverse_and_log_det)(z)


def _evaluator(log_target, bijection):
    """Grid points (host array) -> log integrand (host array). The target goes through
    `ptaflow.flows.target_parts` (a `Posterior`'s compiled target evaluation, shared with the
    fit: nothing new to compile); with a bijection, through T and its log-determinant first."""
    if not (isinstance(log_target, AbstractPosterior) or callable(log_target)):
        raise ParameterError(
            f"log_target={log_target!r}: expected a Posterior or a callable z -> ln(L pi)"
        )

    def target(z):
        tempered, rest = target_parts(log_target, z)
        return np.asarray(tempered, dtype=np.float64) + np.asarray(rest, dtype=np.float64)

    if bijection is None:
        return target

    def through(u):
        z, log_det = fixed_chunks(lambda v: _transform(bijection, v), u, TARGET_CHUNK)
        return target(z) + np.asarray(log_det, dtype=np.float64)

    return through


def _grid_values(evaluate, axes) -> np.ndarray:
    """The log integrand on the grid of `axes` (shape (n,) * n_dim)."""
    mesh = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(axes))
    return np.asarray(evaluate(mesh), dtype=np.float64).reshape((axes[0].size,) * len(axes))


class ProbitMap(eqx.Module):
    """The bijection z = Phi^-1(s) per coordinate (Phi: the standard normal CDF), from the unit
    cube to z, with log |det dz/ds| = sum(z^2 / 2) + n ln sqrt(2 pi). A prior on a finite
    interval maps theta to z by this same probit (`ptaflow.priors`), so s is theta rescaled to
    [0, 1]: a grid in s is a grid in the prior's box, where a posterior that runs into a prior
    edge ends on a face of the box instead of in a tail in z (`UNIT_CUBE` bounds it)."""

    def transform_and_log_det(self, s, condition=None):
        z = jax.scipy.special.ndtri(s)
        return z, jnp.sum(0.5 * z**2) + 0.5 * z.size * math.log(2.0 * math.pi)

    def inverse_and_log_det(self, z, condition=None):
        s = jax.scipy.special.ndtr(z)
        return s, -jnp.sum(0.5 * z**2) - 0.5 * z.size * math.log(2.0 * math.pi)
