"""Batch throughput: the ten seed models end to end, and Ray scaling with the number of workers.

Prints one JSON object per line on stdout (progress on stderr).

    python benchmarks/batch.py --ray-workers 1 2   # refit mode, this CPU, 1 and 2 Ray workers
    python benchmarks/batch.py --full --no-ray     # full likelihood, 10 pulsars, CURN (a GPU)

Case "full": the seed paper's ten models (preset seed10) on the full likelihood of the 10 best
NG15 pulsars (CURN, 30 red-noise and 14 common frequencies, 22 parameters per model) as one
batch job with the local executor on the default JAX device: wall time from the first task to
the last evidence, compilation included, with every model's ln Z. Target: at most 180 s on
one H100. On a 2-core CPU this takes hours; run it on a GPU.

Case "ray": the ten seed models in refit mode as a batch job on a local Ray cluster with
N workers (one CPU each), for each N given; a fresh output folder per N, so every run
computes all ten tasks. Reports wall time, tasks per minute, speed-up over the first N, and
whether the ln Z of every task equal those of the first N exactly (same task seeds).
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import ptaflow  # noqa: E402

ptaflow.limit_blas_threads()  # JAX's CPU LAPACK calls OpenBLAS: one thread


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _write_job(folder: pathlib.Path, name: str, dataset: str, extra: str = "") -> pathlib.Path:
    path = folder / f"{name}.toml"
    path.write_text(
        f'name = "{name}"\nout_dir = "{name}"\nmodels = ["seed10"]\nreference = "smbhb"\n'
        f"base_seed = 0\n\n[[datasets]]\n{dataset}\n{extra}"
    )
    return path


def _numbers(out_dir) -> dict[str, tuple[float, float]]:
    from ptaflow.batch import load_manifest, task_states

    _, tasks = load_manifest(out_dir)
    out = {}
    for s in task_states(out_dir, tasks):
        o = s.outcome or {}
        out[s.task.key] = (o.get("log_z_harmonic", math.nan), o.get("log_z_importance", math.nan))
    return out


def _device() -> dict:
    import jax

    d = jax.devices()[0]
    return {"device": d.device_kind, "platform": d.platform, "jax_version": jax.__version__}


def run_full(folder: pathlib.Path, n_psr: int) -> dict:
    import jax

    jax.config.update("jax_enable_x64", True)
    from ptaflow.batch import load_job, plan, report
    from ptaflow.batch.executors import run_local

    dataset = (
        f'name = "ng15-{n_psr}psr"\nmode = "full"\npulsars = {n_psr}\n'
        'correlations = ["curn"]\nn_rn = 30\nn_gw = 14\n'
    )
    job = load_job(_write_job(folder, "full", dataset))
    tasks = plan(job)
    t0 = time.perf_counter()
    run_local(job, workers=1, log=_log)
    wall = time.perf_counter() - t0
    rep = report(job.out_dir, plots=False)
    table = next(iter(rep.comparisons.values()))
    rows = table.rows()
    return {
        "case": f"full_curn_{n_psr}psr_seed10",
        **_device(),
        "n_tasks": len(tasks),
        "n_done": rep.n_done,
        "wall_s": round(wall, 1),
        "target_s": 180,
        "meets_target": bool(rep.n_done == len(tasks) and wall <= 180),
        "models": {
            r["model"]: {
                "ln_Z_harmonic": r["ln_Z_harmonic"],
                "ln_Z_harmonic_err": r["ln_Z_harmonic_err"],
                "ln_Z_importance": r["ln_Z_importance"],
                "ln_Z_importance_err": r["ln_Z_importance_err"],
                "ln_B": r["ln_B"],
                "ln_B_err": r["ln_B_err"],
                "khat": r["khat"],
                "status": r["status"],
                "wall_time_s": round(r["wall_time_s"], 1),
            }
            for r in rows
        },
    }


def run_ray_scaling(folder: pathlib.Path, workers: list[int]) -> list[dict]:
    import os

    from ptaflow.batch import load_job, plan
    from ptaflow.batch.executors import run_ray

    results, first, base_wall = [], None, None
    for n in workers:
        job = load_job(_write_job(folder, f"ray{n}", 'name = "refit"\nmode = "refit"\n'))
        tasks = plan(job)
        t0 = time.perf_counter()
        run_ray(job, log=_log, init_kwargs={"num_cpus": n})
        wall = time.perf_counter() - t0
        nums = _numbers(job.out_dir)
        done = sum(all(math.isfinite(v) for v in pair) for pair in nums.values())
        if first is None:
            first, base_wall = nums, wall
        results.append(
            {
                "case": f"ray_refit_seed10_{n}workers",
                "platform": "cpu",
                "cpu_count": os.cpu_count(),
                "workers": n,
                "n_tasks": len(tasks),
                "n_done": done,
                "wall_s": round(wall, 1),
                "tasks_per_min": round(60 * done / wall, 2),
                "speedup_vs_first": round(base_wall / wall, 3),
                "identical_to_first": nums == first,
                "load_avg_1min": os.getloadavg()[0],
            }
        )
        print(json.dumps(results[-1]), flush=True)
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--full", action="store_true", help="run the full-likelihood ten-model case")
    p.add_argument("--n-psr", type=int, default=10, help="pulsars of the full case (10)")
    p.add_argument("--ray-workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--no-ray", action="store_true", help="skip the Ray scaling case")
    p.add_argument("--out-dir", type=pathlib.Path, help="keep outputs here (default: temporary)")
    args = p.parse_args(argv)
    ctx = (
        tempfile.TemporaryDirectory(prefix="ptaflow-batch-bench-") if args.out_dir is None else None
    )
    folder = pathlib.Path(ctx.name if ctx else args.out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        if not args.no_ray:  # first: the Ray driver must start before JAX initialises here
            run_ray_scaling(folder, args.ray_workers)
        if args.full:
            print(json.dumps(run_full(folder, args.n_psr)), flush=True)
    finally:
        if ctx is not None:
            ctx.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
