"""End to end on real NG15 pulsars: flow posterior against NUTS on the same target.

A two-pulsar CURN problem with a power-law common process (six parameters, five red-noise
and three common frequencies to keep CI short). Ground truth is a NUTS run on the same
z-space density; the importance-weighted flow posterior must agree with it in every 1-D
marginal to within the Hellinger distance that sampling noise alone produces (the
chi-square bound of `ptaflow.diagnostics.hellinger_noise_floor` at the two effective sample
sizes), with a Pareto khat below 0.7. NeuTra chains must agree with NUTS the same way.
The mass of the no-signal plateau of the common amplitude must equal its Savage-Dickey
value from the exact noise-only evidence, in NUTS and in the defensive-mixture weights.
The saved result must round-trip and the plots must be written.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from ptaflow.baselines.mcmc import mcmc_result, nuts_baseline
from ptaflow.diagnostics import hellinger_noise_floor
from ptaflow.errors import ParameterError
from ptaflow.flows import FlowConfig, TrainConfig, flow_from_bytes, result_flow
from ptaflow.inference import fit_posterior, hellinger_table, neutra_samples
from ptaflow.plots import plot_corner
from ptaflow.posterior import make_posterior
from ptaflow.results import load_posterior, save_posterior

BINS = 20


@pytest.fixture(scope="module")
def post():
    return make_posterior(model="powerlaw", pulsars=2, correlation="curn", n_rn=5, n_gw=3)


@pytest.fixture(scope="module")
def fit(post):
    cfg = TrainConfig(max_steps=1000, num_samples=128, learning_rate=5e-3, patience=200)
    return fit_posterior(post, seed=0, train_config=cfg, n_samples=20000, progress=False)


@pytest.fixture(scope="module")
def nuts(post):
    return nuts_baseline(post, num_warmup=400, num_samples=1500)


def _bound(n_a, n_b):
    # 99.9% chi-square quantile per marginal, so that six marginals stay below it together
    # (probability ~0.994) when the two posteriors are the same.
    return hellinger_noise_floor(n_a, n_b, n_bins=BINS, quantile=0.999)


@pytest.mark.slow
def test_flow_posterior_matches_nuts(post, fit, nuts):
    assert nuts.rhat.max() < 1.02
    flow_res, nuts_res = fit.to_result(), mcmc_result(post, nuts)
    h = hellinger_table(flow_res, nuts_res, bins=BINS)
    bound = _bound(fit.ess, float(nuts.ess.min()))
    assert max(h.values()) < bound, (h, bound)
    assert fit.khat < 0.7
    assert fit.ess > 0.2 * fit.z.shape[0]


@pytest.mark.slow
def test_neutra_chains_match_nuts(post, fit, nuts):
    chains = neutra_samples(fit, num_warmup=200, num_samples=500)
    assert chains.rhat.max() < 1.02
    # The flow preconditions: far fewer gradient evaluations per effective sample than NUTS.
    per_ess = chains.num_steps / chains.ess.min()
    assert per_ess < nuts.num_steps / nuts.ess.min()
    h = hellinger_table(mcmc_result(post, chains), mcmc_result(post, nuts), bins=BINS)
    assert max(h.values()) < _bound(float(chains.ess.min()), float(nuts.ess.min())), h


@pytest.mark.slow
def test_result_round_trip_and_plots(post, fit, nuts, tmp_path):
    result = fit.to_result(note="test")
    path = save_posterior(result, tmp_path / "post.h5")
    back = load_posterior(path)
    np.testing.assert_array_equal(back.samples, result.samples)
    np.testing.assert_array_equal(back.log_weights, fit.log_weights)
    assert back.settings["model"] == "powerlaw" and back.provenance["note"] == "test"
    config = {k: v for k, v in back.flow_config.items() if k != "n_dim"}
    flow = flow_from_bytes(back.flow_bytes, back.flow_config["n_dim"], FlowConfig(**config))
    z = fit.z[:5]
    np.testing.assert_array_equal(jax.vmap(flow.log_prob)(z), jax.vmap(fit.flow.log_prob)(z))
    stored = result_flow(back)  # the same, rebuilt from the result's own flow_config
    np.testing.assert_array_equal(jax.vmap(stored.log_prob)(z), jax.vmap(fit.flow.log_prob)(z))
    # ln L stored with the samples equals a fresh evaluation.
    np.testing.assert_allclose(
        back.log_likelihood[:5], [post.log_likelihood(t) for t in back.samples[:5]], rtol=1e-12
    )
    png = tmp_path / "corner.png"
    plot_corner(
        [back.samples, mcmc_result(post, nuts).samples],
        param_names=post.param_names,
        labels=["flow", "NUTS"],
        weights=[back.weights, None],
        path=png,
    )
    assert png.stat().st_size > 10_000


@pytest.mark.slow
def test_no_signal_plateau_has_the_savage_dickey_mass(post, fit, nuts):
    """Where the common process is undetectable its posterior density is pi(log10_A) Z_0 / Z
    (Savage-Dickey), Z_0 the exact noise-only evidence. Half a decade above the prior's lower
    bound (-18) the signal is far below these two pulsars' noise, so P(log10_A < -17.5) is
    (0.5 / 7) Z_0 / Z there. NUTS and the defensive-mixture weights must both give it, within
    4 of their standard errors (and the error of Z_0 / Z)."""
    from numpyro.diagnostics import effective_sample_size

    d = fit.diagnostics()
    assert d["defensive_fraction"] == pytest.approx(0.05, abs=1e-3)
    i = post.param_names.index("log10_A")
    a, (lo, hi) = -17.5, post.prior.priors[i].bounds()[0]
    ln_b, ln_b_err = d["log_bayes_factor_vs_noise_only"], d["log_bayes_factor_vs_noise_only_err"]
    exact = (a - lo) / (hi - lo) * np.exp(-ln_b)
    exact_err = exact * ln_b_err
    below = (np.asarray(post.to_theta(nuts.samples))[..., i] < a).astype(float)
    p_nuts = below.mean()
    ess = float(effective_sample_size(below[..., None])[0])
    se_nuts = np.sqrt(p_nuts * (1 - p_nuts) / ess)
    assert abs(p_nuts - exact) < 4 * np.hypot(se_nuts, exact_err), (p_nuts, se_nuts, exact)
    w = np.exp(fit.log_weights - fit.log_weights.max())
    hit = fit.theta[:, i] < a
    p_is = w[hit].sum() / w.sum()
    se_is = np.sqrt(np.sum(w**2 * (hit - p_is) ** 2)) / w.sum()  # self-normalised IS
    assert abs(p_is - exact) < 4 * np.hypot(se_is, exact_err), (p_is, se_is, exact)


def test_fit_posterior_rejects_bad_input(post):
    with pytest.raises(ParameterError, match="Posterior"):
        fit_posterior(lambda z: 0.0)
    with pytest.raises(ParameterError, match="n_samples"):
        fit_posterior(post, n_samples=5)
    with pytest.raises(ParameterError, match="defensive=1.0"):
        fit_posterior(post, defensive=1.0)
