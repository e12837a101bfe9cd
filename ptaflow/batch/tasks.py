"""The tasks of a batch job: one model fit and its evidences per model, data set,
correlation, settings variant and replicate.

Each task is keyed by a hash of its inputs: model file, data, settings, base seed, replicate
number and ptaflow version. The task's seed derives from the base seed and that key, so the
same job gives the same numbers whichever executor runs it, and a changed input gives a new
task.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING

from ..errors import ParameterError
from ..identity import derived_seed, file_digest, result_key, settings_identity
from ..settings import FULL_TRAIN, CompareSettings, FlowConfig

if TYPE_CHECKING:
    from .spec import DatasetSpec, JobSpec, VariantSpec

__all__ = ["Task", "expand_tasks"]

#: Format of the task key (2: seeds from `ptaflow.identity.derived_seed`, as comparisons; 3:
#: the harmonic mean's phi, the quadrature and the refit prior component changed the results).
_TASK_FORMAT = 3


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


def _task_settings(
    job: JobSpec, ds: DatasetSpec, correlation: str, variant: VariantSpec, seed: int
):
    """The CompareSettings of one task (validated by the dataclasses themselves)."""
    where = f"data set {ds.name!r}, variant {variant.name!r}"
    base_train = FULL_TRAIN  # both modes start their flows from prior draws
    train_opts, flow_opts = {**job.train, **variant.train}, {**job.flow, **variant.flow}
    try:
        # Refit mode without [train] / [flow] options: the defaults by model dimension
        # (`ptaflow.evaluation.refit_configs`).
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
                unseeded = _task_settings(job, ds, corr, variant, seed=0)
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
