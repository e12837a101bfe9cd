"""Executors: run the tasks of a planned job locally, on a Ray cluster, or as a Slurm job array.

All three run the same `run_task` on the same task list (`out_dir/tasks.json`), and every task
seed derives from the job's base seed and the task key, so the numbers do not depend on the
executor. Finished tasks are skipped, and so are tasks that another process is running (it
holds the task's lock, see `ptaflow.batch.run`); a task that crashed, was killed or failed is
run again, up to `retries` extra times in one run, and again by the next run.

- `run_local`: in this process one task after another (workers=1), or N worker processes
  (`ptaflow batch run-task` subprocesses), or one worker per visible GPU (workers="gpus":
  each child sees one GPU through CUDA_VISIBLE_DEVICES). The task processes end with the
  run: SIGTERM, SIGINT or SIGHUP to it terminates them first, and on Linux they also get
  SIGTERM when it is killed outright (SIGKILL; `tie_to_parent`).
- `run_ray`: one Ray task per batch task, on a running cluster (`address="auto"` or
  "ray://head:10001") or a local one started here; each requests one GPU when the cluster has
  GPUs. A worker that dies is replaced and its task re-run (Ray's `max_retries`).
- `write_slurm_script` / `submit_slurm`: an sbatch array script with one array index per
  unfinished task; each index runs `python -m ptaflow batch run-task OUT_DIR --index I`.
"""

from __future__ import annotations

import os
import pathlib
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence

from ..errors import DataError, ParameterError
from .run import load_manifest, load_result, run_task, task_dir, task_holder
from .spec import JobSpec, Task, _check_name, _check_retries, _check_workers, _one_line

__all__ = [
    "visible_gpus",
    "run_local",
    "run_ray",
    "write_slurm_script",
    "submit_slurm",
    "task_command",
    "tie_to_parent",
]

#: Environment variable through which `run_local` tells its task processes its pid.
_PARENT_PID = "PTAFLOW_BATCH_PARENT_PID"
#: Seconds a task process gets to end after SIGTERM before it is killed.
_TERMINATE_WAIT_S = 5.0


def _pending(out_dir: str, tasks: Sequence[Task], say=None) -> list[Task]:
    """Unfinished tasks that no other process is running now (those are told to `say`)."""
    todo = []
    for t in tasks:
        if load_result(out_dir, t) is not None:
            continue
        holder = task_holder(out_dir, t)
        if not holder:
            todo.append(t)
        elif say is not None:
            say(f"task {t.index} ({t.group} {t.model_name}): running in {holder}; not started")
    return todo


def task_command(out_dir: str | pathlib.Path, index: int | str, python: str | None = None):
    """The command line that runs task `index` of a planned job (a list of arguments)."""
    py = python or sys.executable
    return [py, "-m", "ptaflow", "batch", "run-task", str(out_dir), "--index", str(index)]


def tie_to_parent() -> bool:
    """In a task process of `run_local`: end with the run, even when it is killed outright.

    On Linux, asks the kernel to send this process SIGTERM when its parent ends
    (prctl PR_SET_PDEATHSIG). Returns False when the run that started this process has ended
    already (then the caller should exit); True otherwise, and always in processes that
    `run_local` did not start.
    """
    parent = os.environ.get(_PARENT_PID)
    if parent is None:
        return True
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
    return os.getppid() == int(parent)  # the parent may have died before prctl


def visible_gpus() -> list[str]:
    """GPU ids this process may use: CUDA_VISIBLE_DEVICES if set, else `nvidia-smi -L`."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def run_local(
    job: JobSpec,
    *,
    workers: int | str | None = None,
    retries: int | None = None,
    log: Callable[[str], None] | None = print,
) -> None:
    """Run a planned job's unfinished tasks on this machine.

    Args:
        job: the job (planned: `plan(job)` wrote its task list).
        workers: 1 = in this process, one task after another; N > 1 = N worker processes;
            "gpus" = one worker process per visible GPU. Default: the job's [executor].
        retries: extra attempts for a task that failed or whose process died.
        log: progress messages; None for silence.

    Raises:
        ParameterError: workers or retries out of range, or workers="gpus" without a GPU.
        KeyboardInterrupt: SIGINT (the task processes have been ended).
    """
    workers = _check_workers(job.executor.workers if workers is None else workers, "workers=")
    retries = _check_retries(job.executor.retries if retries is None else retries, "retries=")
    say = log or (lambda _msg: None)
    _, tasks = load_manifest(job.out_dir)
    if workers == 1:

        def run_all(todo) -> bool:
            for t in todo:
                run_task(job.out_dir, t, log=say)
            return True

    else:
        if workers == "gpus":
            slots = [{"CUDA_VISIBLE_DEVICES": g} for g in visible_gpus()]
            if not slots:
                raise ParameterError(
                    "workers='gpus' but no GPU is visible (CUDA_VISIBLE_DEVICES is empty and "
                    "nvidia-smi lists none); use workers=N for CPU worker processes"
                )
        else:
            slots = [{} for _ in range(workers)]

        def run_all(todo) -> bool:
            return _run_processes(job.out_dir, todo, slots, say)

    for attempt in range(retries + 1):
        todo = _pending(job.out_dir, tasks, say if attempt == 0 else None)
        if not todo:
            return
        if attempt:
            say(f"retrying {len(todo)} unfinished task(s), attempt {attempt + 1}")
        if not run_all(todo):
            return


def _run_processes(out_dir: str, todo: list[Task], slots: list[dict], say) -> bool:
    """Run tasks as `ptaflow batch run-task` subprocesses, one per slot at a time.

    The task processes end with this function: on return, on an exception, and on SIGTERM,
    SIGINT or SIGHUP (handled here while it runs in the main thread: the processes get SIGTERM,
    then SIGKILL after `_TERMINATE_WAIT_S`, and the signal then takes its previous course).
    Returns False when a signal stopped the run and its previous handler returned.
    """
    queue = list(todo)
    lock = threading.Lock()
    running: set[subprocess.Popen] = set()
    stopping, interrupted = threading.Event(), threading.Event()

    def worker(env_extra: dict) -> None:
        env = {**os.environ, **env_extra, _PARENT_PID: str(os.getpid())}
        while True:
            with lock:  # no process starts once `stop` has run
                if stopping.is_set() or not queue:
                    return
                t = queue.pop(0)
                log_path = task_dir(out_dir, t) / "worker.log"
                log_path.parent.mkdir(parents=True, exist_ok=True)
                with open(log_path, "w") as log_file:
                    proc = subprocess.Popen(
                        task_command(out_dir, t.index),
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=log_file,
                        stderr=subprocess.STDOUT,
                    )
                running.add(proc)
            where = f" on GPU {env_extra['CUDA_VISIBLE_DEVICES']}" if env_extra else ""
            say(f"task {t.index} ({t.group} {t.model_name}): started{where}")
            proc.wait()
            with lock:
                running.discard(proc)
            if stopping.is_set():
                return
            ok = proc.returncode == 0 and load_result(out_dir, t) is not None
            state = "done" if ok else f"not finished (exit status {proc.returncode}; {log_path})"
            say(f"task {t.index} ({t.group} {t.model_name}): {state}")

    def stop() -> None:
        with lock:
            stopping.set()
            procs = list(running)
        _terminate(procs)

    previous: dict[int, object] = {}

    def on_signal(signum, frame) -> None:
        interrupted.set()
        stop()
        handler = previous.pop(signum)
        signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        signal.raise_signal(signum)  # ends the process, or raises, as it would have

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            if signal.getsignal(sig) is not signal.SIG_IGN:
                previous[sig] = signal.signal(sig, on_signal)
    threads = [threading.Thread(target=worker, args=(s,), daemon=True) for s in slots]
    try:
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        stop()
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
    return not interrupted.is_set()


def _terminate(procs: Sequence[subprocess.Popen]) -> None:
    """SIGTERM to each process still running, SIGKILL to those left after the wait."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=_TERMINATE_WAIT_S)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# --- Ray ---------------------------------------------------------------------------------------


def _ray_run_task(out_dir: str, index: int) -> dict:
    """Body of a Ray task: run task `index` in the Ray worker process."""
    import jax

    jax.config.update("jax_enable_x64", True)
    from ..devices import release_compiled_code

    _, tasks = load_manifest(out_dir)
    try:
        outcome = run_task(out_dir, tasks[index])
    finally:
        release_compiled_code()  # a Ray worker runs task after task: free this one's code
    return {"index": index, "pid": os.getpid(), "status": outcome.status}


def run_ray(
    job: JobSpec,
    *,
    address: str | None = None,
    num_cpus: float | None = None,
    retries: int | None = None,
    log: Callable[[str], None] | None = print,
    init_kwargs: dict | None = None,
) -> None:
    """Run a planned job's unfinished tasks on a Ray cluster.

    Args:
        job: the job (planned).
        address: "auto" or "ray://head:10001" joins a running cluster; None or "" starts a
            local one (default: the job's [executor.ray] address). The job's out_dir must be
            on a file system every node sees.
        num_cpus: CPUs each task requests (default [executor.ray] num_cpus, else 1). Each task
            requests one GPU whenever the cluster has GPUs.
        retries: how often Ray re-runs a task whose worker process died, and how often a
            failed task is resubmitted.
        log: progress messages; None for silence.
        init_kwargs: further `ray.init` arguments (e.g. num_cpus of a local cluster).
    """
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - ray is a declared dependency
        raise DataError("the Ray executor needs ray: pip install 'ptaflow[batch]'") from exc
    say = log or (lambda _msg: None)
    cfg = job.executor.ray
    address = cfg.get("address", "") if address is None else address
    num_cpus = float(cfg.get("num_cpus", 1) if num_cpus is None else num_cpus)
    retries = _check_retries(job.executor.retries if retries is None else retries, "retries=")
    _, tasks = load_manifest(job.out_dir)
    started_here = not ray.is_initialized()
    if started_here:
        kwargs = {"include_dashboard": False, "log_to_driver": False, **(init_kwargs or {})}
        ray.init(address=address or None, **kwargs)
    try:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        remote = ray.remote(num_cpus=num_cpus, num_gpus=gpus, max_retries=retries)(_ray_run_task)
        for attempt in range(retries + 1):
            todo = _pending(job.out_dir, tasks)
            if not todo:
                return
            say(f"Ray: {len(todo)} task(s) on {ray.cluster_resources()} (attempt {attempt + 1})")
            refs = {remote.remote(job.out_dir, t.index): t for t in todo}
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1)
                t = refs.pop(done[0])
                try:
                    info = ray.get(done[0])
                    say(f"task {t.index} ({t.group} {t.model_name}): {info['status']}")
                except ray.exceptions.RayError as exc:
                    msg = str(exc).splitlines()[0]
                    say(f"task {t.index} ({t.group} {t.model_name}): lost ({msg})")
    finally:
        if started_here:
            ray.shutdown()


# --- Slurm -------------------------------------------------------------------------------------


def _index_ranges(indices: Sequence[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> "0-2,5,7-8" (Slurm --array syntax)."""
    parts, start, prev = [], None, None
    for i in sorted(indices):
        if start is None:
            start = prev = i
        elif i == prev + 1:
            prev = i
        else:
            parts.append(f"{start}-{prev}" if prev > start else str(start))
            start = prev = i
    if start is not None:
        parts.append(f"{start}-{prev}" if prev > start else str(start))
    return ",".join(parts)


def write_slurm_script(job: JobSpec, path: str | pathlib.Path | None = None) -> pathlib.Path:
    """Write an sbatch job-array script for the planned job's unfinished tasks.

    One array index per unfinished task (the task's index in tasks.json); each runs
    `python -m ptaflow batch run-task OUT_DIR --index $SLURM_ARRAY_TASK_ID`, which skips a task
    finished in the meantime. Options come from the job's [executor.slurm] table: partition,
    time, gpus_per_task, cpus_per_task, mem, account, max_parallel (array throttle), python
    (interpreter on the nodes), setup (shell lines before the task, e.g. `module load`), extra
    (further #SBATCH options). The script also runs outside Slurm:
    `SLURM_ARRAY_TASK_ID=3 bash SCRIPT`.

    Returns:
        The script path (default `out_dir/slurm/JOBNAME.sbatch`).

    Raises:
        ParameterError: every task is finished or running; or a job name, option or setup
            line that would not stay one line of the script (or, for the default path,
            inside out_dir/slurm).
    """
    cfg = job.executor.slurm
    _check_name(job.name, "name")  # a JobSpec built in Python has not been through parse_job
    for key, value in cfg.items():
        for item in value if isinstance(value, list) else [value]:
            _one_line(str(item), f"[executor.slurm].{key}")
    _, tasks = load_manifest(job.out_dir)
    todo = [t.index for t in _pending(job.out_dir, tasks)]
    if not todo:
        raise ParameterError(
            f"every task of {job.name!r} is finished or running: nothing to submit"
        )
    out = pathlib.Path(job.out_dir)
    logs = out / "slurm"
    _one_line(str(out.resolve()), "out_dir")
    if path is None:
        path = logs / f"{job.name}.sbatch"
        if path.resolve().parent != logs.resolve():
            raise ParameterError(f"the Slurm script {path} would lie outside {logs}")
    path = pathlib.Path(path)
    array = _index_ranges(todo)
    if int(cfg.get("max_parallel", 0) or 0) > 0:
        array += f"%{int(cfg['max_parallel'])}"
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={job.name}",
        f"#SBATCH --array={array}",
        f"#SBATCH --output={logs}/%x_%A_%a.out",
        "#SBATCH --ntasks=1",
    ]
    options = {
        "partition": "--partition={}",
        "time": "--time={}",
        "gpus_per_task": "--gpus-per-task={}",
        "cpus_per_task": "--cpus-per-task={}",
        "mem": "--mem={}",
        "account": "--account={}",
    }
    for key, fmt in options.items():
        if cfg.get(key) not in (None, "", 0):
            lines.append("#SBATCH " + fmt.format(cfg[key]))
    lines += [f"#SBATCH {opt}" for opt in cfg.get("extra", [])]
    cmd = task_command(out.resolve(), "${SLURM_ARRAY_TASK_ID}", cfg.get("python") or None)
    quoted = " ".join(shlex.quote(c) if "$" not in c else f'"{c}"' for c in cmd)
    lines += [
        "",
        "# ptaflow batch job: one array index per task of tasks.json (generated file).",
        "set -euo pipefail",
        *cfg.get("setup", []),
        f"cd {shlex.quote(str(out.resolve()))}",
        f"exec {quoted}",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return path


def submit_slurm(script: str | pathlib.Path) -> str:
    """Submit an sbatch script; returns the Slurm job id.

    Raises:
        DataError: sbatch is not on PATH (not a Slurm login node) or refused the script.
    """
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise DataError(
            f"sbatch is not on PATH: submit {script} from a Slurm login node "
            f"(`sbatch {script}`), or run one index here with "
            f"`SLURM_ARRAY_TASK_ID=0 bash {script}`"
        )
    proc = subprocess.run([sbatch, "--parsable", str(script)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise DataError(f"sbatch refused {script}: {proc.stderr.strip()}")
    return proc.stdout.strip().split(";")[0]
