"""Posterior benchmark: flow vs long NUTS (accuracy) and wall time to a converged posterior.

For each correlation (CURN, HD), on the N best NG15 pulsars by ptaflow's ranking rule from the
shipped reduced cache, with a power-law common process (2 N + 2 parameters):

1. time from the data cache to a converged flow with weighted samples (compilation included);
2. a long NUTS run (dense mass, several chains) on the same z-space target;
3. the largest 1-D Hellinger distance H (not H^2) between the importance-weighted flow
   posterior and NUTS, with the noise floor for those sample sizes, and the Pareto khat;
4. time to the same effective sample size: flow (training + sampling), NUTS (from its ESS)
   and, with --ptmcmc, enterprise + PTMCMCSampler on the same pulsars from ../shared/data.

Prints one JSON object per case; writes results (HDF5) and corner / spectrum PNGs to
--out-dir. Example:

    .venv/bin/python benchmarks/posterior.py --corr curn hd --ptmcmc
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import ptaflow  # noqa: F401  (first: single-threaded OpenBLAS)

REPO = pathlib.Path(__file__).resolve().parents[1]


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corr", nargs="+", default=["curn", "hd"], choices=["curn", "hd"])
    p.add_argument("--pulsars", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=3000, help="flow training: max steps")
    p.add_argument("--batch", type=int, default=256, help="flow training: samples per step")
    p.add_argument("--patience", type=int, help="flow training: early-stopping patience")
    p.add_argument("--min-delta", type=float, help="flow training: improvement that counts [nat]")
    p.add_argument("--flow-samples", type=int, default=50000)
    p.add_argument("--nuts-warmup", type=int, default=1000)
    p.add_argument("--nuts-samples", type=int, default=3000, help="per chain")
    p.add_argument("--nuts-chains", type=int, default=4)
    p.add_argument("--no-nuts", action="store_true", help="flow timing only")
    p.add_argument("--bins", type=int, default=30, help="histogram bins for Hellinger")
    p.add_argument("--ptmcmc", action="store_true", help="also time enterprise + PTMCMC")
    p.add_argument("--ptmcmc-iterations", type=int, default=20000)
    p.add_argument(
        "--shared",
        type=pathlib.Path,
        default=REPO.parent / "shared" / "data" / "ng15",
        help="NG15 Feather pulsars and noise_dict_15yr.json (for --ptmcmc)",
    )
    p.add_argument("--out-dir", type=pathlib.Path, default=REPO / "benchmarks" / "out")
    return p.parse_args(argv)


def _ptmcmc(args, post, tspan, correlation, out_dir):
    import numpy as np
    from numpyro.diagnostics import effective_sample_size

    from ptaflow.likelihood import PowerLawProcess
    from ptaflow.ptmcmc import make_enterprise_pta, run_ptmcmc

    names = list(post.likelihood.psr_names)
    paths = [args.shared / f"{n}.feather" for n in names]
    common_priors = {
        "gw_log10_A": post.prior.priors[-2],
        "gw_gamma": post.prior.priors[-1],
    }
    pta = make_enterprise_pta(
        [str(p) for p in paths],
        args.shared / "noise_dict_15yr.json",
        common=PowerLawProcess(),
        correlation=correlation,
        tspan=tspan,
        common_priors=common_priors,
    )
    run = run_ptmcmc(
        pta, n_samples=args.ptmcmc_iterations, outdir=out_dir / f"ptmcmc_{correlation}"
    )
    ess = effective_sample_size(np.asarray(run.samples)[None])
    return {
        "iterations": run.n_iterations,
        "wall_s": run.wall_time_s,
        "ess_min": float(np.min(ess)),
        "s_per_ess": run.wall_time_s / float(np.min(ess)),
        "acceptance": float(run.acceptance_rate),
    }


def _case(args, correlation) -> dict:
    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    from ptaflow.diagnostics import hellinger_noise_floor
    from ptaflow.flows import TrainConfig
    from ptaflow.inference import fit_posterior, hellinger_table, mcmc_result, nuts_baseline
    from ptaflow.plots import plot_corner, plot_spectrum, spectrum_draws
    from ptaflow.posterior import make_posterior
    from ptaflow.results import save_posterior

    out_dir = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    post = make_posterior(model="powerlaw", pulsars=args.pulsars, correlation=correlation)
    extra = {"patience": args.patience, "min_delta": args.min_delta}
    cfg = TrainConfig(
        max_steps=args.steps,
        num_samples=args.batch,
        **{k: v for k, v in extra.items() if v is not None},
    )
    fit = fit_posterior(
        post,
        seed=args.seed,
        train_config=cfg,
        n_samples=args.flow_samples,
        progress=sys.stderr.isatty(),
    )
    t_flow = time.perf_counter() - t0
    result = fit.to_result(benchmark="posterior")
    save_posterior(result, out_dir / f"flow_{correlation}.h5")
    row = {
        "case": f"posterior_{correlation}_{args.pulsars}psr",
        "device": jax.devices()[0].device_kind,
        "backend": jax.default_backend(),
        "n_dim": post.n_dim,
        "flow_wall_s": round(t_flow, 2),
        "flow_train_steps": fit.info.steps,
        "flow_converged": fit.info.converged,
        "flow_ess": round(fit.ess, 1),
        "flow_ess_fraction": round(fit.ess / args.flow_samples, 4),
        "khat": round(fit.khat, 3),
    }
    draws = fit.resample(jax.random.key(5), 4000)[:, -2:]
    from ptaflow.likelihood import load_free_spectrum_densities

    dens = load_free_spectrum_densities()
    model = post.likelihood.common
    plot_spectrum(
        {
            f"flow ({correlation.upper()})": spectrum_draws(
                model, draws, dens.freqs[:14], dens.tspan
            )
        },
        dens,
        path=out_dir / f"spectrum_{correlation}.png",
    )
    if not args.no_nuts:
        nuts = nuts_baseline(
            post,
            num_chains=args.nuts_chains,
            num_warmup=args.nuts_warmup,
            num_samples=args.nuts_samples,
        )
        ref = mcmc_result(post, nuts)
        save_posterior(ref, out_dir / f"nuts_{correlation}.h5")
        h = hellinger_table(result, ref, bins=args.bins)
        worst = max(h, key=h.get)
        nuts_ess = float(np.min(nuts.ess))
        row.update(
            {
                "nuts_wall_s": round(nuts.wall_time_s, 2),
                "nuts_ess_min": round(nuts_ess, 1),
                "nuts_rhat_max": round(float(np.max(nuts.rhat)), 4),
                "nuts_divergent": int(nuts.n_divergent),
                "hellinger_max": round(h[worst], 4),
                "hellinger_worst_param": worst,
                "hellinger_common": {k: round(h[k], 4) for k in post.common_names},
                "hellinger_noise_floor_99": round(
                    hellinger_noise_floor(fit.ess, nuts_ess, n_bins=args.bins), 4
                ),
                "bins": args.bins,
                "flow_s_per_1000_ess": round(1000 * t_flow / fit.ess, 2),
                "nuts_s_per_1000_ess": round(1000 * nuts.wall_time_s / nuts_ess, 2),
            }
        )
        plot_corner(
            [result.samples[:, -6:], ref.samples[:, -6:]],
            param_names=post.param_names[-6:],
            labels=["flow (weighted)", "NUTS"],
            weights=[result.weights, None],
            path=out_dir / f"corner_{correlation}.png",
        )
    if args.ptmcmc:
        pt = _ptmcmc(args, post, post.likelihood.tspan, correlation, out_dir)
        row["ptmcmc"] = pt
        row["ptmcmc_s_per_1000_ess"] = round(1000 * pt["s_per_ess"], 2)
    return row


def main(argv=None) -> int:
    args = _parse(argv)
    for corr in args.corr:
        print(json.dumps(_case(args, corr)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
