"""PTA log-likelihoods in JAX: CURN, Hellings-Downs, and the free-spectrum refit likelihood.

Every likelihood is a final subclass of `AbstractLikelihood` (equinox's abstract/final pattern):
`PTALikelihood` (CURN or HD, `make_likelihood`) and `RefitLikelihood` (`make_refit_likelihood`).
They are `equinox.Module`s holding device arrays, called on a flat float64 parameter vector
`theta` whose entries are named by `param_names` (enterprise names: `{psr}_red_noise_log10_A`,
`{psr}_red_noise_gamma` for every pulsar, then the common process's parameters). They are pure
functions of theta: jit, vmap and grad all work, and `batch` evaluates many parameter vectors
at once (compile with `equinox.filter_jit(like.batch)` or
`jax.jit(lambda t: like.batch(t))`: a Module holding arrays is not a static argument of
`jax.jit`). Enable float64 (`jax.config.update("jax_enable_x64",
True)`) before building them; ln L of a PTA is ~1e5 and needs it.

Gaussian-process likelihood on reduced data (docs/design.md, section 3; see
`ptaflow.data.reduction`):

    ln L = sum_a c_a + 1/2 d^T S^-1 d - 1/2 [ln det Phi + ln det S],  S = Phi^-1 + FNF,

evaluated as ln det(I + Phi^1/2 FNF Phi^1/2) with d = FNr, which is well conditioned for any
prior variances the data constrain; variances so large that double precision cannot resolve
this system give ln L = -inf, its limit (see `_ROUNDOFF_TRACE`). CURN: Phi is diagonal, one
2K x 2K Cholesky factorisation per pulsar; on a CPU, `batch` and `jax.vmap(like)` factorise
all pulsars and parameter vectors of a batch together (see `_curn_terms`), several times
faster per evaluation than single calls. HD: the
common process couples pulsars through Gamma_ab (Hellings & Downs 1983) at the K_gw lowest
frequencies only; the K_rn - K_gw uncoupled frequencies are eliminated per pulsar by a Schur
complement, leaving one (n_psr 2 K_gw)^2 system.
"""

# No `from __future__ import annotations`: equinox reads the AbstractVar annotations of
# `AbstractLikelihood` when the class is created, and does not accept them as strings.

import abc
import functools
import warnings
from collections.abc import Sequence
from typing import ClassVar, Protocol

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

# The free-spectrum densities' home is ptaflow.data.free_spectrum (re-exported here).
from .data.free_spectrum import FreeSpectrumDensities, load_free_spectrum_densities
from .data.reduction import ReducedPTA
from .devices import map_rows
from .errors import DataError, ParameterError
from .spectra import powerlaw_psd

__all__ = [
    "CommonProcess",
    "check_common_process",
    "PowerLawProcess",
    "hellings_downs",
    "red_noise_names",
    "AbstractLikelihood",
    "PTALikelihood",
    "make_likelihood",
    "FreeSpectrumDensities",
    "load_free_spectrum_densities",
    "RefitLikelihood",
    "make_refit_likelihood",
]


class CommonProcess(Protocol):
    """What a likelihood needs of a common-process (SGWB) spectrum.

    `param_names` names the entries of the parameter vector `theta` passed to `psd`, which
    returns the one-sided timing-residual PSD S(f) [s^3] at frequencies f [Hz] and must be a
    pure JAX function. `ptaflow.models.SourceModel` satisfies it.
    """

    param_names: tuple[str, ...]

    def psd(self, f: jax.Array, theta: jax.Array) -> jax.Array: ...


def check_common_process(
    common: object, argument: str = "common", alternatives: str = ""
) -> CommonProcess:
    """`common` itself if it offers what a likelihood uses of a common process (`CommonProcess`).

    Common processes are duck-typed so that any object with `param_names` and `psd` serves (a
    `ptaflow.models.SourceModel`, a `PowerLawProcess`, a user's own spectrum); this is the one
    check of that, made when a likelihood or posterior is built.

    Args:
        common: the candidate common process.
        argument: the argument's name in the error message.
        alternatives: what else the caller accepts, e.g. "a model name or path, or ", put before
            "a common process" in the error message.

    Raises:
        ParameterError: it has no `param_names` or no callable `psd`; the message names which.
    """
    missing = [
        member
        for member, present in (
            ("param_names", hasattr(common, "param_names")),
            ("psd(f, theta)", callable(getattr(common, "psd", None))),
        )
        if not present
    ]
    if missing:
        raise ParameterError(
            f"{argument}={common!r}: expected {alternatives}a common process with param_names "
            "and psd(f, theta) returning S(f) [s^3] at frequencies f [Hz] (e.g. a "
            f"ptaflow.models.SourceModel); it has no {' and no '.join(missing)}"
        )
    return common


class PowerLawProcess(eqx.Module):
    """Power-law common process, S(f) = A^2/(12 pi^2) f_yr^(gamma-3) f^-gamma, enterprise names."""

    prefix: str = eqx.field(static=True, default="gw")

    @property
    def param_names(self) -> tuple[str, ...]:
        return (f"{self.prefix}_log10_A", f"{self.prefix}_gamma")

    def psd(self, f, theta):
        return powerlaw_psd(f, theta[0], theta[1])


def hellings_downs(pos: np.ndarray) -> np.ndarray:
    """Hellings-Downs correlation matrix, 1 on the diagonal (pulsar term included).

    Gamma_ab = 3/2 x ln x - x/4 + 1/2, x = (1 - cos zeta_ab)/2 (Hellings & Downs 1983;
    enterprise `utils.hd_orf`).

    Args:
        pos: unit vectors to the pulsars, shape (n_psr, 3).
    """
    pos = np.asarray(pos, dtype=np.float64)
    cosz = np.clip(pos @ pos.T, -1.0, 1.0)
    x = 0.5 * (1.0 - cosz)
    with np.errstate(divide="ignore", invalid="ignore"):
        gamma = 1.5 * x * np.log(x) - 0.25 * x + 0.5
    gamma[x == 0.0] = 0.5  # x ln x -> 0 for coincident directions
    np.fill_diagonal(gamma, 1.0)
    return gamma


def red_noise_names(psr_names: Sequence[str]) -> tuple[str, ...]:
    """Enterprise names of the per-pulsar power-law red-noise parameters, in theta order."""
    return tuple(
        name for p in psr_names for name in (f"{p}_red_noise_log10_A", f"{p}_red_noise_gamma")
    )


def _check_blas_threads() -> None:
    """Warn when SciPy's OpenBLAS runs several threads on a CPU backend (see ptaflow.threads).

    JAX's CPU Cholesky and triangular solves call it once per small matrix from XLA's worker
    threads; a multi-threaded OpenBLAS makes the HD likelihood over ten times slower on two
    cores. `ptaflow.limit_blas_threads()` (at any time) or OPENBLAS_NUM_THREADS=1 in the
    environment fixes it; the `ptaflow` command does the latter itself.
    """
    if jax.default_backend() != "cpu":
        return
    import scipy.linalg  # noqa: F401  (the OpenBLAS that jaxlib's CPU LAPACK kernels call)
    import threadpoolctl

    for info in threadpoolctl.threadpool_info():
        if "scipy_openblas-" in info.get("filepath", "") and info.get("num_threads", 1) > 1:
            warnings.warn(
                f"SciPy's OpenBLAS runs {info['num_threads']} threads, which slows JAX's CPU "
                "likelihoods down many times. Call ptaflow.limit_blas_threads() or set "
                "OPENBLAS_NUM_THREADS=1 in the environment.",
                RuntimeWarning,
                stacklevel=3,
            )


def _chol_logdet_quad(A, d):
    """For SPD A and vector d: (sum ln diag chol(A), |chol(A)^-1 d|^2)."""
    L = jnp.linalg.cholesky(A)
    x = jax.scipy.linalg.solve_triangular(L, d, lower=True)
    return jnp.sum(jnp.log(jnp.diagonal(L))), jnp.sum(x * x)


# --- Prior variances beyond double precision ------------------------------------------------------
#
# A = I + D FNF D (D^2 = Phi) has eigenvalues >= 1 for any prior variances, but FNF is singular
# to working precision: the timing model absorbs combinations of the Fourier columns (10 to 38
# of the 60 directions at 30 frequencies for nine of the ten best-timed NG15 pulsars), and in
# those directions FNF holds only its own round-off, ~1e-15 of its diagonal, of either sign.
# D multiplies that round-off by the prior variance: when phi_j FNF_jj nears 1e15 (NG15
# pulsars have FNF_jj up to ~4e15 s^-2, so from variances of ~1 s^2 on), the unit term of A is
# no longer above it, A is not positive definite in double precision, and its Cholesky
# factorisation breaks down. ln L there is not determined by double-precision data (the stored
# FNF does not fix its null directions to that level), but it is far below the data's
# preferred region and tends to -inf as the variance grows without bound (-1/2 ln det C
# dominates). Such a system therefore counts as ln L = -inf, with a zero derivative.
#
# A breakdown is put down to round-off only where the trace of the data term,
# t = tr(D FNF D) = sum_j phi_j FNF_jj, is at least `_ROUNDOFF_TRACE`. Round-off of relative size
# e in each entry (|dA_ij| <= e sqrt(A_ii A_jj), the form of both the stored data's and the
# factorisation's own errors) moves A's eigenvalues by at most e tr(A) = e (m + t), and A's
# smallest is >= 1; below that trace a breakdown needs e >= 1e-10, ten thousand times the
# round-off of either (~1e-14 for NG15's 60 x 60 systems), so a failed factorisation there
# (NaN variances or data) stays NaN. Where a system factorises, its value stands as computed,
# however large t.

#: Trace of the whitened data term tr(D FNF D) from which a failed Cholesky factorisation of
#: I + D FNF D is attributed to round-off (ln L = -inf) rather than to invalid input (NaN).
_ROUNDOFF_TRACE = 1e10


def _past_precision(sq, FNF, half_logdet, quad, *grads):
    """CURN's per-pulsar terms with the systems that double precision cannot factorise (see
    above) set to ln L = -inf: 1/2 ln det A = +inf, d^T A^-1 d = 0 and zero derivatives.

    Args:
        sq: (n_samples, n_psr, m) square roots of the prior variances; FNF (n_psr, m, m).
        half_logdet, quad: (n_samples, n_psr); grads: (n_samples, n_psr, m) arrays.
    """
    # A failed factorisation leaves NaN (a zero pivot: -inf) in ln det A; quad is then NaN too.
    # t is summed over sin/cos pairs, n_rn terms: XLA on a CPU splits a sum of more than 32
    # terms into two passes, one more kernel on the single-vector path.
    x = sq * sq * jnp.diagonal(FNF, axis1=-2, axis2=-1)
    t = jnp.sum(x[..., ::2] + x[..., 1::2], axis=-1)
    past = ~jnp.isfinite(half_logdet) & (t >= _ROUNDOFF_TRACE)
    out = (jnp.where(past, jnp.inf, half_logdet), jnp.where(past, 0.0, quad))
    return out + tuple(jnp.where(past[..., None], 0.0, g) for g in grads)


# --- CURN: one whitened 2K x 2K system per pulsar and parameter vector ----------------------------
#
# ln L needs, per pulsar, only ln det A and d^T A^-1 d with A = I + D FNF D, d = D FNr. On a CPU,
# jaxlib factorises a batch of small matrices one LAPACK call at a time (~30 us for 60 x 60, plus
# ~15 us for the triangular solve). `_curn_terms_blocked` instead runs one Cholesky factorisation
# for a whole block of matrices at once, batch in the last axis so that every step is a SIMD loop
# over matrices, with the forward substitution fused in; about 4x faster per matrix.

#: Block-column width of the batched Cholesky factorisation (fastest measured on a 2-core AMD EPYC).
_BLOCK_WIDTH = 6
#: Matrices per pass of the batched factorisation: its lower block-columns, ~16 kB each for
#: 2K = 60, then stay in a 1 MB L2 cache.
_CACHE_BYTES = 2**20


def _curn_terms_lapack(sq, FNF, FNr):
    """Per-pulsar (1/2 ln det A, d^T A^-1 d), A = I + sq FNF sq, d = sq FNr, via LAPACK.

    Args:
        sq: (n_samples, n_psr, m) square roots of the prior variances [s], m = 2 n_rn.
        FNF: (n_psr, m, m); FNr: (n_psr, m).

    Returns:
        Two (n_samples, n_psr) arrays.
    """
    A = sq[..., :, None] * FNF * sq[..., None, :] + jnp.eye(sq.shape[-1], dtype=sq.dtype)
    per_psr = jax.vmap(jax.vmap(_chol_logdet_quad))
    return _past_precision(sq, FNF, *per_psr(A, sq * FNr))


def _nans(shapes, dtype, *_):
    """The not-taken branch of `_curn_terms_blocked`'s conditionals: NaN arrays of `shapes`."""
    return tuple(jnp.full(shape, jnp.nan, dtype) for shape in shapes)


def _panel(B, r):
    """Cholesky factor of one lower block-column, batch last, with forward substitution.

    Args:
        B: (rows, w, N) columns of the trailing matrix, its leading (w, w) block the diagonal.
        r: (rows, k, N) the trailing right-hand sides (k columns).

    Returns:
        L (rows, w, N) the factor's columns, x (w, k, N) their forward-substitution entries,
        sum ln diag L (N,), and the updated right-hand sides (rows - w, k, N).
    """
    w, N = B.shape[1], B.shape[2]
    cols, xs, half_logdet = [], [], 0.0
    for t in range(w):
        v, rt = B[t:, t], r[t]
        for u in range(t):
            v = v - cols[u][t:] * cols[u][t]
            rt = rt - cols[u][t] * xs[u]
        piv = jnp.sqrt(v[0])
        half_logdet = half_logdet + jnp.log(piv)
        col = v / piv
        cols.append(jnp.concatenate([jnp.zeros((t, N), B.dtype), col]) if t else col)
        xs.append(rt / piv)
    L, x = jnp.stack(cols, axis=1), jnp.stack(xs)
    return L, x, half_logdet, r[w:] - jnp.sum(L[w:, :, None] * x[None], axis=1)


def _rank_update(L, blocks, offsets):
    """Trailing block-columns minus L L^T: blocks[i] (rows_i, w_i, N) starts offsets[i] rows
    below L's first row."""
    out = []
    for B, off in zip(blocks, offsets, strict=True):
        rows, top = L[off:], L[off : off + B.shape[1]]
        for t in range(L.shape[1]):
            B = B - rows[:, t][:, None] * top[:, t][None, :]
        out.append(B)
    return tuple(out)


def _curn_terms_blocked(sq, F, FNr_t, width, inverse=False):
    """Right-looking blocked Cholesky of all A = I + sq F sq at once, batch in the last axis.

    Args:
        sq: (m, n_samples, n_psr) square roots of the prior variances [s].
        F: (m, m, n_psr) FNF; FNr_t: (m, n_psr) FNr, both with pulsars last.
        width: block-column width.
        inverse: also return diag(A^-1) and A^-1 d, each (m, n_samples, n_psr), for the
            gradient (see `_curn_grads`).

    Returns:
        (1/2 ln det A, d^T A^-1 d), each (n_samples, n_psr), then with `inverse` diag(A^-1)
        and A^-1 d.

    Every step is a loop over the n_samples n_psr matrices. Each block step runs inside a
    `lax.cond` on a runtime predicate (always true: sq >= 0, and NaN compares false), which
    stops XLA from fusing a block into its several consumers and recomputing it in each; the
    other branch returns NaN. A matrix that is not positive definite gets NaN, like LAPACK's.

    With `inverse`, the forward substitution also runs on the identity's columns, giving the
    rows of W = L^-1 block by block: diag(A^-1)_j = sum_i W_ij^2 and A^-1 d = W^T (W d)
    accumulate from them, so W is never stored. Column j of W vanishes above row j, so block c
    (rows s:e) carries only the columns < e: the extra work is m^3/6 multiply-adds per matrix,
    that of the factorisation itself.
    """
    m, S, P = sq.shape
    N, dt = S * P, sq.dtype
    eye = jnp.eye(m, dtype=dt)

    def block(sq, F, s, e):  # rows s: of columns s:e of A, (m - s, e - s, N)
        B = sq[s:, None] * F[s:, s:e, None, :] * sq[None, s:e] + eye[s:, s:e, None, None]
        return B.reshape(m - s, e - s, N)

    def with_unit_columns(r, s, e):  # append identity columns s:e (rows s:) to r (m - s, k, N)
        if not inverse:
            return r
        units = jnp.broadcast_to(eye[s:, s:e, None], (m - s, e - s, N))
        return jnp.concatenate([r, units], axis=1)

    starts = list(range(0, m, width))
    ends = [min(s + width, m) for s in starts]
    pred = jnp.logical_not(sq[0, 0, 0] < 0)
    r = (sq * FNr_t[:, None, :]).reshape(m, 1, N)
    half_logdet = quad = jnp.zeros(N, dt)
    diag_inv = inv_d = jnp.zeros((m, N), dt)
    blocks = [None] * len(starts)
    for c, (s, e) in enumerate(zip(starts, ends, strict=True)):
        k = 1 + e if inverse else 1
        shapes = ((m - s, e - s, N), (e - s, k, N), (N,), (m - e, k, N))
        if c == 0:  # A's first block-column is built inside the branch, fused into its reads
            args = (sq, F, r)

            def first(sq, F, r, s=s, e=e):
                return _panel(block(sq, F, 0, e), with_unit_columns(r, s, e))
        else:
            args = (blocks[c], r)

            def first(B, r, s=s, e=e):
                return _panel(B, with_unit_columns(r, s, e))

        L, x, lp, r = jax.lax.cond(pred, first, functools.partial(_nans, shapes, dt), *args)
        half_logdet, quad = half_logdet + lp, quad + jnp.sum(x[:, 0] ** 2, axis=0)
        if inverse:  # x[:, 1:] holds rows s:e of W (its columns 0:e), x[:, 0] those of W d
            W = x[:, 1:]
            diag_inv = diag_inv.at[:e].add(jnp.sum(W * W, axis=0))
            inv_d = inv_d.at[:e].add(jnp.sum(W * x[:, :1], axis=0))
        rest = range(c + 1, len(starts))
        if not rest:
            break
        offsets = [starts[i] - s for i in rest]
        nans = [(m - starts[i], ends[i] - starts[i], N) for i in rest]
        if c == 0:
            args = (L, sq, F)

            def update(L, sq, F, rest=rest, offsets=offsets):
                return _rank_update(L, [block(sq, F, starts[i], ends[i]) for i in rest], offsets)
        else:
            args = (L, tuple(blocks[c + 1 :]))

            def update(L, trailing, offsets=offsets):
                return _rank_update(L, trailing, offsets)

        new = jax.lax.cond(pred, update, functools.partial(_nans, nans, dt), *args)
        blocks[c + 1 :] = list(new)
    out = (half_logdet.reshape(S, P), quad.reshape(S, P))
    if inverse:
        out += (diag_inv.reshape(m, S, P), inv_d.reshape(m, S, P))
    return out


def _curn_terms_cpu(sq, FNF, FNr, inverse=False):
    """`_curn_terms_blocked` over cache-sized groups of parameter vectors (zero-padded); with
    `inverse` also diag(A^-1) and A^-1 d, (n_samples, n_psr, m) each, and without it the
    systems beyond double precision set to ln L = -inf (`_past_precision`)."""
    S, P, m = sq.shape
    F, FNr_t = jnp.moveaxis(FNF, 0, -1), FNr.T
    per_matrix = m * (m + _BLOCK_WIDTH) * 4 + (m * m * 2 if inverse else 0)
    per_group = max(1, _CACHE_BYTES // (P * per_matrix))

    def run(sq_group):
        out = _curn_terms_blocked(jnp.moveaxis(sq_group, -1, 0), F, FNr_t, _BLOCK_WIDTH, inverse)
        return out[:2] + tuple(jnp.moveaxis(a, 0, -1) for a in out[2:])

    if S <= per_group:
        out = run(sq)
    else:
        n_groups = -(-S // per_group)
        pad = n_groups * per_group - S
        padded = jnp.concatenate([sq, jnp.zeros((pad, P, m), sq.dtype)]) if pad else sq
        out = jax.lax.map(run, padded.reshape(n_groups, per_group, P, m))
        out = tuple(a.reshape(-1, *a.shape[2:])[:S] for a in out)
    return out if inverse else _past_precision(sq, FNF, *out)


def _curn_grads_from(sq, diag_inv, inv_d):
    """d(1/2 ln det A)/d sq and d(d^T A^-1 d)/d sq from diag(A^-1) and x = A^-1 d.

    With A = I + D FNF D, D = diag(sq), d = D FNr (the whitened form of S = Phi^-1 + FNF,
    Phi = D^2): d(1/2 ln det A)/d ln phi_j = (1 - (A^-1)_jj)/2 and
    d(d^T A^-1 d)/d ln phi_j = x_j^2, so d/d sq_j = 2/sq_j d/d ln phi_j. Both vanish like sq_j
    as sq_j -> 0; round-off makes them good to ~1e-16 absolute in ln phi, far below ln L's.
    """
    return (1.0 - diag_inv) / sq, 2.0 * inv_d * inv_d / sq


def _curn_grads_lapack(sq, FNF, FNr):
    """(1/2 ln det A, d^T A^-1 d) and their derivatives with respect to sq, via LAPACK.

    Returns:
        (n_samples, n_psr) twice, then (n_samples, n_psr, m) twice.
    """
    m = sq.shape[-1]
    A = sq[..., :, None] * FNF * sq[..., None, :] + jnp.eye(m, dtype=sq.dtype)
    L = jnp.linalg.cholesky(A)
    W = jax.lax.linalg.triangular_solve(
        L, jnp.broadcast_to(jnp.eye(m, dtype=sq.dtype), L.shape), left_side=True, lower=True
    )  # L^-1
    y = jnp.einsum("...ij,...j->...i", W, sq * FNr)
    x = jnp.einsum("...ji,...j->...i", W, y)
    half_logdet = jnp.sum(jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)), axis=-1)
    grads = _curn_grads_from(sq, jnp.sum(W * W, axis=-2), x)
    return _past_precision(sq, FNF, half_logdet, jnp.sum(y * y, axis=-1), *grads)


def _curn_grads_cpu(sq, FNF, FNr):
    half_logdet, quad, diag_inv, inv_d = _curn_terms_cpu(sq, FNF, FNr, inverse=True)
    return _past_precision(sq, FNF, half_logdet, quad, *_curn_grads_from(sq, diag_inv, inv_d))


def _fold_vmap(fn, fallback):
    """custom_vmap rule for a function of (sq, FNF, FNr) with sq's batch axis leading: a mapped
    sq folds into n_samples; mapped data (unusual) runs `fallback` under plain vmap."""

    def rule(axis_size, in_batched, sq, FNF, FNr):
        if in_batched[1] or in_batched[2]:
            axes = tuple(0 if b else None for b in in_batched)
            out = jax.vmap(fallback, in_axes=axes)(sq, FNF, FNr)
            return out, tuple(True for _ in out)
        B, S, P, m = sq.shape
        out = fn(sq.reshape(B * S, P, m), FNF, FNr)
        return tuple(a.reshape(B, S, *a.shape[1:]) for a in out), tuple(True for _ in out)

    return rule


@jax.custom_jvp
@jax.custom_batching.custom_vmap
def _curn_grads(sq, FNF, FNr):
    """`_curn_grads_lapack`'s four outputs; on a CPU, from the batched factorisation for two or
    more parameter vectors. Its own derivatives (second order) are those of the LAPACK path."""
    if sq.shape[0] == 1:
        return _curn_grads_lapack(sq, FNF, FNr)
    return jax.lax.platform_dependent(sq, FNF, FNr, cpu=_curn_grads_cpu, default=_curn_grads_lapack)


_curn_grads.def_vmap(_fold_vmap(lambda *a: _curn_grads(*a), _curn_grads_lapack))


@_curn_grads.defjvp
def _curn_grads_jvp(primals, tangents):
    return jax.jvp(_curn_grads_lapack, primals, tangents)


@jax.custom_jvp
@jax.custom_batching.custom_vmap
def _curn_terms(sq, FNF, FNr):
    """Per-pulsar (1/2 ln det A, d^T A^-1 d) of CURN, (n_samples, n_psr) each (see above).

    Values: on a CPU, the batched factorisation for two or more parameter vectors; LAPACK for
    one (faster there: too few matrices to vectorise over) and on other platforms. `jax.vmap`
    folds the mapped axis into n_samples, so `vmap(like)` runs the batched path too.

    Systems beyond double precision count as ln L = -inf (`_past_precision`).

    Derivatives with respect to sq are analytic (`_curn_grads_from`): one more triangular pass
    over the factorisation, no autodiff through it, so a gradient costs about two values.
    Second derivatives differentiate the LAPACK expression of those first derivatives.
    Derivatives with respect to the data FNF, FNr (unusual) differentiate the LAPACK values.
    """
    if sq.shape[0] == 1:
        return _curn_terms_lapack(sq, FNF, FNr)
    return jax.lax.platform_dependent(sq, FNF, FNr, cpu=_curn_terms_cpu, default=_curn_terms_lapack)


_curn_terms.def_vmap(_fold_vmap(lambda *a: _curn_terms(*a), _curn_terms_lapack))


@functools.partial(_curn_terms.defjvp, symbolic_zeros=True)
def _curn_terms_jvp(primals, tangents):
    live = [i for i, t in enumerate(tangents) if not isinstance(t, SymbolicZero)]
    if live == [0]:  # the usual case: parameters move, data stay
        half_logdet, quad, g_logdet, g_quad = _curn_grads(*primals)
        t = tangents[0]
        return (half_logdet, quad), (jnp.sum(g_logdet * t, -1), jnp.sum(g_quad * t, -1))

    def lapack(*xs):
        args = list(primals)
        for i, x in zip(live, xs, strict=True):
            args[i] = x
        return _curn_terms_lapack(*args)

    if not live:
        out = _curn_terms_lapack(*primals)
        return out, jax.tree_util.tree_map(jnp.zeros_like, out)
    return jax.jvp(lapack, [primals[i] for i in live], [tangents[i] for i in live])


# --- HD: per-pulsar Schur complement of the uncoupled frequencies, one coupled system ---------
#
# ln L = 1/2 r^T S^-1 r - 1/2 ln det Phi - 1/2 ln det S with S = Phi^-1 + FNF (see above). Its
# derivative with respect to the prior covariance is the Gaussian identity
#     d ln L / d Phi = 1/2 Phi^-1 [Sigma + mu mu^T - Phi] Phi^-1,
# Sigma = S^-1 and mu = Sigma r the coefficients' posterior covariance and mean. The gradient
# therefore needs the blocks of Sigma that Phi's parameters touch: for each coupled frequency
# the pulsars' (n_psr x n_psr) block, and for each pulsar its own block (for the uncoupled
# frequencies, which reach the coupled system only through that pulsar's Schur complement).
# All of them follow from one triangular inverse of the coupled system's Cholesky factor.


def _tri_inv(L):
    """L^-1 for lower-triangular L (..., n, n) by recursive 2 x 2 blocking.

    [[A, 0], [C, D]]^-1 = [[A^-1, 0], [-D^-1 C A^-1, D^-1]]: two half-size inverses and one
    product, n^3/3 multiply-adds in matrix products instead of the n^3/2 of a triangular
    solve against the identity, which does not know that the identity is triangular.
    """
    n = L.shape[-1]
    if n <= 64:
        eye = jnp.broadcast_to(jnp.eye(n, dtype=L.dtype), L.shape)
        return jax.lax.linalg.triangular_solve(L, eye, left_side=True, lower=True)
    h = n // 2
    A_inv, D_inv = _tri_inv(L[..., :h, :h]), _tri_inv(L[..., h:, h:])
    lower = -(D_inv @ (L[..., h:, :h] @ A_inv))
    top = jnp.concatenate([A_inv, jnp.zeros(A_inv.shape[:-1] + (n - h,), L.dtype)], axis=-1)
    return jnp.concatenate([top, jnp.concatenate([lower, D_inv], axis=-1)], axis=-2)


def _hd_factor(phi_rn, phi_gw, FNF, FNr, orf):
    """ln L of HD without its constant, and the factors its gradient reuses.

    Args:
        phi_rn: (n_psr, n_rn) red-noise variances [s^2]; phi_gw: (n_gw,) common-process ones.
        FNF (n_psr, 2 n_rn, 2 n_rn), FNr (n_psr, 2 n_rn): reduced data; orf (n_psr, n_psr).

    The uncoupled frequencies (k > n_gw) are eliminated per pulsar by a Schur complement in
    whitened form, A_u = I + D_u F_uu D_u = L_u L_u^T; the coupled ones form, with
    Phi_k = Gamma phi_gw(k) + diag(phi_rn(., k)) = L_k L_k^T, the system K = I + L^T B L in
    frequency-major order (i, a), B the Schur complements, v = L^T b.

    Where a factorisation fails because the variances are beyond double precision (see
    `_ROUNDOFF_TRACE`: the trace of the system's data term, for A_u tr(D_u F_uu D_u), for K
    tr(L^T B L) = sum_(i,a) B_a,ii Phi_i,aa, at least that), the value is -inf; the last factor
    returned, `past`, says so.
    """
    n, n_gw = phi_rn.shape[0], phi_gw.shape[0]
    c = 2 * n_gw
    sq_u = jnp.sqrt(jnp.repeat(phi_rn[:, n_gw:], 2, axis=1))  # (n, 2(n_rn - n_gw))
    Fuu, Fcu = FNF[:, c:, c:], FNF[:, :c, c:]
    A_u = sq_u[:, :, None] * Fuu * sq_u[:, None, :] + jnp.eye(sq_u.shape[1])
    L_u = jnp.linalg.cholesky(A_u)
    rhs = jnp.concatenate([jnp.swapaxes(Fcu, 1, 2), FNr[:, c:, None]], axis=2)
    sol = jax.lax.linalg.triangular_solve(L_u, rhs * sq_u[:, :, None], left_side=True, lower=True)
    Y, z = sol[:, :, :c], sol[:, :, c]  # (n, 2(n_rn-n_gw), c), (n, 2(n_rn-n_gw))
    B = FNF[:, :c, :c] - jnp.einsum("aki,akj->aij", Y, Y)  # (n, c, c)
    b = FNr[:, :c] - jnp.einsum("aki,ak->ai", Y, z)  # (n, c)
    logdet_u_a = 2.0 * jnp.sum(jnp.log(jnp.diagonal(L_u, axis1=1, axis2=2)), axis=1)  # (n,)
    logdet_u = jnp.sum(logdet_u_a)
    Phi = orf[None] * phi_gw[:, None, None] + jax.vmap(jnp.diag)(phi_rn[:, :n_gw].T)
    Lg = jnp.linalg.cholesky(Phi)  # (n_gw, n, n)
    Lk = jnp.repeat(Lg, 2, axis=0)  # (c, n, n): sin and cos columns share Phi_k
    # K[i,a,j,b] = delta + sum_e Lk[i,e,a] B[e,i,j] Lk[j,e,b]
    K = jnp.einsum("iea,eij,jeb->iajb", Lk, B, Lk).reshape(c * n, c * n) + jnp.eye(c * n)
    v = jnp.einsum("iea,ei->ia", Lk, b).reshape(c * n)
    LK = jnp.linalg.cholesky(K)
    y = jax.lax.linalg.triangular_solve(LK, v[:, None], left_side=True, lower=True)[:, 0]
    half_logdet_c = jnp.sum(jnp.log(jnp.diagonal(LK)))
    value = 0.5 * (jnp.sum(z * z) + jnp.sum(y * y)) - 0.5 * logdet_u - half_logdet_c
    # A failed factorisation leaves NaN (a zero pivot: -inf) in its log-determinant. Each
    # failed system must have the trace of round-off (a NaN trace, from NaN input, never has);
    # a failed A_u leaves B, and with it K, NaN, whose own check is then moot.
    failed_u = ~jnp.isfinite(logdet_u_a)
    t_u = jnp.sum(sq_u * sq_u * jnp.diagonal(Fuu, axis1=1, axis2=2), axis=1)
    phi_diag = jnp.repeat(jnp.diagonal(orf) * phi_gw[:, None] + phi_rn[:, :n_gw].T, 2, axis=0)
    t_K = jnp.sum(jnp.diagonal(B, axis1=1, axis2=2) * phi_diag.T)
    past = jnp.where(
        jnp.any(failed_u),
        jnp.all(~failed_u | (t_u >= _ROUNDOFF_TRACE)),
        ~jnp.isfinite(half_logdet_c) & (t_K >= _ROUNDOFF_TRACE),
    )
    value = jnp.where(past, -jnp.inf, value)
    return value, (L_u, Y, z, Lg, Lk, LK, y, past)


def _hd_value(phi_rn, phi_gw, FNF, FNr, orf):
    return _hd_factor(phi_rn, phi_gw, FNF, FNr, orf)[0]


def _hd_value_and_grads(phi_rn, phi_gw, FNF, FNr, orf):
    """ln L of HD without its constant, with d ln L / d phi_rn (n_psr, n_rn) and d phi_gw (n_gw,).

    From d ln L / d Phi (see above) in the whitened coordinates of `_hd_factor`:
    - coupled frequency i: G_i = 1/2 L_i^-T [(K^-1)_ii + q_i q_i^T - I] L_i^-1 with q = K^-1 v,
      so d/d phi_gw(k) = tr(Gamma G_k) and d/d phi_rn(a, k) = G_k[a, a], summed over sin, cos;
    - uncoupled component j of pulsar a: d/d ln phi_j = 1/2 [(L_u^-T (I + Y Sigma_a Y^T)
      L_u^-1)_jj + (L_u^-T (z - Y mu_a))_j^2 - 1], with Sigma_a, mu_a the pulsar's block of the
      coupled coefficients' posterior covariance L K^-1 L^T and mean L q.

    Both derivatives are zero where the value is -inf beyond double precision (`_hd_factor`).
    """
    value, (L_u, Y, z, Lg, Lk, LK, y, past) = _hd_factor(phi_rn, phi_gw, FNF, FNr, orf)
    n, n_gw = phi_rn.shape[0], phi_gw.shape[0]
    c = 2 * n_gw
    WK = _tri_inv(LK).reshape(c * n, c, n)  # rows of L_K^-1, columns (i, a)
    q = jnp.einsum("kia,k->ia", WK, y)  # K^-1 v, (c, n)
    M = jnp.einsum("kia,kib->iab", WK, WK) + q[:, :, None] * q[:, None, :] - jnp.eye(n)
    Ek = jnp.repeat(_tri_inv(Lg), 2, axis=0)  # (c, n, n) L_i^-1
    G = 0.5 * jnp.einsum("iea,ief,ifb->iab", Ek, M, Ek).reshape(n_gw, 2, n, n).sum(axis=1)
    g_gw = jnp.einsum("kab,ab->k", G, orf)
    g_rn_c = jnp.diagonal(G, axis1=1, axis2=2).T  # (n, n_gw)
    V = jnp.einsum("kje,jbe->kjb", WK, Lk)  # L_K^-1 L^T: Sigma_c = V^T V
    Sigma = jnp.einsum("kia,kja->aij", V, V)  # (n, c, c) each pulsar's block
    mu = jnp.einsum("iae,ie->ai", Lk, q)  # (n, c)
    P = _tri_inv(L_u)  # (n, m_u, m_u)
    R = jnp.einsum("akj,aki->aji", P, Y)  # L_u^-T Y
    diag_u = jnp.sum(P * P, axis=1) + jnp.einsum("aji,ail,ajl->aj", R, Sigma, R)
    mean_u = jnp.einsum("akj,ak->aj", P, z - jnp.einsum("aki,ai->ak", Y, mu)) ** 2
    g_log_u = 0.5 * (diag_u + mean_u - 1.0)  # d/d ln phi per sin/cos component
    g_rn_u = g_log_u.reshape(n, -1, 2).sum(axis=-1) / phi_rn[:, n_gw:]
    g_rn = jnp.concatenate([g_rn_c, g_rn_u], axis=1)
    return value, jnp.where(past, 0.0, g_rn), jnp.where(past, 0.0, g_gw)


#: Bytes of coupled systems evaluated together under `jax.vmap` on a CPU. Larger batches are
#: split into groups (`lax.map` over groups): each vector's coupled system is (n_psr 2 n_gw)^2
#: doubles (0.6 MB for 10 pulsars), and a whole batch of them at once leaves the caches and
#: costs about twice as much per vector at batch 256. Groups of 4-8 ten-pulsar systems were
#: fastest, 16 and 32 slower (measured on a 2-core AMD EPYC).
_HD_GROUP_BYTES = 5 * 2**20


def _grouped_vmap_rule(fn):
    """custom_vmap rule for fn(phi_rn, phi_gw, FNF, FNr, orf): on a CPU, mapped variances run
    in groups of `_HD_GROUP_BYTES` of coupled systems (the last group padded with copies of
    the last row); other platforms, and mapped data (unusual), run plain `jax.vmap`."""

    def rule(axis_size, in_batched, phi_rn, phi_gw, FNF, FNr, orf):
        data = (FNF, FNr, orf)
        size = 2 * phi_rn.shape[-2] * phi_gw.shape[-1]
        group = max(1, _HD_GROUP_BYTES // (8 * size * size))
        axes = tuple(0 if b else None for b in in_batched)
        if any(in_batched[2:]):
            out = jax.vmap(fn, in_axes=axes)(phi_rn, phi_gw, *data)
            return out, jax.tree_util.tree_map(lambda _: True, out)
        variances = tuple(
            x if b else jnp.broadcast_to(x, (axis_size,) + x.shape)
            for x, b in zip((phi_rn, phi_gw), in_batched[:2], strict=True)
        )
        mapped = jax.vmap(fn, in_axes=(0, 0, None, None, None))

        def grouped(phi_rn, phi_gw, *data):
            n_groups = -(-axis_size // group)
            pad = n_groups * group - axis_size

            def split(x):
                x = jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)]) if pad else x
                return x.reshape(n_groups, group, *x.shape[1:])

            out = jax.lax.map(lambda v: mapped(*v, *data), (split(phi_rn), split(phi_gw)))
            return jax.tree_util.tree_map(lambda a: a.reshape(-1, *a.shape[2:])[:axis_size], out)

        if axis_size <= group:
            out = mapped(*variances, *data)
        else:
            out = jax.lax.platform_dependent(*variances, *data, cpu=grouped, default=mapped)
        return out, jax.tree_util.tree_map(lambda _: True, out)

    return rule


@jax.custom_jvp
@jax.custom_batching.custom_vmap
def _hd_grads(phi_rn, phi_gw, FNF, FNr, orf):
    """`_hd_value_and_grads`, grouped under vmap; its derivatives are autodiff's."""
    return _hd_value_and_grads(phi_rn, phi_gw, FNF, FNr, orf)


_hd_grads.def_vmap(_grouped_vmap_rule(_hd_value_and_grads))
_hd_grads.defjvp(lambda primals, tangents: jax.jvp(_hd_value_and_grads, primals, tangents))


@jax.custom_jvp
@jax.custom_batching.custom_vmap
def _hd_loglike(phi_rn, phi_gw, FNF, FNr, orf):
    """ln L of HD without its constant (`_hd_factor`), with an analytic first derivative in the
    prior variances (`_hd_value_and_grads`): about 2.5 values per gradient instead of reverse
    mode through both Cholesky factorisations. Second derivatives differentiate that gradient;
    derivatives with respect to the data (unusual) differentiate the value. Under `jax.vmap`
    both run in cache-sized groups on a CPU (`_HD_GROUP_BYTES`)."""
    return _hd_value(phi_rn, phi_gw, FNF, FNr, orf)


_hd_loglike.def_vmap(_grouped_vmap_rule(_hd_value))


@functools.partial(_hd_loglike.defjvp, symbolic_zeros=True)
def _hd_loglike_jvp(primals, tangents):
    live = [i for i, t in enumerate(tangents) if not isinstance(t, SymbolicZero)]
    if not live:
        value = _hd_value(*primals)
        return value, jnp.zeros_like(value)
    if set(live) <= {0, 1}:
        value, g_rn, g_gw = _hd_grads(*primals)
        dot = sum(jnp.sum(g * tangents[i]) for i, g in ((0, g_rn), (1, g_gw)) if i in live)
        return value, dot

    def plain(*xs):
        args = list(primals)
        for i, x in zip(live, xs, strict=True):
            args[i] = x
        return _hd_value(*args)

    return jax.jvp(plain, [primals[i] for i in live], [tangents[i] for i in live])


def _noise_only_terms(FNF, FNr, freqs, tspan, rn):
    """(n, P) per-pulsar ln L terms 1/2 d^T A^-1 d - 1/2 ln det A with red noise alone, for the
    P pulsars of FNF (P, 2K, 2K), FNr (P, 2K) at rn (n, P, 2) = (log10_A, gamma)."""
    phi = powerlaw_psd(freqs, rn[..., :1], rn[..., 1:]) / tspan  # (n, P, n_rn)
    sq = jnp.sqrt(jnp.repeat(phi, 2, axis=-1))  # sin and cos share a variance
    half_logdet, quad = _curn_terms(sq, FNF, FNr)
    return 0.5 * quad - half_logdet


class AbstractLikelihood(eqx.Module):
    """Interface of a PTA log-likelihood ln L(theta) on a flat parameter vector theta.

    The concrete likelihoods are final classes built by their factories: `PTALikelihood`
    (`make_likelihood`) and `RefitLikelihood` (`make_refit_likelihood`). Each provides ln L of
    one parameter vector (`__call__`) and the attributes below; `n_dim` and `batch` are
    defined here, once for all of them.

    Attributes:
        common: the common-process (SGWB) spectrum (`CommonProcess`); its parameters are the
            last entries of theta.
        param_names: names of theta's entries, in order (enterprise convention).
        correlation: "curn" or "hd" for the full likelihood; "refit" for the free-spectrum
            likelihood, whose densities already hold the inter-pulsar correlations.
        mode: "full" (per-pulsar red noise and the common process) or "refit" (the common
            process's parameters only); a class attribute.
    """

    common: eqx.AbstractVar[CommonProcess]
    param_names: eqx.AbstractVar[tuple[str, ...]]
    correlation: eqx.AbstractVar[str]
    mode: eqx.AbstractClassVar[str]

    @abc.abstractmethod
    def __call__(self, theta: jax.Array) -> jax.Array:
        """ln L at one parameter vector, shape (n_dim,) -> scalar."""

    @property
    def n_dim(self) -> int:
        """Number of parameters, the length of theta."""
        return len(self.param_names)

    def batch(
        self,
        thetas: jax.Array,
        chunk_size: int | None = None,
        devices: int | str | None = None,
    ) -> jax.Array:
        """ln L at many parameter vectors, (n_samples, n_dim) -> (n_samples,).

        Args:
            thetas: parameter vectors, one per row.
            chunk_size: evaluate this many rows at a time (vectorised) to bound memory, e.g.
                for HD with many pulsars; default all at once. With `devices`, per device.
            devices: None (the default device), "all" or n: split the rows into one block per
                local device (several GPUs, or CPU cores presented as devices, see
                `ptaflow.devices`). The values do not depend on it.
        """
        return map_rows(self, thetas, chunk_size, devices)


class PTALikelihood(AbstractLikelihood):
    """ln L(theta) of per-pulsar power-law red noise plus one common process (CURN or HD).

    Build with `make_likelihood`. Call as `like(theta)` (scalar) or `like.batch(thetas)`.
    """

    mode: ClassVar[str] = "full"

    FNF: jax.Array  # (n_psr, 2 n_rn, 2 n_rn)
    FNr: jax.Array  # (n_psr, 2 n_rn)
    const: jax.Array  # ()
    freqs: jax.Array  # (n_rn,) [Hz]
    tspan: float
    orf: jax.Array | None  # (n_psr, n_psr) correlation matrix Gamma, or None for CURN
    common: CommonProcess
    psr_names: tuple[str, ...] = eqx.field(static=True)
    n_gw: int = eqx.field(static=True)

    @property
    def n_psr(self) -> int:
        return len(self.psr_names)

    @property
    def correlation(self) -> str:
        return "curn" if self.orf is None else "hd"

    @property
    def param_names(self) -> tuple[str, ...]:
        return red_noise_names(self.psr_names) + tuple(self.common.param_names)

    def _variances(self, theta):
        """Per-frequency GP variances S(f_k)/T [s^2]: red noise (n_psr, n_rn), common (n_gw,)."""
        rn = theta[: 2 * self.n_psr].reshape(self.n_psr, 2)
        phi_rn = powerlaw_psd(self.freqs[None, :], rn[:, :1], rn[:, 1:]) / self.tspan
        phi_gw = self.common.psd(self.freqs[: self.n_gw], theta[2 * self.n_psr :]) / self.tspan
        return phi_rn, phi_gw

    def __call__(self, theta: jax.Array) -> jax.Array:
        """ln L at one parameter vector, shape (n_dim,) -> scalar."""
        phi_rn, phi_gw = self._variances(theta)
        if self.orf is None:
            return self._curn(phi_rn, phi_gw)
        return self._hd(phi_rn, phi_gw)

    def noise_only_terms(self, rn: jax.Array) -> jax.Array:
        """Each pulsar's term of ln L with the common process switched off (no SGWB at all).

        Without the common process the likelihood factorises over pulsars, for CURN and HD
        alike: ln L_0 = const + sum_a t_a(log10_A_a, gamma_a). This is the likelihood of the
        noise-only model (see `ptaflow.noise_only`), set by the model, not by a parameter value.

        Args:
            rn: (n, n_psr, 2) per-pulsar red-noise (log10_A, gamma) at n points.

        Returns:
            (n, n_psr) terms t_a; `const` is the likelihood's constant.
        """
        return _noise_only_terms(self.FNF, self.FNr, self.freqs, self.tspan, rn)

    def noise_only(self, theta_rn: jax.Array) -> jax.Array:
        """ln L_0 of the noise-only model at red-noise parameters theta_rn, shape (2 n_psr,)
        in theta's order ({psr}_red_noise_log10_A, {psr}_red_noise_gamma per pulsar)."""
        terms = self.noise_only_terms(jnp.reshape(theta_rn, (1, self.n_psr, 2)))
        return self.const + jnp.sum(terms)

    def _curn(self, phi_rn, phi_gw):
        phi = phi_rn.at[:, : self.n_gw].add(phi_gw[None, :])
        sq = jnp.sqrt(jnp.repeat(phi, 2, axis=1))  # (n_psr, 2 n_rn), sin/cos share a variance
        half_logdet, quad = _curn_terms(sq[None], self.FNF, self.FNr)
        return self.const + 0.5 * jnp.sum(quad) - jnp.sum(half_logdet)

    def _hd(self, phi_rn, phi_gw):
        return self.const + _hd_loglike(phi_rn, phi_gw, self.FNF, self.FNr, self.orf)


def make_likelihood(
    reduced: ReducedPTA,
    common: CommonProcess | None = None,
    *,
    correlation: str = "curn",
    n_rn: int = 30,
    n_gw: int = 14,
    orf: np.ndarray | None = None,
) -> PTALikelihood:
    """Build the CURN or HD likelihood of reduced pulsar data.

    Args:
        reduced: statistics from `ptaflow.data.reduce_pta` / `load_reduced`.
        common: common-process spectrum (default: power law with enterprise names gw_log10_A,
            gw_gamma); any object with `param_names` and a pure-JAX `psd(f, theta)` [s^3]
            (checked by `check_common_process`).
        correlation: "curn" (uncorrelated) or "hd" (Hellings-Downs).
        n_rn: red-noise frequencies K_rn (NANOGrav default 30).
        n_gw: common-process frequencies K_gw <= K_rn (NANOGrav default 14).
        orf: optional (n_psr, n_psr) correlation matrix replacing Hellings-Downs (must be
            positive definite), for correlation="hd".
    """
    if not jax.config.jax_enable_x64:
        raise DataError(
            "PTA likelihoods need float64: call jax.config.update('jax_enable_x64', True) first"
        )
    if correlation not in ("curn", "hd"):
        raise ParameterError(f"correlation={correlation!r}: expected 'curn' or 'hd'")
    if not 1 <= n_gw <= n_rn <= reduced.n_freq:
        raise ParameterError(
            f"n_gw={n_gw}, n_rn={n_rn}: expected 1 <= n_gw <= n_rn <= {reduced.n_freq} (the "
            "frequencies in the reduced data; reduce again with a larger n_freq)"
        )
    common = PowerLawProcess() if common is None else check_common_process(common)
    _check_blas_threads()
    orf_matrix = None
    if correlation == "hd":
        gamma = hellings_downs(reduced.pos) if orf is None else np.asarray(orf, dtype=np.float64)
        if gamma.shape != (reduced.n_psr, reduced.n_psr):
            raise ParameterError(f"orf has shape {gamma.shape}, expected {(reduced.n_psr,) * 2}")
        try:
            np.linalg.cholesky(gamma)
            orf_matrix = jnp.asarray(gamma)
        except np.linalg.LinAlgError as exc:
            raise ParameterError("the correlation matrix is not positive definite") from exc
    m = 2 * n_rn
    return PTALikelihood(
        FNF=jnp.asarray(reduced.FNF[:, :m, :m]),
        FNr=jnp.asarray(reduced.FNr[:, :m]),
        const=jnp.asarray(np.sum(reduced.const)),
        freqs=jnp.asarray(reduced.freqs[:n_rn]),
        tspan=float(reduced.tspan),
        orf=orf_matrix,
        common=common,
        psr_names=tuple(reduced.names),
        n_gw=int(n_gw),
    )


class RefitLikelihood(AbstractLikelihood):
    """Free-spectrum 'refit' likelihood: ln L = sum_k ln p_k(0.5 log10(S(f_k; theta)/T)).

    p_k is linearly interpolated on the grid; values of log10 rho outside the grid take the
    edge value (below the grid the free-spectrum posterior is flat, noise-dominated).
    Build with `make_refit_likelihood`.
    """

    densities: FreeSpectrumDensities
    common: CommonProcess
    n_freq: int = eqx.field(static=True)
    mode: ClassVar[str] = "refit"

    @property
    def correlation(self) -> str:
        return "refit"

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(self.common.param_names)

    def __call__(self, theta: jax.Array) -> jax.Array:
        d = self.densities
        f = d.freqs[: self.n_freq]
        log10_rho = 0.5 * jnp.log10(self.common.psd(f, theta) / d.tspan)
        interp = jax.vmap(jnp.interp, in_axes=(0, None, 0))
        return jnp.sum(interp(log10_rho, d.log10_rho_grid, d.log_density[: self.n_freq]))


def make_refit_likelihood(
    common: CommonProcess | None = None,
    densities: FreeSpectrumDensities | None = None,
    *,
    n_freq: int = 14,
) -> RefitLikelihood:
    """Build the refit likelihood (default: NG15 HD free spectrum, its 14 lowest frequencies,
    as in the NANOGrav 15-yr new-physics search, arXiv:2306.16219)."""
    if not jax.config.jax_enable_x64:
        # In float32 the flow fits fail later with messages that do not say why.
        raise DataError(
            "PTA likelihoods need float64: call jax.config.update('jax_enable_x64', True) first"
        )
    densities = load_free_spectrum_densities() if densities is None else densities
    n_avail = int(densities.freqs.shape[0])
    if not 1 <= n_freq <= n_avail:
        raise ParameterError(
            f"n_freq={n_freq}: expected 1..{n_avail} (frequencies in the densities)"
        )
    common = PowerLawProcess() if common is None else check_common_process(common)
    return RefitLikelihood(densities=densities, common=common, n_freq=int(n_freq))
