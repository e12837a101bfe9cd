"""The community reference workflow as a baseline: an enterprise PTA sampled by PTMCMCSampler.

NANOGrav's published analyses (arXiv:2306.16213, arXiv:2306.16219) build the likelihood with
enterprise (Ellis et al. 2020, Zenodo 4059815) and enterprise_extensions (Taylor et al. 2021,
Zenodo 5914351) and sample it with PTMCMCSampler (Ellis & van Haasteren 2017, Zenodo 1037579)
for days. This module sets up that workflow on the same pulsars, priors and parameter names as
ptaflow, so that ptaflow's posteriors and evidences can be checked against it and timed side by
side:

* `make_enterprise_pta`: the enterprise model of `enterprise_extensions.models.model_2a`
  (CURN) / `model_3a` (HD): white noise fixed from a noise dictionary (EFAC and t2EQUAD per
  backend, ECORR per backend where the dictionary has one), timing model marginalised,
  per-pulsar power-law red noise with K_rn frequencies, and a common process with K_gw
  frequencies: a power law, or any ptaflow `SourceModel` whose spectrum is wrapped as an
  enterprise spectrum, with enterprise parameters whose priors equal the model's.
* `run_ptmcmc`: PTMCMCSampler with the usual enterprise_extensions jump proposals (adaptive
  Metropolis, SCAM, differential evolution, prior draws of all, red-noise and common-process
  parameters), writing its chain to a folder.
* `load_ptmcmc_chain`: read a PTMCMCSampler `chain_1.txt` (from this module or elsewhere).

The enterprise model is built in `ptaflow.baselines.enterprise_pta` and chains are read in
`ptaflow.baselines.ptmcmc_chain`; their public names are importable from here too.

enterprise, enterprise_extensions and PTMCMCSampler are optional dependencies
(`pip install ptaflow[enterprise]`); they are imported inside the functions that need them.
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import DataError, ParameterError
from .enterprise_pta import (
    DEFAULT_POWERLAW_PRIORS,
    DEFAULT_RN_PRIORS,
    _import_enterprise,
    _refill_phi_every_call,
    make_enterprise_pta,
)
from .ptmcmc_chain import CHAIN_FILE, PtmcmcResult, _check_order, _reorder, load_ptmcmc_chain

__all__ = [
    "DEFAULT_RN_PRIORS",
    "DEFAULT_POWERLAW_PRIORS",
    "PtmcmcResult",
    "make_enterprise_pta",
    "run_ptmcmc",
    "load_ptmcmc_chain",
]


def _common_prior_draw(pta, jp):
    """Prior draw of one common-process (non-pulsar) parameter, weight as enterprise_extensions'
    GWB draw (`draw_from_gwb_log_uniform_distribution`, which it equals for a uniform prior)."""
    psr_prefixes = tuple(f"{p}_" for p in pta.pulsars)
    params = [p for p in pta.params if not p.name.startswith(psr_prefixes) and not p.size]
    if not params:
        return None

    def draw_from_common_prior(x, iter, beta):
        q = x.copy()
        param = params[np.random.randint(len(params))]
        idx = jp.pimap[param.name]
        q[idx] = param.sample()
        return q, float(param.get_logpdf(x[idx]) - param.get_logpdf(q[idx]))

    return draw_from_common_prior


def run_ptmcmc(
    pta,
    *,
    n_samples: int,
    outdir: str | pathlib.Path,
    seed: int = 0,
    resume: bool = False,
    burn_fraction: float = 0.25,
    param_names: Sequence[str] | None = None,
    thin: int = 10,
    isave: int = 1000,
    x0: Mapping[str, float] | None = None,
    verbose: bool = False,
    scam_weight: int = 30,
    am_weight: int = 15,
    de_weight: int = 50,
    de_buffer: int = 10000,
    cov_update: int = 1000,
) -> PtmcmcResult:
    """Sample an enterprise PTA with PTMCMCSampler and the enterprise_extensions jumps.

    Equivalent to `enterprise_extensions.sampler.setup_sampler(pta, outdir)` followed by
    `sampler.sample(x0, n_samples, SCAMweight=30, AMweight=15, DEweight=50)`: initial jump
    covariance 0.1^2 I (or the run's `cov.npy` when resuming), enterprise_extensions'
    parameter groups, and prior draws (all parameters, weight 5; red noise, weight 10;
    common-process parameters, weight 10). The chain (`chain_1.txt`), `pars.txt`,
    `priors.txt`, `runtime_info.txt` and `cov.npy` are written to `outdir`.

    Reproducibility: PTMCMCSampler's own random stream is seeded with `seed`, and NumPy's
    global generator (used by enterprise's prior samplers and the enterprise_extensions jump
    proposals) is seeded with it for the run and restored afterwards, so a single-process run
    is reproduced exactly by the same seed. Runs under MPI (parallel tempering), and resumed
    runs, which continue with a fresh stream, are not bitwise reproducible.

    Args:
        pta: an enterprise PTA (from `make_enterprise_pta`, or any, e.g. `model_2a`).
        n_samples: sampler iterations N (PTMCMCSampler's `Niter`, resumed ones included);
            every `thin`-th is written, so the chain has N/thin + 1 rows.
        outdir: output folder (created).
        seed: random seed.
        resume: continue the chain in `outdir` (PTMCMCSampler `resume`).
        burn_fraction: fraction of chain rows dropped as burn-in in the result, in [0, 1).
        param_names: column order of `result.samples`; default `pta.ptaflow_param_names`
            (ptaflow's order) when the PTA has it, else `pta.param_names`.
        thin: iterations per written row.
        isave: iterations between writes to disk (a multiple of thin).
        x0: starting point {name: value}; default a draw from the prior.
        verbose: print PTMCMCSampler's progress.
        scam_weight, am_weight, de_weight: weights of the single-component adaptive
            Metropolis, adaptive Metropolis and differential-evolution jumps.
        de_buffer: PTMCMCSampler's `burn`: differential-evolution jumps start after this many
            iterations, from a buffer of that many samples.
        cov_update: iterations between updates of the adaptive jump covariance.

    Returns:
        `PtmcmcResult` after burn-in, with the wall time of the sampling.
    """
    _import_enterprise()
    _check_run_lengths(n_samples, thin, isave, burn_fraction)
    names = list(pta.param_names)
    if param_names is None:
        param_names = getattr(pta, "ptaflow_param_names", names)
    order = _check_order(param_names, names, "param_names")
    outdir = pathlib.Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    _refill_phi_every_call(pta)

    wall = _sample_seeded(
        pta,
        outdir,
        seed=seed,
        resume=resume,
        verbose=verbose,
        start=x0,
        n_samples=n_samples,
        options={
            "thin": thin,
            "isave": isave,
            "SCAMweight": scam_weight,
            "AMweight": am_weight,
            "DEweight": de_weight,
            "burn": de_buffer,
            "covUpdate": cov_update,
        },
    )
    result = load_ptmcmc_chain(
        outdir / CHAIN_FILE, param_names=names, burn_fraction=burn_fraction, thin=thin
    )
    return _reorder(result, order, wall_time_s=wall, n_iterations=int(n_samples))


def _sample_seeded(
    pta,
    outdir: pathlib.Path,
    *,
    seed: int,
    resume: bool,
    verbose: bool,
    start: Mapping[str, float] | None,
    n_samples: int,
    options: Mapping,
) -> float:
    """Run the sampler (`_make_sampler`) for `n_samples` iterations from `start` (default a
    prior draw), with NumPy's global generator seeded by `seed` and restored afterwards.

    Args:
        options: further keyword arguments of PTMCMCSampler's `sample`.

    Returns:
        The wall time of the sampling [s].
    """
    names = list(pta.param_names)
    rng_state = np.random.get_state()
    np.random.seed(seed)
    try:
        sampler = _make_sampler(pta, outdir, seed=seed, resume=resume, verbose=verbose)
        if start is None:
            x0 = np.hstack([p.sample() for p in pta.params]).astype(np.float64)
        else:
            _check_order(list(start), names, "x0")
            x0 = np.array([start[n] for n in names], dtype=np.float64)
        t0 = time.perf_counter()
        # enterprise returns ln prior = log(0) with a warning outside uniform ranges: expected.
        with np.errstate(divide="ignore"):
            sampler.sample(x0, n_samples, **options)
        return time.perf_counter() - t0
    finally:
        np.random.set_state(rng_state)


def _check_run_lengths(n_samples, thin, isave, burn_fraction) -> None:
    for label, value in (("n_samples", n_samples), ("thin", thin), ("isave", isave)):
        if not (isinstance(value, (int, np.integer)) and value >= 1):
            raise ParameterError(f"{label}={value!r}: expected a positive integer")
    if n_samples % thin or isave % thin:
        raise ParameterError(
            f"n_samples={n_samples} and isave={isave} must be multiples of thin={thin} "
            "(PTMCMCSampler drops the remainder)"
        )
    if not 0.0 <= burn_fraction < 1.0:
        raise ParameterError(f"burn_fraction={burn_fraction!r}: expected a value in [0, 1)")


def _make_sampler(pta, outdir: pathlib.Path, *, seed: int, resume: bool, verbose: bool):
    """PTMCMCSampler on the PTA with enterprise_extensions' groups and jump proposals.

    The initial jump covariance is 0.1^2 I, or the run's `cov.npy` when resuming; prior
    draws are added as in `enterprise_extensions.sampler.setup_sampler` (all parameters
    weight 5, red noise weight 10) plus the common process's parameters (weight 10). Uses
    NumPy's global generator: the caller seeds it.
    """
    from enterprise_extensions.sampler import (
        JumpProposal,
        get_parameter_groups,
        save_runtime_info,
    )
    from PTMCMCSampler.PTMCMCSampler import PTSampler

    ndim = len(pta.param_names)
    cov_file = outdir / "cov.npy"
    cov = np.diag(np.full(ndim, 0.1**2))
    if resume and cov_file.is_file():
        cov = np.load(cov_file)
        if cov.shape != (ndim, ndim):
            raise DataError(
                f"{cov_file} has shape {cov.shape}, expected {(ndim, ndim)} for this PTA; "
                "use another outdir or resume=False"
            )
    sampler = PTSampler(
        ndim,
        pta.get_lnlikelihood,
        pta.get_lnprior,
        cov,
        groups=get_parameter_groups(pta),
        outDir=str(outdir),
        resume=resume,
        seed=seed,
        verbose=verbose,
    )
    save_runtime_info(pta, str(outdir))
    jp = JumpProposal(pta, outdir=str(outdir))
    sampler.jp = jp
    sampler.addProposalToCycle(jp.draw_from_prior, 5)
    if "red noise" in jp.snames:
        sampler.addProposalToCycle(jp.draw_from_red_prior, 10)
    common_draw = _common_prior_draw(pta, jp)
    if common_draw is not None:
        sampler.addProposalToCycle(common_draw, 10)
    return sampler
