"""Batch job specifications: a TOML file validated into frozen dataclasses, expanded into tasks.

A job is models x data sets (mode refit/full, CURN/HD) x settings variants x replicate seeds.
Each task is one model fit plus its evidence estimates (`ptaflow.evaluation.evaluate_model`)
and is keyed by a hash of its inputs: model file, data, settings, base seed, replicate number
and ptaflow version. The task's seed derives from the base seed and that key, so the same job
gives the same numbers whichever executor runs it, and a changed input gives a new task.
The checks of single keys and values live in `ptaflow.batch.checks`, the expansion into
tasks in `ptaflow.batch.tasks`; `Task` and `expand_tasks` are importable from here too.

Every key and value is checked when the file is loaded: its type (a TOML true/false is no
number, "300" no integer), its range, and the frequencies of each data set against its data
(refit: the free-spectrum densities; full: the reduced file); errors name the key as
TABLE.KEY. Example (every key shown; only `models` and one `[[datasets]]` table are required):

    name = "ng15-sources"           # letters, digits, '_.+-' (data-set, variant names too)
    out_dir = "runs/ng15-sources"   # relative to this file
    models = ["seed10"]             # names, model-file paths (relative to this file), presets
    reference = "smbhb"             # Bayes factors against this model (added if missing)
    base_seed = 0
    replicates = 1                  # seeds per model, data set and variant

    [[datasets]]
    name = "refit"
    mode = "refit"                  # NG15 free-spectrum densities, SGWB parameters only
    n_freq = 14

    [[datasets]]
    name = "ng15-10psr"
    mode = "full"                   # reduced pulsar data, red noise + common process
    pulsars = 10                    # N best by the ranking rule, or a list of names
    data = "data/ng15_48psr_reduced_k30.h5"   # default: the shipped NG15 subset
    correlations = ["curn", "hd"]
    n_rn = 30
    n_gw = 14

    [train]        # ptaflow.settings.TrainConfig fields, over the mode's default
    max_steps = 3000
    [flow]         # ptaflow.settings.FlowConfig fields
    family = "maf"
    [evidence]     # n_flow_samples, exact ("imh"/"neutra"), n_chains, n_per_chain,
    n_chains = 20  # neutra_warmup, temperature

    [[variants]]   # optional settings sweep; each overrides [train]/[flow]/[evidence]
    name = "long"
    train = { max_steps = 6000 }

    [executor]     # defaults for `ptaflow batch run` (command-line options override)
    kind = "local" # "local", "ray" or "slurm"
    workers = 1    # local: parallel worker processes, or "gpus" (one per visible GPU)
    retries = 2    # extra attempts for a task that crashed or failed
    [executor.ray]
    address = ""   # "" starts a local Ray cluster; "auto" or "ray://head:10001" joins one
    num_cpus = 1   # CPUs per task (GPUs: one per task whenever the cluster has GPUs)
    [executor.slurm]
    partition = "gpu"
    time = "04:00:00"
    gpus_per_task = 1
    cpus_per_task = 4
    mem = "32G"
    account = ""
    max_parallel = 0            # array throttle (%N); 0 = no limit
    python = ""                 # interpreter on the nodes (default: this one)
    setup = ["module load cuda/12"]   # shell lines run before the task
    extra = ["--constraint=h100"]     # further #SBATCH options
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
import typing
from collections.abc import Mapping
from typing import Any

from ..errors import DataError, ParameterError
from ..settings import (
    COMPARE_RULES,
    FLOW_RULES,
    TRAIN_RULES,
    CompareSettings,
    FlowConfig,
    Rule,
    TrainConfig,
)
from .checks import (
    _check_keys,
    _check_name,
    _check_retries,
    _check_value,
    _check_workers,
    _expect,
    _one_line,
    _safe_name,
    _settings_table,
)
from .tasks import Task, _task_settings, expand_tasks

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "DatasetSpec",
    "VariantSpec",
    "ExecutorSpec",
    "JobSpec",
    "Task",
    "load_job",
    "parse_job",
    "expand_tasks",
]

_EVIDENCE_KEYS = (
    "n_flow_samples",
    "exact",
    "n_chains",
    "n_per_chain",
    "neutra_warmup",
    "temperature",
    "harmonic_flow",
)

#: Limits of the executor options: (test, what is expected). The settings tables ([train],
#: [flow], [evidence]) are checked with their classes' own rules (`ptaflow.settings`).
_EXECUTOR_LIMITS: dict[str, Rule] = {
    "num_cpus": (lambda v: v > 0, "a number > 0"),
    "gpus_per_task": (lambda v: v >= 0, "an integer >= 0"),
    "cpus_per_task": (lambda v: v >= 0, "an integer >= 0"),
    "max_parallel": (lambda v: v >= 0, "an integer >= 0 (0: no limit)"),
}


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """One data set of a job.

    Attributes:
        name: label used in tables and reports.
        mode: "refit" (free-spectrum densities) or "full" (reduced pulsar data).
        pulsars: full mode: N best pulsars or their names.
        data: full mode: reduced-data HDF5 path (absolute), None for the shipped NG15 subset.
        correlations: full mode: "curn" and/or "hd", each a separate comparison.
        n_rn, n_gw: red-noise / common-process frequencies (full mode).
        n_freq: free-spectrum frequencies (refit mode).
    """

    name: str
    mode: str = "refit"
    pulsars: int | tuple[str, ...] = 10
    data: str | None = None
    correlations: tuple[str, ...] = ("curn",)
    n_rn: int = 30
    n_gw: int = 14
    n_freq: int = 14


@dataclasses.dataclass(frozen=True)
class VariantSpec:
    """A settings variant: overrides of the job's [train], [flow] and [evidence] tables."""

    name: str = "default"
    train: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    flow: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    evidence: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ExecutorSpec:
    """How `ptaflow batch run` runs the tasks by default (see the module docstring)."""

    kind: str = "local"
    workers: int | str = 1
    retries: int = 2
    ray: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    slurm: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """A validated batch job (see the module docstring for the TOML form).

    Attributes:
        name: job name (Slurm job name, report titles).
        path: the job file (absolute), None for a job built in Python.
        out_dir: output folder (absolute).
        models: model names / model-file paths, presets expanded, reference first.
        reference: model the Bayes factors are taken against.
        base_seed: the seed every task seed derives from.
        replicates: independent seeds per model, data set and variant.
        datasets, variants, executor: see their classes.
        train, flow, evidence: job-wide settings (TrainConfig / FlowConfig fields; evidence
            options of `CompareSettings`).
    """

    name: str
    out_dir: str
    models: tuple[str, ...]
    datasets: tuple[DatasetSpec, ...]
    reference: str = "smbhb"
    base_seed: int = 0
    replicates: int = 1
    train: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    flow: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    evidence: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    variants: tuple[VariantSpec, ...] = (VariantSpec(),)
    executor: ExecutorSpec = ExecutorSpec()
    path: str | None = None


# --- parsing -----------------------------------------------------------------------------------


def load_job(path: str | pathlib.Path) -> JobSpec:
    """Read and validate a TOML job file (relative paths in it are relative to the file).

    Raises:
        DataError: the file is missing or is not valid TOML.
        ParameterError: a key or value is not what a job expects (the message names it).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f"job file {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"job file {path} is not valid TOML: {exc}") from exc
    return parse_job(raw, base_dir=path.parent, path=path)


def _resolve(base: pathlib.Path, value: str) -> str:
    p = pathlib.Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def _is_path(model: str) -> bool:
    return model.endswith(".py") or "/" in model or "\\" in model


def _parse_dataset(d: Any, i: int, base: pathlib.Path) -> DatasetSpec:
    where = f"[[datasets]] #{i + 1}"
    _expect(d, dict, where, "a table")
    allowed = ("name", "mode", "pulsars", "data", "correlations", "n_rn", "n_gw", "n_freq")
    _check_keys(d, allowed, where)
    name = _check_name(d.get("name", f"dataset{i + 1}"), f"{where}.name")
    where = f"[[datasets]] {name!r}"
    mode = d.get("mode", "refit")
    if mode not in ("refit", "full"):
        raise ParameterError(f"{where}.mode = {mode!r}: expected 'refit' or 'full'")
    pulsars = d.get("pulsars", 10)
    if isinstance(pulsars, list):
        pulsars = tuple(_expect(p, str, f"{where}.pulsars", "pulsar names") for p in pulsars)
        if not pulsars:
            raise ParameterError(f"{where}.pulsars is empty: expected N or pulsar names")
    else:
        _expect(pulsars, int, f"{where}.pulsars", "an integer N or a list of pulsar names")
        if pulsars < 1:
            raise ParameterError(f"{where}.pulsars = {pulsars}: expected N >= 1")
    data = d.get("data")
    if data is not None:
        data = _expect(data, str, f"{where}.data", "a file path")
        data = _resolve(base, _one_line(data, f"{where}.data"))
    corr = d.get("correlations", ["curn"])
    corr = [corr] if isinstance(corr, str) else corr
    _expect(corr, list, f"{where}.correlations", "a list of 'curn'/'hd'")
    for c in corr:
        if c not in ("curn", "hd"):
            raise ParameterError(f"{where}.correlations: {c!r} is not 'curn' or 'hd'")
    if len(set(corr)) != len(corr) or not corr:
        raise ParameterError(f"{where}.correlations = {corr}: expected distinct, non-empty")
    ints = {}
    for k, default in (("n_rn", 30), ("n_gw", 14), ("n_freq", 14)):
        v = _expect(d.get(k, default), int, f"{where}.{k}", "a positive integer")
        if v < 1:
            raise ParameterError(f"{where}.{k} = {v}: expected a positive integer")
        ints[k] = v
    if mode == "refit" and ("correlations" in d or "pulsars" in d or "data" in d):
        raise ParameterError(
            f"{where}: mode 'refit' uses the NG15 free-spectrum densities; 'pulsars', 'data' "
            "and 'correlations' apply to mode 'full'"
        )
    _check_frequencies(where, mode, pulsars, data, ints)
    return DatasetSpec(
        name=name,
        mode=mode,
        pulsars=pulsars,
        data=data,
        correlations=tuple(corr) if mode == "full" else ("curn",),
        **ints,
    )


def _check_frequencies(where: str, mode: str, pulsars, data: str | None, ints: dict) -> None:
    """The data set's frequencies against its data: the densities (refit) or reduced file."""
    if mode == "refit":
        from ..data.free_spectrum import load_free_spectrum_densities

        densities = load_free_spectrum_densities()
        n_avail, what = int(densities.freqs.shape[0]), f"free-spectrum densities {densities.source}"
        key = "n_freq"
    else:
        from ..data.reduction import select_reduced

        if ints["n_gw"] > ints["n_rn"]:
            raise ParameterError(
                f"{where}.n_gw = {ints['n_gw']}: expected 1 <= n_gw <= n_rn = {ints['n_rn']} "
                "(the common process uses the lowest red-noise frequencies)"
            )
        try:
            reduced = select_reduced(data)
        except DataError as exc:
            raise DataError(f"{where}.data: {exc}") from exc
        try:
            select_reduced(reduced, pulsars)
        except DataError as exc:
            raise ParameterError(f"{where}.pulsars: {exc}") from exc
        n_avail, what = reduced.n_freq, f"reduced data {data or 'shipped with ptaflow'}"
        key = "n_rn"
    if ints[key] > n_avail:
        raise ParameterError(
            f"{where}.{key} = {ints[key]}: expected 1..{n_avail} (the frequencies of the {what})"
        )


def _config_fields() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Settings that job tables may set, with their types: [train], [flow], [evidence]."""
    evidence = typing.get_type_hints(CompareSettings)
    return (
        typing.get_type_hints(TrainConfig),
        typing.get_type_hints(FlowConfig),
        {key: evidence[key] for key in _EVIDENCE_KEYS},
    )


def _parse_variants(
    variants_raw: Any, train_fields: dict, flow_fields: dict, evidence_fields: dict
) -> tuple[VariantSpec, ...]:
    """The [[variants]] tables: distinct names, each a [train]/[flow]/[evidence] override."""
    variants = []
    _expect(variants_raw, list, "variants", "an array of [[variants]] tables")
    for i, v in enumerate(variants_raw):
        where = f"[[variants]] #{i + 1}"
        _expect(v, dict, where, "a table")
        _check_keys(v, ("name", "train", "flow", "evidence"), where)
        vname = _check_name(v.get("name", f"variant{i + 1}"), f"{where}.name")
        where = f"[[variants]] {vname!r}"
        variants.append(
            VariantSpec(
                name=vname,
                train=_settings_table(
                    v.get("train", {}), f"{where}.train", train_fields, TRAIN_RULES
                ),
                flow=_settings_table(v.get("flow", {}), f"{where}.flow", flow_fields, FLOW_RULES),
                evidence=_settings_table(
                    v.get("evidence", {}), f"{where}.evidence", evidence_fields, COMPARE_RULES
                ),
            )
        )
    vnames = [v.name for v in variants]
    if not variants or len(set(vnames)) != len(vnames):
        raise ParameterError(f"[[variants]] names {vnames}: expected distinct names")
    return tuple(variants)


def parse_job(
    raw: Mapping[str, Any],
    *,
    base_dir: str | pathlib.Path = ".",
    path: str | pathlib.Path | None = None,
) -> JobSpec:
    """Validate a job given as a dict (the parsed TOML); see `load_job`.

    Args:
        raw: the job's tables and keys.
        base_dir: folder that relative paths (out_dir, data, model files) are relative to.
        path: the job file, recorded in the spec.
    """
    base = pathlib.Path(base_dir).resolve()
    top = (
        "name",
        "out_dir",
        "models",
        "reference",
        "base_seed",
        "replicates",
        "datasets",
        "train",
        "flow",
        "evidence",
        "variants",
        "executor",
    )
    _check_keys(raw, top, "job")
    default_name = _safe_name(pathlib.Path(path).stem) if path else "job"
    name = _check_name(raw.get("name", default_name), "name")
    out_dir = _expect(raw.get("out_dir", f"runs/{name}"), str, "out_dir", "a path")
    out_dir = _resolve(base, _one_line(out_dir, "out_dir"))
    expanded, reference = _parse_models(raw, base)
    base_seed = _check_value(raw.get("base_seed", 0), int, "base_seed")
    replicates = _check_value(raw.get("replicates", 1), int, "replicates")
    if replicates < 1:
        raise ParameterError(f"replicates = {replicates}: expected a positive integer")
    ds_raw = raw.get("datasets")
    if not ds_raw:
        raise ParameterError("job: no [[datasets]] table: expected at least one data set")
    _expect(ds_raw, list, "datasets", "an array of [[datasets]] tables")
    datasets = tuple(_parse_dataset(d, i, base) for i, d in enumerate(ds_raw))
    names = [d.name for d in datasets]
    if len(set(names)) != len(names):
        raise ParameterError(f"[[datasets]] names repeat: {names}; expected distinct names")
    train_fields, flow_fields, evidence_fields = _config_fields()
    train = _settings_table(raw.get("train", {}), "[train]", train_fields, TRAIN_RULES)
    flow = _settings_table(raw.get("flow", {}), "[flow]", flow_fields, FLOW_RULES)
    evidence = _settings_table(
        raw.get("evidence", {}), "[evidence]", evidence_fields, COMPARE_RULES
    )
    variants = _parse_variants(
        raw.get("variants", [{"name": "default"}]), train_fields, flow_fields, evidence_fields
    )
    job = JobSpec(
        name=name,
        out_dir=out_dir,
        models=expanded,
        datasets=datasets,
        reference=reference,
        base_seed=base_seed,
        replicates=replicates,
        train=train,
        flow=flow,
        evidence=evidence,
        variants=variants,
        executor=_parse_executor(raw.get("executor", {})),
        path=str(pathlib.Path(path).resolve()) if path is not None else None,
    )
    for ds in job.datasets:  # every settings combination must validate now, not mid-batch
        for v in job.variants:
            for corr in ds.correlations:
                _task_settings(job, ds, corr, v, seed=0)
    return job


def _parse_models(raw: Mapping[str, Any], base: pathlib.Path) -> tuple[tuple[str, ...], str]:
    """The job's models (presets expanded, model-file paths made absolute, the reference
    first when it was not listed) and its reference model; each model is loaded once, so
    that unknown names and broken files fail now, not mid-batch."""
    models = raw.get("models")
    if models is None:
        raise ParameterError("job: 'models' is missing: expected a list of model names or presets")
    models = [models] if isinstance(models, str) else models
    _expect(models, list, "models", "a list of model names, model-file paths or presets")
    reference = _expect(raw.get("reference", "smbhb"), str, "reference", "a model name")
    from ..compare import resolve_models

    expanded = resolve_models(
        [_resolve(base, m) if _is_path(_expect(m, str, "models", "strings")) else m for m in models]
    )
    if reference not in expanded:
        expanded = (reference, *expanded)
    from ..models import load_model

    for m in expanded:
        load_model(m, validate=False)
    return expanded, reference


_RAY_FIELDS = {"address": str, "num_cpus": float}
_SLURM_FIELDS = {
    "partition": str,
    "time": str,
    "gpus_per_task": int,
    "cpus_per_task": int,
    "mem": str,
    "account": str,
    "max_parallel": int,
    "python": str,
    "setup": list[str],
    "extra": list[str],
}


def _parse_executor(raw: Any) -> ExecutorSpec:
    _expect(raw, dict, "[executor]", "a table")
    _check_keys(raw, ("kind", "workers", "retries", "ray", "slurm"), "[executor]")
    kind = raw.get("kind", "local")
    if kind not in ("local", "ray", "slurm"):
        raise ParameterError(f"[executor].kind = {kind!r}: expected 'local', 'ray' or 'slurm'")
    workers = _check_workers(raw.get("workers", 1), "[executor].workers = ")
    retries = _check_retries(raw.get("retries", 2), "[executor].retries = ")
    ray = _settings_table(raw.get("ray", {}), "[executor.ray]", _RAY_FIELDS, _EXECUTOR_LIMITS)
    slurm = _settings_table(
        raw.get("slurm", {}), "[executor.slurm]", _SLURM_FIELDS, _EXECUTOR_LIMITS
    )
    return ExecutorSpec(kind=kind, workers=workers, retries=retries, ray=ray, slurm=slurm)
