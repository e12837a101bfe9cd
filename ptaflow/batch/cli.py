"""`ptaflow batch ...`: run, follow and report batch jobs (see `ptaflow.batch`)."""

from __future__ import annotations

import argparse

from ..errors import ParameterError
from . import (
    executors,
    format_status,
    load_job,
    load_manifest,
    plan,
    report,
    run_task,
    task_states,
)


def add_batch_commands(sub) -> None:
    p = sub.add_parser(
        "batch",
        help="run model x data x settings sweeps (local, Ray or Slurm), follow and report them",
        description="Batch jobs from a TOML job file: `run` expands it into tasks (one model "
        "fit + evidences each) and runs the unfinished ones; `status` shows progress; `report` "
        "merges finished tasks into Bayes-factor tables and plots.",
    )
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    bsub = p.add_subparsers(dest="batch_command", metavar="SUBCOMMAND")

    run = bsub.add_parser("run", help="run the unfinished tasks of a job")
    run.add_argument("job", help="TOML job file")
    run.add_argument("--executor", choices=["local", "ray", "slurm"], help="default: the job's")
    run.add_argument(
        "--workers",
        type=_workers,
        help="local: N worker processes or 'gpus' (one per visible GPU)",
    )
    run.add_argument("--retries", type=_retries, help="extra attempts per task in this run")
    run.add_argument("--address", help="ray: cluster address ('auto', 'ray://head:10001')")
    run.add_argument("--no-submit", action="store_true", help="slurm: write the sbatch script only")
    run.add_argument("--no-report", action="store_true", help="skip the report at the end")
    run.set_defaults(func=_run)

    status = bsub.add_parser("status", help="progress of a job: done, running, failed, pending")
    status.add_argument("job", help="TOML job file")
    status.set_defaults(func=_status)

    rep = bsub.add_parser("report", help="Bayes-factor tables and plots of the finished tasks")
    rep.add_argument("job", help="TOML job file")
    rep.add_argument("--no-plots", action="store_true")
    rep.set_defaults(func=_report)

    one = bsub.add_parser(
        "run-task", help="run one task of a planned job (what workers and Slurm indices call)"
    )
    one.add_argument("out_dir", help="the job's output folder (holding tasks.json)")
    one.add_argument("--index", type=int, required=True, help="task index in tasks.json")
    one.add_argument("--force", action="store_true", help="run even if already done")
    one.set_defaults(func=_run_task)


def _x64() -> None:
    import jax

    jax.config.update("jax_enable_x64", True)


def _workers(value: str) -> int | str:
    """argparse type of --workers: an integer N >= 1 or 'gpus'."""
    if value == "gpus":
        return value
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: expected an integer N >= 1 or 'gpus'")
    return n


def _retries(value: str) -> int:
    """argparse type of --retries: an integer >= 0."""
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"{value!r}: expected an integer >= 0")
    return n


def _run(args) -> int:
    job = load_job(args.job)
    kind = args.executor or job.executor.kind
    tasks = plan(job)
    print(f"{job.name}: {len(tasks)} tasks, results in {job.out_dir}")
    if kind == "slurm":
        script = executors.write_slurm_script(job)
        print(f"wrote {script}")
        if not args.no_submit:
            print(f"submitted Slurm job {executors.submit_slurm(script)}")
        return 0
    if kind == "ray":  # the Ray workers switch float64 on; JAX stays idle here
        executors.run_ray(job, address=args.address, retries=args.retries)
    else:
        _x64()
        executors.run_local(job, workers=args.workers, retries=args.retries)
    states = task_states(job.out_dir, tasks)
    if not args.no_report:
        print()
        print(report(job.out_dir))
    unfinished = [s for s in states if s.state != "done"]
    if unfinished:
        print(f"\n{len(unfinished)} task(s) unfinished: `ptaflow batch status {args.job}`")
    return 1 if unfinished else 0


def _status(args) -> int:
    job = load_job(args.job)
    _, tasks = load_manifest(job.out_dir)
    print(format_status(task_states(job.out_dir, tasks)))
    return 0


def _report(args) -> int:
    job = load_job(args.job)
    rep = report(job.out_dir, plots=not args.no_plots)
    print(rep)
    print(f"\nwritten: {job.out_dir}/report/")
    return 0


def _run_task(args) -> int:
    if not executors.tie_to_parent():
        print("the batch run that started this task has ended; not running it")
        return 1
    _x64()
    _, tasks = load_manifest(args.out_dir)
    if not 0 <= args.index < len(tasks):
        raise ParameterError(
            f"--index {args.index}: {args.out_dir}/tasks.json has tasks 0..{len(tasks) - 1}"
        )
    outcome = run_task(args.out_dir, tasks[args.index], log=print, force=args.force)
    return 0 if outcome.ok else 1
