"""Model comparison against independent evidences: ln Z and ln B side by side, with wall times.

Runs `ptaflow.compare` on the given models, then a baseline on the same posterior of each
model, and prints one JSON object per model and a summary: ln Z from both ptaflow estimators
(learned harmonic mean, importance sampling) and from the baseline, ln B against the
reference from ptaflow's learned harmonic mean and from the baseline, their difference in nat
and in combined sigma, wall times.

- `--mode refit` (default): the models' parameters on the shipped NG15 free-spectrum
  densities (default the seed paper's ten, preset "seed10"); baseline dynesty.
- `--mode full`: per-pulsar power-law red noise + the model's common process (CURN or HD) on
  the N best pulsars of the shipped reduced NG15 statistics; baseline plain NUTS in z space
  (`ptaflow.baselines.mcmc.nuts_baseline`) with the learned harmonic mean on its chains, or
  dynesty (`--baseline dynesty`).

    .venv/bin/python benchmarks/compare.py [--models seed10] [--n-live 500]
    .venv/bin/python benchmarks/compare.py --mode full --pulsars 10 --correlation hd \
        --models smbhb powerlaw --baseline nuts --nuts-chains 4 --nuts-samples 2000
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time

import ptaflow  # noqa: E402

ptaflow.limit_blas_threads()  # JAX's CPU LAPACK calls OpenBLAS: one thread

REPO = pathlib.Path(__file__).resolve().parents[1]


def _pulsars(values: list[str]) -> int | tuple[str, ...]:
    return int(values[0]) if len(values) == 1 and values[0].isdigit() else tuple(values)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mode", choices=("refit", "full"), default="refit")
    p.add_argument("--models", nargs="+", default=["seed10"])
    p.add_argument("--reference", default="smbhb")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", type=pathlib.Path, default=None, help="default benchmarks/out/MODE")
    full = p.add_argument_group("full mode")
    full.add_argument("--pulsars", nargs="+", default=["10"], help="N best pulsars, or names")
    full.add_argument("--correlation", choices=("curn", "hd"), default="hd")
    full.add_argument("--n-rn", type=int, default=30, help="red-noise frequencies")
    full.add_argument("--n-gw", type=int, default=14, help="common-process frequencies")
    full.add_argument("--max-steps", type=int, default=None, help="flow training steps (cap)")
    base = p.add_argument_group("baseline")
    base.add_argument(
        "--baseline",
        choices=("nuts", "dynesty"),
        default=None,
        help="default: dynesty (refit mode), nuts (full mode)",
    )
    base.add_argument("--n-live", type=int, default=500, help="dynesty live points")
    base.add_argument("--dynesty-sample", default="auto", help="dynesty sampling method")
    base.add_argument("--nuts-chains", type=int, default=4)
    base.add_argument("--nuts-warmup", type=int, default=1000)
    base.add_argument("--nuts-samples", type=int, default=2000, help="kept draws per chain")
    return p


def _nuts_evidence(posterior, args, seed: int, temperature: float) -> dict:
    """Plain NUTS on the z-space target, then the learned harmonic mean on its draws.

    NUTS gives a few long chains: the harmonic-mean flow trains on the first half of the
    chains and its error comes from 20 contiguous blocks of the other half (each hundreds of
    draws, far longer than a NUTS autocorrelation time), as for any single long chain.
    """
    import jax

    from ptaflow.baselines.mcmc import nuts_baseline
    from ptaflow.evidence import estimate_evidence_harmonic

    t0 = time.perf_counter()
    chains = nuts_baseline(
        posterior,
        seed=seed,
        num_chains=args.nuts_chains,
        num_warmup=args.nuts_warmup,
        num_samples=args.nuts_samples,
    )
    lhm = estimate_evidence_harmonic(
        jax.random.key(seed + 1),
        chains.flat_samples,
        chains.flat_log_prob,
        temperature=temperature,
    )
    return {
        "log_z": float(lhm.log_evidence),
        "log_z_err": float(lhm.log_evidence_err),
        "wall_s": time.perf_counter() - t0,
        "extra": {
            "nuts_s": round(chains.wall_time_s, 1),
            "nuts_ess_min": round(float(chains.ess.min()), 1),
            "nuts_rhat_max": round(float(chains.rhat.max()), 4),
            "nuts_divergent": int(chains.n_divergent),
            "nuts_grad_evals": int(chains.num_steps),
            "nuts_lhm_warnings": list(lhm.warnings),
        },
    }


def _dynesty_evidence(posterior, args, seed: int) -> dict:
    from ptaflow.baselines.nested import nested_sampling_evidence

    ns = nested_sampling_evidence(
        posterior, n_live=args.n_live, seed=seed, sample=args.dynesty_sample
    )
    return {
        "log_z": ns.log_evidence,
        "log_z_err": ns.log_evidence_err,
        "wall_s": ns.wall_time_s,
        "extra": {"dynesty_calls": ns.n_calls},
    }


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    baseline = args.baseline or ("dynesty" if args.mode == "refit" else "nuts")
    out_dir = args.out_dir or REPO / "benchmarks" / "out" / args.mode

    import jax

    jax.config.update("jax_enable_x64", True)
    from ptaflow.compare import CompareSettings, compare, comparison_posterior
    from ptaflow.flows import TrainConfig

    if args.mode == "refit":
        settings = CompareSettings(mode="refit", reference=args.reference, seed=args.seed)
    else:
        train = TrainConfig() if args.max_steps is None else TrainConfig(max_steps=args.max_steps)
        settings = CompareSettings(
            mode="full",
            correlation=args.correlation,
            pulsars=_pulsars(args.pulsars),
            n_rn=args.n_rn,
            n_gw=args.n_gw,
            reference=args.reference,
            seed=args.seed,
            train=train,
        )

    t0 = time.perf_counter()
    table = compare(
        args.models,
        settings=settings,
        out_dir=out_dir,
        log=lambda m: print(m, file=sys.stderr, flush=True),
    )
    t_ptaflow = time.perf_counter() - t0
    base = {}
    for i, o in enumerate(table.outcomes):
        print(f"baseline ({baseline}): {o.name}", file=sys.stderr, flush=True)
        post = comparison_posterior(o.name, settings)
        seed = args.seed + 1000 * (i + 1) if baseline == "nuts" else args.seed
        if baseline == "nuts":
            base[o.name] = _nuts_evidence(post, args, seed, settings.temperature or 0.9)
        else:
            base[o.name] = _dynesty_evidence(post, args, seed)
    ref = base[args.reference]
    bf = table.bayes_factors("harmonic")
    worst, worst_sigma = 0.0, 0.0
    for o in table.outcomes:
        b = base[o.name]
        ln_b_base = b["log_z"] - ref["log_z"]
        err_base = 0.0 if o.name == args.reference else math.hypot(b["log_z_err"], ref["log_z_err"])
        ln_b, err = bf[o.name]
        diff = ln_b - ln_b_base
        sigma = math.hypot(err, err_base)
        n_sigma = abs(diff) / sigma if sigma > 0 else 0.0
        if o.name != args.reference:
            worst, worst_sigma = max(worst, abs(diff)), max(worst_sigma, n_sigma)
        print(
            json.dumps(
                {
                    "model": o.name,
                    "status": o.status,
                    "ln_Z_harmonic": round(o.log_z_harmonic, 4),
                    "ln_Z_harmonic_err": round(o.log_z_harmonic_err, 4),
                    "ln_Z_importance": round(o.log_z_importance, 4),
                    "ln_Z_importance_err": round(o.log_z_importance_err, 4),
                    f"ln_Z_{baseline}": round(b["log_z"], 4),
                    f"ln_Z_{baseline}_err": round(b["log_z_err"], 4),
                    "ln_B": round(ln_b, 4),
                    "ln_B_err": round(err, 4),
                    f"ln_B_{baseline}": round(ln_b_base, 4),
                    f"ln_B_{baseline}_err": round(err_base, 4),
                    "ln_B_diff": round(diff, 4),
                    "ln_B_diff_sigma": round(n_sigma, 2),
                    "ptaflow_s": round(o.wall_time_s, 1),
                    f"{baseline}_s": round(b["wall_s"], 1),
                    **b["extra"],
                }
            ),
            flush=True,
        )
    summary = {
        "summary": f"{args.mode}_vs_{baseline}",
        "reference": args.reference,
        "models": [o.name for o in table.outcomes],
        "max_abs_ln_B_diff": round(worst, 4),
        "max_ln_B_diff_sigma": round(worst_sigma, 2),
        "ptaflow_total_s": round(t_ptaflow, 1),
        f"{baseline}_total_s": round(sum(b["wall_s"] for b in base.values()), 1),
        "device": jax.devices()[0].device_kind,
    }
    if args.mode == "full":
        names = table.settings.pulsars
        summary.update(
            pulsars=names if isinstance(names, int) else list(names),
            correlation=settings.correlation,
            n_rn=settings.n_rn,
            n_gw=settings.n_gw,
        )
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
