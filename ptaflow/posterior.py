"""Posterior targets: normalised log-prior + log-likelihood as pure JAX functions on R^n.

A `Posterior` joins a likelihood (`ptaflow.likelihood`) and a joint prior (`ptaflow.priors`)
over the same flat parameter vector theta with enterprise names:

    full mode:  {psr}_red_noise_log10_A, {psr}_red_noise_gamma for every pulsar, then the
                source model's parameters (e.g. log10_A, gamma for `powerlaw`);
    refit mode: the source model's parameters only (free-spectrum refit likelihood).

Samplers and flows work on the unconstrained z = prior.to_unconstrained(theta) in R^n_dim,
where the density

    log_prob(z) = ln L(theta(z)) + ln pi(theta(z)) + ln |det dtheta/dz|

integrates to the evidence Z = int L pi dtheta (the prior is normalised and the Jacobian of
the map is included), so evidences computed in z space are evidences of the model.

`AbstractPosterior` is what the flow fits (`ptaflow.flows`) need of such a target: the two
parts of log_prob (tempering scales the first), prior draws and the map to z. `Posterior` is
its implementation for PTA models.
"""

from __future__ import annotations

import abc
import dataclasses
import pathlib
from collections.abc import Sequence

import equinox as eqx

# The data selection's home is ptaflow.data.reduction (re-exported here).
from .data.reduction import DEFAULT_REDUCED, ReducedPTA, select_reduced
from .devices import map_rows
from .errors import ParameterError
from .likelihood import (
    AbstractLikelihood,
    CommonProcess,
    FreeSpectrumDensities,
    PTALikelihood,
    check_common_process,
    make_likelihood,
    make_refit_likelihood,
)
from .models import SourceModel, load_model
from .priors import JointPrior, Uniform, make_joint_prior

__all__ = [
    "RN_LOG10_A_PRIOR",
    "RN_GAMMA_PRIOR",
    "DEFAULT_REDUCED",
    "AbstractPosterior",
    "Posterior",
    "make_posterior",
    "make_refit_posterior",
    "select_reduced",
]

#: Standard NANOGrav per-pulsar red-noise priors (arXiv:2306.16213): log10_A ~ U(-20, -11),
#: gamma ~ U(0, 7).
RN_LOG10_A_PRIOR = Uniform(-20.0, -11.0, latex=r"\log_{10} A_\mathrm{RN}")
RN_GAMMA_PRIOR = Uniform(0.0, 7.0, latex=r"\gamma_\mathrm{RN}")


class AbstractPosterior(eqx.Module):
    """Interface of a posterior density on unconstrained z in R^n_dim, with its prior.

    The flow fits take any subclass as their target (besides plain functions z -> ln p(z)):
    they temper its likelihood part and start from its prior draws. `Posterior` is the final
    implementation for PTA models; `log_prob` is defined here, once for all of them.
    """

    @abc.abstractmethod
    def log_prob_parts(self, z):
        """(ln L, ln pi + ln |det dtheta/dz|) at one unconstrained point z (n_dim,).

        The two parts are separate so that a tempered target beta ln L + ln pi can be formed.
        """

    @abc.abstractmethod
    def sample_prior(self, key, n: int):
        """n draws of theta from the prior, (n, n_dim)."""

    @abc.abstractmethod
    def to_unconstrained(self, theta):
        """Unconstrained z from physical parameters theta (inside the prior support)."""

    def log_prob(self, z):
        """ln L + ln pi + ln |det dtheta/dz| at one unconstrained point z (n_dim,)."""
        log_like, log_rest = self.log_prob_parts(z)
        return log_like + log_rest


class Posterior(AbstractPosterior):
    """Unnormalised log-posterior with a normalised prior, on theta and on unconstrained z.

    Attributes:
        likelihood: an `AbstractLikelihood`: `PTALikelihood` (full mode) or `RefitLikelihood`
            (refit mode).
        prior: joint prior over theta (same names and order as the likelihood).
        model_name: the source model's name (provenance).
    """

    likelihood: AbstractLikelihood
    prior: JointPrior
    model_name: str = eqx.field(static=True)

    def __check_init__(self):
        if not isinstance(self.likelihood, AbstractLikelihood):
            raise ParameterError(
                f"likelihood={self.likelihood!r}: expected a ptaflow.likelihood."
                "AbstractLikelihood, from make_likelihood or make_refit_likelihood"
            )
        if tuple(self.likelihood.param_names) != tuple(self.prior.names):
            raise ParameterError(
                f"likelihood parameters {self.likelihood.param_names} and prior parameters "
                f"{self.prior.names} differ; they must be the same names in the same order"
            )

    @property
    def mode(self) -> str:
        """The likelihood's mode: "full" or "refit"."""
        return self.likelihood.mode

    @property
    def correlation(self) -> str:
        """The likelihood's correlation: "curn", "hd" (full mode) or "refit"."""
        return self.likelihood.correlation

    @property
    def param_names(self) -> tuple[str, ...]:
        """Parameter names in theta order (enterprise convention)."""
        return tuple(self.prior.names)

    @property
    def n_dim(self) -> int:
        """Number of free parameters."""
        return len(self.prior.names)

    @property
    def common_names(self) -> tuple[str, ...]:
        """The source model's parameters (the last entries of theta)."""
        return tuple(self.likelihood.common.param_names)

    def log_likelihood(self, theta):
        """ln L at one parameter vector theta (n_dim,)."""
        return self.likelihood(theta)

    def log_prior(self, theta):
        """Normalised ln pi(theta), shape theta.shape[:-1] (-inf outside the support)."""
        return self.prior.log_prob(theta)

    def to_theta(self, z):
        """Physical parameters from unconstrained z, shape as z."""
        return self.prior.from_unconstrained(z)[0]

    def to_unconstrained(self, theta):
        """Unconstrained z from physical parameters theta (inside the prior support)."""
        return self.prior.to_unconstrained(theta)

    def log_prob_parts(self, z):
        """(ln L, ln pi + ln |det dtheta/dz|) at one unconstrained point z (n_dim,)."""
        theta, log_det = self.prior.from_unconstrained(z)
        return self.likelihood(theta), self.prior.log_prob(theta) + log_det

    def log_prob_batch(self, zs, chunk_size: int | None = None, devices: int | str | None = None):
        """`log_prob` at many points, (n_samples, n_dim) -> (n_samples,); `chunk_size` and
        `devices` as in `ptaflow.devices.map_rows`."""
        return map_rows(self.log_prob, zs, chunk_size, devices)

    def sample_prior(self, key, n: int):
        """n draws of theta from the prior, (n, n_dim)."""
        return self.prior.sample(key, n)

    def evaluate(self, thetas, chunk_size: int | None = 4096):
        """(ln L, ln pi) at many physical points, each (n_samples,), on the host."""
        log_like = eqx.filter_jit(lambda t: self.likelihood.batch(t, chunk_size))(thetas)
        return log_like, self.prior.log_prob(thetas)

    def surrogate(self, kind: str) -> Posterior:
        """A posterior that is cheaper to differentiate, for the training's reverse-KL stage
        (`TrainConfig.surrogate`): kind "curn" turns a Hellings-Downs likelihood into the CURN
        likelihood of the same pulsars, data, frequencies and priors (same parameters, no
        inter-pulsar correlations). Any other posterior, or kind "none", comes back as it is."""
        like = self.likelihood
        if kind != "curn" or not isinstance(like, PTALikelihood) or like.orf is None:
            return self
        return dataclasses.replace(self, likelihood=dataclasses.replace(like, orf=None))

    def describe(self) -> str:
        """One line: mode, correlation, model and dimension."""
        like = self.likelihood
        if isinstance(like, PTALikelihood):
            where = f"{like.n_psr} pulsars, {like.correlation.upper()}"
        else:
            where = "free-spectrum refit"
        return f"{self.model_name} ({where}; {self.n_dim} parameters)"


def _as_model(model: str | pathlib.Path | SourceModel | CommonProcess) -> CommonProcess:
    if isinstance(model, (str, pathlib.Path)):
        return load_model(model)
    return check_common_process(model, "model", "a model name or path, or ")


def _model_name(common: CommonProcess) -> str:
    """The name recorded as provenance: the model's own `name` (a `SourceModel`'s, or one a
    user's common process carries), else its class name."""
    return getattr(common, "name", type(common).__name__)


def _common_prior(common: CommonProcess, common_priors) -> dict:
    if common_priors is not None:
        return dict(common_priors)
    if isinstance(common, SourceModel):
        return {
            names if len(names) > 1 else names[0]: prior
            for names, prior in zip(common.priors.block_names, common.priors.priors, strict=True)
        }
    raise ParameterError(
        f"common process {common!r} has no priors of its own; pass common_priors="
        "{name: prior} for its parameters " + str(tuple(common.param_names))
    )


def make_posterior(
    data: ReducedPTA | str | pathlib.Path | None = None,
    model: str | pathlib.Path | SourceModel | CommonProcess = "powerlaw",
    *,
    pulsars: int | Sequence[str] | None = None,
    correlation: str = "curn",
    n_rn: int = 30,
    n_gw: int = 14,
    rn_priors: tuple | None = None,
    common_priors: dict | None = None,
) -> Posterior:
    """Full-likelihood posterior: per-pulsar power-law red noise + the model's common process.

    Args:
        data: reduced statistics, a reduced HDF5 cache, or None for the shipped NG15 subset.
        model: source model (name, model-file path or `SourceModel`), or any common process
            with `param_names`/`psd` together with `common_priors`.
        pulsars: which pulsars (see `select_reduced`).
        correlation: "curn" or "hd".
        n_rn, n_gw: red-noise and common-process frequencies (NANOGrav: 30 and 14).
        rn_priors: (log10_A prior, gamma prior) for every pulsar's red noise (default
            U(-20, -11), U(0, 7)).
        common_priors: {name: prior} for the common process (default the model's own).

    Example:
        post = make_posterior(model="powerlaw", pulsars=10, correlation="hd")
        post.param_names[:2]   # ('J1909-3744_red_noise_log10_A', 'J1909-3744_red_noise_gamma')
    """
    reduced = select_reduced(data, pulsars)
    common = _as_model(model)
    like = make_likelihood(reduced, common, correlation=correlation, n_rn=n_rn, n_gw=n_gw)
    a_prior, g_prior = rn_priors if rn_priors is not None else (RN_LOG10_A_PRIOR, RN_GAMMA_PRIOR)
    spec: dict = {}
    for psr in reduced.names:
        spec[f"{psr}_red_noise_log10_A"] = a_prior
        spec[f"{psr}_red_noise_gamma"] = g_prior
    spec.update(_common_prior(common, common_priors))
    return Posterior(like, make_joint_prior(spec), _model_name(common))


def make_refit_posterior(
    model: str | pathlib.Path | SourceModel | CommonProcess = "powerlaw",
    densities: FreeSpectrumDensities | None = None,
    *,
    n_freq: int = 14,
    common_priors: dict | None = None,
) -> Posterior:
    """Refit-mode posterior: the model's parameters on the NG15 free-spectrum densities.

    Args:
        model: source model (name, path or `SourceModel`) or a common process with
            `common_priors`.
        densities: free-spectrum densities (default the shipped NG15 HD set).
        n_freq: lowest frequencies used (NANOGrav new-physics search: 14).
        common_priors: {name: prior} overriding the model's own priors.
    """
    common = _as_model(model)
    like = make_refit_likelihood(common, densities, n_freq=n_freq)
    prior = make_joint_prior(_common_prior(common, common_priors))
    return Posterior(like, prior, _model_name(common))
