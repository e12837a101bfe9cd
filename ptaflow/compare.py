"""Bayesian model comparison of SGWB source models: evidences, Bayes factors, result files.

    settings = CompareSettings(mode="refit")
    table = compare(["smbhb", "powerlaw", "sigw_gauss_2p"], settings=settings, out_dir="runs/ng15")
    print(table)            # ln Z from both estimators, ln B against SMBHB, B, summaries

For each model: a posterior target (refit: the model's parameters on the NG15 free-spectrum
densities; full: per-pulsar red noise + the model's common process on reduced pulsar data,
CURN or HD: the correlation the model file declares, else the settings'), a variational
flow fit (`ptaflow.inference.fit_posterior`), and two evidence
estimates:

- importance sampling with the flow as proposal (ln Z, error, ESS, Pareto khat);
- the learned harmonic mean (McEwen et al. 2021, arXiv:2111.12720) on exact posterior chains
  (independence Metropolis-Hastings with flow proposals, or NUTS preconditioned by the flow),
  split by chain, with phi the posterior flow concentrated, or a flow fitted to half of the
  chains (`harmonic_evidence`).

Both are evidences of the same normalised model (prior Jacobian included), so they must
agree: a model whose estimates differ by more than 3 combined sigma is flagged. Bayes factors
ln B = ln Z_model - ln Z_reference use the learned harmonic mean with errors added in
quadrature (the importance-sampling column is shown beside it).

Before any fit, `compare` loads every model file and the reference, refuses two files that
declare the same model name, checks that `out_dir` is writable and, in full mode, opens and
checks the reduced data: input errors raise at once. Each model's record is written
atomically to `out_dir/models/` as it finishes, keyed by a hash of its inputs (model file,
data, mode, settings, seed, ptaflow version): a re-run skips models already done with the
same inputs (their tables and plots come from the saved records and posteriors), and a model
that fails (a spectrum that fails the numerical checks, non-finite values, a divergent fit)
is reported with its reason while the others complete.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import pathlib
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flowjax.distributions import Transformed

from .data.free_spectrum import load_free_spectrum_densities
from .data.reduction import select_reduced
from .devices import release_compiled_code
from .errors import ModelError, ParameterError, PtaflowError, close_matches
from .evidence import EvidenceResult, estimate_evidence_harmonic, estimate_evidence_importance
from .flows import reset_coordinates
from .identity import derived_seed, file_digest, result_key, settings_identity
from .inference import PosteriorFit, fit_posterior, independence_samples, neutra_samples
from .models import PRESETS, SourceModel, load_model
from .noise_only import NoiseOnlyPosterior
from .posterior import Posterior, make_posterior, make_refit_posterior
from .profiling import PhaseTimes
from .results import (
    json_text,
    load_posterior,
    provenance,
    save_posterior,
    write_bytes_atomic,
    write_csv_atomic,
    write_json_atomic,
)
from .settings import CompareSettings, FlowConfig, TrainConfig

__all__ = [
    "CompareSettings",
    "REFIT_TRAIN",
    "REFIT_FLOW",
    "REFIT_TRAIN_ANNEALED",
    "REFIT_FLOW_ANNEALED",
    "refit_configs",
    "ModelOutcome",
    "ModelRun",
    "Comparison",
    "compare",
    "evaluate_model",
    "model_key",
    "data_identity",
    "settings_identity",
    "comparison_posterior",
    "model_correlation",
    "model_configs",
    "harmonic_evidence",
    "warm_start_flow",
    "plot_comparison_bayes_factors",
    "resolve_models",
]

_RECORD_FORMAT = 2


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
REFIT_FLOW = FlowConfig(family="coupling", flow_layers=4, nn_width=32)


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
        status: "ok", "flagged" (the estimates disagree by > 3 combined sigma, the exact
            chains have R-hat > 1.05, or the importance weights have khat >= 0.7) or "failed".
        reason: why a model failed or was flagged ("" otherwise).
        correlation: what the model was fitted with: "curn" or "hd" (full mode), "refit"
            (refit mode: the HD free-spectrum densities); "" if it failed before that.
        log_z_harmonic, log_z_harmonic_err: learned harmonic mean ln Z +- 1 sigma.
        log_z_importance, log_z_importance_err: importance-sampling ln Z +- 1 sigma.
        harmonic_phi: which flow was the harmonic mean's phi: "posterior" or "separate"
            (`harmonic_evidence`).
        khat, ess: importance-weight diagnostics.
        summary: {parameter: {"median", "lower", "upper"}} 68% intervals (model parameters).
        warnings: estimator warnings: each says why ln Z or its error may be unreliable.
        wall_time_s: seconds for this model (fit, samples, evidences).
        key: hash of the inputs (for resuming).
        phase_times: {phase: {"wall_s", "compile_s", "trace_s", "compiles", counts}} of this
            model (`ptaflow.profiling.PhaseTimes`): build, initialise, train, refine, samples,
            evidence_importance, exact_samples, evidence_harmonic, summary.
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


@dataclasses.dataclass(frozen=True)
class Comparison:
    """The comparison table: outcomes in the order given, Bayes factors against a reference."""

    outcomes: tuple[ModelOutcome, ...]
    reference: str
    settings: CompareSettings
    out_dir: str | None = None

    def _ref(self) -> ModelOutcome | None:
        for o in self.outcomes:
            if o.name == self.reference and o.ok:
                return o
        return None

    def bayes_factors(self, method: str = "harmonic") -> dict[str, tuple[float, float]]:
        """{model: (ln B, error)} against the reference; NaN when either side failed."""
        if method not in ("harmonic", "importance"):
            raise ParameterError(f"method={method!r}: expected 'harmonic' or 'importance'")
        ref = self._ref()
        out = {}
        for o in self.outcomes:
            if ref is None or not o.ok:
                out[o.name] = (math.nan, math.nan)
                continue
            lz, le = getattr(o, f"log_z_{method}"), getattr(o, f"log_z_{method}_err")
            rz, re_ = getattr(ref, f"log_z_{method}"), getattr(ref, f"log_z_{method}_err")
            err = 0.0 if o.name == ref.name else math.hypot(le, re_)
            out[o.name] = (lz - rz, err)
        return out

    def rows(self) -> list[dict]:
        """One flat dict per model (the CSV/JSON table)."""
        bf_h, bf_i = self.bayes_factors("harmonic"), self.bayes_factors("importance")
        rows = []
        for o in self.outcomes:
            row = {
                "model": o.name,
                "status": o.status,
                "correlation": o.correlation,
                "ln_Z_harmonic": o.log_z_harmonic,
                "ln_Z_harmonic_err": o.log_z_harmonic_err,
                "ln_Z_importance": o.log_z_importance,
                "ln_Z_importance_err": o.log_z_importance_err,
                "harmonic_phi": o.harmonic_phi,
                "ln_B": bf_h[o.name][0],
                "ln_B_err": bf_h[o.name][1],
                "B": math.exp(bf_h[o.name][0]) if math.isfinite(bf_h[o.name][0]) else math.nan,
                "ln_B_importance": bf_i[o.name][0],
                "ln_B_importance_err": bf_i[o.name][1],
                "khat": o.khat,
                "ess": o.ess,
                "wall_time_s": o.wall_time_s,
                "reason": o.reason,
            }
            rows.append(row)
        return rows

    def __str__(self) -> str:
        """The table as text; a status with * marks a model whose estimators warned (the
        warnings follow the table)."""
        full = self.settings.mode == "full"
        head = (
            f"{'model':<16s} {'ln Z (harmonic)':>18s} {'ln Z (importance)':>18s} "
            f"{'ln B vs ' + self.reference:>18s} {'B':>10s} {'time':>7s}  "
            + ("corr  " if full else "")
            + "status"
        )
        lines = [head, "-" * len(head)]
        notes = []
        for o, r in zip(self.outcomes, self.rows(), strict=True):

            def pm(v, e):
                return f"{v:10.3f} +- {e:5.3f}" if math.isfinite(v) else f"{'-':>18s}"

            b = f"{r['B']:10.3g}" if math.isfinite(r["B"]) else f"{'-':>10s}"
            status = r["status"] + ("*" if o.warnings else "")
            note = status + (f": {r['reason']}" if r["reason"] else "")
            corr = f"{o.correlation or '-':<4s}  " if full else ""
            lines.append(
                f"{r['model']:<16s} {pm(r['ln_Z_harmonic'], r['ln_Z_harmonic_err'])} "
                f"{pm(r['ln_Z_importance'], r['ln_Z_importance_err'])} "
                f"{pm(r['ln_B'], r['ln_B_err'])} {b} {r['wall_time_s']:6.1f}s  {corr}{note}"
            )
            notes += [f"* {o.name}: {w}" for w in o.warnings]
        if notes:
            lines += ["", "Warnings (* above: ln Z or its error may be unreliable):", *notes]
        return "\n".join(lines)


def resolve_models(models: Sequence[str] | str | None) -> tuple[str, ...]:
    """Model names/paths from a list that may contain preset names (e.g. "seed10")."""
    if models is None:
        models = ("seed10",)
    if isinstance(models, str):
        models = (models,)
    out: list[str] = []
    for m in models:
        m = str(m)
        for name in PRESETS.get(m, (m,)):
            if name not in out:
                out.append(name)
    if not out:
        raise ParameterError("no models given; pass names, model-file paths or a preset")
    return tuple(out)


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
    harmonic = settings.harmonic_flow or harmonic
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
    if phi == "separate":
        lhm = estimate_evidence_harmonic(
            key, chains.samples, chains.log_prob, temperature=temperature
        )
        return dataclasses.replace(lhm, diagnostics={**lhm.diagnostics, "phi": "separate"})
    lhm = estimate_evidence_harmonic(
        key, chains.samples, chains.log_prob, temperature=temperature, flow=fit.flow
    )
    khat = float(lhm.diagnostics["khat"])
    if khat <= 0.5:
        return dataclasses.replace(lhm, diagnostics={**lhm.diagnostics, "phi": "posterior"})
    if say is not None:
        say(f"the posterior flow's harmonic-mean terms have khat {khat:.2f}: a separate flow")
    lhm = estimate_evidence_harmonic(
        key, chains.samples, chains.log_prob, temperature=SEPARATE_TEMPERATURE
    )
    return dataclasses.replace(
        lhm, diagnostics={**lhm.diagnostics, "phi": "separate", "posterior_flow_khat": khat}
    )


def _status(lhm, imp, rhat: float, khat: float) -> tuple[str, str]:
    """("ok", "") or ("flagged", why): the two ln Z estimates (`EvidenceResult`) disagree by
    more than 3 combined sigma, the exact chains have R-hat > 1.05, or the importance weights
    have Pareto khat >= 0.7."""
    diff = lhm.log_evidence - imp.log_evidence
    sigma = math.hypot(lhm.log_evidence_err, imp.log_evidence_err)
    if not (math.isfinite(diff) and abs(diff) <= 3 * sigma):
        return "flagged", f"estimators differ by {diff:+.3f} nat ({abs(diff) / sigma:.1f} sigma)"
    if rhat > 1.05:
        return "flagged", f"exact-sample chains R-hat {rhat:.3f}"
    if not khat < 0.7:
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
        imp = estimate_evidence_importance(fit.log_target, fit.log_q)
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
    warnings = tuple(imp.warnings) + tuple(lhm.warnings)
    status, reason = _status(lhm, imp, float(np.max(chains.rhat)), fit.khat)
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
    """Fit one model's posterior and estimate its evidence twice, as `compare` does per model.

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


def _load_record(path: pathlib.Path, key: str) -> ModelOutcome | None:
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if rec.get("format") != _RECORD_FORMAT or rec.get("outcome", {}).get("key") != key:
        return None
    outcome = ModelOutcome.from_dict(rec["outcome"])
    return outcome if outcome.ok else None  # failed models are retried


def _load_models(specs: Sequence[str], reference: str) -> tuple[list[SourceModel], str]:
    """Load the model files (without the numerical checks) and the reference: (the models, the
    reference first where the list lacks it; the reference's name).

    Raises:
        ModelError: an unknown name, a missing or invalid file, or two files that declare
            the same model name.
    """

    def load(spec: str, prefix: str = "", hint: str = "") -> SourceModel:
        try:
            return load_model(spec, validate=False)
        except ModelError as exc:
            raise ModelError(f"{prefix}{exc}{hint}") from exc

    presets = f" Presets: {', '.join(PRESETS)}."
    models = [load(spec, hint=presets + close_matches(spec, PRESETS)) for spec in specs]
    ref = load(reference, prefix="reference: ")
    if all(m.path != ref.path for m in models):
        models.insert(0, ref)
    by_name: dict[str, SourceModel] = {}
    unique = []
    for m in models:
        seen = by_name.setdefault(m.name, m)
        if seen.path != m.path:
            raise ModelError(
                f"two model files declare the name {m.name!r}: {seen.path} and {m.path}. "
                "Results are kept by model name; give one of them another `name`"
            )
        if seen is m:
            unique.append(m)
    return unique, ref.name


def _writable_folder(out_dir: str | pathlib.Path) -> pathlib.Path:
    """Create `out_dir/models` and write a test file there (ParameterError where it fails)."""
    out = pathlib.Path(out_dir)
    try:
        (out / "models").mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out / "models") as fh:
            fh.write(b"test")
    except OSError as exc:
        raise ParameterError(
            f"out_dir={str(out)!r}: cannot write results there ({exc}); give a folder that "
            "can be created and written"
        ) from exc
    return out


def compare(
    models: Sequence[str] | str | None = None,
    *,
    settings: CompareSettings | None = None,
    out_dir: str | pathlib.Path | None = None,
    plots: bool = True,
    log: Callable[[str], None] | None = print,
) -> Comparison:
    """Evidences and Bayes factors of several SGWB models on one data set.

    Args:
        models: model names, model-file paths and/or presets (default the seed paper's ten,
            preset "seed10").
        settings: data, mode and algorithm options (`CompareSettings`).
        out_dir: folder for results (per-model records as they finish; then
            comparison.json/.csv/.h5 and PNG plots). Re-running with the same folder skips
            models already done with the same inputs. None: nothing is written.
        plots: write the PNG plots (Bayes factors, corner per model, spectra overlay).
        log: progress messages (model, stage); None for silence.

    Returns:
        The `Comparison` table, keyed by model name.

    Raises:
        ModelError: before any fit, for an unknown model or reference, a missing or invalid
            model file, or two model files that declare the same name.
        ParameterError: before any fit, when out_dir cannot be created or written.
        DataError: before any fit in full mode, when the reduced data are unreadable or
            inconsistent (shapes, provenance, non-finite statistics).
    """
    settings = settings or CompareSettings()
    loaded, reference = _load_models(resolve_models(models), settings.reference)
    out = _writable_folder(out_dir) if out_dir is not None else None
    data_id = data_identity(settings)  # full mode: opens and checks the reduced data
    say_all = log or (lambda _msg: None)
    outcomes: list[ModelOutcome] = []
    noise_only = None  # full mode: the models share the noise-only model of their data
    previous = None  # full mode: the last fit, whose flow may start the next model's
    for i, model in enumerate(loaded, 1):

        def say(msg, _i=i, _name=model.name):
            say_all(f"[{_i}/{len(loaded)}] {_name}: {msg}")

        key = model_key(model, settings, data_id)
        record = out / "models" / f"{model.name}.json" if out is not None else None
        if record is not None and (done := _load_record(record, key)) is not None:
            say("already done with the same inputs; skipped")
            outcomes.append(done)
            continue
        try:
            model = load_model(model.path)  # the numerical checks of the spectrum
        except ModelError as exc:
            say(f"failed: {exc}")
            outcomes.append(ModelOutcome(name=model.name, status="failed", reason=str(exc)))
            continue
        timings = PhaseTimes()
        run = evaluate_model(
            model,
            settings,
            key=key,
            log=say,
            timings=timings,
            noise_only=noise_only,
            previous=previous,
        )
        if settings.mode == "full":
            # Full mode shares no compiled code between models (the flow's training step
            # holds the model's likelihood); refit mode keeps the flow code for the next.
            release_compiled_code()
        if run.fit is not None:
            noise_only = run.fit.noise_only or noise_only
            previous = run.fit
        if record is not None and run.fit is not None:
            with timings.phase("write"):
                h5 = out / "models" / f"{model.name}.h5"
                save_posterior(run.fit.to_result(comparison_key=key), h5)
            run = dataclasses.replace(
                run, outcome=dataclasses.replace(run.outcome, phase_times=timings.to_dict())
            )
            write_json_atomic(
                record,
                {"format": _RECORD_FORMAT, "outcome": run.outcome.to_dict(), "data": data_id},
            )
        outcomes.append(run.outcome)
        if out is not None and run.traceback:
            write_bytes_atomic(out / "models" / f"{model.name}.error.txt", run.traceback.encode())
    table = Comparison(tuple(outcomes), reference, settings, str(out) if out else None)
    if out is not None:
        models_by_name = {m.name: m for m in loaded}
        _write_outputs(table, out, models_by_name, data_id, plots, say_all)
    if settings.mode == "refit":
        release_compiled_code()
    return table


def _write_outputs(
    table: Comparison, out: pathlib.Path, models: dict, data_id, plots: bool, log
) -> None:
    import h5py

    rows = table.rows()
    prov = provenance()
    doc = {
        "reference": table.reference,
        "settings": table.settings.to_dict(),
        "data": data_id,
        "rows": rows,
        "summaries": {o.name: o.summary for o in table.outcomes},
        "warnings": {o.name: list(o.warnings) for o in table.outcomes},
        "provenance": prov,
    }
    write_json_atomic(out / "comparison.json", doc)
    write_csv_atomic(out / "comparison.csv", rows, list(rows[0]))
    tmp = out / "comparison.h5.tmp"
    with h5py.File(tmp, "w") as f:
        f.attrs["provenance"] = json_text(prov)
        f.attrs["settings"] = json_text(doc["settings"])
        f.attrs["reference"] = table.reference
        for col in rows[0]:
            values = [r[col] for r in rows]
            if isinstance(values[0], str):
                f.create_dataset(col, data=np.array([v.encode() for v in values]))
            else:
                f.create_dataset(col, data=np.array(values, dtype=float))
    write_bytes_atomic(out / "comparison.h5", tmp.read_bytes())
    tmp.unlink()
    if plots:
        _plots(table, out, models, log, comparison_context(table.settings, data_id))


def comparison_context(settings: CompareSettings, data_id: dict | None = None) -> str:
    """What a comparison's figures show (data, mode, correlation, pulsars), for their titles."""
    from .plots import figure_context

    data_id = data_identity(settings) if data_id is None else data_id
    if settings.mode == "refit":
        name = pathlib.Path(str(data_id["densities"])).name
        return figure_context(
            f"free-spectrum densities {name} ({settings.n_freq} frequencies)", mode="refit"
        )
    data = pathlib.Path(str(settings.data)).name if settings.data is not None else "NG15 (shipped)"
    return figure_context(
        data, mode="full", correlation=settings.correlation, pulsars=data_id["pulsars"]
    )


def plot_comparison_bayes_factors(
    table: Comparison, path: str | pathlib.Path, context: str = ""
) -> bool:
    """Bar chart of a comparison's ln B (harmonic mean, importance sampling beside it) with
    errors, every model with its status (flagged hatched, failed marked); returns False
    (nothing written) if no model has a finite ln B."""
    from .plots import plot_bayes_factors

    rows = table.rows()
    if not any(math.isfinite(r["ln_B"]) for r in rows):
        return False
    plot_bayes_factors(
        [r["model"] for r in rows],
        [r["ln_B"] for r in rows],
        [r["ln_B_err"] for r in rows],
        reference=table.reference,
        second=([r["ln_B_importance"] for r in rows], [r["ln_B_importance_err"] for r in rows]),
        status=[r["status"] for r in rows],
        context=context,
        path=path,
    )
    return True


def _plots(table: Comparison, out: pathlib.Path, models: dict, log, context: str = "") -> None:
    """Bayes factors, one corner plot per finished model and the spectra overlay, from the
    posteriors saved in out/models (those of models finished in an earlier run included)."""
    from .plots import plot_corner, plot_spectrum, spectrum_draws

    plot_comparison_bayes_factors(table, out / "bayes_factors.png", context=context)
    dens = load_free_spectrum_densities()
    spectra = {}
    for o in table.outcomes:
        if not o.ok:
            continue
        path = out / "models" / f"{o.name}.h5"
        result = load_posterior(path) if path.is_file() else None
        if result is None or result.provenance.get("comparison_key") != o.key:
            log(f"{o.name}: {path} does not hold this model's posterior; not plotted")
            continue
        model = models[o.name]
        theta = result.resampled(jax.random.key(0), 4000).samples
        theta = theta[:, [result.param_names.index(n) for n in model.param_names]]
        labels = result.latex_labels or {}
        plot_corner(
            [theta],
            param_names=model.param_names,
            labels=[o.name],
            latex_labels={n: labels[n] for n in model.param_names if n in labels},
            context=context,
            path=out / f"corner_{o.name}.png",
        )
        spectra[o.name] = spectrum_draws(
            model, theta, dens.freqs[: table.settings.n_freq], dens.tspan
        )
    if spectra:
        plot_spectrum(
            spectra, dens, n_freq=table.settings.n_freq, context=context, path=out / "spectra.png"
        )
