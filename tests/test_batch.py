"""Batch jobs: TOML validation, task expansion, and the same numbers from every executor.

One small refit-mode job (SMBHB reference + power law, short training) is run in this process
first; its ln Z are checked against dense quadrature (as in test_compare). Then the same task
list runs as two worker processes, as a Slurm array index executed by bash, and on a local Ray
cluster in which one worker is killed mid-task: every executor must reproduce the first run's
numbers exactly (same task seeds, deterministic CPU arithmetic), and the killed task must be
re-run to completion.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from test_compare import _quadrature_log_z

from ptaflow.batch import (
    expand_tasks,
    format_status,
    load_job,
    load_manifest,
    parse_job,
    plan,
    report,
    task_states,
)
from ptaflow.batch.executors import (
    _index_ranges,
    run_local,
    run_ray,
    submit_slurm,
    write_slurm_script,
)
from ptaflow.cli import main
from ptaflow.errors import DataError, ModelError, ParameterError
from ptaflow.identity import derived_seed

# The module itself: the package attribute `ptaflow.compare` is the function of that name.
compare_module = importlib.import_module("ptaflow.compare")

JOB = """
name = "ci-batch"
out_dir = "{out}"
models = ["powerlaw"]
reference = "smbhb"
base_seed = 7

[[datasets]]
name = "ng15-refit"
mode = "refit"

[train]
max_steps = 300
num_samples = 128

[evidence]
n_flow_samples = 4000
n_chains = 8
n_per_chain = 250

[executor.slurm]
partition = "gpu"
time = "01:00:00"
gpus_per_task = 1
setup = ["echo node setup"]
"""


def _job(tmp: pathlib.Path, out: str) -> object:
    path = tmp / f"{out}.toml"
    path.write_text(JOB.format(out=out))
    return load_job(path)


def _numbers(out_dir) -> dict[int, tuple[float, float]]:
    _, tasks = load_manifest(out_dir)
    nums = {}
    for s in task_states(out_dir, tasks):
        if s.state == "done":
            nums[s.task.index] = (s.outcome["log_z_harmonic"], s.outcome["log_z_importance"])
    return nums


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("batch")
    job = _job(tmp, "local")
    tasks = plan(job)
    run_local(job, workers=1, log=None)
    return job, tasks, _numbers(job.out_dir)


def test_job_files_are_validated(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_job(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("models = [\n")
    with pytest.raises(DataError, match="not valid TOML"):
        load_job(bad)
    base = {"models": ["powerlaw"], "datasets": [{"name": "r", "mode": "refit"}]}
    with pytest.raises(ParameterError, match="'model'.*Did you mean 'models'"):
        parse_job({"model": ["x"], **base})
    with pytest.raises(ParameterError, match="no \\[\\[datasets\\]\\]"):
        parse_job({"models": ["powerlaw"]})
    with pytest.raises(ParameterError, match="mode = 'fast'"):
        parse_job({**base, "datasets": [{"name": "r", "mode": "fast"}]})
    with pytest.raises(ParameterError, match="'gw'"):
        parse_job({**base, "datasets": [{"mode": "full", "correlations": ["gw"]}]})
    with pytest.raises(ParameterError, match="max_step"):
        parse_job({**base, "train": {"max_step": 10}})
    with pytest.raises(ParameterError, match="temperature"):
        parse_job({**base, "evidence": {"temperature": 1.5}})
    with pytest.raises(ParameterError, match="workers"):
        parse_job({**base, "executor": {"workers": 0}})
    with pytest.raises(ModelError):
        parse_job({**base, "models": ["no_such_model"]})


def test_tasks_expand_with_input_keys_and_derived_seeds(tmp_path):
    raw = {
        "models": ["powerlaw", "sigw_gauss_2p"],
        "replicates": 2,
        "datasets": [
            {"name": "refit", "mode": "refit"},
            {"name": "psr3", "mode": "full", "pulsars": 3, "correlations": ["curn", "hd"]},
        ],
        "variants": [{"name": "a"}, {"name": "b", "train": {"max_steps": 500}}],
    }
    job = parse_job(raw, base_dir=tmp_path)
    tasks = expand_tasks(job)
    # 3 models (smbhb reference added) x (1 refit + 2 full correlations) x 2 variants x 2 seeds
    assert len(tasks) == 3 * 3 * 2 * 2
    assert [t.index for t in tasks] == list(range(len(tasks)))
    assert len({t.key for t in tasks}) == len(tasks) and len({t.seed for t in tasks}) == len(tasks)
    assert tasks[0].model_name == "smbhb" and tasks[0].group == "refit/a/r0"
    assert {t.group for t in tasks if t.correlation == "hd"} >= {"psr3-hd/b/r1"}
    assert all(t.settings.seed == t.seed for t in tasks)
    # One seed scheme with comparisons: a task's seed derives from the base seed and its key.
    assert all(t.seed == derived_seed(job.base_seed, t.key) for t in tasks)
    assert {t.settings.train.max_steps for t in tasks if t.variant == "b"} == {500}
    assert [t.key for t in expand_tasks(parse_job(raw, base_dir=tmp_path))] == [
        t.key for t in tasks
    ]
    reseeded = expand_tasks(parse_job({**raw, "base_seed": 1}, base_dir=tmp_path))
    assert not {t.seed for t in reseeded} & {t.seed for t in tasks}
    same = {**raw, "datasets": [{"name": "x", "mode": "refit"}, {"name": "y", "mode": "refit"}]}
    with pytest.raises(ParameterError, match="same inputs"):
        expand_tasks(parse_job(same, base_dir=tmp_path))


@pytest.mark.slow
def test_local_run_matches_quadrature_and_resumes(local, monkeypatch):
    job, tasks, nums = local
    assert sorted(nums) == [0, 1]
    _, loaded = load_manifest(job.out_dir)
    assert [t.key for t in loaded] == [t.key for t in tasks]
    for t in tasks:
        rec = json.loads((pathlib.Path(job.out_dir) / "tasks" / t.key / "result.json").read_text())
        o = rec["outcome"]
        if t.model_name == "powerlaw":  # uniform prior box: quadrature is the ground truth
            truth = _quadrature_log_z(t.model_name)
            # 3 sigma plus the 0.02 nat learned-harmonic-mean bias documented in test_compare.
            assert abs(o["log_z_importance"] - truth) < 3 * o["log_z_importance_err"] + 0.02
            assert abs(o["log_z_harmonic"] - truth) < 3 * o["log_z_harmonic_err"] + 0.02
        prov = rec["provenance"]
        assert prov["seed"] == t.seed and prov["task_key"] == t.key
        assert prov["jax"] and prov["device_kind"] and "git_revision" in prov
        assert rec["task"]["settings"]["train"]["max_steps"] == 300
        assert (pathlib.Path(job.out_dir) / "tasks" / t.key / "posterior.h5").is_file()

    def boom(*args, **kwargs):
        raise AssertionError("a finished task was run again")

    monkeypatch.setattr(compare_module, "evaluate_model", boom)
    run_local(job, workers=1, log=None)  # everything done: nothing runs
    text = format_status(task_states(job.out_dir, tasks))
    assert text.startswith("2 tasks: 2 done") and "powerlaw" in text


@pytest.mark.slow
def test_report_merges_tasks_into_bayes_factors(local, capsys):
    job, _, nums = local
    rep = report(job.out_dir)
    table = rep.comparisons["ng15-refit/default/r0"]
    ln_b, err = table.bayes_factors()["powerlaw"]
    assert ln_b == pytest.approx(nums[1][0] - nums[0][0], abs=1e-12) and err > 0
    out = pathlib.Path(job.out_dir) / "report"
    assert (out / "bayes_factors.csv").read_text().count("\n") == 3
    assert (out / "bayes_factors_ng15-refit_default_r0.png").stat().st_size > 10_000
    assert json.loads((out / "report.json").read_text())["n_done"] == 2
    assert main(["batch", "status", job.path]) == 0
    assert "2 tasks: 2 done" in capsys.readouterr().out


@pytest.mark.slow
def test_worker_processes_give_the_same_numbers(local, tmp_path):
    job = _job(tmp_path, "procs")
    plan(job)
    run_local(job, workers=2, log=None)
    assert _numbers(job.out_dir) == local[2]


@pytest.mark.slow
def test_slurm_array_script_runs_an_index_locally(local, tmp_path):
    job = _job(tmp_path, "slurm")
    plan(job)
    script = write_slurm_script(job)
    text = script.read_text()
    assert "#SBATCH --array=0-1" in text and "#SBATCH --gpus-per-task=1" in text
    assert "#SBATCH --partition=gpu" in text and "echo node setup" in text
    assert "batch run-task" in text and "${SLURM_ARRAY_TASK_ID}" in text
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "1"}
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _numbers(job.out_dir) == {1: local[2][1]}
    rewritten = write_slurm_script(job).read_text()  # only the unfinished task is left
    assert "#SBATCH --array=0\n" in rewritten
    if not any(
        os.access(os.path.join(p, "sbatch"), os.X_OK) for p in os.environ["PATH"].split(":")
    ):
        with pytest.raises(DataError, match="sbatch is not on PATH"):
            submit_slurm(script)
    assert _index_ranges([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"


# Ray starts its daemons with subprocess preexec functions, which run JAX's at-fork hook in
# this already-initialised process; the child execs at once, so the deadlock JAX warns of
# cannot happen. (The `ptaflow batch run` driver does not initialise JAX before Ray starts.)
@pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning")
@pytest.mark.slow
def test_ray_cluster_survives_a_killed_worker(local, tmp_path):
    job = _job(tmp_path, "ray")
    tasks = plan(job)
    killed: list[tuple[str, int]] = []
    stop = threading.Event()

    def kill_one_running_worker():
        while not stop.is_set() and not killed:
            for t in tasks:
                att = pathlib.Path(job.out_dir) / "tasks" / t.key / "attempts.json"
                try:
                    state = json.loads(att.read_text())
                except (OSError, ValueError):
                    continue
                if state.get("state") == "running" and state["pid"] != os.getpid():
                    time.sleep(2.0)  # let it get into the flow fit
                    os.kill(state["pid"], signal.SIGKILL)
                    killed.append((t.key, state["pid"]))
                    return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_one_running_worker, daemon=True)
    killer.start()
    messages: list[str] = []
    try:
        run_ray(job, retries=2, log=messages.append, init_kwargs={"num_cpus": 2})
    finally:
        stop.set()
        killer.join()
    assert killed, "no Ray worker was seen running a task"
    key, pid = killed[0]
    att = json.loads((pathlib.Path(job.out_dir) / "tasks" / key / "attempts.json").read_text())
    assert att["state"] == "done" and att["attempts"] >= 2 and att["pid"] != pid
    assert _numbers(job.out_dir) == local[2]
    assert all(math.isfinite(v) for pair in local[2].values() for v in pair)


def test_run_task_index_is_checked(tmp_path):
    job = _job(tmp_path, "idx")
    plan(job)
    assert main(["batch", "run-task", job.out_dir, "--index", "5"]) == 1
    with pytest.raises(DataError, match="plan the job first"):
        load_manifest(tmp_path / "nowhere")
    assert not (pathlib.Path(job.out_dir) / "tasks").exists()  # nothing ran


def test_the_documented_example_job_is_valid():
    job = load_job(pathlib.Path(__file__).resolve().parents[1] / "examples" / "ng15_sources.toml")
    tasks = expand_tasks(job)
    # 10 seed models x (refit + full CURN + full HD) x 2 replicates, as its header says
    assert len(tasks) == 60 and job.executor.slurm["max_parallel"] == 8
    assert {t.group.split("/")[0] for t in tasks} == {
        "ng15-refit",
        "ng15-10psr-curn",
        "ng15-10psr-hd",
    }


def test_a_crashing_task_is_recorded_retried_and_does_not_stop_the_batch(tmp_path, monkeypatch):
    job = _job(tmp_path, "crash")
    tasks = plan(job)
    calls = []

    def crash(model, settings, **kwargs):
        calls.append(model)
        raise RuntimeError("XLA: out of memory while allocating 3.2 GiB")

    monkeypatch.setattr(compare_module, "evaluate_model", crash)
    run_local(job, workers=1, retries=1, log=None)
    assert calls == ["smbhb", "powerlaw"] * 2  # every task tried, then retried once
    states = task_states(job.out_dir, tasks)
    assert [s.state for s in states] == ["failed", "failed"]
    assert all(s.attempts == 2 and "out of memory" in s.detail for s in states)
    error = (pathlib.Path(job.out_dir) / "tasks" / tasks[0].key / "error.txt").read_text()
    assert "Traceback" in error and "RuntimeError" in error
    assert format_status(states).startswith("2 tasks: 2 failed")
    # A task whose process vanished mid-run (killed, node rebooted) shows as interrupted.
    gone = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True).stdout
    att = pathlib.Path(job.out_dir) / "tasks" / tasks[1].key / "attempts.json"
    att.write_text(
        json.dumps(
            {"attempts": 3, "state": "running", "host": socket.gethostname(), "pid": int(gone)}
        )
    )
    assert task_states(job.out_dir, tasks)[1].state == "interrupted"
    rep = report(job.out_dir, plots=False)
    rows = rep.comparisons["ng15-refit/default/r0"].rows()
    assert rep.n_done == 0 and [r["status"] for r in rows] == ["failed", "pending"]
    assert math.isnan(rows[1]["ln_B"])


# --- validation when a job is loaded -------------------------------------------------------------

BASE = {"models": ["powerlaw"], "datasets": [{"name": "r", "mode": "refit"}]}
FULL = {"name": "f", "mode": "full", "pulsars": 3}


@pytest.mark.parametrize(
    "change, match",
    [
        # the shipped NG15 free spectrum has 30 frequencies
        (
            {"datasets": [{"name": "r", "mode": "refit", "n_freq": 100}]},
            r"\[\[datasets\]\] 'r'\.n_freq = 100: expected 1\.\.30 \(the frequencies of the "
            r"free-spectrum densities",
        ),
        ({"train": {"prior_draws": 0}}, r"\[train\]\.prior_draws = 0: expected an integer >= 1"),
        ({"train": {"max_steps": "300"}}, r"\[train\]\.max_steps = '300': expected an integer"),
        ({"train": {"learning_rate": "fast"}}, r"\[train\]\.learning_rate = 'fast': expected a"),
        ({"train": {"refine_keep_best": 1}}, r"\[train\]\.refine_keep_best = 1: expected true"),
        ({"train": {"max_steps": -1}}, r"\[train\]\.max_steps = -1: expected an integer >= 0"),
        ({"flow": {"nn_width": 0}}, r"\[flow\]\.nn_width = 0: expected an integer >= 1"),
        ({"evidence": {"n_chains": "8"}}, r"\[evidence\]\.n_chains = '8': expected an integer"),
        ({"evidence": {"n_per_chain": 0}}, r"\[evidence\]\.n_per_chain = 0: expected an integer"),
        ({"evidence": {"temperature": 1.5}}, r"\[evidence\]\.temperature = 1\.5: .*0 < T < 1"),
        (
            {"variants": [{"name": "v", "train": {"max_steps": -1}}]},
            r"\[\[variants\]\] 'v'\.train\.max_steps = -1: expected an integer >= 0",
        ),
        ({"executor": {"workers": True}}, r"\[executor\]\.workers = True: expected an integer"),
        ({"executor": {"retries": -3}}, r"\[executor\]\.retries = -3: expected an integer >= 0"),
        ({"executor": {"ray": {"num_cpus": "2"}}}, r"\[executor\.ray\]\.num_cpus = '2': expected"),
        (
            {"executor": {"slurm": {"gpus_per_task": "1"}}},
            r"\[executor\.slurm\]\.gpus_per_task = '1': expected an integer",
        ),
        (
            {"executor": {"slurm": {"extra": ["--qos=x\necho injected"]}}},
            r"\[executor\.slurm\]\.extra = .*: expected one line",
        ),
        ({"base_seed": 1.5}, r"base_seed = 1\.5: expected an integer"),
        ({"datasets": [{**FULL, "n_gw": 20, "n_rn": 10}]}, r"'f'\.n_gw = 20: expected .*<= n_rn"),
        (
            {"datasets": [{**FULL, "n_rn": 31}]},
            r"\[\[datasets\]\] 'f'\.n_rn = 31: expected 1\.\.30 \(the frequencies of the "
            r"reduced data",
        ),
        (
            {"datasets": [{**FULL, "pulsars": ["J1012-4235", "J1012-4235"]}]},
            r"\[\[datasets\]\] 'f'\.pulsars: pulsar names repeat: 'J1012-4235' is given twice",
        ),
    ],
)
def test_every_job_value_is_checked_with_its_key(change, match):
    with pytest.raises(ParameterError, match=match):
        parse_job({**BASE, **change})


def test_a_toml_boolean_is_not_a_number_of_workers(tmp_path):
    path = tmp_path / "job.toml"
    path.write_text(JOB.format(out="out") + "\n[executor]\nworkers = true\n")
    with pytest.raises(ParameterError, match=r"\[executor\]\.workers = True: expected an integer"):
        load_job(path)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"name": "../../escape"}, r"name = '\.\./\.\./escape': expected a name of letters"),
        ({"name": "job\n#SBATCH --wrap=x"}, r"name = 'job\\n#SBATCH --wrap=x': expected a name"),
        (
            {"datasets": [{"name": "a/b", "mode": "refit"}]},
            r"\[\[datasets\]\] #1\.name = 'a/b': expected a name of letters.*e\.g\. 'a_b'",
        ),
        ({"variants": [{"name": "x y"}]}, r"\[\[variants\]\] #1\.name = 'x y': expected a name"),
    ],
)
def test_job_data_set_and_variant_names_are_checked(change, match):
    with pytest.raises(ParameterError, match=match):
        parse_job({**BASE, **change})


def test_a_job_file_name_that_is_no_valid_name_is_sanitised(tmp_path):
    path = tmp_path / "my job (v2).toml"
    path.write_text(JOB.format(out="out").replace('name = "ci-batch"\n', "", 1))
    assert load_job(path).name == "my_job_v2"


def test_the_slurm_script_stays_inside_out_dir(tmp_path):
    import dataclasses

    job = _job(tmp_path, "escape")
    plan(job)
    for name in ("../../escape", "x\n#SBATCH --wrap=rm"):
        with pytest.raises(ParameterError, match="expected a name of letters"):
            write_slurm_script(dataclasses.replace(job, name=name))
    assert not list(tmp_path.rglob("*.sbatch"))
    script = write_slurm_script(job)
    assert script.parent == pathlib.Path(job.out_dir) / "slurm"


def test_run_task_keys_from_an_edited_task_list_are_checked(tmp_path):
    job = _job(tmp_path, "keys")
    plan(job)
    manifest = pathlib.Path(job.out_dir) / "tasks.json"
    doc = json.loads(manifest.read_text())
    doc["tasks"][0]["key"] = "../../../elsewhere"
    manifest.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"task 0 has key '\.\./\.\./\.\./elsewhere'.*20 hex"):
        load_manifest(job.out_dir)


@pytest.mark.parametrize(
    "option, match",
    [
        (["--workers", "abc"], r"argument --workers: 'abc': expected an integer N >= 1 or 'gpus'"),
        (["--workers", "0"], r"argument --workers: '0': expected an integer N >= 1 or 'gpus'"),
        (["--retries", "-3"], r"argument --retries: '-3': expected an integer >= 0"),
    ],
)
def test_batch_run_options_are_checked_by_the_parser(tmp_path, capsys, option, match):
    job = _job(tmp_path, "opts")
    with pytest.raises(SystemExit, match="2"):
        main(["batch", "run", job.path, *option])
    assert re.search(match, capsys.readouterr().err)
    assert not pathlib.Path(job.out_dir).exists()  # nothing planned, nothing run


def test_run_local_checks_workers_and_retries(tmp_path):
    job = _job(tmp_path, "lib")
    plan(job)
    with pytest.raises(ParameterError, match=r"retries=-3: expected an integer >= 0"):
        run_local(job, retries=-3, log=None)
    with pytest.raises(ParameterError, match=r"workers=True: expected an integer N >= 1"):
        run_local(job, workers=True, log=None)


# --- task processes and task locks ----------------------------------------------------------------

SLEEPER = """
import os, pathlib, sys, time
from ptaflow.batch.executors import tie_to_parent
if not tie_to_parent():
    sys.exit(1)
pathlib.Path(sys.argv[1], sys.argv[2]).write_text(str(os.getpid()))
time.sleep(300)
"""

DRIVER = """
import signal, sys
# Python's own Ctrl-C handler, as in a terminal: a test suite started in the background of a
# non-interactive shell hands its children SIGINT ignored, which Python then keeps.
signal.signal(signal.SIGINT, signal.default_int_handler)
from ptaflow.batch import executors, load_job
job_file, sleeper, pid_dir = sys.argv[1:4]
executors.task_command = lambda out_dir, index, python=None: [
    sys.executable, sleeper, pid_dir, str(index)
]
executors.run_local(load_job(job_file), workers=2, retries=0, log=None)
"""


def _gone(pid: int) -> bool:
    """The process has ended (a zombie waiting for a parent that does not reap counts too)."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


@pytest.mark.parametrize(
    "sig",
    [
        signal.SIGTERM,
        signal.SIGINT,
        pytest.param(
            signal.SIGKILL,
            marks=pytest.mark.skipif(
                not sys.platform.startswith("linux"),
                reason="task processes follow a SIGKILLed parent through Linux's prctl only",
            ),
        ),
    ],
)
def test_a_killed_batch_run_takes_its_task_processes_with_it(tmp_path, sig):
    job = _job(tmp_path, "killed")
    plan(job)
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    (tmp_path / "driver.py").write_text(DRIVER)
    pids = tmp_path / "pids"
    pids.mkdir()
    driver = subprocess.Popen(
        [sys.executable, str(tmp_path / "driver.py"), job.path, str(tmp_path / "sleeper.py"), pids],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180  # two interpreters importing JAX on a busy machine
        while len(list(pids.iterdir())) < 2:
            assert driver.poll() is None, driver.stderr.read()
            assert time.monotonic() < deadline, "the two task processes did not start"
            time.sleep(0.2)
        time.sleep(0.2)  # the pid files are written before the sleep; let both settle
        children = [int(p.read_text()) for p in pids.iterdir()]
        assert not any(_gone(pid) for pid in children)
        driver.send_signal(sig)
        # Stopping takes seconds (SIGTERM, up to 5 s, SIGKILL); interpreter shutdown with
        # JAX loaded took over 30 s on a 2-core machine loaded by another 2-core job.
        driver.wait(timeout=120)
        deadline = time.monotonic() + 10
        while not all(_gone(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert all(_gone(pid) for pid in children), f"task processes {children} outlived the run"
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        driver.stderr.close()
        for p in pids.iterdir():
            try:
                os.kill(int(p.read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass


HOLDER = """
import pathlib, sys, time
from ptaflow.batch.run import _lock_task
lock, holder = _lock_task(pathlib.Path(sys.argv[1]))
assert lock is not None, holder
print("locked", flush=True)
time.sleep(300)
"""


def test_a_task_locked_by_a_live_process_is_not_run_twice(tmp_path, monkeypatch):
    from ptaflow.batch import run_task, task_dir

    job = _job(tmp_path, "locked")
    tasks = plan(job)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(task_dir(job.out_dir, tasks[0]))],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        calls = []

        def crash(model, settings, **kwargs):
            calls.append(model)
            raise RuntimeError("a failure, so that the task stays unfinished")

        monkeypatch.setattr(compare_module, "evaluate_model", crash)
        messages: list[str] = []
        run_local(job, workers=1, retries=1, log=messages.append)
        assert calls == ["powerlaw", "powerlaw"]  # task 0 (smbhb) was never started
        busy = f"task 0 (ng15-refit/default/r0 smbhb): running in pid {holder.pid} on "
        assert sum(m.startswith(busy) for m in messages) == 1
        outcome = run_task(job.out_dir, tasks[0])  # a second process asking directly
        assert outcome.status == "pending" and f"pid {holder.pid}" in outcome.reason
        assert calls == ["powerlaw", "powerlaw"]
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    # The kernel releases the lock of a process however it ended: the next run takes the task.
    run_local(job, workers=1, retries=0, log=None)
    assert calls[2:] == ["smbhb", "powerlaw"]
