"""The enterprise model of NANOGrav's CURN / HD analyses, on ptaflow's pulsars and priors.

`make_enterprise_pta` builds the enterprise (Ellis et al. 2020, Zenodo 4059815) PTA of
`enterprise_extensions.models.model_2a` (CURN) / `model_3a` (HD) (Taylor et al. 2021,
Zenodo 5914351): white noise fixed from a noise dictionary (EFAC and t2EQUAD per backend,
ECORR per backend where the dictionary has one), timing model marginalised, per-pulsar
power-law red noise with K_rn frequencies, and a common process with K_gw frequencies: a
power law, or any ptaflow `SourceModel` whose spectrum is wrapped as an enterprise spectrum,
with enterprise parameters whose priors equal the model's. Its parameter names are
ptaflow's, so that ln L and the posteriors can be compared term by term.

enterprise, enterprise_extensions and PTMCMCSampler are optional dependencies (`pip install
ptaflow[enterprise]`), checked together; they are imported inside the functions that need
them.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import pathlib
import types
from collections.abc import Mapping, Sequence

import numpy as np

from ..data import from_enterprise, load_noise_dict, white_noise_values
from ..errors import DataError, ParameterError, PriorError
from ..likelihood import PowerLawProcess, red_noise_names
from ..priors import (
    AbstractPrior,
    Fixed,
    JointPrior,
    LogUniform,
    MultivariateNormal,
    Normal,
    TruncatedNormal,
    Uniform,
    make_joint_prior,
)

__all__ = ["DEFAULT_RN_PRIORS", "DEFAULT_POWERLAW_PRIORS", "make_enterprise_pta"]

#: Per-pulsar red-noise priors (NANOGrav 15-yr, arXiv:2306.16213): log10_A ~ U(-20, -11),
#: gamma ~ U(0, 7).
DEFAULT_RN_PRIORS: Mapping[str, AbstractPrior] = {
    "log10_A": Uniform(-20.0, -11.0),
    "gamma": Uniform(0.0, 7.0),
}

#: Power-law common-process priors: log10_A ~ U(-18, -14), gamma ~ U(0, 7).
DEFAULT_POWERLAW_PRIORS: Mapping[str, AbstractPrior] = {
    "log10_A": Uniform(-18.0, -14.0),
    "gamma": Uniform(0.0, 7.0),
}

#: Names a wrapped spectrum's parameters cannot take (enterprise passes these itself).
_RESERVED = ("f", "components", "psr", "mask", "size", "params", "func")


def _import_enterprise():
    """Import the optional baseline stack, or raise ImportError saying how to install it."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # PTMCMCSampler prints about mpi4py
            import enterprise.signals.signal_base  # noqa: F401
            import enterprise_extensions.sampler  # noqa: F401
            import PTMCMCSampler.PTMCMCSampler  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"the enterprise/PTMCMC baseline needs enterprise-pulsar, enterprise_extensions and "
            f"PTMCMCSampler ({exc}). Install them with `pip install ptaflow[enterprise]` "
            "(scikit-sparse, which enterprise needs, builds against the system package "
            "libsuitesparse-dev)."
        ) from exc


@functools.cache
def _pta_class():
    """`enterprise.signals.signal_base.PTA` with ptaflow's metadata and joint prior blocks."""
    from enterprise.signals import signal_base
    from scipy import stats

    class PtaflowPTA(signal_base.PTA):
        """enterprise PTA built by `make_enterprise_pta`.

        Attributes:
            ptaflow_param_names: the parameter names in ptaflow's order (red noise pulsar by
                pulsar, then the common process); `param_names` is enterprise's own order
                (alphabetical).
            tspan: T [s] of the Fourier frequencies k/T.
            joint_blocks: (names, mean, cov) of each multivariate-normal prior block. Its
                parameters are enterprise Normal parameters with the marginal priors, so that
                per-parameter prior draws stay exact; `get_lnprior` adds ln N(x; mean, cov)
                - sum ln N(x_i; mean_i, cov_ii), which makes the total the joint prior.
        """

        def __init__(self, models, *, ptaflow_param_names, tspan, joint_blocks=()):
            super().__init__(models)
            self.ptaflow_param_names = tuple(ptaflow_param_names)
            self.tspan = float(tspan)
            self.joint_blocks = tuple(joint_blocks)

        def get_lnprior(self, params):
            params = params if isinstance(params, dict) else self.map_params(params)
            lp = super().get_lnprior(params)
            if not np.isfinite(lp):
                return lp
            for names, mean, cov in self.joint_blocks:
                x = np.array([params[n] for n in names], dtype=np.float64)
                lp += stats.multivariate_normal.logpdf(x, mean, cov)
                lp -= np.sum(stats.norm.logpdf(x, mean, np.sqrt(np.diag(cov))))
            return lp

    return PtaflowPTA


def _refill_phi_every_call(pta) -> None:
    """Make enterprise rebuild each GP's prior variances at every evaluation.

    enterprise 3.5's `BasisGP._construct_prior` fills the signal's phi in place but is cached
    (`cache_call("prior_params")`) for the last two parameter sets: after evaluations at A, B
    and A again, the cache hit for A skips the refill and phi keeps B's values, so ln L depends
    on the evaluation history. MCMC does exactly that (a rejected proposal B, then a jump in
    another pulsar's parameters); chains from `model_2a` were off by up to a few units of ln L
    on NG15 pulsars. Here the cache is emptied before each call (the spectra are cheap). Safe
    for enterprise versions without the cache; common (correlated) GPs have no such side
    effect and are left alone.
    """
    from enterprise.signals import signal_base

    for collection in pta._signalcollections:
        for signal in collection._signals:
            cls = type(signal)
            if isinstance(signal, signal_base.CommonSignal) or not hasattr(cls, "_construct_prior"):
                continue
            if getattr(signal, "_ptaflow_refill", False):
                continue

            def construct_prior(self, params, _cached=cls._construct_prior):
                for attr in ("_cache__construct_prior", "_cache_list__construct_prior"):
                    getattr(self, attr, {}).clear()
                return _cached(self, params)

            signal._construct_prior = types.MethodType(construct_prior, signal)
            signal._ptaflow_refill = True


def _loguniform_pdf(value, pmin, pmax):
    inside = (value >= pmin) & (value <= pmax)
    safe = np.where(inside, value, pmin)
    return np.where(inside, 1.0 / (safe * math.log(pmax / pmin)), 0.0)


def _loguniform_sampler(pmin, pmax, size=None):
    return np.exp(np.random.uniform(math.log(pmin), math.log(pmax), size))


def _enterprise_parameter(prior: AbstractPrior, label: str):
    """The enterprise Parameter class with the same normalised density as a scalar prior."""
    from enterprise.signals import parameter

    if isinstance(prior, Uniform):
        return parameter.Uniform(prior.lower, prior.upper)
    if isinstance(prior, Normal):
        return parameter.Normal(prior.loc, prior.scale)
    if isinstance(prior, TruncatedNormal):
        return parameter.TruncNormal(prior.loc, prior.scale, prior.lower, prior.upper)
    if isinstance(prior, LogUniform):
        return parameter.UserParameter(
            prior=parameter.Function(_loguniform_pdf, pmin=prior.lower, pmax=prior.upper),
            sampler=_loguniform_sampler,
        )
    raise PriorError(
        f"parameter {label!r}: a {type(prior).__name__} prior cannot be represented as an "
        "enterprise parameter; supported are Uniform, LogUniform, Normal, TruncatedNormal, "
        "MultivariateNormal and Fixed"
    )


def _as_joint_prior(priors, what: str) -> JointPrior:
    if isinstance(priors, JointPrior):
        return priors
    if not isinstance(priors, Mapping):
        raise PriorError(f"{what}: expected a JointPrior or a dict {{name: prior}}, got {priors!r}")
    return make_joint_prior(priors)


def _common_parameters(common_prior: JointPrior, names: Sequence[str], what: str):
    """Named enterprise parameters {name: Parameter} and the joint (MVN) blocks of a prior."""
    if tuple(common_prior.names) != tuple(names):
        raise PriorError(
            f"{what} covers the free parameters {common_prior.names}; the common process "
            f"takes {tuple(names)} (same names, same order)"
        )
    params, blocks = {}, []
    for block, prior in zip(common_prior.block_names, common_prior.priors, strict=True):
        if isinstance(prior, Fixed):
            continue  # a model's fixed values are filled in by its own psd
        if isinstance(prior, MultivariateNormal):
            mean, cov = np.array(prior.mean), np.array(prior.cov)
            for i, name in enumerate(block):
                marginal = Normal(mean[i], math.sqrt(cov[i, i]))
                params[name] = _enterprise_parameter(marginal, name)(name)
            blocks.append((tuple(block), mean, cov))
            continue
        params[block[0]] = _enterprise_parameter(prior, block[0])(block[0])
    return params, blocks


def _wrapped_spectrum(common, names: Sequence[str], params: Mapping):
    """An enterprise spectrum Function calling the pure-JAX `common.psd(f, theta)` [s^3].

    enterprise passes the GP frequencies repeated for sine and cosine, f = (f_1, f_1, f_2, ...),
    and expects the prior variance per coefficient, S(f_k) Delta f with Delta f = f_k - f_k-1
    = 1/T (as `enterprise.signals.gp_priors.powerlaw`). The last evaluation is cached: the HD
    model asks for the same spectrum once per pulsar and pulsar pair.
    """
    import jax
    from enterprise.signals import parameter

    psd = jax.jit(lambda f, theta: common.psd(f, theta))
    last: dict = {}

    def spectrum(f, components=2, **values):
        f1 = np.asarray(f[::components], dtype=np.float64)
        theta = np.array([values[n] for n in names], dtype=np.float64)
        key = (f1.tobytes(), theta.tobytes())
        if key not in last:
            last.clear()
            last[key] = np.asarray(psd(f1, theta), dtype=np.float64)
        df = np.diff(np.concatenate(([0.0], f1)))
        return np.repeat(last[key] * df, components)

    return parameter.Function(spectrum, **{n: params[n] for n in names})


def _read_pulsars(psrs) -> list:
    from enterprise.pulsar import FeatherPulsar

    out = []
    for p in psrs:
        if isinstance(p, (str, pathlib.Path)):
            path = pathlib.Path(p)
            if not path.is_file():
                raise DataError(f"pulsar file {path} does not exist (expected a .feather file)")
            with contextlib.redirect_stdout(io.StringIO()):  # one line per absent optional field
                out.append(FeatherPulsar.read_feather(str(path)))
        else:
            out.append(p)
    return out


def _white_noise(psr, noise_dict: Mapping[str, float]):
    """EFAC + t2EQUAD per backend, ECORR for each backend with a dictionary entry (ptaflow's
    rule, `ptaflow.data.white_noise_values`; for NANOGrav data the same backends as
    enterprise_extensions' `nanograv_backends`), all fixed."""
    from enterprise.signals import parameter, selections, white_signals

    wn = white_noise_values(from_enterprise(psr), noise_dict)  # NoiseDictError when incomplete
    signal = white_signals.MeasurementNoise(
        efac=parameter.Constant(),
        log10_t2equad=parameter.Constant(),
        selection=selections.Selection(selections.by_backend),
    )
    ecorr_backends = tuple(sorted(wn.log10_ecorr))
    if ecorr_backends:

        def with_ecorr(backend_flags):
            return {b: backend_flags == b for b in np.unique(backend_flags) if b in ecorr_backends}

        signal += white_signals.EcorrKernelNoise(
            log10_ecorr=parameter.Constant(), selection=selections.Selection(with_ecorr)
        )
    return signal, wn.as_dict(psr.name)


def make_enterprise_pta(
    psrs: Sequence,
    noise_dict: Mapping[str, float] | str | pathlib.Path,
    *,
    common=None,
    correlation: str = "curn",
    n_rn: int = 30,
    n_gw: int = 14,
    tspan: float | None = None,
    rn_priors: Mapping[str, AbstractPrior] | None = None,
    common_priors: JointPrior | Mapping | None = None,
):
    """Build the enterprise PTA of the NANOGrav CURN / HD analysis with ptaflow's parameters.

    The model is `enterprise_extensions.models.model_2a` (CURN) / `model_3a` (HD) of the
    NANOGrav 15-yr GWB analysis (arXiv:2306.16213) with the timing model marginalised
    analytically (`MarginalizingTimingModel`, SVD-stabilised): ln L then agrees with
    `ptaflow.likelihood.make_likelihood` on the same data up to a constant.

    Args:
        psrs: enterprise `Pulsar` objects, or paths of Feather files (read with
            `enterprise.pulsar.FeatherPulsar.read_feather`). Their order is ptaflow's order.
        noise_dict: white-noise dictionary {`{psr}_{backend}_efac`, `_log10_t2equad`,
            `_log10_ecorr`: value}, or the path of its JSON file.
        common: the common process: None or a `ptaflow.likelihood.PowerLawProcess` (enterprise's
            own `gp_priors.powerlaw`, parameters `{prefix}_log10_A`, `{prefix}_gamma`), a
            `ptaflow.models.SourceModel`, or any object with `param_names` and a pure-JAX
            `psd(f, theta)` [s^3] (wrapped as an enterprise spectrum; needs JAX float64).
        correlation: "curn" (uncorrelated) or "hd" (Hellings-Downs ORF, `utils.hd_orf`).
        n_rn: red-noise frequencies K_rn (NANOGrav: 30).
        n_gw: common-process frequencies K_gw (NANOGrav: 14).
        tspan: T [s] of the frequencies k/T; default the array span max(toas) - min(toas)
            (enterprise's `get_tspan`). To compare with ptaflow it must equal
            `reduced.tspan` (`pta.tspan` holds the value used).
        rn_priors: {"log10_A": prior, "gamma": prior} for every pulsar's red noise
            (default `DEFAULT_RN_PRIORS`).
        common_priors: priors of the common process's free parameters, a `JointPrior` or
            {name (or tuple of names): prior}, in `common.param_names` order. Default:
            U(-18, -14), U(0, 7) for a power law, a SourceModel's own `priors` (its fixed
            parameters keep the model's values). Multivariate-normal blocks (the NG15 SMBHB
            prior) become marginal Normal parameters plus a correction in `get_lnprior`.

    Returns:
        An enterprise `PTA` (subclass) whose `param_names` are ptaflow's names in enterprise's
        (alphabetical) order; `pta.ptaflow_param_names` gives ptaflow's order, `pta.tspan` T.
        Evaluate with `pta.get_lnlikelihood(dict(zip(names, theta)))`.

    Raises:
        ImportError: enterprise, enterprise_extensions or PTMCMCSampler is not installed.
        ParameterError: bad correlation, frequency counts, tspan or common process.
        PriorError: a prior that enterprise cannot represent, or priors whose names do not
            match the parameters.
        NoiseDictError: the noise dictionary lacks a backend's EFAC or EQUAD.
    """
    _import_enterprise()
    from enterprise.signals import gp_signals

    _check_model_options(correlation, n_rn, n_gw)
    psrs, names, tspan = _pulsars_and_span(psrs, tspan)
    if not isinstance(noise_dict, Mapping):
        noise_dict = load_noise_dict(noise_dict)

    signal = gp_signals.MarginalizingTimingModel(use_svd=True)
    signal += _red_noise_signal(rn_priors, n_rn, tspan)
    common = PowerLawProcess() if common is None else common
    common_names, spectrum, joint_blocks = _common_spectrum(common, common_priors, names)
    signal += _common_signal(spectrum, correlation, n_gw, tspan)

    models, defaults = [], {}
    for psr in psrs:
        white, values = _white_noise(psr, noise_dict)
        models.append((signal + white)(psr))
        defaults.update(values)
    pta = _pta_class()(
        models,
        ptaflow_param_names=red_noise_names(names) + common_names,
        tspan=tspan,
        joint_blocks=joint_blocks,
    )
    pta.set_default_params(defaults)
    _refill_phi_every_call(pta)
    if sorted(pta.param_names) != sorted(pta.ptaflow_param_names):  # a guard on the wiring
        raise ParameterError(
            f"enterprise built parameters {pta.param_names}, expected {pta.ptaflow_param_names}"
        )
    return pta


def _check_model_options(correlation: str, n_rn: int, n_gw: int) -> None:
    """The correlation is "curn" or "hd", and 1 <= n_gw <= n_rn are integers."""
    if correlation not in ("curn", "hd"):
        raise ParameterError(f"correlation={correlation!r}: expected 'curn' or 'hd'")
    if not (
        isinstance(n_rn, (int, np.integer))
        and isinstance(n_gw, (int, np.integer))
        and 1 <= n_gw <= n_rn
    ):
        raise ParameterError(f"n_gw={n_gw!r}, n_rn={n_rn!r}: expected integers 1 <= n_gw <= n_rn")


def _common_signal(spectrum, correlation: str, n_gw: int, tspan: float):
    """The common process's Fourier-basis GP named "gw" (n_gw frequencies k/tspan):
    uncorrelated between pulsars (CURN) or with the Hellings-Downs ORF (HD)."""
    from enterprise.signals import gp_signals, utils

    if correlation == "hd":
        return gp_signals.FourierBasisCommonGP(
            spectrum, utils.hd_orf(), components=n_gw, Tspan=tspan, name="gw"
        )
    return gp_signals.FourierBasisGP(spectrum, components=n_gw, Tspan=tspan, name="gw")


def _pulsars_and_span(psrs, tspan):
    """(enterprise pulsars, their names, T [s]): the pulsars read, named uniquely, and the
    span checked (default the array span max(toas) - min(toas))."""
    psrs = _read_pulsars(psrs)
    if not psrs:
        raise DataError("make_enterprise_pta: no pulsars given")
    names = [str(p.name) for p in psrs]
    if len(set(names)) != len(names):
        raise DataError(f"make_enterprise_pta: pulsar names repeat: {names}")
    if tspan is None:
        tspan = max(p.toas.max() for p in psrs) - min(p.toas.min() for p in psrs)
    tspan = float(tspan)
    if not (math.isfinite(tspan) and tspan > 0):
        raise ParameterError(f"tspan={tspan!r} s: expected a positive span")
    return psrs, names, tspan


def _red_noise_signal(rn_priors, n_rn: int, tspan: float):
    """Every pulsar's power-law red noise (n_rn frequencies k/tspan) with the given priors."""
    from enterprise.signals import gp_priors, gp_signals

    rn = _as_joint_prior(DEFAULT_RN_PRIORS if rn_priors is None else rn_priors, "rn_priors")
    if tuple(rn.names) != ("log10_A", "gamma") or len(rn.priors) != 2:
        raise PriorError(
            f"rn_priors covers {rn.names}; expected one prior each for ('log10_A', 'gamma')"
        )
    rn_spectrum = gp_priors.powerlaw(
        log10_A=_enterprise_parameter(rn.priors[0], "red_noise_log10_A"),
        gamma=_enterprise_parameter(rn.priors[1], "red_noise_gamma"),
    )
    return gp_signals.FourierBasisGP(rn_spectrum, components=n_rn, Tspan=tspan)


def _common_spectrum(common, common_priors, psr_names: Sequence[str]):
    """The common process as an enterprise spectrum with its priors.

    Returns:
        (its parameter names in ptaflow's order, the enterprise spectrum, the joint
        multivariate-normal prior blocks that `get_lnprior` corrects for).
    """
    from enterprise.signals import gp_priors

    if not (hasattr(common, "param_names") and hasattr(common, "psd")):
        raise ParameterError(
            f"common={common!r}: expected a PowerLawProcess, a SourceModel, or an object with "
            "param_names and psd(f, theta)"
        )
    common_names = tuple(common.param_names)
    bad = [n for n in common_names if n in _RESERVED or n.startswith(tuple(psr_names))]
    if bad:
        raise ParameterError(
            f"common-process parameter {bad[0]!r} clashes with a name enterprise or the "
            f"pulsars use ({_RESERVED}, pulsar names); rename it"
        )
    if common_priors is None:
        if isinstance(common, PowerLawProcess):
            common_priors = {
                f"{common.prefix}_{k}": prior for k, prior in DEFAULT_POWERLAW_PRIORS.items()
            }
        elif isinstance(getattr(common, "priors", None), JointPrior):
            common_priors = common.priors
        else:
            raise PriorError(
                f"common process {common!r} has no priors of its own; pass common_priors="
                f"{{name: prior}} for its parameters {common_names}"
            )
    cprior = _as_joint_prior(common_priors, "common_priors")
    cparams, joint_blocks = _common_parameters(cprior, common_names, "common_priors")
    if isinstance(common, PowerLawProcess):
        spectrum = gp_priors.powerlaw(
            log10_A=cparams[common_names[0]], gamma=cparams[common_names[1]]
        )
    else:
        import jax

        if not jax.config.jax_enable_x64:
            raise DataError(
                "the wrapped common-process spectrum needs JAX float64: call "
                "jax.config.update('jax_enable_x64', True) first"
            )
        spectrum = _wrapped_spectrum(common, common_names, cparams)
    return common_names, spectrum, joint_blocks
