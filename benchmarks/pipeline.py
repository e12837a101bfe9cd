"""Where a model comparison spends its time: wall seconds and JAX compilations per phase.

Prints one JSON object per run (stdout; progress goes to stderr):

- `--case model`: one model through the stages of `ptaflow.compare` one by one (build the
  posterior, fit the flow: initialise / train / refine / importance samples, importance
  evidence, exact samples, harmonic-mean evidence, write the posterior file), each timed,
  with its compilations and the training steps and refinement rounds. `--mode refit` (default)
  or `--mode full` (`--correlation curn|hd`, `--pulsars 10`; `--max-steps`, `--refine-rounds`,
  `--n-flow-samples`, `--n-per-chain` cut a full-mode profile short; `--devices all` trains
  on every core of a CPU).
- `--case cli`: the `ptaflow compare` command in a child process (what `make demo` runs),
  its wall time from outside, each model's time, ln B and status (`--cache-dir` sets its
  persistent compilation cache; default off).
- `--case compare`: `ptaflow.compare.compare` on a model list (`--models seed10`, or `ng15`
  for the 16 NANOGrav 15-yr new-physics models, or names), with every model's wall time,
  ln Z from both estimators and phase times, and the totals.
- `--accuracy` (refit): ln Z of every two-parameter model by dense quadrature of prior x
  likelihood in the unconstrained plane, next to both estimators.

`--repo PATH` imports ptaflow from another checkout (e.g. an older commit, for a before /
after comparison on one machine); phases that checkout does not record are left out and
only the stage wall times are reported. `--cache-dir DIR` turns on JAX's persistent
compilation cache there (run twice to measure a warm start); default off.

    .venv/bin/python benchmarks/pipeline.py --case model --models powerlaw
    .venv/bin/python benchmarks/pipeline.py --case compare --models seed10 --accuracy
    .venv/bin/python benchmarks/pipeline.py --case model --mode full --correlation curn \\
        --models powerlaw --max-steps 300 --refine-rounds 3
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[1]

#: The NANOGrav 15-yr new-physics models (arXiv:2306.16219) with the power law.
NG15 = (
    "powerlaw",
    "smbhb",
    "igw",
    "sigw_gauss",
    "sigw_box",
    "sigw_delta",
    "pt_bubble",
    "pt_sound",
    "dw_sm",
    "dw_dr",
    "stable_c",
    "stable_k",
    "stable_m",
    "stable_n",
    "meta_l",
    "meta_ls",
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--case", choices=("model", "compare", "cli"), default="model")
    p.add_argument("--mode", choices=("refit", "full"), default="refit")
    p.add_argument("--models", nargs="+", default=None, help="default powerlaw / seed10")
    p.add_argument("--reference", default="smbhb")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repo", type=pathlib.Path, default=REPO, help="checkout to import")
    p.add_argument("--cache-dir", default=None, help="persistent compilation cache (off)")
    p.add_argument("--accuracy", action="store_true", help="refit: quadrature ln Z (2-D)")
    p.add_argument("--out-dir", type=pathlib.Path, default=None, help="default a temp dir")
    p.add_argument("--label", default="", help="free text copied into the line")
    full = p.add_argument_group("full mode")
    full.add_argument("--correlation", choices=("curn", "hd"), default="curn")
    full.add_argument("--pulsars", type=int, default=10)
    full.add_argument("--max-steps", type=int, default=None, help="reverse-KL steps (cap)")
    full.add_argument("--refine-rounds", type=int, default=None)
    full.add_argument(
        "--train",
        nargs="+",
        default=(),
        metavar="KEY=VALUE",
        help="TrainConfig fields to change, e.g. refine_patience=3 (values are Python literals)",
    )
    full.add_argument(
        "--flow",
        nargs="+",
        default=(),
        metavar="KEY=VALUE",
        help="FlowConfig fields to change, e.g. family=coupling flow_layers=8",
    )
    full.add_argument("--n-flow-samples", type=int, default=None)
    full.add_argument("--n-per-chain", type=int, default=None)
    full.add_argument(
        "--no-warm-start",
        action="store_true",
        help="train every model's flow from its own Laplace start (CompareSettings.warm_start)",
    )
    full.add_argument(
        "--devices",
        default="1",
        help="'all' or n: devices to train on (a CPU's cores are presented as CPU devices)",
    )
    return p


class _Compiles:
    """JAX compilation totals of this process (jax.monitoring duration events)."""

    def __init__(self):
        import jax.monitoring

        self.lock = threading.Lock()
        self.n, self.trace_s, self.compile_s, self.hits = 0, 0.0, 0.0, 0

        def on_duration(event, duration, **_):
            with self.lock:
                if event == "/jax/core/compile/backend_compile_duration":
                    self.n += 1
                    self.compile_s += duration
                elif event in (
                    "/jax/core/compile/jaxpr_trace_duration",
                    "/jax/core/compile/jaxpr_to_mlir_module_duration",
                ):
                    self.trace_s += duration

        def on_event(event, **_):
            if event == "/jax/compilation_cache/cache_hits":
                with self.lock:
                    self.hits += 1

        jax.monitoring.register_event_duration_secs_listener(on_duration)
        jax.monitoring.register_event_listener(on_event)

    def snapshot(self) -> dict:
        with self.lock:
            return {
                "compiles": self.n,
                "compile_s": round(self.compile_s, 3),
                "trace_lower_s": round(self.trace_s, 3),
                "persistent_cache_hits": self.hits,
            }


def _git(repo: pathlib.Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.strip() or None


def _provenance(args, ptaflow) -> dict:
    import flowjax
    import jax

    dev = jax.devices()[0]
    return {
        "commit": _git(args.repo, "rev-parse", "--short", "HEAD"),
        "dirty": bool(_git(args.repo, "status", "--porcelain", "--", "ptaflow")),
        "ptaflow_file": ptaflow.__file__,
        "ptaflow_version": ptaflow.__version__,
        "jax_version": jax.__version__,
        "flowjax_version": flowjax.__version__,
        "python": platform.python_version(),
        "device": f"{dev.platform}:{getattr(dev, 'device_kind', '')}",
        "cpu_count": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }


def _overrides(pairs) -> dict:
    """KEY=VALUE strings as a dict, each value a Python literal (a bare word stays a string)."""
    import ast

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"{pair!r}: expected KEY=VALUE")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def _settings(args):
    from ptaflow.compare import CompareSettings

    settings = CompareSettings(
        mode=args.mode,
        correlation=args.correlation,
        pulsars=args.pulsars,
        reference=args.reference,
        seed=args.seed,
    )
    from ptaflow.flows import TrainConfig

    train = settings.train
    for name, value in (("max_steps", args.max_steps), ("refine_rounds", args.refine_rounds)):
        if value is not None:
            train = dataclasses.replace(train or TrainConfig(init="prior"), **{name: value})
    if args.devices != "1":
        devices = "all" if args.devices == "all" else int(args.devices)
        train = dataclasses.replace(train or TrainConfig(), devices=devices)
    if args.train:
        train = dataclasses.replace(train or TrainConfig(), **_overrides(args.train))
    changes = {"train": train}
    if args.flow:
        from ptaflow.flows import FlowConfig

        changes["flow"] = dataclasses.replace(
            settings.flow or FlowConfig(), **_overrides(args.flow)
        )
    if args.n_flow_samples is not None:
        changes["n_flow_samples"] = args.n_flow_samples
    if args.n_per_chain is not None:
        changes["n_per_chain"] = args.n_per_chain
    if args.no_warm_start:
        changes["warm_start"] = False
    return dataclasses.replace(settings, **changes)


def _quadrature_log_z(posterior, by_space: dict | None = None) -> tuple[float, float]:
    """ln Z and its error for a posterior of one to three parameters by quadrature on a fine
    grid in z (`ptaflow.quadrature`, 2^22 points: 161 per axis in three dimensions), located
    from 10^5 prior draws (independent of any flow); NaN for a checkout without the module.
    Up to two parameters whose priors are finite intervals, also on a grid of 2^22 points in
    the prior's box (`ptaflow.quadrature.ProbitMap`), and the result is the one of the two
    with the smaller error (they must agree within 3 combined sigma); `by_space` gets both,
    as {"z": [ln Z, err], "unit_cube": [ln Z, err]}."""
    import math

    import jax
    import numpy as np

    try:
        from ptaflow.quadrature import estimate_evidence_quadrature
    except ImportError:
        return float("nan"), float("nan")

    z = np.asarray(posterior.to_unconstrained(posterior.sample_prior(jax.random.key(0), 10**5)))
    results = {
        "z": estimate_evidence_quadrature(
            posterior, z, max_points=2**22, max_dim=max(2, posterior.n_dim)
        )
    }
    finite = all(math.isfinite(b) for pair in posterior.prior.bounds() for b in pair)
    try:
        from ptaflow.quadrature import UNIT_CUBE, ProbitMap
    except ImportError:
        finite = False
    if finite and posterior.n_dim <= 2:
        results["unit_cube"] = estimate_evidence_quadrature(
            posterior, z, max_points=2**22, bijection=ProbitMap(), bounds=UNIT_CUBE
        )
    for result in results.values():
        if result.warnings:
            raise RuntimeError("; ".join(result.warnings))
    if by_space is not None:
        by_space.update({k: [r.log_evidence, r.log_evidence_err] for k, r in results.items()})
    values = [(r.log_evidence, r.log_evidence_err) for r in results.values()]
    if len(values) == 2 and abs(values[0][0] - values[1][0]) > 3 * math.hypot(
        values[0][1], values[1][1]
    ):
        raise RuntimeError(f"the quadratures in z and in the prior's box disagree: {values}")
    return min(values, key=lambda v: v[1])


def _model_case(args, compiles) -> dict:
    import jax
    import numpy as np

    cmp = importlib.import_module("ptaflow.compare")  # the module (ptaflow.compare is the function)
    from ptaflow.evidence import estimate_evidence_harmonic, estimate_evidence_importance
    from ptaflow.inference import fit_posterior, independence_samples
    from ptaflow.models import load_model
    from ptaflow.results import save_posterior

    settings = _settings(args)
    name = (args.models or ["powerlaw"])[0]
    phases: dict[str, dict] = {}

    def timed(phase, fn):
        c0, t0 = compiles.snapshot(), time.perf_counter()
        out = fn()
        c1 = compiles.snapshot()
        phases[phase] = {
            "wall_s": round(time.perf_counter() - t0, 3),
            "compile_s": round(c1["compile_s"] - c0["compile_s"], 3),
            "compiles": c1["compiles"] - c0["compiles"],
        }
        return out

    t0 = time.perf_counter()
    model = load_model(name)
    if "timings" in inspect.signature(cmp.evaluate_model).parameters:
        from ptaflow.profiling import PhaseTimes

        recorder = PhaseTimes()
        run = cmp.evaluate_model(model, settings, timings=recorder)
        if run.fit is None:
            raise RuntimeError(f"{name} failed: {run.outcome.reason}")
        fit, outcome = run.fit, run.outcome
        with tempfile.TemporaryDirectory() as tmp, recorder.phase("write"):
            save_posterior(fit.to_result(), pathlib.Path(tmp) / "m.h5")
        phases = recorder.to_dict()
        posterior = fit.posterior
        lnz = (
            outcome.log_z_harmonic,
            outcome.log_z_harmonic_err,
            outcome.log_z_importance,
            outcome.log_z_importance_err,
        )
        rhat = None
    else:  # a checkout without phase records: its stages one by one, timed from outside
        seed = cmp._model_seed(settings.seed, model.name)  # that checkout's name of the seed rule
        posterior = timed("build", lambda: cmp.comparison_posterior(model, settings))
        fit = timed(
            "fit",
            lambda: fit_posterior(
                posterior,
                seed=seed,
                flow_config=settings.flow,
                train_config=settings.train,
                n_samples=settings.n_flow_samples,
                progress=False,
            ),
        )
        imp = timed(
            "evidence_importance", lambda: estimate_evidence_importance(fit.log_target, fit.log_q)
        )
        chains = timed(
            "exact_samples",
            lambda: independence_samples(
                fit, seed=seed + 1, num_chains=settings.n_chains, num_samples=settings.n_per_chain
            ),
        )
        lhm = timed(
            "evidence_harmonic",
            lambda: estimate_evidence_harmonic(
                jax.random.key(seed + 2),
                chains.samples,
                chains.log_prob,
                temperature=settings.temperature or 0.9,
            ),
        )
        with tempfile.TemporaryDirectory() as tmp:
            timed("write", lambda: save_posterior(fit.to_result(), pathlib.Path(tmp) / "m.h5"))
        lnz = (lhm.log_evidence, lhm.log_evidence_err, imp.log_evidence, imp.log_evidence_err)
        rhat = float(np.max(chains.rhat))
    row = {
        "case": f"{args.mode}-model",
        "model": name,
        "n_dim": posterior.n_dim,
        "wall_s": round(time.perf_counter() - t0, 3),
        "phases": phases,
        "train_steps": int(fit.info.steps),
        "refine_rounds": len(fit.info.refine_ess),
        "ln_Z_harmonic": lnz[0],
        "ln_Z_harmonic_err": lnz[1],
        "ln_Z_importance": lnz[2],
        "ln_Z_importance_err": lnz[3],
        "ess_fraction": fit.ess / fit.z.shape[0],
        "khat": fit.khat,
    }
    if rhat is not None:
        row["rhat_max"] = rhat
    if args.accuracy and posterior.n_dim == 2:
        row["ln_Z_quadrature"], row["ln_Z_quadrature_err"] = _quadrature_log_z(posterior)
    return row


def _cli_case(args) -> dict:
    """`ptaflow compare` as a user runs it (what `make demo` runs), timed from outside."""
    out = args.out_dir or pathlib.Path(tempfile.mkdtemp(prefix="ptaflow_cli_"))
    models = [] if args.models in (None, ["seed10"]) else list(args.models)
    command = [sys.executable, "-m", "ptaflow", "compare", *models, "--out", str(out)]
    env = dict(os.environ, PTAFLOW_JAX_CACHE=args.cache_dir or "off")
    env["PYTHONPATH"] = os.pathsep.join([str(args.repo.resolve()), env.get("PYTHONPATH", "")])
    t0 = time.perf_counter()
    # Run from the checkout: `python -m` puts the working directory first on sys.path.
    repo = str(args.repo.resolve())
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=repo)
    wall = time.perf_counter() - t0
    # 3: some model flagged or with warnings, 4: some model failed (a table is written).
    if done.returncode not in (0, 3, 4):
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-2000:]}")
    table = json.loads((out / "comparison.json").read_text())
    rows = table["rows"]
    return {
        "case": "cli-compare",
        "command": " ".join(["ptaflow", *command[3:]]),
        "wall_s": round(wall, 3),
        "model_wall_s": {r["model"]: round(r["wall_time_s"], 2) for r in rows},
        "ln_B": {r["model"]: [r["ln_B"], r["ln_B_err"]] for r in rows},
        "status": {r["model"]: r["status"] for r in rows},
        "exit_status": done.returncode,
        "reasons": {r["model"]: r["reason"] for r in rows if r["reason"]},
    }


def _compare_case(args, compiles) -> dict:
    from ptaflow.compare import compare, comparison_posterior

    settings = _settings(args)
    models = args.models or ["seed10"]
    if models == ["ng15"]:
        models = list(NG15)
    out = args.out_dir or pathlib.Path(tempfile.mkdtemp(prefix="ptaflow_pipeline_"))
    t0 = time.perf_counter()
    table = compare(models, settings=settings, out_dir=out, log=lambda m: print(m, file=sys.stderr))
    wall = time.perf_counter() - t0
    rows, totals = [], {}
    for o in table.outcomes:
        r = {
            "model": o.name,
            "status": o.status,
            "wall_s": round(o.wall_time_s, 3),
            "ln_Z_harmonic": o.log_z_harmonic,
            "ln_Z_harmonic_err": o.log_z_harmonic_err,
            "ln_Z_importance": o.log_z_importance,
            "ln_Z_importance_err": o.log_z_importance_err,
            "harmonic_phi": getattr(o, "harmonic_phi", None),  # absent in older checkouts
            "ln_Z_quadrature": getattr(o, "log_z_quadrature", None),
            "ln_Z_quadrature_err": getattr(o, "log_z_quadrature_err", None),
            "khat": getattr(o, "khat", None),
            "reason": o.reason,
        }
        for phase, rec in getattr(o, "phase_times", {}).items():
            r.setdefault("phases", {})[phase] = rec
            tot = totals.setdefault(phase, {})
            for k, v in rec.items():
                tot[k] = round(tot.get(k, 0) + v, 4)
        if args.accuracy and args.mode == "refit" and o.ok:
            post = comparison_posterior(o.name, settings)
            have = r["ln_Z_quadrature"] is not None and r["ln_Z_quadrature"] == r["ln_Z_quadrature"]
            if post.n_dim == 2 and not have:  # older checkouts compute no quadrature
                r["ln_Z_quadrature"], r["ln_Z_quadrature_err"] = _quadrature_log_z(post)
        rows.append(r)
    ln_b = {k: [round(v[0], 4), round(v[1], 4)] for k, v in table.bayes_factors().items()}
    walls = [r["wall_s"] for r in rows]
    return {
        "case": f"{args.mode}-compare",
        "models": [o.name for o in table.outcomes],
        "wall_s": round(wall, 3),
        "model_wall_s_first": walls[0] if walls else None,
        "model_wall_s_max_after_first": max(walls[1:]) if len(walls) > 1 else None,
        "phase_totals": totals,
        "ln_B": ln_b,
        "rows": rows,
    }


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    sys.path.insert(0, str(args.repo.resolve()))
    if args.devices != "1" and not (args.devices == "all" or args.devices.isdigit()):
        raise SystemExit(f"--devices {args.devices}: expected 'all' or a positive integer")
    if args.devices != "1":
        # XLA runs one computation on one CPU core: present the cores as CPU devices before JAX
        # starts (on a GPU machine this only adds CPU devices)
        n = os.cpu_count() if args.devices == "all" else int(args.devices)
        os.environ.setdefault("JAX_NUM_CPU_DEVICES", str(n))
    import jax

    jax.config.update("jax_enable_x64", True)
    if args.cache_dir:
        jax.config.update("jax_compilation_cache_dir", args.cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    import ptaflow

    # One OpenBLAS thread for JAX's CPU LAPACK kernels (checkouts older than
    # limit_blas_threads set it when ptaflow is imported).
    getattr(ptaflow, "limit_blas_threads", lambda: None)()
    compiles = _Compiles()
    t0 = time.perf_counter()
    cases = {"model": _model_case, "compare": _compare_case, "cli": lambda a, _c: _cli_case(a)}
    row = cases[args.case](args, compiles)
    row["process_wall_s"] = round(time.perf_counter() - t0, 3)
    row.update(compiles.snapshot())
    row["cache_dir"] = args.cache_dir
    row["settings"] = _settings(args).to_dict()
    row["label"] = args.label
    row["provenance"] = _provenance(args, ptaflow)
    print(json.dumps(row, default=float), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
