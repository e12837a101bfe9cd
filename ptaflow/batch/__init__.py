"""Batch jobs: models x data sets x settings x seeds, run locally, on Ray or as Slurm arrays.

    from ptaflow.batch import load_job, plan, report
    from ptaflow.batch.executors import run_local

    job = load_job("jobs.toml")      # validated TOML job file (see ptaflow.batch.spec)
    plan(job)                        # expands it into tasks, writes out_dir/tasks.json
    run_local(job)                   # or run_ray(job) / write_slurm_script(job)
    print(report(job.out_dir))       # Bayes-factor tables per data set, variant, replicate

The command line is `ptaflow batch run|status|report JOB.toml`.
"""

from .run import (
    BatchReport,
    TaskState,
    format_status,
    load_manifest,
    load_result,
    plan,
    report,
    run_task,
    task_dir,
    task_from_dict,
    task_holder,
    task_states,
)
from .spec import (
    DatasetSpec,
    ExecutorSpec,
    JobSpec,
    Task,
    VariantSpec,
    expand_tasks,
    load_job,
    parse_job,
)

__all__ = [
    "BatchReport",
    "DatasetSpec",
    "ExecutorSpec",
    "JobSpec",
    "Task",
    "TaskState",
    "VariantSpec",
    "expand_tasks",
    "format_status",
    "load_job",
    "load_manifest",
    "load_result",
    "parse_job",
    "plan",
    "report",
    "run_task",
    "task_dir",
    "task_from_dict",
    "task_holder",
    "task_states",
]
