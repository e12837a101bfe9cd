"""The batched CPU factorisation of the CURN likelihood against NumPy and LAPACK.

Ground truth: `numpy.linalg.slogdet` / `solve` on the same whitened systems A = I + D FNF D,
and ptaflow's single-call path, which factorises with LAPACK. Covers block widths that do not
divide 2K, zero-padded groups, NaN and indefinite systems, `vmap` (nested too), chunking and
gradients through the batched path.
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
from ptaflow.likelihood import make_likelihood


def _systems(n_samples, n_psr, m, seed):
    """Random CURN-like systems: FNF = G G^T (PSD), FNr, prior sqrt-variances over 1e-3..1e3."""
    rng = np.random.default_rng(seed)
    G = rng.standard_normal((n_psr, m, 2 * m))
    FNF = G @ np.swapaxes(G, 1, 2)
    FNr = rng.standard_normal((n_psr, m))
    sq = 10.0 ** rng.uniform(-3, 3, (n_samples, n_psr, m))
    return sq, FNF, FNr


def _numpy_terms(sq, FNF, FNr):
    """(1/2 ln det A, d^T A^-1 d) per sample and pulsar with NumPy's LU."""
    A = sq[..., :, None] * FNF * sq[..., None, :] + np.eye(sq.shape[-1])
    d = sq * FNr
    sign, logdet = np.linalg.slogdet(A)
    assert np.all(sign > 0)
    quad = np.einsum("...i,...i->...", d, np.linalg.solve(A, d[..., None])[..., 0])
    return 0.5 * logdet, quad


@pytest.fixture(scope="module")
def like10():
    """The 10 best NG15 pulsars, 30 red-noise and 14 common frequencies (the benchmark case)."""
    return make_likelihood(load_reduced(DATA_DIR / "ng15_48psr_reduced_k30.h5").best(10))


def _draws(like, n, seed):
    rng = np.random.default_rng(seed)
    lo = np.where([n.endswith("log10_A") for n in like.param_names], -20.0, 0.0)
    hi = np.where([n.endswith("log10_A") for n in like.param_names], -11.0, 7.0)
    lo[-2] = -18.0  # gw_log10_A ~ U(-18, -11)
    return jnp.asarray(lo + (hi - lo) * rng.random((n, like.n_dim)))


@pytest.mark.parametrize("cache_bytes", [2**20, 3 * 3 * 14 * (14 + 6) * 4])
def test_blocked_terms_match_numpy(monkeypatch, cache_bytes):
    # 2K = 14: blocks of 6, 6 and 2 columns; the small cache gives groups of 3 samples, so 7
    # samples run as three groups, the last zero-padded
    monkeypatch.setattr(lk, "_CACHE_BYTES", cache_bytes)
    sq, FNF, FNr = _systems(7, 3, 14, seed=0)
    half_logdet, quad = jax.jit(lk._curn_terms_cpu)(sq, FNF, FNr)
    ref_logdet, ref_quad = _numpy_terms(sq, FNF, FNr)
    assert half_logdet.shape == quad.shape == (7, 3)
    # condition numbers up to ~1e9 (sq spans 1e-3..1e3): NumPy's LU itself is good to ~1e-9
    np.testing.assert_allclose(half_logdet, ref_logdet, rtol=1e-9)
    np.testing.assert_allclose(quad, ref_quad, rtol=1e-9)
    lapack = jax.jit(lk._curn_terms_lapack)(sq, FNF, FNr)
    np.testing.assert_allclose(half_logdet, lapack[0], rtol=1e-9)
    np.testing.assert_allclose(quad, lapack[1], rtol=1e-9)


def test_nan_and_indefinite_systems_stay_in_their_column():
    sq, FNF, FNr = _systems(4, 2, 14, seed=1)
    sq[2, 1, 5] = np.nan
    FNF[0] -= 1e3 * np.eye(14)  # indefinite: I + D FNF D is not positive definite for pulsar 0
    half_logdet, quad = (np.asarray(x) for x in jax.jit(lk._curn_terms_cpu)(sq, FNF, FNr))
    bad = np.zeros((4, 2), bool)
    bad[:, 0] = True
    bad[2, 1] = True
    assert np.all(np.isnan(half_logdet[bad]))
    ok = ~bad
    ref_logdet, ref_quad = _numpy_terms(sq[:, 1:][[0, 1, 3]], FNF[1:], FNr[1:])
    np.testing.assert_allclose(half_logdet[ok], ref_logdet.ravel(), rtol=1e-9)  # as above
    np.testing.assert_allclose(quad[ok], ref_quad.ravel(), rtol=1e-9)  # as above


def test_vmap_rule_with_mapped_data_falls_back_to_lapack():
    sq, FNF, FNr = _systems(2, 2, 14, seed=2)
    stacked = (np.stack([sq, sq[::-1]]), np.stack([FNF, FNF[::-1]]), np.stack([FNr, FNr[::-1]]))
    half_logdet, quad = jax.jit(jax.vmap(lk._curn_terms))(*stacked)
    for i in range(2):
        ref_logdet, ref_quad = _numpy_terms(stacked[0][i], stacked[1][i], stacked[2][i])
        np.testing.assert_allclose(half_logdet[i], ref_logdet, rtol=1e-9)  # as above
        np.testing.assert_allclose(quad[i], ref_quad, rtol=1e-9)


def test_batch_matches_single_lapack_calls_on_ng15(like10):
    thetas = _draws(like10, 40, seed=3)
    single = eqx.filter_jit(lambda lk_, t: lk_(t))
    loop = np.array([float(single(like10, t)) for t in thetas])
    batched = np.asarray(eqx.filter_jit(lambda lk_, t: lk_.batch(t))(like10, thetas))
    # two factorisation orders of ln L ~ 7.4e5; measured 2.3e-12 relative on 1000 prior draws
    np.testing.assert_allclose(batched, loop, rtol=1e-10)
    nested = eqx.filter_jit(lambda lk_, t: jax.vmap(jax.vmap(lk_))(t))
    vmapped = nested(like10, thetas.reshape(4, 10, -1))
    # nested vmap folds into the same batched factorisation: same arithmetic per matrix
    np.testing.assert_allclose(np.asarray(vmapped).ravel(), batched, rtol=1e-14)


def test_gradient_through_the_batched_path_is_lapacks(like10):
    thetas = _draws(like10, 3, seed=4)
    grad_of_sum = eqx.filter_jit(lambda lk_, t: jax.grad(lambda x: jnp.sum(lk_.batch(x)))(t))
    total = grad_of_sum(like10, thetas)
    single = eqx.filter_jit(lambda lk_, t: jax.grad(lk_)(t))
    loop = np.stack([np.asarray(single(like10, t)) for t in thetas])
    # both differentiate the LAPACK expression, batched or not; its terms cancel from ln L ~ 7.4e5,
    # so round-off is ~1e-7 absolute (measured 8.4e-8) on entries of 1e-2..1e2
    np.testing.assert_allclose(np.asarray(total), loop, rtol=1e-10, atol=1e-6)
    assert np.all(np.abs(loop) > 0)  # a zero gradient would pass vacuously
