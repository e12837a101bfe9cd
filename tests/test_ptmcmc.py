"""The enterprise + PTMCMCSampler baseline against ptaflow on the shipped NG15 pulsars.

Three small NANOGrav 15-yr pulsars (data/ng15_pulsars) with the NG15 white-noise dictionary.
ptaflow's likelihood is the reference: enterprise must give the same ln L up to a constant
(the codes normalise the timing-model marginalisation differently), so ln L differences
between parameter draws are compared, and a PTMCMC chain's ln L column must equal ptaflow's
ln L at the chain's points up to one offset.
"""

from __future__ import annotations

import contextlib
import io
import math
import sys

import equinox as eqx
import jax
import numpy as np
import pytest
from enterprise.pulsar import FeatherPulsar
from scipy import stats

from ptaflow._paths import DATA_DIR
from ptaflow.baselines.ptmcmc import load_ptmcmc_chain, make_enterprise_pta, run_ptmcmc
from ptaflow.data import load_noise_dict, load_pulsars, reduce_pta
from ptaflow.errors import DataError, ParameterError, PriorError
from ptaflow.likelihood import PowerLawProcess, make_likelihood, red_noise_names
from ptaflow.models import load_model
from ptaflow.priors import (
    LogUniform,
    Normal,
    TruncatedNormal,
    Uniform,
    make_joint_prior,
)

pytestmark = pytest.mark.enterprise

PSR_DIR = DATA_DIR / "ng15_pulsars"
PULSARS = ("J0557+1551", "J0605+3757", "J1012-4235")
NOISE_FILE = PSR_DIR / "noise_dict_15yr.json"
#: ln of the default prior density: 3 x U(-20, -11) x U(0, 7) red noise, U(-18, -14) x U(0, 7).
LOG_PRIOR_DEFAULT = -3 * (math.log(9) + math.log(7)) - math.log(4) - math.log(7)


@pytest.fixture(scope="module")
def noise_dict():
    return load_noise_dict(NOISE_FILE)


@pytest.fixture(scope="module")
def ent_psrs():
    with contextlib.redirect_stdout(io.StringIO()):
        return [FeatherPulsar.read_feather(str(PSR_DIR / f"{n}.feather")) for n in PULSARS]


@pytest.fixture(scope="module")
def reduced(noise_dict):
    return reduce_pta(load_pulsars(PSR_DIR, PULSARS), noise_dict, n_freq=30)


@pytest.fixture(scope="module")
def curn_pta(noise_dict):
    # from Feather paths: the reader path of make_enterprise_pta
    return make_enterprise_pta([PSR_DIR / f"{n}.feather" for n in PULSARS], noise_dict)


def _full_prior(common_prior):
    """ptaflow's joint prior over (red noise of every pulsar, common process)."""
    blocks = {}
    for name in red_noise_names(PULSARS):
        blocks[name] = Uniform(-20, -11) if name.endswith("log10_A") else Uniform(0, 7)
    for names, prior in zip(common_prior.block_names, common_prior.priors, strict=True):
        blocks[names if len(names) > 1 else names[0]] = prior
    return make_joint_prior(blocks)


LOUD_POWERLAW = {"gw_log10_A": Uniform(-14, -11), "gw_gamma": Uniform(0, 7)}
# sigw_gauss_2p with the peak inside the band of these 4.6-yr pulsars, so that it is heard.
LOUD_SIGW = {"log10_fpeak": Uniform(-8.5, -7.5), "log10_A": Uniform(-1, 1)}


@pytest.mark.parametrize(
    "model, correlation, common_priors, quiet, min_common_span",
    [
        # quiet: an inaudible common-process point; min_common_span: the span over the draws
        # of ln L(draw) - ln L(draw with the quiet common process) must exceed 1000 times the
        # tolerance (measured 39 / 39 / 1.6), so the agreement also tests the spectrum wiring.
        (None, "curn", LOUD_POWERLAW, (-18.0, 3.0), 1.0),
        (None, "hd", LOUD_POWERLAW, (-18.0, 3.0), 1.0),
        ("sigw_gauss_2p", "hd", LOUD_SIGW, (-8.0, -3.0), 1.0),
        # the NG15 SMBHB 2-D Gaussian prior (inaudible in three pulsars: ln prior is the check)
        ("smbhb", "curn", None, None, None),
    ],
    ids=["powerlaw-curn", "powerlaw-hd", "sigw_gauss_2p-hd", "smbhb-curn"],
)
def test_lnl_and_prior_match_ptaflow(
    ent_psrs, noise_dict, reduced, model, correlation, common_priors, quiet, min_common_span
):
    # validate=False: the model files are validated in test_models; here only the wiring
    common = load_model(model, validate=False) if model else PowerLawProcess()
    pta = make_enterprise_pta(
        ent_psrs, noise_dict, common=common, correlation=correlation, common_priors=common_priors
    )
    like = make_likelihood(reduced, common, correlation=correlation)
    assert pta.ptaflow_param_names == like.param_names
    assert sorted(pta.param_names) == sorted(like.param_names)
    assert pta.tspan == reduced.tspan
    prior = _full_prior(common.priors if common_priors is None else make_joint_prior(common_priors))
    thetas = np.asarray(prior.sample(jax.random.key(3), 10))
    points = [dict(zip(like.param_names, t, strict=True)) for t in thetas]
    theirs = np.array([pta.get_lnlikelihood(p) for p in points])
    batch = eqx.filter_jit(like.batch)
    ours = np.asarray(batch(thetas))
    assert np.ptp(ours) > 1  # the draws differ by many tolerances (measured 9-50)
    np.testing.assert_allclose(ours - ours[0], theirs - theirs[0], rtol=0, atol=1e-3)
    if quiet is not None:
        ref = thetas.copy()
        ref[:, 2 * len(PULSARS) :] = quiet
        assert np.ptp(ours - np.asarray(batch(ref))) > min_common_span
    # enterprise's prior (with the joint-Gaussian correction for SMBHB) is ptaflow's
    log_prior = np.array([pta.get_lnprior(p) for p in points])
    np.testing.assert_allclose(log_prior, np.asarray(prior.log_prob(thetas)), rtol=0, atol=1e-10)


def test_lnl_does_not_depend_on_evaluation_history(curn_pta, reduced):
    # enterprise 3.5 caches each red-noise GP's prior variances for two parameter sets and
    # fills them in place: A, B, then C (= A for J0557+1551) returned B's J0557 red noise
    # (measured 2.45 too low in ln L). MCMC evaluates such sequences all the time.
    like = make_likelihood(reduced, correlation="curn")
    a = dict.fromkeys(like.param_names, 3.0) | {n: -13.0 for n in like.param_names if "A" in n}
    b = a | {"J0557+1551_red_noise_log10_A": -12.0}
    c = a | {"J0605+3757_red_noise_gamma": 4.0}
    theirs = np.array([curn_pta.get_lnlikelihood(p) for p in (a, b, c)])
    ours = np.asarray(
        eqx.filter_jit(like.batch)(np.array([[p[n] for n in like.param_names] for p in (a, b, c)]))
    )
    assert abs(ours[1] - ours[0]) > 1  # B differs from A by much more than the tolerance
    # fresh evaluations agree to 1e-10 on these pulsars (measured); the bug gave 2.45
    np.testing.assert_allclose(theirs - theirs[0], ours - ours[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "gamma_prior",
    [LogUniform(0.5, 7.0), TruncatedNormal(13 / 3, 0.5, 0.0, 7.0), Normal(13 / 3, 0.5)],
    ids=["loguniform", "truncnormal", "normal"],
)
def test_scalar_priors_become_enterprise_parameters(noise_dict, gamma_prior):
    cprior = {"gw_log10_A": Uniform(-18, -14), "gw_gamma": gamma_prior}
    pta = make_enterprise_pta(
        [PSR_DIR / f"{PULSARS[0]}.feather"], noise_dict, common_priors=cprior, n_rn=5, n_gw=2
    )
    joint = make_joint_prior(
        {f"{PULSARS[0]}_red_noise_log10_A": Uniform(-20, -11)}
        | {f"{PULSARS[0]}_red_noise_gamma": Uniform(0, 7)}
        | cprior
    )
    thetas = np.asarray(joint.sample(jax.random.key(0), 20))
    theirs = [pta.get_lnprior(dict(zip(joint.names, t, strict=True))) for t in thetas]
    np.testing.assert_allclose(theirs, np.asarray(joint.log_prob(thetas)), rtol=0, atol=1e-10)
    # enterprise's sampler of the parameter draws from the same distribution
    param = next(p for p in pta.params if p.name == "gw_gamma")
    state = np.random.get_state()
    np.random.seed(1)  # enterprise samples with NumPy's global generator
    draws = np.array([param.sample() for _ in range(2000)])
    np.random.set_state(state)
    ref = np.asarray(gamma_prior.sample(jax.random.key(1), 200_000))
    assert stats.ks_2samp(draws, ref).pvalue > 1e-3  # false-alarm rate 1e-3


def test_make_enterprise_pta_rejects_bad_arguments(ent_psrs, noise_dict):
    with pytest.raises(ParameterError, match="correlation='monopole'"):
        make_enterprise_pta(ent_psrs, noise_dict, correlation="monopole")
    with pytest.raises(ParameterError, match="n_gw=31"):
        make_enterprise_pta(ent_psrs, noise_dict, n_gw=31)
    with pytest.raises(PriorError, match="gw_gamma"):
        make_enterprise_pta(ent_psrs, noise_dict, common_priors={"gw_log10_A": Uniform(-18, -14)})
    with pytest.raises(PriorError, match="log10_A"):
        make_enterprise_pta(ent_psrs, noise_dict, rn_priors={"gamma": Uniform(0, 7)})

    class Bare:  # a CommonProcess without priors of its own
        param_names = ("x_log10_A",)

        def psd(self, f, theta):
            return f

    with pytest.raises(PriorError, match="has no priors"):
        make_enterprise_pta(ent_psrs, noise_dict, common=Bare())
    with pytest.raises(DataError, match="nope.feather"):
        make_enterprise_pta([PSR_DIR / "nope.feather"], noise_dict)


def test_missing_enterprise_names_the_extra(monkeypatch, ent_psrs, noise_dict):
    monkeypatch.setitem(sys.modules, "PTMCMCSampler", None)
    with pytest.raises(ImportError, match=r"pip install ptaflow\[enterprise\]"):
        make_enterprise_pta(ent_psrs, noise_dict)


@pytest.fixture(scope="module")
def chain(curn_pta, tmp_path_factory):
    outdir = tmp_path_factory.mktemp("ptmcmc")
    return run_ptmcmc(curn_pta, n_samples=2000, outdir=outdir, seed=11)


def test_chain_lnl_matches_ptaflow(chain, reduced):
    like = make_likelihood(reduced, correlation="curn")
    assert chain.param_names == like.param_names
    assert chain.samples.shape == (201 - 50, 8)  # 2000/10 + 1 rows, the first quarter dropped
    assert chain.n_iterations == 2000 and chain.wall_time_s > 0
    assert 0.05 < chain.acceptance_rate < 0.95
    assert len(np.unique(chain.samples[:, -2])) > 20  # the common amplitude moved
    ours = np.asarray(eqx.filter_jit(like.batch)(chain.samples))
    assert np.ptp(ours) > 1  # the chain explores ln L
    # one constant offset; the chain file rounds ln L to 1e-6
    assert np.ptp(ours - chain.log_likelihood) < 1e-3
    # uniform priors: ln posterior - ln L is the constant ln prior (two roundings to 1e-6)
    np.testing.assert_allclose(
        chain.log_posterior - chain.log_likelihood, LOG_PRIOR_DEFAULT, rtol=0, atol=2e-6
    )
    prior = _full_prior(
        make_joint_prior({"gw_log10_A": Uniform(-18, -14), "gw_gamma": Uniform(0, 7)})
    )
    assert np.isfinite(np.asarray(prior.log_prob(chain.samples))).all()  # inside the prior


def test_load_chain_round_trips_names_and_order(chain, curn_pta):
    loaded = load_ptmcmc_chain(chain.outdir)  # names from pars.txt: enterprise's order
    assert loaded.param_names == tuple(curn_pta.param_names)
    assert loaded.param_names != chain.param_names  # so the reordering is exercised
    for i, name in enumerate(chain.param_names):
        np.testing.assert_array_equal(
            chain.samples[:, i], loaded.samples[:, loaded.param_names.index(name)]
        )
    np.testing.assert_array_equal(loaded.log_likelihood, chain.log_likelihood)
    assert loaded.acceptance_rate == chain.acceptance_rate


def test_same_seed_same_chain(curn_pta, tmp_path):
    state = np.random.get_state()
    runs = [
        run_ptmcmc(curn_pta, n_samples=300, outdir=tmp_path / name, seed=seed, isave=100)
        for name, seed in (("a", 7), ("b", 7), ("c", 8))
    ]
    np.testing.assert_array_equal(runs[0].samples, runs[1].samples)
    np.testing.assert_array_equal(runs[0].log_likelihood, runs[1].log_likelihood)
    assert not np.array_equal(runs[0].samples, runs[2].samples)
    after = np.random.get_state()  # NumPy's global generator is left as it was
    assert state[0] == after[0] and np.array_equal(state[1], after[1]) and state[2:] == after[2:]


def test_resume_extends_the_chain(curn_pta, tmp_path):
    first = run_ptmcmc(curn_pta, n_samples=200, outdir=tmp_path, seed=2, isave=100, burn_fraction=0)
    more = run_ptmcmc(
        curn_pta, n_samples=400, outdir=tmp_path, seed=2, isave=100, resume=True, burn_fraction=0
    )
    assert more.samples.shape[0] == 41 and more.n_iterations == 400
    np.testing.assert_array_equal(more.samples[:21], first.samples)


def _write_chain(folder, rows, names=("a", "b", "c")):
    np.savetxt(folder / "chain_1.txt", rows, delimiter="\t")
    if names is not None:
        (folder / "pars.txt").write_text("\n".join(names) + "\n")


def test_load_chain_columns(tmp_path):
    rows = np.arange(8 * 7, dtype=float).reshape(8, 7)
    _write_chain(tmp_path, rows)
    res = load_ptmcmc_chain(tmp_path / "chain_1.txt", burn_fraction=0.25)
    assert res.param_names == ("a", "b", "c")
    np.testing.assert_array_equal(res.samples, rows[2:, :3])
    np.testing.assert_array_equal(res.log_posterior, rows[2:, 3])
    np.testing.assert_array_equal(res.log_likelihood, rows[2:, 4])
    assert res.acceptance_rate == rows[-1, 5] and res.n_iterations == 70
    assert not res.samples.flags.writeable
    named = load_ptmcmc_chain(tmp_path, param_names=["x", "y", "z"], burn_fraction=0)
    assert named.param_names == ("x", "y", "z") and named.samples.shape == (8, 3)


def test_load_chain_rejects_malformed_files(tmp_path):
    _write_chain(tmp_path, np.zeros((4, 6)))  # 6 columns for 3 names + 4
    with pytest.raises(DataError, match=r"chain_1\.txt has 6 columns; expected 7"):
        load_ptmcmc_chain(tmp_path)
    (tmp_path / "chain_1.txt").write_text("1 2 3 4 5 6 7\n1 2 3\n")
    with pytest.raises(DataError, match=r"chain_1\.txt could not be read"):
        load_ptmcmc_chain(tmp_path)
    (tmp_path / "pars.txt").unlink()
    with pytest.raises(DataError, match="no pars.txt"):
        load_ptmcmc_chain(tmp_path)
    with pytest.raises(DataError, match="missing.txt does not exist"):
        load_ptmcmc_chain(tmp_path / "missing.txt")


def test_run_ptmcmc_rejects_bad_arguments(curn_pta, tmp_path):
    with pytest.raises(ParameterError, match="multiples of thin"):
        run_ptmcmc(curn_pta, n_samples=105, outdir=tmp_path)
    with pytest.raises(ParameterError, match="permutation"):
        run_ptmcmc(curn_pta, n_samples=100, outdir=tmp_path, param_names=["gw_gamma"])
