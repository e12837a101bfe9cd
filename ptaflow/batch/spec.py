"""Batch job specifications: a TOML file validated into frozen dataclasses, expanded into tasks.

A job is models x data sets (mode refit/full, CURN/HD) x settings variants x replicate seeds.
Each task is one model fit plus its two evidence estimates (`ptaflow.compare.evaluate_model`)
and is keyed by a hash of its inputs: model file, data, settings, base seed, replicate number
and ptaflow version. The task's seed derives from the base seed and that key, so the same job
gives the same numbers whichever executor runs it, and a changed input gives a new task.

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
import re
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import DataError, ParameterError, close_matches
from ..identity import derived_seed, file_digest, result_key, settings_identity
from ..settings import (
    COMPARE_RULES,
    FLOW_RULES,
    TRAIN_RULES,
    CompareSettings,
    FlowConfig,
    Rule,
    TrainConfig,
    _check,
)

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

#: Format of the task key (2: seeds from `ptaflow.identity.derived_seed`, as comparisons).
_TASK_FORMAT = 2
_EVIDENCE_KEYS = (
    "n_flow_samples",
    "exact",
    "n_chains",
    "n_per_chain",
    "neutra_warmup",
    "temperature",
    "harmonic_flow",
)


def _check_keys(table: Mapping, allowed: Sequence[str], where: str) -> None:
    for k in table:
        if k not in allowed:
            hint = close_matches(str(k), allowed)
            raise ParameterError(
                f"{where}: unknown key {k!r}; expected one of {', '.join(allowed)}.{hint}"
            )


def _expect(value: Any, kinds: type | tuple[type, ...], where: str, what: str) -> Any:
    """value if it is of `kinds` (a TOML true/false is no number), else ParameterError."""
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise ParameterError(f"{where}: expected {what}, got {value!r}")
    return value


#: Job, data-set and variant names: they become file names, Slurm job names and report
#: groups (separated by '/'), so letters, digits and '_.+-', starting with a letter or digit.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")


def _safe_name(text: str) -> str:
    """`text` with every run of characters a name may not hold replaced by '_'."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_.+-")[:64] or "job"


def _check_name(value: Any, where: str) -> str:
    """A job, data-set or variant name (see `_NAME`), else ParameterError naming `where`."""
    if not isinstance(value, str) or _NAME.fullmatch(value) is None:
        example = _safe_name(value) if isinstance(value, str) else "my-job"
        raise ParameterError(
            f"{where} = {value!r}: expected a name of letters, digits and '_.+-' that starts "
            f"with a letter or digit (at most 64 characters), e.g. {example!r}"
        )
    return value


def _one_line(value: str, where: str) -> str:
    """A string without line breaks or other control characters (it goes into scripts)."""
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ParameterError(f"{where} = {value!r}: expected one line without control characters")
    return value


_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _check_value(value: Any, hint: Any, where: str) -> Any:
    """`value` if it has the type `hint` (a settings field's annotation), else ParameterError.

    An integer is a number too; true/false is neither; TOML has no null, so None is never
    given. Strings must be single lines; `list[str]` is a list of them.
    """
    if typing.get_origin(hint) is list:
        _expect(value, list, where, "a list of strings")
        for item in value:
            _one_line(_expect(item, str, where, "a list of strings"), where)
        return value
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    kinds = [t for t in (typing.get_args(hint) if union else (hint,)) if t is not type(None)]
    ok = any(
        (t is bool and isinstance(value, bool))
        or (not isinstance(value, bool) and t is float and isinstance(value, (int, float)))
        or (not isinstance(value, bool) and t in (int, str) and isinstance(value, t))
        for t in kinds
    )
    if not ok:
        what = " or ".join(_TYPE_WORDS.get(t, getattr(t, "__name__", str(t))) for t in kinds)
        raise ParameterError(f"{where} = {value!r}: expected {what}")
    if isinstance(value, str):
        _one_line(value, where)
    return value


#: Limits of the executor options: (test, what is expected). The settings tables ([train],
#: [flow], [evidence]) are checked with their classes' own rules (`ptaflow.settings`).
_EXECUTOR_LIMITS: dict[str, Rule] = {
    "num_cpus": (lambda v: v > 0, "a number > 0"),
    "gpus_per_task": (lambda v: v >= 0, "an integer >= 0"),
    "cpus_per_task": (lambda v: v >= 0, "an integer >= 0"),
    "max_parallel": (lambda v: v >= 0, "an integer >= 0 (0: no limit)"),
}


def _check_workers(value: Any, where: str) -> int | str:
    """A number of local workers: an integer >= 1 or "gpus" (`where` names the option)."""
    if value != "gpus" and not (
        isinstance(value, int) and not isinstance(value, bool) and value >= 1
    ):
        raise ParameterError(f"{where}{value!r}: expected an integer N >= 1 or 'gpus'")
    return value


def _check_retries(value: Any, where: str) -> int:
    """A number of extra attempts: an integer >= 0 (`where` names the option)."""
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        raise ParameterError(f"{where}{value!r}: expected an integer >= 0")
    return value


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


@dataclasses.dataclass(frozen=True)
class Task:
    """One model fit + evidences: a model on one data set, correlation, variant and replicate.

    Attributes:
        index: position in the job's task list (the Slurm array index).
        key: hash of the task's inputs (its folder name under `out_dir/tasks/`).
        model: model name or absolute model-file path.
        model_name: the model's name.
        dataset: data-set name.
        correlation: "curn"/"hd" (full mode), None (refit mode).
        variant: settings-variant name.
        replicate: replicate number (0 .. replicates-1).
        seed: the task's seed (derived from the job's base seed and `key`).
        settings: the complete `CompareSettings` the task runs with (seed included).
    """

    index: int
    key: str
    model: str
    model_name: str
    dataset: str
    correlation: str | None
    variant: str
    replicate: int
    seed: int
    settings: CompareSettings

    @property
    def group(self) -> str:
        """The comparison this task belongs to: data set, correlation, variant, replicate."""
        data = self.dataset if self.correlation is None else f"{self.dataset}-{self.correlation}"
        return f"{data}/{self.variant}/r{self.replicate}"

    def describe(self) -> dict:
        """JSON-able description (settings as a dict)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["settings"] = self.settings.to_dict()
        d["group"] = self.group
        return d


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


def _settings_table(
    raw: Any, where: str, fields: Mapping[str, Any], rules: Mapping[str, Rule]
) -> dict:
    """A table of settings: known keys (`fields`: name -> type), values of their type that
    pass their `rules` (those of the settings class the table fills)."""
    _expect(raw, dict, where, "a table")
    _check_keys(raw, tuple(fields), where)
    for key, value in raw.items():
        _check_value(value, fields[key], f"{where}.{key}")
        if key in rules:
            _check(f"{where}.{key}", value, rules[key], sep=" = ")
    return dict(raw)


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

    for m in expanded:  # unknown names and broken files fail now, not mid-batch
        load_model(m, validate=False)
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
                _settings(job, ds, corr, v, seed=0)
    return job


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


# --- expansion ---------------------------------------------------------------------------------


def _settings(job: JobSpec, ds: DatasetSpec, correlation: str, variant: VariantSpec, seed: int):
    """The CompareSettings of one task (validated by the dataclasses themselves)."""
    where = f"data set {ds.name!r}, variant {variant.name!r}"
    base_train = TrainConfig(init="prior") if ds.mode == "refit" else TrainConfig()
    train_opts, flow_opts = {**job.train, **variant.train}, {**job.flow, **variant.flow}
    try:
        # Refit mode without [train] / [flow] options: the defaults by model dimension
        # (`ptaflow.compare.refit_configs`).
        refit = ds.mode == "refit"
        train = None if refit and not train_opts else dataclasses.replace(base_train, **train_opts)
        flow = None if refit and not flow_opts else FlowConfig(**flow_opts)
        return CompareSettings(
            mode=ds.mode,
            correlation=correlation,
            pulsars=ds.pulsars,
            data=ds.data,
            n_rn=ds.n_rn,
            n_gw=ds.n_gw,
            n_freq=ds.n_freq,
            reference=job.reference,
            seed=seed,
            train=train,
            flow=flow,
            **{**job.evidence, **variant.evidence},
        )
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"{_origin(str(exc), job, variant) or where}: {exc}") from exc


def _origin(message: str, job: JobSpec, variant: VariantSpec) -> str | None:
    """'TABLE.KEY = VALUE' of the job-file key that a settings class's error message names.

    The settings classes' messages start with 'CLASS.KEY=' (`ptaflow.settings`). None when
    the key was not set in the job file.
    """
    match = re.match(r"(TrainConfig|FlowConfig|CompareSettings)\.(\w+)=", message)
    if match is None:
        return None
    table = {"TrainConfig": "train", "FlowConfig": "flow"}.get(match[1], "evidence")
    key = match[2]
    if key in getattr(variant, table):
        return f"[[variants]] {variant.name!r}.{table}.{key} = {getattr(variant, table)[key]!r}"
    if key in getattr(job, table):
        return f"[{table}].{key} = {getattr(job, table)[key]!r}"
    return None


def expand_tasks(job: JobSpec) -> tuple[Task, ...]:
    """All tasks of a job in a fixed order (data set, correlation, variant, replicate, model).

    The task key hashes the model file, the data identity (pulsars, reduced-file inputs,
    frequencies or the densities), the complete settings apart from the seed, the base seed,
    the replicate number and the ptaflow version; the task seed is derived from the base seed
    and the key. Loads each full-mode data set once to identify it.

    Raises:
        ModelError: a model name or file cannot be loaded.
        ParameterError: two tasks would be identical (e.g. two data sets with the same content).
    """
    # The data identity opens the reduced data and the densities (JAX), which planning a job
    # needs but parsing and checking one does not.
    from ..compare import data_identity
    from ..models import load_model

    models = {m: load_model(m) for m in job.models}
    model_files = {m: file_digest(sm.path) for m, sm in models.items()}
    tasks: list[Task] = []
    seen: dict[str, str] = {}
    for ds in job.datasets:
        for corr in ds.correlations:
            for variant in job.variants:
                unseeded = _settings(job, ds, corr, variant, seed=0)
                data_id, settings_id = data_identity(unseeded), settings_identity(unseeded)
                for rep in range(job.replicates):
                    for m in job.models:
                        key = result_key(
                            model_files[m],
                            models[m].name,
                            data_id,
                            settings_id,
                            fmt=_TASK_FORMAT,
                            base_seed=job.base_seed,
                            replicate=rep,
                        )
                        seed = derived_seed(job.base_seed, key)
                        task = Task(
                            index=len(tasks),
                            key=key,
                            model=m,
                            model_name=models[m].name,
                            dataset=ds.name,
                            correlation=corr if ds.mode == "full" else None,
                            variant=variant.name,
                            replicate=rep,
                            seed=seed,
                            settings=dataclasses.replace(unseeded, seed=seed),
                        )
                        if key in seen:
                            raise ParameterError(
                                f"tasks {seen[key]} and {task.group}:{task.model_name} have the "
                                "same inputs; give the data sets or variants different content"
                            )
                        seen[key] = f"{task.group}:{task.model_name}"
                        tasks.append(task)
    return tuple(tasks)
