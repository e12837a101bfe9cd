"""Bayesian model comparison of SGWB source models: evidences, Bayes factors, result files.

    settings = CompareSettings(mode="refit")
    table = compare(["smbhb", "powerlaw", "sigw_gauss_2p"], settings=settings, out_dir="runs/ng15")
    print(table)            # ln Z from both estimators, ln B against SMBHB, B, summaries

For each model: a posterior target (refit: the model's parameters on the NG15 free-spectrum
densities; full: per-pulsar red noise + the model's common process on reduced pulsar data,
CURN or HD: the correlation the model file declares, else the settings'), a variational
flow fit (`ptaflow.inference.fit_posterior`), and two or three evidence estimates
(`ptaflow.evaluation`):

- importance sampling with the flow as proposal (ln Z, error, ESS, Pareto khat);
- the learned harmonic mean (McEwen et al. 2021, arXiv:2111.12720) on exact posterior chains
  (independence Metropolis-Hastings with flow proposals, or NUTS preconditioned by the flow),
  split by chain, with phi the posterior flow concentrated, or a flow fitted to half of the
  chains (`harmonic_evidence`);
- for refit models of one and two parameters, quadrature on a grid (`ptaflow.quadrature`).

All are evidences of the same normalised model (prior Jacobian included), so they must
agree: a model whose sampling estimates differ from the quadrature (or, without it, from each
other) by more than 3 combined sigma is flagged. Bayes factors
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

import dataclasses
import functools
import json
import math
import pathlib
import tempfile
from collections.abc import Callable, Sequence

import numpy as np

from .data.free_spectrum import load_free_spectrum_densities
from .devices import release_compiled_code
from .errors import ModelError, ParameterError, close_matches
from .evaluation import (
    _RECORD_FORMAT,
    REFIT_FLOW,
    REFIT_FLOW_ANNEALED,
    REFIT_TRAIN,
    REFIT_TRAIN_ANNEALED,
    SEPARATE_TEMPERATURE,
    ModelOutcome,
    ModelRun,
    comparison_posterior,
    data_identity,
    evaluate_model,
    harmonic_evidence,
    model_configs,
    model_correlation,
    model_key,
    refit_configs,
    warm_start_flow,
)
from .identity import settings_identity
from .models import PRESETS, SourceModel, load_model
from .plots import figure_context, plot_bayes_factors, plot_spectrum
from .plots.comparison import model_figure
from .profiling import PhaseTimes
from .results import (
    json_text,
    provenance,
    save_posterior,
    write_bytes_atomic,
    write_csv_atomic,
    write_json_atomic,
)
from .settings import CompareSettings
from .sidecar import Sidecar

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
    "SEPARATE_TEMPERATURE",
    "warm_start_flow",
    "plot_comparison_bayes_factors",
    "resolve_models",
]


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
                "ln_Z_quadrature": o.log_z_quadrature,
                "ln_Z_quadrature_err": o.log_z_quadrature_err,
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
        quad = any(math.isfinite(o.log_z_quadrature) for o in self.outcomes)
        head = (
            f"{'model':<16s} {'ln Z (harmonic)':>18s} {'ln Z (importance)':>18s} "
            + (f"{'ln Z (quadrature)':>18s} " if quad else "")
            + f"{'ln B vs ' + self.reference:>18s} {'B':>10s} {'time':>7s}  "
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
                + (f"{pm(r['ln_Z_quadrature'], r['ln_Z_quadrature_err'])} " if quad else "")
                + f"{pm(r['ln_B'], r['ln_B_err'])} {b} {r['wall_time_s']:6.1f}s  {corr}{note}"
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
    keys = [model_key(m, settings, data_id) for m in loaded]
    done = [
        _load_record(out / "models" / f"{m.name}.json", k) if out is not None else None
        for m, k in zip(loaded, keys, strict=True)
    ]
    to_fit = [m for m, d in zip(loaded, done, strict=True) if d is None]
    figures = out is not None and plots
    # The helper process checks the models after the first while that one fits, and draws
    # each model's figures while the next fits (`ptaflow.sidecar`).
    with Sidecar(parallel=None if len(to_fit) > 1 or figures else False) as side:
        run = _Run(settings, out, data_id, side, figures, log or (lambda _msg: None))
        for m in to_fit[1:]:
            run.checks[m.name] = side.submit("check", model=str(m.path))
        table = run.models(loaded, keys, done, reference)
        if out is not None:
            _write_outputs(table, out, data_id, run if figures else None, run.say)
    if settings.mode == "refit":
        release_compiled_code()
    return table


@dataclasses.dataclass
class _Run:
    """What a comparison carries from model to model: settings, output folder, data
    identity, the helper process and its pending requests (model checks, figures)."""

    settings: CompareSettings
    out: pathlib.Path | None
    data_id: dict
    side: Sidecar
    figures: bool
    say: Callable[[str], None]
    checks: dict[str, int] = dataclasses.field(default_factory=dict)
    drawn: dict[str, tuple[int, str, str]] = dataclasses.field(default_factory=dict)

    @functools.cached_property
    def context(self) -> str:
        """The figures' second title line."""
        return comparison_context(self.settings, self.data_id)

    def checked(self, model: SourceModel) -> SourceModel:
        """The model after its numerical checks (the helper's verdict where it gave one for
        this version of the file; ModelError where they fail)."""
        i = self.checks.pop(model.name, None)
        answer = self.side.reply(i) if i is not None else None
        stat = pathlib.Path(model.path).stat()
        if answer is not None and answer["stat"] == [stat.st_mtime_ns, stat.st_size]:
            if answer["status"] == "invalid":
                raise ModelError(answer["message"])
            return load_model(model.path, validate=False)
        return load_model(model.path)

    def queue_figures(self, model: SourceModel, key: str) -> None:
        """Hand the model's figures (corner plot, spectrum draws) to the helper."""
        if not self.figures:
            return
        args = {"out": str(self.out), "name": model.name, "model": str(model.path), "key": key}
        i = self.side.submit("figures", **args, context=self.context, n_freq=self.settings.n_freq)
        self.drawn[model.name] = (i, str(model.path), key)

    def figure(self, name: str) -> np.ndarray | str | None:
        """Model `name`'s spectrum draws (its corner plot written), or why it has none."""
        if name not in self.drawn:
            return None
        i, path, key = self.drawn[name]
        answer = self.side.reply(i)
        if answer is None:  # no helper, or it failed here: draw it in this process
            return model_figure(self.out, name, path, key, self.context, self.settings.n_freq)
        if answer["status"] == "skipped":
            return answer["message"]
        return np.load(answer["draws"])

    def models(self, loaded, keys, done, reference) -> Comparison:
        """Fit and evaluate the models in turn (those done with the same inputs are read
        back), writing each record as it finishes and queueing its figures."""
        settings, out = self.settings, self.out
        outcomes: list[ModelOutcome] = []
        noise_only = None  # full mode: the models share the noise-only model of their data
        previous = None  # full mode: the last fit, whose flow may start the next model's
        for i, (model, key, finished) in enumerate(zip(loaded, keys, done, strict=True), 1):

            def say(msg, _i=i, _name=model.name):
                self.say(f"[{_i}/{len(loaded)}] {_name}: {msg}")

            if finished is not None:
                say("already done with the same inputs; skipped")
                outcomes.append(finished)
                self.queue_figures(model, key)
                continue
            try:
                model = self.checked(model)  # the numerical checks of the spectrum
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
            if out is not None and run.fit is not None:
                with timings.phase("write"):
                    h5 = out / "models" / f"{model.name}.h5"
                    save_posterior(run.fit.to_result(comparison_key=key), h5)
                run = dataclasses.replace(
                    run, outcome=dataclasses.replace(run.outcome, phase_times=timings.to_dict())
                )
                record = {"outcome": run.outcome.to_dict(), "data": self.data_id}
                write_json_atomic(
                    out / "models" / f"{model.name}.json", {"format": _RECORD_FORMAT, **record}
                )
                if run.outcome.ok:
                    self.queue_figures(model, key)
            outcomes.append(run.outcome)
            if out is not None and run.traceback:
                error = out / "models" / f"{model.name}.error.txt"
                write_bytes_atomic(error, run.traceback.encode())
        return Comparison(tuple(outcomes), reference, settings, str(out) if out else None)


def _write_outputs(
    table: Comparison, out: pathlib.Path, data_id, figures: _Run | None, log
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
    if figures is not None:
        _plots(table, out, figures, log)


def comparison_context(settings: CompareSettings, data_id: dict | None = None) -> str:
    """What a comparison's figures show (data, mode, correlation, pulsars), for their titles."""
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


def _plots(table: Comparison, out: pathlib.Path, figures: _Run, log) -> None:
    """Bayes factors, one corner plot per finished model and the spectra overlay, from the
    posteriors saved in out/models (those of models finished in an earlier run included;
    `figures` holds the per-model part, drawn by the helper process or here)."""
    context = figures.context
    plot_comparison_bayes_factors(table, out / "bayes_factors.png", context=context)
    spectra = {}
    for o in table.outcomes:
        got = figures.figure(o.name) if o.ok else None
        if isinstance(got, str):
            log(f"{o.name}: {got}")
        elif got is not None:
            spectra[o.name] = got
    if figures.side.note:
        log(f"{figures.side.note}; figures drawn in this process")
    if spectra:
        plot_spectrum(
            spectra,
            load_free_spectrum_densities(),
            n_freq=table.settings.n_freq,
            context=context,
            path=out / "spectra.png",
        )
