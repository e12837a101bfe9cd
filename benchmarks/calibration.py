"""Are the quoted evidence errors calibrated? Refit ln Z over many seeds against quadrature.

For every refit model of one or two parameters (default: every built-in one), ln Z by dense
quadrature of prior x likelihood (`ptaflow.quadrature`, 2^22 points located from prior draws,
with its own error estimate) is the truth: in the unconstrained plane and, where the priors
are finite intervals, in the prior's box, the one with the smaller error (both are
recorded); the comparison's two estimators
(learned harmonic mean, importance sampling) are run with `--seeds` different seeds, each a
fresh flow fit, and each estimate's z = (ln Z - truth) / sqrt(sigma^2 + sigma_quad^2) is
recorded. If the quoted errors include the spread that training and sampling cause, z has
unit variance: the RMS of z lies near 1 (for 20 seeds, 0.7-1.3 covers most draws of a
calibrated estimator). Flags are counted too: a flag on a model whose estimates agree with
the truth is a false flag.

With `--mode full` the same is done on the full likelihood of one pulsar (its red noise and
a one-parameter model: three parameters, quadrature on 255 points per axis), with the
comparison's full-mode defaults (reverse KL from prior draws, forward-KL refinement, the
noise-only posterior as the defensive component, the posterior flow as the harmonic mean's
phi).

Prints one JSON object per model and a summary line:

    .venv/bin/python benchmarks/calibration.py --seeds 20
    .venv/bin/python benchmarks/calibration.py --models powerlaw meta_l --seeds 5
    .venv/bin/python benchmarks/calibration.py --mode full --models stable_m --seeds 20
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import pathlib
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
from scipy import special

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _pipeline():
    spec = importlib.util.spec_from_file_location("_pipeline", REPO / "benchmarks" / "pipeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _max_weight_ratio(log_weights) -> float:
    """The largest importance weight over their mean."""
    lw = np.asarray(log_weights, dtype=float)
    lw = lw[np.isfinite(lw)]
    return float(np.exp(lw.max() - special.logsumexp(lw) + math.log(lw.size)))


def _rms(values) -> float:
    values = [v for v in values if math.isfinite(v)]
    return math.sqrt(sum(v * v for v in values) / len(values)) if values else math.nan


def _quadrature_3d(posterior) -> tuple[float, float, dict]:
    """ln Z of a three-parameter posterior on grids of 161 and 255 points per axis in z
    (located from 10^5 prior draws), the finer one as the truth and the two grids' difference
    as its error: the trapezoid rule converges there (127 / 161 / 255 points per axis gave
    66182.48484 / .48537 / .48550 for stable_m on one pulsar), so the finer grid is closer to
    the limit than the difference, while each grid's own error, |Z_h - Z_2h|, is 5-10 times
    larger than its distance from the limit and would mask the estimators' errors."""
    import jax
    import numpy as np

    from ptaflow.quadrature import estimate_evidence_quadrature

    z = np.asarray(posterior.to_unconstrained(posterior.sample_prior(jax.random.key(0), 10**5)))
    grids = {}
    for points in (2**22, 2**24):
        result = estimate_evidence_quadrature(posterior, z, max_points=points, max_dim=3)
        if result.warnings:
            raise RuntimeError("; ".join(result.warnings))
        grids[result.diagnostics["points_per_axis"]] = result.log_evidence
    (_, coarse), (_, fine) = sorted(grids.items())
    return fine, abs(fine - coarse), {str(k): v for k, v in grids.items()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--models", nargs="+", default=None, help="default: every built-in model of 1-2 parameters"
    )
    p.add_argument("--seeds", type=int, default=20, help="seeds per model (fresh fits)")
    p.add_argument(
        "--mode",
        choices=("refit", "full"),
        default="refit",
        help="full: the full likelihood of --pulsars pulsars (CURN), with the comparison's "
        "full-mode defaults; the model and the red noise together at most three parameters, "
        "for the quadrature",
    )
    p.add_argument("--pulsars", type=int, default=1, help="full mode: the N best pulsars")
    p.add_argument("--label", default="", help="free text copied into the lines")
    args = p.parse_args(argv)
    if args.seeds < 2:
        p.error("--seeds: at least 2")

    import jax

    jax.config.update("jax_enable_x64", True)
    import ptaflow
    from ptaflow.compare import CompareSettings, comparison_posterior, evaluate_model
    from ptaflow.diagnostics import importance_ess, psis_khat
    from ptaflow.models import list_models, load_model

    ptaflow.limit_blas_threads()
    quadrature = _pipeline()._quadrature_log_z
    if args.mode == "full":
        settings = CompareSettings(mode="full", pulsars=args.pulsars)
        n_max = 3 - 2 * args.pulsars  # two red-noise parameters per pulsar
        if n_max < 1:
            p.error("--pulsars: full mode's quadrature takes one pulsar (three parameters)")
    else:
        settings, n_max = CompareSettings(), 2
    names = args.models or [n for n in list_models() if len(load_model(n).param_names) <= n_max]
    too_many = [n for n in names if len(load_model(n).param_names) > n_max]
    if too_many:
        p.error(f"--models {' '.join(too_many)}: more than {n_max} parameters in {args.mode} mode")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    dirty = bool(
        subprocess.run(
            ["git", "status", "--porcelain", "--", "ptaflow"],
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    provenance = {
        "commit": commit,
        "dirty": dirty,
        "ptaflow_version": ptaflow.__version__,
        "jax_version": jax.__version__,
        "python": platform.python_version(),
        "device": str(jax.devices()[0]),
    }
    all_z = {"harmonic": [], "importance": []}
    n_flags = n_runs = 0
    t_all = time.perf_counter()
    for name in names:
        model = load_model(name)
        t0 = time.perf_counter()
        posterior = comparison_posterior(model, settings)
        grids, by_space = None, {}
        if posterior.n_dim == 3:
            truth, truth_err, grids = _quadrature_3d(posterior)
        else:
            truth, truth_err = quadrature(posterior, by_space)
        runs = []
        for seed in range(args.seeds):
            evaluated = evaluate_model(model, dataclasses.replace(settings, seed=seed))
            outcome, fit = evaluated.outcome, evaluated.fit
            run = {
                "seed": seed,
                "status": outcome.status,
                "reason": outcome.reason,
                "khat": outcome.khat,
                # the flow's own draws alone (the proposal's khat above includes the component)
                "khat_flow_draws": psis_khat(fit.log_weights[: fit.n_flow]) if fit else math.nan,
                # how even the weights are: Kish ESS / n and the largest weight over the mean
                "ess_fraction": importance_ess(fit.log_weights) / fit.log_weights.size
                if fit
                else math.nan,
                "max_weight_ratio": _max_weight_ratio(fit.log_weights) if fit else math.nan,
                "wall_s": round(outcome.wall_time_s, 2),
            }
            for est, value, err in (
                ("harmonic", outcome.log_z_harmonic, outcome.log_z_harmonic_err),
                ("importance", outcome.log_z_importance, outcome.log_z_importance_err),
            ):
                z = (value - truth) / math.hypot(err, truth_err)
                run[f"ln_Z_{est}"], run[f"ln_Z_{est}_err"], run[f"z_{est}"] = value, err, z
                all_z[est].append(z)
            runs.append(run)
            n_flags += outcome.status != "ok"
            n_runs += 1
        row = {
            "case": f"{args.mode}-calibration",
            "model": name,
            "n_psr": args.pulsars if args.mode == "full" else None,
            "n_dim": posterior.n_dim,
            "n_seeds": args.seeds,
            "ln_Z_quadrature": truth,
            "ln_Z_quadrature_err": truth_err,
            "ln_Z_quadrature_by_points_per_axis": grids,
            "ln_Z_quadrature_by_space": by_space or None,
            "rms_z_harmonic": _rms([r["z_harmonic"] for r in runs]),
            "rms_z_importance": _rms([r["z_importance"] for r in runs]),
            "flagged": sum(r["status"] != "ok" for r in runs),
            "khat_max": max(r["khat"] for r in runs),
            "khat_below_0_5": sum(r["khat"] < 0.5 for r in runs),
            "khat_median": statistics.median(r["khat"] for r in runs),
            "max_weight_ratio_max": max(r["max_weight_ratio"] for r in runs),
            "runs": runs,
            "wall_s": round(time.perf_counter() - t0, 2),
            "label": args.label,
            "provenance": provenance,
        }
        print(json.dumps(row), flush=True)
    print(
        json.dumps(
            {
                "case": f"{args.mode}-calibration-summary",
                "models": names,
                "n_seeds": args.seeds,
                "rms_z_harmonic": _rms(all_z["harmonic"]),
                "rms_z_importance": _rms(all_z["importance"]),
                "flag_fraction": n_flags / n_runs,
                "wall_s": round(time.perf_counter() - t_all, 2),
                "label": args.label,
                "provenance": provenance,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
