"""Refit-mode model comparison against dynesty: ln Z and ln B side by side, with wall times.

Runs `ptaflow.compare` on the given models (default the seed paper's ten, preset "seed10") in
refit mode on the shipped NG15 free-spectrum densities, then dynesty's static nested sampler
on the same likelihood and prior for each model, and prints one JSON object per model and a
summary: ln Z from both ptaflow estimators and dynesty, ln B against the reference from the
learned harmonic mean and from dynesty, their difference in nat and in combined sigma.

    .venv/bin/python benchmarks/compare.py [--models seed10] [--n-live 500]
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time

import ptaflow  # noqa: F401  (first: single-threaded OpenBLAS)

REPO = pathlib.Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["seed10"])
    p.add_argument("--reference", default="smbhb")
    p.add_argument("--n-live", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", type=pathlib.Path, default=REPO / "benchmarks" / "out" / "refit")
    args = p.parse_args(argv)

    import jax

    jax.config.update("jax_enable_x64", True)
    from ptaflow.compare import CompareSettings, compare
    from ptaflow.nested import nested_sampling_evidence
    from ptaflow.posterior import make_refit_posterior

    t0 = time.perf_counter()
    table = compare(
        args.models,
        settings=CompareSettings(mode="refit", reference=args.reference, seed=args.seed),
        out_dir=args.out_dir,
        log=lambda m: print(m, file=sys.stderr, flush=True),
    )
    t_ptaflow = time.perf_counter() - t0
    nested = {}
    for o in table.outcomes:
        nested[o.name] = nested_sampling_evidence(
            make_refit_posterior(o.name), n_live=args.n_live, seed=args.seed
        )
    ref_ns = nested[args.reference]
    bf = table.bayes_factors("harmonic")
    worst = 0.0
    for o in table.outcomes:
        ns = nested[o.name]
        ln_b_ns = ns.log_evidence - ref_ns.log_evidence
        err_ns = (
            0.0
            if o.name == args.reference
            else math.hypot(ns.log_evidence_err, ref_ns.log_evidence_err)
        )
        ln_b, err = bf[o.name]
        diff = ln_b - ln_b_ns
        sigma = math.hypot(err, err_ns)
        if o.name != args.reference:
            worst = max(worst, abs(diff))
        print(
            json.dumps(
                {
                    "model": o.name,
                    "status": o.status,
                    "ln_Z_harmonic": round(o.log_z_harmonic, 4),
                    "ln_Z_harmonic_err": round(o.log_z_harmonic_err, 4),
                    "ln_Z_importance": round(o.log_z_importance, 4),
                    "ln_Z_importance_err": round(o.log_z_importance_err, 4),
                    "ln_Z_dynesty": round(ns.log_evidence, 4),
                    "ln_Z_dynesty_err": round(ns.log_evidence_err, 4),
                    "ln_B": round(ln_b, 4),
                    "ln_B_err": round(err, 4),
                    "ln_B_dynesty": round(ln_b_ns, 4),
                    "ln_B_dynesty_err": round(err_ns, 4),
                    "ln_B_diff": round(diff, 4),
                    "ln_B_diff_sigma": round(abs(diff) / sigma, 2) if sigma > 0 else 0.0,
                    "ptaflow_s": round(o.wall_time_s, 1),
                    "dynesty_s": round(ns.wall_time_s, 1),
                    "dynesty_calls": ns.n_calls,
                }
            ),
            flush=True,
        )
    print(
        json.dumps(
            {
                "summary": "refit_seed10_vs_dynesty",
                "reference": args.reference,
                "max_abs_ln_B_diff": round(worst, 4),
                "ptaflow_total_s": round(t_ptaflow, 1),
                "dynesty_total_s": round(sum(n.wall_time_s for n in nested.values()), 1),
                "device": jax.devices()[0].device_kind,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
