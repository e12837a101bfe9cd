"""Running, tracking and reporting the tasks of a batch job.

Output folder of a job (`JobSpec.out_dir`):

    tasks.json                the task list (index, key, model, data set, settings, seed), written
                              when the job is planned; executors and Slurm array indices refer to it
    tasks/KEY/result.json     the task's outcome (ln Z from both estimators, diagnostics,
                              summaries) with its task description and provenance (versions,
                              device, git revision, seeds); written last, atomically
    tasks/KEY/posterior.h5    weighted flow samples, diagnostics, settings and the trained flow
    tasks/KEY/attempts.json   attempts so far, host and process of the latest, its state
    tasks/KEY/error.txt       traceback of the latest failed attempt
    tasks/KEY/lock            locked while a process runs the task (names that process)
    report/                   `ptaflow batch report`: tables (CSV, JSON) and Bayes-factor PNGs

A task is done when its result.json exists and holds the task's key; everything else is
written before it, atomically, so a task killed at any point leaves either a complete result
or none, and is simply run again. Failed tasks (non-finite values, a divergent fit) are
retried by the next run. A task runs in one process at a time: the process holds the lock
of `tasks/KEY/lock` (flock), and every other run skips the task meanwhile; the kernel drops the
lock when that process ends in any way, so a killed run leaves no stale lock behind.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import pathlib
import re
import socket
import traceback
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import IO, Any

from ..errors import DataError
from ..settings import CompareSettings, FlowConfig, TrainConfig
from .spec import JobSpec, Task, expand_tasks

__all__ = [
    "TaskState",
    "plan",
    "load_manifest",
    "task_from_dict",
    "task_dir",
    "load_result",
    "run_task",
    "task_holder",
    "task_states",
    "format_status",
    "BatchReport",
    "report",
]

RESULT_FORMAT = 1
_MANIFEST_FORMAT = 1


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


_KEY = re.compile(r"[0-9a-f]{20}")


def _check_key(task: Task) -> None:
    """Task keys name folders: one from an edited tasks.json must not lead outside tasks/."""
    if not isinstance(task.key, str) or _KEY.fullmatch(task.key) is None:
        raise DataError(f"task {task.index} has key {task.key!r}: expected 20 hex digits")


def task_dir(out_dir: str | pathlib.Path, task: Task) -> pathlib.Path:
    """Folder of one task's files."""
    _check_key(task)
    return pathlib.Path(out_dir) / "tasks" / task.key


# --- manifest ----------------------------------------------------------------------------------


def plan(job: JobSpec) -> tuple[Task, ...]:
    """Expand the job into tasks and write the task list `out_dir/tasks.json` (atomically).

    Executors, `ptaflow batch run-task` and Slurm array indices read that list, so a task index
    means the same task for every worker. Re-planning an unchanged job rewrites the same list.
    """
    from ..results import write_bytes_atomic, write_json_atomic

    tasks = expand_tasks(job)
    out = pathlib.Path(job.out_dir)
    if job.path is not None:
        write_bytes_atomic(out / "job.toml", pathlib.Path(job.path).read_bytes())
    write_json_atomic(
        out / "tasks.json",
        {
            "format": _MANIFEST_FORMAT,
            "job": job.name,
            "job_file": job.path,
            "reference": job.reference,
            "models": list(job.models),
            "tasks": [t.describe() for t in tasks],
        },
    )
    return tasks


def task_from_dict(d: dict) -> Task:
    """Rebuild a `Task` from its `Task.describe()` form (e.g. one entry of tasks.json)."""
    s = dict(d["settings"])
    s["train"] = TrainConfig(**s["train"]) if s["train"] is not None else None
    s["flow"] = FlowConfig(**s["flow"]) if s["flow"] is not None else None
    if isinstance(s.get("pulsars"), list):
        s["pulsars"] = tuple(s["pulsars"])
    fields = {f.name for f in dataclasses.fields(Task)} - {"settings"}
    task = Task(**{k: d[k] for k in fields}, settings=CompareSettings(**s))
    _check_key(task)
    return task


def load_manifest(out_dir: str | pathlib.Path) -> tuple[dict, tuple[Task, ...]]:
    """Read `out_dir/tasks.json`: (its header, the tasks in index order).

    Raises:
        DataError: the file is missing (the job was never planned) or unreadable.
    """
    path = pathlib.Path(out_dir) / "tasks.json"
    if not path.is_file():
        raise DataError(
            f"{path} does not exist: plan the job first (`ptaflow batch run JOB.toml`, or "
            "`ptaflow batch run JOB.toml --executor slurm --no-submit`)"
        )
    try:
        doc = json.loads(path.read_text())
        tasks = tuple(task_from_dict(t) for t in doc["tasks"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path} is not a readable task list: {exc}") from exc
    if doc.get("format") != _MANIFEST_FORMAT:
        raise DataError(f"{path} has format {doc.get('format')}, expected {_MANIFEST_FORMAT}")
    return doc, tasks


# --- one task ----------------------------------------------------------------------------------


def _read_json(path: pathlib.Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _lock_task(folder: pathlib.Path) -> tuple[IO | None, str]:
    """Take a task's lock without waiting: (the open lock file, "") or (None, its holder).

    An exclusive flock(2) on `folder/lock`, released when the file is closed or its process
    ends, however (SIGKILL included), so a lock never outlives its holder. The file names the
    holder for the messages of other processes. File systems without flock (e.g. Lustre
    mounted without it) leave tasks unlocked, as before locks existed.
    """
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    fh = open(folder / "lock", "a+")  # held until _unlock_task
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        fh.close()
        return None, holder
    except OSError:
        return fh, ""
    fh.truncate(0)
    fh.write(f"pid {os.getpid()} on {socket.gethostname()} since {_now()}\n")
    fh.flush()
    return fh, ""


def _unlock_task(fh: IO) -> None:
    fh.truncate(0)
    fh.close()


def task_holder(out_dir: str | pathlib.Path, task: Task) -> str:
    """Who runs the task now ("pid P on HOST since T"), or "" when no process does."""
    folder = task_dir(out_dir, task)
    if not (folder / "lock").exists():
        return ""
    fh, holder = _lock_task(folder)
    if fh is not None:
        _unlock_task(fh)
    return holder


def load_result(out_dir: str | pathlib.Path, task: Task) -> dict | None:
    """The task's result record if it finished with its current inputs, else None."""
    rec = _read_json(task_dir(out_dir, task) / "result.json")
    if rec is None or rec.get("format") != RESULT_FORMAT or rec.get("key") != task.key:
        return None
    return rec


def run_task(
    out_dir: str | pathlib.Path,
    task: Task,
    *,
    log: Callable[[str], None] | None = None,
    force: bool = False,
):
    """Run one task (unless already done) and write its files; returns its `ModelOutcome`.

    A model failure does not raise: the outcome is "failed", error.txt holds the traceback and
    the next run retries the task. A task that another process is running (it holds the task's
    lock) is not started: the outcome is then "pending", its reason names that process. Needs
    JAX float64 on (`jax_enable_x64`).

    Args:
        out_dir: the job's output folder.
        task: the task (from `plan`, `expand_tasks` or `load_manifest`).
        log: progress messages; None for silence.
        force: run even if a result with the same key exists.
    """
    from ..compare import ModelOutcome

    say = log or (lambda _msg: None)
    lock, holder = _lock_task(task_dir(out_dir, task))
    if lock is None:
        reason = f"running in {holder}; not started again"
        say(f"task {task.index} ({task.group} {task.model_name}): {reason}")
        return ModelOutcome(name=task.model_name, status="pending", reason=reason, key=task.key)
    try:  # the result is read under the lock: a run that held it may just have finished
        if not force and (rec := load_result(out_dir, task)) is not None:
            say(f"task {task.index} ({task.group} {task.model_name}): done before; skipped")
            return ModelOutcome.from_dict(rec["outcome"])
        return _attempt(out_dir, task, say)
    finally:
        _unlock_task(lock)


def _attempt(out_dir: str | pathlib.Path, task: Task, say: Callable[[str], None]):
    """One attempt at a task whose lock this process holds (see `run_task`)."""
    from ..compare import ModelOutcome, ModelRun, evaluate_model
    from ..results import provenance, save_posterior, write_bytes_atomic, write_json_atomic

    folder = task_dir(out_dir, task)
    attempts_path = folder / "attempts.json"
    previous = _read_json(attempts_path) or {}
    attempt = int(previous.get("attempts", 0)) + 1
    started = _now()
    state = {
        "attempts": attempt,
        "state": "running",
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": started,
    }
    write_json_atomic(attempts_path, state)
    say(f"task {task.index} ({task.group} {task.model_name}), attempt {attempt}: started")
    try:
        run = evaluate_model(
            task.model,
            task.settings,
            key=task.key,
            log=lambda msg: say(f"task {task.index} ({task.model_name}): {msg}"),
        )
    except Exception as exc:  # any crash of one task is recorded; the batch goes on
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        say(f"task {task.index} ({task.model_name}): failed: {reason}")
        failed = ModelOutcome(name=task.model_name, status="failed", reason=reason, key=task.key)
        run = ModelRun(failed, None, traceback.format_exc())
    if run.fit is None:
        write_bytes_atomic(folder / "error.txt", (run.traceback or run.outcome.reason).encode())
        write_json_atomic(
            attempts_path,
            {**state, "state": "failed", "reason": run.outcome.reason, "ended": _now()},
        )
        return run.outcome
    prov = dict(task_key=task.key, task_index=task.index, seed=task.seed, attempt=attempt)
    save_posterior(run.fit.to_result(**prov), folder / "posterior.h5")
    write_json_atomic(
        folder / "result.json",
        {
            "format": RESULT_FORMAT,
            "key": task.key,
            "task": task.describe(),
            "outcome": run.outcome.to_dict(),
            "provenance": provenance(**prov),
        },
    )
    write_json_atomic(attempts_path, {**state, "state": "done", "ended": _now()})
    return run.outcome


# --- status ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TaskState:
    """Where one task stands.

    Attributes:
        task: the task.
        state: "done" (a result exists), "failed" (the latest attempt failed), "running" (an
            attempt started and has not ended; on another host it may also have been killed),
            "interrupted" (its process on this host is gone), "pending" (never run).
        attempts: attempts so far.
        detail: the failure reason, or host/pid/start of a running attempt.
        outcome: the result's outcome dict when done.
    """

    task: Task
    state: str
    attempts: int = 0
    detail: str = ""
    outcome: dict | None = None


def task_states(out_dir: str | pathlib.Path, tasks: Sequence[Task]) -> list[TaskState]:
    """The state of every task, read from its files (no locking: a snapshot)."""
    states = []
    for t in tasks:
        rec = load_result(out_dir, t)
        att = _read_json(task_dir(out_dir, t) / "attempts.json") or {}
        n = int(att.get("attempts", 0))
        if rec is not None:
            states.append(TaskState(t, "done", n, outcome=rec["outcome"]))
        elif att.get("state") == "failed":
            states.append(TaskState(t, "failed", n, att.get("reason", "")))
        elif att.get("state") == "running":
            detail = f"{att.get('host')} pid {att.get('pid')} since {att.get('started')}"
            here = att.get("host") == socket.gethostname()
            state = "interrupted" if here and not _alive(att.get("pid")) else "running"
            states.append(TaskState(t, state, n, detail))
        else:
            states.append(TaskState(t, "pending", n))
    return states


def _alive(pid) -> bool:
    """Whether a process of this host still exists."""
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True


def format_status(states: Sequence[TaskState]) -> str:
    """A progress table: counts per state, then one line per task that is not done."""
    counts: dict[str, int] = defaultdict(int)
    for s in states:
        counts[s.state] += 1
    order = ("done", "running", "interrupted", "failed", "pending")
    lines = [
        f"{len(states)} tasks: " + ", ".join(f"{counts[k]} {k}" for k in order if counts[k]),
    ]
    for s in states:
        if s.state == "done":
            o = s.outcome or {}
            flag = "" if o.get("status") == "ok" else f"  [{o.get('status')}: {o.get('reason')}]"
            lines.append(
                f"  #{s.task.index:<4d} done     {s.task.group:<28s} {s.task.model_name:<16s} "
                f"ln Z = {o.get('log_z_harmonic', math.nan):.3f} +- "
                f"{o.get('log_z_harmonic_err', math.nan):.3f}{flag}"
            )
        else:
            extra = f"  ({s.detail})" if s.detail else ""
            lines.append(
                f"  #{s.task.index:<4d} {s.state:<8s} {s.task.group:<28s} "
                f"{s.task.model_name:<16s} attempts {s.attempts}{extra}"
            )
    return "\n".join(lines)


# --- report ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BatchReport:
    """Bayes-factor tables of a batch, one comparison per group (data set, variant, replicate).

    Attributes:
        comparisons: {group: ptaflow.compare.Comparison}.
        replicate_summary: rows of (data set, variant, model) with ln B averaged over the
            replicates, their scatter, and the mean reported error (the scatter tests it).
        n_done, n_tasks: finished and all tasks.
    """

    comparisons: dict[str, Any]
    replicate_summary: list[dict]
    n_done: int
    n_tasks: int

    def __str__(self) -> str:
        parts = [f"{self.n_done} of {self.n_tasks} tasks finished"]
        for group, table in self.comparisons.items():
            parts += ["", f"== {group} ==", str(table)]
        if any(r["n_replicates"] > 1 for r in self.replicate_summary):
            parts += ["", "== ln B over replicate seeds =="]
            for r in self.replicate_summary:
                parts.append(
                    f"{r['data']:<24s} {r['variant']:<12s} {r['model']:<16s} "
                    f"mean {r['ln_B_mean']:8.3f}  scatter {r['ln_B_scatter']:6.3f}  "
                    f"mean error {r['ln_B_err_mean']:6.3f}  (n={r['n_replicates']})"
                )
        return "\n".join(parts)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def report(
    out_dir: str | pathlib.Path,
    *,
    write: bool = True,
    plots: bool = True,
) -> BatchReport:
    """Merge the finished tasks of a planned job into Bayes-factor tables.

    Each group (data set + correlation, variant, replicate) becomes a `Comparison` against the
    job's reference model, with unfinished tasks shown as "pending" or "failed". With `write`,
    `out_dir/report/` gets `report.json`, `bayes_factors.csv` (all groups), `replicates.csv`
    and one `bayes_factors_GROUP.png` per group (with `plots`).
    """
    from ..compare import Comparison, ModelOutcome
    from ..results import provenance, write_csv_atomic, write_json_atomic

    header, tasks = load_manifest(out_dir)
    states = task_states(out_dir, tasks)
    groups: dict[str, list[TaskState]] = defaultdict(list)
    for s in states:
        groups[s.task.group].append(s)
    comparisons = {}
    for group, members in groups.items():
        outcomes = []
        for s in members:
            if s.outcome is not None:
                outcomes.append(ModelOutcome.from_dict(s.outcome))
            else:
                status = "failed" if s.state == "failed" else "pending"
                reason = s.detail if s.state == "failed" else f"not finished ({s.state})"
                outcomes.append(ModelOutcome(name=s.task.model_name, status=status, reason=reason))
        settings = members[0].task.settings
        comparisons[group] = Comparison(tuple(outcomes), header["reference"], settings, None)
    summary = _replicate_summary(comparisons)
    rep = BatchReport(comparisons, summary, sum(s.state == "done" for s in states), len(states))
    if write:
        out = pathlib.Path(out_dir) / "report"
        rows = []
        for group, table in comparisons.items():
            data, variant, replicate = group.split("/")
            for r in table.rows():
                rows.append({"data": data, "variant": variant, "replicate": replicate, **r})
        write_csv_atomic(out / "bayes_factors.csv", rows, list(rows[0]))
        if summary:
            write_csv_atomic(out / "replicates.csv", summary, list(summary[0]))
        write_json_atomic(
            out / "report.json",
            {
                "job": header.get("job"),
                "reference": header["reference"],
                "n_done": rep.n_done,
                "n_tasks": rep.n_tasks,
                "rows": rows,
                "replicates": summary,
                "provenance": provenance(),
            },
        )
        if plots:
            _plots(comparisons, out)
    return rep


def _replicate_summary(comparisons: dict) -> list[dict]:
    import numpy as np

    acc: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
    for group, table in comparisons.items():
        data, variant, _ = group.split("/")
        for model, (lnb, err) in table.bayes_factors().items():
            acc[(data, variant, model)].append((lnb, err))
    rows = []
    for (data, variant, model), vals in acc.items():
        lnb = np.array([v[0] for v in vals if math.isfinite(v[0])])
        err = np.array([v[1] for v in vals if math.isfinite(v[0])])
        rows.append(
            {
                "data": data,
                "variant": variant,
                "model": model,
                "n_replicates": int(lnb.size),
                "ln_B_mean": float(lnb.mean()) if lnb.size else math.nan,
                "ln_B_scatter": float(lnb.std(ddof=1)) if lnb.size > 1 else math.nan,
                "ln_B_err_mean": float(err.mean()) if err.size else math.nan,
            }
        )
    return rows


def _plots(comparisons: dict, out: pathlib.Path) -> None:
    from ..compare import comparison_context, plot_comparison_bayes_factors

    for group, table in comparisons.items():
        plot_comparison_bayes_factors(
            table,
            out / f"bayes_factors_{_slug(group)}.png",
            context=comparison_context(table.settings),
        )
