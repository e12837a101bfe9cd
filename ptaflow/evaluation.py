"""One model through a comparison: its posterior, flow fit, exact chains and both evidences.

`evaluate_model` is what `ptaflow.compare.compare` (and each task of `ptaflow batch`) runs per
model: build the posterior (refit or full mode; the correlation from `model_correlation`), fit
the flow with the model's configuration (`model_configs`; refit mode's by dimension,
`refit_configs`), estimate ln Z by importance sampling and by the learned harmonic mean
(`harmonic_evidence`) on exact chains, and set the status (`ModelOutcome`). A model's record
is keyed by `model_key` (`ptaflow.identity`).
"""

from __future__ import annotations

import ast
import dataclasses
import math
import pathlib
import time
import traceback
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flowjax.distributions import Transformed

from .data.free_spectrum import load_free_spectrum_densities
from .data.reduction import select_reduced
from .errors import ModelError, ParameterError, PtaflowError
from .evidence import EvidenceResult, estimate_evidence_harmonic, estimate_evidence_importance
from .flows import reset_coordinates
from .identity import derived_seed, file_digest, result_key, settings_identity
from .inference import PosteriorFit, fit_posterior, independence_samples, neutra_samples
from .models import SourceModel, load_model
from .noise_only import NoiseOnlyPosterior
from .posterior import Posterior, make_posterior, make_refit_posterior
from .profiling import PhaseTimes
from .settings import CompareSettings, FlowConfig, TrainConfig

__all__ = [
    "REFIT_TRAIN",
    "REFIT_FLOW",
    "REFIT_TRAIN_ANNEALED",
    "REFIT_FLOW_ANNEALED",
    "SEPARATE_TEMPERATURE",
    "refit_configs",
    "model_configs",
    "model_correlation",
    "comparison_posterior",
    "warm_start_flow",
    "harmonic_evidence",
    "data_identity",
    "model_key",
    "ModelOutcome",
    "ModelRun",
    "evaluate_model",
]

#: Format number of a model's stored record (part of its key): raised when the record or
#: the defaults that produce it change.
_RECORD_FORMAT = 3


#: Refit-mode training of one- and two-parameter models: the free-spectrum likelihood is
#: cheap and piecewise linear with plateaus, so the flow starts at the importance-weighted
#: moments of prior draws and is trained by forward-KL rounds alone (values of the target, no
#: gradients), which stop once the pools' importance ESS stops improving. The training code
#: then does not depend on the model and compiles once per dimension.
REFIT_TRAIN = TrainConfig(
    init="prior",
    max_steps=0,
    refine_rounds=60,
    refine_pool=4096,
    refine_steps=20,
    refine_batch=256,
    refine_learning_rate=3e-3,
    refine_patience=5,
    refine_target_ess=0.95,
)
#: Refit-mode flow of one- and two-parameter models: a small coupling flow (a coupling layer
#: transforms half of the coordinates in one pass both ways, where a masked autoregressive
#: flow needs n_dim passes for its density: 5x faster training steps in 2-D); one-parameter
#: models, where coupling is undefined, get the same layers as a masked autoregressive flow.
#: Its splines span 15 whitened standard deviations (the default 5 elsewhere): a posterior
#: that runs along a prior edge has a long tail in z, and beyond the splines' span a flow's
#: tails are Gaussian. Over five seeds of pt_sound_2p, sigw_gauss_2p, dw_sm_2p and sigw_delta,
#: importance khat (flow fitted to the defensive component, `ptaflow.proposal`) was below 0.5
#: in 12 of 20 fits with a span of 5 (largest 0.63), 19 of 20 with 10 (0.53) and 20 of 20
#: with 15 (0.44), at the same cost. With 16 knots the wider span keeps the resolution of the
#: core: of eight fits that had khat 0.52-1.07 with 8 knots (20 seeds of every model), seven
#: came below 0.5.
REFIT_FLOW = FlowConfig(family="coupling", flow_layers=4, nn_width=32, interval=15.0, knots=16)


#: Refit-mode training from three parameters on: forward-KL rounds annealed from the tempered
#: posterior prior x L^beta that 65536 prior draws resolve with 3000 effective draws up to
#: beta = 1, each round raising beta as far as its pool keeps half its ESS, and the flow of the
#: best pool at beta = 1. Each tempered posterior's mass is covered before beta rises further,
#: so the modes of the six-parameter phase-transition models that a reverse-KL fit can drop
#: stay in the flow; no gradients of the target are needed.
REFIT_TRAIN_ANNEALED = dataclasses.replace(
    REFIT_TRAIN,
    prior_ess=3000.0,
    refine_rounds=80,
    refine_pool=8192,
    refine_anneal_ess=0.5,
    refine_keep_best=True,
)
#: Its flow: coupling layers, fast in both directions (the rounds draw pools and fit densities).
REFIT_FLOW_ANNEALED = FlowConfig(family="coupling", flow_layers=6, nn_width=64)


def refit_configs(n_dim: int) -> tuple[TrainConfig, FlowConfig, str, float]:
    """Refit mode's default (training, flow, harmonic-mean flow, temperature) for n_dim
    parameters.

    Up to two parameters `REFIT_TRAIN` and `REFIT_FLOW` (a masked autoregressive flow in
    1-D); from three on `REFIT_TRAIN_ANNEALED` and `REFIT_FLOW_ANNEALED`. The harmonic mean's
    phi is the posterior flow in both cases (`harmonic_evidence`), concentrated to T = 0.5 up
    to two parameters and T = 0.3 from three on. Measured on the three- to six-parameter NG15
    models, two seeds each against importance sampling with 20 000 flow draws: at T = 0.3
    12 of 14 estimates were within 2 sigma (igw's phi failed the khat check twice and a
    separate flow takes over); at T = 0.5 five of 14 failed the khat check; a separate flow
    fitted to half of the chains took 3-20 s per model (the posterior flow: 0.1-1.4 s) and
    was off by 4.1 and 4.4 sigma in two of the 14.
    """
    if n_dim >= 3:
        return REFIT_TRAIN_ANNEALED, REFIT_FLOW_ANNEALED, "posterior", 0.3
    flow = REFIT_FLOW if n_dim > 1 else dataclasses.replace(REFIT_FLOW, family="maf")
    return REFIT_TRAIN, flow, "posterior", 0.5


@dataclasses.dataclass(frozen=True)
class ModelOutcome:
    """One model's evidences, summaries and status.

    Attributes:
        name: model name.
        status: "ok", "flagged" (an estimate disagrees with quadrature, or without it the two
            sampling estimates with each other, by > 3 combined sigma; the exact chains have
            R-hat > 1.05; or the importance weights have khat >= 0.7) or "failed".
        reason: why a model failed or was flagged ("" otherwise).
        correlation: what the model was fitted with: "curn" or "hd" (full mode), "refit"
            (refit mode: the HD free-spectrum densities); "" if it failed before that.
        log_z_harmonic, log_z_harmonic_err: learned harmonic mean ln Z +- 1 sigma.
        log_z_importance, log_z_importance_err: importance-sampling ln Z +- 1 sigma.
        harmonic_phi: which flow was the harmonic mean's phi: "posterior" or "separate"
            (`harmonic_evidence`).
        log_z_quadrature, log_z_quadrature_err: ln Z +- 1 sigma by quadrature on a grid
            (`ptaflow.quadrature`; refit models of one and two parameters, else NaN). Where
            present, the status compares each sampling estimate with it.
        khat, ess: importance-weight diagnostics.
        summary: {parameter: {"median", "lower", "upper"}} 68% intervals (model parameters).
        warnings: estimator warnings: each says why ln Z or its error may be unreliable.
        wall_time_s: seconds for this model (fit, samples, evidences).
        key: hash of the inputs (for resuming).
        phase_times: {phase: {"wall_s", "compile_s", "trace_s", "compiles", counts}} of this
            model (`ptaflow.profiling.PhaseTimes`): build, initialise, train, refine, samples,
            evidence_importance, evidence_quadrature and component_fit (refit, one and two
            parameters), exact_samples, evidence_harmonic, summary.
    """

    name: str
    status: str
    reason: str = ""
    correlation: str = ""
    log_z_harmonic: float = math.nan
    log_z_harmonic_err: float = math.nan
    log_z_importance: float = math.nan
    log_z_importance_err: float = math.nan
    harmonic_phi: str = ""
    log_z_quadrature: float = math.nan
    log_z_quadrature_err: float = math.nan
    khat: float = math.nan
    ess: float = math.nan
    summary: dict = dataclasses.field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    wall_time_s: float = 0.0
    key: str = ""
    phase_times: dict = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True unless the model failed."""
        return self.status != "failed"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["warnings"] = list(self.warnings)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelOutcome:
        """The outcome of a `to_dict` form read back from JSON (null numbers become NaN)."""
        d = dict(d)
        d["warnings"] = tuple(d.get("warnings", ()))
        for f in dataclasses.fields(cls):
            if f.type == "float" and d.get(f.name, 0.0) is None:
                d[f.name] = math.nan
        d["summary"] = {
            name: {k: math.nan if v is None else v for k, v in stats.items()}
            for name, stats in d.get("summary", {}).items()
        }
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


def data_identity(settings: CompareSettings) -> dict:
    """What identifies the data of a comparison: densities (refit) or pulsars and inputs (full)."""
    if settings.mode == "refit":
        d = load_free_spectrum_densities()
        return {"densities": d.source, "n_freq": settings.n_freq}
    reduced = select_reduced(settings.data, settings.pulsars)
    return {
        "pulsars": list(reduced.names),
        "reduced_inputs": reduced.provenance.get("inputs"),
        "tspan": reduced.tspan,
        "correlation": settings.correlation,
        "n_rn": settings.n_rn,
        "n_gw": settings.n_gw,
    }


def model_key(model: SourceModel, settings: CompareSettings, data_id: dict | None = None) -> str:
    """Hash of everything a model's result depends on: model file, data, settings, version
    (`ptaflow.identity.result_key`).

    Args:
        model: the source model (its file's bytes enter the hash).
        settings: the comparison settings (seed included).
        data_id: the data identity (`data_identity(settings)`; computed when None).
    """
    data_id = data_identity(settings) if data_id is None else data_id
    return result_key(
        file_digest(model.path),
        model.name,
        data_id,
        settings_identity(settings),
        fmt=_RECORD_FORMAT,
    )


def _declares_correlation(model: SourceModel) -> bool:
    """Whether the model file assigns `correlation` at its top level (the loader reports "hd"
    for a file that does not)."""
    tree = ast.parse(pathlib.Path(model.path).read_bytes(), filename=model.path)
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == "correlation" for t in targets):
            return True
    return False


def model_correlation(model: SourceModel, settings: CompareSettings) -> str:
    """The correlation a comparison fits a model with.

    Full mode: the one its model file declares (`correlation = "uncorrelated"`: "curn", a
    common uncorrelated red process; `"hd"`: "hd", Hellings-Downs), and `settings.correlation`
    for a file that declares none. Refit mode: "refit" (the NG15 free-spectrum densities,
    which come from an HD analysis, whatever the file declares).
    """
    if settings.mode == "refit":
        return "refit"
    if not _declares_correlation(model):
        return settings.correlation
    return "curn" if model.correlation == "uncorrelated" else "hd"


def comparison_posterior(model: str | SourceModel, settings: CompareSettings) -> Posterior:
    """The posterior a comparison fits for one model (refit or full mode, from `settings`;
    the correlation from `model_correlation`); baselines (nested sampling, NUTS) built on it
    see exactly the same target."""
    model = model if isinstance(model, SourceModel) else load_model(model)
    if settings.mode == "refit":
        return make_refit_posterior(model, n_freq=settings.n_freq)
    return make_posterior(
        settings.data,
        model,
        pulsars=settings.pulsars,
        correlation=model_correlation(model, settings),
        n_rn=settings.n_rn,
        n_gw=settings.n_gw,
    )


def model_configs(
    settings: CompareSettings, n_dim: int
) -> tuple[TrainConfig, FlowConfig, str, float]:
    """(training, flow, harmonic-mean flow, temperature) that a comparison uses for a model of
    n_dim parameters: the settings' own, or where they are None (refit mode's defaults)
    `refit_configs(n_dim)`."""
    train, flow, harmonic, temperature = refit_configs(n_dim)
    if settings.harmonic_flow is not None and settings.harmonic_flow != harmonic:
        harmonic, temperature = settings.harmonic_flow, SEPARATE_TEMPERATURE
    temperature = settings.temperature or temperature
    return settings.train or train, settings.flow or flow, harmonic, temperature


def _summary(posterior: Posterior, theta: np.ndarray) -> dict:
    out = {}
    for name in posterior.common_names:
        i = posterior.param_names.index(name)
        lo, med, hi = np.percentile(theta[:, i], [16, 50, 84])
        out[name] = {"median": float(med), "lower": float(lo), "upper": float(hi)}
    return out


def warm_start_flow(
    previous: PosteriorFit, posterior: Posterior, flow_config: FlowConfig
) -> Transformed | None:
    """`previous`'s flow as the start of `posterior`'s training, or None where it cannot
    serve: it serves when both have the same number of parameters, the same red-noise
    parameters (names in order, the same priors) and the same flow architecture. Its
    source-parameter coordinates restart prior-wide (`ptaflow.flows.reset_coordinates`)."""
    prev = previous.posterior
    n_common = len(posterior.common_names)
    if (
        prev.n_dim != posterior.n_dim
        or len(prev.common_names) != n_common
        or previous.flow_config != flow_config
        or prev.mode != "full"
        or posterior.mode != "full"
    ):
        return None
    n_noise = posterior.n_dim - n_common
    noise = posterior.param_names[:n_noise]
    if prev.param_names[:n_noise] != noise:
        return None

    def noise_priors(post):
        blocks = zip(post.prior.block_names, post.prior.priors, strict=True)
        return [(names, repr(prior)) for names, prior in blocks if set(names) <= set(noise)]

    if noise_priors(prev) != noise_priors(posterior):
        return None
    return reset_coordinates(previous.flow, range(n_noise, posterior.n_dim))


#: Temperature of the separate harmonic-mean flow that takes over where the posterior flow
#: fails as phi (`harmonic_evidence`).
SEPARATE_TEMPERATURE = 0.9


def harmonic_evidence(
    key: jax.Array,
    chains,
    fit: PosteriorFit,
    phi: str,
    temperature: float,
    *,
    say: Callable[[str], None] | None = None,
) -> EvidenceResult:
    """The learned harmonic mean of a model from its exact chains.

    phi = "separate": a new flow fitted to half of the chains at `temperature`. phi =
    "posterior": the fitted posterior flow concentrated to `temperature`, evaluated on every
    chain (the chains' proposals are fresh flow draws, independent of its training). The
    posterior flow covers the posterior's mass (forward KL) and may reach beyond it; where its
    terms phi / (L pi) have Pareto khat > 0.5 (infinite variance, the estimator's own check)
    a separate flow at T = `SEPARATE_TEMPERATURE` takes over, and its result carries
    diagnostics["posterior_flow_khat"]. diagnostics["phi"] says which flow gave the number.
    """

    def tagged(lhm: EvidenceResult, **extra) -> EvidenceResult:
        return dataclasses.replace(lhm, diagnostics={**lhm.diagnostics, **extra})

    if phi == "separate":
        lhm = estimate_evidence_harmonic(
            key, chains.samples, chains.log_prob, temperature=temperature
        )
        return tagged(lhm, phi="separate")
    try:
        lhm = estimate_evidence_harmonic(
            key, chains.samples, chains.log_prob, temperature=temperature, flow=fit.flow
        )
        khat = float(lhm.diagnostics["khat"])
    except ParameterError:  # its density is not finite at some chain sample
        khat = math.inf
    if khat <= 0.5:
        return tagged(lhm, phi="posterior")
    if say is not None:
        say(f"the posterior flow's harmonic-mean terms have khat {khat:.2f}: a separate flow")
    lhm = estimate_evidence_harmonic(
        key, chains.samples, chains.log_prob, temperature=SEPARATE_TEMPERATURE
    )
    return tagged(lhm, phi="separate", posterior_flow_khat=khat)


def _differ(a: EvidenceResult, b: EvidenceResult) -> str:
    """ "" or why two ln Z estimates disagree by more than 3 combined sigma."""
    diff = a.log_evidence - b.log_evidence
    sigma = math.hypot(a.log_evidence_err, b.log_evidence_err)
    if math.isfinite(diff) and abs(diff) <= 3 * sigma:
        return ""
    z = abs(diff) / sigma if sigma > 0 else math.inf
    return f"{diff:+.3f} nat ({z:.1f} sigma)"


def _status(lhm, imp, rhat: float, khat: float, quad=None) -> tuple[str, str]:
    """("ok", "") or ("flagged", why). With a quadrature estimate (`quad`), each sampling
    estimate must agree with it within 3 combined sigma; without one, the two sampling
    estimates with each other. Then the exact chains must have R-hat <= 1.05 and, without a
    quadrature, the importance weights Pareto khat < 0.7: khat stands in for a check of the
    importance estimate where there is nothing exact to check it against. With one, the
    weights are bounded by the grid's component (`ptaflow.proposal.PriorComponent`) and
    their khat (still reported) flagged 13 of 140 calibration fits whose estimates agreed
    with the truth."""
    if quad is not None:
        for name, est in (("learned harmonic mean", lhm), ("importance sampling", imp)):
            if why := _differ(est, quad):
                return "flagged", f"{name} differs from quadrature by {why}"
    elif why := _differ(lhm, imp):
        return "flagged", f"estimators differ by {why}"
    if rhat > 1.05:
        return "flagged", f"exact-sample chains R-hat {rhat:.3f}"
    if quad is None and not khat < 0.7:
        return "flagged", f"importance weights unreliable (Pareto khat {khat:.2f})"
    return "ok", ""


def _run_model(
    model: SourceModel,
    settings: CompareSettings,
    key: str,
    say: Callable[[str], None],
    timings: PhaseTimes,
    noise_only: NoiseOnlyPosterior | None = None,
    previous: PosteriorFit | None = None,
) -> tuple[ModelOutcome, PosteriorFit]:
    t0 = time.perf_counter()
    seed = derived_seed(settings.seed, model.name)
    with timings.phase("build"):
        posterior = comparison_posterior(model, settings)
    train_config, flow_config, harmonic_flow, temperature = model_configs(settings, posterior.n_dim)
    init_flow = None
    if settings.mode == "full" and settings.warm_start and previous is not None:
        init_flow = warm_start_flow(previous, posterior, flow_config)
        if init_flow is not None:
            say(f"training starts from the flow of {previous.posterior.model_name}")
    say(f"fitting a flow ({posterior.describe()})")
    fit = fit_posterior(
        posterior,
        seed=seed,
        flow_config=flow_config,
        train_config=train_config,
        n_samples=settings.n_flow_samples,
        progress=True,
        timings=timings,
        noise_only=noise_only,
        init_flow=init_flow,
    )
    # Diverged: the reverse-KL losses ended non-finite. (`final_loss`, the smoothed loss, is
    # NaN as well for a run shorter than the smoothing window, which is no divergence.)
    losses = np.asarray(fit.info.losses)
    if losses.size and not np.isfinite(losses[-1]):
        raise _ModelFailure(
            f"the flow fit diverged: training loss {losses[-1]} at its last step "
            f"({int(np.sum(~np.isfinite(losses)))} of {losses.size} losses not finite)"
        )
    if not fit.ess >= 1:
        raise _ModelFailure(
            f"the flow misses the posterior: importance ESS {fit.ess:.2g} of {fit.z.shape[0]}"
        )
    say(f"importance sampling: ESS {fit.ess:.0f} of {fit.z.shape[0]}, khat {fit.khat:.2f}")
    with timings.phase("evidence_importance"):
        imp = estimate_evidence_importance(fit.log_target, fit.log_q, strata=fit.strata)
    # Refit mode, one or two parameters: the quadrature behind the defensive component.
    quad = fit.quadrature
    quad_warnings = quad.warnings if quad is not None else ()
    if fit.quadrature_failure:
        quad_warnings = (f"no quadrature estimate: {fit.quadrature_failure}",)
    with timings.phase("exact_samples"):
        if settings.exact == "imh":
            say("exact samples (independence Metropolis-Hastings, flow proposals)")
            chains = independence_samples(
                fit, seed=seed + 1, num_chains=settings.n_chains, num_samples=settings.n_per_chain
            )
        else:
            say("exact samples (NUTS in the flow's latent space)")
            chains = neutra_samples(
                fit,
                seed=seed + 1,
                num_chains=settings.n_chains,
                num_warmup=settings.neutra_warmup,
                num_samples=settings.n_per_chain,
            )
    if not np.all(np.isfinite(chains.log_prob)):
        raise _ModelFailure("non-finite log posterior in the exact-sample chains")
    say(f"learned harmonic mean (R-hat max {float(np.max(chains.rhat)):.3f})")
    with timings.phase("evidence_harmonic"):
        lhm = harmonic_evidence(
            jax.random.key(seed + 2), chains, fit, harmonic_flow, temperature, say=say
        )
    with timings.phase("summary"):
        theta = np.asarray(posterior.to_theta(jnp.asarray(chains.flat_samples)))
        summary = _summary(posterior, theta)
    warnings = tuple(imp.warnings) + tuple(lhm.warnings) + quad_warnings
    status, reason = _status(lhm, imp, float(np.max(chains.rhat)), fit.khat, quad)
    outcome = ModelOutcome(
        name=model.name,
        status=status,
        reason=reason,
        correlation=posterior.correlation,
        log_z_harmonic=float(lhm.log_evidence),
        log_z_harmonic_err=float(lhm.log_evidence_err),
        log_z_importance=float(imp.log_evidence),
        log_z_importance_err=float(imp.log_evidence_err),
        harmonic_phi=str(lhm.diagnostics["phi"]),
        log_z_quadrature=quad.log_evidence if quad else math.nan,
        log_z_quadrature_err=quad.log_evidence_err if quad else math.nan,
        khat=float(fit.khat),
        ess=float(fit.ess),
        summary=summary,
        warnings=warnings,
        wall_time_s=time.perf_counter() - t0,
        key=key,
        phase_times=timings.to_dict(),
    )
    return outcome, fit


class _ModelFailure(PtaflowError):
    pass


@dataclasses.dataclass(frozen=True)
class ModelRun:
    """One model's outcome, with the flow fit (None if it failed) and the failure traceback."""

    outcome: ModelOutcome
    fit: PosteriorFit | None = None
    traceback: str = ""


def evaluate_model(
    model: str | SourceModel,
    settings: CompareSettings,
    *,
    key: str | None = None,
    log: Callable[[str], None] | None = None,
    timings: PhaseTimes | None = None,
    noise_only: NoiseOnlyPosterior | None = None,
    previous: PosteriorFit | None = None,
) -> ModelRun:
    """Fit one model's posterior and estimate its evidence (two or three ways), as `compare`
    does per model.

    A failure (unknown model, non-finite values, a divergent fit) does not raise: it comes back
    as a "failed" outcome with its reason, and the traceback in `ModelRun.traceback`.

    Args:
        model: a model name, model-file path or `SourceModel`.
        settings: data, mode and algorithm options; the model's seed derives from
            `settings.seed` and the model name.
        key: the input hash recorded in the outcome (default `model_key(model, settings)`).
        log: progress messages (stage, diagnostics); None for silence.
        timings: a `ptaflow.profiling.PhaseTimes` to record this model's phases in (a new
            one when None); the outcome's `phase_times` holds them either way.
        noise_only: full mode: the noise-only model of the same data and red-noise priors
            from an earlier model (`ModelRun.fit.noise_only`), reused instead of recomputed
            (see `ptaflow.inference.fit_posterior`).
        previous: full mode: the fit of the model before this one, whose flow starts this
            model's training where `settings.warm_start` and `warm_start_flow` allow.
    """
    say = log or (lambda _msg: None)
    timings = PhaseTimes() if timings is None else timings
    try:
        model = model if isinstance(model, SourceModel) else load_model(model)
    except ModelError as exc:
        say(f"failed: {exc}")
        return ModelRun(ModelOutcome(name=str(model), status="failed", reason=str(exc)))
    key = key if key is not None else model_key(model, settings)
    try:
        outcome, fit = _run_model(model, settings, key, say, timings, noise_only, previous)
    except (PtaflowError, FloatingPointError, ValueError, np.linalg.LinAlgError) as exc:
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        say(f"failed: {reason}")
        outcome = ModelOutcome(
            name=model.name,
            status="failed",
            reason=reason,
            correlation=model_correlation(model, settings),
            key=key,
            phase_times=timings.to_dict(),
        )
        return ModelRun(outcome, None, traceback.format_exc())
    say(
        f"{outcome.status}: ln Z = {outcome.log_z_harmonic:.3f} +- "
        f"{outcome.log_z_harmonic_err:.3f} (harmonic), {outcome.log_z_importance:.3f} +- "
        f"{outcome.log_z_importance_err:.3f} (importance), {outcome.wall_time_s:.1f} s"
    )
    return ModelRun(outcome, fit)
