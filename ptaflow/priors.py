"""Normalised priors on SGWB model parameters and their maps to unconstrained space.

Every prior has a normalised log-density `log_prob`, a sampler `sample(key, n)` and a
bijection to R^n: `to_unconstrained(x) -> z` and `from_unconstrained(z) -> (x, log_det)`,
where log_det = log |det dx/dz|. A density in z is then p_z(z) = p(x(z)) exp(log_det), so
evidences computed in the unconstrained space are exact.

Scalar priors act elementwise (x, z and log_det share one shape); `MultivariateNormal` acts
on the last axis (x, z of shape (..., k), log-density and log_det of shape (...));
`Fixed` pins a parameter and has no free coordinate.

`JointPrior` combines them over a flat parameter vector theta of shape (..., n_dim), with the
names in `JointPrior.names`; build it with `make_joint_prior`.

Each prior also carries display metadata: the parameter's unit and LaTeX label.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy import stats

from .errors import ParameterError, PriorError, close_matches

__all__ = [
    "AbstractPrior",
    "Uniform",
    "LogUniform",
    "Normal",
    "TruncatedNormal",
    "MultivariateNormal",
    "Fixed",
    "JointPrior",
    "make_joint_prior",
]


def _to_interval(z, lower: float, upper: float):
    """Map z in R to (lower, upper); returns (x, log |dx/dz|). Either bound may be infinite.

    A finite interval uses the probit map x = lower + (upper - lower) Phi(z) (Phi: standard
    normal CDF), so a density flat in x near a bound has Gaussian tails in z; the logistic
    map would give exponential tails, which Gaussian-based flows and HMC cover poorly.
    """
    if math.isfinite(lower) and math.isfinite(upper):
        width = upper - lower
        log_det = math.log(width) - 0.5 * z**2 - 0.5 * math.log(2.0 * math.pi)
        return lower + width * jax.scipy.special.ndtr(z), log_det
    if math.isfinite(lower):
        return lower + jnp.exp(z), z
    if math.isfinite(upper):
        return upper - jnp.exp(z), z
    return z, jnp.zeros_like(z)


def _from_interval(x, lower: float, upper: float):
    """Inverse of `_to_interval`."""
    if math.isfinite(lower) and math.isfinite(upper):
        return jax.scipy.special.ndtri((x - lower) / (upper - lower))
    if math.isfinite(lower):
        return jnp.log(x - lower)
    if math.isfinite(upper):
        return jnp.log(upper - x)
    return x


def _fmt(v: float) -> str:
    return f"{v:.10g}"


class AbstractPrior(eqx.Module):
    """Interface of a prior over one parameter (or one block of parameters).

    Concrete priors are final classes with static (hashable) parameters, so a prior is a
    pytree without leaves: safe to close over or pass through jit.
    """

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one value: () for scalar priors, (k,) for a k-dimensional block."""
        return ()

    @property
    def n_free(self) -> int:
        """Number of free coordinates this prior contributes to a flat parameter vector."""
        return math.prod(self.shape)

    @abc.abstractmethod
    def log_prob(self, x):
        """Normalised log-density at x (-inf outside the support)."""

    @abc.abstractmethod
    def sample(self, key, n: int):
        """n independent draws, shape (n, *shape)."""

    @abc.abstractmethod
    def to_unconstrained(self, x):
        """Map a value in the support to R^n_free."""

    @abc.abstractmethod
    def from_unconstrained(self, z):
        """Map z in R^n_free to the support; returns (x, log |det dx/dz|)."""

    def bounds(self) -> tuple[tuple[float, float], ...]:
        """(lower, upper) of the support of each free coordinate (may be infinite)."""
        return ((-math.inf, math.inf),) * self.n_free

    @abc.abstractmethod
    def unit_labels(self) -> tuple[str, ...]:
        """Unit of each coordinate ("1" for dimensionless)."""

    @abc.abstractmethod
    def latex_labels(self) -> tuple[str | None, ...]:
        """LaTeX label of each coordinate (None where none was given)."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Short human-readable form, e.g. 'Uniform(-18, -11)'."""


class _AbstractScalarPrior(AbstractPrior):
    """Shared defaults of scalar priors (elementwise over any shape)."""

    def unit_labels(self) -> tuple[str, ...]:
        return (self.unit,)  # type: ignore[attr-defined]

    def latex_labels(self) -> tuple[str | None, ...]:
        return (self.latex,)  # type: ignore[attr-defined]


def _check_bounds(kind: str, lower: float, upper: float, *, finite: bool) -> None:
    if finite and not (math.isfinite(lower) and math.isfinite(upper)):
        raise PriorError(f"{kind} prior needs finite bounds, got lower={lower}, upper={upper}")
    if not lower < upper:
        raise PriorError(
            f"{kind} prior needs lower < upper, got lower={lower}, upper={upper}; "
            "swap them or widen the range"
        )


class Uniform(_AbstractScalarPrior):
    """Uniform prior on [lower, upper]: log p = -log(upper - lower).

    Unconstrained map: x = lower + (upper - lower) Phi(z), Phi the standard normal CDF.
    """

    lower: float = eqx.field(static=True, converter=float)
    upper: float = eqx.field(static=True, converter=float)
    unit: str = eqx.field(default="1", static=True, kw_only=True)
    latex: str | None = eqx.field(default=None, static=True, kw_only=True)

    def __check_init__(self):
        _check_bounds("Uniform", self.lower, self.upper, finite=True)

    def log_prob(self, x):
        inside = (x >= self.lower) & (x <= self.upper)
        return jnp.where(inside, -math.log(self.upper - self.lower), -jnp.inf)

    def sample(self, key, n: int):
        return jax.random.uniform(key, (n,), minval=self.lower, maxval=self.upper)

    def to_unconstrained(self, x):
        return _from_interval(x, self.lower, self.upper)

    def from_unconstrained(self, z):
        return _to_interval(z, self.lower, self.upper)

    def bounds(self):
        return ((self.lower, self.upper),)

    def describe(self) -> str:
        return f"Uniform({_fmt(self.lower)}, {_fmt(self.upper)})"


class LogUniform(_AbstractScalarPrior):
    """Log-uniform prior on [lower, upper], 0 < lower: p(x) = 1 / (x ln(upper/lower)).

    Unconstrained map: ln x = ln lower + ln(upper/lower) Phi(z).
    """

    lower: float = eqx.field(static=True, converter=float)
    upper: float = eqx.field(static=True, converter=float)
    unit: str = eqx.field(default="1", static=True, kw_only=True)
    latex: str | None = eqx.field(default=None, static=True, kw_only=True)

    def __check_init__(self):
        _check_bounds("LogUniform", self.lower, self.upper, finite=True)
        if self.lower <= 0:
            raise PriorError(
                f"LogUniform prior needs 0 < lower, got lower={self.lower}; for a parameter "
                "that is already a log10, use Uniform on it instead"
            )

    def log_prob(self, x):
        inside = (x >= self.lower) & (x <= self.upper)
        safe = jnp.where(inside, x, self.lower)
        return jnp.where(
            inside, -jnp.log(safe) - math.log(math.log(self.upper / self.lower)), -jnp.inf
        )

    def sample(self, key, n: int):
        log_x = jax.random.uniform(
            key, (n,), minval=math.log(self.lower), maxval=math.log(self.upper)
        )
        return jnp.exp(log_x)

    def to_unconstrained(self, x):
        return _from_interval(jnp.log(x), math.log(self.lower), math.log(self.upper))

    def from_unconstrained(self, z):
        log_x, log_det = _to_interval(z, math.log(self.lower), math.log(self.upper))
        return jnp.exp(log_x), log_det + log_x

    def bounds(self):
        return ((self.lower, self.upper),)

    def describe(self) -> str:
        return f"LogUniform({_fmt(self.lower)}, {_fmt(self.upper)})"


class Normal(_AbstractScalarPrior):
    """Normal prior N(loc, scale^2) on the real line; the unconstrained map is the identity."""

    loc: float = eqx.field(static=True, converter=float)
    scale: float = eqx.field(static=True, converter=float)
    unit: str = eqx.field(default="1", static=True, kw_only=True)
    latex: str | None = eqx.field(default=None, static=True, kw_only=True)

    def __check_init__(self):
        if not (self.scale > 0 and math.isfinite(self.scale) and math.isfinite(self.loc)):
            raise PriorError(
                f"Normal prior needs finite loc and scale > 0, got loc={self.loc}, "
                f"scale={self.scale}"
            )

    def log_prob(self, x):
        return stats.norm.logpdf(x, self.loc, self.scale)

    def sample(self, key, n: int):
        return self.loc + self.scale * jax.random.normal(key, (n,))

    def to_unconstrained(self, x):
        return x

    def from_unconstrained(self, z):
        return z, jnp.zeros_like(z)

    def describe(self) -> str:
        return f"Normal({_fmt(self.loc)}, {_fmt(self.scale)})"


class TruncatedNormal(_AbstractScalarPrior):
    """Normal N(loc, scale^2) truncated to [lower, upper] and renormalised.

    Either bound may be infinite (not both). Unconstrained map as for `Uniform` (both bounds
    finite) or x = lower + exp(z) / x = upper - exp(z) (one bound).
    """

    loc: float = eqx.field(static=True, converter=float)
    scale: float = eqx.field(static=True, converter=float)
    lower: float = eqx.field(static=True, converter=float)
    upper: float = eqx.field(static=True, converter=float)
    unit: str = eqx.field(default="1", static=True, kw_only=True)
    latex: str | None = eqx.field(default=None, static=True, kw_only=True)

    def __check_init__(self):
        if not (self.scale > 0 and math.isfinite(self.scale) and math.isfinite(self.loc)):
            raise PriorError(
                f"TruncatedNormal prior needs finite loc and scale > 0, got loc={self.loc}, "
                f"scale={self.scale}"
            )
        _check_bounds("TruncatedNormal", self.lower, self.upper, finite=False)
        if not (math.isfinite(self.lower) or math.isfinite(self.upper)):
            raise PriorError("TruncatedNormal prior needs at least one finite bound; use Normal")

    def _std_bounds(self):
        return (self.lower - self.loc) / self.scale, (self.upper - self.loc) / self.scale

    def log_prob(self, x):
        a, b = self._std_bounds()
        return stats.truncnorm.logpdf(x, a, b, self.loc, self.scale)

    def sample(self, key, n: int):
        a, b = self._std_bounds()
        return self.loc + self.scale * jax.random.truncated_normal(key, a, b, (n,))

    def to_unconstrained(self, x):
        return _from_interval(x, self.lower, self.upper)

    def from_unconstrained(self, z):
        return _to_interval(z, self.lower, self.upper)

    def bounds(self):
        return ((self.lower, self.upper),)

    def describe(self) -> str:
        return (
            f"TruncatedNormal({_fmt(self.loc)}, {_fmt(self.scale)}, "
            f"[{_fmt(self.lower)}, {_fmt(self.upper)}])"
        )


class MultivariateNormal(AbstractPrior):
    """k-dimensional normal prior N(mean, cov) over a block of parameters.

    Values have shape (..., k); the unconstrained map is the identity. Used for the
    2-D SMBHB prior on (log10_A, gamma) from the holodeck library (arXiv:2306.16219).

    Attributes:
        mean: k means (tuple of floats).
        cov: k x k symmetric positive-definite covariance (tuple of tuples).
        units, latex: one entry per coordinate.
    """

    mean: tuple[float, ...] = eqx.field(
        static=True, converter=lambda m: tuple(float(v) for v in np.ravel(m))
    )
    cov: tuple[tuple[float, ...], ...] = eqx.field(
        static=True,
        converter=lambda c: tuple(tuple(float(v) for v in row) for row in np.atleast_2d(c)),
    )
    units: tuple[str, ...] | None = eqx.field(default=None, static=True, kw_only=True)
    latex: tuple[str, ...] | None = eqx.field(default=None, static=True, kw_only=True)

    def __check_init__(self):
        k = len(self.mean)
        cov = np.array(self.cov)
        if cov.shape != (k, k):
            raise PriorError(
                f"MultivariateNormal prior: mean has {k} entries, so cov must be {k}x{k}; "
                f"got shape {cov.shape}"
            )
        if not np.allclose(cov, cov.T, rtol=0, atol=1e-14 * np.abs(cov).max()):
            raise PriorError("MultivariateNormal prior: cov must be symmetric")
        try:
            np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            raise PriorError(
                "MultivariateNormal prior: cov must be positive definite (its Cholesky "
                f"factorisation failed; eigenvalues {np.linalg.eigvalsh(cov)})"
            ) from None
        for label, entries in (("units", self.units), ("latex", self.latex)):
            if entries is not None and len(entries) != k:
                raise PriorError(
                    f"MultivariateNormal prior: {label} needs {k} entries, got {len(entries)}"
                )

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.mean),)

    def log_prob(self, x):
        return stats.multivariate_normal.logpdf(x, jnp.asarray(self.mean), jnp.asarray(self.cov))

    def sample(self, key, n: int):
        chol = np.linalg.cholesky(np.array(self.cov))
        eps = jax.random.normal(key, (n, len(self.mean)))
        return jnp.asarray(self.mean) + eps @ jnp.asarray(chol).T

    def to_unconstrained(self, x):
        return x

    def from_unconstrained(self, z):
        return z, jnp.zeros(jnp.shape(z)[:-1])

    def unit_labels(self) -> tuple[str, ...]:
        return self.units if self.units is not None else ("1",) * len(self.mean)

    def latex_labels(self) -> tuple[str | None, ...]:
        return self.latex if self.latex is not None else (None,) * len(self.mean)

    def describe(self) -> str:
        mean = ", ".join(_fmt(m) for m in self.mean)
        cov = ", ".join("[" + ", ".join(_fmt(v) for v in row) + "]" for row in self.cov)
        return f"MultivariateNormal(mean=[{mean}], cov=[{cov}])"


class Fixed(_AbstractScalarPrior):
    """A parameter held at one value (a point mass). It has no free coordinate: in a
    `JointPrior` it is left out of the flat vector and passed to the spectrum as a constant.

    `log_prob` is 0 at the value and -inf elsewhere (density with respect to the point
    mass); `from_unconstrained` takes z of shape (..., 0).
    """

    value: float = eqx.field(static=True, converter=float)
    unit: str = eqx.field(default="1", static=True, kw_only=True)
    latex: str | None = eqx.field(default=None, static=True, kw_only=True)

    def __check_init__(self):
        if not math.isfinite(self.value):
            raise PriorError(f"Fixed prior needs a finite value, got {self.value}")

    @property
    def n_free(self) -> int:
        return 0

    def log_prob(self, x):
        return jnp.where(x == self.value, 0.0, -jnp.inf)

    def sample(self, key, n: int):
        return jnp.full((n,), self.value)

    def to_unconstrained(self, x):
        return jnp.zeros(jnp.shape(x) + (0,))

    def from_unconstrained(self, z):
        batch = jnp.shape(z)[:-1]
        return jnp.full(batch, self.value), jnp.zeros(batch)

    def bounds(self):
        return ()

    def describe(self) -> str:
        return f"Fixed({_fmt(self.value)})"


class JointPrior(eqx.Module):
    """Product of independent priors over a flat parameter vector theta (..., n_dim).

    Blocks appear in declaration order; a scalar prior takes one coordinate, a
    `MultivariateNormal` over k names takes k consecutive coordinates and a `Fixed` prior
    none (its value is in `fixed`).

    Attributes:
        names: the free parameter names, in theta order.
        block_names: the names each prior covers (fixed blocks included).
        priors: one prior per block.
    """

    names: tuple[str, ...] = eqx.field(static=True)
    block_names: tuple[tuple[str, ...], ...] = eqx.field(static=True)
    priors: tuple[AbstractPrior, ...]

    @property
    def n_dim(self) -> int:
        """Number of free parameters."""
        return len(self.names)

    @property
    def fixed(self) -> dict[str, float]:
        """Names and values of the parameters held fixed."""
        return {
            names[0]: prior.value
            for names, prior in zip(self.block_names, self.priors, strict=True)
            if isinstance(prior, Fixed)
        }

    def _slices(self):
        start = 0
        for names, prior in zip(self.block_names, self.priors, strict=True):
            k = prior.n_free
            yield names, prior, start, k
            start += k

    def _check_theta(self, theta, what: str = "theta") -> None:
        if jnp.shape(theta)[-1:] != (self.n_dim,):
            raise ParameterError(
                f"{what} must have shape (..., {self.n_dim}) for parameters {self.names}; "
                f"got shape {jnp.shape(theta)}"
            )

    @staticmethod
    def _block(prior: AbstractPrior, arr, start: int, k: int):
        if prior.shape == ():
            return arr[..., start]
        return arr[..., start : start + k]

    def log_prob(self, theta):
        """Normalised joint log-density, shape theta.shape[:-1]."""
        self._check_theta(theta)
        total = jnp.zeros(jnp.shape(theta)[:-1])
        for _, prior, start, k in self._slices():
            if k:
                total = total + prior.log_prob(self._block(prior, theta, start, k))
        return total

    def sample(self, key, n: int):
        """n independent draws, shape (n, n_dim)."""
        keys = jax.random.split(key, max(len(self.priors), 1))
        cols = []
        for key_i, (_, prior, _, k) in zip(keys, self._slices(), strict=False):
            if k:
                draw = prior.sample(key_i, n)
                cols.append(draw[:, None] if prior.shape == () else draw)
        return jnp.concatenate(cols, axis=-1) if cols else jnp.zeros((n, 0))

    def to_unconstrained(self, theta):
        """Map theta to z in R^n_dim, shape as theta."""
        self._check_theta(theta)
        cols = []
        for _, prior, start, k in self._slices():
            if k:
                z = prior.to_unconstrained(self._block(prior, theta, start, k))
                cols.append(z[..., None] if prior.shape == () else z)
        return jnp.concatenate(cols, axis=-1)

    def from_unconstrained(self, z):
        """Map z to theta; returns (theta, log |det dtheta/dz|) of shape z.shape[:-1]."""
        self._check_theta(z, "z")
        cols, log_det = [], jnp.zeros(jnp.shape(z)[:-1])
        for _, prior, start, k in self._slices():
            if k:
                x, ld = prior.from_unconstrained(self._block(prior, z, start, k))
                cols.append(x[..., None] if prior.shape == () else x)
                log_det = log_det + ld
        return jnp.concatenate(cols, axis=-1), log_det

    def to_dict(self, theta) -> dict:
        """{name: theta[..., i]} for the free parameters plus the fixed values."""
        self._check_theta(theta)
        out = {name: theta[..., i] for i, name in enumerate(self.names)}
        out.update(self.fixed)
        return out

    def from_dict(self, values: Mapping[str, float]):
        """Flat vector (n_dim,) from {name: value} (fixed parameters may be omitted)."""
        missing = [n for n in self.names if n not in values]
        unknown = [n for n in values if n not in self.names and n not in self.fixed]
        if missing or unknown:
            hint = close_matches(unknown[0], self.names) if unknown else ""
            raise ParameterError(
                f"expected values for {self.names}; missing {missing}, unknown {unknown}.{hint}"
            )
        return jnp.stack([jnp.asarray(values[n], dtype=float) for n in self.names], axis=-1)

    def bounds(self) -> tuple[tuple[float, float], ...]:
        """(lower, upper) of each free coordinate, in theta order."""
        return tuple(b for _, prior, _, k in self._slices() if k for b in prior.bounds())

    def units(self) -> dict[str, str]:
        """Unit of every parameter (fixed included), by name."""
        return {
            name: unit
            for names, prior in zip(self.block_names, self.priors, strict=True)
            for name, unit in zip(names, prior.unit_labels(), strict=True)  # type: ignore[attr-defined]
        }

    def latex_labels(self) -> dict[str, str]:
        """LaTeX label of every parameter (the name in \\mathrm{} where none was given)."""
        out = {}
        for names, prior in zip(self.block_names, self.priors, strict=True):
            for name, label in zip(names, prior.latex_labels(), strict=True):  # type: ignore[attr-defined]
                out[name] = label if label else r"\mathrm{" + name.replace("_", r"\_") + "}"
        return out


def make_joint_prior(parameters: Mapping[str | tuple[str, ...], AbstractPrior]) -> JointPrior:
    """Build a `JointPrior` from {name: prior} (a tuple of names for a multivariate block).

    Example:
        make_joint_prior({"log10_A": Uniform(-18, -11), "gamma": Uniform(0, 7)})

    Raises:
        PriorError: a value is not a prior, a name is empty or has spaces, a name is
            repeated, or a block's names do not match its prior's dimension.
    """
    if not isinstance(parameters, Mapping) or not parameters:
        raise PriorError(
            "parameters must be a non-empty dict {name: prior}, e.g. "
            "{'log10_A': Uniform(-18, -11)}; got " + repr(parameters)
        )
    block_names, priors, seen = [], [], set()
    for key, prior in parameters.items():
        names = key if isinstance(key, tuple) else (key,)
        label = key if isinstance(key, str) else "(" + ", ".join(map(str, key)) + ")"
        if not isinstance(prior, AbstractPrior):
            raise PriorError(
                f"parameter {label!r}: expected a prior from ptaflow.priors (Uniform, "
                f"LogUniform, Normal, TruncatedNormal, MultivariateNormal, Fixed), got "
                f"{prior!r}"
            )
        for name in names:
            if not (isinstance(name, str) and name and name.isprintable() and " " not in name):
                raise PriorError(
                    f"parameter name {name!r} must be a non-empty string without spaces, e.g. "
                    "'gw_log10_A' or 'J1909-3744_red_noise_gamma'"
                )
            if name in seen:
                raise PriorError(f"parameter {name!r} is declared twice")
            seen.add(name)
        dim = prior.shape[0] if prior.shape else 1
        if len(names) != dim:
            raise PriorError(
                f"parameter block {label}: {len(names)} name(s) for a {dim}-dimensional "
                f"{type(prior).__name__} prior; give a tuple of {dim} names as the key"
            )
        block_names.append(names)
        priors.append(prior)
    free = tuple(n for names, p in zip(block_names, priors, strict=True) if p.n_free for n in names)
    return JointPrior(free, tuple(block_names), tuple(priors))
