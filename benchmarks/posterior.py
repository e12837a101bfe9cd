"""Posterior benchmark: flow vs long NUTS (accuracy) and wall time to a converged posterior.

For each correlation (CURN, HD), on the N best NG15 pulsars by ptaflow's ranking rule from the
shipped reduced cache, with a power-law common process (2 N + 2 parameters):

1. time from the data cache to a converged flow with weighted samples (compilation included);
2. a long MCMC reference on the same z-space target: plain NUTS (dense mass, several chains),
   or with --reference neutra NUTS in the latent space of an independently trained flow given
   by --neutra-flow (e.g. the CURN flow for the HD posterior: an exact sampler whatever the
   flow, and one that needs far fewer likelihood gradients than plain NUTS on a CPU);
3. the largest 1-D Hellinger distance H (not H^2) between the flow posterior and the
   reference, for the flow's own samples ("raw") and for the importance-weighted ones, with
   the noise floor for those sample sizes (from the reference's smallest ESS, and for each
   parameter from that parameter's ESS), the 2-D H of the SGWB pair, and the Pareto khat;
4. time to the same effective sample size: flow (training + sampling), NUTS (from its ESS)
   and, with --ptmcmc, enterprise + PTMCMCSampler on the same pulsars from ../shared/data.

Prints one JSON object per case; writes results (HDF5) and corner / spectrum PNGs to
--out-dir. `--devices all` trains on, and runs the NUTS chains over, every GPU, or every core
of a CPU (presented to JAX as CPU devices; XLA runs one computation on one core). Examples:

    .venv/bin/python benchmarks/posterior.py --corr curn hd --ptmcmc
    .venv/bin/python benchmarks/posterior.py --corr curn --devices all
    .venv/bin/python benchmarks/posterior.py --corr hd --devices all --reference neutra \
        --neutra-flow benchmarks/out/flow_curn.h5
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

import ptaflow  # noqa: E402

ptaflow.limit_blas_threads()  # JAX's CPU LAPACK calls OpenBLAS: one thread

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
    p.add_argument(
        "--refine-rounds",
        type=int,
        help="flow training: forward-KL refinement rounds (default TrainConfig's; 0: none)",
    )
    p.add_argument(
        "--refine-patience",
        type=int,
        help="flow training: stop refining after this many rounds without a better pool ESS",
    )
    p.add_argument(
        "--init",
        choices=("laplace", "prior"),
        help="flow training: the start (TrainConfig.init; default TrainConfig's)",
    )
    p.add_argument("--flow-samples", type=int, default=50000)
    p.add_argument(
        "--flow-family", choices=("maf", "coupling"), help="flow architecture (FlowConfig.family)"
    )
    p.add_argument("--flow-layers", type=int, help="spline layers (FlowConfig.flow_layers)")
    p.add_argument(
        "--defensive",
        type=float,
        help="share of the importance samples from the exact noise-only component (default "
        "ptaflow's, DEFENSIVE_FRACTION; 0: flow draws alone). With --flow-from a stored flow "
        "without one, that share of noise-only draws is added to its samples",
    )
    p.add_argument("--nuts-warmup", type=int, default=1000)
    p.add_argument("--nuts-samples", type=int, default=3000, help="per chain")
    p.add_argument("--nuts-chains", type=int, default=4)
    p.add_argument("--no-nuts", action="store_true", help="flow timing only")
    p.add_argument(
        "--reference",
        choices=["nuts", "neutra"],
        default="nuts",
        help="MCMC reference: plain NUTS, or NeuTra with the flow of --neutra-flow",
    )
    p.add_argument(
        "--neutra-flow",
        type=pathlib.Path,
        help="a flow result (HDF5 written by this script or ptaflow) that preconditions NeuTra",
    )
    p.add_argument(
        "--flow-from",
        type=pathlib.Path,
        help="reuse a flow result (HDF5 written by this script) instead of training; its "
        "recorded training time and diagnostics are reported",
    )
    p.add_argument(
        "--reference-from",
        type=pathlib.Path,
        help="reuse a reference result (HDF5 written by this script) instead of sampling",
    )
    p.add_argument(
        "--devices",
        default="1",
        help="'all' or n: devices for flow training and NUTS chains (CPU: cores)",
    )
    p.add_argument("--bins", type=int, default=30, help="histogram bins for Hellinger")
    p.add_argument(
        "--bins-2d", type=int, default=10, help="bins per axis for the SGWB pair's 2-D Hellinger"
    )
    p.add_argument("--ptmcmc", action="store_true", help="also time enterprise + PTMCMC")
    p.add_argument("--ptmcmc-iterations", type=int, default=20000)
    p.add_argument(
        "--shared",
        type=pathlib.Path,
        default=REPO.parent / "shared" / "data" / "ng15",
        help="NG15 Feather pulsars and noise_dict_15yr.json (for --ptmcmc)",
    )
    p.add_argument("--out-dir", type=pathlib.Path, default=REPO / "benchmarks" / "out")
    p.add_argument(
        "--progress", action="store_true", help="training progress bar on stderr (default: a tty)"
    )
    args = p.parse_args(argv)
    if args.devices != "all" and not (args.devices.isdigit() and int(args.devices) >= 1):
        p.error(f"--devices {args.devices}: expected 'all' or a positive integer")
    if args.reference == "neutra" and args.neutra_flow is None and args.reference_from is None:
        p.error("--reference neutra needs --neutra-flow (or --reference-from)")
    if len(args.corr) > 1 and (args.reference_from or args.neutra_flow or args.flow_from):
        p.error("--flow-from, --reference-from and --neutra-flow apply to one --corr at a time")
    return args


def _ptmcmc(args, post, tspan, correlation, out_dir):
    import numpy as np
    from numpyro.diagnostics import effective_sample_size

    from ptaflow.baselines.ptmcmc import make_enterprise_pta, run_ptmcmc
    from ptaflow.likelihood import PowerLawProcess

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


def _stored_reference_ess(ref, path):
    """Per-parameter bulk ESS of a stored MCMC reference, from its chains.

    mcmc_result stores the chains' draws one chain after another; ranks make the bulk ESS
    the same in the physical parameters as in z.
    """
    from ptaflow.diagnostics import rhat_and_ess

    n_chains = ref.settings.get("num_chains")
    if not n_chains or ref.samples.shape[0] % int(n_chains):
        raise SystemExit(f"{path}: no chain layout (settings num_chains) to recompute ESS")
    n_chains = int(n_chains)
    chains = ref.samples.reshape(n_chains, ref.samples.shape[0] // n_chains, -1)
    return rhat_and_ess(chains)[1]


def _reference(args, post, correlation, out_dir, devices):
    """(reference result, its per-parameter ESS, wall seconds, extra row fields)."""
    import jax
    import numpy as np

    from ptaflow.baselines.mcmc import mcmc_result, nuts_baseline
    from ptaflow.flows import FlowConfig, flow_from_bytes
    from ptaflow.results import load_posterior, save_posterior
    from ptaflow.sampling import run_neutra

    if args.reference_from is not None:
        ref = load_posterior(args.reference_from)
        if tuple(ref.param_names) != tuple(post.param_names):
            raise SystemExit(f"{args.reference_from}: other parameters than this posterior")
        d = ref.diagnostics
        extra = {
            "reference_file": str(args.reference_from),
            "reference_method": ref.settings.get("method"),
        }
        return ref, _stored_reference_ess(ref, args.reference_from), float(d["wall_time_s"]), extra
    chain_method = "parallel" if devices != 1 else "vectorized"
    if args.reference == "nuts":
        chains = nuts_baseline(
            post,
            num_chains=args.nuts_chains,
            num_warmup=args.nuts_warmup,
            num_samples=args.nuts_samples,
            chain_method=chain_method,
        )
        extra = {"reference_method": "nuts"}
    else:
        pre = load_posterior(args.neutra_flow)
        if tuple(pre.param_names) != tuple(post.param_names) or pre.flow_bytes is None:
            raise SystemExit(f"{args.neutra_flow}: no flow over this posterior's parameters")
        cfg = {k: v for k, v in pre.flow_config.items() if k != "n_dim"}
        flow = flow_from_bytes(pre.flow_bytes, post.n_dim, FlowConfig(**cfg))
        chains = run_neutra(
            jax.random.key(args.seed + 7),
            post.log_prob,
            flow,
            num_chains=args.nuts_chains,
            num_warmup=args.nuts_warmup,
            num_samples=args.nuts_samples,
            chain_method=chain_method,
        )
        extra = {
            "reference_method": "neutra",
            "neutra_flow": str(args.neutra_flow),
            "neutra_flow_target": pre.settings.get("correlation"),
        }
    ref = mcmc_result(post, chains)
    save_posterior(ref, out_dir / f"{args.reference}_{correlation}.h5")
    extra.update(
        {
            "reference_rhat_max": round(float(np.max(chains.rhat)), 4),
            "reference_divergent": int(chains.n_divergent),
            "reference_chains": args.nuts_chains,
            "reference_samples_per_chain": args.nuts_samples,
            "reference_steps_per_draw": round(chains.steps_per_sample, 1),
            "reference_steps_per_ess": round(chains.num_steps / float(np.min(chains.ess)), 1),
        }
    )
    return ref, np.asarray(chains.ess), chains.wall_time_s, extra


_REFINE_KEYS = ("refine_rounds", "refine_ess_fraction_median", "refine_khat_median")


def _add_defensive(args, post, result):
    """A stored flow-only result joined by noise-only draws: (theta, log_weights, n_flow, extra).

    The flow's density at its own draws comes back from the stored weights
    (ln q = ln L + ln pi + ln|J| - ln w); the noise-only draws and the mixture's weights are
    those of `ptaflow.proposal.defensive_draws`.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from ptaflow.flows import FlowConfig, flow_from_bytes
    from ptaflow.noise_only import noise_only_posterior
    from ptaflow.proposal import DEFENSIVE_FRACTION, defensive_draws

    share = DEFENSIVE_FRACTION if args.defensive is None else args.defensive
    n_flow = result.samples.shape[0]
    if result.log_weights is None:
        raise SystemExit(f"{args.flow_from}: no importance weights (not a flow result)")
    if share == 0 or result.flow_bytes is None:
        return result.samples, result.log_weights, n_flow, {}
    t0 = time.perf_counter()
    cfg = {k: v for k, v in result.flow_config.items() if k != "n_dim"}
    flow = flow_from_bytes(result.flow_bytes, post.n_dim, FlowConfig(**cfg))
    z = post.to_unconstrained(jnp.asarray(result.samples))
    log_det = np.asarray(post.prior.from_unconstrained(z)[1])
    lp = result.log_prior + log_det
    log_q = result.log_likelihood + lp - result.log_weights
    noise = noise_only_posterior(post)
    n_noise = max(1, round(share / (1 - share) * n_flow))
    key = jax.random.key(args.seed + 11)
    z, log_q, ll, lp = defensive_draws(
        post, flow, noise, (np.asarray(z), log_q, result.log_likelihood, lp), key, n_noise
    )
    lw = ll + lp - log_q
    extra = {"noise_only": noise, "defensive_s": time.perf_counter() - t0}
    return np.asarray(post.to_theta(jnp.asarray(z))), lw, n_flow, extra


def _tail(post, theta, weights, ref_samples, log_z, log_z0):
    """Mass of the common amplitude's lowest decade: the exact Savage-Dickey value where the
    signal is undetectable there, Pi(log10_A < lo + 1) Z_0 / Z, against flow and reference."""
    import jax.numpy as jnp
    import numpy as np

    name = post.common_names[0]
    i = post.param_names.index(name)
    prior = post.prior.priors[post.prior.block_names.index((name,))]
    lo = prior.bounds()[0][0]
    a = lo + 1.0
    x = np.linspace(lo, a, 2001)  # prior mass below a, by the trapezoid rule
    mass = float(np.trapezoid(np.exp(np.asarray(prior.log_prob(jnp.asarray(x)))), x))
    w = weights / weights.sum()
    out = {
        "param": name,
        "below": a,
        "savage_dickey": round(mass * float(np.exp(log_z0 - log_z)), 6),
        "flow_weighted": round(float(np.sum(w[theta[:, i] < a])), 6),
    }
    if ref_samples is not None:
        out["reference"] = round(float(np.mean(ref_samples[:, i] < a)), 6)
    return out


def _case(args, correlation) -> dict:
    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    from ptaflow.diagnostics import hellinger_2d, hellinger_noise_floor, max_hellinger
    from ptaflow.flows import TrainConfig
    from ptaflow.inference import fit_posterior
    from ptaflow.plots import plot_corner, plot_spectrum, spectrum_draws
    from ptaflow.posterior import make_posterior
    from ptaflow.results import load_posterior, save_posterior

    devices = args.devices if args.devices == "all" else int(args.devices)
    n_devices = len(jax.local_devices()) if devices == "all" else devices
    out_dir = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    post = make_posterior(model="powerlaw", pulsars=args.pulsars, correlation=correlation)
    if args.flow_from is not None:
        result = load_posterior(args.flow_from)
        if tuple(result.param_names) != tuple(post.param_names):
            raise SystemExit(f"{args.flow_from}: other parameters than this posterior")
        diag = result.diagnostics
        t_flow = float(diag["wall_time_s"])
        steps, converged = diag.get("train_steps"), diag.get("train_converged")
        refine = {k: diag.get(f"train_{k}") for k in _REFINE_KEYS}
        if "n_flow_draws" in diag:  # already weighted with its own proposal
            theta, log_w, n_flow = result.samples, result.log_weights, int(diag["n_flow_draws"])
            log_z0 = diag.get("noise_only_log_evidence")
        else:
            theta, log_w, n_flow, added = _add_defensive(args, post, result)
            t_flow += added.get("defensive_s", 0.0)
            log_z0 = added["noise_only"].log_evidence if "noise_only" in added else None
    else:
        extra = {
            "patience": args.patience,
            "min_delta": args.min_delta,
            "refine_rounds": args.refine_rounds,
            "refine_patience": args.refine_patience,
            "init": args.init,
        }
        cfg = TrainConfig(
            max_steps=args.steps,
            num_samples=args.batch,
            devices=None if devices == 1 else devices,
            **{k: v for k, v in extra.items() if v is not None},
        )
        from ptaflow.flows import FlowConfig

        arch = {"family": args.flow_family, "flow_layers": args.flow_layers}
        fit = fit_posterior(
            post,
            seed=args.seed,
            flow_config=FlowConfig(**{k: v for k, v in arch.items() if v is not None}),
            train_config=cfg,
            n_samples=args.flow_samples,
            defensive=args.defensive,
            progress=args.progress or sys.stderr.isatty(),
        )
        t_flow = time.perf_counter() - t0
        result = fit.to_result(benchmark="posterior")
        save_posterior(result, out_dir / f"flow_{correlation}.h5")
        steps, converged = fit.info.steps, fit.info.converged
        summary = fit.info.to_dict()
        refine = {k: summary[k] for k in _REFINE_KEYS}
        theta, log_w, n_flow = result.samples, result.log_weights, fit.n_flow_draws
        log_z0 = None if fit.noise_only is None else fit.noise_only.log_evidence
    from scipy.special import logsumexp

    from ptaflow.diagnostics import importance_ess, psis_khat

    n_all = theta.shape[0]
    weights = np.exp(log_w - np.max(log_w))
    flow_ess, khat = importance_ess(log_w), psis_khat(log_w)
    log_z = float(logsumexp(log_w) - np.log(n_all))
    raw = theta[:n_flow]  # the flow's own draws, equally weighted
    row = {
        "case": f"posterior_{correlation}_{args.pulsars}psr",
        "device": jax.devices()[0].device_kind,
        "backend": jax.default_backend(),
        "devices": n_devices,
        "n_dim": post.n_dim,
        "flow_file": None if args.flow_from is None else str(args.flow_from),
        "flow_wall_s": round(t_flow, 2),
        "flow_train_steps": steps,
        "flow_converged": converged,
        **{f"flow_{k}": round(v, 3) if isinstance(v, float) else v for k, v in refine.items()},
        "flow_samples": n_flow,
        "noise_only_samples": n_all - n_flow,
        "flow_ess": round(flow_ess, 1),
        "flow_ess_fraction": round(flow_ess / n_all, 4),
        "khat": round(khat, 3),
        "log_evidence_importance": round(log_z, 4),
    }
    if log_z0 is not None:
        row["noise_only_log_evidence"] = round(log_z0, 4)
        row["log_bayes_factor_vs_noise_only"] = round(log_z - log_z0, 4)
    pick = np.random.default_rng(5).choice(n_all, 4000, p=weights / weights.sum())
    draws = theta[pick][:, -2:]
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
        ref, ref_ess_all, ref_wall, ref_extra = _reference(
            args, post, correlation, out_dir, devices
        )
        names, common = post.param_names, post.common_names
        ref_ess = float(np.min(ref_ess_all))
        ess_of = dict(zip(names, ref_ess_all.tolist(), strict=True))
        ess_2d = min(ess_of[k] for k in common)  # the 2-D floor: the SGWB pair's ESS
        table = {}
        for kind, x, w in (("raw", raw, None), ("weighted", theta, weights)):
            h = max_hellinger(x, ref.samples, names, weights_a=w, bins=args.bins)
            worst = max(h, key=h.get)
            n_eff = n_flow if w is None else flow_ess
            idx = [names.index(c) for c in common]
            h2 = hellinger_2d(x[:, idx], ref.samples[:, idx], weights_x=w, bins=args.bins_2d)
            # the floor for each parameter from that parameter's reference ESS
            floor = {k: hellinger_noise_floor(n_eff, ess_of[k], n_bins=args.bins) for k in names}
            table[kind] = {
                "hellinger_max": round(h[worst], 4),
                "hellinger_worst_param": worst,
                "hellinger_worst_param_noise_floor_99": round(floor[worst], 4),
                "hellinger_common_noise_floor_99": {k: round(floor[k], 4) for k in common},
                "above_own_noise_floor": sorted(k for k in names if h[k] > floor[k]),
                "hellinger_common": {k: round(h[k], 4) for k in common},
                "hellinger_2d_common": round(h2, 4),
                "hellinger_2d_noise_floor_99": round(
                    hellinger_noise_floor(n_eff, ess_2d, n_bins=args.bins_2d**2), 4
                ),
                "hellinger_noise_floor_99": round(
                    hellinger_noise_floor(n_eff, ref_ess, n_bins=args.bins), 4
                ),
                "all": {k: round(v, 4) for k, v in h.items()},
            }
        row.update(
            {
                **ref_extra,
                "reference_wall_s": round(ref_wall, 2),
                "reference_ess_min": round(ref_ess, 1),
                "reference_ess_min_param": min(ess_of, key=ess_of.get),
                "reference_ess_common": {k: round(ess_of[k], 1) for k in common},
                "hellinger_raw": table["raw"],
                "hellinger_weighted": table["weighted"],
                "bins": args.bins,
                "bins_2d": args.bins_2d,
                "flow_s_per_1000_ess": round(1000 * t_flow / flow_ess, 2),
                "reference_s_per_1000_ess": round(1000 * ref_wall / ref_ess, 2),
            }
        )
        if log_z0 is not None:
            row["tail"] = _tail(post, theta, weights, ref.samples, log_z, log_z0)
        plot_corner(
            [theta[:, -6:], ref.samples[:, -6:]],
            param_names=post.param_names[-6:],
            labels=["flow (weighted)", row["reference_method"]],
            weights=[weights, None],
            path=out_dir / f"corner_{correlation}.png",
        )
    elif log_z0 is not None:
        row["tail"] = _tail(post, theta, weights, None, log_z, log_z0)
    if args.ptmcmc:
        pt = _ptmcmc(args, post, post.likelihood.tspan, correlation, out_dir)
        row["ptmcmc"] = pt
        row["ptmcmc_s_per_1000_ess"] = round(1000 * pt["s_per_ess"], 2)
    return row


def main(argv=None) -> int:
    args = _parse(argv)
    if args.devices != "1":
        # XLA runs one computation on one CPU core: present the cores as CPU devices (before
        # JAX starts; on a GPU machine this only adds CPU devices).
        os.environ.setdefault("JAX_NUM_CPU_DEVICES", str(len(os.sched_getaffinity(0))))
    for corr in args.corr:
        print(json.dumps(_case(args, corr)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
