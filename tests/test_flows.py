"""Flow construction and training against closed forms.

Ground truth: Gaussian targets whose mean and covariance are known (the Laplace
approximation must be exact there, and a trained flow's moments must match), a non-Gaussian
"banana" target with analytic moments, flowjax's own log-density as the normalised reference
for save/load, and exact equality of an interrupted-and-resumed run with an uninterrupted one
(interrupted in either stage).
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import paramax
import pytest
from scipy.stats import multivariate_normal

import ptaflow.flows.refine as refine_module
from ptaflow.compare import REFIT_TRAIN_ANNEALED
from ptaflow.diagnostics import importance_ess, psis_khat
from ptaflow.errors import DataError, ParameterError
from ptaflow.flows import (
    REFINE_TRACES,
    STEP_TRACES,
    FlowConfig,
    TrainConfig,
    TrainState,
    VariationalFit,
    fit_to_samples,
    fit_variational,
    laplace_approximation,
    load_flow,
    make_flow,
    reset_coordinates,
    save_flow,
)
from ptaflow.posterior import AbstractPosterior

MEAN = np.array([1.0, -2.0, 0.5])
COV = np.array([[1.0, 0.6, 0.0], [0.6, 2.0, -0.3], [0.0, -0.3, 0.25]])
SMALL = FlowConfig(family="maf", flow_layers=2, nn_width=16, knots=6)


def _gauss_log_prob(z):
    d = z - MEAN
    return -0.5 * d @ jnp.linalg.solve(COV, d) - 0.5 * jnp.linalg.slogdet(2 * np.pi * COV)[1]


def _banana(z):
    """x0 ~ N(0, 1), x1 | x0 ~ N(x0^2 / 2, 1): E[x1] = 1/2, Var[x1] = 2/4 + 1 = 3/2."""
    return -0.5 * z[0] ** 2 - 0.5 * (z[1] - 0.5 * z[0] ** 2) ** 2


@eqx.filter_jit
def _log_q(flow, x):
    return jax.vmap(flow.log_prob)(jnp.asarray(x))


def _leaves(flow):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(flow) if hasattr(x, "shape")]


def test_laplace_approximation_is_exact_for_a_gaussian():
    starts = jax.random.normal(jax.random.key(0), (4, 3)) * 3
    loc, cov, value = laplace_approximation(None, _gauss_log_prob, starts, steps=600)
    np.testing.assert_allclose(loc, MEAN, atol=1e-4)  # Adam's last steps move ~lr x 1e-3
    np.testing.assert_allclose(cov, COV, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(value, multivariate_normal(MEAN, COV).logpdf(MEAN), rtol=1e-8)


def test_new_flow_is_normalised_and_consistent():
    flow = make_flow(jax.random.key(1), 3, config=SMALL, loc=MEAN, cov=COV)
    x, log_q = flow.sample_and_log_prob(jax.random.key(2), (50,))
    np.testing.assert_allclose(_log_q(flow, x), log_q, rtol=1e-9, atol=1e-9)
    # Monte Carlo check of normalisation: E_{N(MEAN, COV)}[q/p] = 1 when q integrates to 1
    # (q is close to p at initialisation; 4000 draws give a standard error of ~2%).
    y = np.random.default_rng(0).multivariate_normal(MEAN, 4 * COV, size=4000)
    log_ratio = np.asarray(_log_q(flow, y)) - multivariate_normal(MEAN, 4 * COV).logpdf(y)
    ratio = np.exp(log_ratio)
    assert abs(ratio.mean() - 1) < 4 * ratio.std() / np.sqrt(len(ratio))


@pytest.fixture(scope="module")
def gauss_fit():
    before = STEP_TRACES["count"], REFINE_TRACES["count"]
    # Every refinement round runs (refine_patience=0): the trace count below covers 30 rounds.
    cfg = TrainConfig(
        max_steps=800,
        num_samples=128,
        patience=150,
        temper_steps=50,
        min_delta=1e-3,
        refine_patience=0,
    )
    flow, info = fit_variational(
        jax.random.key(3), _gauss_log_prob, 3, flow_config=SMALL, config=cfg, progress=False
    )
    return flow, info, (STEP_TRACES["count"] - before[0], REFINE_TRACES["count"] - before[1])


def test_variational_fit_recovers_a_gaussian(gauss_fit):
    flow, info, _ = gauss_fit
    z = np.asarray(flow.sample(jax.random.key(4), (20000,)))
    # A stochastic-gradient fit stopped by the plateau rule sits near, not at, the optimum:
    # means within 5% of a standard deviation, covariances within 10% of sd_i sd_j (Monte
    # Carlo error ~1%); the importance ESS below is the sharper check of the fit.
    sd = np.sqrt(np.diag(COV))
    assert np.all(np.abs(z.mean(0) - MEAN) < 0.05 * sd)
    assert np.all(np.abs(np.cov(z, rowvar=False) - COV) < 0.1 * np.outer(sd, sd))
    log_w = np.asarray(jax.vmap(_gauss_log_prob)(jnp.asarray(z[:4000]))) - np.asarray(
        _log_q(flow, z[:4000])
    )
    w = np.exp(log_w - log_w.max())
    assert w.sum() ** 2 / (w**2).sum() > 0.95 * len(w)
    assert info.losses[-1] == pytest.approx(0.0, abs=0.05)  # -ELBO = KL >= 0 for normalised p


def test_training_compiles_the_step_once(gauss_fit):
    _, info, traces = gauss_fit
    assert info.steps > 100 and len(info.refine_ess) == TrainConfig().refine_rounds
    assert traces == (1, 1)  # one reverse-KL step and one refinement step, each traced once


def test_early_stopping_and_tempering_schedule(gauss_fit):
    _, info, _ = gauss_fit
    assert info.converged and info.steps < 800
    assert info.betas[0] == pytest.approx(0.3) and info.betas[49] < 1.0
    assert np.all(info.betas[50:] == 1.0) and np.all(np.diff(info.betas) >= 0)


def test_variational_fit_of_a_banana():
    cfg = TrainConfig(
        max_steps=800, num_samples=256, patience=200, temper_steps=0, learning_rate=5e-3
    )
    flow, _ = fit_variational(
        jax.random.key(5),
        _banana,
        2,
        flow_config=FlowConfig(flow_layers=3, nn_width=32, knots=8),
        config=cfg,
        progress=False,
    )
    z = np.asarray(flow.sample(jax.random.key(6), (20000,)))
    log_w = np.asarray(jax.vmap(_banana)(jnp.asarray(z)) - _log_q(flow, z))
    w = np.exp(log_w - log_w.max())
    w /= w.sum()
    ess = 1 / (w**2).sum()
    assert ess > 0.8 * len(w)
    # The self-normalised importance estimate is consistent whatever the flow: 4 standard
    # errors sd/sqrt(ESS) ~ 0.04. The flow's own moments carry the fit's residual bias:
    # within 5% of the standard deviation (mean) and 10% (variance).
    assert abs((w * z[:, 1]).sum() - 0.5) < 4 * np.sqrt(1.5 / ess)
    assert abs(z[:, 1].mean() - 0.5) < 0.05 * np.sqrt(1.5)
    assert abs(z[:, 1].var() - 1.5) < 0.15


def _funnel(z):
    """x ~ N(0, 1), y | x ~ N(0, e^x) (Neal's funnel, milder): sd(x) = 1, 1 % quantile -2.326."""
    return -0.5 * z[0] ** 2 - 0.5 * z[1] ** 2 * jnp.exp(-z[0]) - 0.5 * z[0]


def test_forward_kl_refinement_recovers_what_reverse_kl_misses():
    from ptaflow.diagnostics import importance_ess, psis_khat

    fits = {}
    for rounds in (0, 30):
        cfg = TrainConfig(
            max_steps=800,
            num_samples=128,
            patience=150,
            temper_steps=0,
            refine_rounds=rounds,
            refine_learning_rate=1e-3,
            refine_patience=0,
        )
        flow, _ = fit_variational(
            jax.random.key(5), _funnel, 2, flow_config=SMALL, config=cfg, progress=False
        )
        z = np.asarray(flow.sample(jax.random.key(6), (40000,)))
        log_w = np.asarray(jax.vmap(_funnel)(jnp.asarray(z)) - _log_q(flow, z))
        fits[rounds] = z[:, 0].std(), psis_khat(log_w), importance_ess(log_w) / len(z)
    (sd0, k0, _), (sd1, k1, ess1) = fits[0], fits[30]
    # Reverse KL alone is too narrow in x (mode-seeking; khat beyond 0.7 says so); the
    # mass-covering refinement brings sd(x) to 1 within 2 % (the Monte Carlo error of the
    # sample sd is 0.4 %) and the weights to a reliable khat.
    assert sd0 < 0.95 and k0 > 0.7
    assert abs(sd1 - 1.0) < 0.02 and k1 < 0.7 and ess1 > 0.9


REFINE_SMALL = dict(refine_rounds=4, refine_pool=256, refine_steps=3, refine_batch=32)


def _shifted_banana(z):
    """The banana moved by (1, -1): E[x1] = -1/2."""
    return _banana(z - jnp.array([1.0, -1.0]))


def test_forward_kl_alone_fits_a_banana_stops_early_and_shares_compiled_code():
    # max_steps=0: no reverse KL and no gradient of the target; the flow starts at the
    # Laplace approximation and only the forward-KL rounds shape it.
    cfg = TrainConfig(
        max_steps=0,
        laplace_steps=200,
        refine_rounds=80,
        refine_pool=2048,
        refine_learning_rate=3e-3,
        refine_patience=5,
        refine_target_ess=0.95,
    )
    config = FlowConfig(family="coupling", flow_layers=4, nn_width=32)
    traces = {}
    for name, target, mean in (("a", _banana, 0.5), ("b", _shifted_banana, -0.5)):
        before = REFINE_TRACES["count"]
        flow, info = fit_variational(
            jax.random.key(5), target, 2, flow_config=config, config=cfg, progress=False
        )
        traces[name] = REFINE_TRACES["count"] - before
        assert info.steps == 0 and len(info.losses) == 0
        assert 0 < len(info.refine_ess) < cfg.refine_rounds  # stopped early
        z = np.asarray(flow.sample(jax.random.key(6), (20000,)))
        log_w = np.asarray(jax.vmap(target)(jnp.asarray(z)) - _log_q(flow, z))
        w = np.exp(log_w - log_w.max())
        ess = w.sum() ** 2 / (w**2).sum()
        assert ess > 0.8 * len(w)
        # As for the reverse-KL banana: the flow's own moments within 5 % of the standard
        # deviation (mean) and 10 % (variance).
        assert abs(z[:, 1].mean() - mean) < 0.05 * np.sqrt(1.5)
        assert abs(z[:, 1].var() - 1.5) < 0.15
    # The training step does not hold the target: a second target of the same dimension
    # and flow architecture reuses the compiled step.
    assert traces["b"] == 0


def _banana_pool(key, scale: float):
    """16384 draws of q = N(0, scale^2 I) and their ln (banana / q)."""
    zq = scale * np.asarray(jax.random.normal(key, (16384, 2)))
    log_q = multivariate_normal(np.zeros(2), scale**2 * np.eye(2)).logpdf(zq)
    return zq, np.asarray(jax.vmap(_banana)(jnp.asarray(zq))) - log_q


def _banana_draws(flow, key):
    """20000 draws of the flow and their ln (banana / flow)."""
    z = np.asarray(flow.sample(key, (20000,)))
    return z, np.asarray(jax.vmap(_banana)(jnp.asarray(z)) - _log_q(flow, z))


def _assert_banana_moments(z):
    """The flow's own moments against the banana's analytic ones (tolerances as for the fits
    above: 5 % of the standard deviation for the means, 10 % for the variances)."""
    assert abs(z[:, 0].mean()) < 0.05 and abs(z[:, 0].var() - 1.0) < 0.1
    assert abs(z[:, 1].mean() - 0.5) < 0.05 * np.sqrt(1.5)
    assert abs(z[:, 1].var() - 1.5) < 0.15


def test_a_flow_fitted_to_weighted_draws_of_another_density_recovers_the_banana():
    """`fit_to_weighted_draws`: the banana known only through draws of a wide Gaussian
    q = N(0, 3^2 I) and their weights p / q. The new flow's moments are the banana's analytic
    ones (tolerances as for the fits above), and its importance weights against the banana
    have a Pareto khat below 0.5 and an ESS above 80 %; a pool with no finite weight is
    refused."""
    cfg = TrainConfig(max_steps=0, refine_learning_rate=3e-3)
    config = FlowConfig(family="coupling", flow_layers=4, nn_width=32)
    key_q, key_fit, key_check = jax.random.split(jax.random.key(11), 3)
    zq, log_w = _banana_pool(key_q, 3.0)
    flow = refine_module.fit_to_weighted_draws(key_fit, zq, log_w, config, cfg, 30)
    z, log_w_flow = _banana_draws(flow, key_check)
    assert importance_ess(log_w_flow) > 0.8 * len(z)
    assert psis_khat(log_w_flow) < 0.5
    _assert_banana_moments(z)
    with pytest.raises(ParameterError, match="not finite at any draw"):
        refine_module.fit_to_weighted_draws(key_fit, zq, np.full(len(zq), -np.inf), config, cfg, 1)


def test_a_flow_carried_on_to_wider_weighted_draws_recovers_the_tails_it_missed():
    """`fit_to_weighted_draws(..., init=flow)`: a flow fitted to draws of a narrow Gaussian
    q = N(0, 0.6^2 I) misses the banana's tails (its variance of z_1 falls short of 1.5 by more
    than the tolerance, importance ESS below 50 %), as a flow trained on its own draws misses
    what they never reach. Carried on for six rounds to draws of a wide one, N(0, 3^2 I),
    which reach the tails, it has the banana's moments (tolerances as above) and an ESS above
    90 %. (khat is not asserted: for such near-equal weights its estimate scatters with the
    fit; from flows fitted to q of scale 0.6-1.0 and carried on for 6-15 rounds it took
    values from 0.13 to 0.87 at ESS of 92-98 %.)"""
    cfg = TrainConfig(max_steps=0, refine_learning_rate=3e-3)
    config = FlowConfig(family="coupling", flow_layers=4, nn_width=32)
    key_n, key_w, key_fit, key_check = jax.random.split(jax.random.key(12), 4)
    narrow = refine_module.fit_to_weighted_draws(
        key_fit, *_banana_pool(key_n, 0.6), config, cfg, 30
    )
    z, log_w = _banana_draws(narrow, key_check)
    assert abs(z[:, 1].var() - 1.5) > 0.15 and importance_ess(log_w) < 0.5 * len(z)
    flow = refine_module.fit_to_weighted_draws(
        key_fit, *_banana_pool(key_w, 3.0), config, cfg, 6, init=narrow
    )
    z, log_w = _banana_draws(flow, key_check)
    assert importance_ess(log_w) > 0.9 * len(z)
    _assert_banana_moments(z)


class _TwoModes(AbstractPosterior):
    """A posterior for the annealed refinement: prior N(0, 3^2) per coordinate of
    z (the identity map to theta) and a likelihood of two equal, narrow Gaussian bumps at
    x0 = -/+2.5 (sd 0.1, 50 sd apart). The prior is symmetric, so each mode holds exactly
    half of the posterior."""

    centre: float = 2.5
    sd: float = 0.1

    def sample_prior(self, key, n):
        return 3.0 * jax.random.normal(key, (n, 2))

    def to_unconstrained(self, theta):
        return theta

    def log_prob_parts(self, z):
        d2 = (z[1] / self.sd) ** 2
        bumps = jnp.logaddexp(
            -0.5 * ((z[0] - self.centre) / self.sd) ** 2,
            -0.5 * ((z[0] + self.centre) / self.sd) ** 2,
        )
        log_like = bumps - 0.5 * d2
        log_prior = -0.5 * jnp.sum((z / 3.0) ** 2)
        return log_like, log_prior


# Refit mode's annealed training (`evaluation.REFIT_TRAIN_ANNEALED`) on smaller pools.
ANNEALED = dataclasses.replace(
    REFIT_TRAIN_ANNEALED, prior_draws=16384, prior_ess=2000.0, refine_rounds=60, refine_pool=4096
)
ANNEALED_FLOW = FlowConfig(family="coupling", flow_layers=4, nn_width=32)


@pytest.fixture(scope="module")
def two_modes_fit():
    return fit_variational(
        jax.random.key(11),
        _TwoModes(),
        2,
        flow_config=ANNEALED_FLOW,
        config=ANNEALED,
        progress=False,
    )


def test_annealed_refinement_keeps_both_modes(two_modes_fit):
    flow, info = two_modes_fit
    beta = np.asarray(info.refine_beta)
    assert beta[0] < 0.5 and beta[-1] == 1.0 and np.all(np.diff(beta) >= 0)
    assert np.sum(beta < 1.0) < len(beta)  # rounds at beta = 1 follow the annealing
    target = _TwoModes()
    z = np.asarray(flow.sample(jax.random.key(12), (20000,)))
    log_like, log_prior = jax.vmap(target.log_prob_parts)(jnp.asarray(z))
    log_w = np.asarray(log_like + log_prior) - np.asarray(_log_q(flow, z))
    w = np.exp(log_w - log_w.max())
    # Each mode holds half of the posterior: the flow's own draws within 0.35-0.65 (a flow
    # that dropped a mode puts ~0 there), the weighted share within 4 binomial-like standard
    # errors for the importance ESS.
    ess = w.sum() ** 2 / (w**2).sum()
    assert ess > 0.5 * len(w)
    share = np.mean(z[:, 0] > 0)
    assert 0.35 < share < 0.65
    weighted = w[z[:, 0] > 0].sum() / w.sum()
    assert abs(weighted - 0.5) < 4 * 0.5 / np.sqrt(ess)


def test_refinement_returns_the_flow_of_its_best_pool(two_modes_fit):
    # The flow of the best pool at beta = 1 is the flow at the start of that round: the same
    # run stopped after the rounds before it (all else equal, the same keys) ends there.
    flow, info = two_modes_fit
    at_one = np.where(np.asarray(info.refine_beta) >= 1.0)[0]
    best = at_one[np.argmax(np.asarray(info.refine_ess)[at_one])]
    cut = dataclasses.replace(
        ANNEALED,
        refine_rounds=int(best),
        refine_keep_best=False,
        refine_patience=0,
        refine_target_ess=None,
    )
    flow_cut, info_cut = fit_variational(
        jax.random.key(11), _TwoModes(), 2, flow_config=ANNEALED_FLOW, config=cut, progress=False
    )
    np.testing.assert_array_equal(info_cut.refine_ess, np.asarray(info.refine_ess)[:best])
    for a, b in zip(_leaves(flow), _leaves(flow_cut), strict=True):
        np.testing.assert_array_equal(a, b)


def test_anneal_beta_keeps_the_ess_ratio():
    rng = np.random.default_rng(3)
    log_like = rng.normal(0.0, 3.0, 5000)
    log_rest = np.zeros(5000)
    log_q = np.zeros(5000)

    def ess(b):
        lw = b * log_like
        w = np.exp(lw - lw.max())
        return w.sum() ** 2 / (w**2).sum() / len(w)

    new = refine_module.anneal_beta(log_like, log_rest, log_q, 0.1, 0.5)
    assert 0.1 < new < 1.0
    assert ess(new) == pytest.approx(0.5 * ess(0.1), rel=1e-6)  # bisection to ~1e-9 in beta
    # Enough ESS at beta = 1: straight there; a pool already below the floor: no step.
    assert refine_module.anneal_beta(0.01 * log_like, log_rest, log_q, 0.1, 0.5) == 1.0
    assert refine_module.anneal_beta(30 * log_like, log_rest, log_q, 0.5, 0.5) == 0.5


def test_phase_times_are_recorded():
    from ptaflow.profiling import PhaseTimes

    times = PhaseTimes()
    cfg = TrainConfig(max_steps=20, num_samples=32, laplace_steps=20, **REFINE_SMALL)
    fit_variational(
        jax.random.key(3),
        _gauss_log_prob,
        3,
        flow_config=SMALL,
        config=cfg,
        progress=False,
        timings=times,
    )
    d = times.to_dict()
    assert set(d) == {"initialise", "train", "refine"}
    assert d["train"]["steps"] == 20 and d["refine"]["rounds"] == 4
    assert d["refine"]["steps"] == 4 * REFINE_SMALL["refine_steps"]
    assert all(r["wall_s"] > 0 and r["compiles"] >= 0 for r in d.values())


def test_resumed_run_equals_uninterrupted(tmp_path):
    cfg = TrainConfig(
        max_steps=40,
        num_samples=32,
        checkpoint_every=10,
        laplace_steps=50,
        temper_steps=20,
        **REFINE_SMALL,
    )
    kwargs = dict(flow_config=SMALL, config=cfg, progress=False)
    full, info_full = fit_variational(jax.random.key(7), _gauss_log_prob, 3, **kwargs)

    class Interrupt(Exception):
        pass

    def stop_at_25(step, loss):
        if step == 25:
            raise Interrupt

    ckpt = tmp_path / "fit.ckpt"
    with pytest.raises(Interrupt):
        fit_variational(
            jax.random.key(7), _gauss_log_prob, 3, checkpoint=ckpt, callback=stop_at_25, **kwargs
        )
    resumed, info = fit_variational(
        jax.random.key(7), _gauss_log_prob, 3, checkpoint=ckpt, **kwargs
    )
    assert info.resumed_from == 20 and info.steps == 40
    np.testing.assert_array_equal(info.losses, info_full.losses)
    for a, b in zip(_leaves(resumed), _leaves(full), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(info.refine_ess, info_full.refine_ess)
    other = TrainConfig(max_steps=41, num_samples=32, checkpoint_every=10)
    with pytest.raises(DataError, match="other settings"):
        fit_variational(
            jax.random.key(7), _gauss_log_prob, 3, checkpoint=ckpt, config=other, progress=False
        )


def test_run_resumed_during_refinement_equals_uninterrupted(tmp_path, monkeypatch):
    cfg = TrainConfig(max_steps=30, num_samples=32, laplace_steps=50, **REFINE_SMALL)
    kwargs = dict(flow_config=SMALL, config=cfg, progress=False)
    full, info_full = fit_variational(jax.random.key(9), _gauss_log_prob, 3, **kwargs)

    class Interrupt(Exception):
        pass

    real_round, calls = refine_module.refine_round, []

    def stop_in_third_round(*args):
        calls.append(1)
        if len(calls) == 3:
            raise Interrupt
        return real_round(*args)

    ckpt = tmp_path / "fit.ckpt"
    monkeypatch.setattr(refine_module, "refine_round", stop_in_third_round)
    with pytest.raises(Interrupt):
        fit_variational(jax.random.key(9), _gauss_log_prob, 3, checkpoint=ckpt, **kwargs)
    monkeypatch.setattr(refine_module, "refine_round", real_round)
    resumed, info = fit_variational(
        jax.random.key(9), _gauss_log_prob, 3, checkpoint=ckpt, **kwargs
    )
    # Two rounds were done and checkpointed: the reverse-KL stage is not run again.
    assert info.resumed_from == 30 and len(info.refine_ess) == 4
    np.testing.assert_array_equal(info.losses, info_full.losses)
    np.testing.assert_array_equal(info.refine_ess, info_full.refine_ess)
    for a, b in zip(_leaves(resumed), _leaves(full), strict=True):
        np.testing.assert_array_equal(a, b)


def test_non_finite_targets_skip_updates():
    def hole(z):  # NaN on a slab that flow samples hit regularly
        return jnp.where(jnp.abs(z[0] - 0.3) < 0.02, jnp.nan, -0.5 * jnp.sum(z**2))

    cfg = TrainConfig(max_steps=60, num_samples=64, laplace_steps=0, temper_steps=0)
    flow, info = fit_variational(
        jax.random.key(8), hole, 2, flow_config=SMALL, config=cfg, progress=False
    )
    assert info.skipped_steps > 0
    assert all(np.all(np.isfinite(x)) for x in _leaves(flow))


def test_fit_to_samples_matches_sample_moments():
    rng = np.random.default_rng(1)
    x = rng.multivariate_normal(MEAN, COV, size=(4, 1500))  # four "chains"
    flow, losses = fit_to_samples(jax.random.key(9), x, flow_config=SMALL, max_epochs=30)
    y = np.asarray(flow.sample(jax.random.key(10), (20000,)))
    np.testing.assert_allclose(y.mean(0), MEAN, atol=0.08)  # 6000 training points, ~3 s.e.
    np.testing.assert_allclose(np.cov(y, rowvar=False), COV, atol=0.12)
    assert losses["val"].min() < multivariate_normal(MEAN, COV).entropy() + 0.05


def test_save_and_load_flow_round_trip(tmp_path):
    flow = make_flow(jax.random.key(11), 3, config=SMALL, loc=MEAN, cov=COV)
    save_flow(flow, tmp_path / "q.flow", SMALL)
    back, config = load_flow(tmp_path / "q.flow")
    assert config == SMALL
    x = flow.sample(jax.random.key(12), (10,))
    np.testing.assert_array_equal(_log_q(back, x), _log_q(flow, x))
    (tmp_path / "junk.flow").write_bytes(b"\x00" * 4)
    with pytest.raises(DataError, match="junk.flow"):
        load_flow(tmp_path / "junk.flow")


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: FlowConfig(family="bnaf"), "heavy tails"),
        (lambda: FlowConfig(knots=0), "knots"),
        (lambda: TrainConfig(beta0=0.0), "beta0"),
        (lambda: TrainConfig(num_samples=0), "num_samples"),
        (lambda: TrainConfig(refine_rounds=-1), "refine_rounds"),
        (lambda: TrainConfig(refine_pool=0), "refine_pool"),
        (lambda: TrainConfig(max_steps=-1), "max_steps"),
        (lambda: TrainConfig(max_steps=0, refine_rounds=0), "train nothing"),
        (lambda: TrainConfig(refine_patience=-1), "refine_patience"),
        (lambda: TrainConfig(refine_target_ess=1.5), "refine_target_ess"),
        (lambda: TrainConfig(refine_anneal_ess=1.0), "refine_anneal_ess"),
        (lambda: make_flow(jax.random.key(0), 2, cov=-np.eye(2)), "positive-definite"),
        (lambda: make_flow(jax.random.key(0), 2, loc=np.zeros(3)), r"expected \(2,\)"),
        (lambda: fit_to_samples(jax.random.key(0), np.zeros((5, 2))), "n_samples >= 10"),
    ],
)
def test_bad_configuration_is_rejected(make, match):
    with pytest.raises(ParameterError, match=match):
        make()


def test_reset_coordinates_restarts_the_chosen_rows_only():
    flow = make_flow(jax.random.key(21), 3, config=SMALL, loc=MEAN, cov=COV)
    new = reset_coordinates(flow, [2])
    old_map, new_map = (paramax.unwrap(f.bijection.bijections[-1]) for f in (flow, new))
    chol = np.linalg.cholesky(COV)
    np.testing.assert_allclose(old_map.triangular, chol, rtol=1e-12)
    np.testing.assert_allclose(new_map.triangular[:2], chol[:2], rtol=1e-12)
    np.testing.assert_allclose(new_map.triangular[2], [0.0, 0.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(new_map.loc, [MEAN[0], MEAN[1], 0.0])
    # The same structure, so the same compiled functions serve both flows.
    assert jax.tree.structure(flow) == jax.tree.structure(new)
    # For the same base draws: coordinates 0, 1 unchanged, coordinate 2 the spline layers'
    # own output (unscaled and unshifted).
    u = jax.random.normal(jax.random.key(22), (500, 3))
    z_old = jax.vmap(flow.bijection.transform)(u)
    z_new = jax.vmap(new.bijection.transform)(u)
    y = jax.vmap(flow.bijection.bijections[0].transform)(u)
    np.testing.assert_allclose(z_new[:, :2], z_old[:, :2], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(z_new[:, 2], y[:, 2], rtol=1e-12, atol=1e-12)
    with pytest.raises(ParameterError, match="affine map"):
        reset_coordinates(new.bijection.bijections[0], [0])


def test_step_by_step_fit_equals_the_whole_run_and_its_state_round_trips(tmp_path):
    """`VariationalFit` driven by hand (step / start_refinement / refine) gives the flow of
    `fit_variational`, and its `TrainState` read back from a checkpoint equals the state."""
    cfg = TrainConfig(
        max_steps=30, num_samples=32, laplace_steps=50, temper_steps=10, **REFINE_SMALL
    )
    full, info_full = fit_variational(
        jax.random.key(5), _gauss_log_prob, 3, flow_config=SMALL, config=cfg, progress=False
    )
    ckpt = tmp_path / "state.ckpt"
    fit = VariationalFit(
        jax.random.key(5), _gauss_log_prob, 3, flow_config=SMALL, config=cfg, checkpoint=ckpt
    )
    while fit.training:
        fit.step()
    fit.start_refinement()
    assert fit.state.stage == "refine" and not fit.training
    rounds = 0
    while fit.refining:
        ess, khat = fit.refine()
        rounds += 1
        assert 0.0 < ess <= 1.0 and np.isfinite(khat)
    info = fit.info()
    assert rounds == len(info_full.refine_ess) and info.steps == info_full.steps
    np.testing.assert_array_equal(info.losses, info_full.losses)
    np.testing.assert_array_equal(info.refine_ess, info_full.refine_ess)
    for a, b in zip(_leaves(fit.flow), _leaves(full), strict=True):
        np.testing.assert_array_equal(a, b)
    # The checkpoint written after the last round is that state.
    params = fit.state.params
    back = TrainState.from_checkpoint(
        ckpt, fit.settings_hash, params, fit.optimizer.init(params), fit.state.opt_state
    )
    assert back.header() == fit.state.header()
    for a, b in zip(_leaves(back.params), _leaves(fit.state.params), strict=True):
        np.testing.assert_array_equal(a, b)
