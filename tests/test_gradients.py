"""Analytic likelihood gradients against reverse-mode autodiff of the plain expressions.

The CURN and HD likelihoods carry custom JVP rules whose first derivatives come from the
factorisation's inverse (`likelihood._curn_grads`, `likelihood._hd_value_and_grads`). Ground
truth here is `jax.grad` through the same ln L written without those rules (Cholesky
factorisations differentiated by JAX), central finite differences, and for second derivatives
`jax.hessian` of the plain expressions. Covered: single and batched (vmap, chunked `batch`,
the blocked CPU factorisation) calls, the posterior's log density in unconstrained
coordinates, forward mode, derivatives with respect to the data, NaN and non-positive-definite
inputs.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ptaflow import likelihood as lk
from ptaflow._paths import DATA_DIR
from ptaflow.data import load_reduced
from ptaflow.likelihood import make_likelihood, make_refit_likelihood
from ptaflow.posterior import make_posterior

#: The gradient is ill-conditioned at the 1e-8 level: A = I + D FNF D reaches condition numbers
#: ~1e10 for strong red noise, so rounding the prior variances differently by one ulp (jit or
#: eager power law) moves the gradient by ~1e-8 of its largest entry, for this path and for
#: autodiff alike (checked against 40-digit arithmetic). Over 200 prior draws of the 10 NG15
#: pulsars the two sides differed by at most 2.5e-8 of the largest entry.
RTOL_OF_MAX = 5e-8


@pytest.fixture(scope="module")
def reduced10():
    return load_reduced(DATA_DIR / "ng15_48psr_reduced_k30.h5").best(10)


@pytest.fixture(scope="module")
def likes10(reduced10):
    return {c: make_likelihood(reduced10, correlation=c) for c in ("curn", "hd")}


def _draws(like, n, seed):
    """Prior draws (enterprise_extensions ranges), all regimes from no signal to strong."""
    rng = np.random.default_rng(seed)
    is_amp = np.array([n.endswith("log10_A") for n in like.param_names])
    lo, hi = np.where(is_amp, -20.0, 0.0), np.where(is_amp, -11.0, 7.0)
    lo[-2] = -18.0  # gw_log10_A ~ U(-18, -11)
    return lo + (hi - lo) * rng.random((n, like.n_dim))


def _plain(like):
    """ln L of `like` written without the custom derivative rules."""
    if like.correlation == "hd":

        def f(theta):
            phi_rn, phi_gw = like._variances(theta)
            return like.const + lk._hd_value(phi_rn, phi_gw, like.FNF, like.FNr, like.orf)

        return f

    def f(theta):
        phi_rn, phi_gw = like._variances(theta)
        phi = phi_rn.at[:, : like.n_gw].add(phi_gw[None, :])
        sq = jnp.sqrt(jnp.repeat(phi, 2, axis=1))
        half_logdet, quad = lk._curn_terms_lapack(sq[None], like.FNF, like.FNr)
        return like.const + 0.5 * jnp.sum(quad) - jnp.sum(half_logdet)

    return f


def _jitted(transform, like):
    """`transform(like)` compiled, as a function of theta (the Module is a jit argument)."""
    fn = eqx.filter_jit(lambda lk_, t: transform(lk_)(t))
    return lambda t: fn(like, t)


def _assert_close_of_max(got, ref, rtol=RTOL_OF_MAX):
    got, ref = np.asarray(got), np.asarray(ref)
    scale = np.max(np.abs(ref), axis=-1, keepdims=True)
    assert np.all(scale > 0)  # a zero gradient would pass vacuously
    err = np.max(np.abs(got - ref) / scale)
    assert err < rtol, f"largest error {err:.3g} of the largest entry (tolerance {rtol:g})"


@pytest.mark.parametrize("corr", ["curn", "hd"])
def test_gradient_matches_autodiff_of_the_plain_expression(likes10, corr):
    like = likes10[corr]
    thetas = _draws(like, 6, seed=1)
    ours = eqx.filter_jit(lambda lk_, t: jax.vmap(jax.value_and_grad(lk_))(t))(like, thetas)
    plain = jax.jit(jax.vmap(jax.value_and_grad(_plain(like))))(thetas)
    # the same ln L ~ 7.4e5 in two orders of summation
    np.testing.assert_allclose(ours[0], plain[0], rtol=1e-12)
    _assert_close_of_max(ours[1], plain[1])
    single = _jitted(jax.grad, like)
    for theta, row in zip(thetas[:2], np.asarray(ours[1])[:2], strict=True):
        _assert_close_of_max(single(theta), row)  # unbatched: the LAPACK path


@pytest.mark.parametrize("corr", ["curn", "hd"])
def test_gradient_of_the_chunked_batch(likes10, corr):
    like = likes10[corr]
    thetas = _draws(like, 12, seed=2)
    grad_sum = eqx.filter_jit(
        lambda lk_, t: jax.grad(lambda x: jnp.sum(lk_.batch(x, chunk_size=5)))(t)
    )(like, thetas)
    plain = jax.jit(jax.vmap(jax.grad(_plain(like))))(thetas)
    _assert_close_of_max(grad_sum, plain)


@pytest.mark.parametrize("corr", ["curn", "hd"])
def test_gradient_matches_central_finite_differences(likes10, corr):
    like = likes10[corr]
    theta = np.asarray(_draws(like, 1, seed=3)[0])
    theta[-2:] = (-14.5, 4.3)  # near the NG15 common process
    grad = np.asarray(_jitted(jax.grad, like)(jnp.asarray(theta)))
    f = _jitted(lambda m: m, like)
    h = 1e-5
    fd = np.array(
        [(float(f(theta + h * e)) - float(f(theta - h * e))) / (2 * h) for e in np.eye(theta.size)]
    )
    # round-off of ln L ~ 7.4e5 (~1e-10) over 2h is ~1e-5, the h^2 truncation far below it
    np.testing.assert_allclose(grad, fd, rtol=0, atol=5e-5)
    assert np.max(np.abs(grad)) > 1.0


@pytest.mark.parametrize("corr", ["curn", "hd"])
def test_posterior_log_density_gradient(corr):
    post = make_posterior(model="powerlaw", pulsars=10, correlation=corr)
    zs = post.to_unconstrained(post.sample_prior(jax.random.key(4), 4))
    plain_like = _plain(post.likelihood)

    def plain(z):
        theta, log_det = post.prior.from_unconstrained(z)
        return plain_like(theta) + post.prior.log_prob(theta) + log_det

    ours = eqx.filter_jit(lambda p, z: jax.vmap(jax.grad(p.log_prob))(z))(post, zs)
    _assert_close_of_max(ours, jax.jit(jax.vmap(jax.grad(plain)))(zs))


@pytest.fixture(scope="module")
def likes3(reduced10):
    small = reduced10.select(list(reduced10.names[:3]))
    return {c: make_likelihood(small, correlation=c, n_rn=10, n_gw=5) for c in ("curn", "hd")}


@pytest.mark.parametrize("corr", ["curn", "hd"])
def test_second_derivatives_and_forward_mode(likes3, corr):
    like = likes3[corr]
    theta = _draws(like, 1, seed=5)[0]
    hess = _jitted(jax.hessian, like)(theta)
    ref = jax.jit(jax.hessian(_plain(like)))(theta)
    # second derivatives of ln L ~ 2e5 through two Cholesky factorisations either way
    _assert_close_of_max(hess, ref, rtol=1e-7)
    np.testing.assert_allclose(hess, np.swapaxes(hess, 0, 1), rtol=0, atol=1e-7 * np.abs(ref).max())
    fwd = _jitted(jax.jacfwd, like)(theta)
    _assert_close_of_max(fwd, jax.grad(_plain(like))(theta))


def test_curn_data_derivatives_fall_back_to_autodiff(likes3):
    like = likes3["curn"]
    theta = _draws(like, 1, seed=6)[0]

    def by_data(FNr, f):
        return f(eqx.tree_at(lambda m: m.FNr, like, FNr))(theta)

    ours = jax.grad(by_data)(like.FNr, lambda m: m)
    ref = jax.grad(by_data)(like.FNr, _plain)
    _assert_close_of_max(ours.ravel(), np.asarray(ref).ravel())


@pytest.mark.parametrize("corr", ["curn", "hd"])
def test_nan_parameters_give_nan_where_autodiff_does_and_in_their_row_only(likes10, corr):
    like = likes10[corr]
    thetas = _draws(like, 4, seed=7)
    thetas[1, 3] = np.nan
    values, grads = (
        np.asarray(a)
        for a in eqx.filter_jit(lambda lk_, t: jax.vmap(jax.value_and_grad(lk_))(t))(
            like, jnp.asarray(thetas)
        )
    )
    plain = np.asarray(jax.jit(jax.grad(_plain(like)))(jnp.asarray(thetas[1])))
    assert np.isnan(values[1])
    # CURN factorises over pulsars: only the NaN pulsar's and the common entries are NaN
    np.testing.assert_array_equal(np.isnan(grads[1]), np.isnan(plain))
    assert np.isnan(grads[1, 3])
    ok = [0, 2, 3]
    assert np.all(np.isfinite(values[ok])) and np.all(np.isfinite(grads[ok]))


def test_indefinite_systems_give_nan_gradients():
    rng = np.random.default_rng(8)
    G = rng.standard_normal((2, 14, 28))
    FNF = G @ np.swapaxes(G, 1, 2)
    FNF[0] -= 1e3 * np.eye(14)  # I + D FNF D indefinite for pulsar 0
    FNr = rng.standard_normal((2, 14))
    sq = 10.0 ** rng.uniform(-1, 1, (5, 2, 14))
    for fn in (lk._curn_grads_cpu, lk._curn_grads_lapack):
        out = [np.asarray(a) for a in jax.jit(fn)(sq, FNF, FNr)]
        assert all(np.all(np.isnan(a[:, 0])) for a in out)
        assert all(np.all(np.isfinite(a[:, 1])) for a in out)


def test_blocked_gradient_terms_match_lapack(monkeypatch):
    # 2K = 14: blocks of 6, 6, 2; a small cache splits 7 samples into zero-padded groups of 2
    monkeypatch.setattr(lk, "_CACHE_BYTES", 2 * 3 * (14 * 20 * 4 + 14 * 14 * 2))
    rng = np.random.default_rng(9)
    G = rng.standard_normal((3, 14, 28))
    FNF, FNr = G @ np.swapaxes(G, 1, 2), rng.standard_normal((3, 14))
    sq = 10.0 ** rng.uniform(-3, 3, (7, 3, 14))
    ours = jax.jit(lk._curn_grads_cpu)(sq, FNF, FNr)
    ref = jax.jit(lk._curn_grads_lapack)(sq, FNF, FNr)
    for a, b in zip(ours, ref, strict=True):
        assert a.shape == b.shape
        # condition numbers up to ~1e9 (sq spans 1e-3..1e3)
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9 * np.abs(b).max())


def test_refit_gradient_batched_equals_single():
    like = make_refit_likelihood()
    thetas = jnp.array([[-14.3, 3.7], [-15.0, 5.0], [-13.2, 2.1]])
    batched = jax.jit(jax.vmap(jax.grad(like)))(thetas)
    single = np.stack([np.asarray(jax.grad(like)(t)) for t in thetas])
    np.testing.assert_allclose(batched, single, rtol=1e-13)
    assert np.all(np.abs(single) > 0)


def test_hd_vmap_runs_in_padded_groups_with_the_same_numbers(likes10, monkeypatch):
    like = likes10["hd"]
    # 10 pulsars: 0.6 MB per coupled system, so this budget makes groups of 3: 3, 3, 3, 1 + 2 pad
    monkeypatch.setattr(lk, "_HD_GROUP_BYTES", 3 * 8 * 280**2)
    thetas = _draws(like, 10, seed=10)
    thetas[4, 0] = np.nan  # stays in its row
    fn = eqx.filter_jit(lambda lk_, t: jax.vmap(jax.value_and_grad(lk_))(t))
    values, grads = (np.asarray(a) for a in fn(like, jnp.asarray(thetas)))
    single = _jitted(jax.value_and_grad, like)
    for i, theta in enumerate(thetas):
        value, grad = single(jnp.asarray(theta))
        if i == 4:
            assert np.isnan(values[i]) and np.isnan(float(value))
            continue
        # the same arithmetic on a batch of 3 or of 1: summation order only
        np.testing.assert_allclose(values[i], value, rtol=1e-12)
        _assert_close_of_max(grads[i], grad)
